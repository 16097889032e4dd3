//! Scheduler tests with a fake worker, BuildKit-style: payloads are small ops with a
//! name and behaviour flags, values are strings, keys derive from the name, a "content
//! version" and the input keys. The worker counts executions per node and records what
//! it observed (cancellation, concurrency); concurrency is proved with rendezvous
//! points, never with timing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kiln_solver::{
    CacheError, CacheStore, CancelToken, Cx, Dag, DirCache, Event, EventKind, Key, KeyInput,
    MemoryCache, Node, Resolved, SolveError, Solver, Stream, Worker,
};

/// How long a rendezvous or a block waits before declaring the test broken. It only
/// turns a would-be hang into a failure; passing never depends on it.
const HANG: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
struct Op {
    name: &'static str,
    heavy: bool,
    fail: bool,
    panic: bool,
    /// Block until the solve is cancelled (and record that it was observed).
    block: bool,
    /// In `execute`, before anything else, wait at each rendezvous `(group, n)` in turn
    /// until `n` participants of the group have arrived.
    meet: &'static [(&'static str, usize)],
    /// The same, in `cache_key`.
    key_meet: &'static [(&'static str, usize)],
    /// `cache_key` returns `None`.
    uncacheable: bool,
    /// Content-keyed: its content key names what it reads from its inputs
    /// (`Fake::reads`), not their keys.
    content: bool,
}

