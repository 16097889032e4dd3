//! The command line, as clap types. Flag names and meanings follow
//! `docker build` / `docker buildx build`, so that a Docker user can type
//! `kiln build` where they typed `docker build`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "kiln",
    version = crate::version::SHORT,
    about = "Build OCI images from Dockerfiles",
    long_about = "kiln builds OCI images from Dockerfiles: a BuildKit-compatible frontend, \
                  a content-addressed build graph and a cache that follows the build.",
    propagate_version = true
)]
pub struct Cli {
    /// State directory (image store, cache; default: $KILN_ROOT, else
    /// /var/lib/kiln as root, $XDG_DATA_HOME/kiln otherwise).
    // Not clap's `env`: an argument taken from the environment would show
    // in the usage line of every error (`Usage: kiln build --root <DIR>
    // <CONTEXT>`); `main` reads KILN_ROOT.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Allow plain HTTP (and unverified TLS fallback) for this registry
    /// (HOST[:PORT]); repeatable. Loopback registries are always allowed.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST[:PORT]")]
    pub insecure_registries: Vec<String>,

    /// kiln's registry configuration file (per-registry CA files, insecure
    /// registries). Default: $KILN_CONFIG, else /etc/kiln/config.toml.
    #[arg(long = "registry-config", global = true, value_name = "FILE")]
    pub registry_config: Option<PathBuf>,

    /// Print how the command is set up (rootless user namespace, snapshotter).
    #[arg(long, global = true)]
    pub debug: bool,

    /// How build steps get their filesystems: overlayfs, native (copies
    /// each step's root filesystem; for hosts that cannot mount overlayfs),
    /// or auto (overlayfs where it can be mounted, else native). Default:
    /// $KILN_SNAPSHOTTER, else auto.
    // Read from the environment by `main`, as --root.
    #[arg(long, global = true, value_enum, value_name = "NAME")]
    pub snapshotter: Option<SnapshotterChoice>,

    /// How RUN steps are kept apart from this machine: namespaces (fresh
    /// Linux namespaces on a root filesystem of their own), container (for
    /// a single-use container where namespaces and mounts are not allowed:
    /// steps run in the container's own root filesystem, which the build
    /// replaces), or auto (namespaces where a mount namespace can be made,
    /// else container).
    #[arg(
        long,
        global = true,
        env = "KILN_ISOLATION",
        value_enum,
        default_value_t = IsolationChoice::Auto,
        value_name = "MODE"
    )]
    pub isolation: IsolationChoice,

    /// With --isolation=container: this machine is throwaway even though it
    /// does not look like a container (the mode replaces its root
    /// filesystem).
    #[arg(long, global = true, env = "KILN_THROWAWAY")]
    pub throwaway: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile.
    Build(BuildArgs),
    /// Print the build graph of a Dockerfile without running it.
    Plan(PlanArgs),
    /// Import a root filesystem tarball as an image (like `docker import`).
    Import(ImportArgs),
    /// Download an image from a registry (like `docker pull`).
    Pull(PullArgs),
    /// Upload an image to a registry (like `docker push`).
    Push(PushArgs),
    /// Make an index from images in a registry, or show one (like `docker
    /// buildx imagetools create|inspect`).
    Imagetools(ImagetoolsArgs),
    /// Log in to a registry (writes Docker's config.json or its credential helper).
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
    /// List images (like `docker images`).
    Images(ImagesArgs),
    /// Show images' configuration and manifest as JSON (like `docker image inspect`).
    Inspect(InspectArgs),
    /// Show the history of an image (like `docker history`).
    History(HistoryArgs),
    /// Give an image another name (like `docker tag`).
    Tag(TagArgs),
    /// Remove images (like `docker rmi`).
    Rmi(RmiArgs),
    /// Write images to a `docker load` or OCI archive (like `docker save`).
    Save(SaveArgs),
    /// Read images from a docker or OCI archive (like `docker load`).
    Load(LoadArgs),
    /// Remove dangling images and unused data (like `docker image prune` + `docker builder prune`).
    Prune(PruneArgs),
    /// Show disk usage of the store (like `docker system df`).
    Du(DuArgs),
    /// Verify the store (every blob, snapshot, image, record and cache entry)
    /// and find what a killed kiln left; --repair fixes what it can.
    Check(CheckArgs),
    /// Run a command in an image of the store (like `docker run --rm`).
    Run(RunArgs),
    /// Rebuild an image from its provenance, without a cache, and check
    /// that the result is the same image, bit for bit.
    Verify(VerifyArgs),
    /// Records of past builds: list, show, logs, remove, and a picture of a
    /// build as an HTML page (like `docker buildx history`).
    Builds(BuildsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(CompletionArgs),
    /// Write the manual pages (kiln.1, kiln-build.1, …) into a directory.
    Man(ManArgs),
    /// Print the version, commit and build date.
    Version,
}

