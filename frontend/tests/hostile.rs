//! Hostile input: everything here must end in a result or a diagnostic, never
//! a panic or a crash (stack overflow). `testdata/fuzz-regressions/<name>/` holds
//! inputs found by fuzzing or by hand; each is planned and rendered.

// Tests read their data from testdata/; the purity rule is for the library.
#![allow(clippy::disallowed_methods)]

use kiln_frontend::{BuildOptions, Offline, SourceFile};
use kiln_testkit::{case_dirs, testdata};

fn plan_all_the_way(name: &str, bytes: Vec<u8>) {
    let Ok(file) = SourceFile::from_bytes(name, bytes) else {
        return;
    };
    match kiln_frontend::plan(&file, &BuildOptions::default(), &Offline) {
        Ok(p) => {
            let _ = p.definition.render_llb();
            let _ = p.definition.render_json();
        }
        Err(e) => {
            let _ = e.render();
        }
    }
}

#[test]
fn fuzz_regressions_do_not_panic() {
    let cases = case_dirs(&testdata().join("fuzz-regressions"));
    assert!(!cases.is_empty());
    for case in cases {
        let bytes = std::fs::read(case.join("Dockerfile")).expect("Dockerfile");
        plan_all_the_way(&case.display().to_string(), bytes);
    }
}

#[test]
fn deep_nesting_is_a_located_error() {
    let deep = format!(
        "FROM alpine\nENV A={}x{}\n",
        "${a:-".repeat(50_000),
        "}".repeat(50_000)
    );
    let file = SourceFile::new("Dockerfile", deep);
    let err = kiln_frontend::plan(&file, &BuildOptions::default(), &Offline).unwrap_err();
    assert_eq!(err.line(), Some(2));
    assert!(err.message.contains("nested more than"), "{}", err.message);

    let chain = format!("FROM alpine\n{}RUN x\n", "ONBUILD ".repeat(50_000));
    let file = SourceFile::new("Dockerfile", chain);
    let err = kiln_frontend::plan(&file, &BuildOptions::default(), &Offline).unwrap_err();
    assert!(err.message.contains("ONBUILD ONBUILD"), "{}", err.message);
}

#[test]
fn long_stage_chains_and_wide_files_plan() {
    // 500 stages each built on the previous one, and a 20,000-line stage.
    let mut chain = String::from("FROM alpine AS s0\n");
    for i in 1..500 {
        chain.push_str(&format!(
            "FROM s{} AS s{i}\nCOPY --from=s{} /a /b\n",
            i - 1,
            i - 1
        ));
    }
    plan_all_the_way("chain", chain.into_bytes());
    let mut wide = String::from("FROM alpine\n");
    for i in 0..20_000usize {
        wide.push_str(&format!("ENV V{i}=${{V{}:-x}}\n", i.saturating_sub(1)));
    }
    plan_all_the_way("wide", wide.into_bytes());
}
