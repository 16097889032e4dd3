//! The executor for real: namespaces, mounts, users, output, exit codes,
//! cancellation and cleanup. Needs root; where it is not root every test is
//! reported as ignored.
//!
//! This binary doubles as the helper: with `KILN_EXECUTOR_TEST_HELPER=1` its
//! `main` calls `helper_main`, and with `KILN_EXECUTOR_TEST_CALLER=<spec>` it
//! plays a kiln process that runs one spec (to test what happens when the
//! caller is killed).

#![allow(clippy::print_stderr, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kiln_executor::{
    ExecError, Executor, ExitStatus, ExtraMount, MountKind, NamespaceExecutor, Network, Rootfs,
    RunSpec, SecretData, Stream,
};
use libtest_mimic::{Arguments, Failed, Trial};

const BUSYBOX: &str = "/bin/busybox";

fn executor() -> NamespaceExecutor {
    NamespaceExecutor::new(
        std::env::current_exe().unwrap(),
        Vec::new(),
        std::sync::Arc::new(kiln_snapshot::Overlayfs),
    )
    .with_env("KILN_EXECUTOR_TEST_HELPER", "1")
}

static LOWER: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A busybox root filesystem (built once per test run).
fn lower() -> PathBuf {
    LOWER
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("kiln-exec-lower-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("bin")).unwrap();
            fs::create_dir_all(dir.join("etc")).unwrap();
            fs::create_dir_all(dir.join("tmp")).unwrap();
            fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
            let out = std::process::Command::new(BUSYBOX).arg("--list").output().unwrap();
            for applet in String::from_utf8_lossy(&out.stdout).lines() {
                if applet != "busybox" {
                    let _ = symlink("busybox", dir.join("bin").join(applet));
                }
            }
            fs::write(
                dir.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\napp:x:1000:1000::/srv:/bin/sh\n",
            )
            .unwrap();
            fs::write(
                dir.join("etc/group"),
                "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n",
            )
            .unwrap();
            dir
        })
        .clone()
}

struct Run {
    _dir: tempfile::TempDir,
    upper: PathBuf,
    spec: RunSpec,
}

fn setup(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    for d in ["upper", "work", "root"] {
        fs::create_dir(dir.path().join(d)).unwrap();
    }
    let upper = dir.path().join("upper");
    let spec = RunSpec {
        rootfs: Rootfs {
            lowers: vec![lower()],
            upper: upper.clone(),
            work: dir.path().join("work"),
            mountpoint: dir.path().join("root"),
            views: None,
        },
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".to_owned()],
        cwd: "/".to_owned(),
        user: String::new(),
        hostname: "buildkitsandbox".to_owned(),
        network: Network::Host,
        mounts: Vec::new(),
        privileged: false,
        limits: Default::default(),
        resources: Default::default(),
    };
    Run {
        _dir: dir,
        upper,
        spec,
    }
}

struct Out {
    status: Result<ExitStatus, ExecError>,
    stdout: String,
    stderr: String,
}

fn run_spec(spec: &RunSpec) -> Out {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let status = executor().run(
        spec,
        &mut |s, d| match s {
            Stream::Stdout => stdout.extend_from_slice(d),
            Stream::Stderr => stderr.extend_from_slice(d),
        },
        &|| false,
    );
    Out {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn sh(script: &str) -> Run {
    setup(&["/bin/sh", "-c", script])
}

fn check(cond: bool, what: impl std::fmt::Display) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what.to_string().into())
    }
}

fn ok_output(out: &Out) -> Result<&str, Failed> {
    match &out.status {
        Ok(ExitStatus::Code(0)) => Ok(&out.stdout),
        other => Err(format!(
            "status {other:?}, stdout {:?}, stderr {:?}",
            out.stdout, out.stderr
        )
        .into()),
    }
}

/// Lines of /proc/self/mountinfo (to prove nothing leaked into ours).
fn mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

fn processes_with(needle: &str) -> usize {
    let mut n = 0;
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(needle)
        {
            n += 1;
        }
    }
    n
}

fn t_pid_one() -> Result<(), Failed> {
    let r = sh("echo $$");
    check(ok_output(&run_spec(&r.spec))? == "1\n", "not pid 1")
}

fn t_hostname_and_hosts() -> Result<(), Failed> {
    let r = sh("hostname; cat /etc/hosts; grep -c . /etc/resolv.conf >/dev/null; echo ok");
    let out = run_spec(&r.spec);
    check(
        ok_output(&out)?
            == "buildkitsandbox\n127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\nok\n",
        format!("got {:?}", out.stdout),
    )
}

