//! `kiln-reference`: image references as Docker reads them.
//!
//! `alpine`, `alpine:3.20`, `ghcr.io/org/app@sha256:…` and
//! `localhost:5000/team/app:dev` all name images; Docker normalises them with
//! the grammar of `github.com/distribution/reference` (`docker.io/library/`
//! for official images, `index.docker.io` folded into `docker.io`, lowercase
//! repository names, tags of at most 128 characters, digests checked). This
//! crate is a port of that grammar, so a `FROM` line means what it means to
//! Docker. It is its own crate because both the frontend (which must not do
//! I/O) and the registry client need it.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// The registry Docker assumes when a reference names none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

const ALPHANUMERIC: &str = "[a-z0-9]+";
const SEPARATOR: &str = "(?:[._]|__|[-]+)";
const DOMAIN_NAME_COMPONENT: &str = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const OPTIONAL_PORT: &str = "(?::[0-9]+)?";
// Go regexp `\w` is ASCII-only.
const TAG: &str = r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
const DIGEST: &str = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}";
const IPV6: &str = r"\[(?:[a-fA-F0-9:]+)\]";

fn domain_and_port() -> String {
    let domain_name = format!(r"{DOMAIN_NAME_COMPONENT}(?:\.{DOMAIN_NAME_COMPONENT})*");
    format!("(?:{domain_name}|{IPV6}){OPTIONAL_PORT}")
}

fn remote_name() -> String {
    let path_component = format!("{ALPHANUMERIC}(?:{SEPARATOR}{ALPHANUMERIC})*");
    format!("{path_component}(?:/{path_component})*")
}

fn compile(pattern: &str) -> Regex {
    // The patterns are constants; a failure here is a bug caught by the tests.
    Regex::new(pattern).unwrap_or_else(|e| panic!("bad built-in pattern {pattern}: {e}"))
}

static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let name = format!("(?:{}/)?{}", domain_and_port(), remote_name());
    compile(&format!("^({name})(?::({TAG}))?(?:@({DIGEST}))?$"))
});

static ANCHORED_NAME: LazyLock<Regex> = LazyLock::new(|| {
    compile(&format!(
        "^(?:({})/)?({})$",
        domain_and_port(),
        remote_name()
    ))
});

static IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| compile("^[a-f0-9]{64}$"));

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    InvalidFormat,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("repository name must have at least one component")]
    NameEmpty,
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    Identifier(String),
    #[error("invalid digest {0}: {1}")]
    Digest(String, &'static str),
}

