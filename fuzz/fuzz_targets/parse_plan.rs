//! Arbitrary bytes through every stage of the frontend: decoding, parsing,
//! typing, planning, and every rendering of the result or the error. Nothing
//! may panic.

#![no_main]

use kiln_frontend::{BuildOptions, Offline, SourceFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = match SourceFile::from_bytes("Dockerfile", data.to_vec()) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.render();
            return;
        }
    };
    if let Ok(ast) = kiln_frontend::syntax::parse(&file) {
        let _ = ast.dump();
    }
    let _ = kiln_frontend::parse(&file);
    match kiln_frontend::plan(&file, &BuildOptions::default(), &Offline) {
        Ok(plan) => {
            let def = &plan.definition;
            let _ = def.render_text();
            let _ = def.render_json();
            let _ = def.render_dot();
            let _ = def.render_llb();
            for w in &plan.warnings {
                let _ = w.render();
            }
        }
        Err(e) => {
            let _ = e.render();
        }
    }
});
