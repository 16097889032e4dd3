//! `kiln build` and `kiln import`: flags → a [`kiln_worker::BuildRequest`],
//! the progress display, and the error report.
//!
//! [`build`] is the build's phases, one call each; the files: `flags.rs`,
//! what the flags decide before anything is opened; `outputs.rs`, the
//! outputs and the names they give; `open.rs`, the context, the
//! Dockerfile, the isolation mode and the state directory; `planning.rs`,
//! the Dockerfile planned against the store's resolver; `epoch.rs`, the
//! build's clock and `SOURCE_DATE_EPOCH`; `solve.rs`, the solve and
//! Ctrl-C; `image.rs`, the image made; `errors.rs`, how a failed build is
//! reported; `record.rs`, the build record; `after.rs`, what a build says
//! and does once its progress is done; `import.rs`, `kiln import`.

mod after;
mod epoch;
mod errors;
mod flags;
mod image;
mod import;
mod open;
mod outputs;
mod planning;
mod record;
mod solve;

pub use import::import;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use kiln_frontend::SourceFile;
use kiln_worker::State;

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::globals::Globals;
use crate::options::reject_unsupported;
use crate::progress::{Mode, Progress};
use crate::store::env_var;

use after::note;
use epoch::{build_epoch, now};
use flags::{Flags, Plan, limits, resources};
use record::{Found, record_head};

/// Hostname of RUN steps: BuildKit's, so build scripts that look at it behave
/// the same.
const HOSTNAME: &str = "buildkitsandbox";

/// Whether kiln runs in a GitHub Actions job (`GITHUB_ACTIONS=true`): plain
/// progress is folded into log groups, and a failure becomes an `::error::`.
pub fn github_actions() -> bool {
    env_var("GITHUB_ACTIONS").as_deref() == Some("true")
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
    let (flags, mut ssh_agents) = flags::decide(args)?;
    // Not root: the flags are fine, so the build runs again in a user
    // namespace (before the Dockerfile is read: `-f -` is read there).
    if let Some(r) = crate::globals::enter_rootless(globals.debug) {
        return r;
    }
    let mut opened = open::open(globals, args, &flags)?;
    // The isolation is decided (and its `unshare` done): the agents of
    // `--ssh ID=KEYFILE` may answer from here on, on threads of their own.
    ssh_agents.serve();
    let (state, remote, file) = (&mut opened.state, &opened.remote, &opened.file);
    let local_args = remote.as_ref().map_or(args, |r| &r.args);
    let (mode, keep_records) = (flags.mode, flags.keep_records);
    let started = SystemTime::now();
    let progress = Arc::new(Progress::new(mode).github_groups(github_actions()));
    let head = record_head(args, &flags.outputs, &flags.opts);
    let mut flags = flags;
    if let Some(r) = remote {
        // No `.dockerignore` applies to it (`CopyIgnoredFile` has no rules).
        flags.opts.dockerignore = None;
        // `SOURCE_DATE_EPOCH=context`: a git commit's time, an HTTP
        // context's; stdin has none, as a local directory.
        flags.opts.local_context = opened.main_context == crate::options::MainContext::Stdin;
        flags.opts.context_epoch = r.fetched.time;
    }
    let plan = Plan {
        flags,
        isolation: opened.isolation,
        local_context: remote.is_none(),
        context_scope: remote.as_ref().map(|_| {
            format!(
                "{}\0{}",
                args.context,
                args.file.as_deref().unwrap_or_default()
            )
        }),
        git_context: match (&opened.main_context, remote) {
            (
                crate::options::MainContext::Git {
                    remote,
                    git_ref,
                    subdir,
                    ..
                },
                Some(r),
            ) => Some(flags::GitContext {
                given: args.context.clone(),
                remote: remote.clone(),
                git_ref: git_ref.clone(),
                subdir: subdir.clone(),
                commit: r.fetched.commit.clone().unwrap_or_default(),
                // As buildx: `-f -` and an absolute `-f` are read here.
                local_dockerfile: args
                    .file
                    .as_deref()
                    .is_some_and(|f| f == "-" || Path::new(f).is_absolute()),
            }),
            _ => None,
        },
    };
    let mut found = Found::default();
    let result = run(
        globals, local_args, state, file, &progress, plan, &mut found,
    );
    if let Some(r) = remote {
        // Its stat cache is named by its path, which no build sees again.
        let _ = std::fs::remove_file(state.context_cache(&r.dir()));
    }
    progress.finish(match &result {
        Ok(()) => "",
        Err(Failure::Cancelled) => "CANCELED",
        Err(_) => "ERROR",
    });
    let took = progress.started().elapsed();
    let record = record::assemble(&progress, head, &mut found, &result, started, took);
    let log = progress.gathered().log;
    if let Err(e) = crate::records::save(&state.root, &record, &log, keep_records) {
        note(mode, &format!("warning: {e}"));
    }
    let result = after::aftermath(args, state, mode, &found, &record, result);
    after::summary(mode, &progress, &found, &record, took, result.is_ok());
    result
}

