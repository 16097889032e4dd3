//! The unpacked size of a layer, counted as its tar streams by.
//!
//! kiln's one definition of a layer's size (what `kiln images`, `inspect`,
//! `history` and `du` show) is Docker's: the bytes of the regular files the
//! layer holds, each file once (a hard link adds nothing). It is a property
//! of the layer's content, so the same diffID has the same size whether it
//! was imported, pulled, loaded or built, before and after it is unpacked.
//!
//! [`UnpackedSize`] wraps a tar stream and counts it on the way through
//! (ustar, GNU and PAX headers; a PAX `size` record overrides the header's),
//! so that ingesting, verifying or unpacking a layer learns its size in the
//! same pass. The directory of an unpacked or built layer gives the same
//! number when walked (regular files, each inode once).

use std::io::{self, Read};

const BLOCK: usize = 512;
/// PAX extended headers larger than this are skipped, not parsed (a `size`
/// record in them is then not seen; real ones are a few hundred bytes).
const MAX_PAX: u64 = 1 << 20;

/// A reader that passes a tar stream through and counts the bytes of the
/// regular files in it. Malformed input is not an error here (the reader of
/// the stream reports it); the count is then of what could be parsed.
#[derive(Debug)]
pub struct UnpackedSize<R> {
    inner: R,
    parser: Parser,
}

impl<R: Read> UnpackedSize<R> {
    pub fn new(inner: R) -> Self {
        UnpackedSize {
            inner,
            parser: Parser::default(),
        }
    }

    /// The bytes of regular files seen so far.
    pub fn size(&self) -> u64 {
        self.parser.total
    }

    /// The inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for UnpackedSize<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.parser.feed(&buf[..n]);
        Ok(n)
    }
}

#[derive(Debug)]
struct Parser {
    header: [u8; BLOCK],
    filled: usize,
    /// Bytes of entry data (and padding) still to pass before the next header.
    skip: u64,
    /// The data of a PAX extended header being collected, and how much of
    /// `skip` is its data (the rest is padding).
    pax: Option<(Vec<u8>, u64)>,
    /// A PAX `size` for the next entry.
    size_override: Option<u64>,
    total: u64,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            header: [0; BLOCK],
            filled: 0,
            skip: 0,
            pax: None,
            size_override: None,
            total: 0,
        }
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64)
}

/// A tar numeric field: octal text, or base-256 when the high bit is set.
fn number(field: &[u8]) -> u64 {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.saturating_mul(256).saturating_add(u64::from(*b));
        }
        return v;
    }
    let mut v: u64 = 0;
    for &b in field {
        match b {
            b'0'..=b'7' => v = v.saturating_mul(8).saturating_add(u64::from(b - b'0')),
            b' ' | 0 if v == 0 => {}
            _ => break,
        }
    }
    v
}

/// The `size` record of PAX extended header data (`"<len> size=<n>\n"`).
fn pax_size(data: &[u8]) -> Option<u64> {
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        if len <= space || len > rest.len() {
            return found;
        }
        let record = &rest[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(v) = record.strip_prefix(b"size=") {
            found = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
        }
        rest = &rest[len..];
    }
    found
}

