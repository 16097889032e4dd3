//! The images of the local store as a Docker user sees them (`kiln images`,
//! `inspect`, `history`, `tag`, `rmi`).
//!
//! An image *is in the store* when it has a record, `<root>/image-records/<id
//! hex>` (written when a build stores its result, by `import` and by `load`),
//! or when a name points at it (`images/images.json`; names set before records
//! existed count too). An image with a record and no name is *dangling*
//! (`<none>:<none>`), as in Docker: retagging a name leaves the old image
//! dangling, and `kiln prune` removes it. Removing an image removes its record
//! and names; its blobs and layers stay until `prune` sweeps what nothing
//! reaches any more (see [`crate::gc`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use kiln_llb::Digest;
use kiln_oci::{ImageConfigFile, ImageRef};

use crate::error::Error;
use crate::layers::load_config;
pub use crate::state::RECORDS_DIR;
use crate::state::{State, write_atomic};

fn records_dir(state: &State) -> PathBuf {
    state.root.join(RECORDS_DIR)
}

/// Records image `id` as in the store.
pub fn record(state: &State, id: &Digest) -> Result<(), Error> {
    let dir = records_dir(state);
    fs::create_dir_all(&dir).map_err(|source| Error::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let path = dir.join(id.hex());
    if path.exists() {
        return Ok(());
    }
    write_atomic(&path, b"{}")
}

/// Records the images `ids` and runs `name` (which points names at them)
/// with the image index locked: `kiln rmi` removes a record under the same
/// lock once no name is left, so a name set here can never be left
/// pointing at an image whose record a concurrent `rmi` removed. `name`
/// returns its caller's error type (the worker's, the cli's).
pub fn naming<T, E>(
    state: &State,
    ids: &[Digest],
    name: impl FnOnce(&kiln_oci::Locked<'_>) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<Error> + From<kiln_oci::IndexError>,
{
    state.images.locked(|ix| {
        for id in ids {
            record(state, id)?;
        }
        name(ix)
    })?
}

/// Forgets the record of `id`; returns whether there was one.
pub fn remove_record(state: &State, id: &Digest) -> Result<bool, Error> {
    let path = records_dir(state).join(id.hex());
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Io {
            what: format!("removing {}", path.display()),
            source,
        }),
    }
}

/// Every recorded image ID.
pub fn records(state: &State) -> Result<BTreeSet<Digest>, Error> {
    let dir = records_dir(state);
    let mut out = BTreeSet::new();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(Error::Io {
                what: format!("listing {}", dir.display()),
                source,
            });
        }
    };
    for e in entries.flatten() {
        if let Some(d) = e
            .file_name()
            .to_str()
            .and_then(|n| format!("sha256:{n}").parse::<Digest>().ok())
        {
            out.insert(d);
        }
    }
    Ok(out)
}

/// One image of the store.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    pub id: Digest,
    /// Its names (normalised), sorted; empty when dangling.
    pub names: Vec<String>,
    /// Manifest digests known for it (loaded or pulled images).
    pub manifests: Vec<Digest>,
    pub config: ImageConfigFile,
    /// The unpacked size of its layers (see [`image_size`]).
    pub size: u64,
}

/// Every image in the store (recorded or named), newest first (then by ID).
/// Images whose configuration is missing from the content store are skipped.
pub fn list(state: &State) -> Result<Vec<ImageSummary>, Error> {
    let mut by_id: BTreeMap<Digest, (Vec<String>, Vec<Digest>)> = BTreeMap::new();
    for id in records(state)? {
        by_id.entry(id).or_default();
    }
    for (name, r) in state.images.list()? {
        let e = by_id.entry(r.id).or_default();
        e.0.push(name);
        if let Some(m) = r.manifest
            && !e.1.contains(&m)
        {
            e.1.push(m);
        }
    }
    let mut out = Vec::with_capacity(by_id.len());
    for (id, (names, manifests)) in by_id {
        let Ok(config) = load_config(state, &id) else {
            continue;
        };
        let size = image_size(state, &id, &config);
        out.push(ImageSummary {
            id,
            names,
            manifests,
            config,
            size,
        });
    }
    out.sort_by(|a, b| {
        b.config
            .created
            .cmp(&a.config.created)
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(out)
}

/// Size of an image as `docker images` shows it: the unpacked size of its
/// layers (see [`crate::blobs`]), the same before and after they are
/// unpacked.
pub fn image_size(state: &State, id: &Digest, config: &ImageConfigFile) -> u64 {
    layer_sizes(state, id, config).iter().sum()
}

/// The unpacked size of each layer of an image, bottom first.
pub fn layer_sizes(state: &State, id: &Digest, config: &ImageConfigFile) -> Vec<u64> {
    crate::blobs::layer_sizes(state, id, config)
}

/// What a user's reference names: an image name (already normalised by the
/// caller), a full image ID, or an unambiguous ID prefix (`sha256:` optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A name in the index.
    Name(String, ImageRef),
    /// An image by ID.
    Id(Digest),
}

/// Finds `text` (as typed) or `normalized` (the name it normalises to) in the
/// store. Names win over ID prefixes, as in Docker.
pub fn find(state: &State, text: &str, normalized: Option<&str>) -> Result<Option<Found>, Error> {
    if let Some(n) = normalized
        && let Some(r) = state.images.get(n)?
    {
        return Ok(Some(Found::Name(n.to_owned(), r)));
    }
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.is_empty()
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Ok(None);
    }
    let mut ids: BTreeSet<Digest> = records(state)?;
    ids.extend(state.images.list()?.into_iter().map(|(_, r)| r.id));
    let matches: Vec<Digest> = ids
        .into_iter()
        .filter(|d| d.hex().starts_with(hex))
        .collect();
    match matches.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(Found::Id(*one))),
        _ => Err(Error::AmbiguousId {
            text: text.to_owned(),
            count: matches.len(),
        }),
    }
}

