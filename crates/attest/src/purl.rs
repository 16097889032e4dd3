//! Package URLs (`pkg:docker/busybox@latest?platform=linux%2Famd64`) with
//! the escaping of `github.com/package-url/packageurl-go` as BuildKit 0.13
//! vendors it: namespace segments and the name with Go's
//! `url.QueryEscape`, the version and qualifier values with
//! `url.PathEscape`, qualifiers in the order given.
//!
//! Written here rather than taken from the `packageurl` crate because the
//! point is to produce the very strings BuildKit and syft produce (tools
//! compare them as strings), and the Rust crate escapes differently
//! (it keeps `/` in qualifier values).

use kiln_llb::Platform;
use kiln_reference::Reference;

/// A package URL, built from its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Purl {
    pub kind: String,
    /// `/`-separated; may be empty.
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub qualifiers: Vec<(String, String)>,
}

impl Purl {
    /// A purl of `kind` (`deb`, `apk`, `pypi`, `npm`, `golang`, `cargo`, …).
    pub fn new(kind: &str, namespace: &str, name: &str, version: &str) -> Purl {
        Purl {
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            qualifiers: Vec::new(),
        }
    }

    /// Adds a qualifier (kept in this order; empty values are left out, as
    /// packageurl-go's callers in syft do).
    pub fn qualifier(mut self, key: &str, value: &str) -> Purl {
        if !value.is_empty() {
            self.qualifiers.push((key.to_owned(), value.to_owned()));
        }
        self
    }
}

impl std::fmt::Display for Purl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pkg:{}/", self.kind)?;
        if !self.namespace.is_empty() {
            let ns: Vec<String> = self.namespace.split('/').map(query_escape).collect();
            write!(f, "{}/", ns.join("/"))?;
        }
        write!(f, "{}", query_escape(&self.name))?;
        if !self.version.is_empty() {
            write!(f, "@{}", path_escape(&self.version))?;
        }
        if !self.qualifiers.is_empty() {
            let q: Vec<String> = self
                .qualifiers
                .iter()
                .map(|(k, v)| format!("{k}={}", path_escape(v)))
                .collect();
            write!(f, "?{}", q.join("&"))?;
        }
        Ok(())
    }
}

/// BuildKit's `purl.RefToPURL`: an image reference (normalised as Docker
/// does; a tag added when there is no digest) as `pkg:docker/…` or
/// `pkg:oci/…`, with a `digest` qualifier for canonical references and a
/// `platform` qualifier when given.
pub fn image_purl(kind: &str, reference: &str, platform: Option<&Platform>) -> Option<String> {
    let r = Reference::parse_normalized(reference).ok()?;
    let mut qualifiers = Vec::new();
    let r = match r.digest() {
        Some(d) => {
            qualifiers.push(("digest".to_owned(), d.to_owned()));
            r
        }
        None => r.with_default_tag(),
    };
    let version = r.tag().unwrap_or_default().to_owned();
    // The familiar name without tag or digest.
    let familiar = r.familiar();
    let name = familiar
        .split_once('@')
        .map_or(familiar.as_str(), |(n, _)| n)
        .to_owned();
    let name = match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n.to_owned(),
        _ => name,
    };
    let (namespace, name) = match name.rsplit_once('/') {
        Some((ns, n)) => (ns.to_owned(), n.to_owned()),
        None => (String::new(), name),
    };
    if let Some(p) = platform {
        qualifiers.push(("platform".to_owned(), p.normalized().format()));
    }
    Some(
        Purl {
            kind: kind.to_owned(),
            namespace,
            name,
            version,
            qualifiers,
        }
        .to_string(),
    )
}

/// Go's `shouldEscape` for the two modes used here.
fn escape(s: &str, query: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (!query && matches!(b, b'$' | b'&' | b'+' | b':' | b'=' | b'@'));
        if keep {
            out.push(b as char);
        } else if query && b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    escape(s, true)
}

/// Go's `url.PathEscape`.
pub fn path_escape(s: &str) -> String {
    escape(s, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_image_purls() {
        let amd = Platform::new("linux", "amd64", "");
        assert_eq!(
            image_purl("docker", "busybox:latest", Some(&amd)).unwrap(),
            "pkg:docker/busybox@latest?platform=linux%2Famd64"
        );
        assert_eq!(
            image_purl("docker", "docker.io/library/busybox", None).unwrap(),
            "pkg:docker/busybox@latest"
        );
        assert_eq!(
            image_purl("docker", "127.0.0.1:5000/a/b:1", None).unwrap(),
            "pkg:docker/127.0.0.1%3A5000/a/b@1"
        );
        let arm = Platform::new("linux", "arm", "v7");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(
            image_purl("oci", &format!("x/y@{d}"), Some(&arm)).unwrap(),
            format!(
                "pkg:oci/x/y?digest=sha256:{}&platform=linux%2Farm%2Fv7",
                &d[7..]
            )
        );
    }

    #[test]
    fn go_escaping() {
        assert_eq!(query_escape("a b+c/d:e@f"), "a+b%2Bc%2Fd%3Ae%40f");
        assert_eq!(path_escape("a b+c/d:e@f"), "a%20b+c%2Fd:e@f");
        let p = Purl::new("deb", "debian", "libc6", "2.36-9+deb12u4")
            .qualifier("arch", "amd64")
            .qualifier("upstream", "")
            .qualifier("distro", "debian-12");
        assert_eq!(
            p.to_string(),
            "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&distro=debian-12"
        );
    }
}
