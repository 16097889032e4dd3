//! Overlay upper dir → deterministic OCI layer tar.
//!
//! The header conventions are those of the tar that BuildKit exports
//! (containerd's `archive.ChangeWriter` on Go's `archive/tar` in PAX mode),
//! so that kiln's layers look like BuildKit's to every consumer:
//!
//! - entries in depth-first pre-order, siblings sorted by the bytes of their
//!   names (Go's `filepath.Walk`); the root itself is not an entry;
//! - names relative (`etc/passwd`), directories with a trailing `/`;
//! - mode = permission bits with setuid/setgid/sticky (`st_mode & 07777`);
//!   numeric uid/gid, empty uname/gname; mtime in whole seconds, clamped to
//!   `mtime_clamp` when given; atime/ctime never written; ustar magic;
//! - a name over 100 bytes is split into the ustar prefix when it is ASCII
//!   and splittable, else (or when the entry needs PAX anyway) stored as a
//!   PAX `path` record; likewise `linkpath`; uid/gid/size/mtime that do not
//!   fit their octal fields go to PAX records; PAX records are sorted by key,
//!   as Go does; non-UTF-8 names go as raw bytes in `path` (as Go does;
//!   GNU tar reads them back unchanged; it does not know `hdrcharset`);
//! - xattrs as `SCHILY.xattr.<name>` PAX records, all of them except the
//!   overlay's own (`trusted.overlay.*`, `user.overlay.*`) and
//!   `security.selinux` (host labels; BuildKit keeps only
//!   `security.capability`, kiln keeps `user.*` and the rest too);
//! - hardlinks (same inode, `nlink > 1`): the first in walk order is a file,
//!   later ones are link entries (type `1`) to its name;
//! - sockets are skipped; FIFOs and device nodes are kept;
//! - whiteout `x` (overlay's 0/0 character device, or a whiteout file,
//!   see [`crate::whiteout`]) → empty regular file
//!   `.wh.x`, mode 0, uid/gid 0, mtime 0 (containerd ≥ 2.0); opaque
//!   directory (`trusted.overlay.opaque=y` or `user.overlay.opaque=y`) → its
//!   entry followed by an empty `<dir>/.wh..wh..opq`, which takes the
//!   directory's permission bits and owner and mtime 0 (moby's overlay
//!   converter);
//! - checksum as Go and GNU tar write it (6 octal digits, NUL, space); the
//!   archive ends with two zero blocks and no padding to a record size.
//!
//! Nothing depends on inode numbers, readdir order, atime, ctime or the
//! host, so identical trees give identical bytes.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Options of [`write_layer_tar`].
#[derive(Clone, Debug, Default)]
pub struct TarOptions {
    /// When set, every mtime later than this (Unix seconds) is written as
    /// this (`SOURCE_DATE_EPOCH` semantics, as BuildKit's
    /// `rewrite-timestamp`).
    pub mtime_clamp: Option<i64>,
}

/// What [`write_layer_tar`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TarStats {
    /// Bytes of tar written (the uncompressed layer size).
    pub bytes: u64,
    /// Entries written (whiteouts and opaque markers included, PAX extended
    /// headers not).
    pub entries: u64,
    /// Bytes of regular files' contents (each inode once: a hard link's
    /// later names carry none), the layer's unpacked size.
    pub file_bytes: u64,
}

