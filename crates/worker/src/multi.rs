//! The outputs of a multi-platform build (`--platform a,b`): one image per
//! platform, gathered in an OCI image index. Each output writes it its own
//! way ([`Exporter::write_multi`]: `type=oci` an index in its layout, a
//! push each manifest by digest and the index under each name, the local
//! store one image per platform under each name, `type=local` and
//! `type=tar` one directory per platform); `type=docker` is refused before
//! the build starts (`build::check_multi_platform_outputs`).

use kiln_llb::Platform;
use kiln_oci::Descriptor;
use kiln_snapshot::LayerId;

use crate::error::Error;
use crate::export::{Multi, Output};
use crate::image::Committed;
use crate::state::State;

/// Writes every output of a multi-platform build; returns the descriptors of
/// the indexes written (for `--metadata-file`: what was pushed first).
/// `rewritten`: see `export/manifest.rs`.
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
    let cx = Multi {
        state,
        images,
        layers,
        clamp,
        rewritten,
        att,
        registry,
        log,
    };
    let mut written = Vec::new();
    for out in outputs {
        if let Some(d) = out.write_multi(&cx)? {
            if out.pushes() {
                written.insert(0, d);
            } else {
                written.push(d);
            }
        }
    }
    Ok(written)
}