/// `kiln pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST]
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Platform to pull from a multi-platform image (default: this machine's).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// Print only the image reference.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `kiln push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// NAME[:TAG] of an image in the local store.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// Print only the pushed digest.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `kiln login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host[:port] (default: Docker Hub).
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,

    #[arg(short = 'u', long, value_name = "USER")]
    pub username: Option<String>,

    /// Password (prefer --password-stdin: a password on the command line is
    /// visible to other users).
    #[arg(short = 'p', long, value_name = "PASSWORD")]
    pub password: Option<String>,

    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `kiln logout`.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host[:port] (default: Docker Hub).
    #[arg(value_name = "SERVER")]
    pub server: Option<String>,
}

/// `kiln import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The tarball (plain, gzip, bzip2, xz or zstd); `-` reads stdin.
    #[arg(value_name = "FILE|-")]
    pub file: String,

    /// Name of the image (REPOSITORY[:TAG]).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,

    /// Apply a Dockerfile instruction to the image configuration (CMD,
    /// ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR).
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,

    /// Commit message (the history comment; default "Imported from -").
    #[arg(short = 'm', long = "message", value_name = "TEXT")]
    pub message: Option<String>,

    /// Platform of the image.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
}

/// `kiln plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,

    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// One line per vertex: short digest, step, instruction, location.
    Text,
    /// The graph as JSON, with each vertex's full definition.
    Json,
    /// Graphviz.
    Dot,
    /// Every vertex with all of its operation, then each stage's image config.
    Llb,
}

