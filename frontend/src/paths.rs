//! Slash-separated paths inside images, with Go's `path` semantics (the rules
//! BuildKit applies to WORKDIR, COPY destinations and mount targets).

/// Go's `path.Clean`.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_owned();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `path.Join`: non-empty elements joined with `/`, then cleaned; `""` if
/// all are empty.
pub fn join(elems: &[&str]) -> String {
    let nonempty: Vec<&str> = elems.iter().copied().filter(|e| !e.is_empty()).collect();
    if nonempty.is_empty() {
        return String::new();
    }
    clean(&nonempty.join("/"))
}

/// Go's `path.Base`.
pub fn base(p: &str) -> String {
    if p.is_empty() {
        return ".".to_owned();
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_owned();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_owned()
}

/// BuildKit's `system.NormalizePath` for Linux: `new` made absolute against
/// `parent` and cleaned, optionally keeping a trailing `/` or `/.`.
pub fn normalize(parent: &str, new: &str, keep_slash: bool) -> String {
    let parent = if parent.is_empty() { "/" } else { parent };
    let parent = if parent.starts_with('/') {
        parent.to_owned()
    } else {
        join(&["/", parent])
    };
    let orig = new;
    let new = if new.is_empty() { parent.as_str() } else { new };
    let mut out = if new.starts_with('/') {
        clean(new)
    } else {
        join(&[&parent, new])
    };
    if keep_slash {
        if orig.ends_with('/') && !out.ends_with('/') {
            out.push('/');
        } else if orig.ends_with("/.") {
            if out != "/" {
                out.push('/');
            }
            out.push('.');
        }
    }
    out
}

/// BuildKit's `system.NormalizeWorkdir` for Linux: a relative `wd` is joined
/// to `current` (and so cleaned); an absolute one is kept as written
/// (`WORKDIR /path/` is `/path/`, `//a/./b` stays). COPY paths go through
/// [`normalize`], which also cleans absolute paths (the same files are
/// copied; see `testdata/README.md`).
///
/// One exception: an absolute path with a `..` component is cleaned
/// (`/x/../y` is `/y`). BuildKit keeps it, and runc creates every directory
/// it names on the way (`/x` too) before changing into it; kiln's executor
/// changes into the working directory as written without creating `/x`, so
/// the step would fail. Until the executor creates the working directory as
/// runc does, the cleaned path is the one that works.
pub fn normalize_workdir(current: &str, wd: &str) -> String {
    if wd.starts_with('/') && wd.split('/').any(|c| c == "..") {
        return clean(wd);
    }
    let current = match current {
        "" => "/".to_owned(),
        c if c.starts_with('/') => c.to_owned(),
        c => join(&["/", c]),
    };
    match wd {
        "" => current,
        w if w.starts_with('/') => w.to_owned(),
        w => join(&[&current, w]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_semantics() {
        assert_eq!(clean(""), ".");
        assert_eq!(clean("/../a//b/./c/.."), "/a/b");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/"), "/");
        assert_eq!(join(&["/", "a", "", "b/"]), "/a/b");
        assert_eq!(join(&["", ""]), "");
        assert_eq!(base("/a/b/"), "b");
        assert_eq!(base("/"), "/");
        assert_eq!(normalize("/app", "sub", false), "/app/sub");
        assert_eq!(normalize("/app", "/abs/../x", false), "/x");
        assert_eq!(normalize("/app", "dir/", true), "/app/dir/");
        assert_eq!(normalize("/app", ".", true), "/app");
        assert_eq!(normalize("/app", "./", true), "/app/");
        assert_eq!(normalize("/", "x/.", true), "/x/.");
        assert_eq!(normalize("", "", false), "/");
        assert_eq!(normalize_workdir("/app", "/path/"), "/path/");
        assert_eq!(normalize_workdir("/app", "/a/./b/"), "/a/./b/");
        assert_eq!(normalize_workdir("/app", "/a/../b/"), "/b");
        assert_eq!(normalize_workdir("/path/", "sub/"), "/path/sub");
        assert_eq!(normalize_workdir("/path/", ""), "/path/");
        assert_eq!(normalize_workdir("", "rel"), "/rel");
    }
}
