//! Build progress on the terminal: `--progress=plain` prints BuildKit-style
//! lines (`#5 [build 2/4] RUN make`, output lines with their time offset,
//! `#5 CACHED`, `#5 DONE 1.2s`), `quiet` prints nothing. Events come from
//! solver worker threads, so the printer is behind a mutex; each event is one
//! short write.
//!
//! On GitHub Actions (`GITHUB_ACTIONS=true`, [`Progress::github_groups`])
//! plain output is folded: the lines of each step are wrapped in
//! `::group::#<id> <step>` / `::endgroup::`. Steps that run in parallel
//! interleave, so a step's group is closed when another step prints and
//! opened again (same title) when it prints next; the log shows each run of
//! lines under its step's name.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use kiln_solver::{Event, EventKind, Stream};

/// How many output lines of a step are kept for the error report.
const TAIL_LINES: usize = 20;

/// `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Quiet,
    /// The live view (`crate::progress_tty::Tty`).
    Tty,
    /// JSON lines (`crate::progress_tty::Json`).
    Json,
}

#[derive(Debug)]
struct Step {
    id: u32,
    start: Instant,
    /// Bytes of an unfinished output line, per stream.
    partial: [Vec<u8>; 2],
    tail: VecDeque<String>,
}

#[derive(Debug)]
struct State {
    next_id: u32,
    steps: HashMap<usize, Step>,
    /// The last step a line was printed for (a blank line separates steps).
    last: Option<u32>,
    /// Step names by display id (group titles).
    titles: HashMap<u32, String>,
}

/// The progress printer of one build.
#[derive(Debug)]
pub struct Progress {
    mode: Mode,
    names: Vec<String>,
    state: Mutex<State>,
    tty: Option<crate::progress_tty::Tty>,
    json: Option<crate::progress_tty::Json>,
    /// GitHub Actions log groups around each step's lines (plain mode).
    github: bool,
}

