//! What a vertex of the graph evaluates to.

use std::fmt;

use kiln_llb::Digest;
use kiln_snapshot::LayerId;
use serde::{Deserialize, Serialize, Serializer};

use crate::cache::error::CacheError;
use crate::error::Error;

/// What a vertex evaluates to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Value {
    /// A filesystem: its layers, bottom first.
    Fs { layers: Vec<LayerRef> },
    /// A named build context, read in place (never cached).
    Context { name: String },
}

/// A layer of a value: a snapshot of the layer store, or (an imported cache
/// hit) a diffID whose blob has not been fetched yet
/// ([`crate::cache::materialize`] makes it a snapshot).
///
/// Parsed once, when a value is read; written as the string it was read from
/// (the snapshot id, or `sha256:…`), so that the build cache's values on disk
/// are those of a layer list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum LayerRef {
    Snapshot(LayerId),
    Remote(Digest),
}

impl LayerRef {
    /// Parses a layer as a value names it: a diffID when it starts with
    /// `sha256:`, a snapshot id otherwise.
    pub fn parse(s: &str) -> Result<LayerRef, Error> {
        if s.starts_with("sha256:") {
            let d = s.parse().map_err(|_| CacheError::BadDiffId(s.to_owned()))?;
            return Ok(LayerRef::Remote(d));
        }
        Ok(LayerRef::Snapshot(LayerId::parse(s)?))
    }
}

impl From<LayerId> for LayerRef {
    fn from(id: LayerId) -> LayerRef {
        LayerRef::Snapshot(id)
    }
}

impl TryFrom<String> for LayerRef {
    type Error = Error;
    fn try_from(s: String) -> Result<LayerRef, Error> {
        LayerRef::parse(&s)
    }
}

impl fmt::Display for LayerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerRef::Snapshot(id) => f.write_str(id.as_str()),
            LayerRef::Remote(d) => d.fmt(f),
        }
    }
}

impl Serialize for LayerRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The store's view of the build cache's values (garbage collection and
/// `kiln check`): the layers a [`Value::Fs`] names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheValues;

/// [`Value`] with its layers as the strings written, unparsed: the store
/// judges each layer itself (`kiln check` names one that is gone, garbage
/// collection drops an entry with one that is not a snapshot), so a value
/// with a bad layer still decodes for it.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredValue {
    Fs {
        layers: Vec<String>,
    },
    #[allow(dead_code)]
    Context {
        name: String,
    },
}

impl kiln_store::CacheValues for CacheValues {
    fn layers(&self, bytes: &[u8]) -> Result<Vec<String>, String> {
        match serde_json::from_slice::<StoredValue>(bytes) {
            Ok(StoredValue::Fs { layers }) => Ok(layers),
            Ok(StoredValue::Context { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = "abcdefghij01";
    const DIFF_ID: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_json_of_a_value_is_that_of_its_layer_strings() {
        let json = format!(r#"{{"kind":"fs","layers":["{SNAPSHOT}","{DIFF_ID}"]}}"#);
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            Value::Fs {
                layers: vec![
                    LayerRef::Snapshot(LayerId::parse(SNAPSHOT).unwrap()),
                    LayerRef::Remote(DIFF_ID.parse().unwrap()),
                ]
            }
        );
        assert_eq!(serde_json::to_string(&v).unwrap(), json);
        let ctx = r#"{"kind":"context","name":"context"}"#;
        let v: Value = serde_json::from_str(ctx).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), ctx);
    }

    #[test]
    fn a_bad_layer_does_not_decode_as_a_value() {
        for bad in ["sha256:abc", "NOT-AN-ID", ""] {
            let json = format!(r#"{{"kind":"fs","layers":["{bad}"]}}"#);
            assert!(serde_json::from_str::<Value>(&json).is_err(), "{bad}");
        }
        assert!(matches!(
            LayerRef::parse("sha256:abc"),
            Err(Error::Cache(CacheError::BadDiffId(_)))
        ));
        assert!(matches!(LayerRef::parse("NOT-AN-ID"), Err(Error::Store(_))));
    }

    #[test]
    fn the_store_sees_the_layer_strings_as_written() {
        use kiln_store::CacheValues as _;
        let json = format!(r#"{{"kind":"fs","layers":["{SNAPSHOT}","{DIFF_ID}","bad"]}}"#);
        assert_eq!(
            CacheValues.layers(json.as_bytes()).unwrap(),
            vec![SNAPSHOT.to_owned(), DIFF_ID.to_owned(), "bad".to_owned()]
        );
        let ctx = br#"{"kind":"context","name":"context"}"#;
        assert_eq!(CacheValues.layers(ctx).unwrap(), Vec::<String>::new());
        assert!(CacheValues.layers(b"{}").is_err());
    }
}
