//! The faces of build progress other than plain ([`crate::progress`] keeps
//! the plain one and decides what each face is told):
//!
//! * `--progress=tty` (the default when stderr is a terminal): a live view
//!   in the style of BuildKit's, drawn with indicatif — one line per running
//!   step with its elapsed time and, under a running step, its last output
//!   lines; a byte bar per moving blob (pulls, pushes, archives); finished
//!   steps scroll up as `=> [2/3] RUN make  1.2s` or `=> CACHED [1/3] FROM
//!   …`; at the end a summary (total time, steps, cache hits). Every line is
//!   cut to the terminal's width, never wrapped (a wrapped line is one the
//!   live area cannot erase). Times are seconds with one decimal everywhere
//!   (`12.9s`). Colour only without `NO_COLOR`.
//! * `--progress=json`: one JSON object per line on stderr (schema in the
//!   README; [`Json`]).
//! * `--progress=rawjson`: BuildKit's `SolveStatus` objects as buildx's
//!   `rawjson` prints them, one per line ([`RawJson`]).

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use kiln_registry::{Transfer, TransferState};
use kiln_solver::{Event, EventKind, Stream};
use serde_json::json;

use crate::progress_event::{NodeInfo, emit_json, short_digest, timestamp};

/// Output lines shown under a running step.
const LIVE_LINES: usize = 6;

/// What happened to a step, as the faces are told.
#[derive(Debug)]
pub enum StepEvent<'a> {
    Started,
    Cached,
    Log { stream: Stream, data: &'a [u8] },
    Done(Duration),
    Failed(&'a str),
    Canceled,
}

fn stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

/// `--progress=json`.
#[derive(Debug, Default)]
pub struct Json {
    lock: Mutex<()>,
}

impl Json {
    fn emit(&self, v: serde_json::Value) {
        let _g = self.lock.lock();
        emit_json(v);
    }

    /// One event of step `id` called `name`.
    pub fn event(&self, id: u32, name: &str, ev: &StepEvent<'_>) {
        let mut v = json!({"vertex": id, "name": name});
        match ev {
            StepEvent::Started => v["status"] = json!("started"),
            StepEvent::Cached => v["status"] = json!("cached"),
            StepEvent::Log { stream, data } => {
                v["status"] = json!("log");
                v["stream"] = json!(stream_name(*stream));
                v["data"] = json!(String::from_utf8_lossy(data));
            }
            StepEvent::Done(d) => {
                v["status"] = json!("done");
                v["duration"] = json!(d.as_secs_f64());
            }
            StepEvent::Failed(m) => {
                v["status"] = json!("error");
                v["error"] = json!(m);
            }
            StepEvent::Canceled => v["status"] = json!("canceled"),
        }
        self.emit(v);
    }

    /// A step that is not a vertex (exporting): started, a log line, done.
    pub fn task(&self, id: u32, name: &str, status: &str, extra: Option<(&str, String)>) {
        let mut v = json!({"vertex": id, "name": name, "status": status});
        match extra {
            Some(("duration", d)) => v["duration"] = json!(d.parse::<f64>().unwrap_or(0.0)),
            Some((k, x)) => v[k] = json!(x),
            None => {}
        }
        self.emit(v);
    }

    /// A registry or output line (`resolve …`, `pushing …`).
    pub fn message(&self, text: &str) {
        self.emit(json!({"status": "message", "message": text}));
    }

    /// Byte progress of a blob.
    pub fn transfer(&self, t: &Transfer, total: u64) {
        self.emit(json!({
            "status": "transfer",
            "id": t.digest.to_string(),
            "action": t.direction.as_str(),
            "current": t.current,
            "total": total,
            "state": match t.state {
                TransferState::Started => "started",
                TransferState::Moving => "moving",
                TransferState::Finished => "finished",
            },
        }));
    }

    /// A warning (frontend notes, lint rules).
    pub fn warning(&self, d: &kiln_frontend::Diagnostic) {
        let mut v = json!({"status": "warning", "message": d.message, "file": d.file});
        if let Some(r) = d.rule {
            v["rule"] = json!(r);
        }
        if let Some(u) = d.url {
            v["url"] = json!(u);
        }
        if let Some(l) = &d.location {
            v["line"] = json!(l.line);
            v["column"] = json!(l.column);
        }
        self.emit(v);
    }
}

/// `--progress=rawjson`: BuildKit's `client.SolveStatus`, one object per
/// line, as buildx prints it: `vertexes` (digest, inputs, name, started,
/// completed, cached, error), `statuses` (byte progress: id, name, total,
/// current, timestamp, started, completed), `logs` (vertex, stream 1 or 2,
/// base64 data, timestamp) and `warnings` (level, base64 short, detail,
/// url). Steps that are not graph nodes (exporting, registry lines) are
/// vertices with digests of their own.
#[derive(Debug, Default)]
pub struct RawJson {
    state: Mutex<RawState>,
}

#[derive(Debug, Default)]
struct RawState {
    digests: Vec<String>,
    inputs: Vec<Vec<String>>,
    names: Vec<String>,
    started: HashMap<usize, String>,
    /// Pseudo-vertices: key → (digest, started).
    pseudo: HashMap<String, (String, String)>,
    transfers: HashMap<String, String>,
}

fn pseudo_digest(key: &str) -> String {
    use sha2::Digest as _;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(key.as_bytes()))
    )
}