fn stream_index(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Progress {
    /// A printer for a graph whose node `i` is called `names[i]`.
    pub fn new(mode: Mode, names: Vec<String>) -> Progress {
        // Names carry build arguments (RUN's are expanded, as in BuildKit):
        // control characters other than newline and tab are shown escaped,
        // never sent to the terminal. JSON escapes them itself.
        let names = if mode == Mode::Json {
            names
        } else {
            names.into_iter().map(|n| printable(&n)).collect()
        };
        Progress {
            mode,
            tty: (mode == Mode::Tty).then(|| crate::progress_tty::Tty::new(names.len())),
            json: (mode == Mode::Json).then(crate::progress_tty::Json::default),
            names,
            state: Mutex::new(State {
                next_id: 1,
                steps: HashMap::new(),
                last: None,
                titles: HashMap::new(),
            }),
            github: false,
        }
    }

    /// Wraps each step's plain lines in GitHub Actions log groups.
    pub fn github_groups(mut self, on: bool) -> Progress {
        self.github = on;
        self
    }

    /// Ends the display (the live view clears itself and prints a summary;
    /// an open GitHub Actions group is closed).
    pub fn finish(&self) {
        if let Some(t) = &self.tty {
            t.finish_all();
        }
        if self.github
            && self.mode == Mode::Plain
            && let Ok(mut state) = self.state.lock()
            && state.last.take().is_some()
        {
            let _ = writeln!(std::io::stderr().lock(), "::endgroup::");
        }
    }

    fn write(&self, state: &mut State, id: u32, line: &str) {
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
            if state.last != Some(id) {
                if state.last.is_some() {
                    let _ = writeln!(err, "::endgroup::");
                }
                let _ = writeln!(err, "::group::#{id} {}", escape_workflow_command(&title));
            }
        } else if state.last.is_some() && state.last != Some(id) {
            let _ = writeln!(err);
        }
        state.last = Some(id);
        let _ = writeln!(err, "#{id} {line}");
    }

    fn step<'s>(&self, state: &'s mut State, node: usize) -> (&'s mut Step, bool) {
        let mut fresh = false;
        let next = &mut state.next_id;
        let step = state.steps.entry(node).or_insert_with(|| {
            fresh = true;
            let id = *next;
            *next += 1;
            Step {
                id,
                start: Instant::now(),
                partial: [Vec::new(), Vec::new()],
                tail: VecDeque::new(),
            }
        });
        (step, fresh)
    }

    fn name(&self, node: usize) -> &str {
        self.names.get(node).map_or("?", String::as_str)
    }

    /// Shows one solver event.
    pub fn event(&self, e: Event) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let state = &mut *state;
        let (step, fresh) = self.step(state, e.node);
        let id = step.id;
        if let Some(t) = &self.tty {
            t.event(id, self.name(e.node), &e.kind);
        }
        if let Some(j) = &self.json {
            j.event(id, self.name(e.node), &e.kind);
        }
        let mut lines: Vec<String> = Vec::new();
        if fresh {
            lines.push(self.name(e.node).to_owned());
        }
        match e.kind {
            EventKind::Started => {
                step.start = Instant::now();
            }
            EventKind::Cached => lines.push("CACHED".to_owned()),
            EventKind::Log { stream, data } => {
                let elapsed = step.start.elapsed().as_secs_f64();
                let buf = &mut step.partial[stream_index(stream)];
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let raw: Vec<u8> = buf.drain(..=nl).collect();
                    let text = String::from_utf8_lossy(&raw[..raw.len() - 1])
                        .trim_end_matches('\r')
                        .to_owned();
                    step.tail.push_back(text.clone());
                    if step.tail.len() > TAIL_LINES {
                        step.tail.pop_front();
                    }
                    lines.push(format!("{elapsed:.3} {text}"));
                }
            }
            EventKind::Completed { elapsed } => {
                lines.extend(flush_partial(step));
                lines.push(format!("DONE {:.1}s", elapsed.as_secs_f64()));
            }
            EventKind::Failed { message } => {
                lines.extend(flush_partial(step));
                lines.push(format!("ERROR: {message}"));
            }
            EventKind::Cancelled => {
                lines.extend(flush_partial(step));
                lines.push("CANCELED".to_owned());
            }
        }
        for l in lines {
            self.write(state, id, &l);
        }
    }

    /// The last output lines of node `node` (for the error report).
    pub fn tail(&self, node: usize) -> Vec<String> {
        match self.state.lock() {
            Ok(state) => state
                .steps
                .get(&node)
                .map(|s| s.tail.iter().cloned().collect())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// A step that is not a graph vertex (exporting, naming): prints its name
    /// and returns a handle whose `done` prints the time it took.
    pub fn task(&self, name: &str) -> Task<'_> {
        let id = match self.state.lock() {
            Ok(mut state) => {
                let id = state.next_id;
                state.next_id += 1;
                self.write(&mut state, id, name);
                id
            }
            Err(_) => 0,
        };
        if let Some(j) = &self.json {
            j.task(id, name, "started", None);
        }
        Task {
            progress: self,
            id,
            start: Instant::now(),
            name: name.to_owned(),
            last: std::cell::RefCell::new(String::new()),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
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
    let elapsed = step.start.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for buf in &mut step.partial {
        if !buf.is_empty() {
            let text = String::from_utf8_lossy(buf).into_owned();
            buf.clear();
            step.tail.push_back(text.clone());
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
        let line = format!("DONE {:.1}s", elapsed.as_secs_f64());
        if let Ok(mut state) = self.progress.state.lock() {
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
mod printable_tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::printable("RUN echo a"), "RUN echo a");
        assert_eq!(
            super::printable("RUN echo \u{1b}[31mred\u{1}\tx\ny"),
            "RUN echo \\x1b[31mred\\x01\tx\ny"
        );
        assert_eq!(super::printable("\u{9b}"), "\\x9b");
    }
}
