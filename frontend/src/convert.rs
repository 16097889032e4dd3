//! Typed instructions → build graph: stages, ARG scoping, substitution, and one
//! graph vertex per filesystem change.
//!
//! This follows BuildKit's `dockerfile2llb` step by step: global ARGs are
//! evaluated first and seen only by FROM lines; stages are resolved, their
//! dependencies (`FROM <stage>`, `COPY --from`, `RUN --mount=from=`) collected
//! and checked for cycles; only the stages the target needs are dispatched, in
//! Dockerfile order; each instruction is expanded with the environment of the
//! stage at that point and either edits the image configuration or adds a
//! vertex.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use kiln_llb::op::{
    CacheSharing, Chown, Copy as CopyAction, Device, ExecOp, FileAction, FileOp, IdOrName, MergeOp,
    Mkdir, Mkfile, Mount as LlbMount, MountKind, Network, ProxyEnv, SourceOp,
};
use kiln_llb::{
    Definition, Digest, Graph, Healthcheck as LlbHealthcheck, History, ImageConfig, Op, Platform,
    SourceLocation, Stage as LlbStage, StageBase, VertexMeta,
};
use kiln_reference::Reference;

use crate::contexts::{self, NamedContext};
use crate::diagnostic::Diagnostic;
use crate::instructions::{
    self, Add, ArgDef, CmdLine, Command, Copy, Dockerfile, Healthcheck, Instruction, KeyValue, Run,
};
use crate::lint::{self, Rule};
use crate::mount::{self, MountType, Sharing};
use crate::quote::{go_quote, go_quote_list};
use crate::shell::{EnvLookup, Lexer, NoEnv};
use crate::source::SourceFile;
use crate::suggest::did_you_mean;
use crate::syntax::{self, Node, Word};
use crate::{chmod, expose, gitref, paths, signal};

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
        }
    }
}

/// A base image as the resolver found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Manifest digest (`sha256:…`) the reference resolved to.
    pub digest: Option<String>,
    /// The image's configuration (env, workdir, user, onbuild, history, …).
    pub config: ImageConfig,
    /// Whether the image has any layers (an image without layers is `scratch`).
    pub has_layers: bool,
}

/// The answer of an [`ImageResolver`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per base image; not worth a box
pub enum Resolution {
    Resolved(ResolvedImage),
    /// Could not be looked up (offline, empty store): planning goes on, and the
    /// image's configuration takes no part in substitution.
    Unresolved,
}

/// Supplies base-image configurations. The frontend does no I/O itself; the
/// caller looks images up (local store, registry) however it likes.
pub trait ImageResolver {
    /// Resolves `reference` (normalised, e.g. `docker.io/library/alpine:3.20`) for
    /// `platform`. An `Err` is a real failure (bad credentials, no such image) and
    /// stops the build with the message at the FROM line.
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Resolution, String>;
}

/// Resolves nothing: every image is [`Resolution::Unresolved`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Offline;

impl ImageResolver for Offline {
    fn resolve(&self, _: &str, _: &Platform) -> Result<Resolution, String> {
        Ok(Resolution::Unresolved)
    }
}

/// Resolves from a fixed table (tests, and images already in a store).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    pub images: BTreeMap<String, ResolvedImage>,
}

impl ImageResolver for StaticResolver {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<Resolution, String> {
        Ok(match self.images.get(reference) {
            Some(i) => Resolution::Resolved(i.clone()),
            None => Resolution::Unresolved,
        })
    }
}

/// The result of planning a build.
#[derive(Debug, Clone)]
pub struct Plan {
    pub definition: Definition,
    pub warnings: Vec<Diagnostic>,
    /// The target's build arguments, secrets and SSH sockets.
    pub outline: crate::outline::Outline,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";
const CONTEXT: &str = "context";

/// Build args Docker knows without an ARG instruction.
const PROXY_ARGS: [&str; 10] = [
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
fn builtin_arg_note(key: &str) -> Option<&'static str> {
    match key {
        "BUILDKIT_SANDBOX_HOSTNAME" => Some(""),
        "BUILDKIT_SYNTAX" | "BUILDKIT_MULTI_PLATFORM" | "BUILDKIT_CACHE_MOUNT_NS" => Some(""),
        // Read by the cli: a true value is `--cache-to type=inline`, as in buildx.
        "BUILDKIT_INLINE_CACHE" => Some(""),
        "BUILDKIT_CONTEXT_KEEP_GIT_DIR" => Some("git build contexts are not supported by kiln yet"),
        "BUILDKIT_DOCKERFILE_CHECK" => Some(""),
        "BUILDKIT_SBOM_SCAN_CONTEXT" | "BUILDKIT_SBOM_SCAN_STAGE" => {
            Some("SBOM generation is not supported by kiln")
        }
        // Read by the cli: the creation time and mtime clamp of the build.
        "SOURCE_DATE_EPOCH" => Some(""),
        _ => None,
    }
}

/// The `# check=` directive: which lint rules to skip, and whether a rule
/// violation fails the build (BuildKit's `ParseLintOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    pub skip_all: bool,
    pub skip: Vec<String>,
    pub experimental_all: bool,
    pub experimental: Vec<String>,
    pub error: bool,
}

impl CheckConfig {
    /// Parses `skip=A,B;error=true;experimental=all`.
    pub fn parse(s: &str) -> Result<CheckConfig, String> {
        let mut c = CheckConfig::default();
        let s = s.trim();
        if s.is_empty() {
            return Ok(c);
        }
        for part in s.splitn(3, ';') {
            let Some((k, v)) = part.split_once('=') else {
                return Err(format!("invalid check option {}", go_quote(part)));
            };
            let v = v.trim();
            let list = || {
                v.split(',')
                    .map(|r| r.trim().to_owned())
                    .collect::<Vec<_>>()
            };
            match k.trim() {
                "skip" if v == "all" => c.skip_all = true,
                "skip" => c.skip = list(),
                "experimental" if v == "all" => c.experimental_all = true,
                "experimental" => c.experimental = list(),
                "error" => {
                    c.error = mount::parse_go_bool(v).ok_or_else(|| {
                        format!(
                            "failed to parse check option {}: invalid syntax",
                            go_quote(part)
                        )
                    })?;
                }
                other => return Err(format!("invalid check option {}", go_quote(other))),
            }
        }
        Ok(c)
    }

    pub fn skips(&self, rule: &str) -> bool {
        self.skip_all || self.skip.iter().any(|r| r == rule)
    }

    /// Whether experimental rule `rule` is enabled.
    pub fn enables(&self, rule: &str) -> bool {
        self.experimental_all || self.experimental.iter().any(|r| r == rule)
    }
}

/// Which lint rules run: the file's configuration (the `BUILDKIT_DOCKERFILE_CHECK`
/// build arg if given — it replaces the directive, as in BuildKit's dockerui —
/// else the `# check=` directive), and the `# check=` comments directly above
/// instructions, which add skips and experimental rules for that instruction
/// (BuildKit's `WithMergedConfigFromComments`).
#[derive(Debug, Clone, Default)]
pub struct LintConfig {
    pub file: CheckConfig,
    /// (first line, last line, configuration) of commented instructions.
    pub instructions: Vec<(usize, usize, CheckConfig)>,
}

impl LintConfig {
    pub fn new(file: &SourceFile, ast: &syntax::Ast, opts: &BuildOptions) -> R<LintConfig> {
        let config = if let Some(v) = opts.build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
            CheckConfig::parse(v).map_err(|e| {
                Diagnostic::unlocated(
                    file.name(),
                    format!("failed to parse BUILDKIT_DOCKERFILE_CHECK: {e}"),
                )
            })?
        } else {
            match &ast.directives.check {
                Some(d) => CheckConfig::parse(&d.value).map_err(|e| {
                    Diagnostic::at(
                        file,
                        file.line_start(d.line),
                        format!("failed to parse check options: {e}"),
                    )
                    .with_end_line(d.line)
                })?,
                None => CheckConfig::default(),
            }
        };
        let instructions = ast
            .nodes
            .iter()
            .filter_map(|n| {
                let c = instruction_check(&n.comments)?;
                Some((n.start_line, n.end_line, c))
            })
            .collect();
        Ok(LintConfig {
            file: config,
            instructions,
        })
    }

    /// Whether warning `w` is reported. Experimental rules run only when
    /// enabled and are not skipped by `skip=` (as in BuildKit's `Linter.Run`).
    pub fn keeps(&self, w: &Diagnostic) -> bool {
        let Some(rule) = w.rule else {
            return true;
        };
        let line = w.line().unwrap_or(0);
        let configs = std::iter::once(&self.file).chain(
            self.instructions
                .iter()
                .filter(|(from, to, _)| (*from..=*to).contains(&line))
                .map(|(_, _, c)| c),
        );
        if lint::Rule::from_name(rule).is_some_and(lint::Rule::is_experimental) {
            let mut configs = configs;
            return configs.any(|c| c.enables(rule));
        }
        let mut configs = configs;
        !configs.any(|c| c.skips(rule))
    }
}

/// The `check=` comment among the comments directly above an instruction
/// (BuildKit's `WithMergedConfigFromComments`: the first one counts, its value
/// up to the first space; one that does not parse is ignored, as in BuildKit).
fn instruction_check(comments: &[String]) -> Option<CheckConfig> {
    for c in comments {
        let Some((name, value)) = c.split_once('=') else {
            continue;
        };
        let name = name.trim_end();
        let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid || !name.eq_ignore_ascii_case("check") {
            continue;
        }
        let value = value.trim();
        let value = value.split(' ').next().unwrap_or("");
        return CheckConfig::parse(value).ok();
    }
    None
}

/// Plans the build of `dockerfile` (already typed) with `opts`.
pub fn convert(
    file: &SourceFile,
    df: Dockerfile,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<Plan, Diagnostic> {
    let mut cx = Converter::new(file, &df, opts, resolver)?;
    cx.run(df)
}

/// What `--check` reports: the lint warnings (and other warnings), and the
/// error that stopped the conversion, if any.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub warnings: Vec<Diagnostic>,
    pub error: Option<Diagnostic>,
}

/// Lints `dockerfile` the way BuildKit's `DockerfileLint` does: the build is
/// planned (every stage when no `--target` is given) and the warnings are
/// kept even when planning fails.
pub fn check(
    file: &SourceFile,
    df: Dockerfile,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> CheckReport {
    let mut opts = opts.clone();
    opts.all_stages = opts.target.is_none();
    let mut cx = match Converter::new(file, &df, &opts, resolver) {
        Ok(cx) => cx,
        Err(e) => {
            return CheckReport {
                warnings: Vec::new(),
                error: Some(e),
            };
        }
    };
    match cx.run(df) {
        Ok(plan) => CheckReport {
            warnings: plan.warnings,
            error: None,
        },
        Err(e) => {
            let mut warnings = std::mem::take(&mut cx.warnings);
            warnings.extend(cx.take_lint_warnings());
            CheckReport {
                warnings,
                error: Some(e),
            }
        }
    }
}

/// Ordered variables with BuildKit's `EnvList` semantics: setting a key moves
/// it to the end. Lookups and updates are O(1) (a stage may set thousands of
/// variables); the order is kept as a sequence number per key.
#[derive(Debug, Clone, Default)]
struct EnvList {
    vars: HashMap<String, (u64, String)>,
    next: u64,
}

impl EnvList {
    fn set(&mut self, k: &str, v: &str) {
        self.next += 1;
        self.vars.insert(k.to_owned(), (self.next, v.to_owned()));
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(|(_, v)| v.as_str())
    }

    /// `KEY=value` in order of last assignment.
    fn to_strings(&self) -> Vec<String> {
        let mut entries: Vec<(&u64, &String, &String)> =
            self.vars.iter().map(|(k, (seq, v))| (seq, k, v)).collect();
        entries.sort_unstable_by_key(|(seq, _, _)| **seq);
        entries
            .into_iter()
            .map(|(_, k, v)| format!("{k}={v}"))
            .collect()
    }
}

impl EnvLookup for EnvList {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

/// Variables overlaid on others (secret env names masked in progress names).
struct Overlay<'a> {
    top: &'a [(String, String)],
    base: &'a dyn EnvLookup,
}

impl EnvLookup for Overlay<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.top.lookup(name).or_else(|| self.base.lookup(name))
    }
}

/// An ARG as `--call outline` reports it.
#[derive(Debug, Clone, Default)]
struct OutlineArgInfo {
    value: String,
    description: String,
    line: usize,
    /// Global ARGs its default refers to (they count as used with it).
    deps: BTreeSet<String>,
}

/// What a stage declares and uses, for `--call outline` (BuildKit's
/// `outlineCapture`).
#[derive(Debug, Clone, Default)]
struct StageOutline {
    /// ARGs the stage declares with a value of its own.
    args: HashMap<String, OutlineArgInfo>,
    /// ARGs the stage uses: in its FROM, or declared in it.
    used: BTreeSet<String>,
    /// Secret and SSH ids → (required, line).
    secrets: BTreeMap<String, (bool, usize)>,
    ssh: BTreeMap<String, (bool, usize)>,
}

#[derive(Debug, Clone)]
enum Base {
    Scratch,
    /// Index of the stage state.
    Stage(usize),
    Image(Reference),
    /// A named build context other than an image (`--build-context`).
    Named(String, NamedContext),
}

#[derive(Debug, Clone)]
struct Cmd {
    command: Command,
    /// State indices this command reads (COPY --from, RUN --mount from=).
    sources: Vec<Option<usize>>,
    onbuild: bool,
}

