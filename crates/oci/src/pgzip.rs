//! Parallel gzip whose bytes do not depend on the number of threads: pigz's
//! scheme.
//!
//! The input is cut into fixed 128 KiB blocks. Each block is deflated on its
//! own, primed with the 32 KiB of input before it as the dictionary, and
//! ended with a sync flush (an empty stored block, so the pieces join on a
//! byte boundary); the last block ends the stream. One gzip header, the
//! pieces in order, then the CRC-32 and size of the whole input. Every
//! piece is a function of its block, the input before it and the level, so
//! the output is the same with one thread or sixteen, and any gzip reader
//! reads it. (The `gzp` crate's output varies between runs, which a
//! content-addressed store cannot have.)

use std::io::{self, Write};

use flate2::{Compress, FlushCompress, Status};
use rayon::prelude::*;

/// Bytes of input per independently compressed block.
pub const BLOCK: usize = 128 << 10;
/// The deflate window: how much of the preceding input primes a block.
const DICT: usize = 32 << 10;
/// Blocks compressed per parallel round (bounds memory: 4 MiB of input).
const ROUND: usize = 32;

/// A gzip writer compressing blocks on all cores (rayon's pool).
pub struct ParallelGzip<W: Write> {
    out: Option<W>,
    level: u32,
    /// Input not compressed yet.
    pending: Vec<u8>,
    /// The last [`DICT`] bytes of input already compressed.
    tail: Vec<u8>,
    crc: flate2::Crc,
    header_written: bool,
}

impl<W: Write> std::fmt::Debug for ParallelGzip<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParallelGzip")
            .field("level", &self.level)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<W: Write> ParallelGzip<W> {
    pub fn new(out: W, level: u32) -> ParallelGzip<W> {
        ParallelGzip {
            out: Some(out),
            level,
            pending: Vec::with_capacity(BLOCK * ROUND + BLOCK),
            tail: Vec::new(),
            crc: flate2::Crc::new(),
            header_written: false,
        }
    }

    fn out(&mut self) -> io::Result<&mut W> {
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))
    }

    fn header(&mut self) -> io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        // As flate2's GzBuilder writes it: no name, mtime 0, OS unknown, and
        // the extra flags zlib derives from the level.
        let xfl = match self.level {
            9.. => 2,
            0 | 1 => 4,
            _ => 0,
        };
        let h = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255];
        self.out()?.write_all(&h)?;
        self.header_written = true;
        Ok(())
    }

    /// Compresses the first `blocks` full blocks of `pending` (none of them
    /// the last of the stream) and writes them out.
    fn compress_round(&mut self, blocks: usize, finish: bool) -> io::Result<()> {
        self.header()?;
        let len = if finish {
            self.pending.len()
        } else {
            blocks * BLOCK
        };
        let data = &self.pending[..len];
        let count = if finish {
            data.len().div_ceil(BLOCK).max(1)
        } else {
            blocks
        };
        let tail = &self.tail;
        let level = self.level;
        let pieces: Vec<io::Result<Vec<u8>>> = (0..count)
            .into_par_iter()
            .map(|i| {
                let start = i * BLOCK;
                let end = (start + BLOCK).min(data.len());
                let block = &data[start..end];
                let dict: &[u8] = if i == 0 {
                    tail
                } else {
                    &data[start.saturating_sub(DICT)..start]
                };
                let last = finish && i + 1 == count;
                deflate_block(block, dict, level, last)
            })
            .collect();
        for p in pieces {
            let p = p?;
            self.out()?.write_all(&p)?;
        }
        let new_tail_start = len.saturating_sub(DICT);
        let mut tail = if len >= DICT {
            Vec::new()
        } else {
            let keep = DICT - len;
            self.tail[self.tail.len().saturating_sub(keep)..].to_vec()
        };
        tail.extend_from_slice(&self.pending[new_tail_start..len]);
        self.tail = tail;
        self.pending.drain(..len);
        Ok(())
    }

    /// Writes what is left, the trailer, and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.compress_round(0, true)?;
        let crc = self.crc.sum();
        let size = self.crc.amount();
        let out = self.out()?;
        out.write_all(&crc.to_le_bytes())?;
        out.write_all(&size.to_le_bytes())?;
        out.flush()?;
        self.out
            .take()
            .ok_or_else(|| io::Error::other("gzip stream already finished"))
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> Option<&mut W> {
        self.out.as_mut()
    }
}

impl<W: Write> Write for ParallelGzip<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.crc.update(data);
        self.pending.extend_from_slice(data);
        // Keep at least one byte back: the last block must end the stream,
        // and only `finish` knows which block is last.
        if self.pending.len() > ROUND * BLOCK {
            self.compress_round(ROUND, false)?;
        }
        Ok(data.len())
    }

    /// Compressed output depends only on the input, never on flushes.
    fn flush(&mut self) -> io::Result<()> {
        self.out()?.flush()
    }
}

/// One raw-deflate piece: `block` primed with `dict`, ended with a sync
/// flush, or with the final block when `last`.
fn deflate_block(block: &[u8], dict: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(block.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
        let status = c
            .compress_vec(&block[consumed.min(block.len())..], &mut out, flush)
            .map_err(io::Error::other)?;
        if last {
            if status == Status::StreamEnd {
                return Ok(out);
            }
            continue;
        }
        // zlib's rule: the flush is complete once all input is in and the
        // call left output space unused.
        let all_in = usize::try_from(c.total_in()).unwrap_or(usize::MAX) >= block.len();
        if all_in && out.len() < out.capacity() {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn data(n: usize) -> Vec<u8> {
        // Compressible but not trivial: words with a varying counter.
        let mut v = Vec::with_capacity(n);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(
                format!("line {i} of kiln's test data {}\n", i * 7919 % 1000).as_bytes(),
            );
            i += 1;
        }
        v.truncate(n);
        v
    }

    fn compress(input: &[u8], writes: usize, threads: usize) -> Vec<u8> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        pool.install(|| {
            let mut g = ParallelGzip::new(Vec::new(), 6);
            for chunk in input.chunks(writes.max(1)) {
                g.write_all(chunk).unwrap_or_else(|e| panic!("{e}"));
            }
            g.finish().unwrap_or_else(|e| panic!("{e}"))
        })
    }

    #[test]
    fn same_bytes_with_any_thread_count_and_write_size_and_valid_gzip() {
        for n in [
            0,
            1,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            5 * BLOCK + 77,
            (ROUND + 3) * BLOCK + 5,
        ] {
            let input = data(n);
            let one = compress(&input, 1 << 20, 1);
            for (writes, threads) in [(7, 2), (BLOCK, 4), (3 * BLOCK + 1, 3)] {
                assert_eq!(
                    compress(&input, writes, threads),
                    one,
                    "n={n} writes={writes}"
                );
            }
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap_or_else(|e| panic!("n={n}: {e}"));
            assert_eq!(back, input, "n={n}");
        }
    }
}