fn t_users() -> Result<(), Failed> {
    for (user, want) in [
        // The primary gid is always a supplementary group too (BuildKit
        // since v0.11, CVE-2023-25173).
        ("", "uid=0(root) gid=0(root) groups=0(root) home=/root"),
        (
            "app",
            "uid=1000(app) gid=1000(app) groups=1000(app),2000(extra) home=/srv",
        ),
        (
            "1000:1000",
            "uid=1000(app) gid=1000(app) groups=1000(app) home=/srv",
        ),
        (
            "nobody",
            "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup) home=/nonexistent",
        ),
        ("1234", "uid=1234 gid=0(root) groups=0(root) home=/"),
        (
            "app:extra",
            "uid=1000(app) gid=2000(extra) groups=2000(extra) home=/srv",
        ),
    ] {
        let mut r = sh("echo \"$(id) home=$HOME\"");
        r.spec.user = user.to_owned();
        let out = run_spec(&r.spec);
        check(
            ok_output(&out)?.trim_end() == want,
            format!("user {user:?}: got {:?}", out.stdout),
        )?;
    }
    let mut r = sh("true");
    r.spec.user = "ghost".to_owned();
    match run_spec(&r.spec).status {
        Err(ExecError::Setup(m)) if m.contains("unable to find user ghost") => Ok(()),
        other => Err(format!("unknown user: {other:?}").into()),
    }
}

fn t_env_exact() -> Result<(), Failed> {
    let mut r = setup(&["env"]);
    r.spec.env = vec!["PATH=/bin".into(), "A=1".into(), "B=two words".into()];
    let out = run_spec(&r.spec);
    check(
        ok_output(&out)? == "PATH=/bin\nA=1\nB=two words\nHOME=/root\n",
        format!("got {:?}", out.stdout),
    )
}

fn t_cwd_created() -> Result<(), Failed> {
    let mut r = sh("pwd");
    r.spec.cwd = "/work/dir".into();
    let out = run_spec(&r.spec);
    check(
        ok_output(&out)? == "/work/dir\n",
        format!("got {:?}", out.stdout),
    )?;
    check(
        r.upper.join("work/dir").is_dir(),
        "cwd not in the upper dir",
    )
}

fn t_special_filesystems() -> Result<(), Failed> {
    let r = sh(
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c && test -c /dev/urandom && test -d /dev/pts && \
         touch /dev/shm/x && ! touch /sys/x 2>/dev/null && test -r /proc/self/status && readlink /dev/fd && echo ok",
    );
    let out = run_spec(&r.spec);
    check(
        ok_output(&out)? == "4\n/proc/self/fd\nok\n",
        format!("got {:?}", out.stdout),
    )
}

fn t_network_none() -> Result<(), Failed> {
    let mut r = sh("grep ':' /proc/net/dev | cut -d: -f1 | tr -d ' '; cat /sys/class/net/lo/flags");
    r.spec.network = Network::None;
    let out = run_spec(&r.spec);
    let text = ok_output(&out)?;
    let mut lines = text.lines();
    check(lines.next() == Some("lo"), format!("interfaces: {text:?}"))?;
    let flags = lines.next().unwrap_or("");
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap_or(0);
    check(lines.next().is_none(), format!("more than lo: {text:?}"))?;
    check(flags & 1 == 1, format!("lo is not up: {text:?}"))
}

fn t_network_host() -> Result<(), Failed> {
    let host = fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let r = sh("cat /proc/net/dev");
    let out = run_spec(&r.spec);
    let count = |s: &str| s.lines().filter(|l| l.contains(':')).count();
    check(
        count(ok_output(&out)?) == count(&host),
        "host network differs",
    )
}

fn t_exit_codes() -> Result<(), Failed> {
    let r = sh("echo out; echo err >&2; exit 3");
    let out = run_spec(&r.spec);
    check(
        matches!(out.status, Ok(ExitStatus::Code(3))),
        format!("{:?}", out.status),
    )?;
    check(
        out.stdout == "out\n" && out.stderr == "err\n",
        "streams mixed up",
    )?;
    // pid 1 ignores signals sent from inside its namespace, so the killed
    // process is a child; the shell reports it as 128+9.
    let r = sh("sh -c 'kill -9 $$'; exit $?");
    let out = run_spec(&r.spec);
    check(
        matches!(out.status, Ok(ExitStatus::Code(137))),
        format!("{:?}", out.status),
    )
}

