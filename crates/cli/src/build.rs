//! `kiln build` and `kiln import`: flags → a [`kiln_worker::BuildRequest`],
//! the progress display, and the error report.

use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use kiln_frontend::{BuildOptions, Offline, SourceFile};
use kiln_llb::Platform;
use kiln_reference::Reference;
use kiln_solver::CancelToken;
use kiln_worker::{Error as WorkerError, ImportRequest, Output, State};

use crate::args::{BuildArgs, ImportArgs};
use crate::failure::Failure;
use crate::globals::Globals;
use crate::options::{
    ContextValue, build_contexts, build_options, read_dockerfile, reject_unsupported,
};
use crate::output;
use crate::progress::{Mode, Progress};
use crate::store::{env_var, state_dir};

/// Hostname of RUN steps: BuildKit's, so build scripts that look at it behave
/// the same.
const HOSTNAME: &str = "buildkitsandbox";

/// Whether kiln runs in a GitHub Actions job (`GITHUB_ACTIONS=true`): plain
/// progress is folded into log groups, and a failure becomes an `::error::`.
pub fn github_actions() -> bool {
    env_var("GITHUB_ACTIONS").as_deref() == Some("true")
}

/// An image resolver that remembers whether a resolution failed.
struct WatchedResolver<'a> {
    inner: &'a dyn kiln_frontend::ImageResolver,
    failed: std::cell::Cell<bool>,
}

impl kiln_frontend::ImageResolver for WatchedResolver<'_> {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<kiln_frontend::Resolution, String> {
        let r = self.inner.resolve(reference, platform);
        if r.is_err() {
            self.failed.set(true);
        }
        r
    }
}

/// Chooses the snapshotter (`--snapshotter`) before a build: overlayfs if
/// a probe mount works (in a user namespace: Linux >= 5.11 with
/// `userxattr`), else the native one; `--debug` says which, and why. With
/// the native one, deletions are whiteout devices where they can be made,
/// else whiteout files, which marks the store as native-only for good.
pub(crate) fn choose_snapshotter(
    state: &State,
    globals: &crate::globals::Globals,
    imposed: Option<kiln_snapshot::Snapshotter>,
) -> Result<(), Failure> {
    use crate::args::SnapshotterChoice;
    use kiln_snapshot::{Snapshotter, WhiteoutFormat};
    if let Some(s) = imposed {
        if globals.snapshotter == SnapshotterChoice::Overlayfs {
            return Err(Failure::Usage(
                "--snapshotter overlayfs cannot be used with --isolation=container: \
                 overlayfs needs mounts, which the container does not allow"
                    .to_owned(),
            ));
        }
        kiln_snapshot::set_snapshotter(s);
        if globals.debug {
            crate::progress::say(
                "debug: snapshotter: native, plain directories (no mounts: --isolation=container)",
            );
            if kiln_snapshot::whiteout_format() == WhiteoutFormat::File {
                crate::progress::say("debug: whiteouts: files (user.kiln.whiteout), not devices");
            }
        }
        return Ok(());
    }
    let scratch = state.root.join("tmp");
    // Where a successful probe is remembered (`probe_overlay_remembered`).
    let probed = state.root.join("overlay-probe");
    let overlay_where = if crate::globals::rootless() {
        "overlayfs in the user namespace (userxattr)"
    } else {
        "overlayfs"
    };
    let files_here = state.layers.has_whiteout_files();
    let files_why = "this state directory records deletions as whiteout files (whiteout \
                     devices cannot be made here, or could not be where it was used), which \
                     overlayfs cannot read";
    let (chosen, why) = match globals.snapshotter {
        SnapshotterChoice::Native => (Snapshotter::Native, "--snapshotter native".to_owned()),
        SnapshotterChoice::Overlayfs => {
            match kiln_snapshot::probe_overlay_remembered(&scratch, &probed) {
                Ok(()) if files_here => {
                    return Err(Failure::Internal(anyhow::anyhow!(
                        "--snapshotter overlayfs: {files_why}; use --snapshotter native (or auto) \
                     with this state directory ({}), or another --root",
                        state.root.display()
                    )));
                }
                Ok(()) => (Snapshotter::Overlayfs, overlay_where.to_owned()),
                Err(e) => {
                    let needs = if crate::globals::rootless() {
                        "; in a user namespace it needs Linux >= 5.11"
                    } else {
                        ""
                    };
                    return Err(Failure::Internal(anyhow::anyhow!(
                        "--snapshotter overlayfs: {overlay_where} cannot be mounted here ({e}){needs}; \
                     --snapshotter native works without it (it copies each step's root filesystem)"
                    )));
                }
            }
        }
        SnapshotterChoice::Auto if files_here => (Snapshotter::Native, files_why.to_owned()),
        SnapshotterChoice::Auto => match kiln_snapshot::probe_overlay_remembered(&scratch, &probed)
        {
            Ok(()) => (Snapshotter::Overlayfs, overlay_where.to_owned()),
            Err(e) => (
                Snapshotter::Native,
                format!("{overlay_where} cannot be mounted here: {e}"),
            ),
        },
    };
    kiln_snapshot::set_snapshotter(chosen);
    if globals.debug {
        if kiln_snapshot::whiteout_format() == WhiteoutFormat::File {
            crate::progress::say("debug: whiteouts: files (user.kiln.whiteout), not devices");
        }
        match chosen {
            Snapshotter::Overlayfs => crate::progress::say(&format!("debug: snapshotter: {why}")),
            Snapshotter::Native | Snapshotter::NativeUnmounted => {
                crate::progress::say(&format!("debug: snapshotter: native ({why})"))
            }
        }
    }
    Ok(())
}

