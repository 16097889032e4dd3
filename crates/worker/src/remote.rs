//! The main build context when it is not a directory, made into one:
//! `kiln build https://host/repo.git#ref:subdir`, `kiln build
//! https://host/ctx.tar.gz`, `kiln build - < ctx.tar` (BuildKit's and
//! buildx's remote contexts). The cli gives an empty directory (in the
//! state's scratch space) and builds from it as from a local context: `-f`
//! names a file inside it, and COPY is keyed by the content it reads, never
//! by where the context came from. As in BuildKit, its `.dockerignore` does
//! not apply: a remote context is read whole.
//!
//! * **git**: the ref resolved and the commit fetched through the
//!   repository cache of git sources ([`crate::ops::git`]), checked out without
//!   `.git` unless `?keep-git-dir=true`; the commit's time is the context's `SOURCE_DATE_EPOCH`.
//! * **HTTP** and **standard input**: the body is sniffed as BuildKit's
//!   dockerui and the docker cli do: a tar archive (gzip, bzip2, xz or zstd
//!   compressed, or not) is extracted as the context; anything else is the
//!   Dockerfile itself, with an empty context. An HTTP `Last-Modified` is
//!   the context's `SOURCE_DATE_EPOCH`.

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use crate::error::{BuildContextError, Error};
use crate::state::State;

/// What making the context left besides its directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The Dockerfile, when the body was one rather than an archive (the
    /// context is then empty, and `-f` names nothing in it).
    pub dockerfile: Option<Vec<u8>>,
    /// The time of the context: a git commit's committer time, an HTTP
    /// `Last-Modified` (`SOURCE_DATE_EPOCH=context`).
    pub time: Option<i64>,
    /// The git commit checked out.
    pub commit: Option<String>,
}

fn io_err(what: String) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Checks out the repository `spec` names (its ref, its subdirectory)
/// into the empty directory `dest`.
pub fn git(
    state: &State,
    spec: &crate::ops::git::ContextSpec<'_>,
    dest: &Path,
) -> Result<Fetched, Error> {
    let c = crate::ops::git::check_out_context(state, spec, dest)?;
    Ok(Fetched {
        dockerfile: None,
        time: c.time,
        commit: Some(c.commit),
    })
}

/// Downloads `url`: an archive is extracted into the empty directory
/// `dest`, anything else is the Dockerfile.
pub fn http(state: &State, url: &str, dest: &Path) -> Result<Fetched, Error> {
    let scratch = state.scratch()?;
    let body = scratch.path().join("body");
    let last_modified = crate::ops::http::download_to(url, &body)?;
    let dockerfile = unpack_or_read(&body, dest, url)?;
    // Without `Last-Modified`, an archive's time is its newest file's.
    let time = match last_modified {
        Some(t) => Some(t),
        None if dockerfile.is_none() => newest(dest)?,
        None => None,
    };
    Ok(Fetched {
        dockerfile,
        time,
        commit: None,
    })
}

/// The newest modification time of the regular files under `dir` (BuildKit's
/// `archiveMaxTimeFromHTTPArchive`).
fn newest(dir: &Path) -> Result<Option<i64>, Error> {
    use std::os::unix::fs::MetadataExt as _;
    let mut newest = None;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = fs::read_dir(&d).map_err(io_err(format!("reading {}", d.display())))?;
        for e in entries {
            let e = e.map_err(io_err(format!("reading {}", d.display())))?;
            let m = fs::symlink_metadata(e.path())
                .map_err(io_err(format!("stat {}", e.path().display())))?;
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() {
                newest = newest.max(Some(m.mtime()));
            }
        }
    }
    Ok(newest)
}

/// The time of a remote source (`ARG SOURCE_DATE_EPOCH=NAME`, BuildKit's
/// `resolveSourceDateEpochFromState`): an HTTP `Last-Modified`, else the
/// newest regular file of the (compressed) tar archive the body is, else
/// none; a git commit's committer time.
pub fn source_time(
    state: &State,
    source: &kiln_frontend::TimedSource,
) -> Result<Option<i64>, Error> {
    match source {
        kiln_frontend::TimedSource::Http { url } => {
            let scratch = state.scratch()?;
            let body = scratch.path().join("body");
            if let Some(t) = crate::ops::http::download_to(url, &body)? {
                return Ok(Some(t));
            }
            if !crate::ops::file::is_archive(&body) {
                return Ok(None);
            }
            newest_in_archive(&body)
        }
        kiln_frontend::TimedSource::Git {
            remote,
            git_ref,
            checksum,
        } => crate::ops::git::commit_time(
            state,
            &crate::ops::git::ContextSpec {
                remote,
                git_ref,
                subdir: "",
                checksum,
                keep_git_dir: false,
                skip_submodules: true,
            },
        ),
    }
}

