//! The scheduler: runs the nodes a solve needs through a [`Worker`], in parallel where
//! the graph allows, consulting and filling a [`CacheStore`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cache::{CacheError, CacheStore};
use crate::cancel::{CancelToken, Cx};
use crate::dag::Dag;
use crate::event::{Event, EventKind};
use crate::key::Key;

/// A node's result as its dependents see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved<V> {
    /// The key the value is cached under; `None` for nodes that are never cached.
    pub key: Option<Key>,
    /// The value the worker produced (or the cache returned).
    pub value: V,
}

/// An input as [`Worker::cache_key`] sees it. Keys are computed before inputs are
/// built (a node whose key hits the cache needs none of its inputs' values), so the
/// value is there only when the solver has it: always for an input without a key,
/// otherwise only if that input was found in the cache or built already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInput<V> {
    /// The input's key; `None` for an input that is never cached.
    pub key: Option<Key>,
    /// The input's value, when known (always when `key` is `None`).
    pub value: Option<V>,
}

/// What the solver runs nodes with. All methods are called on blocking threads except
/// [`Worker::is_heavy`], which must be cheap.
pub trait Worker: Send + Sync + 'static {
    /// The node description (for kiln: an LLB op).
    type Payload: Send + Sync + 'static;
    /// The node result (for kiln: a reference to a snapshot). Stored in the cache as JSON.
    type Value: Clone + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// The worker's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The node's cache key from its payload and its inputs' keys (in `Node::inputs`
    /// order; see [`KeyInput`] for when their values are known); may do blocking I/O,
    /// such as hashing content it reads. `None`: never cached, always executed, the
    /// result is not stored.
    ///
    /// The key must depend only on what determines the result — never on timestamps,
    /// host paths or node indices — so that identical work has the same key on every
    /// machine and in every graph. The solver uses the key exactly as returned.
    fn cache_key(
        &self,
        node: &Self::Payload,
        inputs: &[KeyInput<Self::Value>],
        cx: &Cx,
    ) -> Result<Option<Key>, Self::Error>;

    /// Produces the value. Blocking; may run long, but must poll [`Cx::is_cancelled`] (or
    /// sleep in [`Cx::cancelled_wait`]) and return an error promptly once cancelled.
    fn execute(
        &self,
        node: &Self::Payload,
        inputs: &[Resolved<Self::Value>],
        cx: &Cx,
    ) -> Result<Self::Value, Self::Error>;

    /// Whether a value loaded from the cache still refers to something that exists (a
    /// snapshot deleted by prune gives `false`, which is treated as a miss).
    fn is_valid(&self, _value: &Self::Value) -> bool {
        true
    }

    /// Whether executing the node is heavy (runs a process); at most `max_parallelism`
    /// heavy nodes execute at once. Light nodes are not bounded.
    fn is_heavy(&self, _node: &Self::Payload) -> bool {
        false
    }

    /// Whether the node, with these inputs, is *content-keyed*: besides its key (which
    /// names its inputs by their keys) it has a key naming only the content it reads
    /// from them ([`Worker::content_key`]), BuildKit's content-based cache keys. A copy
    /// of one file out of a stage is the example: the stage changed, its key with it,
    /// but the file did not, so neither did the copy's result. Must be cheap.
    ///
    /// A content-keyed node's dependents see its content key, whichever way the node
    /// was found: a hit under its key finds a link to the content key (stored when the
    /// node was last resolved); a miss builds its inputs, computes the content key and
    /// looks that up before executing. So the dependents of a content-keyed node that
    /// missed are keyed only once its inputs are built and its content key is known.
    fn keys_by_content(&self, _node: &Self::Payload, _inputs: &[KeyInput<Self::Value>]) -> bool {
        false
    }

    /// The content key of a node [`Worker::keys_by_content`] accepted, from its built
    /// inputs: like [`Worker::cache_key`], but naming what the node reads from its
    /// inputs instead of their keys. `None`: the node has no content key this time
    /// after all, and its key stands. Blocking; called at most once per solve per node,
    /// only when the node's key missed (or it is forced).
    fn content_key(
        &self,
        _node: &Self::Payload,
        _inputs: &[Resolved<Self::Value>],
        _cx: &Cx,
    ) -> Result<Option<Key>, Self::Error> {
        Ok(None)
    }
}

/// What the cache holds under the key of a content-keyed node: where its value is.
#[derive(Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Link {
    #[serde(rename = "kiln.solver.link")]
    target: Key,
}

