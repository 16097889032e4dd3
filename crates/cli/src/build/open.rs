//! What a build opens once its flags are checked: the main context (a
//! remote one is fetched into the store), the Dockerfile, the isolation
//! mode, and the state directory.

use std::path::PathBuf;

use kiln_frontend::SourceFile;
use kiln_worker::State;

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::globals::Globals;
use crate::options::{MainContext, read_dockerfile};
use crate::remote::Remote;
use crate::store::state_dir;

use super::flags::Flags;

/// The state directory, the Dockerfile and how RUN steps are isolated.
pub(super) struct Opened {
    pub(super) state: State,
    pub(super) main_context: MainContext,
    /// A remote context (a URL, `-`), fetched once the state is open.
    pub(super) remote: Option<Remote>,
    pub(super) file: SourceFile,
    pub(super) isolation: Box<dyn kiln_executor::isolation::Isolation>,
}

/// Reads the Dockerfile of a local context, decides the isolation mode,
/// opens the state directory and fetches a remote context.
pub(super) fn open(globals: &Globals, args: &BuildArgs, flags: &Flags) -> Result<Opened, Failure> {
    // A remote context (a URL, `-`) is fetched once the state is open.
    let main_context = crate::options::main_context(&args.context)?;
    let file = if main_context.is_local() {
        Some(read_dockerfile(args)?)
    } else {
        None
    };
    // Before any thread exists: in the namespaces mode every mount kiln
    // makes from here on lives in a mount namespace that dies with the
    // process; the container mode is checked before the state is touched.
    let decision = crate::isolation::decide(globals)?;
    let container = match &decision {
        crate::isolation::Decision::Namespaces(_) => None,
        crate::isolation::Decision::Container(why) => {
            let ssh: Vec<PathBuf> = flags.grants.ssh.values().cloned().collect();
            let state_path = state_dir(globals.root.as_deref());
            Some(crate::isolation::container(
                globals,
                why,
                &crate::isolation::BuildInputs {
                    args,
                    contexts: &flags.contexts,
                    outputs: &flags.outputs,
                    cache_to: &flags.cache_to,
                    cache_from: &flags.cache_from,
                    ssh,
                    state: &state_path,
                },
            )?)
        }
    };
    let state = crate::store::open_for_layers(globals.root.as_deref())?;
    let remote = match file {
        Some(_) => None,
        None => Some(crate::remote::materialize(&state, args, &main_context)?),
    };
    let file = match (&remote, file) {
        (Some(r), _) => r.file.clone(),
        (None, Some(f)) => f,
        (None, None) => {
            return Err(Failure::Internal(anyhow::anyhow!(
                "the Dockerfile was not read"
            )));
        }
    };
    let isolation: Box<dyn kiln_executor::isolation::Isolation> = match (decision, container) {
        (crate::isolation::Decision::Namespaces(n), _) => {
            Box::new(n.with_filter_cache(state.root.join("seccomp")))
        }
        (_, Some(c)) => Box::new(c.with_whiteouts(state.whiteouts)),
        (crate::isolation::Decision::Container(_), None) => {
            return Err(Failure::Internal(anyhow::anyhow!(
                "the container isolation mode was not set up"
            )));
        }
    };
    Ok(Opened {
        state,
        main_context,
        remote,
        file,
        isolation,
    })
}
