//! The files outputs write: a file written whole or not at all (or
//! streamed to standard output, `dest=-`), its bytes reported as a
//! transfer. Every archive output (OCI, docker, tar) writes through here.

use std::fs;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use kiln_registry::{Direction, ProgressSink, Transfer, TransferState};

use crate::error::Error;

/// The `dest` that means the process's standard output (`dest=-`): the
/// archive outputs stream there instead of into a file.
pub const STDOUT: &str = "-";

pub(crate) fn io_err(what: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Io { what, source }
}

/// Where the bytes of a written file are reported: a sink and the digest
/// that names the transfer.
pub(crate) type Progress = Option<(ProgressSink, kiln_llb::Digest)>;

/// `progress`, naming the transfer `digest`.
pub(crate) fn named(progress: Option<&ProgressSink>, digest: kiln_llb::Digest) -> Progress {
    progress.map(|p| (p.clone(), digest))
}

/// The digest of a destination's name: what names the progress of an
/// output that has no manifest (`type=tar`).
pub(crate) fn name_digest(dest: &Path) -> kiln_llb::Digest {
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
fn counted<'w>(w: &'w mut dyn io::Write, progress: &Progress) -> Box<dyn io::Write + 'w> {
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
fn finish(progress: &Progress, bytes: u64) {
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
pub(crate) fn write_file_atomic(
    dest: &Path,
    progress: Progress,
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
