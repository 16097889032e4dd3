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

mod archive;
mod args;
mod build;
mod call;
mod check;
mod gotemplate;
mod grants;
mod images;
mod load;
mod metadata;
mod options;
mod output;
mod plan;
mod progress;
mod progress_tty;
mod prune;
mod registry;
mod reproducible;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use kiln_frontend::Diagnostic;

use crate::args::{Cli, Command};

/// The flags every command takes.
#[derive(Debug)]
pub struct Globals {
    pub root: Option<std::path::PathBuf>,
    pub insecure_registries: Vec<String>,
    pub registry_config: Option<std::path::PathBuf>,
}

/// Why a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or a feature that has not landed: exit 2.
    Usage(String),
    /// A located problem in the Dockerfile: exit 1.
    Dockerfile(Box<Diagnostic>),
    /// The build failed (a step, a missing source): exit 1. The message is
    /// complete (step, location, output).
    Build(String),
    /// Anything else that stops the command (a file that cannot be read): exit 1.
    Other(anyhow::Error),
    /// Everything has been printed; exit with this code (`--check` with
    /// warnings: 1).
    Status(u8),
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

/// mimalloc: a no-op rebuild of a large context allocates per file walked,
/// and glibc's malloc/free were a sixth of its profile (ARCHITECTURE.md,
/// dependencies).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The executor's helper: the kiln binary re-executed to set up the
    // namespaces of one RUN step. It must run before anything else (no
    // threads, no argument parsing).
    if std::env::args_os().nth(1).is_some_and(|a| a == "__exec") {
        kiln_executor::helper_main();
    }
    let cli = Cli::parse();
    let globals = Globals {
        root: cli.root,
        insecure_registries: cli.insecure_registries,
        registry_config: cli.registry_config,
    };
    let root = globals.root.as_deref();
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Build(args) => build::build(&globals, &args),
        Command::Import(args) => build::import(root, &args),
        Command::Pull(args) => registry::pull(&globals, &args),
        Command::Push(args) => registry::push(&globals, &args),
        Command::Login(args) => registry::login(&globals, &args),
        Command::Logout(args) => registry::logout(&globals, &args),
        Command::Images(args) => images::images(root, &args),
        Command::Inspect(args) => images::inspect(root, &args),
        Command::History(args) => images::history(root, &args),
        Command::Tag(args) => images::tag(root, &args),
        Command::Rmi(args) => images::rmi(root, &args),
        Command::Save(args) => archive::save(root, &args),
        Command::Load(args) => archive::load(root, &args),
        Command::Prune(args) => prune::prune(root, &args),
        Command::Du(args) => prune::du(root, &args),
        Command::Check(args) => check::check(root, &args),
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
        Failure::Build(msg) => {
            let _ = writeln!(err, "{msg}");
            ExitCode::from(1)
        }
        Failure::Other(e) => {
            let _ = writeln!(err, "error: {}", chain_message(&e));
            ExitCode::from(1)
        }
        Failure::Status(code) => ExitCode::from(code),
    }
}

/// The error and its causes, `: `-separated, leaving out a cause whose text
/// the message already has (library errors often print their source in
/// their own message, which `{:#}` would repeat).
fn chain_message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
