//! `testdata/sbom/<case>/`: an image filesystem in `tree/` and, optionally,
//! the layers it is made of in `layers/0`, `layers/1`, … (bottom first,
//! named `sha256:layer0`, …); expected `expected`: one line per package
//! (ecosystem, name, version, purl, evidence, layer, license, supplier),
//! then the SPDX document kiln writes.
//!
//! Each document is also checked by a real validator, PyPI's `spdx-tools`
//! (`pyspdxtools -i FILE`): the trial `<case>-spdx-valid` is reported as
//! ignored when `pyspdxtools` is not installed, and fails then if
//! `KILN_TEST_REQUIRE_SPDX_TOOLS=1` (CI installs it and sets that).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::print_stderr
)]

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_sbom::spdx::{DocumentInfo, document};
use kiln_sbom::{DirLayers, DirTree, Layers, NoLayers, scan, scanners};
use kiln_testkit::{case_dirs, check, testdata};
use libtest_mimic::{Arguments, Failed, Trial};

fn layers_of(dir: &Path) -> Box<dyn Layers> {
    let l = dir.join("layers");
    if !l.is_dir() {
        return Box::new(NoLayers);
    }
    let mut layers = Vec::new();
    for i in 0.. {
        let d = l.join(i.to_string());
        if !d.is_dir() {
            break;
        }
        layers.push((format!("sha256:layer{i}"), d));
    }
    Box::new(DirLayers {
        layers,
        is_whiteout: Box::new(|_, _| false),
    })
}

fn render(dir: &Path) -> Result<(String, serde_json::Value), Failed> {
    let tree = DirTree::new(dir.join("tree"));
    let layers = layers_of(dir);
    let pkgs = scan(&tree, &*layers, &scanners()).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for p in &pkgs {
        out.push_str(&format!(
            "{} {} {} {} {} layer={} license={} supplier={}\n",
            p.ecosystem,
            p.name,
            p.version,
            p.purl,
            p.evidence,
            p.layer.as_deref().unwrap_or("-"),
            p.license.as_deref().unwrap_or("-"),
            p.supplier.as_deref().unwrap_or("-"),
        ));
    }
    let doc = document(
        &pkgs,
        &DocumentInfo {
            name: format!("example.com/{}", dir.file_name().unwrap().to_string_lossy()),
            image_id: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                .to_owned(),
            created: "2020-09-13T12:26:40Z".to_owned(),
            creators: vec![
                "Organization: kiln".to_owned(),
                "Tool: kiln-test".to_owned(),
            ],
        },
        &tree,
        &*layers,
    )
    .map_err(|e| e.to_string())?;
    out.push_str("--- spdx\n");
    out.push_str(&serde_json::to_string_pretty(&doc).unwrap());
    out.push('\n');
    Ok((out, doc))
}

fn run_case(dir: &Path) -> Result<(), Failed> {
    let (text, _) = render(dir)?;
    match check(&dir.join("expected"), &text) {
        None => Ok(()),
        Some(diff) => Err(diff.into()),
    }
}

fn validate(dir: &Path) -> Result<(), Failed> {
    let (_, doc) = render(dir)?;
    let tmp = tempfile::tempdir().unwrap();
    let f: PathBuf = tmp.path().join("sbom.spdx.json");
    std::fs::write(&f, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new("pyspdxtools")
        .arg("-i")
        .arg(&f)
        .output()
        .map_err(|e| format!("pyspdxtools: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || text.contains("validation") && text.contains("ERROR") {
        return Err(format!("pyspdxtools rejected the document:\n{text}").into());
    }
    Ok(())
}

fn has_pyspdxtools() -> bool {
    Command::new("pyspdxtools")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() {
    let args = Arguments::from_args();
    let have = has_pyspdxtools();
    let require = std::env::var_os("KILN_TEST_REQUIRE_SPDX_TOOLS").is_some_and(|v| v == "1");
    if !have && !require {
        eprintln!(
            "sbom: the <case>-spdx-valid trials are ignored: pyspdxtools (PyPI's spdx-tools) is not installed"
        );
    }
    let mut trials = Vec::new();
    for dir in case_dirs(&testdata().join("sbom")) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let d = dir.clone();
        trials.push(Trial::test(name.clone(), move || run_case(&d)));
        trials.push(
            Trial::test(format!("{name}-spdx-valid"), move || validate(&dir))
                .with_ignored_flag(!have && !require),
        );
    }
    libtest_mimic::run(&args, trials).exit();
}
