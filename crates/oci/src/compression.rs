//! Layer compression: detection by magic bytes, decompression of every format
//! `ADD` and image layers use, and deterministic compressing writers.
//!
//! Determinism is the point of the writers: the same tar must give the same
//! blob digest on every machine, or cache hits and reproducible builds break.
//! gzip streams get a fixed header (mtime 0, no file name, OS byte 255
//! "unknown", as Go's `compress/gzip` writes), and the compressors are the
//! pinned versions vendored by Cargo (zlib-rs, libzstd), single-threaded. The
//! output is deterministic per kiln build, not byte-identical to Go's
//! compressors (no two deflate implementations are).
//!
//! Defaults follow BuildKit: gzip at level 6 (Go's `DefaultCompression`, what
//! containerd's differ uses), zstd at level 3 (klauspost's `SpeedDefault`, which
//! is zstd level 3).
//!
//! Compressors are fed in fixed-size chunks ([`CHUNK`]) whatever the sizes of
//! the caller's writes: deflate implementations may emit different (equally
//! valid) streams for the same bytes fed in different pieces, and the pieces a
//! layer arrives in (pipes, decompressors) are not under our control.
//!
//! A parallel compressor can slot in later as another [`Encoder`] variant:
//! callers only see `Compression::encoder(writer) -> Encoder` and
//! `Encoder::finish()`.

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::media::{self, MediaTypes};

/// The compressors' input chunk size.
pub const CHUNK: usize = 128 << 10;

/// Bytes [`detect`] looks at; 512 covers the tar header's `ustar` magic.
pub const DETECT_LEN: usize = 512;

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressionError {
    /// An algorithm name kiln does not know.
    #[error("unknown compression {0:?}: expected uncompressed, gzip or zstd")]
    UnknownName(String),
    /// A level outside the algorithm's range.
    #[error("invalid {name} compression level {level}: expected {range}")]
    Level {
        name: &'static str,
        level: i64,
        range: &'static str,
    },
}

/// How a layer blob is compressed, with the level (which determines the bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Compression {
    /// The tar as is.
    Uncompressed,
    /// gzip, levels 0–9.
    Gzip { level: u32 },
    /// zstd, levels 1–22.
    Zstd { level: i32 },
}

impl Default for Compression {
    /// gzip level 6, BuildKit's default.
    fn default() -> Self {
        Compression::gzip()
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Uncompressed => f.write_str("uncompressed"),
            Compression::Gzip { level } => write!(f, "gzip (level {level})"),
            Compression::Zstd { level } => write!(f, "zstd (level {level})"),
        }
    }
}

impl Compression {
    /// BuildKit's gzip level.
    pub const DEFAULT_GZIP_LEVEL: u32 = 6;
    /// BuildKit's zstd level.
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    /// gzip at the default level.
    pub fn gzip() -> Self {
        Compression::Gzip {
            level: Self::DEFAULT_GZIP_LEVEL,
        }
    }

    /// zstd at the default level.
    pub fn zstd() -> Self {
        Compression::Zstd {
            level: Self::DEFAULT_ZSTD_LEVEL,
        }
    }

    /// Parses BuildKit's `compression=` / `compression-level=` exporter options.
    pub fn parse(name: &str, level: Option<i64>) -> Result<Self, CompressionError> {
        let c = match (name, level) {
            ("uncompressed", None) => Compression::Uncompressed,
            ("uncompressed", Some(l)) => {
                return Err(CompressionError::Level {
                    name: "uncompressed",
                    level: l,
                    range: "no level",
                });
            }
            ("gzip", None) => Compression::gzip(),
            ("gzip", Some(l)) => Compression::Gzip {
                level: u32::try_from(l).unwrap_or(u32::MAX),
            },
            ("zstd", None) => Compression::zstd(),
            ("zstd", Some(l)) => Compression::Zstd {
                level: i32::try_from(l).unwrap_or(i32::MAX),
            },
            (other, _) => return Err(CompressionError::UnknownName(other.to_owned())),
        };
        c.validate().map_err(|e| match (e, level) {
            (CompressionError::Level { name, range, .. }, Some(l)) => CompressionError::Level {
                name,
                level: l,
                range,
            },
            (e, _) => e,
        })?;
        Ok(c)
    }

    /// Checks the level is in range.
    pub fn validate(&self) -> Result<(), CompressionError> {
        match *self {
            Compression::Uncompressed => Ok(()),
            Compression::Gzip { level } if level <= 9 => Ok(()),
            Compression::Gzip { level } => Err(CompressionError::Level {
                name: "gzip",
                level: i64::from(level),
                range: "0 to 9",
            }),
            Compression::Zstd { level } if (1..=22).contains(&level) => Ok(()),
            Compression::Zstd { level } => Err(CompressionError::Level {
                name: "zstd",
                level: i64::from(level),
                range: "1 to 22",
            }),
        }
    }

