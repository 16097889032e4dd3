//! `type=registry` (`--push`, `type=image,push=true`): pushed to a
//! registry under each name; a multi-platform result as each platform's
//! manifest by digest, then the index under each name. What it pushes is
//! what `--metadata-file` reports.

use kiln_oci::{Compression, Descriptor, MediaTypes};

use super::attrs::Attrs;
use super::exporter::{Exporter, Multi, Output, Single};
use super::manifest::{index, manifest, with_attestations};
use super::store;
use crate::attest::Carries;
use crate::error::Error;

/// Pushed under each name.
#[derive(Debug, Clone)]
pub struct Registry {
    pub names: Vec<String>,
    pub compression: Compression,
    pub types: MediaTypes,
    /// Recompress layers that already have a blob of another compression.
    pub force_compression: bool,
    /// Also record the names in the local store (`type=image,push=true`).
    pub store: bool,
    /// `registry.insecure=true`: plain HTTP allowed for the names' hosts
    /// (the cli configures the client with it).
    pub insecure: bool,
}

/// Parses `type=registry`'s attributes.
pub fn parse(a: Attrs) -> Result<Output, String> {
    pushed(a, false)
}

/// A push (`store`: also into the local store, `type=image,push=true`).
pub(crate) fn pushed(a: Attrs, store: bool) -> Result<Output, String> {
    a.no_file_attrs()?;
    if a.names.is_empty() {
        return Err(format!(
            "--output type={} needs a name to push to (name=… or -t)",
            a.kind
        ));
    }
    Ok(Box::new(Registry {
        names: a.names,
        compression: a.compression,
        types: if a.oci_types.unwrap_or(true) {
            MediaTypes::Oci
        } else {
            MediaTypes::Docker
        },
        force_compression: a.force_compression,
        store,
        insecure: a.insecure,
    }))
}

impl Exporter for Registry {
    fn kind(&self) -> &'static str {
        "registry"
    }

    fn carries(&self) -> Carries {
        Carries::All
    }

    fn names(&self) -> &[String] {
        &self.names
    }

    fn stores(&self) -> bool {
        self.store
    }

    fn pushes(&self) -> bool {
        true
    }

    fn insecure(&self) -> bool {
        self.insecure
    }

    fn write(&self, cx: &Single<'_>) -> Result<Option<Descriptor>, Error> {
        let img = cx.image()?;
        let client = cx.client()?;
        let m = manifest(
            cx.state,
            img,
            (self.compression, self.force_compression),
            self.types,
            cx.clamp,
            cx.rewritten,
            &self.names,
        )?;
        // The manifest, or the index that carries it and its attestations.
        let mut pushed = None;
        if let Some(att) = cx.attestations(self.carries())
            && let Some((idx, all)) = att.index(
                cx.state,
                self.carries(),
                &self.names,
                &[(img.config.platform(), m.manifest.clone())],
                self.types,
            )?
        {
            crate::registry::push_index(cx.state, client, &idx, &all, &self.names, cx.log)?;
            pushed = Some(idx);
        }
        let pushed = match pushed {
            Some(idx) => idx,
            None => {
                crate::registry::push(cx.state, client, &m.manifest, &self.names, cx.log)?;
                m.manifest
            }
        };
        if self.store {
            store::write(cx, &self.names)?;
        }
        Ok(Some(pushed))
    }

    fn write_multi(&self, cx: &Multi<'_>) -> Result<Option<Descriptor>, Error> {
        let images = cx.images()?;
        let client = cx.client()?;
        let plain = index(
            cx.state,
            images,
            (self.compression, self.force_compression),
            self.types,
            cx.clamp,
            cx.rewritten,
        )?;
        let (idx, manifests) = with_attestations(
            cx.state,
            self.carries(),
            &self.names,
            cx.att,
            images,
            plain,
            self.types,
        )?;
        crate::registry::push_index(cx.state, client, &idx, &manifests, &self.names, cx.log)?;
        if self.store {
            let cx = Multi {
                att: None,
                registry: None,
                ..*cx
            };
            store::write_multi(&cx, &self.names)?;
        }
        Ok(Some(idx))
    }
}
