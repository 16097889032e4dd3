//! The local image store as an output's destination: the image named
//! there (with the index of its attestations kept beside it), or each
//! platform's image of a multi-platform result under each name. What
//! `type=image` writes, and `type=image,push=true` after its push.

use kiln_llb::Platform;
use kiln_oci::{Compression, Descriptor, ImageRef, MediaTypes};

use super::exporter::{Multi, Single};
use super::manifest::manifest;
use crate::attest::{Carries, store_index};
use crate::error::Error;
use crate::image::Committed;

/// The attestations the store keeps beside an image: those asked for.
pub(crate) const CARRIES: Carries = Carries::Asked;

/// Names the single-platform image `names` in the store.
pub(crate) fn write(cx: &Single<'_>, names: &[String]) -> Result<Option<Descriptor>, Error> {
    let img = cx.image()?;
    let Some(att) = cx.attestations(CARRIES) else {
        crate::images::naming(cx.state, &[img.id], |ix| {
            for n in names {
                ix.set(
                    n,
                    ImageRef {
                        id: img.id,
                        manifest: None,
                    },
                )?;
            }
            Ok(())
        })?;
        return Ok(None);
    };
    // The image's manifest, named, and the index that carries its
    // attestations kept beside the image.
    let m = manifest(
        cx.state,
        img,
        (Compression::gzip(), false),
        MediaTypes::Oci,
        cx.clamp,
        cx.rewritten,
        names,
    )?;
    let idx = att.index(
        cx.state,
        CARRIES,
        names,
        &[(img.config.platform(), m.manifest.clone())],
        MediaTypes::Oci,
    )?;
    crate::images::naming(cx.state, &[img.id], |ix| {
        for n in names {
            ix.set(
                n,
                ImageRef {
                    id: img.id,
                    manifest: Some(m.manifest.digest),
                },
            )?;
        }
        Ok(())
    })?;
    if let Some((idx, _)) = &idx {
        store_index(cx.state, &img.id, &idx.digest)?;
    }
    Ok(None)
}

/// Names each platform's image `names` in the store.
pub(crate) fn write_multi(cx: &Multi<'_>, names: &[String]) -> Result<Option<Descriptor>, Error> {
    let images = cx.images()?;
    if cx.attestations(CARRIES).is_some() {
        (cx.log)(
            "attestations are left out of the local image store for a multi-platform \
             build (not supported yet: use --push or -o type=oci)",
        );
    }
    let refs: Vec<(String, ImageRef)> = images
        .iter()
        .map(|(p, img)| {
            (
                p.format_all(),
                ImageRef {
                    id: img.id,
                    manifest: None,
                },
            )
        })
        .collect();
    let ids: Vec<_> = images.iter().map(|(_, img)| img.id).collect();
    crate::images::naming(cx.state, &ids, |ix| {
        if let Some(d) = default_image(images) {
            let default = ImageRef {
                id: d.id,
                manifest: None,
            };
            for n in names {
                ix.set_platforms(n, &refs, default)?;
            }
        }
        Ok(())
    })?;
    Ok(None)
}

/// The image a multi-platform name points at where one image is wanted:
/// this machine's platform's, else the first.
fn default_image(images: &[(Platform, Committed)]) -> Option<&Committed> {
    let host = Platform::host();
    images
        .iter()
        .find(|(p, _)| p.os == host.os && p.architecture == host.architecture)
        .or_else(|| images.first())
        .map(|(_, c)| c)
}
