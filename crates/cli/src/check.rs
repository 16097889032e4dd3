//! `kiln check`: the store's consistency, for people and for crash tests.

use std::io::Write as _;
use std::path::Path;

use clap::Args;
use kiln_worker::lock::LockKind;

use crate::Failure;
use crate::images::{lock, open};

/// `kiln check`.
#[derive(Debug, Args)]
#[command(
    long_about = "Verify the state directory: re-hash every blob, read every snapshot's \
metadata, follow every image name and record, layer-blob record and build cache entry to what it \
refers to (every layer of every image needs a blob in the store, or a built snapshot to make one \
from, and a name's manifest all its blobs: what a name reaches can always be saved and pushed), \
and look for mounts and processes left under the state directory by a kiln that was \
killed.\n\nPrints each problem; exits 0 when there is none (or all were repaired), 1 otherwise. \
With --repair, removes what is broken (a corrupt blob, a snapshot without metadata, records and \
cache entries that point at nothing; later builds recompute them), makes a lost layer blob again \
when kiln's tar of its snapshot is the layer, unmounts leftover mounts and kills leftover \
processes, then checks again: \"the store is consistent\" is printed only when that fresh check finds \
nothing. Named images are never removed: what cannot be repaired names the `kiln rmi` (or `kiln \
pull`) that would.\n\nA check takes the store lock shared (builds may run meanwhile); --repair takes it \
exclusively, waiting for running builds."
)]
pub struct CheckArgs {
    /// Repair what can be repaired.
    #[arg(long)]
    pub repair: bool,
}

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
