//! Builds for real, through the `kiln` binary: `testdata/build/<case>/`, and
//! BuildKit's Dockerfile tests translated, `testdata/buildkit-suite/<file>/<test>/`
//! (trials `buildkit-suite/<file>/<test>`; see that directory's README).
//!
//! Each case is a directory with a `Dockerfile` (every `Dockerfile*` file is
//! copied into the context), an optional `context/`, an optional `setup`
//! shell script (run in the context, with `$TOOLS`: modes, symlinks,
//! archives), an optional `script`, and the `expected` transcript. Every case
//! gets an empty state directory with a busybox base image imported from the
//! host's `/bin/busybox` (Debian's busybox-static) as `busybox:latest`.
//!
//! The script (default: `build` then `report`) is one command per line:
//!
//! * `build ARGS…` — `kiln build` with `--progress=plain`, the context and,
//!   unless ARGS has `-o`, outputs to `$OUT/oci` (OCI layout) and `$OUT/fs`;
//!   records the exit code, each step's outcome (done/cached/error) and, on
//!   failure, the error report (in suite cases only `build ok` or `build
//!   failed`: the Go tests tell success from failure, and the script checks
//!   the rest). Its standard error is in `$LOG` until the next build. Two
//!   words are the harness's: `--context CTX` builds CTX (a URL, `-`)
//!   instead of `.`, `--stdin FILE` gives kiln FILE as standard input;
//! * `report` — the image of the last build from `$OUT/oci`: its
//!   configuration, a listing of each layer it added to the base, and how its
//!   filesystem (`$OUT/fs`) differs from the base;
//! * `kiln ARGS…` — any kiln command on the case's state directory;
//! * `run SHELL-COMMAND` — a shell command in the context directory, with
//!   `$KILN`, `$STATE`, `$OUT`, `$CTX`, `$TOOLS` (`testdata/build-tools`) and
//!   `$BASE_TAR` (the busybox rootfs tar) set (edit files, call skopeo, …);
//! * `registry [auth]` — starts Debian's `docker-registry` on a loopback port
//!   and sets `$REGISTRY` (`auth`: basic auth over TLS, see `Case::registry`);
//! * `s3` — starts an S3-compatible server on loopback (Ceph's radosgw,
//!   `build-tools/s3-server.sh`) with a bucket `ci-cache`, and sets `$S3`
//!   to its `host:port`, `$S3_LOG` to its request log and kiln's AWS
//!   credentials and region variables;
//! * `proxy` — starts testkit's `FaultProxy` (an HTTP proxy that counts
//!   requests) in front of the last registry started and sets `$PROXY` to
//!   its `host:port`;
//! * `proxy-log FILE` — writes the requests the proxy forwarded since the
//!   last `proxy-log` to FILE, one `METHOD path` a line;
//! * `proxy-fault refuse-mount N` — the next N cross-repository mount
//!   requests reach the registry without their `mount` query, so it opens
//!   an upload session, as a registry that refuses mounts does;
//! * `serve DIR [VAR]` — serves the files of DIR over HTTP on a loopback
//!   port (`build-tools/serve.py`: extra response headers from `NAME.headers`
//!   files, git's dumb HTTP protocol) and sets `$VAR` (default `$HTTP`) to
//!   its address and `$VAR_LOG` to its request log;
//! * `let NAME SHELL-COMMAND` — sets `$NAME` to the command's output (a
//!   commit id, a port) for the following lines;
//! * `machine NAME` — from here on, `build`, `kiln` and `$STATE` use the
//!   state directory of "machine" NAME (an empty one with the busybox base
//!   imported, the first time): how cache export/import between machines is
//!   tested. The case starts on machine `main`;
//! * `as-user NAME COMMAND…` — one `build`, `kiln` or `run` command run by
//!   the unprivileged host user NAME (rootless mode), with its own home
//!   directory and so its default state directory
//!   (`$HOME/.local/share/kiln`, the busybox base imported the first time;
//!   `$STATE` is that directory for this command). A case that uses it is
//!   reported as ignored, saying why, when NAME does not exist (CI creates
//!   `kilnci` with subordinate id ranges, and sets
//!   `KILN_TEST_REQUIRE_ROOTLESS=1`, which makes a missing `kilnci` an
//!   error).
//!
//! A case with a `rootless` file is run a second time, as trial
//! `<case>-rootless`, with every `build` and `kiln` command run by the user
//! `kilnci` (rootless, own state directory; `run` commands stay root's),
//! against the same `expected` transcript: the images, layers and file owners of a rootless build are
//! those of a root build. (`report` maps host ids of the local output back
//! through the user's subordinate ranges, i.e. to the ids inside the
//! namespace.)
//!
//! Every command sees its own `DOCKER_CONFIG` and `KILN_CONFIG`, never the
//! host's credentials.
//!
//! A case with an `xfail` file (one line: the behaviour and why) is expected
//! to fail: when its transcript differs from `expected` it is reported as
//! ignored with that reason (kiln's transcript and build output are kept in
//! `$CARGO_TARGET_TMPDIR/<case path>/actual` and `builds.log`), when it
//! matches the trial fails, saying to delete the `xfail` file.
//! `UPDATE_EXPECT=1` never rewrites the `expected` of an xfail case: it is
//! what BuildKit does, written from the Go test. Suite cases run without
//! `SOURCE_DATE_EPOCH` (as BuildKit's tests do) and get a busybox base with
//! Docker Hub's users and groups (`suite_base`).
//!
//! A case may list what it needs in a `needs` file, one per line; a case
//! whose needs are not met is reported as ignored, and why is printed:
//!
//! * `bases` — busybox bases for other platforms, `$BASES/amd64.tar` and
//!   `$BASES/arm64.tar` (`$BASES` is `$KILN_TEST_BASES`, default
//!   `/var/tmp/kiln-test-bases`; `build-tools/platform-bases.sh` makes them
//!   from Debian's busybox-static .debs, and `.ci/run` runs it first);
//! * `emulation PLATFORM` — RUN for PLATFORM can run here (a binfmt_misc
//!   handler with the fix-binary flag: Debian's qemu-user-static);
//! * `cgroup2` — the unified cgroup hierarchy is mounted at `/sys/fs/cgroup`;
//! * `user NAME` — the host user NAME exists, with subordinate id ranges
//!   (for a script that runs kiln as NAME itself, e.g. with `setpriv`);
//! * `program NAME WHY…` — the program NAME is in `PATH` (a headless
//!   browser, tmux; WHY says what for).
//!
//! Builds run with `SOURCE_DATE_EPOCH=1600000000`, so times are fixed
//! (except in `testdata/buildkit-suite`, see below). Paths
//! of the temporary directories and the digest of the base image (which
//! depends on the host's busybox) are replaced by names in the transcript.
//! `UPDATE_EXPECT=1` rewrites the expectations.
//!
//! Needs root (namespaces, overlayfs); elsewhere every case is reported as
//! ignored. The `realistic` trial (a debootstrapped Debian base, `apt-get
//! install gcc`, a static binary copied into busybox) also needs the network
//! and runs only with `KILN_TEST_REALISTIC=1` (CI sets it).

