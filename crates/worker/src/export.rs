//! Outputs of a build (`-o`): OCI layout or archive, `docker load` archive,
//! the final filesystem in a directory.

use std::fs;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use kiln_context::Tree;
use kiln_oci::{Compression, ExportImage, MediaTypes};
use kiln_snapshot::LayerId;

use crate::copy::{Copier, CopyOptions, SourceEntry};
use crate::error::Error;
use crate::image::{Committed, layer_blob};
use crate::state::State;

/// Where an image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The local image store, under these names (fully normalised).
    Image { names: Vec<String> },
    /// An OCI image layout: a tar archive at `dest`, or a directory.
    Oci {
        dest: PathBuf,
        tar: bool,
        names: Vec<String>,
        compression: Compression,
        /// `force-compression=true`: recompress layers kept as pulled,
        /// loaded or imported blobs of another compression.
        force_compression: bool,
    },
    /// A `docker load` archive.
    Docker {
        dest: PathBuf,
        names: Vec<String>,
        compression: Compression,
        force_compression: bool,
    },
    /// The final filesystem, copied into a directory.
    Local { dest: PathBuf },
    /// Pushed to a registry under each name (`type=registry`,
    /// `type=image,push=true`, `--push`).
    Registry {
        names: Vec<String>,
        compression: Compression,
        types: MediaTypes,
        /// Recompress layers that already have a blob of another compression.
        force_compression: bool,
        /// Also record the names in the local store (`type=image,push=true`).
        store: bool,
        /// `registry.insecure=true`: plain HTTP allowed for the names' hosts
        /// (the cli configures the client with it).
        insecure: bool,
    },
    /// The final filesystem as one tar archive (like `docker export`).
    Tar { dest: PathBuf },
}

/// The `dest` that means the process's standard output (`dest=-`): the
/// archive outputs stream there instead of into a file.
pub const STDOUT: &str = "-";

impl Output {
    /// Whether this output needs the image (config, diffIDs), not just the
    /// filesystem.
    pub fn needs_image(&self) -> bool {
        !matches!(self, Output::Local { .. } | Output::Tar { .. })
    }
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Io { what, source }
}

/// Writes `out` of the committed image `img`; returns the manifest it wrote,
/// if any.
pub fn write(
    state: &State,
    img: &Committed,
    out: &Output,
    clamp: Option<i64>,
) -> Result<Option<kiln_oci::Descriptor>, Error> {
    match out {
        Output::Image { names } => {
            crate::images::record(state, &img.id)?;
            for n in names {
                state.images.set(
                    n,
                    kiln_oci::ImageRef {
                        id: img.id,
                        manifest: None,
                    },
                )?;
            }
            Ok(None)
        }
        Output::Oci {
            dest,
            tar,
            names,
            compression,
            force_compression,
        } => {
            let c = (*compression, *force_compression);
            let image = manifest(state, img, c, MediaTypes::Oci, clamp, names)?;
            write_layout(state, dest, *tar, &image)?;
            Ok(Some(image.manifest))
        }
        Output::Docker {
            dest,
            names,
            compression,
            force_compression,
        } => {
            let c = (*compression, *force_compression);
            let image = manifest(state, img, c, MediaTypes::Docker, clamp, names)?;
            write_file_atomic(dest, |f| {
                kiln_oci::write_docker_archive(&state.content, f, std::slice::from_ref(&image))
                    .map(drop)
                    .map_err(Error::from)
            })?;
            Ok(Some(image.manifest))
        }
        Output::Local { dest } => local(state, &img.layers, dest).map(|()| None),
        Output::Tar { dest } => flat_tar(state, &img.layers, dest, clamp).map(|()| None),
        Output::Registry { .. } => Err(Error::Other(
            "a registry output is written by the build, which has the client".to_owned(),
        )),
    }
}

/// `type=oci`: `image` (a manifest or an index in the store) as an OCI
/// layout directory, or as its tar at `dest`.
pub(crate) fn write_layout(
    state: &State,
    dest: &Path,
    tar: bool,
    image: &ExportImage,
) -> Result<(), Error> {
    if tar {
        write_file_atomic(dest, |f| {
            kiln_oci::write_oci_archive(&state.content, f, std::slice::from_ref(image))
                .map(drop)
                .map_err(Error::from)
        })
    } else {
        fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
        kiln_oci::write_oci_layout(&state.content, dest, std::slice::from_ref(image))?;
        Ok(())
    }
}

/// The manifest of `img` with layer blobs of `compression`, in the store.
pub(crate) fn manifest(
    state: &State,
    img: &Committed,
    (compression, force): (Compression, bool),
    types: MediaTypes,
    clamp: Option<i64>,
    names: &[String],
) -> Result<ExportImage, Error> {
    let mut layers = Vec::with_capacity(img.layers.len());
    for l in &img.layers {
        layers.push(if force {
            forced_blob(state, l, clamp, compression)?
        } else {
            layer_blob(state, l, clamp, compression)?
        });
    }
    let written = kiln_oci::write_image(&state.content, &img.config, &layers, types)?;
    Ok(ExportImage {
        manifest: written.manifest,
        names: names.to_vec(),
    })
}

