//! The SPDX 2.3 JSON document of a scan, in the shape syft (BuildKit's SBOM
//! scanner, docker/buildkit-syft-scanner) writes: a root package for the
//! image (`primaryPackagePurpose: CONTAINER`) that the document
//! `DESCRIBES` and that `CONTAINS` every package; each package with its
//! purl as a `PACKAGE-MANAGER` external reference and `sourceInfo` saying
//! what it was read from; each file that shows a package listed with its
//! SHA-1 and SHA-256 (named `./path`, as SPDX wants file names relative)
//! and, as BuildKit's exporter adds, a `layerID:`
//! comment, related to its packages by `OTHER` (`evident-by`).
//!
//! kiln also writes the layer each package came from as the package's
//! `comment` (`layerID: sha256:<diffID>`); layers are named by diffID,
//! which does not depend on the compression of an export, where BuildKit's
//! file comments name the compressed blob.
//!
//! The model is `serde-spdx`'s: structs generated from the SPDX 2.3 JSON
//! schema, so the field names and required fields are the schema's.

use std::collections::BTreeMap;
use std::io::Read as _;

use serde_spdx::spdx::v_2_3 as m;
use sha2::Digest as _;

use crate::scanner::Package;
use crate::tree::{Layers, Tree};

/// The `predicateType` of an SPDX in-toto statement.
pub const PREDICATE: &str = "https://spdx.dev/Document";

/// What the document says about itself.
#[derive(Clone, Debug, Default)]
pub struct DocumentInfo {
    /// The image (its name, or `sha256:…`).
    pub name: String,
    /// The image ID, as the root package's version.
    pub image_id: String,
    /// RFC 3339.
    pub created: String,
    /// `Tool: kiln-0.1.0`, …
    pub creators: Vec<String>,
}

/// Why a document could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SpdxError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("SPDX model: {0}")]
    Model(String),
}

fn model<E: std::fmt::Display>(e: E) -> SpdxError {
    SpdxError::Model(e.to_string())
}

/// `[A-Za-z0-9.-]` only, as SPDX identifiers require.
fn id_part(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').to_owned()
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

/// License identifiers (from the SPDX license list) common in package
/// metadata; a declared license made only of these (with AND, OR, WITH and
/// parentheses) is written as `licenseDeclared`, anything else as
/// `NOASSERTION`, so the document stays valid.
const KNOWN_LICENSES: &[&str] = &[
    "0BSD",
    "AFL-2.1",
    "Apache-2.0",
    "Artistic-2.0",
    "BSD-1-Clause",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "BSL-1.0",
    "CC0-1.0",
    "EPL-2.0",
    "GPL-2.0-only",
    "GPL-2.0-or-later",
    "GPL-3.0-only",
    "GPL-3.0-or-later",
    "ISC",
    "LGPL-2.1-only",
    "LGPL-2.1-or-later",
    "LGPL-3.0-only",
    "LGPL-3.0-or-later",
    "MIT",
    "MIT-0",
    "MPL-2.0",
    "PSF-2.0",
    "Python-2.0",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "Unlicense",
    "Zlib",
    "LLVM-exception",
    "Classpath-exception-2.0",
];

fn declared(license: Option<&str>) -> String {
    let Some(l) = license else {
        return "NOASSERTION".to_owned();
    };
    let spaced = l.replace('(', " ( ").replace(')', " ) ");
    let ok = !spaced.trim().is_empty()
        && spaced
            .split_whitespace()
            .all(|t| matches!(t, "AND" | "OR" | "WITH" | "(" | ")") || KNOWN_LICENSES.contains(&t));
    if ok {
        l.to_owned()
    } else {
        "NOASSERTION".to_owned()
    }
}

/// SHA-1 and SHA-256 of a file of the tree.
fn checksums(tree: &dyn Tree, path: &str) -> Result<Vec<m::SpdxItemFilesItemChecksums>, SpdxError> {
    let read = |source| SpdxError::Read {
        path: path.to_owned(),
        source,
    };
    let mut s1 = sha1::Sha1::new();
    let mut s256 = sha2::Sha256::new();
    if let Some(mut f) = tree.open(path).map_err(read)? {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf).map_err(read)?;
            if n == 0 {
                break;
            }
            s1.update(&buf[..n]);
            s256.update(&buf[..n]);
        }
    }
    let sum = |algorithm: &str, value: Vec<u8>| m::SpdxItemFilesItemChecksums {
        algorithm: algorithm.to_owned(),
        checksum_value: hex::encode(value),
    };
    Ok(vec![
        sum("SHA1", s1.finalize().to_vec()),
        sum("SHA256", s256.finalize().to_vec()),
    ])
}

