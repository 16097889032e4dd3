//! The state every stage shares while the build is planned (BuildKit's
//! `dispatchOpt` and the `allDispatchStates` around it): options, the graph
//! under construction, the global ARGs, the lint warnings. Stages are kept
//! beside it in [`Converter`], so that one stage can be dispatched as a
//! `&mut Stage` while this is borrowed mutably too (`step::Step`).

use std::collections::{BTreeSet, HashMap};

use kiln_llb::op::{Op, ProxyEnv, SourceOp};
use kiln_llb::{Digest, Graph, Platform, SourceLocation, VertexMeta};

use crate::diagnostic::Diagnostic;
use crate::instructions::Dockerfile;
use crate::lint::{self, Rule};
use crate::quote::go_quote;
use crate::resolver::ImageResolver;
use crate::shell::Lexer;
use crate::source::SourceFile;
use crate::syntax::{Node, Word};

use super::lint_config::Lints;
use super::options::{BuildOptions, SOURCE_DATE_EPOCH};
use super::state::{Base, EnvList, OutlineArgInfo, Stage, StageOutline};

pub(super) type R<T> = Result<T, Diagnostic>;

const CONTEXT: &str = "context";

/// A build being planned: its stages, and what they share.
pub(super) struct Converter<'a> {
    pub stages: Vec<Stage>,
    pub cx: Shared<'a>,
}

pub(super) struct Shared<'a> {
    pub file: &'a SourceFile,
    pub opts: &'a BuildOptions,
    pub resolver: &'a dyn ImageResolver,
    pub lex: Lexer,
    pub global_args: EnvList,
    pub graph: Graph,
    pub target_platform: Platform,
    pub implicit_target: bool,
    pub proxy: ProxyEnv,
    context: Option<Digest>,
    pub ctx_paths: BTreeSet<String>,
    pub warnings: Vec<Diagnostic>,
    pub declared_args: BTreeSet<String>,
    /// RUN mounts without `from=` (see `stages::command_sources`).
    pub anonymous_states: usize,
    /// Stage names (lowercase) → index in `Converter::stages`.
    pub stage_index: HashMap<String, usize>,
    /// Lint warnings found so far, and which rules run.
    pub lints: Lints,
    /// The global ARGs, for `--call outline`.
    pub meta_outline: HashMap<String, OutlineArgInfo>,
    /// `--build-context` names some stage, `FROM` or `--from` named.
    pub used_contexts: BTreeSet<String>,
    /// Settings (env, labels, history, ONBUILD) stages copied from their base
    /// stages so far (see [`MAX_INHERITED_SETTINGS`]).
    pub inherited_settings: usize,
    /// The build's SOURCE_DATE_EPOCH (`epoch.rs`).
    pub epoch: Option<i64>,
    /// What `epoch.rs` made of a `--build-arg SOURCE_DATE_EPOCH`: its
    /// value as a number, or `None` for an empty one (removed).
    pub epoch_arg: Option<Option<String>>,
}

/// A bound on what stages copy from their base stages in all: about 1 GB of
/// configurations. Real Dockerfiles stay below 10,000; a chain of 2,000 stages
/// each FROM the previous one with an ENV each reaches 4 million.
pub(super) const MAX_INHERITED_SETTINGS: usize = 2_000_000;

