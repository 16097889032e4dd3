//! From command-line flags to the frontend's [`BuildOptions`], and the
//! Dockerfile to read.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_frontend::lint::IgnoreRules;
use kiln_frontend::{BuildOptions, NamedContext, ResolvedImage, SourceFile};
use kiln_llb::Platform;
use kiln_llb::op::Network;

use crate::args::BuildArgs;
use crate::failure::Failure;

/// Refuses flags whose feature has not landed: never ignore a flag.
pub fn reject_unsupported(args: &BuildArgs) -> Result<(), Failure> {
    if let Some((flag, why)) = args.unsupported().first() {
        return Err(Failure::Usage(format!("{flag} is not supported yet{why}")));
    }
    if args.context == "-" && args.file.as_deref() == Some("-") {
        return Err(Failure::Usage(
            "the build context and the Dockerfile cannot both be read from stdin (CONTEXT `-` and -f -)"
                .into(),
        ));
    }
    main_context(&args.context)?;
    Ok(())
}

/// The main build context, as `kiln build CONTEXT` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MainContext {
    /// A directory.
    Local,
    /// `-`: a tar archive (the context) or a Dockerfile on stdin.
    Stdin,
    /// A git repository (`https://host/repo.git#ref:subdir`, `git@host:repo`,
    /// `git://…`), as buildx recognises one.
    Git {
        remote: String,
        git_ref: String,
        subdir: String,
        /// `?commit=`: a prefix of the commit the ref must resolve to.
        checksum: String,
        /// `?keep-git-dir=true`: the checkout keeps `.git`.
        keep_git_dir: bool,
        skip_submodules: bool,
    },
    /// An `http://` or `https://` URL: a tar archive (the context) or a
    /// Dockerfile.
    Http { url: String },
}

impl MainContext {
    pub fn is_local(&self) -> bool {
        *self == MainContext::Local
    }
}

/// What CONTEXT names (no I/O).
pub fn main_context(spec: &str) -> Result<MainContext, Failure> {
    if spec == "-" {
        return Ok(MainContext::Stdin);
    }
    let bad = |why: &str| Failure::Usage(format!("invalid build context {spec:?}: {why}"));
    // The docker cli's and buildx's `urlutil.IsGitURL`: `github.com/…` is a
    // repository, reached over https.
    let spec = match spec.strip_prefix("github.com/") {
        Some(rest) => {
            let (path, fragment) = rest
                .split_once('#')
                .map_or((rest, None), |(p, f)| (p, Some(f)));
            let path = path.strip_suffix(".git").unwrap_or(path);
            match fragment {
                Some(f) => format!("https://github.com/{path}.git#{f}"),
                None => format!("https://github.com/{path}.git"),
            }
        }
        None => spec.to_owned(),
    };
    let spec = spec.as_str();
    if let Some(g) = kiln_frontend::gitref::parse(spec).map_err(|e| bad(&e))? {
        return Ok(MainContext::Git {
            remote: g.remote,
            git_ref: g.git_ref,
            subdir: g.subdir,
            checksum: g.checksum,
            keep_git_dir: g.keep_git_dir == Some(true),
            skip_submodules: g.submodules == Some(false),
        });
    }
    if spec.starts_with("http://") || spec.starts_with("https://") {
        return Ok(MainContext::Http {
            url: spec.to_owned(),
        });
    }
    Ok(MainContext::Local)
}

