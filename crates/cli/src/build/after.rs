//! What a build says and does once its progress is done: notes, the
//! `--report` picture, the `--explain` list, the automatic garbage
//! collection, the lint warnings and the JSON `finished` event.

use std::io::Write as _;
use std::time::Duration;

use kiln_worker::State;

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::progress::{Mode, Progress};
use crate::records::Record;
use crate::store::env_var;

use super::record::Found;

/// A line the build says after its progress (warnings about records,
/// garbage collection): a `message` event in JSON, else text on stderr.
pub(super) fn note(mode: Mode, text: &str) {
    match mode {
        Mode::Json => {
            crate::progress::emit_json(serde_json::json!({"status": "message", "message": text}))
        }
        Mode::RawJson => {}
        _ => crate::progress::say(text),
    }
}

/// The automatic garbage collection (see [`crate::prune::auto_gc`]);
/// `KILN_GC_KEEP_STORAGE` sets its limit (a size) or turns it off (`off`).
fn gc_after_build(state: &State, mode: Mode) {
    let limit = match env_var("KILN_GC_KEEP_STORAGE").as_deref() {
        Some("off") => return,
        Some(s) => match crate::units::parse_size(s) {
            Some(n) => Some(n),
            None => {
                note(
                    mode,
                    &format!(
                        "warning: KILN_GC_KEEP_STORAGE={s:?} is not a size (10GB, 512MB) or off: no automatic garbage collection"
                    ),
                );
                return;
            }
        },
        None => None,
    };
    if let Some(msg) = crate::prune::auto_gc(state, limit)
        && mode != Mode::Quiet
    {
        note(mode, &msg);
    }
}

/// `--explain`: why each step that ran did (JSON: one `explain` event each).
fn print_explanations(mode: Mode, explanations: &[(String, String)]) {
    let mut sorted: Vec<&(String, String)> = explanations.iter().collect();
    sorted.sort();
    if mode == Mode::Json {
        for (step, why) in sorted {
            crate::progress::emit_json(
                serde_json::json!({"status": "explain", "name": step, "reason": why}),
            );
        }
        return;
    }
    let mut err = std::io::stderr().lock();
    if explanations.is_empty() {
        let _ = writeln!(err, "\nEvery step was cached.");
        return;
    }
    let _ = writeln!(err, "\nWhy steps ran:");
    for (step, why) in sorted {
        let _ = writeln!(err, " - {step}: {why}");
    }
}

/// What follows the record: `--report` (whose failure fails a build that
/// succeeded, and is a warning after one that failed), `--explain`, and
/// the automatic garbage collection after a build that succeeded.
pub(super) fn aftermath(
    args: &BuildArgs,
    state: &State,
    mode: Mode,
    found: &Found,
    record: &Record,
    result: Result<(), Failure>,
) -> Result<(), Failure> {
    let mut result = result;
    if let Some(path) = &args.report {
        match crate::builds::write_report(record, path) {
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
        gc_after_build(state, mode);
    }
    result
}

/// The last words: the lint warnings, summed up after the build as buildx
/// does, and in JSON the `finished` event of a build that succeeded.
pub(super) fn summary(
    mode: Mode,
    progress: &Progress,
    found: &Found,
    record: &Record,
    took: Duration,
    succeeded: bool,
) {
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
    if mode == Mode::Json && succeeded {
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
}
