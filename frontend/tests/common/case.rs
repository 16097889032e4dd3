//! Loading a frontend test case (`testdata/frontend/{ok,err}/<case>/`): its
//! Dockerfile, `options`, `images.json` and `times.json` (the times of
//! sources `SOURCE_DATE_EPOCH` names: URL or `remote#ref` → Unix seconds). Shared by the case tests and the
//! `plan_case` example (used to compare cases with BuildKit).

// Tests read their data from testdata/; the purity rule is for the library.
#![allow(clippy::disallowed_methods)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use kiln_frontend::{BuildOptions, Plan, ResolvedImage, SourceFile, StaticResolver};
use kiln_llb::op::Network;
use kiln_llb::{ImageConfig, Platform};

pub fn options(case: &Path) -> BuildOptions {
    let mut opts = BuildOptions {
        build_platform: Platform::new("linux", "amd64", ""),
        local_context: true,
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
            // Test-only: the main context is not a local directory (the
            // cli's always is).
            "--remote-context" => opts.local_context = false,
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
            // `NAME=VALUE` as the cli reads it; a value that is no
            // remote is a local directory (the test needs none), and
            // `oci-layout://REF` is the image REF of `images.json`, as the
            // cli passes an OCI layout once it has imported it.
            "--build-context" if value.contains("=oci-layout://") => {
                let (k, v) = kv();
                let layout = v.trim_start_matches("oci-layout://");
                let image = resolver(case).images.remove(layout).unwrap_or_else(|| {
                    panic!("{}: {layout} is not in images.json", case.display())
                });
                opts.named_contexts.insert(
                    k,
                    kiln_frontend::NamedContext::Resolved {
                        reference: v.clone(),
                        image: Box::new(image),
                    },
                );
            }
            "--build-context" => {
                let (k, v) = kv();
                let nc = kiln_frontend::contexts::parse_remote(&v, false)
                    .unwrap_or_else(|e| panic!("{}: --build-context: {e}", case.display()))
                    .unwrap_or(kiln_frontend::NamedContext::Local { source: k.clone() });
                opts.named_contexts.insert(k, nc);
            }
            other => panic!("{}: unknown option {other}", case.display()),
        }
    }
    opts
}

pub fn resolver(case: &Path) -> StaticResolver {
    let mut r = StaticResolver::default();
    if let Ok(text) = fs::read_to_string(case.join("times.json")) {
        r.times = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: times.json: {e}", case.display()));
    }
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

pub fn run(case: &Path) -> Result<Plan, kiln_frontend::Diagnostic> {
    let bytes = fs::read(case.join("Dockerfile")).expect("Dockerfile");
    let file = SourceFile::from_bytes("Dockerfile", bytes)?;
    kiln_frontend::plan(&file, &options(case), &resolver(case))
}

/// Lints the case as `kiln build --check` does.
pub fn lint(case: &Path) -> kiln_frontend::CheckReport {
    let bytes = fs::read(case.join("Dockerfile")).expect("Dockerfile");
    match SourceFile::from_bytes("Dockerfile", bytes) {
        Ok(file) => kiln_frontend::check(&file, &options(case), &resolver(case)),
        Err(e) => kiln_frontend::CheckReport {
            warnings: Vec::new(),
            error: Some(e),
        },
    }
}
