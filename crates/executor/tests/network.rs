//! The default RUN network (`Network::Isolated`) for real: a namespace of
//! the step's own from the executor's pool, reused by the next step only
//! when the last one ended normally and was not privileged, never shared
//! by two steps at once, and never outliving the kiln process (the
//! slirp4netns serving it exits when the caller is killed). Needs root,
//! slirp4netns and nft; where it is not root every test is reported as
//! ignored. (The escapes themselves are tried by
//! `testdata/build/escape-network`.)
//!
//! Like `namespaces.rs`, this binary doubles as the helper
//! (`KILN_EXECUTOR_TEST_HELPER=1`) and as a caller to kill
//! (`KILN_EXECUTOR_TEST_CALLER=<spec>`).

#![allow(clippy::print_stderr, clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln_executor::{Executor, ExitStatus, NamespaceExecutor, Network, Rootfs, RunSpec, Stream};
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
            let dir = std::env::temp_dir().join(format!("kiln-net-lower-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("bin")).unwrap();
            fs::create_dir_all(dir.join("etc")).unwrap();
            fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
            let out = std::process::Command::new(BUSYBOX)
                .arg("--list")
                .output()
                .unwrap();
            for applet in String::from_utf8_lossy(&out.stdout).lines() {
                if applet != "busybox" {
                    let _ = symlink("busybox", dir.join("bin").join(applet));
                }
            }
            fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
            dir
        })
        .clone()
}

struct Run {
    dir: tempfile::TempDir,
    spec: RunSpec,
}

fn sh(script: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    for d in ["upper", "work", "root"] {
        fs::create_dir(dir.path().join(d)).unwrap();
    }
    let spec = RunSpec {
        rootfs: Rootfs {
            lowers: vec![lower()],
            upper: dir.path().join("upper"),
            work: dir.path().join("work"),
            mountpoint: dir.path().join("root"),
            views: None,
        },
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".to_owned()],
        cwd: "/".to_owned(),
        user: String::new(),
        hostname: "buildkitsandbox".to_owned(),
        network: Network::Isolated,
        mounts: Vec::new(),
        privileged: false,
        limits: Default::default(),
        resources: Default::default(),
    };
    Run { dir, spec }
}

/// Runs `spec` with `exec`; stdout of a step that exited 0.
fn output(exec: &NamespaceExecutor, spec: &RunSpec) -> Result<String, Failed> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let status = exec.run(
        spec,
        &mut |s, d| match s {
            Stream::Stdout => stdout.extend_from_slice(d),
            Stream::Stderr => stderr.extend_from_slice(d),
        },
        &|| false,
    );
    match status {
        Ok(ExitStatus::Code(0)) => Ok(String::from_utf8_lossy(&stdout).into_owned()),
        other => Err(format!(
            "step ended with {other:?}: {}",
            String::from_utf8_lossy(&stderr)
        )
        .into()),
    }
}

fn check(cond: bool, what: impl std::fmt::Display) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(what.to_string().into())
    }
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            fs::read(e.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .count()
}

/// The step's network namespace, its interfaces and its view of the host's
/// loopback.
const PROBE: &str = "readlink /proc/self/ns/net; ls /sys/class/net | tr '\\n' ' '; echo";

fn t_interfaces_and_dns() -> Result<(), Failed> {
    let r = sh(
        "ls /sys/class/net | tr '\\n' ' '; echo; ip -4 route | grep -c '^default'; \
         grep -Ec '^nameserver[[:space:]]+(127\\.|::1)' /etc/resolv.conf; \
         cat /sys/class/net/eth0/mtu",
    );
    let out = output(&executor(), &r.spec)?;
    check(
        out == "eth0 lo \n1\n0\n65520\n",
        format!("interfaces, default route, loopback nameservers, mtu: {out:?}"),
    )
}

fn t_outbound() -> Result<(), Failed> {
    // A server on the host's own address, which the step reaches through
    // slirp4netns.
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    probe.connect("198.51.100.1:9").unwrap();
    let addr = probe.local_addr().unwrap().ip();
    let listener = std::net::TcpListener::bind((addr, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        if let Ok((mut c, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nreached!\n");
        }
    });
    let r = sh(&format!("wget -q -O - http://{addr}:{port}/"));
    let out = output(&executor(), &r.spec)?;
    let _ = server.join();
    check(out == "reached!\n", format!("got {out:?}"))
}

fn t_pool_reuse() -> Result<(), Failed> {
    let exec = executor();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = sh(PROBE);
        seen.push(output(&exec, &r.spec)?);
    }
    check(
        seen[0] == seen[1] && seen[1] == seen[2] && seen[0].contains("eth0 lo"),
        format!("one step after another use one namespace: {seen:?}"),
    )?;
    // A privileged step (CAP_NET_ADMIN in the namespace) never gives its
    // namespace back: the next step gets a new one.
    let mut r = sh(PROBE);
    r.spec.privileged = true;
    let privileged = output(&exec, &r.spec)?;
    let after = output(&exec, &sh(PROBE).spec)?;
    check(
        privileged == seen[0] && after != privileged && after.contains("eth0 lo"),
        format!("privileged {privileged:?}, then {after:?}"),
    )?;
    // A failed step ends normally: its namespace is reused.
    let failing = sh(&format!("{PROBE}; exit 3"));
    let mut out = Vec::new();
    let st = exec.run(
        &failing.spec,
        &mut |s, d| {
            if s == Stream::Stdout {
                out.extend_from_slice(d)
            }
        },
        &|| false,
    );
    check(matches!(st, Ok(ExitStatus::Code(3))), format!("{st:?}"))?;
    let next = output(&exec, &sh(PROBE).spec)?;
    check(
        String::from_utf8_lossy(&out) == after && next == after,
        "a failed step's namespace is given back",
    )
}

