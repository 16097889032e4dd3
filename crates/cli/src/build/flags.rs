//! What `kiln build`'s flags decide before the state directory is opened:
//! the outputs (`outputs.rs`), the progress mode, the steps' limits and resources, the
//! caches, attestations, contexts and grants ([`Flags`], [`decide`]), and
//! the [`Plan`] that carries them into the build.

use kiln_frontend::BuildOptions;
use kiln_worker::Output;

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::options::{ContextValue, build_contexts, build_options};
use crate::output;
use crate::progress::Mode;
use crate::store::env_var;

use super::epoch::export_epoch;

/// `--progress` (default `$BUILDKIT_PROGRESS`, else auto) and `-q`: the
/// progress mode, and whether the image ID is printed at the end (`-q`).
pub(super) fn progress_mode(args: &BuildArgs) -> Result<(Mode, bool), Failure> {
    use crate::args::ProgressChoice as P;
    let choice = match args.progress {
        Some(p) => p,
        None => match env_var("BUILDKIT_PROGRESS").filter(|v| !v.is_empty()) {
            Some(v) => <P as clap::ValueEnum>::from_str(&v, true).map_err(|_| {
                Failure::Usage(format!(
                    "invalid BUILDKIT_PROGRESS {v:?}: expected auto, plain, tty, json, rawjson, quiet or none"
                ))
            })?,
            None => P::Auto,
        },
    };
    // `-q` wins over any mode (kiln always let it; buildx refuses `-q` with
    // a mode other than auto or quiet, and its quiet prints the ID too).
    let print_id = args.quiet;
    let mode = if args.quiet {
        Mode::Quiet
    } else {
        match choice {
            P::Auto => {
                if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    Mode::Tty
                } else {
                    Mode::Plain
                }
            }
            P::Plain => Mode::Plain,
            P::Tty => Mode::Tty,
            P::Json => Mode::Json,
            P::Rawjson => Mode::RawJson,
            P::Quiet | P::None => Mode::Quiet,
        }
    };
    Ok((mode, print_id))
}

/// `--memory` and `--pids-limit`.
pub(super) fn limits(args: &BuildArgs) -> Result<kiln_executor::Limits, Failure> {
    let memory = match &args.memory {
        None => None,
        Some(s) => match crate::units::parse_size(s) {
            // Docker's minimum: below it nothing starts.
            Some(n) if n >= 6 * 1024 * 1024 => Some(n),
            Some(_) => {
                return Err(Failure::Usage(format!(
                    "--memory {s:?}: the minimum is 6MB, as for docker build"
                )));
            }
            None => {
                return Err(Failure::Usage(format!(
                    "invalid --memory {s:?}: expected a size such as 512m or 2g"
                )));
            }
        },
    };
    if args.pids_limit == Some(0) {
        return Err(Failure::Usage(
            "--pids-limit 0: a step needs at least one process".to_owned(),
        ));
    }
    Ok(kiln_executor::Limits {
        memory,
        pids: args.pids_limit,
    })
}