/// The cache entry of a link from a content-keyed node's key to its content key.
/// A [`CacheStore`] that exports entries (kiln's cache export) recognises links
/// with [`parse_link`] and must hand them back as these bytes.
pub fn link_bytes(target: &Key) -> Vec<u8> {
    serde_json::to_vec(&Link { target: *target }).unwrap_or_default()
}

/// The target of a link entry ([`link_bytes`]), or `None` for any other entry.
pub fn parse_link(bytes: &[u8]) -> Option<Key> {
    serde_json::from_slice::<Link>(bytes).ok().map(|l| l.target)
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError<E: std::error::Error + 'static> {
    /// The worker failed to compute the node's key or to execute it.
    #[error("{name} (node {node}): {source}")]
    Node {
        /// Index of the node.
        node: usize,
        /// Its name.
        name: String,
        /// The worker's error.
        source: E,
    },
    /// Reading or writing the cache failed.
    #[error("{name} (node {node}): {key}: {source}")]
    Cache {
        /// Index of the node.
        node: usize,
        /// Its name.
        name: String,
        /// The key being read or written.
        key: Key,
        /// The store's error.
        source: CacheError,
    },
    /// The node's value could not be encoded as JSON for the cache.
    #[error("{name} (node {node}): cannot encode the value for the cache: {source}")]
    Encode {
        /// Index of the node.
        node: usize,
        /// Its name.
        name: String,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// A worker method panicked.
    #[error("{name} (node {node}): worker panicked: {message}")]
    Panic {
        /// Index of the node.
        node: usize,
        /// Its name.
        name: String,
        /// The panic message, when it was a string.
        message: String,
    },
    /// A target index is not a node of the graph.
    #[error("target {target} is not a node of the graph (it has {len})")]
    UnknownTarget {
        /// The bad index.
        target: usize,
        /// Number of nodes in the graph.
        len: usize,
    },
    /// The caller cancelled the solve before the targets were resolved.
    #[error("solve cancelled")]
    Cancelled,
}

impl<E: std::error::Error + 'static> SolveError<E> {
    /// The message without the node prefix, for [`EventKind::Failed`].
    fn detail(&self) -> String {
        match self {
            SolveError::Node { source, .. } => source.to_string(),
            SolveError::Cache { key, source, .. } => format!("{key}: {source}"),
            SolveError::Encode { source, .. } => {
                format!("cannot encode the value for the cache: {source}")
            }
            SolveError::Panic { message, .. } => format!("worker panicked: {message}"),
            SolveError::UnknownTarget { .. } | SolveError::Cancelled => self.to_string(),
        }
    }
}

/// Runs graphs through a worker with a cache. See the crate documentation for the
/// semantics. One `Solver` may run several solves, concurrently or not; they share the
/// heavy-execution bound but not results.
pub struct Solver<W: Worker> {
    worker: Arc<W>,
    cache: Arc<dyn CacheStore>,
    heavy: Arc<Semaphore>,
    max_parallelism: usize,
}

impl<W: Worker> fmt::Debug for Solver<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Solver")
            .field("max_parallelism", &self.max_parallelism)
            .finish_non_exhaustive()
    }
}

type Events = Arc<dyn Fn(Event) + Send + Sync>;

/// What one solve shares with its node tasks.
struct Run<W: Worker> {
    worker: Arc<W>,
    cache: Arc<dyn CacheStore>,
    heavy: Arc<Semaphore>,
    dag: Arc<Dag<W::Payload>>,
    events: Events,
    /// Raised by the first failure, by the caller's token, or when the solve is dropped.
    cancel: CancelToken,
}

enum Outcome<V, E: std::error::Error + 'static> {
    /// The key is known; `hit` is the cached value. `forced`: the node executes even if
    /// cached, and so do its dependents.
    Keyed {
        node: usize,
        key: Option<Key>,
        hit: Option<Resolved<V>>,
        forced: bool,
        /// The node is content-keyed and missed: its dependents wait for its content
        /// key, known once it is resolved.
        content: bool,
    },
    /// The node was executed.
    Done {
        node: usize,
        resolved: Resolved<V>,
    },
    Failed(SolveError<E>),
    Cancelled,
}