    /// `uncompressed`, `gzip` or `zstd`.
    pub fn name(&self) -> &'static str {
        match self {
            Compression::Uncompressed => "uncompressed",
            Compression::Gzip { .. } => "gzip",
            Compression::Zstd { .. } => "zstd",
        }
    }

    /// The stream format this compression produces.
    pub fn format(&self) -> Format {
        match self {
            Compression::Uncompressed => Format::Tar,
            Compression::Gzip { .. } => Format::Gzip,
            Compression::Zstd { .. } => Format::Zstd,
        }
    }

    /// The media type of a layer blob with this compression. zstd has no
    /// Docker media type and always gets the OCI one (as BuildKit does).
    pub fn layer_media_type(&self, types: MediaTypes) -> &'static str {
        match (self, types) {
            (Compression::Uncompressed, MediaTypes::Oci) => media::OCI_LAYER_TAR,
            (Compression::Uncompressed, MediaTypes::Docker) => media::DOCKER_LAYER_TAR,
            (Compression::Gzip { .. }, MediaTypes::Oci) => media::OCI_LAYER_GZIP,
            (Compression::Gzip { .. }, MediaTypes::Docker) => media::DOCKER_LAYER_GZIP,
            (Compression::Zstd { .. }, _) => media::OCI_LAYER_ZSTD,
        }
    }

    /// A writer that compresses into `w`. Call [`Encoder::finish`] at the end.
    pub fn encoder<W: Write>(&self, w: W) -> io::Result<Encoder<W>> {
        self.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(match *self {
            Compression::Uncompressed => Encoder {
                inner: Inner::Plain(w),
                buf: Vec::new(),
            },
            // Blocks compressed on all cores, same bytes whatever their
            // number (see `pgzip`).
            Compression::Gzip { level } => Encoder {
                inner: Inner::Gzip(crate::pgzip::ParallelGzip::new(w, level)),
                buf: Vec::new(),
            },
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(w, level)?;
                enc.include_checksum(true)?;
                // zstd's multithreaded mode: its output depends on the
                // parameters, not on the number of workers (as long as there
                // is at least one), so every machine writes the same bytes.
                enc.multithread(zstd_workers())?;
                Encoder {
                    inner: Inner::Zstd(enc),
                    buf: Vec::with_capacity(CHUNK),
                }
            }
        })
    }
}

/// Workers for zstd: the cores, at least one (one worker still selects the
/// multithreaded format, whose bytes do not depend on the count).
fn zstd_workers() -> u32 {
    std::thread::available_parallelism()
        .map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
        .max(1)
}

/// A compressing writer made by [`Compression::encoder`].
pub struct Encoder<W: Write> {
    inner: Inner<W>,
    /// Input waiting for a full [`CHUNK`] (unused when uncompressed).
    buf: Vec<u8>,
}

enum Inner<W: Write> {
    Plain(W),
    Gzip(crate::pgzip::ParallelGzip<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Plain(_) => "uncompressed",
            Inner::Gzip(_) => "gzip",
            Inner::Zstd(_) => "zstd",
        };
        f.debug_tuple("Encoder").field(&kind).finish()
    }
}

impl<W: Write> Encoder<W> {
    /// Writes the stream trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.feed_buffered()?;
        match self.inner {
            Inner::Plain(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Inner::Gzip(g) => g.finish(),
            Inner::Zstd(z) => z.finish(),
        }
    }

    /// Hands the buffered input to the compressor.
    fn feed_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match &mut self.inner {
            Inner::Plain(w) => w.write_all(&self.buf)?,
            Inner::Gzip(g) => g.write_all(&self.buf)?,
            Inner::Zstd(z) => z.write_all(&self.buf)?,
        }
        self.buf.clear();
        Ok(())
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(w) => return w.write(data),
            // It buffers whole blocks itself.
            Inner::Gzip(g) => return g.write(data),
            Inner::Zstd(_) => {}
        }
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.feed_buffered()?;
        }
        Ok(n)
    }

    /// Passes buffered input to the compressor only when a chunk is full, so a
    /// flush does not change the output; flushes the underlying writer.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.flush(),
            Inner::Gzip(g) => g.flush(),
            Inner::Zstd(z) => z.get_mut().flush(),
        }
    }
}

/// A stream format recognised by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// A tar archive (`ustar` magic at offset 257).
    Tar,
    /// gzip (`1f 8b 08`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (frame magic `28 b5 2f fd`, or a skippable frame).
    Zstd,
    /// None of the above (for layers: treated as an uncompressed tar, as
    /// Docker does; an empty tar has no magic).
    Unknown,
}

