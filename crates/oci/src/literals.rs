//! Deflate of data that LZ77 cannot shrink: one dynamic-Huffman block of
//! literals only (RFC 1951 §3.2.7), or stored blocks when even that does
//! not save a byte.
//!
//! A deflater at level 6 searches its hash chains at every position for
//! matches; on data without any worth taking (base64, hex, encrypted or
//! already compressed files) it finds none and emits literals anyway, at
//! about 100 MiB/s per core with libdeflate. Coding those literals straight
//! from a histogram gives the same size (the code is the same Huffman code
//! of the bytes) several times as fast. [`crate::pgzip`] decides per block,
//! from a sample, whether a block is such data.
//!
//! The output is a function of the input only: code lengths come from a
//! Huffman tree whose ties are broken by symbol, limited to 15 bits by a
//! fixed procedure, and canonical codes as RFC 1951 assigns them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Literal/length symbols sent: the 256 bytes and end-of-block.
const LITERALS: usize = 257;
const END_OF_BLOCK: usize = 256;
/// Distance code lengths sent: two codes of one bit, unused (zlib sends
/// the same, the shape every inflater accepts for a block without matches).
const DISTANCE_LENGTHS: [u8; 2] = [1, 1];
/// Order of the code length code lengths in the block header.
const CL_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];
/// Longest literal code and longest code length code.
const MAX_BITS: usize = 15;
const MAX_CL_BITS: usize = 7;
/// Largest stored block.
const STORED_MAX: usize = 65_535;

/// The Huffman code of a block's literals and the size it codes to.
struct Plan {
    lengths: [u8; LITERALS],
    cl_lengths: [u8; 19],
    /// Code length code entries sent (HCLEN + 4).
    hclen: usize,
    /// Bits of the whole block, header included.
    bits: u64,
}

fn plan(data: &[u8]) -> Plan {
    let mut freq = [0u64; LITERALS];
    // Four interleaved histograms: consecutive equal bytes would otherwise
    // stall on one counter.
    let mut h = [[0u64; 256]; 4];
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        h[0][usize::from(c[0])] += 1;
        h[1][usize::from(c[1])] += 1;
        h[2][usize::from(c[2])] += 1;
        h[3][usize::from(c[3])] += 1;
    }
    for &b in chunks.remainder() {
        h[0][usize::from(b)] += 1;
    }
    for (i, f) in freq.iter_mut().take(256).enumerate() {
        *f = h[0][i] + h[1][i] + h[2][i] + h[3][i];
    }
    freq[END_OF_BLOCK] = 1;
    let lengths: [u8; LITERALS] = code_lengths(&freq, MAX_BITS);
    let mut cl_freq = [0u64; 19];
    for &l in lengths.iter().chain(&DISTANCE_LENGTHS) {
        cl_freq[usize::from(l)] += 1;
    }
    let cl_lengths: [u8; 19] = code_lengths(&cl_freq, MAX_CL_BITS);
    let hclen = CL_ORDER
        .iter()
        .rposition(|&s| cl_lengths[s] != 0)
        .map_or(4, |p| (p + 1).max(4));
    let mut bits = 3 + 5 + 5 + 4 + 3 * hclen as u64;
    for &l in lengths.iter().chain(&DISTANCE_LENGTHS) {
        bits += u64::from(cl_lengths[usize::from(l)]);
    }
    for (f, &l) in freq.iter().zip(&lengths) {
        bits += f * u64::from(l);
    }
    Plan {
        lengths,
        cl_lengths,
        hclen,
        bits,
    }
}

/// Bytes of `data` as one literals-only block (header included).
pub fn literal_size(data: &[u8]) -> u64 {
    plan(data).bits.div_ceil(8)
}

/// Bytes of `data` as stored blocks.
pub fn stored_size(len: usize) -> u64 {
    let blocks = len.div_ceil(STORED_MAX).max(1);
    (len + 5 * blocks) as u64
}

