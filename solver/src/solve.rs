//! The scheduler: runs the nodes a solve needs through a [`Worker`], in parallel where
//! the graph allows, consulting and filling a [`CacheStore`].

use std::collections::HashMap;
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

/// What the solver runs nodes with. All methods are called on blocking threads except
/// [`Worker::is_heavy`], which must be cheap.
pub trait Worker: Send + Sync + 'static {
    /// The node description (for kiln: an LLB op).
    type Payload: Send + Sync + 'static;
    /// The node result (for kiln: a reference to a snapshot). Stored in the cache as JSON.
    type Value: Clone + Send + Sync + Serialize + DeserializeOwned + 'static;
    /// The worker's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The node's cache key from its payload and its resolved inputs (in `Node::inputs`
    /// order); may do blocking I/O, such as hashing content it reads. `None`: never cached,
    /// always executed, the result is not stored.
    ///
    /// The key must depend only on what determines the result — never on timestamps,
    /// host paths or node indices — so that identical work has the same key on every
    /// machine and in every graph. The solver uses the key exactly as returned.
    fn cache_key(
        &self,
        node: &Self::Payload,
        inputs: &[Resolved<Self::Value>],
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
    /// `forced`: the node was executed because it was forced, so its dependents are too.
    Done {
        resolved: Resolved<V>,
        forced: bool,
    },
    Failed(SolveError<E>),
    Cancelled,
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
        let needed = dag.ancestors(targets);
        // pending[i]: distinct inputs of i not yet resolved; dependents[j]: needed users of j.
        let mut pending = vec![0usize; n];
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, node) in dag.nodes().iter().enumerate() {
            if !needed[i] {
                continue;
            }
            let mut inputs = node.inputs.clone();
            inputs.sort_unstable();
            inputs.dedup();
            pending[i] = inputs.len();
            for j in inputs {
                dependents[j].push(i);
            }
        }
        let mut ready: Vec<usize> = (0..n).filter(|&i| needed[i] && pending[i] == 0).collect();
        let mut results: Vec<Option<(Resolved<W::Value>, bool)>> = (0..n).map(|_| None).collect();
        let mut spawned = vec![false; n];

        let run = Arc::new(Run {
            worker: self.worker.clone(),
            cache: self.cache.clone(),
            heavy: self.heavy.clone(),
            dag: dag.clone(),
            events: events.clone(),
            cancel: CancelToken::new(),
        });
        let _cancel_on_drop = CancelOnDrop(run.cancel.clone());
        let mut tasks = JoinSet::new();
        let mut task_node = HashMap::new();
        let mut first_error = None;
        let mut stopped = false;

        loop {
            if !stopped && (run.cancel.is_cancelled() || cancel.is_cancelled()) {
                stopped = true;
                run.cancel.cancel();
                for i in (0..n).filter(|&i| needed[i] && !spawned[i]) {
                    events(Event {
                        node: i,
                        kind: EventKind::Cancelled,
                    });
                }
            }
            if !stopped {
                for i in ready.drain(..) {
                    spawned[i] = true;
                    let node = &dag.nodes()[i];
                    let mut forced = node.ignore_cache;
                    let mut inputs = Vec::with_capacity(node.inputs.len());
                    for &j in &node.inputs {
                        // Every input of a ready node has been resolved.
                        if let Some((resolved, input_forced)) = &results[j] {
                            forced |= *input_forced;
                            inputs.push(resolved.clone());
                        }
                    }
                    let handle = tasks.spawn(run_node(run.clone(), i, inputs, forced));
                    task_node.insert(handle.id(), i);
                }
            }
            let joined = tokio::select! {
                joined = tasks.join_next_with_id() => joined,
                () = cancel.cancelled(), if !stopped => continue,
            };
            let Some(joined) = joined else { break };
            let (i, outcome) = match joined {
                Ok((id, outcome)) => (task_node.get(&id).copied(), outcome),
                Err(e) => {
                    // The node task itself panicked (worker calls are caught inside it).
                    let i = task_node.get(&e.id()).copied();
                    let node = i.unwrap_or(usize::MAX);
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
                    (i, Outcome::Failed(err))
                }
            };
            match outcome {
                Outcome::Done { resolved, forced } => {
                    let Some(i) = i else { continue };
                    results[i] = Some((resolved, forced));
                    for &d in &dependents[i] {
                        pending[d] -= 1;
                        if pending[d] == 0 {
                            ready.push(d);
                        }
                    }
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
            .map(|&t| match &results[t] {
                Some((resolved, _)) => Ok(resolved.clone()),
                None => Err(SolveError::Cancelled),
            })
            .collect()
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

    /// Computes the key and, unless forced, looks the value up. Blocking.
    #[allow(clippy::type_complexity)]
    fn lookup(
        &self,
        i: usize,
        inputs: &[Resolved<W::Value>],
        cx: &Cx,
        forced: bool,
    ) -> Result<(Option<Key>, Option<W::Value>), SolveError<W::Error>> {
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
            return Ok((None, None));
        };
        if forced {
            return Ok((Some(key), None));
        }
        let bytes = self.cache.get(&key).map_err(|source| SolveError::Cache {
            node: i,
            name: self.name(i),
            key,
            source,
        })?;
        // Undecodable (corrupt, or written by an incompatible version) or stale entries
        // are misses; executing overwrites them.
        let hit = bytes
            .and_then(|b| serde_json::from_slice::<W::Value>(&b).ok())
            .filter(|v| self.worker.is_valid(v));
        Ok((Some(key), hit))
    }

    /// Executes the node and stores its value under `key`. Blocking.
    fn execute(
        &self,
        i: usize,
        inputs: &[Resolved<W::Value>],
        cx: &Cx,
        key: Option<Key>,
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
        if let Some(key) = key {
            let bytes = serde_json::to_vec(&value).map_err(|source| SolveError::Encode {
                node: i,
                name: self.name(i),
                source,
            })?;
            self.cache
                .put(&key, &bytes)
                .map_err(|source| SolveError::Cache {
                    node: i,
                    name: self.name(i),
                    key,
                    source,
                })?;
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

/// One node: key, cache lookup, and on a miss (or when forced) execution and store.
async fn run_node<W: Worker>(
    run: Arc<Run<W>>,
    i: usize,
    inputs: Vec<Resolved<W::Value>>,
    forced: bool,
) -> Outcome<W::Value, W::Error> {
    if run.cancel.is_cancelled() {
        return run.cancelled(i);
    }
    let cx = Arc::new(Cx::new(i, run.cancel.clone(), run.events.clone()));
    let inputs = Arc::new(inputs);

    let lookup = {
        let (run, cx, inputs) = (run.clone(), cx.clone(), inputs.clone());
        blocking(move || run.lookup(i, &inputs, &cx, forced)).await
    };
    let key = match lookup {
        Ok(Ok((key, Some(value)))) => {
            run.emit(i, EventKind::Cached);
            return Outcome::Done {
                resolved: Resolved { key, value },
                forced: false,
            };
        }
        Ok(Ok((key, None))) => key,
        Ok(Err(err)) => return run.fail(i, err),
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
        blocking(move || run.execute(i, &inputs, &cx, key)).await
    };
    match executed {
        Ok(Ok((value, elapsed))) => {
            run.emit(i, EventKind::Completed { elapsed });
            Outcome::Done {
                resolved: Resolved { key, value },
                forced,
            }
        }
        Ok(Err(err)) => run.fail(i, err),
        Err(message) => run.panicked(i, message),
    }
}
