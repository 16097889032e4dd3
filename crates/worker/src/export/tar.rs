//! `type=tar` (and `-o -`): the final filesystem as one tar archive, like
//! `docker export`; a multi-platform result with one directory per
//! platform (`linux_amd64/…`), and attestations as files among the
//! image's, as BuildKit's tar exporter writes them.
//!
//! `platform-split=` as BuildKit's `exporter/tar`, which shares the local
//! exporter's attributes but not its directories: a multi-platform result
//! is always one directory per platform, a single-platform one never;
//! `platform-split=false` only names each statement file with its platform
//! (`provenance.linux_amd64.json`). `attestation-prefix=` goes before the
//! statement files' names.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_oci::Descriptor;
use kiln_snapshot::LayerId;

use super::attrs::{Attrs, FileAttrs};
use super::exporter::{Exporter, Multi, Output, Single, platform_dir};
use super::file::{Progress, io_err, name_digest, named, write_file_atomic};
use crate::error::Error;
use crate::state::State;

/// `type=tar,dest=FILE`.
#[derive(Debug, Clone)]
pub struct Tar {
    pub dest: PathBuf,
    /// `platform-split=`, `attestation-prefix=`.
    pub files: FileAttrs,
}

/// Parses `type=tar`'s attributes.
pub fn parse(a: Attrs) -> Result<Output, String> {
    a.no_epoch()?;
    a.statement_prefix()?;
    Ok(Box::new(Tar {
        dest: a.dest()?,
        files: a.files,
    }))
}

impl Exporter for Tar {
    fn kind(&self) -> &'static str {
        "tar"
    }

    fn needs_image(&self) -> bool {
        false
    }

    fn dest(&self) -> Option<&Path> {
        Some(&self.dest)
    }

    fn write(&self, cx: &Single<'_>) -> Result<Option<Descriptor>, Error> {
        let (Some(att), Some(img)) = (cx.attestations(self.carries()), cx.image) else {
            let progress = named(cx.progress, name_digest(&self.dest));
            flat_tar(cx.state, cx.layers(), None, &self.dest, cx.clamp, progress)?;
            return Ok(None);
        };
        // The same files as a local output's, in the tar among the
        // image's (here: a top layer holding them).
        let scratch = cx.state.scratch()?;
        let extra = scratch.path().join("statements");
        fs::create_dir(&extra).map_err(io_err("creating", &extra))?;
        att.write_local(
            cx.state,
            &img.layers,
            &img.config.platform(),
            &extra,
            cx.clamp,
            self.files.names(None),
        )?;
        flat_tar(
            cx.state,
            &img.layers,
            Some(&extra),
            &self.dest,
            cx.clamp,
            None,
        )?;
        Ok(None)
    }

    fn write_multi(&self, cx: &Multi<'_>) -> Result<Option<Descriptor>, Error> {
        // As BuildKit's tar exporter: one directory per platform
        // (`linux_amd64/…`), each with its statements beside it.
        let scratch = cx.state.scratch()?;
        let mut trees = Vec::with_capacity(cx.layers.len());
        for (p, l) in cx.layers {
            let name = platform_dir(p);
            let mut extra = None;
            if let Some(a) = cx.attestations(self.carries()) {
                let dir = scratch.path().join(format!("attest-{name}"));
                fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
                let names = self
                    .files
                    .names((!self.files.split(true)).then_some(&name[..]));
                a.write_local(cx.state, l, p, &dir, cx.clamp, names)?;
                extra = Some(dir);
            }
            trees.push((name, l.clone(), extra));
        }
        multi_flat_tar(cx.state, &trees, &self.dest, cx.clamp)?;
        Ok(None)
    }
}

/// The filesystem of `layers` with the files of `extra` on top, flattened
/// into one tar archive (deterministic, as layer tars are; file times
/// clamped to `clamp`).
fn flat_tar(
    state: &State,
    layers: &[LayerId],
    extra: Option<&Path>,
    dest: &Path,
    clamp: Option<i64>,
    progress: Progress,
) -> Result<(), Error> {
    let scratch = state.scratch()?;
    let mnt = scratch.path().join("fs");
    fs::create_dir(&mnt).map_err(io_err("creating", &mnt))?;
    let mut dirs = state.layer_dirs(layers)?;
    dirs.extend(extra.map(Path::to_path_buf));
    let guard = if dirs.is_empty() {
        None
    } else {
        Some(state.snapshotter.mount(&dirs, None, &mnt)?)
    };
    write_file_atomic(dest, progress, |w| {
        kiln_snapshot::write_layer_tar(&mnt, w, &kiln_snapshot::TarOptions { mtime_clamp: clamp })?;
        Ok(())
    })?;
    if let Some(g) = guard {
        g.unmount()?;
    }
    Ok(())
}

/// The tar of a multi-platform build, as BuildKit writes it: the files
/// of each platform's image under its directory (`linux_amd64/…`), with
/// the directory `extra` of that platform (its statements) on top.
fn multi_flat_tar(
    state: &State,
    trees: &[(String, Vec<LayerId>, Option<PathBuf>)],
    dest: &Path,
    clamp: Option<i64>,
) -> Result<(), Error> {
    let scratch = state.scratch()?;
    let root = scratch.path().join("fs");
    fs::create_dir(&root).map_err(io_err("creating", &root))?;
    let mut guards = Vec::new();
    for (name, layers, extra) in trees {
        let mnt = root.join(name);
        fs::create_dir(&mnt).map_err(io_err("creating", &mnt))?;
        let mut dirs = state.layer_dirs(layers)?;
        dirs.extend(extra.clone());
        if !dirs.is_empty() {
            guards.push(state.snapshotter.mount(&dirs, None, &mnt)?);
        }
    }
    write_file_atomic(dest, None, |w| {
        kiln_snapshot::write_layer_tar(
            &root,
            w,
            &kiln_snapshot::TarOptions { mtime_clamp: clamp },
        )?;
        Ok(())
    })?;
    for g in guards {
        g.unmount()?;
    }
    Ok(())
}
