//! The seccomp filter of a RUN step: Docker's default profile
//! (`seccomp/default.json`, moby/profiles, kept as data with its license),
//! compiled for this machine with libseccomp, as runc compiles it for a
//! BuildKit step.
//!
//! The profile is read the way moby's `setupSeccomp` reads it: the native
//! architecture and the sub-architectures its `archMap` names (x86_64 adds
//! x86 and x32), each rule kept or skipped by its `includes`/`excludes`
//! (capabilities of the step, the architecture as Go names it, a minimum
//! kernel), syscall names this libseccomp does not know skipped (as runc
//! does). Like runc's `patchbpf`, syscalls newer than any this libseccomp
//! knows fail with `ENOSYS` rather than the profile's default `EPERM`, so
//! that programs fall back to older calls instead of failing.
//!
//! The filter is compiled once per kiln process (`filter`) and its BPF
//! bytes travel to each step's helper in the request; the helper installs
//! them (`sys::install_seccomp`) before it gives up `CAP_SYS_ADMIN`, so no
//! `PR_SET_NO_NEW_PRIVS` is needed and setuid programs work as under
//! BuildKit.

use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use caps::Capability;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::Deserialize;

/// Docker's default profile, unchanged (see `seccomp/README.md`).
const PROFILE: &str = include_str!("../seccomp/default.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<i32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    syscalls: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<i32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// What a profile is compiled for.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The native architecture as libseccomp names it (`SCMP_ARCH_X86_64`).
    pub arch: &'static str,
    /// The same as Go's `runtime.GOARCH` (`amd64`), which `arches` use.
    pub goarch: &'static str,
    /// The step's capabilities, `CAP_…` names.
    pub caps: Vec<String>,
    /// The running kernel, `(major, minor)`.
    pub kernel: (u32, u32),
}

impl Target {
    /// This machine, for a step with `caps`.
    pub(crate) fn host(caps: &[Capability]) -> Target {
        let (arch, goarch) = match std::env::consts::ARCH {
            "x86_64" => ("SCMP_ARCH_X86_64", "amd64"),
            "x86" => ("SCMP_ARCH_X86", "386"),
            "aarch64" => ("SCMP_ARCH_AARCH64", "arm64"),
            "arm" => ("SCMP_ARCH_ARM", "arm"),
            "riscv64" => ("SCMP_ARCH_RISCV64", "riscv64"),
            "s390x" => ("SCMP_ARCH_S390X", "s390x"),
            "powerpc64" => ("SCMP_ARCH_PPC64LE", "ppc64le"),
            "loongarch64" => ("SCMP_ARCH_LOONGARCH64", "loong64"),
            "mips64" => ("SCMP_ARCH_MIPSEL64", "mips64le"),
            _ => ("SCMP_ARCH_NATIVE", "unknown"),
        };
        Target {
            arch,
            goarch,
            caps: caps.iter().map(|c| c.to_string()).collect(),
            kernel: kernel_version(),
        }
    }
}

fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_version(&release).unwrap_or((0, 0))
}

fn parse_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// The rules of `profile` that apply to `target`, as moby's `setupSeccomp`
/// selects them: `(names, action, errno, args)`.
fn applicable<'p>(profile: &'p Profile, target: &Target) -> Vec<&'p Rule> {
    let has_cap = |c: &String| target.caps.iter().any(|t| t == c);
    profile
        .syscalls
        .iter()
        .filter(|r| {
            if !r.includes.arches.is_empty()
                && !r.includes.arches.iter().any(|a| a == target.goarch)
            {
                return false;
            }
            if !r.includes.caps.is_empty() && !r.includes.caps.iter().all(has_cap) {
                return false;
            }
            if let Some(min) = &r.includes.min_kernel
                && parse_version(min).is_some_and(|v| target.kernel < v)
            {
                return false;
            }
            if r.excludes.arches.iter().any(|a| a == target.goarch) {
                return false;
            }
            if r.excludes.caps.iter().any(has_cap) {
                return false;
            }
            true
        })
        .collect()
}

fn action(name: &str, errno: Option<i32>, default_errno: i32) -> Result<ScmpAction, String> {
    match name {
        "SCMP_ACT_ALLOW" => Ok(ScmpAction::Allow),
        "SCMP_ACT_ERRNO" => Ok(ScmpAction::Errno(errno.unwrap_or(default_errno))),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Ok(ScmpAction::KillThread),
        "SCMP_ACT_KILL_PROCESS" => Ok(ScmpAction::KillProcess),
        "SCMP_ACT_LOG" => Ok(ScmpAction::Log),
        other => Err(format!("seccomp profile: unsupported action {other}")),
    }
}

