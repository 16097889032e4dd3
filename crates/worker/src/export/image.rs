//! `type=image` (the default, `-t`): the local image store, under the
//! output's names; with `push=true`, a registry push too (`registry.rs`).
//! A multi-platform result gives each name one image per platform
//! ([`kiln_oci::ImageIndex::set_platforms`]; `FROM NAME` then picks the
//! build's platform, as from a registry).

use kiln_oci::Descriptor;

use super::attrs::{Attrs, not_yet};
use super::exporter::{Exporter, Multi, Output, Single};
use super::{registry, store};
use crate::attest::Carries;
use crate::error::Error;

/// `type=image`: the local store, under these names (fully normalised).
#[derive(Debug, Clone)]
pub struct Image {
    pub names: Vec<String>,
}

/// Parses `type=image`'s attributes.
pub fn parse(a: Attrs) -> Result<Output, String> {
    a.no_file_attrs()?;
    if a.push {
        return registry::pushed(a, true);
    }
    if a.oci_types.is_some() {
        return Err(not_yet(format!(
            "--output oci-mediatypes with type={} (it applies to registry pushes)",
            a.kind
        )));
    }
    Ok(Box::new(Image { names: a.names }))
}

impl Exporter for Image {
    fn kind(&self) -> &'static str {
        "image"
    }

    fn names(&self) -> &[String] {
        &self.names
    }

    fn stores(&self) -> bool {
        true
    }

    fn carries(&self) -> Carries {
        store::CARRIES
    }

    fn write(&self, cx: &Single<'_>) -> Result<Option<Descriptor>, Error> {
        store::write(cx, &self.names)
    }

    fn write_multi(&self, cx: &Multi<'_>) -> Result<Option<Descriptor>, Error> {
        store::write_multi(cx, &self.names)
    }
}
