//! `kiln-context`: the build context as BuildKit's COPY sees it —
//! `.dockerignore` with Docker's exact semantics, COPY source selection, and
//! a content digest of exactly the selected files, backed by a persistent
//! stat cache so that a no-op rebuild reads no file contents.
//!
//! # Why it is shaped this way
//!
//! Docker users write `.dockerignore` files and COPY sources against
//! Docker's behaviour, quirks included: `*.log` matches only at the top
//! level (unlike `.gitignore`), `**` may match nothing, an exception can
//! re-include a file inside an ignored directory, `[^x]` can match `/` in a
//! COPY wildcard. Those semantics are defined by Go code — moby/patternmatcher,
//! tonistiigi/fsutil, BuildKit's copy and contenthash — and by the Go standard
//! library underneath it. So this crate is a port, not a reinterpretation:
//!
//! * the private `gostd` module reproduces the Go standard-library functions
//!   involved (`filepath.Clean`, `filepath.Match`, `strings.TrimSpace`, UTF-8
//!   decoding, and Go regexp syntax mapped onto the `regex` crate);
//! * [`patternmatcher`] and [`ignorefile`] port moby/patternmatcher;
//! * [`Tree`] combines fsutil's filtered walk (what the context transfer
//!   sends) with BuildKit's copy (wildcards, symlink following, `--exclude`,
//!   `--parents` include patterns) in a single walk;
//! * [`Tree::digest`] hashes a selection with a canonical encoding and a
//!   [`StatCache`].
//!
//! Upstream's test vectors are kept as data under `testdata/context/`, and
//! the port was compared with upstream's Go code on random inputs (see
//! `testdata/context/*/README.md`).
//!
//! # Using it
//!
//! ```no_run
//! # fn main() -> Result<(), kiln_context::ContextError> {
//! use kiln_context::{DigestOptions, ExpandOptions, Filter, StatCache, Tree};
//! let tree = Tree::open_context("ctx".as_ref(), None)?; // finds the ignore file
//! let copy = ExpandOptions { allow_wildcard: true, allow_empty_wildcard: true, follow_symlinks: true };
//! let sources = tree.expand("/src/*.go", &copy)?;
//! let filter = Filter::new(&[] as &[&str], &["*_test.go"]).expect("valid patterns");
//! let mut cache = StatCache::load("state/statcache".as_ref());
//! let (key, _stats) = tree.digest(&sources, &filter, &mut cache, &DigestOptions::default())?;
//! cache.save()?;
//! for s in &sources {
//!     for entry in tree.walk(s, &filter)? { /* copy entry.host_path to dest/entry.path */ }
//! }
//! # let _ = key; Ok(()) }
//! ```
//!
//! # Invariants
//!
//! * File names are bytes. Nothing assumes UTF-8; invalid UTF-8 is treated
//!   exactly as Go treats it (one U+FFFD per invalid byte for regex
//!   matching, raw bytes for exact and prefix comparisons).
//! * Walk order is deterministic: parents before children, siblings in
//!   byte order of their names.
//! * Ignored paths do not exist: they cannot be named, matched, followed
//!   through a symlink, or digested.
//! * Symlinks never lead outside the tree's root: a followed source is
//!   resolved as `securejoin` does (absolute targets from the root, `..`
//!   clamped at the root); symlinks inside a copied directory are entries.
//! * A digest never contains a timestamp, inode number, or host path; the
//!   encoding is versioned (`kiln.context.v1`) and documented in [`digest`].
//! * Errors name the path or pattern involved; permission errors are
//!   errors (except inside ignored directories, as with fsutil).

mod error;
mod gostd;
mod text;

pub mod digest;
pub mod ignorefile;
pub mod patternmatcher;
mod resolve;
pub mod statcache;
mod tree;

pub use digest::{DigestOptions, DigestStats};
pub use error::ContextError;
pub use ignorefile::{IgnoreFileError, find_ignore_file, read_all};
pub use patternmatcher::{MatchInfo, Matcher, PatternError};
pub use statcache::StatCache;
pub use tree::{Entry, ExpandOptions, FileType, Filter, Source, Tree};