fn compare(arg: &Arg) -> Result<ScmpArgCompare, String> {
    let op = match arg.op.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        // As runc: `value` is the mask, `valueTwo` what the masked
        // argument must equal.
        "SCMP_CMP_MASKED_EQ" => {
            return Ok(ScmpArgCompare::new(
                arg.index,
                ScmpCompareOp::MaskedEqual(arg.value),
                arg.value_two,
            ));
        }
        other => return Err(format!("seccomp profile: unsupported operator {other}")),
    };
    Ok(ScmpArgCompare::new(arg.index, op, arg.value))
}

/// The compiled filter: classic BPF instructions (`struct sock_filter`,
/// 8 bytes each, native byte order), ready for `seccomp(2)`.
pub(crate) fn compile(target: &Target) -> Result<Vec<u8>, String> {
    let profile: Profile =
        serde_json::from_str(PROFILE).map_err(|e| format!("seccomp profile: {e}"))?;
    compile_profile(&profile, target)
}

fn compile_profile(profile: &Profile, target: &Target) -> Result<Vec<u8>, String> {
    let e = |what: &str, err: libseccomp::error::SeccompError| format!("seccomp: {what}: {err}");
    let default_errno = profile.default_errno_ret.unwrap_or(libc::EPERM);
    let default = action(&profile.default_action, None, default_errno)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(|err| e("new filter", err))?;
    // The filter is only exported here; the helper installs it while it
    // still holds CAP_SYS_ADMIN, so no-new-privileges is not needed.
    ctx.set_ctl_nnp(false).map_err(|err| e("nnp", err))?;
    // A binary tree of syscall numbers rather than a list: fewer
    // instructions per syscall, and less for the kernel to emulate when it
    // builds its per-syscall cache of the filter at every step's start.
    ctx.set_ctl_optimize(2).map_err(|err| e("optimize", err))?;
    let native: ScmpArch = target.arch.parse().map_err(|err| e("architecture", err))?;
    if native != ScmpArch::Native && ScmpArch::native() != native {
        return Err(format!(
            "seccomp: this libseccomp's native architecture is not {}",
            target.arch
        ));
    }
    for m in &profile.arch_map {
        if m.architecture != target.arch {
            continue;
        }
        for sub in m.sub_architectures.iter().flatten() {
            let arch: ScmpArch = sub.parse().map_err(|err| e("architecture", err))?;
            ctx.add_arch(arch).map_err(|err| e(sub, err))?;
        }
    }
    for rule in applicable(profile, target) {
        let act = action(&rule.action, rule.errno_ret, default_errno)?;
        let conds: Vec<ScmpArgCompare> = rule.args.iter().map(compare).collect::<Result<_, _>>()?;
        for name in &rule.names {
            // Unknown to this libseccomp (newer than it, or of another
            // architecture): skipped, as runc does.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let r = if conds.is_empty() {
                ctx.add_rule(act, sc)
            } else {
                ctx.add_rule_conditional(act, sc, &conds)
            };
            r.map_err(|err| e(name, err))?;
        }
    }
    let memfd =
        nix::sys::memfd::memfd_create(c"kiln-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|err| format!("seccomp: memfd: {err}"))?;
    let mut file = std::fs::File::from(memfd);
    ctx.export_bpf(&file).map_err(|err| e("export", err))?;
    let mut bpf = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bpf))
        .map_err(|err| format!("seccomp: reading the filter: {err}"))?;
    Ok(enosys_above(&bpf, native_audit_arch(), max_known_syscall()))
}

/// The highest native syscall number this libseccomp has a name for.
fn max_known_syscall() -> u32 {
    (0..2048)
        .rev()
        .find(|n| {
            ScmpSyscall::from(*n)
                .get_name_by_arch(ScmpArch::native())
                .is_ok()
        })
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(u32::MAX)
}

