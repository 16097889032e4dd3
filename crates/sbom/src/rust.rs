//! Rust binaries built with `cargo auditable`: the dependency tree it
//! embeds in the section `.dep-v0` (zlib-compressed JSON, read with the
//! format's own model, `auditable-serde`). Every crate listed is a
//! package.

use std::io::Read as _;

use kiln_attest::purl::Purl;

use crate::scanner::{Package, ScanError, Scanner};
use crate::tree::{Entry, Tree};

/// The most a decompressed `.dep-v0` may be (cargo-auditable's own
/// readers use 8 MiB).
const JSON_LIMIT: u64 = 8 << 20;

#[derive(Debug)]
pub struct Auditable;

/// The crates (name, version, source) of a `.dep-v0` section.
pub fn crates(section: &[u8]) -> Option<Vec<(String, String, String)>> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(section)
        .take(JSON_LIMIT)
        .read_to_end(&mut json)
        .ok()?;
    let info: auditable_serde::VersionInfo = serde_json::from_slice(&json).ok()?;
    Some(
        info.packages
            .into_iter()
            .map(|p| {
                let source = match p.source {
                    auditable_serde::Source::CratesIo => "crates.io".to_owned(),
                    auditable_serde::Source::Git => "git".to_owned(),
                    auditable_serde::Source::Local => "local".to_owned(),
                    auditable_serde::Source::Registry => "registry".to_owned(),
                    other => format!("{other:?}").to_lowercase(),
                };
                (p.name, p.version.to_string(), source)
            })
            .collect(),
    )
}

impl Scanner for Auditable {
    fn name(&self) -> &'static str {
        "cargo-auditable"
    }

    fn wants(&self, e: &Entry) -> bool {
        e.is_executable() && e.size >= 64
    }

    fn scan(&self, e: &Entry, tree: &dyn Tree) -> Result<Vec<Package>, ScanError> {
        let Some(f) = tree.open(&e.path)? else {
            return Ok(Vec::new());
        };
        let Some(section) = crate::elf::section(f, ".dep-v0", 8 << 20)? else {
            return Ok(Vec::new());
        };
        let Some(list) = crates(&section) else {
            return Ok(Vec::new());
        };
        Ok(list
            .into_iter()
            .map(|(name, version, source)| Package {
                ecosystem: "cargo".to_owned(),
                purl: Purl::new("cargo", "", &name, &version).to_string(),
                name,
                version,
                evidence: e.path.clone(),
                source: format!(
                    "acquired package info from Rust cargo-auditable dependency information ({source}): {}",
                    e.path
                ),
                ..Package::default()
            })
            .collect())
    }
}
