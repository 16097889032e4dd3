//! Git sources of `ADD` (`https://host/repo.git#ref:subdir`, `git@host:repo`),
//! recognised and split as BuildKit's `dfgitutil.ParseGitRef`.

/// A git repository reference.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GitRef {
    pub remote: String,
    pub git_ref: String,
    pub subdir: String,
    pub checksum: String,
    pub keep_git_dir: Option<bool>,
    pub submodules: Option<bool>,
}

/// `Ok(None)`: not a git reference. `Err`: a git reference with an error.
pub fn parse(src: &str) -> Result<Option<GitRef>, String> {
    if src.starts_with("./") || src.starts_with("../") {
        return Ok(None);
    }
    let (remote_part, query, fragment);
    if let Some(scheme_end) = scheme(src) {
        let scheme = src[..scheme_end].to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "ssh" | "git") {
            return Ok(None);
        }
        let (rest, frag) = src.split_once('#').unwrap_or((src, ""));
        let (base, q) = rest.split_once('?').unwrap_or((rest, ""));
        if matches!(scheme.as_str(), "http" | "https") {
            let path = base[scheme_end + 3..]
                .split_once('/')
                .map_or("", |(_, p)| p);
            if !path.ends_with(".git") {
                return Ok(None);
            }
        }
        remote_part = base.to_owned();
        query = q.to_owned();
        fragment = frag.to_owned();
    } else if let Some((base, q, frag)) = scp_style(src) {
        remote_part = base;
        query = q;
        fragment = frag;
    } else {
        return Ok(None);
    }
    let mut r = GitRef {
        remote: remote_part,
        ..GitRef::default()
    };
    if !fragment.is_empty() {
        let (git_ref, subdir) = fragment.split_once(':').unwrap_or((&fragment, ""));
        r.git_ref = git_ref.to_owned();
        r.subdir = crate::paths::join(&["/", subdir])
            .trim_start_matches('/')
            .to_owned();
    }
    load_query(&mut r, &query)?;
    Ok(Some(r))
}

fn scheme(s: &str) -> Option<usize> {
    let i = s.find("://")?;
    (i > 0 && s[..i].bytes().all(|b| b.is_ascii_alphanumeric())).then_some(i)
}

/// `^([a-zA-Z0-9-_]+)@([a-zA-Z0-9-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$`
fn scp_style(s: &str) -> Option<(String, String, String)> {
    let (user, rest) = s.split_once('@')?;
    if user.is_empty()
        || !user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    let (host, path_etc) = rest.split_once(':')?;
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return None;
    }
    let (before_frag, frag) = path_etc.split_once('#').unwrap_or((path_etc, ""));
    let (path, query) = before_frag.split_once('?').unwrap_or((before_frag, ""));
    Some((
        format!("{user}@{host}:{path}"),
        query.to_owned(),
        frag.to_owned(),
    ))
}

fn parse_bool(v: &str, what: &str) -> Result<bool, String> {
    if v.is_empty() {
        return Ok(true);
    }
    crate::mount::parse_go_bool(v).ok_or_else(|| format!("invalid {what} value: {v:?}"))
}

fn load_query(r: &mut GitRef, query: &str) -> Result<(), String> {
    if query.is_empty() {
        return Ok(());
    }
    let mut seen: Vec<String> = Vec::new();
    let (mut tag, mut branch) = (String::new(), String::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if seen.iter().any(|s| s == k) {
            return Err(format!("query {k:?} has multiple values"));
        }
        seen.push(k.to_owned());
        if v.is_empty() && !matches!(k, "submodules" | "keep-git-dir" | "fetch-by-commit") {
            return Err(format!("query {k:?} has no value"));
        }
        match k {
            "ref" => {
                if !r.git_ref.is_empty() && r.git_ref != v {
                    return Err(format!("ref conflicts: {:?} vs {v:?}", r.git_ref));
                }
                r.git_ref = v.to_owned();
            }
            "tag" => tag = v.to_owned(),
            "branch" => branch = v.to_owned(),
            "subdir" => {
                if !r.subdir.is_empty() && r.subdir != v {
                    return Err(format!("subdir conflicts: {:?} vs {v:?}", r.subdir));
                }
                r.subdir = v.to_owned();
            }
            "checksum" | "commit" => r.checksum = v.to_owned(),
            "keep-git-dir" => r.keep_git_dir = Some(parse_bool(v, "keep-git-dir")?),
            "submodules" => r.submodules = Some(parse_bool(v, "submodules")?),
            "mtime" | "fetch-by-commit" => {
                return Err(format!("git query {k:?} is not supported by kiln yet"));
            }
            _ => return Err(format!("unexpected query {k:?}")),
        }
    }
    if !tag.is_empty() {
        let t = if tag.starts_with("refs/tags/") {
            tag.clone()
        } else {
            format!("refs/tags/{tag}")
        };
        if !r.git_ref.is_empty() && r.git_ref != t {
            return Err(format!("ref conflicts: {:?} vs {t:?}", r.git_ref));
        }
        r.git_ref = t;
    }
    if !branch.is_empty() {
        if !tag.is_empty() {
            return Err("branch conflicts with tag".into());
        }
        let b = if branch.starts_with("refs/heads/") {
            branch.clone()
        } else {
            format!("refs/heads/{branch}")
        };
        if !r.git_ref.is_empty() && r.git_ref != b {
            return Err(format!("ref conflicts: {:?} vs {b:?}", r.git_ref));
        }
        r.git_ref = b;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_refs() {
        let g = parse("https://github.com/moby/buildkit.git#v0.10.1:docs")
            .unwrap()
            .unwrap();
        assert_eq!(g.remote, "https://github.com/moby/buildkit.git");
        assert_eq!((g.git_ref.as_str(), g.subdir.as_str()), ("v0.10.1", "docs"));
        assert!(parse("https://example.com/file.tar.gz").unwrap().is_none());
        assert!(parse("./local").unwrap().is_none());
        assert!(parse("src/").unwrap().is_none());
        let g = parse("git@github.com:moby/buildkit.git#main")
            .unwrap()
            .unwrap();
        assert_eq!(
            (g.remote.as_str(), g.git_ref.as_str()),
            ("git@github.com:moby/buildkit.git", "main")
        );
        let g = parse("https://h/r.git?tag=v1&keep-git-dir=true")
            .unwrap()
            .unwrap();
        assert_eq!(g.git_ref, "refs/tags/v1");
        assert_eq!(g.keep_git_dir, Some(true));
        assert!(parse("https://h/r.git?bogus=1").is_err());
        assert!(parse("https://h/r.git?tag=a&branch=b").is_err());
    }
}