/// A name as the store keeps it: `busybox` → `docker.io/library/busybox:latest`.
fn normalize(name: &str) -> Result<String, Failure> {
    let r = Reference::parse_normalized(name)
        .map_err(|e| Failure::Usage(format!("invalid name {name:?}: {e}")))?;
    if r.digest().is_some() {
        return Err(Failure::Usage(format!(
            "invalid name {name:?}: a name to give an image cannot contain a digest"
        )));
    }
    Ok(r.with_default_tag().to_string())
}

fn now() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// The exporters' `source-date-epoch=` and `rewrite-timestamp=`: one
/// setting for every output, since kiln makes a build's layers once.
fn export_epoch(args: &BuildArgs) -> Result<output::EpochAttrs, Failure> {
    let mut all = Vec::new();
    for spec in &args.outputs {
        let a = output::epoch_attrs(spec)?;
        if !all.contains(&a) {
            all.push(a);
        }
    }
    match all.as_slice() {
        [] => Ok(output::EpochAttrs::default()),
        [one] => Ok(*one),
        _ => Err(Failure::Usage(
            "outputs with different source-date-epoch or rewrite-timestamp attributes are not supported yet"
                .to_owned(),
        )),
    }
}

/// The build's `SOURCE_DATE_EPOCH` (creation times, the layers' mtime
/// clamp) and whether the manifests mark the layers as rewritten to it:
/// the plan's epoch (`--build-arg`, the environment, or the Dockerfile's
/// `ARG SOURCE_DATE_EPOCH=…` default) unless the exporter's
/// `source-date-epoch=N` replaces it; `source-date-epoch=` (empty) leaves
/// the exporter without one, so nothing is marked, as in BuildKit.
fn build_epoch(attrs: output::EpochAttrs, planned: Option<i64>, mode: Mode) -> (Option<i64>, bool) {
    let (sde, exporter) = match attrs.source_date_epoch {
        Some(Some(n)) => (Some(n), Some(n)),
        Some(None) => (planned, None),
        None => (planned, planned),
    };
    if attrs.rewrite_timestamp && exporter.is_none() {
        // BuildKit's warning.
        note(
            mode,
            "WARNING: rewrite-timestamp is specified, but no source-date-epoch was found",
        );
    }
    (sde, attrs.rewrite_timestamp && exporter.is_some())
}