/// `AUDIT_ARCH_*` of the native architecture (what `seccomp_data.arch`
/// holds), if kiln knows it.
fn native_audit_arch() -> Option<u32> {
    match std::env::consts::ARCH {
        "x86_64" => Some(0xc000_003e),
        "aarch64" => Some(0xc000_00b7),
        "riscv64" => Some(0xc000_00f3),
        "s390x" => Some(0x8000_0016),
        "loongarch64" => Some(0xc000_0102),
        _ => None,
    }
}

/// BPF opcodes (linux/filter.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_JMP_JGT_K: u16 = 0x25;
const BPF_JMP_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const BPF_JMP_JA: u16 = 0x05;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// x32 syscalls are x86_64's with this bit set.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..2].copy_from_slice(&code.to_ne_bytes());
    b[2] = jt;
    b[3] = jf;
    b[4..8].copy_from_slice(&k.to_ne_bytes());
    b
}

/// `prog` with a prologue that makes native syscalls numbered above `max`
/// fail with `ENOSYS` (runc's `patchbpf`, for the native architecture).
/// Classic BPF jumps are relative, so the original program runs unchanged
/// after the prologue.
fn enosys_above(prog: &[u8], audit_arch: Option<u32>, max: u32) -> Vec<u8> {
    let Some(arch) = audit_arch else {
        return prog.to_vec();
    };
    if max == u32::MAX {
        return prog.to_vec();
    }
    // 0: A = arch      1: if A != native goto 6
    // 2: A = nr        3: if A >= x32 bit goto 6 (x32 calls: left alone)
    // 4: if A > max goto 5 else goto 6
    // 5: return ENOSYS
    // 6: the original program (which loads what it needs itself)
    let mut p = Vec::with_capacity(prog.len() + 64);
    p.extend(insn(BPF_LD_W_ABS, 0, 0, 4)); // seccomp_data.arch
    p.extend(insn(BPF_JMP_JEQ_K, 0, 4, arch)); // != -> 6 (skip to original)
    p.extend(insn(BPF_LD_W_ABS, 0, 0, 0)); // seccomp_data.nr
    p.extend(insn(BPF_JMP_JGE_K, 2, 0, X32_SYSCALL_BIT)); // x32 -> original
    p.extend(insn(BPF_JMP_JGT_K, 0, 1, max)); // > max -> ENOSYS
    p.extend(insn(
        BPF_RET_K,
        0,
        0,
        SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
    ));
    p.extend_from_slice(prog);
    p
}

/// The calls that flush written data to the disk (`fsync`, `fdatasync`,
/// `sync_file_range`, `syncfs`, `sync`), native numbers.
fn sync_calls() -> [u32; 5] {
    [
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_sync_file_range,
        libc::SYS_syncfs,
        libc::SYS_sync,
    ]
    .map(|n| n as u32)
}

/// `prog` with a prologue that makes the native [`sync_calls`] return 0
/// without doing anything. For a step whose writes all go to its own layer
/// (no writable bind mount: see `executor::step_seccomp`): kiln flushes a
/// layer itself, once, before an image names it, and a crash of the machine
/// before that loses the layer, which the cache rebuilds (kiln_snapshot's
/// "Durability"), so a step's own flushes buy nothing. Each was a journal
/// commit, which on ext4 (`data=ordered`) also writes every dirty file of
/// the filesystem, other builds' included; `dpkg` makes several per package
/// (the realistic apt-get + gcc build spent 20–35% of its time there).
fn sync_noop(prog: &[u8], audit_arch: Option<u32>) -> Vec<u8> {
    let Some(arch) = audit_arch else {
        return prog.to_vec();
    };
    let calls = sync_calls();
    let n = calls.len();
    // 0: A = arch           1: if A != native goto original
    // 2: A = nr             3..3+n: if A == call goto ret0
    // 3+n: goto original    4+n: return 0 (ERRNO with errno 0)
    // 5+n: the original program
    let mut p = Vec::with_capacity(prog.len() + (n + 5) * 8);
    p.extend(insn(BPF_LD_W_ABS, 0, 0, 4)); // seccomp_data.arch
    p.extend(insn(BPF_JMP_JEQ_K, 0, (n + 3) as u8, arch));
    p.extend(insn(BPF_LD_W_ABS, 0, 0, 0)); // seccomp_data.nr
    for (i, call) in calls.iter().enumerate() {
        p.extend(insn(BPF_JMP_JEQ_K, (n - i) as u8, 0, *call));
    }
    p.extend(insn(BPF_JMP_JA, 0, 0, 1));
    p.extend(insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO));
    p.extend_from_slice(prog);
    p
}