impl RawJson {
    fn emit(v: &serde_json::Value) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{v}");
    }

    /// The graph whose nodes the events name.
    pub fn set_graph(&self, nodes: &[NodeInfo]) {
        if let Ok(mut s) = self.state.lock() {
            s.digests = nodes.iter().map(|n| n.digest.clone()).collect();
            s.names = nodes.iter().map(|n| n.name.clone()).collect();
            s.inputs = nodes
                .iter()
                .map(|n| {
                    n.inputs
                        .iter()
                        .filter_map(|&i| nodes.get(i).map(|x| x.digest.clone()))
                        .collect()
                })
                .collect();
        }
    }

    /// One solver event.
    pub fn event(&self, e: &Event) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let now = timestamp();
        let Some(digest) = s.digests.get(e.node).cloned() else {
            return;
        };
        let mut v = json!({
            "digest": digest,
            "name": s.names.get(e.node).cloned().unwrap_or_default(),
        });
        if let Some(inputs) = s.inputs.get(e.node)
            && !inputs.is_empty()
        {
            v["inputs"] = json!(inputs);
        }
        let started = s.started.get(&e.node).cloned();
        match &e.kind {
            EventKind::Started => {
                s.started.insert(e.node, now.clone());
                v["started"] = json!(now);
            }
            EventKind::Cached => {
                v["started"] = json!(now);
                v["completed"] = json!(now);
                v["cached"] = json!(true);
            }
            EventKind::Log { stream, data } => {
                Self::emit(&json!({"logs": [{
                    "vertex": digest,
                    "stream": match stream { Stream::Stdout => 1, Stream::Stderr => 2 },
                    "data": base64::engine::general_purpose::STANDARD.encode(data),
                    "timestamp": now,
                }]}));
                return;
            }
            EventKind::Completed { .. } => {
                v["started"] = json!(started.unwrap_or_else(|| now.clone()));
                v["completed"] = json!(now);
            }
            EventKind::Failed { message } => {
                if let Some(st) = started {
                    v["started"] = json!(st);
                }
                v["completed"] = json!(now);
                v["error"] = json!(message);
            }
            EventKind::Cancelled => {
                if let Some(st) = started {
                    v["started"] = json!(st);
                }
                v["completed"] = json!(now);
                v["error"] = json!("context canceled");
            }
        }
        Self::emit(&json!({"vertexes": [v]}));
    }

    fn pseudo(&self, key: &str, name: &str) -> (String, String) {
        let Ok(mut s) = self.state.lock() else {
            return (pseudo_digest(key), timestamp());
        };
        if let Some(p) = s.pseudo.get(key) {
            return p.clone();
        }
        let p = (pseudo_digest(key), timestamp());
        s.pseudo.insert(key.to_owned(), p.clone());
        Self::emit(&json!({"vertexes": [{"digest": p.0, "name": name, "started": p.1}]}));
        p
    }

    /// A step that is not a node: started, or completed.
    pub fn task(&self, id: u32, name: &str, done: bool, error: Option<&str>) {
        let key = format!("kiln task {id} {name}");
        let (digest, started) = self.pseudo(&key, name);
        if done {
            let mut v = json!({"digest": digest, "name": name, "started": started, "completed": timestamp()});
            if let Some(e) = error {
                v["error"] = json!(e);
            }
            Self::emit(&json!({"vertexes": [v]}));
        }
    }

    /// A line under a step that is not a node.
    pub fn task_log(&self, id: u32, name: &str, text: &str) {
        let key = format!("kiln task {id} {name}");
        let (digest, _) = self.pseudo(&key, name);
        Self::emit(&json!({"logs": [{
            "vertex": digest,
            "stream": 1,
            "data": base64::engine::general_purpose::STANDARD.encode(format!("{text}\n")),
            "timestamp": timestamp(),
        }]}));
    }

    /// A registry or output line, as a log of a vertex of its own.
    pub fn message(&self, text: &str) {
        self.task_log(0, "[internal] registries and outputs", text);
    }

    /// Byte progress of a blob, as a vertex status.
    pub fn transfer(&self, t: &Transfer, total: u64) {
        let (vertex, _) = self.pseudo(
            "kiln task 0 [internal] registries and outputs",
            "[internal] registries and outputs",
        );
        let id = t.digest.to_string();
        let now = timestamp();
        let started = match self.state.lock() {
            Ok(mut s) => {
                if t.state == TransferState::Started {
                    s.transfers.insert(id.clone(), now.clone());
                }
                s.transfers.get(&id).cloned().unwrap_or_else(|| now.clone())
            }
            Err(_) => now.clone(),
        };
        let mut st = json!({
            "id": id,
            "vertex": vertex,
            "name": t.direction.as_str(),
            "current": t.current,
            "timestamp": now,
            "started": started,
        });
        if total > 0 {
            st["total"] = json!(total);
        }
        if t.state == TransferState::Finished {
            st["completed"] = json!(now);
        }
        Self::emit(&json!({"statuses": [st]}));
    }

    /// A warning.
    pub fn warning(&self, d: &kiln_frontend::Diagnostic) {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut w = json!({"level": 1, "short": b64(&d.message)});
        if let Some(u) = d.url {
            w["url"] = json!(u);
        }
        if let Some(r) = d.rule {
            w["detail"] = json!([b64(r)]);
        }
        if let Some(l) = &d.location {
            w["sourceInfo"] = json!({"filename": d.file});
            w["range"] = json!([{"start": {"line": l.line}, "end": {"line": l.end_line}}]);
        }
        Self::emit(&json!({"warnings": [w]}));
    }
}

