//! Image sources (`FROM`, `COPY --from=IMAGE`): the image's layers as
//! snapshots, unpacked on first use and shared afterwards. What images are
//! otherwise (resolving `FROM`, committing a result, importing) is
//! [`crate::image`]'s.

use kiln_llb::Digest;
use kiln_llb::op::SourceOp;

use crate::error::{Error, ImageError, InternalError};
use crate::state::State;
use crate::value::{LayerRef, Value};

/// Runs an image source: the image's layers as snapshots, unpacked on first
/// use and shared afterwards. All it needs is the state.
pub(crate) fn source(state: &State, op: &SourceOp) -> Result<Value, Error> {
    let SourceOp::Image {
        reference, digest, ..
    } = op
    else {
        return Err(InternalError::WrongKind("an image source").into());
    };
    let digest = digest.as_deref().ok_or_else(|| ImageError::NotInStore {
        reference: reference.clone(),
    })?;
    let id: Digest = digest.parse().map_err(|source| ImageError::BadDigest {
        reference: reference.clone(),
        source,
    })?;
    let layers = kiln_store::layers::image_layers(state, &id)?;
    Ok(Value::Fs {
        layers: layers.into_iter().map(LayerRef::Snapshot).collect(),
    })
}