/// What [`Run::prepare`] found.
enum Prepared<V> {
    /// The value is cached (under `key`) after all.
    Hit { key: Option<Key>, value: V },
    /// Execute; store under `content_key` (the node's key, or its content key),
    /// holding `claim` until stored.
    Execute {
        content_key: Option<Key>,
        claim: Option<crate::cache::Claim>,
    },
}

/// Cancels the solve's token when the solve future completes or is dropped, so blocking
/// worker calls of an abandoned solve stop.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl<W: Worker> Solver<W> {
    /// A solver executing at most `max_parallelism` heavy nodes at once (0 counts as 1).
    pub fn new(worker: Arc<W>, cache: Arc<dyn CacheStore>, max_parallelism: usize) -> Self {
        let max_parallelism = max_parallelism.clamp(1, Semaphore::MAX_PERMITS);
        Solver {
            worker,
            cache,
            heavy: Arc::new(Semaphore::new(max_parallelism)),
            max_parallelism,
        }
    }

    /// The bound on concurrently executing heavy nodes.
    pub fn max_parallelism(&self) -> usize {
        self.max_parallelism
    }

    /// Solves what `targets` need (only they and their ancestors run) and returns their
    /// resolved values, in the order of `targets`. Every event goes to `events`, which is
    /// called from worker threads and must not block for long.
    pub async fn solve(
        &self,
        dag: Arc<Dag<W::Payload>>,
        targets: &[usize],
        events: Arc<dyn Fn(Event) + Send + Sync>,
    ) -> Result<Vec<Resolved<W::Value>>, SolveError<W::Error>> {
        self.solve_with_cancel(dag, targets, events, &CancelToken::new())
            .await
    }

    /// [`Solver::solve`], stopping when `cancel` is raised: running nodes see
    /// cancellation, unstarted ones never start, and once running work has finished the
    /// solve returns [`SolveError::Cancelled`] (unless a node failed first, or every
    /// target was resolved anyway).
    pub async fn solve_with_cancel(
        &self,
        dag: Arc<Dag<W::Payload>>,
        targets: &[usize],
        events: Arc<dyn Fn(Event) + Send + Sync>,
        cancel: &CancelToken,
    ) -> Result<Vec<Resolved<W::Value>>, SolveError<W::Error>> {
        let n = dag.len();
        if let Some(&target) = targets.iter().find(|&&t| t >= n) {
            return Err(SolveError::UnknownTarget { target, len: n });
        }
        let run = Arc::new(Run {
            worker: self.worker.clone(),
            cache: self.cache.clone(),
            heavy: self.heavy.clone(),
            dag: dag.clone(),
            events: events.clone(),
            cancel: CancelToken::new(),
        });
        let _cancel_on_drop = CancelOnDrop(run.cancel.clone());
        let mut s = Schedule::new(&dag, targets);
        let mut tasks = JoinSet::new();
        let mut task_node = std::collections::HashMap::new();
        let mut first_error = None;
        let mut stopped = false;

        loop {
            if !stopped && (run.cancel.is_cancelled() || cancel.is_cancelled()) {
                stopped = true;
                run.cancel.cancel();
            }
            if stopped {
                // Nothing new starts; what would have is reported cancelled, once.
                for task in s.take_ready() {
                    if let Task::Exec { node, .. } = task {
                        s.exec_started[node] = false;
                    }
                }
                for i in s.never_started() {
                    s.cancel_reported[i] = true;
                    events(Event {
                        node: i,
                        kind: EventKind::Cancelled,
                    });
                }
            } else {
                for task in s.take_ready() {
                    let (node, handle) = match task {
                        Task::Key {
                            node,
                            inputs,
                            forced,
                        } => (
                            node,
                            tasks.spawn(key_node(run.clone(), node, inputs, forced)),
                        ),
                        Task::Exec {
                            node,
                            inputs,
                            key,
                            content,
                            forced,
                        } => (
                            node,
                            tasks.spawn(exec_node(
                                run.clone(),
                                node,
                                inputs,
                                key,
                                ExecMode { content, forced },
                            )),
                        ),
                    };
                    task_node.insert(handle.id(), node);
                    s.running[node] = true;
                }
            }
            let joined = tokio::select! {
                joined = tasks.join_next_with_id() => joined,
                () = cancel.cancelled(), if !stopped => continue,
            };
            let Some(joined) = joined else { break };
            let outcome = match joined {
                Ok((_, outcome)) => outcome,
                Err(e) => {
                    // The task itself panicked (worker calls are caught inside it).
                    let node = task_node.get(&e.id()).copied().unwrap_or(usize::MAX);
                    let err = SolveError::Panic {
                        node,
                        name: dag.node(node).map(|n| n.name.clone()).unwrap_or_default(),
                        message: panic_message(e),
                    };
                    events(Event {
                        node,
                        kind: EventKind::Failed {
                            message: err.detail(),
                        },
                    });
                    run.cancel.cancel();
                    Outcome::Failed(err)
                }
            };
            match outcome {
                Outcome::Keyed {
                    node,
                    key,
                    hit,
                    forced,
                    content,
                } => {
                    s.keyed(node, key, hit, forced, content);
                    s.speculate();
                }
                Outcome::Done { node, resolved } => {
                    s.built(node, resolved);
                    s.speculate();
                }
                Outcome::Failed(err) => {
                    first_error.get_or_insert(err);
                }
                Outcome::Cancelled => {}
            }
        }

        if let Some(err) = first_error {
            return Err(err);
        }
        targets
            .iter()
            .map(|&t| s.values[t].clone().ok_or(SolveError::Cancelled))
            .collect()
    }
}

