//! SHA-256 while data streams by: a reader and a writer that hash what passes
//! through them and count it, so a blob's digest and size are known the moment
//! the last byte is read or written, without a second pass.

use std::io::{self, Read, Write};

use kiln_llb::Digest;
use sha2::{Digest as _, Sha256};

/// Converts a finished SHA-256 state into the project's digest type.
pub(crate) fn finish(hasher: Sha256) -> Digest {
    let bytes: [u8; 32] = hasher.finalize().into();
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    // 64 lowercase hex characters always parse: this is not input data.
    s.parse()
        .expect("a formatted SHA-256 is a valid digest string")
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A reader that hashes and counts the bytes read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest and size of everything read, and the inner reader.
    pub fn finish(self) -> (Digest, u64, R) {
        (finish(self.hasher), self.count, self.inner)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts the bytes written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest and size of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (finish(self.hasher), self.count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_and_writer_agree_with_digest_of() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = HashingReader::new(&data[..]);
        let mut sink = Vec::new();
        let mut w = HashingWriter::new(&mut sink);
        io::copy(&mut r, &mut w).ok();
        let (dr, nr, _) = r.finish();
        let (dw, nw, _) = w.finish();
        assert_eq!(dr, Digest::of(&data));
        assert_eq!(dw, Digest::of(&data));
        assert_eq!((nr, nw), (100_000, 100_000));
        assert_eq!(sink, data);
    }
}
