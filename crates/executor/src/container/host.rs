//! What `--isolation=container` needs to know about the machine before it
//! touches anything: whether this is a throwaway container at all (the
//! mode replaces the root filesystem), whether kiln has the capabilities it
//! needs, whether the kiln binary survives its libraries being replaced,
//! and which paths are mounts (which the mode leaves alone).
//!
//! Pure functions over [`HostFacts`], which the tests fake.

use std::path::PathBuf;

/// What the machine says about itself.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    /// Marker files container engines leave that exist here.
    pub markers: Vec<String>,
    /// The environment variables that name a container manager.
    pub env: Vec<(String, String)>,
    /// `/proc/self/cgroup`.
    pub cgroup: String,
    /// `/proc/self/mountinfo`.
    pub mountinfo: String,
    /// `/proc/self/status`.
    pub status: String,
    /// `/proc/self/maps`.
    pub maps: String,
    /// The effective user id.
    pub euid: u32,
}

/// Marker files of container engines: Docker (and engines that copy it,
/// such as GitLab's docker executor and GitHub Actions' container jobs),
/// Podman and Buildah.
pub const MARKERS: [&str; 2] = ["/.dockerenv", "/run/.containerenv"];

/// Environment variables that say "this is a container".
const ENV: [(&str, &str); 2] = [
    ("KUBERNETES_SERVICE_HOST", "a Kubernetes pod"),
    (
        "container",
        "the container manager's variable (systemd's convention)",
    ),
];

impl HostFacts {
    /// The facts of this process.
    pub fn read() -> HostFacts {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        HostFacts {
            markers: MARKERS
                .iter()
                .filter(|m| std::fs::symlink_metadata(m).is_ok())
                .map(|m| (*m).to_owned())
                .collect(),
            env: ENV
                .iter()
                .filter_map(|(k, _)| {
                    std::env::var(k)
                        .ok()
                        .filter(|v| !v.is_empty())
                        .map(|v| ((*k).to_owned(), v))
                })
                .collect(),
            cgroup: read("/proc/self/cgroup"),
            mountinfo: read("/proc/self/mountinfo"),
            status: read("/proc/self/status"),
            maps: read("/proc/self/maps"),
            euid: nix::unistd::geteuid().as_raw(),
        }
    }
}

/// Why kiln believes it runs in a container: one line per clue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence(pub Vec<String>);

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// Path fragments of a container's control group (cgroup v1, or v2 without
/// a cgroup namespace) as Docker, containerd, Kubernetes, Podman, LXC and
/// GitHub's runners name them.
const CGROUP_CLUES: [&str; 7] = [
    "/docker/",
    "/docker-",
    "kubepods",
    "/libpod-",
    "/lxc/",
    "containerd",
    "/actions_job/",
];

/// Directories of container engines where a container's root overlay keeps
/// its layers.
const OVERLAY_CLUES: [&str; 4] = [
    "/var/lib/docker",
    "/var/lib/containers/",
    "containerd",
    "/var/lib/kubelet/",
];

/// Files container engines bind-mount into every container (Docker, Podman,
/// containerd's CRI plugin for Kubernetes, GitLab's and GitHub's runners).
const ENGINE_FILES: [&str; 3] = ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];

/// What the machine looks like: the clues that it is a container, and why
/// it is not one even so.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assessment {
    /// Clues of a container engine.
    pub clues: Vec<String>,
    /// Why this is a machine's own root filesystem (refused whatever the
    /// clues say), if it is.
    pub machine: Option<String>,
}

/// The clues that this is a throwaway container, if it is one.
///
/// The rules: a container engine's marker file (`/.dockerenv`,
/// `/run/.containerenv`), an engine's environment variable
/// (`KUBERNETES_SERVICE_HOST`, `container`), a control group of an engine
/// (cgroup v1, or v2 without a cgroup namespace), a root overlay whose
/// layers are in an engine's directory, and `/etc/hosts`, `/etc/hostname`
/// or `/etc/resolv.conf` bind-mounted from elsewhere: one clue is enough,
/// *unless* the root filesystem is a block device's own filesystem mounted
/// whole (a machine's disk: a VM or a server, which may carry a stray
/// `/.dockerenv` from the image it was made from), which is never taken for
/// a container. Process 1 not being systemd or init is no rule: a VM's
/// agent or a minimal init is pid 1 of machines too.
pub fn container_evidence(f: &HostFacts) -> Option<Evidence> {
    let a = assess(f);
    if a.machine.is_some() || a.clues.is_empty() {
        return None;
    }
    Some(Evidence(a.clues))
}