/// A unit of work the schedule hands out.
enum Task<V> {
    /// Compute the node's key and look it up.
    Key {
        node: usize,
        inputs: Vec<KeyInput<V>>,
        forced: bool,
    },
    /// Execute the node (its key missed, or it has none) and store the value.
    Exec {
        node: usize,
        inputs: Vec<Resolved<V>>,
        key: Option<Key>,
        /// The node is content-keyed: look its content key up first (unless forced).
        content: bool,
        /// It executes even if cached (and claims nothing).
        forced: bool,
    },
}

/// The state of one solve: which nodes are keyed, built, wanted, and what is ready.
///
/// Every needed node gets a key, computed once its inputs are *key-usable* (keyed, and
/// built if they have no key). A node is *wanted* when a target needs its value: the
/// targets are, and so are the inputs of a wanted node whose key missed (or that has
/// none). A wanted node that missed executes once its inputs are built. A node whose key
/// hit is built at once, and its inputs are not wanted on its account: a cached step
/// needs nothing below it, which is what makes a hit in an imported cache skip whole
/// stages. A node without a key is always wanted (its dependents' keys need its value),
/// and so is a content-keyed node that missed (its dependents' keys need its content key,
/// which needs its inputs' values).
struct Schedule<'d, V, P> {
    dag: &'d Dag<P>,
    needed: Vec<bool>,
    /// Each node's distinct inputs and needed dependents.
    inputs: Vec<Vec<usize>>,
    dependents: Vec<Vec<usize>>,
    /// Inputs not yet key-usable / not yet built.
    key_pending: Vec<usize>,
    built_pending: Vec<usize>,
    keys: Vec<Option<(Option<Key>, bool)>>,
    /// Content-keyed and missed: the key in `keys` is not the one dependents use
    /// until the node is built.
    content_pending: Vec<bool>,
    values: Vec<Option<Resolved<V>>>,
    wanted: Vec<bool>,
    /// A key or exec task was handed out and has not reported.
    running: Vec<bool>,
    exec_started: Vec<bool>,
    /// A `Cancelled` event was sent for the node.
    cancel_reported: Vec<bool>,
    ready: Vec<Task<V>>,
}

impl<'d, V: Clone, P> Schedule<'d, V, P> {
    fn new(dag: &'d Dag<P>, targets: &[usize]) -> Self {
        let n = dag.len();
        let needed = dag.ancestors(targets);
        let mut inputs = vec![Vec::new(); n];
        let mut dependents = vec![Vec::new(); n];
        for (i, node) in dag.nodes().iter().enumerate() {
            if !needed[i] {
                continue;
            }
            let mut ins = node.inputs.clone();
            ins.sort_unstable();
            ins.dedup();
            for &j in &ins {
                dependents[j].push(i);
            }
            inputs[i] = ins;
        }
        let key_pending: Vec<usize> = inputs.iter().map(Vec::len).collect();
        let mut s = Schedule {
            dag,
            built_pending: key_pending.clone(),
            key_pending,
            needed,
            inputs,
            dependents,
            keys: vec![None; n],
            content_pending: vec![false; n],
            values: vec![None; n],
            wanted: vec![false; n],
            running: vec![false; n],
            exec_started: vec![false; n],
            cancel_reported: vec![false; n],
            ready: Vec::new(),
        };
        for i in 0..n {
            if s.needed[i] && s.key_pending[i] == 0 {
                s.push_key(i);
            }
        }
        s.want(targets);
        s
    }

