//! `kiln prune` and `kiln du` (like `docker image prune` + `docker builder
//! prune`, and `docker system df`).

use std::io::Write as _;
use std::path::Path;

use kiln_worker::gc::{self, PruneOptions};
use kiln_worker::lock::LockKind;

use crate::args::{DuArgs, PruneArgs};
use crate::failure::Failure;
use crate::store::{lock, open};
use crate::units::parse_size;
use crate::units::{human_size, now_secs, parse_time};

/// The automatic garbage collection after a build: at most once an hour
/// (the mtime of `<root>/gc-stamp`), only when no other kiln uses the store,
/// and only when the store holds more than `limit` bytes (default: 10% of
/// the filesystem of the state directory, at most 20 GiB), the store is
/// pruned as `kiln prune --keep-storage LIMIT` would. Returns what it did,
/// for the build to say; `None` when it did not run or freed nothing.
pub fn auto_gc(state: &kiln_worker::State, limit: Option<u64>) -> Option<String> {
    const HOUR: u64 = 3600;
    const MAX: u64 = 20 * 1024 * 1024 * 1024;
    let stamp = state.root.join("gc-stamp");
    let recent = std::fs::metadata(&stamp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|e| e.as_secs() < HOUR);
    if recent {
        return None;
    }
    let lock = kiln_worker::lock::try_lock(&state.root, LockKind::Exclusive).ok()??;
    let _ = std::fs::write(&stamp, b"");
    let limit = match limit {
        Some(l) => l,
        None => {
            let fs = nix::sys::statvfs::statvfs(&state.root).ok()?;
            let size = fs.blocks() as u64 * fs.fragment_size() as u64;
            (size / 10).min(MAX)
        }
    };
    // Under the limit: nothing is touched (not even dangling images).
    let base = gc::plan(state, PruneOptions::default()).ok()?;
    if base.remaining() <= limit {
        return None;
    }
    let plan = gc::fit(state, PruneOptions::default(), base, limit).ok()?;
    if plan.reclaimed() == 0 {
        return None;
    }
    gc::sweep(state, &plan).ok()?;
    drop(lock);
    Some(format!(
        "automatic garbage collection: kept the store under {}, removed {} cache entries, reclaimed {}",
        human_size(limit),
        plan.cache_entries.len(),
        human_size(plan.reclaimed())
    ))
}

/// A Go duration of h/m/s units (`24h`, `1h30m`, `90s`), in seconds.
fn go_duration(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match c {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        any = true;
    }
    (any && num.is_empty()).then_some(total as i64)
}

fn until(filters: &[String]) -> Result<Option<i64>, Failure> {
    let mut out = None;
    for f in filters {
        let Some(v) = f.strip_prefix("until=") else {
            return Err(Failure::Usage(format!(
                "invalid filter {f:?}: kiln prune supports until=DURATION|TIMESTAMP"
            )));
        };
        let t = if let Some(d) = go_duration(v) {
            now_secs() - d
        } else if let Ok(secs) = v.parse::<i64>() {
            secs
        } else if let Some(t) = parse_time(v) {
            t
        } else {
            return Err(Failure::Usage(format!(
                "invalid filter until={v:?}: expected a duration (24h) or a timestamp"
            )));
        };
        out = Some(t);
    }
    Ok(out)
}

fn fail(e: kiln_worker::Error) -> Failure {
    Failure::Other(anyhow::Error::new(e))
}

/// `kiln prune`.
pub fn prune(root: Option<&Path>, args: &PruneArgs) -> Result<(), Failure> {
    let keep_storage = match &args.keep_storage {
        None => None,
        Some(s) => Some(parse_size(s).ok_or_else(|| {
            Failure::Usage(format!(
                "invalid --keep-storage {s:?}: expected a size such as 10GB, 512MB or 1073741824"
            ))
        })?),
    };
    let opts = PruneOptions {
        all: args.all,
        until: until(&args.filters)?,
        keep_storage,
    };
    if !args.force {
        confirm(args)?;
    }
    let state = open(root)?;
    let _lock = lock(&state, LockKind::Exclusive)?;
    let plan = gc::plan(&state, opts).map_err(fail)?;
    gc::sweep(&state, &plan).map_err(fail)?;
    // Like `docker builder prune --all`, which deletes cache mounts too.
    let cache_mounts = if args.all {
        kiln_worker::ops::mounts::delete_cache_mounts(&state.root, opts.until).map_err(fail)?
    } else {
        Vec::new()
    };
    let mut out = String::new();
    if !plan.images.is_empty() {
        out.push_str("Deleted Images:\n");
        for id in &plan.images {
            out.push_str(&format!("deleted: {id}\n"));
        }
        out.push('\n');
    }
    if !plan.cache_entries.is_empty() {
        out.push_str("Deleted build cache objects:\n");
        for k in &plan.cache_entries {
            out.push_str(&format!("{}\n", k.to_hex()));
        }
        out.push('\n');
    }
    if !cache_mounts.is_empty() {
        out.push_str("Deleted cache mounts:\n");
        for m in &cache_mounts {
            if m.id.is_empty() {
                // Left by a creation that was interrupted.
                let name = m.dir.file_name().unwrap_or_default().to_string_lossy();
                out.push_str(&format!("(incomplete) {name}\n"));
            } else {
                out.push_str(&format!("{}\n", m.id));
            }
        }
        out.push('\n');
    }
    // With --all, the other caches go too: git fetches, what ADD <url>
    // downloads saw (ETags), and --explain's records.
    let mut other_size = 0;
    if args.all && opts.until.is_none() {
        let mut gone = Vec::new();
        for (dir, what) in [
            ("git", "git repositories (ADD and contexts from git)"),
            ("http", "download validators (ADD <url>)"),
            ("explain", "--explain records"),
        ] {
            let path = state.root.join(dir);
            if !path.exists() {
                continue;
            }
            other_size += kiln_worker::blobs::dir_size(&path);
            // Renamed first: a crash halfway leaves recognisable garbage,
            // never a half-deleted git repository in use.
            let doomed = state.root.join(format!(".deleted-{dir}"));
            let _ = std::fs::remove_dir_all(&doomed);
            std::fs::rename(&path, &doomed)
                .and_then(|()| std::fs::remove_dir_all(&doomed))
                .map_err(|e| Failure::Other(anyhow::anyhow!("removing {}: {e}", path.display())))?;
            gone.push(what);
        }
        if !gone.is_empty() {
            out.push_str("Deleted other caches:\n");
            for g in gone {
                out.push_str(&format!("{g}\n"));
            }
            out.push('\n');
        }
    }
    let mounts_size: u64 = cache_mounts.iter().map(|m| m.size).sum();
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(plan.reclaimed() + mounts_size + other_size)
    ));
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(())
}

