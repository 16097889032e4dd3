//! The snapshotter a command that runs steps uses (`--snapshotter`), chosen
//! once per process before the first step.

use kiln_worker::State;

use crate::failure::Failure;

/// Chooses the snapshotter (`--snapshotter`) before a build: overlayfs if
/// a probe mount works (in a user namespace: Linux >= 5.11 with
/// `userxattr`), else the native one; `--debug` says which, and why. With
/// the native one, deletions are whiteout devices where they can be made,
/// else whiteout files, which marks the store as native-only for good.
pub(crate) fn choose_snapshotter(
    state: &State,
    globals: &crate::globals::Globals,
    imposed: Option<kiln_snapshot::Snapshotter>,
) -> Result<(), Failure> {
    use crate::args::SnapshotterChoice;
    use kiln_snapshot::{Snapshotter, WhiteoutFormat};
    if let Some(s) = imposed {
        if globals.snapshotter == SnapshotterChoice::Overlayfs {
            return Err(Failure::Usage(
                "--snapshotter overlayfs cannot be used with --isolation=container: \
                 overlayfs needs mounts, which the container does not allow"
                    .to_owned(),
            ));
        }
        kiln_snapshot::set_snapshotter(s);
        if globals.debug {
            crate::progress::say(
                "debug: snapshotter: native, plain directories (no mounts: --isolation=container)",
            );
            if kiln_snapshot::whiteout_format() == WhiteoutFormat::File {
                crate::progress::say("debug: whiteouts: files (user.kiln.whiteout), not devices");
            }
        }
        return Ok(());
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
    let (chosen, why) = match globals.snapshotter {
        SnapshotterChoice::Native => (Snapshotter::Native, "--snapshotter native".to_owned()),
        SnapshotterChoice::Overlayfs => {
            match kiln_snapshot::probe_overlay_remembered(&scratch, &probed) {
                Ok(()) if files_here => {
                    return Err(Failure::Internal(anyhow::anyhow!(
                        "--snapshotter overlayfs: {files_why}; use --snapshotter native (or auto) \
                     with this state directory ({}), or another --root",
                        state.root.display()
                    )));
                }
                Ok(()) => (Snapshotter::Overlayfs, overlay_where.to_owned()),
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
        SnapshotterChoice::Auto if files_here => (Snapshotter::Native, files_why.to_owned()),
        SnapshotterChoice::Auto => match kiln_snapshot::probe_overlay_remembered(&scratch, &probed)
        {
            Ok(()) => (Snapshotter::Overlayfs, overlay_where.to_owned()),
            Err(e) => (
                Snapshotter::Native,
                format!("{overlay_where} cannot be mounted here: {e}"),
            ),
        },
    };
    kiln_snapshot::set_snapshotter(chosen);
    if globals.debug {
        if kiln_snapshot::whiteout_format() == WhiteoutFormat::File {
            crate::progress::say("debug: whiteouts: files (user.kiln.whiteout), not devices");
        }
        match chosen {
            Snapshotter::Overlayfs => crate::progress::say(&format!("debug: snapshotter: {why}")),
            Snapshotter::Native | Snapshotter::NativeUnmounted => {
                crate::progress::say(&format!("debug: snapshotter: native ({why})"))
            }
        }
    }
    Ok(())
}