/// The frontend options the flags describe. `env` looks up `--build-arg KEY`
/// values given without `=`, as Docker takes them from the environment.
pub fn build_options(
    args: &BuildArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BuildOptions, Failure> {
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        // buildx's `listToMap`: a name is required.
        if a.is_empty() || a.starts_with('=') {
            return Err(Failure::Usage(format!(
                "invalid --build-arg {a:?}: empty key (expected KEY=VALUE, or KEY to take its value from the environment)"
            )));
        }
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_owned(), v.to_owned());
            }
            None => {
                if let Some(v) = env(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    // As buildx: SOURCE_DATE_EPOCH from the environment is the build arg
    // unless one is given (the frontend then resolves it against the
    // Dockerfile's own `ARG SOURCE_DATE_EPOCH=…` default).
    if !build_args.contains_key("SOURCE_DATE_EPOCH")
        && let Some(v) = env("SOURCE_DATE_EPOCH")
    {
        build_args.insert("SOURCE_DATE_EPOCH".to_owned(), v);
    }
    // `--build-arg BUILDKIT_MULTI_PLATFORM=1`: a multi-platform result
    // (an index, platforms in step names) even for one platform (dockerui).
    let multi_platform_requested = match build_args.get("BUILDKIT_MULTI_PLATFORM") {
        None => false,
        Some(v) => crate::args::go_bool(v).ok_or_else(|| {
            Failure::Usage(format!(
                "invalid boolean value for BUILDKIT_MULTI_PLATFORM: {v}"
            ))
        })?,
    };
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            return Err(Failure::Usage(format!(
                "invalid --label {l:?}: empty key (expected KEY=VALUE)"
            )));
        }
        labels.insert(k.to_owned(), v.to_owned());
    }
    let network = match args.network.as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(other) => {
            return Err(Failure::Usage(format!(
                "invalid --network {other:?}: expected default, none or host"
            )));
        }
    };
    let platforms = target_platforms(args)?;
    let target_platform = platforms.first().cloned();
    let mut named_contexts = BTreeMap::new();
    for (name, value) in build_contexts(args)? {
        let nc = match value {
            ContextValue::Named(nc) => nc,
            ContextValue::Local(_) => NamedContext::Local {
                source: name.clone(),
            },
            // Imported by `kiln build` once the store is open
            // ([`crate::build`]); planned as an image not yet resolved.
            ContextValue::OciLayout(l) => NamedContext::Resolved {
                reference: l.shown(),
                image: Box::new(ResolvedImage {
                    has_layers: true,
                    ..ResolvedImage::default()
                }),
            },
        };
        named_contexts.insert(name, nc);
    }
    Ok(BuildOptions {
        named_contexts,
        build_args,
        target: args.target.clone(),
        target_platform,
        build_platform: Platform::host(),
        labels,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        network,
        all_stages: false,
        dockerignore: dockerignore(args),
        // Counted before duplicates are dropped: `--platform a,a` asks
        // dockerui for several platforms, a multi-platform result (of one).
        multi_platform: args.platforms.len() > 1 || multi_platform_requested,
        // A remote context is made a directory first; `kiln build` then
        // says what it is and gives its time (`crate::remote`).
        local_context: true,
        context_epoch: None,
    })
}

/// `--platform a,b`: the target platforms, each once (a platform given
/// twice, after normalisation, is built once: BuildKit builds it twice
/// under one key, see ARCHITECTURE.md); empty when not given.
pub fn target_platforms(args: &BuildArgs) -> Result<Vec<Platform>, Failure> {
    let mut out: Vec<Platform> = Vec::new();
    for p in &args.platforms {
        let parsed = p
            .trim()
            .parse::<Platform>()
            .map_err(|e| Failure::Usage(format!("--platform: {e}")))?;
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// The context's `.dockerignore` (or `<Dockerfile>.dockerignore`), chosen as
/// the build chooses it, for the `CopyIgnoredFile` check. A file that cannot
/// be read or parsed gives no rules here: the build reports it when it opens
/// the context.
fn dockerignore(args: &BuildArgs) -> Option<Arc<dyn IgnoreRules>> {
    let dockerfile = match args.file.as_deref() {
        Some("-") | None => None,
        Some(p) => Some(Path::new(p)),
    };
    let tree = kiln_context::Tree::open_context(Path::new(&args.context), dockerfile).ok()?;
    let matcher = tree.ignore()?.clone();
    Some(Arc::new(DockerIgnore(matcher)))
}

/// `.dockerignore` rules with BuildKit's `validateCopySourcePath` logic.
#[derive(Debug)]
struct DockerIgnore(kiln_context::Matcher);

impl IgnoreRules for DockerIgnore {
    fn excludes(&self, source: &str) -> bool {
        // Exceptions make it undecidable without the files (an excluded
        // directory may have a re-included file).
        if self.0.exclusions() {
            return false;
        }
        if source == "." || source == "/" {
            // The context root: only patterns that exclude everything count.
            return self
                .0
                .patterns()
                .iter()
                .any(|p| matches!(p.as_bytes(), b"*" | b"**" | b"**/*"));
        }
        self.0
            .matches_or_parent_matches(source.as_bytes())
            .unwrap_or(false)
    }
}

/// Reads the Dockerfile: `-f PATH`, `-f -` (stdin), or `CONTEXT/Dockerfile`
/// (`CONTEXT/dockerfile` when there is no `Dockerfile`, as in BuildKit).
/// Its name in messages is the path as the user would type it.
pub fn read_dockerfile(args: &BuildArgs) -> Result<SourceFile, Failure> {
    if !main_context(&args.context)?.is_local() {
        return Err(Failure::Usage(format!(
            "this command does not support a remote build context ({}) yet: only kiln build does",
            args.context
        )));
    }
    let (name, bytes) = match args.file.as_deref() {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Failure::Usage(format!("reading the Dockerfile from stdin: {e}")))?;
            ("stdin".to_owned(), buf)
        }
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Failure::Usage(format!("reading Dockerfile {path}: {e}")))?;
            (path.to_owned(), bytes)
        }
        None => {
            let ctx = Path::new(&args.context);
            if !ctx.is_dir() {
                return Err(Failure::Usage(format!(
                    "build context {} is not a directory",
                    args.context
                )));
            }
            // `Dockerfile`, else `dockerfile` (BuildKit's `dockerui`
            // fallback, `DefaultDockerfileName` lowercased).
            let mut file = "Dockerfile";
            let mut path = ctx.join(file);
            let mut read = std::fs::read(&path);
            if matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
                let lower = ctx.join("dockerfile");
                if let Ok(bytes) = std::fs::read(&lower) {
                    (file, path, read) = ("dockerfile", lower, Ok(bytes));
                }
            }
            let name = if args.context == "." {
                file.to_owned()
            } else {
                path.display().to_string()
            };
            let bytes = read.map_err(|e| {
                Failure::Usage(format!("reading Dockerfile {}: {e}", path.display()))
            })?;
            (name, bytes)
        }
    };
    Ok(SourceFile::from_bytes(name, bytes)?)
}