/// A time as the live view shows it: `12.9s`.
pub fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[derive(Debug)]
struct Running {
    bar: ProgressBar,
    logs: ProgressBar,
    start: Instant,
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

#[derive(Debug, Default)]
struct TtyState {
    /// Steps that had an event (those the build needs: a step whose result
    /// a later cache hit makes unnecessary is never counted).
    seen: std::collections::HashSet<u32>,
    running: HashMap<u32, Running>,
    transfers: HashMap<String, ProgressBar>,
    total: usize,
    cached: usize,
    finished: usize,
}

/// `--progress=tty`.
#[derive(Debug)]
pub struct Tty {
    multi: MultiProgress,
    header: ProgressBar,
    start: Instant,
    color: bool,
    state: Mutex<TtyState>,
    ended: std::sync::atomic::AtomicBool,
    /// The terminal's settings before the view turned its echo off.
    saved_termios: Mutex<Option<nix::sys::termios::Termios>>,
}

/// Turns off the echo of the terminal on stdin while the live view runs:
/// typed characters, and the `^C` a Ctrl-C echoes, would land inside the
/// live area, which then could no longer erase itself (a stale line stays).
/// Ctrl-C still interrupts (the terminal's signals stay on). `None` when
/// stdin is not a terminal.
fn quiet_terminal() -> Option<nix::sys::termios::Termios> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    if !std::io::IsTerminal::is_terminal(&stdin) {
        return None;
    }
    let saved = tcgetattr(&stdin).ok()?;
    let mut t = saved.clone();
    t.local_flags
        .remove(LocalFlags::ECHO | LocalFlags::ECHOCTL | LocalFlags::ECHONL);
    tcsetattr(&stdin, SetArg::TCSANOW, &t).ok()?;
    Some(saved)
}

