//! Python distributions: `*.dist-info/METADATA` (wheels, pip) and
//! `*.egg-info/PKG-INFO` or a `*.egg-info` file (setuptools, Debian's
//! python3 packages): the `Name`, `Version` and `License` headers.

use kiln_attest::purl::Purl;

use crate::scanner::{Package, ScanError, Scanner};
use crate::tree::{Entry, Kind, Tree};

#[derive(Debug)]
pub struct Python;

/// The header fields of a core-metadata file (an email message: headers
/// up to the first blank line).
pub fn metadata(bytes: &[u8]) -> Option<(String, String, Option<String>)> {
    let text = String::from_utf8_lossy(bytes);
    let mut name = None;
    let mut version = None;
    let mut license = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "Name" => name = Some(v.to_owned()),
            "Version" => version = Some(v.to_owned()),
            "License-Expression" => license = Some(v.to_owned()),
            "License" if license.is_none() && !v.is_empty() && v != "UNKNOWN" => {
                license = Some(v.to_owned())
            }
            _ => {}
        }
    }
    Some((name?, version?, license))
}

/// The purl name of a distribution: lowercased, `_` as `-` (the purl
/// spec's rule for pypi).
fn purl_name(name: &str) -> String {
    name.to_lowercase().replace('_', "-")
}

impl Scanner for Python {
    fn name(&self) -> &'static str {
        "python"
    }

    fn wants(&self, e: &Entry) -> bool {
        e.kind == Kind::File
            && (e.path.ends_with(".dist-info/METADATA")
                || e.path.ends_with(".egg-info/PKG-INFO")
                || e.path.ends_with(".egg-info"))
    }

    fn scan(&self, e: &Entry, tree: &dyn Tree) -> Result<Vec<Package>, ScanError> {
        let Some(bytes) = tree.read(&e.path, 16 << 20)? else {
            return Ok(Vec::new());
        };
        let Some((name, version, license)) = metadata(&bytes) else {
            return Ok(Vec::new());
        };
        Ok(vec![Package {
            ecosystem: "pypi".to_owned(),
            purl: Purl::new("pypi", "", &purl_name(&name), &version).to_string(),
            name,
            version,
            evidence: e.path.clone(),
            source: format!(
                "acquired package info from installed python package manifest file: {}",
                e.path
            ),
            license,
            ..Package::default()
        }])
    }
}