    fn take_ready(&mut self) -> Vec<Task<V>> {
        std::mem::take(&mut self.ready)
    }

    /// Needed nodes that are not running, have no value, would have run (their key is
    /// unknown, or they are wanted and were never executed) and were not reported yet:
    /// what a cancellation reports.
    fn never_started(&self) -> Vec<usize> {
        (0..self.needed.len())
            .filter(|&i| {
                self.needed[i]
                    && !self.cancel_reported[i]
                    && self.values[i].is_none()
                    && !self.running[i]
                    && (self.keys[i].is_none() || (self.wanted[i] && !self.exec_started[i]))
            })
            .collect()
    }

    fn forced(&self, i: usize) -> bool {
        self.dag.nodes()[i].ignore_cache
            || self.inputs[i]
                .iter()
                .any(|&j| self.keys[j].is_some_and(|(_, f)| f))
    }

    fn push_key(&mut self, i: usize) {
        let inputs = self.dag.nodes()[i]
            .inputs
            .iter()
            .map(|&j| KeyInput {
                key: self.keys[j].and_then(|(k, _)| k),
                value: self.values[j].as_ref().map(|r| r.value.clone()),
            })
            .collect();
        let forced = self.forced(i);
        self.ready.push(Task::Key {
            node: i,
            inputs,
            forced,
        });
    }

    fn push_exec_if_ready(&mut self, i: usize) {
        let Some((key, forced)) = self.keys[i] else {
            return;
        };
        if !self.wanted[i]
            || self.values[i].is_some()
            || self.exec_started[i]
            || self.built_pending[i] > 0
        {
            return;
        }
        let mut inputs = Vec::with_capacity(self.dag.nodes()[i].inputs.len());
        for &j in &self.dag.nodes()[i].inputs {
            match &self.values[j] {
                Some(r) => inputs.push(r.clone()),
                None => return, // unreachable: built_pending is 0
            }
        }
        self.exec_started[i] = true;
        self.ready.push(Task::Exec {
            node: i,
            inputs,
            key,
            content: self.content_pending[i],
            forced,
        });
    }

    /// Marks `nodes` wanted, and through every wanted node that missed, its inputs.
    fn want(&mut self, nodes: &[usize]) {
        let mut todo = nodes.to_vec();
        while let Some(i) = todo.pop() {
            if self.wanted[i] || !self.needed[i] {
                continue;
            }
            self.wanted[i] = true;
            if self.values[i].is_none() && self.keys[i].is_some() {
                todo.extend(self.inputs[i].iter().copied());
                self.push_exec_if_ready(i);
            }
        }
    }

    /// While a content-keyed node waits for its content key, the nodes keyed after it
    /// wait too, and so would the inputs they will need: a stage that a later
    /// `COPY --from` reads would be built only after the copy before it. So the
    /// inputs of such a waiting node that missed are wanted at once: its key names
    /// them by their (new) keys, so it will miss as well and need them, whether to
    /// execute or for its own content key. (The guess is wrong only when the waiting
    /// node's key was cached while an input's was not, as with a pruned input or an
    /// imported cache without it; then that input is built for nothing.)
    fn speculate(&mut self) {
        if !self.content_pending.iter().any(|&p| p) {
            return;
        }
        // Nodes are in topological order: one pass finds the waiting ones.
        let n = self.needed.len();
        let mut waiting = vec![false; n];
        let mut wanted = Vec::new();
        for d in 0..n {
            if !self.needed[d] || self.keys[d].is_some() {
                continue;
            }
            waiting[d] = self.inputs[d]
                .iter()
                .any(|&p| self.content_pending[p] || waiting[p]);
            if !waiting[d] {
                continue;
            }
            for &j in &self.inputs[d] {
                let missed = matches!(self.keys[j], Some((Some(_), _))) && self.values[j].is_none();
                if missed && !self.wanted[j] {
                    wanted.push(j);
                }
            }
        }
        self.want(&wanted);
    }