fn restore_terminal(saved: &Mutex<Option<nix::sys::termios::Termios>>) {
    if let Ok(mut s) = saved.lock()
        && let Some(t) = s.take()
    {
        let _ =
            nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &t);
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        restore_terminal(&self.saved_termios);
    }
}

fn paint(color: bool, code: &str, s: &str) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

/// Columns of the terminal on stderr.
fn width() -> usize {
    let (_, cols) = console::Term::stderr().size();
    if cols == 0 { 80 } else { usize::from(cols) }
}

/// `s` cut to the terminal's width (escape sequences kept whole).
fn fit(s: &str) -> String {
    console::truncate_str(s, width().saturating_sub(1), "…").into_owned()
}

/// `head name tail` on one line: the name is cut so that the whole fits
/// the terminal's width and the tail (a time) stays visible.
fn fit_name(head: &str, name: &str, tail: &str) -> String {
    let room = width()
        .saturating_sub(1)
        .saturating_sub(console::measure_text_width(head))
        .saturating_sub(console::measure_text_width(tail))
        .max(8);
    format!("{head}{}{tail}", console::truncate_str(name, room, "…"))
}

fn seconds_key(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{}", secs(state.elapsed()));
}

impl Tty {
    /// Live byte bars only, for `kiln pull` and `kiln push` on a terminal:
    /// no header, no summary ([`Tty::close`] erases what is left).
    pub fn transfers_only() -> Tty {
        let t = Tty::new();
        t.header.finish_and_clear();
        t.multi.remove(&t.header);
        t
    }

    /// A line as it is (`kiln pull`'s own lines), above the live area.
    pub fn plain_line(&self, text: &str) {
        self.above(text);
    }

    /// Erases the live area and gives the terminal back, printing nothing.
    pub fn close(&self) {
        if self.ended.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        restore_terminal(&self.saved_termios);
        if let Ok(mut s) = self.state.lock() {
            for (_, b) in s.transfers.drain() {
                b.finish_and_clear();
                self.multi.remove(&b);
            }
        }
        let _ = self.multi.clear();
    }

