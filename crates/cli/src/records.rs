//! Build records: what every `kiln build` leaves in `<root>/builds/`, for
//! `kiln builds ls|show|logs|rm|report` (like `docker buildx history`).
//!
//! A record is two files, written when the build ends (success, failure
//! or Ctrl-C; a build killed outright leaves none): `<id>.json`, the
//! [`Record`] (steps with their times relative to the start, outcome,
//! why they ran, layer sizes; transfers; outputs; warnings; the error),
//! and `<id>.log`, the plain transcript (what `--progress=plain` prints,
//! whatever the progress mode was). Each is written to a temporary file in
//! the directory and renamed into place.
//!
//! Records are bounded: after a build that leaves more than
//! [`DEFAULT_MAX_RECORDS`] (`KILN_BUILD_RECORDS=N` sets the number; `0`
//! keeps none and writes none), the oldest are removed until a fifth fewer
//! remain, and their files take at most [`MAX_BYTES`] ([`trim`]). They
//! refer to images by digest only and hold their own
//! sizes, so `kiln prune` and `kiln rmi` leave them readable; `kiln prune`
//! does not remove them (as `docker builder prune` leaves buildx's
//! history); `kiln builds rm` does.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::progress::{Gathered, StepSummary, TransferSummary};

/// Records kept by default (BuildKit keeps 50 history entries).
pub const DEFAULT_MAX_RECORDS: usize = 50;

/// Bytes the records' files may take in all.
pub const MAX_BYTES: u64 = 64 << 20;

/// The record format's version.
const VERSION: u32 = 1;

/// A build, as `kiln builds` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// 25 characters of `[a-z0-9]`, as buildx's refs.
    pub id: String,
    /// buildx's build name: the context directory's name, `(target)`.
    pub name: String,
    /// The arguments after `kiln`.
    pub command: Vec<String>,
    pub context: String,
    pub dockerfile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default)]
    pub platforms: Vec<String>,
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// RFC 3339.
    pub started_at: String,
    pub completed_at: String,
    pub duration_ms: u64,
    /// `completed`, `error` or `canceled`.
    pub status: String,
    pub exit_code: u8,
    /// The one-line reason it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The whole report of a failed step (output, Dockerfile lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_report: Option<String>,
    #[serde(default)]
    pub steps: Vec<StepSummary>,
    #[serde(default)]
    pub transfers: Vec<TransferSummary>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// `-o` destinations, as given (`type=oci,dest=x.tar`; `image NAME`).
    #[serde(default)]
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSummary>,
    /// The base images the build resolved: reference and digest.
    #[serde(default)]
    pub bases: Vec<(String, String)>,
}

/// The image a build made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageSummary {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    pub platform: String,
    /// Its layers, bottom first.
    pub layers: Vec<LayerSummary>,
    /// Sum of the layer sizes.
    pub size: u64,
}

/// One layer of the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerSummary {
    pub diff_id: String,
    /// Uncompressed size where known (as `kiln history` shows it).
    pub size: u64,
    /// The history entry that made it.
    pub created_by: String,
    /// The step of this build that made it (`None`: the base image, or a
    /// cached layer of no step shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
}

impl Record {
    /// Steps that ran or were cached (not the exporting tasks).
    pub fn graph_steps(&self) -> impl Iterator<Item = &StepSummary> {
        self.steps.iter().filter(|s| !s.task)
    }

    /// (steps that ended done or cached, all graph steps, cached steps).
    pub fn counts(&self) -> (usize, usize, usize) {
        use crate::progress::Outcome;
        let all = self.graph_steps().count();
        let complete = self
            .graph_steps()
            .filter(|s| matches!(s.outcome, Outcome::Done | Outcome::Cached))
            .count();
        let cached = self
            .graph_steps()
            .filter(|s| s.outcome == Outcome::Cached)
            .count();
        (complete, all, cached)
    }