/// Writes a file through a temporary file beside it, renamed into place only
/// when complete; [`STDOUT`] streams to standard output instead.
fn write_file_atomic(
    dest: &Path,
    body: impl FnOnce(&mut dyn io::Write) -> Result<(), Error>,
) -> Result<(), Error> {
    if dest == Path::new(STDOUT) {
        let mut w = BufWriter::with_capacity(1 << 20, io::stdout().lock());
        body(&mut w)?;
        return w
            .flush()
            .map_err(io_err("writing", Path::new("standard output")));
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_err("creating a file in", &dir))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        body(&mut w)?;
        w.flush().map_err(io_err("writing", dest))?;
    }
    tmp.as_file().sync_all().map_err(io_err("syncing", dest))?;
    tmp.persist(dest)
        .map_err(|e| io_err("renaming into", dest)(e.error))?;
    Ok(())
}

/// `type=local`: the filesystem of `layers`, copied into `dest`.
pub fn local(state: &State, layers: &[LayerId], dest: &Path) -> Result<(), Error> {
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let scratch = state.scratch()?;
    let mnt = scratch.path().join("fs");
    fs::create_dir(&mnt).map_err(io_err("creating", &mnt))?;
    let dirs = state.layer_dirs(layers)?;
    let guard = kiln_snapshot::mount_layers(&dirs, None, &mnt)?;
    let tree = Tree::new(mnt.clone(), None);
    let sources = tree.expand(
        "/",
        &kiln_context::ExpandOptions {
            allow_wildcard: false,
            allow_empty_wildcard: false,
            follow_symlinks: false,
        },
    )?;
    let mut copier = Copier::new(
        dest,
        CopyOptions {
            chown: None,
            parents_owner: None,
            mode: None,
            xattrs: true,
        },
    );
    for s in &sources {
        let entries: Vec<SourceEntry> = tree
            .walk(s, &kiln_context::Filter::default())?
            .into_iter()
            .map(|e| SourceEntry {
                rel: e.path,
                path: e.host_path,
            })
            .collect();
        copier.copy_source(&entries, dest)?;
    }
    guard.unmount()?;
    Ok(())
}

/// `type=tar`: the filesystem of `layers`, flattened into one tar archive
/// (deterministic, as layer tars are; file times clamped to `clamp`).
pub fn flat_tar(
    state: &State,
    layers: &[LayerId],
    dest: &Path,
    clamp: Option<i64>,
) -> Result<(), Error> {
    let scratch = state.scratch()?;
    let mnt = scratch.path().join("fs");
    fs::create_dir(&mnt).map_err(io_err("creating", &mnt))?;
    let dirs = state.layer_dirs(layers)?;
    let guard = if dirs.is_empty() {
        None
    } else {
        Some(kiln_snapshot::mount_layers(&dirs, None, &mnt)?)
    };
    write_file_atomic(dest, |w| {
        kiln_snapshot::write_layer_tar(&mnt, w, &kiln_snapshot::TarOptions { mtime_clamp: clamp })?;
        Ok(())
    })?;
    if let Some(g) = guard {
        g.unmount()?;
    }
    Ok(())
}

/// The blob of `layer` with exactly `compression`: built layers are
/// compressed so anyway; an unpacked layer without a blob of that
/// compression gets one, made from the blob it has (decompressed, checked
/// against its diffID, compressed) and recorded for later exports.
fn forced_blob(
    state: &State,
    layer: &LayerId,
    clamp: Option<i64>,
    compression: Compression,
) -> Result<kiln_oci::Descriptor, Error> {
    let l = state.layers.get(layer)?;
    if !l.meta.labels.contains_key(crate::image::LABEL_DIFF_ID) {
        return layer_blob(state, layer, clamp, compression);
    }
    let d = crate::image::diff_id(state, layer, clamp)?;
    let blobs = crate::blobs::stored_blobs(state, &d)?;
    let (_, src) = blobs
        .iter()
        .find(|(c, _)| *c != compression)
        .or_else(|| blobs.first())
        .ok_or_else(|| Error::Other(format!("layer {d}: no blob to recompress")))?;
    let content = state.content.clone();
    let src = src.digest;
    Ok(state
        .layer_blobs
        .get_or_compress(&state.content, &d, compression, move || {
            let f = content.open_blob(&src).map_err(io::Error::other)?;
            let (_, tar) = kiln_oci::decompress(io::BufReader::new(f))?;
            Ok(tar)
        })?)
}
