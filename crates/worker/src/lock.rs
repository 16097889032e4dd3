//! The state directory's lock: [`kiln_store::lock`], re-exported.

pub use kiln_store::lock::*;