#[derive(Debug, Clone)]
struct State {
    /// Position among the Dockerfile's stages; `None` for images used only by
    /// `COPY --from`/`RUN --mount from=`.
    stage_index: Option<usize>,
    /// `AS` name (lowercase).
    name: Option<String>,
    /// Name in progress prefixes (`build`, `stage-1`, or empty when the build has
    /// a single state).
    display: String,
    base: Base,
    base_word: Word,
    platform: Option<Platform>,
    node: Option<Node>,
    commands: Vec<Cmd>,
    deps: Vec<(usize, usize)>,
    cmd_total: usize,
    cmd_index: usize,
    resolved: bool,
    onbuild_init: bool,
    dispatched: bool,
    ignore_cache: bool,
    // Dispatch state.
    root: Option<Digest>,
    /// For a local named context: its source vertex, which `COPY --from`
    /// reads in place while `root` is still the copy of it made for `FROM`
    /// (source, copy).
    local: Option<(Digest, Digest)>,
    env: EnvList,
    cwd: String,
    user: String,
    network: Network,
    hostname: String,
    image: ImageConfig,
    build_args: Vec<(String, Option<String>)>,
    cmd_set: bool,
    /// A WORKDIR of this stage or its base stage ran (`WorkdirRelativePath`).
    workdir_set: bool,
    /// Where this stage last set CMD, ENTRYPOINT and HEALTHCHECK (offset, end
    /// line), for `MultipleInstructionsDisallowed`.
    used_once: [Option<(usize, usize)>; 3],
    /// What `--call outline` reports about this stage.
    outline: StageOutline,
    image_digest: Option<String>,
    location: SourceLocation,
    /// Position of each key in `image.env` (built on first use).
    image_env_index: HashMap<String, usize>,
}

struct Converter<'a> {
    file: &'a SourceFile,
    opts: &'a BuildOptions,
    resolver: &'a dyn ImageResolver,
    lex: Lexer,
    global_args: EnvList,
    states: Vec<State>,
    graph: Graph,
    target_platform: Platform,
    implicit_target: bool,
    proxy: ProxyEnv,
    context: Option<Digest>,
    ctx_paths: BTreeSet<String>,
    warnings: Vec<Diagnostic>,
    declared_args: BTreeSet<String>,
    /// RUN mounts without `from=` (see `command_sources`).
    anonymous_states: usize,
    /// Stage names (lowercase) → index in `states`.
    stage_index: HashMap<String, usize>,
    /// Lint warnings found while substituting (`expand` borrows `self`).
    lint_found: RefCell<Vec<Diagnostic>>,
    /// Which lint rules run.
    check: LintConfig,
    /// The global ARGs, for `--call outline`.
    meta_outline: HashMap<String, OutlineArgInfo>,
    /// `--build-context` names some stage, `FROM` or `--from` named.
    used_contexts: BTreeSet<String>,
    /// Settings (env, labels, history, ONBUILD) stages copied from their base
    /// stages so far (see [`MAX_INHERITED_SETTINGS`]).
    inherited_settings: usize,
}

/// A bound on what stages copy from their base stages in all: about 1 GB of
/// configurations. Real Dockerfiles stay below 10,000; a chain of 2,000 stages
/// each FROM the previous one with an ENV each reaches 4 million.
const MAX_INHERITED_SETTINGS: usize = 2_000_000;

type R<T> = Result<T, Diagnostic>;