/// The outputs the flags ask for; no `-o` means the local image store.
fn outputs(args: &BuildArgs) -> Result<Vec<Output>, Failure> {
    let tags = args
        .tags
        .iter()
        .map(|t| normalize(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut outs = Vec::new();
    for spec in &args.outputs {
        outs.push(output::parse(spec, &tags, &normalize)?);
    }
    // Like `docker build`: the result goes to the local store unless an
    // output says otherwise; `-t` alone names it there.
    if args.push {
        if tags.is_empty() {
            return Err(Failure::Usage(
                "--push needs a name to push to (-t NAME)".to_owned(),
            ));
        }
        outs.push(Output::Registry {
            names: tags.clone(),
            compression: kiln_oci::Compression::gzip(),
            types: kiln_oci::MediaTypes::Oci,
            force_compression: false,
            store: false,
            insecure: false,
        });
    }
    if args.load {
        outs.push(Output::Docker {
            dest: PathBuf::new(),
            names: tags.clone(),
            compression: kiln_oci::Compression::gzip(),
            force_compression: false,
        });
    }
    let stored = outs.iter().any(|o| {
        matches!(
            o,
            Output::Image { .. } | Output::Registry { store: true, .. }
        )
    });
    if !stored && (outs.is_empty() || !tags.is_empty()) {
        outs.push(Output::Image { names: tags });
    }
    Ok(outs)
}

/// `--progress` (default `$BUILDKIT_PROGRESS`, else auto) and `-q`: the
/// progress mode, and whether the image ID is printed at the end (`-q`).
fn progress_mode(args: &BuildArgs) -> Result<(Mode, bool), Failure> {
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

/// A failed step as BuildKit reports it: the step and the end of its
/// output, the Dockerfile lines around it, then the reason.
fn report_step(file: &SourceFile, e: &kiln_worker::StepError, tail: &[String]) -> String {
    let mut s = format!("------\n > {}:\n", crate::progress::printable(&e.name));
    for l in tail {
        s.push_str(&format!("{l}\n"));
    }
    s.push_str("------\n");
    if let Some(loc) = &e.location {
        let lines: Vec<&str> = file.text().lines().collect();
        s.push_str(&format!("{loc}\n--------------------\n"));
        let start = loc.start_line.saturating_sub(2).max(1) as usize;
        let end = (loc.end_line as usize + 2).min(lines.len());
        for n in start..=end {
            if let Some(l) = lines.get(n - 1) {
                let mark = if n >= loc.start_line as usize && n <= loc.end_line as usize {
                    ">>>"
                } else {
                    "   "
                };
                s.push_str(&format!(" {n:>3} | {mark} {l}\n"));
            }
        }
        s.push_str("--------------------\n");
    }
    s.push_str(&format!("error: failed to solve: {}", e.message));
    s
}

/// `--memory` and `--pids-limit`.
fn limits(args: &BuildArgs) -> Result<kiln_executor::Limits, Failure> {
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
fn resources(args: &BuildArgs) -> Result<kiln_executor::Resources, Failure> {
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

/// Whether a message says a write failed for want of space (ENOSPC, from
/// kiln or from a step's own output).
fn is_no_space(s: &str) -> bool {
    s.contains("No space left on device") || s.contains("os error 28")
}

/// What to say when a build ran out of space: where the state directory is,
/// and what its filesystem has now (a failed step's changes are gone by then).
fn no_space_note(root: &std::path::Path) -> String {
    let free = nix::sys::statvfs::statvfs(root).ok().map(|fs| {
        let block = fs.fragment_size();
        (fs.blocks_available() * block, fs.blocks() * block)
    });
    match free {
        Some((avail, total)) => format!(
            "\nnote: no space left on device: the state directory {} (where steps write their \
             changes and layers are stored) is on a filesystem with {} free of {} now; free \
             space there (kiln prune removes unused data) or use --root on a larger filesystem",
            root.display(),
            crate::units::human_size(avail),
            crate::units::human_size(total)
        ),
        None => format!(
            "\nnote: no space left on device: the state directory is {}",
            root.display()
        ),
    }
}

/// What `kiln build` decided from its flags before the state directory is
/// opened.
struct Plan {
    mode: Mode,
    print_id: bool,
    outputs: Vec<Output>,
    cache_to: Vec<kiln_worker::cache::CacheTo>,
    cache_from: Vec<kiln_worker::cache::CacheFrom>,
    image_names: Vec<String>,
    opts: BuildOptions,
    contexts: Vec<(String, ContextValue)>,
    epoch: output::EpochAttrs,
    grants: kiln_worker::mounts::ExecGrants,
    /// `--provenance`, `--sbom`, `--attest`, `--annotation`, and the notes
    /// about outputs that leave them out.
    attest: (kiln_worker::attest::AttestRequest, Vec<String>),
    /// How RUN steps are kept apart from this machine (`--isolation`).
    isolation: Box<dyn kiln_executor::isolation::Isolation>,
    /// The main context is a local directory, whose `.dockerignore`
    /// applies (a remote one is read whole, as BuildKit reads it).
    local_context: bool,
    /// A remote context's URL and `-f`, naming its `--explain` records.
    context_scope: Option<String>,
}

/// What a build found out that its record keeps, filled in as it goes.
#[derive(Default)]
struct Found {
    explanations: Vec<(String, String)>,
    image: Option<crate::records::ImageSummary>,
    /// The graph node that made each layer of the image (bottom first).
    layer_nodes: Option<Vec<Option<usize>>>,
    bases: Vec<(String, String)>,
    warnings: Vec<String>,
    lints: Vec<kiln_frontend::Diagnostic>,
    iid: Option<String>,
}

/// `kiln build`.
pub fn build(globals: &Globals, args: &BuildArgs) -> Result<(), Failure> {
    if args.check_reproducible {
        return crate::reproducible::run(args);
    }
    reject_unsupported(args)?;
    let call = crate::call::Call::from_args(args)?;
    if call.method != crate::call::Method::Build {
        return match crate::call::run(globals, args, &call)? {
            0 => Ok(()),
            code => Err(Failure::Status(code)),
        };
    }
    let (mode, print_id) = progress_mode(args)?;
    crate::progress::set_json(mode);
    let keep_records = crate::records::max_records().map_err(Failure::Usage)?;
    let outputs = outputs(args)?;
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
    let image_names: Vec<String> = outputs
        .iter()
        .flat_map(|o| match o {
            Output::Image { names }
            | Output::Oci { names, .. }
            | Output::Docker { names, .. }
            | Output::Registry { names, .. } => names.clone(),
            _ => Vec::new(),
        })
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    let loads = outputs
        .iter()
        .any(|o| matches!(o, Output::Docker { dest, .. } if dest.as_os_str().is_empty()));
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
    if inline_asked && !has_inline && outputs.iter().any(Output::needs_image) {
        cache_to.push(kiln_worker::cache::CacheTo::parse("type=inline").map_err(Failure::Usage)?);
    }
    let attest = crate::attest::request(args, &outputs, &env_var)?;
    let contexts = build_contexts(args)?;
    let epoch = export_epoch(args)?;
    let (grants, mut ssh_agents) = crate::grants::grants(
        &args.secrets,
        &args.ssh,
        &args.allow,
        args.network.as_deref(),
        &env_var,
    )?;
    // Not root: the flags are fine, so the build runs again in a user
    // namespace (before the Dockerfile is read: `-f -` is read there).
    if let Some(r) = crate::globals::enter_rootless(globals.debug) {
        return r;
    }
    // A remote context (a URL, `-`) is fetched once the state is open.
    let main_context = crate::options::main_context(&args.context)?;
    let file = if main_context.is_local() {
        Some(read_dockerfile(args)?)
    } else {
        None
    };
    // Before any thread exists: in the namespaces mode every mount kiln
    // makes from here on lives in a mount namespace that dies with the
    // process; the container mode is checked before the state is touched.
    let decision = crate::isolation::decide(globals)?;
    // The agents of `--ssh ID=KEYFILE` answer from here on (threads).
    ssh_agents.serve();
    let container = match &decision {
        crate::isolation::Decision::Namespaces(_) => None,
        crate::isolation::Decision::Container(why) => {
            let ssh: Vec<PathBuf> = grants.ssh.values().cloned().collect();
            let state_path = state_dir(globals.root.as_deref());
            Some(crate::isolation::container(
                globals,
                why,
                &crate::isolation::BuildInputs {
                    args,
                    contexts: &contexts,
                    outputs: &outputs,
                    cache_to: &cache_to,
                    cache_from: &cache_from,
                    ssh,
                    state: &state_path,
                },
            )?)
        }
    };
    let state = crate::store::open_for_layers(globals.root.as_deref())?;
    let remote = match file {
        Some(_) => None,
        None => Some(crate::remote::materialize(&state, args, &main_context)?),
    };
    let (local_args, file) = match (&remote, file) {
        (Some(r), _) => (&r.args, r.file.clone()),
        (None, Some(f)) => (args, f),
        (None, None) => {
            return Err(Failure::Internal(anyhow::anyhow!(
                "the Dockerfile was not read"
            )));
        }
    };
    let isolation: Box<dyn kiln_executor::isolation::Isolation> = match (decision, container) {
        (crate::isolation::Decision::Namespaces(n), _) => {
            Box::new(n.with_filter_cache(state.root.join("seccomp")))
        }
        (_, Some(c)) => Box::new(c.with_whiteouts(kiln_snapshot::whiteout_format())),
        (crate::isolation::Decision::Container(_), None) => {
            return Err(Failure::Internal(anyhow::anyhow!(
                "the container isolation mode was not set up"
            )));
        }
    };
    let started = SystemTime::now();
    let progress = Arc::new(Progress::new(mode).github_groups(github_actions()));
    let plan = Plan {
        mode,
        print_id,
        outputs,
        cache_to,
        cache_from,
        image_names,
        opts,
        contexts,
        epoch,
        grants,
        attest,
        isolation,
        local_context: remote.is_none(),
        context_scope: remote.as_ref().map(|_| {
            format!(
                "{}\0{}",
                args.context,
                args.file.as_deref().unwrap_or_default()
            )
        }),
    };
    let head = record_head(args, &plan);
    let mut plan = plan;
    if let Some(r) = &remote {
        // No `.dockerignore` applies to it (`CopyIgnoredFile` has no rules).
        plan.opts.dockerignore = None;
        // `SOURCE_DATE_EPOCH=context`: a git commit's time, an HTTP
        // context's; stdin has none, as a local directory.
        plan.opts.local_context = main_context == crate::options::MainContext::Stdin;
        plan.opts.context_epoch = r.fetched.time;
    }
    let mut found = Found::default();
    let result = run(
        globals, local_args, &state, &file, &progress, plan, &mut found,
    );
    if let Some(r) = &remote {
        // Its stat cache is named by its path, which no build sees again.
        let _ = std::fs::remove_file(state.context_cache(&r.dir()));
    }
    let cancelled = matches!(&result, Err(Failure::Build(m)) if m == CANCELLED);
    progress.finish(match &result {
        Ok(()) => "",
        Err(_) if cancelled => "CANCELED",
        Err(_) => "ERROR",
    });
    // The record, whatever happened (the picture of a failed build is the
    // one most worth having).
    let took = progress.started().elapsed();
    let mut gathered = progress.gathered();
    if let (Some(img), Some(nodes)) = (&mut found.image, &found.layer_nodes) {
        for (layer, node) in img.layers.iter_mut().zip(nodes) {
            layer.step = node.and_then(|n| {
                gathered
                    .steps
                    .iter()
                    .find(|s| s.nodes.contains(&n))
                    .map(|s| s.id)
            });
        }
    }
    if gathered.log.is_empty() {
        gathered.log.push_str("(no output)\n");
    }
    let outcome = match &result {
        Ok(()) => crate::records::Outcome {
            status: "completed",
            ..Default::default()
        },
        Err(f) => {
            let (code, first, text) = crate::failure::describe(f);
            crate::records::Outcome {
                status: if cancelled { "canceled" } else { "error" },
                exit_code: code,
                error: Some(first),
                error_report: (text.lines().count() > 1).then_some(text),
            }
        }
    };
    let mut head = head;
    head.bases = std::mem::take(&mut found.bases);
    head.warnings = std::mem::take(&mut found.warnings);
    let record = crate::records::assemble(
        crate::records::new_id(),
        head,
        gathered,
        &found.explanations,
        found.image.take(),
        outcome,
        started,
        took,
    );
    let log = progress.gathered().log;
    if let Err(e) = crate::records::save(&state.root, &record, &log, keep_records) {
        note(mode, &format!("warning: {e}"));
    }
    let mut result = result;
    if let Some(path) = &args.report {
        match crate::builds::write_report(&record, path) {
            Ok(()) => {}
            Err(e) if result.is_ok() => result = Err(e),
            Err(e) => note(
                mode,
                &format!("warning: {}", crate::failure::describe(&e).1),
            ),
        }
    }
    if args.explain {
        print_explanations(mode, &found.explanations);
    }
    if result.is_ok() {
        gc_after_build(&state, mode);
    }
    match mode {
        Mode::Json => {
            for w in found.lints.iter().filter(|w| w.rule.is_some()) {
                progress.warning(w);
            }
        }
        Mode::RawJson => {
            for w in found.lints.iter().filter(|w| w.rule.is_some()) {
                progress.warning(w);
            }
        }
        _ => crate::call::print_build_warnings(&found.lints, mode == Mode::Quiet),
    }
    if mode == Mode::Json && result.is_ok() {
        let mut v = serde_json::json!({
            "status": "finished",
            "duration": took.as_secs_f64(),
            "build": record.id,
            "steps": record.counts().1,
            "cached": record.counts().2,
        });
        if let Some(id) = &found.iid {
            v["image"] = serde_json::json!(id);
        }
        crate::progress::emit_json(v);
    }
    result
}

/// What a cancelled build says.
const CANCELLED: &str = "error: build cancelled";

/// A line the build says after its progress (warnings about records,
/// garbage collection): a `message` event in JSON, else text on stderr.
fn note(mode: Mode, text: &str) {
    match mode {
        Mode::Json => {
            crate::progress::emit_json(serde_json::json!({"status": "message", "message": text}))
        }
        Mode::RawJson => {}
        _ => crate::progress::say(text),
    }
}

/// The parts of the record the flags give.
fn record_head(args: &BuildArgs, plan: &Plan) -> crate::records::Head {
    let dockerfile = match args.file.as_deref() {
        Some(f) => f.to_owned(),
        None if args.context == "." => "Dockerfile".to_owned(),
        None => Path::new(&args.context)
            .join("Dockerfile")
            .display()
            .to_string(),
    };
    let outputs = args
        .outputs
        .iter()
        .cloned()
        .chain(args.push.then(|| "type=registry (--push)".to_owned()))
        .chain(args.load.then(|| "type=docker (--load)".to_owned()))
        .chain(plan.outputs.iter().filter_map(|o| match o {
            Output::Image { names } if args.outputs.is_empty() => Some(if names.is_empty() {
                "type=image (the local store)".to_owned()
            } else {
                format!("type=image,name={}", names.join(","))
            }),
            _ => None,
        }))
        .collect();
    crate::records::Head {
        name: crate::records::build_name(
            &args.context,
            args.file.as_deref(),
            args.target.as_deref(),
        ),
        command: std::env::args().skip(1).collect(),
        context: args.context.clone(),
        dockerfile,
        target: args.target.clone(),
        platforms: plan
            .opts
            .target_platform
            .iter()
            .map(Platform::format)
            .chain(
                crate::options::target_platforms(args)
                    .unwrap_or_default()
                    .iter()
                    .skip(1)
                    .map(Platform::format),
            )
            .collect(),
        build_args: plan.opts.build_args.clone().into_iter().collect(),
        outputs,
        warnings: Vec::new(),
        bases: Vec::new(),
    }
}

/// The build proper, once the state directory is open.
fn run(
    globals: &Globals,
    args: &BuildArgs,
    state: &State,
    file: &SourceFile,
    progress: &Arc<Progress>,
    plan: Plan,
    found: &mut Found,
) -> Result<(), Failure> {
    let Plan {
        mode,
        print_id,
        outputs,
        cache_to,
        cache_from,
        image_names,
        mut opts,
        contexts,
        epoch,
        grants,
        attest: (mut attest, attest_notes),
        isolation,
        local_context,
        context_scope,
    } = plan;
    crate::isolation::check_flags(&*isolation, args)?;
    let step_limits = limits(args)?;
    isolation
        .check_limits(&step_limits)
        .map_err(Failure::Usage)?;
    choose_snapshotter(state, globals, isolation.snapshotter())?;
    let store_lock = crate::store::lock(state, kiln_worker::lock::LockKind::Shared)?;
    // `--load`: the archive goes to scratch space first, then to the engine.
    let scratch = state.scratch().context("making scratch space")?;
    let mut to_load = Vec::new();
    let mut outputs = outputs;
    for (i, o) in outputs.iter_mut().enumerate() {
        if let Output::Docker { dest, .. } = o
            && dest.as_os_str().is_empty()
        {
            *dest = scratch.path().join(format!("load-{i}.tar"));
            to_load.push(dest.clone());
        }
    }
    let mut insecure = Vec::new();
    for o in &outputs {
        if let Output::Registry {
            names,
            insecure: true,
            ..
        } = o
        {
            insecure.extend(names.iter().filter_map(|n| {
                Reference::parse_normalized(n)
                    .ok()
                    .map(|r| r.domain().to_owned())
            }));
        }
    }
    // Registry and output lines, and the bytes of blobs as they move, go to
    // the progress display.
    let p = progress.clone();
    let sink: kiln_registry::ProgressSink = Arc::new(move |t| p.transfer(t));
    let client = crate::registry::client(globals, &insecure)?.with_progress(sink.clone());
    let p = progress.clone();
    let log: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |line: &str| p.message(line));
    let resolver = kiln_worker::StoreResolver::new(
        state,
        Some(&client),
        if args.pull {
            kiln_worker::PullPolicy::Always
        } else {
            kiln_worker::PullPolicy::Missing
        },
        &*log,
    );
    // `oci-layout://` contexts enter the store before planning, as pulls do.
    let target_platform = opts
        .target_platform
        .clone()
        .unwrap_or_else(|| opts.build_platform.clone());
    let mut local_contexts = Vec::new();
    for (name, value) in &contexts {
        match value {
            ContextValue::Local(dir) => local_contexts.push((name.clone(), dir.clone())),
            ContextValue::OciLayout(l) => {
                let select = match &l.digest {
                    Some(d) => {
                        kiln_worker::contexts::LayoutSelector::Digest(d.parse().map_err(|e| {
                            Failure::Usage(format!("--build-context {name}={}: {e}", l.shown()))
                        })?)
                    }
                    None => kiln_worker::contexts::LayoutSelector::Tag(
                        l.tag.clone().unwrap_or_else(|| "latest".to_owned()),
                    ),
                };
                let platform = name
                    .split_once("::")
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or_else(|| target_platform.clone());
                let image =
                    kiln_worker::contexts::import_oci_layout(state, &l.dir, &select, &platform)
                        .map_err(anyhow::Error::new)?;
                opts.named_contexts.insert(
                    name.clone(),
                    kiln_frontend::NamedContext::Resolved {
                        reference: l.shown(),
                        image: Box::new(image),
                    },
                );
            }
            ContextValue::Named(_) => {}
        }
    }
    let watched = WatchedResolver {
        inner: &resolver,
        failed: std::cell::Cell::new(false),
    };
    // A base image that could not be resolved is a registry failure (exit
    // 3), even though the frontend reports it at its FROM line.
    let plan_for = |opts: &BuildOptions| {
        kiln_frontend::plan(file, opts, &watched).map_err(|d| {
            if watched.failed.get() {
                Failure::Registry(anyhow::anyhow!("{}", d.render()))
            } else {
                Failure::from(d)
            }
        })
    };
    let planned = plan_for(&opts);
    found.bases = resolver
        .resolutions()
        .into_iter()
        .map(|(r, d)| (r, d.to_string()))
        .collect();
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            // As BuildKit, a Dockerfile that fails to plan still reports
            // the warnings of the instructions before the failure.
            if matches!(e, Failure::Dockerfile(_)) {
                found.lints = kiln_frontend::check(file, &opts, &Offline)
                    .warnings
                    .into_iter()
                    .filter(|w| w.rule.is_some())
                    .collect();
            }
            return Err(e);
        }
    };
    // `--platform a,b`: the Dockerfile is planned once per target platform;
    // the graphs meet in one solve (`dag_of_platforms`).
    let mut more_platforms = Vec::new();
    for p in crate::options::target_platforms(args)?.iter().skip(1) {
        let o = BuildOptions {
            target_platform: Some(p.clone()),
            ..opts.clone()
        };
        more_platforms.push(plan_for(&o)?.definition);
    }
    // Lint warnings are summed up after the build, as buildx does; other
    // warnings (build args without effect) come first.
    let (lints, notes): (Vec<_>, Vec<_>) = planned
        .warnings
        .iter()
        .cloned()
        .partition(|w| w.rule.is_some());
    found.warnings = planned.warnings.iter().map(|w| w.render()).collect();
    found.lints = lints;
    match mode {
        Mode::Json | Mode::RawJson => notes.iter().for_each(|w| progress.warning(w)),
        _ => crate::plan::print_warnings(&notes),
    }
    let bases = resolver.resolutions();
    let dag = Arc::new(
        kiln_worker::build::dag_of_platforms(&planned.definition, &more_platforms)
            .map_err(anyhow::Error::new)?,
    );
    let target = planned
        .definition
        .target
        .and_then(|d| dag.nodes().iter().position(|n| n.payload.digest == d));
    progress.set_graph(
        dag.nodes()
            .iter()
            .map(|n| crate::progress::NodeInfo {
                name: n.name.clone(),
                digest: n.payload.digest.to_string(),
                inputs: n.inputs.clone(),
                location: n.payload.meta.location.as_ref().map(ToString::to_string),
                stage: n.payload.meta.stage.clone(),
            })
            .collect(),
    );
    let executor = isolation
        .executor()
        .context("setting up the RUN steps' executor")
        .map_err(Failure::Internal)?;
    let context_dir = PathBuf::from(&args.context);
    let dockerfile = match args.file.as_deref() {
        Some("-") | None => None,
        Some(p) => Some(PathBuf::from(p)),
    };
    for n in &attest_notes {
        log(n);
    }
    let platforms: Vec<kiln_llb::Platform> = std::iter::once(&planned.definition)
        .chain(&more_platforms)
        .map(|d| d.target_stage().platform.clone())
        .collect();
    let dockerfile_name = match args.file.as_deref() {
        Some("-") | None => "Dockerfile".to_owned(),
        Some(p) => Path::new(p)
            .file_name()
            .map_or_else(|| p.to_owned(), |n| n.to_string_lossy().into_owned()),
    };
    crate::attest::complete(
        &mut attest,
        &opts,
        &dockerfile_name,
        file.text().as_bytes(),
        &grants,
        &image_names,
        &platforms,
    );
    let (sde, rewrite_timestamp) = build_epoch(epoch, planned.definition.source_date_epoch, mode);
    let req = kiln_worker::BuildRequest {
        definition: planned.definition,
        more_platforms,
        context_dir,
        dockerfile,
        context_dockerignore: local_context,
        context_scope,
        local_contexts,
        outputs,
        max_parallelism: args.max_parallelism.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        }),
        source_date_epoch: sde,
        rewrite_timestamp,
        now: now(),
        executor,
        hostname: HOSTNAME.to_owned(),
        limits: step_limits,
        resources: resources(args)?,
        grants,
        registry: Some(client.clone()),
        log,
        transfers: Some(sink),
        cache_from,
        cache_to,
        attest,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let cancel = CancelToken::new();
    let p = progress.clone();
    let events: Arc<dyn Fn(kiln_solver::Event) + Send + Sync> = Arc::new(move |e| p.event(e));
    let p = progress.clone();
    let result = runtime.block_on(async {
        let c = cancel.clone();
        // The first Ctrl-C stops the build (running steps are stopped, what
        // was done is kept); a second one exits at once. Either way nothing is
        // left: mounts live in kiln's own mount namespace, and drafts are
        // removed by the next kiln that opens the store.
        let ctrl_c = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                c.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    // The live view is erased first: no line of it stays.
                    p.finish("CANCELED");
                    if crate::progress::json_errors() {
                        crate::progress::emit_json(serde_json::json!({
                            "status": "failed",
                            "exit_code": 130,
                            "error": "interrupted twice: exiting now",
                        }));
                    } else {
                        eprintln!("interrupted twice: exiting now");
                    }
                    std::process::exit(130);
                }
            }
        });
        let r = kiln_worker::build(state, dag.clone(), req, events, &cancel).await;
        ctrl_c.abort();
        r
    });
    match result {
        Ok(res) => {
            found.explanations.clone_from(&res.explanations);
            if let Some(path) = &args.metadata_file {
                crate::metadata::write(path, state, &res, &image_names, &bases)?;
            }
            if let Some(img) = &res.image {
                let sizes = kiln_worker::images::layer_sizes(state, &img.id, &img.config);
                let made_by: Vec<String> = img
                    .config
                    .history
                    .iter()
                    .filter(|h| !h.empty_layer)
                    .map(|h| h.created_by.clone())
                    .collect();
                let layers: Vec<crate::records::LayerSummary> = img
                    .config
                    .rootfs
                    .diff_ids
                    .iter()
                    .enumerate()
                    .map(|(i, d)| crate::records::LayerSummary {
                        diff_id: d.to_string(),
                        size: sizes.get(i).copied().unwrap_or(0),
                        created_by: made_by.get(i).cloned().unwrap_or_default(),
                        step: None,
                    })
                    .collect();
                found.layer_nodes = target.and_then(|t| {
                    crate::records::layer_steps(&dag, t, layers.len(), &|n| u32::try_from(n).ok())
                        .map(|v| v.into_iter().map(|n| n.map(|n| n as usize)).collect())
                });
                found.image = Some(crate::records::ImageSummary {
                    id: img.id.to_string(),
                    names: image_names.clone(),
                    platform: img.config.platform().format(),
                    size: layers.iter().map(|l| l.size).sum(),
                    layers,
                });
                let t = progress.task("exporting to image");
                if res.platform_images.is_empty() {
                    t.line(&format!("writing image {} done", img.id));
                } else {
                    for (p, img) in &res.platform_images {
                        t.line(&format!("writing image {} for {} done", img.id, p.format()));
                    }
                    for m in &res.manifests {
                        t.line(&format!("writing image index {} done", m.digest));
                    }
                }
                t.done();
                for archive in &to_load {
                    let t = progress.task("loading into the Docker engine");
                    for m in crate::load::load(archive)? {
                        t.line(&m);
                    }
                    t.done();
                }
                // A multi-platform build's ID is its index's digest (as
                // buildx's), when an output wrote one.
                let iid = match (res.platform_images.is_empty(), res.manifests.first()) {
                    (false, Some(index)) => index.digest,
                    _ => img.id,
                };
                found.iid = Some(iid.to_string());
                if let Some(path) = &args.iidfile {
                    std::fs::write(path, iid.to_string())
                        .with_context(|| format!("writing --iidfile {}", path.display()))?;
                }
                if print_id {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{iid}");
                }
            }
            drop(store_lock);
            Ok(())
        }
        Err(WorkerError::Step(e)) => {
            let tail = progress.tail(e.node);
            let mut msg = report_step(file, &e, &tail);
            if tail.iter().any(|l| is_no_space(l)) || is_no_space(&e.message) {
                msg.push_str(&no_space_note(&state.root));
            }
            Err(Failure::Build(msg))
        }
        Err(WorkerError::Cancelled) => Err(Failure::Build(CANCELLED.into())),
        Err(e) if is_no_space(&e.to_string()) => Err(Failure::Build(format!(
            "error: {e}{}",
            no_space_note(&state.root)
        ))),
        Err(e @ WorkerError::Registry(_)) => Err(Failure::Registry(anyhow::Error::new(e))),
        Err(e) => Err(Failure::Other(anyhow::Error::new(e))),
    }
}

