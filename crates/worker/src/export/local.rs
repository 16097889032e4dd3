//! `type=local`: the final filesystem, copied into a directory; a
//! multi-platform result as one directory per platform (`linux_arm64/`),
//! as buildx does. Attestations are files beside the image's
//! (`provenance.json`, `sbom.spdx.json`), as BuildKit's local exporter
//! writes them.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_context::Tree;
use kiln_oci::Descriptor;
use kiln_snapshot::LayerId;

use super::attrs::Attrs;
use super::exporter::{Exporter, Multi, Output, Single, platform_dir};
use super::file::io_err;
use crate::copy::{Copier, CopyOptions, SourceEntry};
use crate::error::Error;
use crate::state::State;

/// `type=local,dest=DIR` (`-o DIR`).
#[derive(Debug, Clone)]
pub struct Local {
    pub dest: PathBuf,
}

/// Parses `type=local`'s attributes.
pub fn parse(a: Attrs) -> Result<Output, String> {
    a.no_epoch()?;
    a.not_to_stdout()?;
    Ok(Box::new(Local { dest: a.dest()? }))
}

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
        local(cx.state, cx.layers(), &self.dest)?;
        if let (Some(att), Some(img)) = (cx.attestations(self.carries()), cx.image) {
            att.write_local(
                cx.state,
                &img.layers,
                &img.config.platform(),
                &self.dest,
                cx.clamp,
            )?;
        }
        Ok(None)
    }

    fn write_multi(&self, cx: &Multi<'_>) -> Result<Option<Descriptor>, Error> {
        for (p, l) in cx.layers {
            let dir = self.dest.join(platform_dir(p));
            local(cx.state, l, &dir)?;
            if let Some(a) = cx.attestations(self.carries()) {
                a.write_local(cx.state, l, p, &dir, cx.clamp)?;
            }
        }
        Ok(None)
    }
}

/// The filesystem of `layers`, copied into `dest`.
fn local(state: &State, layers: &[LayerId], dest: &Path) -> Result<(), Error> {
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
    for s in &sources {
        let entries: Vec<SourceEntry> = tree
            .walk(s, &kiln_context::Filter::default())?
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
