//! The worker with a fake [`Executor`]: which RUN steps run, in what order
//! and how often, what their layers hold and what a failure leaves behind,
//! without namespaces, mounts or root (the `native-unmounted` snapshotter
//! keeps layers as plain directories), as BuildKit's solver tests use fake
//! ops. The fake runs nothing: it records the command and writes a file
//! named by it into the step's new layer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kiln_executor::{ExecError, Executor, ExitStatus, RunSpec, Stream};
use kiln_frontend::{BuildOptions, Offline, SourceFile};
use kiln_worker::export::Local;
use kiln_worker::{BuildRequest, State};

/// Records every step it is asked to run; a command containing `fail`
/// exits 1; one containing `meet` waits (up to 10 s) until another such
/// step is running too, so two steps the worker runs at once both see the
/// other, and two it runs one after the other do not.
#[derive(Default)]
struct Fake {
    runs: Mutex<Vec<String>>,
    running: AtomicUsize,
    most_at_once: AtomicUsize,
    met: (Mutex<usize>, std::sync::Condvar),
}

impl Fake {
    fn runs(&self) -> Vec<String> {
        self.runs.lock().unwrap().clone()
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.runs.lock().unwrap())
    }
}

impl Executor for Fake {
    fn run(
        &self,
        spec: &RunSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        _cancelled: &dyn Fn() -> bool,
    ) -> Result<ExitStatus, ExecError> {
        // `RUN x` is `/bin/sh -c x`.
        let cmd = spec.args.last().cloned().unwrap_or_default();
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_at_once.fetch_max(now, Ordering::SeqCst);
        self.runs.lock().unwrap().push(cmd.clone());
        if cmd.contains("meet") {
            let (arrived, cv) = &self.met;
            let mut n = arrived.lock().unwrap();
            *n += 1;
            cv.notify_all();
            let _ = cv
                .wait_timeout_while(n, std::time::Duration::from_secs(10), |n| *n < 2)
                .unwrap();
        }
        let name: String = cmd
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        std::fs::write(spec.rootfs.upper.join(&name), format!("{cmd}\n")).unwrap();
        output(Stream::Stdout, format!("ran {cmd}\n").as_bytes());
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(ExitStatus::Code(if cmd.contains("fail") { 1 } else { 0 }))
    }
}

/// One machine: a state directory and a context directory.
struct Machine {
    dir: tempfile::TempDir,
    state: PathBuf,
    context: PathBuf,
    fake: Arc<Fake>,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let context = dir.path().join("context");
        std::fs::create_dir_all(&context).unwrap();
        Machine {
            state,
            context,
            dir,
            fake: Arc::default(),
        }
    }

    /// Builds `dockerfile` and exports the target's filesystem to `dest`.
    fn build(
        &self,
        dockerfile: &str,
        no_cache: bool,
        dest: &Path,
    ) -> Result<(), kiln_worker::Error> {
        let file = SourceFile::new("Dockerfile", dockerfile);
        let opts = BuildOptions {
            no_cache,
            ..BuildOptions::default()
        };
        let plan = kiln_frontend::plan(&file, &opts, &Offline).expect("the Dockerfile plans");
        let mut state = State::open(&self.state)?;
        // Plain directories: the test needs neither root nor mounts.
        state.snapshotter = Arc::new(kiln_snapshot::Native::unmounted(state.whiteouts));
        let dag = Arc::new(kiln_worker::build::dag(&plan.definition)?);
        let req = BuildRequest {
            definition: plan.definition,
            more_platforms: Vec::new(),
            multi_platform: false,
            context_dir: self.context.clone(),
            dockerfile: None,
            context_dockerignore: true,
            context_scope: None,
            local_contexts: Vec::new(),
            outputs: vec![Box::new(Local {
                dest: dest.to_path_buf(),
                files: Default::default(),
            })],
            max_parallelism: 4,
            source_date_epoch: None,
            rewrite_timestamp: false,
            now: (1_700_000_000, 0),
            executor: self.fake.clone(),
            hostname: "kiln".to_owned(),
            limits: kiln_executor::Limits::default(),
            resources: kiln_executor::Resources::default(),
            grants: kiln_worker::ExecGrants::default(),
            registry: None,
            log: Arc::new(|_| {}),
            transfers: None,
            cache_from: Vec::new(),
            cache_to: Vec::new(),
            attest: kiln_worker::attest::AttestRequest::default(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cancel = kiln_solver::CancelToken::new();
        runtime
            .block_on(kiln_worker::build(
                &state,
                dag,
                req,
                Arc::new(|_| {}),
                &cancel,
            ))
            .map(|_| ())
    }
}

/// The files of `dir` and their contents.
fn files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap_or_default(),
            )
        })
        .collect()
}