    /// `Completed`, `Error`, `Canceled`.
    pub fn status_word(&self) -> &'static str {
        match self.status.as_str() {
            "completed" => "Completed",
            "canceled" => "Canceled",
            _ => "Error",
        }
    }
}

/// `<root>/builds`.
pub fn dir(root: &Path) -> PathBuf {
    root.join("builds")
}

/// How many records to keep (`KILN_BUILD_RECORDS`).
pub fn max_records() -> Result<usize, String> {
    match std::env::var("KILN_BUILD_RECORDS") {
        Err(_) => Ok(DEFAULT_MAX_RECORDS),
        Ok(v) if v.trim().is_empty() => Ok(DEFAULT_MAX_RECORDS),
        Ok(v) => v.trim().parse::<usize>().map_err(|_| {
            format!("KILN_BUILD_RECORDS={v:?} is not a number of build records to keep")
        }),
    }
}

/// A new record id: 25 characters of `[a-z0-9]` from the system's random
/// source.
pub fn new_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 25];
    let filled = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if filled.is_err() {
        // Not random, but unique enough for one machine: time and pid.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let seed = t ^ (u128::from(std::process::id()) << 64);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed >> ((i * 5) % 120)) as u8;
        }
    }
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

fn write_atomic(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    // No fsync: a record is history, and a crash that loses one loses
    // nothing a build needs (two fsyncs were 30 ms of a no-op build).
    tmp.write_all(body)?;
    tmp.persist(dir.join(name)).map_err(|e| e.error)?;
    Ok(())
}

/// Saves `record` and its transcript, then trims the records to the
/// limits. A record that cannot be written is a warning, never a failed
/// build: the caller prints it.
pub fn save(root: &Path, record: &Record, log: &str, keep: usize) -> Result<(), String> {
    if keep == 0 {
        return Ok(());
    }
    let d = dir(root);
    fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    let body = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
    write_atomic(&d, &format!("{}.log", record.id), log.as_bytes())
        .and_then(|()| write_atomic(&d, &format!("{}.json", record.id), &body))
        .map_err(|e| format!("writing the build record in {}: {e}", d.display()))?;
    trim(root, keep);
    Ok(())
}

/// When there are more than `keep` records, removes the oldest until
/// `keep - keep / 5` remain; then the oldest beyond [`MAX_BYTES`]; and
/// temporary files of writers that died an hour ago or more.
///
/// Which records are the oldest takes reading every record (their start
/// times): for 50 of them ~1 ms of a small no-op rebuild's ~9 ms
/// (`benches/results/2026-12-07-notes.md`, build records). Going a
/// fifth below the limit when over it means the records are read once
/// every `keep / 5` builds, not after every build; within the limits
/// nothing is read.
pub fn trim(root: &Path, keep: usize) {
    let d = dir(root);
    let Ok(rd) = fs::read_dir(&d) else { return };
    let mut heads: Vec<PathBuf> = Vec::new();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = e.metadata() else { continue };
        if name.starts_with(".tmp-") {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age.as_secs() >= 3600);
            if old {
                let _ = fs::remove_file(e.path());
            }
            continue;
        }
        let Some((id, ext)) = name.rsplit_once('.') else {
            continue;
        };
        *sizes.entry(id.to_owned()).or_default() += meta.len();
        if ext == "json" {
            heads.push(e.path());
        }
    }
    let over = heads.len() > keep;
    if !over && sizes.values().sum::<u64>() <= MAX_BYTES {
        return;
    }
    let mut records: Vec<(String, String, u64)> = heads
        .iter()
        .filter_map(|p| read_head(p).ok())
        .map(|r| {
            let size = sizes.get(&r.id).copied().unwrap_or(0);
            (r.started_at, r.id, size)
        })
        .collect();
    // Newest first.
    records.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    let keep = if over { keep - keep / 5 } else { keep };
    let mut total = 0u64;
    for (i, (_, id, size)) in records.iter().enumerate() {
        total += size;
        if i >= keep || (i > 0 && total > MAX_BYTES) {
            remove(root, id);
        }
    }
}

