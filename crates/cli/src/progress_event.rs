//! What every progress display shares: event times, JSON event lines and
//! the model of a graph node.

use std::io::Write as _;
use std::time::SystemTime;

/// RFC 3339 with nanoseconds, UTC.
pub fn timestamp() -> String {
    timestamp_of(SystemTime::now())
}

pub fn timestamp_of(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    kiln_oci::rfc3339(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
    .unwrap_or_default()
}

/// Writes one JSON object as a line on stderr, with its `time`.
pub fn emit_json(mut v: serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("time".to_owned(), serde_json::json!(timestamp()));
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{v}");
}

/// What the display knows of a graph node.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// `[build 2/4] RUN make`.
    pub name: String,
    /// The vertex digest (`sha256:…`).
    pub digest: String,
    /// Indexes of the nodes it reads.
    pub inputs: Vec<usize>,
    /// `Dockerfile:3`, for Dockerfile steps.
    pub location: Option<String>,
    /// The stage it was made for.
    pub stage: Option<String>,
}

/// `sha256:0123456789ab` of a digest (12 hex digits, as Docker shows
/// layers).
pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => d.chars().take(19).collect(),
    }
}