impl Parser {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip.min(data.len() as u64)).unwrap_or(data.len());
                if let Some((buf, want)) = &mut self.pax {
                    let take = usize::try_from((*want).min(n as u64)).unwrap_or(n);
                    buf.extend_from_slice(&data[..take]);
                    *want -= take as u64;
                }
                self.skip -= n as u64;
                data = &data[n..];
                if self.skip == 0
                    && let Some((buf, _)) = self.pax.take()
                {
                    self.size_override = pax_size(&buf);
                }
                continue;
            }
            let n = (BLOCK - self.filled).min(data.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == BLOCK {
                self.filled = 0;
                self.header_done();
            }
        }
    }

    fn header_done(&mut self) {
        let h = &self.header;
        if h.iter().all(|&b| b == 0) {
            return; // end-of-archive blocks
        }
        let kind = h[156];
        let header_size = number(&h[124..136]);
        match kind {
            b'x' => {
                // A PAX header for the next entry: collect its records.
                self.pax = (header_size <= MAX_PAX)
                    .then(|| (Vec::with_capacity(header_size as usize), header_size));
                self.skip = padded(header_size);
            }
            b'g' | b'L' | b'K' => self.skip = padded(header_size),
            _ => {
                let size = self.size_override.take().unwrap_or(header_size);
                // Regular files (and GNU sparse and contiguous files) hold
                // data; links, directories, devices and FIFOs do not.
                if matches!(kind, b'0' | 0 | b'7' | b'S') {
                    self.total = self.total.saturating_add(size);
                }
                let data = if matches!(kind, b'1' | b'2' | b'3' | b'4' | b'5' | b'6') {
                    0
                } else {
                    size
                };
                self.skip = padded(data);
            }
        }
        if self.skip == 0
            && let Some((buf, _)) = self.pax.take()
        {
            self.size_override = pax_size(&buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn count(tar: &[u8], chunk: usize) -> u64 {
        let mut r = UnpackedSize::new(tar);
        let mut buf = vec![0; chunk];
        let mut out = Vec::new();
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, tar, "the stream passes through unchanged");
        r.size()
    }

    /// What the `tar` crate reads: regular entries' sizes.
    fn reference(tar: &[u8]) -> u64 {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type().is_file())
            .map(|e| e.size())
            .sum()
    }

    #[test]
    fn counts_regular_files_in_every_header_format() {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o755);
        dir.set_cksum();
        b.append_data(&mut dir, "d/", &[][..]).unwrap();
        for (name, len) in [("d/a", 1usize), ("d/b", 511), ("d/c", 512), ("d/e", 70_000)] {
            let mut h = tar::Header::new_ustar();
            h.set_size(len as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &vec![7u8; len][..]).unwrap();
        }
        // A long name (GNU `L` entry with the crate's GNU header).
        let long = format!("d/{}", "x".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_size(33);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, &long, &[1u8; 33][..]).unwrap();
        // A hard link and a symlink: no data.
        let mut l = tar::Header::new_ustar();
        l.set_entry_type(tar::EntryType::Link);
        l.set_size(0);
        l.set_cksum();
        b.append_link(&mut l, "d/hard", "d/a").unwrap();
        let mut s = tar::Header::new_ustar();
        s.set_entry_type(tar::EntryType::Symlink);
        s.set_size(0);
        s.set_cksum();
        b.append_link(&mut s, "d/sym", "a").unwrap();
        // A PAX header before an entry (long link target, path records).
        let mut p = tar::Header::new_ustar();
        p.set_size(5);
        p.set_mode(0o644);
        p.set_cksum();
        b.append_pax_extensions([("path", &b"d/paxed"[..]), ("mtime", b"1.5")])
            .unwrap();
        b.append_data(&mut p, "ignored", &[2u8; 5][..]).unwrap();
        let tar = b.into_inner().unwrap();
        let want = 1 + 511 + 512 + 70_000 + 33 + 5;
        assert_eq!(reference(&tar), want);
        for chunk in [1, 7, 512, 513, 4096, 1 << 20] {
            assert_eq!(count(&tar, chunk), want, "chunk {chunk}");
        }
    }

    #[test]
    fn pax_size_overrides_the_header() {
        // A header that says 0 and a PAX record that says 10.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"10"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(10);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f", &[3u8; 10][..]).unwrap();
        let mut tar = b.into_inner().unwrap();
        // The entry's header follows the PAX header and its one data block.
        tar[1024 + 124..1024 + 136].copy_from_slice(b"00000000000\0");
        assert_eq!(count(&tar, 100), 10);
        assert_eq!(pax_size(b"11 size=42\n"), Some(42));
        assert_eq!(pax_size(b"garbage"), None);
    }

    #[test]
    fn base256_sizes_and_garbage() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[11] = 5;
        field[10] = 1;
        assert_eq!(number(&field), 261);
        assert_eq!(number(b"00000001750\0"), 1000);
        assert_eq!(number(b"     17 \0\0\0\0"), 15);
        // Not a tar: counted as whatever parses, never a panic.
        let junk: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let _ = count(&junk, 333);
    }
}
