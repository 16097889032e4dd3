//! The ops of a kiln-llb graph, one module per family: `image` sources,
//! [`git`] and [`http`] sources, [`file`](mod@file) ops (COPY, ADD, WORKDIR,
//! heredoc files), [`exec`] ops (RUN) with their [`mounts`], and `merge`
//! ops (COPY --link). Build contexts are not an op of their own: a local
//! source is a name the dispatch checks.
//!
//! Each family takes a small value that lends it just what it needs of its
//! build (`FileOps`, `ExecOps` and `MountOps`, `GitOps`, `HttpOps`; the
//! state alone for images; nothing for merges), made by the worker's
//! dispatch (`crate::worker`), whose own fields no op sees. What several
//! families share is in `shared`: the build contexts, and the layers of
//! values as trees. The families import `shared` and, for RUN, `exec`
//! imports `mounts`; nothing here imports the worker. This module only
//! declares them.

pub mod exec;
pub mod file;
pub mod git;
pub mod http;
pub(crate) mod image;
pub(crate) mod merge;
pub mod mounts;
pub(crate) mod shared;
