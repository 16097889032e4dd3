//! `kiln`: the command line.
//!
//! A thin binary over the library crates, in the ripgrep way: this crate parses
//! flags (clap), reads the Dockerfile, calls the frontend, and prints. It is the
//! only crate that knows about the terminal, the process environment and exit
//! codes; everything it calls takes values and returns values.
//!
//! Exit codes: 0 success; 1 the build failed or its input is invalid (a
//! Dockerfile error, a missing file); 2 usage error, including a flag or
//! feature that is not supported yet.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod args;
mod options;
mod plan;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use kiln_frontend::Diagnostic;

use crate::args::{Cli, Command};

/// Why a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or a feature that has not landed: exit 2.
    Usage(String),
    /// A located problem in the Dockerfile: exit 1.
    Dockerfile(Box<Diagnostic>),
    /// Anything else that stops the command (a file that cannot be read): exit 1.
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Other(e)
    }
}

impl From<Diagnostic> for Failure {
    fn from(d: Diagnostic) -> Failure {
        Failure::Dockerfile(Box::new(d))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Build(args) => plan::build(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(f),
    }
}

fn report(f: Failure) -> ExitCode {
    let mut err = std::io::stderr().lock();
    match f {
        Failure::Usage(msg) => {
            let _ = writeln!(err, "error: {msg}");
            ExitCode::from(2)
        }
        Failure::Dockerfile(d) => {
            let _ = writeln!(err, "error: {}", d.render());
            ExitCode::from(1)
        }
        Failure::Other(e) => {
            let _ = writeln!(err, "error: {e:#}");
            ExitCode::from(1)
        }
    }
}
