//! An image's files mounted read-only in a scratch directory, for what the
//! attestations read of them: kiln's own SBOM scan, a generator's bundle,
//! the subjects of a local output's statements.

use std::path::{Path, PathBuf};

use kiln_snapshot::{LayerId, MountGuard};

use crate::error::Error;
use crate::state::State;

/// `layers` mounted read-only at [`Mounted::path`] (an empty directory for
/// an image without layers); unmounted by [`Mounted::unmount`] or when
/// dropped, before its scratch directory is removed.
pub(crate) struct Mounted {
    path: PathBuf,
    dirs: Vec<PathBuf>,
    guard: Option<MountGuard>,
    _scratch: tempfile::TempDir,
}

impl Mounted {
    pub(crate) fn new(state: &State, layers: &[LayerId]) -> Result<Mounted, Error> {
        let scratch = state.scratch()?;
        let path = scratch.path().join("fs");
        std::fs::create_dir(&path).map_err(|source| Error::Io {
            what: format!("creating {}", path.display()),
            source,
        })?;
        let dirs = state.layer_dirs(layers)?;
        let guard = if dirs.is_empty() {
            None
        } else {
            Some(state.snapshotter.mount(&dirs, None, &path)?)
        };
        Ok(Mounted {
            path,
            dirs,
            guard,
            _scratch: scratch,
        })
    }

    /// Where the image's files are.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The layers' directories, top first as mounted.
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Unmounts, reporting a failure (dropping unmounts too, silently).
    pub(crate) fn unmount(mut self) -> Result<(), Error> {
        match self.guard.take() {
            Some(g) => Ok(g.unmount()?),
            None => Ok(()),
        }
    }
}
