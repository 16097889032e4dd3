//! `kiln check`: verifies a state directory and repairs what can be repaired.
//!
//! Every write to the state directory is atomic and every store removes the
//! leftovers of dead writers when it is opened (ingest files, layer drafts,
//! scratch directories), so a crash at any point leaves a consistent store.
//! This module is how that claim is checked, after crashes in tests and on a
//! user's machine: it re-hashes every blob, reads every snapshot's metadata,
//! follows every image name, image record, layer-blob record and cache entry
//! to what it refers to, and looks for mounts and processes a kiln that died
//! left behind. It also checks the store's promise that whatever a name
//! reaches can be exported, saved and pushed: every layer of every image has
//! a blob in the store or a built snapshot a blob can be made from (see
//! [`crate::blobs`]), and a name's manifest has all its blobs. With
//! `repair`, what is broken is removed (a corrupt blob and the records that
//! name it, a snapshot without its metadata, a record or cache entry
//! pointing at nothing) so that the next build recomputes it; a layer whose
//! blob is gone is made again from its snapshot when kiln's tar of it is the
//! layer; a name whose manifest lost a blob forgets the manifest (a push then
//! makes one). Named images are never removed: what cannot be repaired is
//! reported with the `kiln rmi` (or `kiln pull`) that would.
//!
//! A check holds the store lock shared (builds may run meanwhile: what their
//! scratch directories hold is theirs); a repair holds it exclusively.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_llb::Digest;
use kiln_snapshot::LayerId;

use crate::error::Error;
use crate::state::State;
use crate::values::CacheValues;

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong, naming the object or path.
    pub what: String,
    /// What the repair did, when it did something.
    pub repaired: Option<String>,
    /// Why a repair could not fix it, and what would (the `kiln rmi` or
    /// `kiln pull` to run), when it tried.
    pub unrepaired: Option<String>,
}

/// What a check looked at and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub blobs: usize,
    pub layers: usize,
    pub images: usize,
    pub layer_records: usize,
    pub cache_entries: usize,
    pub problems: Vec<Problem>,
}

impl Report {
    /// Problems that remain (not repaired).
    pub fn unresolved(&self) -> usize {
        self.problems
            .iter()
            .filter(|p| p.repaired.is_none())
            .count()
    }
}

struct Checker<'a> {
    state: &'a State,
    values: &'a dyn CacheValues,
    repair: bool,
    report: Report,
}

impl Checker<'_> {
    /// Records a problem; `fix` runs only when repairing and says what it did.
    fn problem(&mut self, what: String, fix: impl FnOnce() -> Result<String, Error>) {
        let repaired = if self.repair {
            match fix() {
                Ok(done) => Some(done),
                Err(e) => {
                    self.report.problems.push(Problem {
                        what,
                        repaired: None,
                        unrepaired: Some(e.to_string()),
                    });
                    return;
                }
            }
        } else {
            None
        };
        self.report.problems.push(Problem {
            what,
            repaired,
            unrepaired: None,
        });
    }

    /// A problem no repair touches.
    fn report_only(&mut self, what: String) {
        self.report.problems.push(Problem {
            what,
            repaired: None,
            unrepaired: None,
        });
    }
}

/// Checks the state directory; with `repair`, repairs it (the caller holds
/// the store lock exclusively then). `values` reads the cache entries'
/// values (the worker's).
pub fn check(state: &State, values: &dyn CacheValues, repair: bool) -> Result<Report, Error> {
    let mut c = Checker {
        state,
        values,
        repair,
        report: Report::default(),
    };
    let bad_blobs = blobs(&mut c)?;
    let live_layers = layers(&mut c)?;
    images(&mut c, &bad_blobs)?;
    layer_records(&mut c, &bad_blobs)?;
    cache_entries(&mut c, &live_layers)?;
    leftovers(&mut c);
    Ok(c.report)
}

/// Re-hashes every blob. Returns the corrupt ones (removed when repairing,
/// with the records that name them).
fn blobs(c: &mut Checker<'_>) -> Result<BTreeSet<Digest>, Error> {
    let digests = c.state.content.digests()?;
    c.report.blobs = digests.len();
    let mut bad = BTreeSet::new();
    let records = crate::blobs::blob_records(c.state)?;
    for d in digests {
        match c.state.content.verify(&d) {
            Ok(_) => {}
            Err(kiln_oci::ContentError::Corrupt { actual, path, .. }) => {
                bad.insert(d);
                let state = c.state;
                let records = &records;
                c.problem(
                    format!("blob {d} is corrupt: {} hashes to {actual}", path.display()),
                    || {
                        crate::blobs::remove_blob(state, &d, records)?;
                        Ok("removed, with the layer records that named it".to_owned())
                    },
                );
            }
            Err(kiln_oci::ContentError::NotFound { .. }) => {} // removed meanwhile
            Err(e) => return Err(e.into()),
        }
    }
    Ok(bad)
}

