//! Paths a tree keeps out of its stack (the in-place trees, `inplace.rs`).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// Paths of a tree that are not the stack's, relative to its root: the
/// tree keeps them as they are, and what is below them. Their ancestors are
/// kept as directories (their other entries are the stack's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    excluded: BTreeSet<PathBuf>,
    ancestors: BTreeSet<PathBuf>,
}

/// No exclusions (every tree the native snapshotter makes in a mount).
pub(crate) static NO_EXCLUSIONS: Exclusions = Exclusions {
    excluded: BTreeSet::new(),
    ancestors: BTreeSet::new(),
};

impl Exclusions {
    /// Nothing excluded.
    pub fn new() -> Exclusions {
        Exclusions::default()
    }

    /// Excludes `rel` (relative to the root; `.` components are ignored; the
    /// root itself and `..` are refused: a tree cannot exclude everything).
    pub fn add(&mut self, rel: &Path) -> Result<(), String> {
        let mut clean = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => clean.push(n),
                Component::CurDir | Component::RootDir => {}
                _ => return Err(format!("{}: not a plain path", rel.display())),
            }
        }
        if clean.as_os_str().is_empty() {
            return Err("the root itself cannot be excluded".to_owned());
        }
        let mut a = clean.parent();
        while let Some(p) = a.filter(|p| !p.as_os_str().is_empty()) {
            self.ancestors.insert(p.to_path_buf());
            a = p.parent();
        }
        self.excluded.insert(clean);
        Ok(())
    }

    /// Whether `rel` is excluded itself (what is below it is never looked
    /// at).
    pub fn is_excluded(&self, rel: &Path) -> bool {
        self.excluded.contains(rel)
    }

    /// Whether `rel` is, or is below, an excluded path.
    pub fn covers(&self, rel: &Path) -> bool {
        rel.ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| self.excluded.contains(a))
    }

    /// Whether `rel` is a directory above an excluded path.
    pub fn is_ancestor(&self, rel: &Path) -> bool {
        self.ancestors.contains(rel)
    }

    /// The excluded paths.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.excluded.iter().map(PathBuf::as_path)
    }
}