/// What [`trim`] needs of a record: a parse that skips the steps (a
/// record of a long build is tens of kilobytes; `trim` reads them all when
/// it removes some).
#[derive(Deserialize)]
struct RecordHead {
    id: String,
    started_at: String,
}

fn read_head(path: &Path) -> Result<RecordHead, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_record(path: &Path) -> Result<Record, String> {
    let bytes = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Every readable record, newest first.
pub fn list(root: &Path) -> Vec<Record> {
    let Ok(rd) = fs::read_dir(dir(root)) else {
        return Vec::new();
    };
    let mut out: Vec<Record> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.ends_with(".json") && !n.starts_with('.')
        })
        .filter_map(|e| read_record(&e.path()).ok())
        .collect();
    out.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.id.cmp(&a.id)));
    out
}

/// The transcript of record `id`.
pub fn log(root: &Path, id: &str) -> Result<String, String> {
    let p = dir(root).join(format!("{id}.log"));
    fs::read_to_string(&p).map_err(|e| format!("reading {}: {e}", p.display()))
}

/// Removes record `id` (both files); whether it was there.
pub fn remove(root: &Path, id: &str) -> bool {
    let d = dir(root);
    let a = fs::remove_file(d.join(format!("{id}.json"))).is_ok();
    let b = fs::remove_file(d.join(format!("{id}.log"))).is_ok();
    a || b
}

/// The record `reference` names: its id, a unique prefix of it, or `^N`
/// (the Nth before the newest; `^0` and no reference: the newest).
pub fn find(root: &Path, reference: Option<&str>) -> Result<Record, String> {
    let all = list(root);
    let reference = reference.unwrap_or("^0");
    if let Some(n) = reference.strip_prefix('^') {
        let n: usize = n
            .parse()
            .map_err(|_| format!("invalid build reference {reference:?}: expected ^N"))?;
        return all.into_iter().nth(n).ok_or_else(|| {
            if n == 0 {
                "no build records (every kiln build leaves one; see kiln builds ls)".to_owned()
            } else {
                format!("no build record {reference}: there are fewer builds")
            }
        });
    }
    let mut matches: Vec<Record> = all
        .into_iter()
        .filter(|r| r.id.starts_with(reference))
        .collect();
    if let Some(exact) = matches.iter().position(|r| r.id == reference) {
        return Ok(matches.swap_remove(exact));
    }
    match matches.len() {
        0 => Err(format!(
            "no build record {reference:?} (see kiln builds ls)"
        )),
        1 => Ok(matches.swap_remove(0)),
        n => Err(format!(
            "build reference {reference:?} is ambiguous: {n} records start with it"
        )),
    }
}

/// The build name buildx gives (`util/history/name.go`): the context
/// directory's name, or the Dockerfile's relative path when it is not the
/// default one, with the target in parentheses.
pub fn build_name(context: &str, dockerfile: Option<&str>, target: Option<&str>) -> String {
    let abs = fs::canonicalize(context).unwrap_or_else(|_| PathBuf::from(context));
    let base = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| context.to_owned());
    let mut name = match dockerfile {
        Some(f) if f != "-" && Path::new(f).file_name().is_some_and(|n| n != "Dockerfile") => {
            let f = Path::new(f);
            let parent = f
                .parent()
                .and_then(|p| {
                    fs::canonicalize(if p.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        p
                    })
                    .ok()
                })
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| base.clone());
            format!(
                "{parent}/{}",
                f.file_name().unwrap_or_default().to_string_lossy()
            )
        }
        _ => base,
    };
    if let Some(t) = target {
        name = if name.is_empty() {
            t.to_owned()
        } else {
            format!("{name} ({t})")
        };
    }
    name
}

/// What a build adds to its record once it is over.
#[derive(Debug, Default)]
pub struct Outcome {
    pub status: &'static str,
    pub exit_code: u8,
    pub error: Option<String>,
    pub error_report: Option<String>,
}