fn op(name: &'static str) -> Op {
    Op {
        name,
        ..Op::default()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct FakeError(String);

#[derive(Default)]
struct Fake {
    execs: Mutex<BTreeMap<&'static str, usize>>,
    /// Content version per name: part of the key and of the value.
    versions: Mutex<HashMap<&'static str, u32>>,
    /// Appended to the value but not the key (a non-reproducible result).
    salt: Mutex<HashMap<&'static str, String>>,
    /// What a content-keyed node reads from its inputs (its content key's part).
    reads: Mutex<HashMap<&'static str, String>>,
    /// Content keys computed, per name.
    content_keys: Mutex<BTreeMap<&'static str, usize>>,
    /// Values `is_valid` rejects.
    invalid: Mutex<HashSet<String>>,
    saw_cancel: Mutex<HashSet<&'static str>>,
    finished: Mutex<HashSet<&'static str>>,
    running_heavy: AtomicUsize,
    max_heavy: AtomicUsize,
    meets: Mutex<HashMap<&'static str, usize>>,
    meet_cv: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fake {
    fn execs(&self) -> BTreeMap<&'static str, usize> {
        lock(&self.execs).clone()
    }

    fn take_execs(&self) -> Vec<&'static str> {
        std::mem::take(&mut *lock(&self.execs))
            .into_keys()
            .collect()
    }

    fn version(&self, name: &str) -> u32 {
        lock(&self.versions).get(name).copied().unwrap_or(0)
    }

    fn meet(&self, group: &'static str, n: usize, cx: &Cx) -> Result<(), FakeError> {
        let start = Instant::now();
        let mut g = lock(&self.meets);
        let arrived = g.entry(group).or_default();
        let target = (*arrived / n + 1) * n;
        *arrived += 1;
        self.meet_cv.notify_all();
        while g.get(group).copied().unwrap_or(0) < target {
            if cx.is_cancelled() {
                return Err(FakeError(format!("cancelled while meeting {group}")));
            }
            if start.elapsed() > HANG {
                return Err(FakeError(format!("rendezvous {group} never completed")));
            }
            g = match self.meet_cv.wait_timeout(g, Duration::from_millis(20)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        Ok(())
    }
}

struct HeavyGuard<'a>(&'a Fake);

impl Drop for HeavyGuard<'_> {
    fn drop(&mut self) {
        self.0.running_heavy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Worker for Fake {
    type Payload = Op;
    type Value = String;
    type Error = FakeError;

    fn cache_key(
        &self,
        node: &Op,
        inputs: &[KeyInput<String>],
        cx: &Cx,
    ) -> Result<Option<Key>, FakeError> {
        for &(group, n) in node.key_meet {
            self.meet(group, n, cx)?;
        }
        if node.uncacheable {
            return Ok(None);
        }
        let version = self.version(node.name).to_le_bytes();
        let mut parts: Vec<Vec<u8>> = vec![node.name.as_bytes().to_vec(), version.to_vec()];
        for input in inputs {
            parts.push(match input.key {
                Some(k) => k.as_bytes().to_vec(),
                // The solver always gives the value of an input without a key.
                None => input
                    .value
                    .as_deref()
                    .unwrap_or("<missing>")
                    .as_bytes()
                    .to_vec(),
            });
        }
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        Ok(Some(Key::derive("fake.v1", &parts)))
    }

    fn execute(
        &self,
        node: &Op,
        inputs: &[Resolved<String>],
        cx: &Cx,
    ) -> Result<String, FakeError> {
        *lock(&self.execs).entry(node.name).or_default() += 1;
        let _heavy = node.heavy.then(|| {
            let now = self.running_heavy.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_heavy.fetch_max(now, Ordering::SeqCst);
            HeavyGuard(self)
        });
        let result = (|| {
            cx.log(Stream::Stdout, node.name.as_bytes());
            for &(group, n) in node.meet {
                self.meet(group, n, cx)?;
            }
            if node.panic {
                panic!("{} exploded", node.name);
            }
            if node.fail {
                return Err(FakeError(format!("{} failed", node.name)));
            }
            if node.block {
                if cx.cancelled_wait(HANG) {
                    lock(&self.saw_cancel).insert(node.name);
                    return Err(FakeError(format!("{} cancelled", node.name)));
                }
                return Err(FakeError(format!("{} was never cancelled", node.name)));
            }
            // "name:v<version><salt>(<input values>)", without parentheses for leaves.
            let ins: Vec<&str> = inputs.iter().map(|r| r.value.as_str()).collect();
            let salt = lock(&self.salt).get(node.name).cloned().unwrap_or_default();
            let mut value = format!("{}:v{}{salt}", node.name, self.version(node.name));
            if !ins.is_empty() {
                value += &format!("({})", ins.join(","));
            }
            Ok(value)
        })();
        lock(&self.finished).insert(node.name);
        result
    }

    fn is_valid(&self, value: &String) -> bool {
        !lock(&self.invalid).contains(value)
    }

    fn is_heavy(&self, node: &Op) -> bool {
        node.heavy
    }

    fn keys_by_content(&self, node: &Op, _inputs: &[KeyInput<String>]) -> bool {
        node.content
    }

    fn content_key(
        &self,
        node: &Op,
        inputs: &[Resolved<String>],
        _cx: &Cx,
    ) -> Result<Option<Key>, FakeError> {
        *lock(&self.content_keys).entry(node.name).or_default() += 1;
        if inputs.is_empty() {
            return Err(FakeError(format!(
                "{}: content key without inputs",
                node.name
            )));
        }
        let reads = lock(&self.reads)
            .get(node.name)
            .cloned()
            .unwrap_or_default();
        let version = self.version(node.name).to_le_bytes();
        Ok(Some(Key::derive(
            "fake.content.v1",
            &[node.name.as_bytes(), &version, reads.as_bytes()],
        )))
    }
}

/// Collects events; optionally reacts to them.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    fn sink(self: &Arc<Self>) -> Arc<dyn Fn(Event) + Send + Sync> {
        let me = self.clone();
        Arc::new(move |e| lock(&me.events).push(e))
    }

    fn all(&self) -> Vec<Event> {
        lock(&self.events).clone()
    }

    /// Per node, the event kinds as short tags.
    fn tags(&self) -> BTreeMap<usize, Vec<&'static str>> {
        let mut out: BTreeMap<usize, Vec<&'static str>> = BTreeMap::new();
        for e in self.all() {
            out.entry(e.node).or_default().push(tag(&e.kind));
        }
        out
    }
}

fn tag(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Cached => "cached",
        EventKind::Started => "started",
        EventKind::Log { .. } => "log",
        EventKind::Completed { .. } => "completed",
        EventKind::Failed { .. } => "failed",
        EventKind::Cancelled => "cancelled",
    }
}

/// Per node: logs, then `cached`, or `started` logs* and one of
/// `completed`/`failed`/`cancelled`, or just `cancelled`; nothing after the terminal event.
fn assert_well_ordered(rec: &Recorder) {
    for (node, tags) in rec.tags() {
        let rest: Vec<&str> = tags.iter().copied().filter(|t| *t != "log").collect();
        let ok = matches!(
            rest.as_slice(),
            ["cached"]
                | ["cancelled"]
                | ["failed"]
                | ["started", "completed" | "failed" | "cancelled"]
        );
        assert!(ok, "node {node}: bad event sequence {tags:?}");
        let terminal = tags.iter().rposition(|t| *t != "log").unwrap_or(0);
        assert_eq!(
            terminal,
            tags.len() - 1,
            "node {node}: events after terminal: {tags:?}"
        );
        if let Some(first_log) = tags.iter().position(|t| *t == "log") {
            // Our fake only logs from `execute`.
            assert_eq!(
                tags.first(),
                Some(&"started"),
                "node {node}: {tags:?} at {first_log}"
            );
        }
    }
}

