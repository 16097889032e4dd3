//! The solve: the worker's build on a runtime of its own, with Ctrl-C
//! handled (the first stops the build, a second exits at once).

use std::sync::Arc;

use anyhow::Context as _;
use kiln_llb::Vertex;
use kiln_solver::{CancelToken, Dag};
use kiln_worker::{BuildRequest, BuildResult, Error as WorkerError, State};

use crate::failure::Failure;
use crate::progress::Progress;

/// Runs the build `req` of graph `dag`, its events going to `progress`.
/// The outer error is the runtime's; the inner one the build's.
pub(super) fn solve(
    state: &State,
    dag: &Arc<Dag<Vertex>>,
    req: BuildRequest,
    progress: &Arc<Progress>,
) -> Result<Result<BuildResult, WorkerError>, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let cancel = CancelToken::new();
    let p = progress.clone();
    let events: Arc<dyn Fn(kiln_solver::Event) + Send + Sync> = Arc::new(move |e| p.event(e));
    let p = progress.clone();
    Ok(runtime.block_on(async {
        let c = cancel.clone();
        // The first Ctrl-C stops the build (running steps are stopped, what
        // was done is kept); a second one exits at once. Either way nothing is
        // left: mounts live in kiln's own mount namespace, and drafts are
        // removed by the next kiln that opens the store.
        let ctrl_c = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                c.cancel();
                if tokio::signal::ctrl_c().await.is_ok() {
                    // The live view is erased first: no line of it stays.
                    p.finish("CANCELED");
                    if crate::progress::json_errors() {
                        crate::progress::emit_json(serde_json::json!({
                            "status": "failed",
                            "exit_code": 130,
                            "error": "interrupted twice: exiting now",
                        }));
                    } else {
                        eprintln!("interrupted twice: exiting now");
                    }
                    std::process::exit(130);
                }
            }
        });
        let r = kiln_worker::build(state, dag.clone(), req, events, &cancel).await;
        ctrl_c.abort();
        r
    }))
}
