//! The crate's error. Every message names the registry host and, where there
//! is one, the repository, so a CI log says which of several registries
//! failed.

use std::io;

/// What can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// 401 after the auth flow: no or wrong credentials.
    #[error(
        "{}: authentication required or failed ({detail}); log in with `kiln login {host}`",
        name(host, repository)
    )]
    Unauthorized {
        host: String,
        repository: String,
        detail: String,
    },
    /// 403: the credentials are valid but not allowed to do this.
    #[error("{}: access denied ({detail})", name(host, repository))]
    Denied {
        host: String,
        repository: String,
        detail: String,
    },
    /// 404: no such manifest, tag or blob.
    #[error("{}: {what} not found", name(host, repository))]
    NotFound {
        host: String,
        repository: String,
        what: String,
    },
    /// Any other unexpected status.
    #[error("{host}: {method} {path}: unexpected status {status}: {detail}")]
    Status {
        host: String,
        method: String,
        path: String,
        status: u16,
        detail: String,
    },
    /// The connection failed (after the retries).
    #[error("{host}: {detail}{hint}")]
    Connection {
        host: String,
        detail: String,
        hint: String,
    },
    /// What the registry sent is not what was asked for.
    #[error("{host}/{repository}: {what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        host: String,
        repository: String,
        what: String,
        expected: String,
        actual: String,
    },
    /// A malformed answer (bad JSON, bad header).
    #[error("{host}: {detail}")]
    Protocol { host: String, detail: String },
    /// No manifest of an index is for the wanted platform.
    #[error("{reference}: no image for platform {wanted} (the index has: {available})")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    /// The local store refused a blob.
    #[error("{host}/{repository}: storing {digest}: {source}")]
    Store {
        host: String,
        repository: String,
        digest: String,
        source: kiln_oci::ContentError,
    },
    /// Reading a local file (a config, a CA, a blob to upload).
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// A bad configuration or credentials file.
    #[error("{path}: {detail}")]
    Config { path: String, detail: String },
    /// A docker-credential helper failed.
    #[error("docker-credential-{helper} {action} for {host}: {detail}")]
    Helper {
        helper: String,
        action: String,
        host: String,
        detail: String,
    },
}

/// `host/repository`, or `host` alone for registry-wide requests.
fn name(host: &str, repository: &str) -> String {
    if repository.is_empty() {
        host.to_owned()
    } else {
        format!("{host}/{repository}")
    }
}