/// `data` as a complete raw deflate stream: one final literals-only block,
/// or stored blocks when those are no larger.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let p = plan(data);
    if p.bits.div_ceil(8) >= stored_size(data.len()) {
        return stored(data);
    }
    let codes = canonical(&p.lengths);
    let cl_codes = canonical(&p.cl_lengths);
    let mut w = Bits::with_capacity(usize::try_from(p.bits / 8 + 16).unwrap_or(0));
    w.put(1, 1); // BFINAL
    w.put(2, 2); // dynamic Huffman codes
    w.put((LITERALS - 257) as u64, 5);
    w.put((DISTANCE_LENGTHS.len() - 1) as u64, 5);
    w.put((p.hclen - 4) as u64, 4);
    for &s in &CL_ORDER[..p.hclen] {
        w.put(u64::from(p.cl_lengths[s]), 3);
    }
    for &l in p.lengths.iter().chain(&DISTANCE_LENGTHS) {
        let l = usize::from(l);
        w.put(u64::from(cl_codes[l]), u32::from(p.cl_lengths[l]));
    }
    // Code and length of each byte in one word: code in the low 16 bits.
    let mut table = [0u32; 256];
    for (b, t) in table.iter_mut().enumerate() {
        *t = u32::from(codes[b]) | (u32::from(p.lengths[b]) << 16);
    }
    for &b in data {
        let t = table[usize::from(b)];
        w.put(u64::from(t & 0xffff), t >> 16);
    }
    w.put(
        u64::from(codes[END_OF_BLOCK]),
        u32::from(p.lengths[END_OF_BLOCK]),
    );
    w.finish()
}

