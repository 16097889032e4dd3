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
refers to, and look for mounts and processes left under the state directory by a kiln that was \
killed.\n\nPrints each problem; exits 0 when there is none (or all were repaired), 1 otherwise. \
With --repair, removes what is broken (a corrupt blob, a snapshot without metadata, records and \
cache entries that point at nothing; later builds recompute them), unmounts leftover mounts and \
kills leftover processes. Named images are never removed: their problems name the `kiln rmi` to \
run.\n\nA check takes the store lock shared (builds may run meanwhile); --repair takes it \
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
    let report = kiln_worker::check::check(&state, args.repair)
        .map_err(|e| Failure::Other(anyhow::Error::new(e)))?;
    let mut out = String::new();
    out.push_str(&format!(
        "checked {} blobs, {} snapshots, {} image names, {} layer records, {} cache entries\n",
        report.blobs, report.layers, report.images, report.layer_records, report.cache_entries
    ));
    for p in &report.problems {
        match &p.repaired {
            Some(done) => out.push_str(&format!("repaired: {}: {done}\n", p.what)),
            None => out.push_str(&format!("problem: {}\n", p.what)),
        }
    }
    let unresolved = report.unresolved();
    if report.problems.is_empty() {
        out.push_str("the store is consistent\n");
    } else if unresolved == 0 {
        out.push_str(&format!(
            "repaired {} problems; the store is consistent\n",
            report.problems.len()
        ));
    } else if args.repair {
        out.push_str(&format!("{unresolved} problems remain\n"));
    } else {
        out.push_str(&format!(
            "{unresolved} problems (kiln check --repair fixes what it can)\n"
        ));
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .map_err(|e| Failure::Other(e.into()))?;
    if unresolved > 0 {
        return Err(Failure::Status(1));
    }
    Ok(())
}
