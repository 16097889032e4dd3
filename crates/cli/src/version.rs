//! What `kiln --version` and `kiln version` say: the package version, the
//! commit and the build date, from the build script (`crates/cli/build.rs`).

use std::io::Write as _;

/// The commit the binary was built from (12 hex digits), or `unknown`.
pub const COMMIT: &str = env!("KILN_COMMIT");

/// The build date, `YYYY-MM-DD` (UTC; `SOURCE_DATE_EPOCH` when set).
pub const DATE: &str = env!("KILN_BUILD_DATE");

/// `0.1.0 (0123456789ab 2026-11-26)`, as `rustc -V` prints itself.
pub const SHORT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("KILN_COMMIT"),
    " ",
    env!("KILN_BUILD_DATE"),
    ")"
);

/// `kiln version`.
pub fn print() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "kiln {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "commit:     {COMMIT}");
    let _ = writeln!(out, "build date: {DATE}");
    let _ = writeln!(out, "compiler:   {}", env!("KILN_RUSTC"));
    let _ = writeln!(out, "platform:   {}", kiln_llb::Platform::host().format());
}
