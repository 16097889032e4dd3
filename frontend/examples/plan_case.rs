//! Prints the JSON plan of a frontend test case directory
//! (`testdata/frontend/ok/<case>`), honouring its `options` and `images.json`
//! exactly as the case tests do. A development tool: it lets a case be compared
//! with another implementation (see `testdata/README.md`).
//!
//! `cargo run -p kiln-frontend --example plan_case -- testdata/frontend/ok/<case>`

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_methods)]

#[path = "../tests/common/case.rs"]
mod case;

fn main() -> std::process::ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: plan_case <case-dir>");
        return std::process::ExitCode::from(2);
    };
    match case::run(std::path::Path::new(&dir)) {
        Ok(plan) => {
            let json =
                serde_json::to_string_pretty(&plan.definition.render_json()).unwrap_or_default();
            println!("{json}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", e.render());
            std::process::ExitCode::from(1)
        }
    }
}
