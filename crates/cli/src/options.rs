//! From command-line flags to the frontend's [`BuildOptions`], and the
//! Dockerfile to read.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use kiln_frontend::lint::IgnoreRules;
use kiln_frontend::{BuildOptions, SourceFile};
use kiln_llb::Platform;
use kiln_llb::op::Network;

use crate::Failure;
use crate::args::BuildArgs;

/// Refuses flags whose feature has not landed: never ignore a flag.
pub fn reject_unsupported(args: &BuildArgs) -> Result<(), Failure> {
    if let Some(first) = args.unsupported().first() {
        return Err(Failure::Usage(format!("{first} is not supported yet")));
    }
    if args.context == "-" {
        return Err(Failure::Usage(
            "reading the build context from stdin (CONTEXT `-`) is not supported yet".into(),
        ));
    }
    Ok(())
}

/// The frontend options the flags describe. `env` looks up `--build-arg KEY`
/// values given without `=`, as Docker takes them from the environment.
pub fn build_options(
    args: &BuildArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BuildOptions, Failure> {
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
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
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
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
    let target_platform = match args.platforms.as_slice() {
        [] => None,
        [p] => Some(
            p.parse::<Platform>()
                .map_err(|e| Failure::Usage(format!("--platform: {e}")))?,
        ),
        _ => {
            return Err(Failure::Usage(
                "--platform with several platforms is not supported yet".into(),
            ));
        }
    };
    Ok(BuildOptions {
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
    })
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

/// Reads the Dockerfile: `-f PATH`, `-f -` (stdin), or `CONTEXT/Dockerfile`.
/// Its name in messages is the path as the user would type it.
pub fn read_dockerfile(args: &BuildArgs) -> Result<SourceFile, Failure> {
    let (name, bytes) = match args.file.as_deref() {
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the Dockerfile from stdin")?;
            ("stdin".to_owned(), buf)
        }
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading Dockerfile {path}"))?;
            (path.to_owned(), bytes)
        }
        None => {
            let ctx = Path::new(&args.context);
            if !ctx.is_dir() {
                return Err(Failure::Other(anyhow::anyhow!(
                    "build context {} is not a directory",
                    args.context
                )));
            }
            let path = ctx.join("Dockerfile");
            let name = if args.context == "." {
                "Dockerfile".to_owned()
            } else {
                path.display().to_string()
            };
            let bytes = std::fs::read(&path)
                .with_context(|| format!("reading Dockerfile {}", path.display()))?;
            (name, bytes)
        }
    };
    Ok(SourceFile::from_bytes(name, bytes)?)
}
