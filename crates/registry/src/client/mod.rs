//! The distribution protocol over HTTP: one blocking [`Client`] per kiln
//! invocation, shared by the threads that pull or push blobs in parallel.
//!
//! Every request goes through [`Client::send`], which owns the parts that
//! are easy to get wrong one call at a time:
//!
//! * the auth dance: a 401 carries a `WWW-Authenticate` challenge; Bearer
//!   challenges are answered with a token from the realm (anonymous, basic
//!   credentials, or an OAuth2 refresh token), cached per host and scope;
//!   Basic challenges with the credentials;
//! * retries with exponential backoff on 5xx, 429 (honouring `Retry-After`)
//!   and broken connections, for idempotent requests; uploads restart from
//!   a new session instead;
//! * redirects, followed by hand so that the `Authorization` header is never
//!   sent to another host (blob downloads are commonly redirected to storage);
//! * plain HTTP only for loopback and explicitly insecure registries, tried
//!   after HTTPS as Docker does.
//!
//! The files: this one, the client and its types; `send.rs`, the request
//! loop (connections and TLS roots, retries, redirects, the HTTP fallback,
//! the errors of failed requests); `response.rs`, reading responses;
//! `token.rs`, challenges and tokens; `manifest.rs`, manifests and
//! indexes; `blob.rs`, blob downloads; `upload.rs`, blob uploads and
//! cross-repository mounts; `url.rs`, URLs.

mod blob;
mod manifest;
mod response;
mod send;
mod token;
mod upload;
mod url;

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_llb::Digest;
use kiln_oci::Descriptor;
use sha2::{Digest as _, Sha256};
use ureq::Agent;
use ureq::tls::Certificate;

use crate::auth::Auth;
use crate::config::RegistryConfig;
use crate::error::RegistryError;
use crate::progress::{Direction, ProgressSink, Transfer, TransferState};

/// The manifest media types kiln asks for.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled each time up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

/// Tunables of a client (tests shrink them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    pub retry: RetryPolicy,
    /// Blobs larger than this are uploaded in chunks (PATCH), smaller ones in
    /// one PUT.
    pub chunk_threshold: u64,
    /// Size of each PATCH.
    pub chunk_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy::default(),
            chunk_threshold: 64 << 20,
            chunk_size: 32 << 20,
        }
    }
}

/// A manifest or index as fetched, bytes untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// What a name resolved to for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The index (manifest list) the name pointed at, if it did.
    pub index: Option<FetchedManifest>,
    /// The image manifest for the platform.
    pub manifest: FetchedManifest,
}

/// How a blob got to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushedBlob {
    /// It was there already.
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// A request body that can be produced again for a retry.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Reader(Box<dyn Read + Send>, u64),
}

/// Who a request is for: the registry host and the repository (for errors
/// and token scopes).
#[derive(Debug, Clone)]
struct Target<'a> {
    host: &'a str,
    repo: &'a str,
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: String },
}

struct Inner {
    config: RegistryConfig,
    auth: Auth,
    options: ClientOptions,
    /// Loaded on first use: a build whose bases are all local never pays
    /// for reading the system's certificates.
    system_roots: std::sync::OnceLock<Vec<Certificate<'static>>>,
    agents: Mutex<HashMap<String, Agent>>,
    /// Hosts found to speak plain HTTP.
    plain: Mutex<HashMap<String, bool>>,
    challenges: Mutex<HashMap<String, Challenge>>,
    /// `Authorization` values per (host, scope).
    tokens: Mutex<HashMap<(String, String), String>>,
}

/// A registry client. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Where byte progress of blob transfers goes ([`Client::with_progress`]).
    progress: Option<ProgressSink>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .field("auth", &self.inner.auth.path())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::from_bytes(Sha256::digest(bytes).into())
}

impl Client {
    /// A client with the default retries and upload sizes.
    pub fn new(config: RegistryConfig, auth: Auth) -> Result<Client, RegistryError> {
        Client::with_options(config, auth, ClientOptions::default())
    }

    pub fn with_options(
        config: RegistryConfig,
        auth: Auth,
        options: ClientOptions,
    ) -> Result<Client, RegistryError> {
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                auth,
                options,
                system_roots: std::sync::OnceLock::new(),
                agents: Mutex::new(HashMap::new()),
                plain: Mutex::new(HashMap::new()),
                challenges: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
            }),
            progress: None,
        })
    }

    /// This client (sharing connections and tokens), reporting the bytes of
    /// every blob it downloads or uploads to `sink`.
    pub fn with_progress(&self, sink: ProgressSink) -> Client {
        Client {
            inner: self.inner.clone(),
            progress: Some(sink),
        }
    }

    /// The sink given to [`Client::with_progress`], if any.
    pub fn progress(&self) -> Option<&ProgressSink> {
        self.progress.as_ref()
    }

    fn report(&self, desc: &Descriptor, direction: Direction, current: u64, state: TransferState) {
        if let Some(sink) = &self.progress {
            sink(&Transfer {
                digest: desc.digest,
                direction,
                total: desc.size,
                current,
                state,
            });
        }
    }
}
