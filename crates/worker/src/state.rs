//! The state directory: [`kiln_store::state`], re-exported (`kiln_worker::State`
//! is the store's).

pub use kiln_store::state::*;