/// A normalised reference: always a domain and a path, optionally a tag and a
/// digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Docker's `ParseNormalizedNamed`: `alpine` → `docker.io/library/alpine`.
    pub fn parse_normalized(s: &str) -> Result<Reference, ReferenceError> {
        if IDENTIFIER.is_match(s) {
            return Err(ReferenceError::Identifier(s.to_owned()));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder
            .split_once(':')
            .map_or(remainder.as_str(), |(r, _)| r);
        if remote.to_lowercase() != remote {
            return Err(ReferenceError::Uppercase(remote.to_owned()));
        }
        Reference::parse(&format!("{domain}/{remainder}"))
    }

    /// Docker's `reference.Parse` (no normalisation).
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let Some(caps) = REFERENCE.captures(s) else {
            if s.is_empty() {
                return Err(ReferenceError::NameEmpty);
            }
            if REFERENCE.is_match(&s.to_lowercase()) {
                return Err(ReferenceError::Uppercase(s.to_owned()));
            }
            return Err(ReferenceError::InvalidFormat);
        };
        let name = caps.get(1).map_or("", |m| m.as_str());
        let (domain, path) = match ANCHORED_NAME.captures(name) {
            Some(n) => (
                n.get(1).map_or("", |m| m.as_str()).to_owned(),
                n.get(2).map_or("", |m| m.as_str()).to_owned(),
            ),
            None => (String::new(), name.to_owned()),
        };
        if path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        let digest = match caps.get(3) {
            Some(d) => Some(validate_digest(d.as_str())?),
            None => None,
        };
        Ok(Reference {
            domain,
            path,
            tag: caps.get(2).map(|m| m.as_str().to_owned()),
            digest,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path (`library/alpine`).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `domain/path`.
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// Docker's `TagNameOnly`: adds `:latest` when there is neither tag nor digest.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".to_owned());
        }
        self
    }

    /// The same reference pinned to `digest`.
    pub fn with_digest(mut self, digest: &str) -> Result<Reference, ReferenceError> {
        self.digest = Some(validate_digest(digest)?);
        Ok(self)
    }

    /// The short form Docker prints (`alpine:3.20` for
    /// `docker.io/library/alpine:3.20`).
    pub fn familiar(&self) -> String {
        let mut name = self.name();
        if self.domain == DEFAULT_DOMAIN {
            let path = self.path.as_str();
            name = match path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_owned(),
                _ => path.to_owned(),
            };
        }
        let mut s = name;
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn split_docker_domain(name: &str) -> (String, String) {
    let (domain, mut remote) = match name.split_once('/') {
        None => {
            return (
                DEFAULT_DOMAIN.to_owned(),
                format!("{OFFICIAL_REPO_PREFIX}{name}"),
            );
        }
        Some((d, r)) if d == "localhost" => (d.to_owned(), r.to_owned()),
        Some((d, r)) if d == LEGACY_DEFAULT_DOMAIN => (DEFAULT_DOMAIN.to_owned(), r.to_owned()),
        Some((d, r)) if d.contains(['.', ':']) => (d.to_owned(), r.to_owned()),
        Some((d, r)) if d.to_lowercase() != d => (d.to_owned(), r.to_owned()),
        Some(_) => (DEFAULT_DOMAIN.to_owned(), name.to_owned()),
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        remote = format!("{OFFICIAL_REPO_PREFIX}{remote}");
    }
    (domain, remote)
}

/// go-digest's `Parse`: a known algorithm and the right number of hex digits.
fn validate_digest(d: &str) -> Result<String, ReferenceError> {
    let bad = |why| ReferenceError::Digest(d.to_owned(), why);
    let (alg, hex) = d
        .split_once(':')
        .ok_or_else(|| bad("invalid checksum digest format"))?;
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(bad("unsupported digest algorithm")),
    };
    if hex.len() != len {
        return Err(bad("invalid checksum digest length"));
    }
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad("invalid checksum digest format"));
    }
    Ok(d.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        match Reference::parse_normalized(s) {
            Ok(r) => r.with_default_tag().to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn normalisation() {
        assert_eq!(norm("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(norm("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("index.docker.io/user/app:1"), "docker.io/user/app:1");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/a/b:c"), "localhost:5000/a/b:c");
        assert_eq!(norm("ghcr.io/org/app:v1"), "ghcr.io/org/app:v1");
        assert_eq!(norm("[::1]:5000/app"), "[::1]:5000/app:latest");
        let d = "sha256:".to_owned() + &"a".repeat(64);
        assert_eq!(
            norm(&format!("alpine@{d}")),
            format!("docker.io/library/alpine@{d}")
        );
        assert_eq!(
            norm(&format!("alpine:3@{d}")),
            format!("docker.io/library/alpine:3@{d}")
        );
        assert!(norm("Alpine").contains("must be lowercase"));
        assert!(norm("").starts_with("error"));
        assert!(norm("alpine:").starts_with("error"));
        assert!(norm("a b").starts_with("error"));
        assert!(norm(&"a".repeat(64)).contains("64-byte hexadecimal"));
        assert!(norm("alpine@sha256:abc").starts_with("error"));
        assert!(norm("alpine@md5:0123456789abcdef0123456789abcdef").contains("unsupported"));
        assert!(norm(&format!("a:{}", "t".repeat(129))).starts_with("error"));
        // Go regexp `\w` is ASCII: a tag with other letters is invalid.
        assert!(norm("alpine:é").starts_with("error"));
    }

    #[test]
    fn familiar() {
        let r = Reference::parse_normalized("alpine:3").unwrap();
        assert_eq!(r.familiar(), "alpine:3");
        let r = Reference::parse_normalized("user/app").unwrap();
        assert_eq!(r.familiar(), "user/app");
        let r = Reference::parse_normalized("ghcr.io/x/y:1").unwrap();
        assert_eq!(r.familiar(), "ghcr.io/x/y:1");
    }
}
