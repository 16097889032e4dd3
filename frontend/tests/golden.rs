//! The pinned graph: `testdata/golden/plan.json` holds the full JSON plan
//! (every vertex digest and definition) of `testdata/golden/Dockerfile`, so an
//! accidental change of the canonical encoding or of the frontend's output is
//! visible in review. `UPDATE_EXPECT=1` rewrites it — only do that on purpose.

// Tests read their data from testdata/; the purity rule is for the library.
#![allow(clippy::disallowed_methods)]

use kiln_frontend::{BuildOptions, Offline, SourceFile};
use kiln_llb::Platform;
use kiln_testkit::{check, testdata};

#[test]
fn golden_plan_digests() {
    let dir = testdata().join("golden");
    let bytes = std::fs::read(dir.join("Dockerfile")).expect("Dockerfile");
    let file = SourceFile::from_bytes("Dockerfile", bytes).expect("UTF-8");
    let opts = BuildOptions {
        build_platform: Platform::new("linux", "amd64", ""),
        ..BuildOptions::default()
    };
    let plan =
        kiln_frontend::plan(&file, &opts, &Offline).unwrap_or_else(|e| panic!("{}", e.render()));
    let json = serde_json::to_string_pretty(&plan.definition.render_json()).expect("JSON") + "\n";
    if let Some(failure) = check(&dir.join("plan.json"), &json) {
        panic!("{failure}");
    }
}
