//! Go's `encoding/json` output for the OCI structs buildx marshals: field
//! order, `omitempty`, HTML escaping and `MarshalIndent`'s layout.

use serde_json::{Map, Value};

use super::descriptor::desc_str;

/// A JSON value with the field order of a Go struct, written as Go's
/// `encoding/json` writes it.
#[derive(Debug, Clone)]
pub(super) enum GoJson {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<GoJson>),
    /// Fields in order; a field whose value is [`GoJson::Omit`] is left out.
    Obj(Vec<(String, GoJson)>),
    /// An `omitempty` field that is empty.
    Omit,
}

impl GoJson {
    pub(super) fn from_value(v: &Value) -> GoJson {
        match v {
            Value::Null => GoJson::Null,
            Value::Bool(b) => GoJson::Bool(*b),
            Value::Number(n) => GoJson::Num(n.to_string()),
            Value::String(s) => GoJson::Str(s.clone()),
            Value::Array(a) => GoJson::Arr(a.iter().map(GoJson::from_value).collect()),
            // Go maps: keys sorted (serde_json's map is sorted).
            Value::Object(m) => GoJson::Obj(
                m.iter()
                    .map(|(k, v)| (k.clone(), GoJson::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// `json.MarshalIndent(v, "", "  ")`.
    pub(super) fn indent(&self) -> String {
        let mut s = String::new();
        self.write(&mut s, 0);
        s
    }

    fn write(&self, s: &mut String, depth: usize) {
        let pad = |s: &mut String, d: usize| {
            s.push('\n');
            for _ in 0..d {
                s.push_str("  ");
            }
        };
        match self {
            GoJson::Null | GoJson::Omit => s.push_str("null"),
            GoJson::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
            GoJson::Num(n) => s.push_str(n),
            GoJson::Str(x) => go_quote(s, x),
            GoJson::Arr(a) if a.is_empty() => s.push_str("[]"),
            GoJson::Arr(a) => {
                s.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    pad(s, depth + 1);
                    x.write(s, depth + 1);
                }
                pad(s, depth);
                s.push(']');
            }
            GoJson::Obj(f) => {
                let f: Vec<&(String, GoJson)> = f
                    .iter()
                    .filter(|(_, v)| !matches!(v, GoJson::Omit))
                    .collect();
                if f.is_empty() {
                    s.push_str("{}");
                    return;
                }
                s.push('{');
                for (i, (k, v)) in f.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    pad(s, depth + 1);
                    go_quote(s, k);
                    s.push_str(": ");
                    v.write(s, depth + 1);
                }
                pad(s, depth);
                s.push('}');
            }
        }
    }
}

/// A Go JSON string: HTML-sensitive characters and U+2028/9 escaped.
pub(super) fn go_quote(s: &mut String, x: &str) {
    s.push('"');
    for c in x.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                s.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

pub(super) fn omit_empty_str(x: &str) -> GoJson {
    if x.is_empty() {
        GoJson::Omit
    } else {
        GoJson::Str(x.to_owned())
    }
}

pub(super) fn omit_empty(v: Option<&Value>) -> GoJson {
    match v {
        None | Some(Value::Null) => GoJson::Omit,
        Some(Value::String(s)) if s.is_empty() => GoJson::Omit,
        Some(Value::Array(a)) if a.is_empty() => GoJson::Omit,
        Some(Value::Object(m)) if m.is_empty() => GoJson::Omit,
        Some(Value::Bool(false)) => GoJson::Omit,
        Some(v) => GoJson::from_value(v),
    }
}

pub(super) fn go_string_map(m: &Map<String, Value>) -> GoJson {
    if m.is_empty() {
        GoJson::Omit
    } else {
        GoJson::from_value(&Value::Object(m.clone()))
    }
}

/// An OCI descriptor in `ocispec.Descriptor`'s field order.
pub(super) fn go_descriptor(d: &Map<String, Value>) -> GoJson {
    let platform = match d.get("platform") {
        Some(Value::Object(p)) => GoJson::Obj(vec![
            (
                "architecture".into(),
                GoJson::Str(desc_str(p, "architecture").to_owned()),
            ),
            ("os".into(), GoJson::Str(desc_str(p, "os").to_owned())),
            ("os.version".into(), omit_empty(p.get("os.version"))),
            ("os.features".into(), omit_empty(p.get("os.features"))),
            ("variant".into(), omit_empty(p.get("variant"))),
        ]),
        _ => GoJson::Omit,
    };
    GoJson::Obj(vec![
        ("mediaType".into(), omit_empty(d.get("mediaType"))),
        (
            "digest".into(),
            GoJson::Str(desc_str(d, "digest").to_owned()),
        ),
        (
            "size".into(),
            GoJson::Num(
                d.get("size")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    .to_string(),
            ),
        ),
        ("urls".into(), omit_empty(d.get("urls"))),
        ("annotations".into(), omit_empty(d.get("annotations"))),
        ("data".into(), omit_empty(d.get("data"))),
        ("platform".into(), platform),
        ("artifactType".into(), omit_empty(d.get("artifactType"))),
    ])
}

/// An image config in `ocispec.Image`'s field order (Docker-only fields,
/// such as `Healthcheck`, left out as buildx's struct leaves them out).
pub(super) fn go_image(c: &Value) -> GoJson {
    let empty = Map::new();
    let config = c.get("config").and_then(Value::as_object).unwrap_or(&empty);
    let rootfs = c.get("rootfs").and_then(Value::as_object).unwrap_or(&empty);
    let history = c
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            GoJson::Arr(
                h.iter()
                    .filter_map(Value::as_object)
                    .map(|e| {
                        GoJson::Obj(
                            ["created", "created_by", "author", "comment", "empty_layer"]
                                .iter()
                                .map(|k| ((*k).to_owned(), omit_empty(e.get(*k))))
                                .collect(),
                        )
                    })
                    .collect(),
            )
        })
        .filter(|h| !matches!(h, GoJson::Arr(a) if a.is_empty()))
        .unwrap_or(GoJson::Omit);
    let s = |k: &str| {
        GoJson::Str(
            c.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        )
    };
    GoJson::Obj(vec![
        ("created".into(), omit_empty(c.get("created"))),
        ("author".into(), omit_empty(c.get("author"))),
        ("architecture".into(), s("architecture")),
        ("variant".into(), omit_empty(c.get("variant"))),
        ("os".into(), s("os")),
        ("os.version".into(), omit_empty(c.get("os.version"))),
        ("os.features".into(), omit_empty(c.get("os.features"))),
        (
            "config".into(),
            GoJson::Obj(
                [
                    "User",
                    "ExposedPorts",
                    "Env",
                    "Entrypoint",
                    "Cmd",
                    "Volumes",
                    "WorkingDir",
                    "Labels",
                    "StopSignal",
                    "ArgsEscaped",
                ]
                .iter()
                .map(|k| ((*k).to_owned(), omit_empty(config.get(*k))))
                .collect(),
            ),
        ),
        (
            "rootfs".into(),
            GoJson::Obj(vec![
                (
                    "type".into(),
                    GoJson::Str(desc_str(rootfs, "type").to_owned()),
                ),
                (
                    "diff_ids".into(),
                    match rootfs.get("diff_ids") {
                        Some(v @ Value::Array(_)) => GoJson::from_value(v),
                        _ => GoJson::Null,
                    },
                ),
            ]),
        ),
        ("history".into(), history),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_llb::Digest;
    use kiln_oci::media;

    #[test]
    fn go_json_is_go_s() {
        let mut d = Map::new();
        d.insert(
            "mediaType".into(),
            Value::String(media::OCI_MANIFEST.into()),
        );
        d.insert("digest".into(), Value::String(Digest::of(b"x").to_string()));
        d.insert("size".into(), Value::from(7));
        d.insert(
            "annotations".into(),
            serde_json::json!({"b": "<&>", "a": "1"}),
        );
        d.insert(
            "platform".into(),
            serde_json::json!({"os": "linux", "architecture": "arm64", "variant": ""}),
        );
        let s = go_descriptor(&d).indent();
        let expected = format!(
            "{{\n  \"mediaType\": \"{}\",\n  \"digest\": \"{}\",\n  \"size\": 7,\n  \"annotations\": {{\n    \"a\": \"1\",\n    \"b\": \"\\u003c\\u0026\\u003e\"\n  }},\n  \"platform\": {{\n    \"architecture\": \"arm64\",\n    \"os\": \"linux\"\n  }}\n}}",
            media::OCI_MANIFEST,
            Digest::of(b"x")
        );
        assert_eq!(s, expected);
    }
}