/// The clues and the counter-evidence (see [`container_evidence`]).
pub fn assess(f: &HostFacts) -> Assessment {
    let mut clues = Vec::new();
    for m in &f.markers {
        clues.push(format!("{m} exists"));
    }
    for (k, v) in &f.env {
        let what = ENV.iter().find(|(n, _)| n == k).map_or("", |(_, w)| *w);
        clues.push(format!("{k}={v} ({what})"));
    }
    if let Some(line) = f
        .cgroup
        .lines()
        .find(|l| CGROUP_CLUES.iter().any(|c| l.contains(c)))
    {
        clues.push(format!("/proc/self/cgroup: {line}"));
    }
    let mounts = parse_mountinfo(&f.mountinfo);
    let root = mounts
        .iter()
        .rev()
        .find(|m| m.point == std::path::Path::new("/"));
    if let Some(m) = root
        && m.fstype == "overlay"
        && OVERLAY_CLUES.iter().any(|c| m.options.contains(c))
    {
        clues.push("the root filesystem is a container engine's overlay".to_owned());
    }
    let bound: Vec<&str> = ENGINE_FILES
        .iter()
        .copied()
        .filter(|file| {
            mounts
                .iter()
                .any(|m| m.point == std::path::Path::new(file) && m.root != "/")
        })
        .collect();
    if !bound.is_empty() {
        clues.push(format!("{} bind-mounted by an engine", bound.join(", ")));
    }
    let machine = root.and_then(|m| {
        let source = m.options.split(' ').next().unwrap_or("");
        (m.root == "/" && source.starts_with("/dev/") && DISK_TYPES.contains(&m.fstype.as_str()))
            .then(|| {
                format!(
                    "the root filesystem is {source} ({}), a disk's own filesystem mounted whole: \
                     a machine, not a container",
                    m.fstype
                )
            })
    });
    Assessment { clues, machine }
}

/// Disk filesystems a machine boots from (a container's root is an
/// overlay, or a subvolume or directory of one of these).
const DISK_TYPES: [&str; 5] = ["ext4", "ext3", "ext2", "xfs", "btrfs"];

/// Capabilities the mode needs, with why (their bits in `CapEff`).
pub const NEEDED_CAPS: [(u32, &str, &str); 7] = [
    (0, "CAP_CHOWN", "to give files their owners"),
    (
        1,
        "CAP_DAC_OVERRIDE",
        "to read and write files of any owner",
    ),
    (
        3,
        "CAP_FOWNER",
        "to set modes and times of files of any owner",
    ),
    (4, "CAP_FSETID", "to keep setuid and setgid bits"),
    (5, "CAP_KILL", "to stop a step's processes"),
    (6, "CAP_SETGID", "to run a step as its USER's groups"),
    (7, "CAP_SETUID", "to run a step as its USER"),
];

/// The effective capabilities of `status` (`/proc/self/status`).
pub fn effective_caps(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// The needed capabilities `cap_eff` lacks: `(name, why)`.
pub fn missing_caps(cap_eff: u64) -> Vec<(&'static str, &'static str)> {
    NEEDED_CAPS
        .iter()
        .filter(|(bit, _, _)| cap_eff & (1 << bit) == 0)
        .map(|(_, name, why)| (*name, *why))
        .collect()
}

/// Whether the process maps no shared library (`/proc/self/maps`): a
/// static binary, which the mode needs, since it replaces `/lib` with the
/// build's files.
pub fn is_static(maps: &str) -> bool {
    !maps.lines().any(|l| {
        let path = l.split_whitespace().nth(5).unwrap_or("");
        path.starts_with('/')
            && (path.ends_with(".so") || path.contains(".so.") || path.contains("/ld-linux"))
    })
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The directory of the filesystem mounted there (`/`: all of it).
    pub root: String,
    /// Where it is mounted.
    pub point: PathBuf,
    /// The filesystem type.
    pub fstype: String,
    /// The mount source and the superblock options.
    pub options: String,
}

/// The mounts of `mountinfo` (octal escapes in mount points decoded).
pub fn parse_mountinfo(mountinfo: &str) -> Vec<MountInfo> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut l = left.split(' ');
            let root = l.nth(3)?;
            let point = l.next()?;
            let mut r = right.split(' ');
            let fstype = r.next()?.to_owned();
            let options = r.collect::<Vec<_>>().join(" ");
            Some(MountInfo {
                root: String::from_utf8_lossy(&unescape(root)).into_owned(),
                point: PathBuf::from(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&unescape(point)),
                ),
                fstype,
                options,
            })
        })
        .collect()
}

