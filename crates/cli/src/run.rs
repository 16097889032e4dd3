//! `kiln run`: runs a command in an image of the store, the way `docker run
//! --rm` does, so that a built image can be tried without Docker.
//!
//! The process runs exactly as a RUN step does (the same executor: its own
//! namespaces, seccomp profile, capabilities, device rules, network
//! namespace), on the image's layers with a throw-away upper directory:
//! what it writes is gone when it ends. kiln has no containers to keep, so
//! every `kiln run` is a `docker run --rm`; there is no daemon, so there is
//! no `--detach`. The exit status is the command's (128 + N when killed by
//! signal N); kiln's own failures exit 125 and a command that cannot be
//! executed 126 or 127, as `docker run` does.

use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::Path;

use anyhow::Context as _;
use kiln_executor::{Attach, AttachMode, ExitStatus, ExtraMount, MountKind, Network, Rootfs};
use kiln_worker::lock::LockKind;

use crate::args::{RunArgs, RunDockerOnly};
use crate::failure::Failure;
use crate::store::{find_id, lock, open_for_layers};

impl RunDockerOnly {
    fn unsupported(&self) -> Option<String> {
        let why = if self.detach {
            "--detach (kiln has no daemon: a container lives as long as `kiln run`)"
        } else if !self.publish.is_empty() {
            "--publish (use --network host to reach the container's ports)"
        } else if self.name.is_some() {
            "--name (kiln keeps no containers to name)"
        } else if self.privileged {
            "--privileged"
        } else if !self.cap_add.is_empty() {
            "--cap-add"
        } else if self.platform.is_some() {
            "--platform (kiln run takes the image as it is in the store: `kiln pull --platform` first)"
        } else if self.pull.is_some() {
            "--pull (use `kiln pull` first)"
        } else {
            return None;
        };
        Some(format!("kiln run: {why} is not supported yet"))
    }
}

/// Exit status of `kiln run`'s own failures, as `docker run`'s.
const OWN_FAILURE: u8 = 125;

pub fn run(globals: &crate::globals::Globals, args: &RunArgs) -> Result<(), Failure> {
    if let Some(m) = args.docker_only.unsupported() {
        return Err(Failure::Usage(m));
    }
    match prepare_and_run(globals, args) {
        Ok(code) => {
            if code == 0 {
                Ok(())
            } else {
                Err(Failure::Status(code))
            }
        }
        Err(Failure::Other(e) | Failure::Internal(e) | Failure::Registry(e)) => {
            eprintln!("kiln: {}", crate::failure::chain_message(&e));
            Err(Failure::Status(OWN_FAILURE))
        }
        Err(f) => Err(f),
    }
}

/// What the container runs: the command line, environment, directory and
/// user, from the image's configuration and the flags, as `docker run`
/// combines them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Process {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
}

