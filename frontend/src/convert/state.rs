//! The state of one stage (or of an image read only by `COPY --from`/`RUN
//! --mount from=`), as BuildKit's `dispatchState`: what the stage is (name,
//! base, commands, dependencies) and, while it is dispatched, its filesystem,
//! variables and image configuration.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kiln_llb::op::Network;
use kiln_llb::{Digest, History, ImageConfig, Platform, SourceLocation};
use kiln_reference::Reference;

use crate::contexts::NamedContext;
use crate::instructions::Command;
use crate::shell::EnvLookup;
use crate::syntax::{Node, Word};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Ordered variables with BuildKit's `EnvList` semantics: setting a key moves
/// it to the end. Lookups and updates are O(1) (a stage may set thousands of
/// variables); the order is kept as a sequence number per key.
#[derive(Debug, Clone, Default)]
pub(super) struct EnvList {
    pub vars: HashMap<String, (u64, String)>,
    next: u64,
}

impl EnvList {
    pub fn set(&mut self, k: &str, v: &str) {
        self.next += 1;
        self.vars.insert(k.to_owned(), (self.next, v.to_owned()));
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(|(_, v)| v.as_str())
    }

    pub fn remove(&mut self, k: &str) {
        self.vars.remove(k);
    }

    /// `KEY=value` in order of last assignment.
    pub fn to_strings(&self) -> Vec<String> {
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
pub(super) struct Overlay<'a> {
    pub top: &'a [(String, String)],
    pub base: &'a dyn EnvLookup,
}

impl EnvLookup for Overlay<'_> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.top.lookup(name).or_else(|| self.base.lookup(name))
    }
}

/// An ARG as `--call outline` reports it.
#[derive(Debug, Clone, Default)]
pub(super) struct OutlineArgInfo {
    pub value: String,
    pub description: String,
    pub line: usize,
    /// Global ARGs its default refers to (they count as used with it).
    pub deps: BTreeSet<String>,
}

/// What a stage declares and uses, for `--call outline` (BuildKit's
/// `outlineCapture`).
#[derive(Debug, Clone, Default)]
pub(super) struct StageOutline {
    /// ARGs the stage declares with a value of its own.
    pub args: HashMap<String, OutlineArgInfo>,
    /// ARGs the stage uses: in its FROM, or declared in it.
    pub used: BTreeSet<String>,
    /// Secret and SSH ids → (required, line).
    pub secrets: BTreeMap<String, (bool, usize)>,
    pub ssh: BTreeMap<String, (bool, usize)>,
}

#[derive(Debug, Clone)]
pub(super) enum Base {
    Scratch,
    /// Index of the base stage's state.
    Stage(usize),
    Image(Reference),
    /// A named build context other than an image (`--build-context`).
    Named(String, NamedContext),
}

