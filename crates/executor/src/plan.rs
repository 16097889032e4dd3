//! The container's filesystem setup as data: the mounts and symlinks a RUN
//! step gets, in order, computed from the spec alone. The helper applies them
//! with real system calls; tests compare them with expectations in
//! `testdata/executor/steps/` without needing root.
//!
//! The set mirrors what BuildKit's runc executor gives a RUN step (checked by
//! running `mount` and `ls -la /dev` in a BuildKit build): proc; a tmpfs `/dev`
//! with the six usual device nodes, devpts, shm and mqueue; read-only sysfs;
//! read-only bind mounts of generated `/etc/hosts` and `/etc/resolv.conf`.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::spec::{MountKind, RunSpec};

/// Device nodes bind-mounted from the host into the container's `/dev`.
pub(crate) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// What to create at a mount target that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetKind {
    Dir,
    File,
}

/// One setup step; container paths are absolute inside the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Mount {
        source: PathBuf,
        target: String,
        fstype: Option<&'static str>,
        flags: MsFlags,
        data: Option<String>,
        kind: TargetKind,
        /// Remount read-only after a bind mount (bind ignores `MS_RDONLY`).
        readonly_bind: bool,
    },
    Symlink {
        path: String,
        to: String,
    },
    /// Makes the mount at `target` read-only, with `flags` (a tmpfs once
    /// the mount points in it exist).
    Remount {
        target: String,
        flags: MsFlags,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
                kind,
                readonly_bind,
            } => {
                let mut names: Vec<&str> = Vec::new();
                for (flag, name) in [
                    (MsFlags::MS_RDONLY, "ro"),
                    (MsFlags::MS_NOSUID, "nosuid"),
                    (MsFlags::MS_NODEV, "nodev"),
                    (MsFlags::MS_NOEXEC, "noexec"),
                    (MsFlags::MS_STRICTATIME, "strictatime"),
                    (MsFlags::MS_BIND, "bind"),
                    (MsFlags::MS_REC, "rec"),
                ] {
                    if flags.contains(flag) {
                        names.push(name);
                    }
                }
                if *readonly_bind {
                    names.push("remount-ro");
                }
                write!(
                    f,
                    "mount {} on {target} type {} ({}){}{}",
                    source.display(),
                    fstype.unwrap_or("none"),
                    names.join(","),
                    data.as_deref()
                        .map(|d| format!(" data={d}"))
                        .unwrap_or_default(),
                    match kind {
                        TargetKind::Dir => "",
                        TargetKind::File => " [file]",
                    }
                )
            }
            Step::Symlink { path, to } => write!(f, "symlink {path} -> {to}"),
            Step::Remount { target, flags } => {
                let names: Vec<&str> = [
                    (MsFlags::MS_NOSUID, "nosuid"),
                    (MsFlags::MS_NODEV, "nodev"),
                    (MsFlags::MS_NOEXEC, "noexec"),
                ]
                .into_iter()
                .filter(|(f, _)| flags.contains(*f))
                .map(|(_, n)| n)
                .collect();
                write!(f, "remount {target} read-only ({})", names.join(","))
            }
        }
    }
}

/// Where the helper writes the file of secret mount number `index` (on the
/// step's private tmpfs at `secrets`).
pub(crate) fn secret_file(secrets: &Path, index: usize) -> PathBuf {
    secrets.join(index.to_string())
}