/// Builds the record of a build from what its progress gathered.
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    id: String,
    head: Head,
    gathered: Gathered,
    explanations: &[(String, String)],
    image: Option<ImageSummary>,
    outcome: Outcome,
    started: std::time::SystemTime,
    took: std::time::Duration,
) -> Record {
    let mut steps = gathered.steps;
    for s in &mut steps {
        // A step of several nodes (COPY --link) has a reason per node; the
        // merge's "its input changed: <the copy>" says nothing new.
        let mut reasons: Vec<String> = Vec::new();
        for (name, why) in explanations {
            if crate::progress::printable(&step_label(name)) != s.name {
                continue;
            }
            for part in why.split("; ") {
                let own = part
                    .strip_prefix("its input changed: ")
                    .is_some_and(|n| crate::progress::printable(&step_label(n)) == s.name);
                if !own && !reasons.iter().any(|r| r == part) {
                    reasons.push(part.to_owned());
                }
            }
        }
        if !reasons.is_empty() {
            s.reason = Some(reasons.join("; "));
        }
        if let Some(img) = &image {
            let size: u64 = img
                .layers
                .iter()
                .filter(|l| l.step == Some(s.id))
                .map(|l| l.size)
                .sum();
            if img.layers.iter().any(|l| l.step == Some(s.id)) {
                s.layer_size = Some(size);
            }
        }
    }
    let completed = started + took;
    Record {
        version: VERSION,
        id,
        name: head.name,
        command: head.command,
        context: head.context,
        dockerfile: head.dockerfile,
        target: head.target,
        platforms: head.platforms,
        build_args: head.build_args,
        started_at: crate::progress::timestamp_of(started),
        completed_at: crate::progress::timestamp_of(completed),
        duration_ms: took.as_millis() as u64,
        status: outcome.status.to_owned(),
        exit_code: outcome.exit_code,
        error: outcome.error,
        error_report: outcome.error_report,
        steps,
        transfers: gathered.transfers,
        warnings: head.warnings,
        outputs: head.outputs,
        image,
        bases: head.bases,
    }
}

/// `[x 2/3] LINK COPY …` → `[x 2/3] COPY …` (explanations name nodes).
fn step_label(name: &str) -> String {
    if let Some((pos, rest)) = name.split_once("] ")
        && let Some(r) = rest.strip_prefix("LINK ")
    {
        return format!("{pos}] {r}");
    }
    name.to_owned()
}

/// What the build knows of itself before it ends.
#[derive(Debug, Default, Clone)]
pub struct Head {
    pub name: String,
    pub command: Vec<String>,
    pub context: String,
    pub dockerfile: String,
    pub target: Option<String>,
    pub platforms: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub outputs: Vec<String>,
    pub warnings: Vec<String>,
    pub bases: Vec<(String, String)>,
}

