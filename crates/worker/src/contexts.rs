//! Named build contexts that need the store before planning:
//! `--build-context NAME=oci-layout://DIR[:TAG|@DIGEST]` puts the image of
//! an OCI layout directory into the content store as a pull would (blobs
//! verified, layer blobs recorded for unpacking, the image recorded), so the
//! frontend can plan `FROM NAME` on it like any stored image.
//!
//! Local directories need nothing here: they are [`crate::build::BuildRequest`]
//! `local_contexts`, read in place like the main context.

use std::path::Path;

use kiln_frontend::ResolvedImage;
use kiln_llb::{Digest, Platform};
use kiln_oci::Descriptor;

use crate::error::Error;
use crate::image::{load_config, to_llb};
use crate::state::State;

/// Which entry of a layout's `index.json` to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSelector {
    /// The entry whose `org.opencontainers.image.ref.name` is the tag (a
    /// full reference ending in `:TAG` also matches).
    Tag(String),
    /// The entry with this digest.
    Digest(Digest),
}

/// Stores the image `select` names in the OCI layout `dir` (for
/// `platform`, if the entry is an index) and returns it as the frontend
/// resolves images: `digest` is its image ID in the store.
pub fn import_oci_layout(
    state: &State,
    dir: &Path,
    select: &LayoutSelector,
    platform: &Platform,
) -> Result<ResolvedImage, Error> {
    let pick = |d: &Descriptor| match select {
        LayoutSelector::Digest(want) => d.digest == *want,
        LayoutSelector::Tag(tag) => d
            .annotations
            .get(kiln_oci::export::ANNOTATION_REF_NAME)
            .is_some_and(|n| {
                n == tag
                    || n.rsplit_once(':')
                        .is_some_and(|(name, t)| t == tag && !t.contains('/') && !name.is_empty())
            }),
    };
    let img = kiln_oci::load_layout_image(&state.content, dir, &pick, platform).map_err(|e| {
        let what = match select {
            LayoutSelector::Tag(t) => format!("tag {t:?}"),
            LayoutSelector::Digest(d) => format!("digest {d}"),
        };
        Error::Other(format!(
            "oci-layout {} ({what}): {}",
            dir.display(),
            kiln_oci::Error::from(e)
        ))
    })?;
    for l in &img.layers {
        let known = state.layer_blobs.list(&l.diff_id)?;
        if !known.iter().any(|(c, _)| *c == l.compression) {
            state
                .layer_blobs
                .add(&l.diff_id, l.compression, &l.descriptor)?;
        }
    }
    crate::images::record(state, &img.id)?;
    let config = load_config(state, &img.id)?;
    Ok(ResolvedImage {
        digest: Some(img.id.to_string()),
        has_layers: !config.rootfs.diff_ids.is_empty(),
        config: to_llb(&config),
    })
}
