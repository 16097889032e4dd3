//! Build progress: what the user sees while a build runs, and what the
//! build record keeps of it.
//!
//! Solver events are per graph node; the user sees *steps*. A Dockerfile
//! instruction is usually one node, but `COPY --link` is a copy and a merge
//! (`LINK COPY …`) and `ADD <url>`/`ADD <git>` a download and a copy, all
//! at one place of the Dockerfile: the nodes of one instruction (same
//! location, same name once the frontend's `LINK ` is taken out) are one
//! step, as BuildKit's progress groups make them one line. The step ends
//! with its last node (the one the others feed); it failed if any of them
//! failed.
//!
//! Faces ([`Mode`]):
//!
//! * `plain`: BuildKit-style lines (`#5 [build 2/4] RUN make`, the step's
//!   output with its time offset, `#5 CACHED`, `#5 DONE 1.2s`); registry
//!   and export lines under `#0`, with byte counts while a blob moves.
//! * `tty`: the live view ([`crate::progress_tty::Tty`]).
//! * `json`: one JSON object per line ([`crate::progress_tty::Json`]; the
//!   schema is in the README).
//! * `rawjson`: BuildKit's solve-status objects, one per line, per node.
//! * `quiet`/`none`: nothing.
//!
//! Whatever the face, the plain transcript, every step's times, outcome and
//! output size, the transfers and the warnings are gathered for the build
//! record ([`Progress::gathered`]).
//!
//! On GitHub Actions (`GITHUB_ACTIONS=true`, [`Progress::github_groups`])
//! plain output is folded: the lines of each step are wrapped in
//! `::group::#<id> <step>` / `::endgroup::`. Steps that run in parallel
//! interleave, so a step's group is closed when another step prints and
//! opened again (same title) when it prints next.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use kiln_registry::{Direction, Transfer, TransferState};
use kiln_solver::{Event, EventKind, Stream};

/// How many output lines of a step are kept for the error report.
const TAIL_LINES: usize = 20;

/// The plain transcript a build record keeps, at most (then it says it
/// was cut).
const RECORD_LOG_LIMIT: usize = 8 << 20;

/// Plain and JSON byte counts of a moving blob: at most one per this.
const TRANSFER_EVERY: Duration = Duration::from_secs(1);

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    /// Nothing (`quiet` and `none`).
    Quiet,
    /// The live view (`crate::progress_tty::Tty`).
    Tty,
    /// JSON lines (`crate::progress_tty::Json`).
    Json,
    /// BuildKit's solve status as JSON lines (`crate::progress_tty::RawJson`).
    RawJson,
}

/// Whether this process prints JSON on stderr (`--progress=json|rawjson`):
/// 0 no, 1 json, 2 rawjson. Set once the flags are known (or seen in the
/// raw arguments, for errors clap reports), read by the error report.
static JSON: AtomicU8 = AtomicU8::new(0);

/// Says that stderr carries JSON lines of `mode` from now on.
pub fn set_json(mode: Mode) {
    JSON.store(
        match mode {
            Mode::Json => 1,
            Mode::RawJson => 2,
            _ => 0,
        },
        Ordering::SeqCst,
    );
}

/// Whether stderr carries `--progress=json` lines (errors are JSON too).
pub fn json_errors() -> bool {
    JSON.load(Ordering::SeqCst) == 1
}