fn out(m: &Machine, name: &str) -> PathBuf {
    m.dir.path().join(name)
}

#[test]
fn steps_run_once_in_order_and_their_layers_stack() {
    let m = Machine::new();
    let df = "FROM scratch\nRUN one\nRUN two\n";
    m.build(df, false, &out(&m, "a")).unwrap();
    assert_eq!(m.fake.take(), ["one", "two"]);
    assert_eq!(
        files(&out(&m, "a")),
        BTreeMap::from([
            ("one".to_owned(), "one\n".to_owned()),
            ("two".to_owned(), "two\n".to_owned())
        ])
    );
    // The same build again: every step comes from the cache, and the
    // result is the same.
    m.build(df, false, &out(&m, "b")).unwrap();
    assert_eq!(m.fake.runs(), Vec::<String>::new());
    assert_eq!(files(&out(&m, "a")), files(&out(&m, "b")));
}

#[test]
fn a_changed_step_runs_again_and_the_steps_before_it_do_not() {
    let m = Machine::new();
    m.build(
        "FROM scratch\nRUN one\nRUN two\nRUN three\n",
        false,
        &out(&m, "a"),
    )
    .unwrap();
    m.fake.take();
    m.build(
        "FROM scratch\nRUN one\nRUN TWO\nRUN three\n",
        false,
        &out(&m, "b"),
    )
    .unwrap();
    // `three` runs again: its parent changed.
    assert_eq!(m.fake.take(), ["TWO", "three"]);
    assert_eq!(
        files(&out(&m, "b")).keys().collect::<Vec<_>>(),
        ["TWO", "one", "three"]
    );
}

#[test]
fn no_cache_runs_every_step() {
    let m = Machine::new();
    let df = "FROM scratch\nRUN one\nRUN two\n";
    m.build(df, false, &out(&m, "a")).unwrap();
    m.fake.take();
    m.build(df, true, &out(&m, "b")).unwrap();
    assert_eq!(m.fake.take(), ["one", "two"]);
}

#[test]
fn a_failed_step_is_not_cached_and_the_steps_before_it_are() {
    let m = Machine::new();
    let err = m
        .build("FROM scratch\nRUN one\nRUN fail\n", false, &out(&m, "a"))
        .unwrap_err();
    assert!(
        err.to_string().contains("exit code: 1"),
        "the error names the exit code: {err}"
    );
    assert_eq!(m.fake.take(), ["one", "fail"]);
    assert!(!out(&m, "a").join("one").exists(), "nothing exported");
    let _ = m.build("FROM scratch\nRUN one\nRUN fail\n", false, &out(&m, "b"));
    assert_eq!(m.fake.take(), ["fail"]);
}

#[test]
fn independent_stages_run_at_once_and_a_shared_stage_runs_once() {
    let m = Machine::new();
    let df = "FROM scratch AS base\nRUN base\n\
              FROM base AS left\nRUN meet left\n\
              FROM base AS right\nRUN meet right\n\
              FROM scratch\nCOPY --from=left /meet_left /\nCOPY --from=right /meet_right /\n";
    m.build(df, false, &out(&m, "a")).unwrap();
    let mut runs = m.fake.take();
    assert_eq!(runs.remove(0), "base", "the shared stage first, once");
    runs.sort();
    assert_eq!(runs, ["meet left", "meet right"]);
    assert_eq!(
        m.fake.most_at_once.load(Ordering::SeqCst),
        2,
        "the two stages ran at the same time"
    );
    assert_eq!(
        files(&out(&m, "a")).keys().collect::<Vec<_>>(),
        ["meet_left", "meet_right"]
    );
}
