//! `kiln`: the command line.
//!
//! A thin binary over the library crates, in the ripgrep way: this crate parses
//! flags (clap), reads the Dockerfile, calls the frontend, and prints. It is the
//! only crate that knows about the terminal, the process environment and exit
//! codes; everything it calls takes values and returns values.
//!
//! Exit codes (the README's table): 0 success; 1 the build (or command)
//! failed: a step failed, a source or image is missing; 2 usage or bad input:
//! flags, a Dockerfile error, a feature that is not supported yet; 3 a
//! registry or the network failed; 4 internal or host error: the state
//! directory, namespaces, mounts, rootless setup.
//!
//! Rootless: run by a user other than root, every command that touches the
//! state directory re-executes itself inside a user namespace where it is
//! root (`kiln_executor::rootless`); the parent only waits and passes the
//! exit code on.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod archive;
mod args;
mod attest;
mod build;
mod builds;
mod call;
mod check;
mod completion;
mod failure;
mod globals;
mod gotemplate;
mod grants;
mod images;
mod imagetools;
mod isolation;
mod load;
mod metadata;
mod options;
mod output;
mod plan;
mod progress;
mod progress_event;
mod progress_tty;
mod prune;
mod records;
mod registry;
mod remote;
mod report;
mod reproducible;
mod run;
mod snapshotter;
mod ssh_agent;
mod store;
mod units;
mod vcs;
mod verify;
mod version;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::failure::{Failure, describe};
use crate::globals::{Globals, ROOTLESS, enter_rootless};

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
    // The container isolation mode's helper: starts one RUN step and
    // outlives none of its processes.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "__exec-container")
    {
        kiln_executor::container::helper_main();
    }
    // The rootless child enters its namespaces before anything else.
    let in_userns = match kiln_executor::rootless::enter_if_child() {
        Ok(b) => b,
        Err(e) => return report(Failure::Internal(e.into())),
    };
    let _ = ROOTLESS.set(in_userns);
    // `--progress=json` (or BUILDKIT_PROGRESS=json) asks for JSON on every
    // line of stderr, errors of the command line included.
    if wants_json(std::env::args().skip(1)) {
        progress::set_json(progress::Mode::Json);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return clap_error(&e),
    };
    let snapshotter = match cli.snapshotter {
        Some(s) => s,
        None => match std::env::var("KILN_SNAPSHOTTER") {
            Ok(v) if !v.is_empty() => {
                match <args::SnapshotterChoice as clap::ValueEnum>::from_str(&v, true) {
                    Ok(s) => s,
                    Err(_) => {
                        return report(Failure::Usage(format!(
                            "invalid KILN_SNAPSHOTTER {v:?}: expected auto, overlayfs or native"
                        )));
                    }
                }
            }
            _ => args::SnapshotterChoice::Auto,
        },
    };
    let root = cli.root.clone().or_else(|| {
        std::env::var_os("KILN_ROOT")
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    });
    // `build` enters it itself, once its flags are checked.
    if needs_namespace(&cli.command)
        && let Some(r) = enter_rootless(cli.debug)
    {
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => report(f),
        };
    }
    if cli.debug && in_userns {
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let map: Vec<String> = map
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        progress::say(&format!(
            "debug: rootless: in a user namespace, uid_map {}",
            map.join("; ")
        ));
    }
    let globals = Globals {
        root,
        insecure_registries: cli.insecure_registries,
        registry_config: cli.registry_config,
        debug: cli.debug,
        snapshotter,
        isolation: cli.isolation,
        throwaway: cli.throwaway,
    };
    let root = globals.root.as_deref();
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Build(args) => build::build(&globals, &args),
        Command::Import(args) => build::import(root, &args),
        Command::Pull(args) => registry::pull(&globals, &args),
        Command::Push(args) => registry::push(&globals, &args),
        Command::Imagetools(args) => imagetools::run(&globals, &args),
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
        Command::Builds(args) => builds::run(root, &args),
        Command::Run(args) => run::run(&globals, &args),
        Command::Verify(args) => verify::run(&globals, &args),
        Command::Completion(args) => completion::completion(&args),
        Command::Man(args) => completion::man(&args),
        Command::Version => {
            version::print();
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(f),
    }
}