#![allow(clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kiln_testkit::{case_dirs, check, is_root, testdata};
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use sha2::{Digest as _, Sha256};

const KILN: &str = env!("CARGO_BIN_EXE_kiln");
const EPOCH: &str = "1600000000";

/// The busybox base: a root filesystem directory and its tar.
struct Base {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    tar: PathBuf,
    /// The digest of the tar (the base layer's diff ID).
    diff_id: String,
}

/// The base of `testdata/build` cases: busybox, and users `app` (1000) and
/// `nobody`.
fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        make_base(
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n",
            &[],
        )
    })
}

/// The base of `testdata/buildkit-suite` cases: busybox with the users,
/// groups and directories of Docker Hub's `busybox` image, which BuildKit's
/// tests use (`daemon`, `wheel` holding root, `/home`, `/var/www`, …).
fn suite_base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        make_base(
            "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nbin:x:2:2:bin:/bin:/bin/false\nsys:x:3:3:sys:/dev:/bin/false\nsync:x:4:100:sync:/bin:/bin/sync\nmail:x:8:8:mail:/var/spool/mail:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\noperator:x:37:37:Operator:/var:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
            "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\ndisk:x:6:\nlp:x:7:\nmail:x:8:\nkmem:x:9:\nwheel:x:10:root\ncdrom:x:11:\ndialout:x:18:\nfloppy:x:19:\nvideo:x:28:\naudio:x:29:\ntape:x:32:\nwww-data:x:33:\noperator:x:37:\nutmp:x:43:\nplugdev:x:46:\nstaff:x:50:\nlock:x:54:\nnetdev:x:82:\nusers:x:100:\nnobody:x:65534:\n",
            &["home", "usr/sbin", "var/spool/mail", "var/www"],
        )
    })
}

fn make_base(passwd: &str, group: &str, dirs: &[&str]) -> Base {
    let dir = tempfile::tempdir().unwrap();
    // Rootless cases import the tar as a user.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let rootfs = dir.path().join("rootfs");
    for d in ["bin", "etc", "root", "tmp"].iter().chain(dirs) {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let out = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
    fs::write(rootfs.join("etc/passwd"), passwd).unwrap();
    fs::write(rootfs.join("etc/group"), group).unwrap();
    sh(&format!(
        "chmod 1777 {0}/tmp && chmod 700 {0}/root",
        rootfs.display()
    ));
    let tar = dir.path().join("busybox.tar");
    sh(&format!(
        "tar --sort=name --mtime=@{EPOCH} --owner=0 --group=0 --numeric-owner -C {} -cf {} .",
        rootfs.display(),
        tar.display()
    ));
    let mut h = Sha256::new();
    h.update(fs::read(&tar).unwrap());
    Base {
        _dir: dir,
        rootfs,
        tar,
        diff_id: format!("sha256:{}", hex::encode(h.finalize())),
    }
}

/// Where the platforms-* cases find their bases (see the module docs).
fn bases_dir() -> PathBuf {
    std::env::var_os("KILN_TEST_BASES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/kiln-test-bases"))
}

/// Why the `needs` of the case in `dir` are not met, if they are not.
fn unmet_needs(dir: &Path) -> Option<String> {
    let needs = fs::read_to_string(dir.join("needs")).ok()?;
    for line in needs.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["bases"] => {
                for arch in ["amd64", "arm64"] {
                    let tar = bases_dir().join(format!("{arch}.tar"));
                    if !tar.exists() {
                        return Some(format!(
                            "{} is missing (make it with testdata/build-tools/platform-bases.sh {})",
                            tar.display(),
                            bases_dir().display()
                        ));
                    }
                }
            }
            ["emulation", platform] => {
                let p: kiln_llb::Platform = platform.parse().unwrap();
                if let Err(e) = kiln_worker::emulation::check(&p) {
                    return Some(e.to_string());
                }
            }
            ["cgroup2"] => {
                if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                    return Some(
                        "needs the unified cgroup hierarchy (cgroup v2) at /sys/fs/cgroup".into(),
                    );
                }
            }
            ["user", name] => {
                if let Err(why) = HostUser::lookup(name) {
                    return Some(why);
                }
            }
            ["program", name, why @ ..] => {
                let found = std::env::var_os("PATH")
                    .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()));
                if !found {
                    return Some(format!(
                        "{name} is not installed ({}; .ci/run installs it)",
                        why.join(" ")
                    ));
                }
            }
            _ => panic!("{}: unknown need {line:?}", dir.display()),
        }
    }
    None
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd} failed");
}

/// An unprivileged host user that runs kiln rootless (`as-user`).
#[derive(Clone)]
struct HostUser {
    name: String,
    uid: u32,
    gid: u32,
    /// The user's subordinate uid and gid ranges: (host start, count).
    uids: Vec<(u32, u32)>,
    gids: Vec<(u32, u32)>,
}

/// The user that rootless trials run as.
const ROOTLESS_USER: &str = "kilnci";

impl HostUser {
    /// The user from `/etc/passwd`, with its `/etc/subuid` and `/etc/subgid`
    /// ranges; `Err` says why it cannot be used.
    fn lookup(name: &str) -> Result<HostUser, String> {
        let passwd = fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
        let fields = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&name))
            .ok_or_else(|| {
                format!("no user {name} on this host (.ci/run creates it with subordinate ids)")
            })?;
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u32>().ok())
                .ok_or_else(|| format!("/etc/passwd: bad entry for {name}"))
        };
        let (uid, gid) = (num(2)?, num(3)?);
        let ranges = |file: &str| -> Vec<(u32, u32)> {
            fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.trim().split(':').collect();
                    let [who, start, count] = f.as_slice() else {
                        return None;
                    };
                    (*who == name || *who == uid.to_string())
                        .then(|| Some((start.parse().ok()?, count.parse().ok()?)))
                        .flatten()
                })
                .collect()
        };
        Ok(HostUser {
            name: name.to_owned(),
            uid,
            gid,
            uids: ranges("/etc/subuid"),
            gids: ranges("/etc/subgid"),
        })
    }

    /// A host id of a file the user's kiln wrote → the id inside its user
    /// namespace (the user's own id is 0, the ranges follow from 1).
    fn to_namespace(own: u32, ranges: &[(u32, u32)], host: u32) -> u32 {
        if host == own {
            return 0;
        }
        let mut next = 1u32;
        for &(start, count) in ranges {
            if host >= start && host - start < count {
                return next + (host - start);
            }
            next += count;
        }
        host
    }
}

