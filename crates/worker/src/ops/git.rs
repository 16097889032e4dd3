//! Git sources (`ADD https://host/repo.git#ref:subdir /dst`, git build
//! contexts), with the system `git` binary, as BuildKit's git source does.
//!
//! * **Cache key**: the ref is resolved to a commit with `git ls-remote`
//!   (BuildKit's rules: an exact `refs/…` name first, then a branch, then a
//!   tag, a peeled annotated tag giving its commit); a full commit sha is
//!   taken as is. The key is the commit plus what shapes the checkout (subdir,
//!   keep-git-dir and the ref name it keeps, submodules), so a moved branch
//!   rebuilds and an unchanged one is cached. `--checksum` must be a prefix
//!   of the commit (or of the annotated tag object).
//! * **Fetch**: one bare repository per remote URL under `<root>/git/`
//!   (of the remote's object format, SHA-1 or SHA-256)
//!   (named by the URL's digest), `flock`ed while it is fetched into; a
//!   commit already there is not fetched again.
//! * **Checkout**: into a fresh layer, with an index file of its own so
//!   concurrent checkouts of one repository do not meet. Files get the
//!   time of the checkout as mtime (BuildKit's default `mtime=checkout`);
//!   without keep-git-dir there is no `.git`. With it (and no subdir, as
//!   BuildKit) the layer is a one-commit clone whose `origin` is the
//!   remote and whose `HEAD` is the commit, detached.
//!
//! Submodules are checked out (recursively, one commit deep) unless the URL
//! says `?submodules=false`; without keep-git-dir their `.git` links are
//! removed (BuildKit leaves them, pointing at its cache).
//!
//! git runs with a cleared environment (no user or system configuration,
//! no prompts): the worker never reads the process environment, so remotes
//! that need credentials, and SSH remotes, are not supported yet.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_llb::op::{Op, SourceOp};
use kiln_llb::{Digest, Vertex};
use kiln_solver::Key;

use crate::error::{Error, GitError, InternalError, Unsupported};
use crate::keys;
pub use crate::resolved::GitCommit as Resolved;
use crate::state::State;
use crate::value::{LayerRef, Value};

/// What git sources need of their build: the state (the repository cache,
/// the layer store), where keying records the commits for the provenance,
/// and where it leaves each vertex's commit for its execution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GitOps<'a> {
    pub(crate) state: &'a State,
    pub(crate) resolved: &'a std::sync::Mutex<crate::resolved::Resolved>,
    pub(crate) commits: &'a std::sync::Mutex<std::collections::HashMap<Digest, Resolved>>,
}

struct Source<'a> {
    remote: &'a str,
    git_ref: &'a str,
    subdir: &'a str,
    keep_git_dir: bool,
    checksum: &'a str,
    skip_submodules: bool,
}

fn source(v: &Vertex) -> Result<Source<'_>, Error> {
    match &v.op {
        Op::Source(SourceOp::Git {
            remote,
            git_ref,
            subdir,
            keep_git_dir,
            checksum,
            skip_submodules,
        }) => Ok(Source {
            remote,
            git_ref,
            subdir,
            keep_git_dir: *keep_git_dir,
            checksum,
            skip_submodules: *skip_submodules,
        }),
        _ => Err(InternalError::WrongKind("a git source").into()),
    }
}

/// Whether `s` is a full commit id (SHA-1 or SHA-256, hex).
pub fn is_commit_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A `git` command with a cleared environment and umask 022, so checked-out
/// modes (0644, 0755 for executables) do not depend on kiln's umask.
fn git() -> Command {
    let mut c = Command::new("/bin/sh");
    c.args(["-c", "umask 022 && exec git \"$@\"", "git"]);
    c.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", "/nonexistent")
        .env("LC_ALL", "C");
    c
}

