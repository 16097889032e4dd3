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
use crate::tree::{Entry, FileType, Filter, Source, Tree, link_target};

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
        // Encoded as the walk goes: no entry is kept.
        let mut enc = Encoder::new(*opts, coarse_now_ns(), false);
        let mut tree_path = Vec::new();
        for source in sources {
            enc.source(source.path.as_os_str().as_bytes());
            let enc = std::cell::RefCell::new(&mut enc);
            self.for_each_entry(
                source,
                filter,
                &mut |n| enc.borrow_mut().reserve(n),
                &mut |v| {
                    tree_path.clear();
                    tree_path.push(b'/');
                    tree_path.extend_from_slice(v.tree_rel);
                    let file_type = FileType::of(v.meta);
                    let target = match file_type {
                        FileType::Symlink => Some(link_target(v.host)?),
                        _ => None,
                    };
                    let e = EntryRef {
                        rel: v.rel,
                        tree_path: &tree_path,
                        host: v.host,
                        file_type,
                        uid: v.meta.uid(),
                        gid: v.meta.gid(),
                        key: stat_key_of(v.meta),
                        rdev: v.meta.rdev(),
                        symlink_target: target.as_deref(),
                    };
                    enc.borrow_mut().entry(&e, cache);
                    Ok(())
                },
            )?;
        }
        let (digest, stats, _) = enc.finish(cache)?;
        Ok((digest, stats))
    }

    /// [`Tree::digest`] of a selection walked once and kept: also each
    /// regular file's path in the tree and content digest (what `kiln build
    /// --explain` compares), and the entries, for a copy of the same
    /// selection to use rather than walk again.
    pub fn digest_listed(
        &self,
        sources: &[Source],
        filter: &Filter,
        cache: &mut StatCache,
        opts: &DigestOptions,
    ) -> Result<Listed, ContextError> {
        let started = coarse_now_ns();
        let walked = sources
            .iter()
            .map(|s| self.walk(s, filter))
            .collect::<Result<Vec<_>, _>>()?;
        let selection: Vec<(&Source, &[Entry])> = sources
            .iter()
            .zip(&walked)
            .map(|(s, e)| (s, e.as_slice()))
            .collect();
        let mut listing = Vec::new();
        let (digest, stats) = digest_inner(&selection, cache, opts, started, Some(&mut listing))?;
        Ok(Listed {
            digest,
            stats,
            listing,
            walked,
        })
    }
}

/// What [`Tree::digest_listed`] found.
#[derive(Debug)]
pub struct Listed {
    /// The selection's digest, as [`Tree::digest`] computes it.
    pub digest: kiln_llb::Digest,
    /// What computing it cost.
    pub stats: DigestStats,
    /// Its regular files.
    pub listing: Listing,
    /// The entries [`Tree::walk`] returned for each source, in order.
    pub walked: Vec<Vec<Entry>>,
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
    listing: Option<&mut Listing>,
) -> Result<(kiln_llb::Digest, DigestStats), ContextError> {
    let mut enc = Encoder::new(*opts, started, listing.is_some());
    enc.reserve(selection.iter().map(|(_, e)| e.len()).sum());
    for (source, entries) in selection {
        enc.source(source.path.as_os_str().as_bytes());
        for e in *entries {
            let entry = EntryRef {
                rel: e.path.as_os_str().as_bytes(),
                tree_path: e.tree_path.as_os_str().as_bytes(),
                host: &e.host_path,
                file_type: e.file_type,
                uid: e.uid,
                gid: e.gid,
                key: stat_key(e),
                rdev: e.rdev,
                symlink_target: e.symlink_target.as_deref(),
            };
            enc.entry(&entry, cache);
        }
    }
    let (digest, stats, listed) = enc.finish(cache)?;
    if let (Some(out), Some(listed)) = (listing, listed) {
        out.extend(listed);
    }
    Ok((digest, stats))
}

/// One entry as the encoding sees it.
struct EntryRef<'a> {
    /// Relative to its source.
    rel: &'a [u8],
    /// In the tree, absolute: the stat cache's key.
    tree_path: &'a [u8],
    host: &'a std::path::Path,
    file_type: FileType,
    uid: u32,
    gid: u32,
    /// Its stat (size and mode among it).
    key: StatKey,
    rdev: u64,
    symlink_target: Option<&'a [u8]>,
}