struct Case {
    dir: PathBuf,
    /// Who runs `build` and `kiln` now: root, or a user (rootless).
    user: Option<HostUser>,
    /// Who ran the last `build` (whose outputs `report` reads).
    built_by: Option<HostUser>,
    /// Who runs `run` commands: root, except with an `as-user` prefix.
    run_by: Option<HostUser>,
    tmp: tempfile::TempDir,
    state: PathBuf,
    ctx: PathBuf,
    out: PathBuf,
    base_id: String,
    transcript: String,
    last_stderr: String,
    /// Registries the script started (`registry`), kept running until the
    /// case ends.
    registries: Vec<kiln_testkit::registry::Registry>,
    /// Proxies the script started (`proxy`), and how many of their requests
    /// `proxy-log` has written.
    proxies: Vec<(kiln_testkit::registry::FaultProxy, usize)>,
    /// HTTP servers the script started (`serve`), killed when the case ends.
    servers: Vec<Server>,
    /// S3 servers the script started (`s3`).
    s3_servers: Vec<S3Server>,
    /// A BuildKit-suite case (`testdata/buildkit-suite`): `build` records
    /// only whether it succeeded (the script checks `$LOG` and the outputs).
    suite: bool,
    /// The output of every `build` of a suite case (kept for a failing
    /// xfail case, beside its transcript).
    logs: String,
    /// The standard input of the next kiln command (`build --stdin FILE`).
    stdin: std::cell::Cell<Option<PathBuf>>,
    /// Variables the script set (`$REGISTRY`, …), expanded in its words and
    /// exported to `run` commands.
    vars: Vec<(String, String)>,
    /// `KILN_SNAPSHOTTER` for every kiln command, `run` ones included (the
    /// `-native` trials).
    snapshotter: Option<&'static str>,
}

/// A server a script started (`serve`) and its address; killed on drop.
struct Server(std::process::Child, String, String);

/// An S3-compatible server the script started (`s3`): the process ids of
/// `build-tools/s3-server.sh`'s daemons, read from their pid files when it
/// started (the case's directory may be gone when this is dropped), killed
/// when the case ends (their store is in memory: nothing to flush).
struct S3Server(Vec<String>);

