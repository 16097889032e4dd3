//! URLs: query encoding, hosts, locations relative to a request, and
//! Docker Hub's API host.

pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The host (`host[:port]`) of an absolute URL.
pub(super) fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Docker Hub's API lives at `registry-1.docker.io`.
pub(super) fn registry_host(domain: &str) -> String {
    match domain {
        "docker.io" | "index.docker.io" => "registry-1.docker.io".to_owned(),
        d => d.to_owned(),
    }
}

/// `loc` (absolute, or relative to `base`'s origin) as an absolute URL.
pub(super) fn absolute(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    if loc.starts_with('/') {
        format!("{scheme}://{host}{loc}")
    } else {
        format!("{scheme}://{host}/{loc}")
    }
}

pub(super) fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", url_encode(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            absolute(
                "http://127.0.0.1:5000/v2/x",
                "/v2/x/blobs/uploads/u?_state=a"
            ),
            "http://127.0.0.1:5000/v2/x/blobs/uploads/u?_state=a"
        );
        assert_eq!(absolute("https://a/b", "https://c/d"), "https://c/d");
        assert_eq!(
            with_query("http://a/u?s=1", "digest", "sha256:ab"),
            "http://a/u?s=1&digest=sha256%3Aab"
        );
        assert_eq!(
            url_host("https://auth.example:8443/token?x"),
            "auth.example:8443"
        );
        assert_eq!(registry_host("docker.io"), "registry-1.docker.io");
    }
}