/// A line kiln says on stderr apart from the progress (`--debug` notes): a
/// JSON `message` event when stderr carries `--progress=json`.
pub fn say(text: &str) {
    if json_errors() {
        emit_json(serde_json::json!({"status": "message", "message": text}));
    } else {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

pub use crate::progress_event::{NodeInfo, emit_json, short_digest, timestamp_of};

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Cached,
    Done,
    Error,
    Canceled,
}

/// A step of the display: the nodes of one instruction.
#[derive(Debug)]
struct Step {
    name: String,
    members: Vec<usize>,
    /// The node the others feed: its end is the step's end.
    principal: usize,
    stage: Option<String>,
    location: Option<String>,
    /// Steps it reads (indexes into `State::steps`).
    deps: Vec<usize>,
    /// Display id (`#5`), given at its first event.
    id: Option<u32>,
    started: Option<Instant>,
    ended: Option<Instant>,
    outcome: Option<Outcome>,
    error: Option<String>,
    /// Bytes of an unfinished output line, per stream.
    partial: [Vec<u8>; 2],
    tail: VecDeque<String>,
    log_lines: usize,
    /// Time its nodes spent executing (a step of several nodes waits
    /// between them).
    busy: Duration,
    /// When each of its nodes that ran started, and the spans they ran.
    node_started: HashMap<usize, Instant>,
    runs: Vec<(Instant, Instant)>,
}

/// A step as the build record keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StepSummary {
    /// Display id (`#5`).
    pub id: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Ids of the steps it reads (that had events).
    #[serde(default)]
    pub deps: Vec<u32>,
    /// Milliseconds from the start of the build; absent when it never ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why it ran (`--explain`'s reason), when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Size of the layer it made for the image, when the image has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_size: Option<u64>,
    /// Output lines it printed.
    #[serde(default)]
    pub log_lines: usize,
    /// For a step of several nodes (`COPY --link`), when each node that
    /// ran did (milliseconds from the start of the build): the step waits
    /// between them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs_ms: Vec<(u64, u64)>,
    /// `exporting to image`-like steps that are not graph nodes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub task: bool,
    /// Graph nodes the step is made of (for mapping results back).
    #[serde(skip)]
    pub nodes: Vec<usize>,
}

/// A blob transfer as the build record keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TransferSummary {
    pub digest: String,
    /// `download`, `upload`, `write`.
    pub action: String,
    pub bytes: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub finished: bool,
}

/// What the progress gathered for the build record.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    pub steps: Vec<StepSummary>,
    pub transfers: Vec<TransferSummary>,
    /// The plain transcript (as `--progress=plain` prints it).
    pub log: String,
}

#[derive(Debug)]
struct Moving {
    action: Direction,
    total: u64,
    current: u64,
    start: Instant,
    end: Option<Instant>,
    last_report: Option<Instant>,
    /// When a plain line last said it.
    last_line: Option<Instant>,
    finished: bool,
}

#[derive(Debug)]
struct TaskTimes {
    id: u32,
    name: String,
    start: Instant,
    end: Option<Instant>,
}

#[derive(Debug)]
struct State {
    next_id: u32,
    nodes: Vec<NodeInfo>,
    /// Node index → step index.
    step_of: Vec<usize>,
    steps: Vec<Step>,
    /// The last display id a line was printed for (a blank line separates
    /// steps); one for the terminal and one for the record's transcript.
    last_shown: Option<u32>,
    last_logged: Option<u32>,
    /// Step names by display id (group titles).
    titles: HashMap<u32, String>,
    transfers: Vec<(String, Moving)>,
    tasks: Vec<TaskTimes>,
    log: String,
    log_cut: bool,
}

/// The progress printer of one build.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    start: Instant,
    state: Mutex<State>,
    tty: Option<crate::progress_tty::Tty>,
    json: Option<crate::progress_tty::Json>,
    raw: Option<crate::progress_tty::RawJson>,
    /// GitHub Actions log groups around each step's lines (plain mode).
    github: bool,
}

