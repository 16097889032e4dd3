//! How a build's RUN steps are kept apart from the machine kiln runs on:
//! one [`Isolation`] per mode (`kiln --isolation`), chosen once per process
//! by the cli, one file each:
//!
//! * [`crate::namespaces::Namespaces`] (`namespaces`): every step in fresh
//!   namespaces on an overlay (or native) root of its own, confined as runc
//!   confines a BuildKit step. Needs `CAP_SYS_ADMIN` (root, or rootless in
//!   a user namespace).
//! * [`crate::container::Container`] (`container`): for a single-use
//!   container that may not make namespaces or mounts (Docker's defaults,
//!   a Kubernetes pod): every step runs in the container's own root
//!   filesystem, which shows the step's stack in place, as Kaniko does.
//!
//! The worker only sees the [`crate::Executor`] a mode makes; the mode also
//! says which snapshotter file operations must use and what it cannot do.

use std::sync::Arc;

use kiln_snapshot::Snapshotter;

use crate::{ExecError, Executor, Limits};

/// One isolation mode (see the module docs).
pub trait Isolation: Send + Sync + std::fmt::Debug {
    /// The mode's name, as `--isolation` spells it.
    fn name(&self) -> &'static str;

    /// The snapshotter the mode's trees must be made with, when it imposes
    /// one (`None`: the caller chooses, `--snapshotter`).
    fn snapshotter(&self) -> Option<Arc<dyn Snapshotter>>;

    /// Refuses limits the mode cannot enforce, saying why.
    fn check_limits(&self, limits: &Limits) -> Result<(), String>;

    /// The executor of one build's RUN steps, whose trees are made with
    /// `snapshotter` (the imposed one, or the caller's choice).
    fn executor(&self, snapshotter: Arc<dyn Snapshotter>) -> Result<Arc<dyn Executor>, ExecError>;
}