/// Reads every snapshot's metadata and looks for its files. Returns the
/// layers that are fine.
fn layers(c: &mut Checker<'_>) -> Result<BTreeSet<String>, Error> {
    let dir = c.state.layers.dir().to_path_buf();
    let mut live = BTreeSet::new();
    let entries = fs::read_dir(&dir).map_err(|source| Error::Io {
        what: format!("listing {}", dir.display()),
        source,
    })?;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(id) = name.to_str().and_then(|n| LayerId::parse(n).ok()) else {
            continue; // tmp/ and the like
        };
        c.report.layers += 1;
        let path = e.path();
        let broken = match c.state.layers.get(&id) {
            Ok(layer) if layer.diff.is_dir() => None,
            Ok(layer) => Some(format!(
                "its diff directory {} is missing",
                layer.diff.display()
            )),
            Err(kiln_snapshot::StoreError::NotFound(_)) => {
                Some(format!("{} has no meta.json", path.display()))
            }
            Err(e) => Some(e.to_string()),
        };
        match broken {
            None => {
                live.insert(id.as_str().to_owned());
            }
            Some(why) => {
                let layers = c.state.layers.clone();
                c.problem(format!("snapshot {id}: {why}"), || {
                    if layers.exists(&id) {
                        layers.remove(&id)?;
                    } else {
                        fs::remove_dir_all(&path).map_err(|source| Error::Io {
                            what: format!("removing {}", path.display()),
                            source,
                        })?;
                    }
                    Ok("removed (what used it is rebuilt or unpacked again)".to_owned())
                });
            }
        }
    }
    Ok(live)
}

/// Whether the store holds a sound blob of layer `diff_id`.
fn has_blob(state: &State, diff_id: &Digest, bad: &BTreeSet<Digest>) -> bool {
    crate::blobs::stored_blobs(state, diff_id)
        .is_ok_and(|l| l.iter().any(|(_, d)| !bad.contains(&d.digest)))
}

/// A name as a user writes it (`busybox:latest`, `host:5000/repo:tag`).
fn familiar(name: &str) -> String {
    kiln_oci::export::familiar_tag(name)
        .map_or_else(|| name.to_owned(), |(r, t)| format!("{r}:{t}"))
}

/// How an image is named in a problem, and the commands that would remove
/// it or get it again.
fn image_label(id: &Digest, names: &[String]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| familiar(n)).collect();
    match names.as_slice() {
        [] => (
            format!("dangling image {id}"),
            format!("remove it: kiln rmi {id}"),
        ),
        [first, ..] => (
            format!("image {}", names.join(", ")),
            format!(
                "remove it: kiln rmi {}; or, if it came from a registry, pull it again: kiln pull {first}",
                names.join(" ")
            ),
        ),
    }
}