fn stream_index(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// The step name a node shows: the frontend names the merge of a `COPY
/// --link` `[stage n/m] LINK COPY …`; the step is `[stage n/m] COPY …`.
fn step_name(name: &str) -> String {
    if let Some((pos, rest)) = name.split_once("] ")
        && pos.starts_with('[')
        && let Some(r) = rest.strip_prefix("LINK ")
    {
        return format!("{pos}] {r}");
    }
    name.to_owned()
}

impl Progress {
    /// A printer; the graph comes later ([`Progress::set_graph`]), once the
    /// Dockerfile is planned (pulls of base images come first).
    pub fn new(mode: Mode) -> Progress {
        Progress {
            mode,
            start: Instant::now(),
            tty: (mode == Mode::Tty).then(crate::progress_tty::Tty::new),
            json: (mode == Mode::Json).then(crate::progress_tty::Json::default),
            raw: (mode == Mode::RawJson).then(crate::progress_tty::RawJson::default),
            state: Mutex::new(State {
                next_id: 1,
                nodes: Vec::new(),
                step_of: Vec::new(),
                steps: Vec::new(),
                last_shown: None,
                last_logged: None,
                titles: HashMap::new(),
                transfers: Vec::new(),
                tasks: Vec::new(),
                log: String::new(),
                log_cut: false,
            }),
            github: false,
        }
    }

    /// When the build started (for records).
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Wraps each step's plain lines in GitHub Actions log groups.
    pub fn github_groups(mut self, on: bool) -> Progress {
        self.github = on;
        self
    }

    /// The graph whose events come next: node `i` is `nodes[i]`.
    pub fn set_graph(&self, nodes: Vec<NodeInfo>) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        // Names carry build arguments (RUN's are expanded, as in BuildKit):
        // control characters other than newline and tab are shown escaped,
        // never sent to the terminal. JSON escapes them itself.
        let shown = |n: &str| {
            if self.mode == Mode::Json || self.mode == Mode::RawJson {
                n.to_owned()
            } else {
                printable(n)
            }
        };
        let mut key_to_step: HashMap<(String, String), usize> = HashMap::new();
        let mut steps: Vec<Step> = Vec::new();
        let mut step_of = Vec::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            let name = step_name(&n.name);
            let key = n.location.as_ref().map(|l| (name.clone(), l.clone()));
            let existing = key.as_ref().and_then(|k| key_to_step.get(k)).copied();
            let s = match existing {
                Some(s) => {
                    steps[s].members.push(i);
                    steps[s].principal = i;
                    s
                }
                None => {
                    steps.push(Step {
                        name: shown(&name),
                        members: vec![i],
                        principal: i,
                        stage: n.stage.clone(),
                        location: n.location.clone(),
                        deps: Vec::new(),
                        id: None,
                        started: None,
                        ended: None,
                        outcome: None,
                        error: None,
                        partial: [Vec::new(), Vec::new()],
                        tail: VecDeque::new(),
                        log_lines: 0,
                        busy: Duration::ZERO,
                        node_started: HashMap::new(),
                        runs: Vec::new(),
                    });
                    if let Some(k) = key {
                        key_to_step.insert(k, steps.len() - 1);
                    }
                    steps.len() - 1
                }
            };
            step_of.push(s);
        }
        for (i, n) in nodes.iter().enumerate() {
            let s = step_of[i];
            for &input in &n.inputs {
                if let Some(&d) = step_of.get(input)
                    && d != s
                    && !steps[s].deps.contains(&d)
                {
                    steps[s].deps.push(d);
                }
            }
        }
        if let Some(r) = &self.raw {
            r.set_graph(&nodes);
        }
        state.nodes = nodes;
        state.step_of = step_of;
        state.steps = steps;
    }

    /// Ends the display (the live view clears itself and prints a summary;
    /// an open GitHub Actions group is closed).
    pub fn finish(&self, outcome: &str) {
        if let Some(t) = &self.tty {
            t.finish_all(outcome);
        }
        if self.github
            && self.mode == Mode::Plain
            && let Ok(mut state) = self.state.lock()
            && state.last_shown.take().is_some()
        {
            let _ = writeln!(std::io::stderr().lock(), "::endgroup::");
        }
    }

    /// A plain line `#id line`: to the terminal in plain mode, and to the
    /// record's transcript always.
    fn write(&self, state: &mut State, id: u32, line: &str) {
        // The record's transcript, as `--progress=plain` prints it.
        if !state.log_cut {
            if state.last_logged.is_some() && state.last_logged != Some(id) {
                state.log.push('\n');
            }
            state.last_logged = Some(id);
            state.log.push_str(&format!("#{id} {line}\n"));
            if state.log.len() > RECORD_LOG_LIMIT {
                state.log_cut = true;
                state
                    .log
                    .push_str("[the rest of this build's output was not kept]\n");
            }
        }
        if self.mode != Mode::Plain {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.github {
            // The first line of a step is its name: the group's title.
            let title = state
                .titles
                .entry(id)
                .or_insert_with(|| line.to_owned())
                .clone();
            if state.last_shown != Some(id) {
                if state.last_shown.is_some() {
                    let _ = writeln!(err, "::endgroup::");
                }
                let _ = writeln!(err, "::group::#{id} {}", escape_workflow_command(&title));
            }
        } else if state.last_shown.is_some() && state.last_shown != Some(id) {
            let _ = writeln!(err);
        }
        state.last_shown = Some(id);
        let _ = writeln!(err, "#{id} {line}");
    }

    /// Shows one solver event.
    pub fn event(&self, e: Event) {
        if let Some(r) = &self.raw {
            r.event(&e);
        }
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let state = &mut *guard;
        let Some(&s) = state.step_of.get(e.node) else {
            return;
        };
        let principal = state.steps[s].principal == e.node;
        // Only the first event of a step, and its first outcome, show.
        let mut lines: Vec<String> = Vec::new();
        let fresh = state.steps[s].id.is_none();
        if fresh {
            let id = state.next_id;
            state.next_id += 1;
            state.steps[s].id = Some(id);
            lines.push(state.steps[s].name.clone());
        }
        let step = &mut state.steps[s];
        let id = step.id.unwrap_or(0);
        let ended = step.outcome.is_some();
        let now = Instant::now();
        let mut shown: Option<crate::progress_tty::StepEvent<'_>> = None;
        match &e.kind {
            EventKind::Started => {
                step.node_started.insert(e.node, now);
                if step.started.is_none() {
                    step.started = Some(now);
                    shown = Some(crate::progress_tty::StepEvent::Started);
                }
            }
            EventKind::Cached if principal && !ended => {
                // A step some of whose nodes ran is done, not cached.
                let outcome = if step.started.is_some() {
                    Outcome::Done
                } else {
                    Outcome::Cached
                };
                step.ended = Some(now);
                if outcome == Outcome::Cached {
                    lines.push("CACHED".to_owned());
                    shown = Some(crate::progress_tty::StepEvent::Cached);
                } else {
                    let took = step.busy;
                    lines.extend(flush_partial(step));
                    lines.push(format!("DONE {:.1}s", took.as_secs_f64()));
                    shown = Some(crate::progress_tty::StepEvent::Done(took));
                }
                step.outcome = Some(outcome);
            }
            EventKind::Cached => {}
            EventKind::Log { stream, data } => {
                let elapsed = step.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
                let buf = &mut step.partial[stream_index(*stream)];
                buf.extend_from_slice(data);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = buf.drain(..=nl).collect();
                    let text = String::from_utf8_lossy(&raw[..raw.len() - 1])
                        .trim_end_matches('\r')
                        .to_owned();
                    step.tail.push_back(text.clone());
                    if step.tail.len() > TAIL_LINES {
                        step.tail.pop_front();
                    }
                    step.log_lines += 1;
                    lines.push(format!("{elapsed:.3} {text}"));
                }
                if !ended {
                    shown = Some(crate::progress_tty::StepEvent::Log {
                        stream: *stream,
                        data,
                    });
                }
            }
            EventKind::Completed { elapsed } if principal && !ended => {
                step.busy += *elapsed;
                if let Some(t) = step.node_started.get(&e.node) {
                    step.runs.push((*t, now));
                }
                let took = step.busy;
                step.ended = Some(now);
                step.outcome = Some(Outcome::Done);
                lines.extend(flush_partial(step));
                lines.push(format!("DONE {:.1}s", took.as_secs_f64()));
                shown = Some(crate::progress_tty::StepEvent::Done(took));
            }
            EventKind::Completed { elapsed } => {
                step.busy += *elapsed;
                if let Some(t) = step.node_started.get(&e.node) {
                    step.runs.push((*t, now));
                }
            }
            EventKind::Failed { message } if !ended => {
                step.ended = Some(now);
                step.outcome = Some(Outcome::Error);
                step.error = Some(message.clone());
                lines.extend(flush_partial(step));
                lines.push(format!("ERROR: {message}"));
                shown = Some(crate::progress_tty::StepEvent::Failed(message));
            }
            EventKind::Failed { .. } => {}
            EventKind::Cancelled if principal && !ended => {
                step.ended = Some(now);
                step.outcome = Some(Outcome::Canceled);
                lines.extend(flush_partial(step));
                lines.push("CANCELED".to_owned());
                shown = Some(crate::progress_tty::StepEvent::Canceled);
            }
            EventKind::Cancelled => {}
        }
        let name = step.name.clone();
        if let Some(ev) = &shown {
            if let Some(t) = &self.tty {
                t.event(id, &name, ev);
            }
            if let Some(j) = &self.json {
                j.event(id, &name, ev);
            }
        }
        for l in lines {
            self.write(state, id, &l);
        }
    }

    /// The last output lines of the step node `node` belongs to (for the
    /// error report).
    pub fn tail(&self, node: usize) -> Vec<String> {
        match self.state.lock() {
            Ok(state) => state
                .step_of
                .get(node)
                .and_then(|&s| state.steps.get(s))
                .map(|s| s.tail.iter().cloned().collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// A line about registries and outputs (`resolve …`, `pushing …`),
    /// shown under `#0`.
    pub fn message(&self, text: &str) {
        if let Some(j) = &self.json {
            j.message(text);
        }
        if let Some(r) = &self.raw {
            r.message(text);
        }
        if let Some(t) = &self.tty {
            t.message(text);
        }
        if let Ok(mut state) = self.state.lock() {
            self.write(&mut state, 0, text);
        }
    }

    /// Byte progress of a blob transfer: a live bar in the tty view; in JSON
    /// its start, end and at most one count a second; in plain output, for a
    /// blob that takes longer than a second, a count a second and one when
    /// it is done.
    pub fn transfer(&self, t: &Transfer) {
        if let Some(tty) = &self.tty {
            tty.transfer(t);
        }
        let Ok(mut guard) = self.state.lock() else {
            return;
        };
        let state = &mut *guard;
        let key = format!("{} {}", t.direction.as_str(), t.digest);
        let now = Instant::now();
        let i = match state.transfers.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                state.transfers.push((
                    key,
                    Moving {
                        action: t.direction,
                        total: t.total,
                        current: 0,
                        start: now,
                        end: None,
                        last_report: None,
                        last_line: None,
                        finished: false,
                    },
                ));
                state.transfers.len() - 1
            }
        };
        let tr = &mut state.transfers[i].1;
        if t.state == TransferState::Started {
            tr.start = now;
            tr.end = None;
            tr.finished = false;
            tr.last_report = None;
            tr.last_line = None;
        }
        tr.current = t.current;
        tr.total = t.total.max(tr.total);
        if t.state == TransferState::Finished {
            tr.end = Some(now);
            tr.finished = true;
        }
        let every =
            |last: Option<Instant>| last.is_none_or(|l| now.duration_since(l) >= TRANSFER_EVERY);
        // JSON: the start, the end, and at most one a second between.
        let report = match t.state {
            TransferState::Started | TransferState::Finished => true,
            TransferState::Moving => every(tr.last_report),
        };
        // Plain lines are for people: a blob that moves in under a second
        // shows none; a slower one a line a second, and one when it is done.
        let line = match t.state {
            TransferState::Started => false,
            TransferState::Moving => {
                now.duration_since(tr.start) >= TRANSFER_EVERY && every(tr.last_line)
            }
            TransferState::Finished => tr.last_line.is_some(),
        };
        if report {
            tr.last_report = Some(now);
        }
        if line {
            tr.last_line = Some(now);
        }
        let took = now.duration_since(tr.start).as_secs_f64();
        let (current, total, action) = (tr.current, tr.total, tr.action);
        if report {
            if let Some(j) = &self.json {
                j.transfer(t, total);
            }
            if let Some(r) = &self.raw {
                r.transfer(t, total);
            }
        }
        if !line {
            return;
        }
        let short = short_digest(&t.digest.to_string());
        let verb = match action {
            Direction::Download => "downloading",
            Direction::Upload => "uploading",
            Direction::Write => "writing",
        };
        let size = if total > 0 {
            format!(
                "{} / {}",
                crate::units::human_size(current),
                crate::units::human_size(total)
            )
        } else {
            crate::units::human_size(current)
        };
        let text = if t.state == TransferState::Finished {
            format!("{verb} {short} {size} {took:.1}s done")
        } else {
            format!("{verb} {short} {size} {took:.1}s")
        };
        self.write(state, 0, &text);
    }

    /// A warning of the build (frontend notes and lint rules): JSON lines
    /// say it; text faces print it where they always did (the caller).
    pub fn warning(&self, d: &kiln_frontend::Diagnostic) {
        if let Some(j) = &self.json {
            j.warning(d);
        }
        if let Some(r) = &self.raw {
            r.warning(d);
        }
    }

    /// A step that is not a graph vertex (exporting, naming): prints its name
    /// and returns a handle whose `done` prints the time it took.
    pub fn task(&self, name: &str) -> Task<'_> {
        let id = match self.state.lock() {
            Ok(mut state) => {
                let id = state.next_id;
                state.next_id += 1;
                state.tasks.push(TaskTimes {
                    id,
                    name: name.to_owned(),
                    start: Instant::now(),
                    end: None,
                });
                self.write(&mut state, id, name);
                id
            }
            Err(_) => 0,
        };
        if let Some(j) = &self.json {
            j.task(id, name, "started", None);
        }
        if let Some(r) = &self.raw {
            r.task(id, name, false, None);
        }
        Task {
            progress: self,
            id,
            start: Instant::now(),
            name: name.to_owned(),
            last: std::cell::RefCell::new(String::new()),
        }
    }

    /// What the build record keeps: the steps that had events (in the
    /// order they first showed), the transfers, the plain transcript.
    pub fn gathered(&self) -> Gathered {
        let Ok(state) = self.state.lock() else {
            return Gathered::default();
        };
        let ms = |t: Instant| t.saturating_duration_since(self.start).as_millis() as u64;
        let mut steps: Vec<StepSummary> = state
            .steps
            .iter()
            .filter_map(|s| {
                let id = s.id?;
                Some(StepSummary {
                    id,
                    name: s.name.clone(),
                    stage: s.stage.clone(),
                    location: s.location.clone(),
                    deps: s
                        .deps
                        .iter()
                        .filter_map(|&d| state.steps.get(d).and_then(|d| d.id))
                        .collect(),
                    start_ms: s.started.map(ms),
                    end_ms: s.ended.map(ms),
                    outcome: s.outcome.clone().unwrap_or(Outcome::Canceled),
                    error: s.error.clone(),
                    reason: None,
                    layer_size: None,
                    log_lines: s.log_lines,
                    runs_ms: if s.members.len() > 1 {
                        s.runs.iter().map(|(a, b)| (ms(*a), ms(*b))).collect()
                    } else {
                        Vec::new()
                    },
                    task: false,
                    nodes: s.members.clone(),
                })
            })
            .collect();
        for t in &state.tasks {
            steps.push(StepSummary {
                id: t.id,
                name: t.name.clone(),
                stage: None,
                location: None,
                deps: Vec::new(),
                start_ms: Some(ms(t.start)),
                end_ms: t.end.map(ms),
                outcome: if t.end.is_some() {
                    Outcome::Done
                } else {
                    Outcome::Canceled
                },
                error: None,
                reason: None,
                layer_size: None,
                log_lines: 0,
                runs_ms: Vec::new(),
                task: true,
                nodes: Vec::new(),
            });
        }
        steps.sort_by_key(|s| s.id);
        let transfers = state
            .transfers
            .iter()
            .map(|(k, t)| TransferSummary {
                digest: k.split_once(' ').map_or(k.as_str(), |(_, d)| d).to_owned(),
                action: t.action.as_str().to_owned(),
                bytes: t.current,
                start_ms: ms(t.start),
                end_ms: ms(t.end.unwrap_or_else(Instant::now)),
                finished: t.finished,
            })
            .collect();
        Gathered {
            steps,
            transfers,
            log: state.log.clone(),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish("");
    }
}

