//! The frontend's data-driven tests.
//!
//! `testdata/frontend/ok/<case>/` holds a `Dockerfile`, optionally an `options`
//! file (one `docker build` flag per line: `--build-arg K=V`, `--target T`,
//! `--platform P`, `--build-platform P`, `--label K=V`, `--no-cache`,
//! `--no-cache-filter S`, `--network N`) and an `images.json` (base images the
//! resolver knows: reference → `{digest, has_layers, config}`), and the expected
//! plan in `plan` (`kiln plan --format llb`, then the warnings).
//! `testdata/frontend/err/<case>/` holds the same inputs and the expected
//! diagnostic in `error`. `UPDATE_EXPECT=1 cargo test` rewrites expectations.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use kiln_frontend::{BuildOptions, Plan, ResolvedImage, SourceFile, StaticResolver};
use kiln_llb::op::Network;
use kiln_llb::{ImageConfig, Platform};
use kiln_testkit::{assert_all, case_dirs, check, testdata};

fn options(case: &Path) -> BuildOptions {
    let mut opts = BuildOptions {
        build_platform: Platform::new("linux", "amd64", ""),
        ..BuildOptions::default()
    };
    let Ok(text) = fs::read_to_string(case.join("options")) else {
        return opts;
    };
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (flag, value) = line.split_once(' ').unwrap_or((line, ""));
        let kv = || {
            let (k, v) = value.split_once('=').unwrap_or((value, ""));
            (k.to_owned(), v.to_owned())
        };
        match flag {
            "--build-arg" => {
                let (k, v) = kv();
                opts.build_args.insert(k, v);
            }
            "--label" => {
                let (k, v) = kv();
                opts.labels.insert(k, v);
            }
            "--target" => opts.target = Some(value.to_owned()),
            "--platform" => opts.target_platform = Some(value.parse().expect("platform")),
            "--build-platform" => opts.build_platform = value.parse().expect("platform"),
            "--no-cache" => opts.no_cache = true,
            "--no-cache-filter" => opts.no_cache_filter.push(value.to_owned()),
            "--network" => {
                opts.network = match value {
                    "none" => Network::None,
                    "host" => Network::Host,
                    _ => Network::Default,
                }
            }
            other => panic!("{}: unknown option {other}", case.display()),
        }
    }
    opts
}

fn resolver(case: &Path) -> StaticResolver {
    let mut r = StaticResolver::default();
    let Ok(text) = fs::read_to_string(case.join("images.json")) else {
        return r;
    };
    let images: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: images.json: {e}", case.display()));
    for (reference, v) in images {
        let config: ImageConfig = serde_json::from_value(v["config"].clone())
            .unwrap_or_else(|e| panic!("{}: images.json config: {e}", case.display()));
        r.images.insert(
            reference,
            ResolvedImage {
                digest: v["digest"].as_str().map(str::to_owned),
                config,
                has_layers: v["has_layers"].as_bool().unwrap_or(true),
            },
        );
    }
    r
}

fn run(case: &Path) -> Result<Plan, kiln_frontend::Diagnostic> {
    let bytes = fs::read(case.join("Dockerfile")).expect("Dockerfile");
    let file = SourceFile::from_bytes("Dockerfile", bytes)?;
    kiln_frontend::plan(&file, &options(case), &resolver(case))
}

fn render_warnings(plan: &Plan) -> String {
    let mut s = String::new();
    if !plan.warnings.is_empty() {
        s.push_str("\nwarnings:\n");
        for w in &plan.warnings {
            s.push_str(&w.render());
            s.push('\n');
        }
    }
    s
}

#[test]
fn ok_cases() {
    let cases = case_dirs(&testdata().join("frontend/ok"));
    let mut failures = Vec::new();
    for case in &cases {
        match run(case) {
            Ok(plan) => {
                let actual = plan.definition.render_llb() + &render_warnings(&plan);
                failures.extend(check(&case.join("plan"), &actual));
            }
            Err(e) => failures.push(format!(
                "{}: unexpected error:\n{}",
                case.display(),
                e.render()
            )),
        }
    }
    assert_all(failures, cases.len());
}

#[test]
fn err_cases() {
    let cases = case_dirs(&testdata().join("frontend/err"));
    let mut failures = Vec::new();
    for case in &cases {
        match run(case) {
            Ok(plan) => failures.push(format!(
                "{}: planned, expected an error:\n{}",
                case.display(),
                plan.definition.render_text()
            )),
            Err(e) => failures.extend(check(&case.join("error"), &(e.render() + "\n"))),
        }
    }
    assert_all(failures, cases.len());
}

/// Planning twice gives the same digests: nothing depends on time, order of
/// hash maps, or the machine.
#[test]
fn plans_are_deterministic() {
    for case in case_dirs(&testdata().join("frontend/ok")) {
        let a = run(&case).map(|p| p.definition.render_llb()).ok();
        let b = run(&case).map(|p| p.definition.render_llb()).ok();
        assert_eq!(a, b, "{}", case.display());
    }
}
