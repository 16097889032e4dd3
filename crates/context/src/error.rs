//! The crate's error type.

use std::path::PathBuf;

use crate::ignorefile::IgnoreFileError;
use crate::patternmatcher::PatternError;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A COPY source that does not exist in the tree (missing, ignored, a
    /// symlink to something missing or ignored, or a wildcard that matched
    /// nothing when that is not allowed). `path` is the in-tree path,
    /// quoted as BuildKit quotes it (`"/x": not found`).
    #[error("\"{path}\": not found")]
    NotFound {
        /// The in-tree path as given (lossily decoded).
        path: String,
    },
    /// A COPY source whose path goes through symlinks to something that is
    /// not in the tree: symlinks resolve inside the context, so one pointing
    /// at a host path (`/etc`) leads to that path *in the context*.
    #[error(
        "\"{path}\": not found (its symbolic links lead to {resolved} in the build context; \
         a context's symlinks resolve inside the context, never to host files)"
    )]
    NotFoundThroughSymlink {
        /// The in-tree path as given (lossily decoded).
        path: String,
        /// Where its symlinks lead, in the tree.
        resolved: String,
    },
    /// Symlink resolution went around in circles.
    #[error("{path}: too many levels of symbolic links")]
    TooManyLinks {
        /// The in-tree path where resolution gave up.
        path: String,
    },
    /// A filesystem operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The host path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A pattern failed while matching `path` (a `.dockerignore` or filter
    /// pattern whose regex does not compile).
    #[error("matching {path}: {source}")]
    Pattern {
        /// The path being matched.
        path: String,
        /// What is wrong with the pattern.
        source: PatternError,
    },
    /// The ignore file has a malformed pattern.
    #[error("{}: {source}", file.display())]
    IgnorePattern {
        /// The ignore file.
        file: PathBuf,
        /// What is wrong.
        source: PatternError,
    },
    /// The ignore file cannot be read.
    #[error(transparent)]
    IgnoreFile(#[from] IgnoreFileError),
}
