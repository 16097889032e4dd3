//! Outputs of a build (`-o`): OCI layout or archive, `docker load` archive,
//! the final filesystem in a directory.

use std::fs;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use kiln_context::Tree;
use kiln_oci::{Compression, ExportImage, MediaTypes};
use kiln_registry::{Direction, ProgressSink, Transfer, TransferState};
use kiln_snapshot::LayerId;

use crate::copy::{Copier, CopyOptions, SourceEntry};
use crate::error::{Error, InternalError, OutputError};
use crate::image::Committed;
use crate::state::State;
use kiln_store::layers::layer_blob;

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
    write_with_progress(state, img, out, clamp, false, None)
}

/// [`write`], reporting the bytes of the archives it writes (OCI and docker
/// archives, `type=tar`) to `progress` as [`Direction::Write`] transfers
/// named by the image's manifest digest (for `type=tar`, by the digest of
/// the destination's name). Their total is unknown (0): an archive is its
/// blobs plus tar headers. `rewritten`: see [`manifest`].
pub fn write_with_progress(
    state: &State,
    img: &Committed,
    out: &Output,
    clamp: Option<i64>,
    rewritten: bool,
    progress: Option<&ProgressSink>,
) -> Result<Option<kiln_oci::Descriptor>, Error> {
    let sink = |digest: kiln_llb::Digest| progress.map(|p| (p.clone(), digest));
    match out {
        Output::Image { names } => {
            crate::images::naming(state, &[img.id], |ix| {
                for n in names {
                    ix.set(
                        n,
                        kiln_oci::ImageRef {
                            id: img.id,
                            manifest: None,
                        },
                    )?;
                }
                Ok(())
            })?;
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
            let image = manifest(state, img, c, MediaTypes::Oci, clamp, rewritten, names)?;
            if *tar {
                write_file_atomic(dest, sink(image.manifest.digest), |f| {
                    kiln_oci::write_oci_archive(&state.content, f, std::slice::from_ref(&image))
                        .map(drop)
                        .map_err(Error::from)
                })?;
            } else {
                write_layout(state, dest, false, &image)?;
            }
            Ok(Some(image.manifest))
        }
        Output::Docker {
            dest,
            names,
            compression,
            force_compression,
        } => {
            let c = (*compression, *force_compression);
            let image = manifest(state, img, c, MediaTypes::Docker, clamp, rewritten, names)?;
            write_file_atomic(dest, sink(image.manifest.digest), |f| {
                kiln_oci::write_docker_archive(&state.content, f, std::slice::from_ref(&image))
                    .map(drop)
                    .map_err(Error::from)
            })?;
            Ok(Some(image.manifest))
        }
        Output::Local { dest } => local(state, &img.layers, dest).map(|()| None),
        Output::Tar { dest } => {
            let named = sink(name_digest(dest));
            flat_tar_with(state, &img.layers, dest, clamp, named).map(|()| None)
        }
        Output::Registry { .. } => Err(InternalError::RegistryOutput.into()),
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
        write_file_atomic(dest, None, |f| {
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

/// BuildKit's annotation of a layer descriptor whose file times were
/// clamped to `SOURCE_DATE_EPOCH` (`rewrite-timestamp=true`): the epoch.
pub const REWRITTEN_TIMESTAMP: &str = "buildkit/rewritten-timestamp";

/// The manifest of `img` with layer blobs of `compression`, in the store.
/// `rewritten` (`rewrite-timestamp=true`): the layers the build made carry
/// [`REWRITTEN_TIMESTAMP`] when `clamp` is set, as BuildKit's exporter
/// marks the layers it rewrote (not those of the base image).
pub(crate) fn manifest(
    state: &State,
    img: &Committed,
    (compression, force): (Compression, bool),
    types: MediaTypes,
    clamp: Option<i64>,
    rewritten: bool,
    names: &[String],
) -> Result<ExportImage, Error> {
    let mut layers = Vec::with_capacity(img.layers.len());
    for l in &img.layers {
        let mut desc = if force {
            forced_blob(state, l, clamp, compression)?
        } else {
            layer_blob(state, l, clamp, compression)?
        };
        if rewritten
            && let Some(epoch) = clamp
            && kiln_store::layers::is_built(state, l)?
        {
            desc.annotations
                .insert(REWRITTEN_TIMESTAMP.to_owned(), epoch.to_string());
        }
        layers.push(desc);
    }
    let written = kiln_oci::write_image(&state.content, &img.config, &layers, types)
        .map_err(kiln_oci::Error::from)?;
    Ok(ExportImage {
        manifest: written.manifest,
        names: names.to_vec(),
    })
}

/// The digest of a destination's name: what names the progress of an
/// output that has no manifest (`type=tar`).
fn name_digest(dest: &Path) -> kiln_llb::Digest {
    use sha2::Digest as _;
    kiln_llb::Digest::from_bytes(sha2::Sha256::digest(dest.as_os_str().as_encoded_bytes()).into())
}

/// A writer that reports the bytes written through it.
struct Counting<W> {
    inner: W,
    sink: ProgressSink,
    report: Transfer,
}

impl<W: io::Write> io::Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.report.current += n as u64;
        self.report.state = TransferState::Moving;
        (self.sink)(&self.report);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `w`, counted into `progress` (a sink and the digest that names the
/// transfer) when there is one: `Started` now, `Moving` as bytes go;
/// [`finish`] says `Finished`.
fn counted<'w>(
    w: &'w mut dyn io::Write,
    progress: &Option<(ProgressSink, kiln_llb::Digest)>,
) -> Box<dyn io::Write + 'w> {
    match progress {
        None => Box::new(w),
        Some((sink, digest)) => {
            let report = Transfer {
                digest: *digest,
                direction: Direction::Write,
                total: 0,
                current: 0,
                state: TransferState::Started,
            };
            sink(&report);
            Box::new(Counting {
                inner: w,
                sink: sink.clone(),
                report,
            })
        }
    }
}

/// Reports the end of a counted write of `bytes` bytes.
fn finish(progress: &Option<(ProgressSink, kiln_llb::Digest)>, bytes: u64) {
    if let Some((sink, digest)) = progress {
        sink(&Transfer {
            digest: *digest,
            direction: Direction::Write,
            total: bytes,
            current: bytes,
            state: TransferState::Finished,
        });
    }
}

/// Writes a file through a temporary file beside it, renamed into place only
/// when complete; [`STDOUT`] streams to standard output instead. With
/// `progress`, the bytes written are reported.
fn write_file_atomic(
    dest: &Path,
    progress: Option<(ProgressSink, kiln_llb::Digest)>,
    body: impl FnOnce(&mut dyn io::Write) -> Result<(), Error>,
) -> Result<(), Error> {
    let counting = |w: &mut dyn io::Write| -> Result<u64, Error> {
        let mut bytes = 0u64;
        {
            let mut c = counted(w, &progress);
            let mut tally = Tally {
                inner: &mut *c,
                bytes: &mut bytes,
            };
            body(&mut tally)?;
        }
        Ok(bytes)
    };
    if dest == Path::new(STDOUT) {
        let mut w = BufWriter::with_capacity(1 << 20, io::stdout().lock());
        let bytes = counting(&mut w)?;
        w.flush()
            .map_err(io_err("writing", Path::new("standard output")))?;
        finish(&progress, bytes);
        return Ok(());
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(io_err("creating a file in", &dir))?;
    let bytes = {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let bytes = counting(&mut w)?;
        w.flush().map_err(io_err("writing", dest))?;
        bytes
    };
    tmp.as_file().sync_all().map_err(io_err("syncing", dest))?;
    tmp.persist(dest)
        .map_err(|e| io_err("renaming into", dest)(e.error))?;
    finish(&progress, bytes);
    Ok(())
}

/// Counts the bytes written through it (the total a finished transfer
/// reports).
struct Tally<'a> {
    inner: &'a mut dyn io::Write,
    bytes: &'a mut u64,
}

impl io::Write for Tally<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        *self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `type=local`: the filesystem of `layers`, copied into `dest`.
pub fn local(state: &State, layers: &[LayerId], dest: &Path) -> Result<(), Error> {
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let scratch = state.scratch()?;
    let mnt = scratch.path().join("fs");
    fs::create_dir(&mnt).map_err(io_err("creating", &mnt))?;
    let dirs = state.layer_dirs(layers)?;
    let guard = state.snapshotter.mount(&dirs, None, &mnt)?;
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
            sockets_as_files: false,
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
    flat_tar_with(state, layers, dest, clamp, None)
}

/// [`flat_tar`], reporting the bytes written to `progress` (named by the
/// digest of the destination's name).
pub fn flat_tar_with_progress(
    state: &State,
    layers: &[LayerId],
    dest: &Path,
    clamp: Option<i64>,
    progress: Option<&ProgressSink>,
) -> Result<(), Error> {
    let named = progress.map(|p| (p.clone(), name_digest(dest)));
    flat_tar_with(state, layers, dest, clamp, named)
}

/// [`flat_tar`] of the image with the files of `extra` on top (the
/// attestation statements BuildKit's tar exporter adds).
pub fn flat_tar_with_extra(
    state: &State,
    layers: &[LayerId],
    extra: &Path,
    dest: &Path,
    clamp: Option<i64>,
) -> Result<(), Error> {
    flat_tar_inner(state, layers, Some(extra), dest, clamp, None)
}

fn flat_tar_with(
    state: &State,
    layers: &[LayerId],
    dest: &Path,
    clamp: Option<i64>,
    progress: Option<(ProgressSink, kiln_llb::Digest)>,
) -> Result<(), Error> {
    flat_tar_inner(state, layers, None, dest, clamp, progress)
}

fn flat_tar_inner(
    state: &State,
    layers: &[LayerId],
    extra: Option<&Path>,
    dest: &Path,
    clamp: Option<i64>,
    progress: Option<(ProgressSink, kiln_llb::Digest)>,
) -> Result<(), Error> {
    let scratch = state.scratch()?;
    let mnt = scratch.path().join("fs");
    fs::create_dir(&mnt).map_err(io_err("creating", &mnt))?;
    let mut dirs = state.layer_dirs(layers)?;
    dirs.extend(extra.map(Path::to_path_buf));
    let guard = if dirs.is_empty() {
        None
    } else {
        Some(state.snapshotter.mount(&dirs, None, &mnt)?)
    };
    write_file_atomic(dest, progress, |w| {
        kiln_snapshot::write_layer_tar(&mnt, w, &kiln_snapshot::TarOptions { mtime_clamp: clamp })?;
        Ok(())
    })?;
    if let Some(g) = guard {
        g.unmount()?;
    }
    Ok(())
}

/// `type=tar` of a multi-platform build, as BuildKit writes it: the files
/// of each platform's image under its directory (`linux_amd64/…`), with
/// the directory `extra` of that platform (its statements) on top.
pub fn multi_flat_tar(
    state: &State,
    trees: &[(String, Vec<LayerId>, Option<std::path::PathBuf>)],
    dest: &Path,
    clamp: Option<i64>,
) -> Result<(), Error> {
    let scratch = state.scratch()?;
    let root = scratch.path().join("fs");
    fs::create_dir(&root).map_err(io_err("creating", &root))?;
    let mut guards = Vec::new();
    for (name, layers, extra) in trees {
        let mnt = root.join(name);
        fs::create_dir(&mnt).map_err(io_err("creating", &mnt))?;
        let mut dirs = state.layer_dirs(layers)?;
        dirs.extend(extra.clone());
        if !dirs.is_empty() {
            guards.push(state.snapshotter.mount(&dirs, None, &mnt)?);
        }
    }
    write_file_atomic(dest, None, |w| {
        kiln_snapshot::write_layer_tar(
            &root,
            w,
            &kiln_snapshot::TarOptions { mtime_clamp: clamp },
        )?;
        Ok(())
    })?;
    for g in guards {
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
    if !l
        .meta
        .labels
        .contains_key(kiln_store::layers::LABEL_DIFF_ID)
    {
        return Ok(layer_blob(state, layer, clamp, compression)?);
    }
    let d = kiln_store::layers::diff_id(state, layer, clamp)?;
    let blobs = kiln_store::blobs::stored_blobs(state, &d)?;
    let (_, src) = blobs
        .iter()
        .find(|(c, _)| *c != compression)
        .or_else(|| blobs.first())
        .ok_or(OutputError::NoBlob { diff_id: d })?;
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