/// The bytes the encoding hashes (see the module docs), built entry by
/// entry, with a blank where a file's content digest is still unknown: the
/// only place the encoding is written.
struct Encoder {
    buf: Vec<u8>,
    opts: DigestOptions,
    /// When the walks began ([`coarse_now_ns`]).
    started: i64,
    stats: DigestStats,
    misses: Vec<Miss>,
    /// With a listing: each regular file's tree path and where its digest
    /// is in `buf`.
    listed: Option<Vec<(Vec<u8>, usize)>>,
}

/// A regular file the stat cache did not know.
struct Miss {
    /// Where its digest goes in the encoding.
    at: usize,
    host: std::path::PathBuf,
    tree_path: Vec<u8>,
    key: StatKey,
}

impl Encoder {
    fn new(opts: DigestOptions, started: i64, listing: bool) -> Encoder {
        let mut buf = Vec::new();
        buf.extend_from_slice(b"kiln.context.v1\0");
        buf.push(u8::from(opts.include_ownership));
        Encoder {
            buf,
            opts,
            started,
            stats: DigestStats::default(),
            misses: Vec::new(),
            listed: listing.then(Vec::new),
        }
    }

    /// Room for about `entries` more entries.
    fn reserve(&mut self, entries: usize) {
        self.buf.reserve(entries * 96);
    }

    fn source(&mut self, path: &[u8]) {
        self.buf.push(b'S');
        put_str(&mut self.buf, path);
    }

    fn entry(&mut self, e: &EntryRef<'_>, cache: &mut StatCache) {
        let buf = &mut self.buf;
        self.stats.entries += 1;
        buf.push(b'E');
        put_str(buf, e.rel);
        buf.push(type_code(e.file_type));
        buf.extend_from_slice(&(e.key.mode & 0o7777).to_be_bytes());
        if self.opts.include_ownership {
            buf.extend_from_slice(&e.uid.to_be_bytes());
            buf.extend_from_slice(&e.gid.to_be_bytes());
        }
        match e.file_type {
            FileType::File => {
                buf.extend_from_slice(&e.key.size.to_be_bytes());
                let at = buf.len();
                match cache.lookup(e.tree_path, &e.key) {
                    Some(sha) => {
                        self.stats.cache_hits += 1;
                        buf.extend_from_slice(&sha);
                    }
                    None => {
                        self.misses.push(Miss {
                            at,
                            host: e.host.to_owned(),
                            tree_path: e.tree_path.to_vec(),
                            key: e.key,
                        });
                        buf.extend_from_slice(&[0; 32]);
                    }
                }
                if let Some(l) = &mut self.listed {
                    l.push((e.tree_path.to_vec(), at));
                }
            }
            FileType::Symlink => put_str(buf, e.symlink_target.unwrap_or_default()),
            FileType::CharDevice | FileType::BlockDevice => {
                buf.extend_from_slice(&nix::sys::stat::major(e.rdev).to_be_bytes());
                buf.extend_from_slice(&nix::sys::stat::minor(e.rdev).to_be_bytes());
            }
            FileType::Dir | FileType::Fifo | FileType::Socket => {}
        }
    }

    /// Hashes the files the cache did not know (in parallel), records them
    /// in the cache, and digests the encoding.
    fn finish(
        mut self,
        cache: &mut StatCache,
    ) -> Result<(kiln_llb::Digest, DigestStats, Option<Listing>), ContextError> {
        let hashed: Vec<Result<Hashed, ContextError>> = self
            .misses
            .par_iter()
            .map(|m| hash_path(&m.host, &m.key))
            .collect();
        // `collect` keeps `misses`' order.
        for (r, m) in hashed.into_iter().zip(self.misses) {
            let Hashed { sha, n, stable } = r?;
            self.stats.files_hashed += 1;
            self.stats.bytes_hashed += n;
            self.buf[m.at..m.at + 32].copy_from_slice(&sha);
            if stable && m.key.ctime_ns < self.started {
                cache.insert(m.tree_path, m.key, sha);
            } else {
                cache.forget(&m.tree_path);
            }
        }
        let listing = self.listed.map(|l| {
            l.into_iter()
                .map(|(path, at)| {
                    let mut sha = [0; 32];
                    sha.copy_from_slice(&self.buf[at..at + 32]);
                    (path, sha)
                })
                .collect()
        });
        let sum: [u8; 32] = Sha256::digest(&self.buf).into();
        Ok((digest_from(sum), self.stats, listing))
    }
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

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u32).to_be_bytes());
    buf.extend_from_slice(s);
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

/// SHA-256 of the regular file at `host`, streamed; its walk saw the stat
/// `key`.
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
