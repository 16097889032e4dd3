//! Rootless mode: the whole kiln process re-executes itself inside a user
//! namespace (and a mount namespace owned by it) where it is root.
//!
//! ```text
//! kiln (uid 1000) ── preflight: /etc/subuid, /etc/subgid, newuidmap, sysctls
//!   │ spawn itself with _KILN_USERNS_SYNC=<r>,<w>
//!   ├─▶ kiln (child): unshare(CLONE_NEWUSER|CLONE_NEWNS), "ready" ─┐
//!   │   newuidmap <pid> 0 1000 1 1 100000 65536   ◀────────────────┘
//!   │   newgidmap <pid> 0 1000 1 1 100000 65536
//!   │   "mapped" ─▶ child: setgroups([]), / rprivate, runs the command as
//!   │               uid 0 of the namespace (full capabilities there)
//!   └─ waits, exits with the child's status
//! ```
//!
//! This is the shape of `buildah unshare` and rootlesskit: one namespace for
//! the whole process, so everything below the cli (the layer store, overlay
//! mounts, the executor helper, tar writers) runs unchanged and sees
//! in-namespace ownership: a file of uid 100 in an image is uid 100 in the
//! namespace (host uid `subuid_start + 99`), and layer tars record 0 and 100,
//! never the host's ids.
//!
//! The host side is read through [`Host`] (where the subordinate id files and
//! the sysctls are, and the `PATH` to find `newuidmap` in), so the checks and
//! their error messages are tested with fake files.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// The environment variable that tells a re-executed kiln which inherited
/// file descriptors to synchronise on (`<read fd>,<write fd>`).
pub const SYNC_ENV: &str = "_KILN_USERNS_SYNC";

/// One line of `/etc/subuid` or `/etc/subgid` that applies to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// What the host provides for rootless mode: where to look.
#[derive(Debug, Clone)]
pub struct Host {
    /// `/etc/subuid`.
    pub subuid: PathBuf,
    /// `/etc/subgid`.
    pub subgid: PathBuf,
    /// `/proc/sys`.
    pub proc_sys: PathBuf,
    /// The `PATH` `newuidmap` and `newgidmap` are looked up in.
    pub path: OsString,
}

impl Host {
    /// The real host: `/etc/subuid`, `/etc/subgid`, `/proc/sys`, and `path`
    /// (`PATH`; `/usr/bin:/bin` when it is not set).
    pub fn system(path: Option<OsString>) -> Host {
        Host {
            subuid: PathBuf::from("/etc/subuid"),
            subgid: PathBuf::from("/etc/subgid"),
            proc_sys: PathBuf::from("/proc/sys"),
            path: path.unwrap_or_else(|| OsString::from("/usr/bin:/bin")),
        }
    }
}

/// The user kiln runs as on the host.
#[derive(Debug, Clone)]
pub struct HostUser {
    pub uid: u32,
    pub gid: u32,
    /// The login name (subordinate id files may name the user either way).
    pub name: Option<String>,
}

/// Everything the parent needs to set up the namespace.
#[derive(Debug, Clone)]
pub struct IdMapPlan {
    pub user: HostUser,
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
    pub newuidmap: PathBuf,
    pub newgidmap: PathBuf,
}

impl IdMapPlan {
    /// The arguments after the pid: `0 <id> 1`, then each range mapped right
    /// after the previous one (`1 <start> <count>`, …).
    fn map_args(own: u32, ranges: &[IdRange]) -> Vec<String> {
        let mut args = vec!["0".to_owned(), own.to_string(), "1".to_owned()];
        let mut next: u64 = 1;
        for r in ranges {
            args.push(next.to_string());
            args.push(r.start.to_string());
            args.push(r.count.to_string());
            next += u64::from(r.count);
        }
        args
    }

    /// How many ids the namespace has (0 plus the subordinate ranges).
    pub fn uid_count(&self) -> u64 {
        1 + self.uids.iter().map(|r| u64::from(r.count)).sum::<u64>()
    }

