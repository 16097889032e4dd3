//! The SBOM of an image: kiln's own scan of its layers ([`own_scan`]), or
//! the statements an SBOM generator image wrote ([`read_bundle`]; the
//! generator runs as graph ops, `scan.rs`).

use std::path::Path;

use kiln_attest::Subject;
use kiln_snapshot::LayerId;

use super::mounted::Mounted;
use crate::error::{AttestError, Error};
use crate::image::Committed;
use crate::state::State;

/// The SPDX document of one image: its layers mounted read-only and
/// scanned.
pub(crate) fn own_scan(
    state: &State,
    img: &Committed,
    name: &str,
    created: (i64, u32),
) -> Result<serde_json::Value, Error> {
    let mounted = Mounted::new(state, &img.layers)?;
    let layers = kiln_sbom::DirLayers {
        layers: img
            .config
            .rootfs
            .diff_ids
            .iter()
            .map(ToString::to_string)
            .zip(mounted.dirs().iter().cloned())
            .collect(),
        is_whiteout: Box::new(|p: &Path, m: &std::fs::Metadata| {
            kiln_snapshot::whiteout::is_whiteout(p, m)
        }),
    };
    let tree = kiln_sbom::DirTree::new(mounted.path());
    let scanned = kiln_sbom::scan(&tree, &layers, &kiln_sbom::scanners())
        .map_err(|e| Error::from(AttestError::Scan(e)));
    let doc = scanned.and_then(|pkgs| {
        kiln_sbom::spdx::document(
            &pkgs,
            &kiln_sbom::spdx::DocumentInfo {
                name: name.to_owned(),
                image_id: img.id.to_string(),
                created: kiln_oci::rfc3339(created.0, 0).unwrap_or_default(),
                creators: vec![
                    "Organization: kiln".to_owned(),
                    format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION")),
                ],
            },
            &tree,
            &layers,
        )
        .map_err(|e| AttestError::Spdx(e).into())
    });
    mounted.unmount()?;
    doc
}

/// The predicate type of the statements a generator may write.
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";
/// The most a statement file may hold (BuildKit's `maxAttestationBytes`).
const MAX_STATEMENT_BYTES: u64 = 40 << 20;

/// One statement a generator wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct BundleEntry {
    /// Its file name under `/run/out/` (the name a local output gives it).
    pub file_name: String,
    pub predicate_type: String,
    /// The subjects it names itself (none: the image's, as BuildKit).
    pub subjects: Vec<Subject>,
    pub predicate: serde_json::Value,
}

/// The statements a generator wrote to `dir` (its `/run/out/`), as
/// BuildKit unbundles them: every entry a regular file holding one in-toto
/// statement of an SPDX predicate, in name order, those named `sbom.*`
/// (the core scan) first. `image` names the generator in errors; a
/// generator that writes nothing fails (BuildKit adds no SBOM then).
pub fn bundle_in(dir: &Path, image: &str) -> Result<Vec<BundleEntry>, AttestError> {
    let fail = |why: String| AttestError::Generator {
        image: image.to_owned(),
        why,
    };
    let shown = |name: &str| format!("{}/{name}", super::scan::OUT_DIR);
    let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
        .and_then(Iterator::collect)
        .map_err(|e| fail(format!("reading {}: {e}", super::scan::OUT_DIR)))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(e.path())
            .map_err(|err| fail(format!("reading {}: {err}", shown(&name))))?;
        if !meta.is_file() {
            return Err(fail(format!("{} is not a regular file", shown(&name))));
        }
        if meta.len() > MAX_STATEMENT_BYTES {
            return Err(fail(format!(
                "{} exceeds {MAX_STATEMENT_BYTES} bytes",
                shown(&name)
            )));
        }
        let bytes = std::fs::read(e.path())
            .map_err(|err| fail(format!("reading {}: {err}", shown(&name))))?;
        out.push(entry(&name, &bytes).map_err(|why| fail(format!("{}: {why}", shown(&name))))?);
    }
    if out.is_empty() {
        return Err(fail(format!(
            "it wrote no statement to {}/ (the SBOM protocol's BUILDKIT_SCAN_DESTINATION)",
            super::scan::OUT_DIR
        )));
    }
    // The core scan first (BuildKit's `sort`), the order kept otherwise.
    out.sort_by_key(|b| b.file_name.split('.').next() != Some("sbom"));
    Ok(out)
}

/// One statement file.
fn entry(name: &str, bytes: &[u8]) -> Result<BundleEntry, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(rename = "predicateType", default)]
        predicate_type: String,
        #[serde(default)]
        subject: Vec<Subject>,
        #[serde(default)]
        predicate: serde_json::Value,
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("cannot decode in-toto statement: {e}"))?;
    if !value.is_object() {
        return Err("in-toto statement is not a JSON object".to_owned());
    }
    let raw: Raw = serde_json::from_value(value)
        .map_err(|e| format!("cannot decode in-toto statement: {e}"))?;
    if raw.predicate_type != SPDX_PREDICATE {
        return Err(format!(
            "predicate type {:?} is not {SPDX_PREDICATE} (a generator writes SPDX statements)",
            raw.predicate_type
        ));
    }
    Ok(BundleEntry {
        file_name: name.to_owned(),
        predicate_type: raw.predicate_type,
        subjects: raw.subject,
        predicate: raw.predicate,
    })
}

/// The statements a generator wrote, read from the root filesystem of its
/// exec (`layers`, mounted read-only).
pub(crate) fn read_bundle(
    state: &State,
    layers: &[LayerId],
    image: &str,
) -> Result<Vec<BundleEntry>, Error> {
    let mounted = Mounted::new(state, layers)?;
    let out = mounted
        .path()
        .join(super::scan::OUT_DIR.trim_start_matches('/'));
    let read = bundle_in(&out, image).map_err(Error::from);
    mounted.unmount()?;
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (n, c) in files {
            std::fs::write(d.path().join(n), c).expect("write");
        }
        d
    }

    const SPDX: &str = r#"{"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://spdx.dev/Document", "predicate": {"name": "x"}}"#;

    #[test]
    fn core_first_then_by_name() {
        let d = dir_with(&[("b.json", SPDX), ("a.json", SPDX), ("sbom.spdx.json", SPDX)]);
        let got = bundle_in(d.path(), "scanner").expect("bundle");
        let names: Vec<&str> = got.iter().map(|b| b.file_name.as_str()).collect();
        assert_eq!(names, ["sbom.spdx.json", "a.json", "b.json"]);
        assert_eq!(got[0].predicate, serde_json::json!({"name": "x"}));
    }

    #[test]
    fn failures_name_the_generator() {
        let empty = dir_with(&[]);
        let e = bundle_in(empty.path(), "reg/scan:1")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SBOM generator reg/scan:1") && e.contains("wrote no statement"),
            "{e}"
        );
        let bad = dir_with(&[("x.json", "{not json")]);
        let e = bundle_in(bad.path(), "reg/scan:1").unwrap_err().to_string();
        assert!(
            e.contains("/run/out/x.json: cannot decode in-toto statement"),
            "{e}"
        );
        let other = dir_with(&[(
            "x.json",
            r#"{"predicateType": "https://slsa.dev/provenance/v1"}"#,
        )]);
        let e = bundle_in(other.path(), "reg/scan:1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not https://spdx.dev/Document"), "{e}");
    }
}
