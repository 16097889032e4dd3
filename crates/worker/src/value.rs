//! What a vertex of the graph evaluates to.

use serde::{Deserialize, Serialize};

/// What a vertex evaluates to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Value {
    /// A filesystem: layer ids of the snapshot store, bottom first.
    Fs { layers: Vec<String> },
    /// A named build context, read in place (never cached).
    Context { name: String },
}

/// The store's view of the build cache's values (garbage collection and
/// `kiln check`): the layers a [`Value::Fs`] names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheValues;

impl kiln_store::CacheValues for CacheValues {
    fn layers(&self, bytes: &[u8]) -> Result<Vec<String>, String> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Fs { layers }) => Ok(layers),
            Ok(Value::Context { .. }) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        }
    }
}