    /// A one-line description for `--debug`.
    pub fn describe(&self) -> String {
        let ranges = |rs: &[IdRange]| {
            rs.iter()
                .map(|r| {
                    format!(
                        "{}..{}",
                        r.start,
                        u64::from(r.start) + u64::from(r.count) - 1
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "user namespace: uid 0 = host uid {}, uids 1..{} = host {}; gid 0 = host gid {}, gids 1..{} = host {}",
            self.user.uid,
            self.uid_count() - 1,
            ranges(&self.uids),
            self.user.gid,
            self.gids.iter().map(|r| u64::from(r.count)).sum::<u64>(),
            ranges(&self.gids),
        )
    }
}

/// Why rootless mode cannot start. Every message names the fix.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error(
        "rootless mode: no subordinate {kind} range for user {who} in {}: add a range: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {who}",
        file.display()
    )]
    NoRange {
        kind: &'static str,
        who: String,
        file: PathBuf,
    },
    #[error("rootless mode: reading {}: {source}", file.display())]
    Read { file: PathBuf, source: io::Error },
    #[error("rootless mode: {}:{line}: {why}", file.display())]
    BadLine {
        file: PathBuf,
        line: usize,
        why: String,
    },
    #[error(
        "rootless mode: {tool} not found in PATH: install the uidmap package (apt-get install uidmap)"
    )]
    NoTool { tool: &'static str },
    #[error(
        "rootless mode: user namespaces are disabled on this host ({setting} = {value}): enable them with sysctl -w {setting}={fix}"
    )]
    Disabled {
        setting: &'static str,
        value: String,
        fix: &'static str,
    },
    #[error("rootless mode: starting {}: {source}", program.display())]
    Spawn { program: PathBuf, source: io::Error },
    #[error(
        "rootless mode: creating the user namespace failed: {0} (check the sysctls user.max_user_namespaces and kernel.unprivileged_userns_clone, and whether a seccomp or AppArmor policy forbids unshare(CLONE_NEWUSER))"
    )]
    Unshare(String),
    #[error(
        "rootless mode: {tool} {args} failed: {output} (check that the ranges of user {who} in /etc/subuid and /etc/subgid are free and that {tool} is setuid root)"
    )]
    Map {
        tool: String,
        args: String,
        who: String,
        output: String,
    },
    #[error("rootless mode: {what}: {source}")]
    Io { what: String, source: io::Error },
}

fn io_err(what: &str) -> impl FnOnce(io::Error) -> RootlessError + '_ {
    move |source| RootlessError::Io {
        what: what.to_owned(),
        source,
    }
}

/// The ranges of `user` in a subordinate id file (`name:start:count` or
/// `uid:start:count` lines; `#` comments). Lines of other users are not
/// checked.
pub fn parse_subid(
    text: &str,
    file: &Path,
    user: &HostUser,
) -> Result<Vec<IdRange>, RootlessError> {
    let uid = user.uid.to_string();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split(':');
        let (Some(who), Some(start), Some(count), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            // A line of another shape cannot be ours: shadow-utils skips it.
            continue;
        };
        if who != uid && Some(who) != user.name.as_deref() {
            continue;
        }
        let bad = |why: String| RootlessError::BadLine {
            file: file.to_path_buf(),
            line: i + 1,
            why,
        };
        let start: u32 = start
            .parse()
            .map_err(|_| bad(format!("invalid start {start:?}")))?;
        let count: u32 = count
            .parse()
            .map_err(|_| bad(format!("invalid count {count:?}")))?;
        if count == 0 {
            continue;
        }
        if u64::from(start) + u64::from(count) > u64::from(u32::MAX) {
            return Err(bad(format!("range {start}+{count} exceeds the id space")));
        }
        out.push(IdRange { start, count });
    }
    Ok(out)
}

fn find_tool(path: &OsString, tool: &'static str) -> Result<PathBuf, RootlessError> {
    use std::os::unix::fs::PermissionsExt as _;
    for dir in std::env::split_paths(path) {
        let p = dir.join(tool);
        if let Ok(m) = fs::metadata(&p)
            && m.is_file()
            && m.permissions().mode() & 0o111 != 0
        {
            return Ok(p);
        }
    }
    Err(RootlessError::NoTool { tool })
}