/// The setup steps of `spec`, given where the generated `hosts` and
/// `resolv.conf` files are and the directory of secret files.
pub(crate) fn container_steps(
    spec: &RunSpec,
    hosts: &Path,
    resolv: &Path,
    secrets: &Path,
) -> Vec<Step> {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut steps = vec![
        Step::Mount {
            source: PathBuf::from("proc"),
            target: "/proc".to_owned(),
            fstype: Some("proc"),
            flags: nosuid_nodev_noexec,
            data: None,
            kind: TargetKind::Dir,
            readonly_bind: false,
        },
        Step::Mount {
            source: PathBuf::from("tmpfs"),
            target: "/dev".to_owned(),
            fstype: Some("tmpfs"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            data: Some("mode=755,size=65536k".to_owned()),
            kind: TargetKind::Dir,
            readonly_bind: false,
        },
    ];
    for d in DEVICES {
        steps.push(Step::Mount {
            source: PathBuf::from(format!("/dev/{d}")),
            target: format!("/dev/{d}"),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
            kind: TargetKind::File,
            readonly_bind: false,
        });
    }
    steps.extend([
        Step::Mount {
            source: PathBuf::from("devpts"),
            target: "/dev/pts".to_owned(),
            fstype: Some("devpts"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5".to_owned()),
            kind: TargetKind::Dir,
            readonly_bind: false,
        },
        Step::Mount {
            source: PathBuf::from("shm"),
            target: "/dev/shm".to_owned(),
            fstype: Some("tmpfs"),
            flags: nosuid_nodev_noexec,
            data: Some("mode=1777,size=65536k".to_owned()),
            kind: TargetKind::Dir,
            readonly_bind: false,
        },
        Step::Mount {
            source: PathBuf::from("mqueue"),
            target: "/dev/mqueue".to_owned(),
            fstype: Some("mqueue"),
            flags: nosuid_nodev_noexec,
            data: None,
            kind: TargetKind::Dir,
            readonly_bind: false,
        },
        Step::Symlink {
            path: "/dev/fd".to_owned(),
            to: "/proc/self/fd".to_owned(),
        },
        Step::Symlink {
            path: "/dev/stdin".to_owned(),
            to: "/proc/self/fd/0".to_owned(),
        },
        Step::Symlink {
            path: "/dev/stdout".to_owned(),
            to: "/proc/self/fd/1".to_owned(),
        },
        Step::Symlink {
            path: "/dev/stderr".to_owned(),
            to: "/proc/self/fd/2".to_owned(),
        },
        Step::Symlink {
            path: "/dev/ptmx".to_owned(),
            to: "pts/ptmx".to_owned(),
        },
        Step::Mount {
            source: PathBuf::from("sysfs"),
            target: "/sys".to_owned(),
            fstype: Some("sysfs"),
            // BuildKit's insecure mode makes sysfs writable.
            flags: if spec.privileged {
                nosuid_nodev_noexec
            } else {
                nosuid_nodev_noexec | MsFlags::MS_RDONLY
            },
            data: None,
            kind: TargetKind::Dir,
            readonly_bind: false,
        },
        Step::Mount {
            source: hosts.to_path_buf(),
            target: "/etc/hosts".to_owned(),
            fstype: None,
            flags: MsFlags::MS_BIND | nosuid_nodev_noexec,
            data: None,
            kind: TargetKind::File,
            readonly_bind: true,
        },
        Step::Mount {
            source: resolv.to_path_buf(),
            target: "/etc/resolv.conf".to_owned(),
            fstype: None,
            flags: MsFlags::MS_BIND | nosuid_nodev_noexec,
            data: None,
            kind: TargetKind::File,
            readonly_bind: true,
        },
    ]);
    for (i, m) in spec.mounts.iter().enumerate() {
        steps.push(match &m.kind {
            MountKind::Bind { source, readonly } => Step::Mount {
                source: source.clone(),
                target: m.target.clone(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                data: None,
                kind: if source.is_dir() {
                    TargetKind::Dir
                } else {
                    TargetKind::File
                },
                readonly_bind: *readonly,
            },
            MountKind::Tmpfs { size } => Step::Mount {
                source: PathBuf::from("tmpfs"),
                target: m.target.clone(),
                fstype: Some("tmpfs"),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                data: (*size > 0).then(|| format!("size={size}")),
                kind: TargetKind::Dir,
                readonly_bind: false,
            },
            MountKind::SecretFile { .. } => Step::Mount {
                source: secret_file(secrets, i),
                target: m.target.clone(),
                fstype: None,
                flags: MsFlags::MS_BIND | nosuid_nodev_noexec,
                data: None,
                kind: TargetKind::File,
                readonly_bind: true,
            },
        });
    }
    steps
}

/// The cgroup filesystems a step sees at `/sys/fs/cgroup`: its own groups
/// (`groups`: name, host directory, as the caller made them), bind-mounted
/// read-only, so each shows the step's group as its root, as the step's
/// cgroup namespace does. A v2-only host (one group named `""`): the group
/// itself at `/sys/fs/cgroup`, as runc mounts cgroup2; otherwise a tmpfs
/// holding one directory per hierarchy (`devices`, `unified`, `memory` and
/// `pids` with limits), made read-only once they are mounted. Binds, not
/// cgroup mounts: mounting a v1 hierarchy takes milliseconds. Writable for a
/// privileged (`--security=insecure`) step, as in BuildKit. Nothing without
/// groups (rootless).
pub(crate) fn cgroup_steps(groups: &[(String, PathBuf)], privileged: bool) -> Vec<Step> {
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let bind = |source: &Path, target: String| Step::Mount {
        source: source.to_path_buf(),
        target,
        fstype: None,
        flags: MsFlags::MS_BIND | base,
        data: None,
        kind: TargetKind::Dir,
        readonly_bind: !privileged,
    };
    match groups {
        [] => Vec::new(),
        [(name, dir)] if name.is_empty() => vec![bind(dir, "/sys/fs/cgroup".to_owned())],
        _ => {
            let mut steps = vec![Step::Mount {
                source: PathBuf::from("tmpfs"),
                target: "/sys/fs/cgroup".to_owned(),
                fstype: Some("tmpfs"),
                flags: base,
                data: Some("mode=755".to_owned()),
                kind: TargetKind::Dir,
                readonly_bind: false,
            }];
            for (name, dir) in groups {
                steps.push(bind(dir, format!("/sys/fs/cgroup/{name}")));
            }
            if !privileged {
                steps.push(Step::Remount {
                    target: "/sys/fs/cgroup".to_owned(),
                    flags: base,
                });
            }
            steps
        }
    }
}

/// `/etc/hosts` as BuildKit writes it.
pub(crate) fn hosts_file(hostname: &str) -> String {
    format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_testkit::{assert_all, case_dirs, check, testdata};

    /// `testdata/executor/steps/<case>/spec.json` → the steps, one per line,
    /// compared with `steps`.
    #[test]
    fn steps_cases() {
        let cases = case_dirs(&testdata().join("executor/steps"));
        let mut failures = Vec::new();
        for case in &cases {
            let spec: RunSpec =
                serde_json::from_slice(&std::fs::read(case.join("spec.json")).unwrap()).unwrap();
            let steps = container_steps(
                &spec,
                Path::new("/m.hosts"),
                Path::new("/m.resolv"),
                Path::new("/m.secrets"),
            );
            let text: String = steps.iter().map(|s| format!("{s}\n")).collect();
            failures.extend(check(&case.join("steps"), &text));
        }
        assert_all(failures, cases.len());
    }

    /// `testdata/executor/cgroups/<case>/groups` (one `name host-dir` a
    /// line, `-` for the empty name) → the cgroup mounts of a step, then
    /// those of a privileged one.
    #[test]
    fn cgroup_cases() {
        let cases = case_dirs(&testdata().join("executor/cgroups"));
        let mut failures = Vec::new();
        for case in &cases {
            let text = std::fs::read_to_string(case.join("groups")).unwrap();
            let groups: Vec<(String, PathBuf)> = text
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(n, d)| {
                    (
                        if n == "-" {
                            String::new()
                        } else {
                            n.to_owned()
                        },
                        PathBuf::from(d),
                    )
                })
                .collect();
            let mut out = String::new();
            for privileged in [false, true] {
                out.push_str(if privileged {
                    "# privileged\n"
                } else {
                    "# default\n"
                });
                for s in cgroup_steps(&groups, privileged) {
                    out.push_str(&format!("{s}\n"));
                }
            }
            failures.extend(check(&case.join("steps"), &out));
        }
        assert_all(failures, cases.len());
    }
}