/// The `docker build` flags.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Build context: a directory; `kiln build` also takes a git URL
    /// (`https://host/repo.git#ref:dir`), an HTTP URL or `-` (stdin), each
    /// a tar archive or a Dockerfile (then the context is empty).
    #[arg(value_name = "CONTEXT")]
    pub context: String,

    /// Name of the Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from stdin.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<String>,

    /// Name and optionally a tag (name:tag).
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,

    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment).
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,

    /// Set the target build stage.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// Do not use cache when building the image.
    #[arg(long)]
    pub no_cache: bool,

    /// Do not cache the given stages.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// Always attempt to pull newer versions of base images.
    #[arg(long)]
    pub pull: bool,

    /// Set metadata on the image (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Networking mode for RUN steps: default (a network namespace of each
    /// step's own), none or host (needs --allow network.host).
    #[arg(long, value_name = "MODE")]
    pub network: Option<String>,

    /// Target platform(s), e.g. linux/arm64.
    #[arg(long = "platform", value_name = "PLATFORM", value_delimiter = ',')]
    pub platforms: Vec<String>,

    /// Output destination (buildx syntax: type=local,dest=path, type=oci, …).
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// Shorthand for --output=type=registry.
    #[arg(long)]
    pub push: bool,

    /// Shorthand for --output=type=docker.
    #[arg(long)]
    pub load: bool,

    /// Progress output (default: $BUILDKIT_PROGRESS, else auto).
    // Read from the environment by `build`, as --root.
    #[arg(long, value_enum, value_name = "TYPE")]
    pub progress: Option<ProgressChoice>,

    /// After the build (also a failed one), write a picture of it, a
    /// self-contained HTML page, to FILE (`kiln builds report` makes it from
    /// any build's record).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// External cache sources (type=registry,ref=… naming a cache or an image
    /// with an inline cache, type=local,src=…).
    #[arg(long = "cache-from", value_name = "SPEC")]
    pub cache_from: Vec<String>,

    /// Cache export destinations (type=registry,ref=…, type=local,dest=…,
    /// type=inline).
    #[arg(long = "cache-to", value_name = "SPEC")]
    pub cache_to: Vec<String>,

    /// Secret to expose to RUN --mount=type=secret (id=ID[,src=FILE|,env=VAR];
    /// id=ID alone: $ID if set, else the file ID).
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,

    /// SSH agent socket to expose to RUN --mount=type=ssh (default|<id>[=<socket>];
    /// default: $SSH_AUTH_SOCK; key files are not supported yet).
    #[arg(long = "ssh", value_name = "SPEC")]
    pub ssh: Vec<String>,

    /// Extra privileges for RUN steps: security.insecure (RUN
    /// --security=insecure), network.host (--network=host, RUN --network=host).
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,

    /// Additional build contexts (name=path|docker-image://ref|…).
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,

    /// Write the image ID to a file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Write build result metadata to a file.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// Suppress the build output and print the image ID on success.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Most RUN steps running at once (default: the number of CPUs).
    #[arg(long = "max-parallelism", value_name = "N")]
    pub max_parallelism: Option<usize>,

    /// Instead of building: check, outline or targets (`,format=json` for JSON).
    #[arg(long, value_name = "METHOD")]
    pub call: Option<String>,

    /// Shorthand for --call=check: print the build checks' warnings, exit 1 if any.
    #[arg(long)]
    pub check: bool,

    /// After the build, say why each step that ran was not cached (compared
    /// with the last time it ran: instruction, build arguments, base image,
    /// context files, or an input step).
    #[arg(long)]
    pub explain: bool,

    /// Build twice, the second time without the cache, and report what
    /// differs (configuration fields; per layer, the first differing file)
    /// if the images are not identical. Exit status 1 when they differ.
    #[arg(long = "check-reproducible")]
    pub check_reproducible: bool,

    /// Memory limit of each RUN step (bytes, or with a unit: 512m, 2g), as
    /// `docker build --memory`; a step over it is killed and says so.
    #[arg(short = 'm', long = "memory", value_name = "SIZE")]
    pub memory: Option<String>,

    /// Most processes (and threads) each RUN step may have at once.
    #[arg(long = "pids-limit", value_name = "N")]
    pub pids_limit: Option<u64>,

    /// SLSA provenance attestation, as buildx: `true`, `false`, or
    /// `mode=min|max[,version=v0.2|v1][,builder-id=URI]` (default: `mode=min`,
    /// carried by registry pushes only; `BUILDX_NO_DEFAULT_ATTESTATIONS=1`
    /// turns the default off).
    #[arg(long, value_name = "SPEC")]
    pub provenance: Option<String>,

    /// SBOM attestation (SPDX 2.3, kiln's own scan of the image): `true`,
    /// `false`, or `generator=IMAGE` (an SBOM generator image).
    #[arg(long, value_name = "SPEC")]
    pub sbom: Option<String>,

    /// An attestation, as buildx: `type=provenance|sbom[,disabled=true][,...]`.
    #[arg(long, value_name = "SPEC")]
    pub attest: Vec<String>,

    /// An annotation of the image, as buildx: `[TYPE[PLATFORMS]:]KEY=VALUE`
    /// with TYPE `manifest`, `index`, `manifest-descriptor` or
    /// `index-descriptor`.
    #[arg(long, value_name = "KEY=VALUE")]
    pub annotation: Vec<String>,

    /// Size of each RUN step's /dev/shm (bytes, or with a unit: 128m, 1g;
    /// default 64m), as `docker buildx build --shm-size`.
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,

    /// A resource limit of each RUN step, NAME=SOFT[:HARD] (nofile, nproc,
    /// core, stack, …; -1 is unlimited), as `docker buildx build --ulimit`.
    #[arg(long, value_name = "ULIMIT")]
    pub ulimit: Vec<String>,

    /// `docker build`/`docker buildx build` flags kiln does not have.
    #[command(flatten)]
    pub docker: DockerOnly,
}

/// `--progress`: buildx's values and kiln's `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressChoice {
    /// tty on a terminal, else plain.
    Auto,
    /// BuildKit-style lines (`#5 [build 2/4] RUN make`, `#5 DONE 1.2s`).
    Plain,
    /// The live view.
    Tty,
    /// One JSON object per line, for every event (schema in the README).
    Json,
    /// BuildKit's solve-status objects, one per line, as buildx prints them.
    Rawjson,
    /// No progress output (-q also prints the image ID at the end).
    Quiet,
    /// No progress output (buildx's name for it).
    None,
}