/// The SPDX document of `packages` (attributed), as JSON.
pub fn document(
    packages: &[Package],
    info: &DocumentInfo,
    tree: &dyn Tree,
    layers: &dyn Layers,
) -> Result<serde_json::Value, SpdxError> {
    let root_id = format!("SPDXRef-DocumentRoot-Image-{}", id_part(&info.name));
    let mut pkgs = vec![
        m::SpdxItemPackagesBuilder::default()
            .name(info.name.clone())
            .spdxid(root_id.clone())
            .version_info(info.image_id.clone())
            .supplier("NOASSERTION")
            .download_location("NOASSERTION")
            .files_analyzed(false)
            .license_concluded("NOASSERTION")
            .license_declared("NOASSERTION")
            .copyright_text("NOASSERTION")
            .primary_package_purpose("CONTAINER")
            .build()
            .map_err(model)?,
    ];
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut relationships = vec![m::SpdxItemRelationships {
        comment: None,
        spdx_element_id: "SPDXRef-DOCUMENT".to_owned(),
        related_spdx_element: root_id.clone(),
        relationship_type: "DESCRIBES".to_owned(),
    }];
    let file_id = |path: &str| format!("SPDXRef-File-{}-{}", id_part(path), short_hash(&[path]));
    for p in packages {
        let id = format!(
            "SPDXRef-Package-{}-{}-{}",
            id_part(&p.ecosystem),
            id_part(&p.name),
            short_hash(&[&p.purl, &p.evidence])
        );
        let mut b = m::SpdxItemPackagesBuilder::default();
        b.name(p.name.clone())
            .spdxid(id.clone())
            .version_info(p.version.clone())
            .supplier(
                p.supplier
                    .clone()
                    .unwrap_or_else(|| "NOASSERTION".to_owned()),
            )
            .download_location("NOASSERTION")
            .files_analyzed(false)
            .source_info(p.source.clone())
            .license_concluded("NOASSERTION")
            .license_declared(declared(p.license.as_deref()))
            .copyright_text("NOASSERTION")
            .external_refs(vec![m::SpdxItemPackagesItemExternalRefs {
                comment: None,
                reference_category: "PACKAGE-MANAGER".to_owned(),
                reference_locator: p.purl.clone(),
                reference_type: "purl".to_owned(),
            }]);
        if let Some(l) = &p.layer {
            b.comment(format!("layerID: {l}"));
        }
        pkgs.push(b.build().map_err(model)?);
        relationships.push(m::SpdxItemRelationships {
            comment: None,
            spdx_element_id: root_id.clone(),
            related_spdx_element: id.clone(),
            relationship_type: "CONTAINS".to_owned(),
        });
        relationships.push(m::SpdxItemRelationships {
            comment: Some(
                "evident-by: indicates the package's existence is evident by the given file"
                    .to_owned(),
            ),
            spdx_element_id: id,
            related_spdx_element: file_id(&p.evidence),
            relationship_type: "OTHER".to_owned(),
        });
        files.insert(p.evidence.clone(), file_id(&p.evidence));
    }
    let mut file_list = Vec::with_capacity(files.len());
    for (path, id) in &files {
        let layer = (0..layers.count()).rev().find(|l| layers.has(*l, path));
        let mut b = m::SpdxItemFilesBuilder::default();
        // SPDX file names are relative to the package root (`./var/…`).
        b.file_name(format!(".{path}"))
            .spdxid(id.clone())
            .checksums(checksums(tree, path)?)
            .license_concluded("NOASSERTION")
            .copyright_text("NOASSERTION");
        if let Some(l) = layer {
            b.comment(format!("layerID: {}", layers.id(l)));
        }
        file_list.push(b.build().map_err(model)?);
    }
    let namespace_seed: Vec<&str> = packages.iter().map(|p| p.purl.as_str()).collect();
    let doc = m::SpdxBuilder::default()
        .spdxid("SPDXRef-DOCUMENT")
        .spdx_version("SPDX-2.3")
        .data_license("CC0-1.0")
        .name(info.name.clone())
        .document_namespace(format!(
            "https://kiln.dev/spdxdocs/{}-{}",
            id_part(&info.name),
            short_hash(&[&[info.image_id.as_str()], namespace_seed.as_slice()].concat())
        ))
        .creation_info(
            m::SpdxCreationInfoBuilder::default()
                .created(info.created.clone())
                .creators(info.creators.clone())
                .license_list_version("3.22")
                .build()
                .map_err(model)?,
        )
        .packages(pkgs)
        .files(file_list)
        .relationships(relationships)
        .build()
        .map_err(model)?;
    serde_json::to_value(&doc).map_err(model)
}
