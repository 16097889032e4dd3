//! Build script of the `kiln` binary: the commit and build date that
//! `kiln --version` and `kiln version` print.
//!
//! * commit: `$KILN_BUILD_COMMIT` if set (packagers building from a source
//!   tarball can say which commit it is), else `git rev-parse --short=12
//!   HEAD` when the sources are a git checkout, else `unknown`;
//! * build date: `$SOURCE_DATE_EPOCH` as a UTC date if set (reproducible
//!   builds), else the day this script ran (UTC).
//!
//! The script runs again when the checkout's HEAD moves (or those variables
//! change), not on every edit.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// Days since 1970-01-01 → (year, month, day) (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KILN_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = match std::env::var("KILN_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_owned(),
        // Only when this very file is tracked: a tarball unpacked inside
        // some other checkout is not that checkout's commit.
        _ if git(&["ls-files", "--error-unmatch", "build.rs"]).is_none() => "unknown".to_owned(),
        _ => git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned()),
    };
    // Run again when HEAD (or the branch it names) moves.
    if let (Some(dir), Some(common)) = (
        git(&["rev-parse", "--absolute-git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) {
        let dir = PathBuf::from(dir);
        let common = {
            let c = PathBuf::from(common);
            if c.is_absolute() {
                c
            } else {
                std::env::current_dir().map(|d| d.join(&c)).unwrap_or(c)
            }
        };
        watch(&dir.join("HEAD"));
        if let Ok(head) = std::fs::read_to_string(dir.join("HEAD"))
            && let Some(r) = head.trim().strip_prefix("ref: ")
        {
            watch(&dir.join(r));
            watch(&common.join(r));
        }
        watch(&common.join("packed-refs"));
    }
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let (y, m, d) = civil(epoch.div_euclid(86_400));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let rustc_version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "rustc (unknown)".to_owned());
    println!("cargo:rustc-env=KILN_COMMIT={commit}");
    println!("cargo:rustc-env=KILN_BUILD_DATE={y:04}-{m:02}-{d:02}");
    println!("cargo:rustc-env=KILN_RUSTC={rustc_version}");
}
