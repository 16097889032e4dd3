//! The `namespaces` isolation mode: RUN steps in fresh Linux namespaces on
//! roots of their own ([`crate::NamespaceExecutor`], `helper.rs`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use crate::isolation::Isolation;
use crate::{ExecError, Executor, Limits, NamespaceExecutor};

/// The mode (see the module docs). Made by [`Namespaces::enter`], which
/// moves the process into a private mount namespace first.
#[derive(Debug)]
pub struct Namespaces {
    program: PathBuf,
    args: Vec<OsString>,
    /// Where the compiled seccomp filter is kept between processes.
    filter_cache: Option<PathBuf>,
}

impl Namespaces {
    /// Enters a private mount namespace (every mount kiln makes from now on
    /// dies with the process), which also proves that this process may make
    /// namespaces and mounts. Call it while the process is single-threaded.
    /// `program args…` must end up calling [`crate::helper_main`].
    pub fn enter(
        program: PathBuf,
        args: Vec<OsString>,
    ) -> Result<Namespaces, kiln_snapshot::MountError> {
        kiln_snapshot::private_mount_namespace()?;
        Ok(Namespaces {
            program,
            args,
            filter_cache: None,
        })
    }
}

impl Namespaces {
    /// Keeps the compiled seccomp filter in `dir` between kiln processes
    /// (`NamespaceExecutor::with_filter_cache`).
    pub fn with_filter_cache(mut self, dir: PathBuf) -> Namespaces {
        self.filter_cache = Some(dir);
        self
    }
}

impl Isolation for Namespaces {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    fn snapshotter(&self) -> Option<Arc<dyn kiln_snapshot::Snapshotter>> {
        None
    }

    fn check_limits(&self, _limits: &Limits) -> Result<(), String> {
        Ok(())
    }

    fn executor(
        &self,
        snapshotter: Arc<dyn kiln_snapshot::Snapshotter>,
    ) -> Result<Arc<dyn Executor>, ExecError> {
        let e = NamespaceExecutor::new(self.program.clone(), self.args.clone(), snapshotter);
        Ok(Arc::new(match &self.filter_cache {
            Some(dir) => e.with_filter_cache(dir.clone()),
            None => e,
        }))
    }
}
