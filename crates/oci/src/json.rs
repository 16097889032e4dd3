//! Canonical JSON: the byte form of every document kiln writes into the
//! content store or a state file.
//!
//! A digest names bytes, so the same value must always serialise to the same
//! bytes: object keys sorted (by their UTF-8 bytes) at every level, no
//! insignificant whitespace, strings escaped the one way `serde_json` escapes
//! them. Sorting is done here, explicitly, rather than trusted to the map type:
//! `serde_json::Map` becomes insertion-ordered if any crate in the build enables
//! serde_json's `preserve_order` feature, and `oci-spec`-style `HashMap`s have
//! no order at all.
//!
//! Floating-point numbers are written as `serde_json` prints them; kiln's
//! documents contain none (sizes and durations are integers).

use serde::Serialize;
use serde_json::Value;

/// Why a value could not be turned into canonical JSON.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The value could not be serialised (a map with non-string keys, …).
    #[error("cannot serialise {what} as JSON: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
    /// The input bytes are not JSON.
    #[error("invalid JSON in {what}: {source}")]
    Parse {
        what: String,
        source: serde_json::Error,
    },
}

/// The canonical JSON bytes of `value`: sorted keys at every level, compact.
pub fn to_canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, JsonError> {
    let v = serde_json::to_value(value).map_err(|source| JsonError::Serialize {
        what: std::any::type_name::<T>(),
        source,
    })?;
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, &v);
    Ok(out)
}

/// Re-encodes arbitrary JSON `bytes` canonically (keys sorted, compact). `what`
/// names the input in the error.
pub fn canonicalize(bytes: &[u8], what: &str) -> Result<Vec<u8>, JsonError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|source| JsonError::Parse {
        what: what.to_owned(),
        source,
    })?;
    let mut out = Vec::with_capacity(bytes.len());
    write_value(&mut out, &v);
    Ok(out)
}

fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, k);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// A JSON string literal with `serde_json`'s escaping: `"` `\` and control
/// characters escaped (`\n`, `\t`, … or `\u00XX`), everything else verbatim.
fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap_or_default()
    }

    #[test]
    fn keys_sorted_at_every_level_and_compact() {
        let v = serde_json::json!({"b": 1, "a": {"z": [1, {"y": 2, "x": 3}], "c": null}});
        let out = s(to_canonical_json(&v).unwrap_or_default());
        assert_eq!(out, r#"{"a":{"c":null,"z":[1,{"x":3,"y":2}]},"b":1}"#);
    }

    #[test]
    fn independent_of_insertion_order() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..50 {
            a.insert(format!("k{i}"), i);
        }
        for i in (0..50).rev() {
            b.insert(format!("k{i}"), i);
        }
        let ja = to_canonical_json(&a).unwrap_or_default();
        let jb = to_canonical_json(&b).unwrap_or_default();
        assert_eq!(ja, jb);
        // The same value twice gives the same bytes.
        assert_eq!(ja, to_canonical_json(&a).unwrap_or_default());
        let sorted: BTreeMap<_, _> = a.into_iter().collect();
        assert_eq!(ja, to_canonical_json(&sorted).unwrap_or_default());
    }

    #[test]
    fn keys_sort_by_bytes() {
        // Uppercase sorts before lowercase, "a" before "a.b", non-ASCII last.
        let v = serde_json::json!({"é": 1, "a.b": 2, "a": 3, "Z": 4});
        assert_eq!(
            s(to_canonical_json(&v).unwrap_or_default()),
            r#"{"Z":4,"a":3,"a.b":2,"é":1}"#
        );
    }

    #[test]
    fn string_escapes() {
        let v = serde_json::json!(["a\"b\\c\n\t\u{1}<>&é"]);
        let out = s(to_canonical_json(&v).unwrap_or_default());
        assert_eq!(out, "[\"a\\\"b\\\\c\\n\\t\\u0001<>&é\"]");
        // And it agrees with serde_json's own escaping.
        assert_eq!(out, serde_json::to_string(&v).unwrap_or_default());
    }

    #[test]
    fn canonicalize_reencodes_and_rejects_garbage() {
        let out =
            canonicalize(b"{ \"b\" : [ 1 , 2 ], \"a\" : \"\\u003e\" }", "t").unwrap_or_default();
        assert_eq!(s(out), r#"{"a":">","b":[1,2]}"#);
        let err = canonicalize(b"{", "thing.json")
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("thing.json")));
    }
}
