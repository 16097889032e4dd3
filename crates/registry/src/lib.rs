//! `kiln-registry`: the OCI distribution client.
//!
//! Why a focused client and not `oci-client`: kiln's worker is blocking and
//! runs transfers on its own threads, streams every blob straight into the
//! content store (verified before it becomes visible), needs retries with
//! backoff, cross-repository mounts with the right token scope and
//! Docker's credential files and helpers. `oci-client` offers blob-level
//! streaming, but its high-level pull holds layers in memory, it has no
//! retries and its mount scope is wrong on Docker Hub; and it brings an
//! async stack (reqwest, hyper, tokio) into code that has no use for it. The
//! protocol is small enough to own: this crate is `ureq` (blocking HTTP/1.1
//! over rustls, already used for `ADD <url>`), `rustls-native-certs` for the
//! system's roots, `serde_json` and `toml`.
//!
//! Shape:
//!
//! * [`config`]: which registries may use plain HTTP and which CA files they
//!   have (kiln's TOML file, Docker's `certs.d`);
//! * [`auth`]: credentials from Docker's `config.json` and credential
//!   helpers, and `login`/`logout` writing them back;
//! * [`client`]: the protocol — manifests, blobs, uploads, the token dance,
//!   retries, redirects;
//! * [`platform`]: choosing an index entry for a platform;
//! * [`progress`]: byte progress of blob transfers, for a display.
//!
//! The crate knows nothing of builds: it moves manifests and blobs between a
//! registry and a [`kiln_oci::ContentStore`].

pub mod auth;
pub mod client;
pub mod config;
mod error;
pub mod platform;
pub mod progress;

pub use auth::Auth;
pub use client::{Client, ClientOptions, FetchedManifest, PushedBlob, Resolved, RetryPolicy};
pub use config::RegistryConfig;
pub use error::RegistryError;
pub use kiln_reference::Reference;
pub use progress::{Direction, ProgressSink, Transfer, TransferState};
