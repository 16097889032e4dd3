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
    /// Everything was set up, but the command could not be started.
    #[error(transparent)]
    NotStarted(#[from] StartFailure),
}

/// Why a command could not be started (`docker run` exits 127 or 126 for
/// these): carried from the step's process to the caller as data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFailure {
    /// A bare name not found in `PATH` (runc's wording).
    #[error("exec: \"{name}\": executable file not found in $PATH")]
    NotInPath { name: String },
    /// `execve` failed with this errno.
    #[error("exec {program}: {}", nix::errno::Errno::from_raw(*errno))]
    Exec { program: String, errno: i32 },
}

impl StartFailure {
    /// Whether the program is missing (127) rather than not executable (126).
    pub fn is_missing(&self) -> bool {
        match self {
            StartFailure::NotInPath { .. } => true,
            StartFailure::Exec { errno, .. } => {
                *errno == nix::errno::Errno::ENOENT as i32
                    || *errno == nix::errno::Errno::ENOTDIR as i32
            }
        }
    }
}