impl S3Server {
    fn of(dir: &Path) -> S3Server {
        let pids = fs::read_dir(dir.join("run"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
            .filter_map(|e| fs::read_to_string(e.path()).ok())
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .collect();
        S3Server(pids)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("kill").arg("-9").args(&self.0).status();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn copy_tree(from: &Path, to: &Path) {
    sh(&format!("cp -a {}/. {}/", from.display(), to.display()));
}

impl Case {
    fn new(dir: &Path) -> Case {
        Case::new_as(dir, None, None)
    }

    /// The home directory of `user` in this case (created, owned by it).
    fn home(&self, user: &HostUser) -> PathBuf {
        let home = self.tmp.path().join(format!("home-{}", user.name));
        if !home.exists() {
            fs::create_dir_all(&home).unwrap();
            std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid)).unwrap();
        }
        home
    }

    /// `user`'s default state directory (`~/.local/share/kiln`).
    fn user_state(&self, user: &HostUser) -> PathBuf {
        self.home(user).join(".local/share/kiln")
    }

    /// Runs the following commands as `user` (None: root), on its state
    /// directory, importing the base there the first time.
    fn switch_user(&mut self, user: Option<HostUser>) {
        self.user = user;
        self.state = match &self.user {
            Some(u) => self.user_state(u),
            None => self.tmp.path().join("state"),
        };
        if self.user.is_some() && !self.state.exists() {
            let (code, _, stderr) = self.kiln(&self.import_base());
            assert_eq!(code, 0, "import as a user failed: {stderr}");
        }
    }

    fn new_as(dir: &Path, user: Option<HostUser>, snapshotter: Option<&'static str>) -> Case {
        let tmp = tempfile::tempdir().unwrap();
        // Users of rootless commands reach the context and write outputs.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o1777)).unwrap();
        let state = tmp.path().join("state");
        let ctx = tmp.path().join("ctx");
        let out = tmp.path().join("out");
        let log = tmp.path().join("build.log");
        fs::create_dir_all(&ctx).unwrap();
        fs::create_dir_all(&out).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o1777)).unwrap();
        if dir.join("context").is_dir() {
            copy_tree(&dir.join("context"), &ctx);
        }
        for f in fs::read_dir(dir).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("Dockerfile") {
                fs::copy(f.path(), ctx.join(&name)).unwrap();
            }
        }
        if dir.join("setup").exists() {
            let st = Command::new("sh")
                .arg("-e")
                .arg(dir.join("setup"))
                .current_dir(&ctx)
                .env("TOOLS", testdata().join("build-tools"))
                .status()
                .unwrap();
            assert!(st.success(), "setup of {} failed", dir.display());
        }
        let mut c = Case {
            dir: dir.to_path_buf(),
            user: None,
            built_by: None,
            run_by: None,
            tmp,
            state,
            ctx,
            out,
            base_id: String::new(),
            transcript: String::new(),
            last_stderr: String::new(),
            registries: Vec::new(),
            proxies: Vec::new(),
            servers: Vec::new(),
            s3_servers: Vec::new(),
            suite: dir.starts_with(testdata().join("buildkit-suite")),
            logs: String::new(),
            stdin: std::cell::Cell::new(None),
            vars: vec![
                ("BASES".to_owned(), bases_dir().display().to_string()),
                ("LOG".to_owned(), log.display().to_string()),
            ],
            snapshotter,
        };
        let (code, stdout, stderr) = c.kiln(&c.import_base());
        assert_eq!(code, 0, "import failed: {stderr}");
        c.base_id = stdout.trim().to_owned();
        if let Some(u) = &user {
            // A user builds a context it owns (the setup's 0700 directories
            // included).
            sh(&format!("chown -R {}:{} {}", u.uid, u.gid, c.ctx.display()));
            c.switch_user(user);
        }
        c
    }

    /// `SOURCE_DATE_EPOCH` for kiln and `run` commands: fixed, except in
    /// suite cases, which run as BuildKit's tests do (without it unless the
    /// script passes it).
    fn epoch(&self) -> Option<&'static str> {
        (!self.suite).then_some(EPOCH)
    }

    /// Suite cases push as BuildKit's tests do, talking to BuildKit without
    /// buildx: no default provenance (`BUILDX_NO_DEFAULT_ATTESTATIONS=1`).
    fn no_default_attestations(&self) -> Option<(&'static str, &'static str)> {
        self.suite
            .then_some(("BUILDX_NO_DEFAULT_ATTESTATIONS", "1"))
    }

    /// `kiln import` of the base as `busybox:latest` (in suite cases with
    /// `CMD ["sh"]`, as Docker Hub's image has).
    fn import_base(&self) -> Vec<String> {
        let mut args = vec!["import".to_owned()];
        if self.suite {
            args.extend(["-c".to_owned(), r#"CMD ["sh"]"#.to_owned()]);
        }
        args.extend([
            self.base().tar.display().to_string(),
            "busybox:latest".to_owned(),
        ]);
        args
    }

    /// The base this case's `busybox:latest` is made from.
    fn base(&self) -> &'static Base {
        if self.suite { suite_base() } else { base() }
    }

    fn kiln(&self, args: &[String]) -> (i32, String, String) {
        let mut cmd = Command::new(KILN);
        match &self.user {
            // A user's main state is its default one: no --root.
            Some(u) if self.state == self.user_state(u) => {
                use std::os::unix::process::CommandExt as _;
                cmd.uid(u.uid)
                    .gid(u.gid)
                    .env("HOME", self.home(u))
                    .env("USER", &u.name)
                    .env_remove("XDG_DATA_HOME");
            }
            Some(u) => {
                use std::os::unix::process::CommandExt as _;
                cmd.uid(u.uid)
                    .gid(u.gid)
                    .env("HOME", self.home(u))
                    .env("USER", &u.name)
                    .arg("--root")
                    .arg(&self.state);
            }
            None => {
                cmd.arg("--root").arg(&self.state);
            }
        }
        if let Some(f) = self.stdin.take() {
            cmd.stdin(fs::File::open(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
        }
        let out = cmd
            .args(args)
            .current_dir(&self.ctx)
            .env_remove("SOURCE_DATE_EPOCH")
            .envs(self.epoch().map(|e| ("SOURCE_DATE_EPOCH", e)))
            .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS")
            .envs(self.no_default_attestations())
            .env_remove("KILN_ROOT")
            .env("DOCKER_CONFIG", self.tmp.path().join("docker-config"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env("KILN_CONFIG", self.tmp.path().join("kiln-config.toml"))
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .envs(self.snapshotter.map(|s| ("KILN_SNAPSHOTTER", s)))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            self.normalize(&String::from_utf8_lossy(&out.stdout)),
            self.normalize(&String::from_utf8_lossy(&out.stderr)),
        )
    }

    /// `$OUT`, `$CTX` and `$STATE` in a script argument.
    fn expand(&self, word: &str) -> String {
        let mut word = word.to_owned();
        // Longest names first, so `$REGISTRY_CA` is not read as `$REGISTRY`.
        let mut vars = self.vars.clone();
        vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        for (k, v) in &vars {
            word = word.replace(&format!("${k}"), v);
        }
        word.replace("$OUT", &self.out.display().to_string())
            .replace("$CTX", &self.ctx.display().to_string())
            .replace("$STATE", &self.state.display().to_string())
    }

    fn normalize(&self, s: &str) -> String {
        let mut s = s.to_owned();
        for r in &self.registries {
            s = s.replace(&r.addr(), "$REGISTRY");
        }
        for (p, _) in &self.proxies {
            s = s.replace(&p.addr(), "$PROXY");
        }
        for srv in &self.servers {
            s = s.replace(&srv.1, &format!("${}", srv.2));
        }
        let mut s = s
            .replace(&self.state.display().to_string(), "$STATE")
            .replace(&self.ctx.display().to_string(), "$CTX")
            .replace(&self.out.display().to_string(), "$OUT")
            .replace(&self.tmp.path().display().to_string(), "$TMP");
        if !self.base_id.is_empty() {
            s = s.replace(&self.base_id, "<busybox>");
        }
        // Other image IDs depend on the base layer, i.e. on the host's busybox.
        digests().replace_all(&s, "sha256:<id>").into_owned()
    }

    fn build(&mut self, args: &[String]) {
        let mut full: Vec<String> = vec!["build".into(), "--progress=plain".into()];
        // The harness's own `--context CTX` (instead of `.`: a URL, `-`) and
        // `--stdin FILE` (kiln's standard input).
        let mut context = ".".to_owned();
        let mut rest = args.iter();
        while let Some(a) = rest.next() {
            match a.as_str() {
                "--context" => context = rest.next().expect("--context CTX").clone(),
                "--stdin" => self
                    .stdin
                    .set(Some(self.ctx.join(rest.next().expect("--stdin FILE")))),
                _ => full.push(a.clone()),
            }
        }
        if !args.iter().any(|a| a == "-o" || a.starts_with("--output")) {
            let _ = fs::remove_dir_all(self.out.join("oci"));
            let _ = fs::remove_dir_all(self.out.join("fs"));
            full.extend([
                "-o".into(),
                format!("type=oci,dest={}/oci,tar=false", self.out.display()),
                "-o".into(),
                format!("type=local,dest={}/fs", self.out.display()),
            ]);
        }
        full.push(context);
        let (code, _stdout, stderr) = self.kiln(&full);
        self.built_by = self.user.clone();
        fs::write(self.tmp.path().join("build.log"), &stderr).unwrap();
        if self.suite {
            // The Go tests tell success from failure, not exit codes.
            let outcome = if code == 0 { "ok" } else { "failed" };
            let _ = writeln!(self.transcript, "build {outcome}");
            let _ = writeln!(
                self.logs,
                "$ build {}\nexit {code}\n{stderr}",
                args.join(" ")
            );
            self.last_stderr = stderr;
            return;
        }
        let _ = writeln!(self.transcript, "exit {code}");
        // When a build fails, which other steps finished or were cancelled
        // depends on timing: only the failed step is shown.
        self.transcript.push_str(&steps(&stderr, code != 0));
        if code != 0 {
            if let Some(i) = stderr
                .find("\n------\n")
                .map(|i| i + 1)
                .or_else(|| stderr.find("error:"))
            {
                self.transcript.push_str(&stderr[i..]);
            } else {
                self.transcript.push_str(&stderr);
            }
        }
        self.last_stderr = stderr;
    }

    fn run(&mut self, cmd: &str) {
        let out = self.shell(cmd);
        let _ = writeln!(self.transcript, "exit {}", out.status.code().unwrap_or(-1));
        self.transcript
            .push_str(&self.normalize(&String::from_utf8_lossy(&out.stdout)));
        self.transcript
            .push_str(&self.normalize(&String::from_utf8_lossy(&out.stderr)));
    }

    /// `let NAME SHELL-COMMAND`: sets `$NAME` to the command's output
    /// (trimmed; a commit id, a URL); the command must succeed.
    fn let_var(&mut self, line: &str) {
        let (name, cmd) = line
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("{}: usage: let NAME COMMAND", self.dir.display()));
        let out = self.shell(cmd);
        assert!(
            out.status.success(),
            "{}: let {name}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.vars.push((name.to_owned(), value));
    }

    /// A shell command in the context directory, with the script's
    /// variables.
    fn shell(&self, cmd: &str) -> std::process::Output {
        let mut sh = Command::new("sh");
        if let Some(u) = &self.run_by {
            use std::os::unix::process::CommandExt as _;
            sh.uid(u.uid)
                .gid(u.gid)
                .env("HOME", self.home(u))
                .env("USER", &u.name)
                .env_remove("XDG_DATA_HOME");
        }
        sh.arg("-c")
            .arg(cmd)
            .current_dir(&self.ctx)
            .env("KILN", KILN)
            .env("STATE", &self.state)
            .env("OUT", &self.out)
            .env("CTX", &self.ctx)
            .env("TOOLS", testdata().join("build-tools"))
            .env("BASE_TAR", &self.base().tar)
            .env_remove("SOURCE_DATE_EPOCH")
            .envs(self.epoch().map(|e| ("SOURCE_DATE_EPOCH", e)))
            .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS")
            .envs(self.no_default_attestations())
            .env("DOCKER_CONFIG", self.tmp.path().join("docker-config"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env("KILN_CONFIG", self.tmp.path().join("kiln-config.toml"))
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .envs(self.snapshotter.map(|s| ("KILN_SNAPSHOTTER", s)))
            .output()
            .unwrap()
    }

    fn report(&mut self) {
        let layout = self.out.join("oci");
        let Ok(index) = fs::read(layout.join("index.json")) else {
            self.transcript
                .push_str("(no image to report: the build failed)\n");
            return;
        };
        let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
        let blob = |d: &str| {
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
        };
        let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(blob(&manifest_digest)).unwrap()).unwrap();
        let config_digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
        let mut config: serde_json::Value =
            serde_json::from_slice(&fs::read(blob(&config_digest)).unwrap()).unwrap();
        let base_diff = self.base().diff_id.clone();
        if let Some(ids) = config["rootfs"]["diff_ids"].as_array_mut() {
            for id in ids.iter_mut() {
                if id.as_str() == Some(base_diff.as_str()) {
                    *id = serde_json::Value::String("<busybox layer>".into());
                }
            }
        }
        self.transcript.push_str("== config\n");
        self.transcript
            .push_str(&serde_json::to_string_pretty(&config).unwrap());
        self.transcript.push('\n');
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        for (i, layer) in manifest["layers"].as_array().unwrap().iter().enumerate() {
            if diff_ids.get(i).map(String::as_str) == Some("<busybox layer>") {
                continue;
            }
            let f = fs::File::open(blob(layer["digest"].as_str().unwrap())).unwrap();
            let (_, tar) = kiln_oci::decompress(std::io::BufReader::new(f)).unwrap();
            let _ = writeln!(self.transcript, "== layer {}", i + 1);
            self.transcript
                .push_str(&kiln_snapshot::tar_listing(tar).unwrap());
        }
        self.transcript
            .push_str("== filesystem (changes from the busybox base)\n");
        let user = self.built_by.clone();
        let map = move |uid: u32, gid: u32| match &user {
            Some(u) => (
                HostUser::to_namespace(u.uid, &u.uids, uid),
                HostUser::to_namespace(u.gid, &u.gids, gid),
            ),
            None => (uid, gid),
        };
        self.transcript
            .push_str(&fs_diff(&self.base().rootfs, &self.out.join("fs"), &map));
    }

    /// `registry [auth]`: starts Debian's docker-registry on a loopback port
    /// (`auth`: htpasswd basic auth over TLS, user `kiln`, password
    /// `secret`, its CA in `$REGISTRY_CA` and trusted by kiln through
    /// `$KILN_CONFIG`); sets `$REGISTRY` to its `host:port`.
    fn registry(&mut self, args: &[String]) {
        use kiln_testkit::registry::{Registry, RegistryOptions};
        let auth = args.first().map(String::as_str) == Some("auth");
        let opts = if auth {
            RegistryOptions::basic_auth_tls("kiln", "secret")
        } else {
            RegistryOptions::anonymous()
        };
        let r = Registry::start(opts).unwrap_or_else(|e| panic!("starting docker-registry: {e}"));
        self.vars.push(("REGISTRY".to_owned(), r.addr()));
        if let Some(ca) = r.ca_file() {
            self.vars
                .push(("REGISTRY_CA".to_owned(), ca.display().to_string()));
            let config = format!("[registry.\"{}\"]\nca = \"{}\"\n", r.addr(), ca.display());
            fs::write(self.tmp.path().join("kiln-config.toml"), config).unwrap();
        }
        self.registries.push(r);
    }

    /// `s3`: starts an S3-compatible server on loopback (Ceph's radosgw on a
    /// one-node in-memory cluster, `build-tools/s3-server.sh`) with the
    /// bucket `ci-cache`; sets `$S3` to its `host:port`, `$S3_LOG` to its
    /// request log, and the AWS variables kiln reads its credentials and
    /// region from.
    fn s3(&mut self) {
        let dir = self
            .tmp
            .path()
            .join(format!("s3-{}", self.s3_servers.len()));
        let out = Command::new("bash")
            .arg(testdata().join("build-tools/s3-server.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .expect("bash");
        // Stopped when the case ends, also when starting failed half-way.
        self.s3_servers.push(S3Server::of(&dir));
        assert!(
            out.status.success(),
            "{}: starting the S3 server: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        for (k, v) in [
            ("S3", addr),
            ("S3_LOG", dir.join("client.rgw.log").display().to_string()),
            ("AWS_ACCESS_KEY_ID", "KILNTESTACCESSKEY".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "kilntestsecretkey".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ] {
            self.vars.push((k.to_owned(), v));
        }
    }

    /// `proxy`: a counting proxy in front of the last registry.
    fn proxy(&mut self) {
        let r = self
            .registries
            .last()
            .unwrap_or_else(|| panic!("{}: proxy before registry", self.dir.display()));
        let p = kiln_testkit::registry::FaultProxy::start(&r.addr(), false)
            .unwrap_or_else(|e| panic!("starting the proxy: {e}"));
        self.vars.push(("PROXY".to_owned(), p.addr()));
        self.proxies.push((p, 0));
    }

    /// `proxy-log FILE`: the requests since the last one, into FILE.
    fn proxy_log(&mut self, args: &[String]) {
        let [file] = args else {
            panic!("{}: usage: proxy-log FILE", self.dir.display());
        };
        let (p, seen) = self
            .proxies
            .last_mut()
            .unwrap_or_else(|| panic!("proxy-log before proxy"));
        let all = p.requests();
        let text: String = all[*seen..].iter().map(|r| format!("{r}\n")).collect();
        *seen = all.len();
        fs::write(file, text).unwrap();
    }

    /// `proxy-fault refuse-mount N`: the next N cross-repository mounts are
    /// answered with an upload session; `proxy-fault STATUS METHOD PATH N`:
    /// the next N requests with METHOD whose path contains PATH are answered
    /// with STATUS, not forwarded.
    fn proxy_fault(&mut self, args: &[String]) {
        use kiln_testkit::registry::Fault;
        let (method, path, fault, n) = match args {
            [kind, n] if kind == "refuse-mount" => ("POST", "mount=", Fault::RefuseMount, n),
            [status, method, path, n] => (
                method.as_str(),
                path.as_str(),
                Fault::Status(status.parse().unwrap_or_else(|_| {
                    panic!("{}: proxy-fault: bad status {status}", self.dir.display())
                })),
                n,
            ),
            _ => panic!(
                "{}: usage: proxy-fault refuse-mount N | proxy-fault STATUS METHOD PATH N",
                self.dir.display()
            ),
        };
        let (p, _) = self.proxies.last().expect("proxy-fault before proxy");
        p.inject(method, path, fault, n.parse().unwrap());
    }

    /// `serve DIR [VAR]`: serves the files of DIR (relative to the context)
    /// over HTTP on a loopback port (`build-tools/serve.py`: a file's
    /// `NAME.headers` sidecar holds extra response headers) and sets `$VAR`
    /// (default `HTTP`) to its `host:port`; requests are logged to
    /// `$VAR_LOG`.
    fn serve(&mut self, args: &[String]) {
        let (dir, var) = match args {
            [dir] => (dir, "HTTP"),
            [dir, var] => (dir, var.as_str()),
            _ => panic!("{}: usage: serve DIR [VAR]", self.dir.display()),
        };
        let log = self.tmp.path().join(format!("{var}.log"));
        let mut child = Command::new("python3")
            .arg(testdata().join("build-tools/serve.py"))
            .arg(self.ctx.join(dir))
            .arg(&log)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        let addr = line.trim().to_owned();
        assert!(
            !addr.is_empty(),
            "{}: serve.py did not start",
            self.dir.display()
        );
        self.servers
            .push(Server(child, addr.clone(), var.to_owned()));
        self.vars
            .push((format!("{var}_LOG"), log.display().to_string()));
        self.vars.push((var.to_owned(), addr));
    }

    /// `machine NAME`: switches to that machine's state directory.
    fn machine(&mut self, args: &[String]) {
        let [name] = args else {
            panic!("{}: usage: machine NAME", self.dir.display());
        };
        self.state = if name == "main" {
            self.tmp.path().join("state")
        } else {
            self.tmp.path().join("machines").join(name)
        };
        if !self.state.exists() {
            let (code, _, stderr) = self.kiln(&self.import_base());
            assert_eq!(code, 0, "import failed: {stderr}");
        }
        let _ = writeln!(self.transcript, "(state directory of machine {name})");
    }

    fn script(&mut self) {
        let script = fs::read_to_string(self.dir.join("script"))
            .unwrap_or_else(|_| "build\nreport\n".to_owned());
        for line in script.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let _ = writeln!(self.transcript, "$ {line}");
            let mut words: Vec<String> = shell_words(line);
            let saved = if words.first().map(String::as_str) == Some("as-user") {
                let Some(name) = words.get(1).cloned() else {
                    panic!("{}: usage: as-user NAME COMMAND…", self.dir.display());
                };
                let user = HostUser::lookup(&name)
                    .unwrap_or_else(|e| panic!("{}: as-user: {e}", self.dir.display()));
                words.drain(..2);
                let saved = (self.user.clone(), self.state.clone());
                self.run_by = Some(user.clone());
                self.switch_user(Some(user));
                Some(saved)
            } else {
                None
            };
            let words: Vec<String> = words.iter().map(|w| self.expand(w)).collect();
            match words.first().map(String::as_str) {
                Some("build") => self.build(&words[1..]),
                Some("report") => self.report(),
                Some("kiln") => {
                    let (code, stdout, stderr) = self.kiln(&words[1..]);
                    let _ = writeln!(self.transcript, "exit {code}");
                    self.transcript.push_str(&stdout);
                    self.transcript.push_str(&stderr);
                }
                Some("run") => {
                    let cmd = line.trim_start_matches("as-user").trim_start();
                    let cmd = if saved.is_some() {
                        cmd.split_once(char::is_whitespace)
                            .map_or("", |(_, r)| r)
                            .trim_start()
                    } else {
                        cmd
                    };
                    self.run(cmd.trim_start_matches("run").trim_start())
                }
                Some("registry") => self.registry(&words[1..]),
                Some("s3") => self.s3(),
                Some("serve") => self.serve(&words[1..]),
                Some("let") => self.let_var(line.trim_start_matches("let").trim_start()),
                Some("machine") => self.machine(&words[1..]),
                Some("proxy") => self.proxy(),
                Some("proxy-log") => self.proxy_log(&words[1..]),
                Some("proxy-fault") => self.proxy_fault(&words[1..]),
                other => panic!("{}: unknown script command {other:?}", self.dir.display()),
            }
            if let Some((user, state)) = saved {
                self.user = user;
                self.state = state;
                self.run_by = None;
            }
        }
    }
}

fn digests() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new("sha256:[0-9a-f]{64}").unwrap())
}

/// Splits a script line like a shell would (single and double quotes).
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                has = true;
            }
            (None, c) if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if has || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Each step's outcome from plain progress output, sorted by step name (only
/// the failed ones with `only_errors`).
fn steps(stderr: &str, only_errors: bool) -> String {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut outcome: BTreeMap<String, &str> = BTreeMap::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('#') else {
            continue;
        };
        let Some((id, text)) = rest.split_once(' ') else {
            continue;
        };
        // Byte counts of blobs as they move (registries, archives).
        if id == "0"
            && (text.starts_with("downloading ")
                || text.starts_with("uploading ")
                || text.starts_with("writing "))
        {
            continue;
        }
        if !names.contains_key(id) {
            names.insert(id.to_owned(), text.to_owned());
            continue;
        }
        if text == "CACHED" {
            outcome.insert(id.to_owned(), "cached");
        } else if text.starts_with("DONE") {
            outcome.entry(id.to_owned()).or_insert("done");
        } else if text.starts_with("ERROR") {
            outcome.insert(id.to_owned(), "error");
        } else if text == "CANCELED" {
            outcome.insert(id.to_owned(), "canceled");
        }
    }
    let mut lines: Vec<String> = names
        .iter()
        .filter(|(_, n)| n.as_str() != "exporting to image")
        .filter(|(id, _)| !only_errors || outcome.get(*id) == Some(&"error"))
        .map(|(id, n)| format!("  {n}: {}\n", outcome.get(id).copied().unwrap_or("?")))
        .collect();
    lines.sort();
    lines.concat()
}

/// One line describing an entry (no times: the local export keeps the
/// build's times, which vary).
fn describe(p: &Path, map: &dyn Fn(u32, u32) -> (u32, u32)) -> Option<String> {
    let m = fs::symlink_metadata(p).ok()?;
    let ft = m.file_type();
    let kind = if ft.is_dir() {
        "d"
    } else if ft.is_symlink() {
        "l"
    } else if ft.is_file() {
        "-"
    } else {
        "?"
    };
    let (uid, gid) = map(m.uid(), m.gid());
    let mut s = format!("{kind} {:04o} {uid}:{gid}", m.mode() & 0o7777);
    if ft.is_file() {
        let data = fs::read(p).ok()?;
        let digest = hex::encode(Sha256::digest(&data));
        let _ = write!(s, " {} sha256:{}", data.len(), &digest[..12]);
        if data.len() <= 40 && !data.contains(&0) {
            let _ = write!(s, " {:?}", String::from_utf8_lossy(&data));
        }
    }
    if ft.is_symlink() {
        let _ = write!(s, " -> {}", fs::read_link(p).ok()?.display());
    }
    if m.nlink() > 1 && ft.is_file() {
        let _ = write!(s, " links={}", m.nlink());
    }
    Some(s)
}

fn walk(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    fn rec(root: &Path, rel: &str, out: &mut BTreeMap<String, PathBuf>) {
        let dir = root.join(rel);
        let Ok(rd) = fs::read_dir(&dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let p = root.join(&r);
            let is_dir = fs::symlink_metadata(&p)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            out.insert(r.clone(), p);
            if is_dir {
                rec(root, &r, out);
            }
        }
    }
    rec(root, "", &mut out);
    out
}

/// How the filesystem `fs_dir` differs from `base`; `map` turns the owners
/// of `fs_dir` into the ids the image has.
fn fs_diff(base: &Path, fs_dir: &Path, map: &dyn Fn(u32, u32) -> (u32, u32)) -> String {
    let a = walk(base);
    let b = walk(fs_dir);
    let mut out = String::new();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        match (
            a.get(k).and_then(|p| describe(p, &|u, g| (u, g))),
            b.get(k).and_then(|p| describe(p, map)),
        ) {
            (None, Some(d)) => {
                let _ = writeln!(out, "+ /{k}  {d}");
            }
            (Some(_), None) => {
                let _ = writeln!(out, "- /{k}");
            }
            (Some(x), Some(y)) if x != y => {
                let _ = writeln!(out, "~ /{k}  {y}");
            }
            _ => {}
        }
    }
    out
}

fn run_case(
    dir: &Path,
    user: Option<HostUser>,
    snapshotter: Option<&'static str>,
) -> Result<Completion, Failed> {
    let mut c = Case::new_as(dir, user, snapshotter);
    c.script();
    let transcript = std::mem::take(&mut c.transcript);
    let logs = std::mem::take(&mut c.logs);
    drop(c.tmp);
    let expected = dir.join("expected");
    // The transcript and the builds' output of a suite case stay in the
    // target directory, for diagnosis.
    let rel = dir.strip_prefix(testdata()).unwrap_or(dir);
    let actual = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(rel)
        .join("actual");
    if !logs.is_empty() {
        let _ = fs::create_dir_all(actual.parent().unwrap());
        let _ = fs::write(&actual, &transcript);
        let _ = fs::write(actual.with_file_name("builds.log"), &logs);
    }
    let Some(reason) = xfail(dir) else {
        return match check(&expected, &transcript) {
            None => Ok(Completion::Completed),
            Some(diff) => Err(diff.into()),
        };
    };
    // An xfail case's `expected` is what BuildKit does, never rewritten from
    // kiln's output; kiln's transcript is kept for the diagnosis.
    if fs::read_to_string(&expected).ok().as_deref() == Some(transcript.as_str()) {
        return Err(format!(
            "{}: expected to fail ({reason}) but passed: delete its xfail file",
            dir.display()
        )
        .into());
    }
    Ok(Completion::ignored_with(format!("xfail: {reason}")))
}

/// The reason in the case's `xfail` file: the case is expected to fail.
fn xfail(dir: &Path) -> Option<String> {
    let reason = fs::read_to_string(dir.join("xfail")).ok()?;
    let reason = reason.trim().to_owned();
    assert!(
        !reason.is_empty() && !reason.contains('\n'),
        "{}/xfail: one line, the reason",
        dir.display()
    );
    Some(reason)
}

/// The build cases: `build/<case>`, and the translated BuildKit tests
/// `buildkit-suite/<file>/<test>` (named so).
fn all_case_dirs() -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = case_dirs(&testdata().join("build"))
        .into_iter()
        .map(|d| {
            let name = d.file_name().unwrap().to_string_lossy().into_owned();
            (d, name)
        })
        .collect();
    for group in case_dirs(&testdata().join("buildkit-suite")) {
        for d in case_dirs(&group) {
            let name = format!(
                "buildkit-suite/{}/{}",
                group.file_name().unwrap().to_string_lossy(),
                d.file_name().unwrap().to_string_lossy()
            );
            out.push((d, name));
        }
    }
    out
}