    /// Node `i`'s key is known (`hit`: its value came from the cache).
    fn keyed(
        &mut self,
        i: usize,
        key: Option<Key>,
        hit: Option<Resolved<V>>,
        forced: bool,
        content: bool,
    ) {
        self.running[i] = false;
        self.keys[i] = Some((key, forced));
        let is_hit = hit.is_some();
        if let Some(r) = hit {
            // A content-keyed hit: dependents use the key the value is under.
            self.keys[i] = Some((r.key, forced));
            self.values[i] = Some(r);
        }
        let content = content && !is_hit && key.is_some();
        self.content_pending[i] = content;
        if key.is_some() && !content {
            self.key_usable(i);
        }
        if is_hit {
            self.value_ready(i);
            return;
        }
        if key.is_none() || content {
            // Its dependents' keys need its value.
            self.want(&[i]);
        }
        if self.wanted[i] {
            for j in self.inputs[i].clone() {
                self.want(&[j]);
            }
            self.push_exec_if_ready(i);
        }
    }

    fn key_usable(&mut self, i: usize) {
        for d in self.dependents[i].clone() {
            self.key_pending[d] -= 1;
            if self.key_pending[d] == 0 {
                self.push_key(d);
            }
        }
    }

    /// Node `i` was executed.
    fn built(&mut self, i: usize, r: Resolved<V>) {
        self.running[i] = false;
        let key = r.key;
        self.values[i] = Some(r);
        if self.content_pending[i] {
            self.content_pending[i] = false;
            if let Some((k, _)) = self.keys[i].as_mut() {
                *k = key;
            }
            self.key_usable(i);
        } else if self.keys[i].is_some_and(|(k, _)| k.is_none()) {
            self.key_usable(i);
        }
        self.value_ready(i);
    }

    /// Node `i`'s value is known: dependents waiting to execute may start.
    fn value_ready(&mut self, i: usize) {
        for d in self.dependents[i].clone() {
            self.built_pending[d] -= 1;
            self.push_exec_if_ready(d);
        }
    }
}

/// Runs a worker call on the blocking pool; a panic becomes its message.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(panic_message)
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

impl<W: Worker> Run<W> {
    fn emit(&self, node: usize, kind: EventKind) {
        (self.events)(Event { node, kind });
    }

    fn name(&self, node: usize) -> String {
        self.dag
            .node(node)
            .map(|n| n.name.clone())
            .unwrap_or_default()
    }

    /// Computes the key and, unless forced, looks the value up (through a link, for a
    /// content-keyed node). Blocking. Returns the key, the hit (with the key its value
    /// is under) and whether the node is content-keyed.
    #[allow(clippy::type_complexity)]
    fn lookup(
        &self,
        i: usize,
        inputs: &[KeyInput<W::Value>],
        cx: &Cx,
        forced: bool,
    ) -> Result<(Option<Key>, Option<Resolved<W::Value>>, bool), SolveError<W::Error>> {
        let payload = &self.dag.nodes()[i].payload;
        let key = self
            .worker
            .cache_key(payload, inputs, cx)
            .map_err(|source| SolveError::Node {
                node: i,
                name: self.name(i),
                source,
            })?;
        let Some(key) = key else {
            return Ok((None, None, false));
        };
        let content = self.worker.keys_by_content(payload, inputs);
        if forced {
            return Ok((Some(key), None, content));
        }
        let Some(bytes) = self.get(i, &key)? else {
            return Ok((Some(key), None, content));
        };
        if let Some(target) = parse_link(&bytes) {
            let hit = self.get(i, &target)?.and_then(|b| self.decode(&b));
            return Ok((
                Some(key),
                hit.map(|value| Resolved {
                    key: Some(target),
                    value,
                }),
                content,
            ));
        }
        let hit = self.decode(&bytes).map(|value| Resolved {
            key: Some(key),
            value,
        });
        Ok((Some(key), hit, content))
    }

    fn get(&self, i: usize, key: &Key) -> Result<Option<Vec<u8>>, SolveError<W::Error>> {
        self.cache.get(key).map_err(|source| SolveError::Cache {
            node: i,
            name: self.name(i),
            key: *key,
            source,
        })
    }

    fn put(&self, i: usize, key: &Key, bytes: &[u8]) -> Result<(), SolveError<W::Error>> {
        self.cache
            .put(key, bytes)
            .map_err(|source| SolveError::Cache {
                node: i,
                name: self.name(i),
                key: *key,
                source,
            })
    }

    /// A cached value, if it decodes and is still valid: undecodable (corrupt, or
    /// written by an incompatible version) or stale entries are misses, which
    /// executing overwrites.
    fn decode(&self, bytes: &[u8]) -> Option<W::Value> {
        serde_json::from_slice::<W::Value>(bytes)
            .ok()
            .filter(|v| self.worker.is_valid(v))
    }

