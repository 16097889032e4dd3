//! `imagetools create --annotation`: buildx's annotation syntax.

use kiln_llb::Platform;

use crate::failure::Failure;

/// A parsed `--annotation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Annotation {
    pub(super) kind: String,
    pub(super) platform: Option<String>,
    pub(super) key: String,
    pub(super) value: String,
}

/// buildx's `ParseAnnotations`, with kiln's refusals for what buildx's
/// `imagetools create` refuses.
pub(super) fn parse_annotation(a: &str) -> Result<Annotation, Failure> {
    let Some((k, v)) = a.split_once('=') else {
        return Err(Failure::Usage(format!(
            "invalid annotation {a:?}, expected key=value"
        )));
    };
    let re = regex_lite(k).ok_or_else(|| {
        Failure::Usage(format!(
            "invalid annotation format, expected <type>:<key>=<value>, got {a:?}"
        ))
    })?;
    let (kind, platform, key) = re;
    match kind.as_str() {
        "index" | "manifest-descriptor" => {}
        "" | "manifest" => {
            return Err(Failure::Usage(format!(
                "--annotation {a:?}: {kind:?} annotations are not supported yet (use index: or manifest-descriptor:)"
            )));
        }
        "index-descriptor" => {
            return Err(Failure::Usage(format!(
                "--annotation {a:?}: \"index-descriptor\" annotations are invalid while creating an image"
            )));
        }
        other => {
            return Err(Failure::Usage(format!(
                "--annotation {a:?}: unknown annotation type {other:?}"
            )));
        }
    }
    let platform = match platform {
        Some(p) => Some(
            p.parse::<Platform>()
                .map_err(|e| Failure::Usage(format!("--annotation {a:?}: invalid platform: {e}")))?
                .format(),
        ),
        None => None,
    };
    Ok(Annotation {
        kind,
        platform,
        key,
        value: v.to_owned(),
    })
}

/// `^(?:([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?:)?(\S+)$` by hand: (type,
/// platform, key).
pub(super) fn regex_lite(k: &str) -> Option<(String, Option<String>, String)> {
    let valid_key = |s: &str| !s.is_empty() && !s.chars().any(char::is_whitespace);
    let valid_type =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    let valid_platform = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '-'))
    };
    // Try the prefixed forms first, as the regular expression's greedy
    // optional group does.
    if let Some((head, key)) = k.split_once(':') {
        if let Some(open) = head.find('[')
            && head.ends_with(']')
        {
            let (t, p) = (&head[..open], &head[open + 1..head.len() - 1]);
            if valid_type(t) && valid_platform(p) && valid_key(key) {
                return Some((t.to_owned(), Some(p.to_owned()), key.to_owned()));
            }
        } else if valid_type(head) && valid_key(key) {
            return Some((head.to_owned(), None, key.to_owned()));
        }
    }
    valid_key(k).then(|| (String::new(), None, k.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_parse_as_buildx() {
        let a = parse_annotation("index:org.opencontainers.image.title=x=y").unwrap();
        assert_eq!(
            (
                a.kind.as_str(),
                a.platform,
                a.key.as_str(),
                a.value.as_str()
            ),
            ("index", None, "org.opencontainers.image.title", "x=y")
        );
        let a = parse_annotation("manifest-descriptor[linux/arm64]:k=v").unwrap();
        assert_eq!(a.platform.as_deref(), Some("linux/arm64"));
        assert!(
            matches!(parse_annotation("k=v"), Err(Failure::Usage(m)) if m.contains("not supported yet"))
        );
        assert!(
            matches!(parse_annotation("manifest:k=v"), Err(Failure::Usage(m)) if m.contains("not supported yet"))
        );
        assert!(
            matches!(parse_annotation("index-descriptor:k=v"), Err(Failure::Usage(m)) if m.contains("invalid while creating"))
        );
        assert!(
            matches!(parse_annotation("bogus:k=v"), Err(Failure::Usage(m)) if m.contains("unknown annotation type"))
        );
        assert!(
            matches!(parse_annotation("index:k"), Err(Failure::Usage(m)) if m.contains("expected key=value"))
        );
    }
}