/// Image names, image records and the layers of their images.
fn images(c: &mut Checker<'_>, bad: &BTreeSet<Digest>) -> Result<(), Error> {
    let state = c.state;
    let have = |d: &Digest| !bad.contains(d) && state.content.has(d).unwrap_or(false);
    let names = state.images.list()?;
    c.report.images = names.len();
    // Every image in the store, with its names.
    let mut ids: std::collections::BTreeMap<Digest, Vec<String>> = Default::default();
    for id in crate::images::records(state)? {
        ids.entry(id).or_default();
    }
    for (name, r) in &names {
        let e = ids.entry(r.id).or_default();
        if !e.contains(name) {
            e.push(name.clone());
        }
        if !have(&r.id) {
            continue; // reported below, with the image
        }
        let Some(m) = r.manifest else { continue };
        // The manifest a name records is what a push sends: it and every
        // blob it lists must be here.
        let why = if !have(&m) {
            Some(format!("its manifest {m} is missing"))
        } else {
            match state
                .content
                .read(&m)
                .ok()
                .and_then(|b| serde_json::from_slice::<kiln_oci::Manifest>(&b).ok())
            {
                None => Some(format!("its manifest {m} does not parse")),
                Some(man) if man.config.digest != r.id => Some(format!(
                    "its manifest {m} is of another image ({})",
                    man.config.digest
                )),
                Some(man) => man
                    .layers
                    .iter()
                    .find(|l| !have(&l.digest))
                    .map(|l| format!("blob {} of its manifest {m} is missing", l.digest)),
            }
        };
        if let Some(why) = why {
            let name = name.clone();
            let shown = familiar(&name);
            c.problem(format!("image {shown}: {why}"), || {
                state.images.forget_manifest(&name, &m)?;
                Ok(format!(
                    "the name forgets the manifest; a push makes a new one (kiln pull {shown} gets the registry's again)"
                ))
            });
        }
    }
    for (id, names) in ids {
        let (label, rmi) = image_label(&id, &names);
        if !have(&id) {
            if names.is_empty() {
                c.problem(format!("image record {id}: its config is missing"), || {
                    crate::images::remove_record(state, &id)?;
                    Ok("record removed".to_owned())
                });
            } else {
                c.report_only(format!("{label}: its config {id} is missing; {rmi}"));
            }
            continue;
        }
        let config = match crate::layers::load_config(state, &id) {
            Ok(config) => config,
            Err(e) => {
                c.report_only(format!("{label}: {e}; {rmi}"));
                continue;
            }
        };
        for (i, d) in config.rootfs.diff_ids.iter().enumerate() {
            let holders = crate::blobs::snapshots(state, Some((&id, i)), d);
            if has_blob(state, d, bad) || holders.can_make_blob() {
                continue;
            }
            let what = format!(
                "{label}: layer {d} has no blob in the store and no built snapshot to make one from, so it cannot be saved or pushed"
            );
            let dangling = names.is_empty();
            let rmi = rmi.clone();
            c.problem(what, || {
                // kiln's tar of the unpacked layer may be the layer (a layer
                // kiln wrote itself): then the blob is made again.
                let made =
                    crate::blobs::blob(state, d, kiln_oci::Compression::gzip(), None, &holders);
                match made {
                    Ok(_) => Ok("made again from its unpacked snapshot".to_owned()),
                    Err(_) if dangling => {
                        crate::images::remove_record(state, &id)?;
                        Ok("the dangling image is removed".to_owned())
                    }
                    Err(_) => Err(Error::Unrepairable { rmi }),
                }
            });
        }
    }
    // image ID → snapshots it was built from: a hint for FROM; stale when a
    // snapshot is gone.
    let dir = state.root.join("image-layers");
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = e.path();
        // A temporary file of an atomic write: a live writer's, or debris of
        // one that was killed (which must not pass for a record).
        if let Some(pid) = kiln_oci::temp_owner(&e.file_name().to_string_lossy()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                c.problem(
                    format!("{}: left by an interrupted write", path.display()),
                    || remove_file(&path),
                );
            }
            continue;
        }
        let stale = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["layers"].as_array().map(|ls| {
                    ls.iter().any(|l| {
                        l.as_str()
                            .and_then(|l| LayerId::parse(l).ok())
                            .is_none_or(|l| !state.layers.exists(&l))
                    })
                })
            })
            .unwrap_or(true);
        if stale {
            c.problem(
                format!("{}: names snapshots that are gone", path.display()),
                || remove_file(&path),
            );
        }
    }
    Ok(())
}

/// diffID → blob records whose blob is gone.
fn layer_records(c: &mut Checker<'_>, bad: &BTreeSet<Digest>) -> Result<(), Error> {
    let state = c.state;
    let ids = state.layer_blobs.diff_ids()?;
    c.report.layer_records = ids.len();
    for d in ids {
        let list = match state.layer_blobs.list(&d) {
            Ok(l) => l,
            Err(e) => {
                let path = state.layer_blobs.path(&d);
                c.problem(format!("layer record {d}: {e}"), || remove_file(&path));
                continue;
            }
        };
        for (compression, desc) in list {
            // A corrupt blob is reported (and removed with its records) once.
            if bad.contains(&desc.digest) || state.content.has(&desc.digest).unwrap_or(false) {
                continue;
            }
            let blobs = state.layer_blobs.clone();
            c.problem(
                format!(
                    "layer record {d}: its {} blob {} is missing",
                    compression.name(),
                    desc.digest
                ),
                || {
                    blobs.remove_blob(&d, &desc.digest)?;
                    Ok("record removed".to_owned())
                },
            );
        }
    }
    Ok(())
}

