//! What a build grants its RUN steps: secrets, SSH agents, entitlements.
//! [`crate::ops::mounts`] mounts them; [`crate::worker::LlbWorker`] carries them.

use std::collections::HashMap;
use std::path::PathBuf;

/// A secret's value. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// What a build grants its RUN steps.
#[derive(Debug, Clone, Default)]
pub struct ExecGrants {
    /// `--secret`: id → value (read by the caller before the build).
    pub secrets: HashMap<String, Secret>,
    /// `--ssh`: id → the agent socket to forward.
    pub ssh: HashMap<String, PathBuf>,
    /// `--allow security.insecure`.
    pub allow_insecure: bool,
    /// `--allow network.host` (`RUN --network=host`, `--network=host`).
    pub allow_network_host: bool,
}
