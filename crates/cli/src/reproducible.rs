//! `kiln build --check-reproducible`: the build runs twice, the second time
//! without the cache, each into an OCI layout; if the two images differ, the
//! report names what differs in the configuration and, for each layer that
//! differs, the first file whose entry differs (name, type, mode, owner,
//! size, mtime, content).
//!
//! The two builds are this very binary run again with the same arguments
//! (so every flag means what it means in a normal build), one after the
//! other on the same state directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufReader;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use kiln_oci::Manifest;

use crate::args::BuildArgs;
use crate::failure::Failure;

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
    let report = compare(&layouts[0], &layouts[1], &Labels::CHECK).map_err(Failure::Other)?;
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
pub(crate) struct Report {
    pub same: bool,
    pub text: String,
}

/// How a comparison names what it compares, and how much it says about a
/// layer that differs.
pub(crate) struct Labels {
    /// The first word of each headline (`--check-reproducible`).
    pub prefix: &'static str,
    /// The headline when the two are the same, before the digest.
    pub same: &'static str,
    /// The headline when they differ, before the two digests.
    pub differ: &'static str,
    /// The names of the two images in a layer's report.
    pub first: &'static str,
    pub second: &'static str,
    /// Every path that differs in a layer (at most [`MAX_PATHS`]), not only
    /// the first entry.
    pub all_paths: bool,
}

impl Labels {
    const CHECK: Labels = Labels {
        prefix: FLAG,
        same: "reproducible: both builds gave manifest",
        differ: "the builds differ: manifest",
        first: "the first build",
        second: "the second build",
        all_paths: false,
    };
}

/// Paths listed per layer that differs.
const MAX_PATHS: usize = 20;

pub(crate) fn blob(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

pub(crate) fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let b = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))
}

/// The image manifest of an OCI layout with one image (when the layout
/// names an index that carries attestations, the image manifest in it: the
/// images are compared, not their attestations).
pub(crate) fn manifest(layout: &Path) -> anyhow::Result<(String, Manifest)> {
    let index = read_json(&layout.join("index.json"))?;
    let mut d = index["manifests"][0]["digest"]
        .as_str()
        .context("the layout's index names no manifest")?
        .to_owned();
    let mut b = fs::read(blob(layout, &d))?;
    let top: serde_json::Value = serde_json::from_slice(&b)?;
    if top["mediaType"] == "application/vnd.oci.image.index.v1+json" {
        d = top["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["annotations"]["vnd.docker.reference.type"].is_null())
            .and_then(|m| m["digest"].as_str())
            .context("the layout's index names no image manifest")?
            .to_owned();
        b = fs::read(blob(layout, &d))?;
    }
    Ok((d, serde_json::from_slice(&b)?))
}

pub(crate) fn compare(a: &Path, b: &Path, labels: &Labels) -> anyhow::Result<Report> {
    let (da, ma) = manifest(a)?;
    let (db, mb) = manifest(b)?;
    let prefix = labels.prefix;
    if da == db {
        return Ok(Report {
            same: true,
            text: format!("{prefix}: {} {da}\n", labels.same),
        });
    }
    let mut text = format!("{prefix}: {} {da} and {db}\n", labels.differ);
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
        let (pa, pb) = (
            blob(a, &la.digest.to_string()),
            blob(b, &lb.digest.to_string()),
        );
        if labels.all_paths {
            text.push_str(&format!("  layer {}{what}:\n", i + 1));
            for d in path_differences(&pa, &pb, labels)? {
                text.push_str(&format!("    {d}\n"));
            }
        } else {
            let first = first_difference(&pa, &pb)?;
            text.push_str(&format!("  layer {}{what}: {first}\n", i + 1));
        }
    }
    if ca["created"] != cb["created"] {
        text.push_str(
            "  hint: times differ; set SOURCE_DATE_EPOCH (or --build-arg SOURCE_DATE_EPOCH) to fix creation times and clamp file times\n",
        );
    }
    Ok(Report { same: false, text })
}

