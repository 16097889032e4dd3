//! `kiln build` and `kiln import`: flags → a [`kiln_worker::BuildRequest`],
//! the progress display, and the error report.
//!
//! The files: this one, the build's phases; `flags.rs`, what the flags
//! decide before the state directory is opened; `epoch.rs`, the build's
//! clock and `SOURCE_DATE_EPOCH`; `planning.rs`, the Dockerfile planned
//! against the store's resolver; `errors.rs`, how a failed build is
//! reported; `record.rs`, the build record's parts; `after.rs`, what a
//! build says and does once its progress is done; `import.rs`, `kiln import`.

mod after;
mod epoch;
mod errors;
mod flags;
mod import;
mod planning;
mod record;

pub use import::import;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use kiln_frontend::{BuildOptions, Offline, SourceFile};
use kiln_reference::Reference;
use kiln_solver::CancelToken;
use kiln_worker::{Error as WorkerError, Output, State};

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::globals::Globals;
use crate::options::{
    ContextValue, build_contexts, build_options, read_dockerfile, reject_unsupported,
};
use crate::progress::{Mode, Progress};
use crate::store::{env_var, state_dir};

use after::{gc_after_build, note, print_explanations};
use epoch::{build_epoch, export_epoch, now};
use errors::{is_no_space, no_space_note, report_step};
use flags::{Plan, limits, outputs, progress_mode, resources};
use planning::WatchedResolver;
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
    let grants = crate::grants::grants(
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
    let cancelled = matches!(&result, Err(Failure::Cancelled));
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
    crate::snapshotter::choose_snapshotter(state, globals, isolation.snapshotter())?;
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
        Err(WorkerError::Cancelled) => Err(Failure::Cancelled),
        Err(e) if is_no_space(&e.to_string()) => Err(Failure::Build(format!(
            "error: {e}{}",
            no_space_note(&state.root)
        ))),
        Err(e @ WorkerError::Registry(_)) => Err(Failure::Registry(anyhow::Error::new(e))),
        Err(e) => Err(Failure::Other(anyhow::Error::new(e))),
    }
}
