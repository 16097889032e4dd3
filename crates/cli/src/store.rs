//! The state directory as every command opens it: where it is, the store
//! and its lock, and images found by name or ID.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kiln_llb::Digest;
use kiln_reference::Reference;
use kiln_worker::State;
use kiln_worker::images::{self, Found};
use kiln_worker::lock::{LockKind, StoreLock};

use crate::failure::Failure;

pub(crate) fn env_var(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// `--root`, `KILN_ROOT`, or the default: `/var/lib/kiln` as root,
/// `$XDG_DATA_HOME/kiln` (or `~/.local/share/kiln`) otherwise.
pub fn state_dir(root: Option<&Path>) -> PathBuf {
    if let Some(r) = root {
        return r.to_path_buf();
    }
    if is_root() && !crate::globals::rootless() {
        return PathBuf::from("/var/lib/kiln");
    }
    match (env_var("XDG_DATA_HOME"), env_var("HOME")) {
        (Some(x), _) if !x.is_empty() => PathBuf::from(x).join("kiln"),
        (_, Some(h)) => PathBuf::from(h).join(".local/share/kiln"),
        _ => PathBuf::from(".kiln"),
    }
}

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Opens the state directory for a store command.
pub fn open(root: Option<&Path>) -> Result<State, Failure> {
    let dir = state_dir(root);
    State::open(&dir)
        .with_context(|| format!("opening state directory {}", dir.display()))
        .map_err(Failure::Internal)
}

/// [`open`], for a command that writes layers (build, import, pull, load):
/// also chooses how they record deletions, whiteout devices where they can
/// be made, else whiteout files (which marks the store: from then on only
/// the native snapshotter can mount its layers; see
/// `kiln_snapshot::whiteout`).
pub fn open_for_layers(root: Option<&Path>) -> Result<State, Failure> {
    let mut state = open(root)?;
    let mut files = state.layers.has_whiteout_files();
    if !files {
        let tmp = state.root.join("tmp");
        let allowed = kiln_snapshot::whiteout::whiteout_devices_allowed(&tmp)
            .with_context(|| format!("making a whiteout device in {}", tmp.display()))
            .map_err(Failure::Internal)?;
        if !allowed {
            state
                .layers
                .mark_whiteout_files()
                .context("marking the layer store")
                .map_err(Failure::Internal)?;
            files = true;
        }
    }
    if files {
        state.whiteouts = kiln_snapshot::WhiteoutFormat::File;
    }
    Ok(state)
}

/// Takes the store lock, saying so when another kiln holds it.
pub fn lock(state: &State, kind: LockKind) -> Result<StoreLock, Failure> {
    let root = state.root.clone();
    kiln_worker::lock::lock(&state.root, kind, || {
        eprintln!(
            "waiting for the lock on {} (another kiln is {})…",
            root.join("lock").display(),
            match kind {
                LockKind::Shared => "pruning the store",
                LockKind::Exclusive => "using the store",
            }
        );
    })
    .map_err(|e| Failure::Other(e.into()))
}

/// A name as the store keeps it (`busybox` → `docker.io/library/busybox:latest`).
pub fn normalize(name: &str) -> Option<String> {
    let r = Reference::parse_normalized(name).ok()?;
    Some(if r.digest().is_some() {
        r.to_string()
    } else {
        r.with_default_tag().to_string()
    })
}

/// Finds a user's reference (name, ID or ID prefix) or fails as Docker does.
pub fn find(state: &State, text: &str) -> Result<Found, Failure> {
    match images::find(state, text, normalize(text).as_deref()) {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(Failure::Other(anyhow::anyhow!("No such image: {text}"))),
        Err(e) => Err(Failure::Other(anyhow::anyhow!("{e}"))),
    }
}

/// The image ID a reference names.
pub fn find_id(state: &State, text: &str) -> Result<Digest, Failure> {
    Ok(match find(state, text)? {
        Found::Name(_, r) => r.id,
        Found::Id(id) => id,
    })
}
