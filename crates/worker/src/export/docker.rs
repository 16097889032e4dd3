//! `type=docker` (and `--load`): a `docker load` archive. It holds no
//! image index, so neither a multi-platform result nor attestations.

use std::path::{Path, PathBuf};

use kiln_oci::{Compression, Descriptor, MediaTypes};

use super::attrs::Attrs;
use super::exporter::{Exporter, Output, Single};
use super::file::{named, write_file_atomic};
use super::manifest::manifest;
use crate::attest::Carries;
use crate::error::Error;

/// `type=docker`: an archive at `dest`; without one, into a running
/// Docker engine (`--load`: the cli gives it an archive in scratch space
/// and loads it).
#[derive(Debug, Clone)]
pub struct Docker {
    pub dest: PathBuf,
    pub names: Vec<String>,
    pub compression: Compression,
    pub force_compression: bool,
}

/// Parses `type=docker`'s attributes.
pub fn parse(a: Attrs) -> Result<Output, String> {
    a.no_file_attrs()?;
    Ok(Box::new(Docker {
        dest: a.dest.unwrap_or_default(),
        names: a.names,
        compression: a.compression,
        force_compression: a.force_compression,
    }))
}

impl Exporter for Docker {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn asked_by(&self) -> String {
        "-o type=docker, --load".to_owned()
    }

    fn carries(&self) -> Carries {
        Carries::Nothing
    }

    fn holds_index(&self) -> bool {
        false
    }

    fn names(&self) -> &[String] {
        &self.names
    }

    fn dest(&self) -> Option<&Path> {
        Some(&self.dest)
    }

    fn loads(&self) -> bool {
        self.dest.as_os_str().is_empty()
    }

    fn set_archive(&mut self, archive: PathBuf) {
        self.dest = archive;
    }

    fn write(&self, cx: &Single<'_>) -> Result<Option<Descriptor>, Error> {
        let img = cx.image()?;
        let c = (self.compression, self.force_compression);
        let image = manifest(
            cx.state,
            img,
            c,
            MediaTypes::Docker,
            cx.clamp,
            cx.rewritten,
            &self.names,
        )?;
        write_file_atomic(&self.dest, named(cx.progress, image.manifest.digest), |f| {
            kiln_oci::write_docker_archive(&cx.state.content, f, std::slice::from_ref(&image))
                .map(drop)
                .map_err(Error::from)
        })?;
        Ok(Some(image.manifest))
    }
}
