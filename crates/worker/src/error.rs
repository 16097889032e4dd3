//! The crate's error: one enum gathering the typed errors of the stores and
//! of each op, plus [`StepError`] for a failed build step.

use std::io;

use kiln_llb::SourceLocation;

/// Everything that can stop a build, an import or an export.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// The state directory (kiln-store: its records, GC, check).
    #[error(transparent)]
    State(#[from] kiln_store::Error),
    #[error(transparent)]
    Content(#[from] kiln_oci::ContentError),
    #[error(transparent)]
    Index(#[from] kiln_oci::IndexError),
    #[error(transparent)]
    LayerBlobs(#[from] kiln_oci::LayerError),
    #[error(transparent)]
    Json(#[from] kiln_oci::JsonError),
    #[error(transparent)]
    OciExport(#[from] kiln_oci::ExportError),
    #[error(transparent)]
    Oci(#[from] kiln_oci::Error),
    #[error(transparent)]
    Store(#[from] kiln_snapshot::StoreError),
    #[error(transparent)]
    Mount(#[from] kiln_snapshot::MountError),
    #[error(transparent)]
    Unpack(#[from] kiln_snapshot::UnpackError),
    #[error(transparent)]
    LayerTar(#[from] kiln_snapshot::ExportError),
    #[error(transparent)]
    Context(#[from] kiln_context::ContextError),
    #[error(transparent)]
    Copy(#[from] crate::copy::CopyError),
    #[error(transparent)]
    User(#[from] crate::users::UserError),
    #[error(transparent)]
    Exec(#[from] kiln_executor::ExecError),
    /// Moving a cache (`--cache-to`, `--cache-from`).
    #[error(transparent)]
    Cache(#[from] crate::cache::error::CacheError),
    /// A build step failed; carries where it came from.
    #[error(transparent)]
    Step(#[from] Box<StepError>),
    /// The build was cancelled (Ctrl-C).
    #[error("build cancelled")]
    Cancelled,
    /// A registry or the network failed (pull, push), already phrased for
    /// the user: the cli exits with its registry code.
    #[error("{0}")]
    Registry(String),
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Other(String),
}

/// A failed step of the build graph, with what the user needs to find it.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct StepError {
    /// Progress name of the step (`[build 2/4] RUN make`).
    pub name: String,
    /// Where it is in the Dockerfile.
    pub location: Option<SourceLocation>,
    /// What went wrong.
    pub message: String,
    /// Index of the step in the solved graph (for the progress output's tail).
    pub node: usize,
}
