//! `kiln-testkit`: the one `check` helper behind kiln's data-driven tests.
//!
//! Tests live as data: `testdata/<area>/<case>/` holds an input and the
//! expected output. A test computes the actual output and calls [`check`],
//! which compares it with the expected file and, when `UPDATE_EXPECT=1` is set,
//! rewrites the file instead (then review the diff with `git diff testdata`).
//! This is the rust-analyzer way: expectations are reviewed as data, not
//! buried in code. Only tests depend on this crate.

#![allow(clippy::print_stderr)]

pub mod registry;

use std::fs;
use std::path::{Path, PathBuf};

/// The repository's `testdata/` directory.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// Sub-directories of `dir`, sorted by name.
pub fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

fn updating() -> bool {
    std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1")
}

/// Compares `actual` with the content of `expected_file`. Returns a
/// description of the mismatch (so callers can check many cases and report
/// them all), or `None` when they agree or the file was updated.
pub fn check(expected_file: &Path, actual: &str) -> Option<String> {
    if updating() {
        let old = fs::read_to_string(expected_file).ok();
        if old.as_deref() != Some(actual) {
            if let Some(parent) = expected_file.parent() {
                let _ = fs::create_dir_all(parent);
            }
            fs::write(expected_file, actual)
                .unwrap_or_else(|e| panic!("writing {}: {e}", expected_file.display()));
            eprintln!("updated {}", expected_file.display());
        }
        return None;
    }
    let expected = match fs::read_to_string(expected_file) {
        Ok(s) => s,
        Err(e) => {
            return Some(format!(
                "{}: cannot read expected output ({e}); run with UPDATE_EXPECT=1 to create it",
                expected_file.display()
            ));
        }
    };
    if expected == actual {
        return None;
    }
    Some(format!(
        "{}: output differs (run with UPDATE_EXPECT=1 to update)\n{}",
        expected_file.display(),
        diff(&expected, actual)
    ))
}

/// Panics with every failure, if any.
pub fn assert_all(failures: Vec<String>, total: usize) {
    if !failures.is_empty() {
        panic!(
            "{} of {total} cases failed:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}

/// A small line diff: the first differing lines with context.
fn diff(expected: &str, actual: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let a: Vec<&str> = actual.lines().collect();
    let first = e
        .iter()
        .zip(&a)
        .position(|(x, y)| x != y)
        .unwrap_or(e.len().min(a.len()));
    let from = first.saturating_sub(2);
    let mut out = String::new();
    for (i, l) in e.iter().enumerate().skip(from).take(8) {
        out.push_str(&format!("-{:>4} {l}\n", i + 1));
    }
    for (i, l) in a.iter().enumerate().skip(from).take(8) {
        out.push_str(&format!("+{:>4} {l}\n", i + 1));
    }
    if e.len() != a.len() {
        out.push_str(&format!("(expected {} lines, got {})\n", e.len(), a.len()));
    }
    out
}

/// Whether the tests run as root. Tests that need root (namespaces, mounts)
/// are registered with `libtest_mimic::Trial::with_ignored_flag(!is_root())`,
/// so where they cannot run they are counted as ignored (skipped), not passed.
pub fn is_root() -> bool {
    // The effective uid, from /proc: no libc needed in this dev-only crate.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