    /// A live view on stderr.
    pub fn new() -> Tty {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let header = multi.add(ProgressBar::new_spinner());
        // No line of the live area fills the last column: the terminal's
        // echo of ^C would wrap it, and the area would no longer be where
        // indicatif erases it (a stale line after Ctrl-C).
        header.set_style(
            ProgressStyle::with_template("[+] Building {secs} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner())
                .with_key("secs", seconds_key),
        );
        header.enable_steady_tick(Duration::from_millis(100));
        let t = Tty {
            multi,
            header,
            start: Instant::now(),
            color,
            state: Mutex::new(TtyState::default()),
            ended: std::sync::atomic::AtomicBool::new(false),
            saved_termios: Mutex::new(quiet_terminal()),
        };
        t.update_header(&TtyState::default());
        t
    }

    fn update_header(&self, s: &TtyState) {
        self.header
            .set_message(format!("({}/{})", s.finished, s.total));
    }

    fn line(&self, text: &str) {
        self.above(&fit(text));
    }

    /// `text` above the live area, which indicatif erases first and draws
    /// again below (also when no bar is left: `println` would keep the line
    /// in the live area, and what is printed next would join it). Out of
    /// the live area a long line may wrap.
    fn above(&self, text: &str) {
        self.multi.suspend(|| {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        });
    }

    fn start(&self, s: &mut TtyState, id: u32, name: &str) {
        if s.running.contains_key(&id) {
            return;
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template(" => {msg} {secs:>7}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner())
                .with_key("secs", seconds_key),
        );
        // The name padded (or cut) so that the time ends one column short
        // of the right edge.
        let room = width().saturating_sub(1 + 4 + 8).max(8);
        let shown = console::truncate_str(name, room, "…");
        bar.set_message(
            console::pad_str(&shown, room, console::Alignment::Left, None).into_owned(),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        let logs = self.multi.insert_after(&bar, ProgressBar::new_spinner());
        logs.set_style(
            ProgressStyle::with_template("{msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        s.running.insert(
            id,
            Running {
                bar,
                logs,
                start: Instant::now(),
                lines: VecDeque::new(),
                partial: Vec::new(),
            },
        );
    }

    fn finish(&self, s: &mut TtyState, id: u32, text: String) {
        if let Some(r) = s.running.remove(&id) {
            r.bar.finish_and_clear();
            r.logs.finish_and_clear();
            self.multi.remove(&r.bar);
            self.multi.remove(&r.logs);
        }
        s.finished += 1;
        self.update_header(s);
        self.line(&text);
    }

    /// One event of step `id` called `name`.
    pub fn event(&self, id: u32, name: &str, ev: &StepEvent<'_>) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let s = &mut *s;
        if s.seen.insert(id) {
            s.total += 1;
            self.update_header(s);
        }
        match ev {
            StepEvent::Started => self.start(s, id, name),
            StepEvent::Cached => {
                s.cached += 1;
                let head = format!(" => {} ", paint(self.color, "34", "CACHED"));
                self.finish(s, id, fit_name(&head, name, ""));
            }
            StepEvent::Log { data, .. } => {
                self.start(s, id, name);
                if let Some(r) = s.running.get_mut(&id) {
                    r.partial.extend_from_slice(data);
                    while let Some(nl) = r.partial.iter().position(|&b| b == b'\n') {
                        let raw: Vec<u8> = r.partial.drain(..=nl).collect();
                        let text = String::from_utf8_lossy(&raw[..raw.len() - 1])
                            .trim_end_matches('\r')
                            .replace(|c: char| c.is_control(), " ");
                        r.lines.push_back(format!(
                            "    {:.1} {text}",
                            r.start.elapsed().as_secs_f64()
                        ));
                        if r.lines.len() > LIVE_LINES {
                            r.lines.pop_front();
                        }
                    }
                    let msg: Vec<String> = r
                        .lines
                        .iter()
                        .map(|l| paint(self.color, "2", &fit(l)))
                        .collect();
                    r.logs.set_message(msg.join("\n"));
                }
            }
            StepEvent::Done(elapsed) => {
                let tail = format!(" {}", paint(self.color, "32", &secs(*elapsed)));
                self.finish(s, id, fit_name(" => ", name, &tail));
            }
            StepEvent::Failed(message) => {
                let head = format!(" => {} ", paint(self.color, "31", "ERROR"));
                let text = fit_name(&head, name, "");
                // The message on a line of its own: it is what matters.
                self.finish(s, id, text);
                self.line(&format!("    {}", paint(self.color, "31", message)));
            }
            StepEvent::Canceled => {
                let head = format!(" => {} ", paint(self.color, "33", "CANCELED"));
                self.finish(s, id, fit_name(&head, name, ""));
            }
        }
    }

    /// A registry or output line, above the live area.
    pub fn message(&self, text: &str) {
        if self.ended.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        self.line(&format!(" => {}", paint(self.color, "2", text)));
    }

    /// A live byte bar per moving blob.
    pub fn transfer(&self, t: &Transfer) {
        if self.ended.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let key = format!("{} {}", t.direction.as_str(), t.digest);
        let verb = match t.direction {
            kiln_registry::Direction::Download => "downloading",
            kiln_registry::Direction::Upload => "uploading",
            kiln_registry::Direction::Write => "writing",
        };
        match t.state {
            TransferState::Started | TransferState::Moving => {
                let bar = s.transfers.entry(key).or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new(t.total));
                    let msg = format!("{verb} {}", short_digest(&t.digest.to_string()));
                    // ` => MSG [BAR] CUR/TOTAL RATE`, one column short of
                    // the edge; the bar takes what is left, if anything.
                    let fixed = 4 + msg.chars().count() + 1 + 21 + 1 + 11;
                    let room = width().saturating_sub(1 + fixed);
                    let template = match (t.total > 0, room >= 8) {
                        (true, true) => format!(
                            " => {{msg}} {{bar:{}}} {{decimal_bytes:>9}}/{{decimal_total_bytes:<9}} {{decimal_bytes_per_sec:>11}}",
                            room - 1
                        ),
                        (true, false) => " => {msg} {decimal_bytes:>9}/{decimal_total_bytes:<9} {decimal_bytes_per_sec:>11}".to_owned(),
                        (false, _) => " => {msg} {decimal_bytes:>9} {decimal_bytes_per_sec:>11}".to_owned(),
                    };
                    bar.set_style(
                        ProgressStyle::with_template(&template)
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("━╸ "),
                    );
                    bar.set_message(msg);
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                if t.state == TransferState::Started {
                    bar.reset();
                }
                bar.set_position(t.current);
            }
            TransferState::Finished => {
                if let Some(bar) = s.transfers.remove(&key) {
                    let took = bar.elapsed();
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                    let tail = format!(" {}", paint(self.color, "32", &secs(took)));
                    self.line(&fit_name(
                        " => ",
                        &format!(
                            "{verb} {} {}",
                            short_digest(&t.digest.to_string()),
                            crate::units::human_size(t.current)
                        ),
                        &tail,
                    ));
                }
            }
        }
    }

    /// A finished step that is not a vertex (`exporting to image`).
    pub fn task_done(&self, name: &str, detail: &str, elapsed: Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.total += 1;
            let tail = format!(" {}", paint(self.color, "32", &secs(elapsed)));
            self.finish(
                &mut s,
                u32::MAX,
                fit_name(" => ", &format!("{name}: {detail}"), &tail),
            );
        }
    }

    /// Ends the live view: clears every live line and prints the summary
    /// (`outcome`: empty when the build finished, else `ERROR` or
    /// `CANCELED`), so nothing is left behind on the terminal.
    pub fn finish_all(&self, outcome: &str) {
        if self.ended.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        restore_terminal(&self.saved_termios);
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        for (_, r) in s.running.drain() {
            r.bar.finish_and_clear();
            r.logs.finish_and_clear();
            self.multi.remove(&r.bar);
            self.multi.remove(&r.logs);
        }
        for (_, b) in s.transfers.drain() {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
        self.header.finish_and_clear();
        self.multi.remove(&self.header);
        let _ = self.multi.clear();
        let mut err = std::io::stderr().lock();
        let word = if outcome.is_empty() {
            "FINISHED"
        } else {
            outcome
        };
        let _ = writeln!(
            err,
            "[+] Building {} ({}/{}) {word}, {} cached",
            secs(self.start.elapsed()),
            s.finished,
            s.total,
            s.cached
        );
    }
}
