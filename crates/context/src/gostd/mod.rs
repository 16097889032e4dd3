//! Ports of the few pieces of Go's standard library whose exact behaviour
//! Docker's context handling depends on.
//!
//! moby/patternmatcher, fsutil and BuildKit are Go programs: a `.dockerignore`
//! pattern is cleaned by `filepath.Clean`, validated by `filepath.Match`,
//! trimmed by `strings.TrimSpace`, scanned rune by rune (invalid UTF-8 reads
//! as U+FFFD, one byte at a time) and finally compiled by Go's `regexp`. To
//! agree with Docker on every input, kiln reproduces each of those steps on
//! raw bytes (Linux file names need not be UTF-8) instead of approximating
//! them with Rust's own string functions.

pub(crate) mod glob;
pub(crate) mod path;
pub(crate) mod regexp;
pub(crate) mod utf8;