    /// Before a node executes: its content key if it is content-keyed (and the
    /// value under it), then, unless forced, a claim on the key its value goes
    /// under and a second look at the cache — another process may have stored the
    /// value while this one waited for the claim. Blocking.
    fn prepare(
        &self,
        i: usize,
        inputs: &[Resolved<W::Value>],
        cx: &Cx,
        key: Option<Key>,
        mode: ExecMode,
    ) -> Result<Prepared<W::Value>, SolveError<W::Error>> {
        let content_key = if mode.content {
            let (content_key, hit) = self.content_lookup(i, inputs, cx, key, mode.forced)?;
            if let Some(value) = hit {
                return Ok(Prepared::Hit {
                    key: content_key,
                    value,
                });
            }
            content_key
        } else {
            key
        };
        let Some(stored) = content_key.filter(|_| !mode.forced) else {
            return Ok(Prepared::Execute {
                content_key,
                claim: None,
            });
        };
        let cancelled = || self.cancel.is_cancelled();
        let claim = self
            .cache
            .claim(&stored, &cancelled)
            .map_err(|source| SolveError::Cache {
                node: i,
                name: self.name(i),
                key: stored,
                source,
            })?;
        if claim.is_some()
            && let Some(value) = self.get(i, &stored)?.and_then(|b| self.decode(&b))
        {
            if let Some(key) = key
                && key != stored
            {
                self.put(i, &key, &link_bytes(&stored))?;
            }
            return Ok(Prepared::Hit {
                key: Some(stored),
                value,
            });
        }
        Ok(Prepared::Execute { content_key, claim })
    }

    /// For a content-keyed node that missed: its content key and, unless forced, the
    /// value cached under it (then linked from `key`, so that the next lookup of `key`
    /// finds it). Blocking.
    #[allow(clippy::type_complexity)]
    fn content_lookup(
        &self,
        i: usize,
        inputs: &[Resolved<W::Value>],
        cx: &Cx,
        key: Option<Key>,
        forced: bool,
    ) -> Result<(Option<Key>, Option<W::Value>), SolveError<W::Error>> {
        let payload = &self.dag.nodes()[i].payload;
        let content_key = self
            .worker
            .content_key(payload, inputs, cx)
            .map_err(|source| SolveError::Node {
                node: i,
                name: self.name(i),
                source,
            })?;
        let Some(content_key) = content_key else {
            return Ok((key, None));
        };
        if forced {
            return Ok((Some(content_key), None));
        }
        let hit = self.get(i, &content_key)?.and_then(|b| self.decode(&b));
        if hit.is_some()
            && let Some(key) = key
            && key != content_key
        {
            self.put(i, &key, &link_bytes(&content_key))?;
        }
        Ok((Some(content_key), hit))
    }

    /// Executes the node and stores its value under `key`, and under `content_key` if
    /// it has one (then `key` links to it). Blocking.
    fn execute(
        &self,
        i: usize,
        inputs: &[Resolved<W::Value>],
        cx: &Cx,
        key: Option<Key>,
        content_key: Option<Key>,
    ) -> Result<(W::Value, Duration), SolveError<W::Error>> {
        let payload = &self.dag.nodes()[i].payload;
        let start = Instant::now();
        let value =
            self.worker
                .execute(payload, inputs, cx)
                .map_err(|source| SolveError::Node {
                    node: i,
                    name: self.name(i),
                    source,
                })?;
        let elapsed = start.elapsed();
        if let Some(stored) = content_key.or(key) {
            let bytes = serde_json::to_vec(&value).map_err(|source| SolveError::Encode {
                node: i,
                name: self.name(i),
                source,
            })?;
            self.put(i, &stored, &bytes)?;
            if let Some(key) = key
                && key != stored
            {
                self.put(i, &key, &link_bytes(&stored))?;
            }
        }
        Ok((value, elapsed))
    }

    /// Turns an error into the node's outcome: a worker error after cancellation is the
    /// worker stopping as asked; anything else fails the solve.
    fn fail(&self, i: usize, err: SolveError<W::Error>) -> Outcome<W::Value, W::Error> {
        if matches!(err, SolveError::Node { .. }) && self.cancel.is_cancelled() {
            self.emit(i, EventKind::Cancelled);
            return Outcome::Cancelled;
        }
        self.emit(
            i,
            EventKind::Failed {
                message: err.detail(),
            },
        );
        self.cancel.cancel();
        Outcome::Failed(err)
    }

