//! What the caller of the frontend decides (the `docker build` options that
//! change the graph), what planning returns, and the build args BuildKit
//! knows without an ARG.

use std::collections::BTreeMap;

use kiln_llb::op::Network;
use kiln_llb::{Definition, Platform};

use crate::contexts::NamedContext;
use crate::diagnostic::Diagnostic;
use crate::lint;
use crate::outline::Outline;

/// What the caller of the frontend decides: the `docker build` options that
/// change the graph.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// `--build-arg KEY=value`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--platform`; `None` builds for the build platform.
    pub target_platform: Option<Platform>,
    /// The platform kiln runs on.
    pub build_platform: Platform,
    /// `--label KEY=value`, added to the target image.
    pub labels: BTreeMap<String, String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--no-cache-filter`: stages whose steps always run.
    pub no_cache_filter: Vec<String>,
    /// `--network`: the default network of RUN steps.
    pub network: Network,
    /// Dispatch every stage, not only those the target needs (what BuildKit
    /// does for `--check`, so that every stage is linted).
    pub all_stages: bool,
    /// The build context's `.dockerignore` rules, for `CopyIgnoredFile`.
    pub dockerignore: Option<std::sync::Arc<dyn lint::IgnoreRules>>,
    /// `--build-context NAME=VALUE`, by name (`NAME` or `NAME::platform`).
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// The build is one of several target platforms: step names start
    /// with their stage's platform (`[linux/arm64 build 1/3]`), as
    /// BuildKit's `MultiPlatformRequested`.
    pub multi_platform: bool,
    /// The main build context is a local directory, which has no time of
    /// its own: `SOURCE_DATE_EPOCH=context` then leaves the epoch unset, as
    /// in BuildKit. Otherwise (a git or HTTP context) that value is refused
    /// as not supported yet, unless `context_epoch` gives the time.
    pub local_context: bool,
    /// The time of a remote main context (a git commit's, an HTTP
    /// `Last-Modified`, else the newest file of an HTTP archive), which the
    /// caller fetched: `SOURCE_DATE_EPOCH=context` takes it.
    pub context_epoch: Option<i64>,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: None,
            build_platform: Platform::new("linux", "amd64", ""),
            labels: BTreeMap::new(),
            no_cache: false,
            no_cache_filter: Vec::new(),
            network: Network::Default,
            all_stages: false,
            dockerignore: None,
            named_contexts: BTreeMap::new(),
            multi_platform: false,
            local_context: false,
            context_epoch: None,
        }
    }
}

/// The result of planning a build.
#[derive(Debug, Clone)]
pub struct Plan {
    pub definition: Definition,
    pub warnings: Vec<Diagnostic>,
    /// The target's build arguments, secrets and SSH sockets.
    pub outline: Outline,
}

/// What `--check` reports: the lint warnings (and other warnings), and the
/// error that stopped the conversion, if any.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub warnings: Vec<Diagnostic>,
    pub error: Option<Diagnostic>,
}

/// The build arg of the build's epoch (`epoch.rs`).
pub(super) const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";

/// The build args that ask an SBOM generator to scan the context and a
/// stage too (never in a RUN step's environment).
pub(super) const SBOM_SCAN_CONTEXT: &str = "BUILDKIT_SBOM_SCAN_CONTEXT";
pub(super) const SBOM_SCAN_STAGE: &str = "BUILDKIT_SBOM_SCAN_STAGE";

/// Build args Docker knows without an ARG instruction.
pub(super) const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// BuildKit's built-in build args and what kiln does with them.
pub(super) fn builtin_arg_note(key: &str) -> Option<&'static str> {
    match key {
        "BUILDKIT_SANDBOX_HOSTNAME" => Some(""),
        "BUILDKIT_SYNTAX" | "BUILDKIT_MULTI_PLATFORM" | "BUILDKIT_CACHE_MOUNT_NS" => Some(""),
        // Read by the cli: a true value is `--cache-to type=inline`, as in buildx.
        "BUILDKIT_INLINE_CACHE" => Some(""),
        "BUILDKIT_CONTEXT_KEEP_GIT_DIR" => Some("git build contexts are not supported by kiln yet"),
        "BUILDKIT_DOCKERFILE_CHECK" => Some(""),
        // Read by the frontend for an SBOM generator image (`--sbom
        // generator=`); kiln's own scanner scans the image only.
        SBOM_SCAN_CONTEXT | SBOM_SCAN_STAGE => Some(""),
        // Read by the cli: the creation time and mtime clamp of the build.
        "SOURCE_DATE_EPOCH" => Some(""),
        _ => None,
    }
}