/// Runs `cmd`; its stdout, or an error with `what` and git's message.
fn run(mut cmd: Command, what: &str) -> Result<Vec<u8>, Error> {
    let out = cmd.output().map_err(|source| Error::Io {
        what: format!("running git to {what}"),
        source,
    })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(GitError::Command {
        what: what.to_owned(),
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
    .into())
}

/// Picks the commit of `git_ref` from `git ls-remote` output, as BuildKit:
/// an exact `refs/…` match, else a branch, else a tag (a peeled annotated
/// tag gives the commit it points to). Returns (object, ref name, peeled
/// commit of an annotated tag).
fn pick_ref(ls_remote: &str, git_ref: &str) -> Option<(String, String, Option<String>)> {
    let bare = git_ref.strip_prefix("refs/").unwrap_or(git_ref);
    let partial = format!("refs/{bare}");
    let head = format!(
        "refs/heads/{}",
        git_ref.strip_prefix("refs/heads/").unwrap_or(git_ref)
    );
    let tag = format!(
        "refs/tags/{}",
        git_ref.strip_prefix("refs/tags/").unwrap_or(git_ref)
    );
    let peeled = format!("{tag}^{{}}");
    let (mut exact, mut head_sha, mut tag_sha, mut peeled_sha) = (None, None, None, None);
    for line in ls_remote.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        let sha = sha.trim().to_owned();
        if name == head {
            head_sha = Some(sha);
        } else if name == tag {
            tag_sha = Some(sha);
        } else if name == peeled {
            peeled_sha = Some(sha);
        } else if name == partial {
            exact = Some(sha);
        }
    }
    if let Some(s) = exact {
        return Some((s, partial, None));
    }
    if let Some(s) = head_sha {
        return Some((s, head, None));
    }
    tag_sha.map(|s| (s, tag, peeled_sha))
}

/// Whether git would reach `remote` over SSH (`ssh://`, `user@host:path`).
fn is_ssh(remote: &str) -> bool {
    match remote.split_once("://") {
        Some((scheme, _)) => scheme.eq_ignore_ascii_case("ssh") || scheme.contains("ssh"),
        None => remote.contains('@') && remote.contains(':'),
    }
}

/// Resolves the source's ref to a commit (network: `git ls-remote`).
fn resolve(src: &Source<'_>) -> Result<Resolved, Error> {
    // BuildKit's git source, in its words.
    if !src.checksum.is_empty() && !src.checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GitError::BadChecksum {
            checksum: src.checksum.to_owned(),
        }
        .into());
    }
    if is_ssh(src.remote) {
        return Err(Unsupported::GitSsh {
            remote: src.remote.to_owned(),
        }
        .into());
    }
    if is_commit_sha(src.git_ref) {
        let commit = src.git_ref.to_ascii_lowercase();
        if !src.checksum.is_empty() && !commit.starts_with(&src.checksum.to_ascii_lowercase()) {
            return Err(GitError::ChecksumMismatch {
                checksum: src.checksum.to_owned(),
                commit,
                peeled: None,
            }
            .into());
        }
        return Ok(Resolved {
            commit,
            ref_name: String::new(),
        });
    }
    let wanted = if src.git_ref.is_empty() {
        "HEAD"
    } else {
        src.git_ref
    };
    let mut cmd = git();
    cmd.args(["ls-remote", "--", src.remote, wanted])
        .arg(format!("{wanted}^{{}}"));
    let out = run(cmd, &format!("list the refs of {}", src.remote))?;
    let text = String::from_utf8_lossy(&out);
    let picked = if wanted == "HEAD" {
        text.lines()
            .find_map(|l| l.strip_suffix("\tHEAD"))
            .map(|s| (s.trim().to_owned(), String::new(), None))
    } else {
        pick_ref(&text, wanted)
    };
    let Some((object, ref_name, peeled)) = picked else {
        return Err(GitError::NoSuchRef {
            remote: src.remote.to_owned(),
            wanted: wanted.to_owned(),
        }
        .into());
    };
    if !is_commit_sha(&object) {
        return Err(GitError::NotACommit {
            remote: src.remote.to_owned(),
            wanted: wanted.to_owned(),
            object,
        }
        .into());
    }
    if !src.checksum.is_empty() {
        let ck = src.checksum.to_ascii_lowercase();
        let matches =
            object.starts_with(&ck) || peeled.as_ref().is_some_and(|p| p.starts_with(&ck));
        if !matches {
            return Err(GitError::ChecksumMismatch {
                checksum: src.checksum.to_owned(),
                commit: object,
                peeled,
            }
            .into());
        }
    }
    Ok(Resolved {
        commit: peeled.unwrap_or(object),
        ref_name,
    })
}