/// The automatic garbage collection (see [`crate::prune::auto_gc`]);
/// `KILN_GC_KEEP_STORAGE` sets its limit (a size) or turns it off (`off`).
fn gc_after_build(state: &State, mode: Mode) {
    let limit = match env_var("KILN_GC_KEEP_STORAGE").as_deref() {
        Some("off") => return,
        Some(s) => match crate::units::parse_size(s) {
            Some(n) => Some(n),
            None => {
                note(
                    mode,
                    &format!(
                        "warning: KILN_GC_KEEP_STORAGE={s:?} is not a size (10GB, 512MB) or off: no automatic garbage collection"
                    ),
                );
                return;
            }
        },
        None => None,
    };
    if let Some(msg) = crate::prune::auto_gc(state, limit)
        && mode != Mode::Quiet
    {
        note(mode, &msg);
    }
}

/// `--explain`: why each step that ran did (JSON: one `explain` event each).
fn print_explanations(mode: Mode, explanations: &[(String, String)]) {
    let mut sorted: Vec<&(String, String)> = explanations.iter().collect();
    sorted.sort();
    if mode == Mode::Json {
        for (step, why) in sorted {
            crate::progress::emit_json(
                serde_json::json!({"status": "explain", "name": step, "reason": why}),
            );
        }
        return;
    }
    let mut err = std::io::stderr().lock();
    if explanations.is_empty() {
        let _ = writeln!(err, "\nEvery step was cached.");
        return;
    }
    let _ = writeln!(err, "\nWhy steps ran:");
    for (step, why) in sorted {
        let _ = writeln!(err, " - {step}: {why}");
    }
}