/// A workflow command's data with GitHub's escapes (`%`, CR and LF).
pub fn escape_workflow_command(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value (`file=…`): the data escapes plus
/// `:` and `,`.
pub fn escape_workflow_property(s: &str) -> String {
    escape_workflow_command(s)
        .replace(':', "%3A")
        .replace(',', "%2C")
}

fn flush_partial(step: &mut Step) -> Vec<String> {
    let elapsed = step.started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let mut out = Vec::new();
    for buf in &mut step.partial {
        if !buf.is_empty() {
            let text = String::from_utf8_lossy(buf).into_owned();
            buf.clear();
            step.tail.push_back(text.clone());
            step.log_lines += 1;
            out.push(format!("{elapsed:.3} {text}"));
        }
    }
    out
}

/// A non-vertex step in progress.
#[derive(Debug)]
pub struct Task<'a> {
    progress: &'a Progress,
    id: u32,
    start: Instant,
    name: String,
    last: std::cell::RefCell<String>,
}

impl Task<'_> {
    /// A line under the task (`writing image sha256:… done`).
    pub fn line(&self, text: &str) {
        if let Some(j) = &self.progress.json {
            j.task(self.id, &self.name, "log", Some(("data", text.to_owned())));
        }
        if let Some(r) = &self.progress.raw {
            r.task_log(self.id, &self.name, text);
        }
        text.clone_into(&mut self.last.borrow_mut());
        if let Ok(mut state) = self.progress.state.lock() {
            self.progress.write(&mut state, self.id, text);
        }
    }

    /// Marks the task done.
    pub fn done(self) {
        let elapsed = self.start.elapsed();
        if let Some(t) = &self.progress.tty {
            t.task_done(&self.name, &self.last.borrow(), elapsed);
        }
        if let Some(j) = &self.progress.json {
            j.task(
                self.id,
                &self.name,
                "done",
                Some(("duration", format!("{:.3}", elapsed.as_secs_f64()))),
            );
        }
        if let Some(r) = &self.progress.raw {
            r.task(self.id, &self.name, true, None);
        }
        let line = format!("DONE {:.1}s", elapsed.as_secs_f64());
        if let Ok(mut state) = self.progress.state.lock() {
            let now = Instant::now();
            if let Some(t) = state.tasks.iter_mut().find(|t| t.id == self.id) {
                t.end = Some(now);
            }
            self.progress.write(&mut state, self.id, &line);
        }
    }
}