/// The filter of a step: [`default_filter`], with [`sync_noop`] when the
/// step's writes all go to its own layer.
pub(crate) fn step_filter(sync_is_noop: bool) -> Result<&'static [u8], String> {
    static NOOP: OnceLock<Vec<u8>> = OnceLock::new();
    let plain = default_filter()?;
    if !sync_is_noop {
        return Ok(plain);
    }
    Ok(NOOP
        .get_or_init(|| sync_noop(plain, native_audit_arch()))
        .as_slice())
}

/// Where [`default_filter`] keeps the compiled filter (a file of the
/// state directory, [`cache_file`]), once [`prepare_default_filter`] said so.
static CACHE_FILE: OnceLock<PathBuf> = OnceLock::new();

/// The compile [`prepare_default_filter`] started, until
/// [`finish_default_filter`] waits for it.
static COMPILING: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);

/// Keeps the compiled filter in `dir` for later kiln processes of the same
/// binary and kernel. When this binary's is not there yet, starts compiling
/// it now, on a thread of its own, so that the first RUN step finds it
/// ready; a build that runs no step waits for it as it ends
/// ([`finish_default_filter`]), so that the file is written once, not
/// compiled again by every no-op build. When it is there, nothing starts:
/// the first step reads it.
pub(crate) fn prepare_default_filter(dir: PathBuf) {
    let Some(file) = cache_file(&dir, &Target::host(&crate::helper::DEFAULT_CAPS)) else {
        return;
    };
    let ready = file.exists();
    if CACHE_FILE.set(file).is_err() || ready {
        return;
    }
    let compiling = std::thread::spawn(|| {
        let _ = default_filter();
    });
    if let Ok(mut c) = COMPILING.lock() {
        *c = Some(compiling);
    }
}

/// Waits for the compile [`prepare_default_filter`] started, if any.
pub(crate) fn finish_default_filter() {
    let compiling = COMPILING.lock().ok().and_then(|mut c| c.take());
    if let Some(c) = compiling {
        let _ = c.join();
    }
}

/// The filter for a step with Docker's default capabilities, once per
/// process: read from the file [`prepare_default_filter`] named when an
/// earlier kiln process of this very binary compiled it on this kernel,
/// else compiled (and left there).
pub(crate) fn default_filter() -> Result<&'static [u8], String> {
    static FILTER: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    FILTER
        .get_or_init(|| {
            let target = Target::host(&crate::helper::DEFAULT_CAPS);
            match CACHE_FILE.get() {
                Some(file) => cached(file, &target),
                None => compile(&target),
            }
        })
        .as_ref()
        .map(Vec::as_slice)
        .map_err(Clone::clone)
}

/// Where the compiled filter of this binary for `target` is kept: named by
/// the executable's identity (device, inode, size, modification time: a
/// rebuilt or upgraded kiln is another file) and the target's architecture,
/// kernel and capabilities, so that a file found there is this binary's
/// own output for this machine. `None` when the executable cannot be
/// stat'ed.
fn cache_file(dir: &Path, target: &Target) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let exe = std::fs::metadata("/proc/self/exe").ok()?;
    let caps = target.caps.join(",");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in caps.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Some(dir.join(format!(
        "filter-{:x}-{:x}-{:x}-{}.{}-{}-{}.{}-{h:016x}.bpf",
        exe.dev(),
        exe.ino(),
        exe.size(),
        exe.mtime(),
        exe.mtime_nsec(),
        target.arch,
        target.kernel.0,
        target.kernel.1
    )))
}