/// Docker's rules: `--entrypoint` replaces the image's ENTRYPOINT and drops
/// its CMD; arguments after the image replace CMD; the environment is the
/// image's, then `--env-file`s, then `-e`s (a later value of a key wins);
/// `PATH` gets Docker's default when the image has none; `HOSTNAME` is the
/// container's host name, and `TERM=xterm` comes with `-t`.
pub(crate) fn process(
    config: &kiln_oci::RuntimeConfig,
    args: &RunArgs,
    env_files: &[String],
    host_env: &dyn Fn(&str) -> Option<String>,
    hostname: &str,
) -> Result<Process, String> {
    let mut argv: Vec<String> = match &args.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => config.entrypoint.clone(),
    };
    if !args.command.is_empty() {
        argv.extend(args.command.iter().cloned());
    } else if args.entrypoint.is_none() {
        argv.extend(config.cmd.iter().cloned());
    }
    if argv.is_empty() {
        return Err(
            "no command specified: the image has no ENTRYPOINT or CMD, give one after the image"
                .to_owned(),
        );
    }
    let mut env: Vec<String> = config.env.clone();
    let mut set = |kv: String| {
        let key = kv
            .split_once('=')
            .map_or(kv.as_str(), |(k, _)| k)
            .to_owned();
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(kv);
    };
    if !config.env.iter().any(|e| e.starts_with("PATH=")) {
        set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned());
    }
    set(format!("HOSTNAME={hostname}"));
    if args.tty {
        set("TERM=xterm".to_owned());
    }
    for e in env_files.iter().chain(&args.env) {
        match e.split_once('=') {
            Some(("", _)) => return Err(format!("invalid environment variable: {e}")),
            Some(_) => set(e.clone()),
            None if e.is_empty() => return Err("invalid environment variable: empty".to_owned()),
            None => {
                if let Some(v) = host_env(e) {
                    set(format!("{e}={v}"));
                }
            }
        }
    }
    let cwd = match args.workdir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) if !w.starts_with('/') => {
            return Err(format!(
                "the working directory {w:?} is invalid: it needs to be an absolute path"
            ));
        }
        Some(w) => w.to_owned(),
        None if config.working_dir.is_empty() => "/".to_owned(),
        None => config.working_dir.clone(),
    };
    let user = args.user.clone().unwrap_or_else(|| config.user.clone());
    Ok(Process {
        args: argv,
        env,
        cwd,
        user,
    })
}

/// The `KEY=VALUE` (or `KEY`) lines of an `--env-file`, as Docker reads them.
pub(crate) fn read_env_file(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('=') {
            return Err(format!(
                "{}:{}: no variable name on line {line:?}",
                path.display(),
                n + 1
            ));
        }
        out.push(line.to_owned());
    }
    Ok(out)
}

/// `-v SRC:DST[:ro|rw]` and `--tmpfs DST`.
pub(crate) fn mounts(volumes: &[String], tmpfs: &[String]) -> Result<Vec<ExtraMount>, String> {
    let mut out = Vec::new();
    for v in volumes {
        let parts: Vec<&str> = v.split(':').collect();
        let (src, dst, readonly) = match parts.as_slice() {
            [s, d] => (*s, *d, false),
            [s, d, "ro"] => (*s, *d, true),
            [s, d, "rw"] => (*s, *d, false),
            [_, _, o] => {
                return Err(format!(
                    "-v {v}: mount option {o:?} is not supported yet (ro or rw)"
                ));
            }
            _ => return Err(format!("-v {v}: expected /host/path:/container/path[:ro]")),
        };
        if !src.starts_with('/') {
            return Err(format!(
                "-v {v}: named volumes are not supported yet (kiln keeps no volumes): give an absolute host path"
            ));
        }
        if !dst.starts_with('/') {
            return Err(format!("-v {v}: the container path must be absolute"));
        }
        let source = std::fs::canonicalize(src).map_err(|e| format!("-v {v}: {src}: {e}"))?;
        out.push(ExtraMount {
            target: dst.to_owned(),
            kind: MountKind::Bind { source, readonly },
        });
    }
    for t in tmpfs {
        let (dst, opts) = t.split_once(':').unwrap_or((t, ""));
        if !opts.is_empty() {
            return Err(format!("--tmpfs {t}: options are not supported yet"));
        }
        if !dst.starts_with('/') {
            return Err(format!("--tmpfs {t}: the container path must be absolute"));
        }
        out.push(ExtraMount {
            target: dst.to_owned(),
            kind: MountKind::Tmpfs { size: 0 },
        });
    }
    // Parents before children, as the executor mounts them in order.
    out.sort_by_key(|m| m.target.trim_end_matches('/').matches('/').count());
    Ok(out)
}

fn network(mode: &str) -> Result<Network, String> {
    match mode {
        "default" | "bridge" => Ok(Network::Isolated),
        "none" => Ok(Network::None),
        "host" => Ok(Network::Host),
        other => Err(format!(
            "--network {other:?} is not supported yet (default, bridge, none or host)"
        )),
    }
}

