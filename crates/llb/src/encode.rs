//! The canonical encoding that vertex digests are computed over.
//!
//! ```text
//! kiln.llb.v1\n{"inputs":["sha256:…",…],"op":{…}}
//! ```
//!
//! The JSON is canonical: object keys sorted by their UTF-8 bytes, no whitespace,
//! strings escaped as serde_json escapes them (`"`, `\`, control characters), and
//! integers in plain decimal. Fields that are empty, `false` or absent are left
//! out (see [`crate::op`]), so the encoding only grows when a graph uses something
//! new. The sorting is done here, not by relying on serde_json's map type, so a
//! dependency that turns on `preserve_order` cannot change a digest.
//!
//! Nothing that describes *where* or *when* goes in: vertex names, Dockerfile
//! locations, stage names and `--no-cache` marks live in [`crate::VertexMeta`].

use serde_json::Value;

use crate::digest::Digest;
use crate::op::Op;

/// Version prefix of the encoding. Changing anything about the encoding means
/// changing this string.
pub const ENCODING_VERSION: &str = "kiln.llb.v1";

/// The bytes a vertex digest is computed over.
pub fn encode(op: &Op, inputs: &[Digest]) -> Vec<u8> {
    let value = serde_json::json!({ "inputs": inputs, "op": op });
    let mut out = String::with_capacity(256);
    out.push_str(ENCODING_VERSION);
    out.push('\n');
    write_canonical(&value, &mut out);
    out.into_bytes()
}

/// Digest of `op` applied to `inputs`.
pub fn digest(op: &Op, inputs: &[Digest]) -> Digest {
    Digest::of(&encode(op, inputs))
}

/// Writes `v` as canonical JSON.
pub fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(val, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    // serde_json's string escaping is canonical already (shortest escapes,
    // `\u00XX` for other control characters, no escaping of non-ASCII).
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_and_strings_escaped() {
        let v = serde_json::json!({"b": [1, true, null], "a": "x\"\n\u{1}é", "A": {}});
        let mut s = String::new();
        write_canonical(&v, &mut s);
        assert_eq!(s, r#"{"A":{},"a":"x\"\n\u0001é","b":[1,true,null]}"#);
    }

    #[test]
    fn matches_serde_json_escaping() {
        for s in [
            "plain",
            "tab\there",
            "\u{7f}\u{1f}\u{0}",
            "\\\"",
            "ünïcødé 🚀",
        ] {
            let mut ours = String::new();
            write_string(s, &mut ours);
            assert_eq!(ours, serde_json::to_string(s).unwrap_or_default());
        }
    }
}
