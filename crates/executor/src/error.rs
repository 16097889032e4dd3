//! Why a step could not run.

use std::io;
use std::path::PathBuf;

/// Why a step could not run (as opposed to running and failing).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("starting the executor helper {program}: {source}")]
    Spawn { program: PathBuf, source: io::Error },
    #[error("{0}")]
    Setup(String),
    #[error("executor helper: {0}")]
    Helper(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("cancelled")]
    Cancelled,
    /// The step's network could not be set up (`network.rs`).
    #[error("{0}")]
    Network(String),
}