/// The configuration `--change` instructions describe, parsed by the
/// frontend (`FROM scratch` plus the instructions).
fn changes(args: &ImportArgs, platform: &Platform) -> Result<kiln_llb::ImageConfig, Failure> {
    const ALLOWED: [&str; 10] = [
        "CMD",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "LABEL",
        "ONBUILD",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ];
    let mut text = String::from("FROM scratch\n");
    for c in &args.changes {
        let word = c
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !ALLOWED.contains(&word.as_str()) {
            return Err(Failure::Usage(format!(
                "--change {c:?}: {word} is not allowed (allowed: {})",
                ALLOWED.join(", ")
            )));
        }
        text.push_str(c);
        text.push('\n');
    }
    let opts = BuildOptions {
        target_platform: Some(platform.clone()),
        build_platform: platform.clone(),
        ..BuildOptions::default()
    };
    let config_of = |text: String| -> Result<kiln_llb::ImageConfig, Failure> {
        let file = SourceFile::from_bytes("--change".to_owned(), text.into_bytes())?;
        let plan = kiln_frontend::plan(&file, &opts, &Offline)?;
        Ok(plan.definition.target_stage().config.clone())
    };
    // What the changes set is what differs from a bare `FROM scratch` stage
    // (the frontend gives every stage a default PATH and working directory;
    // `docker import` adds neither).
    let baseline = config_of("FROM scratch\n".to_owned())?;
    let changed = config_of(text)?;
    let mut out = kiln_llb::ImageConfig {
        platform: changed.platform.clone(),
        ..kiln_llb::ImageConfig::default()
    };
    let base_json = serde_json::to_value(&baseline).context("encoding the configuration")?;
    let mut json = serde_json::to_value(&changed).context("encoding the configuration")?;
    if let (Some(obj), Some(base)) = (json.as_object_mut(), base_json.as_object()) {
        obj.retain(|k, v| k != "history" && k != "env" && base.get(k) != Some(v));
        let merged: kiln_llb::ImageConfig =
            serde_json::from_value(serde_json::Value::Object(obj.clone()))
                .context("decoding the configuration")?;
        out = kiln_llb::ImageConfig {
            platform: out.platform,
            ..merged
        };
    }
    out.env = changed
        .env
        .iter()
        .filter(|e| !baseline.env.contains(e))
        .cloned()
        .collect();
    Ok(out)
}

