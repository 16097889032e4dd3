//! The frontend's data-driven tests.
//!
//! `testdata/frontend/ok/<case>/` holds a `Dockerfile`, optionally an `options`
//! file (one `docker build` flag per line: `--build-arg K=V`, `--target T`,
//! `--platform P`, `--build-platform P`, `--label K=V`, `--no-cache`,
//! `--no-cache-filter S`, `--network N`) and an `images.json` (base images the
//! resolver knows: reference → `{digest, has_layers, config}`), a `times.json`
//! (the times of sources: URL or `remote#ref` → Unix seconds), and the expected
//! plan in `plan` (`kiln plan --format llb`, then the warnings).
//! `testdata/frontend/err/<case>/` holds the same inputs and the expected
//! diagnostic in `error`. `UPDATE_EXPECT=1 cargo test` rewrites expectations.

// Tests read their data from testdata/; the purity rule is for the library.
#![allow(clippy::disallowed_methods)]

mod common;

use common::case::run;
use kiln_frontend::Plan;
use kiln_testkit::{assert_all, case_dirs, check, testdata};

fn render_warnings(plan: &Plan) -> String {
    let mut s = String::new();
    if !plan.warnings.is_empty() {
        s.push_str("\nwarnings:\n");
        for w in &plan.warnings {
            s.push_str(&w.render());
            s.push('\n');
        }
    }
    s
}

#[test]
fn ok_cases() {
    let cases = case_dirs(&testdata().join("frontend/ok"));
    let mut failures = Vec::new();
    for case in &cases {
        match run(case) {
            Ok(plan) => {
                let actual = plan.definition.render_llb() + &render_warnings(&plan);
                failures.extend(check(&case.join("plan"), &actual));
            }
            Err(e) => failures.push(format!(
                "{}: unexpected error:\n{}",
                case.display(),
                e.render()
            )),
        }
    }
    assert_all(failures, cases.len());
}

#[test]
fn err_cases() {
    let cases = case_dirs(&testdata().join("frontend/err"));
    let mut failures = Vec::new();
    for case in &cases {
        match run(case) {
            Ok(plan) => failures.push(format!(
                "{}: planned, expected an error:\n{}",
                case.display(),
                plan.definition.render_text()
            )),
            Err(e) => failures.extend(check(&case.join("error"), &(e.render() + "\n"))),
        }
    }
    assert_all(failures, cases.len());
}

/// Planning twice gives the same digests: nothing depends on time, order of
/// hash maps, or the machine.
#[test]
fn plans_are_deterministic() {
    for case in case_dirs(&testdata().join("frontend/ok")) {
        let a = run(&case).map(|p| p.definition.render_llb()).ok();
        let b = run(&case).map(|p| p.definition.render_llb()).ok();
        assert_eq!(a, b, "{}", case.display());
    }
}