/// The newest modification time of the regular files in the tar archive
/// at `path` (read, not extracted); `None` when it is not one after all
/// (BuildKit: a body that is no archive has no time).
fn newest_in_archive(path: &Path) -> Result<Option<i64>, Error> {
    let f = fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let Ok((_, r)) = kiln_oci::decompress(io::BufReader::new(f)) else {
        return Ok(None);
    };
    let mut archive = tar::Archive::new(r);
    let Ok(entries) = archive.entries() else {
        return Ok(None);
    };
    let mut newest = None;
    for e in entries {
        let Ok(e) = e else {
            return Ok(None);
        };
        let h = e.header();
        if h.entry_type().is_file()
            && let Ok(t) = h.mtime()
        {
            newest = newest.max(i64::try_from(t).ok());
        }
    }
    Ok(newest)
}

/// Reads `input` (standard input): an archive is extracted into the empty
/// directory `dest`, anything else is the Dockerfile.
pub fn read(state: &State, mut input: impl Read, dest: &Path) -> Result<Fetched, Error> {
    let scratch = state.scratch()?;
    let body = scratch.path().join("body");
    let mut f = fs::File::create(&body).map_err(io_err(format!("creating {}", body.display())))?;
    io::copy(&mut input, &mut f).map_err(io_err("reading the build context from stdin".into()))?;
    drop(f);
    let dockerfile = unpack_or_read(&body, dest, "stdin")?;
    Ok(Fetched {
        dockerfile,
        time: None,
        commit: None,
    })
}

/// Extracts `body` into `dest` if it is a (compressed) tar archive (`None`);
/// otherwise returns its bytes, the Dockerfile.
fn unpack_or_read(body: &Path, dest: &Path, shown: &str) -> Result<Option<Vec<u8>>, Error> {
    if !crate::ops::file::is_archive(body) {
        let bytes = fs::read(body).map_err(io_err(format!("reading {}", body.display())))?;
        return Ok(Some(bytes));
    }
    let f = fs::File::open(body).map_err(io_err(format!("opening {}", body.display())))?;
    let (_, r) = kiln_oci::decompress(io::BufReader::new(f)).map_err(io_err(format!(
        "decompressing the build context from {shown}"
    )))?;
    kiln_snapshot::extract_archive(r, dest, &kiln_snapshot::ExtractOptions { chown: None })
        .map_err(|source| BuildContextError::Extract {
            shown: shown.to_string(),
            source,
        })?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn an_archive_is_the_context_anything_else_the_dockerfile() {
        let dir = tempfile::tempdir().unwrap();
        let body = dir.path().join("body");
        let dest = dir.path().join("ctx");
        fs::create_dir(&dest).unwrap();
        fs::write(
            &body,
            tar_of(&[("Dockerfile", b"FROM scratch\n"), ("foo", b"x")]),
        )
        .unwrap();
        assert_eq!(unpack_or_read(&body, &dest, "t").unwrap(), None);
        assert_eq!(fs::read(dest.join("foo")).unwrap(), b"x");
        assert_eq!(
            fs::read(dest.join("Dockerfile")).unwrap(),
            b"FROM scratch\n"
        );
        assert_eq!(newest(&dest).unwrap(), Some(1_700_000_000));

        let dest = dir.path().join("ctx2");
        fs::create_dir(&dest).unwrap();
        fs::write(&body, b"FROM busybox\nRUN true\n").unwrap();
        assert_eq!(
            unpack_or_read(&body, &dest, "t").unwrap().as_deref(),
            Some(&b"FROM busybox\nRUN true\n"[..])
        );
        assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
    }

    #[test]
    fn an_archives_time_is_its_newest_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.tar");
        let mut b = tar::Builder::new(Vec::new());
        for (name, mtime, kind) in [
            ("old", 1_700_000_001, tar::EntryType::Regular),
            ("new", 1_700_000_602, tar::EntryType::Regular),
            ("dir", 1_800_000_000, tar::EntryType::Directory),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_cksum();
            b.append_data(&mut h, name, &[][..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        fs::write(&plain, &bytes).unwrap();
        assert_eq!(newest_in_archive(&plain).unwrap(), Some(1_700_000_602));
        let gz = dir.path().join("a.tar.gz");
        let mut e = kiln_oci::Compression::Gzip { level: 1 }
            .encoder(fs::File::create(&gz).unwrap())
            .unwrap();
        std::io::Write::write_all(&mut e, &bytes).unwrap();
        e.finish().unwrap();
        assert_eq!(newest_in_archive(&gz).unwrap(), Some(1_700_000_602));
    }
}
