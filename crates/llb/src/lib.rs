//! `kiln-llb`: the build graph, the boundary between the Dockerfile frontend and
//! the solver.
//!
//! The frontend knows Dockerfiles; the solver knows how to run a DAG and cache
//! its vertices. Neither should know the other, so they meet in this small crate
//! of plain data, in the spirit of BuildKit's LLB:
//!
//! * [`op`]: typed operations — *source* (image, local context, git, http),
//!   *exec* (a process on mounted filesystems), *file* (copy, mkdir, mkfile, rm),
//!   *merge* (layer filesystems).
//! * [`Graph`]: vertices keyed by [`Digest`]. A vertex digest is SHA-256 over the
//!   canonical encoding of its op and its inputs' digests ([`encode`]), so equal
//!   work has an equal name and identical sub-graphs collapse on insertion.
//! * [`ImageConfig`]: what a stage leaves in the image configuration (ENV, CMD,
//!   LABEL, history), which is not a filesystem and so not a vertex.
//! * [`Definition`]: a whole build — the graph, its target, and its stages.
//!
//! Architecture invariant: a digest never contains a timestamp or a host path.
//! Local sources are *named* (`context`), not located; locations in the
//! Dockerfile and progress names live in [`VertexMeta`], outside the digest.
//!
//! Architecture invariant: this crate does no I/O and knows nothing about
//! Dockerfile syntax or Linux. The only inputs are values; the only outputs are
//! values and strings.

pub mod digest;
pub mod encode;
pub mod graph;
pub mod image;
pub mod op;
pub mod platform;
mod render;

use serde::{Deserialize, Serialize};

pub use digest::Digest;
pub use graph::{Graph, GraphError, SourceLocation, Vertex, VertexMeta};
pub use image::{Healthcheck, History, ImageConfig};
pub use op::Op;
pub use platform::Platform;

/// A whole build: the graph of the target, the target vertex and the stages it
/// needs.
#[derive(Clone, Debug)]
pub struct Definition {
    /// Only the vertices the target depends on.
    pub graph: Graph,
    /// The target's root filesystem; `None` when it is empty (`FROM scratch` with
    /// no filesystem changes).
    pub target: Option<Digest>,
    /// Index into [`Definition::stages`] of the target stage.
    pub target_stage: usize,
    /// The stages the target needs, in Dockerfile order.
    pub stages: Vec<Stage>,
    /// Context paths (relative to the context root, `/`-separated) that the
    /// build reads; `["."]` means the whole context.
    pub context_paths: Vec<String>,
    /// `SOURCE_DATE_EPOCH` as the frontend resolved it (a `--build-arg`, or
    /// the Dockerfile's own `ARG SOURCE_DATE_EPOCH=…` default): seconds since
    /// 1970 for creation times, as BuildKit's frontend returns its epoch to
    /// the exporters.
    pub source_date_epoch: Option<i64>,
    /// What an SBOM generator image scans besides the target: the build
    /// context and the stages that ask for it (`BUILDKIT_SBOM_SCAN_CONTEXT`,
    /// `BUILDKIT_SBOM_SCAN_STAGE`; BuildKit's `SBOMTargets.Extras`).
    pub sbom_extras: SbomExtras,
}

/// The extra SBOM scan targets of a build: filesystems the generator sees
/// at `/run/src/extras/sbom-<name>` beside the target's.
#[derive(Clone, Debug, Default)]
pub struct SbomExtras {
    /// Whether the main build context is one (`sbom-context`).
    pub context: bool,
    /// The stages that are one, by name, with their root filesystems
    /// (`None`: empty), in Dockerfile order; never the target stage.
    pub stages: Vec<(String, Option<Digest>)>,
    /// The vertices the stages' roots need (the definition's graph holds
    /// only the target's).
    pub graph: Graph,
}

impl SbomExtras {
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        !self.context && self.stages.is_empty()
    }
}

impl Definition {
    /// The target stage.
    pub fn target_stage(&self) -> &Stage {
        &self.stages[self.target_stage]
    }
}

/// One stage of the build as the frontend resolved it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// `AS` name, or `stage-N` for unnamed stages.
    pub name: String,
    /// Position among the Dockerfile's stages, from 0.
    pub index: usize,
    pub platform: Platform,
    pub base: StageBase,
    /// The stage's final root filesystem (`None`: empty).
    pub root: Option<Digest>,
    /// The image configuration the stage ends with.
    pub config: ImageConfig,
    pub location: SourceLocation,
}

/// What a stage starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StageBase {
    Scratch,
    /// An earlier stage, by name.
    Stage {
        name: String,
    },
    /// An image; `digest` is `None` when it could not be resolved.
    Image {
        reference: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
}