/// The flags of `docker build` and `docker buildx build` that kiln does not
/// have: taken so that each can be refused by name ([`DockerOnly::unsupported`])
/// rather than with a generic "unexpected argument". Hidden from `--help`.
#[derive(Debug, Clone, Default, Args)]
pub struct DockerOnly {
    #[arg(long = "add-host", hide = true, value_name = "HOST:IP")]
    pub add_host: Vec<String>,
    #[arg(long, hide = true, value_name = "NAME")]
    pub builder: Option<String>,
    #[arg(long = "cgroup-parent", hide = true, value_name = "CGROUP")]
    pub cgroup_parent: Option<String>,
    #[arg(long, hide = true, value_name = "SPEC")]
    pub policy: Vec<String>,
    #[arg(long, hide = true, value_name = "SPEC")]
    pub resource: Vec<String>,
    #[arg(long, hide = true)]
    pub detach: bool,
    // `docker build` (the legacy builder's flags).
    #[arg(long, hide = true)]
    pub squash: bool,
    #[arg(long, hide = true)]
    pub stream: bool,
    #[arg(short = 'c', long = "cpu-shares", hide = true, value_name = "N")]
    pub cpu_shares: Option<String>,
    #[arg(long = "cpu-period", hide = true, value_name = "N")]
    pub cpu_period: Option<String>,
    #[arg(long = "cpu-quota", hide = true, value_name = "N")]
    pub cpu_quota: Option<String>,
    #[arg(long = "cpuset-cpus", hide = true, value_name = "CPUS")]
    pub cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems", hide = true, value_name = "MEMS")]
    pub cpuset_mems: Option<String>,
    #[arg(long = "memory-swap", hide = true, value_name = "SIZE")]
    pub memory_swap: Option<String>,
    #[arg(long = "security-opt", hide = true, value_name = "OPTION")]
    pub security_opt: Vec<String>,
    // Go booleans: `--rm` or `--rm=false`.
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub rm: Option<String>,
    #[arg(long = "force-rm", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub force_rm: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub compress: Option<String>,
    #[arg(long = "disable-content-trust", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub disable_content_trust: Option<String>,
}

/// Go's `strconv.ParseBool`.
pub fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

impl DockerOnly {
    /// The flags given, by name, each with why or what instead. Flags that
    /// ask for what kiln does anyway are not refused: `--rm`, `--force-rm`
    /// (kiln leaves no intermediate containers), `--compress` (kiln reads
    /// the context in place, nothing is sent), `--disable-content-trust`
    /// (kiln does no content-trust verification).
    pub fn unsupported(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        let mut flag = |given: bool, name: &'static str, why: &'static str| {
            if given {
                out.push((name, why));
            }
        };
        flag(!self.add_host.is_empty(), "--add-host", "");
        flag(
            self.builder.is_some(),
            "--builder",
            " (kiln has no builder instances: it builds in its own process)",
        );
        flag(
            self.cgroup_parent.is_some(),
            "--cgroup-parent",
            " (each RUN step gets a control group of its own under kiln's, which --memory and --pids-limit limit)",
        );
        flag(!self.policy.is_empty(), "--policy", "");
        let off = |v: &Option<String>| v.as_deref().and_then(go_bool) == Some(false);
        flag(
            !self.resource.is_empty(),
            "--resource",
            " (--memory and --pids-limit are)",
        );
        flag(self.detach, "--detach", "");
        flag(self.squash, "--squash", "");
        flag(self.stream, "--stream", "");
        flag(self.cpu_shares.is_some(), "--cpu-shares", "");
        flag(self.cpu_period.is_some(), "--cpu-period", "");
        flag(self.cpu_quota.is_some(), "--cpu-quota", "");
        flag(self.cpuset_cpus.is_some(), "--cpuset-cpus", "");
        flag(self.cpuset_mems.is_some(), "--cpuset-mems", "");
        flag(self.memory_swap.is_some(), "--memory-swap", "");
        flag(!self.security_opt.is_empty(), "--security-opt", "");
        let on = |v: &Option<String>| v.is_some() && !off(v);
        flag(
            off(&self.rm),
            "--rm=false",
            " (kiln leaves no intermediate containers)",
        );
        flag(
            off(&self.force_rm),
            "--force-rm=false",
            " (kiln leaves no intermediate containers)",
        );
        flag(
            off(&self.compress),
            "--compress=false",
            " (kiln sends the context nowhere)",
        );
        flag(
            off(&self.disable_content_trust),
            "--disable-content-trust=false",
            " (kiln does no content-trust verification)",
        );
        // A value that is not a Go boolean.
        for (v, name) in [
            (&self.rm, "--rm"),
            (&self.force_rm, "--force-rm"),
            (&self.compress, "--compress"),
            (&self.disable_content_trust, "--disable-content-trust"),
        ] {
            if on(v) && v.as_deref().and_then(go_bool).is_none() {
                out.push((name, " (expected true or false)"));
            }
        }
        out
    }
}

