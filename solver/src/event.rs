//! Progress events: what the solver reports about each node while it runs.

use std::time::Duration;

/// Which output stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output (or informational messages of the worker).
    Stdout,
    /// Standard error.
    Stderr,
}

/// What happened to a node.
///
/// For every node the targets need, the solver emits exactly one *terminal* event
/// (`Cached`, `Completed`, `Failed` or `Cancelled`) and nothing after it. `Started` comes
/// at most once, when execution begins (after the cache missed and a parallelism slot was
/// taken), and `Completed` always follows a `Started`. `Log` events come from the worker
/// through [`crate::Cx::log`], from `cache_key` (before `Started`/`Cached`) or `execute`.
/// Nodes the targets do not need get no events at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The value came from the cache; the node was not executed.
    Cached,
    /// Execution began.
    Started,
    /// Output from the worker.
    Log {
        /// The stream it belongs to.
        stream: Stream,
        /// The bytes, as the worker produced them.
        data: Vec<u8>,
    },
    /// Execution finished and the value was stored.
    Completed {
        /// Wall time of `execute` (for display only; never part of a key or value).
        elapsed: Duration,
    },
    /// Computing the key, executing or storing the value failed.
    Failed {
        /// The error, rendered.
        message: String,
    },
    /// The node stopped early, or never started, because the solve was cancelled.
    Cancelled,
}

/// One progress event, for the node at index `node` of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Index of the node in the [`crate::Dag`].
    pub node: usize,
    /// What happened.
    pub kind: EventKind,
}