/// Asks before pruning, as `docker image prune` does: the warning and
/// `[y/N]` on stdout, one line read from stdin, `y` (any case) goes on.
/// Anything else stops with exit status 1 and nothing removed; no answer at
/// all from a stdin that is not a terminal says how to prune without asking.
fn confirm(args: &PruneArgs) -> Result<(), Failure> {
    use std::io::{BufRead as _, IsTerminal as _};
    let mut text = String::from(
        "WARNING! This will remove:\n  - all dangling images\n  - unused data: blobs, layers and build cache entries that no image or cache entry uses\n",
    );
    if args.all {
        text.push_str("  - the whole build cache, the cache mounts, git fetches, ADD <url> validators and --explain records\n");
    }
    if let Some(k) = &args.keep_storage {
        text.push_str(&format!(
            "  - build cache entries, least recently used first, until the store holds at most {k}\n"
        ));
    }
    text.push_str("\nAre you sure you want to continue? [y/N] ");
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let mut answer = String::new();
    let read = stdin.lock().read_line(&mut answer).unwrap_or(0);
    if read == 0 {
        // Stdin at its end: no one answered.
        let _ = writeln!(std::io::stdout().lock());
        if !terminal {
            return Err(Failure::Other(anyhow::anyhow!(
                "prune needs a confirmation and standard input is not a terminal (it gave no answer): \
                 nothing was removed; use kiln prune -f (--force) to prune without asking"
            )));
        }
        return Err(Failure::Status(1));
    }
    if answer.trim().eq_ignore_ascii_case("y") {
        Ok(())
    } else {
        Err(Failure::Status(1))
    }
}

/// `kiln du`.
pub fn du(root: Option<&Path>, args: &DuArgs) -> Result<(), Failure> {
    let state = open(root)?;
    let _lock = lock(&state, LockKind::Shared)?;
    let usage = gc::usage(&state).map_err(fail)?;
    let mounts = kiln_worker::ops::mounts::cache_mounts(&state.root);
    let mounts_size: u64 = mounts.iter().map(|m| m.size).sum();
    let pct = |part: u64, whole: u64| format!("{}%", (part * 100).checked_div(whole).unwrap_or(0));
    let mut text = String::new();
    if args.verbose {
        let mut rows = vec!["REPOSITORY\tTAG\tIMAGE ID\tSIZE\tSHARED SIZE\tUNIQUE SIZE".to_owned()];
        for img in &usage.images {
            let short = &img.id.hex()[..12];
            let sizes = format!(
                "{}\t{}\t{}",
                human_size(img.size),
                human_size(img.shared),
                human_size(img.size - img.shared.min(img.size))
            );
            if img.names.is_empty() {
                rows.push(format!("<none>\t<none>\t{short}\t{sizes}"));
            }
            for n in &img.names {
                let (repo, tag) = crate::images::familiar(n);
                rows.push(format!("{repo}\t{tag}\t{short}\t{sizes}"));
            }
        }
        text.push_str("Images space usage:\n\n");
        text.push_str(&crate::gotemplate::tabwrite(&format!(
            "{}\n",
            rows.join("\n")
        )));
        text.push('\n');
    }
    let rows = [
        "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE".to_owned(),
        format!(
            "Images\t{}\t{}\t{}\t{} ({})",
            usage.images.len(),
            usage.named_images,
            human_size(usage.images_size),
            human_size(usage.images_reclaimable),
            pct(usage.images_reclaimable, usage.images_size)
        ),
        format!(
            "Build Cache\t{}\t0\t{}\t{}",
            usage.cache_entries,
            human_size(usage.cache_size),
            human_size(usage.cache_size)
        ),
        format!(
            "Unused\t\t\t{}\t{}",
            human_size(usage.unused_size),
            human_size(usage.unused_size)
        ),
        format!(
            "Cache Mounts\t{}\t0\t{}\t{}",
            mounts.len(),
            human_size(mounts_size),
            human_size(mounts_size)
        ),
    ];
    text.push_str(&crate::gotemplate::tabwrite(&format!(
        "{}\n",
        rows.join("\n")
    )));
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(go_duration("24h"), Some(86400));
        assert_eq!(go_duration("1h30m"), Some(5400));
        assert_eq!(go_duration("90s"), Some(90));
        assert_eq!(go_duration("10"), None);
        assert_eq!(go_duration("3d"), None);
    }
}