/// What removing one reference did, in Docker's words.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removed {
    /// Names removed (`Untagged:`).
    pub untagged: Vec<String>,
    /// The image deleted (`Deleted:`), when nothing names it any more.
    pub deleted: Option<Digest>,
}

/// `kiln rmi`: removes a name (and the image when it was its last name), or
/// an image by ID. An image named more than once is refused by ID unless
/// `force` (then every name goes), as `docker rmi`.
pub fn remove(state: &State, found: &Found, force: bool) -> Result<Removed, Error> {
    // Under the index's lock, as every naming is (`naming`): the record goes
    // only when no name is left at that moment.
    state.images.locked(|ix| {
        let mut out = Removed::default();
        let id = match found {
            Found::Name(n, r) => {
                ix.remove(n)?;
                out.untagged.push(n.clone());
                if !ix.names_of(&r.id)?.is_empty() {
                    return Ok(out);
                }
                r.id
            }
            Found::Id(id) => {
                let names = ix.names_of(id)?;
                if names.len() > 1 && !force {
                    return Err(Error::MultipleNames {
                        short: id.hex()[..12].to_owned(),
                    });
                }
                for n in names {
                    ix.remove(&n)?;
                    out.untagged.push(n);
                }
                *id
            }
        };
        remove_record(state, &id)?;
        out.deleted = Some(id);
        Ok(out)
    })?
}

/// go-units `HumanSizeWithPrecision(size, 3)`: decimal units, 3 significant
/// digits (`1.23MB`, `5.6kB`, `0B`).
pub fn human_size(size: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = size as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", go_g3(v), UNITS[i])
}

/// Go's `%.3g` for 0 <= v < 1000.
fn go_g3(v: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else if s == "1000" {
        "1e+03".to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod size_tests {
    use super::human_size;

    #[test]
    fn docker_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(1_200_000), "1.2MB");
        assert_eq!(human_size(12_000_000), "12MB");
    }
}

#[cfg(test)]
mod race_tests {
    use std::sync::mpsc;

    use super::*;

    /// `kiln import NAME` beside `kiln rmi OTHER-NAME` of the same image
    /// (found by the store model, seed 1 of a CI run): the rmi must not
    /// remove the record of an image a name is being pointed at. Naming
    /// holds the index lock from the record to the name, and rmi's
    /// "last name gone, so the record goes" waits for it.
    #[test]
    fn rmi_waits_for_a_naming_of_the_same_image() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let id = Digest::of(b"image");
        let r = kiln_oci::ImageRef { id, manifest: None };
        naming::<_, Error>(&state, &[id], |ix| Ok(ix.set("l3", r)?)).unwrap();
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let st = &state;
        std::thread::scope(|s| {
            let namer = s.spawn(move || {
                naming::<_, Error>(st, &[id], |ix| {
                    entered_tx.send(()).unwrap();
                    // rmi runs now, if it can.
                    go_rx
                        .recv_timeout(std::time::Duration::from_millis(300))
                        .ok();
                    Ok(ix.set("l0", r)?)
                })
                .unwrap();
            });
            entered_rx.recv().unwrap();
            let rmi = s.spawn(move || remove(st, &Found::Name("l3".to_owned(), r), true).unwrap());
            let _ = go_tx.send(());
            namer.join().unwrap();
            let removed = rmi.join().unwrap();
            assert_eq!(removed.untagged, vec!["l3".to_owned()]);
            assert_eq!(removed.deleted, None, "l0 names the image by then");
        });
        assert_eq!(state.images.get("l0").unwrap(), Some(r));
        assert!(records(&state).unwrap().contains(&id), "the record stays");
    }
}
