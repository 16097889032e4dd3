//! The content digest of a COPY selection: the cache key of what a COPY
//! reads.
//!
//! # Encoding (`kiln.context.v1`)
//!
//! SHA-256 over, in order (integers big-endian, `str` = u32 length + bytes):
//!
//! ```text
//! "kiln.context.v1\0"  u8:flags (bit 0: ownership included)
//! for each source:   'S' str:path          (as matched, inside the tree)
//!   for each entry:  'E' str:path          (relative to the source; "" = itself)
//!                    u8:type               f d l p c b s
//!                    u32:mode & 0o7777     (permissions, setuid/setgid/sticky)
//!                    [u32:uid u32:gid]     (only with ownership)
//!                    file:     u64:size [32]:sha256 of the content
//!                    symlink:  str:target
//!                    char/block device: u32:major u32:minor
//! ```
//!
//! Entries come in [`Tree::walk`] order. Every element is self-delimiting,
//! so distinct selections cannot collide by concatenation. Never included:
//! timestamps, inode and device numbers, link counts, directory sizes, host
//! paths. Not (yet) included: extended attributes and hard-link structure.

use std::cell::RefCell;
use std::fs::File;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use crate::error::ContextError;
use crate::statcache::{StatCache, StatKey};
use crate::tree::{Entry, FileType, Filter, Source, Tree};

/// What goes into the digest besides names, types, modes and contents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestOptions {
    /// Include uid/gid: true for a stage's files (COPY --from keeps
    /// ownership), false for the build context (COPY resets it).
    pub include_ownership: bool,
}

/// What computing a digest cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DigestStats {
    /// Entries encoded.
    pub entries: u64,
    /// Regular files whose content was read.
    pub files_hashed: u64,
    /// Bytes of content read.
    pub bytes_hashed: u64,
    /// Regular files whose digest came from the stat cache.
    pub cache_hits: u64,
}

const READ_CHUNK: usize = 256 * 1024;

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Tree {
    /// The digest of everything COPY would read for `sources` through
    /// `filter` (see the module docs for the encoding). Unchanged files are
    /// looked up in `cache`; the others are read in parallel.
    pub fn digest(
        &self,
        sources: &[Source],
        filter: &Filter,
        cache: &mut StatCache,
        opts: &DigestOptions,
    ) -> Result<(kiln_llb::Digest, DigestStats), ContextError> {
        // The bytes the encoding hashes, built as the walk goes (no entry
        // is kept), with a blank where a file's digest must be computed.
        let started = coarse_now_ns();
        let mut stats = DigestStats::default();
        let mut buf = Vec::new();
        buf.extend_from_slice(b"kiln.context.v1\0");
        buf.push(u8::from(opts.include_ownership));
        let mut misses: Vec<Miss> = Vec::new();
        let mut tree_path = Vec::new();
        for source in sources {
            buf.push(b'S');
            put_str_into(&mut buf, source.path.as_os_str().as_bytes());
            let buf = std::cell::RefCell::new(&mut buf);
            self.for_each_entry(
                source,
                filter,
                &mut |n| buf.borrow_mut().reserve(n * 96),
                &mut |v| {
                    let mut buf = buf.borrow_mut();
                    stats.entries += 1;
                    let file_type = FileType::of(v.meta);
                    buf.push(b'E');
                    put_str_into(&mut buf, v.rel);
                    buf.push(type_code(file_type));
                    buf.extend_from_slice(&(v.meta.mode() & 0o7777).to_be_bytes());
                    if opts.include_ownership {
                        buf.extend_from_slice(&v.meta.uid().to_be_bytes());
                        buf.extend_from_slice(&v.meta.gid().to_be_bytes());
                    }
                    match file_type {
                        FileType::File => {
                            buf.extend_from_slice(&v.meta.size().to_be_bytes());
                            tree_path.clear();
                            tree_path.push(b'/');
                            tree_path.extend_from_slice(v.tree_rel);
                            let key = stat_key_of(v.meta);
                            match cache.lookup(&tree_path, &key) {
                                Some(sha) => {
                                    stats.cache_hits += 1;
                                    buf.extend_from_slice(&sha);
                                }
                                None => {
                                    misses.push(Miss {
                                        at: buf.len(),
                                        host: v.host.to_owned(),
                                        tree_path: tree_path.clone(),
                                        key,
                                    });
                                    buf.extend_from_slice(&[0; 32]);
                                }
                            }
                        }
                        FileType::Symlink => {
                            let target =
                                std::fs::read_link(v.host).map_err(|source| ContextError::Io {
                                    path: v.host.to_owned(),
                                    source,
                                })?;
                            put_str_into(&mut buf, target.as_os_str().as_bytes());
                        }
                        FileType::CharDevice | FileType::BlockDevice => {
                            let rdev = v.meta.rdev();
                            buf.extend_from_slice(&nix::sys::stat::major(rdev).to_be_bytes());
                            buf.extend_from_slice(&nix::sys::stat::minor(rdev).to_be_bytes());
                        }
                        FileType::Dir | FileType::Fifo | FileType::Socket => {}
                    }
                    Ok(())
                },
            )?;
        }
        let hashed: Vec<Result<Hashed, ContextError>> = misses
            .par_iter()
            .map(|m| hash_path(&m.host, &m.key))
            .collect();
        for (r, m) in hashed.into_iter().zip(misses) {
            let Hashed { sha, n, stable } = r?;
            stats.files_hashed += 1;
            stats.bytes_hashed += n;
            buf[m.at..m.at + 32].copy_from_slice(&sha);
            if stable && m.key.ctime_ns < started {
                cache.insert(m.tree_path, m.key, sha);
            } else {
                cache.forget(&m.tree_path);
            }
        }
        let sum: [u8; 32] = Sha256::digest(&buf).into();
        Ok((digest_from(sum), stats))
    }

    fn walk_and_digest(
        &self,
        sources: &[Source],
        filter: &Filter,
        cache: &mut StatCache,
        opts: &DigestOptions,
        listing: Option<&mut Listing>,
    ) -> Result<(kiln_llb::Digest, DigestStats), ContextError> {
        let started = coarse_now_ns();
        let mut walked = Vec::with_capacity(sources.len());
        for s in sources {
            walked.push((s, self.walk(s, filter)?));
        }
        let selection: Vec<(&Source, &[Entry])> =
            walked.iter().map(|(s, e)| (*s, e.as_slice())).collect();
        digest_inner(&selection, cache, opts, started, listing)
    }

    /// [`Tree::digest`], also returning each regular file's path in the
    /// tree and content digest (what `kiln build --explain` compares).
    pub fn digest_listed(
        &self,
        sources: &[Source],
        filter: &Filter,
        cache: &mut StatCache,
        opts: &DigestOptions,
    ) -> Result<(kiln_llb::Digest, DigestStats, Listing), ContextError> {
        let mut listing = Vec::new();
        let (d, stats) = self.walk_and_digest(sources, filter, cache, opts, Some(&mut listing))?;
        Ok((d, stats, listing))
    }
}

