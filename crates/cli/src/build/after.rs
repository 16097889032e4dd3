//! What a build says and does once its progress is done: notes, the
//! `--explain` list, the automatic garbage collection.

use std::io::Write as _;

use kiln_worker::State;

use crate::progress::Mode;
use crate::store::env_var;

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
pub(super) fn gc_after_build(state: &State, mode: Mode) {
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
pub(super) fn print_explanations(mode: Mode, explanations: &[(String, String)]) {
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