/// `s` with its control characters (but newline and tab) as `\xHH`.
pub(crate) fn printable(s: &str) -> String {
    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("RUN echo a"), "RUN echo a");
        assert_eq!(
            printable("RUN echo \u{1b}[31mred\u{1}\tx\ny"),
            "RUN echo \\x1b[31mred\\x01\tx\ny"
        );
        assert_eq!(printable("\u{9b}"), "\\x9b");
    }

    #[test]
    fn link_merges_show_as_their_copy() {
        assert_eq!(
            step_name("[runtime 4/6] LINK COPY --link a /b"),
            "[runtime 4/6] COPY --link a /b"
        );
        assert_eq!(step_name("[4/6] COPY a /b"), "[4/6] COPY a /b");
        assert_eq!(step_name("LINK x"), "LINK x");
    }

    fn node(name: &str, loc: Option<&str>, inputs: Vec<usize>) -> NodeInfo {
        NodeInfo {
            name: name.to_owned(),
            digest: String::new(),
            inputs,
            location: loc.map(str::to_owned),
            stage: None,
        }
    }

    #[test]
    fn one_step_per_instruction() {
        let p = Progress::new(Mode::Quiet);
        p.set_graph(vec![
            node("[1/3] FROM busybox", Some("Dockerfile:1"), vec![]),
            node("[2/3] COPY --link a /a", Some("Dockerfile:2"), vec![]),
            node(
                "[2/3] LINK COPY --link a /a",
                Some("Dockerfile:2"),
                vec![0, 1],
            ),
            node("[3/3] ADD https://x/y /y", Some("Dockerfile:3"), vec![]),
            node("[3/3] ADD https://x/y /y", Some("Dockerfile:3"), vec![2, 3]),
            node("[internal] preparing inline document", None, vec![]),
            node("[internal] preparing inline document", None, vec![]),
        ]);
        let ev = |node, kind| Event { node, kind };
        p.event(ev(0, EventKind::Cached));
        p.event(ev(1, EventKind::Started));
        p.event(ev(
            1,
            EventKind::Completed {
                elapsed: Duration::from_millis(5),
            },
        ));
        p.event(ev(2, EventKind::Started));
        p.event(ev(
            2,
            EventKind::Completed {
                elapsed: Duration::from_millis(5),
            },
        ));
        p.event(ev(3, EventKind::Cached));
        p.event(ev(4, EventKind::Cached));
        p.event(ev(5, EventKind::Cached));
        p.event(ev(6, EventKind::Cached));
        let g = p.gathered();
        let shown: Vec<(u32, &str, Outcome)> = g
            .steps
            .iter()
            .map(|s| (s.id, s.name.as_str(), s.outcome.clone()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (1, "[1/3] FROM busybox", Outcome::Cached),
                (2, "[2/3] COPY --link a /a", Outcome::Done),
                (3, "[3/3] ADD https://x/y /y", Outcome::Cached),
                (4, "[internal] preparing inline document", Outcome::Cached),
                (5, "[internal] preparing inline document", Outcome::Cached),
            ]
        );
        assert_eq!(g.steps[2].deps, vec![2]);
        assert_eq!(
            g.log.matches("#2 [2/3] COPY --link a /a").count(),
            1,
            "{}",
            g.log
        );
    }
}