impl BuildArgs {
    /// Flags given that only mean something to `kiln build`, by name.
    pub fn build_only(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |given: bool, name: &'static str| {
            if given {
                out.push(name);
            }
        };
        check(!self.tags.is_empty(), "--tag");
        check(!self.outputs.is_empty(), "--output");
        check(self.push, "--push");
        check(self.pull, "--pull");
        check(self.progress.is_some(), "--progress");
        check(self.iidfile.is_some(), "--iidfile");
        check(self.metadata_file.is_some(), "--metadata-file");
        check(self.quiet, "--quiet");
        check(self.max_parallelism.is_some(), "--max-parallelism");
        check(!self.cache_from.is_empty(), "--cache-from");
        check(!self.cache_to.is_empty(), "--cache-to");
        check(self.explain, "--explain");
        check(self.check_reproducible, "--check-reproducible");
        check(self.call.is_some(), "--call");
        check(self.check, "--check");
        check(self.memory.is_some(), "--memory");
        check(self.pids_limit.is_some(), "--pids-limit");
        check(self.shm_size.is_some(), "--shm-size");
        check(!self.ulimit.is_empty(), "--ulimit");
        check(self.report.is_some(), "--report");
        out
    }

    /// The flags that were given but whose feature has not landed yet, by
    /// name, each with a hint (possibly empty).
    pub fn unsupported(&self) -> Vec<(&'static str, &'static str)> {
        self.docker.unsupported()
    }
}

/// `--snapshotter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SnapshotterChoice {
    /// overlayfs where it can be mounted, else native.
    Auto,
    /// overlay mounts; fails where overlayfs cannot be mounted.
    Overlayfs,
    /// copies of each step's root filesystem, diffed after the step.
    Native,
}

/// `--isolation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IsolationChoice {
    /// namespaces where a mount namespace can be made, else container
    /// (`default`, docker build's Linux value, means the same).
    #[value(alias = "default")]
    Auto,
    /// fresh namespaces per RUN step (needs CAP_SYS_ADMIN or a user namespace).
    Namespaces,
    /// RUN steps in this container's own root filesystem (single-use containers only).
    Container,
}

// `kiln archive`

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// A `docker load` archive (manifest.json), which is also an OCI layout.
    Docker,
    /// An OCI image layout archive (index.json only, OCI media types).
    Oci,
}

/// `kiln save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images (names or IDs).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// Write to a file instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Archive format.
    #[arg(long, value_enum, default_value_t = SaveFormat::Docker)]
    pub format: SaveFormat,
}

/// `kiln load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from a file instead of stdin (docker or OCI archive, plain tar).
    #[arg(short = 'i', long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Print nothing.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

// `kiln builds`

/// A build reference.
const REF_HELP: &str = "A build: its ID (or a unique prefix), or ^N for the Nth build before \
the newest (default: the newest)";

/// `kiln builds`.
#[derive(Debug, Args)]
pub struct BuildsArgs {
    #[command(subcommand)]
    pub command: BuildsCommand,
}

#[derive(Debug, Subcommand)]
pub enum BuildsCommand {
    /// List the build records, newest first (like `docker buildx history ls`).
    Ls(LsArgs),
    /// Show a build: its settings, time, steps (with how long each took,
    /// whether it was cached and why it ran), outputs and image layers
    /// (like `docker buildx history inspect`).
    Show(ShowArgs),
    /// Print a build's output as --progress=plain printed it (like `docker
    /// buildx history logs`).
    Logs(LogsArgs),
    /// Remove build records.
    Rm(RmArgs),
    /// Write a picture of a build, a self-contained HTML page: a timeline of
    /// its steps per stage, the critical path, cache hits and why the other
    /// steps ran, layer sizes.
    Report(ReportArgs),
}