fn key(src: &Source<'_>, r: &Resolved) -> Key {
    let mut shape = String::new();
    if src.keep_git_dir {
        shape.push_str(".git#");
        shape.push_str(&r.ref_name);
    }
    if src.skip_submodules {
        shape.push_str("(skip-submodules)");
    }
    keys::git_key(src.remote, &r.commit, src.subdir, &shape)
}

/// The cache key: the commit the ref resolves to now.
pub(crate) fn cache_key(ops: GitOps<'_>, v: &Vertex) -> Result<Key, Error> {
    let src = source(v)?;
    let r = resolve(&src)?;
    let k = key(&src, &r);
    if let Ok(mut m) = ops.resolved.lock() {
        m.git.insert(v.digest, r.commit.clone());
    }
    if let Ok(mut m) = ops.commits.lock() {
        m.insert(v.digest, r);
    }
    Ok(k)
}

/// Fetches and checks the commit out into a new layer.
pub(crate) fn execute(ops: GitOps<'_>, v: &Vertex) -> Result<Value, Error> {
    let src = source(v)?;
    let stashed = ops
        .commits
        .lock()
        .ok()
        .and_then(|mut m| m.remove(&v.digest));
    let r = match stashed {
        Some(r) => r,
        None => resolve(&src)?,
    };
    let bare = bare_repo(ops.state, src.remote, &r.commit)?;
    {
        let _lock = lock(&bare)?;
        fetch(&bare, &src, &r)?;
    }
    let draft = ops.state.layers.create()?;
    checkout(ops.state, &bare, &src, &r, draft.diff_dir())?;
    let layer = draft.commit(kiln_store::blobs::built_layer_meta())?;
    Ok(Value::Fs {
        layers: vec![LayerRef::Snapshot(layer.id)],
    })
}

/// A git repository as the main build context: the parts of its URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContextSpec<'a> {
    pub remote: &'a str,
    pub git_ref: &'a str,
    pub subdir: &'a str,
    /// `?commit=`: a prefix of the commit the ref must resolve to.
    pub checksum: &'a str,
    pub keep_git_dir: bool,
    pub skip_submodules: bool,
}

impl<'a> ContextSpec<'a> {
    fn source(&self) -> Source<'a> {
        Source {
            remote: self.remote,
            git_ref: self.git_ref,
            subdir: self.subdir,
            keep_git_dir: self.keep_git_dir,
            checksum: self.checksum,
            skip_submodules: self.skip_submodules,
        }
    }
}

/// A git repository checked out as the main build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextCheckout {
    /// The commit checked out.
    pub commit: String,
    /// Its committer time (Unix seconds): `SOURCE_DATE_EPOCH` of the context.
    pub time: Option<i64>,
}

/// A git repository as the main build context (`kiln build
/// https://host/repo.git#ref:subdir`): the ref resolved and fetched
/// through the repository cache git sources use, the commit (its `subdir`)
/// checked out into the empty directory `dest` (with `.git` as `ADD
/// --keep-git-dir` makes it, when asked and there is no `subdir`). A
/// `checksum` (`?commit=`) must be a prefix of the commit, as for `ADD`.
pub fn check_out_context(
    state: &State,
    spec: &ContextSpec<'_>,
    dest: &Path,
) -> Result<ContextCheckout, Error> {
    let src = spec.source();
    let (bare, r) = fetched(state, &src)?;
    checkout(state, &bare, &src, &r, dest)?;
    let time = committer_time(&bare, &r.commit);
    Ok(ContextCheckout {
        commit: r.commit,
        time,
    })
}

/// The committer time (Unix seconds) of the commit `spec`'s ref resolves
/// to, fetched through the repository cache and not checked out
/// (`ARG SOURCE_DATE_EPOCH=NAME` where NAME is a git source).
pub fn commit_time(state: &State, spec: &ContextSpec<'_>) -> Result<Option<i64>, Error> {
    let src = spec.source();
    let (bare, r) = fetched(state, &src)?;
    Ok(committer_time(&bare, &r.commit))
}

