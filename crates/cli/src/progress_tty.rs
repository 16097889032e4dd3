//! The two other faces of build progress ([`crate::progress`] keeps the
//! plain one):
//!
//! * `--progress=tty` (the default when stderr is a terminal): a live view in
//!   the style of BuildKit's, drawn with indicatif — one line per running
//!   step with its elapsed time and, under a running RUN step, its last
//!   output lines; finished steps scroll up as `=> [2/3] RUN make  1.2s` or
//!   `=> CACHED [1/3] FROM …`; at the end a summary (total time, steps, cache
//!   hits). Colour only without `NO_COLOR`.
//! * `--progress=json`: one JSON object per line on stderr, for CI tooling:
//!   `{"time":"<RFC 3339>","vertex":N,"name":"[2/3] RUN make","status":S}`
//!   with `status` one of `started`, `cached`, `log` (plus `"stream"`:
//!   `stdout`|`stderr` and `"data"`: the text), `done` (plus `"duration"`:
//!   seconds), `error` (plus `"error"`: the message), `canceled`.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_solver::{EventKind, Stream};
use serde_json::json;

/// Output lines shown under a running step.
const LIVE_LINES: usize = 6;

fn timestamp() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    kiln_oci::rfc3339(
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
    .unwrap_or_default()
}

/// `--progress=json`.
#[derive(Debug, Default)]
pub struct Json {
    lock: Mutex<()>,
}

impl Json {
    fn emit(&self, mut v: serde_json::Value) {
        v["time"] = json!(timestamp());
        let _g = self.lock.lock();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{v}");
    }

    /// One solver event of vertex `id` called `name`.
    pub fn event(&self, id: u32, name: &str, kind: &EventKind) {
        let base = json!({"vertex": id, "name": name});
        let with = |status: &str, extra: serde_json::Value| {
            let mut v = base.clone();
            v["status"] = json!(status);
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                for (k, x) in e {
                    o.insert(k.clone(), x.clone());
                }
            }
            v
        };
        self.emit(match kind {
            EventKind::Started => with("started", json!({})),
            EventKind::Cached => with("cached", json!({})),
            EventKind::Log { stream, data } => with(
                "log",
                json!({
                    "stream": match stream { Stream::Stdout => "stdout", Stream::Stderr => "stderr" },
                    "data": String::from_utf8_lossy(data),
                }),
            ),
            EventKind::Completed { elapsed } => {
                with("done", json!({"duration": elapsed.as_secs_f64()}))
            }
            EventKind::Failed { message } => with("error", json!({"error": message})),
            EventKind::Cancelled => with("canceled", json!({})),
        });
    }

    /// A step that is not a vertex (exporting): started, a log line, done.
    pub fn task(&self, id: u32, name: &str, status: &str, extra: Option<(&str, String)>) {
        let mut v = json!({"vertex": id, "name": name, "status": status});
        if let Some((k, x)) = extra {
            v[k] = json!(x);
        }
        self.emit(v);
    }
}

#[derive(Debug)]
struct Running {
    bar: ProgressBar,
    start: Instant,
    lines: VecDeque<String>,
    partial: Vec<u8>,
}

#[derive(Debug, Default)]
struct TtyState {
    running: HashMap<u32, Running>,
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
}

fn paint(color: bool, code: &str, s: &str) -> String {
    if color {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

impl Tty {
    /// A live view on stderr for a build of `steps` vertices.
    pub fn new(steps: usize) -> Tty {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("[+] Building {elapsed_precise} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        header.enable_steady_tick(Duration::from_millis(100));
        let t = Tty {
            multi,
            header,
            start: Instant::now(),
            color,
            state: Mutex::new(TtyState {
                total: steps,
                ..TtyState::default()
            }),
            ended: std::sync::atomic::AtomicBool::new(false),
        };
        t.update_header(&TtyState {
            total: steps,
            ..TtyState::default()
        });
        t
    }

    fn update_header(&self, s: &TtyState) {
        self.header
            .set_message(format!("({}/{})", s.finished, s.total));
    }

    fn line(&self, text: &str) {
        // Printed above the live area; indicatif redraws it below.
        let _ = self.multi.println(text);
    }

    fn start(&self, s: &mut TtyState, id: u32, name: &str) {
        if s.running.contains_key(&id) {
            return;
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template(" => {prefix} {elapsed:>4}\n{wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        s.running.insert(
            id,
            Running {
                bar,
                start: Instant::now(),
                lines: VecDeque::new(),
                partial: Vec::new(),
            },
        );
    }

    fn finish(&self, s: &mut TtyState, id: u32, text: String) {
        if let Some(r) = s.running.remove(&id) {
            r.bar.finish_and_clear();
            self.multi.remove(&r.bar);
        }
        s.finished += 1;
        self.update_header(s);
        self.line(&text);
    }

    /// One solver event of vertex `id` called `name`.
    pub fn event(&self, id: u32, name: &str, kind: &EventKind) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        let s = &mut *s;
        match kind {
            EventKind::Started => self.start(s, id, name),
            EventKind::Cached => {
                s.cached += 1;
                let text = format!(" => {} {name}", paint(self.color, "34", "CACHED"));
                self.finish(s, id, text);
            }
            EventKind::Log { data, .. } => {
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
                    let msg: Vec<String> =
                        r.lines.iter().map(|l| paint(self.color, "2", l)).collect();
                    r.bar.set_message(msg.join("\n"));
                }
            }
            EventKind::Completed { elapsed } => {
                let text = format!(
                    " => {name} {}",
                    paint(self.color, "32", &format!("{:.1}s", elapsed.as_secs_f64()))
                );
                self.finish(s, id, text);
            }
            EventKind::Failed { message } => {
                let text = format!(" => {} {name}: {message}", paint(self.color, "31", "ERROR"));
                self.finish(s, id, text);
            }
            EventKind::Cancelled => {
                let text = format!(" => {} {name}", paint(self.color, "33", "CANCELED"));
                self.finish(s, id, text);
            }
        }
    }

    /// A finished step that is not a vertex (`exporting to image`).
    pub fn task_done(&self, name: &str, detail: &str, elapsed: Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.total += 1;
            let text = format!(
                " => {name}: {detail} {}",
                paint(self.color, "32", &format!("{:.1}s", elapsed.as_secs_f64()))
            );
            self.finish(&mut s, u32::MAX, text);
        }
    }

    /// Ends the live view: clears every live line and prints the summary, so
    /// nothing is left behind on the terminal.
    pub fn finish_all(&self) {
        if self.ended.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        for (_, r) in s.running.drain() {
            r.bar.finish_and_clear();
            self.multi.remove(&r.bar);
        }
        self.header.finish_and_clear();
        let _ = self.multi.clear();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "[+] Building {:.1}s ({}/{}) FINISHED, {} cached",
            self.start.elapsed().as_secs_f64(),
            s.finished,
            s.total,
            s.cached
        );
    }
}