/// `kiln import --platform P … NAME`: a name that has an image for another
/// platform gets an index of both (replacing its image for `P`, if any), as a
/// registry would; `FROM NAME` then picks the build's platform.
fn name_platform(
    state: &State,
    name: &str,
    platform: &Platform,
    new: kiln_oci::ImageRef,
) -> anyhow::Result<()> {
    kiln_worker::images::naming(state, &[new.id], |ix| {
        let mut per = ix.platforms_of(name)?;
        if per.is_empty()
            && let Some(old) = ix.get(name)?
        {
            let p = kiln_worker::image::load_config(state, &old.id)?.platform();
            if !p.os.is_empty() {
                per.insert(p.format(), old);
            }
        }
        per.insert(platform.format(), new);
        if per.len() == 1 {
            ix.set(name, new)?;
            return Ok(());
        }
        let host = Platform::host().format();
        let default = per.get(&host).copied().unwrap_or(new);
        let all: Vec<(String, kiln_oci::ImageRef)> = per.into_iter().collect();
        ix.set_platforms(name, &all, default)?;
        Ok(())
    })?;
    Ok(())
}

/// Writes the manifest of the imported image `id` (its one gzip layer
/// blob, as the import stored it) into the content store.
fn import_manifest(state: &State, id: &kiln_llb::Digest) -> anyhow::Result<kiln_llb::Digest> {
    let config = kiln_worker::image::load_config(state, id)?;
    let mut layers = Vec::with_capacity(config.rootfs.diff_ids.len());
    for d in &config.rootfs.diff_ids {
        let blobs = state.layer_blobs.list(d)?;
        let (_, desc) = blobs
            .into_iter()
            .find(|(c, _)| *c == kiln_oci::Compression::gzip())
            .ok_or_else(|| anyhow::anyhow!("layer {d}: the import stored no gzip blob"))?;
        layers.push(desc);
    }
    let written =
        kiln_oci::write_image(&state.content, &config, &layers, kiln_oci::MediaTypes::Oci)?;
    Ok(written.manifest.digest)
}