/// The ref of `src` resolved and its commit fetched into the cache.
fn fetched(state: &State, src: &Source<'_>) -> Result<(PathBuf, Resolved), Error> {
    let r = resolve(src)?;
    let bare = bare_repo(state, src.remote, &r.commit)?;
    {
        let _lock = lock(&bare)?;
        fetch(&bare, src, &r)?;
    }
    Ok((bare, r))
}

fn committer_time(bare: &Path, commit: &str) -> Option<i64> {
    let mut cmd = git_dir(bare);
    cmd.args(["show", "-s", "--format=%ct", commit]);
    run(cmd, &format!("read the time of commit {commit}"))
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o).trim().parse().ok())
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// The bare repository that caches `remote`, created on first use.
fn bare_repo(state: &State, remote: &str, commit: &str) -> Result<PathBuf, Error> {
    let dir = state.root.join("git");
    fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    // Absolute: checkouts run git in other directories.
    let dir = fs::canonicalize(&dir).map_err(io(format!("resolving {}", dir.display())))?;
    // A SHA-256 repository gets a cache of its own format.
    let suffix = if commit.len() == 64 { "-sha256" } else { "" };
    let repo = dir.join(format!(
        "{}{suffix}.git",
        Digest::of(remote.as_bytes()).hex()
    ));
    if repo.join("HEAD").exists() {
        return Ok(repo);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".init.")
        .tempdir_in(&dir)
        .map_err(io(format!("creating a directory in {}", dir.display())))?;
    let mut cmd = git();
    cmd.args([
        "-c",
        "init.defaultBranch=master",
        "init",
        "--bare",
        "--quiet",
    ])
    .arg(object_format(commit))
    .arg(tmp.path());
    run(cmd, &format!("create a repository for {remote}"))?;
    let mut cmd = git();
    cmd.arg("--git-dir")
        .arg(tmp.path())
        .args(["config", "uploadpack.allowAnySHA1InWant", "true"]);
    run(cmd, "configure the repository cache")?;
    // Relative submodule URLs resolve against `origin`.
    let mut cmd = git();
    cmd.arg("--git-dir")
        .arg(tmp.path())
        .args(["remote", "add", "origin", remote]);
    run(cmd, "configure the repository cache")?;
    match fs::rename(tmp.path(), &repo) {
        Ok(()) => {}
        // Another build created it first.
        Err(_) if repo.join("HEAD").exists() => {}
        Err(e) => return Err(io(format!("creating {}", repo.display()))(e)),
    }
    Ok(repo)
}

/// The `git init` option for the repository a commit id comes from: a
/// SHA-256 repository has 64-digit ids, and git fetches only into a
/// repository of the same object format.
fn object_format(commit: &str) -> &'static str {
    if commit.len() == 64 {
        "--object-format=sha256"
    } else {
        "--object-format=sha1"
    }
}

/// An exclusive `flock` on the repository's lock file, released on drop.
fn lock(bare: &Path) -> Result<nix::fcntl::Flock<fs::File>, Error> {
    let path = bare.with_extension("lock");
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
        what: format!("locking {}", path.display()),
        source: e.into(),
    })
}

fn git_dir(bare: &Path) -> Command {
    let mut c = git();
    c.arg("--git-dir").arg(bare);
    c
}

fn has_commit(bare: &Path, commit: &str) -> bool {
    let mut cmd = git_dir(bare);
    cmd.args(["cat-file", "-e"])
        .arg(format!("{commit}^{{commit}}"));
    cmd.output().is_ok_and(|o| o.status.success())
}