/// Paths where two JSON values differ (`history[3].created: "a" vs "b"`).
pub(crate) fn json_diff(
    path: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
    out: &mut Vec<String>,
) {
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

/// The entries of a layer blob, as listed by
/// `kiln_snapshot::tar_listing_with_digests`.
fn list(p: &Path) -> anyhow::Result<Vec<String>> {
    let f = fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let (_, tar) = kiln_oci::decompress(BufReader::new(f))?;
    Ok(kiln_snapshot::tar_listing_with_digests(tar)?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The path of a listing line (`file  etc/passwd mode=…`, `link a -> b …`).
fn listed_path(line: &str) -> &str {
    let rest = line.get(6..).unwrap_or(line);
    let end = [" -> ", " mode="]
        .iter()
        .filter_map(|s| rest.find(s))
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}

/// Every path whose entry differs between two layer blobs (changed, only
/// in one of them), at most [`MAX_PATHS`]; each changed entry with the
/// fields that differ.
fn path_differences(a: &Path, b: &Path, labels: &Labels) -> anyhow::Result<Vec<String>> {
    let by_path = |lines: Vec<String>| -> BTreeMap<String, String> {
        lines
            .into_iter()
            .map(|l| (listed_path(&l).to_owned(), l))
            .collect()
    };
    let (x, y) = (by_path(list(a)?), by_path(list(b)?));
    let mut out = Vec::new();
    let paths: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    for p in paths {
        match (x.get(p), y.get(p)) {
            (Some(l), Some(m)) if l != m => {
                let fl: Vec<&str> = l.split(' ').filter(|f| !f.is_empty()).collect();
                let fm: Vec<&str> = m.split(' ').filter(|f| !f.is_empty()).collect();
                let fields: Vec<String> = fl
                    .iter()
                    .filter(|f| !fm.contains(f))
                    .map(|f| {
                        let key = f.split_once('=').map_or(*f, |(k, _)| k);
                        let other = fm
                            .iter()
                            .find(|g| g.split_once('=').is_some_and(|(k, _)| k == key))
                            .map_or("(none)", |g| g.split_once('=').map_or(*g, |(_, v)| v));
                        format!("{f} vs {other}")
                    })
                    .collect();
                out.push(format!("{p}: differs: {}", fields.join(", ")));
            }
            (Some(_), None) => out.push(format!("{p}: only in {}", labels.first)),
            (None, Some(_)) => out.push(format!("{p}: only in {}", labels.second)),
            _ => {}
        }
    }
    if out.is_empty() {
        out.push("the same entries, but the tar bytes differ (entry order, header fields the listing does not show, or compression)".to_owned());
    }
    if out.len() > MAX_PATHS {
        let more = out.len() - MAX_PATHS;
        out.truncate(MAX_PATHS);
        out.push(format!("and {more} more paths"));
    }
    Ok(out)
}

/// The first entry that differs between two layer blobs.
fn first_difference(a: &Path, b: &Path) -> anyhow::Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_paths() {
        assert_eq!(
            listed_path("file  etc/passwd mode=0644 uid=0 gid=0 size=12 mtime=1"),
            "etc/passwd"
        );
        assert_eq!(
            listed_path("link  usr/bin/sh -> busybox mode=0777 uid=0 gid=0 mtime=1"),
            "usr/bin/sh"
        );
        assert_eq!(
            listed_path("dir   my dir/ mode=0755 uid=0 gid=0 mtime=1"),
            "my dir/"
        );
    }

    /// Two gzip-less layer tars that differ in one file's content and in
    /// which files they hold.
    #[test]
    fn every_differing_path() {
        let dir = tempfile::tempdir().unwrap();
        let layer = |name: &str, files: &[(&str, &[u8])]| {
            let p = dir.path().join(name);
            let mut b = tar::Builder::new(fs::File::create(&p).unwrap());
            for (path, data) in files {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(1);
                h.set_cksum();
                b.append_data(&mut h, path, *data).unwrap();
            }
            b.finish().unwrap();
            p
        };
        let a = layer("a", &[("app/x", b"one"), ("app/gone", b"")]);
        let b = layer("b", &[("app/x", b"two!"), ("app/new", b"")]);
        let labels = Labels {
            prefix: "t",
            same: "same",
            differ: "differ",
            first: "the image",
            second: "the rebuild",
            all_paths: true,
        };
        let d = path_differences(&a, &b, &labels).unwrap();
        assert_eq!(d.len(), 3, "{d:?}");
        assert_eq!(d[0], "app/gone: only in the image");
        assert_eq!(d[1], "app/new: only in the rebuild");
        assert!(
            d[2].starts_with("app/x: differs: size=3 vs 4, sha256="),
            "{}",
            d[2]
        );
    }
}
