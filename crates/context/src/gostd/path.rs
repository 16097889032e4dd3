//! Go's `path/filepath` lexical functions for Unix, on bytes.

/// `filepath.Clean`: the shortest path equivalent to `path` by purely lexical
/// processing (collapse `//`, drop `.`, resolve `..` against preceding
/// elements, `..` at the root stays at the root). The empty path is `.`.
pub(crate) fn clean(path: &[u8]) -> Vec<u8> {
    if path.is_empty() {
        return b".".to_vec();
    }
    let rooted = path[0] == b'/';
    let n = path.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        if path[r] == b'/' || (path[r] == b'.' && (r + 1 == n || path[r + 1] == b'/')) {
            // Empty or `.` element.
            r += 1;
        } else if path[r] == b'.'
            && path.get(r + 1) == Some(&b'.')
            && (r + 2 == n || path[r + 2] == b'/')
        {
            r += 2;
            if out.len() > dotdot {
                // Back up to the last separator (Go's `out.w--` loop looks at
                // the first byte past the kept prefix).
                let mut w = out.len() - 1;
                while w > dotdot && out[w] != b'/' {
                    w -= 1;
                }
                out.truncate(w);
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && path[r] != b'/' {
                out.push(path[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

/// `filepath.Dir`: everything but the last element, cleaned.
pub(crate) fn dir(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => clean(&path[..=i]),
        None => clean(b""),
    }
}

/// `filepath.Join` of two elements: empty elements are ignored, the result
/// is cleaned, and the join of nothing is the empty path.
pub(crate) fn join(a: &[u8], b: &[u8]) -> Vec<u8> {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Vec::new(),
        (false, true) => clean(a),
        (true, false) => clean(b),
        (false, false) => {
            let mut s = Vec::with_capacity(a.len() + 1 + b.len());
            s.extend_from_slice(a);
            s.push(b'/');
            s.extend_from_slice(b);
            clean(&s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go's path/filepath cleantests (Unix part).
    #[test]
    fn clean_like_go() {
        let cases: &[(&str, &str)] = &[
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("", "."),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("a/b/c/", "a/b/c"),
            ("./", "."),
            ("../", ".."),
            ("../../", "../.."),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("//abc//", "/abc"),
            ("abc//", "abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("/../abc", "/abc"),
            ("a/../b:/../../c", "../c"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
        ];
        for (input, want) in cases {
            let got = clean(input.as_bytes());
            assert_eq!(String::from_utf8_lossy(&got), *want, "Clean({input:?})");
        }
    }

    #[test]
    fn dir_like_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("/.", "/"),
            ("/", "/"),
            ("////", "/"),
            ("/foo", "/"),
            ("x/", "x"),
            ("abc", "."),
            ("abc/def", "abc"),
            ("a/b/.x", "a/b"),
            ("a/b/c.", "a/b"),
            ("a/b/c.x", "a/b"),
        ] {
            assert_eq!(
                String::from_utf8_lossy(&dir(input.as_bytes())),
                want,
                "Dir({input:?})"
            );
        }
    }

    #[test]
    fn join_like_go() {
        assert_eq!(join(b"", b""), b"");
        assert_eq!(join(b"a", b""), b"a");
        assert_eq!(join(b"/", b"a"), b"/a");
        assert_eq!(join(b"a/", b"../b"), b"b");
    }
}