fn t_concurrent_steps_apart() -> Result<(), Failed> {
    // Two steps at once, each waiting for the other's file: they run
    // together, and each has a namespace of its own.
    let exec = executor();
    let sync = tempfile::tempdir().unwrap();
    let mk = |me: &str, other: &str| {
        let mut r = sh(&format!(
            "touch /sync/{me}; i=0; until [ -e /sync/{other} ] || [ $i -ge 200 ]; do sleep 0.05; i=$((i+1)); done; \
             [ -e /sync/{other} ] && readlink /proc/self/ns/net"
        ));
        r.spec.mounts.push(kiln_executor::ExtraMount {
            target: "/sync".to_owned(),
            kind: kiln_executor::MountKind::Bind {
                source: sync.path().to_path_buf(),
                readonly: false,
            },
        });
        r
    };
    let (a, b) = (mk("a", "b"), mk("b", "a"));
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| output(&exec, &a.spec).map_err(|e| format!("{e:?}")));
        let tb = s.spawn(|| output(&exec, &b.spec).map_err(|e| format!("{e:?}")));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let (ra, rb) = (ra?, rb?);
    check(
        ra.starts_with("net:[") && rb.starts_with("net:[") && ra != rb,
        format!("namespaces of two steps at once: {ra:?} {rb:?}"),
    )
}

fn t_caller_killed() -> Result<(), Failed> {
    let r = sh("sleep 7777");
    let spec_file = r.dir.path().join("spec.json");
    fs::write(&spec_file, serde_json::to_vec(&r.spec).unwrap()).unwrap();
    let mut caller = std::process::Command::new(std::env::current_exe().unwrap())
        .env("KILN_EXECUTOR_TEST_CALLER", &spec_file)
        .spawn()
        .unwrap();
    // slirp4netns names the caller's descriptor of the namespace.
    let mark = format!("/proc/{}/fd/", caller.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while (processes_with("sleep 7777") == 0 || processes_with(&mark) == 0)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = processes_with("sleep 7777") > 0 && processes_with(&mark) > 0;
    caller.kill().unwrap();
    let _ = caller.wait();
    check(started, "the step or its slirp4netns never started")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with(&mark) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    check(
        processes_with(&mark) == 0,
        "slirp4netns outlived kill -9 of the caller",
    )
}

fn t_dropped_executor_leaves_nothing() -> Result<(), Failed> {
    // In a process of its own: other tests' executors run beside this one.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("KILN_EXECUTOR_TEST_DROP", "1")
        .output()
        .unwrap();
    check(
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `KILN_EXECUTOR_TEST_DROP=1`: one step, then the executor is dropped;
/// no slirp4netns naming this process's descriptors may be left.
fn drop_executor() -> Result<(), String> {
    let exec = executor();
    output(&exec, &sh("true").spec).map_err(|e| format!("{e:?}"))?;
    let mark = format!("/proc/{}/fd/", std::process::id());
    if processes_with(&mark) == 0 {
        return Err("no slirp4netns while the pool holds a namespace".to_owned());
    }
    drop(exec);
    if processes_with(&mark) > 0 {
        return Err("slirp4netns outlived the executor".to_owned());
    }
    Ok(())
}

fn t_timing() -> Result<(), Failed> {
    // Not an assertion on time: prints, for the closing note, the median of
    // 30 paired differences (isolated minus host, run in turn) of a step
    // from the pool, and the time of a first step (a new namespace).
    let exec = executor();
    let mut diffs = Vec::new();
    let run = |network: Network| -> Result<Duration, Failed> {
        let mut r = sh("true");
        r.spec.network = network;
        let t = Instant::now();
        output(&exec, &r.spec)?;
        Ok(t.elapsed())
    };
    run(Network::Isolated)?;
    for _ in 0..30 {
        let iso = run(Network::Isolated)?;
        let host = run(Network::Host)?;
        diffs.push(iso.as_secs_f64() - host.as_secs_f64());
    }
    diffs.sort_by(f64::total_cmp);
    let mut first = Vec::new();
    for _ in 0..5 {
        let r = sh("true");
        let t = Instant::now();
        output(&executor(), &r.spec)?;
        first.push(t.elapsed());
    }
    first.sort();
    eprintln!(
        "RUN true, isolated (from the pool) minus host network, median of 30 pairs: {:+.2} ms \
         (min {:+.2}, max {:+.2}); a first step, which makes its namespace: median {:?} of 5",
        diffs[15] * 1e3,
        diffs[0] * 1e3,
        diffs[29] * 1e3,
        first[2]
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
        let _ = executor().run(&spec, &mut |_, _| {}, &|| false);
        return;
    }
    if std::env::var_os("KILN_EXECUTOR_TEST_DROP").is_some() {
        if let Err(e) = drop_executor() {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Arguments::from_args();
    let not_root = !kiln_testkit::is_root();
    if !not_root {
        for (what, path) in [("busybox-static", BUSYBOX)] {
            if !Path::new(path).exists() {
                eprintln!("these tests need {path}: install Debian's {what}");
                std::process::exit(1);
            }
        }
    }
    let tests: Vec<(&str, TestFn)> = vec![
        ("interfaces_and_dns", t_interfaces_and_dns),
        ("outbound", t_outbound),
        ("pool_reuse", t_pool_reuse),
        ("concurrent_steps_apart", t_concurrent_steps_apart),
        ("caller_killed", t_caller_killed),
        (
            "dropped_executor_leaves_nothing",
            t_dropped_executor_leaves_nothing,
        ),
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
