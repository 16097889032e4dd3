//! Layer compression: kiln's parallel deterministic gzip (libdeflate members) with
//! one thread and with all of them, against a single-stream gzip of the same
//! level, and zstd level 3; on 32 MiB of tar-like data (text with repeats and
//! an incompressible part, as layers have); and on 32 MiB of base64 text at
//! level 6 (coded as literals) and 9 (libdeflate's full search).
//!
//! `cargo bench -p kiln-benches --bench compression`

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::io::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn layer_like(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut i = 0u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while v.len() < n {
        if i % 8 == 7 {
            // An incompressible stretch (compiled code, images).
            for _ in 0..512 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
        } else {
            v.extend_from_slice(
                format!(
                    "usr/share/doc/pkg{i}/changelog line {} of the package\n",
                    i % 97
                )
                .as_bytes(),
            );
        }
        i += 1;
    }
    v.truncate(n);
    v
}

fn bench(c: &mut Criterion) {
    let data = layer_like(32 << 20);
    let mut g = c.benchmark_group("compress 32 MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for t in [1, threads] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap();
        g.bench_function(format!("kiln gzip-6, {t} thread(s)"), |b| {
            b.iter(|| {
                pool.install(|| {
                    let mut e = kiln_oci::pgzip::ParallelGzip::new(Vec::new(), 6);
                    e.write_all(black_box(&data)).unwrap();
                    e.finish().unwrap().len()
                })
            })
        });
    }
    g.bench_function("single-stream gzip-6 (flate2)", |b| {
        b.iter(|| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(black_box(&data)).unwrap();
            e.finish().unwrap().len()
        })
    });
    g.bench_function("zstd-3", |b| {
        b.iter(|| zstd::encode_all(black_box(&data[..]), 3).unwrap().len())
    });
    g.finish();

    // Base64 text (what `benches/peers.py`'s 1 GiB image holds): no match
    // worth taking, so kiln codes its blocks as literals.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b64: Vec<u8> = (0..32 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x >> 58) as usize]
        })
        .collect();
    let mut g = c.benchmark_group("compress 32 MiB of base64");
    g.throughput(Throughput::Bytes(b64.len() as u64));
    g.sample_size(10);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    g.bench_function("kiln gzip-6, 1 thread", |b| {
        b.iter(|| {
            one.install(|| {
                let mut e = kiln_oci::pgzip::ParallelGzip::new(Vec::new(), 6);
                e.write_all(black_box(&b64)).unwrap();
                e.finish().unwrap().len()
            })
        })
    });
    g.bench_function("kiln gzip-9 (full search), 1 thread", |b| {
        b.iter(|| {
            one.install(|| {
                let mut e = kiln_oci::pgzip::ParallelGzip::new(Vec::new(), 9);
                e.write_all(black_box(&b64)).unwrap();
                e.finish().unwrap().len()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
