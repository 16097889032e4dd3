//! Exec ops (`RUN`): the parent's layers, a fresh upper directory, and
//! `kiln-executor` to run the command in new namespaces on them.

use kiln_executor::{Executor, ExitStatus, Network as ExecNetwork, Rootfs, RunSpec, Stream};
use kiln_llb::op::{ExecOp, MountKind, Network, Security};
use kiln_solver::{Cx, Resolved};

use crate::error::{Entitlement, Error, InternalError, RunError, Unsupported};
use crate::grants::ExecGrants;
use crate::ops::mounts::MountOps;
use crate::value::{LayerRef, Value};

/// Settings of the RUN steps of one build.
#[derive(Debug, Clone)]
pub struct ExecSettings {
    /// The hostname RUN steps see.
    pub hostname: String,
    /// Secrets, SSH agents and entitlements granted to RUN steps.
    pub grants: std::sync::Arc<ExecGrants>,
    /// Memory and process limits of RUN steps.
    pub limits: kiln_executor::Limits,
    /// `/dev/shm` size and resource limits of RUN steps.
    pub resources: kiln_executor::Resources,
}

/// What a RUN step needs of its build: what its mounts need (the layers
/// of its root among them), the executor and the build's RUN settings.
#[derive(Clone, Copy)]
pub(crate) struct ExecOps<'a> {
    pub(crate) mounts: MountOps<'a>,
    pub(crate) executor: &'a dyn Executor,
    pub(crate) settings: &'a ExecSettings,
}

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

/// The index of the root mount; refuses what does not run yet, by name, and
/// what the build did not allow.
pub(crate) fn check_supported(grants: &ExecGrants, e: &ExecOp) -> Result<usize, Error> {
    if e.security == Security::Insecure && !grants.allow_insecure {
        return Err(RunError::NotAllowed(Entitlement::SecurityInsecure).into());
    }
    if e.network == Network::Host && !grants.allow_network_host {
        return Err(RunError::NotAllowed(Entitlement::NetworkHost).into());
    }
    if !e.devices.is_empty() {
        return Err(Unsupported::Devices.into());
    }
    e.mounts
        .iter()
        .position(|m| m.target == "/" && m.output && matches!(m.kind, MountKind::Bind))
        .ok_or(Error::Internal(InternalError::NoRootFs))
}

/// Runs `e`; the new layer is the upper directory of its root.
/// `ignore_cache`: the step is under `--no-cache` (see
/// [`crate::ops::mounts::prepare`] for what that does to its cache mounts).
pub(crate) fn execute(
    ops: ExecOps<'_>,
    e: &ExecOp,
    inputs: &[Resolved<Value>],
    ignore_cache: bool,
    cx: &Cx,
) -> Result<Value, Error> {
    let root_mount = &e.mounts[check_supported(&ops.settings.grants, e)?];
    let layers = ops.mounts.layers;
    // Only a step that runs needs emulation: a cached one for another
    // architecture is fine on a machine without it.
    if let Some(p) = &e.platform {
        crate::emulation::check(p).map_err(RunError::from)?;
    }
    let base = match root_mount.input {
        Some(i) => {
            let input = inputs
                .get(i as usize)
                .ok_or_else(|| InternalError::MissingInput {
                    user: "RUN".to_owned(),
                    index: i,
                })?;
            layers.layers_of(&input.value)?
        }
        None => Vec::new(),
    };
    let draft = layers.state.layers.create()?;
    let scratch = layers.state.scratch()?;
    let mountpoint = scratch.path().join("rootfs");
    std::fs::create_dir(&mountpoint).map_err(|source| Error::Io {
        what: format!("creating {}", mountpoint.display()),
        source,
    })?;
    let prepared =
        crate::ops::mounts::prepare(ops.mounts, e, inputs, scratch.path(), ignore_cache, cx)?;
    let mut env = environment(e);
    env.extend(prepared.env.iter().cloned());
    let spec = RunSpec {
        rootfs: Rootfs {
            lowers: layers.state.layer_dirs(&base)?,
            upper: draft.diff_dir().to_path_buf(),
            work: draft.work_dir().to_path_buf(),
            mountpoint,
            views: layers.views_dir().map(std::path::Path::to_path_buf),
        },
        args: e.args.clone(),
        env,
        cwd: e.cwd.clone(),
        user: e.user.clone(),
        hostname: if e.hostname.is_empty() {
            ops.settings.hostname.clone()
        } else {
            e.hostname.clone()
        },
        network: match e.network {
            Network::None => ExecNetwork::None,
            Network::Host => ExecNetwork::Host,
            Network::Default => ExecNetwork::Isolated,
        },
        mounts: prepared.mounts.clone(),
        privileged: e.security == Security::Insecure,
        limits: ops.settings.limits,
        resources: ops.settings.resources.clone(),
    };
    let mut output = |stream: Stream, data: &[u8]| {
        let s = match stream {
            Stream::Stdout => kiln_solver::Stream::Stdout,
            Stream::Stderr => kiln_solver::Stream::Stderr,
        };
        cx.log(s, data);
    };
    let status = ops.executor.run(&spec, &mut output, &|| cx.is_cancelled());
    drop(spec);
    prepared.finish()?;
    let status = status?;
    if status != ExitStatus::Code(0) {
        return Err(RunError::Failed {
            args: e.args.clone(),
            status,
        }
        .into());
    }
    let layer = draft.commit(kiln_store::blobs::built_layer_meta())?;
    let mut layers: Vec<LayerRef> = base.iter().cloned().map(LayerRef::Snapshot).collect();
    layers.push(LayerRef::Snapshot(layer.id));
    Ok(Value::Fs { layers })
}
