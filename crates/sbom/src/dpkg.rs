//! Debian packages: dpkg's database, `/var/lib/dpkg/status` (and the
//! one-file-per-package `/var/lib/dpkg/status.d/*` of distroless images).
//! A package is listed unless its state is `not-installed`, as
//! `dpkg-query -W` lists them.

use kiln_attest::purl::Purl;

use crate::scanner::{Attribution, METADATA_LIMIT, Package, ScanError, Scanner};
use crate::tree::{Entry, Kind, Tree};

const STATUS: &str = "/var/lib/dpkg/status";
const STATUS_D: &str = "/var/lib/dpkg/status.d/";

#[derive(Debug)]
pub struct Dpkg;

/// (name, version) of every listed package of a status file.
pub fn parse(bytes: &[u8]) -> Vec<(String, String)> {
    entries(bytes)
        .into_iter()
        .map(|e| (e.name, e.version))
        .collect()
}

struct Listed {
    name: String,
    version: String,
    arch: String,
    source: Option<(String, Option<String>)>,
    maintainer: Option<String>,
}

fn entries(bytes: &[u8]) -> Vec<Listed> {
    let text = String::from_utf8_lossy(bytes);
    crate::metadata::stanzas(&text)
        .into_iter()
        .filter_map(|s| {
            let name = s.get("Package")?.clone();
            let version = s.get("Version").cloned().unwrap_or_default();
            // "want flag state": everything but `not-installed` is listed.
            if let Some(st) = s.get("Status")
                && st.split_whitespace().nth(2) == Some("not-installed")
            {
                return None;
            }
            let source = s.get("Source").map(|src| match src.split_once(' ') {
                Some((n, v)) => (
                    n.to_owned(),
                    Some(
                        v.trim()
                            .trim_start_matches('(')
                            .trim_end_matches(')')
                            .to_owned(),
                    ),
                ),
                None => (src.clone(), None),
            });
            Some(Listed {
                name,
                version,
                arch: s.get("Architecture").cloned().unwrap_or_default(),
                source,
                maintainer: s.get("Maintainer").cloned(),
            })
        })
        .collect()
}

/// `Name <email>` as SPDX's `Person: Name (email)`.
pub(crate) fn person(who: &str) -> String {
    match who.split_once('<') {
        Some((name, rest)) => format!(
            "Person: {} ({})",
            name.trim(),
            rest.trim_end().trim_end_matches('>').trim()
        ),
        None => format!("Person: {}", who.trim()),
    }
}

impl Scanner for Dpkg {
    fn name(&self) -> &'static str {
        "dpkg"
    }

    fn wants(&self, e: &Entry) -> bool {
        e.kind == Kind::File
            && (e.path == STATUS
                || e.path
                    .strip_prefix(STATUS_D)
                    .is_some_and(|n| !n.contains('/') && !n.ends_with(".md5sums")))
    }

    fn scan(&self, e: &Entry, tree: &dyn Tree) -> Result<Vec<Package>, ScanError> {
        let Some(bytes) = tree.read(&e.path, METADATA_LIMIT)? else {
            return Ok(Vec::new());
        };
        let (distro, version_id) = crate::metadata::os_release(tree).unwrap_or_default();
        let namespace = if distro.is_empty() {
            "debian".to_owned()
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
                let upstream = match &l.source {
                    Some((n, Some(v))) => format!("{n}@{v}"),
                    Some((n, None)) => n.clone(),
                    None => String::new(),
                };
                let purl = Purl::new("deb", &namespace, &l.name, &l.version)
                    .qualifier("arch", &l.arch)
                    .qualifier("upstream", &upstream)
                    .qualifier("distro", &distro_q)
                    .to_string();
                Package {
                    ecosystem: "deb".to_owned(),
                    name: l.name,
                    version: l.version,
                    purl,
                    evidence: e.path.clone(),
                    source: format!("acquired package info from DPKG DB: {}", e.path),
                    license: None,
                    supplier: l.maintainer.as_deref().map(person),
                    layer: None,
                    attribution: Attribution::Database(parse),
                }
            })
            .collect())
    }
}
