//! The crate's error: one enum gathering the typed errors of the stores and
//! of each op, plus [`StepError`] for a failed build step. The errors of
//! each domain (RUN, its mounts, git, HTTP, file ops, images, outputs,
//! attestations, internal inconsistencies) are enums here, in a leaf
//! module every op can import; their messages are the user's.

use std::io;
use std::path::PathBuf;

use kiln_llb::{Digest, SourceLocation};
use kiln_registry::RegistryError;
use kiln_solver::SolveError;

/// Everything that can stop a build, an import or an export.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// The state directory (kiln-store: its records, GC, check).
    #[error(transparent)]
    State(#[from] kiln_store::Error),
    #[error(transparent)]
    Content(#[from] kiln_oci::ContentError),
    #[error(transparent)]
    Index(#[from] kiln_oci::IndexError),
    #[error(transparent)]
    LayerBlobs(#[from] kiln_oci::LayerError),
    #[error(transparent)]
    Json(#[from] kiln_oci::JsonError),
    #[error(transparent)]
    OciExport(#[from] kiln_oci::ExportError),
    #[error(transparent)]
    Oci(#[from] kiln_oci::Error),
    #[error(transparent)]
    Store(#[from] kiln_snapshot::StoreError),
    #[error(transparent)]
    Mount(#[from] kiln_snapshot::MountError),
    #[error(transparent)]
    Unpack(#[from] kiln_snapshot::UnpackError),
    #[error(transparent)]
    LayerTar(#[from] kiln_snapshot::ExportError),
    #[error(transparent)]
    Context(#[from] kiln_context::ContextError),
    #[error(transparent)]
    Copy(#[from] crate::copy::CopyError),
    #[error(transparent)]
    User(#[from] crate::users::UserError),
    #[error(transparent)]
    Exec(#[from] kiln_executor::ExecError),
    /// Moving a cache (`--cache-to`, `--cache-from`).
    #[error(transparent)]
    Cache(#[from] crate::cache::error::CacheError),
    /// A build step failed; carries where it came from.
    #[error(transparent)]
    Step(#[from] Box<StepError>),
    /// The build was cancelled (Ctrl-C).
    #[error("build cancelled")]
    Cancelled,
    /// A registry or the network failed (pull, push), or what a registry
    /// sent is wrong: the cli exits with its registry code.
    #[error(transparent)]
    Registry(RegistryFailure),
    /// A `RUN` step's process failed, or the step may not run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A `RUN --mount` cannot be set up.
    #[error(transparent)]
    RunMount(#[from] RunMountError),
    /// A git source (`ADD <repo.git>`, a git build context).
    #[error(transparent)]
    Git(#[from] GitError),
    /// An HTTP source (`ADD <url>`).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A file operation (`COPY`, `ADD`, removals).
    #[error(transparent)]
    FileOp(#[from] FileOpError),
    /// An image in the store, or one a step names.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A named build context (`--build-context`, a remote context).
    #[error(transparent)]
    BuildContext(#[from] BuildContextError),
    /// The build's outputs (`-o`, `--push`, `--cache-to type=inline`).
    #[error(transparent)]
    Output(#[from] OutputError),
    /// Attestations (SBOM, provenance) and annotations.
    #[error(transparent)]
    Attest(#[from] AttestError),
    /// A feature kiln does not have yet.
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    /// An inconsistency in the build graph or in kiln itself: a bug, not
    /// the user's doing.
    #[error(transparent)]
    Internal(#[from] InternalError),
    /// The solver failed outside a step's own work (its cache, a panic).
    #[error(transparent)]
    Solve(Box<SolveError<Error>>),
}

impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Error {
        Error::Registry(RegistryFailure::Client(e))
    }
}

impl From<RegistryFailure> for Error {
    fn from(e: RegistryFailure) -> Error {
        Error::Registry(e)
    }
}

/// A pull or a push that failed (the cli's exit code 3).
#[derive(Debug, thiserror::Error)]
pub enum RegistryFailure {
    /// The registry client's own error (HTTP, auth, not found).
    #[error(transparent)]
    Client(#[from] RegistryError),
    /// What the registry sent, or stored, for `reference` is wrong.
    #[error("{reference}: {problem}")]
    Content {
        /// The reference (or the manifest digest) being pulled or pushed.
        reference: String,
        #[source]
        problem: RegistryProblem,
    },
}

/// What is wrong with what a registry sent or stored.
#[derive(Debug, thiserror::Error)]
pub enum RegistryProblem {
    #[error("manifest digest mismatch: expected {expected}, got {actual}")]
    ManifestDigest { expected: Digest, actual: Digest },
    #[error("invalid image manifest: {0}")]
    InvalidManifest(#[source] serde_json::Error),
    #[error("not a container image (its config is of type {0:?})")]
    NotAnImage(String),
    #[error("the manifest has {layers} layers but the config {diff_ids} diffIDs")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("layer {digest} has media type {media_type:?}, which kiln cannot unpack")]
    LayerMediaType { digest: Digest, media_type: String },
    /// A layer blob does not unpack to its diffID.
    #[error(transparent)]
    Blob(#[from] kiln_oci::LayerError),
    /// The registry answered a push with another digest.
    #[error("the registry stored the {what} as {stored}, expected {expected}")]
    Stored {
        /// `index` or `manifest`.
        what: &'static str,
        stored: Digest,
        expected: Digest,
    },
}

/// Why a `RUN` step failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The process exited non-zero or was killed. BuildKit's wording, with
    /// Go's %q quoting of the command line.
    #[error(
        "process {} did not complete successfully: {}",
        kiln_frontend::quote::go_quote(&.args.join(" ")),
        status_text(.status)
    )]
    Failed {
        args: Vec<String>,
        status: kiln_executor::ExitStatus,
    },
    /// The step needs an entitlement the build was not given.
    #[error("{}", not_allowed(.0))]
    NotAllowed(Entitlement),
    /// The step's platform needs QEMU emulation that the host lacks.
    #[error(transparent)]
    Emulation(#[from] crate::emulation::EmulationError),
}

/// An entitlement a `RUN` step can need (`kiln build --allow`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entitlement {
    /// `RUN --security=insecure`.
    SecurityInsecure,
    /// `RUN --network=host`.
    NetworkHost,
}

fn status_text(s: &kiln_executor::ExitStatus) -> String {
    match s {
        kiln_executor::ExitStatus::Code(n) => format!("exit code: {n}"),
        kiln_executor::ExitStatus::Signal(s) => format!("killed by signal {s}"),
    }
}

fn not_allowed(e: &Entitlement) -> &'static str {
    match e {
        // BuildKit's wording (its client's), and the way out.
        Entitlement::SecurityInsecure => {
            "entitlement security.insecure is not allowed: RUN --security=insecure needs `kiln build --allow security.insecure`"
        }
        // BuildKit's wording (`entitlements.Set.Check`), and the way out.
        Entitlement::NetworkHost => {
            "network.host is not allowed: RUN --network=host needs `kiln build --allow network.host`"
        }
    }
}

/// Why a `RUN --mount` cannot be set up (`target` is the mount's target).
#[derive(Debug, thiserror::Error)]
pub enum RunMountError {
    /// The mount's source in a build context does not expand.
    #[error("RUN --mount target={target}: failed to compute cache key: {source}")]
    CacheKey {
        target: String,
        source: kiln_context::ContextError,
    },
    /// A bind mount's source in a build context does not expand.
    #[error("RUN --mount=type=bind,target={target}: {source}")]
    BindSource {
        target: String,
        source: kiln_context::ContextError,
    },
    /// The source escapes or cannot be resolved in the mounted filesystem.
    #[error("RUN --mount=type={kind},target={target}: source {path}: {source}")]
    BadSource {
        kind: &'static str,
        target: String,
        path: String,
        source: kiln_snapshot::ResolveError,
    },
    #[error("RUN --mount=type={kind},target={target}: source {path} not found")]
    SourceNotFound {
        kind: &'static str,
        target: String,
        path: String,
    },
    /// The source of a cache mount's `from=` is not there.
    #[error("cache mount {target}: source {path} not found")]
    CacheSourceNotFound { target: String, path: String },
    #[error("RUN --mount=type=cache,target={target}: from= a filesystem without a cache key")]
    CacheFromWithoutKey { target: String },
    #[error("secret {id}: not found (no --secret id={id} was given to the build)")]
    SecretNotFound { id: String },
    #[error("secret {id} is not valid UTF-8 and cannot be the environment variable {env}")]
    SecretNotUtf8 { id: String, env: String },
    #[error("no SSH agent socket forwarded for id {id:?} (kiln build --ssh {id}=SOCKET)")]
    NoSshAgent { id: String },
}

/// Why a git source failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// A git command failed; `stderr` is its (trimmed) message.
    #[error("failed to {what}: {}", git_message(.status, .stderr))]
    Command {
        what: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// BuildKit's git source, in its words.
    #[error("invalid checksum {checksum} for Git URL, expected hex commit hash")]
    BadChecksum { checksum: String },
    /// The commit (or, when the ref is an annotated tag, the commit it
    /// peels to) does not start with the checksum.
    #[error("expected checksum to match {checksum}, got {}", got(.commit, .peeled))]
    ChecksumMismatch {
        checksum: String,
        commit: String,
        peeled: Option<String>,
    },
    #[error("{remote}: repository does not contain ref {wanted}")]
    NoSuchRef { remote: String, wanted: String },
    #[error("{remote}: ref {wanted} resolved to {object:?}, not a commit id")]
    NotACommit {
        remote: String,
        wanted: String,
        object: String,
    },
    #[error("{remote}: commit {commit} not found after fetching {fetched}")]
    CommitNotFetched {
        remote: String,
        commit: String,
        fetched: String,
    },
    #[error("{remote}: subdirectory {subdir:?} does not exist at {commit}")]
    NoSubdir {
        remote: String,
        subdir: String,
        commit: String,
    },
    #[error("{remote}: {subdir:?} is not a directory at {commit}")]
    SubdirNotADir {
        remote: String,
        subdir: String,
        commit: String,
    },
}

fn git_message(status: &std::process::ExitStatus, stderr: &str) -> String {
    if stderr.is_empty() {
        format!("git exited with {status}")
    } else {
        stderr.to_owned()
    }
}

fn got(commit: &str, peeled: &Option<String>) -> String {
    match peeled {
        Some(p) => format!("{commit} or {p}"),
        None => commit.to_owned(),
    }
}

/// Why an HTTP source failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The request failed (connection, TLS, …).
    #[error("failed to download {url}: {source}")]
    Request {
        url: String,
        source: Box<ureq::Error>,
    },
    /// Reading the body failed.
    #[error("failed to download {url}: {source}")]
    Read { url: String, source: io::Error },
    #[error("failed to download {url}: unexpected status {status}")]
    Status {
        url: String,
        status: ureq::http::StatusCode,
    },
    #[error("failed to download {url}: 304 Not Modified to an unconditional request")]
    UnconditionalNotModified { url: String },
    #[error("failed to download {url}: unexpected 304")]
    UnexpectedNotModified { url: String },
    /// The recorded validators of a download name a bad digest.
    #[error("{}: bad digest {digest:?}", path.display())]
    BadValidators { path: PathBuf, digest: String },
    #[error(
        "{url} changed during the build (the server said it was unchanged, then sent other content): build again"
    )]
    Changed { url: String },
    #[error("digest mismatch for {url}: expected {expected}, got {actual}")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: Digest,
    },
}

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FileOpError {
    #[error("invalid --exclude/--parents pattern: {0}")]
    Pattern(#[source] kiln_context::PatternError),
    /// `COPY --chmod` with a symbolic mode that does not parse.
    #[error(transparent)]
    Mode(#[from] crate::mode::ModeError),
    #[error("cannot remove {path:?}: empty path")]
    RemoveEmptyPath { path: String },
    /// A copy's sources could not be read while the step's cache key was
    /// computed (a missing source, an unreadable file): BuildKit's wording,
    /// with `of` naming what was read (a build context's name, or the top
    /// layer of a stage or image).
    #[error("failed to compute cache key: failed to calculate checksum of ref {of}: {source}")]
    Checksum {
        of: String,
        #[source]
        source: kiln_context::ContextError,
    },
}

/// Why an image could not be used or made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{reference}: image not found in the local store")]
    NotInStore { reference: String },
    #[error("{reference}: image not resolved")]
    NotResolved { reference: String },
    #[error("{reference}: {source}")]
    BadDigest {
        reference: String,
        source: kiln_llb::digest::ParseDigestError,
    },
    #[error("stage {name:?} not found")]
    StageNotFound { name: String },
    #[error("image {id}: its configuration does not re-encode to the same bytes")]
    ConfigReencode { id: Digest },
    #[error("invalid name {name:?}: {source}")]
    BadName {
        name: String,
        source: kiln_reference::ReferenceError,
    },
    /// A time that RFC 3339 cannot express.
    #[error(transparent)]
    Time(#[from] kiln_oci::TimeError),
}

/// Why a named build context cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BuildContextError {
    #[error("build context {name:?} is not defined (no --build-context gives it)")]
    NotDefined { name: String },
    #[error("build context {name:?} used where a filesystem is expected")]
    NotAFilesystem { name: String },
    /// An `oci-layout://` context; `what` says which image of the layout.
    /// `error` is deliberately not a `#[source]`: a load error's own cause
    /// is not in its message, and the cli's message, which prints each
    /// cause it does not already have, would grow.
    #[error("oci-layout {} ({what}): {error}", dir.display())]
    OciLayout {
        dir: PathBuf,
        what: String,
        error: kiln_oci::Error,
    },
    #[error("extracting the build context from {shown}: {source}")]
    Extract {
        shown: String,
        source: kiln_snapshot::UnpackError,
    },
}

/// Why the build's outputs cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(
        "{kind} exporter does not currently support exporting manifest lists \
         (a multi-platform build makes an image index: use -o type=oci, --push \
         or one --platform)"
    )]
    NoManifestList { kind: &'static str },
    #[error(
        "--cache-to type=inline: the cache goes into the image config, and this build \
         makes no image (add an image output: --tag, --push or -o type=image|registry|oci|docker)"
    )]
    InlineCacheWithoutImage,
    #[error("the build result is a build context, not a filesystem")]
    ContextResult,
    #[error("output needs an image")]
    NoImage,
    #[error("this output cannot hold a multi-platform result")]
    NotMultiPlatform,
    #[error("layer {diff_id}: no blob to recompress")]
    NoBlob { diff_id: Digest },
    /// Two platforms of a result merged into one directory
    /// (`platform-split=false`) hold the same file (BuildKit's words).
    #[error("cannot overwrite {path} from {from} with {with} when split option is disabled")]
    SplitOverwrite {
        path: String,
        from: String,
        with: String,
    },
}

/// Why attestations or annotations cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("scanning the image for its SBOM: {0}")]
    Scan(#[source] kiln_sbom::ScanError),
    #[error("writing the SBOM: {0}")]
    Spdx(#[source] kiln_sbom::spdx::SpdxError),
    /// What an SBOM generator image (`--sbom generator=`) wrote is no SBOM.
    #[error("SBOM generator {image}: {why}")]
    Generator { image: String, why: String },
    /// Two statements a local or tar output writes have one name.
    #[error("duplicate attestation path name {name}")]
    DuplicateName { name: String },
    #[error("invalid annotation: no platform {platform} found in the build")]
    UnknownPlatform { platform: String },
    /// A descriptor does not convert between the OCI and layout types.
    #[error("descriptor {digest}: {source}")]
    Descriptor {
        digest: Digest,
        source: serde_json::Error,
    },
    #[error("encoding {name}: {source}")]
    Encode {
        name: String,
        source: serde_json::Error,
    },
    #[error("manifest {digest}: {source}")]
    Manifest {
        digest: Digest,
        source: serde_json::Error,
    },
}

/// A feature kiln does not have yet.
#[derive(Debug, thiserror::Error)]
pub enum Unsupported {
    #[error("RUN --device is not supported yet")]
    Devices,
    #[error(
        "git over SSH ({remote}) is not supported yet (it needs --ssh agent forwarding); use an https:// or git:// URL"
    )]
    GitSsh { remote: String },
    #[error(
        "RUN --mount=type=cache,target={target}: source= without from= (a subdirectory of the cache) is not supported yet"
    )]
    CacheMountSubdir { target: String },
    #[error("merge of build context {name:?} is not supported")]
    MergeContext { name: String },
}

/// An inconsistency in the build graph or kiln's own state: a bug.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    /// An op names an input it does not have; `user` is the op (`RUN`,
    /// `file op`, `merge`, `mount /target`).
    #[error("{user} refers to missing input #{index}")]
    MissingInput { user: String, index: u32 },
    #[error("vertex {vertex} uses unknown input {input}")]
    UnknownInput { vertex: Digest, input: Digest },
    /// The graph is not in topological order.
    #[error(transparent)]
    Dag(#[from] kiln_solver::DagError),
    #[error("target {target} is not in the graph")]
    TargetNotInGraph { target: Digest },
    #[error("the solve returned fewer results than targets")]
    FewerResults,
    #[error("RUN without a root filesystem")]
    NoRootFs,
    #[error("copy from an empty filesystem")]
    CopyFromScratch,
    /// An op or output handed to the wrong function; says what it is not
    /// (`a git source`).
    #[error("not {0}")]
    WrongKind(&'static str),
    /// A lock whose holder panicked (`stat cache`, `cache mount`).
    #[error("{0} lock poisoned")]
    Poisoned(&'static str),
    /// `pushing` or `a registry cache` without a client.
    #[error("{0} needs a registry client")]
    NoRegistryClient(&'static str),
    #[error("staged copy placed at {}, outside the layer's diff", .0.display())]
    StagedOutsideDiff(PathBuf),
    #[error("staged copy target {} outside the root", .0.display())]
    StagedOutsideRoot(PathBuf),
}

/// A failed step of the build graph, with what the user needs to find it.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {message}")]
pub struct StepError {
    /// Progress name of the step (`[build 2/4] RUN make`).
    pub name: String,
    /// Where it is in the Dockerfile.
    pub location: Option<SourceLocation>,
    /// What went wrong.
    pub message: String,
    /// Index of the step in the solved graph (for the progress output's tail).
    pub node: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_the_users() {
        let failed = RunError::Failed {
            args: vec!["/bin/sh".into(), "-c".into(), "exit 3".into()],
            status: kiln_executor::ExitStatus::Code(3),
        };
        assert_eq!(
            failed.to_string(),
            r#"process "/bin/sh -c exit 3" did not complete successfully: exit code: 3"#
        );
        let killed = RunError::Failed {
            args: vec!["sleep".into()],
            status: kiln_executor::ExitStatus::Signal(9),
        };
        assert!(killed.to_string().ends_with(": killed by signal 9"));
        let mismatch = GitError::ChecksumMismatch {
            checksum: "abc".into(),
            commit: "def".into(),
            peeled: Some("123".into()),
        };
        assert_eq!(
            mismatch.to_string(),
            "expected checksum to match abc, got def or 123"
        );
        let missing = InternalError::MissingInput {
            user: "mount /cache".into(),
            index: 2,
        };
        assert_eq!(
            missing.to_string(),
            "mount /cache refers to missing input #2"
        );
        assert_eq!(
            Error::from(InternalError::Poisoned("stat cache")).to_string(),
            "stat cache lock poisoned"
        );
        let stored = Error::from(RegistryFailure::Content {
            reference: "r/x:1".into(),
            problem: RegistryProblem::NotAnImage("a/b".into()),
        });
        assert!(matches!(stored, Error::Registry(_)));
        assert_eq!(
            stored.to_string(),
            r#"r/x:1: not a container image (its config is of type "a/b")"#
        );
    }

    #[test]
    fn git_command_message() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(128 << 8);
        let quiet = GitError::Command {
            what: "list the refs of x".into(),
            status,
            stderr: String::new(),
        };
        assert_eq!(
            quiet.to_string(),
            "failed to list the refs of x: git exited with exit status: 128"
        );
        let said = GitError::Command {
            what: "fetch".into(),
            status,
            stderr: "fatal: no".into(),
        };
        assert_eq!(said.to_string(), "failed to fetch: fatal: no");
    }
}
