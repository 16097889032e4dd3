//! `kiln check`: the store's consistency, for people and for crash tests.

use std::io::Write as _;
use std::path::Path;

use kiln_worker::lock::LockKind;

use crate::args::CheckArgs;
use crate::failure::Failure;
use crate::store::{lock, open};

/// `kiln check`.
pub fn check(root: Option<&Path>, args: &CheckArgs) -> Result<(), Failure> {
    let state = open(root)?;
    let kind = if args.repair {
        LockKind::Exclusive
    } else {
        LockKind::Shared
    };
    let _lock = lock(&state, kind)?;
    let fail = |e| Failure::Other(anyhow::Error::new(e));
    let report = kiln_worker::check::check(&state, args.repair).map_err(fail)?;
    let mut out = String::new();
    out.push_str(&format!(
        "checked {} blobs, {} snapshots, {} image names, {} layer records, {} cache entries\n",
        report.blobs, report.layers, report.images, report.layer_records, report.cache_entries
    ));
    for p in &report.problems {
        match (&p.repaired, &p.unrepaired) {
            (Some(done), _) => out.push_str(&format!("repaired: {}: {done}\n", p.what)),
            (None, Some(why)) => {
                out.push_str(&format!("problem: {} (not repaired: {why})\n", p.what));
            }
            (None, None) => out.push_str(&format!("problem: {}\n", p.what)),
        }
    }
    // A repair is only believed when a fresh check (still under the lock)
    // agrees: what it finds then is what the repair did not fix.
    let after = if args.repair && !report.problems.is_empty() {
        let again = kiln_worker::check::check(&state, false).map_err(fail)?;
        for p in &again.problems {
            // Those the repair said it could not fix are listed already.
            if !report
                .problems
                .iter()
                .any(|q| q.repaired.is_none() && q.what == p.what)
            {
                out.push_str(&format!("still: {}\n", p.what));
            }
        }
        again.problems.len()
    } else {
        report.unresolved()
    };
    if report.problems.is_empty() {
        out.push_str("the store is consistent\n");
    } else if after == 0 {
        out.push_str(&format!(
            "repaired {} problems; the store is consistent\n",
            report.problems.len()
        ));
    } else if args.repair {
        out.push_str(&format!(
            "{after} problems remain (each names what would fix it)\n"
        ));
    } else {
        out.push_str(&format!(
            "{after} problems (kiln check --repair fixes what it can)\n"
        ));
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .map_err(|e| Failure::Other(e.into()))?;
    if after > 0 {
        return Err(Failure::Status(1));
    }
    Ok(())
}