/// `kiln import`.
pub fn import(root: Option<&Path>, args: &ImportArgs) -> Result<(), Failure> {
    let platform = match &args.platform {
        None => Platform::host(),
        Some(p) => p
            .parse::<Platform>()
            .map_err(|e| Failure::Usage(format!("--platform: {e}")))?,
    };
    let config = changes(args, &platform)?;
    let name = args.name.as_deref().map(normalize).transpose()?;
    let state = crate::store::open_for_layers(root)?;
    let _lock = crate::store::lock(&state, kiln_worker::lock::LockKind::Shared)?;
    let reader: Box<dyn Read> = if args.file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file))?,
        ))
    };
    let created = match env_var("SOURCE_DATE_EPOCH").and_then(|s| s.parse::<i64>().ok()) {
        Some(e) => (e, 0),
        None => now(),
    };
    let id = kiln_worker::import(
        &state,
        ImportRequest {
            tar: reader,
            config,
            comment: args
                .message
                .clone()
                .unwrap_or_else(|| "Imported from -".to_owned()),
            platform: platform.clone(),
            created,
        },
    )
    .with_context(|| format!("importing {}", args.file))?;
    // The image's manifest, as `docker import` into containerd's image store
    // makes one: what `kiln images --digests` shows and what a push of the
    // name sends (the layer as imported, gzip, OCI media types).
    let manifest = import_manifest(&state, &id).context("writing the image manifest")?;
    if let Some(n) = name {
        let new = kiln_oci::ImageRef {
            id,
            manifest: Some(manifest),
        };
        if args.platform.is_some() {
            name_platform(&state, &n, &platform, new).context("naming the image")?;
        } else {
            kiln_worker::images::naming(&state, &[id], |ix| Ok(ix.set(&n, new)?))
                .context("naming the image")?;
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{id}");
    Ok(())
}
