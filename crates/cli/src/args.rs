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
    Imagetools(crate::imagetools::ImagetoolsArgs),
    /// Log in to a registry (writes Docker's config.json or its credential helper).
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
    /// List images (like `docker images`).
    Images(crate::images::ImagesArgs),
    /// Show images' configuration and manifest as JSON (like `docker image inspect`).
    Inspect(crate::images::InspectArgs),
    /// Show the history of an image (like `docker history`).
    History(crate::images::HistoryArgs),
    /// Give an image another name (like `docker tag`).
    Tag(crate::images::TagArgs),
    /// Remove images (like `docker rmi`).
    Rmi(crate::images::RmiArgs),
    /// Write images to a `docker load` or OCI archive (like `docker save`).
    Save(crate::archive::SaveArgs),
    /// Read images from a docker or OCI archive (like `docker load`).
    Load(crate::archive::LoadArgs),
    /// Remove dangling images and unused data (like `docker image prune` + `docker builder prune`).
    Prune(crate::prune::PruneArgs),
    /// Show disk usage of the store (like `docker system df`).
    Du(crate::prune::DuArgs),
    /// Verify the store (every blob, snapshot, image, record and cache entry)
    /// and find what a killed kiln left; --repair fixes what it can.
    Check(crate::check::CheckArgs),
    /// Run a command in an image of the store (like `docker run --rm`).
    Run(crate::run::RunArgs),
    /// Records of past builds: list, show, logs, remove, and a picture of a
    /// build as an HTML page (like `docker buildx history`).
    Builds(crate::builds::BuildsArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(crate::completion::CompletionArgs),
    /// Write the manual pages (kiln.1, kiln-build.1, …) into a directory.
    Man(crate::completion::ManArgs),
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

    /// SBOM attestation (SPDX 2.3, kiln's own scan of the image): `true` or
    /// `false`.
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