/// A `--build-context` value as the cli sees it.
#[derive(Debug, Clone)]
pub enum ContextValue {
    /// Recognised without I/O (`docker-image://`, git, `https://`).
    Named(NamedContext),
    /// A local directory.
    Local(PathBuf),
    /// `oci-layout://DIR[:TAG|@DIGEST]`.
    OciLayout(OciLayout),
}

/// An image in an OCI layout directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciLayout {
    pub dir: PathBuf,
    /// `:TAG` (default `latest`), matched against the
    /// `org.opencontainers.image.ref.name` annotation.
    pub tag: Option<String>,
    /// `@sha256:…`, the manifest (or index) digest.
    pub digest: Option<String>,
}

impl OciLayout {
    /// The value as given, for display.
    pub fn shown(&self) -> String {
        let mut s = format!("oci-layout://{}", self.dir.display());
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// Splits `DIR[:TAG][@DIGEST]` (a tag is a `:` after the last `/`).
    fn parse(spec: &str) -> OciLayout {
        let (rest, digest) = match spec.rsplit_once('@') {
            Some((r, d)) if d.contains(':') => (r, Some(d.to_owned())),
            _ => (spec, None),
        };
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (dir, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_owned())),
            None => (rest, None),
        };
        OciLayout {
            dir: PathBuf::from(dir),
            tag,
            digest,
        }
    }
}