/// The build proper, once the state directory is open.
fn run(
    globals: &Globals,
    args: &BuildArgs,
    state: &mut State,
    file: &SourceFile,
    progress: &Arc<Progress>,
    plan: Plan,
    found: &mut Found,
) -> Result<(), Failure> {
    let Plan {
        flags:
            Flags {
                mode,
                print_id,
                keep_records: _,
                outputs,
                cache_to,
                cache_from,
                image_names,
                mut opts,
                contexts,
                epoch,
                grants,
                attest: (mut attest, attest_notes),
            },
        isolation,
        local_context,
        context_scope,
        git_context,
    } = plan;
    crate::isolation::check_flags(&*isolation, args)?;
    let step_limits = limits(args)?;
    isolation
        .check_limits(&step_limits)
        .map_err(Failure::Usage)?;
    let snapshotter =
        crate::snapshotter::choose_snapshotter(state, globals, isolation.snapshotter())?;
    let state = &*state;
    let store_lock = crate::store::lock(state, kiln_worker::lock::LockKind::Shared)?;
    // `--load`: the archive goes to scratch space first, then to the engine.
    let scratch = state.scratch().context("making scratch space")?;
    let mut outputs = outputs;
    let to_load = outputs::load_archives(&mut outputs, scratch.path());
    let insecure = outputs::insecure_hosts(&outputs);
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
    let imported = planning::import_contexts(state, &contexts, &mut opts)?;
    let planned = planning::plan(file, args, &opts, &resolver, found)?;
    match mode {
        Mode::Json | Mode::RawJson => planned.notes.iter().for_each(|w| progress.warning(w)),
        _ => crate::plan::print_warnings(&planned.notes),
    }
    let (planned, more_platforms) = (planned.first, planned.more_platforms);
    // The base images (`--metadata-file`), not an SBOM generator.
    let bases = resolver.resolutions();
    let scans = sbom_scans(&mut attest, &planned.definition, &more_platforms, &resolver)?;
    let dag = Arc::new(
        kiln_worker::build::dag_with(&planned.definition, &more_platforms, &scans)
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
        .executor(snapshotter)
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
    crate::attest::complete(
        &mut attest,
        args,
        &opts,
        file.text().as_bytes(),
        &grants,
        &image_names,
    );
    attest.oci_layouts = imported.oci_layouts;
    if let Some(g) = &git_context {
        crate::attest::git_context(
            &mut attest,
            &crate::attest::GitContext {
                given: &g.given,
                remote: &g.remote,
                git_ref: &g.git_ref,
                subdir: &g.subdir,
                commit: &g.commit,
                local_dockerfile: g.local_dockerfile,
            },
        );
    }
    // buildx's git information of a local context, for the provenance.
    if local_context && attest.provenance.is_some() {
        let context = PathBuf::from(&args.context);
        let mut locals = vec![("context".to_owned(), context.clone())];
        match args.file.as_deref() {
            Some("-") => {}
            None => locals.push(("dockerfile".to_owned(), context.clone())),
            Some(f) => {
                let dir = Path::new(f).parent().unwrap_or(Path::new("."));
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                locals.push(("dockerfile".to_owned(), dir.to_path_buf()));
            }
        }
        locals.extend(imported.local.iter().cloned());
        attest.record.vcs = crate::vcs::git_info(&context, &locals, &|k| std::env::var(k).ok());
    }
    let (sde, rewrite_timestamp) = build_epoch(epoch, planned.definition.source_date_epoch, mode);
    let req = kiln_worker::BuildRequest {
        definition: planned.definition,
        more_platforms,
        multi_platform: opts.multi_platform,
        context_dir,
        dockerfile,
        context_dockerignore: local_context,
        context_scope,
        local_contexts: imported.local,
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
    let res = match solve::solve(state, &dag, req, progress)? {
        Ok(res) => res,
        Err(e) => return Err(errors::failure(e, file, progress, &state.root)),
    };
    found.explanations.clone_from(&res.explanations);
    if let Some(path) = &args.metadata_file {
        crate::metadata::write(path, state, &res, &image_names, &bases)?;
    }
    if let Some(img) = &res.image {
        let (summary, layer_nodes) = image::summary(state, img, &image_names, &dag, target);
        found.image = Some(summary);
        found.layer_nodes = layer_nodes;
        image::say_written(progress, &res, img);
        for archive in &to_load {
            let t = progress.task("loading into the Docker engine");
            for m in crate::load::load(archive)? {
                t.line(&m);
            }
            t.done();
        }
        let iid = image::id(&res, img);
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

/// With an SBOM generator image (`--sbom generator=`): the generator
/// resolved for the build platform, as BuildKit resolves it, and the graph
/// of its scan of each platform's image (their exec vertices go to `attest`).
fn sbom_scans(
    attest: &mut kiln_worker::attest::AttestRequest,
    first: &kiln_llb::Definition,
    more: &[kiln_llb::Definition],
    resolver: &dyn kiln_frontend::ImageResolver,
) -> Result<Vec<kiln_llb::Graph>, Failure> {
    let Some(sbom) = attest.sbom.as_mut() else {
        return Ok(Vec::new());
    };
    let Some(reference) = sbom.generator.clone() else {
        return Ok(Vec::new());
    };
    let platform = kiln_llb::Platform::host();
    let resolved = match resolver.resolve(&reference, &platform) {
        Ok(kiln_frontend::Resolution::Resolved(r)) => r,
        Ok(kiln_frontend::Resolution::Unresolved) => {
            return Err(Failure::Registry(anyhow::anyhow!(
                "SBOM generator {reference}: the image could not be found"
            )));
        }
        Err(e) => {
            return Err(Failure::Registry(anyhow::anyhow!(
                "SBOM generator {reference}: {e}"
            )));
        }
    };
    let generator = kiln_worker::attest::Generator {
        reference,
        digest: resolved.digest,
        config: resolved.config,
        platform,
        params: sbom.params.clone(),
    };
    let mut graphs = Vec::new();
    for def in std::iter::once(first).chain(more) {
        let name = def.target_stage().platform.format_all();
        let (graph, exec) = kiln_worker::attest::scan_graph(def, &generator, &name)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        sbom.scans.push(exec);
        graphs.push(graph);
    }
    Ok(graphs)
}