/// `kiln builds ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Output format: table (default), json (one object per line), or a Go
    /// template (`{{.ID}} {{.Name}}`; fields ID, Name, Status, CreatedAt,
    /// Duration, Steps, Cached).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Do not cut names.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only the records that match: status=completed|error|canceled,
    /// status!=…, name=…; repeatable (all must match).
    #[arg(long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
}

/// `kiln builds show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[arg(value_name = "BUILD", help = REF_HELP)]
    pub reference: Option<String>,
    /// pretty (default) or json (the whole record, with its critical path).
    #[arg(long, value_name = "FORMAT", default_value = "pretty")]
    pub format: String,
}

/// `kiln builds logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[arg(value_name = "BUILD", help = REF_HELP)]
    pub reference: Option<String>,
}

/// `kiln builds rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// The builds (IDs, prefixes or ^N).
    #[arg(value_name = "BUILD")]
    pub references: Vec<String>,
    /// Remove every record.
    #[arg(long)]
    pub all: bool,
}

/// `kiln builds report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    #[arg(value_name = "BUILD", help = REF_HELP)]
    pub reference: Option<String>,
    /// Where the page goes (`-`: stdout).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

// `kiln check`

/// `kiln check`.
#[derive(Debug, Args)]
#[command(
    long_about = "Verify the state directory: re-hash every blob, read every snapshot's \
metadata, follow every image name and record, layer-blob record and build cache entry to what it \
refers to (every layer of every image needs a blob in the store, or a built snapshot to make one \
from, and a name's manifest all its blobs: what a name reaches can always be saved and pushed), \
and look for mounts and processes left under the state directory by a kiln that was \
killed.\n\nPrints each problem; exits 0 when there is none (or all were repaired), 1 otherwise. \
With --repair, removes what is broken (a corrupt blob, a snapshot without metadata, records and \
cache entries that point at nothing; later builds recompute them), makes a lost layer blob again \
when kiln's tar of its snapshot is the layer, unmounts leftover mounts and kills leftover \
processes, then checks again: \"the store is consistent\" is printed only when that fresh check finds \
nothing. Named images are never removed: what cannot be repaired names the `kiln rmi` (or `kiln \
pull`) that would.\n\nA check takes the store lock shared (builds may run meanwhile); --repair takes it \
exclusively, waiting for running builds."
)]
pub struct CheckArgs {
    /// Repair what can be repaired.
    #[arg(long)]
    pub repair: bool,
}

// `kiln completion`

/// `kiln completion`.
#[derive(Debug, Args)]
#[command(long_about = "Print a completion script for SHELL on stdout.\n\n\
bash: `source <(kiln completion bash)`, or save it as \
/usr/share/bash-completion/completions/kiln; zsh: save it as `_kiln` in a directory of $fpath; \
fish: save it as ~/.config/fish/completions/kiln.fish.")]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `kiln man`.
#[derive(Debug, Args)]
#[command(
    long_about = "Write the manual pages (roff) into DIR: kiln.1 and one page per \
command (kiln-build.1, kiln-builds-ls.1, …). Read one with `man -l DIR/kiln-build.1`, or \
install them under /usr/local/share/man/man1."
)]
pub struct ManArgs {
    /// The directory (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

// `kiln images`

/// `kiln images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only images whose name matches (REPOSITORY[:TAG], wildcards allowed).
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Filter (dangling=true|false, reference=PATTERN, before=IMAGE,
    /// since=IMAGE, label=KEY[=VALUE]).
    #[arg(short = 'f', long = "filter", value_name = "FILTER")]
    pub filters: Vec<String>,
    /// Go template ({{.Repository}}, {{.Tag}}, {{.ID}}, {{.Digest}},
    /// {{.CreatedAt}}, {{.CreatedSince}}, {{.Size}}, {{.Platform}}; `table …`,
    /// `json`). A multi-platform name has one row per platform.
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
    /// Do not truncate IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show intermediate images too (kiln keeps none: same as without).
    #[arg(short = 'a', long)]
    pub all: bool,
}

/// `kiln inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images (name or ID).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// Go template, applied to each image's object.
    #[arg(short = 'f', long, value_name = "TEMPLATE")]
    pub format: Option<String>,
}

