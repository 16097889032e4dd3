//! `type=local`: the final filesystem, copied into a directory; a
//! multi-platform result as one directory per platform (`linux_arm64/`),
//! as buildx does. Attestations are files beside the image's
//! (`provenance.json`, `sbom.spdx.json`), as BuildKit's local exporter
//! writes them.
//!
//! `platform-split=` as BuildKit's `exporter/local`: `true` puts a
//! single-platform result in its platform's directory too; `false` merges
//! the platforms of a multi-platform result into the one directory (a file
//! two platforms hold is an error), each statement file named with its
//! platform (`provenance.linux_amd64.json`). `attestation-prefix=` goes
//! before the statement files' names.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_context::{FileType, Tree};
use kiln_oci::Descriptor;
use kiln_snapshot::LayerId;

use super::attrs::{Attrs, FileAttrs};
use super::exporter::{Exporter, Multi, Output, Single, platform_dir};
use super::file::io_err;
use crate::copy::{Copier, CopyOptions, SourceEntry};
use crate::error::{Error, OutputError};
use crate::state::State;

/// `type=local,dest=DIR` (`-o DIR`).
#[derive(Debug, Clone)]
pub struct Local {
    pub dest: PathBuf,
    /// `platform-split=`, `attestation-prefix=`.
    pub files: FileAttrs,
}

/// Parses `type=local`'s attributes.
pub fn parse(a: Attrs) -> Result<Output, String> {
    a.no_epoch()?;
    a.not_to_stdout()?;
    a.statement_prefix()?;
    Ok(Box::new(Local {
        dest: a.dest()?,
        files: a.files,
    }))
}

/// The files written from each platform of a merged multi-platform result
/// (`platform-split=false`): path → platform.
type Written = BTreeMap<String, String>;

impl Exporter for Local {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn needs_image(&self) -> bool {
        false
    }

    fn dest(&self) -> Option<&Path> {
        Some(&self.dest)
    }

    fn write(&self, cx: &Single<'_>) -> Result<Option<Descriptor>, Error> {
        let dest = if self.files.split(false) {
            self.dest.join(platform_dir(cx.platform))
        } else {
            self.dest.clone()
        };
        local(cx.state, cx.layers(), &dest, None)?;
        if let (Some(att), Some(img)) = (cx.attestations(self.carries()), cx.image) {
            att.write_local(
                cx.state,
                &img.layers,
                &img.config.platform(),
                &dest,
                cx.clamp,
                self.files.names(None),
            )?;
        }
        Ok(None)
    }

    fn write_multi(&self, cx: &Multi<'_>) -> Result<Option<Descriptor>, Error> {
        let split = self.files.split(true);
        let mut written = Written::new();
        for (p, l) in cx.layers {
            let name = platform_dir(p);
            if split {
                let dir = self.dest.join(&name);
                local(cx.state, l, &dir, None)?;
                if let Some(a) = cx.attestations(self.carries()) {
                    a.write_local(cx.state, l, p, &dir, cx.clamp, self.files.names(None))?;
                }
                continue;
            }
            let id = p.format_all();
            local(cx.state, l, &self.dest, Some((&mut written, &id)))?;
            if let Some(a) = cx.attestations(self.carries()) {
                let files = a.write_local(
                    cx.state,
                    l,
                    p,
                    &self.dest,
                    cx.clamp,
                    self.files.names(Some(&name)),
                )?;
                for f in files {
                    note(&mut written, f, &id)?;
                }
            }
        }
        Ok(None)
    }
}

/// Notes that platform `id` writes `path`; an error when another did.
fn note(written: &mut Written, path: String, id: &str) -> Result<(), Error> {
    if let Some(from) = written.get(&path) {
        return Err(OutputError::SplitOverwrite {
            path,
            from: from.clone(),
            with: id.to_owned(),
        }
        .into());
    }
    written.insert(path, id.to_owned());
    Ok(())
}

/// The filesystem of `layers`, copied into `dest`. With `merged`, the
/// files every earlier platform wrote there and this platform's id: a file
/// (anything but a directory) of an earlier platform is an error, found
/// before anything is copied.
fn local(
    state: &State,
    layers: &[LayerId],
    dest: &Path,
    mut merged: Option<(&mut Written, &str)>,
) -> Result<(), Error> {
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let scratch = state.scratch()?;
    let mnt = scratch.path().join("fs");
    fs::create_dir(&mnt).map_err(io_err("creating", &mnt))?;
    let dirs = state.layer_dirs(layers)?;
    let guard = state.snapshotter.mount(&dirs, None, &mnt)?;
    let tree = Tree::new(mnt.clone(), None);
    let sources = tree.expand(
        "/",
        &kiln_context::ExpandOptions {
            allow_wildcard: false,
            allow_empty_wildcard: false,
            follow_symlinks: false,
        },
    )?;
    let mut copier = Copier::new(
        dest,
        CopyOptions {
            chown: None,
            parents_owner: None,
            mode: None,
            xattrs: true,
            sockets_as_files: false,
        },
    );
    let mut walked = Vec::with_capacity(sources.len());
    for s in &sources {
        let entries = tree.walk(s, &kiln_context::Filter::default())?;
        if let Some((written, id)) = merged.as_mut() {
            for e in entries.iter().filter(|e| e.file_type != FileType::Dir) {
                note(written, e.path.to_string_lossy().into_owned(), id)?;
            }
        }
        walked.push(entries);
    }
    for entries in walked {
        let entries: Vec<SourceEntry> = entries
            .into_iter()
            .map(|e| SourceEntry {
                rel: e.path,
                path: e.host_path,
            })
            .collect();
        copier.copy_source(&entries, dest)?;
    }
    guard.unmount()?;
    Ok(())
}
