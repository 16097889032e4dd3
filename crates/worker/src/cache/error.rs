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
    /// `--cache-from type=inline` (an inline cache is read from its image).
    #[error(
        "--cache-from type=inline: read an inline cache from its image with \
         --cache-from type=registry,ref=<image>"
    )]
    InlineImport,
    /// An inline cache handed to the exporter (it goes into the image config).
    #[error("an inline cache is written into the image config, not exported")]
    InlineExport,
    /// A cache's manifest is not JSON of a manifest.
    #[error("cache {what}: invalid manifest: {source}")]
    InvalidManifest {
        what: String,
        source: serde_json::Error,
    },
    /// A cache's config is not of kiln's cache config type.
    #[error(
        "cache {what}: not a kiln cache (its config is of type {media_type:?}, expected {expected:?})"
    )]
    NotACacheConfig {
        what: String,
        media_type: String,
        expected: &'static str,
    },
    /// An image config (that may carry an inline cache) does not parse.
    #[error("cache {what}: {source}")]
    ImageConfig {
        what: String,
        source: kiln_oci::JsonError,
    },
    #[error("cache {what}: invalid inline cache: {source}")]
    InvalidInline {
        what: String,
        source: serde_json::Error,
    },
    #[error("cache {what}: inline cache version {version} (this kiln reads version 1)")]
    InlineVersion { what: String, version: u32 },
    #[error("cache {what}: invalid cache config: {source}")]
    InvalidConfig {
        what: String,
        source: serde_json::Error,
    },
    #[error("cache {what}: cache format version {version} is not supported (kiln reads version 1)")]
    Version { what: String, version: u32 },
    /// A layer or cache mount (`by`) of a cache names a blob it lacks.
    #[error("cache {what}: {by} names blob #{index} of {len}")]
    BlobIndex {
        what: String,
        by: String,
        index: usize,
        len: usize,
    },
    /// A cache config names a blob its manifest lacks.
    #[error("cache {what}: names blob #{index} of {len}")]
    ManifestBlobIndex {
        what: String,
        index: usize,
        len: usize,
    },
    /// A record names a layer the cache lacks.
    #[error("cache {what}: record {record} names layer #{index} of {len}")]
    LayerIndex {
        what: String,
        record: kiln_solver::Key,
        index: usize,
        len: usize,
    },
    #[error("cache {what}: invalid cache mount key {key:?}")]
    MountKey { what: String, key: String },
    /// Encoding the inline cache into the image config failed.
    #[error("encoding the inline cache: {0}")]
    EncodeInline(#[source] serde_json::Error),
    #[error("cache ref {name:?}: {source}")]
    BadRef {
        name: String,
        source: kiln_reference::ReferenceError,
    },
    /// Reading a registry cache (`--cache-from`) failed.
    #[error("--cache-from {reference}: {source}")]
    Import {
        reference: String,
        source: kiln_registry::RegistryError,
    },
    /// Fetching a blob of an imported registry cache failed.
    #[error("cache {reference}: {source}")]
    Fetch {
        reference: String,
        source: kiln_registry::RegistryError,
    },
    /// A cache value names a layer by an invalid diffID.
    #[error("invalid layer diffID {0:?}")]
    BadDiffId(String),
    #[error("layer {diff_id}: not in the store and in no imported cache")]
    LayerUnavailable { diff_id: kiln_llb::Digest },
    #[error("layer {diff_id}: unknown layer media type {media_type:?}")]
    LayerMediaType {
        diff_id: kiln_llb::Digest,
        media_type: String,
    },
    /// The thread writing a cache mount's tar panicked.
    #[error("writing the tar of {} panicked", path.display())]
    TarPanicked { path: std::path::PathBuf },
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
}