    fn cancelled(&self, i: usize) -> Outcome<W::Value, W::Error> {
        self.emit(i, EventKind::Cancelled);
        Outcome::Cancelled
    }

    fn panicked(&self, i: usize, message: String) -> Outcome<W::Value, W::Error> {
        let name = self.name(i);
        self.fail(
            i,
            SolveError::Panic {
                node: i,
                name,
                message,
            },
        )
    }
}

/// One node's key and cache lookup.
async fn key_node<W: Worker>(
    run: Arc<Run<W>>,
    i: usize,
    inputs: Vec<KeyInput<W::Value>>,
    forced: bool,
) -> Outcome<W::Value, W::Error> {
    if run.cancel.is_cancelled() {
        return run.cancelled(i);
    }
    let cx = Arc::new(Cx::new(i, run.cancel.clone(), run.events.clone()));
    let lookup = {
        let run = run.clone();
        blocking(move || run.lookup(i, &inputs, &cx, forced)).await
    };
    match lookup {
        Ok(Ok((key, Some(hit), _))) => {
            run.emit(i, EventKind::Cached);
            Outcome::Keyed {
                node: i,
                key,
                hit: Some(hit),
                forced: false,
                content: false,
            }
        }
        Ok(Ok((key, None, content))) => Outcome::Keyed {
            node: i,
            key,
            hit: None,
            forced,
            content,
        },
        Ok(Err(err)) => run.fail(i, err),
        Err(message) => run.panicked(i, message),
    }
}

/// One node's execution (its key missed, it has none, or it is forced) and store.
/// How [`exec_node`] runs a node.
#[derive(Debug, Clone, Copy)]
struct ExecMode {
    /// Content-keyed: its content key is looked up first.
    content: bool,
    /// Executes whatever the cache holds.
    forced: bool,
}

async fn exec_node<W: Worker>(
    run: Arc<Run<W>>,
    i: usize,
    inputs: Vec<Resolved<W::Value>>,
    key: Option<Key>,
    mode: ExecMode,
) -> Outcome<W::Value, W::Error> {
    if run.cancel.is_cancelled() {
        return run.cancelled(i);
    }
    let cx = Arc::new(Cx::new(i, run.cancel.clone(), run.events.clone()));
    // The content key (if any), then a claim on the key the value goes under:
    // another process solving the same step is waited for, and its value used.
    let prepared = {
        let run = run.clone();
        let cx = cx.clone();
        blocking(move || {
            let r = run.prepare(i, &inputs, &cx, key, mode);
            (inputs, r)
        })
        .await
    };
    let (inputs, content_key, claim) = match prepared {
        Ok((_, Ok(Prepared::Hit { key, value }))) => {
            run.emit(i, EventKind::Cached);
            return Outcome::Done {
                node: i,
                resolved: Resolved { key, value },
            };
        }
        Ok((inputs, Ok(Prepared::Execute { content_key, claim }))) => (inputs, content_key, claim),
        Ok((_, Err(err))) => return run.fail(i, err),
        Err(message) => return run.panicked(i, message),
    };
    let payload = &run.dag.nodes()[i].payload;
    let _permit = if run.worker.is_heavy(payload) {
        tokio::select! {
            biased;
            () = run.cancel.cancelled() => return run.cancelled(i),
            permit = run.heavy.clone().acquire_owned() => match permit {
                Ok(permit) => Some(permit),
                // The semaphore is never closed.
                Err(_) => return run.cancelled(i),
            },
        }
    } else {
        None
    };
    if run.cancel.is_cancelled() {
        return run.cancelled(i);
    }

    run.emit(i, EventKind::Started);
    let executed = {
        let run = run.clone();
        blocking(move || {
            let r = run.execute(i, &inputs, &cx, key, content_key);
            // Released once the value is stored (or the step failed).
            drop(claim);
            r
        })
        .await
    };
    match executed {
        Ok(Ok((value, elapsed))) => {
            run.emit(i, EventKind::Completed { elapsed });
            Outcome::Done {
                node: i,
                resolved: Resolved {
                    key: content_key.or(key),
                    value,
                },
            }
        }
        Ok(Err(err)) => run.fail(i, err),
        Err(message) => run.panicked(i, message),
    }
}
