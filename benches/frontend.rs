//! Frontend hot paths: parse + plan of the test corpus, of a large generated
//! Dockerfile, and the shell lexer.
//!
//! `cargo bench -p kiln-benches`

#![allow(clippy::disallowed_methods, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kiln_frontend::shell::Lexer;
use kiln_frontend::{BuildOptions, Offline, SourceFile};

fn corpus() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/frontend/ok");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let case = entry.unwrap().path();
        // Cases that need build options or base images are planned with
        // defaults here; all of them still plan.
        if let Ok(text) = std::fs::read_to_string(case.join("Dockerfile")) {
            out.push((case.display().to_string(), text));
        }
    }
    out.sort();
    out
}

fn plan(text: &str) -> usize {
    let file = SourceFile::new("Dockerfile", text);
    match kiln_frontend::plan(&file, &BuildOptions::default(), &Offline) {
        Ok(p) => p.definition.graph.len(),
        Err(_) => 0,
    }
}

fn benches(c: &mut Criterion) {
    let corpus = corpus();
    let bytes: usize = corpus.iter().map(|(_, t)| t.len()).sum();
    let mut g = c.benchmark_group("frontend");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("plan testdata corpus", |b| {
        b.iter(|| {
            corpus
                .iter()
                .map(|(_, t)| plan(black_box(t)))
                .sum::<usize>()
        })
    });

    let large = kiln_benches::large_dockerfile(500);
    g.throughput(Throughput::Bytes(large.len() as u64));
    g.bench_function("parse 500-stage Dockerfile", |b| {
        b.iter(|| {
            let file = SourceFile::new("Dockerfile", black_box(large.as_str()));
            kiln_frontend::parse(&file)
                .map(|d| d.stages.len())
                .unwrap_or(0)
        })
    });
    g.bench_function("plan 500-stage Dockerfile", |b| {
        b.iter(|| plan(black_box(&large)))
    });

    let word = kiln_benches::substitution_word(1000);
    let env: Vec<(String, String)> =
        vec![("A".into(), "abcxyz".into()), ("B".into(), String::new())];
    let lex = Lexer::new('\\');
    g.throughput(Throughput::Bytes(word.len() as u64));
    g.bench_function("shell lexer, 1000 substitutions", |b| {
        b.iter(|| {
            lex.process_word(black_box(&word), &env)
                .map(|p| p.result.len())
                .unwrap_or(0)
        })
    });
    g.finish();
}

criterion_group!(frontend, benches);
criterion_main!(frontend);