/// `--shm-size` and `--ulimit`.
pub(super) fn resources(args: &BuildArgs) -> Result<kiln_executor::Resources, Failure> {
    let shm_size = match &args.shm_size {
        None => None,
        Some(s) => match crate::units::parse_size(s) {
            Some(n) if n > 0 => Some(n),
            _ => {
                return Err(Failure::Usage(format!(
                    "invalid --shm-size {s:?}: expected a size such as 128m or 1g"
                )));
            }
        },
    };
    let ulimits = args
        .ulimit
        .iter()
        .map(|u| {
            u.parse::<kiln_executor::Ulimit>()
                .map_err(|e| Failure::Usage(format!("--ulimit {u:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(kiln_executor::Resources { shm_size, ulimits })
}

/// What `kiln build` decided from its flags alone, before the rootless
/// user namespace is entered and the state directory opened.
pub(super) struct Flags {
    pub(super) mode: Mode,
    pub(super) print_id: bool,
    /// How many build records are kept (`records::max_records`).
    pub(super) keep_records: usize,
    pub(super) outputs: Vec<Output>,
    pub(super) cache_to: Vec<kiln_worker::cache::CacheTo>,
    pub(super) cache_from: Vec<kiln_worker::cache::CacheFrom>,
    pub(super) image_names: Vec<String>,
    pub(super) opts: BuildOptions,
    pub(super) contexts: Vec<(String, ContextValue)>,
    pub(super) epoch: output::EpochAttrs,
    pub(super) grants: kiln_worker::ops::mounts::ExecGrants,
    /// `--provenance`, `--sbom`, `--attest`, `--annotation`, and the notes
    /// about outputs that leave them out.
    pub(super) attest: (kiln_worker::attest::AttestRequest, Vec<String>),
}

/// Reads and checks the flags, every one before anything is done, so
/// that a bad value is said at once.
/// Also the agents of `--ssh ID=KEYFILE` ([`crate::grants::SshAgents`]),
/// bound but not answering yet: the caller serves them once the isolation is
/// decided (no thread may exist before its `unshare`).
pub(super) fn decide(args: &BuildArgs) -> Result<(Flags, crate::grants::SshAgents), Failure> {
    let (mode, print_id) = progress_mode(args)?;
    crate::progress::set_json(mode);
    let keep_records = crate::records::max_records().map_err(Failure::Usage)?;
    let outputs = super::outputs::outputs(args)?;
    crate::metadata::check_stdout(&outputs, print_id)?;
    // Checked before planning, so a bad value is said at once.
    limits(args)?;
    resources(args)?;
    let mut cache_to = args
        .cache_to
        .iter()
        .map(|s| kiln_worker::cache::CacheTo::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Usage)?;
    let cache_from = args
        .cache_from
        .iter()
        .map(|s| kiln_worker::cache::CacheFrom::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Usage)?;
    let image_names: Vec<String> =
        outputs
            .iter()
            .flat_map(|o| o.names().to_vec())
            .fold(Vec::new(), |mut v, n| {
                if !v.contains(&n) {
                    v.push(n);
                }
                v
            });
    let loads = outputs.iter().any(|o| o.loads());
    if loads {
        crate::load::ping()?;
    }
    let opts = build_options(args, &env_var)?;
    // `--build-arg BUILDKIT_INLINE_CACHE=1`, as buildx reads it: the same as
    // `--cache-to type=inline` (a value Go's ParseBool reads as false, or
    // none, asks for nothing). A build that makes no image has nowhere to
    // put it, which buildx ignores too.
    let inline_asked = opts
        .build_args
        .get("BUILDKIT_INLINE_CACHE")
        .and_then(|v| crate::args::go_bool(v))
        == Some(true);
    let has_inline = cache_to.iter().any(|t| t.location.is_inline());
    if inline_asked && !has_inline && outputs.iter().any(|o| o.needs_image()) {
        cache_to.push(kiln_worker::cache::CacheTo::parse("type=inline").map_err(Failure::Usage)?);
    }
    let attest = crate::attest::request(args, &outputs, &env_var)?;
    let contexts = build_contexts(args)?;
    let epoch = export_epoch(args)?;
    let (grants, ssh_agents) = crate::grants::grants(
        &args.secrets,
        &args.ssh,
        &args.allow,
        args.network.as_deref(),
        &env_var,
    )?;
    Ok((
        Flags {
            mode,
            print_id,
            keep_records,
            outputs,
            cache_to,
            cache_from,
            image_names,
            opts,
            contexts,
            epoch,
            grants,
            attest,
        },
        ssh_agents,
    ))
}

/// What `kiln build` decided before the build proper: the flags, and what
/// opening the state directory and the context settled.
pub(super) struct Plan {
    pub(super) flags: Flags,
    /// How RUN steps are kept apart from this machine (`--isolation`).
    pub(super) isolation: Box<dyn kiln_executor::isolation::Isolation>,
    /// The main context is a local directory, whose `.dockerignore`
    /// applies (a remote one is read whole, as BuildKit reads it).
    pub(super) local_context: bool,
    /// A remote context's URL and `-f`, naming its `--explain` records.
    pub(super) context_scope: Option<String>,
    /// A git URL context: the URL as given, its remote, ref and
    /// subdirectory, and the commit fetched (for the provenance).
    pub(super) git_context: Option<GitContext>,
}

/// A git URL as the main context, as fetched.
pub(super) struct GitContext {
    pub(super) given: String,
    pub(super) remote: String,
    pub(super) git_ref: String,
    pub(super) subdir: String,
    pub(super) commit: String,
    /// The Dockerfile is read from here, not the repository.
    pub(super) local_dockerfile: bool,
}