/// Errors of [`write_layer_tar`]. Each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the layer failed.
    #[error("export layer: {op} {}: {source}", path.display())]
    Read {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Writing the tar failed.
    #[error("export layer: writing the tar at {}: {source}", path.display())]
    Write {
        /// The entry being written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file's size changed while it was being archived.
    #[error("export layer: {} changed size while being read (expected {expected} bytes)", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// Its size when the header was written.
        expected: u64,
    },
    /// Something a tar cannot represent.
    #[error("export layer: {}: {why}", path.display())]
    Unrepresentable {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

const BLOCK: usize = 512;
const COPY_BUF: usize = 1 << 20;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Writes the overlay upper dir `diff_dir` as an OCI layer tar to `out`
/// (uncompressed). See the module docs for the exact format.
pub fn write_layer_tar(
    diff_dir: &Path,
    out: impl Write,
    opts: &TarOptions,
) -> Result<TarStats, ExportError> {
    let mut w = Writer {
        out: io::BufWriter::with_capacity(256 * 1024, out),
        stats: TarStats::default(),
        clamp: opts.mtime_clamp,
        links: HashMap::new(),
        buf: Vec::new(),
        pax: Vec::new(),
        records: Vec::new(),
        abs: diff_dir.to_path_buf(),
        name: Vec::new(),
    };
    let root_meta = fs::metadata(diff_dir).map_err(|source| ExportError::Read {
        op: "stat",
        path: diff_dir.to_path_buf(),
        source,
    })?;
    if !root_meta.is_dir() {
        return Err(ExportError::Read {
            op: "opening",
            path: diff_dir.to_path_buf(),
            source: io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    // Depth-first walk with an explicit stack: each level holds the sorted
    // names of one directory and the position reached in them.
    let mut stack: Vec<(Vec<OsString>, usize)> = vec![(w.read_sorted_dir()?, 0)];
    while let Some((names, pos)) = stack.last_mut() {
        let Some(name) = names.get(*pos).cloned() else {
            stack.pop();
            if !stack.is_empty() {
                w.pop_component();
            }
            continue;
        };
        *pos += 1;
        w.push_component(&name);
        let descend = w.entry()?;
        if descend {
            let names = w.read_sorted_dir()?;
            stack.push((names, 0));
        } else {
            w.pop_component();
        }
    }
    // End of archive: two zero blocks.
    w.write_bytes(&[0u8; 2 * BLOCK])?;
    w.out.flush().map_err(|source| ExportError::Write {
        path: diff_dir.to_path_buf(),
        source,
    })?;
    Ok(w.stats)
}

struct Writer<W: Write> {
    out: io::BufWriter<W>,
    stats: TarStats,
    clamp: Option<i64>,
    /// (dev, ino) → tar name of the first entry of a hardlinked inode.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
    /// Scratch: the PAX extended header data being built.
    pax: Vec<u8>,
    /// Scratch: PAX records (key, value) of the current entry.
    records: Vec<(Vec<u8>, Vec<u8>)>,
    /// Host path of the current entry.
    abs: PathBuf,
    /// Tar name of the current entry (relative, no trailing slash).
    name: Vec<u8>,
}

/// What a header describes; the fields a Go `tar.Header` would carry.
struct Hdr<'a> {
    name: &'a [u8],
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: i64,
    link: &'a [u8],
    dev: Option<(u64, u64)>,
}

impl<W: Write> Writer<W> {
    fn push_component(&mut self, c: &OsStr) {
        self.abs.push(c);
        if !self.name.is_empty() {
            self.name.push(b'/');
        }
        self.name.extend_from_slice(c.as_bytes());
    }

    fn pop_component(&mut self) {
        self.abs.pop();
        match self.name.iter().rposition(|&b| b == b'/') {
            Some(i) => self.name.truncate(i),
            None => self.name.clear(),
        }
    }

    fn read_err(&self, op: &'static str) -> impl FnOnce(io::Error) -> ExportError + '_ {
        move |source| ExportError::Read {
            op,
            path: self.abs.clone(),
            source,
        }
    }

    fn read_sorted_dir(&self) -> Result<Vec<OsString>, ExportError> {
        let mut names = Vec::new();
        for e in fs::read_dir(&self.abs).map_err(self.read_err("reading directory"))? {
            names.push(e.map_err(self.read_err("reading directory"))?.file_name());
        }
        names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        Ok(names)
    }

    fn clamp(&self, mtime: i64) -> i64 {
        match self.clamp {
            Some(c) if mtime > c => c,
            _ => mtime,
        }
    }

    /// Writes the current entry; returns whether to descend into it.
    fn entry(&mut self) -> Result<bool, ExportError> {
        let meta = fs::symlink_metadata(&self.abs).map_err(self.read_err("lstat"))?;
        let fmt = meta.mode() & libc::S_IFMT;
        let mode = meta.mode() & 0o7777;
        let name = std::mem::take(&mut self.name);
        let result = self.entry_inner(&meta, fmt, mode, &name);
        self.name = name;
        result
    }

    fn entry_inner(
        &mut self,
        meta: &fs::Metadata,
        fmt: u32,
        mode: u32,
        name: &[u8],
    ) -> Result<bool, ExportError> {
        match fmt {
            libc::S_IFSOCK => return Ok(false),
            _ if crate::whiteout::is_whiteout(&self.abs, meta) => {
                // Whiteout (device or file) → .wh.<name>.
                let mut wh = Vec::with_capacity(name.len() + WHITEOUT_PREFIX.len());
                let base_at = name.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
                wh.extend_from_slice(&name[..base_at]);
                wh.extend_from_slice(WHITEOUT_PREFIX);
                wh.extend_from_slice(&name[base_at..]);
                self.records.clear();
                self.header(&Hdr {
                    name: &wh,
                    typeflag: b'0',
                    mode: 0,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    mtime: 0,
                    link: b"",
                    dev: None,
                })?;
                return Ok(false);
            }
            _ => {}
        }
        let is_dir = fmt == libc::S_IFDIR;
        let opaque = self.collect_xattrs(is_dir)?;
        let mtime = self.clamp(meta.mtime());
        let mut tar_name = name.to_vec();
        if is_dir {
            tar_name.push(b'/');
        }
        // A later name of a hardlinked inode becomes a link entry.
        if !is_dir && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                self.header(&Hdr {
                    name: &tar_name,
                    typeflag: b'1',
                    mode,
                    uid: u64::from(meta.uid()),
                    gid: u64::from(meta.gid()),
                    size: 0,
                    mtime,
                    link: &first,
                    dev: None,
                })?;
                return Ok(false);
            }
            self.links.insert(key, tar_name.clone());
        }
        let target;
        let (typeflag, size, link, dev): (u8, u64, &[u8], _) = match fmt {
            libc::S_IFREG => (b'0', meta.size(), b"", None),
            libc::S_IFDIR => (b'5', 0, b"", None),
            libc::S_IFLNK => {
                target = fs::read_link(&self.abs).map_err(self.read_err("readlink"))?;
                (b'2', 0, target.as_os_str().as_bytes(), None)
            }
            libc::S_IFCHR => (b'3', 0, b"", Some(dev_numbers(meta.rdev()))),
            libc::S_IFBLK => (b'4', 0, b"", Some(dev_numbers(meta.rdev()))),
            libc::S_IFIFO => (b'6', 0, b"", None),
            _ => {
                return Err(ExportError::Unrepresentable {
                    path: self.abs.clone(),
                    why: format!("unknown file type {fmt:o}"),
                });
            }
        };
        self.header(&Hdr {
            name: &tar_name,
            typeflag,
            mode,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            size,
            mtime,
            link,
            dev,
        })?;
        if typeflag == b'0' && size > 0 {
            self.copy_file(size)?;
            self.stats.file_bytes += size;
        }
        if opaque {
            let mut marker = tar_name.clone();
            marker.extend_from_slice(OPAQUE_MARKER);
            self.records.clear();
            self.header(&Hdr {
                name: &marker,
                typeflag: b'0',
                mode: mode & 0o777,
                uid: u64::from(meta.uid()),
                gid: u64::from(meta.gid()),
                size: 0,
                mtime: 0,
                link: b"",
                dev: None,
            })?;
        }
        Ok(is_dir)
    }

    /// Fills `self.records` with the entry's exportable xattrs (sorted
    /// later with the other records) and reports whether it is an opaque
    /// directory.
    fn collect_xattrs(&mut self, is_dir: bool) -> Result<bool, ExportError> {
        self.records.clear();
        let mut opaque = false;
        let names = match xattr::list(&self.abs) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(false),
            Err(e) => return Err(self.read_err("listing xattrs of")(e)),
        };
        for xname in names {
            let key = xname.as_bytes();
            if crate::whiteout::is_overlay_xattr(key) {
                if is_dir && (key == b"trusted.overlay.opaque" || key == b"user.overlay.opaque") {
                    let v = xattr::get(&self.abs, &xname)
                        .map_err(self.read_err("reading xattrs of"))?;
                    opaque |= v.as_deref() == Some(b"y");
                }
                continue;
            }
            if key == b"security.selinux" {
                continue;
            }
            if key.contains(&b'=') {
                return Err(ExportError::Unrepresentable {
                    path: self.abs.clone(),
                    why: format!(
                        "xattr name {:?} contains '=', which PAX cannot encode",
                        xname
                    ),
                });
            }
            let Some(value) =
                xattr::get(&self.abs, &xname).map_err(self.read_err("reading xattrs of"))?
            else {
                continue;
            };
            let mut k = b"SCHILY.xattr.".to_vec();
            k.extend_from_slice(key);
            self.records.push((k, value));
        }
        Ok(opaque)
    }

    fn write_bytes(&mut self, b: &[u8]) -> Result<(), ExportError> {
        self.out.write_all(b).map_err(|source| ExportError::Write {
            path: self.abs.clone(),
            source,
        })?;
        self.stats.bytes += b.len() as u64;
        Ok(())
    }

    /// Streams `size` bytes of the current (regular) file, then the padding.
    fn copy_file(&mut self, size: u64) -> Result<(), ExportError> {
        let mut f = File::open(&self.abs).map_err(self.read_err("opening"))?;
        let mut left = size;
        let mut buf = std::mem::take(&mut self.buf);
        // Grown to the largest file seen, up to COPY_BUF: a layer of small
        // files does not zero a megabyte (on a fresh thread that is 256
        // page faults per layer).
        let fits = usize::try_from(size.saturating_add(1))
            .unwrap_or(COPY_BUF)
            .clamp(BLOCK, COPY_BUF);
        if buf.len() < fits {
            buf.resize(fits, 0);
        }
        let result = (|| {
            // Each read asks for one byte more than is left, so that the
            // last one shows the end of the file (a read of a regular file
            // returns less than asked only there) without a read of its own.
            let mut at_end = false;
            while left > 0 {
                let want = buf
                    .len()
                    .min(usize::try_from(left.saturating_add(1)).unwrap_or(usize::MAX));
                let n = match f.read(&mut buf[..want]) {
                    Ok(0) => {
                        return Err(ExportError::Changed {
                            path: self.abs.clone(),
                            expected: size,
                        });
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(self.read_err("reading")(e)),
                };
                if n as u64 > left {
                    // The file grew.
                    return Err(ExportError::Changed {
                        path: self.abs.clone(),
                        expected: size,
                    });
                }
                self.write_bytes(&buf[..n])?;
                left -= n as u64;
                at_end = n < want;
            }
            // The file must not have grown either.
            if !at_end && f.read(&mut buf[..1]).map_err(self.read_err("reading"))? != 0 {
                return Err(ExportError::Changed {
                    path: self.abs.clone(),
                    expected: size,
                });
            }
            Ok(())
        })();
        self.buf = buf;
        result?;
        let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        self.write_bytes(&[0u8; BLOCK][..pad])
    }

    /// Writes the PAX extended header (if needed) and the ustar header of
    /// one entry. `self.records` holds the entry's xattr records on entry.
    fn header(&mut self, h: &Hdr<'_>) -> Result<(), ExportError> {
        let name_fits = h.name.len() <= 100 && h.name.is_ascii();
        let split = if name_fits {
            None
        } else {
            split_ustar_path(h.name)
        };
        let link_fits = h.link.len() <= 100 && h.link.is_ascii();
        if !link_fits {
            self.records.push((b"linkpath".to_vec(), h.link.to_vec()));
        }
        if h.uid > OCTAL_MAX_7 {
            self.records
                .push((b"uid".to_vec(), h.uid.to_string().into_bytes()));
        }
        if h.gid > OCTAL_MAX_7 {
            self.records
                .push((b"gid".to_vec(), h.gid.to_string().into_bytes()));
        }
        if h.size > OCTAL_MAX_11 {
            self.records
                .push((b"size".to_vec(), h.size.to_string().into_bytes()));
        }
        let mtime_fits = (0..=OCTAL_MAX_11 as i64).contains(&h.mtime);
        if !mtime_fits {
            self.records
                .push((b"mtime".to_vec(), h.mtime.to_string().into_bytes()));
        }
        let mut use_prefix = None;
        if !name_fits {
            if self.records.is_empty() && split.is_some() {
                use_prefix = split;
            } else {
                self.records.push((b"path".to_vec(), h.name.to_vec()));
            }
        }
        if !self.records.is_empty() {
            self.write_pax(h.name)?;
        }

        let mut hdr = tar::Header::new_ustar();
        {
            let u = hdr
                .as_ustar_mut()
                .ok_or_else(|| ExportError::Unrepresentable {
                    path: self.abs.clone(),
                    why: "internal: ustar header expected".into(),
                })?;
            match use_prefix {
                Some((prefix_len, _)) => {
                    u.prefix[..prefix_len].copy_from_slice(&h.name[..prefix_len]);
                    let rest = &h.name[prefix_len + 1..];
                    u.name[..rest.len()].copy_from_slice(rest);
                }
                None => put_ascii_truncated(&mut u.name, h.name),
            }
            put_ascii_truncated(&mut u.linkname, h.link);
            put_octal(&mut u.mode, u64::from(h.mode));
            put_octal(&mut u.uid, if h.uid > OCTAL_MAX_7 { 0 } else { h.uid });
            put_octal(&mut u.gid, if h.gid > OCTAL_MAX_7 { 0 } else { h.gid });
            put_octal(&mut u.size, if h.size > OCTAL_MAX_11 { 0 } else { h.size });
            put_octal(&mut u.mtime, if mtime_fits { h.mtime as u64 } else { 0 });
            u.typeflag[0] = h.typeflag;
            let (major, minor) = h.dev.unwrap_or((0, 0));
            put_octal(&mut u.dev_major, major);
            put_octal(&mut u.dev_minor, minor);
        }
        set_checksum(&mut hdr);
        self.write_bytes(hdr.as_bytes())?;
        self.stats.entries += 1;
        Ok(())
    }

    /// Writes a PAX extended header ('x') holding `self.records`, sorted by
    /// key. Named like Go's: `<dir>/PaxHeaders.0/<base>`.
    fn write_pax(&mut self, name: &[u8]) -> Result<(), ExportError> {
        self.records.sort_by(|a, b| a.0.cmp(&b.0));
        self.pax.clear();
        for (k, v) in &self.records {
            // "<len> <key>=<value>\n", len counting itself.
            let base = k.len() + v.len() + 3;
            let mut len = base + digits(base);
            if digits(len) != digits(base) {
                len = base + digits(len);
            }
            self.pax.extend_from_slice(len.to_string().as_bytes());
            self.pax.push(b' ');
            self.pax.extend_from_slice(k);
            self.pax.push(b'=');
            self.pax.extend_from_slice(v);
            self.pax.push(b'\n');
        }
        self.records.clear();
        let (dir, file) = match name.iter().rposition(|&b| b == b'/') {
            Some(i) => name.split_at(i + 1),
            None => (&name[..0], name),
        };
        let mut pax_name = dir.to_vec();
        pax_name.extend_from_slice(b"PaxHeaders.0");
        if !file.is_empty() {
            pax_name.push(b'/');
            pax_name.extend_from_slice(file);
        }
        pax_name.retain(u8::is_ascii);
        pax_name.truncate(100);
        while pax_name.last() == Some(&b'/') {
            pax_name.pop();
        }
        let mut hdr = tar::Header::new_ustar();
        {
            let u = hdr
                .as_ustar_mut()
                .ok_or_else(|| ExportError::Unrepresentable {
                    path: self.abs.clone(),
                    why: "internal: ustar header expected".into(),
                })?;
            u.name[..pax_name.len()].copy_from_slice(&pax_name);
            u.typeflag[0] = b'x';
            put_octal(&mut u.mode, 0);
            put_octal(&mut u.uid, 0);
            put_octal(&mut u.gid, 0);
            put_octal(&mut u.size, self.pax.len() as u64);
            put_octal(&mut u.mtime, 0);
        }
        set_checksum(&mut hdr);
        self.write_bytes(hdr.as_bytes())?;
        let pax = std::mem::take(&mut self.pax);
        let r = self.write_bytes(&pax).and_then(|()| {
            let pad = (BLOCK - pax.len() % BLOCK) % BLOCK;
            self.write_bytes(&[0u8; BLOCK][..pad])
        });
        self.pax = pax;
        r
    }
}

const OCTAL_MAX_7: u64 = 0o7777777;
const OCTAL_MAX_11: u64 = 0o77777777777;

fn digits(n: usize) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

fn dev_numbers(rdev: u64) -> (u64, u64) {
    (
        nix::sys::stat::major(rdev as libc::dev_t),
        nix::sys::stat::minor(rdev as libc::dev_t),
    )
}

/// Go's `formatOctal`: zero-padded octal, NUL-terminated, filling the field.
fn put_octal(field: &mut [u8], mut v: u64) {
    let n = field.len();
    field[n - 1] = 0;
    for slot in field[..n - 1].iter_mut().rev() {
        *slot = b'0' + (v & 7) as u8;
        v >>= 3;
    }
}

/// Go's `formatString(toASCII(s))`: non-ASCII bytes dropped, truncated to
/// the field, NUL-terminated when shorter.
fn put_ascii_truncated(field: &mut [u8], s: &[u8]) {
    let mut i = 0;
    for &b in s {
        if i == field.len() {
            break;
        }
        if b.is_ascii() {
            field[i] = b;
            i += 1;
        }
    }
    if i < field.len() {
        field[i] = 0;
    }
}

/// The checksum as Go and GNU tar format it: six octal digits, NUL, space.
fn set_checksum(hdr: &mut tar::Header) {
    let bytes = hdr.as_mut_bytes();
    bytes[148..156].fill(b' ');
    let sum: u32 = bytes.iter().map(|&b| u32::from(b)).sum();
    put_octal(&mut bytes[148..155], u64::from(sum));
    bytes[155] = b' ';
}

/// Go's `splitUSTARPath`: where to split a long ASCII name into ustar
/// prefix (≤ 155) and name (≤ 100) at a `/`. Returns (prefix length, _).
fn split_ustar_path(name: &[u8]) -> Option<(usize, ())> {
    let mut length = name.len();
    if length <= 100 || !name.is_ascii() {
        return None;
    } else if length > 156 {
        length = 156;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|&b| b == b'/')?;
    let nlen = name.len() - i - 1;
    if i == 0 || nlen > 100 || nlen == 0 || i > 155 {
        return None;
    }
    Some((i, ()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_are_zero_padded_and_nul_terminated() {
        let mut f = [0xffu8; 8];
        put_octal(&mut f, 0o644);
        assert_eq!(&f, b"0000644\0");
        let mut f = [0u8; 12];
        put_octal(&mut f, 1_700_000_000);
        assert_eq!(&f, b"14524770400\0");
    }

    #[test]
    fn ustar_split_follows_go() {
        let short = b"a/b";
        assert_eq!(split_ustar_path(short), None);
        let mut long = vec![b'd'; 60];
        long.push(b'/');
        long.extend(vec![b'f'; 60]);
        assert_eq!(split_ustar_path(&long), Some((60, ())));
        // Suffix too long to fit the 100-byte name.
        let mut l2 = vec![b'd'; 10];
        l2.push(b'/');
        l2.extend(vec![b'f'; 101]);
        assert_eq!(split_ustar_path(&l2), None);
        // No slash at all.
        assert_eq!(split_ustar_path(&[b'x'; 150]), None);
        // Non-ASCII never splits.
        let mut l3 = long.clone();
        l3[0] = 0xe9;
        assert_eq!(split_ustar_path(&l3), None);
    }

    #[test]
    fn file_bytes_count_each_inode_once() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path();
        let ok = |r: io::Result<()>| r.unwrap_or_else(|e| panic!("{e}"));
        ok(fs::create_dir(p.join("sub")));
        ok(fs::write(p.join("a"), b"12345"));
        ok(fs::hard_link(p.join("a"), p.join("sub/a-link")));
        ok(fs::write(p.join("sub/b"), b"123"));
        ok(std::os::unix::fs::symlink("a", p.join("s")));
        let stats = write_layer_tar(p, io::sink(), &TarOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(stats.file_bytes, 8);
    }

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(99), 2);
        assert_eq!(digits(100), 3);
    }
}
