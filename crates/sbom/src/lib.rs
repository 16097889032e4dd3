//! `kiln-sbom`: what software an image holds, from what its filesystem
//! says, written as an SPDX 2.3 document the way BuildKit's SBOM scanner
//! (docker/buildkit-syft-scanner, i.e. syft) writes it.
//!
//! A scan walks an image's filesystem once ([`Tree`]) and hands each file to
//! the [`Scanner`]s that want it; each scanner is one file:
//!
//! | scanner | reads | packages |
//! |---|---|---|
//! | [`dpkg`] | `/var/lib/dpkg/status`, `/var/lib/dpkg/status.d/*` | Debian (`pkg:deb`) |
//! | [`apk`] | `/lib/apk/db/installed` | Alpine (`pkg:apk`) |
//! | [`python`] | `*.dist-info/METADATA`, `*.egg-info(/PKG-INFO)` | Python (`pkg:pypi`) |
//! | [`npm`] | `node_modules/**/package.json` | npm (`pkg:npm`) |
//! | [`golang`] | ELF executables with `.go.buildinfo` | Go modules (`pkg:golang`) |
//! | [`rust`] | ELF executables with `.dep-v0` (`cargo auditable`) | crates (`pkg:cargo`) |
//!
//! Each package is attributed to the layer it came from ([`Layers`]): for
//! the package databases (dpkg, apk), the lowest layer from which that
//! package at that version is listed in every later copy of the database;
//! for the others, the topmost layer holding the file that shows it (as
//! BuildKit's exporter does for files).
//!
//! # Invariant
//!
//! A scan reads the tree it is given and nothing else: no environment, no
//! clock (the document's time comes in), no network, and never a path
//! through a symlink of the image.

pub mod apk;
pub mod dpkg;
mod elf;
pub mod golang;
pub mod npm;
pub mod python;
pub mod rust;
pub mod spdx;
pub mod tree;

use std::collections::BTreeMap;

pub use tree::{DirLayers, DirTree, Entry, Kind, Layers, NoLayers, Tree};

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
    /// How [`attribute`] finds its layer.
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

/// Every scanner kiln has, in report order.
pub fn scanners() -> Vec<Box<dyn Scanner>> {
    vec![
        Box::new(dpkg::Dpkg),
        Box::new(apk::Apk),
        Box::new(python::Python),
        Box::new(npm::Npm),
        Box::new(golang::Go),
        Box::new(rust::Auditable),
    ]
}

/// Scans `tree` with `scanners` and attributes what they find to `layers`;
/// packages are sorted (ecosystem, name, version, evidence) and each
/// (ecosystem, name, version, evidence) is listed once.
pub fn scan(
    tree: &dyn Tree,
    layers: &dyn Layers,
    scanners: &[Box<dyn Scanner>],
) -> Result<Vec<Package>, ScanError> {
    let mut wanted: Vec<(usize, Entry)> = Vec::new();
    tree.walk(&mut |e| {
        for (i, s) in scanners.iter().enumerate() {
            if s.wants(e) {
                wanted.push((i, e.clone()));
            }
        }
    })?;
    let mut out = Vec::new();
    for (i, e) in &wanted {
        out.extend(scanners[*i].scan(e, tree)?);
    }
    out.sort_by(|a, b| {
        (&a.ecosystem, &a.name, &a.version, &a.evidence).cmp(&(
            &b.ecosystem,
            &b.name,
            &b.version,
            &b.evidence,
        ))
    });
    out.dedup_by(|a, b| {
        (&a.ecosystem, &a.name, &a.version, &a.evidence)
            == (&b.ecosystem, &b.name, &b.version, &b.evidence)
    });
    attribute(&mut out, layers)?;
    Ok(out)
}

/// Sets each package's layer (see the crate docs).
pub fn attribute(packages: &mut [Package], layers: &dyn Layers) -> Result<(), ScanError> {
    if layers.count() == 0 {
        return Ok(());
    }
    // Databases: per evidence file, since which layer each (name, version)
    // has been listed.
    let mut since: BTreeMap<String, BTreeMap<(String, String), usize>> = BTreeMap::new();
    for p in packages.iter() {
        let Attribution::Database(parse) = p.attribution else {
            continue;
        };
        if since.contains_key(&p.evidence) {
            continue;
        }
        let mut listed: BTreeMap<(String, String), usize> = BTreeMap::new();
        for l in 0..layers.count() {
            let Some(bytes) = layers.read(l, &p.evidence, METADATA_LIMIT)? else {
                continue;
            };
            let now: std::collections::BTreeSet<(String, String)> =
                parse(&bytes).into_iter().collect();
            listed.retain(|k, _| now.contains(k));
            for k in now {
                listed.entry(k).or_insert(l);
            }
        }
        since.insert(p.evidence.clone(), listed);
    }
    for p in packages.iter_mut() {
        let layer = match p.attribution {
            Attribution::Database(_) => since
                .get(&p.evidence)
                .and_then(|m| m.get(&(p.name.clone(), p.version.clone())))
                .copied(),
            Attribution::File => (0..layers.count())
                .rev()
                .find(|l| layers.has(*l, &p.evidence)),
        };
        p.layer = layer.map(|l| layers.id(l));
    }
    Ok(())
}

/// `/etc/os-release` (or `/usr/lib/os-release`) as (`ID`, `VERSION_ID`).
pub fn os_release(tree: &dyn Tree) -> Option<(String, String)> {
    let bytes = tree
        .read("/etc/os-release", 1 << 20)
        .ok()
        .flatten()
        .or_else(|| tree.read("/usr/lib/os-release", 1 << 20).ok().flatten())?;
    let text = String::from_utf8_lossy(&bytes);
    let mut id = String::new();
    let mut version = String::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
        match k.trim() {
            "ID" => id = v,
            "VERSION_ID" => version = v,
            _ => {}
        }
    }
    (!id.is_empty()).then_some((id, version))
}

/// RFC 822-style stanzas (dpkg's status, apk's db use their own forms):
/// `Key: value` lines with indented continuations, separated by blank lines.
pub(crate) fn stanzas(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(k) = &last
                && let Some(v) = cur.get_mut(k)
            {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_owned();
            cur.insert(k.clone(), v.trim().to_owned());
            last = Some(k);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