/// The kernel's octal escapes (`\040` for a space) decoded.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1..i + 4)
                .is_some_and(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
";
    const DOCKER_MOUNTINFO: &str = "\
600 500 0:50 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/docker26/overlay2/l/X:/var/lib/docker26/overlay2/l/Y,upperdir=/var/lib/docker26/overlay2/abc/diff,workdir=/var/lib/docker26/overlay2/abc/work
601 600 0:52 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
610 600 254:1 /var/lib/docker26/containers/abc/hosts /etc/hosts rw,relatime - ext4 /dev/vda1 rw
611 600 254:1 /srv/a\\040b /work\\040dir rw,relatime - ext4 /dev/vda1 rw
";

    #[test]
    fn a_vm_is_not_a_container() {
        let f = HostFacts {
            cgroup: "9:name=systemd:/\n0::/\n".to_owned(),
            mountinfo: VM_MOUNTINFO.to_owned(),
            ..HostFacts::default()
        };
        assert_eq!(container_evidence(&f), None);
    }

    /// A VM made from a container image (this project's CI machines): a
    /// stray /.dockerenv, pid 1 an agent, the root a disk's filesystem.
    #[test]
    fn a_vm_with_a_stray_dockerenv_is_a_machine() {
        let f = HostFacts {
            markers: vec!["/.dockerenv".to_owned()],
            cgroup: "4:memory:/process_api/8444a512\n0::/\n".to_owned(),
            mountinfo: "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n".to_owned(),
            ..HostFacts::default()
        };
        assert_eq!(container_evidence(&f), None);
        let a = assess(&f);
        assert_eq!(a.clues, ["/.dockerenv exists"]);
        assert!(a.machine.unwrap().contains("/dev/vda (ext4)"));
    }

    #[test]
    fn containers_are_recognised_by_any_clue() {
        let docker = HostFacts {
            markers: vec!["/.dockerenv".to_owned()],
            mountinfo: DOCKER_MOUNTINFO.to_owned(),
            ..HostFacts::default()
        };
        let e = container_evidence(&docker).unwrap();
        assert_eq!(
            e.0,
            [
                "/.dockerenv exists",
                "the root filesystem is a container engine's overlay",
                "/etc/hosts bind-mounted by an engine"
            ]
        );
        // A Kubernetes pod on containerd, the files alone.
        let cri = HostFacts {
            mountinfo: "1 0 0:1 / / rw - overlay overlay rw,lowerdir=/x\n\
                        2 1 254:1 /var/lib/kubelet/pods/p/etc-hosts /etc/hosts rw - ext4 /dev/sda1 rw\n"
                .to_owned(),
            ..HostFacts::default()
        };
        assert_eq!(
            container_evidence(&cri).unwrap().0,
            ["/etc/hosts bind-mounted by an engine"]
        );
        let pod = HostFacts {
            env: vec![("KUBERNETES_SERVICE_HOST".to_owned(), "10.0.0.1".to_owned())],
            cgroup: "0::/\n".to_owned(),
            ..HostFacts::default()
        };
        assert!(container_evidence(&pod).unwrap().0[0].contains("Kubernetes"));
        let v1 = HostFacts {
            cgroup: "4:devices:/kubepods/besteffort/pod1/abc\n".to_owned(),
            ..HostFacts::default()
        };
        assert!(container_evidence(&v1).unwrap().0[0].contains("kubepods"));
        // An overlay root that is not an engine's (a live CD) is no clue.
        let live = HostFacts {
            mountinfo: "1 0 0:1 / / rw - overlay overlay rw,lowerdir=/run/live/rootfs\n".to_owned(),
            ..HostFacts::default()
        };
        assert_eq!(container_evidence(&live), None);
    }

    #[test]
    fn capabilities_name_what_is_missing() {
        // Docker's default set.
        assert!(missing_caps(0x0000_0000_a804_25fb).is_empty());
        // --cap-drop=ALL.
        let names: Vec<&str> = missing_caps(0).iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "CAP_CHOWN",
                "CAP_DAC_OVERRIDE",
                "CAP_FOWNER",
                "CAP_FSETID",
                "CAP_KILL",
                "CAP_SETGID",
                "CAP_SETUID"
            ]
        );
        assert_eq!(
            effective_caps("Name:\tkiln\nCapEff:\t00000000a80425fb\n"),
            0xa804_25fb
        );
    }

    #[test]
    fn static_binaries_map_no_library() {
        let dynamic = "\
55d0 r--p 00000000 fe:01 1 /kiln/bin/kiln
7f00 r-xp 00028000 fe:01 2 /usr/lib/x86_64-linux-gnu/libc.so.6
7f01 r--p 00000000 fe:01 3 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
";
        let stat = "\
55d0 r--p 00000000 fe:01 1 /kiln/bin/kiln
7ffd rw-p 00000000 00:00 0 [stack]
";
        assert!(!is_static(dynamic));
        assert!(is_static(stat));
    }

    #[test]
    fn mount_points_are_decoded() {
        let points: Vec<PathBuf> = parse_mountinfo(DOCKER_MOUNTINFO)
            .into_iter()
            .map(|m| m.point)
            .collect();
        assert_eq!(
            points,
            [
                PathBuf::from("/"),
                PathBuf::from("/proc"),
                PathBuf::from("/etc/hosts"),
                PathBuf::from("/work dir")
            ]
        );
    }
}