/// Which step made each layer of the image: the graph is walked from the
/// target down its chain of root filesystems (an exec's root mount, a file
/// op's base, a merge's inputs, last first), each exec and file op making
/// the layer above what it stands on; the rest, at the bottom, is the base
/// image's. `step_of(node)` gives a node's step id. `None` when the walk
/// does not account for exactly `layers` layers.
pub fn layer_steps(
    dag: &kiln_solver::Dag<kiln_llb::Vertex>,
    target: usize,
    layers: usize,
    step_of: &dyn Fn(usize) -> Option<u32>,
) -> Option<Vec<Option<u32>>> {
    use kiln_llb::op::Op;
    // Top-down: the top layer first.
    let mut top_down: Vec<Option<u32>> = Vec::new();
    let mut todo = vec![target];
    let mut images = 0;
    while let Some(i) = todo.pop() {
        let node = dag.node(i)?;
        let input = |k: &kiln_llb::op::InputIndex| node.inputs.get(*k as usize).copied();
        match &node.payload.op {
            Op::Exec(e) => {
                top_down.push(step_of(i));
                todo.extend(
                    e.mounts
                        .iter()
                        .filter(|m| m.target == "/")
                        .filter_map(|m| m.input.as_ref().and_then(input)),
                );
            }
            Op::File(f) => {
                top_down.push(step_of(i));
                todo.extend(f.base.as_ref().and_then(input));
            }
            // Inputs bottom first: the last one's layers are on top.
            Op::Merge(m) => todo.extend(m.inputs.iter().filter_map(input)),
            Op::Source(_) => images += 1,
        }
        if top_down.len() > layers {
            return None;
        }
    }
    // One base image at most, at the bottom.
    if images > 1 {
        return None;
    }
    let base = layers - top_down.len();
    if images == 0 && base > 0 {
        return None;
    }
    let mut out = vec![None; base];
    out.extend(top_down.into_iter().rev());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_buildx_shaped() {
        let a = new_id();
        assert_eq!(a.len(), 25);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(a, new_id());
    }

    /// Record `i` of a test: ids and start times in the order of `i`.
    fn record(i: usize) -> Record {
        Record {
            version: VERSION,
            id: format!("id{i:02}aaaaaaaaaaaaaaaaaaaaa"),
            name: "ctx".into(),
            command: vec![],
            context: ".".into(),
            dockerfile: "Dockerfile".into(),
            target: None,
            platforms: vec![],
            build_args: BTreeMap::new(),
            started_at: format!("2026-01-01T00:{i:02}:00Z"),
            completed_at: format!("2026-01-01T00:{i:02}:00Z"),
            duration_ms: 1,
            status: "completed".into(),
            exit_code: 0,
            error: None,
            error_report: None,
            steps: vec![],
            transfers: vec![],
            warnings: vec![],
            outputs: vec![],
            image: None,
            bases: vec![],
        }
    }

    #[test]
    fn trimming_goes_a_fifth_below_the_limit() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let ids = |root: &Path| -> Vec<String> { list(root).into_iter().map(|r| r.id).collect() };
        for i in 0..10 {
            save(root.path(), &record(i), "", 10).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(ids(root.path()).len(), 10, "within the limit, none removed");
        save(root.path(), &record(10), "", 10).unwrap_or_else(|e| panic!("{e}"));
        let left = ids(root.path());
        assert_eq!(left.len(), 8, "over it: down to a fifth below");
        assert_eq!(left.first(), Some(&record(10).id), "the newest kept");
        assert_eq!(left.last(), Some(&record(3).id), "the oldest removed");
        save(root.path(), &record(11), "", 10).unwrap_or_else(|e| panic!("{e}"));
        save(root.path(), &record(12), "", 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(root.path()).len(), 10);
        save(root.path(), &record(13), "", 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(root.path()).len(), 8);
        // One record kept: the last build's.
        save(root.path(), &record(14), "", 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ids(root.path()), vec![record(14).id]);
    }

    #[test]
    fn records_are_found_and_trimmed() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut ids = Vec::new();
        for i in 0..5 {
            let r = Record {
                id: format!("id{i}aaaaaaaaaaaaaaaaaaaaaa"),
                ..record(i)
            };
            ids.push(r.id.clone());
            save(root.path(), &r, "#1 x\n", 3).unwrap_or_else(|e| panic!("{e}"));
        }
        let left: Vec<String> = list(root.path()).into_iter().map(|r| r.id).collect();
        assert_eq!(left, vec![ids[4].clone(), ids[3].clone(), ids[2].clone()]);
        assert_eq!(find(root.path(), None).map(|r| r.id), Ok(ids[4].clone()));
        assert_eq!(
            find(root.path(), Some("^2")).map(|r| r.id),
            Ok(ids[2].clone())
        );
        assert_eq!(
            find(root.path(), Some("id3")).map(|r| r.id),
            Ok(ids[3].clone())
        );
        assert!(find(root.path(), Some("id")).is_err());
        assert!(find(root.path(), Some("^3")).is_err());
        assert_eq!(log(root.path(), &ids[4]).as_deref(), Ok("#1 x\n"));
        assert!(remove(root.path(), &ids[4]));
        assert!(!remove(root.path(), &ids[4]));
    }
}
