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
mod metadata;
pub mod npm;
pub mod python;
pub mod rust;
mod scanner;
pub mod spdx;
pub mod tree;

use std::collections::BTreeMap;

pub use metadata::os_release;
pub use scanner::{Attribution, METADATA_LIMIT, Package, ScanError, Scanner};
pub use tree::{DirLayers, DirTree, Entry, Kind, Layers, NoLayers, Tree};

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
