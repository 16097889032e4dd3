//! The lint rules' data-driven tests (`kiln build --check`).
//!
//! `testdata/frontend/lint/<case>/` holds a `Dockerfile`, optionally `options`
//! and `images.json` (as in `cases.rs`), and the expected `warnings`: every
//! warning rendered with its rule, location and source line, then the error
//! planning stopped at, if any. `UPDATE_EXPECT=1 cargo test` rewrites them.

// Tests read their data from testdata/; the purity rule is for the library.
#![allow(clippy::disallowed_methods)]

mod common;

use common::case::lint;
use kiln_testkit::{assert_all, case_dirs, check, testdata};

#[test]
fn lint_cases() {
    let cases = case_dirs(&testdata().join("frontend/lint"));
    let mut failures = Vec::new();
    for case in &cases {
        let report = lint(case);
        let mut actual = String::new();
        for w in &report.warnings {
            actual.push_str(&w.render());
            actual.push('\n');
            if let Some(url) = w.url {
                actual.push_str(&format!("   = {url}\n"));
            }
        }
        if let Some(e) = &report.error {
            actual.push_str("error: ");
            actual.push_str(&e.render());
            actual.push('\n');
        }
        if actual.is_empty() {
            actual.push_str("no warnings\n");
        }
        failures.extend(check(&case.join("warnings"), &actual));
    }
    assert_all(failures, cases.len());
}