impl<'a> Converter<'a> {
    pub fn new(
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
        // Any target platform can be planned (a COPY-only build for
        // windows/amd64 is fine, as in BuildKit); only RUN needs a Linux
        // stage (`run.rs`). kiln itself runs on Linux.
        if opts.build_platform.os != "linux" {
            return Err(Diagnostic::unlocated(
                file.name(),
                format!(
                    "build platform {} is not supported: kiln runs on Linux only",
                    opts.build_platform
                ),
            ));
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
        let cx = Shared {
            file,
            opts,
            resolver,
            lex: Lexer::new(df.ast.escape),
            global_args: EnvList::default(),
            graph: Graph::new(),
            target_platform,
            implicit_target,
            proxy,
            context: None,
            ctx_paths: BTreeSet::new(),
            warnings: df.ast.warnings.clone(),
            declared_args: BTreeSet::new(),
            anonymous_states: 0,
            stage_index: HashMap::new(),
            lints: Lints::default(),
            meta_outline: HashMap::new(),
            used_contexts: BTreeSet::new(),
            inherited_settings: 0,
            epoch: None,
            epoch_arg: None,
        };
        Ok(Converter {
            stages: Vec::new(),
            cx,
        })
    }

    /// The index of the stage named `name` (case-insensitive).
    pub fn find_stage(&self, name: &str) -> Option<usize> {
        self.cx.find_stage(name)
    }
}

impl Shared<'_> {
    pub fn err_at(&self, offset: usize, end_line: usize, msg: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.file, offset, msg).with_end_line(end_line)
    }

    pub fn err_node(&self, node: &Node, msg: impl Into<String>) -> Diagnostic {
        self.err_at(node.offset, node.end_line, msg)
    }

    pub fn location(&self, node: &Node) -> SourceLocation {
        SourceLocation {
            file: self.file.name().to_owned(),
            start_line: u32::try_from(node.start_line).unwrap_or(u32::MAX),
            end_line: u32::try_from(node.end_line).unwrap_or(u32::MAX),
        }
    }

    /// Records a lint warning (the configuration is applied when they are
    /// taken).
    pub fn lint(&mut self, w: Diagnostic) {
        self.lints.push(w);
    }

    pub fn find_stage(&self, name: &str) -> Option<usize> {
        self.stage_index.get(&name.to_lowercase()).copied()
    }

    /// `--build-arg KEY`, as the stages see it (SOURCE_DATE_EPOCH as
    /// `epoch.rs` resolved it).
    pub fn build_arg(&self, key: &str) -> Option<&str> {
        match &self.epoch_arg {
            Some(v) if key == SOURCE_DATE_EPOCH => v.as_deref(),
            _ => self.opts.build_args.get(key).map(String::as_str),
        }
    }

    pub fn add(&mut self, op: Op, inputs: Vec<Digest>, meta: VertexMeta) -> R<Digest> {
        self.graph.add(op, inputs, meta).map_err(|e| {
            Diagnostic::unlocated(
                self.file.name(),
                format!("internal error building the graph: {e}"),
            )
        })
    }

    /// The build context's source vertex (made on first use).
    pub fn context_source(&mut self) -> R<Digest> {
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

    pub fn new_stage(&self, stage_index: Option<usize>, base: Base, base_word: Word) -> Stage {
        Stage {
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
            image: kiln_llb::ImageConfig::default(),
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

    /// The platform stage `st` builds for.
    pub fn platform_of(&self, st: &Stage) -> Platform {
        st.platform
            .clone()
            .unwrap_or_else(|| self.target_platform.clone())
    }

    /// BuildKit's `prefixCommand`: `[stage 2/5] ` before a vertex name.
    pub fn prefix(&self, st: &mut Stage, text: &str, onbuild: bool) -> String {
        let platform = self.multi_platform_prefix(st);
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
    fn multi_platform_prefix(&self, st: &Stage) -> String {
        if self.opts.multi_platform {
            format!("{} ", self.platform_of(st).format())
        } else {
            String::new()
        }
    }

    pub fn meta(&self, st: &Stage, name: String, node: Option<&Node>) -> VertexMeta {
        VertexMeta {
            name,
            stage: st.stage_index.map(|_| st.display_name()),
            location: node.map(|n| self.location(n)),
            // `--no-cache` reaches every vertex; `--no-cache-filter` only
            // the RUN steps of its stages (`run.rs`), as in BuildKit, so
            // a FROM another stage shares is not forced for it too.
            ignore_cache: self.opts.no_cache,
        }
    }

    /// `UndefinedVar`: the variables substitution in stage `st` did not find,
    /// other than ARGs the stage declared without a value.
    pub fn report_undefined(
        &mut self,
        st: &Stage,
        offset: usize,
        end: usize,
        unmatched: &BTreeSet<String>,
    ) {
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
            let w = Rule::UndefinedVar.mark(self.err_at(
                offset,
                end,
                lint::undefined_var_message(name, hint),
            ));
            self.lint(w);
        }
    }

    /// `SecretsUsedInArgOrEnv` for one ARG or ENV key.
    pub fn lint_secret_key(&mut self, instruction: &str, key: &str, node: &Node) {
        if lint::is_secret_key(key) {
            let w = Rule::SecretsUsedInArgOrEnv.at_node(
                self.file,
                node,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({instruction} {})",
                    go_quote(key)
                ),
            );
            self.lint(w);
        }
    }
}
