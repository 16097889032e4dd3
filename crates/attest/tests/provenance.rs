//! `testdata/attest/provenance/<case>/`: a `record.json` (what kiln knows
//! about a build), `options` (a line of provenance options, then
//! `secret-values=` values of `--secret`, comma-separated), optional
//! `secrets` (values that must not appear anywhere in the output); expected
//! `expected.json`, the predicate, pretty-printed with sorted keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]
// Tests read their cases from testdata/; the crate itself does no I/O.

use std::collections::BTreeMap;
use std::fs;

use kiln_attest::provenance::{BuildRecord, Options, Recipe, Secrets, predicate};
use kiln_testkit::{case_dirs, check, testdata};

fn is_secret(name: &str) -> bool {
    // The frontend's SecretsUsedInArgOrEnv words (kiln_frontend::lint).
    let lower = name.to_lowercase();
    let words: Vec<&str> = lower.split('_').collect();
    let deny = [
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let allow = ["public", "file", "version"];
    words.iter().any(|w| deny.contains(w)) && !words.iter().any(|w| allow.contains(w))
}

#[test]
fn provenance_cases() {
    let mut failures = Vec::new();
    for dir in case_dirs(&testdata().join("attest/provenance")) {
        let rec: BuildRecord =
            serde_json::from_slice(&fs::read(dir.join("record.json")).unwrap()).unwrap();
        let options = fs::read_to_string(dir.join("options")).unwrap();
        let mut lines = options.lines();
        let attrs: BTreeMap<String, String> = lines
            .next()
            .unwrap()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let values: Vec<String> = lines
            .next()
            .and_then(|l| l.strip_prefix("secret-values="))
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let opts = Options::from_attrs(&attrs).unwrap();
        let (ptype, pred) = predicate(
            &rec,
            &opts,
            &Secrets {
                is_secret_name: &is_secret,
                values,
            },
        );
        let text = format!(
            "{ptype}\n{}\n",
            serde_json::to_string_pretty(&pred).unwrap()
        );
        if let Ok(secrets) = fs::read_to_string(dir.join("secrets")) {
            for s in secrets.lines().filter(|l| !l.is_empty()) {
                if text.contains(s) {
                    failures.push(format!("{}: secret {s:?} in the output", dir.display()));
                }
            }
        }
        // What verify reads back.
        let recipe = Recipe::read(ptype, &pred).unwrap();
        let text = format!("{text}--- recipe\n{recipe:#?}\n");
        if let Some(diff) = check(&dir.join("expected"), &text) {
            failures.push(format!("{}:\n{diff}", dir.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn credentials_in_urls_are_redacted_as_buildkit_does() {
    use kiln_attest::provenance::redact_credentials;
    assert_eq!(
        redact_credentials("https://foo:bar@example.invalid/foo.html"),
        "https://xxxxx:xxxxx@example.invalid/foo.html"
    );
    assert_eq!(
        redact_credentials("http://user@host:8080/.git#v1:src"),
        "http://xxxxx@host:8080/.git#v1:src"
    );
    assert_eq!(redact_credentials("https://:p@h/x"), "https://:xxxxx@h/x");
    assert_eq!(
        redact_credentials("https://example.com/a@b"),
        "https://example.com/a@b"
    );
    assert_eq!(redact_credentials("local:foo"), "local:foo");
}
