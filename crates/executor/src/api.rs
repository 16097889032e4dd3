//! What the worker sees of an executor.

use crate::error::ExecError;
use crate::spec::RunSpec;

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// Runs RUN steps. A trait so the worker can be tested with a fake.
pub trait Executor: Send + Sync {
    /// Runs `spec`. `output` receives stdout/stderr chunks as they come;
    /// `cancelled` is polled every 50 ms and, once true, the whole process
    /// tree is killed and [`ExecError::Cancelled`] returned.
    fn run(
        &self,
        spec: &RunSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<ExitStatus, ExecError>;
}
