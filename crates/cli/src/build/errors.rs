//! How a failed build is reported: the failed step as BuildKit shows it,
//! and the note when the disk is full.

use std::path::Path;

use kiln_frontend::SourceFile;
use kiln_worker::Error as WorkerError;

use crate::failure::Failure;
use crate::progress::Progress;

/// The failure a failed solve is, which decides the exit code (by type): a
/// failed step, reported as BuildKit reports it; a cancelled build; a
/// registry failure; anything else. When the disk is full, where the state
/// directory is and how much room it has are said too.
pub(super) fn failure(
    e: WorkerError,
    file: &SourceFile,
    progress: &Progress,
    root: &Path,
) -> Failure {
    match e {
        WorkerError::Step(e) => {
            let tail = progress.tail(e.node);
            let mut msg = report_step(file, &e, &tail);
            if tail.iter().any(|l| is_no_space(l)) || is_no_space(&e.message) {
                msg.push_str(&no_space_note(root));
            }
            Failure::Build(msg)
        }
        WorkerError::Cancelled => Failure::Cancelled,
        // The kind (and exit code) by type, before anything reads text.
        e @ WorkerError::Registry(_) => Failure::Registry(anyhow::Error::new(e)),
        e if no_space_in_chain(&e) || is_no_space(&e.to_string()) => {
            Failure::Build(format!("error: {e}{}", no_space_note(root)))
        }
        e => Failure::Other(anyhow::Error::new(e)),
    }
}

/// Whether an `io::Error` of kind `StorageFull` (ENOSPC) is among the
/// causes of `e`. (The message is also read, by [`is_no_space`], for
/// causes that reached kiln as text: a helper process's, a library's.)
fn no_space_in_chain(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
        {
            return true;
        }
        cur = c.source();
    }
    false
}

/// A failed step as BuildKit reports it: the step and the end of its
/// output, the Dockerfile lines around it, then the reason.
fn report_step(file: &SourceFile, e: &kiln_worker::StepError, tail: &[String]) -> String {
    let mut s = format!("------\n > {}:\n", crate::progress::printable(&e.name));
    for l in tail {
        s.push_str(&format!("{l}\n"));
    }
    s.push_str("------\n");
    if let Some(loc) = &e.location {
        let lines: Vec<&str> = file.text().lines().collect();
        s.push_str(&format!("{loc}\n--------------------\n"));
        let start = loc.start_line.saturating_sub(2).max(1) as usize;
        let end = (loc.end_line as usize + 2).min(lines.len());
        for n in start..=end {
            if let Some(l) = lines.get(n - 1) {
                let mark = if n >= loc.start_line as usize && n <= loc.end_line as usize {
                    ">>>"
                } else {
                    "   "
                };
                s.push_str(&format!(" {n:>3} | {mark} {l}\n"));
            }
        }
        s.push_str("--------------------\n");
    }
    s.push_str(&format!("error: failed to solve: {}", e.message));
    s
}

/// Whether a message says a write failed for want of space (ENOSPC, from
/// a step's own output, or a cause that reached kiln as text). It only adds
/// the note: the failure's kind and exit code come from its type.
fn is_no_space(s: &str) -> bool {
    s.contains("No space left on device") || s.contains("os error 28")
}

/// What to say when a build ran out of space: where the state directory is,
/// and what its filesystem has now (a failed step's changes are gone by then).
fn no_space_note(root: &std::path::Path) -> String {
    let free = nix::sys::statvfs::statvfs(root).ok().map(|fs| {
        let block = fs.fragment_size();
        (fs.blocks_available() * block, fs.blocks() * block)
    });
    match free {
        Some((avail, total)) => format!(
            "\nnote: no space left on device: the state directory {} (where steps write their \
             changes and layers are stored) is on a filesystem with {} free of {} now; free \
             space there (kiln prune removes unused data) or use --root on a larger filesystem",
            root.display(),
            crate::units::human_size(avail),
            crate::units::human_size(total)
        ),
        None => format!(
            "\nnote: no space left on device: the state directory is {}",
            root.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(e: WorkerError) -> Failure {
        let file = SourceFile::new("Dockerfile", "FROM scratch\n");
        let progress = Progress::new(crate::progress::Mode::Quiet);
        failure(e, &file, &progress, Path::new("/"))
    }

    #[test]
    fn the_kind_comes_from_the_type_and_the_note_from_the_cause() {
        // A registry failure is one (exit 3) whatever its text says.
        let registry = WorkerError::Registry(
            kiln_registry::RegistryError::Connection {
                host: "r.example".to_owned(),
                detail: "No space left on device (os error 28)".to_owned(),
                hint: String::new(),
            }
            .into(),
        );
        assert!(matches!(classify(registry), Failure::Registry(_)));
        // ENOSPC among the causes gives the note, whatever the message.
        let full = WorkerError::Io {
            what: "writing a layer".to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        match classify(full) {
            Failure::Build(m) => assert!(m.contains("note: no space left on device"), "{m}"),
            other => panic!("{other:?}"),
        }
        let other = WorkerError::Io {
            what: "writing a layer".to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(matches!(classify(other), Failure::Other(_)));
    }
}