fn dag(nodes: Vec<(Op, Vec<usize>)>) -> Arc<Dag<Op>> {
    let nodes = nodes
        .into_iter()
        .map(|(op, inputs)| Node {
            name: op.name.to_owned(),
            payload: op,
            inputs,
            ignore_cache: false,
        })
        .collect();
    Arc::new(Dag::new(nodes).expect("valid dag"))
}

fn forcing(d: &Dag<Op>, names: &[&str]) -> Arc<Dag<Op>> {
    let nodes = d
        .nodes()
        .iter()
        .map(|n| Node {
            ignore_cache: names.contains(&n.name.as_str()),
            ..n.clone()
        })
        .collect();
    Arc::new(Dag::new(nodes).expect("valid dag"))
}

type Outcome = Result<Vec<Resolved<String>>, SolveError<FakeError>>;

async fn run(
    solver: &Solver<Fake>,
    d: &Arc<Dag<Op>>,
    targets: &[usize],
) -> (Outcome, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let result = solver.solve(d.clone(), targets, rec.sink()).await;
    assert_well_ordered(&rec);
    (result, rec)
}

fn values(result: Outcome) -> Vec<String> {
    result
        .expect("solve succeeds")
        .into_iter()
        .map(|r| r.value)
        .collect()
}

fn names_with(rec: &Recorder, d: &Dag<Op>, wanted: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = rec
        .tags()
        .into_iter()
        .filter(|(_, tags)| tags.contains(&wanted))
        .map(|(i, _)| d.nodes()[i].payload.name)
        .collect();
    out.sort_unstable();
    out
}

fn solver(fake: &Arc<Fake>, cache: Arc<dyn CacheStore>, max: usize) -> Solver<Fake> {
    Solver::new(fake.clone(), cache, max)
}

/// a; b(a); c(a); d(b, c)
fn diamond() -> Arc<Dag<Op>> {
    dag(vec![
        (op("a"), vec![]),
        (op("b"), vec![0]),
        (op("c"), vec![0]),
        (op("d"), vec![1, 2]),
    ])
}

