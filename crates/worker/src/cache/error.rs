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
}