#[derive(Debug, Clone)]
pub(super) struct Cmd {
    pub command: Command,
    /// State indices this command reads (COPY --from, RUN --mount from=).
    pub sources: Vec<Option<usize>>,
    pub onbuild: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Stage {
    /// Position among the Dockerfile's stages; `None` for images used only by
    /// `COPY --from`/`RUN --mount from=`.
    pub stage_index: Option<usize>,
    /// `AS` name (lowercase).
    pub name: Option<String>,
    /// Name in progress prefixes (`build`, `stage-1`, or empty when the build has
    /// a single state).
    pub display: String,
    pub base: Base,
    pub base_word: Word,
    pub platform: Option<Platform>,
    pub node: Option<Node>,
    pub commands: Vec<Cmd>,
    /// States this one reads, with the offset of the instruction that does.
    pub deps: Vec<(usize, usize)>,
    pub cmd_total: usize,
    pub cmd_index: usize,
    pub resolved: bool,
    pub onbuild_init: bool,
    pub dispatched: bool,
    /// Its RUN steps ignore the cache (`--no-cache`, or the stage is named
    /// by `--no-cache-filter`).
    pub ignore_cache: bool,
    // Dispatch state.
    pub root: Option<Digest>,
    /// For a local named context: its source vertex, which `COPY --from`
    /// reads in place while `root` is still the copy of it made for `FROM`
    /// (source, copy).
    pub local: Option<(Digest, Digest)>,
    pub env: EnvList,
    pub cwd: String,
    pub user: String,
    pub network: Network,
    pub hostname: String,
    pub image: ImageConfig,
    pub build_args: Vec<(String, Option<String>)>,
    pub cmd_set: bool,
    /// A WORKDIR of this stage or its base stage ran (`WorkdirRelativePath`).
    pub workdir_set: bool,
    /// Where this stage last set CMD, ENTRYPOINT and HEALTHCHECK (offset, end
    /// line), for `MultipleInstructionsDisallowed`.
    pub used_once: [Option<(usize, usize)>; 3],
    /// What `--call outline` reports about this stage.
    pub outline: StageOutline,
    pub image_digest: Option<String>,
    pub location: SourceLocation,
    /// Position of each key in `image.env` (built on first use).
    pub image_env_index: HashMap<String, usize>,
}

impl Stage {
    pub fn display_name(&self) -> String {
        match (&self.name, self.stage_index) {
            (Some(n), _) => n.clone(),
            (None, Some(i)) => format!("stage-{i}"),
            (None, None) => self.base_word.value.clone(),
        }
    }

    /// The filesystem `COPY --from` this state reads: a local named context
    /// in place, else the root.
    pub fn read_root(&self) -> Option<Digest> {
        match self.local {
            Some((local, copy)) if self.root == Some(copy) => Some(local),
            _ => self.root,
        }
    }

    /// Appends a history entry. Steps that run through the solver (RUN, COPY,
    /// ADD) are marked `# buildkit`, as BuildKit marks them; WORKDIR makes a
    /// layer without the mark.
    pub fn commit(&mut self, created_by: String, layer: bool) {
        self.commit_with(created_by, layer, layer);
    }

    pub fn commit_with(&mut self, created_by: String, layer: bool, marked: bool) {
        let created_by = if marked {
            format!("{created_by} # buildkit")
        } else {
            created_by
        };
        self.image.history.push(History {
            created_by,
            comment: HISTORY_COMMENT.to_owned(),
            empty_layer: !layer,
        });
    }

    /// Sets `key=value` in the environment and the image configuration.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.set(key, value);
        set_image_env(&mut self.image, &mut self.image_env_index, key, value);
    }
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

pub(super) fn empty_image(platform: &Platform) -> ImageConfig {
    ImageConfig {
        platform: Some(platform.clone()),
        working_dir: "/".to_owned(),
        env: default_path(platform).into_iter().collect(),
        ..ImageConfig::default()
    }
}

/// The `PATH` a stage gets when its image sets none: none on Windows (left
/// to the OS, BuildKit #5445).
pub(super) fn default_path(platform: &Platform) -> Option<String> {
    (platform.os != "windows").then(|| format!("PATH={DEFAULT_PATH}"))
}

/// The shell of the shell form when the image sets none (BuildKit's
/// `defaultShell`): `cmd /S /C` for a Windows image.
pub(super) fn default_shell(image: &ImageConfig) -> Vec<String> {
    let windows = image.platform.as_ref().is_some_and(|p| p.os == "windows");
    let shell: &[&str] = if windows {
        &["cmd", "/S", "/C"]
    } else {
        &["/bin/sh", "-c"]
    };
    shell.iter().map(|s| (*s).to_owned()).collect()
}

/// The config of an image that could not be looked up: nothing known.
pub(super) fn empty_image_unresolved(platform: &Platform) -> ImageConfig {
    ImageConfig {
        platform: Some(platform.clone()),
        ..ImageConfig::default()
    }
}
