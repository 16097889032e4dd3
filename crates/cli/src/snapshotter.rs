//! The snapshotter a command that runs steps uses (`--snapshotter`), chosen
//! once per process before the first step and passed on as a value: the
//! state's (`State::snapshotter`, which the worker mounts with) and the
//! executor's (which tells its RUN helper the name).

use std::sync::Arc;

use kiln_snapshot::Snapshotter;
use kiln_worker::State;

use crate::failure::Failure;

/// Chooses the snapshotter (`--snapshotter`) before a build: overlayfs if
/// a probe mount works (in a user namespace: Linux >= 5.11 with
/// `userxattr`), else the native one; `--debug` says which, and why. With
/// the native one, deletions are whiteout devices where they can be made,
/// else whiteout files, which marks the store as native-only for good.
/// The choice becomes `state`'s snapshotter, and is returned for the
/// executor.
pub(crate) fn choose_snapshotter(
    state: &mut State,
    globals: &crate::globals::Globals,
    imposed: Option<Arc<dyn Snapshotter>>,
) -> Result<Arc<dyn Snapshotter>, Failure> {
    use crate::args::SnapshotterChoice;
    use kiln_snapshot::{Native, Overlayfs, WhiteoutFormat};
    if let Some(s) = imposed {
        if globals.snapshotter == SnapshotterChoice::Overlayfs {
            return Err(Failure::Usage(
                "--snapshotter overlayfs cannot be used with --isolation=container: \
                 overlayfs needs mounts, which the container does not allow"
                    .to_owned(),
            ));
        }
        state.snapshotter = s.clone();
        if globals.debug {
            crate::progress::say(
                "debug: snapshotter: native, plain directories (no mounts: --isolation=container)",
            );
            if state.whiteouts == WhiteoutFormat::File {
                crate::progress::say("debug: whiteouts: files (user.kiln.whiteout), not devices");
            }
        }
        return Ok(s);
    }
    let scratch = state.root.join("tmp");
    // Where a successful probe is remembered (`probe_overlay_remembered`).
    let probed = state.root.join("overlay-probe");
    let overlay_where = if crate::globals::rootless() {
        "overlayfs in the user namespace (userxattr)"
    } else {
        "overlayfs"
    };
    let files_here = state.layers.has_whiteout_files();
    let files_why = "this state directory records deletions as whiteout files (whiteout \
                     devices cannot be made here, or could not be where it was used), which \
                     overlayfs cannot read";
    let whiteouts = state.whiteouts;
    let native = || -> Arc<dyn Snapshotter> { Arc::new(Native::mounted(whiteouts)) };
    let overlay = || -> Arc<dyn Snapshotter> { Arc::new(Overlayfs) };
    // The snapshotter, and why (`--debug`).
    let (chosen, why) = match globals.snapshotter {
        SnapshotterChoice::Native => (native(), "native (--snapshotter native)".to_owned()),
        SnapshotterChoice::Overlayfs => {
            match kiln_snapshot::probe_overlay_remembered(&scratch, &probed) {
                Ok(()) if files_here => {
                    return Err(Failure::Internal(anyhow::anyhow!(
                        "--snapshotter overlayfs: {files_why}; use --snapshotter native (or auto) \
                     with this state directory ({}), or another --root",
                        state.root.display()
                    )));
                }
                Ok(()) => (overlay(), overlay_where.to_owned()),
                Err(e) => {
                    let needs = if crate::globals::rootless() {
                        "; in a user namespace it needs Linux >= 5.11"
                    } else {
                        ""
                    };
                    return Err(Failure::Internal(anyhow::anyhow!(
                        "--snapshotter overlayfs: {overlay_where} cannot be mounted here ({e}){needs}; \
                     --snapshotter native works without it (it copies each step's root filesystem)"
                    )));
                }
            }
        }
        SnapshotterChoice::Auto if files_here => (native(), format!("native ({files_why})")),
        SnapshotterChoice::Auto => match kiln_snapshot::probe_overlay_remembered(&scratch, &probed)
        {
            Ok(()) => (overlay(), overlay_where.to_owned()),
            Err(e) => (
                native(),
                format!("native ({overlay_where} cannot be mounted here: {e})"),
            ),
        },
    };
    state.snapshotter = chosen.clone();
    if globals.debug {
        if state.whiteouts == WhiteoutFormat::File {
            crate::progress::say("debug: whiteouts: files (user.kiln.whiteout), not devices");
        }
        crate::progress::say(&format!("debug: snapshotter: {why}"));
    }
    Ok(chosen)
}
