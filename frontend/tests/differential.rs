//! Differential check against the `parse-dockerfile` crate, an independent
//! Dockerfile syntax parser: wherever both accept a Dockerfile from `testdata/`,
//! they must agree on where every instruction starts (keyword and line).
//!
//! `parse-dockerfile` rejects some inputs BuildKit accepts (heredocs that are
//! not at the start of RUN, several heredocs in one RUN, unknown instructions);
//! those are counted, not failed. Exceptions where `parse-dockerfile` is known
//! to disagree with BuildKit are listed in `KNOWN_DIFFERENCES` with the reason.

#![allow(clippy::print_stderr, clippy::disallowed_methods)]

use std::fs;
use std::path::{Path, PathBuf};

use kiln_frontend::{SourceFile, syntax};
use kiln_testkit::testdata;
use parse_dockerfile::Instruction;

/// Cases where `parse-dockerfile` splits instructions differently from
/// BuildKit (whose behaviour kiln follows, checked by the BuildKit test data).
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "buildkit/parser/testfiles/trailing-backslash/",
        "a line ending in an escaped escape (`\\\\`) followed by a blank line: parse-dockerfile \
         continues the instruction, BuildKit's own expected result (the `result` file) does not",
    ),
    (
        "frontend/ok/bom/",
        "parse-dockerfile does not strip a leading byte-order mark; BuildKit does",
    ),
    (
        "frontend/ok/ref-escape-4/",
        "`COPY … c:\\\\` then `RUN dir c:\\`: parse-dockerfile follows the reference's prose \
         (one instruction), BuildKit's continuation regex does not treat an escaped escape as a \
         continuation (two instructions; checked against BuildKit's frontend)",
    ),
];

fn dockerfiles(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            dockerfiles(&p, out);
        } else if p.file_name().is_some_and(|n| n == "Dockerfile") {
            out.push(p);
        }
    }
}

fn keyword_span(i: &Instruction<'_>) -> std::ops::Range<usize> {
    match i {
        Instruction::Add(x) => x.add.span.clone(),
        Instruction::Arg(x) => x.arg.span.clone(),
        Instruction::Cmd(x) => x.cmd.span.clone(),
        Instruction::Copy(x) => x.copy.span.clone(),
        Instruction::Entrypoint(x) => x.entrypoint.span.clone(),
        Instruction::Env(x) => x.env.span.clone(),
        Instruction::Expose(x) => x.expose.span.clone(),
        Instruction::From(x) => x.from.span.clone(),
        Instruction::Healthcheck(x) => x.healthcheck.span.clone(),
        Instruction::Label(x) => x.label.span.clone(),
        Instruction::Maintainer(x) => x.maintainer.span.clone(),
        Instruction::Onbuild(x) => x.onbuild.span.clone(),
        Instruction::Run(x) => x.run.span.clone(),
        Instruction::Shell(x) => x.shell.span.clone(),
        Instruction::Stopsignal(x) => x.stopsignal.span.clone(),
        Instruction::User(x) => x.user.span.clone(),
        Instruction::Volume(x) => x.volume.span.clone(),
        Instruction::Workdir(x) => x.workdir.span.clone(),
        _ => 0..0,
    }
}

#[test]
fn instruction_boundaries_agree_with_parse_dockerfile() {
    let mut files = Vec::new();
    dockerfiles(&testdata(), &mut files);
    assert!(
        files.len() > 100,
        "expected the testdata corpus, found {} files",
        files.len()
    );
    let (mut both, mut only_kiln, mut only_other, mut neither) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for path in &files {
        let bytes = fs::read(path).expect("read");
        let Ok(text) = String::from_utf8(bytes.clone()) else {
            continue;
        };
        let kiln = SourceFile::from_bytes("Dockerfile", bytes)
            .ok()
            .and_then(|f| syntax::parse(&f).ok().map(|ast| (f, ast)));
        let other = parse_dockerfile::parse(&text).ok();
        let (Some((file, ast)), Some(df)) = (kiln, other) else {
            match (
                syntax::parse(&SourceFile::new("Dockerfile", text.clone())).is_ok(),
                parse_dockerfile::parse(&text).is_ok(),
            ) {
                (true, false) => only_kiln += 1,
                (false, true) => only_other += 1,
                _ => neither += 1,
            }
            continue;
        };
        both += 1;
        let name = path
            .strip_prefix(testdata())
            .unwrap_or(path)
            .display()
            .to_string();
        if KNOWN_DIFFERENCES.iter().any(|(n, _)| name.contains(n)) {
            continue;
        }
        let ours: Vec<(String, usize)> = ast
            .nodes
            .iter()
            .map(|n| (n.keyword.to_lowercase(), n.start_line))
            .collect();
        let theirs: Vec<(String, usize)> = df
            .instructions
            .iter()
            .map(|i| {
                let span = keyword_span(i);
                let kw = text.get(span.clone()).unwrap_or("").to_lowercase();
                (kw, file.position(span.start).line)
            })
            .collect();
        if ours != theirs {
            failures.push(format!(
                "{name}:\n  kiln:             {ours:?}\n  parse-dockerfile: {theirs:?}"
            ));
        }
    }
    eprintln!(
        "differential: {} files; both parsed {both}, only kiln {only_kiln}, only parse-dockerfile {only_other}, neither {neither}",
        files.len()
    );
    assert!(
        failures.is_empty(),
        "instruction boundaries differ:\n{}",
        failures.join("\n")
    );
    assert!(both > 100, "too few files parsed by both parsers ({both})");
}
