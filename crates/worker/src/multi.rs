//! The outputs of a multi-platform build (`--platform a,b`): one image per
//! platform, gathered in an OCI image index.
//!
//! * `type=oci` writes the per-platform manifests and an index of them (the
//!   layout's `index.json` names the index);
//! * a registry output pushes each platform's manifest by digest, then the
//!   index under each name;
//! * the local store gives each name one image per platform
//!   ([`kiln_oci::ImageIndex::set_platforms`]; `FROM NAME` then picks the
//!   build's platform, as from a registry);
//! * `type=local` writes one directory per platform (`linux_arm64/`), as
//!   buildx does;
//! * `type=docker` and `type=tar` are refused before the build starts
//!   (`build::check_multi_platform_outputs`).

use kiln_llb::Platform;
use kiln_oci::{Descriptor, ExportImage, ImageRef, Index, MediaTypes};
use kiln_snapshot::LayerId;

use crate::error::{Error, InternalError, OutputError};
use crate::export::{self, Output};
use crate::image::Committed;
use crate::state::State;

/// `linux/arm/v7` → `linux_arm_v7`: a platform's directory of a
/// multi-platform `type=local` output, as buildx names it.
pub fn platform_dir(p: &Platform) -> String {
    p.format_all().replace('/', "_")
}

/// Writes the index of `images` (one manifest per platform, layers of
/// `compression`) to the store; returns its descriptor.
fn index(
    state: &State,
    images: &[(Platform, Committed)],
    compression: (kiln_oci::Compression, bool),
    types: MediaTypes,
    clamp: Option<i64>,
    rewritten: bool,
) -> Result<(Descriptor, Vec<Descriptor>), Error> {
    let mut manifests = Vec::with_capacity(images.len());
    for (_, img) in images {
        let m = export::manifest(state, img, compression, types, clamp, rewritten, &[])?;
        manifests.push(m.manifest);
    }
    let idx = Index::new(types, manifests.clone());
    let blob = state.content.put_json(&idx)?;
    Ok((Descriptor::new(types.index(), blob), manifests))
}

/// The index `plain` (and the manifests it lists), or, when `att` has
/// something for `out`, the index that also carries the attestations
/// (the same image manifests, BuildKit's layout).
fn with_attestations(
    state: &State,
    out: &Output,
    names: &[String],
    att: Option<&crate::attest::Attestations>,
    images: &[(Platform, Committed)],
    plain: (Descriptor, Vec<Descriptor>),
    types: MediaTypes,
) -> Result<(Descriptor, Vec<Descriptor>), Error> {
    let Some(att) = att.filter(|a| a.applies_to(out)) else {
        return Ok(plain);
    };
    let manifests: Vec<(Platform, Descriptor)> =
        images.iter().map(|(p, _)| p.clone()).zip(plain.1).collect();
    match att.index(state, out, names, &manifests, types)? {
        Some(r) => Ok(r),
        None => Ok((plain.0, manifests.into_iter().map(|(_, d)| d).collect())),
    }
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

/// Writes every output of a multi-platform build; returns the descriptors of
/// the indexes written (for `--metadata-file`). `rewritten`: see
/// `export::manifest`.
#[allow(clippy::too_many_arguments)]
pub fn write_outputs(
    state: &State,
    images: &[(Platform, Committed)],
    layers: &[(Platform, Vec<LayerId>)],
    outputs: &[Output],
    clamp: Option<i64>,
    rewritten: bool,
    registry: Option<&kiln_registry::Client>,
    att: Option<&crate::attest::Attestations>,
    log: &(dyn Fn(&str) + Send + Sync),
) -> Result<Vec<Descriptor>, Error> {
    let mut written = Vec::new();
    let need_images = || -> Result<(), Error> {
        if images.is_empty() {
            return Err(OutputError::NoImage.into());
        }
        Ok(())
    };
    for out in outputs {
        match out {
            Output::Image { names } => {
                need_images()?;
                if att.is_some_and(|a| a.applies_to(out)) {
                    log(
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
                crate::images::naming(state, &ids, |ix| {
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
            }
            Output::Oci {
                dest,
                tar,
                names,
                compression,
                force_compression,
            } => {
                need_images()?;
                let (idx, _) = with_attestations(
                    state,
                    out,
                    names,
                    att,
                    images,
                    index(
                        state,
                        images,
                        (*compression, *force_compression),
                        MediaTypes::Oci,
                        clamp,
                        rewritten,
                    )?,
                    MediaTypes::Oci,
                )?;
                let export = ExportImage {
                    manifest: idx.clone(),
                    names: names.clone(),
                };
                export::write_layout(state, dest, *tar, &export)?;
                written.push(idx);
            }
            Output::Registry {
                names,
                compression,
                types,
                force_compression,
                store,
                ..
            } => {
                need_images()?;
                let client = registry.ok_or(InternalError::NoRegistryClient("pushing"))?;
                let (idx, manifests) = with_attestations(
                    state,
                    out,
                    names,
                    att,
                    images,
                    index(
                        state,
                        images,
                        (*compression, *force_compression),
                        *types,
                        clamp,
                        rewritten,
                    )?,
                    *types,
                )?;
                crate::registry::push_index(state, client, &idx, &manifests, names, log)?;
                written.insert(0, idx);
                if *store {
                    let again = [Output::Image {
                        names: names.clone(),
                    }];
                    write_outputs(
                        state, images, layers, &again, clamp, rewritten, None, None, log,
                    )?;
                }
            }
            Output::Local { dest } => {
                for (p, l) in layers {
                    let dir = dest.join(platform_dir(p));
                    export::local(state, l, &dir)?;
                    if let Some(a) = att.filter(|a| a.applies_to(out)) {
                        a.write_local(state, l, p, &dir, clamp)?;
                    }
                }
            }
            Output::Tar { dest } => {
                // As BuildKit's tar exporter: one directory per platform
                // (`linux_amd64/…`), each with its statements beside it.
                let scratch = state.scratch()?;
                let mut trees = Vec::with_capacity(layers.len());
                for (p, l) in layers {
                    let name = platform_dir(p);
                    let mut extra = None;
                    if let Some(a) = att.filter(|a| a.applies_to(out)) {
                        let dir = scratch.path().join(format!("attest-{name}"));
                        a.write_local(state, l, p, &dir, clamp)?;
                        extra = Some(dir);
                    }
                    trees.push((name, l.clone(), extra));
                }
                export::multi_flat_tar(state, &trees, dest, clamp)?;
            }
            Output::Docker { .. } => {
                return Err(OutputError::NotMultiPlatform.into());
            }
        }
    }
    Ok(written)
}