/// Regular files of a selection: path in the tree, content digest.
pub type Listing = Vec<(Vec<u8>, [u8; 32])>;

/// The digest of sources already walked with [`Tree::walk`] (so a caller
/// that copies the same selection walks only once). `started` is
/// [`coarse_now_ns`] taken before the walks.
pub fn digest_selection(
    selection: &[(&Source, &[Entry])],
    cache: &mut StatCache,
    opts: &DigestOptions,
    started: i64,
) -> Result<(kiln_llb::Digest, DigestStats), ContextError> {
    digest_inner(selection, cache, opts, started, None)
}

fn digest_inner(
    selection: &[(&Source, &[Entry])],
    cache: &mut StatCache,
    opts: &DigestOptions,
    started: i64,
    mut listing: Option<&mut Listing>,
) -> Result<(kiln_llb::Digest, DigestStats), ContextError> {
    let mut stats = DigestStats::default();
    // Content digests: from the cache, or to be computed.
    let mut shas: Vec<Option<[u8; 32]>> =
        Vec::with_capacity(selection.iter().map(|(_, e)| e.len()).sum());
    let mut misses: Vec<(usize, &Entry)> = Vec::new();
    for (_, entries) in selection {
        for e in *entries {
            stats.entries += 1;
            if e.file_type != FileType::File {
                continue;
            }
            let idx = shas.len();
            match cache.lookup(e.tree_path.as_os_str().as_bytes(), &stat_key(e)) {
                Some(sha) => {
                    stats.cache_hits += 1;
                    shas.push(Some(sha));
                }
                None => {
                    shas.push(None);
                    misses.push((idx, e));
                }
            }
        }
    }
    let hashed: Vec<Result<Hashed, ContextError>> =
        misses.par_iter().map(|&(_, e)| hash_file(e)).collect();
    // `collect` keeps `misses`' order.
    for (r, &(idx, e)) in hashed.into_iter().zip(&misses) {
        let Hashed { sha, n, stable } = r?;
        stats.files_hashed += 1;
        stats.bytes_hashed += n;
        shas[idx] = Some(sha);
        let path = e.tree_path.as_os_str().as_bytes().to_vec();
        if stable && e.ctime_ns < started {
            cache.insert(path, stat_key(e), sha);
        } else {
            cache.forget(&path);
        }
    }

    let mut h = Sha256::new();
    h.update(b"kiln.context.v1\0");
    h.update([u8::from(opts.include_ownership)]);
    let mut files = shas.into_iter();
    for (source, entries) in selection {
        h.update(b"S");
        put_str(&mut h, source.path.as_os_str().as_bytes());
        for e in *entries {
            h.update(b"E");
            put_str(&mut h, e.path.as_os_str().as_bytes());
            h.update([type_code(e.file_type)]);
            h.update((e.mode & 0o7777).to_be_bytes());
            if opts.include_ownership {
                h.update(e.uid.to_be_bytes());
                h.update(e.gid.to_be_bytes());
            }
            match e.file_type {
                FileType::File => {
                    let sha = files.next().flatten().ok_or_else(|| ContextError::Io {
                        path: e.host_path.clone(),
                        source: std::io::Error::other("internal: file digest missing"),
                    })?;
                    h.update(e.size.to_be_bytes());
                    h.update(sha);
                    if let Some(l) = listing.as_deref_mut() {
                        l.push((e.tree_path.as_os_str().as_bytes().to_vec(), sha));
                    }
                }
                FileType::Symlink => {
                    put_str(&mut h, e.symlink_target.as_deref().unwrap_or_default());
                }
                FileType::CharDevice | FileType::BlockDevice => {
                    h.update(nix::sys::stat::major(e.rdev).to_be_bytes());
                    h.update(nix::sys::stat::minor(e.rdev).to_be_bytes());
                }
                FileType::Dir | FileType::Fifo | FileType::Socket => {}
            }
        }
    }
    let sum: [u8; 32] = h.finalize().into();
    Ok((digest_from(sum), stats))
}

