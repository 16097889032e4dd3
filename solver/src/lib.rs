//! `kiln-solver`: runs a DAG of opaque operations in parallel, caching each one under a
//! key its worker derives.
//!
//! # What it is for
//!
//! kiln turns a Dockerfile into a content-addressed graph of operations; something has
//! to run that graph: start every operation as soon as its inputs are ready, run
//! independent branches at the same time, bound how many processes run at once, skip
//! work whose result is already known, and stop cleanly on the first failure. That is
//! this crate. It knows nothing of Dockerfiles, LLB, Linux, files or containers: a
//! [`Node`] carries an opaque payload, and a [`Worker`] (implemented for LLB ops in
//! `kiln-worker`) computes each node's cache [`Key`] and, on a miss, its value. The
//! design follows BuildKit's scheduler, reduced to what kiln needs: one graph per
//! solve, and no remote cache; in-flight work is shared across solves (and
//! processes) only through the store's claims (below).
//!
//! # How a solve runs
//!
//! [`Solver::solve`] marks the targets and their ancestors (nothing else runs).
//! Keys come first, as in BuildKit: a node asks the worker for its key as soon as its
//! inputs' keys are known ([`KeyInput`]; an input without a key is executed first, since
//! its value stands in for its key). If the node has a key, is not forced and the
//! [`CacheStore`] holds a value that decodes and that [`Worker::is_valid`] accepts, the
//! node is [`EventKind::Cached`] — and its inputs need not be built at all: a cached
//! step needs nothing below it. Nodes are executed only when a target needs their value
//! through a chain of misses: then a node waits for its inputs' values and a
//! parallelism slot if [`Worker::is_heavy`], is [`EventKind::Started`], executed, its
//! value stored as JSON under the key (if any), and [`EventKind::Completed`]. A node
//! that missed but whose value nobody needs gets no outcome event. Worker calls run on
//! tokio's blocking pool, each node's in a task of its own. Each node is keyed and
//! executed at most once per solve, however many nodes use it.
//!
//! *Content keys.* A node's key names its inputs by their keys, so a changed input
//! changes it even when the part the node reads did not change (a stage rebuilt
//! after a context edit, of which a later stage copies one unchanged file). A node
//! the worker declares content-keyed ([`Worker::keys_by_content`]) also has a key
//! naming only what it reads ([`Worker::content_key`], computed from its built
//! inputs), and that content key is the one its dependents see. Its key is looked up
//! first: the cache holds there a *link* to the content key ([`link_bytes`]), written
//! when the node was last resolved, so an unchanged build needs neither its inputs
//! nor the content key. When the key misses, the node's inputs are built, the content
//! key computed and looked up; a hit is [`EventKind::Cached`] (and linked from the
//! new key), a miss executes and stores the value under the content key. Its
//! dependents are keyed only then, since their keys need its content key.
//!
//! *Claims.* Before executing a node that is not forced, the solver claims its key in
//! the [`CacheStore`] ([`CacheStore::claim`]; [`DirCache`] takes a `flock`), then
//! looks the key up once more: two solves — two kiln processes on one state
//! directory — that both missed the same step run it once; the second waits for the
//! claim and finds the value.
//!
//! *Forcing.* A node with [`Node::ignore_cache`] executes even on a hit, and so does
//! every node downstream of a node executed because it was forced: its inputs may have
//! changed although their keys did not. Forced results still overwrite the cache
//! entries under their keys. A node re-executed because of a miss or an invalid entry
//! does not force its dependents: equal keys mean equal results.
//!
//! *Failure.* The first failure (worker error, cache read/write error, panic) raises a
//! cancellation flag: running nodes see it through [`Cx::is_cancelled`], nodes not yet
//! started never start and get [`EventKind::Cancelled`], and `solve` returns that first
//! error only after every running worker call has returned, so no work is left behind.
//! A worker error that comes after cancellation is the worker stopping as asked and is
//! reported as `Cancelled`. The caller can cancel the same way through
//! [`Solver::solve_with_cancel`]; dropping the solve future also raises the flag.
//! A corrupt cache entry is a miss (and is overwritten), never an error or a panic.
//!
//! # Example
//!
//! A worker whose nodes add a constant to the sum of their inputs:
//!
//! ```
//! use std::sync::Arc;
//! use kiln_solver::{Cx, Dag, Key, KeyInput, MemoryCache, Node, Resolved, Solver, Worker};
//!
//! struct Adder;
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("never fails")]
//! struct Never;
//!
//! impl Worker for Adder {
//!     type Payload = u64;
//!     type Value = u64;
//!     type Error = Never;
//!     fn cache_key(&self, n: &u64, inputs: &[KeyInput<u64>], _: &Cx) -> Result<Option<Key>, Never> {
//!         let n = n.to_le_bytes();
//!         let mut parts: Vec<&[u8]> = vec![&n];
//!         parts.extend(inputs.iter().filter_map(|i| i.key.as_ref()).map(|k| &k.as_bytes()[..]));
//!         Ok(Some(Key::derive("example.add.v1", &parts)))
//!     }
//!     fn execute(&self, n: &u64, inputs: &[Resolved<u64>], _: &Cx) -> Result<u64, Never> {
//!         Ok(n + inputs.iter().map(|i| i.value).sum::<u64>())
//!     }
//! }
//!
//! let node = |payload, inputs: &[usize]| Node {
//!     payload,
//!     inputs: inputs.to_vec(),
//!     ignore_cache: false,
//!     name: format!("add {payload}"),
//! };
//! let dag = Arc::new(Dag::new(vec![node(1, &[]), node(2, &[0]), node(3, &[0, 1])])?);
//! let solver = Solver::new(Arc::new(Adder), Arc::new(MemoryCache::new()), 4);
//! let runtime = tokio::runtime::Runtime::new()?;
//! let out = runtime.block_on(solver.solve(dag, &[2], Arc::new(|_event| {})))?;
//! assert_eq!(out[0].value, 3 + 1 + (2 + 1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Invariants
//!
//! - **Keys are the worker's.** The solver never adds anything to a key: no timestamp,
//!   path, node index or host detail, so a key names the same work on every machine and
//!   in every graph. [`Key::derive`] is the canonical, injective way for workers to
//!   compose keys. Values are stored as the worker's JSON, nothing added.
//! - **Topological order by construction.** [`Dag::new`] requires every input index to
//!   be smaller than its user's index, which excludes cycles and dangling references.
//! - **Per node events are well ordered:** at most one `Started`, exactly one terminal
//!   event (`Cached`, `Completed`, `Failed`, `Cancelled`) per needed node, nothing after
//!   it (see [`EventKind`]).
//! - **Durable, atomic cache writes.** [`DirCache`] writes a temporary file in the
//!   entry's directory, fsyncs it, renames it into place and fsyncs the directory;
//!   readers see the old or the new value, never part of one.

mod cache;
mod cancel;
mod dag;
mod event;
mod key;
mod solve;

pub use cache::{CacheError, CacheStore, Claim, DirCache, MemoryCache};
pub use cancel::{CancelToken, Cx};
pub use dag::{Dag, DagError, Node};
pub use event::{Event, EventKind, Stream};
pub use key::{Key, ParseKeyError};
pub use solve::{KeyInput, Resolved, SolveError, Solver, Worker, link_bytes, parse_link};
