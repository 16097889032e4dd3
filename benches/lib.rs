//! Deterministic workload generators for kiln's benchmarks.
//!
//! Benchmarks prove speed; tests prove behaviour. Nothing here asserts a
//! timing. The generators are pure functions of their parameters, so every run
//! measures the same input.

use std::fmt::Write as _;

/// A multi-stage Dockerfile with `stages` stages. Each stage declares and uses
/// ARGs and ENVs, copies from the context and from the previous stage, and runs
/// a few commands, so every part of the frontend is exercised. About 20 lines
/// per stage.
pub fn large_dockerfile(stages: usize) -> String {
    let mut s = String::from(
        "# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm-slim\nARG VERSION=1.0\n",
    );
    for i in 0..stages {
        let _ = writeln!(s, "FROM ${{BASE}} AS stage{i}");
        let _ = writeln!(s, "ARG VERSION\nARG LOCAL_{i}=value-{i}");
        let _ = writeln!(
            s,
            "ENV APP_HOME=/opt/app{i} \\\n    LEVEL=\"{i}\" \\\n    PATH=/opt/app{i}/bin:$PATH"
        );
        let _ = writeln!(s, "WORKDIR $APP_HOME");
        let _ = writeln!(
            s,
            "LABEL org.example.stage=\"{i}\" org.example.version=$VERSION"
        );
        let _ = writeln!(s, "COPY --chown=1000:1000 src/{i}/ ./src/");
        if i > 0 {
            let _ = writeln!(
                s,
                "COPY --from=stage{} /opt/app{}/out ./deps/",
                i - 1,
                i - 1
            );
        }
        let _ = writeln!(
            s,
            "RUN --mount=type=cache,target=/root/.cache,id=c{i} \\\n    make -C src VERSION=$VERSION LEVEL=${{LEVEL:-0}} \\\n    && install -D out/app ./out/app"
        );
        let _ = writeln!(s, "RUN <<EOF\nset -e\necho stage {i}\nEOF");
        let _ = writeln!(s, "EXPOSE {}/tcp", 8000 + i % 1000);
        let _ = writeln!(s, "USER 1000:1000\nCMD [\"./out/app\"]\n");
    }
    s
}

/// A word with `n` substitutions of every form, for the shell lexer.
pub fn substitution_word(n: usize) -> String {
    let forms = [
        "$A", "${A}", "${A:-d}", "${B-d}", "${A:+x}", "${A#a*}", "${A%%*z}", "${A/a/b}", "\\$A",
        "'$A'", "\"$A\"",
    ];
    let mut s = String::new();
    for i in 0..n {
        s.push_str(forms[i % forms.len()]);
        s.push('-');
    }
    s
}

/// Writes a context of `dirs` × `files` small text files (sizes 2–10 kB,
/// from a fixed LCG) under `root/src`, the shape of the peers benchmark's
/// big context at a size a micro-benchmark can iterate on. Returns the
/// total bytes written.
pub fn write_context(root: &std::path::Path, dirs: usize, files: usize) -> std::io::Result<u64> {
    let mut seed: u64 = 12345;
    let mut total = 0u64;
    for d in 0..dirs {
        let dir = root.join("src").join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir)?;
        for f in 0..files {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = 2000 + (seed % 8000) as usize;
            let line = format!("{d}/{f} {seed:x}\n");
            let body: Vec<u8> = line.bytes().cycle().take(size).collect();
            std::fs::write(dir.join(format!("f{f:03}.txt")), &body)?;
            total += size as u64;
        }
    }
    Ok(total)
}
