//! Alpine packages: apk's database, `/lib/apk/db/installed` (`P:name`,
//! `V:version`, `A:arch`, `L:license`, `o:origin`, `m:maintainer`
//! lines, packages separated by blank lines).

use kiln_attest::purl::Purl;

use crate::scanner::{Attribution, METADATA_LIMIT, Package, ScanError, Scanner};
use crate::tree::{Entry, Kind, Tree};

const DB: &str = "/lib/apk/db/installed";

#[derive(Debug)]
pub struct Apk;

#[derive(Default)]
struct Listed {
    name: String,
    version: String,
    arch: String,
    license: String,
    origin: String,
    maintainer: String,
}

fn entries(bytes: &[u8]) -> Vec<Listed> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut cur = Listed::default();
    let mut flush = |cur: &mut Listed| {
        if !cur.name.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut cur);
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.to_owned();
        match k {
            "P" => cur.name = v,
            "V" => cur.version = v,
            "A" => cur.arch = v,
            "L" => cur.license = v,
            "o" => cur.origin = v,
            "m" => cur.maintainer = v,
            _ => {}
        }
    }
    flush(&mut cur);
    out
}

/// (name, version) of every package of the database.
pub fn parse(bytes: &[u8]) -> Vec<(String, String)> {
    entries(bytes)
        .into_iter()
        .map(|l| (l.name, l.version))
        .collect()
}

impl Scanner for Apk {
    fn name(&self) -> &'static str {
        "apk"
    }

    fn wants(&self, e: &Entry) -> bool {
        e.kind == Kind::File && e.path == DB
    }

    fn scan(&self, e: &Entry, tree: &dyn Tree) -> Result<Vec<Package>, ScanError> {
        let Some(bytes) = tree.read(&e.path, METADATA_LIMIT)? else {
            return Ok(Vec::new());
        };
        let (distro, version_id) = crate::metadata::os_release(tree).unwrap_or_default();
        let namespace = if distro.is_empty() {
            "alpine".to_owned()
        } else {
            distro.clone()
        };
        let distro_q = if distro.is_empty() {
            String::new()
        } else {
            format!("{distro}-{version_id}")
        };
        Ok(entries(&bytes)
            .into_iter()
            .map(|l| {
                let upstream = if l.origin != l.name {
                    l.origin.as_str()
                } else {
                    ""
                };
                let purl = Purl::new("apk", &namespace, &l.name, &l.version)
                    .qualifier("arch", &l.arch)
                    .qualifier("upstream", upstream)
                    .qualifier("distro", &distro_q)
                    .to_string();
                Package {
                    ecosystem: "apk".to_owned(),
                    name: l.name,
                    version: l.version,
                    purl,
                    evidence: e.path.clone(),
                    source: format!("acquired package info from APK DB: {}", e.path),
                    license: Some(l.license).filter(|s| !s.is_empty()),
                    supplier: Some(l.maintainer)
                        .filter(|s| !s.is_empty())
                        .map(|m| crate::dpkg::person(&m)),
                    layer: None,
                    attribution: Attribution::Database(parse),
                }
            })
            .collect())
    }
}