/// The filter at `file`, or compiled and written there (atomically; other
/// binaries' files in the directory are removed). A file that cannot be
/// read or written only means compiling.
fn cached(file: &Path, target: &Target) -> Result<Vec<u8>, String> {
    if let Ok(b) = std::fs::read(file)
        && !b.is_empty()
        && b.len() % 8 == 0
    {
        return Ok(b);
    }
    let bpf = compile(target)?;
    let write = || -> std::io::Result<()> {
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("filter-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &bpf)?;
        std::fs::rename(&tmp, file)
    };
    let _ = write();
    Ok(bpf)
}

/// Syscall names of the profile per action for `target`, for tests and
/// `kiln` debugging: which names a step may call.
#[cfg(test)]
fn allowed_names(target: &Target) -> std::collections::BTreeMap<String, String> {
    let profile: Profile = serde_json::from_str(PROFILE).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for r in applicable(&profile, target) {
        for n in &r.names {
            let what = if r.args.is_empty() {
                r.action.clone()
            } else {
                format!("{} (with arguments)", r.action)
            };
            out.insert(n.clone(), what);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache of the compiled filter: written by the first process,
    /// read back by the next; a damaged file is compiled again, and
    /// another binary's file is replaced.
    #[test]
    fn the_compiled_filter_is_kept_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::host(&crate::helper::DEFAULT_CAPS);
        let file = cache_file(dir.path(), &t).unwrap();
        let other = dir.path().join("filter-of-another-kiln.bpf");
        std::fs::write(&other, b"12345678").unwrap();
        let first = cached(&file, &t).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), first);
        assert!(!other.exists(), "another binary's filter is removed");
        assert_eq!(cached(&file, &t).unwrap(), first);
        std::fs::write(&file, b"broken").unwrap();
        assert_eq!(cached(&file, &t).unwrap(), first);
        assert_eq!(std::fs::read(&file).unwrap(), first);
    }

    fn target(caps: &[&str]) -> Target {
        Target {
            arch: "SCMP_ARCH_X86_64",
            goarch: "amd64",
            caps: caps.iter().map(|c| c.to_string()).collect(),
            kernel: (6, 1),
        }
    }

    #[test]
    fn default_caps_select_docker_rules() {
        let names = allowed_names(&target(&["CAP_CHOWN", "CAP_SYS_CHROOT"]));
        assert_eq!(names["read"], "SCMP_ACT_ALLOW");
        assert_eq!(names["chroot"], "SCMP_ACT_ALLOW");
        assert_eq!(names["arch_prctl"], "SCMP_ACT_ALLOW");
        assert_eq!(names["clone"], "SCMP_ACT_ALLOW (with arguments)");
        assert_eq!(names["clone3"], "SCMP_ACT_ERRNO");
        for blocked in [
            "keyctl",
            "add_key",
            "request_key",
            "unshare",
            "mount",
            "setns",
            "bpf",
        ] {
            assert!(!names.contains_key(blocked), "{blocked} allowed");
        }
        assert!(!names.contains_key("s390_runtime_instr"));
        let admin = allowed_names(&target(&["CAP_SYS_ADMIN"]));
        assert_eq!(admin["unshare"], "SCMP_ACT_ALLOW");
        assert_eq!(admin["clone"], "SCMP_ACT_ALLOW");
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("6.18.44-fc-v1272"), Some((6, 18)));
        assert_eq!(parse_version("4.8"), Some((4, 8)));
        assert_eq!(parse_version("5"), Some((5, 0)));
    }

    #[test]
    fn prologue_jumps_into_the_program() {
        let prog = insn(BPF_RET_K, 0, 0, 0x7fff_0000).to_vec();
        let p = enosys_above(&prog, Some(0xc000_003e), 450);
        assert_eq!(p.len(), prog.len() + 6 * 8);
        assert_eq!(&p[6 * 8..], &prog[..]);
        assert_eq!(enosys_above(&prog, None, 450), prog);
    }

    #[test]
    fn sync_prologue_returns_zero_then_jumps_into_the_program() {
        let prog = insn(BPF_RET_K, 0, 0, 0x7fff_0000).to_vec();
        let p = sync_noop(&prog, Some(0xc000_003e));
        let n = sync_calls().len();
        assert_eq!(p.len(), prog.len() + (n + 5) * 8);
        assert_eq!(&p[(n + 5) * 8..], &prog[..]);
        // Every jump lands on `return 0` or on the program.
        let at = |i: usize| &p[i * 8..i * 8 + 8];
        assert_eq!(at(n + 4), insn(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO));
        for i in 0..n {
            let jt = at(3 + i)[2] as usize;
            assert_eq!(3 + i + 1 + jt, n + 4);
        }
        assert_eq!(1 + 1 + at(1)[3] as usize, n + 5);
        assert_eq!(sync_noop(&prog, None), prog);
    }

    #[test]
    fn compiles_for_this_machine() {
        let bpf = compile(&Target::host(&crate::helper::DEFAULT_CAPS)).unwrap();
        assert_eq!(bpf.len() % 8, 0);
        assert!(bpf.len() > 100 * 8);
    }
}
