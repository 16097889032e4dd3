//! BuildKit's own published test data, run against kiln's frontend:
//! the parser test files (`testdata/buildkit/parser`) and the shell lexer
//! vectors (`testdata/buildkit/shell`). See `testdata/buildkit/README.md`.

// Tests read their data from testdata/; the purity rule is for the library.
#![allow(clippy::disallowed_methods)]

use std::fs;

use kiln_frontend::shell::{Lexer, NoEnv};
use kiln_frontend::{SourceFile, syntax};
use kiln_testkit::{assert_all, case_dirs, testdata};

#[test]
fn parser_testfiles() {
    let dir = testdata().join("buildkit/parser/testfiles");
    let cases = case_dirs(&dir);
    assert!(
        cases.len() >= 30,
        "expected BuildKit's parser test files in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let text = fs::read(case.join("Dockerfile")).expect("Dockerfile");
        let file = match SourceFile::from_bytes("Dockerfile", text) {
            Ok(f) => f,
            Err(e) => {
                failures.push(format!("{}: {}", case.display(), e.render()));
                continue;
            }
        };
        match syntax::parse(&file) {
            Ok(ast) => {
                // BuildKit's files are the upstream expectation: never rewrite them.
                let expected = fs::read_to_string(case.join("result")).expect("result");
                let actual = ast.dump();
                if expected != actual {
                    failures.push(format!(
                        "{}:\n--- BuildKit\n{expected}--- kiln\n{actual}",
                        case.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {}", case.display(), e.render())),
        }
    }
    assert_all(failures, cases.len());
}

#[test]
fn parser_testfiles_negative() {
    let dir = testdata().join("buildkit/parser/testfiles-negative");
    let cases = case_dirs(&dir);
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let text = fs::read(case.join("Dockerfile")).expect("Dockerfile");
        let file = SourceFile::from_bytes("Dockerfile", text).expect("UTF-8");
        if let Ok(ast) = syntax::parse(&file) {
            failures.push(format!(
                "{}: parsed, expected an error:\n{}",
                case.display(),
                ast.dump()
            ));
        }
    }
    assert_all(failures, cases.len());
}

/// `envVarTest`: `platform | input | expected` with PWD, SHELL, KOREAN, NULL set.
#[test]
fn shell_env_var_test() {
    let text =
        fs::read_to_string(testdata().join("buildkit/shell/envVarTest")).expect("envVarTest");
    let env: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let lex = Lexer::new('\\');
    let mut failures = Vec::new();
    let mut total = 0;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(parts.len(), 3, "line {}", n + 1);
        let (platform, source, expected) = (parts[0].trim(), parts[1].trim(), parts[2].trim());
        if platform == "W" {
            continue; // Windows-only expectation.
        }
        total += 1;
        match (lex.process_word(source, &env), expected) {
            (Err(_), "error") => {}
            (Ok(p), e) if p.result == e => {}
            (got, _) => failures.push(format!(
                "envVarTest:{}: {source:?} expected {expected:?}, got {got:?}",
                n + 1
            )),
        }
    }
    assert!(total > 200);
    assert_all(failures, total);
}

/// `wordsTest`: `input | word,word,...`, with `ENV k=v` lines adding variables.
#[test]
fn shell_words_test() {
    let text = fs::read_to_string(testdata().join("buildkit/shell/wordsTest")).expect("wordsTest");
    let lex = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let kv = rest.trim_start_matches(' ');
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            env.push((k.to_owned(), v.to_owned()));
            continue;
        }
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts.len(), 2, "line {}", n + 1);
        total += 1;
        let input = parts[0].trim();
        let expected: Vec<&str> = parts[1].trim_start_matches(' ').split(',').collect();
        let got = lex
            .process_words(input, &env)
            .unwrap_or_else(|_| vec!["error".to_owned()]);
        if got != expected {
            failures.push(format!(
                "wordsTest:{}: {input:?} expected {expected:?}, got {got:?}",
                n + 1
            ));
        }
    }
    assert!(total > 20);
    assert_all(failures, total);
}

/// `TestProcessWithMatches`, converted to JSON lines.
#[test]
fn shell_process_with_matches() {
    let text = fs::read_to_string(testdata().join("buildkit/shell/processWithMatches.jsonl"))
        .expect("processWithMatches.jsonl");
    let lex = Lexer::new('\\');
    let mut failures = Vec::new();
    let mut total = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        total += 1;
        let case: serde_json::Value = serde_json::from_str(line).expect("JSON");
        let input = case["input"].as_str().expect("input");
        let env: Vec<(String, String)> = case["env"]
            .as_object()
            .expect("env")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let names = |key: &str| -> Vec<String> {
            case[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let got = lex.process_word(input, &env);
        let ok = match (&got, case.get("error")) {
            (Err(_), Some(_)) => true,
            (Ok(p), None) => {
                p.result == case["expected"].as_str().unwrap_or_default()
                    && p.matched.iter().cloned().collect::<Vec<_>>() == names("matched")
                    && p.unmatched.iter().cloned().collect::<Vec<_>>() == names("unmatched")
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{line}\n  got {got:?}"));
        }
    }
    assert_all(failures, total);
}

/// The documented platform example from `TestProcessWithMatchesPlatform`.
#[test]
fn shell_platform_release_name() {
    let lex = Lexer::new('\\');
    let release =
        "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let r = lex.process_word(
        release,
        &env(&[
            ("VERSION", "v1.2.3"),
            ("TARGETOS", "linux"),
            ("TARGETARCH", "arm"),
            ("TARGETVARIANT", "v7"),
        ]),
    );
    assert_eq!(r.unwrap().result, "something-v1.2.3.linux-arm-v7.tar.gz");
    let r = lex.process_word(
        release,
        &env(&[
            ("VERSION", "v1.2.3"),
            ("TARGETOS", "linux"),
            ("TARGETARCH", "arm64"),
            ("TARGETVARIANT", ""),
        ]),
    );
    assert_eq!(r.unwrap().result, "something-v1.2.3.linux-arm64.tar.gz");
    let r = lex.process_word(
        release,
        &env(&[
            ("VERSION", "v1.2.3"),
            ("TARGETOS", "linux"),
            ("TARGETARCH", "arm64"),
        ]),
    );
    assert_eq!(r.unwrap().result, "something-v1.2.3.linux-arm64.tar.gz");
    assert_eq!(lex.process_word("$", &NoEnv).unwrap().result, "$");
}