impl Format {
    /// Whether this is a compression format (not tar/unknown).
    pub fn is_compressed(self) -> bool {
        matches!(
            self,
            Format::Gzip | Format::Bzip2 | Format::Xz | Format::Zstd
        )
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Tar => "tar",
            Format::Gzip => "gzip",
            Format::Bzip2 => "bzip2",
            Format::Xz => "xz",
            Format::Zstd => "zstd",
            Format::Unknown => "unknown",
        })
    }
}

/// Detects the format of a stream from its first bytes (up to [`DETECT_LEN`];
/// fewer bytes can only detect the formats whose magic fits).
pub fn detect(header: &[u8]) -> Format {
    if header.starts_with(&[0x1f, 0x8b, 0x08]) {
        Format::Gzip
    } else if header.starts_with(b"BZh") {
        Format::Bzip2
    } else if header.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Format::Xz
    } else if header.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (header.len() >= 4 && header[0] & 0xf0 == 0x50 && header[1..4] == [0x2a, 0x4d, 0x18])
    {
        Format::Zstd
    } else if header.len() >= 262 && &header[257..262] == b"ustar" {
        Format::Tar
    } else {
        Format::Unknown
    }
}

/// A stream whose first bytes were read by [`peek`], put back in front.
pub type Peeked<R> = io::Chain<io::Cursor<Vec<u8>>, R>;