/// `--build-context NAME=VALUE` flags, checked, in order.
pub fn build_contexts(args: &BuildArgs) -> Result<Vec<(String, ContextValue)>, Failure> {
    let mut out: Vec<(String, ContextValue)> = Vec::new();
    for flag in &args.build_contexts {
        let bad = |why: &str| Failure::Usage(format!("invalid --build-context {flag:?}: {why}"));
        let (name, value) = flag
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=VALUE"))?;
        if name.is_empty() || value.is_empty() {
            return Err(bad("expected NAME=VALUE"));
        }
        let (base, platform) = name.split_once("::").unwrap_or((name, ""));
        if base.eq_ignore_ascii_case("context") || base.eq_ignore_ascii_case("scratch") {
            return Err(bad(&format!(
                "{base:?} is reserved (the main build context and the empty image cannot be replaced)"
            )));
        }
        if kiln_frontend::contexts::context_key(base).as_deref() != Some(base) {
            return Err(bad(&format!(
                "{base:?} is not a valid context name (a lowercase image name, as FROM would write it, without :latest)"
            )));
        }
        if !platform.is_empty() {
            platform
                .parse::<Platform>()
                .map_err(|e| bad(&format!("{e}")))?;
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad(&format!("context {name:?} is given twice")));
        }
        let v = if let Some(spec) = value.strip_prefix("oci-layout://") {
            let layout = OciLayout::parse(spec);
            if layout.dir.as_os_str().is_empty() {
                return Err(bad("oci-layout:// needs a directory"));
            }
            ContextValue::OciLayout(layout)
        } else if let Some(nc) =
            kiln_frontend::contexts::parse_remote(value, false).map_err(|e| bad(&e))?
        {
            ContextValue::Named(nc)
        } else if value.starts_with("target:") {
            return Err(bad(
                "target: contexts are a bake feature; kiln build does not support them",
            ));
        } else if value.contains("://") {
            return Err(bad(&format!(
                "unsupported context source {:?} (expected a directory, docker-image://, oci-layout://, a git URL or https://)",
                value.split_once("://").map_or(value, |(s, _)| s)
            )));
        } else {
            let dir = PathBuf::from(value);
            let meta = std::fs::metadata(&dir).map_err(|e| bad(&format!("{value}: {e}")))?;
            if !meta.is_dir() {
                return Err(bad(&format!("{value} is not a directory")));
            }
            ContextValue::Local(dir)
        };
        out.push((name.to_owned(), v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_args(argv: &[&str]) -> BuildArgs {
        use clap::Parser as _;
        let cli = crate::args::Cli::try_parse_from(argv).expect("arguments");
        match cli.command {
            crate::args::Command::Build(b) => b,
            _ => panic!("not a build"),
        }
    }

    #[test]
    fn source_date_epoch_from_the_environment() {
        let env = |k: &str| (k == "SOURCE_DATE_EPOCH").then(|| "42".to_owned());
        let opts = build_options(&build_args(&["kiln", "build", "."]), &env).unwrap();
        assert_eq!(opts.build_args["SOURCE_DATE_EPOCH"], "42");
        let given = build_args(&["kiln", "build", "--build-arg", "SOURCE_DATE_EPOCH=7", "."]);
        let opts = build_options(&given, &env).unwrap();
        assert_eq!(opts.build_args["SOURCE_DATE_EPOCH"], "7");
        let opts = build_options(&build_args(&["kiln", "build", "."]), &|_| None).unwrap();
        assert!(!opts.build_args.contains_key("SOURCE_DATE_EPOCH"));
    }

    #[test]
    fn buildkit_multi_platform_asks_for_an_index() {
        let with = |v: &str| {
            let arg = format!("BUILDKIT_MULTI_PLATFORM={v}");
            build_options(
                &build_args(&["kiln", "build", "--build-arg", &arg, "."]),
                &|_| None,
            )
        };
        assert!(with("1").unwrap().multi_platform);
        assert!(with("True").unwrap().multi_platform);
        assert!(!with("false").unwrap().multi_platform);
        let opts = build_options(&build_args(&["kiln", "build", "."]), &|_| None).unwrap();
        assert!(!opts.multi_platform);
        match with("yes") {
            Err(Failure::Usage(m)) => {
                assert_eq!(m, "invalid boolean value for BUILDKIT_MULTI_PLATFORM: yes");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn main_contexts_as_buildx_tells_them() {
        assert_eq!(main_context(".").unwrap(), MainContext::Local);
        assert_eq!(main_context("dir/sub").unwrap(), MainContext::Local);
        assert_eq!(main_context("-").unwrap(), MainContext::Stdin);
        assert_eq!(
            main_context("https://host/ctx.tar.gz").unwrap(),
            MainContext::Http {
                url: "https://host/ctx.tar.gz".into()
            }
        );
        assert_eq!(
            main_context("https://host/repo.git#v1:app").unwrap(),
            MainContext::Git {
                remote: "https://host/repo.git".into(),
                git_ref: "v1".into(),
                subdir: "app".into(),
                checksum: String::new(),
                keep_git_dir: false,
                skip_submodules: false,
            }
        );
        match main_context("git@host:org/repo?submodules=false#main").unwrap() {
            MainContext::Git {
                remote,
                git_ref,
                skip_submodules,
                ..
            } => assert_eq!(
                (remote.as_str(), git_ref.as_str(), skip_submodules),
                ("git@host:org/repo", "main", true)
            ),
            other => panic!("{other:?}"),
        }
        match main_context("github.com/org/repo#v1:docs").unwrap() {
            MainContext::Git {
                remote,
                git_ref,
                subdir,
                ..
            } => assert_eq!(
                (remote.as_str(), git_ref.as_str(), subdir.as_str()),
                ("https://github.com/org/repo.git", "v1", "docs")
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            main_context("https://host/repo.git?ref=a#b"),
            Err(Failure::Usage(m)) if m.contains("ref conflicts")
        ));
    }

    #[test]
    fn oci_layout_specs() {
        let p = |s: &str| OciLayout::parse(s);
        assert_eq!(
            p("/a/b"),
            OciLayout {
                dir: "/a/b".into(),
                tag: None,
                digest: None
            }
        );
        assert_eq!(p("/a/b:v1").tag.as_deref(), Some("v1"));
        assert_eq!(p("/a:x/b").dir, PathBuf::from("/a:x/b"));
        let d = p("/a/b@sha256:0123");
        assert_eq!(
            (d.dir, d.tag, d.digest.as_deref()),
            ("/a/b".into(), None, Some("sha256:0123"))
        );
    }
}
