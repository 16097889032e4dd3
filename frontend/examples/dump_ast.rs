//! Prints the syntax tree of Dockerfiles in BuildKit's dump format, one file per
//! argument, as BuildKit's parser `dumper` does — so the two parsers can be
//! compared on any input. Errors print as `ERROR: <message>` and exit 1.
//!
//! `cargo run -p kiln-frontend --example dump_ast -- Dockerfile...`

#![allow(clippy::print_stdout, clippy::disallowed_methods)]

fn main() -> std::process::ExitCode {
    let mut code = std::process::ExitCode::SUCCESS;
    for path in std::env::args().skip(1) {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                println!("ERROR: {path}: {e}");
                code = std::process::ExitCode::from(1);
                continue;
            }
        };
        let parsed = kiln_frontend::SourceFile::from_bytes(path.clone(), bytes)
            .and_then(|f| kiln_frontend::syntax::parse(&f));
        match parsed {
            Ok(ast) => print!("{}", ast.dump()),
            Err(e) => {
                println!("ERROR: {} (line {})", e.message, e.line().unwrap_or(0));
                code = std::process::ExitCode::from(1);
            }
        }
    }
    code
}