impl<'a> Converter<'a> {
    fn new(
        file: &'a SourceFile,
        df: &Dockerfile,
        opts: &'a BuildOptions,
        resolver: &'a dyn ImageResolver,
    ) -> R<Converter<'a>> {
        let implicit_target = opts.target_platform.is_none();
        let target_platform = opts
            .target_platform
            .clone()
            .unwrap_or_else(|| opts.build_platform.clone());
        for p in [&target_platform, &opts.build_platform] {
            if p.os != "linux" {
                return Err(Diagnostic::unlocated(
                    file.name(),
                    format!("platform {p} is not supported: kiln builds Linux images only"),
                ));
            }
        }
        let mut proxy = ProxyEnv::default();
        for (k, v) in &opts.build_args {
            match k.to_ascii_lowercase().as_str() {
                "http_proxy" => proxy.http_proxy = v.clone(),
                "https_proxy" => proxy.https_proxy = v.clone(),
                "ftp_proxy" => proxy.ftp_proxy = v.clone(),
                "no_proxy" => proxy.no_proxy = v.clone(),
                "all_proxy" => proxy.all_proxy = v.clone(),
                _ => {}
            }
        }
        let mut cx = Converter {
            file,
            opts,
            resolver,
            lex: Lexer::new(df.ast.escape),
            global_args: EnvList::default(),
            states: Vec::new(),
            graph: Graph::new(),
            target_platform,
            implicit_target,
            proxy,
            context: None,
            ctx_paths: BTreeSet::new(),
            warnings: Vec::new(),
            declared_args: BTreeSet::new(),
            anonymous_states: 0,
            stage_index: HashMap::new(),
            lint_found: RefCell::new(Vec::new()),
            check: LintConfig::default(),
            meta_outline: HashMap::new(),
            used_contexts: BTreeSet::new(),
            inherited_settings: 0,
        };
        cx.warnings.extend(df.ast.warnings.iter().cloned());
        Ok(cx)
    }

    fn err_at(&self, offset: usize, end_line: usize, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.file, offset, msg).with_end_line(end_line)
    }

    fn err_node(&self, node: &Node, msg: impl Into<String>) -> Diagnostic {
        self.err_at(node.offset, node.end_line, msg)
    }

    fn location(&self, node: &Node) -> SourceLocation {
        SourceLocation {
            file: self.file.name().to_owned(),
            start_line: u32::try_from(node.start_line).unwrap_or(u32::MAX),
            end_line: u32::try_from(node.end_line).unwrap_or(u32::MAX),
        }
    }

    fn run(&mut self, df: Dockerfile) -> R<Plan> {
        if df.stages.is_empty() {
            let at = df.ast.nodes.last().map_or(0, |n| n.offset);
            return Err(self.err_at(
                at,
                0,
                "the Dockerfile has no FROM instruction: there is no stage to build",
            ));
        }
        self.check_syntax_directive(&df)?;
        self.check = LintConfig::new(self.file, &df.ast, self.opts)?;
        // Parse-time rules and the parser's own (NoEmptyContinuation).
        let parsed = lint::check_parsed(self.file, &df);
        let lints = self.lint_found.get_mut();
        let (rules, notes): (Vec<Diagnostic>, Vec<Diagnostic>) = std::mem::take(&mut self.warnings)
            .into_iter()
            .partition(|w| w.rule.is_some());
        self.warnings = notes;
        lints.extend(rules);
        lints.extend(parsed);
        for (k, v) in &self.opts.build_args {
            if let Some(note) = builtin_arg_note(k)
                && !note.is_empty()
            {
                self.warnings.push(Diagnostic {
                    severity: crate::Severity::Warning,
                    ..Diagnostic::unlocated(
                        self.file.name(),
                        format!("build-arg {k}={v} has no effect: {note}"),
                    )
                });
            }
        }

        let target_name = match &self.opts.target {
            Some(t) => t.to_lowercase(),
            None => df
                .stages
                .last()
                .and_then(|s| s.name.clone())
                .unwrap_or_default(),
        };
        self.global_args = self.default_args(&target_name);
        self.check_default_base_names(&df);
        self.eval_meta_args(&df.meta_args)?;
        self.create_states(&df)?;
        let target = self.resolve_target(&df)?;
        self.build_dependencies()?;
        self.check_cycles()?;
        // Progress names drop the stage name when the build has one state
        // (counting what BuildKit counts: mounts without `from=` too).
        if self.states.len() + self.anonymous_states == 1 {
            self.states[0].display.clear();
        }
        let reachable = self.resolve_stages(target)?;
        self.dispatch_all(&reachable)?;
        let lints = self.take_lint_warnings();
        self.warnings.splice(0..0, lints);
        if self.check.file.error {
            let mut rules: Vec<&str> = self.warnings.iter().filter_map(|w| w.rule).collect();
            rules.sort_unstable();
            rules.dedup();
            if let Some(first) = self.warnings.iter().find(|w| w.rule.is_some()) {
                let mut e = first.clone();
                e.severity = crate::Severity::Error;
                e.rule = None;
                e.message = format!(
                    "lint violation found for rules: {} (# check=error=true): {}",
                    rules.join(", "),
                    first.message
                );
                return Err(e);
            }
        }
        self.finish(target, &reachable)
    }

    /// Records a lint warning (the configuration is applied when they are
    /// taken).
    fn lint(&self, w: Diagnostic) {
        self.lint_found.borrow_mut().push(w);
    }

    /// The lint warnings found so far that the configuration does not skip,
    /// in Dockerfile order (stable: same-line warnings keep the order they
    /// were found in).
    fn take_lint_warnings(&mut self) -> Vec<Diagnostic> {
        let mut out = std::mem::take(self.lint_found.get_mut());
        out.retain(|w| self.check.keeps(w));
        out.sort_by_key(|w| w.line().unwrap_or(0));
        out
    }

    /// `UndefinedVar`: the variables substitution in state `i` did not find,
    /// other than ARGs the stage declared without a value.
    fn report_undefined(&self, i: usize, offset: usize, end: usize, unmatched: &BTreeSet<String>) {
        let st = &self.states[i];
        let mut keys: Vec<(&u64, &str)> = st
            .env
            .vars
            .iter()
            .map(|(k, (seq, _))| (seq, k.as_str()))
            .collect();
        keys.sort_unstable();
        for name in unmatched {
            if st.build_args.iter().any(|(k, _)| k == name)
                || name == "BUILDKIT_SBOM_SCAN_CONTEXT"
                || name == "BUILDKIT_SBOM_SCAN_STAGE"
            {
                continue;
            }
            let hint = lint::suggest(name, keys.iter().map(|(_, k)| *k));
            self.lint(Rule::UndefinedVar.mark(self.err_at(
                offset,
                end,
                lint::undefined_var_message(name, hint),
            )));
        }
    }

    /// `UndefinedArgInFrom`: variables in a FROM that no global ARG declares.
    fn report_undefined_from_args(&self, node: &Node, unmatched: &BTreeSet<String>) {
        let mut keys: Vec<&str> = self
            .declared_args
            .iter()
            .map(String::as_str)
            .chain(self.global_args.vars.keys().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        for name in unmatched {
            if keys.contains(&name.as_str()) {
                continue;
            }
            let hint = lint::suggest(name, keys.iter().copied());
            self.lint(Rule::UndefinedArgInFrom.at_node(
                self.file,
                node,
                lint::undefined_arg_in_from_message(name, hint),
            ));
        }
    }

    /// The rules about `FROM --platform`: undeclared ARGs, a redundant
    /// `$TARGETPLATFORM`, a constant platform in a stage whose name does not
    /// mention it (BuildKit's `reportRedundantTargetPlatform`,
    /// `reportConstPlatformDisallowed`).
    fn lint_from_platform(&self, stage: &crate::instructions::Stage, p: &crate::shell::Processed) {
        let node = &stage.node;
        let Some(word) = &stage.platform else {
            return;
        };
        self.report_undefined_from_args(node, &p.unmatched);
        if p.unmatched.is_empty()
            && p.matched.len() == 1
            && p.matched.contains("TARGETPLATFORM")
            && self.global_args.get("TARGETPLATFORM") == Some(p.result.as_str())
        {
            self.lint(Rule::RedundantTargetPlatform.at_node(
                self.file,
                node,
                format!(
                    "Setting platform to predefined {} in FROM is redundant as this is the default behavior",
                    word.value
                ),
            ));
        }
        if p.matched.is_empty() && p.unmatched.is_empty() {
            let Ok(platform) = p.result.parse::<Platform>() else {
                return;
            };
            let name = stage.name.as_deref().unwrap_or("");
            if !name.contains(&platform.os) && !name.contains(&platform.architecture) {
                self.lint(Rule::FromPlatformFlagConstDisallowed.at_node(
                    self.file,
                    node,
                    format!(
                        "FROM --platform flag should not use constant value {}",
                        go_quote(&p.result)
                    ),
                ));
            }
        }
    }

    /// `InvalidDefaultArgInFrom`: base names that are not valid references
    /// when every global ARG has its default value (BuildKit's
    /// `validateBaseImagesWithDefaultArgs`; substitution errors are left to
    /// the conversion).
    fn check_default_base_names(&self, df: &Dockerfile) {
        let mut env = self.global_args.clone();
        for cmd in &df.meta_args {
            let Instruction::Arg(defs) = &cmd.instruction else {
                continue;
            };
            for def in defs {
                if let Some(d) = &def.default {
                    let Ok(p) = self.lex.process_word(&d.value, &env) else {
                        return;
                    };
                    env.set(&def.key.value, &p.result);
                }
            }
        }
        for stage in &df.stages {
            let Ok(p) = self.lex.process_word(&stage.base.value, &env) else {
                return;
            };
            if Reference::parse_normalized(&p.result).is_err() {
                self.lint(Rule::InvalidDefaultArgInFrom.at_node(
                    self.file,
                    &stage.node,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        stage.base.value
                    ),
                ));
            }
        }
    }

    /// `# syntax=` names the frontend to use. kiln has one built in; it accepts
    /// the official Dockerfile frontends and refuses others rather than build
    /// with different semantics.
    fn check_syntax_directive(&self, df: &Dockerfile) -> R<()> {
        let Some(d) = &df.ast.directives.syntax else {
            return Ok(());
        };
        let image = d.value.split_whitespace().next().unwrap_or("");
        let repo = Reference::parse_normalized(image)
            .map(|r| r.name())
            .unwrap_or_default();
        let official = matches!(
            repo.as_str(),
            "docker.io/docker/dockerfile" | "docker.io/docker/dockerfile-upstream"
        );
        let tag = image.rsplit_once(':').map_or("", |(_, t)| t);
        if !official || tag.contains("labs") {
            let at = self.file.line_start(d.line);
            return Err(self.err_at(
                at,
                d.line,
                format!(
                    "unsupported syntax directive {}: kiln builds with its own implementation of the stable docker/dockerfile:1 syntax and cannot run other frontends",
                    go_quote(&d.value)
                ),
            ));
        }
        Ok(())
    }

    /// BuildKit's automatic platform args plus `TARGETSTAGE`.
    fn default_args(&self, target: &str) -> EnvList {
        let bp = &self.opts.build_platform;
        let tp = &self.target_platform;
        let target = if target.is_empty() { "default" } else { target };
        let mut env = EnvList::default();
        let pairs = [
            ("BUILDPLATFORM", bp.format()),
            ("BUILDOS", bp.os.clone()),
            ("BUILDOSVERSION", bp.os_version.clone()),
            ("BUILDARCH", bp.architecture.clone()),
            ("BUILDVARIANT", bp.variant.clone()),
            ("TARGETPLATFORM", tp.format_all()),
            ("TARGETOS", tp.os.clone()),
            ("TARGETOSVERSION", tp.os_version.clone()),
            ("TARGETARCH", tp.architecture.clone()),
            ("TARGETVARIANT", tp.variant.clone()),
            ("TARGETSTAGE", target.to_owned()),
        ];
        for (k, v) in pairs {
            let v = self.opts.build_args.get(k).cloned().unwrap_or(v);
            env.set(k, &v);
        }
        env
    }

    fn eval_meta_args(&mut self, meta: &[Command]) -> R<()> {
        for cmd in meta {
            let Instruction::Arg(defs) = &cmd.instruction else {
                continue;
            };
            for def in defs {
                self.declared_args.insert(def.key.value.clone());
                let key = &def.key.value;
                let mut deps = BTreeSet::new();
                let value = match self.opts.build_args.get(key) {
                    Some(v) => Some(v.clone()),
                    None => match &def.default {
                        Some(d) => {
                            let p = self.lex.process_word(&d.value, &self.global_args).map_err(
                                |e| self.err_at(d.offset, cmd.node.end_line, e.to_string()),
                            )?;
                            deps = p.matched;
                            if deps.remove(key)
                                && let Some(old) = self.meta_outline.get(key)
                            {
                                deps.extend(old.deps.iter().cloned());
                            }
                            Some(p.result)
                        }
                        None => None,
                    },
                };
                self.meta_outline.insert(
                    key.clone(),
                    OutlineArgInfo {
                        value: value.clone().unwrap_or_default(),
                        description: crate::outline::doc_comment(&cmd.node.comments, key),
                        line: cmd.node.start_line,
                        deps,
                    },
                );
                if let Some(v) = value {
                    self.global_args.set(key, &v);
                }
            }
        }
        Ok(())
    }

    fn new_state(&self, stage_index: Option<usize>, base: Base, base_word: Word) -> State {
        State {
            stage_index,
            name: None,
            display: String::new(),
            base,
            base_word,
            platform: None,
            node: None,
            commands: Vec::new(),
            deps: Vec::new(),
            cmd_total: 0,
            cmd_index: 0,
            resolved: false,
            onbuild_init: false,
            dispatched: false,
            ignore_cache: false,
            root: None,
            local: None,
            env: EnvList::default(),
            cwd: "/".to_owned(),
            user: String::new(),
            network: self.opts.network,
            hostname: self
                .opts
                .build_args
                .get("BUILDKIT_SANDBOX_HOSTNAME")
                .cloned()
                .unwrap_or_default(),
            image: ImageConfig::default(),
            build_args: Vec::new(),
            cmd_set: false,
            workdir_set: false,
            used_once: [None; 3],
            outline: StageOutline::default(),
            image_digest: None,
            image_env_index: HashMap::new(),
            location: SourceLocation {
                file: self.file.name().to_owned(),
                start_line: 0,
                end_line: 0,
            },
        }
    }

    fn find_stage(&self, name: &str) -> Option<usize> {
        self.stage_index.get(&name.to_lowercase()).copied()
    }

    fn stage_names(&self) -> Vec<String> {
        self.states.iter().filter_map(|s| s.name.clone()).collect()
    }

    fn create_states(&mut self, df: &Dockerfile) -> R<()> {
        for (i, stage) in df.stages.iter().enumerate() {
            let node = &stage.node;
            let expanded = self
                .lex
                .process_word(&stage.base.value, &self.global_args)
                .map_err(|e| self.err_at(stage.base.offset, node.end_line, e.to_string()))?;
            self.report_undefined_from_args(node, &expanded.unmatched);
            if expanded.result.is_empty() {
                return Err(self.err_at(
                    stage.base.offset,
                    node.end_line,
                    format!("base name ({}) should not be blank", stage.base.value),
                ));
            }
            let base_name = expanded.result;
            let base = if let Some(j) = self.find_stage(&base_name) {
                Base::Stage(j)
            } else if base_name == "scratch" {
                Base::Scratch
            } else {
                let r = Reference::parse_normalized(&base_name).map_err(|e| {
                    self.err_at(
                        stage.base.offset,
                        node.end_line,
                        format!("failed to parse stage name {}: {e}", go_quote(&base_name)),
                    )
                })?;
                Base::Image(r.with_default_tag())
            };
            let mut st = self.new_state(Some(i), base, stage.base.clone());
            st.outline.used.extend(expanded.matched.iter().cloned());
            if let Some(pw) = &stage.platform {
                let processed = self
                    .lex
                    .process_word(&pw.value, &self.global_args)
                    .map_err(|e| {
                        self.err_at(
                            pw.offset,
                            node.end_line,
                            format!("failed to process arguments for platform: {e}"),
                        )
                    })?;
                self.lint_from_platform(stage, &processed);
                st.outline.used.extend(processed.matched.iter().cloned());
                let p = processed.result;
                if p.is_empty() {
                    return Err(self.err_at(
                        pw.offset,
                        node.end_line,
                        format!("empty platform value from expression {}", pw.value),
                    ));
                }
                let platform: Platform = p.parse().map_err(|e| {
                    self.err_at(
                        pw.offset,
                        node.end_line,
                        format!("failed to parse platform {}: {e}", pw.value),
                    )
                })?;
                if platform.os != "linux" {
                    return Err(self.err_at(
                        pw.offset,
                        node.end_line,
                        format!(
                            "platform {platform} is not supported: kiln builds Linux images only"
                        ),
                    ));
                }
                st.platform = Some(platform);
            }
            let ctx_platform = st
                .platform
                .clone()
                .unwrap_or_else(|| self.target_platform.clone());
            // `--build-context NAME=…` replaces the stage named NAME (with
            // its commands), or else the image the stage starts from.
            let replaced = match &stage.name {
                Some(n) => self.named_base(n, &ctx_platform, stage.base.offset, node.end_line)?,
                None => None,
            };
            if replaced.is_none()
                && matches!(st.base, Base::Image(_))
                && let Some(b) =
                    self.named_base(&base_name, &ctx_platform, stage.base.offset, node.end_line)?
            {
                st.base = b;
            }
            if let Some(name) = &stage.name
                && let Some(prev) = self.find_stage(name)
            {
                let prev_line = self.states[prev].node.as_ref().map_or(0, |n| n.start_line);
                return Err(self.err_node(
                    node,
                    format!(
                        "duplicate stage name {}: already defined at {}:{prev_line}",
                        go_quote(name),
                        self.file.name()
                    ),
                ));
            }
            st.name = stage.name.clone();
            if let Some(n) = &stage.name {
                self.stage_index.insert(n.clone(), self.states.len());
            }
            st.display = stage.name.clone().unwrap_or_else(|| format!("stage-{i}"));
            st.location = self.location(node);
            st.ignore_cache = self.opts.no_cache
                || stage.name.as_ref().is_some_and(|n| {
                    self.opts
                        .no_cache_filter
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(n))
                });
            let mut total = usize::from(matches!(st.base, Base::Image(_)));
            for cmd in &stage.commands {
                if matches!(
                    cmd.instruction,
                    Instruction::Add(_)
                        | Instruction::Copy(_)
                        | Instruction::Run(_)
                        | Instruction::Workdir(_)
                ) {
                    total += 1;
                }
            }
            st.cmd_total = total;
            st.commands = stage
                .commands
                .iter()
                .map(|c| Cmd {
                    command: c.clone(),
                    sources: Vec::new(),
                    onbuild: false,
                })
                .collect();
            if let Some(b) = replaced {
                // BuildKit dispatches nothing of a replaced stage, not even
                // the ONBUILD triggers of an image replacing it.
                st.base = b;
                st.commands.clear();
                st.cmd_total = 0;
                st.onbuild_init = true;
            }
            st.node = Some(node.clone());
            self.states.push(st);
        }
        for f in &self.opts.no_cache_filter {
            if self.find_stage(f).is_none() {
                return Err(Diagnostic::unlocated(
                    self.file.name(),
                    format!("--no-cache-filter: no stage named {}", go_quote(f)),
                ));
            }
        }
        Ok(())
    }

    fn resolve_target(&self, df: &Dockerfile) -> R<usize> {
        let Some(t) = &self.opts.target else {
            return Ok(df.stages.len() - 1);
        };
        if let Some(i) = self.find_stage(t) {
            return Ok(i);
        }
        let names = self.stage_names();
        let mut msg = format!("target stage {} could not be found", go_quote(t));
        if let Some(s) = did_you_mean(t, names.iter().map(String::as_str)) {
            msg.push_str(&format!(" (did you mean {s}?)"));
        }
        let listed: Vec<String> = self
            .states
            .iter()
            .filter_map(|s| {
                s.name
                    .as_ref()
                    .map(|n| format!("{n} ({}:{})", self.file.name(), s.location.start_line))
            })
            .collect();
        if listed.is_empty() {
            msg.push_str("; the Dockerfile has no named stages");
        } else {
            msg.push_str(&format!("; stages: {}", listed.join(", ")));
        }
        Err(Diagnostic::unlocated(self.file.name(), msg))
    }

    /// The state a `--from`/`from=` value names: a stage, a stage index, or an
    /// image (a new image-only state).
    fn source_state(&mut self, from: &Word, end_line: usize, allow_index: bool) -> R<usize> {
        let value = from.value.as_str();
        if allow_index && let Ok(index) = value.parse::<i64>() {
            let stages = self
                .states
                .iter()
                .filter(|s| s.stage_index.is_some())
                .count();
            return usize::try_from(index)
                .ok()
                .filter(|i| *i < stages)
                .ok_or_else(|| {
                    self.err_at(
                        from.offset,
                        end_line,
                        format!("invalid stage index {index}: the Dockerfile has {stages} stages"),
                    )
                });
        }
        if let Some(i) = self.find_stage(value) {
            return Ok(i);
        }
        let base = if value == "scratch" {
            Base::Scratch
        } else if let Some(b) =
            self.named_base(value, &self.target_platform.clone(), from.offset, end_line)?
        {
            b
        } else {
            let r = Reference::parse_normalized(value).map_err(|e| {
                self.err_at(
                    from.offset,
                    end_line,
                    format!(
                        "{} is neither a stage nor a valid image reference: {e}",
                        go_quote(value)
                    ),
                )
            })?;
            Base::Image(r.with_default_tag())
        };
        let mut st = self.new_state(None, base, from.clone());
        st.location = SourceLocation {
            file: self.file.name().to_owned(),
            start_line: u32::try_from(self.file.position(from.offset).line).unwrap_or(0),
            end_line: u32::try_from(end_line).unwrap_or(0),
        };
        self.states.push(st);
        Ok(self.states.len() - 1)
    }

    /// The states a command reads, as BuildKit's `toCommand`/`detectRunMount`.
    fn command_sources(&mut self, cmd: &Command) -> R<Vec<Option<usize>>> {
        let end = cmd.node.end_line;
        match &cmd.instruction {
            Instruction::Copy(c) => {
                let Some(from) = &c.from else {
                    return Ok(Vec::new());
                };
                let expanded = self
                    .lex
                    .process_word(&from.value, &NoEnv)
                    .map_err(|e| self.err_at(from.offset, end, e.to_string()))?;
                if expanded.result != from.value {
                    return Err(self.err_at(
                        from.offset,
                        end,
                        "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
                    ));
                }
                Ok(vec![Some(self.source_state(from, end, true)?)])
            }
            Instruction::Run(r) => {
                let mut out = Vec::new();
                for m in &r.mounts {
                    let fields = mount::csv_fields(&m.value).map_err(|e| {
                        self.err_at(m.offset, end, format!("failed to parse csv mounts: {e}"))
                    })?;
                    let from = fields.iter().rev().find_map(|f| {
                        f.split_once('=')
                            .filter(|(k, _)| k.eq_ignore_ascii_case("from"))
                            .map(|(_, v)| v.to_owned())
                    });
                    match from {
                        Some(v) if !v.is_empty() => {
                            let w = Word {
                                value: v,
                                offset: m.offset,
                            };
                            out.push(Some(self.source_state(&w, end, false)?));
                        }
                        _ => {
                            // BuildKit registers an anonymous `scratch` state for
                            // such a mount; it only shows in progress names.
                            self.anonymous_states += 1;
                            out.push(None);
                        }
                    }
                }
                Ok(out)
            }
            _ => Ok(Vec::new()),
        }
    }

    fn build_dependencies(&mut self) -> R<()> {
        let n = self.states.len();
        for i in 0..n {
            let cmds = std::mem::take(&mut self.states[i].commands);
            let mut out = Vec::with_capacity(cmds.len());
            for mut c in cmds {
                c.sources = self.command_sources(&c.command)?;
                for s in c.sources.iter().flatten() {
                    self.states[i].deps.push((*s, c.command.node.offset));
                }
                out.push(c);
            }
            self.states[i].commands = out;
        }
        Ok(())
    }

    fn check_cycles(&self) -> R<()> {
        // Depth-first search over `deps`, as BuildKit's validateCircularDependency
        // (iterative: a chain of thousands of stages must not exhaust the stack).
        let n = self.states.len();
        let mut visited = vec![false; n];
        let mut on_path = vec![false; n];
        let visit =
            |root: usize, visited: &mut [bool], on_path: &mut [bool]| -> Option<Vec<usize>> {
                if visited[root] {
                    return None;
                }
                visited[root] = true;
                on_path[root] = true;
                // (state, index of the next dependency to look at)
                let mut stack = vec![(root, 0usize)];
                let mut trail: Vec<usize> = Vec::new();
                while let Some(&mut (st, ref mut next)) = stack.last_mut() {
                    let Some(&(dep, offset)) = self.states[st].deps.get(*next) else {
                        on_path[st] = false;
                        stack.pop();
                        trail.pop();
                        continue;
                    };
                    *next += 1;
                    if on_path[dep] {
                        trail.push(offset);
                        return Some(trail);
                    }
                    if !visited[dep] {
                        visited[dep] = true;
                        on_path[dep] = true;
                        trail.push(offset);
                        stack.push((dep, 0));
                    }
                }
                None
            };
        for s in 0..n {
            if let Some(trail) = visit(s, &mut visited, &mut on_path) {
                let at = trail.first().copied().unwrap_or(0);
                let lines: Vec<String> = trail
                    .iter()
                    .map(|o| format!("{}:{}", self.file.name(), self.file.position(*o).line))
                    .collect();
                return Err(self.err_at(
                    at,
                    0,
                    format!(
                        "circular dependency detected on stage: {} (through {})",
                        self.states[s].display_name(),
                        lines.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn reachable_from(&self, target: usize) -> Vec<bool> {
        if self.opts.all_stages {
            return vec![true; self.states.len()];
        }
        let mut seen = vec![false; self.states.len()];
        let mut stack = vec![target];
        while let Some(s) = stack.pop() {
            if std::mem::replace(&mut seen[s], true) {
                continue;
            }
            if let Base::Stage(b) = self.states[s].base {
                stack.push(b);
            }
            stack.extend(self.states[s].deps.iter().map(|(d, _)| *d));
        }
        seen
    }

    /// Resolves the base images of the reachable states and runs their ONBUILD
    /// triggers (which may add dependencies), until nothing changes.
    fn resolve_stages(&mut self, target: usize) -> R<Vec<bool>> {
        loop {
            let reachable = self.reachable_from(target);
            for (i, _) in reachable.iter().enumerate().filter(|(_, r)| **r) {
                if !self.states[i].resolved {
                    self.resolve_base(i)?;
                }
            }
            let mut new_deps = false;
            for (i, _) in reachable.iter().enumerate().filter(|(_, r)| **r) {
                if !self.states[i].onbuild_init {
                    new_deps |= self.init_onbuild(i)?;
                }
            }
            if !new_deps {
                return Ok(reachable);
            }
        }
    }

    fn platform_of(&self, i: usize) -> Platform {
        self.states[i]
            .platform
            .clone()
            .unwrap_or_else(|| self.target_platform.clone())
    }

    /// The base a `--build-context` named `name` gives, if any.
    fn named_base(
        &mut self,
        name: &str,
        platform: &Platform,
        offset: usize,
        end_line: usize,
    ) -> R<Option<Base>> {
        if self.opts.named_contexts.is_empty() {
            return Ok(None);
        }
        let Some(key) = contexts::context_key(name) else {
            return Ok(None);
        };
        let Some((matched, nc)) = contexts::lookup(&self.opts.named_contexts, &key, platform)
        else {
            return Ok(None);
        };
        self.used_contexts.insert(matched.to_owned());
        Ok(Some(match nc {
            NamedContext::Scratch => Base::Scratch,
            NamedContext::Image { reference } => {
                let r = Reference::parse_normalized(reference).map_err(|e| {
                    self.err_at(
                        offset,
                        end_line,
                        format!("--build-context {key}: invalid image reference {reference}: {e}"),
                    )
                })?;
                Base::Image(r.with_default_tag())
            }
            other => Base::Named(key, other.clone()),
        }))
    }

    /// The source vertices of a named context that is not an image.
    fn resolve_named(
        &mut self,
        i: usize,
        key: &str,
        nc: &NamedContext,
        platform: &Platform,
    ) -> R<()> {
        let ignore_cache = self.opts.no_cache || self.states[i].ignore_cache;
        let meta = |name: String| VertexMeta {
            name: format!("[context {key}] {name}"),
            ignore_cache,
            ..VertexMeta::default()
        };
        let root = match nc {
            NamedContext::Local { source } => {
                let local = self.add(
                    Op::Source(SourceOp::Local {
                        name: source.clone(),
                    }),
                    Vec::new(),
                    meta("load from client".to_owned()),
                )?;
                // `FROM` a directory: its files as the stage's filesystem.
                let op = Op::File(FileOp {
                    base: None,
                    actions: vec![FileAction::Copy(CopyAction {
                        from: Some(0),
                        src: "/".to_owned(),
                        dest: "/".to_owned(),
                        chown: None,
                        mode: None,
                        follow_symlinks: true,
                        contents_only: true,
                        include: Vec::new(),
                        exclude: Vec::new(),
                        required: Vec::new(),
                        unpack: false,
                        create_dest_path: true,
                        allow_wildcard: false,
                        allow_empty_wildcard: false,
                    })],
                });
                let copy = self.add(op, vec![local], meta("snapshot".to_owned()))?;
                self.states[i].local = Some((local, copy));
                Some(copy)
            }
            NamedContext::Git {
                remote,
                git_ref,
                subdir,
                keep_git_dir,
            } => {
                let op = Op::Source(SourceOp::Git {
                    remote: remote.clone(),
                    git_ref: git_ref.clone(),
                    subdir: subdir.clone(),
                    keep_git_dir: *keep_git_dir,
                    checksum: String::new(),
                    skip_submodules: false,
                });
                let mut shown = remote.clone();
                if !git_ref.is_empty() {
                    shown.push('#');
                    shown.push_str(git_ref);
                }
                Some(self.add(op, Vec::new(), meta(shown))?)
            }
            NamedContext::Http { url } => {
                let op = Op::Source(SourceOp::Http {
                    url: url.clone(),
                    filename: "context".to_owned(),
                    checksum: String::new(),
                });
                Some(self.add(op, Vec::new(), meta(url.clone()))?)
            }
            NamedContext::Resolved { reference, image } => {
                let mut config = image.config.clone();
                if config.platform.is_none() {
                    config.platform = Some(platform.clone());
                }
                self.states[i].image = config;
                self.states[i].image_digest = image.digest.clone();
                if image.has_layers {
                    let op = Op::Source(SourceOp::Image {
                        reference: reference.clone(),
                        digest: image.digest.clone(),
                        platform: platform.clone(),
                    });
                    Some(self.add(op, Vec::new(), meta(reference.clone()))?)
                } else {
                    None
                }
            }
            NamedContext::Image { .. } | NamedContext::Scratch => None,
        };
        let st = &mut self.states[i];
        if !matches!(nc, NamedContext::Resolved { .. }) {
            st.image = empty_image(platform);
        }
        st.platform = Some(platform.clone());
        st.root = root;
        if st.stage_index.is_none() {
            st.dispatched = true;
        }
        Ok(())
    }

    fn resolve_base(&mut self, i: usize) -> R<()> {
        self.states[i].resolved = true;
        let platform = self.platform_of(i);
        match self.states[i].base.clone() {
            Base::Stage(_) => {}
            Base::Named(key, nc) => self.resolve_named(i, &key, &nc, &platform)?,
            Base::Scratch => {
                let st = &mut self.states[i];
                st.image = empty_image(&platform);
                st.platform = Some(platform);
                if st.stage_index.is_none() {
                    st.dispatched = true;
                }
            }
            Base::Image(reference) => {
                let name = reference.to_string();
                let word = self.states[i].base_word.clone();
                let end = self.states[i].node.as_ref().map_or(0, |n| n.end_line);
                let resolution = self
                    .resolver
                    .resolve(&name, &platform)
                    .map_err(|e| self.err_at(word.offset, end, format!("{}: {e}", word.value)))?;
                let (image, digest, scratch) = match resolution {
                    Resolution::Resolved(r) => (r.config, r.digest, !r.has_layers),
                    Resolution::Unresolved => (empty_image_unresolved(&platform), None, false),
                };
                let mut image = image;
                let mut platform = platform;
                if self.states[i].platform.is_none() && self.implicit_target {
                    // BuildKit's autoDetectPlatform: an image for another
                    // architecture keeps its own platform.
                    if let Some(p) = &image.platform
                        && (p.os != platform.os || p.architecture != platform.architecture)
                        && (p.os == self.opts.build_platform.os
                            && p.architecture == self.opts.build_platform.architecture)
                    {
                        platform = p.clone();
                    }
                }
                if let (Some(p), Some(node)) = (&image.platform, &self.states[i].node)
                    && (p.os != platform.os || p.architecture != platform.architecture)
                {
                    let orig = self
                        .lex
                        .process_word(&word.value, &self.global_args)
                        .map_or_else(|_| word.value.clone(), |w| w.result);
                    self.lint(Rule::InvalidBaseImagePlatform.at_node(
                        self.file,
                        node,
                        format!(
                            "Base image {orig} was pulled with platform {}, expected {} for current build",
                            go_quote(&p.format_all()),
                            go_quote(&platform.format_all())
                        ),
                    ));
                }
                if image.platform.is_none() {
                    image.platform = Some(platform.clone());
                }
                let st = &mut self.states[i];
                st.image = image;
                st.image_digest = digest.clone();
                st.platform = Some(platform.clone());
                if !scratch {
                    let shown = match &digest {
                        Some(d) => format!("{name}@{d}"),
                        None => name.clone(),
                    };
                    let title = self.prefix(i, &format!("FROM {shown}"), false);
                    let meta = self.meta(i, title, self.states[i].node.clone());
                    let op = Op::Source(SourceOp::Image {
                        reference: name,
                        digest,
                        platform,
                    });
                    let d = self.add(op, Vec::new(), meta)?;
                    self.states[i].root = Some(d);
                }
                if self.states[i].stage_index.is_none() {
                    self.states[i].dispatched = true;
                }
            }
        }
        Ok(())
    }

    /// Parses ONBUILD triggers of state `i`'s base and prepends them to its
    /// commands. Returns whether they added dependencies.
    fn init_onbuild(&mut self, i: usize) -> R<bool> {
        self.states[i].onbuild_init = true;
        if self.states[i].stage_index.is_none() {
            return Ok(false);
        }
        let triggers: Vec<String> = match self.states[i].base {
            Base::Stage(b) => self.states[b]
                .commands
                .iter()
                .filter(|c| !c.onbuild)
                .filter_map(|c| match &c.command.instruction {
                    Instruction::Onbuild(expr) => Some(expr.clone()),
                    _ => None,
                })
                .collect(),
            Base::Image(_) => std::mem::take(&mut self.states[i].image.on_build),
            Base::Scratch | Base::Named(..) => Vec::new(),
        };
        if triggers.is_empty() {
            return Ok(false);
        }
        let node = self.states[i].node.clone();
        let (at, end) = node.as_ref().map_or((0, 0), |n| (n.offset, n.end_line));
        let mut cmds = Vec::new();
        let mut new_deps = false;
        for trigger in triggers {
            let fail = |e: String| {
                self.err_at(
                    at,
                    end,
                    format!("ONBUILD trigger {}: {e}", go_quote(&trigger)),
                )
            };
            let tf = SourceFile::new(self.file.name(), trigger.clone());
            let ast = syntax::parse(&tf).map_err(|d| fail(d.message))?;
            if ast.nodes.len() != 1 {
                return Err(fail("onbuild trigger should be a single expression".into()));
            }
            let mut tnode = ast.nodes[0].clone();
            let instruction = instructions::parse_instruction(&tnode).map_err(|(_, m)| fail(m))?;
            // Triggers are located at the FROM line of the stage that runs them.
            if let Some(n) = &node {
                relocate(&mut tnode, n);
            }
            let command = Command {
                instruction,
                node: tnode,
            };
            let sources = self.command_sources(&command)?;
            for s in sources.iter().flatten() {
                self.states[i].deps.push((*s, at));
                new_deps = true;
            }
            // BuildKit counts every trigger as a step, not only those that
            // make a vertex.
            self.states[i].cmd_total += 1;
            cmds.push(Cmd {
                command,
                sources,
                onbuild: true,
            });
        }
        let rest = std::mem::take(&mut self.states[i].commands);
        cmds.extend(rest);
        self.states[i].commands = cmds;
        if new_deps {
            self.check_cycles()?;
        }
        Ok(new_deps)
    }

    /// BuildKit's `prefixCommand`: `[stage 2/5] ` before a vertex name.
    fn prefix(&mut self, i: usize, text: &str, onbuild: bool) -> String {
        let platform = self.multi_platform_prefix(i);
        let st = &mut self.states[i];
        if st.cmd_total == 0 {
            return text.to_owned();
        }
        st.cmd_index += 1;
        let width = st.cmd_total.to_string().len();
        let mut out = String::from("[");
        out.push_str(&platform);
        if !st.display.is_empty() {
            out.push_str(&st.display);
            out.push(' ');
        }
        out.push_str(&format!("{:>width$}/{}] ", st.cmd_index, st.cmd_total));
        if onbuild {
            out.push_str("ONBUILD ");
        }
        out.push_str(text);
        out
    }

    /// `linux/arm64 ` in step names of a multi-platform build, else nothing.
    fn multi_platform_prefix(&self, i: usize) -> String {
        if self.opts.multi_platform {
            format!("{} ", self.platform_of(i).format())
        } else {
            String::new()
        }
    }

    fn meta(&self, i: usize, name: String, node: Option<Node>) -> VertexMeta {
        let st = &self.states[i];
        VertexMeta {
            name,
            stage: st.stage_index.map(|_| st.display_name()),
            location: node.as_ref().map(|n| self.location(n)),
            ignore_cache: st.ignore_cache,
        }
    }

    fn add(&mut self, op: Op, inputs: Vec<Digest>, meta: VertexMeta) -> R<Digest> {
        self.graph.add(op, inputs, meta).map_err(|e| {
            Diagnostic::unlocated(
                self.file.name(),
                format!("internal error building the graph: {e}"),
            )
        })
    }

    fn context_source(&mut self) -> R<Digest> {
        if let Some(d) = self.context {
            return Ok(d);
        }
        let meta = VertexMeta {
            name: "[internal] load build context".to_owned(),
            ..VertexMeta::default()
        };
        let d = self.add(
            Op::Source(SourceOp::Local {
                name: CONTEXT.to_owned(),
            }),
            Vec::new(),
            meta,
        )?;
        self.context = Some(d);
        Ok(d)
    }

    fn dispatch_all(&mut self, reachable: &[bool]) -> R<()> {
        for (i, _) in reachable.iter().enumerate().filter(|(_, r)| **r) {
            if self.states[i].dispatched {
                continue;
            }
            self.init_state(i)?;
            self.states[i].dispatched = true;
            let cmds = self.states[i].commands.clone();
            for cmd in &cmds {
                self.dispatch(i, cmd)?;
            }
        }
        Ok(())
    }

    /// The start of a stage: the base's filesystem, config and environment.
    fn init_state(&mut self, i: usize) -> R<()> {
        if let Base::Stage(b) = self.states[i].base {
            // Every stage keeps its own configuration (the plan shows each), so
            // a chain of stages each FROM the previous one holds settings
            // quadratic in its length: 10,000 chained stages would take tens of
            // GB. A bound turns that into an error.
            let inherited = {
                let img = &self.states[b].image;
                img.env.len() + img.history.len() + img.labels.len() + img.on_build.len()
            };
            self.inherited_settings += inherited;
            if self.inherited_settings > MAX_INHERITED_SETTINGS {
                let (offset, end) = self.states[i]
                    .node
                    .as_ref()
                    .map_or((0, 0), |n| (n.offset, n.end_line));
                return Err(self.err_at(
                    offset,
                    end,
                    format!(
                        "too many inherited stage settings: the stages up to this one copy \
                         {} environment variables, labels and history entries from their base \
                         stages in all (kiln's limit is {MAX_INHERITED_SETTINGS}; a long chain \
                         of stages each FROM the previous one copies everything before it into \
                         every stage)",
                        self.inherited_settings
                    ),
                ));
            }
            // The state continues from the base stage (BuildKit's `init`).
            let base = self.states[b].clone();
            let st = &mut self.states[i];
            st.root = base.root;
            st.platform = base.platform.clone();
            st.image = base.image.clone();
            st.image.on_build.clear();
            st.env = base.env.clone();
            st.cwd = base.cwd.clone();
            st.user = base.user.clone();
            st.build_args.extend(base.build_args.iter().cloned());
            st.workdir_set = base.workdir_set;
            st.image_digest = base.image_digest.clone();
        }
        let platform = self.platform_of(i);
        let st = &mut self.states[i];
        if st.platform.is_none() {
            st.platform = Some(platform);
        }
        if st.image.env_get("PATH").is_none() {
            st.image.env.push(format!("PATH={DEFAULT_PATH}"));
        }
        // The image's variables are (re)applied on top of what the state has,
        // which moves them after any ARG a base stage declared.
        for kv in st.image.env.clone() {
            let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
            st.env.set(k, v);
        }
        if !st.image.working_dir.is_empty() {
            let wd = paths::normalize(&st.image.working_dir, &st.image.working_dir, false);
            st.image.working_dir = wd.clone();
            st.cwd = wd;
        }
        if !st.image.user.is_empty() {
            st.user = st.image.user.clone();
        }
        Ok(())
    }

    /// Substitution in one word with the stage's current variables.
    fn expand(&self, i: usize, w: &Word, end_line: usize) -> R<String> {
        let p = self
            .lex
            .process_word(&w.value, &self.states[i].env)
            .map_err(|e| self.err_at(w.offset, end_line, e.to_string()))?;
        if !p.unmatched.is_empty() {
            self.report_undefined(i, w.offset, end_line, &p.unmatched);
        }
        Ok(p.result)
    }

    fn expand_opt(&self, i: usize, w: &Option<Word>, end: usize) -> R<Option<Word>> {
        w.as_ref()
            .map(|w| {
                Ok(Word {
                    value: self.expand(i, w, end)?,
                    offset: w.offset,
                })
            })
            .transpose()
    }

    fn expand_words(&self, i: usize, ws: &[Word], end: usize) -> R<Vec<Word>> {
        ws.iter()
            .map(|w| {
                Ok(Word {
                    value: self.expand(i, w, end)?,
                    offset: w.offset,
                })
            })
            .collect()
    }

    /// Appends a history entry. Steps that run through the solver (RUN, COPY,
    /// ADD) are marked `# buildkit`, as BuildKit marks them; WORKDIR makes a
    /// layer without the mark.
    fn commit(&mut self, i: usize, created_by: String, layer: bool) {
        self.commit_with(i, created_by, layer, layer);
    }

    fn commit_with(&mut self, i: usize, created_by: String, layer: bool, marked: bool) {
        let created_by = if marked {
            format!("{created_by} # buildkit")
        } else {
            created_by
        };
        self.states[i].image.history.push(History {
            created_by,
            comment: HISTORY_COMMENT.to_owned(),
            empty_layer: !layer,
        });
    }

    /// The instruction text as progress shows it, first word uppercased. RUN
    /// keeps quotes and unknown variables (`raw`); COPY, ADD and WORKDIR are
    /// shown after plain substitution, as BuildKit shows them.
    fn display_text(&self, i: usize, text: &str, mask: &[(String, String)], raw: bool) -> String {
        let mut lex = self.lex;
        lex.raw_quotes = raw;
        lex.skip_unset_env = raw;
        let env = Overlay {
            top: mask,
            base: &self.states[i].env,
        };
        let processed = lex
            .process_word(text, &env)
            .map(|p| p.result)
            .unwrap_or_else(|_| text.to_owned());
        match processed.split_once(' ') {
            Some((first, rest)) => format!("{} {rest}", first.to_uppercase()),
            None => processed.to_uppercase(),
        }
    }

    /// The rules about one instruction that need no substitution result.
    fn lint_instruction(&mut self, i: usize, node: &Node, instruction: &Instruction) {
        let kw = &node.keyword;
        let slot = match instruction {
            Instruction::Cmd(_) => Some(0),
            Instruction::Entrypoint(_) => Some(1),
            Instruction::Healthcheck(_) => Some(2),
            _ => None,
        };
        if let Some(slot) = slot {
            // Reported at the earlier instruction: that is the one ignored.
            if let Some((offset, end)) = self.states[i].used_once[slot] {
                self.lint(Rule::MultipleInstructionsDisallowed.mark(self.err_at(
                    offset,
                    end,
                    format!(
                        "Multiple {kw} instructions should not be used in the same stage because only the last one will be used"
                    ),
                )));
            }
            self.states[i].used_once[slot] = Some((node.offset, node.end_line));
        }
        match instruction {
            Instruction::Cmd(line) | Instruction::Entrypoint(line)
                if line.prepend_shell && self.states[i].image.shell.is_empty() =>
            {
                self.lint(Rule::JsonArgsRecommended.at_node(
                    self.file,
                    node,
                    format!(
                        "JSON arguments recommended for {kw} to prevent unintended behavior related to OS signals"
                    ),
                ));
            }
            Instruction::Env(kvs) | Instruction::Label(kvs) => {
                for _ in kvs.iter().filter(|kv| kv.legacy) {
                    self.lint(Rule::LegacyKeyValueFormat.at_node(
                        self.file,
                        node,
                        format!(
                            "\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"
                        ),
                    ));
                }
            }
            Instruction::Arg(defs) => {
                for d in defs {
                    self.lint_secret_key("ARG", &d.key.value, node);
                }
            }
            _ => {}
        }
    }

    /// `CopyIgnoredFile`: a COPY/ADD source from the context that
    /// `.dockerignore` excludes.
    fn lint_ignored_source(&self, src: &str, add: bool, node: &Node) {
        let Some(rules) = &self.opts.dockerignore else {
            return;
        };
        let cleaned = paths::clean(src);
        if rules.excludes(&cleaned) {
            let cmd = if add { "Add" } else { "Copy" };
            self.lint(Rule::CopyIgnoredFile.at_node(
                self.file,
                node,
                format!(
                    "Attempting to {cmd} file {} that is excluded by .dockerignore",
                    go_quote(&cleaned)
                ),
            ));
        }
    }

    /// `SecretsUsedInArgOrEnv` for one ARG or ENV key.
    fn lint_secret_key(&self, instruction: &str, key: &str, node: &Node) {
        if lint::is_secret_key(key) {
            self.lint(Rule::SecretsUsedInArgOrEnv.at_node(
                self.file,
                node,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
                    go_quote(key)
                ),
            ));
        }
    }

    fn dispatch(&mut self, i: usize, cmd: &Cmd) -> R<()> {
        let node = &cmd.command.node;
        let end = node.end_line;
        self.lint_instruction(i, node, &cmd.command.instruction);
        match &cmd.command.instruction {
            Instruction::Env(kvs) => self.dispatch_env(i, node, kvs),
            Instruction::Maintainer(w) => {
                self.states[i].image.author = w.value.clone();
                self.commit(i, format!("MAINTAINER {}", w.value), false);
                Ok(())
            }
            Instruction::Label(kvs) => self.dispatch_label(i, kvs, end),
            Instruction::Add(a) => self.dispatch_add(i, cmd, a),
            Instruction::Copy(c) => self.dispatch_copy(i, cmd, c),
            Instruction::Onbuild(expr) => {
                self.states[i].image.on_build.push(expr.clone());
                Ok(())
            }
            Instruction::Workdir(w) => {
                let path = self.expand(i, w, end)?;
                if !self.states[i].workdir_set && !path.starts_with('/') {
                    self.lint(Rule::WorkdirRelativePath.at_node(
                        self.file,
                        node,
                        format!(
                            "Relative workdir {} can have unexpected results if the base image changes",
                            go_quote(&path)
                        ),
                    ));
                }
                self.states[i].workdir_set = true;
                self.dispatch_workdir(i, cmd, &path)
            }
            Instruction::Run(r) => self.dispatch_run(i, cmd, r),
            Instruction::Cmd(line) => {
                let args = self.with_shell(i, line);
                self.states[i].image.cmd = Some(args.clone());
                // BuildKit marks every CMD (exec or shell form) as escaped, for
                // compatibility with Docker's image spec.
                self.states[i].image.args_escaped = true;
                self.states[i].cmd_set = true;
                self.commit(i, format!("CMD {}", go_quote_list(&args)), false);
                Ok(())
            }
            Instruction::Entrypoint(line) => {
                let args = if line.args.is_empty() && !line.prepend_shell {
                    Vec::new()
                } else {
                    self.with_shell(i, line)
                };
                let st = &mut self.states[i];
                st.image.entrypoint = if args.is_empty() {
                    None
                } else {
                    Some(args.clone())
                };
                if !st.cmd_set {
                    st.image.cmd = None;
                }
                self.commit(i, format!("ENTRYPOINT {}", go_quote_list(&args)), false);
                Ok(())
            }
            Instruction::Healthcheck(h) => {
                let hc = match h {
                    Healthcheck::None => LlbHealthcheck {
                        test: vec!["NONE".to_owned()],
                        ..LlbHealthcheck::default()
                    },
                    Healthcheck::Cmd {
                        test,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => LlbHealthcheck {
                        test: test.clone(),
                        interval: nanos(*interval),
                        timeout: nanos(*timeout),
                        start_period: nanos(*start_period),
                        start_interval: nanos(*start_interval),
                        retries: *retries,
                    },
                };
                let text = format!(
                    "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
                    go_list(&hc.test),
                    crate::duration::go_duration_string(hc.interval),
                    crate::duration::go_duration_string(hc.timeout),
                    crate::duration::go_duration_string(hc.start_period),
                    crate::duration::go_duration_string(hc.start_interval),
                    hc.retries
                );
                self.states[i].image.healthcheck = Some(hc);
                self.commit(i, text, false);
                Ok(())
            }
            Instruction::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    let words = self
                        .lex
                        .process_words(&p.value, &self.states[i].env)
                        .map_err(|e| self.err_at(p.offset, end, e.to_string()))?;
                    for w in words {
                        for (rule, msg) in lint::expose_findings(&w) {
                            self.lint(rule.at_node(self.file, node, msg));
                        }
                        let specs =
                            expose::parse_port(&w).map_err(|e| self.err_at(p.offset, end, e))?;
                        out.extend(specs);
                    }
                }
                for p in &out {
                    self.states[i].image.exposed_ports.insert(p.clone());
                }
                self.commit(i, format!("EXPOSE {}", go_list(&out)), false);
                Ok(())
            }
            Instruction::User(w) => {
                let user = self.expand(i, w, end)?;
                self.states[i].user = user.clone();
                self.states[i].image.user = user.clone();
                self.commit(i, format!("USER {user}"), false);
                Ok(())
            }
            Instruction::Volume(vs) => {
                let vs = self.expand_words(i, vs, end)?;
                let mut list = Vec::new();
                for v in vs {
                    if v.value.is_empty() {
                        return Err(self.err_at(
                            v.offset,
                            end,
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    self.states[i].image.volumes.insert(v.value.clone());
                    list.push(v.value);
                }
                self.commit(i, format!("VOLUME {}", go_list(&list)), false);
                Ok(())
            }
            Instruction::StopSignal(w) => {
                let sig = self.expand(i, w, end)?;
                signal::check(&sig).map_err(|e| self.err_at(w.offset, end, e))?;
                self.states[i].image.stop_signal = sig.clone();
                self.commit(i, format!("STOPSIGNAL {sig}"), false);
                Ok(())
            }
            Instruction::Arg(defs) => self.dispatch_arg(i, node, defs),
            Instruction::Shell(sh) => {
                self.states[i].image.shell = sh.clone();
                self.commit(i, format!("SHELL {}", go_list(sh)), false);
                Ok(())
            }
        }
    }

    /// Expands the keys and values of ENV/LABEL pairs. All of an instruction
    /// sees the variables as they were before it (`ENV a=1 b=$a` reads the old
    /// `a`).
    fn expand_pairs(&self, i: usize, kvs: &[KeyValue], end: usize) -> R<Vec<(String, String)>> {
        kvs.iter()
            .map(|kv| {
                Ok((
                    self.expand(i, &kv.key, end)?,
                    self.expand(i, &kv.value, end)?,
                ))
            })
            .collect()
    }

    fn dispatch_env(&mut self, i: usize, node: &Node, kvs: &[KeyValue]) -> R<()> {
        let mut msg = String::from("ENV");
        for (k, v) in self.expand_pairs(i, kvs, node.end_line)? {
            self.lint_secret_key("ENV", &k, node);
            msg.push_str(&format!(" {k}={v}"));
            let st = &mut self.states[i];
            st.env.set(&k, &v);
            set_image_env(&mut st.image, &mut st.image_env_index, &k, &v);
        }
        self.commit(i, msg, false);
        Ok(())
    }

    fn dispatch_label(&mut self, i: usize, kvs: &[KeyValue], end: usize) -> R<()> {
        let mut msg = String::from("LABEL");
        for (k, v) in self.expand_pairs(i, kvs, end)? {
            msg.push_str(&format!(" {k}={v}"));
            self.states[i].image.labels.insert(k, v);
        }
        self.commit(i, msg, false);
        Ok(())
    }

    fn dispatch_arg(&mut self, i: usize, node: &Node, defs: &[ArgDef]) -> R<()> {
        let end = node.end_line;
        let mut commit = Vec::new();
        for def in defs {
            let key = def.key.value.clone();
            self.declared_args.insert(key.clone());
            let inherited = !self.opts.build_args.contains_key(&key)
                && def.default.is_none()
                && self.global_args.get(&key).is_some();
            let value = if let Some(v) = self.opts.build_args.get(&key) {
                Some(v.clone())
            } else if let Some(d) = &def.default {
                Some(self.expand(i, d, end)?)
            } else {
                self.global_args.get(&key).map(str::to_owned)
            };
            if !inherited {
                self.states[i].outline.args.insert(
                    key.clone(),
                    OutlineArgInfo {
                        value: value.clone().unwrap_or_default(),
                        description: crate::outline::doc_comment(&node.comments, &key),
                        line: node.start_line,
                        deps: BTreeSet::new(),
                    },
                );
            }
            self.states[i].outline.used.insert(key.clone());
            if let Some(v) = &value
                && key != "BUILDKIT_SBOM_SCAN_CONTEXT"
                && key != "BUILDKIT_SBOM_SCAN_STAGE"
            {
                self.states[i].env.set(&key, v);
            }
            self.states[i].build_args.push((key.clone(), value.clone()));
            commit.push(match value {
                Some(v) => format!("{key}={v}"),
                None => key,
            });
        }
        self.commit(i, format!("ARG {}", commit.join(" ")), false);
        Ok(())
    }

    fn with_shell(&self, i: usize, line: &CmdLine) -> Vec<String> {
        if !line.prepend_shell {
            return line.args.clone();
        }
        let shell = &self.states[i].image.shell;
        let mut out = if shell.is_empty() {
            vec!["/bin/sh".to_owned(), "-c".to_owned()]
        } else {
            shell.clone()
        };
        out.push(line.args.join(" "));
        out
    }

    fn chown(&self, i: usize, user: &str) -> Option<Chown> {
        let _ = i;
        if user.is_empty() {
            return None;
        }
        let (u, g) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user, None),
        };
        Some(Chown {
            user: IdOrName::parse(u),
            group: g.map(IdOrName::parse),
        })
    }

    fn dispatch_workdir(&mut self, i: usize, cmd: &Cmd, path: &str) -> R<()> {
        let current = self.states[i].image.working_dir.clone();
        let wd = paths::normalize(&current, path, false);
        self.states[i].image.working_dir = wd.clone();
        self.states[i].cwd = wd.clone();
        let mut layer = false;
        if wd != "/" {
            let text = self.display_text(i, cmd.command.code(), &[], false);
            let title = self.prefix(i, &text, cmd.onbuild);
            let meta = self.meta(i, title, Some(cmd.command.node.clone()));
            let user = self.states[i].image.user.clone();
            let mut inputs = Inputs::default();
            let base = self.states[i].root.map(|d| inputs.index(d));
            let op = Op::File(FileOp {
                base,
                actions: vec![FileAction::Mkdir(Mkdir {
                    path: wd.clone(),
                    mode: 0o755,
                    parents: true,
                    chown: self.chown(i, &user),
                })],
            });
            let d = self.add(op, inputs.0, meta)?;
            self.states[i].root = Some(d);
            layer = true;
        }
        self.commit_with(i, format!("WORKDIR {wd}"), layer, false);
        Ok(())
    }

    fn dispatch_run(&mut self, i: usize, cmd: &Cmd, run: &Run) -> R<()> {
        let node = &cmd.command.node;
        let end = node.end_line;
        let mut inputs = Inputs::default();
        let mut extra_mounts = Vec::new();
        let mut custom = cmd.command.code().to_owned();
        let mut args = run.cmd.args.clone();
        if args.is_empty() && !run.cmd.prepend_shell {
            return Err(self.err_node(
                node,
                "RUN needs a command: the exec form array is empty (arguments are required)",
            ));
        }
        if !run.cmd.files.is_empty() {
            if args.len() != 1 || !run.cmd.prepend_shell {
                return Err(self.err_node(
                    node,
                    format!(
                        "parsing produced an invalid run command: {}",
                        go_list(&args)
                    ),
                ));
            }
            let single = syntax::parse_heredoc(&args[0]).ok().flatten();
            if single.is_some() {
                let file = &run.cmd.files[0];
                let data = if file.chomp {
                    syntax::chomp_heredoc_content(&file.data)
                } else {
                    file.data.clone()
                };
                if data.starts_with("#!") {
                    // A script with a shebang: write it to a file and run it.
                    let meta = VertexMeta {
                        name: "[internal] preparing inline document".to_owned(),
                        ..VertexMeta::default()
                    };
                    let mkfile = Op::File(FileOp {
                        base: None,
                        actions: vec![FileAction::Mkfile(Mkfile {
                            path: format!("/{}", file.name),
                            mode: 0o755,
                            data: data.clone(),
                            chown: None,
                        })],
                    });
                    let d = self.add(mkfile, Vec::new(), meta)?;
                    extra_mounts.push(LlbMount {
                        target: "/dev/pipes/".to_owned(),
                        input: Some(inputs.index(d)),
                        source: "/".to_owned(),
                        readonly: true,
                        output: false,
                        kind: MountKind::Bind,
                    });
                    args = vec![paths::join(&["/dev/pipes/", &file.name])];
                } else {
                    args = vec![data];
                }
                custom.push_str(&format!(" ({})", summarize_heredoc(&file.data)));
            } else {
                let mut s = args[0].clone();
                for f in &run.cmd.files {
                    s.push('\n');
                    s.push_str(&f.data);
                    s.push_str(&f.name);
                }
                args = vec![s];
            }
        }
        if run.cmd.prepend_shell {
            let line = CmdLine {
                args: args.clone(),
                files: Vec::new(),
                prepend_shell: true,
            };
            args = self.with_shell(i, &line);
        }

        // Mounts, expanded with the stage's variables.
        let mut mounts = Vec::new();
        let mut secret_env_mask = Vec::new();
        let root_input = self.states[i].root.map(|d| inputs.index(d));
        for (mi, raw) in run.mounts.iter().enumerate() {
            let env = self.states[i].env.clone();
            let lex = self.lex;
            let mut unmatched = BTreeSet::new();
            let mut expand = |v: &str| -> Result<String, String> {
                lex.process_word(v, &env)
                    .map(|p| {
                        unmatched.extend(p.unmatched);
                        p.result
                    })
                    .map_err(|e| e.to_string())
            };
            let parsed = mount::parse_mount(&raw.value, &mut expand);
            if !unmatched.is_empty() {
                self.report_undefined(i, raw.offset, end, &unmatched);
            }
            let m = parsed.map_err(|e| self.err_at(raw.offset, end, e))?;
            if m.kind == MountType::Secret
                && let Some(e) = &m.env
            {
                secret_env_mask.push((e.clone(), "****".to_owned()));
            }
            let source_state = cmd.sources.get(mi).copied().flatten();
            mounts.push(self.run_mount(i, &m, source_state, raw, end, &mut inputs)?);
        }

        // The n-th SSH mount without a target gets agent socket n, and the
        // first one becomes SSH_AUTH_SOCK unless the stage sets it.
        let mut ssh_sock = None;
        for (n, m) in mounts
            .iter_mut()
            .filter(|m| matches!(m.kind, MountKind::Ssh { .. }))
            .enumerate()
        {
            if m.target.is_empty() {
                m.target = format!("/run/buildkit/ssh_agent.{n}");
            }
            ssh_sock.get_or_insert_with(|| m.target.clone());
        }

        let text = self.display_text(i, &custom, &secret_env_mask, true);
        let title = self.prefix(i, &text, cmd.onbuild);
        let meta = self.meta(i, title, Some(node.clone()));

        let st = &self.states[i];
        let mut all_mounts = vec![LlbMount {
            target: "/".to_owned(),
            input: root_input,
            source: "/".to_owned(),
            readonly: false,
            output: true,
            kind: MountKind::Bind,
        }];
        all_mounts.extend(extra_mounts);
        all_mounts.extend(mounts);
        let network = match run.network {
            Network::Default => st.network,
            other => other,
        };
        let mut env = st.env.clone();
        if let Some(sock) = ssh_sock
            && env.get("SSH_AUTH_SOCK").is_none()
        {
            env.set("SSH_AUTH_SOCK", &sock);
        }
        let op = Op::Exec(ExecOp {
            args: args.clone(),
            env: env.to_strings(),
            cwd: st.cwd.clone(),
            user: st.user.clone(),
            mounts: all_mounts,
            network,
            security: run.security,
            hostname: st.hostname.clone(),
            proxy_env: self.proxy.clone(),
            devices: Vec::<Device>::new(),
            platform: Some(Box::new(self.platform_of(i))),
        });
        let d = self.add(op, inputs.0, meta)?;
        self.states[i].root = Some(d);

        // History: `RUN |N ARG=v … <args>`.
        let st = &self.states[i];
        let mut build_env: Vec<(String, String)> = Vec::new();
        for (k, v) in &st.build_args {
            let val = st
                .env
                .get(k)
                .map(str::to_owned)
                .unwrap_or_else(|| v.clone().unwrap_or_default());
            match build_env.iter_mut().find(|(bk, _)| bk == k) {
                Some(e) => e.1 = val,
                None => build_env.push((k.clone(), val)),
            }
        }
        let mut parts: Vec<String> = Vec::new();
        if !build_env.is_empty() {
            parts.push(format!("|{}", build_env.len()));
            parts.extend(build_env.iter().map(|(k, v)| format!("{k}={v}")));
        }
        parts.extend(args);
        self.commit(i, format!("RUN {}", parts.join(" ")), true);
        Ok(())
    }

    fn run_mount(
        &mut self,
        i: usize,
        m: &mount::Mount,
        source_state: Option<usize>,
        raw: &Word,
        end: usize,
        inputs: &mut Inputs,
    ) -> R<LlbMount> {
        let err = |cx: &Self, msg: String| cx.err_at(raw.offset, end, msg);
        match m.kind {
            MountType::Secret => {
                let mut id = if m.source.is_empty() {
                    m.id.clone()
                } else {
                    m.source.clone()
                };
                if id.is_empty() {
                    if m.target.is_empty() {
                        return Err(err(self, "one of source, target required".into()));
                    }
                    id = paths::base(&m.target);
                }
                let line = self.file.position(raw.offset).line;
                self.states[i]
                    .outline
                    .secrets
                    .entry(id.clone())
                    .or_insert((m.required, line));
                let target = if m.env.is_none() && m.target.is_empty() {
                    format!("/run/secrets/{}", paths::base(&id))
                } else {
                    m.target.clone()
                };
                return Ok(LlbMount {
                    target,
                    input: None,
                    source: "/".to_owned(),
                    readonly: true,
                    output: false,
                    kind: MountKind::Secret {
                        id,
                        env: m.env.clone().unwrap_or_default(),
                        required: m.required,
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                        mode: m.mode.unwrap_or(0o400),
                    },
                });
            }
            MountType::Ssh => {
                if !m.source.is_empty() {
                    return Err(err(self, "ssh does not support source".into()));
                }
                let id = if m.id.is_empty() {
                    "default".to_owned()
                } else {
                    m.id.clone()
                };
                let line = self.file.position(raw.offset).line;
                self.states[i]
                    .outline
                    .ssh
                    .entry(id.clone())
                    .or_insert((m.required, line));
                // Default targets are assigned once all mounts are known.
                let target = m.target.clone();
                return Ok(LlbMount {
                    target,
                    input: None,
                    source: "/".to_owned(),
                    readonly: true,
                    output: false,
                    kind: MountKind::Ssh {
                        id,
                        required: m.required,
                        uid: m.uid.unwrap_or(0),
                        gid: m.gid.unwrap_or(0),
                        mode: m.mode.unwrap_or(0o600),
                    },
                });
            }
            _ => {}
        }
        // The filesystem mounted: a stage or image (`from=`), the build
        // context (bind without `from=`), or nothing (cache, tmpfs).
        let input = match (m.kind, source_state) {
            (MountType::Tmpfs, _) => None,
            (_, Some(s)) => {
                if !self.states[s].dispatched {
                    return Err(err(
                        self,
                        format!(
                            "cannot mount from stage {} to {}, stage needs to be defined before current command",
                            go_quote(&m.from),
                            go_quote(&m.target)
                        ),
                    ));
                }
                self.states[s].root.map(|d| inputs.index(d))
            }
            (MountType::Cache, None) => None,
            (_, None) => {
                let c = self.context_source()?;
                Some(inputs.index(c))
            }
        };
        let cwd = self.states[i].cwd.clone();
        let target = if paths::clean(&m.target).starts_with('/') {
            m.target.clone()
        } else {
            paths::join(&["/", &cwd, &m.target])
        };
        if target == "/" {
            return Err(err(
                self,
                format!("invalid mount target {}", go_quote(&target)),
            ));
        }
        let source = paths::join(&["/", &m.source]);
        if m.kind == MountType::Bind && source_state.is_none() {
            self.ctx_paths.insert(source.clone());
        }
        let kind = match m.kind {
            MountType::Cache => {
                let id = if m.id.is_empty() {
                    paths::clean(&m.target)
                } else {
                    m.id.clone()
                };
                let with_owner = source == "/";
                MountKind::Cache {
                    id,
                    sharing: match m.sharing {
                        Some(Sharing::Private) => CacheSharing::Private,
                        Some(Sharing::Locked) => CacheSharing::Locked,
                        _ => CacheSharing::Shared,
                    },
                    uid: m.uid.filter(|_| with_owner),
                    gid: m.gid.filter(|_| with_owner),
                    mode: m.mode.filter(|_| with_owner),
                }
            }
            MountType::Tmpfs => MountKind::Tmpfs { size: m.size_limit },
            _ => MountKind::Bind,
        };
        Ok(LlbMount {
            target,
            input,
            source,
            readonly: m.readonly,
            output: false,
            kind,
        })
    }

    fn dispatch_copy(&mut self, i: usize, cmd: &Cmd, c: &Copy) -> R<()> {
        let end = cmd.command.node.end_line;
        let source_state = cmd.sources.first().copied().flatten();
        if let Some(s) = source_state
            && !self.states[s].dispatched
        {
            let from = c.from.as_ref().map_or("", |w| w.value.as_str());
            return Err(self.err_at(
                c.from
                    .as_ref()
                    .map_or(cmd.command.node.offset, |w| w.offset),
                end,
                format!(
                    "cannot copy from stage {}, it needs to be defined before current stage {}",
                    go_quote(from),
                    go_quote(&self.states[i].display_name())
                ),
            ));
        }
        let spec = CopySpec {
            add: false,
            sources: self.expand_words(i, &c.paths.sources, end)?,
            inline: c.paths.inline.clone(),
            dest: Word {
                value: self.expand(i, &c.paths.dest, end)?,
                offset: c.paths.dest.offset,
            },
            chown: self.expand_opt(i, &c.chown, end)?,
            chmod: self.expand_opt(i, &c.chmod, end)?,
            link: c.link,
            parents: c.parents,
            excludes: c.excludes.iter().map(|w| w.value.clone()).collect(),
            keep_git_dir: None,
            checksum: None,
            unpack: None,
            from_state: source_state,
        };
        self.dispatch_copy_spec(i, cmd, spec)
    }

    fn dispatch_add(&mut self, i: usize, cmd: &Cmd, a: &Add) -> R<()> {
        let end = cmd.command.node.end_line;
        let spec = CopySpec {
            add: true,
            sources: self.expand_words(i, &a.paths.sources, end)?,
            inline: a.paths.inline.clone(),
            dest: Word {
                value: self.expand(i, &a.paths.dest, end)?,
                offset: a.paths.dest.offset,
            },
            chown: self.expand_opt(i, &a.chown, end)?,
            chmod: self.expand_opt(i, &a.chmod, end)?,
            link: a.link,
            parents: false,
            excludes: a.excludes.iter().map(|w| w.value.clone()).collect(),
            keep_git_dir: a.keep_git_dir,
            checksum: self.expand_opt(i, &a.checksum, end)?,
            unpack: a.unpack,
            from_state: None,
        };
        self.dispatch_copy_spec(i, cmd, spec)
    }

    fn dispatch_copy_spec(&mut self, i: usize, cmd: &Cmd, mut spec: CopySpec) -> R<()> {
        let node = &cmd.command.node;
        let end = node.end_line;
        let cwd = self.states[i].cwd.clone();
        let dest = {
            let p = if spec.dest.value.is_empty() || spec.dest.value == "." {
                "./"
            } else {
                spec.dest.value.as_str()
            };
            paths::normalize(&cwd, p, true)
        };
        let chown = spec.chown.as_ref().and_then(|w| self.chown(i, &w.value));
        let mode = match &spec.chmod {
            Some(w) if !w.value.is_empty() => {
                Some(chmod::parse(&w.value).map_err(|e| self.err_at(w.offset, end, e))?)
            }
            _ => None,
        };
        if let Some(ck) = &spec.checksum {
            if spec.sources.len() != 1 {
                return Err(self.err_at(
                    ck.offset,
                    end,
                    "checksum can't be specified for multiple sources",
                ));
            }
            let src = &spec.sources[0].value;
            if !is_http(src) && gitref::parse(src).ok().flatten().is_none() {
                return Err(self.err_at(
                    ck.offset,
                    end,
                    "checksum requires HTTP(S) or Git sources",
                ));
            }
        }
        let word = if spec.add { "ADD" } else { "COPY" };
        let mut msg = String::from(word);
        if spec.parents {
            msg.push_str(" --parents");
        }
        if let Some(w) = spec.chown.as_ref().filter(|w| !w.value.is_empty()) {
            msg.push_str(&format!(" --chown={}", w.value));
        }
        if let Some(w) = spec.chmod.as_ref().filter(|w| !w.value.is_empty()) {
            msg.push_str(&format!(" --chmod={}", w.value));
        }

        let text = self.display_text(i, cmd.command.code(), &[], false);
        let link = spec.link && mode.is_none();
        let step = self.prefix(i, &text, cmd.onbuild);

        let mut inputs = Inputs::default();
        let base = if link {
            None
        } else {
            self.states[i].root.map(|d| inputs.index(d))
        };
        let mut actions = Vec::new();
        let template = CopyAction {
            from: None,
            src: String::new(),
            dest: dest.clone(),
            chown: chown.clone(),
            mode: mode.clone(),
            follow_symlinks: false,
            contents_only: false,
            include: Vec::new(),
            exclude: spec.excludes.clone(),
            required: Vec::new(),
            unpack: false,
            create_dest_path: true,
            allow_wildcard: false,
            allow_empty_wildcard: false,
        };

        for src in std::mem::take(&mut spec.sources) {
            msg.push_str(&format!(" {}", src.value));
            let git = gitref::parse(&src.value).map_err(|e| self.err_at(src.offset, end, e))?;
            if let Some(g) = git {
                if !spec.add {
                    return Err(self.err_at(src.offset, end, "source can't be a git ref for COPY"));
                }
                if let (Some(a), Some(b)) = (spec.keep_git_dir, g.keep_git_dir)
                    && a != b
                {
                    return Err(self.err_at(
                        src.offset,
                        end,
                        "inconsistent keep-git-dir configuration",
                    ));
                }
                let keep = g.keep_git_dir.or(spec.keep_git_dir).unwrap_or(false);
                let mut checksum = spec
                    .checksum
                    .as_ref()
                    .map(|w| w.value.clone())
                    .unwrap_or_default();
                if !g.checksum.is_empty() {
                    if !checksum.is_empty() && checksum != g.checksum {
                        return Err(self.err_at(
                            src.offset,
                            end,
                            format!(
                                "checksum mismatch {} != {}",
                                go_quote(&checksum),
                                go_quote(&g.checksum)
                            ),
                        ));
                    }
                    checksum = g.checksum.clone();
                }
                let meta = VertexMeta {
                    name: step.clone(),
                    ..self.meta(i, String::new(), Some(node.clone()))
                };
                let op = Op::Source(SourceOp::Git {
                    remote: g.remote,
                    git_ref: g.git_ref,
                    subdir: g.subdir,
                    keep_git_dir: keep,
                    checksum,
                    skip_submodules: g.submodules == Some(false),
                });
                let d = self.add(op, Vec::new(), meta)?;
                actions.push(FileAction::Copy(CopyAction {
                    from: Some(inputs.index(d)),
                    src: "/".to_owned(),
                    ..template.clone()
                }));
            } else if is_http(&src.value) {
                if !spec.add {
                    return Err(self.err_at(src.offset, end, "source can't be a URL for COPY"));
                }
                let filename = url_filename(&src.value);
                let checksum = match &spec.checksum {
                    Some(w) => {
                        check_digest(&w.value).map_err(|e| self.err_at(w.offset, end, e))?;
                        w.value.clone()
                    }
                    None => String::new(),
                };
                let meta = VertexMeta {
                    name: step.clone(),
                    ..self.meta(i, String::new(), Some(node.clone()))
                };
                let op = Op::Source(SourceOp::Http {
                    url: src.value.clone(),
                    filename: filename.clone(),
                    checksum,
                });
                let d = self.add(op, Vec::new(), meta)?;
                actions.push(FileAction::Copy(CopyAction {
                    from: Some(inputs.index(d)),
                    src: format!("/{filename}"),
                    unpack: spec.unpack.unwrap_or(false),
                    ..template.clone()
                }));
            } else {
                if spec.from_state.is_none() {
                    self.lint_ignored_source(&src.value, spec.add, node);
                }
                let mut src_path = src.value.clone();
                let mut include = Vec::new();
                let mut required = Vec::new();
                if spec.parents {
                    let (parent, pattern) = match src_path.split_once("/./") {
                        Some((p, pat)) => (p.to_owned(), pat.to_owned()),
                        None => ("/".to_owned(), src_path.clone()),
                    };
                    let pattern = paths::normalize("/", &pattern, false);
                    include.push(pattern.trim_start_matches('/').to_owned());
                    if !contains_wildcards(&parent) && !contains_wildcards(&pattern) {
                        required.push(paths::normalize(
                            "/",
                            &paths::join(&[&parent, &pattern]),
                            false,
                        ));
                    }
                    src_path = parent;
                }
                let src_abs = paths::normalize("/", &src_path, false);
                let from = match spec.from_state {
                    Some(s) => {
                        let st = &self.states[s];
                        let read = match st.local {
                            Some((local, copy)) if st.root == Some(copy) => Some(local),
                            _ => st.root,
                        };
                        read.map(|d| inputs.index(d))
                    }
                    None => {
                        if escapes_context(&src.value) {
                            return Err(self.err_at(
                                src.offset,
                                end,
                                format!(
                                    "{} source {} is outside the build context",
                                    if spec.add { "ADD" } else { "COPY" },
                                    src.value
                                ),
                            ));
                        }
                        self.ctx_paths.insert(paths::join(&["/", &src.value]));
                        let c = self.context_source()?;
                        Some(inputs.index(c))
                    }
                };
                actions.push(FileAction::Copy(CopyAction {
                    from,
                    src: src_abs,
                    follow_symlinks: true,
                    contents_only: true,
                    include,
                    required,
                    unpack: spec.unpack.unwrap_or(spec.add),
                    allow_wildcard: true,
                    allow_empty_wildcard: true,
                    ..template.clone()
                }));
            }
        }

        for inline in &spec.inline {
            msg.push_str(&format!(" <<{}", inline.name));
            let data = if inline.expand {
                let mut lex = Lexer::new('\\');
                lex.skip_process_quotes = true;
                lex.process_word(&inline.data, &self.states[i].env)
                    .map_err(|e| self.err_node(node, e.to_string()))?
                    .result
            } else {
                inline.data.clone()
            };
            let meta = VertexMeta {
                name: "[internal] preparing inline document".to_owned(),
                ..VertexMeta::default()
            };
            let op = Op::File(FileOp {
                base: None,
                actions: vec![FileAction::Mkfile(Mkfile {
                    path: paths::join(&["/", &inline.name]),
                    mode: 0o644,
                    data,
                    chown: None,
                })],
            });
            let d = self.add(op, Vec::new(), meta)?;
            actions.push(FileAction::Copy(CopyAction {
                from: Some(inputs.index(d)),
                src: paths::join(&["/", &inline.name]),
                ..template.clone()
            }));
        }
        msg.push_str(&format!(" {}", spec.dest.value));

        let meta = self.meta(i, step.clone(), Some(node.clone()));
        let file_op = Op::File(FileOp { base, actions });
        let copied = self.add(file_op, inputs.0, meta)?;
        let result = match (link, self.states[i].root) {
            (true, Some(root)) => {
                // `--link`: the copy is made on an empty filesystem and layered
                // on top, so it does not depend on what is below.
                let name = step.replacen("] ", "] LINK ", 1);
                let name = if name == step {
                    format!("LINK {step}")
                } else {
                    name
                };
                let meta = self.meta(i, name, Some(node.clone()));
                let op = Op::Merge(MergeOp { inputs: vec![0, 1] });
                self.add(op, vec![root, copied], meta)?
            }
            _ => copied,
        };
        self.states[i].root = Some(result);
        self.commit(i, msg, true);
        Ok(())
    }

    fn finish(&mut self, target: usize, reachable: &[bool]) -> R<Plan> {
        // Build args nobody declared.
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| {
                !self.declared_args.contains(*k)
                    && !PROXY_ARGS.contains(&k.as_str())
                    && builtin_arg_note(k).is_none()
            })
            .collect();
        if !unused.is_empty() {
            let list: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.warnings.push(Diagnostic {
                severity: crate::Severity::Warning,
                ..Diagnostic::unlocated(
                    self.file.name(),
                    format!(
                        "one or more build-args [{}] were not consumed",
                        list.join(" ")
                    ),
                )
            });
        }

        // Named contexts nothing refers to (BuildKit ignores them silently).
        for name in self.opts.named_contexts.keys() {
            if !self.used_contexts.contains(name) {
                self.warnings.push(Diagnostic {
                    severity: crate::Severity::Warning,
                    ..Diagnostic::unlocated(
                        self.file.name(),
                        format!(
                            "--build-context {name}: no stage, FROM or --from of the build names it"
                        ),
                    )
                });
            }
        }

        // The target image: --label, platform.
        let labels = self.opts.labels.clone();
        let explicit = !self.implicit_target;
        let tp = self.target_platform.clone();
        let st = &mut self.states[target];
        st.image.labels.extend(labels);
        if explicit || st.image.platform.is_none() {
            st.image.platform = Some(tp);
        }

        let stages: Vec<LlbStage> = self
            .states
            .iter()
            .enumerate()
            .filter(|(i, s)| reachable[*i] && s.stage_index.is_some())
            .map(|(_, s)| LlbStage {
                name: s.display_name(),
                index: s.stage_index.unwrap_or(0),
                platform: s
                    .platform
                    .clone()
                    .unwrap_or_else(|| self.target_platform.clone()),
                base: match &s.base {
                    Base::Scratch => StageBase::Scratch,
                    Base::Stage(b) => StageBase::Stage {
                        name: self.states[*b].display_name(),
                    },
                    Base::Image(r) => StageBase::Image {
                        reference: r.to_string(),
                        digest: s.image_digest.clone(),
                    },
                    Base::Named(_, NamedContext::Resolved { reference, .. }) => StageBase::Image {
                        reference: reference.clone(),
                        digest: s.image_digest.clone(),
                    },
                    Base::Named(..) => StageBase::Scratch,
                },
                root: s.root,
                config: s.image.clone(),
                location: s.location.clone(),
            })
            .collect();
        let target_stage = stages
            .iter()
            .position(|s| Some(s.index) == self.states[target].stage_index)
            .unwrap_or(stages.len().saturating_sub(1));
        let root = self.states[target].root;
        let graph = match root {
            Some(r) => self.graph.pruned(&[r]),
            None => Graph::new(),
        };
        let context_paths = if self.ctx_paths.contains("/") {
            vec![".".to_owned()]
        } else {
            self.ctx_paths
                .iter()
                .map(|p| p.trim_start_matches('/').to_owned())
                .collect()
        };
        Ok(Plan {
            definition: Definition {
                graph,
                target: root,
                target_stage,
                stages,
                context_paths,
            },
            warnings: std::mem::take(&mut self.warnings),
            outline: self.outline(target),
        })
    }

    /// `--call outline` for state `target`: the ARGs it and the stages it
    /// depends on use, with their values and descriptions, and the secrets and
    /// SSH sockets their RUN steps mount (BuildKit's `dispatchState.Outline`;
    /// the first stage met in target, base, dependencies order wins).
    fn outline(&self, target: usize) -> crate::outline::Outline {
        use crate::outline::{Outline, OutlineArg, OutlineMount};
        let mut out = Outline::default();
        if let Some(node) = &self.states[target].node {
            out.name = self.states[target].name.clone().unwrap_or_default();
            out.description = crate::outline::doc_comment(&node.comments, &out.name);
        }
        let mut seen_args = BTreeSet::new();
        let mut seen_secrets = BTreeSet::new();
        let mut seen_ssh = BTreeSet::new();
        let mut seen_states = vec![false; self.states.len()];
        let mut stack = vec![target];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen_states[i], true) {
                continue;
            }
            let st = &self.states[i];
            let info = |k: &str| st.outline.args.get(k).or_else(|| self.meta_outline.get(k));
            // Used ARGs, and the global ARGs their defaults refer to.
            let mut used = BTreeSet::new();
            let mut todo: Vec<&String> = st.outline.used.iter().collect();
            while let Some(k) = todo.pop() {
                if used.insert(k.clone())
                    && let Some(a) = info(k)
                {
                    todo.extend(a.deps.iter());
                }
            }
            for k in used {
                if let Some(a) = info(&k)
                    && seen_args.insert(k.clone())
                {
                    out.args.push(OutlineArg {
                        name: k,
                        value: a.value.clone(),
                        description: a.description.clone(),
                        line: a.line,
                    });
                }
            }
            for (list, seen, found) in [
                (&mut out.secrets, &mut seen_secrets, &st.outline.secrets),
                (&mut out.ssh, &mut seen_ssh, &st.outline.ssh),
            ] {
                for (id, (required, line)) in found {
                    if seen.insert(id.clone()) {
                        list.push(OutlineMount {
                            name: id.clone(),
                            required: *required,
                            line: *line,
                        });
                    }
                }
            }
            // Pre-order: this state, its base, then its dependencies.
            stack.extend(st.deps.iter().rev().map(|(d, _)| *d));
            if let Base::Stage(b) = st.base {
                stack.push(b);
            }
        }
        out.args.sort_by_key(|a| a.line);
        out.secrets.sort_by_key(|a| a.line);
        out.ssh.sort_by_key(|a| a.line);
        out
    }
}

impl State {
    fn display_name(&self) -> String {
        match (&self.name, self.stage_index) {
            (Some(n), _) => n.clone(),
            (None, Some(i)) => format!("stage-{i}"),
            (None, None) => self.base_word.value.clone(),
        }
    }
}

struct CopySpec {
    add: bool,
    sources: Vec<Word>,
    inline: Vec<instructions::InlineSource>,
    dest: Word,
    chown: Option<Word>,
    chmod: Option<Word>,
    link: bool,
    parents: bool,
    excludes: Vec<String>,
    keep_git_dir: Option<bool>,
    checksum: Option<Word>,
    unpack: Option<bool>,
    from_state: Option<usize>,
}

/// Sets `key=value` in the image config, replacing an earlier definition in
/// place (Docker keeps the order of first definition). `index` caches the
/// positions so that many ENVs stay linear.
fn set_image_env(
    image: &mut ImageConfig,
    index: &mut HashMap<String, usize>,
    key: &str,
    value: &str,
) {
    if index.len() != image.env.len() {
        index.clear();
        for (i, kv) in image.env.iter().enumerate() {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            index.entry(k.to_owned()).or_insert(i);
        }
    }
    let entry = format!("{key}={value}");
    match index.get(key) {
        Some(&i) => image.env[i] = entry,
        None => {
            index.insert(key.to_owned(), image.env.len());
            image.env.push(entry);
        }
    }
}

/// The inputs of a vertex being built; the same digest gets one index.
#[derive(Default)]
struct Inputs(Vec<Digest>);

impl Inputs {
    fn index(&mut self, d: Digest) -> u32 {
        let pos = match self.0.iter().position(|x| *x == d) {
            Some(p) => p,
            None => {
                self.0.push(d);
                self.0.len() - 1
            }
        };
        u32::try_from(pos).unwrap_or(u32::MAX)
    }
}

fn relocate(node: &mut Node, at: &Node) {
    node.offset = at.offset;
    node.args_offset = at.offset;
    node.start_line = at.start_line;
    node.end_line = at.end_line;
    for w in node.args.iter_mut().chain(node.flags.iter_mut()) {
        w.offset = at.offset;
    }
    if let Some(sub) = &mut node.sub {
        relocate(sub, at);
    }
}

/// Whether a relative context path climbs above the context root (`../x`,
/// `a/../../x`). BuildKit reads such a path as if it started at the root;
/// kiln refuses it, as Docker's classic builder did, because it is always a
/// mistake. Absolute paths are inside the context by definition.
fn escapes_context(path: &str) -> bool {
    if path.starts_with('/') {
        return false;
    }
    let mut depth = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

fn empty_image(platform: &Platform) -> ImageConfig {
    ImageConfig {
        platform: Some(platform.clone()),
        working_dir: "/".to_owned(),
        env: vec![format!("PATH={DEFAULT_PATH}")],
        ..ImageConfig::default()
    }
}

/// The config of an image that could not be looked up: nothing known.
fn empty_image_unresolved(platform: &Platform) -> ImageConfig {
    ImageConfig {
        platform: Some(platform.clone()),
        ..ImageConfig::default()
    }
}

fn nanos(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Go's `%v` of a `[]string`: `[a b]`.
fn go_list<S: AsRef<str>>(items: &[S]) -> String {
    let v: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    format!("[{}]", v.join(" "))
}

fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim();
    let normalized = doc.replace("\r\n", "\n");
    let mut lines = normalized.split('\n');
    let first = lines.next().unwrap_or("").to_owned();
    if lines.next().is_some() {
        format!("{first}...")
    } else {
        first
    }
}

fn is_http(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://"))
        && gitref::parse(src).ok().flatten().is_none()
}

fn url_filename(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let path = after_scheme
        .split_once('/')
        .map_or("", |(_, p)| p)
        .split(['?', '#'])
        .next()
        .unwrap_or("");
    let base = paths::base(&format!("/{path}"));
    if base == "." || base == "/" || base.is_empty() {
        "__unnamed__".to_owned()
    } else {
        base
    }
}

fn check_digest(d: &str) -> Result<(), String> {
    let (alg, hex) = d
        .split_once(':')
        .ok_or_else(|| format!("invalid checksum digest format: {}", go_quote(d)))?;
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(format!("unsupported digest algorithm: {}", go_quote(d))),
    };
    if hex.len() != len
        || !hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return Err(format!("invalid checksum digest: {}", go_quote(d)));
    }
    Ok(())
}

