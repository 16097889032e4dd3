//! What an output is: the [`Exporter`] trait that each `type=` of `-o`
//! implements in a file of its own, and what writing one is handed, for a
//! single-platform result ([`Single`]) or a multi-platform one ([`Multi`]).

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use kiln_llb::Platform;
use kiln_oci::Descriptor;
use kiln_registry::{Client, ProgressSink};
use kiln_snapshot::LayerId;

use crate::attest::{AttestRequest, Attestations, Carries};
use crate::error::{Error, InternalError, OutputError};
use crate::image::Committed;
use crate::state::State;

/// An output of a build, as parsed from `-o` (or made for `--push`,
/// `--load`, `-t`).
pub type Output = Box<dyn Exporter>;

/// One output type (`type=…`): what it needs of the build and how it
/// writes the result.
pub trait Exporter: Debug + Send + Sync {
    /// The `type=` it was registered under.
    fn kind(&self) -> &'static str;

    /// How the flags ask for it, for messages (`-o type=docker, --load`).
    fn asked_by(&self) -> String {
        format!("-o type={}", self.kind())
    }

    /// Whether it needs the image (config, diffIDs), not just the
    /// filesystem.
    fn needs_image(&self) -> bool {
        true
    }

    /// Which attestations it carries.
    fn carries(&self) -> Carries {
        Carries::Asked
    }

    /// Whether it can hold an image index (a multi-platform result,
    /// attestations, index annotations).
    fn holds_index(&self) -> bool {
        true
    }

    /// The image names it gives (fully normalised).
    fn names(&self) -> &[String] {
        &[]
    }

    /// The file or directory on this machine it writes ([`STDOUT`]: the
    /// process's standard output), if any: container isolation binds it.
    ///
    /// [`STDOUT`]: super::file::STDOUT
    fn dest(&self) -> Option<&Path> {
        None
    }

    /// Whether it records the image under its names in the local store.
    fn stores(&self) -> bool {
        false
    }

    /// Whether it pushes: what it writes is then what `--metadata-file`
    /// reports first.
    fn pushes(&self) -> bool {
        false
    }

    /// Whether plain HTTP is allowed for the hosts of its names
    /// (`registry.insecure=true`).
    fn insecure(&self) -> bool {
        false
    }

    /// Whether it writes an archive that the Docker engine loads after the
    /// build and that has no place yet (`--load`).
    fn loads(&self) -> bool {
        false
    }

    /// Gives the archive of an output that [`loads`](Exporter::loads) its
    /// place.
    fn set_archive(&mut self, archive: PathBuf) {
        let _ = archive;
    }

    /// Writes a single-platform result; returns the manifest (or index) it
    /// wrote, if any.
    fn write(&self, cx: &Single<'_>) -> Result<Option<Descriptor>, Error>;

    /// Writes a multi-platform result; returns the index it wrote, if any.
    fn write_multi(&self, cx: &Multi<'_>) -> Result<Option<Descriptor>, Error> {
        let _ = cx;
        Err(OutputError::NotMultiPlatform.into())
    }
}

/// What writing a single-platform result is handed.
#[derive(Clone, Copy)]
pub struct Single<'a> {
    pub state: &'a State,
    /// The target platform.
    pub platform: &'a Platform,
    /// The image, when an output needed one.
    pub image: Option<&'a Committed>,
    /// The result's layers (the image's, when there is one).
    pub layers: &'a [LayerId],
    /// `SOURCE_DATE_EPOCH`: the mtime clamp.
    pub clamp: Option<i64>,
    /// `rewrite-timestamp=true` (see `manifest::manifest`).
    pub rewritten: bool,
    /// The build's attestations, if any.
    pub att: Option<&'a Attestations>,
    /// Where the bytes of archives are reported.
    pub progress: Option<&'a ProgressSink>,
    /// The registry client, for pushes.
    pub registry: Option<&'a Client>,
    /// Where push progress lines go.
    pub log: &'a (dyn Fn(&str) + Send + Sync),
}

impl Debug for Single<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Single").finish_non_exhaustive()
    }
}

impl<'a> Single<'a> {
    /// The image, or the error of an output that needs one.
    pub fn image(&self) -> Result<&'a Committed, Error> {
        self.image.ok_or_else(|| OutputError::NoImage.into())
    }

    /// The result's layers.
    pub fn layers(&self) -> &'a [LayerId] {
        self.image.map_or(self.layers, |i| &i.layers)
    }

    /// The attestations for an output that carries `c`, when it gets any.
    pub fn attestations(&self, c: Carries) -> Option<&'a Attestations> {
        self.att.filter(|a| a.applies_to(c))
    }

    /// The registry client.
    pub fn client(&self) -> Result<&'a Client, Error> {
        self.registry
            .ok_or_else(|| InternalError::NoRegistryClient("pushing").into())
    }
}

/// What writing a multi-platform result is handed.
#[derive(Clone, Copy)]
pub struct Multi<'a> {
    pub state: &'a State,
    /// Every platform's image, in `--platform` order (empty when no
    /// output needed them).
    pub images: &'a [(Platform, Committed)],
    /// Every platform's layers.
    pub layers: &'a [(Platform, Vec<LayerId>)],
    pub clamp: Option<i64>,
    pub rewritten: bool,
    pub att: Option<&'a Attestations>,
    pub registry: Option<&'a Client>,
    pub log: &'a (dyn Fn(&str) + Send + Sync),
}

impl Debug for Multi<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Multi").finish_non_exhaustive()
    }
}

impl<'a> Multi<'a> {
    /// The images, or the error of an output that needs them.
    pub fn images(&self) -> Result<&'a [(Platform, Committed)], Error> {
        if self.images.is_empty() {
            return Err(OutputError::NoImage.into());
        }
        Ok(self.images)
    }

    /// The attestations for an output that carries `c`, when it gets any.
    pub fn attestations(&self, c: Carries) -> Option<&'a Attestations> {
        self.att.filter(|a| a.applies_to(c))
    }

    /// The registry client.
    pub fn client(&self) -> Result<&'a Client, Error> {
        self.registry
            .ok_or_else(|| InternalError::NoRegistryClient("pushing").into())
    }
}

/// `linux/arm/v7` → `linux_arm_v7`: a platform's directory of a
/// multi-platform `type=local` or `type=tar` output, as buildx names it.
pub fn platform_dir(p: &Platform) -> String {
    p.format_all().replace('/', "_")
}

/// Checks the outputs against the attestations and annotations asked for,
/// before the build starts; returns notes to print (none today: every
/// output that can hold an index carries the attestations asked for).
pub fn check_attestations(req: &AttestRequest, outputs: &[Output]) -> Result<Vec<String>, String> {
    let index_annotations = req.annotations.need_index();
    if (req.explicit() || index_annotations)
        && let Some(o) = outputs.iter().find(|o| !o.holds_index())
    {
        return Err(format!(
            "{} exporter does not currently support exporting manifest lists \
             (attestations and index annotations go into an image index: use --push, \
             -o type=oci or -o type=image)",
            o.kind()
        ));
    }
    Ok(Vec::new())
}