/// Makes sure the bare repository has the commit.
fn fetch(bare: &Path, src: &Source<'_>, r: &Resolved) -> Result<(), Error> {
    if has_commit(bare, &r.commit) {
        return Ok(());
    }
    let what = format!("fetch {} from {}", display_ref(src, r), src.remote);
    let mut cmd = git_dir(bare);
    cmd.args(["fetch", "--quiet", "--no-tags", "--force", "--", src.remote]);
    if r.ref_name.is_empty() {
        // A commit by sha: ask for it; servers that refuse unadvertised
        // objects get asked for all branches and tags.
        cmd.arg(&r.commit);
        if run(cmd, &what).is_err() || !has_commit(bare, &r.commit) {
            let mut all = git_dir(bare);
            all.args(["fetch", "--quiet", "--force", "--", src.remote])
                .args(["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]);
            run(all, &what)?;
        }
    } else {
        cmd.arg(format!("+{0}:{0}", r.ref_name));
        run(cmd, &what)?;
    }
    if !has_commit(bare, &r.commit) {
        return Err(GitError::CommitNotFetched {
            remote: src.remote.to_owned(),
            commit: r.commit.clone(),
            fetched: display_ref(src, r),
        }
        .into());
    }
    Ok(())
}

fn display_ref(src: &Source<'_>, r: &Resolved) -> String {
    if src.git_ref.is_empty() {
        r.commit.clone()
    } else {
        src.git_ref.to_owned()
    }
}

/// Checks the commit out into the empty directory `dest`.
fn checkout(
    state: &State,
    bare: &Path,
    src: &Source<'_>,
    r: &Resolved,
    dest: &Path,
) -> Result<(), Error> {
    let what = format!("check out {} of {}", display_ref(src, r), src.remote);
    let subdir = kiln_frontend::paths::normalize("/", src.subdir, false);
    let subdir = subdir.trim_start_matches('/');
    if src.keep_git_dir && subdir.is_empty() {
        let mut cmd = git();
        cmd.args(["-c", "init.defaultBranch=master", "init", "--quiet"])
            .arg(object_format(&r.commit))
            .arg(dest);
        run(cmd, &what)?;
        let in_dest = || {
            let mut c = git();
            c.arg("-C").arg(dest);
            c
        };
        let mut cmd = in_dest();
        cmd.args(["remote", "add", "origin"])
            .arg(format!("file://{}", bare.display()));
        run(cmd, &what)?;
        let target = if r.ref_name.is_empty() {
            r.commit.clone()
        } else {
            format!("{}:{}", r.commit, r.ref_name)
        };
        let mut cmd = in_dest();
        cmd.args([
            "fetch",
            "--quiet",
            "-u",
            "--no-tags",
            "--depth=1",
            "--",
            "origin",
            &target,
        ]);
        run(cmd, &what)?;
        let mut cmd = in_dest();
        cmd.args(["checkout", "--quiet", &r.commit]);
        run(cmd, &what)?;
        let mut cmd = in_dest();
        cmd.args(["remote", "set-url", "origin", src.remote]);
        run(cmd, &what)?;
        let mut cmd = in_dest();
        cmd.args(["reflog", "expire", "--all", "--expire=now"]);
        run(cmd, &what)?;
        let fetch_head = dest.join(".git/FETCH_HEAD");
        if fetch_head.exists() {
            fs::remove_file(&fetch_head)
                .map_err(io(format!("removing {}", fetch_head.display())))?;
        }
        if wants_submodules(src, dest) {
            update_submodules(src, in_dest)?;
        }
        return Ok(());
    }
    // A checkout of the whole tree in scratch space, then the wanted
    // directory moved into the layer.
    let scratch = state.scratch()?;
    let tree = scratch.path().join("tree");
    fs::create_dir(&tree).map_err(io(format!("creating {}", tree.display())))?;
    let mut cmd = git_dir(bare);
    cmd.env("GIT_INDEX_FILE", scratch.path().join("index"))
        .arg("--work-tree")
        .arg(&tree)
        .args(["checkout", "--quiet", "--no-overlay", &r.commit, "--", "."]);
    run(cmd, &what)?;
    if wants_submodules(src, &tree) {
        // As BuildKit: with the cache repository as git dir, so their
        // clones are cached under its `modules/` (hence the lock).
        let _lock = lock(bare)?;
        update_submodules(src, || {
            let mut cmd = git_dir(bare);
            cmd.env("GIT_INDEX_FILE", scratch.path().join("index"))
                .arg("--work-tree")
                .arg(&tree)
                .current_dir(&tree)
                .args(["-c", "core.bare=false"]);
            cmd
        })?;
        // Their `.git` files point into the cache: not part of the tree.
        remove_git_entries(&tree)?;
    }
    let from = if subdir.is_empty() {
        tree.clone()
    } else {
        let mut p = tree.clone();
        for part in subdir.split('/') {
            p.push(part);
            let m = fs::symlink_metadata(&p).map_err(|_| GitError::NoSubdir {
                remote: src.remote.to_owned(),
                subdir: subdir.to_owned(),
                commit: r.commit.clone(),
            })?;
            if !m.is_dir() {
                return Err(GitError::SubdirNotADir {
                    remote: src.remote.to_owned(),
                    subdir: subdir.to_owned(),
                    commit: r.commit.clone(),
                }
                .into());
            }
        }
        p
    };
    let entries = fs::read_dir(&from).map_err(io(format!("reading {}", from.display())))?;
    for e in entries {
        let e = e.map_err(io(format!("reading {}", from.display())))?;
        let to = dest.join(e.file_name());
        fs::rename(e.path(), &to).map_err(io(format!("moving {}", e.path().display())))?;
    }
    Ok(())
}

/// `git submodule update --init --recursive`, one commit deep; a server
/// that cannot give a shallow clone (git's dumb HTTP protocol) gives the
/// whole history instead.
fn update_submodules(src: &Source<'_>, git: impl Fn() -> Command) -> Result<(), Error> {
    let what = format!("update the submodules of {}", src.remote);
    let args = ["submodule", "update", "--quiet", "--init", "--recursive"];
    let mut cmd = git();
    cmd.args(args).arg("--depth=1");
    match run(cmd, &what) {
        // git says so only in words: its message is all there is to go by.
        Err(Error::Git(GitError::Command { stderr, .. }))
            if stderr.contains("does not support shallow") =>
        {
            let mut cmd = git();
            cmd.args(args);
            run(cmd, &what).map(drop)
        }
        r => r.map(drop),
    }
}

/// Whether the checkout in `tree` has submodules to check out.
fn wants_submodules(src: &Source<'_>, tree: &Path) -> bool {
    !src.skip_submodules && tree.join(".gitmodules").exists()
}

/// Removes every `.git` entry under `dir` (git never tracks one, so each is
/// a submodule's link to its repository).
fn remove_git_entries(dir: &Path) -> Result<(), Error> {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let entries = fs::read_dir(&d).map_err(io(format!("reading {}", d.display())))?;
        for e in entries {
            let e = e.map_err(io(format!("reading {}", d.display())))?;
            let path = e.path();
            let ft = e
                .file_type()
                .map_err(io(format!("stat {}", path.display())))?;
            if e.file_name() == ".git" {
                if ft.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                }
                .map_err(io(format!("removing {}", path.display())))?;
            } else if ft.is_dir() {
                todo.push(path);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LS: &str = "1111111111111111111111111111111111111111\trefs/heads/main\n\
2222222222222222222222222222222222222222\trefs/tags/v1\n\
3333333333333333333333333333333333333333\trefs/tags/v1^{}\n\
4444444444444444444444444444444444444444\trefs/heads/v1\n";

    #[test]
    fn refs_resolve_as_buildkit() {
        let p = |r: &str| pick_ref(LS, r);
        assert_eq!(
            p("main"),
            Some(("1".repeat(40), "refs/heads/main".to_owned(), None))
        );
        // A branch wins over a tag of the same name.
        assert_eq!(
            p("v1"),
            Some(("4".repeat(40), "refs/heads/v1".to_owned(), None))
        );
        // An annotated tag gives its commit.
        assert_eq!(
            p("refs/tags/v1"),
            Some((
                "2".repeat(40),
                "refs/tags/v1".to_owned(),
                Some("3".repeat(40))
            ))
        );
        assert_eq!(
            p("tags/v1"),
            Some(("2".repeat(40), "refs/tags/v1".to_owned(), None))
        );
        assert_eq!(p("nope"), None);
    }

    #[test]
    fn ssh_remotes() {
        assert!(is_ssh("git@github.com:moby/buildkit.git"));
        assert!(is_ssh("ssh://git@example.com/r.git"));
        assert!(!is_ssh("https://example.com/r.git"));
        assert!(!is_ssh("git://127.0.0.1:9418/repo"));
    }

    #[test]
    fn commit_shas() {
        assert!(is_commit_sha(&"a".repeat(40)));
        assert!(is_commit_sha(&"0".repeat(64)));
        assert!(!is_commit_sha("main"));
        assert!(!is_commit_sha(&"g".repeat(40)));
    }
}
