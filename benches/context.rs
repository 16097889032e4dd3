//! Context and layer hot paths: the content digest of a COPY selection with
//! a cold and a warm stat cache, `.dockerignore` matching, and writing a
//! layer tar.
//!
//! `cargo bench -p kiln-benches --bench context`

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_context::{DigestOptions, ExpandOptions, Filter, Matcher, StatCache, Tree};
use kiln_snapshot::TarOptions;

const DIRS: usize = 30;
const FILES: usize = 100;

fn digest(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = kiln_benches::write_context(dir.path(), DIRS, FILES).unwrap();
    let tree = Tree::new(dir.path().to_path_buf(), None);
    let sources = tree.expand(".", &ExpandOptions::default()).unwrap();
    let filter = Filter::default();
    let opts = DigestOptions::default();
    let mut g = c.benchmark_group("context-digest");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(20);
    // Every file read and hashed (a first build).
    g.bench_function("cold-3000-files", |b| {
        b.iter(|| {
            let mut cache = StatCache::in_memory();
            black_box(tree.digest(&sources, &filter, &mut cache, &opts).unwrap())
        })
    });
    // Only stat calls and cache lookups (a rebuild).
    let mut warm = StatCache::in_memory();
    tree.digest(&sources, &filter, &mut warm, &opts).unwrap();
    g.bench_function("warm-3000-files", |b| {
        b.iter(|| black_box(tree.digest(&sources, &filter, &mut warm, &opts).unwrap()))
    });
    g.finish();
}

fn dockerignore(c: &mut Criterion) {
    // A typical .dockerignore: directories, extensions, a `**` rule, an
    // exception.
    let m = Matcher::new(&[
        "node_modules",
        "**/*.log",
        "target/",
        ".git",
        "docs/**/*.md",
        "!docs/README.md",
        "src/d0[0-4]*/f0?7.txt",
    ])
    .unwrap();
    let paths: Vec<Vec<u8>> = (0..300)
        .flat_map(|d| (0..100).map(move |f| format!("src/d{d:03}/f{f:03}.txt").into_bytes()))
        .collect();
    let mut g = c.benchmark_group("dockerignore");
    g.throughput(Throughput::Elements(paths.len() as u64));
    g.bench_function("matches_or_parent_matches-30000-paths", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for p in &paths {
                n += usize::from(m.matches_or_parent_matches(p).unwrap());
            }
            black_box(n)
        })
    });
    g.finish();
}

fn layer_tar(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = kiln_benches::write_context(dir.path(), DIRS, FILES).unwrap();
    let mut g = c.benchmark_group("layer-tar");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(20);
    g.bench_function("write-3000-files", |b| {
        b.iter(|| {
            black_box(
                kiln_snapshot::write_layer_tar(
                    dir.path(),
                    std::io::sink(),
                    &TarOptions { mtime_clamp: None },
                )
                .unwrap(),
            )
        })
    });
    // The diffID: the same tar through SHA-256.
    g.bench_function("diffid-3000-files", |b| {
        b.iter(|| {
            let mut h = kiln_oci::HashingWriter::new(std::io::sink());
            kiln_snapshot::write_layer_tar(dir.path(), &mut h, &TarOptions { mtime_clamp: None })
                .unwrap();
            black_box(h.finish())
        })
    });
    g.finish();
}

criterion_group!(benches, digest, dockerignore, layer_tar);
criterion_main!(benches);