/// `kiln history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Do not truncate the output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Sizes and dates in human-readable form.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub human: bool,
    /// Go template ({{.ID}}, {{.CreatedSince}}, {{.CreatedAt}}, {{.CreatedBy}},
    /// {{.Size}}, {{.Comment}}; `table …`, `json`).
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,
}

/// `kiln tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    #[arg(value_name = "SOURCE_IMAGE")]
    pub source: String,
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    pub target: String,
}

/// `kiln rmi`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// Remove an image by ID even when several names point at it.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Do not delete untagged parents (kiln keeps none: accepted, no effect).
    #[arg(long)]
    pub no_prune: bool,
}

// `kiln imagetools`

/// `kiln imagetools`.
#[derive(Debug, Args)]
pub struct ImagetoolsArgs {
    #[command(subcommand)]
    pub command: ImagetoolsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImagetoolsCommand {
    /// Create an index from images in a registry and push it (like `docker
    /// buildx imagetools create`).
    Create(ImagetoolsCreateArgs),
    /// Show an image or index in a registry (like `docker buildx imagetools
    /// inspect`).
    Inspect(ImagetoolsInspectArgs),
}

/// `kiln imagetools create`.
#[derive(Debug, Args)]
pub struct ImagetoolsCreateArgs {
    /// Read a source descriptor (JSON) from a file.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Name of the new index (repeatable: pushed under each).
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,

    /// Print the index instead of pushing it.
    #[arg(long)]
    pub dry_run: bool,

    /// Add the sources to the index the first -t names.
    #[arg(long)]
    pub append: bool,

    /// An annotation: `index:KEY=VALUE` or
    /// `manifest-descriptor[PLATFORM]:KEY=VALUE`.
    #[arg(long, value_name = "ANNOTATION")]
    pub annotation: Vec<String>,

    /// Progress output: auto, plain, tty or quiet.
    #[arg(long, default_value = "auto", value_name = "TYPE")]
    pub progress: String,

    /// Images and indexes: NAME[:TAG|@DIGEST], a bare DIGEST (in the one
    /// repository named), or a descriptor as JSON.
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
}

/// `kiln imagetools inspect`.
#[derive(Debug, Args)]
pub struct ImagetoolsInspectArgs {
    /// A Go template: `{{.Name}}`, `{{.Manifest}}`, `{{json .Manifest}}`,
    /// `{{json .Image}}`, `{{json .}}`.
    #[arg(long, value_name = "TEMPLATE")]
    pub format: Option<String>,

    /// The manifest or index as the registry serves it.
    #[arg(long)]
    pub raw: bool,

    /// NAME[:TAG|@DIGEST]
    #[arg(value_name = "NAME")]
    pub name: String,
}

// `kiln prune`

/// `kiln prune`.
#[derive(Debug, Args)]
#[command(
    long_about = "Remove dangling images (untagged: `<none>:<none>`), then everything in the \
store that no remaining image or build cache entry uses (blobs, unpacked and built layers), and \
cache entries whose layers are gone.\n\nWith --all, also the whole build cache, the cache mounts \
(RUN --mount=type=cache; like `docker builder prune --all`), git fetches, ADD <url> validators and \
--explain records, so later builds start cold. Named images are never removed by prune \
(there are no containers to tell used from unused images): remove them with `kiln rmi`.\n\n\
Prune takes the store lock exclusively: it waits for running builds, and builds started \
meanwhile wait for it.\n\nIt asks first, as `docker image prune` does ([y/N] on stdout, the \
answer read from stdin); -f/--force does not ask. Without an answer (stdin at its end, as in a \
script without a terminal) nothing is removed and prune exits 1."
)]
pub struct PruneArgs {
    /// Also remove the whole build cache and the cache mounts.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only what was created before a time: until=DURATION (24h, 90m, 1h30m)
    /// or until=TIMESTAMP (RFC 3339 or seconds since 1970).
    #[arg(long = "filter", value_name = "until=…")]
    pub filters: Vec<String>,
    /// Also remove build cache entries, least recently used first, until
    /// the store holds at most SIZE (bytes, or with a unit: 512MB, 10GB, 1.5g;
    /// binary units, as Docker's).
    #[arg(long = "keep-storage", value_name = "SIZE")]
    pub keep_storage: Option<String>,
    /// Do not prompt for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `kiln du`.
#[derive(Debug, Args)]
#[command(
    long_about = "Show what the store holds, as `docker system df`: images, build cache and \
cache mounts. Sizes are unpacked sizes (the bytes of the files in the layers, each layer's as \
`kiln images` shows it), and each layer is counted in one row: Images counts every layer of an \
image in the store once (shared layers once), Build Cache the snapshots cache entries hold that \
no image has a layer of (0 B once the cache is empty), Unused the snapshots nothing holds any \
more (the layers of removed images, until `kiln prune`). RECLAIMABLE is what `kiln prune` frees \
of the images (layers only dangling images have) and what `kiln prune --all` frees of the \
cache.\n\nWith -v, every image \
too: its SIZE (as `kiln images`), the part of it other images share, and the rest."
)]
pub struct DuArgs {
    /// Also list every image with its shared and unique sizes.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

// `kiln run`

/// `kiln run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Keep stdin open and give it to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Give the command a terminal (a pseudo-TTY).
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Remove the container when it exits: always so in kiln, which keeps
    /// no containers (accepted for `docker run --rm` command lines).
    #[arg(long)]
    pub rm: bool,

