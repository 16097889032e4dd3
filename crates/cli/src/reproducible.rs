//! `kiln build --check-reproducible`: the build runs twice, the second time
//! without the cache, each into an OCI layout; if the two images differ, the
//! report names what differs in the configuration and, for each layer that
//! differs, the first file whose entry differs (name, type, mode, owner,
//! size, mtime, content).
//!
//! The two builds are this very binary run again with the same arguments
//! (so every flag means what it means in a normal build), one after the
//! other on the same state directory.

use std::fs;
use std::io::BufReader;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use kiln_oci::Manifest;

use crate::Failure;
use crate::args::BuildArgs;

/// The flag, as the user types it.
const FLAG: &str = "--check-reproducible";

/// Runs the check; exit status 1 when the images differ.
pub fn run(args: &BuildArgs) -> Result<(), Failure> {
    if !args.outputs.is_empty() || !args.tags.is_empty() || args.push {
        return Err(Failure::Usage(format!(
            "{FLAG} writes no image: it cannot be combined with -o/--output, -t/--tag or --push"
        )));
    }
    if crate::options::target_platforms(args)?.len() > 1 {
        return Err(Failure::Usage(format!(
            "{FLAG} with several --platform values is not supported yet (check one platform at a time)"
        )));
    }
    let scratch = tempfile::Builder::new()
        .prefix("kiln-reproducible.")
        .tempdir()
        .context("making a scratch directory")?;
    let exe = std::env::current_exe().context("locating the kiln binary")?;
    let user_args: Vec<std::ffi::OsString> =
        std::env::args_os().skip(1).filter(|a| a != FLAG).collect();
    // Where the `build` subcommand is (global options before it may take
    // values): the outputs go right after it.
    let mut at = None;
    let mut i = 0;
    while i < user_args.len() {
        let a = user_args[i].to_string_lossy();
        if matches!(
            a.as_ref(),
            "--root" | "--insecure-registry" | "--registry-config"
        ) {
            i += 2;
            continue;
        }
        if a == "build" {
            at = Some(i + 1);
            break;
        }
        i += 1;
    }
    let at = at.ok_or_else(|| Failure::Usage(format!("{FLAG}: no build subcommand")))?;
    let mut layouts = Vec::new();
    for (n, extra) in [(1, None), (2, Some("--no-cache"))] {
        let dest = scratch.path().join(format!("build{n}"));
        let mut cmd = Command::new(&exe);
        cmd.args(&user_args[..at])
            .arg("-o")
            .arg(format!("type=oci,dest={},tar=false", dest.display()));
        if let Some(e) = extra {
            cmd.arg(e);
        }
        cmd.args(&user_args[at..]);
        crate::progress::say(&format!(
            "{FLAG}: build {n} of 2{}",
            if extra.is_some() {
                " (without the cache)"
            } else {
                ""
            }
        ));
        let status = cmd.status().context("running the build")?;
        if !status.success() {
            return Err(Failure::Build(format!(
                "error: {FLAG}: build {n} failed ({status})"
            )));
        }
        layouts.push(dest);
    }
    let report = compare(&layouts[0], &layouts[1]).map_err(Failure::Other)?;
    // Its lines, as JSON messages under --progress=json.
    for line in report.text.lines() {
        crate::progress::say(line);
    }
    if report.same {
        Ok(())
    } else {
        Err(Failure::Build(format!(
            "error: {FLAG}: the two builds differ"
        )))
    }
}

/// What the comparison found.
struct Report {
    same: bool,
    text: String,
}

fn blob(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let b = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))
}

/// The image manifest of an OCI layout with one image.
fn manifest(layout: &Path) -> anyhow::Result<(String, Manifest)> {
    let index = read_json(&layout.join("index.json"))?;
    let d = index["manifests"][0]["digest"]
        .as_str()
        .context("the layout's index names no manifest")?
        .to_owned();
    let b = fs::read(blob(layout, &d))?;
    Ok((d, serde_json::from_slice(&b)?))
}

fn compare(a: &Path, b: &Path) -> anyhow::Result<Report> {
    let (da, ma) = manifest(a)?;
    let (db, mb) = manifest(b)?;
    if da == db {
        return Ok(Report {
            same: true,
            text: format!("{FLAG}: reproducible: both builds gave manifest {da}\n"),
        });
    }
    let mut text = format!("{FLAG}: the builds differ: manifest {da} and {db}\n");
    let ca = read_json(&blob(a, &ma.config.digest.to_string()))?;
    let cb = read_json(&blob(b, &mb.config.digest.to_string()))?;
    let mut diffs = Vec::new();
    json_diff("", &ca, &cb, &mut diffs);
    for d in diffs.iter().take(10) {
        text.push_str(&format!("  config: {d}\n"));
    }
    if diffs.len() > 10 {
        text.push_str(&format!("  config: and {} more\n", diffs.len() - 10));
    }
    let history: Vec<String> = ca["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|e| !e["empty_layer"].as_bool().unwrap_or(false))
                .map(|e| e["created_by"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default();
    if ma.layers.len() != mb.layers.len() {
        text.push_str(&format!(
            "  layers: {} and {}\n",
            ma.layers.len(),
            mb.layers.len()
        ));
    }
    for (i, (la, lb)) in ma.layers.iter().zip(&mb.layers).enumerate() {
        if la.digest == lb.digest {
            continue;
        }
        let what = history
            .get(i)
            .map(|h| format!(" ({h})"))
            .unwrap_or_default();
        let first = first_difference(
            &blob(a, &la.digest.to_string()),
            &blob(b, &lb.digest.to_string()),
        )?;
        text.push_str(&format!("  layer {}{what}: {first}\n", i + 1));
    }
    if ca["created"] != cb["created"] {
        text.push_str(
            "  hint: times differ; set SOURCE_DATE_EPOCH (or --build-arg SOURCE_DATE_EPOCH) to fix creation times and clamp file times\n",
        );
    }
    Ok(Report { same: false, text })
}

/// Paths where two JSON values differ (`history[3].created: "a" vs "b"`).
fn json_diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                json_diff(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (e, f)) in x.iter().zip(y).enumerate() {
                json_diff(&format!("{path}[{i}]"), e, f, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

/// The first entry that differs between two layer blobs, as listed by
/// `kiln_snapshot::tar_listing_with_digests`.
fn first_difference(a: &Path, b: &Path) -> anyhow::Result<String> {
    let list = |p: &Path| -> anyhow::Result<Vec<String>> {
        let f = fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
        let (_, tar) = kiln_oci::decompress(BufReader::new(f))?;
        Ok(kiln_snapshot::tar_listing_with_digests(tar)?
            .lines()
            .map(str::to_owned)
            .collect())
    };
    let (x, y) = (list(a)?, list(b)?);
    for (l, m) in x.iter().zip(&y) {
        if l != m {
            return Ok(format!("first difference: {l}  vs  {m}"));
        }
    }
    Ok(match x.len().cmp(&y.len()) {
        std::cmp::Ordering::Greater => format!("only in the first build: {}", x[y.len()]),
        std::cmp::Ordering::Less => format!("only in the second build: {}", y[x.len()]),
        // Same entries, other bytes: tar headers the listing does not show.
        std::cmp::Ordering::Equal => "the same entries, but the tar bytes differ (header fields the listing does not show, or compression)".to_owned(),
    })
}