/// Checks the sysctls that disable user namespaces, when the host has them.
fn check_sysctls(proc_sys: &Path) -> Result<(), RootlessError> {
    let read = |rel: &str| {
        fs::read_to_string(proc_sys.join(rel))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    if let Some(v) = read("user/max_user_namespaces")
        && v == "0"
    {
        return Err(RootlessError::Disabled {
            setting: "user.max_user_namespaces",
            value: v,
            fix: "15000",
        });
    }
    if let Some(v) = read("kernel/unprivileged_userns_clone")
        && v == "0"
    {
        return Err(RootlessError::Disabled {
            setting: "kernel.unprivileged_userns_clone",
            value: v,
            fix: "1",
        });
    }
    if let Some(v) = read("kernel/apparmor_restrict_unprivileged_userns")
        && v == "1"
    {
        return Err(RootlessError::Disabled {
            setting: "kernel.apparmor_restrict_unprivileged_userns",
            value: v,
            fix: "0",
        });
    }
    Ok(())
}

/// Everything that can be checked before creating the namespace: the
/// sysctls, the subordinate id ranges of `user`, and the two setuid tools.
pub fn preflight(host: &Host, user: &HostUser) -> Result<IdMapPlan, RootlessError> {
    check_sysctls(&host.proc_sys)?;
    let who = user.name.clone().unwrap_or_else(|| user.uid.to_string());
    let ranges = |file: &Path, kind: &'static str| -> Result<Vec<IdRange>, RootlessError> {
        let text = match fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(RootlessError::Read {
                    file: file.to_path_buf(),
                    source,
                });
            }
        };
        let r = parse_subid(&text, file, user)?;
        if r.is_empty() {
            return Err(RootlessError::NoRange {
                kind,
                who: who.clone(),
                file: file.to_path_buf(),
            });
        }
        Ok(r)
    };
    let uids = ranges(&host.subuid, "uid")?;
    let gids = ranges(&host.subgid, "gid")?;
    Ok(IdMapPlan {
        user: user.clone(),
        uids,
        gids,
        newuidmap: find_tool(&host.path, "newuidmap")?,
        newgidmap: find_tool(&host.path, "newgidmap")?,
    })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RootlessError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RootlessError::Io {
        what: "pipe".to_owned(),
        source: e.into(),
    })
}

fn inheritable(fd: &OwnedFd) -> Result<(), RootlessError> {
    use nix::fcntl::{F_SETFD, FdFlag, fcntl};
    fcntl(fd, F_SETFD(FdFlag::empty()))
        .map(drop)
        .map_err(|e| RootlessError::Io {
            what: "clearing close-on-exec".to_owned(),
            source: e.into(),
        })
}

/// The parent side: starts this program again (`/proc/self/exe` with the
/// same arguments) as the namespace's first process, maps its ids with
/// `newuidmap`/`newgidmap`, and waits for it. Call it while the process is
/// single-threaded. Returns the child's exit status.
pub fn run_in_namespace(plan: &IdMapPlan) -> Result<ExitStatus, RootlessError> {
    let (to_parent_r, to_parent_w) = pipe()?;
    let (to_child_r, to_child_w) = pipe()?;
    inheritable(&to_parent_w)?;
    inheritable(&to_child_r)?;
    let exe = PathBuf::from("/proc/self/exe");
    let mut cmd = Command::new(&exe);
    cmd.args(std::env::args_os().skip(1)).env(
        SYNC_ENV,
        format!("{},{}", to_child_r.as_raw_fd(), to_parent_w.as_raw_fd()),
    );
    // argv[0] as the user typed it, so messages look the same.
    if let Some(arg0) = std::env::args_os().next() {
        use std::os::unix::process::CommandExt as _;
        cmd.arg0(arg0);
    }
    let mut child = cmd.spawn().map_err(|source| RootlessError::Spawn {
        program: exe.clone(),
        source,
    })?;
    drop(to_parent_w);
    drop(to_child_r);
    let mut line = String::new();
    BufReader::new(fs::File::from(to_parent_r))
        .read_line(&mut line)
        .map_err(io_err("waiting for the namespace"))?;
    let line = line.trim_end();
    if line != "ready" {
        let _ = child.wait();
        return Err(RootlessError::Unshare(
            line.strip_prefix("error: ")
                .unwrap_or(if line.is_empty() {
                    "the child exited before creating it"
                } else {
                    line
                })
                .to_owned(),
        ));
    }
    let pid = child.id().to_string();
    let who = plan
        .user
        .name
        .clone()
        .unwrap_or_else(|| plan.user.uid.to_string());
    for (tool, own, ranges) in [
        (&plan.newuidmap, plan.user.uid, &plan.uids),
        (&plan.newgidmap, plan.user.gid, &plan.gids),
    ] {
        let args = IdMapPlan::map_args(own, ranges);
        let out = Command::new(tool).arg(&pid).args(&args).output();
        let failure = match out {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "{}{}",
                String::from_utf8_lossy(&o.stderr).trim(),
                if o.stderr.is_empty() {
                    format!("{}", o.status)
                } else {
                    String::new()
                }
            )),
            Err(e) => Some(e.to_string()),
        };
        if let Some(output) = failure {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RootlessError::Map {
                tool: tool.display().to_string(),
                args: format!("{pid} {}", args.join(" ")),
                who: who.clone(),
                output,
            });
        }
    }
    let mut w = fs::File::from(to_child_w);
    w.write_all(b"mapped\n")
        .map_err(io_err("signalling the namespace"))?;
    drop(w);
    // Ctrl-C reaches both processes (same process group): the child cancels
    // its build and exits; this one must outlive it to pass its status on.
    crate::sys::ignore_interrupts();
    child
        .wait()
        .map_err(io_err("waiting for kiln in the namespace"))
}