/// a, b, c(a), d(b), e(c, d)
fn two_chains() -> Arc<Dag<Op>> {
    dag(vec![
        (op("a"), vec![]),
        (op("b"), vec![]),
        (op("c"), vec![0]),
        (op("d"), vec![1]),
        (op("e"), vec![2, 3]),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diamond_runs_shared_node_once() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 4);
    let d = diamond();
    let (result, rec) = run(&s, &d, &[3]).await;
    assert_eq!(values(result), ["d:v0(b:v0(a:v0),c:v0(a:v0))"]);
    assert_eq!(
        fake.execs(),
        BTreeMap::from([("a", 1), ("b", 1), ("c", 1), ("d", 1)])
    );
    for tags in rec.tags().values() {
        assert_eq!(tags, &["started", "log", "completed"]);
    }
    // Dependencies complete before their users start.
    let pos = |node, t: &str| {
        rec.all()
            .iter()
            .position(|e| e.node == node && tag(&e.kind) == t)
            .expect("event present")
    };
    assert!(pos(0, "completed") < pos(1, "started"));
    assert!(pos(0, "completed") < pos(2, "started"));
    assert!(pos(1, "completed") < pos(3, "started"));
    assert!(pos(2, "completed") < pos(3, "started"));
    let log = rec
        .all()
        .into_iter()
        .find(|e| e.node == 0 && tag(&e.kind) == "log");
    assert_eq!(
        log.map(|e| e.kind),
        Some(EventKind::Log {
            stream: Stream::Stdout,
            data: b"a".to_vec()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_solve_is_all_hits_across_solver_instances() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = diamond();
    let first = {
        let fake = Arc::new(Fake::default());
        let s = solver(
            &fake,
            Arc::new(DirCache::open(tmp.path()).expect("open")),
            4,
        );
        let (result, _) = run(&s, &d, &[3, 1]).await;
        assert_eq!(fake.execs().len(), 4);
        result.expect("first solve")
    };
    let fake = Arc::new(Fake::default());
    let s = solver(
        &fake,
        Arc::new(DirCache::open(tmp.path()).expect("reopen")),
        4,
    );
    let (result, rec) = run(&s, &d, &[3, 1]).await;
    assert_eq!(result.expect("second solve"), first);
    assert!(fake.execs().is_empty(), "executed: {:?}", fake.execs());
    assert_eq!(names_with(&rec, &d, "cached"), ["a", "b", "c", "d"]);
    assert_eq!(rec.all().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_a_leaf_reexecutes_exactly_its_descendants() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 4);
    let d = two_chains();
    let (result, _) = run(&s, &d, &[4]).await;
    assert_eq!(values(result), ["e:v0(c:v0(a:v0),d:v0(b:v0))"]);
    assert_eq!(fake.take_execs(), ["a", "b", "c", "d", "e"]);

    lock(&fake.versions).insert("a", 1);
    let (result, rec) = run(&s, &d, &[4]).await;
    assert_eq!(values(result), ["e:v0(c:v0(a:v1),d:v0(b:v0))"]);
    assert_eq!(fake.take_execs(), ["a", "c", "e"]);
    assert_eq!(names_with(&rec, &d, "cached"), ["b", "d"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_target_ancestors_run() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 4);
    let d = two_chains();
    let (result, rec) = run(&s, &d, &[2]).await;
    assert_eq!(values(result), ["c:v0(a:v0)"]);
    assert_eq!(fake.take_execs(), ["a", "c"]);
    assert_eq!(rec.tags().keys().copied().collect::<Vec<_>>(), [0, 2]);

    // Several targets: values in target order, repeats allowed.
    let (result, _) = run(&s, &d, &[3, 2, 3]).await;
    assert_eq!(values(result), ["d:v0(b:v0)", "c:v0(a:v0)", "d:v0(b:v0)"]);
    assert_eq!(fake.take_execs(), ["b", "d"]);

    let (result, rec) = run(&s, &d, &[]).await;
    assert!(values(result).is_empty());
    assert!(rec.all().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_branches_overlap() {
    // x2 and y2 each wait inside `execute` until both are executing: the solve can only
    // finish if the two branches run at the same time.
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 1);
    let meet = |name| Op {
        meet: &[("branches", 2)],
        ..op(name)
    };
    let d = dag(vec![
        (op("x1"), vec![]),
        (meet("x2"), vec![0]),
        (op("y1"), vec![]),
        (meet("y2"), vec![2]),
        (op("z"), vec![1, 3]),
    ]);
    let (result, _) = run(&s, &d, &[4]).await;
    assert_eq!(values(result), ["z:v0(x2:v0(x1:v0),y2:v0(y1:v0))"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallelism_bounds_heavy_nodes() {
    // Six ready heavy nodes that meet in pairs, with a bound of two: two run at once
    // (otherwise the pairs never meet) and never more than two.
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 2);
    let heavy = |name| Op {
        heavy: true,
        meet: &[("pairs", 2)],
        ..op(name)
    };
    let d = dag(vec![
        (heavy("h1"), vec![]),
        (heavy("h2"), vec![]),
        (heavy("h3"), vec![]),
        (heavy("h4"), vec![]),
        (heavy("h5"), vec![]),
        (heavy("h6"), vec![]),
        (op("all"), vec![0, 1, 2, 3, 4, 5]),
    ]);
    let (result, _) = run(&s, &d, &[6]).await;
    assert_eq!(values(result).len(), 1);
    assert_eq!(fake.max_heavy.load(Ordering::SeqCst), 2);
    assert_eq!(fake.execs().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_nodes_are_not_bounded() {
    // Both heavy slots are taken by nodes that wait for a light node: it must still run.
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 2);
    let trio = |name, heavy| Op {
        heavy,
        meet: &[("trio", 3)],
        ..op(name)
    };
    let d = dag(vec![
        (trio("h1", true), vec![]),
        (trio("h2", true), vec![]),
        (trio("light", false), vec![]),
    ]);
    let (result, _) = run(&s, &d, &[0, 1, 2]).await;
    assert_eq!(values(result).len(), 3);
    assert_eq!(fake.max_heavy.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_cancels_running_sibling_and_unstarted_nodes() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 4);
    // `blocker` and `bad` meet first, so `blocker` is executing when `bad` fails.
    let d = dag(vec![
        (
            Op {
                block: true,
                meet: &[("fail", 2)],
                ..op("blocker")
            },
            vec![],
        ),
        (
            Op {
                fail: true,
                meet: &[("fail", 2)],
                ..op("bad")
            },
            vec![],
        ),
        (op("after_blocker"), vec![0]),
        (op("after_bad"), vec![1]),
        (op("root"), vec![2, 3]),
        (op("unneeded"), vec![]),
    ]);
    let (result, rec) = run(&s, &d, &[4]).await;
    match result {
        Err(SolveError::Node { node, name, source }) => {
            assert_eq!((node, name.as_str()), (1, "bad"));
            assert_eq!(source.to_string(), "bad failed");
        }
        other => panic!("expected bad's failure, got {other:?}"),
    }
    // The running sibling observed cancellation and had returned before solve did.
    assert!(lock(&fake.saw_cancel).contains("blocker"));
    assert!(lock(&fake.finished).contains("blocker"));
    assert_eq!(fake.execs(), BTreeMap::from([("bad", 1), ("blocker", 1)]));
    let tags = rec.tags();
    assert_eq!(tags[&0], ["started", "log", "cancelled"]);
    assert_eq!(tags[&1], ["started", "log", "failed"]);
    for n in [2, 3, 4] {
        assert_eq!(tags[&n], ["cancelled"], "node {n}");
    }
    assert!(!tags.contains_key(&5));
    let failed = rec.all().into_iter().find(|e| tag(&e.kind) == "failed");
    assert_eq!(
        failed.map(|e| e.kind),
        Some(EventKind::Failed {
            message: "bad failed".into()
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_cancels_a_node_waiting_for_a_heavy_slot() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 1);
    // `hog` takes the only heavy slot and blocks. `queued` has computed its key (so it
    // is at the slot) when `bad` fails; it must never start.
    let d = dag(vec![
        (
            Op {
                heavy: true,
                block: true,
                meet: &[("slot", 2)],
                ..op("hog")
            },
            vec![],
        ),
        (
            Op {
                heavy: true,
                key_meet: &[("queued", 2)],
                ..op("queued")
            },
            vec![],
        ),
        (
            Op {
                fail: true,
                meet: &[("slot", 2), ("queued", 2)],
                ..op("bad")
            },
            vec![],
        ),
    ]);
    let (result, rec) = run(&s, &d, &[0, 1, 2]).await;
    assert!(
        matches!(result, Err(SolveError::Node { node: 2, .. })),
        "{result:?}"
    );
    assert_eq!(fake.execs(), BTreeMap::from([("bad", 1), ("hog", 1)]));
    assert!(lock(&fake.saw_cancel).contains("hog"));
    let tags = rec.tags();
    assert_eq!(tags[&0], ["started", "log", "cancelled"]);
    assert_eq!(tags[&1], ["cancelled"]);
    assert_eq!(tags[&2], ["started", "log", "failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_cancellation_stops_the_solve() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 4);
    let d = dag(vec![
        (op("a"), vec![]),
        (
            Op {
                block: true,
                ..op("blocker")
            },
            vec![0],
        ),
        (op("after"), vec![1]),
    ]);
    // The caller cancels as soon as the blocker has started.
    let token = CancelToken::new();
    let rec = Arc::new(Recorder::default());
    let sink = {
        let (token, inner) = (token.clone(), rec.sink());
        Arc::new(move |e: Event| {
            if e.node == 1 && e.kind == EventKind::Started {
                token.cancel();
            }
            inner(e);
        })
    };
    let result = s.solve_with_cancel(d.clone(), &[2], sink, &token).await;
    assert_well_ordered(&rec);
    assert!(matches!(result, Err(SolveError::Cancelled)), "{result:?}");
    assert!(lock(&fake.saw_cancel).contains("blocker"));
    assert!(lock(&fake.finished).contains("blocker"));
    let tags = rec.tags();
    assert_eq!(tags[&0], ["started", "log", "completed"]);
    assert_eq!(tags[&1], ["started", "log", "cancelled"]);
    assert_eq!(tags[&2], ["cancelled"]);
    assert_eq!(fake.execs(), BTreeMap::from([("a", 1), ("blocker", 1)]));

    // A token cancelled up front runs nothing.
    let (token, rec) = (CancelToken::new(), Arc::new(Recorder::default()));
    token.cancel();
    let result = s
        .solve_with_cancel(d.clone(), &[0], rec.sink(), &token)
        .await;
    assert!(matches!(result, Err(SolveError::Cancelled)), "{result:?}");
    assert_eq!(rec.tags(), BTreeMap::from([(0, vec!["cancelled"])]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_solve_cancels_running_work() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 4);
    let d = dag(vec![(
        Op {
            block: true,
            ..op("blocker")
        },
        vec![],
    )]);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let started_tx = Mutex::new(Some(started_tx));
    let sink = Arc::new(move |e: Event| {
        if e.kind == EventKind::Started
            && let Some(tx) = lock(&started_tx).take()
        {
            let _ = tx.send(());
        }
    });
    tokio::select! {
        result = s.solve(d.clone(), &[0], sink) => panic!("solve ended first: {result:?}"),
        started = started_rx => started.expect("blocker started"),
    }
    // The solve future is gone; its blocking call must see cancellation and return.
    let deadline = Instant::now() + HANG;
    while !lock(&fake.finished).contains("blocker") {
        assert!(
            Instant::now() < deadline,
            "blocker never saw the cancellation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(lock(&fake.saw_cancel).contains("blocker"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_node_and_its_downstream_reexecute_and_overwrite() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 4);
    // a -> b -> c ; x -> y ; d(c, y)
    let d = dag(vec![
        (op("a"), vec![]),
        (op("b"), vec![0]),
        (op("c"), vec![1]),
        (op("x"), vec![]),
        (op("y"), vec![3]),
        (op("d"), vec![2, 4]),
    ]);
    let (result, _) = run(&s, &d, &[5]).await;
    assert_eq!(values(result), ["d:v0(c:v0(b:v0(a:v0)),y:v0(x:v0))"]);
    fake.take_execs();

    // b's output is not reproducible: forcing it changes what its users see, though
    // no key changes.
    lock(&fake.salt).insert("b", "!".into());
    let forced = forcing(&d, &["b"]);
    let (result, rec) = run(&s, &forced, &[5]).await;
    assert_eq!(values(result), ["d:v0(c:v0(b:v0!(a:v0)),y:v0(x:v0))"]);
    assert_eq!(fake.take_execs(), ["b", "c", "d"]);
    assert_eq!(names_with(&rec, &d, "cached"), ["a", "x", "y"]);

    // The forced results overwrote the entries under the same keys.
    let (result, rec) = run(&s, &d, &[5]).await;
    assert_eq!(values(result), ["d:v0(c:v0(b:v0!(a:v0)),y:v0(x:v0))"]);
    assert!(fake.take_execs().is_empty());
    assert_eq!(names_with(&rec, &d, "cached").len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_cached_value_is_reexecuted_without_forcing_dependents() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 4);
    let d = dag(vec![(op("a"), vec![]), (op("b"), vec![0])]);
    let (result, _) = run(&s, &d, &[1]).await;
    assert_eq!(values(result), ["b:v0(a:v0)"]);
    fake.take_execs();

    lock(&fake.invalid).insert("a:v0".into());
    let (result, rec) = run(&s, &d, &[0, 1]).await;
    assert_eq!(values(result), ["a:v0", "b:v0(a:v0)"]);
    assert_eq!(fake.take_execs(), ["a"]);
    assert_eq!(names_with(&rec, &d, "cached"), ["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_cache_entry_is_a_miss_and_is_overwritten() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = Arc::new(DirCache::open(tmp.path()).expect("open"));
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, cache.clone(), 4);
    let d = dag(vec![(op("a"), vec![]), (op("b"), vec![0])]);
    let (result, _) = run(&s, &d, &[0, 1]).await;
    let first = result.expect("first solve");
    fake.take_execs();

    let key_a = first[0].key.expect("a is cacheable");
    for garbage in [&b"{not json"[..], b"", b"42", &[0xff, 0xfe]] {
        std::fs::write(cache.path_of(&key_a), garbage).expect("corrupt entry");
        let (result, rec) = run(&s, &d, &[0, 1]).await;
        assert_eq!(result.expect("solve over corrupt entry"), first);
        assert_eq!(fake.take_execs(), ["a"]);
        assert_eq!(names_with(&rec, &d, "cached"), ["b"]);
        let stored = std::fs::read(cache.path_of(&key_a)).expect("entry rewritten");
        assert_eq!(stored, br#""a:v0""#);
    }
    let (_, rec) = run(&s, &d, &[0, 1]).await;
    assert_eq!(names_with(&rec, &d, "cached"), ["a", "b"]);
}

/// A store whose writes fail.
struct ReadOnlyCache;

impl CacheStore for ReadOnlyCache {
    fn get(&self, _key: &Key) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(None)
    }

    fn put(&self, key: &Key, _value: &[u8]) -> Result<(), CacheError> {
        Err(CacheError::Other {
            key: *key,
            message: "read-only".into(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_write_failure_fails_the_solve() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(ReadOnlyCache), 4);
    let d = dag(vec![(op("a"), vec![]), (op("b"), vec![0])]);
    let (result, rec) = run(&s, &d, &[1]).await;
    match result {
        Err(err @ SolveError::Cache { node: 0, .. }) => {
            assert!(err.to_string().contains("read-only"), "{err}");
            assert!(err.to_string().starts_with("a (node 0): sha256:"), "{err}");
        }
        other => panic!("expected a cache error, got {other:?}"),
    }
    assert_eq!(
        rec.tags(),
        BTreeMap::from([
            (0, vec!["started", "log", "failed"]),
            (1, vec!["cancelled"])
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_node_always_executes() {
    let cache = Arc::new(MemoryCache::new());
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, cache.clone(), 4);
    let d = dag(vec![
        (
            Op {
                uncacheable: true,
                ..op("u")
            },
            vec![],
        ),
        (op("v"), vec![0]),
    ]);
    for round in 0..2 {
        let (result, rec) = run(&s, &d, &[0, 1]).await;
        let result = result.expect("solve");
        assert_eq!(result[0].key, None);
        assert_eq!(fake.take_execs()[0], "u", "round {round}");
        // v's key derives from u's value, which did not change: a hit the second time.
        let cached = names_with(&rec, &d, "cached");
        assert_eq!(cached, if round == 0 { vec![] } else { vec!["v"] });
    }
    assert_eq!(cache.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_panic_is_a_node_error() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 4);
    let d = dag(vec![
        (
            Op {
                panic: true,
                ..op("boom")
            },
            vec![],
        ),
        (op("after"), vec![0]),
    ]);
    let (result, rec) = run(&s, &d, &[1]).await;
    match result {
        Err(SolveError::Panic { node, message, .. }) => {
            assert_eq!(node, 0);
            assert_eq!(message, "boom exploded");
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
    assert_eq!(rec.tags()[&1], ["cancelled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_target_is_rejected() {
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 0);
    assert_eq!(s.max_parallelism(), 1);
    let (result, rec) = run(&s, &diamond(), &[0, 4]).await;
    assert!(
        matches!(result, Err(SolveError::UnknownTarget { target: 4, len: 4 })),
        "{result:?}"
    );
    assert!(rec.all().is_empty());
    assert!(fake.execs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_node_needs_none_of_its_inputs() {
    // a -> b -> c. The cache knows only c (as after importing another machine's
    // cache of the final step): a and b are keyed and miss, c hits, nothing executes,
    // and a and b get no outcome.
    let d = dag(vec![
        (op("a"), vec![]),
        (op("b"), vec![0]),
        (op("c"), vec![1]),
    ]);
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, Arc::new(MemoryCache::new()), 4);
    let (result, _) = run(&s, &d, &[2]).await;
    let first = result.expect("first solve");
    let key = first[0].key.expect("c has a key");
    let only_c = Arc::new(MemoryCache::new());
    only_c
        .put(&key, &serde_json::to_vec(&first[0].value).expect("encode"))
        .expect("put");
    let fake = Arc::new(Fake::default());
    let s = solver(&fake, only_c.clone(), 4);
    let (result, rec) = run(&s, &d, &[2]).await;
    assert_eq!(result.expect("second solve"), first);
    assert!(fake.execs().is_empty(), "executed: {:?}", fake.execs());
    assert_eq!(rec.tags(), BTreeMap::from([(2, vec!["cached"])]));

    // When c is wanted but invalid, the chain below it runs after all.
    lock(&fake.invalid).insert(first[0].value.clone());
    let (result, rec) = run(&s, &d, &[2]).await;
    assert_eq!(result.expect("third solve"), first);
    assert_eq!(fake.take_execs(), ["a", "b", "c"]);
    assert_eq!(names_with(&rec, &d, "cached"), Vec::<&str>::new());
}

/// src(a leaf, "a stage"), base, copy(base, src) content-keyed, after(copy).
fn copy_chain() -> Arc<Dag<Op>> {
    dag(vec![
        (op("src"), vec![]),
        (op("base"), vec![]),
        (
            Op {
                content: true,
                ..op("copy")
            },
            vec![1, 0],
        ),
        (op("after"), vec![2]),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_keyed_node_spares_its_dependents_when_what_it_reads_is_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = || Arc::new(DirCache::open(tmp.path()).expect("open")) as Arc<dyn CacheStore>;
    let d = copy_chain();
    let fake = Arc::new(Fake::default());
    let (result, _) = run(&solver(&fake, cache(), 4), &d, &[3]).await;
    assert_eq!(values(result), ["after:v0(copy:v0(base:v0,src:v0))"]);
    assert_eq!(fake.take_execs(), ["after", "base", "copy", "src"]);

    // The source changes, not what the copy reads from it: the source runs, the copy
    // is found by its content key, and the step after it by the content key.
    lock(&fake.versions).insert("src", 1);
    let (result, rec) = run(&solver(&fake, cache(), 4), &d, &[3]).await;
    assert_eq!(values(result), ["after:v0(copy:v0(base:v0,src:v0))"]);
    assert_eq!(fake.take_execs(), ["src"]);
    assert_eq!(names_with(&rec, &d, "cached"), ["after", "base", "copy"]);
    assert_eq!(lock(&fake.content_keys).get("copy"), Some(&2));

    // Now the copy's key links to its content key: a fresh solver finds it without
    // building the source or computing the content key again.
    let fake = Arc::new(Fake::default());
    lock(&fake.versions).insert("src", 1);
    let (result, rec) = run(&solver(&fake, cache(), 4), &d, &[3]).await;
    assert_eq!(values(result), ["after:v0(copy:v0(base:v0,src:v0))"]);
    assert!(fake.execs().is_empty(), "executed: {:?}", fake.execs());
    assert_eq!(
        names_with(&rec, &d, "cached"),
        ["after", "base", "copy", "src"]
    );
    assert!(lock(&fake.content_keys).is_empty());

    // What it reads changes: the copy and everything after it run.
    lock(&fake.versions).insert("src", 2);
    lock(&fake.reads).insert("copy", "other file".to_owned());
    let (result, rec) = run(&solver(&fake, cache(), 4), &d, &[3]).await;
    assert_eq!(values(result), ["after:v0(copy:v0(base:v0,src:v2))"]);
    assert_eq!(fake.take_execs(), ["after", "copy", "src"]);
    assert_eq!(names_with(&rec, &d, "cached"), ["base"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_content_keyed_node_runs_and_stores_under_its_content_key() {
    let cache: Arc<dyn CacheStore> = Arc::new(MemoryCache::new());
    let fake = Arc::new(Fake::default());
    let d = copy_chain();
    let (result, _) = run(&solver(&fake, cache.clone(), 4), &d, &[3]).await;
    let first = values(result);
    fake.take_execs();

    let (result, rec) = run(
        &solver(&fake, cache.clone(), 4),
        &forcing(&d, &["copy"]),
        &[3],
    )
    .await;
    assert_eq!(values(result), first);
    assert_eq!(fake.take_execs(), ["after", "copy"]);
    assert_eq!(names_with(&rec, &d, "cached"), ["base", "src"]);

    // The source changes: the copy's content key still finds the forced result.
    lock(&fake.versions).insert("src", 1);
    let (_, rec) = run(&solver(&fake, cache, 4), &d, &[3]).await;
    assert_eq!(fake.take_execs(), ["src"]);
    assert_eq!(names_with(&rec, &d, "cached"), ["after", "base", "copy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_copied_one_after_the_other_build_in_parallel() {
    // base; a, b (two stages, each waiting for the other in `execute`);
    // copy_a(base, a) and copy_b(copy_a, b), both content-keyed. copy_b's key
    // waits for copy_a's content key, which waits for a: b must not wait too.
    let src = |name| Op {
        meet: &[("sources", 2)],
        ..op(name)
    };
    let copy = |name| Op {
        content: true,
        ..op(name)
    };
    let d = dag(vec![
        (op("base"), vec![]),
        (src("a"), vec![]),
        (src("b"), vec![]),
        (copy("copy_a"), vec![0, 1]),
        (copy("copy_b"), vec![3, 2]),
    ]);
    let fake = Arc::new(Fake::default());
    let (result, _) = run(&solver(&fake, Arc::new(MemoryCache::new()), 4), &d, &[4]).await;
    assert_eq!(values(result), ["copy_b:v0(copy_a:v0(base:v0,a:v0),b:v0)"]);
    assert_eq!(fake.take_execs(), ["a", "b", "base", "copy_a", "copy_b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_solves_sharing_a_store_execute_each_step_once() {
    // Two solvers on one cache directory, as two kiln processes on one state
    // directory. Both look x up before either executes it (they meet in
    // `cache_key`): the claim makes one wait and then find the other's value.
    let tmp = tempfile::tempdir().expect("tempdir");
    let fake = Arc::new(Fake::default());
    let d = dag(vec![
        (
            Op {
                key_meet: &[("both looked up", 2)],
                heavy: true,
                ..op("x")
            },
            vec![],
        ),
        (op("y"), vec![0]),
    ]);
    let open = || Arc::new(DirCache::open(tmp.path()).expect("open")) as Arc<dyn CacheStore>;
    let (s1, s2) = (solver(&fake, open(), 4), solver(&fake, open(), 4));
    let ((r1, rec1), (r2, rec2)) = tokio::join!(run(&s1, &d, &[1]), run(&s2, &d, &[1]));
    assert_eq!(values(r1), ["y:v0(x:v0)"]);
    assert_eq!(values(r2), ["y:v0(x:v0)"]);
    assert_eq!(fake.execs(), BTreeMap::from([("x", 1), ("y", 1)]));
    let mut cached = names_with(&rec1, &d, "cached");
    cached.extend(names_with(&rec2, &d, "cached"));
    cached.sort_unstable();
    assert_eq!(cached, ["x", "y"]);
}
