//! Layer gzip on inputs built from arbitrary bytes: the bytes repeated
//! (blocks with matches, deflated by libdeflate) or drawn at random from
//! the bytes' own histogram (blocks without matches, coded as literals with
//! whatever skewed code lengths that histogram needs, or stored). What is
//! compressed must decompress to the input. Nothing may panic.

#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    if data.is_empty() {
        return;
    }
    // At least the four 16 KiB sample windows, up to two blocks and a bit.
    let len = (64 << 10) + data.len() * 97 % (1 << 20);
    let input: Vec<u8> = if mode & 1 == 0 {
        data.iter().copied().cycle().take(len).collect()
    } else {
        let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(mode);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                data[(x % data.len() as u64) as usize]
            })
            .collect()
    };
    let level = u32::from(mode >> 1) % 10;
    let c = kiln_oci::Compression::Gzip { level };
    let mut e = c.encoder(Vec::new()).expect("encoder");
    e.write_all(&input).expect("compress");
    let blob = e.finish().expect("finish");
    let (format, mut r) = kiln_oci::compression::decompress(&blob[..]).expect("detect");
    assert_eq!(format, kiln_oci::compression::Format::Gzip);
    let mut back = Vec::new();
    r.read_to_end(&mut back).expect("decompress");
    assert!(back == input, "gzip did not round-trip (level {level})");
});
