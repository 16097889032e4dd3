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