    /// Set an environment variable (`KEY=VALUE`, or `KEY` to pass this
    /// process's value).
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Read environment variables from a file (`KEY=VALUE` lines; `#`
    /// comments; a bare `KEY` passes this process's value).
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Working directory inside the container (default: the image's).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,

    /// User (`name|uid[:group|gid]`; default: the image's).
    #[arg(short = 'u', long, value_name = "USER")]
    pub user: Option<String>,

    /// Overwrite the image's ENTRYPOINT (its CMD is then not used either).
    #[arg(long, value_name = "COMMAND")]
    pub entrypoint: Option<String>,

    /// Network: `default` (a namespace of its own with outbound access;
    /// also `bridge`), `none` (loopback only) or `host`.
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub network: String,

    /// Container host name (default: a random 12-digit hex ID, as Docker's).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Bind-mount a host path: `/host/path:/container/path[:ro|rw]`.
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,

    /// Mount a fresh tmpfs at a path of the container.
    #[arg(long, value_name = "PATH")]
    pub tmpfs: Vec<String>,

    /// `docker run` flags kiln does not have, refused by name.
    #[command(flatten)]
    pub docker_only: RunDockerOnly,

    /// The image: a name, an ID or an ID prefix, in the local store.
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// The command and its arguments (default: the image's CMD).
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// The `docker run` flags kiln does not have: taken so that each is refused
/// by name. Hidden from `--help`.
#[derive(Debug, Default, Args)]
pub struct RunDockerOnly {
    #[arg(short = 'd', long, hide = true)]
    pub detach: bool,
    #[arg(short = 'p', long, hide = true, value_name = "PORTS")]
    pub publish: Vec<String>,
    #[arg(long, hide = true, value_name = "NAME")]
    pub name: Option<String>,
    #[arg(long, hide = true)]
    pub privileged: bool,
    #[arg(long = "cap-add", hide = true, value_name = "CAP")]
    pub cap_add: Vec<String>,
    #[arg(long, hide = true, value_name = "PLATFORM")]
    pub platform: Option<String>,
    #[arg(long, hide = true, value_name = "POLICY")]
    pub pull: Option<String>,
}

// `kiln verify`

/// `kiln verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image: in the local store (built there with attestations) or in
    /// a registry (its index carries the provenance).
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// The build context the image was built from.
    #[arg(value_name = "CONTEXT", default_value = ".")]
    pub context: PathBuf,
    /// The Dockerfile (default: the provenance's entry point in CONTEXT).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A build argument the provenance leaves out (`mode=min`, or a
    /// secret-looking name), as `NAME=VALUE`.
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// A secret the build's RUN steps mount, as in `kiln build`.
    #[arg(long = "secret", value_name = "id=ID,src=PATH")]
    pub secrets: Vec<String>,
    /// Which image of a multi-platform index (default: the only one, or
    /// this machine's platform).
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,
    /// Keep the rebuilt OCI layout in this directory.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// When verified, write an in-toto statement about the image with kiln's
    /// `https://kiln.dev/verification/v1` predicate (what was checked) to
    /// this file.
    #[arg(long, value_name = "FILE")]
    pub statement: Option<PathBuf>,
}
