//! The Dockerfile planned against the store's image resolver, once per
//! target platform, after the `oci-layout://` contexts enter the store.

use std::path::PathBuf;

use kiln_frontend::{BuildOptions, Diagnostic, Offline, SourceFile};
use kiln_llb::{Definition, Platform};
use kiln_worker::State;

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::options::ContextValue;

use super::record::Found;

/// An image resolver that remembers whether a resolution failed.
struct WatchedResolver<'a> {
    inner: &'a dyn kiln_frontend::ImageResolver,
    failed: std::cell::Cell<bool>,
}

impl kiln_frontend::ImageResolver for WatchedResolver<'_> {
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<kiln_frontend::Resolution, String> {
        let r = self.inner.resolve(reference, platform);
        if r.is_err() {
            self.failed.set(true);
        }
        r
    }

    fn source_time(&self, source: &kiln_frontend::TimedSource) -> Result<Option<i64>, String> {
        self.inner.source_time(source)
    }
}

/// The named contexts the build reads: the local directories and the
/// `oci-layout://` images (for their provenance).
pub(super) struct Imported {
    pub(super) local: Vec<(String, PathBuf)>,
    pub(super) oci_layouts: Vec<kiln_worker::attest::OciLayoutSource>,
}

/// Imports the `oci-layout://` contexts into the store before planning, as
/// pulls do, naming them in `opts`; returns the local directory contexts
/// and the layouts imported.
pub(super) fn import_contexts(
    state: &State,
    contexts: &[(String, ContextValue)],
    opts: &mut BuildOptions,
) -> Result<Imported, Failure> {
    let target_platform = opts
        .target_platform
        .clone()
        .unwrap_or_else(|| opts.build_platform.clone());
    let mut local_contexts = Vec::new();
    let mut oci_layouts = Vec::new();
    for (name, value) in contexts {
        match value {
            ContextValue::Local(dir) => local_contexts.push((name.clone(), dir.clone())),
            ContextValue::OciLayout(l) => {
                let select = match &l.digest {
                    Some(d) => {
                        kiln_worker::contexts::LayoutSelector::Digest(d.parse().map_err(|e| {
                            Failure::Usage(format!("--build-context {name}={}: {e}", l.shown()))
                        })?)
                    }
                    None => kiln_worker::contexts::LayoutSelector::Tag(
                        l.tag.clone().unwrap_or_else(|| "latest".to_owned()),
                    ),
                };
                let platform = name
                    .split_once("::")
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or_else(|| target_platform.clone());
                let layout =
                    kiln_worker::contexts::import_oci_layout(state, &l.dir, &select, &platform)
                        .map_err(anyhow::Error::new)?;
                oci_layouts.push(kiln_worker::attest::OciLayoutSource {
                    shown: l.shown(),
                    name: name
                        .split_once("::")
                        .map_or(name.as_str(), |(n, _)| n)
                        .to_owned(),
                    digest: layout.entry,
                });
                opts.named_contexts.insert(
                    name.clone(),
                    kiln_frontend::NamedContext::Resolved {
                        reference: l.shown(),
                        image: Box::new(layout.image),
                    },
                );
            }
            ContextValue::Named(_) => {}
        }
    }
    Ok(Imported {
        local: local_contexts,
        oci_layouts,
    })
}

/// The Dockerfile planned for every target platform.
pub(super) struct Planned {
    /// The plan for the first target platform.
    pub(super) first: kiln_frontend::Plan,
    /// The graphs of the other ones (`--platform a,b`).
    pub(super) more_platforms: Vec<Definition>,
    /// The warnings that are not lint warnings (build args without
    /// effect), said before the build.
    pub(super) notes: Vec<Diagnostic>,
}

/// Plans the Dockerfile once per target platform (the graphs meet in one
/// solve, `dag_of_platforms`); the bases resolved, the warnings and the
/// lint warnings (summed up after the build, as buildx does) go to
/// `found`.
pub(super) fn plan(
    file: &SourceFile,
    args: &BuildArgs,
    opts: &BuildOptions,
    resolver: &kiln_worker::StoreResolver<'_>,
    found: &mut Found,
) -> Result<Planned, Failure> {
    let watched = WatchedResolver {
        inner: resolver,
        failed: std::cell::Cell::new(false),
    };
    // A base image that could not be resolved is a registry failure (exit
    // 3), even though the frontend reports it at its FROM line.
    let plan_for = |opts: &BuildOptions| {
        kiln_frontend::plan(file, opts, &watched).map_err(|d| {
            if watched.failed.get() {
                Failure::Registry(anyhow::anyhow!("{}", d.render()))
            } else {
                Failure::from(d)
            }
        })
    };
    let planned = plan_for(opts);
    found.bases = resolver
        .resolutions()
        .into_iter()
        .map(|(r, d)| (r, d.to_string()))
        .collect();
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            // As BuildKit, a Dockerfile that fails to plan still reports
            // the warnings of the instructions before the failure.
            if matches!(e, Failure::Dockerfile(_)) {
                found.lints = kiln_frontend::check(file, opts, &Offline)
                    .warnings
                    .into_iter()
                    .filter(|w| w.rule.is_some())
                    .collect();
            }
            return Err(e);
        }
    };
    // `--platform a,b`: the Dockerfile is planned once per target platform;
    // the graphs meet in one solve (`dag_of_platforms`).
    let mut more_platforms = Vec::new();
    for p in crate::options::target_platforms(args)?.iter().skip(1) {
        let o = BuildOptions {
            target_platform: Some(p.clone()),
            ..opts.clone()
        };
        more_platforms.push(plan_for(&o)?.definition);
    }
    // Lint warnings are summed up after the build, as buildx does; other
    // warnings (build args without effect) come first.
    let (lints, notes): (Vec<_>, Vec<_>) = planned
        .warnings
        .iter()
        .cloned()
        .partition(|w| w.rule.is_some());
    found.warnings = planned.warnings.iter().map(|w| w.render()).collect();
    found.lints = lints;
    Ok(Planned {
        first: planned,
        more_platforms,
        notes,
    })
}
