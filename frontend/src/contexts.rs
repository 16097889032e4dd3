//! Named build contexts (`--build-context NAME=VALUE`), as BuildKit's
//! `dockerui` names them: a context replaces the stage, image or `COPY
//! --from` source of the same name.
//!
//! The frontend does no I/O: the caller decides what a value is (a local
//! directory must be looked at, an OCI layout imported) and passes the result
//! in [`crate::BuildOptions::named_contexts`]. [`parse_remote`] splits the
//! values that need no I/O to be recognised.

use kiln_llb::Platform;
use kiln_reference::Reference;

use crate::gitref;
use crate::resolver::ResolvedImage;

/// What a named context stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A directory the worker knows as local source `source`.
    Local { source: String },
    /// `docker-image://REF`: resolved through the image resolver.
    Image { reference: String },
    /// An image the caller has put into the store already (`oci-layout://`):
    /// `reference` is shown, `image.digest` is its ID in the store.
    Resolved {
        reference: String,
        image: Box<ResolvedImage>,
    },
    /// `docker-image://scratch`: an empty filesystem.
    Scratch,
    /// A git repository (`https://host/repo.git#ref:subdir`, `git@…`).
    Git {
        remote: String,
        git_ref: String,
        subdir: String,
        keep_git_dir: bool,
    },
    /// `https://…` that is not a git repository: the file, as `/context`.
    Http { url: String },
}

/// The context a value names when it needs no I/O to know:
/// `docker-image://`, git URLs, `http(s)://`. `Ok(None)` for everything else
/// (a local directory, `oci-layout://`, which the caller handles). BuildKit's
/// `BUILDKIT_CONTEXT_KEEP_GIT_DIR` is `keep_git_dir`.
pub fn parse_remote(value: &str, keep_git_dir: bool) -> Result<Option<NamedContext>, String> {
    if let Some(r) = value.strip_prefix("docker-image://") {
        if r == "scratch" {
            return Ok(Some(NamedContext::Scratch));
        }
        let parsed = Reference::parse_normalized(r)
            .map_err(|e| format!("invalid image reference {r:?}: {e}"))?;
        return Ok(Some(NamedContext::Image {
            reference: parsed.with_default_tag().to_string(),
        }));
    }
    if let Some(g) = gitref::parse(value)? {
        if !g.checksum.is_empty() {
            return Err(format!(
                "{value}: a checksum in a git build context is not supported yet"
            ));
        }
        return Ok(Some(NamedContext::Git {
            remote: g.remote,
            git_ref: g.git_ref,
            subdir: g.subdir,
            keep_git_dir: g.keep_git_dir.unwrap_or(keep_git_dir),
        }));
    }
    if value.starts_with("http://") || value.starts_with("https://") {
        return Ok(Some(NamedContext::Http {
            url: value.to_owned(),
        }));
    }
    Ok(None)
}

/// The key `--build-context` values are looked up by for a `FROM` or
/// `--from` name: the familiar form without `:latest` (BuildKit's
/// `NamedContext`: `docker.io/library/alpine:latest` → `alpine`). `None`
/// for the reserved names and names that are no reference.
pub fn context_key(name: &str) -> Option<String> {
    if name.eq_ignore_ascii_case("scratch") || name.eq_ignore_ascii_case("context") {
        return None;
    }
    let r = Reference::parse_normalized(name).ok()?;
    let familiar = r.familiar();
    Some(
        familiar
            .strip_suffix(":latest")
            .map_or(familiar.clone(), str::to_owned),
    )
}

/// Looks `key` up as BuildKit does: `key::os/arch[/variant]` first, then
/// `key`. Returns the name that matched and its context.
pub fn lookup<'a>(
    contexts: &'a std::collections::BTreeMap<String, NamedContext>,
    key: &str,
    platform: &Platform,
) -> Option<(&'a str, &'a NamedContext)> {
    contexts
        .get_key_value(&format!("{key}::{platform}"))
        .or_else(|| contexts.get_key_value(key))
        .map(|(k, v)| (k.as_str(), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_familiar_names() {
        assert_eq!(context_key("alpine").as_deref(), Some("alpine"));
        assert_eq!(
            context_key("docker.io/library/alpine:latest").as_deref(),
            Some("alpine")
        );
        assert_eq!(context_key("alpine:3.20").as_deref(), Some("alpine:3.20"));
        assert_eq!(context_key("Builder").as_deref(), None);
        assert_eq!(context_key("builder").as_deref(), Some("builder"));
        assert_eq!(context_key("scratch"), None);
        assert_eq!(context_key("context"), None);
    }

    #[test]
    fn platform_names_first() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("base".to_owned(), NamedContext::Scratch);
        m.insert(
            "base::linux/arm64".to_owned(),
            NamedContext::Http {
                url: "https://example.com/a".to_owned(),
            },
        );
        let arm: Platform = "linux/arm64".parse().expect("platform");
        let amd: Platform = "linux/amd64".parse().expect("platform");
        assert_eq!(
            lookup(&m, "base", &arm).map(|(k, _)| k),
            Some("base::linux/arm64")
        );
        assert_eq!(
            lookup(&m, "base", &amd),
            Some(("base", &NamedContext::Scratch))
        );
        assert_eq!(lookup(&m, "other", &amd), None);
    }

    #[test]
    fn remote_values() {
        assert_eq!(
            parse_remote("docker-image://busybox", false),
            Ok(Some(NamedContext::Image {
                reference: "docker.io/library/busybox:latest".to_owned()
            }))
        );
        assert_eq!(
            parse_remote("docker-image://scratch", false),
            Ok(Some(NamedContext::Scratch))
        );
        assert!(parse_remote("docker-image://Bad", false).is_err());
        assert_eq!(
            parse_remote("https://example.com/r.git#v1:sub", true),
            Ok(Some(NamedContext::Git {
                remote: "https://example.com/r.git".to_owned(),
                git_ref: "v1".to_owned(),
                subdir: "sub".to_owned(),
                keep_git_dir: true,
            }))
        );
        assert_eq!(
            parse_remote("https://example.com/a.tar", false),
            Ok(Some(NamedContext::Http {
                url: "https://example.com/a.tar".to_owned()
            }))
        );
        assert_eq!(parse_remote("./dir", false), Ok(None));
        assert_eq!(parse_remote("oci-layout:///x", false), Ok(None));
    }
}