/// The child side: when `SYNC_ENV` is set, enters a new user and mount
/// namespace, waits until the parent has mapped its ids, and becomes root
/// there. Returns whether it did (`false`: not a rootless child). Call it
/// first thing in `main`, while the process is single-threaded.
pub fn enter_if_child() -> Result<bool, RootlessError> {
    let Some(v) = std::env::var_os(SYNC_ENV) else {
        return Ok(false);
    };
    // A kiln that kiln started inside the namespace (`--check-reproducible`
    // runs this binary again) inherits the variable: it is rootless already.
    if nix::unistd::geteuid().is_root() && kiln_snapshot::in_user_namespace() {
        return Ok(true);
    }
    let bad = || RootlessError::Io {
        what: format!("invalid {SYNC_ENV}"),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    };
    let (r, w) = v.to_str().and_then(|s| s.split_once(',')).ok_or_else(bad)?;
    let r: i32 = r.parse().map_err(|_| bad())?;
    let w: i32 = w.parse().map_err(|_| bad())?;
    // The descriptors must be open pipes we were given, not arbitrary fds.
    for fd in [r, w] {
        if fd < 3 || !Path::new(&format!("/proc/self/fd/{fd}")).exists() {
            return Err(bad());
        }
    }
    let (r, w) = crate::sys::adopt_fds(r, w);
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(|e| io_err("prctl")(e.into()))?;
    let mut to_parent = fs::File::from(w);
    let flags = nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS;
    if let Err(e) = nix::sched::unshare(flags) {
        // The parent reports it (once).
        let _ = writeln!(to_parent, "error: unshare(CLONE_NEWUSER|CLONE_NEWNS): {e}");
        std::process::exit(4);
    }
    to_parent
        .write_all(b"ready\n")
        .map_err(io_err("signalling the parent"))?;
    drop(to_parent);
    let mut line = String::new();
    BufReader::new(fs::File::from(r))
        .read_line(&mut line)
        .map_err(io_err("waiting for the id mapping"))?;
    if line.trim_end() != "mapped" {
        // The parent reports why; this process just ends.
        std::process::exit(4);
    }
    // Host supplementary groups are unmapped (nogroup) here: drop them.
    let _ = nix::unistd::setgroups(&[]);
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| io_err("making / private in the user namespace")(e.into()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> HostUser {
        HostUser {
            uid: 1000,
            gid: 1000,
            name: Some("ci".to_owned()),
        }
    }

    #[test]
    fn ranges_by_name_and_by_uid_in_file_order() {
        let text = "# comment\nother:1:5\nci:100000:65536\n\n1000:300000:10\nbroken line\n";
        let r = parse_subid(text, Path::new("/etc/subuid"), &user()).unwrap();
        assert_eq!(
            r,
            vec![
                IdRange {
                    start: 100000,
                    count: 65536
                },
                IdRange {
                    start: 300000,
                    count: 10
                }
            ]
        );
        assert_eq!(
            IdMapPlan::map_args(1000, &r),
            [
                "0", "1000", "1", "1", "100000", "65536", "65537", "300000", "10"
            ]
        );
    }

    /// A fake host in a temporary directory: subordinate id files, a
    /// `/proc/sys` with the given sysctls, and a `PATH` with or without the
    /// two tools.
    fn fake_host(subid: &str, sysctls: &[(&str, &str)], tools: bool) -> (tempfile::TempDir, Host) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("subuid"), subid).unwrap();
        fs::write(d.join("subgid"), subid).unwrap();
        for (k, v) in sysctls {
            let p = d.join("sys").join(k);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("{v}\n")).unwrap();
        }
        fs::create_dir_all(d.join("bin")).unwrap();
        if tools {
            for t in ["newuidmap", "newgidmap"] {
                fs::write(d.join("bin").join(t), "#!/bin/sh\n").unwrap();
                fs::set_permissions(d.join("bin").join(t), fs::Permissions::from_mode(0o755))
                    .unwrap();
            }
        }
        let host = Host {
            subuid: d.join("subuid"),
            subgid: d.join("subgid"),
            proc_sys: d.join("sys"),
            path: d.join("bin").into_os_string(),
        };
        (dir, host)
    }

    #[test]
    fn preflight_gives_the_plan_on_a_host_that_allows_it() {
        let (_d, host) = fake_host(
            "ci:100000:65536\n",
            &[("user/max_user_namespaces", "15000")],
            true,
        );
        let plan = preflight(&host, &user()).unwrap();
        assert_eq!(plan.uid_count(), 65537);
        assert!(plan.newuidmap.ends_with("bin/newuidmap"));
        assert_eq!(
            plan.describe(),
            "user namespace: uid 0 = host uid 1000, uids 1..65536 = host 100000..165535; gid 0 = host gid 1000, gids 1..65536 = host 100000..165535"
        );
    }

    #[test]
    fn no_range_names_the_usermod_command() {
        let (_d, host) = fake_host("other:100000:65536\n", &[], true);
        let e = preflight(&host, &user()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "rootless mode: no subordinate uid range for user ci in {}: add a range: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ci",
                host.subuid.display()
            )
        );
    }

    #[test]
    fn missing_tools_name_the_package() {
        let (_d, host) = fake_host("ci:100000:65536\n", &[], false);
        let e = preflight(&host, &user()).unwrap_err().to_string();
        assert_eq!(
            e,
            "rootless mode: newuidmap not found in PATH: install the uidmap package (apt-get install uidmap)"
        );
    }

    #[test]
    fn disabled_user_namespaces_name_the_sysctl() {
        for (key, setting, fix) in [
            (
                "user/max_user_namespaces",
                "user.max_user_namespaces",
                "15000",
            ),
            (
                "kernel/unprivileged_userns_clone",
                "kernel.unprivileged_userns_clone",
                "1",
            ),
        ] {
            let value = "0";
            let (_d, host) = fake_host("ci:100000:65536\n", &[(key, value)], true);
            let e = preflight(&host, &user()).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "rootless mode: user namespaces are disabled on this host ({setting} = 0): enable them with sysctl -w {setting}={fix}"
                )
            );
        }
        let (_d, host) = fake_host(
            "ci:100000:65536\n",
            &[("kernel/apparmor_restrict_unprivileged_userns", "1")],
            true,
        );
        let e = preflight(&host, &user()).unwrap_err().to_string();
        assert!(
            e.contains("kernel.apparmor_restrict_unprivileged_userns = 1"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_number_names_file_and_line() {
        let e = parse_subid("ci:x:5\n", Path::new("/f"), &user()).unwrap_err();
        assert_eq!(e.to_string(), "rootless mode: /f:1: invalid start \"x\"");
        let e = parse_subid("ci:4294967295:2\n", Path::new("/f"), &user()).unwrap_err();
        assert!(e.to_string().contains("/f:1: range"), "{e}");
    }
}
