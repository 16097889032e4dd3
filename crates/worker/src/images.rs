//! The images of the local store: [`kiln_store::images`], re-exported, with
//! [`naming`] returning the worker's error.

use kiln_llb::Digest;
pub use kiln_store::images::{
    Found, ImageSummary, RECORDS_DIR, Removed, find, human_size, image_size, layer_sizes, list,
    record, records, remove, remove_record,
};

use crate::error::Error;
use crate::state::State;

/// Records the images `ids` and runs `name` (which points names at them)
/// with the image index locked ([`kiln_store::images::naming`]).
pub fn naming<T>(
    state: &State,
    ids: &[Digest],
    name: impl FnOnce(&kiln_oci::Locked<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    kiln_store::images::naming(state, ids, name)
}
