//! The cache exchange's own errors.

/// What can go wrong moving a cache, beyond I/O and the store's errors.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The destination or source holds something that is not a kiln cache.
    #[error("cache {what}: not a kiln cache")]
    NotACache { what: String },
    /// A blob read back does not match its digest.
    #[error("{what}: content does not match its name (got {actual})")]
    Corrupt {
        what: String,
        actual: kiln_llb::Digest,
    },
    /// An invalid index or manifest at the destination.
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    /// Other exporters kept replacing this export's write.
    #[error(
        "--cache-to {what}: other exporters replaced this export's cache {attempts} times \
         without its records; giving up (its records are stored by digest, as {own})"
    )]
    Contended {
        what: String,
        attempts: usize,
        own: kiln_llb::Digest,
    },
    /// An S3 request was answered with an error status.
    #[error("s3 {what}: {method} {key}: HTTP {status}{}", code_suffix(.code))]
    S3Status {
        what: String,
        method: &'static str,
        key: String,
        status: u16,
        code: Option<String>,
    },
    /// An S3 request failed before an answer (connection, TLS, …).
    #[error("s3 {what}: {method} {key}: {source}")]
    S3Request {
        what: String,
        method: &'static str,
        key: String,
        source: Box<ureq::Error>,
    },
    /// No S3 region or bucket could be found, or an invalid endpoint.
    #[error("s3 {what}: {reason}")]
    S3Config { what: String, reason: String },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
}