fn t_missing_binary() -> Result<(), Failed> {
    let r = setup(&["nosuchcommand", "x"]);
    match run_spec(&r.spec).status {
        Err(ExecError::NotStarted(f))
            if f.is_missing()
                && f.to_string()
                    == "exec: \"nosuchcommand\": executable file not found in $PATH" => {}
        other => return Err(format!("{other:?}").into()),
    }
    // A file that is there but not executable: EACCES, not "missing".
    let r = setup(&["/etc/passwd"]);
    match run_spec(&r.spec).status {
        Err(ExecError::NotStarted(f))
            if !f.is_missing()
                && f.to_string() == "exec /etc/passwd: EACCES: Permission denied" =>
        {
            Ok(())
        }
        other => Err(format!("{other:?}").into()),
    }
}

fn t_cancel_kills_tree() -> Result<(), Failed> {
    let before = mountinfo();
    let marker = "sleep 7777";
    let r = sh("sleep 7777 & sleep 7777");
    let start = Instant::now();
    let res = executor().run(&r.spec, &mut |_, _| {}, &|| {
        start.elapsed() > Duration::from_millis(500)
    });
    check(matches!(res, Err(ExecError::Cancelled)), format!("{res:?}"))?;
    check(
        start.elapsed() < Duration::from_secs(5),
        "cancel took too long",
    )?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with(marker) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    check(
        processes_with(marker) == 0,
        "sleep processes survived the cancel",
    )?;
    check(mountinfo() == before, "mounts leaked into the caller")
}

