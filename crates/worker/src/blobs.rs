//! The layers of stored images and their blobs: [`kiln_store::blobs`],
//! re-exported.

pub use kiln_store::blobs::*;
