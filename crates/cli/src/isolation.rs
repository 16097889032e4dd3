//! `--isolation`: how a build's RUN steps are kept apart from the machine
//! (`kiln_executor::isolation`), chosen before the build's threads exist.
//!
//! `auto` tries the namespaces mode first (entering a private mount
//! namespace, which is what that mode needs first anyway); where that is
//! not allowed (an unprivileged container: Docker's default seccomp profile
//! refuses `unshare` without `CAP_SYS_ADMIN`) it takes the container mode,
//! which itself refuses a machine that is not a throwaway container.
//! `--debug` says which mode was chosen, why, and what the container mode
//! keeps apart from the build.

use std::path::{Path, PathBuf};

use kiln_executor::container::{Container, Settings, host::HostFacts};
use kiln_executor::isolation::Isolation;
use kiln_executor::namespaces::Namespaces;
use kiln_worker::Output;
use kiln_worker::cache::{CacheFrom, CacheTo};

use crate::args::{BuildArgs, IsolationChoice};
use crate::failure::Failure;
use crate::globals::Globals;
use crate::options::ContextValue;

/// The mode decided before the state directory is opened.
pub enum Decision {
    Namespaces(Namespaces),
    /// The container mode, and why it was taken.
    Container(String),
}

/// Decides the mode. Call it while the process is single-threaded: the
/// namespaces mode enters a private mount namespace here.
pub fn decide(globals: &Globals) -> Result<Decision, Failure> {
    let enter = || {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::Internal(anyhow::anyhow!("locating the kiln binary: {e}")))?;
        Ok::<_, Failure>(Namespaces::enter(exe, vec!["__exec".into()]))
    };
    let decision = match globals.isolation {
        IsolationChoice::Namespaces => match enter()? {
            Ok(n) => Decision::Namespaces(n),
            Err(e) => {
                return Err(Failure::Internal(anyhow::anyhow!(
                    "entering a private mount namespace: {e} (in an unprivileged container, \
                     --isolation=container runs RUN steps without namespaces)"
                )));
            }
        },
        IsolationChoice::Container => Decision::Container("--isolation=container".to_owned()),
        IsolationChoice::Auto => match enter()? {
            Ok(n) => Decision::Namespaces(n),
            Err(e) => Decision::Container(format!("no namespaces or mounts here: {e}")),
        },
    };
    if globals.debug
        && let Decision::Namespaces(_) = &decision
    {
        crate::progress::say(
            "debug: isolation: namespaces (a private mount namespace could be made)",
        );
    }
    Ok(decision)
}

/// The paths a build reads or writes outside its state directory, which
/// the container mode must keep: the context and Dockerfile, local build
/// contexts, outputs, local caches, secret files, ssh sockets, the files
/// kiln writes after the build (`--iidfile`, `--metadata-file`,
/// `--report`), the files that hold registry credentials and settings,
/// the working directory.
#[allow(clippy::too_many_arguments)]
fn build_paths(
    args: &BuildArgs,
    contexts: &[(String, ContextValue)],
    outputs: &[Output],
    cache_to: &[CacheTo],
    cache_from: &[CacheFrom],
    ssh: &[PathBuf],
    globals: &Globals,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    // A remote context is fetched into the state directory, and a relative
    // `-f` then names a file in it.
    let local = crate::options::main_context(&args.context).is_ok_and(|m| m.is_local());
    if local {
        out.push(PathBuf::from(&args.context));
    }
    if let Some(f) = args
        .file
        .as_deref()
        .filter(|f| *f != "-" && (local || Path::new(f).is_absolute()))
    {
        out.push(PathBuf::from(f));
    }
    for (_, c) in contexts {
        match c {
            ContextValue::Local(d) => out.push(d.clone()),
            ContextValue::OciLayout(l) => out.push(l.dir.clone()),
            ContextValue::Named(_) => {}
        }
    }
    for o in outputs {
        if let Some(dest) = o.dest() {
            out.push(dest.to_path_buf());
        }
    }
    for l in cache_to
        .iter()
        .map(|c| &c.location)
        .chain(cache_from.iter().map(|c| &c.location))
    {
        if let Some(d) = l.transport().and_then(|t| t.local_dir()) {
            out.push(d.to_path_buf());
        }
    }
    for s in &args.secrets {
        for part in s.split(',') {
            if let Some(v) = part
                .strip_prefix("src=")
                .or_else(|| part.strip_prefix("source="))
            {
                out.push(PathBuf::from(v));
            }
        }
    }
    out.extend(ssh.iter().cloned());
    out.extend(args.iidfile.iter().cloned());
    out.extend(args.metadata_file.iter().cloned());
    out.extend(args.report.iter().cloned());
    out.extend(globals.registry_config.iter().cloned());
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    out.extend(env("REGISTRY_AUTH_FILE"));
    out.extend(env("DOCKER_CONFIG"));
    out.extend(env("KILN_CONFIG"));
    out.extend(env("SSL_CERT_FILE"));
    out.extend(env("SSL_CERT_DIR"));
    out.extend(env("HOME").map(|h| h.join(".docker")));
    out.push(PathBuf::from("/etc/docker/certs.d"));
    out
}

