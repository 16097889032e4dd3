//! `type=oci`: an OCI image layout, as a tar archive at `dest` (the
//! default) or as a directory (`tar=false`); a multi-platform result or
//! attestations as an index of the manifests (the layout's `index.json`
//! names it).

use std::fs;
use std::path::{Path, PathBuf};

use kiln_oci::{Compression, Descriptor, ExportImage, MediaTypes};

use super::attrs::Attrs;
use super::exporter::{Exporter, Multi, Output, Single};
use super::file::{io_err, named, write_file_atomic};
use super::manifest::{index, manifest, with_attestations};
use crate::error::Error;
use crate::state::State;

/// `type=oci,dest=…`.
#[derive(Debug, Clone)]
pub struct Oci {
    pub dest: PathBuf,
    /// A tar archive, not a directory.
    pub tar: bool,
    pub names: Vec<String>,
    pub compression: Compression,
    /// `force-compression=true`: recompress layers kept as pulled,
    /// loaded or imported blobs of another compression.
    pub force_compression: bool,
}

/// Parses `type=oci`'s attributes.
pub fn parse(a: Attrs) -> Result<Output, String> {
    a.no_file_attrs()?;
    if !a.tar {
        a.not_to_stdout()?;
    }
    Ok(Box::new(Oci {
        dest: a.dest()?,
        tar: a.tar,
        names: a.names,
        compression: a.compression,
        force_compression: a.force_compression,
    }))
}

impl Exporter for Oci {
    fn kind(&self) -> &'static str {
        "oci"
    }

    fn names(&self) -> &[String] {
        &self.names
    }

    fn dest(&self) -> Option<&Path> {
        Some(&self.dest)
    }

    fn write(&self, cx: &Single<'_>) -> Result<Option<Descriptor>, Error> {
        let img = cx.image()?;
        let c = (self.compression, self.force_compression);
        let image = manifest(
            cx.state,
            img,
            c,
            MediaTypes::Oci,
            cx.clamp,
            cx.rewritten,
            &self.names,
        )?;
        let mut progress = cx.progress;
        if let Some(att) = cx.attestations(self.carries()) {
            let platform = img.config.platform();
            if let Some((idx, _)) = att.index(
                cx.state,
                self.carries(),
                &self.names,
                &[(platform, image.manifest.clone())],
                MediaTypes::Oci,
            )? {
                let export = ExportImage {
                    manifest: idx.clone(),
                    names: self.names.clone(),
                };
                write_layout(cx.state, &self.dest, self.tar, &export)?;
                return Ok(Some(idx));
            }
            // Nothing to attach after all: the plain layout, unreported.
            progress = None;
        }
        if self.tar {
            write_file_atomic(&self.dest, named(progress, image.manifest.digest), |f| {
                kiln_oci::write_oci_archive(&cx.state.content, f, std::slice::from_ref(&image))
                    .map(drop)
                    .map_err(Error::from)
            })?;
        } else {
            write_layout(cx.state, &self.dest, false, &image)?;
        }
        Ok(Some(image.manifest))
    }

    fn write_multi(&self, cx: &Multi<'_>) -> Result<Option<Descriptor>, Error> {
        let images = cx.images()?;
        let plain = index(
            cx.state,
            images,
            (self.compression, self.force_compression),
            MediaTypes::Oci,
            cx.clamp,
            cx.rewritten,
        )?;
        let (idx, _) = with_attestations(
            cx.state,
            self.carries(),
            &self.names,
            cx.att,
            images,
            plain,
            MediaTypes::Oci,
        )?;
        let export = ExportImage {
            manifest: idx.clone(),
            names: self.names.clone(),
        };
        write_layout(cx.state, &self.dest, self.tar, &export)?;
        Ok(Some(idx))
    }
}

/// `image` (a manifest or an index in the store) as an OCI layout
/// directory, or as its tar at `dest`.
fn write_layout(state: &State, dest: &Path, tar: bool, image: &ExportImage) -> Result<(), Error> {
    if tar {
        write_file_atomic(dest, None, |f| {
            kiln_oci::write_oci_archive(&state.content, f, std::slice::from_ref(image))
                .map(drop)
                .map_err(Error::from)
        })
    } else {
        fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
        kiln_oci::write_oci_layout(&state.content, dest, std::slice::from_ref(image))?;
        Ok(())
    }
}