fn t_caller_killed() -> Result<(), Failed> {
    let mut r = sh("sleep 8888 & sleep 8888");
    // A non-root user: changing credentials clears the parent death signal,
    // which the executor must set again.
    r.spec.user = "app".into();
    let spec_file = r._dir.path().join("spec.json");
    fs::write(&spec_file, serde_json::to_vec(&r.spec).unwrap()).unwrap();
    let mut caller = std::process::Command::new(std::env::current_exe().unwrap())
        .env("KILN_EXECUTOR_TEST_CALLER", &spec_file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with("sleep 8888") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if processes_with("sleep 8888") < 2 {
        let _ = caller.kill();
        let _ = caller.wait();
        return Err("the step never started".into());
    }
    caller.kill().unwrap();
    let _ = caller.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with("sleep 8888") > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    check(
        processes_with("sleep 8888") == 0,
        "processes outlived kill -9 of the caller",
    )
}

fn t_hardening() -> Result<(), Failed> {
    let r = sh("grep -E '^(SigIgn|SigBlk)' /proc/self/status; \
         wc -c < /proc/keys; ls /sys/firmware | wc -l; \
         (echo 1 > /proc/sys/kernel/hostname) 2>/dev/null && echo writable || echo read-only; \
         cut -d' ' -f6 /proc/1/stat; grep CapBnd /proc/self/status");
    let out = run_spec(&r.spec);
    check(
        ok_output(&out)?
            == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n0\n0\nread-only\n1\nCapBnd:\t00000000a80425fb\n",
        format!("got {:?} {:?}", out.stdout, out.stderr),
    )
}

fn t_upper_holds_only_changes() -> Result<(), Failed> {
    let r = sh("rm /bin/ls && mkdir /new && echo x > /new/f && cat /etc/hosts >/dev/null");
    let out = run_spec(&r.spec);
    ok_output(&out)?;
    let ls = fs::symlink_metadata(r.upper.join("bin/ls")).map_err(|e| e.to_string())?;
    check(
        ls.file_type().is_char_device() && ls.rdev() == 0,
        "no whiteout for /bin/ls",
    )?;
    check(
        fs::read_to_string(r.upper.join("new/f")).ok().as_deref() == Some("x\n"),
        "new/f",
    )?;
    let mut top: Vec<String> = fs::read_dir(&r.upper)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    check(top == ["bin", "new"], format!("upper has {top:?}"))?;
    check(
        !lower().join("new").exists() && lower().join("bin/ls").exists(),
        "lower changed",
    )
}

/// A secret file: its content, owner and mode inside, read-only, and neither
/// it nor the directories made for its mount point in the layer.
fn t_secret_file() -> Result<(), Failed> {
    let mut r = sh(
        "cat /run/secrets/s && stat -c '%u %g %a' /run/secrets/s && ! sh -c 'echo x > /run/secrets/s' 2>/dev/null && echo ok",
    );
    r.spec.mounts = vec![ExtraMount {
        target: "/run/secrets/s".into(),
        kind: MountKind::SecretFile {
            data: SecretData(b"hunter2\n".to_vec()),
            uid: 1000,
            gid: 2000,
            mode: 0o440,
        },
    }];
    let out = run_spec(&r.spec);
    check(
        ok_output(&out)? == "hunter2\n1000 2000 440\nok\n",
        format!("got {:?}", out.stdout),
    )?;
    check(
        !r.upper.join("run").exists(),
        "the secret's mount point (or /run) was left in the layer",
    )
}

/// A privileged step keeps the caller's capabilities (CAP_SYS_ADMIN: it can
/// mount) and sees a writable /sys.
fn t_privileged() -> Result<(), Failed> {
    let mut r = sh(
        "mkdir /m && mount -t tmpfs none /m && grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1",
    );
    r.spec.privileged = true;
    let out = run_spec(&r.spec);
    check(ok_output(&out)? == "rw\n", format!("got {:?}", out.stdout))?;
    let mut r = sh("mkdir /m && mount -t tmpfs none /m 2>/dev/null || echo refused");
    r.spec.privileged = false;
    let out = run_spec(&r.spec);
    check(
        ok_output(&out)? == "refused\n",
        format!("got {:?}", out.stdout),
    )
}

fn t_extra_mounts() -> Result<(), Failed> {
    let host = tempfile::tempdir().unwrap();
    fs::write(host.path().join("in"), "data\n").unwrap();
    let rw = tempfile::tempdir().unwrap();
    let mut r = sh(
        "cat /ro/in && ! touch /ro/x 2>/dev/null && echo w > /rw/out && echo t > /scratch/t && echo ok",
    );
    r.spec.mounts = vec![
        ExtraMount {
            target: "/ro".into(),
            kind: MountKind::Bind {
                source: host.path().to_path_buf(),
                readonly: true,
            },
        },
        ExtraMount {
            target: "/rw".into(),
            kind: MountKind::Bind {
                source: rw.path().to_path_buf(),
                readonly: false,
            },
        },
        ExtraMount {
            target: "/scratch".into(),
            kind: MountKind::Tmpfs { size: 1 << 20 },
        },
    ];
    let out = run_spec(&r.spec);
    check(
        ok_output(&out)? == "data\nok\n",
        format!("got {:?}", out.stdout),
    )?;
    check(
        fs::read_to_string(rw.path().join("out")).ok().as_deref() == Some("w\n"),
        "rw bind",
    )?;
    check(
        !r.upper.join("scratch/t").exists(),
        "tmpfs content leaked into the layer",
    )
}

fn t_many_runs_leave_nothing() -> Result<(), Failed> {
    let before = mountinfo();
    for i in 0..20 {
        let r = sh(&format!("echo {i}"));
        ok_output(&run_spec(&r.spec))?;
    }
    check(mountinfo() == before, "mounts leaked")?;
    check(processes_with("kiln-exec-test-never") == 0, "")
}

fn t_timing() -> Result<(), Failed> {
    // Not an assertion on time: prints the median for the closing note.
    let mut times = Vec::new();
    for _ in 0..20 {
        let r = setup(&["/bin/true"]);
        let t = Instant::now();
        ok_output(&run_spec(&r.spec))?;
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "RUN true through the executor: median {:?} (20 runs)",
        times[10]
    );
    Ok(())
}

type TestFn = fn() -> Result<(), Failed>;

fn main() {
    if std::env::var_os("KILN_EXECUTOR_TEST_HELPER").is_some() {
        kiln_executor::helper_main();
    }
    if let Some(spec) = std::env::var_os("KILN_EXECUTOR_TEST_CALLER") {
        let spec: RunSpec = serde_json::from_slice(&fs::read(spec).unwrap()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let _ = executor().run(&spec, &mut |_, _| {}, &|| stop.load(Ordering::Relaxed));
        return;
    }
    let args = Arguments::from_args();
    let not_root = !kiln_testkit::is_root();
    if !not_root && !Path::new(BUSYBOX).exists() {
        eprintln!("these tests need {BUSYBOX}: install Debian's busybox-static");
        std::process::exit(1);
    }
    let tests: Vec<(&str, TestFn)> = vec![
        ("pid_one", t_pid_one),
        ("hostname_and_hosts", t_hostname_and_hosts),
        ("users", t_users),
        ("env_exact", t_env_exact),
        ("cwd_created", t_cwd_created),
        ("special_filesystems", t_special_filesystems),
        ("network_none", t_network_none),
        ("network_host", t_network_host),
        ("exit_codes", t_exit_codes),
        ("missing_binary", t_missing_binary),
        ("cancel_kills_tree", t_cancel_kills_tree),
        ("caller_killed", t_caller_killed),
        ("upper_holds_only_changes", t_upper_holds_only_changes),
        ("hardening", t_hardening),
        ("extra_mounts", t_extra_mounts),
        ("secret_file", t_secret_file),
        ("privileged", t_privileged),
        ("many_runs_leave_nothing", t_many_runs_leave_nothing),
        ("timing", t_timing),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| Trial::test(name, f).with_ignored_flag(not_root))
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(dir) = LOWER.get() {
        let _ = fs::remove_dir_all(dir);
    }
    conclusion.exit();
}