/// Absolute, `.`/`..` removed lexically (a path that need not exist).
fn absolute(cwd: &Path, p: &Path) -> PathBuf {
    let joined = cwd.join(p);
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Everything the container mode needs from the build's flags.
pub struct BuildInputs<'a> {
    pub args: &'a BuildArgs,
    pub contexts: &'a [(String, ContextValue)],
    pub outputs: &'a [Output],
    pub cache_to: &'a [CacheTo],
    pub cache_from: &'a [CacheFrom],
    pub ssh: Vec<PathBuf>,
    pub state: &'a Path,
}

/// The container mode for this build, checked (see
/// `kiln_executor::container`): why it was taken is in `why`.
pub fn container(
    globals: &Globals,
    why: &str,
    inputs: &BuildInputs<'_>,
) -> Result<Container, Failure> {
    let cwd = std::env::current_dir()
        .map_err(|e| Failure::Internal(anyhow::anyhow!("the working directory: {e}")))?;
    let mut keep: Vec<PathBuf> = build_paths(
        inputs.args,
        inputs.contexts,
        inputs.outputs,
        inputs.cache_to,
        inputs.cache_from,
        &inputs.ssh,
        globals,
    )
    .iter()
    .map(|p| absolute(&cwd, p))
    .collect();
    keep.push(absolute(&cwd, inputs.state));
    if cwd != Path::new("/") {
        keep.push(cwd.clone());
    }
    // The build context may not be the whole root filesystem.
    if keep.iter().any(|p| p == Path::new("/")) {
        return Err(Failure::Usage(
            "--isolation=container replaces the root filesystem, which this build also \
             reads or writes (a context, output or file at /): put it in a directory of its \
             own (a volume, a checkout)"
                .to_owned(),
        ));
    }
    let kiln = std::env::current_exe()
        .map_err(|e| Failure::Internal(anyhow::anyhow!("locating the kiln binary: {e}")))?;
    let settings = Settings {
        root: PathBuf::from("/"),
        kiln,
        program: PathBuf::from("/proc/self/exe"),
        args: vec!["__exec-container".into()],
        keep,
        whiteouts: kiln_snapshot::WhiteoutFormat::Device,
    };
    let facts = HostFacts::read();
    let c = Container::new(settings, &facts, globals.throwaway).map_err(|e| {
        let tried = if why.starts_with("--isolation") {
            String::new()
        } else {
            format!(" (kiln took --isolation=container because it found {why})")
        };
        Failure::Internal(anyhow::anyhow!("{e}{tried}"))
    })?;
    if globals.debug {
        let evidence = match c.evidence() {
            Some(e) => format!("a container: {e}"),
            None => "--throwaway".to_owned(),
        };
        crate::progress::say(&format!("debug: isolation: container ({why}; {evidence})"));
        let kept: Vec<String> = c
            .kept()
            .iter()
            .map(|p| format!("/{}", p.display()))
            .collect();
        crate::progress::say(&format!(
            "debug: isolation: kept apart from the build: {}",
            kept.join(" ")
        ));
    }
    Ok(c)
}

/// Whether the chosen mode refuses the build's flags, by name.
pub fn check_flags(mode: &dyn Isolation, args: &BuildArgs) -> Result<(), Failure> {
    if mode.name() == "container" && args.network.as_deref() == Some("none") {
        return Err(Failure::Usage(
            "--network=none is not supported with --isolation=container: a network \
             namespace needs CAP_SYS_ADMIN"
                .to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_absolute_lexically() {
        let cwd = Path::new("/builds/app");
        assert_eq!(absolute(cwd, Path::new(".")), PathBuf::from("/builds/app"));
        assert_eq!(
            absolute(cwd, Path::new("../out/x.tar")),
            PathBuf::from("/builds/out/x.tar")
        );
        assert_eq!(absolute(cwd, Path::new("/abs")), PathBuf::from("/abs"));
        assert_eq!(absolute(Path::new("/"), Path::new(".")), PathBuf::from("/"));
    }
}
