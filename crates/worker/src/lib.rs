//! `kiln-worker`: runs the operations of a kiln-llb graph on real
//! filesystems, for the solver.
//!
//! The solver (`kiln-solver`) schedules and caches opaque nodes; the frontend
//! (`kiln-frontend`) says what to do in terms of typed ops. This crate is where
//! the two meet the machine, in the role BuildKit gives its *worker*:
//!
//! * a **filesystem value** is a stack of layers of `kiln-snapshot`'s store,
//!   bottom first ([`Value::Fs`]), each a [`LayerRef`] (a snapshot, or the
//!   diffID of an imported cache's layer not fetched yet); the build context
//!   is a named directory that is read, never copied into the store
//!   ([`Value::Context`]);
//! * **source** ops produce layers: an image's layers are unpacked once from the
//!   content store and shared by every build that uses them;
//! * **file** ops (COPY, ADD, WORKDIR, heredoc files) mount the parent's layers
//!   with a fresh upper directory in kiln's private mount namespace and edit the
//!   mounted tree with BuildKit's copy semantics ([`copy`]); the upper dir is
//!   the new layer;
//! * **exec** ops (RUN) hand the same layer stack, plus the extra mounts of
//!   [`ops::mounts`] (cache, bind, tmpfs, secret, ssh), to `kiln-executor`, whose
//!   helper process runs the command in fresh namespaces; its upper dir is the
//!   new layer;
//! * **merge** ops (COPY --link) concatenate layer stacks: no I/O at all.
//!
//! Each op family is a module of [`ops`], lent just what it needs of the
//! build by the worker's dispatch ([`LlbWorker`] keeps its fields to itself).
//!
//! Cache keys ([`keys`]) are derived from the op's canonical encoding, the
//! inputs' keys and, for what the build context contributes, the content digest
//! of exactly the files an op reads — never from paths, times or inode numbers.
//!
//! After the solve, [`image`] turns the target's layer stack and the stage's
//! configuration into an image in the local store (image ID = digest of the
//! canonical config) and [`export`] writes the outputs.
//!
//! The local store itself (the state directory, image records, layers and
//! their blobs, garbage collection, `kiln check`) is `kiln-store`, below this
//! crate; [`state`], [`lock`], [`images`], [`blobs`], [`gc`] and [`check`]
//! re-export it.
//!
//! Architecture invariant: this crate never prints and never reads the process
//! environment; progress goes through solver events, configuration comes in
//! through [`BuildRequest`].

pub mod archive;
pub mod attest;
pub mod blobs;
pub mod build;
pub mod cache;
pub mod check;
pub mod contexts;
pub mod copy;
pub mod emulation;
mod error;
pub mod explain;
pub mod export;
pub mod gc;
mod grants;
pub mod image;
pub mod images;
pub mod keys;
pub mod lock;
pub mod mode;
pub mod multi;
pub mod ops;
pub mod registry;
pub mod remote;
mod resolved;
pub mod reuse;
pub mod state;
pub mod users;
mod value;
mod worker;

pub use build::{BuildRequest, BuildResult, Output, build};
pub use error::{
    AttestError, BuildContextError, Entitlement, Error, FileOpError, GitError, HttpError,
    ImageError, InternalError, OutputError, RegistryFailure, RegistryProblem, RunError,
    RunMountError, StepError, Unsupported,
};
pub use grants::{ExecGrants, Secret};
pub use image::{ImportRequest, PullPolicy, ResolvedBase, StoreResolver, import};
pub use state::State;
pub use value::{LayerRef, Value};
pub use worker::LlbWorker;