/// `data` as stored blocks, the last one final (an empty input is one
/// empty final block).
fn stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(usize::try_from(stored_size(data.len())).unwrap_or(0));
    let mut pieces = data.chunks(STORED_MAX).peekable();
    if pieces.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        return out;
    }
    while let Some(piece) = pieces.next() {
        out.push(u8::from(pieces.peek().is_none()));
        // A piece is at most STORED_MAX bytes, which fits in 16 bits.
        let len = u16::try_from(piece.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// Huffman code lengths of the symbols with frequencies `freq`, none
/// longer than `max` bits; unused symbols get 0. Deterministic: ties go to
/// the lower symbol. At least two symbols must be used (the callers'
/// alphabets always have two).
fn code_lengths<const N: usize>(freq: &[u64; N], max: usize) -> [u8; N] {
    let mut lengths = [0u8; N];
    let used: Vec<usize> = (0..N).filter(|&s| freq[s] > 0).collect();
    if used.len() < 2 {
        for &s in &used {
            lengths[s] = 1;
        }
        return lengths;
    }
    // The tree: leaves 0..used.len(), inner nodes after them.
    let mut parent = vec![0usize; 2 * used.len() - 1];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = used
        .iter()
        .enumerate()
        .map(|(i, &s)| Reverse((freq[s], i)))
        .collect();
    let mut next = used.len();
    while let (Some(Reverse((wa, a))), Some(Reverse((wb, b)))) = (heap.pop(), heap.pop()) {
        parent[a] = next;
        parent[b] = next;
        heap.push(Reverse((wa + wb, next)));
        next += 1;
    }
    let root = next - 1;
    // Depths from the root down (parents are created after children).
    let mut depth = vec![0usize; next];
    for n in (0..root).rev() {
        depth[n] = depth[parent[n]] + 1;
    }
    let mut count = vec![0u32; used.len().max(max) + 1];
    for &d in &depth[..used.len()] {
        count[d] += 1;
    }
    // Lengths over `max` become `max`, then the code is made complete
    // again by lengthening shorter codes (zlib's and miniz's procedure).
    let over: u32 = count[max + 1..].iter().sum();
    count.truncate(max + 1);
    count[max] += over;
    let mut total: u64 = (1..=max).map(|i| u64::from(count[i]) << (max - i)).sum();
    while total > 1u64 << max {
        count[max] -= 1;
        if let Some(i) = (1..max).rev().find(|&i| count[i] != 0) {
            count[i] -= 1;
            count[i + 1] += 2;
        }
        total -= 1;
    }
    // The most frequent symbols get the shortest codes.
    let mut order = used;
    order.sort_by_key(|&s| (Reverse(freq[s]), s));
    let mut symbols = order.into_iter();
    for (len, &n) in count.iter().enumerate().skip(1) {
        for _ in 0..n {
            if let Some(s) = symbols.next() {
                lengths[s] = u8::try_from(len).unwrap_or(u8::MAX);
            }
        }
    }
    lengths
}

/// Canonical codes of `lengths` (RFC 1951 §3.2.2), bit-reversed for
/// deflate's least-significant-bit-first order.
fn canonical<const N: usize>(lengths: &[u8; N]) -> [u16; N] {
    let mut count = [0u16; MAX_BITS + 1];
    for &l in lengths {
        count[usize::from(l)] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; MAX_BITS + 1];
    let mut code = 0u16;
    for bits in 1..=MAX_BITS {
        code = (code + count[bits - 1]) << 1;
        next[bits] = code;
    }
    let mut codes = [0u16; N];
    for (s, &l) in lengths.iter().enumerate() {
        let l = usize::from(l);
        if l != 0 {
            codes[s] = next[l].reverse_bits() >> (16 - l);
            next[l] += 1;
        }
    }
    codes
}

/// A least-significant-bit-first bit writer.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn with_capacity(n: usize) -> Bits {
        Bits {
            out: Vec::with_capacity(n),
            acc: 0,
            n: 0,
        }
    }

    /// Appends the low `len` (at most 32) bits of `v`.
    #[inline]
    fn put(&mut self, v: u64, len: u32) {
        self.acc |= v << self.n;
        self.n += len;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        while self.n > 0 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n = self.n.saturating_sub(8);
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(d: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(d)
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    fn xorshift(n: usize, mask: u8) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x as u8) & mask
            })
            .collect()
    }

    #[test]
    fn round_trips() {
        let mut skewed = Vec::new();
        // Frequencies 1, 2, 4, … 2^19 for 20 bytes: a Huffman tree 20 deep,
        // limited to 15 bits.
        for b in 0..20u8 {
            skewed.extend(std::iter::repeat_n(b, 1 << b));
        }
        let cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a".to_vec(),
            b"ab".to_vec(),
            vec![7; 100_000],
            xorshift(300_000, 0x3f),
            xorshift(200_000, 0xff),
            xorshift(70_000, 0x01),
            skewed,
            (0..=255u8).cycle().take(1 << 19).collect(),
        ];
        for data in cases {
            let d = deflate(&data);
            assert_eq!(inflate(&d), data, "{} bytes", data.len());
            assert_eq!(deflate(&data), d);
            assert!(d.len() as u64 <= stored_size(data.len()));
        }
    }

    #[test]
    fn lengths_fit_and_are_complete() {
        let mut freq = [0u64; LITERALS];
        for (i, f) in freq.iter_mut().enumerate() {
            *f = 1 << (i % 40);
        }
        let l = code_lengths(&freq, MAX_BITS);
        assert!(l.iter().all(|&x| x >= 1 && usize::from(x) <= MAX_BITS));
        let kraft: u64 = l.iter().map(|&x| 1u64 << (MAX_BITS - usize::from(x))).sum();
        assert_eq!(kraft, 1 << MAX_BITS);
    }

    #[test]
    fn incompressible_input_is_stored_and_text_like_input_is_coded() {
        let random = xorshift(1 << 19, 0xff);
        assert_eq!(deflate(&random).len() as u64, stored_size(random.len()));
        let b64ish = xorshift(1 << 19, 0x3f);
        assert!(literal_size(&b64ish) < (b64ish.len() as u64) * 77 / 100);
        assert_eq!(deflate(&b64ish).len() as u64, literal_size(&b64ish));
    }
}
