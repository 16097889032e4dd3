//! Data-driven tests of the image model: `testdata/oci/config/<case>/`
//! (see the README there). For each case the config is parsed (tolerantly, as
//! a pulled config would be), written back canonically, and a manifest is
//! assembled for it; both outputs and their digests are compared with the
//! expected files.

use std::fs;
use std::path::Path;

use kiln_llb::Digest;
use kiln_oci::{ContentStore, Descriptor, ImageConfigFile, MediaTypes, canonicalize, write_image};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    roundtrip: bool,
    media_types: String,
    layers: Vec<Descriptor>,
}

fn run_case(dir: &Path) -> Result<Vec<String>, String> {
    let input: Input =
        serde_json::from_slice(&fs::read(dir.join("input.json")).map_err(|e| e.to_string())?)
            .map_err(|e| format!("input.json: {e}"))?;
    let (source, what) = match (&input.source, &input.config) {
        (Some(file), None) => (
            fs::read(dir.join(file)).map_err(|e| format!("{file}: {e}"))?,
            file.clone(),
        ),
        (None, Some(v)) => (
            serde_json::to_vec(v).map_err(|e| e.to_string())?,
            "inline config".to_owned(),
        ),
        _ => return Err("input.json needs exactly one of source and config".into()),
    };
    let config = ImageConfigFile::from_json(&source, &what).map_err(|e| e.to_string())?;
    let config_json = config.to_json().map_err(|e| e.to_string())?;
    let mut failures = Vec::new();

    if input.roundtrip {
        let expected = canonicalize(&source, &what).map_err(|e| e.to_string())?;
        if expected != config_json {
            failures.push(format!(
                "{}: round trip lost or added fields\n source: {}\n   kiln: {}",
                dir.display(),
                String::from_utf8_lossy(&expected),
                String::from_utf8_lossy(&config_json)
            ));
        }
    }
    // Writing what we parsed and parsing it again is the identity.
    let reparsed =
        ImageConfigFile::from_json(&config_json, "kiln output").map_err(|e| e.to_string())?;
    if reparsed != config {
        failures.push(format!(
            "{}: config does not survive write + parse",
            dir.display()
        ));
    }

    let types = match input.media_types.as_str() {
        "oci" => MediaTypes::Oci,
        "docker" => MediaTypes::Docker,
        other => return Err(format!("unknown media_types {other:?}")),
    };
    if input.layers.len() != config.rootfs.diff_ids.len() {
        return Err("input.json: one layer per diffID expected".into());
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store = ContentStore::open(tmp.path()).map_err(|e| e.to_string())?;
    let image = write_image(&store, &config, &input.layers, types).map_err(|e| e.to_string())?;
    let manifest_json = store
        .read(&image.manifest.digest)
        .map_err(|e| e.to_string())?;
    if store
        .read(&image.config.digest)
        .map_err(|e| e.to_string())?
        != config_json
    {
        failures.push(format!(
            "{}: stored config differs from to_json()",
            dir.display()
        ));
    }
    if image.manifest.platform.as_ref() != Some(&config.platform()) {
        failures.push(format!(
            "{}: manifest descriptor lacks the platform",
            dir.display()
        ));
    }

    let mut ids = String::new();
    if input.source.is_some() {
        ids.push_str(&format!("source   {}\n", Digest::of(&source)));
    }
    ids.push_str(&format!(
        "config   {}\nmanifest {}\n",
        image.config.digest, image.manifest.digest
    ));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for (file, actual) in [
        ("config.json", text(&config_json)),
        ("manifest.json", text(&manifest_json)),
        ("ids", ids),
    ] {
        if let Some(f) = kiln_testkit::check(&dir.join(file), &actual) {
            failures.push(f);
        }
    }
    Ok(failures)
}

#[test]
fn config_cases() {
    let root = kiln_testkit::testdata().join("oci/config");
    let cases = kiln_testkit::case_dirs(&root);
    assert!(
        cases.len() >= 7,
        "expected the config cases in {}",
        root.display()
    );
    let mut failures = Vec::new();
    for dir in &cases {
        match run_case(dir) {
            Ok(f) => failures.extend(f),
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
    }
    kiln_testkit::assert_all(failures, cases.len());
}

/// The BuildKit-built config's file digest is the image ID Docker reported:
/// the fixture is the real thing, byte for byte.
#[test]
fn buildkit_fixture_is_verbatim() {
    let src =
        fs::read(kiln_testkit::testdata().join("oci/config/buildkit-full/source.json")).unwrap();
    assert_eq!(
        Digest::of(&src).to_string(),
        "sha256:56989ce3d048874139aa687dfe2268ec2ec26b64cb731b6438a5061068481c30"
    );
}
