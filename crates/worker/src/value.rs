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