/// Cache entries: each decodes, and names snapshots that exist.
fn cache_entries(c: &mut Checker<'_>, live_layers: &BTreeSet<String>) -> Result<(), Error> {
    let state = c.state;
    let keys = state.cache.keys().map_err(Error::Cache)?;
    c.report.cache_entries = keys.len();
    for key in keys {
        let path = state.cache.path_of(&key);
        let Ok(bytes) = fs::read(&path) else { continue };
        let why = if kiln_solver::parse_link(&bytes).is_some() {
            None
        } else {
            match c.values.layers(&bytes) {
                Ok(layers) => layers
                    .iter()
                    .find(|l| !l.starts_with("sha256:") && !live_layers.contains(l.as_str()))
                    .map(|l| format!("its layer {l} is gone")),
                Err(e) => Some(format!("does not decode: {e}")),
            }
        };
        if let Some(why) = why {
            let cache = state.cache.clone();
            c.problem(format!("cache entry {key}: {why}"), || {
                cache.remove(&key).map_err(Error::Cache)?;
                Ok("removed (the step runs again)".to_owned())
            });
        }
    }
    Ok(())
}

/// The pid of the kiln process a path under `<root>/tmp/k<pid>.…` belongs
/// to, and whether it is alive.
fn owner_alive(root: &Path, path: &Path) -> Option<bool> {
    let rel = path.strip_prefix(root.join("tmp")).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let pid = crate::state::scratch_owner(first)?;
    Some(Path::new(&format!("/proc/{pid}")).exists())
}

/// Mounts and processes left under the state directory by a kiln that died.
/// Mounts of running builds live in their own mount namespaces and are not
/// seen here; a RUN process of a running build is recognised by its scratch
/// directory's owner being alive.
fn leftovers(c: &mut Checker<'_>) {
    let root = fs::canonicalize(&c.state.root).unwrap_or_else(|_| c.state.root.clone());
    let left = |p: &Path| p.starts_with(&root) && owner_alive(&root, p) != Some(true);
    // Deepest first, so that nested mounts come off before their parents.
    let mut mounts: Vec<PathBuf> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| left(p))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in mounts {
        c.problem(format!("mount left at {}", m.display()), || {
            nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).map_err(|source| {
                Error::Unmount {
                    path: m.clone(),
                    source,
                }
            })?;
            Ok("unmounted".to_owned())
        });
    }
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(proc_root) = fs::read_link(e.path().join("root")) else {
            continue;
        };
        if !left(&proc_root) {
            continue;
        }
        let comm = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        c.problem(
            format!(
                "process {pid} ({}) still runs in {}",
                comm.trim(),
                proc_root.display()
            ),
            || {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .map_err(|source| Error::Kill { pid, source })?;
                Ok("killed".to_owned())
            },
        );
    }
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn remove_file(path: &Path) -> Result<String, Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok("removed".to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok("already gone".to_owned()),
        Err(source) => Err(Error::Io {
            what: format!("removing {}", path.display()),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoValues;
    impl CacheValues for NoValues {
        fn layers(&self, _: &[u8]) -> Result<Vec<String>, String> {
            Ok(Vec::new())
        }
    }

    /// A killed writer's temporary file in `image-layers/` (here naming a
    /// snapshot that does not exist) is debris, reported and removed by a
    /// repair; a live writer's is left alone. Before, the check read both as
    /// records, and a later prune that removed the snapshots made a clean
    /// store fail its check (the store model, seed 1).
    #[test]
    fn temporary_files_of_image_layer_records() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = State::open(tmp.path()).expect("open");
        let dir = tmp.path().join("image-layers");
        let body = br#"{"layers":["zzzzzzzzzzzz"]}"#;
        // No process has pid 2^22 + 1 (above the kernel's pid_max limit).
        let dead = dir.join(".tmp-4194305-0-ab12");
        let live = dir.join(format!(".tmp-{}-0-cd34", std::process::id()));
        fs::write(&dead, body).expect("write");
        fs::write(&live, body).expect("write");

        let report = check(&state, &NoValues, false).expect("check");
        let found: Vec<&str> = report.problems.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains(".tmp-4194305-0-ab12: left by an interrupted write"));

        let report = check(&state, &NoValues, true).expect("repair");
        assert_eq!(report.unresolved(), 0);
        assert!(!dead.exists());
        assert!(live.exists());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b\\011c"), "/a b\tc");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/trailing\\04"), "/trailing\\04");
    }
}
