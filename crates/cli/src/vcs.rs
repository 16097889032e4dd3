//! The git information buildx sends with a build of a local context
//! (`build/git.go`'s `getGitAttributes`), which BuildKit records in the
//! provenance's VCS metadata: when the context directory is inside a git
//! work tree, `vcs:revision` (HEAD's commit; with
//! `BUILDX_GIT_CHECK_DIRTY=1`, `-dirty` appended when the work tree has
//! changes or ignored files), `vcs:source` (the URL of the current
//! branch's remote, else `origin`'s, else `upstream`'s, credentials
//! redacted) and `vcs:localdir:NAME` for each local source inside the work
//! tree (its path from the work tree's root). `BUILDX_GIT_INFO=false` turns
//! it off. The keys are returned without `vcs:`, as BuildKit moves them
//! out of the request into `buildkit_metadata.vcs`.
//!
//! buildx fails the build when the context has a `.git` directory and git
//! is missing or cannot read it; kiln then records no VCS information (a
//! build does not fail for its provenance's metadata), as it does when git
//! refuses a repository another user owns (`safe.directory`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `git ARGS` in `dir`; its first output line, when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "log.showSignature=false"])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // buildx's `clean`: the first line, without single quotes.
    Some(text.lines().next().unwrap_or_default().replace('\'', ""))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    kiln_attest::provenance::parse_bool(v)
}

/// The remote's URL: the current branch's remote, `origin`, `upstream`.
fn remote_url(dir: &Path) -> Option<String> {
    let current = git(dir, &["symbolic-ref", "-q", "HEAD"])
        .filter(|r| !r.is_empty())
        .and_then(|r| {
            git(
                dir,
                &["for-each-ref", "--format=%(upstream:remotename)", &r],
            )
        })
        .filter(|r| !r.is_empty());
    current
        .into_iter()
        .chain(["origin".to_owned(), "upstream".to_owned()])
        .find_map(|remote| git(dir, &["remote", "get-url", &remote]).filter(|u| !u.is_empty()))
        .map(|u| kiln_attest::provenance::redact_credentials(&u))
}

/// The VCS information of a build whose context is the directory
/// `context` and whose local sources are `locals` (name, directory);
/// `env` looks up `BUILDX_GIT_INFO`, `BUILDX_GIT_CHECK_DIRTY` and
/// `GIT_DIR`.
pub fn git_info(
    context: &Path,
    locals: &[(String, PathBuf)],
    env: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if env("BUILDX_GIT_INFO").and_then(|v| parse_bool(&v)) == Some(false) {
        return out;
    }
    let Ok(wd) = std::path::absolute(context) else {
        return out;
    };
    // Without a `.git` in the directory or above it (nor GIT_DIR), git finds
    // no work tree: ask it only otherwise (a git process per build is ~2 ms
    // of a ~10 ms no-op rebuild).
    if env("GIT_DIR").is_none()
        && !wd
            .ancestors()
            .any(|d| d.join(".git").symlink_metadata().is_ok())
    {
        return out;
    }
    if git(&wd, &["rev-parse", "--is-inside-work-tree"]).as_deref() != Some("true") {
        return out;
    }
    let Some(root) = git(&wd, &["rev-parse", "--show-toplevel"]) else {
        return out;
    };
    if let Some(mut sha) =
        git(&wd, &["show", "--format=%H", "HEAD", "--quiet", "--"]).filter(|s| !s.is_empty())
    {
        let check_dirty = env("BUILDX_GIT_CHECK_DIRTY").and_then(|v| parse_bool(&v)) == Some(true);
        if check_dirty {
            // A porcelain line is never empty: the first says whether
            // there is any (a failure counts as dirty, as in buildx).
            let dirty = git(&wd, &["status", "--porcelain", "--ignored"])
                .is_none_or(|first| !first.trim().is_empty());
            if dirty {
                sha.push_str("-dirty");
            }
        }
        out.insert("revision".to_owned(), sha);
    }
    if let Some(url) = remote_url(&wd) {
        out.insert("source".to_owned(), url);
    }
    let root = Path::new(&root);
    for (name, dir) in locals {
        // As fsutil: symbolic links resolved.
        let Ok(dir) = dir.canonicalize() else {
            continue;
        };
        if let Ok(rel) = dir.strip_prefix(root) {
            let rel = rel.to_string_lossy();
            let rel = if rel.is_empty() { "." } else { &rel };
            out.insert(format!("localdir:{name}"), rel.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn run(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn a_context_in_a_work_tree() {
        if Command::new("git").arg("--version").output().is_err() {
            eprintln!("skipped: needs git (Debian: git)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(repo.join("sub")).unwrap();
        std::fs::write(repo.join("sub/Dockerfile"), "FROM scratch\n").unwrap();
        run(&repo, &["init", "-q"]);
        run(
            &repo,
            &[
                "remote",
                "add",
                "origin",
                "https://user:pass@example.invalid/repo.git",
            ],
        );
        run(&repo, &["add", "."]);
        run(
            &repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "one",
            ],
        );
        let none = |_: &str| None;
        let locals = vec![
            ("context".to_owned(), repo.clone()),
            ("dockerfile".to_owned(), repo.join("sub")),
            ("elsewhere".to_owned(), std::env::temp_dir()),
        ];
        let info = git_info(&repo, &locals, &none);
        assert_eq!(
            info["source"],
            "https://xxxxx:xxxxx@example.invalid/repo.git"
        );
        assert_eq!(info["revision"].len(), 40);
        assert_eq!(info["localdir:context"], ".");
        assert_eq!(info["localdir:dockerfile"], "sub");
        assert!(!info.contains_key("localdir:elsewhere"));
        let off = |k: &str| (k == "BUILDX_GIT_INFO").then(|| "false".to_owned());
        assert!(git_info(&repo, &locals, &off).is_empty());
        std::fs::write(repo.join("new"), "x").unwrap();
        let dirty = |k: &str| (k == "BUILDX_GIT_CHECK_DIRTY").then(|| "1".to_owned());
        assert!(git_info(&repo, &locals, &dirty)["revision"].ends_with("-dirty"));
    }
}