fn main() {
    let args = Arguments::from_args();
    let root = is_root();
    let registry_unavailable = kiln_testkit::registry::unavailable();
    if let Some(why) = &registry_unavailable {
        eprintln!("registry build cases ignored: {why}");
    }
    if root && !Path::new("/bin/busybox").exists() {
        eprintln!("the build tests need /bin/busybox: install Debian's busybox-static");
        std::process::exit(1);
    }
    // CI creates the rootless user and insists that the rootless cases run.
    if root
        && std::env::var_os("KILN_TEST_REQUIRE_ROOTLESS").is_some_and(|v| v == "1")
        && let Err(why) = HostUser::lookup(ROOTLESS_USER)
    {
        eprintln!("KILN_TEST_REQUIRE_ROOTLESS=1 but the rootless cases cannot run: {why}");
        std::process::exit(1);
    }
    let mut trials: Vec<Trial> = all_case_dirs()
        .into_iter()
        .flat_map(|(dir, name)| {
            // Cases that start a registry need docker-registry too.
            let needs_registry = fs::read_to_string(dir.join("script"))
                .is_ok_and(|s| s.lines().any(|l| l.trim_start().starts_with("registry")));
            let unmet = if root { unmet_needs(&dir) } else { None };
            if let Some(why) = &unmet {
                eprintln!("build case {name} ignored: {why}");
            }
            let runnable =
                root && !(needs_registry && registry_unavailable.is_some()) && unmet.is_none();
            let mut trials = Vec::new();
            // Cases that run kiln as a user need that user.
            let users: Vec<String> = fs::read_to_string(dir.join("script"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().strip_prefix("as-user "))
                .filter_map(|r| r.split_whitespace().next().map(str::to_owned))
                .collect();
            let missing = users.iter().find_map(|u| HostUser::lookup(u).err());
            if let Some(why) = &missing
                && root
            {
                eprintln!("build case {name} ignored: {why}");
            }
            let d = dir.clone();
            trials.push(
                Trial::ignorable_test(name.clone(), move || run_case(&d, None, None))
                    .with_ignored_flag(!runnable || missing.is_some()),
            );
            let native = dir.join("native").exists();
            if native {
                let d = dir.clone();
                trials.push(
                    Trial::ignorable_test(format!("{name}-native"), move || {
                        run_case(&d, None, Some("native"))
                    })
                    .with_ignored_flag(!runnable || missing.is_some()),
                );
            }
            if dir.join("rootless").exists() {
                let user = HostUser::lookup(ROOTLESS_USER);
                if let (Err(why), true) = (&user, root) {
                    eprintln!("build case {name}-rootless ignored: {why}");
                }
                let ok = user.is_ok();
                let snapshotters: &[(&str, Option<&'static str>)] = if native {
                    &[("rootless", None), ("rootless-native", Some("native"))]
                } else {
                    &[("rootless", None)]
                };
                for &(suffix, snapshotter) in snapshotters {
                    let (d, user) = (dir.clone(), user.clone());
                    trials.push(
                        Trial::ignorable_test(format!("{name}-{suffix}"), move || {
                            run_case(&d, Some(user.map_err(Failed::from)?), snapshotter)
                        })
                        .with_ignored_flag(!runnable || !ok),
                    );
                }
            }
            trials
        })
        .collect();
    trials.push(Trial::test("buildkit-suite-index", suite_index));
    let realistic = root && std::env::var_os("KILN_TEST_REALISTIC").is_some_and(|v| v == "1");
    trials.push(Trial::test("realistic", realistic_case).with_ignored_flag(!realistic));
    libtest_mimic::run(&args, trials).exit();
}

/// `testdata/buildkit-suite/index.tsv` accounts for every test function of
/// BuildKit's Dockerfile tests (`go-functions.txt`, the `func test…` names of
/// its `frontend/dockerfile/*_test.go`) once: `translated` (the case
/// directory `<file stem>/<function>` exists, and every case directory has
/// such a row), `elsewhere` (the testdata paths it names exist),
/// `not-translatable` or `helper` (with the reason).
fn suite_index() -> Result<(), Failed> {
    let suite = testdata().join("buildkit-suite");
    let read = |name: &str| fs::read_to_string(suite.join(name)).unwrap();
    let functions: Vec<(String, String)> = read("go-functions.txt")
        .lines()
        .map(|l| {
            let (f, t) = l.split_once('\t').unwrap();
            (f.to_owned(), t.to_owned())
        })
        .collect();
    let stem = |file: &str| {
        file.trim_end_matches("_test.go")
            .trim_start_matches("dockerfile_")
            .to_owned()
    };
    let mut problems = Vec::new();
    let mut rows: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    for (n, line) in read("index.tsv").lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let [file, func, status, note] = cols.as_slice() else {
            problems.push(format!("index.tsv:{}: not 4 columns", n + 1));
            continue;
        };
        let key = ((*file).to_owned(), (*func).to_owned());
        if rows
            .insert(key, ((*status).to_owned(), (*note).to_owned()))
            .is_some()
        {
            problems.push(format!("index.tsv:{}: {func} listed twice", n + 1));
        }
    }
    for key in &functions {
        let Some((status, note)) = rows.remove(key) else {
            problems.push(format!("{} {} is not in index.tsv", key.0, key.1));
            continue;
        };
        let dir = suite.join(stem(&key.0)).join(&key.1);
        let ok = match status.as_str() {
            "translated" => dir.join("expected").exists(),
            "elsewhere" => {
                !note.is_empty()
                    && note
                        .split_whitespace()
                        .filter(|w| w.starts_with("testdata/"))
                        .all(|w| testdata().join("..").join(w).exists())
            }
            "not-translatable" | "helper" => !note.is_empty(),
            _ => false,
        };
        if !ok || (dir.exists() && status != "translated") {
            problems.push(format!("{} {}: bad row ({status}: {note})", key.0, key.1));
        }
    }
    for key in rows.keys() {
        problems.push(format!(
            "index.tsv names {} {}, not a BuildKit test",
            key.0, key.1
        ));
    }
    for group in case_dirs(&suite) {
        for d in case_dirs(&group) {
            let func = d.file_name().unwrap().to_string_lossy().into_owned();
            let listed = functions
                .iter()
                .any(|(f, t)| *t == func && suite.join(stem(f)) == group);
            if !listed {
                problems.push(format!("{}: no such BuildKit test", d.display()));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n").into())
    }
}

/// A debootstrapped Debian base, `apt-get install gcc` in a RUN step, a
/// static binary copied into a busybox stage.
fn realistic_case() -> Result<(), Failed> {
    let dir = testdata().join("build-realistic");
    let mut c = Case::new(&dir);
    let debroot = c.tmp.path().join("debian");
    let st = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&debroot)
        .arg("http://deb.debian.org/debian")
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("debootstrap: {e} (install Debian's debootstrap)"))?;
    if !st.success() {
        return Err("debootstrap failed".into());
    }
    let tar = c.tmp.path().join("debian.tar");
    sh(&format!(
        "tar --sort=name --numeric-owner -C {} -cf {} .",
        debroot.display(),
        tar.display()
    ));
    let (code, _, stderr) = c.kiln(&[
        "import".into(),
        tar.display().to_string(),
        "debian:bookworm".into(),
    ]);
    if code != 0 {
        return Err(format!("import: {stderr}").into());
    }
    c.script();
    if !c.last_stderr.contains("exporting to image") {
        return Err(format!("build failed:\n{}", c.transcript).into());
    }
    let transcript = std::mem::take(&mut c.transcript);
    match check(&dir.join("expected"), &transcript) {
        None => Ok(()),
        Some(diff) => Err(diff.into()),
    }
}
