//! The image manifests and indexes that image outputs write into the
//! content store before they put them somewhere (an archive, a layout, a
//! registry, the store's names): layer blobs of the asked compression, and
//! the index of a multi-platform result with its attestations.

use std::io;

use kiln_llb::Platform;
use kiln_oci::{Compression, Descriptor, ExportImage, Index, MediaTypes};
use kiln_snapshot::LayerId;
use kiln_store::layers::layer_blob;

use crate::attest::{Attestations, Carries};
use crate::error::{Error, OutputError};
use crate::image::Committed;
use crate::state::State;

/// BuildKit's annotation of a layer descriptor whose file times were
/// clamped to `SOURCE_DATE_EPOCH` (`rewrite-timestamp=true`): the epoch.
pub const REWRITTEN_TIMESTAMP: &str = "buildkit/rewritten-timestamp";

/// The manifest of `img` with layer blobs of `compression`, in the store.
/// `rewritten` (`rewrite-timestamp=true`): the layers the build made carry
/// [`REWRITTEN_TIMESTAMP`] when `clamp` is set, as BuildKit's exporter
/// marks the layers it rewrote (not those of the base image).
pub(crate) fn manifest(
    state: &State,
    img: &Committed,
    (compression, force): (Compression, bool),
    types: MediaTypes,
    clamp: Option<i64>,
    rewritten: bool,
    names: &[String],
) -> Result<ExportImage, Error> {
    let mut layers = Vec::with_capacity(img.layers.len());
    for l in &img.layers {
        let mut desc = if force {
            forced_blob(state, l, clamp, compression)?
        } else {
            layer_blob(state, l, clamp, compression)?
        };
        if rewritten
            && let Some(epoch) = clamp
            && kiln_store::layers::is_built(state, l)?
        {
            desc.annotations
                .insert(REWRITTEN_TIMESTAMP.to_owned(), epoch.to_string());
        }
        layers.push(desc);
    }
    let written = kiln_oci::write_image(&state.content, &img.config, &layers, types)
        .map_err(kiln_oci::Error::from)?;
    Ok(ExportImage {
        manifest: written.manifest,
        names: names.to_vec(),
    })
}

/// Writes the index of `images` (one manifest per platform, layers of
/// `compression`) to the store; returns its descriptor and the manifests.
pub(crate) fn index(
    state: &State,
    images: &[(Platform, Committed)],
    compression: (Compression, bool),
    types: MediaTypes,
    clamp: Option<i64>,
    rewritten: bool,
) -> Result<(Descriptor, Vec<Descriptor>), Error> {
    let mut manifests = Vec::with_capacity(images.len());
    for (_, img) in images {
        let m = manifest(state, img, compression, types, clamp, rewritten, &[])?;
        manifests.push(m.manifest);
    }
    let idx = Index::new(types, manifests.clone());
    let blob = state.content.put_json(&idx)?;
    Ok((Descriptor::new(types.index(), blob), manifests))
}

/// The index `plain` (and the manifests it lists), or, when `att` has
/// something for an output that carries `carries`, the index that also
/// carries the attestations (the same image manifests, BuildKit's layout).
pub(crate) fn with_attestations(
    state: &State,
    carries: Carries,
    names: &[String],
    att: Option<&Attestations>,
    images: &[(Platform, Committed)],
    plain: (Descriptor, Vec<Descriptor>),
    types: MediaTypes,
) -> Result<(Descriptor, Vec<Descriptor>), Error> {
    let Some(att) = att.filter(|a| a.applies_to(carries)) else {
        return Ok(plain);
    };
    let manifests: Vec<(Platform, Descriptor)> =
        images.iter().map(|(p, _)| p.clone()).zip(plain.1).collect();
    match att.index(state, carries, names, &manifests, types)? {
        Some(r) => Ok(r),
        None => Ok((plain.0, manifests.into_iter().map(|(_, d)| d).collect())),
    }
}

/// The blob of `layer` with exactly `compression`: built layers are
/// compressed so anyway; an unpacked layer without a blob of that
/// compression gets one, made from the blob it has (decompressed, checked
/// against its diffID, compressed) and recorded for later exports.
fn forced_blob(
    state: &State,
    layer: &LayerId,
    clamp: Option<i64>,
    compression: Compression,
) -> Result<kiln_oci::Descriptor, Error> {
    let l = state.layers.get(layer)?;
    if !l
        .meta
        .labels
        .contains_key(kiln_store::layers::LABEL_DIFF_ID)
    {
        return Ok(layer_blob(state, layer, clamp, compression)?);
    }
    let d = kiln_store::layers::diff_id(state, layer, clamp)?;
    let blobs = kiln_store::blobs::stored_blobs(state, &d)?;
    let (_, src) = blobs
        .iter()
        .find(|(c, _)| *c != compression)
        .or_else(|| blobs.first())
        .ok_or(OutputError::NoBlob { diff_id: d })?;
    let content = state.content.clone();
    let src = src.digest;
    Ok(state
        .layer_blobs
        .get_or_compress(&state.content, &d, compression, move || {
            let f = content.open_blob(&src).map_err(io::Error::other)?;
            let (_, tar) = kiln_oci::decompress(io::BufReader::new(f))?;
            Ok(tar)
        })?)
}