fn prepare_and_run(globals: &crate::globals::Globals, args: &RunArgs) -> Result<u8, Failure> {
    if args.tty && !nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        return Err(Failure::Usage(
            "kiln run -t: the input device is not a TTY (leave out -t)".to_owned(),
        ));
    }
    let net = network(&args.network).map_err(Failure::Usage)?;
    let mut env_files = Vec::new();
    for f in &args.env_file {
        env_files.extend(
            read_env_file(f).map_err(|e| Failure::Other(anyhow::anyhow!("--env-file {e}")))?,
        );
    }
    let extra = mounts(&args.volumes, &args.tmpfs).map_err(Failure::Usage)?;
    if globals.isolation == crate::args::IsolationChoice::Container {
        return Err(Failure::Usage(
            "kiln run is not supported with --isolation=container yet: it runs the container \
             in namespaces of its own"
                .to_owned(),
        ));
    }
    let mut state = open_for_layers(globals.root.as_deref())?;
    let snapshotter = crate::snapshotter::choose_snapshotter(&mut state, globals, None)?;
    let _lock = lock(&state, LockKind::Shared)?;
    let id = find_id(&state, &args.image).map_err(|_| {
        Failure::Other(anyhow::anyhow!(
            "Unable to find image '{}' in the store: `kiln pull {}` or `kiln build -t {}` first",
            args.image,
            args.image,
            args.image
        ))
    })?;
    let config =
        kiln_worker::image::load_config(&state, &id).map_err(|e| Failure::Other(e.into()))?;
    let platform = config.platform();
    kiln_worker::emulation::check(&platform).map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))?;
    let hostname = args.hostname.clone().unwrap_or_else(|| {
        let mut b = [0u8; 6];
        let _ = getrandom(&mut b);
        hex::encode(b)
    });
    let runtime = kiln_worker::image::runtime_config(&kiln_worker::image::to_llb(&config));
    let host_env = |k: &str| std::env::var(k).ok();
    let p = process(&runtime, args, &env_files, &host_env, &hostname).map_err(Failure::Usage)?;
    let layers =
        kiln_worker::image::image_layers(&state, &id).map_err(|e| Failure::Other(e.into()))?;
    let draft = state
        .layers
        .create()
        .context("making the container's writable layer")?;
    let scratch = state.scratch().map_err(|e| Failure::Other(e.into()))?;
    let mountpoint = scratch.path().join("rootfs");
    std::fs::create_dir(&mountpoint)
        .with_context(|| format!("creating {}", mountpoint.display()))?;
    let spec = kiln_executor::RunSpec {
        rootfs: Rootfs {
            lowers: state
                .layer_dirs(&layers)
                .map_err(|e| Failure::Other(e.into()))?,
            upper: draft.diff_dir().to_path_buf(),
            work: draft.work_dir().to_path_buf(),
            mountpoint,
            views: None,
        },
        args: p.args,
        env: p.env,
        cwd: p.cwd,
        user: p.user,
        hostname,
        network: net,
        mounts: extra,
        privileged: false,
        limits: Default::default(),
        resources: Default::default(),
    };
    let exe = std::env::current_exe().context("locating the kiln binary")?;
    let executor = kiln_executor::NamespaceExecutor::new(exe, vec!["__exec".into()], snapshotter);
    let status = if args.tty {
        run_with_tty(&executor, &spec, args.interactive)?
    } else {
        let input = if args.interactive {
            Some(
                std::io::stdin()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("duplicating stdin")?,
            )
        } else {
            None
        };
        let attach = Attach {
            mode: if args.interactive {
                AttachMode::Stdin
            } else {
                AttachMode::Output
            },
            input,
        };
        executor
            .run_attached(&spec, &attach, &|| false)
            .map_err(|e| exec_failure(&e))?
    };
    drop(spec);
    drop(draft);
    drop(scratch);
    Ok(match status {
        ExitStatus::Code(c) => u8::try_from(c & 0xff).unwrap_or(1),
        ExitStatus::Signal(s) => u8::try_from((128 + s) & 0xff).unwrap_or(1),
    })
}