/// Now, on the coarse realtime clock file timestamps are taken from, in
/// nanoseconds since the epoch.
pub fn coarse_now_ns() -> i64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_REALTIME_COARSE)
        .map(|t| t.tv_sec() * 1_000_000_000 + t.tv_nsec())
        // Unavailable clock: treat every entry as racy (never cached).
        .unwrap_or(i64::MIN)
}

fn digest_from(sum: [u8; 32]) -> kiln_llb::Digest {
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in sum {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    // A well-formed "sha256:<64 lowercase hex>" always parses.
    s.parse().unwrap_or_else(|_| kiln_llb::Digest::of(&sum))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_str(h: &mut Sha256, s: &[u8]) {
    h.update((s.len() as u32).to_be_bytes());
    h.update(s);
}

fn put_str_into(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s);
}

/// A regular file [`Tree::digest`] found no cached digest for.
struct Miss {
    /// Where its digest goes in the encoding.
    at: usize,
    host: std::path::PathBuf,
    tree_path: Vec<u8>,
    key: StatKey,
}

fn type_code(t: FileType) -> u8 {
    match t {
        FileType::File => b'f',
        FileType::Dir => b'd',
        FileType::Symlink => b'l',
        FileType::Fifo => b'p',
        FileType::CharDevice => b'c',
        FileType::BlockDevice => b'b',
        FileType::Socket => b's',
    }
}

impl StatCache {
    /// The content digest of `e` if the cache holds it for `e`'s current
    /// stat (what [`Tree::digest`] hashed or trusted for the cache key).
    pub fn digest_of(&mut self, e: &Entry) -> Option<[u8; 32]> {
        self.lookup(e.tree_path.as_os_str().as_bytes(), &stat_key(e))
    }
}

fn stat_key_of(meta: &std::fs::Metadata) -> StatKey {
    StatKey {
        size: meta.size(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        ino: meta.ino(),
        dev: meta.dev(),
        mode: meta.mode(),
    }
}

fn stat_key(e: &Entry) -> StatKey {
    StatKey {
        size: e.size,
        mtime_ns: e.mtime_ns,
        ctime_ns: e.ctime_ns,
        ino: e.ino,
        dev: e.dev,
        mode: e.mode,
    }
}

/// A file's content digest.
struct Hashed {
    sha: [u8; 32],
    /// Bytes read.
    n: u64,
    /// The stat after reading still matches the walk's (else do not cache).
    stable: bool,
}

/// SHA-256 of a regular file's content, streamed.
fn hash_file(e: &Entry) -> Result<Hashed, ContextError> {
    hash_path(&e.host_path, &stat_key(e))
}

/// SHA-256 of the regular file at `host`, whose walk saw the stat `key`.
fn hash_path(host: &std::path::Path, key: &StatKey) -> Result<Hashed, ContextError> {
    let io = |source| ContextError::Io {
        path: host.to_owned(),
        source,
    };
    let mut f = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(host)
        .map_err(io)?;
    let mut h = Sha256::new();
    let mut total = 0u64;
    BUF.with(|buf| -> Result<(), ContextError> {
        let mut buf = buf.borrow_mut();
        if buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
        loop {
            let n = match f.read(&mut buf[..]) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(io(err)),
            };
            h.update(&buf[..n]);
            total += n as u64;
        }
    })?;
    let after = f.metadata().map_err(io)?;
    let stable = after.size() == key.size
        && after.size() == total
        && after.mtime() * 1_000_000_000 + after.mtime_nsec() == key.mtime_ns
        && after.ctime() * 1_000_000_000 + after.ctime_nsec() == key.ctime_ns
        && after.ino() == key.ino
        && after.dev() == key.dev;
    Ok(Hashed {
        sha: h.finalize().into(),
        n: total,
        stable,
    })
}
