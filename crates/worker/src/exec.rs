//! Exec ops (`RUN`): the parent's layers, a fresh upper directory, and
//! `kiln-executor` to run the command in new namespaces on them.

use kiln_executor::{ExitStatus, Network as ExecNetwork, Rootfs, RunSpec, Stream};
use kiln_llb::op::{ExecOp, MountKind, Network, Security};
use kiln_solver::{Cx, Resolved};

use crate::Value;
use crate::error::Error;
use crate::worker::LlbWorker;

/// The process environment: the op's, plus the proxy variables (which never
/// enter the cache key), in both spellings as BuildKit sets them.
fn environment(e: &ExecOp) -> Vec<String> {
    let mut env = e.env.clone();
    let p = &e.proxy_env;
    for (upper, lower, v) in [
        ("HTTP_PROXY", "http_proxy", &p.http_proxy),
        ("HTTPS_PROXY", "https_proxy", &p.https_proxy),
        ("FTP_PROXY", "ftp_proxy", &p.ftp_proxy),
        ("NO_PROXY", "no_proxy", &p.no_proxy),
        ("ALL_PROXY", "all_proxy", &p.all_proxy),
    ] {
        if !v.is_empty() {
            env.push(format!("{upper}={v}"));
            env.push(format!("{lower}={v}"));
        }
    }
    env
}

/// Refuses what this milestone does not run yet, by name.
fn check_supported(e: &ExecOp) -> Result<usize, Error> {
    let mut root = None;
    for (i, m) in e.mounts.iter().enumerate() {
        if m.target == "/" && m.output && matches!(m.kind, MountKind::Bind) {
            root = Some(i);
            continue;
        }
        let kind = match &m.kind {
            MountKind::Bind => "bind",
            MountKind::Cache { .. } => "cache",
            MountKind::Tmpfs { .. } => "tmpfs",
            MountKind::Secret { .. } => "secret",
            MountKind::Ssh { .. } => "ssh",
        };
        return Err(Error::Other(format!(
            "RUN --mount=type={kind} is not supported yet"
        )));
    }
    if e.security == Security::Insecure {
        return Err(Error::Other(
            "RUN --security=insecure is not supported yet".to_owned(),
        ));
    }
    if !e.devices.is_empty() {
        return Err(Error::Other("RUN --device is not supported yet".to_owned()));
    }
    root.ok_or_else(|| Error::Other("RUN without a root filesystem".to_owned()))
}

/// Runs `e`; the new layer is the upper directory of its root.
pub fn execute(
    w: &LlbWorker,
    e: &ExecOp,
    inputs: &[Resolved<Value>],
    cx: &Cx,
) -> Result<Value, Error> {
    let root_mount = &e.mounts[check_supported(e)?];
    let base = match root_mount.input {
        Some(i) => {
            let input = inputs
                .get(i as usize)
                .ok_or_else(|| Error::Other(format!("RUN refers to missing input #{i}")))?;
            w.layers_of(&input.value)?
        }
        None => Vec::new(),
    };
    let draft = w.state.layers.create()?;
    let scratch = w.state.scratch()?;
    let mountpoint = scratch.path().join("rootfs");
    std::fs::create_dir(&mountpoint).map_err(|source| Error::Io {
        what: format!("creating {}", mountpoint.display()),
        source,
    })?;
    let spec = RunSpec {
        rootfs: Rootfs {
            lowers: w.state.layer_dirs(&base)?,
            upper: draft.diff_dir().to_path_buf(),
            work: draft.work_dir().to_path_buf(),
            mountpoint,
        },
        args: e.args.clone(),
        env: environment(e),
        cwd: e.cwd.clone(),
        user: e.user.clone(),
        hostname: if e.hostname.is_empty() {
            w.exec.hostname.clone()
        } else {
            e.hostname.clone()
        },
        network: match e.network {
            Network::None => ExecNetwork::None,
            Network::Default | Network::Host => ExecNetwork::Host,
        },
        mounts: Vec::new(),
    };
    let mut output = |stream: Stream, data: &[u8]| {
        let s = match stream {
            Stream::Stdout => kiln_solver::Stream::Stdout,
            Stream::Stderr => kiln_solver::Stream::Stderr,
        };
        cx.log(s, data);
    };
    let status = w.executor.run(&spec, &mut output, &|| cx.is_cancelled())?;
    // BuildKit's wording, with Go's %q quoting of the command line.
    let failed = |what: String| {
        Error::Other(format!(
            "process {} did not complete successfully: {what}",
            kiln_frontend::quote::go_quote(&e.args.join(" "))
        ))
    };
    match status {
        ExitStatus::Code(0) => {}
        ExitStatus::Code(n) => return Err(failed(format!("exit code: {n}"))),
        ExitStatus::Signal(s) => return Err(failed(format!("killed by signal {s}"))),
    }
    let layer = draft.commit(crate::image::built_layer_meta())?;
    let mut layers: Vec<String> = base.iter().map(|l| l.as_str().to_owned()).collect();
    layers.push(layer.id.as_str().to_owned());
    Ok(Value::Fs { layers })
}