fn getrandom(b: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(b)
}

/// A process that could not start: 127 when the program is not there, 126
/// when it cannot be executed (as `docker run`), else kiln's own failure.
fn exec_failure(e: &kiln_executor::ExecError) -> Failure {
    eprintln!("kiln: {e}");
    match e {
        kiln_executor::ExecError::NotStarted(f) if f.is_missing() => Failure::Status(127),
        kiln_executor::ExecError::NotStarted(_) => Failure::Status(126),
        _ => Failure::Status(OWN_FAILURE),
    }
}

/// Restores a terminal's settings when dropped.
struct RawMode {
    fd: OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            &self.fd,
            nix::sys::termios::SetArg::TCSADRAIN,
            &self.saved,
        );
    }
}

/// `-t`: a pseudo-terminal of the container's own (made in its devpts by
/// the executor, sized as ours before the process starts); our terminal in raw mode
/// while it runs (keys, Ctrl-C included, go to the container's terminal),
/// its output copied to our stdout.
fn run_with_tty(
    executor: &kiln_executor::NamespaceExecutor,
    spec: &kiln_executor::RunSpec,
    interactive: bool,
) -> Result<ExitStatus, Failure> {
    use nix::sys::termios;
    let stdin = std::io::stdin();
    let winsize = rustix::termios::tcgetwinsize(stdin.as_fd()).ok();
    let tty_in = stdin
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stdin")?;
    let saved = termios::tcgetattr(&tty_in).context("reading the terminal's settings")?;
    let (ours, theirs) = kiln_executor::terminal_socket().context("making a socket pair")?;
    let mut raw = saved.clone();
    termios::cfmakeraw(&mut raw);
    termios::tcsetattr(&tty_in, termios::SetArg::TCSADRAIN, &raw)
        .context("setting the terminal to raw mode")?;
    let _restore = RawMode {
        fd: tty_in.try_clone().context("duplicating stdin")?,
        saved,
    };
    let copier = std::thread::spawn(move || {
        // Nothing when the helper failed before making the terminal.
        let Ok(Some(primary)) = kiln_executor::receive_terminal(&ours, winsize) else {
            return;
        };
        let primary = std::fs::File::from(primary);
        if interactive && let Ok(mut to_container) = primary.try_clone() {
            let mut input = std::fs::File::from(tty_in);
            // Left running when the container ends (a read of our
            // terminal cannot be interrupted); kiln exits right after.
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = input.read(&mut buf) {
                    if n == 0 || to_container.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
        let mut from_container = primary;
        let mut out = std::io::stdout();
        let mut buf = [0u8; 8192];
        // EIO once every process of the container is gone.
        while let Ok(n) = from_container.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = out.flush();
        }
    });
    let attach = Attach {
        mode: AttachMode::Tty,
        input: Some(theirs),
    };
    let status = executor.run_attached(spec, &attach, &|| false);
    // Our copy of the helper's end: once closed, a helper that never sent
    // a terminal lets the copier see the end of the socket.
    drop(attach);
    let _ = copier.join();
    status.map_err(|e| exec_failure(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(line: &[&str]) -> RunArgs {
        T::try_parse_from(std::iter::once("run").chain(line.iter().copied()))
            .unwrap()
            .run
    }

    fn config() -> kiln_oci::RuntimeConfig {
        kiln_oci::RuntimeConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            working_dir: "/app".into(),
            user: "www".into(),
            ..Default::default()
        }
    }

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn docker_combines_entrypoint_cmd_and_arguments() {
        let c = config();
        let p = process(&c, &args(&["img"]), &[], &none, "h").unwrap();
        assert_eq!(p.args, ["/entry", "serve", "--port=80"]);
        let p = process(&c, &args(&["img", "ls", "-l"]), &[], &none, "h").unwrap();
        assert_eq!(p.args, ["/entry", "ls", "-l"]);
        let p = process(&c, &args(&["--entrypoint", "sh", "img"]), &[], &none, "h").unwrap();
        assert_eq!(p.args, ["sh"]);
        let p = process(
            &c,
            &args(&["--entrypoint", "sh", "img", "-c", "x"]),
            &[],
            &none,
            "h",
        )
        .unwrap();
        assert_eq!(p.args, ["sh", "-c", "x"]);
        let p = process(&c, &args(&["--entrypoint=", "img", "id"]), &[], &none, "h").unwrap();
        assert_eq!(p.args, ["id"]);
        let e = process(&c, &args(&["--entrypoint=", "img"]), &[], &none, "h").unwrap_err();
        assert!(e.starts_with("no command specified"), "{e}");
    }

    #[test]
    fn environment_image_then_files_then_flags() {
        let c = config();
        let host = |k: &str| (k == "FROM_HOST").then(|| "h v".to_owned());
        let files = vec!["A=file".to_owned(), "B=file".to_owned()];
        let p = process(
            &c,
            &args(&[
                "-e",
                "B=flag",
                "-e",
                "FROM_HOST",
                "-e",
                "UNSET",
                "-t",
                "img",
            ]),
            &files,
            &host,
            "abc",
        )
        .unwrap();
        assert_eq!(
            p.env,
            [
                "PATH=/bin",
                "HOSTNAME=abc",
                "TERM=xterm",
                "A=file",
                "B=flag",
                "FROM_HOST=h v"
            ]
        );
        let e = process(&c, &args(&["-e", "=x", "img"]), &[], &none, "h").unwrap_err();
        assert!(e.contains("invalid environment variable"), "{e}");
    }

    #[test]
    fn default_path_workdir_and_user() {
        let c = kiln_oci::RuntimeConfig {
            cmd: vec!["sh".into()],
            ..Default::default()
        };
        let p = process(&c, &args(&["img"]), &[], &none, "h").unwrap();
        assert_eq!(p.cwd, "/");
        assert_eq!(p.user, "");
        assert!(p.env[0].starts_with("PATH=/usr/local/sbin:"));
        let p = process(
            &config(),
            &args(&["-w", "/tmp", "-u", "0:0", "img"]),
            &[],
            &none,
            "h",
        )
        .unwrap();
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/tmp", "0:0"));
        let e = process(&config(), &args(&["-w", "rel", "img"]), &[], &none, "h").unwrap_err();
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn volumes_and_tmpfs() {
        let m = mounts(
            &["/tmp:/data/x:ro".into(), "/:/data".into()],
            &["/run/t".into()],
        )
        .unwrap();
        let targets: Vec<&str> = m.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(targets, ["/data", "/data/x", "/run/t"]);
        assert!(matches!(&m[1].kind, MountKind::Bind { readonly: true, .. }));
        for (bad, why) in [
            ("vol:/data", "named volumes"),
            ("/tmp:rel", "absolute"),
            ("/tmp:/x:z", "not supported yet"),
            ("/tmp", "expected"),
        ] {
            let e = mounts(&[bad.into()], &[]).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn env_file_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("env");
        std::fs::write(&f, "# comment\n\nA=1\n  B=two words\nC\n").unwrap();
        assert_eq!(read_env_file(&f).unwrap(), ["A=1", "B=two words", "C"]);
        std::fs::write(&f, "A=1\n=x\n").unwrap();
        let e = read_env_file(&f).unwrap_err();
        assert!(e.contains(":2: no variable name"), "{e}");
    }

    #[test]
    fn docker_only_flags_are_refused_by_name() {
        for (line, name) in [
            (&["-d", "img"][..], "--detach"),
            (&["-p", "80:80", "img"], "--publish"),
            (&["--name", "x", "img"], "--name"),
            (&["--privileged", "img"], "--privileged"),
        ] {
            let m = args(line).docker_only.unsupported().unwrap();
            assert!(m.contains(name) && m.contains("not supported yet"), "{m}");
        }
        assert_eq!(args(&["img"]).docker_only.unsupported(), None);
    }
}