/// Reads up to [`DETECT_LEN`] bytes of `r` and returns them with a reader that
/// yields the whole stream again.
pub fn peek<R: Read>(mut r: R) -> io::Result<(Vec<u8>, Peeked<R>)> {
    let mut head = vec![0u8; DETECT_LEN];
    let mut n = 0;
    while n < DETECT_LEN {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(n);
    Ok((head.clone(), io::Cursor::new(head).chain(r)))
}

/// Detects the format of `r` and returns it with a reader of the decompressed
/// stream (the input itself for [`Format::Tar`] and [`Format::Unknown`]).
/// Concatenated gzip members, zstd frames, bzip2 and xz streams are all read, as
/// Go's readers do.
pub fn decompress<'a, R: Read + 'a>(r: R) -> io::Result<(Format, Box<dyn Read + 'a>)> {
    let (head, r) = peek(r)?;
    let format = detect(&head);
    let reader: Box<dyn Read + 'a> = match format {
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Format::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        Format::Tar | Format::Unknown => Box::new(r),
    };
    Ok((format, reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        // Larger than several CHUNKs, compressible but not trivially.
        let data: Vec<u8> = (0..600_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 27) as u8 ^ (i % 97) as u8)
            .collect();
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "file", &data[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        let mut e = c.encoder(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn roundtrip(data: &[u8]) -> (Format, Vec<u8>) {
        let (f, mut r) = decompress(data).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        (f, out)
    }

    #[test]
    fn detect_magic_bytes() {
        assert_eq!(detect(&[0x1f, 0x8b, 0x08, 0]), Format::Gzip);
        assert_eq!(detect(b"BZh91AY&SY"), Format::Bzip2);
        assert_eq!(detect(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]), Format::Xz);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Format::Zstd);
        assert_eq!(detect(&[0x50, 0x2a, 0x4d, 0x18]), Format::Zstd); // skippable
        assert_eq!(detect(&[0x5f, 0x2a, 0x4d, 0x18]), Format::Zstd);
        assert_eq!(detect(&sample_tar()), Format::Tar);
        assert_eq!(detect(&[0u8; 1024]), Format::Unknown); // empty tar
        assert_eq!(detect(b""), Format::Unknown);
        assert_eq!(detect(&[0x1f, 0x8b]), Format::Unknown); // too short
        assert_eq!(detect(b"hello world"), Format::Unknown);
    }

    #[test]
    fn round_trips_all_formats() {
        let tar = sample_tar();
        for c in [
            Compression::Uncompressed,
            Compression::gzip(),
            Compression::Gzip { level: 0 },
            Compression::Gzip { level: 9 },
            Compression::zstd(),
            Compression::Zstd { level: 19 },
        ] {
            let blob = compress(c, &tar);
            let (f, out) = roundtrip(&blob);
            assert_eq!(f, c.format(), "{c}");
            assert_eq!(out, tar, "{c}");
        }
        // bzip2 and xz: decompression only (ADD needs them).
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&tar).unwrap();
        assert_eq!(
            roundtrip(&bz.finish().unwrap()),
            (Format::Bzip2, tar.clone())
        );
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&tar).unwrap();
        assert_eq!(roundtrip(&xz.finish().unwrap()), (Format::Xz, tar.clone()));
        // Short inputs pass through.
        assert_eq!(roundtrip(b"ab"), (Format::Unknown, b"ab".to_vec()));
    }

    #[test]
    fn multi_member_streams_are_read_whole() {
        let mut two = compress(Compression::gzip(), b"hello ");
        two.extend(compress(Compression::gzip(), b"world"));
        assert_eq!(roundtrip(&two).1, b"hello world");
        let mut z = compress(Compression::zstd(), b"hello ");
        z.extend(compress(Compression::zstd(), b"world"));
        assert_eq!(roundtrip(&z).1, b"hello world");
    }

    #[test]
    fn output_is_deterministic() {
        let tar = sample_tar();
        for c in [
            Compression::gzip(),
            Compression::zstd(),
            Compression::Gzip { level: 1 },
        ] {
            assert_eq!(compress(c, &tar), compress(c, &tar), "{c}");
            // Chunking of the writes does not change the bytes.
            let mut e = c.encoder(Vec::new()).unwrap();
            for (i, chunk) in tar.chunks(7777).enumerate() {
                e.write_all(chunk).unwrap();
                if i % 3 == 0 {
                    e.flush().unwrap();
                }
            }
            assert_eq!(e.finish().unwrap(), compress(c, &tar), "{c}");
        }
    }

    #[test]
    fn gzip_header_is_fixed() {
        // ID1 ID2 CM FLG | MTIME (4) | XFL OS
        let b = compress(Compression::gzip(), b"x");
        assert_eq!(&b[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        let b = compress(Compression::Gzip { level: 9 }, b"x");
        assert_eq!(&b[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
        let b = compress(Compression::Gzip { level: 1 }, b"x");
        assert_eq!(&b[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255]);
    }

    #[test]
    fn parse_and_levels() {
        assert_eq!(Compression::parse("gzip", None), Ok(Compression::gzip()));
        assert_eq!(
            Compression::parse("zstd", Some(19)),
            Ok(Compression::Zstd { level: 19 })
        );
        assert_eq!(
            Compression::parse("uncompressed", None),
            Ok(Compression::Uncompressed)
        );
        assert!(Compression::parse("gzip", Some(10)).is_err());
        assert!(Compression::parse("gzip", Some(-1)).is_err());
        assert!(Compression::parse("zstd", Some(0)).is_err());
        assert!(Compression::parse("zstd", Some(23)).is_err());
        assert!(Compression::parse("uncompressed", Some(1)).is_err());
        let e = Compression::parse("lz4", None).unwrap_err();
        assert!(e.to_string().contains("lz4"));
        assert!(Compression::Gzip { level: 10 }.encoder(Vec::new()).is_err());
        assert_eq!(Compression::default(), Compression::Gzip { level: 6 });
    }

    #[test]
    fn media_types() {
        assert_eq!(
            Compression::gzip().layer_media_type(MediaTypes::Oci),
            media::OCI_LAYER_GZIP
        );
        assert_eq!(
            Compression::gzip().layer_media_type(MediaTypes::Docker),
            media::DOCKER_LAYER_GZIP
        );
        assert_eq!(
            Compression::zstd().layer_media_type(MediaTypes::Docker),
            media::OCI_LAYER_ZSTD
        );
        assert_eq!(
            Compression::Uncompressed.layer_media_type(MediaTypes::Oci),
            media::OCI_LAYER_TAR
        );
    }

    #[test]
    fn serde_form() {
        let j = serde_json::to_string(&Compression::gzip()).unwrap();
        assert_eq!(j, r#"{"type":"gzip","level":6}"#);
        let u: Compression = serde_json::from_str(r#"{"type":"uncompressed"}"#).unwrap();
        assert_eq!(u, Compression::Uncompressed);
    }
}

#[cfg(test)]
mod zstd_tests {
    use std::io::Write;

    fn zstd_mt(data: &[u8], workers: u32) -> Vec<u8> {
        let mut e =
            zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap_or_else(|e| panic!("{e}"));
        e.include_checksum(true).unwrap_or_else(|e| panic!("{e}"));
        e.multithread(workers).unwrap_or_else(|e| panic!("{e}"));
        e.write_all(data).unwrap_or_else(|e| panic!("{e}"));
        e.finish().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The premise of kiln's zstd layers: one worker or several, same bytes.
    #[test]
    fn zstd_multithreaded_output_does_not_depend_on_workers() {
        let data: Vec<u8> = (0..(24u32 << 20))
            .map(|i| {
                (i.wrapping_mul(2654435761) >> 13) as u8 & if i % 3 == 0 { 0xff } else { 0x0f }
            })
            .collect();
        let one = zstd_mt(&data, 1);
        assert_eq!(zstd_mt(&data, 2), one);
        assert_eq!(zstd_mt(&data, 4), one);
        assert_eq!(zstd::decode_all(&one[..]).unwrap_or_default(), data);
    }
}