fn contains_wildcards(name: &str) -> bool {
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' | b'?' | b'[' => return true,
            b'\\' => i += 1,
            _ => {}
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_options() {
        let c = CheckConfig::parse("skip=JSONArgsRecommended, StageNameCasing;error=true").unwrap();
        assert_eq!(c.skip, ["JSONArgsRecommended", "StageNameCasing"]);
        assert!(c.error);
        assert!(CheckConfig::parse("skip=all").unwrap().skip_all);
        assert!(CheckConfig::parse("bogus").is_err());
        assert!(CheckConfig::parse("error=maybe").is_err());
        assert!(CheckConfig::parse("nope=1").is_err());
        assert_eq!(CheckConfig::parse("  ").unwrap(), CheckConfig::default());
    }

    #[test]
    fn url_filenames() {
        assert_eq!(
            url_filename("https://example.com/a/b.tar.gz?x=1"),
            "b.tar.gz"
        );
        assert_eq!(url_filename("https://example.com/"), "__unnamed__");
        assert_eq!(url_filename("https://example.com"), "__unnamed__");
    }

    #[test]
    fn heredoc_summary() {
        assert_eq!(summarize_heredoc("\necho a\necho b\n"), "echo a...");
        assert_eq!(summarize_heredoc("echo a\n"), "echo a");
    }
}