/// Commands that touch the state directory, and so run in the user
/// namespace when kiln is not root (`build` decides for itself: its flags are
/// checked first, and `--check`/`--call` need no namespace).
fn needs_namespace(c: &Command) -> bool {
    !matches!(
        c,
        Command::Plan(_)
            | Command::Login(_)
            | Command::Logout(_)
            | Command::Imagetools(_)
            | Command::Verify(_)
            | Command::Build(_)
            | Command::Completion(_)
            | Command::Man(_)
            | Command::Version
    )
}

/// Whether the raw arguments of a `build` ask for `--progress=json` (or
/// leave it to `BUILDKIT_PROGRESS=json`), before clap has seen them.
fn wants_json(args: impl Iterator<Item = String>) -> bool {
    let args: Vec<String> = args.collect();
    if !args.iter().any(|a| a == "build") {
        return false;
    }
    let mut explicit = None;
    let mut it = args.iter().take_while(|a| *a != "--");
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--progress=") {
            explicit = Some(v.to_owned());
        } else if a == "--progress" {
            explicit = it.next().cloned();
        }
    }
    match explicit {
        Some(v) => v == "json",
        None => std::env::var("BUILDKIT_PROGRESS").is_ok_and(|v| v == "json"),
    }
}

/// A command line clap refused (or `--help`/`--version`): printed by clap,
/// or, when JSON was asked for, as a `failed` JSON line.
fn clap_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    if progress::json_errors() && !informational {
        let text = e.render().to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned();
        progress::emit_json(serde_json::json!({
            "status": "failed",
            "exit_code": 2,
            "error": first,
            "report": text.trim_end(),
        }));
        return ExitCode::from(2);
    }
    let _ = e.print();
    if informational {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn report(f: Failure) -> ExitCode {
    if progress::json_errors() {
        let (code, first, text) = describe(&f);
        if !matches!(f, Failure::Status(_)) {
            let mut v = serde_json::json!({
                "status": "failed",
                "exit_code": code,
                "error": first,
                "report": text,
            });
            if let Failure::Dockerfile(d) = &f {
                v["file"] = serde_json::json!(d.file);
                if let Some(l) = &d.location {
                    v["line"] = serde_json::json!(l.line);
                    v["column"] = serde_json::json!(l.column);
                }
            }
            progress::emit_json(v);
        }
        return ExitCode::from(code);
    }
    let mut err = std::io::stderr().lock();
    if build::github_actions() {
        // The failure as a GitHub Actions annotation, then as usual.
        let text = match &f {
            // Located: GitHub shows it on the Dockerfile's line.
            Failure::Dockerfile(d) => {
                let at = match &d.location {
                    Some(l) => format!(
                        " file={},line={},col={}",
                        progress::escape_workflow_property(&d.file),
                        l.line,
                        l.column
                    ),
                    None => String::new(),
                };
                let _ = writeln!(
                    err,
                    "::error{at}::{}",
                    progress::escape_workflow_command(&d.message)
                );
                None
            }
            Failure::Status(_) => None,
            _ => Some(describe(&f).1),
        };
        if let Some(t) = text {
            let _ = writeln!(
                err,
                "::error::{}",
                progress::escape_workflow_command(t.trim_end())
            );
        }
    }
    // The exit code by the failure's variant (`failure::describe`); a
    // `Status` has said everything already.
    let (code, _, text) = describe(&f);
    if !matches!(f, Failure::Status(_)) {
        let _ = writeln!(err, "{text}");
    }
    ExitCode::from(code)
}
