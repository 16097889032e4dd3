//! What a scanner is and what it finds.

use crate::tree::{Entry, Tree};

/// Files larger than this are not read as package metadata.
pub const METADATA_LIMIT: u64 = 64 << 20;

/// A package a scanner found.
#[derive(Clone, Debug, Default)]
pub struct Package {
    /// The ecosystem (`deb`, `apk`, `pypi`, `npm`, `golang`, `cargo`), as
    /// the purl type.
    pub ecosystem: String,
    pub name: String,
    pub version: String,
    pub purl: String,
    /// The file that shows the package (`/var/lib/dpkg/status`).
    pub evidence: String,
    /// What found it (`DPKG DB`, `python package`, …) for `sourceInfo`.
    pub source: String,
    /// A declared license, as the metadata writes it.
    pub license: Option<String>,
    /// `Organization: …` / `Person: …`.
    pub supplier: Option<String>,
    /// The layer it came from (diffID), once attributed.
    pub layer: Option<String>,
    /// How [`crate::attribute`] finds its layer.
    pub attribution: Attribution,
}

/// How a package is attributed to a layer.
#[derive(Clone, Copy, Debug, Default)]
pub enum Attribution {
    /// The topmost layer with the evidence file.
    #[default]
    File,
    /// The layer since which every copy of the database (the evidence file)
    /// lists this name at this version; `parse` is the scanner's parser.
    Database(fn(&[u8]) -> Vec<(String, String)>),
}

/// Why a scan failed (reading the tree; bad metadata is skipped, not an
/// error).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reading the image: {0}")]
    Io(#[from] std::io::Error),
}

/// A scanner: which files it reads, and the packages in one of them.
pub trait Scanner: Sync {
    /// Its name (`dpkg`, …).
    fn name(&self) -> &'static str;
    /// Whether `entry` is a file this scanner reads.
    fn wants(&self, entry: &Entry) -> bool;
    /// The packages `entry` shows (the tree is there for related files:
    /// `/etc/os-release`, a binary's bytes).
    fn scan(&self, entry: &Entry, tree: &dyn Tree) -> Result<Vec<Package>, ScanError>;
}
