//! The outputs of a build: from the flags (`-o`, `--push`, `--load`, `-t`),
//! then, once the state is open, the scratch archives of `--load` and the
//! registries pushed to as insecure.

use std::path::{Path, PathBuf};

use kiln_reference::Reference;
use kiln_worker::Output;

use crate::args::BuildArgs;
use crate::failure::Failure;
use crate::output;

/// A name as the store keeps it: `busybox` → `docker.io/library/busybox:latest`.
pub(super) fn normalize(name: &str) -> Result<String, Failure> {
    let r = Reference::parse_normalized(name)
        .map_err(|e| Failure::Usage(format!("invalid name {name:?}: {e}")))?;
    if r.digest().is_some() {
        return Err(Failure::Usage(format!(
            "invalid name {name:?}: a name to give an image cannot contain a digest"
        )));
    }
    Ok(r.with_default_tag().to_string())
}

/// The outputs the flags ask for; no `-o` means the local image store.
pub(super) fn outputs(args: &BuildArgs) -> Result<Vec<Output>, Failure> {
    let tags = args
        .tags
        .iter()
        .map(|t| normalize(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut outs = Vec::new();
    for spec in &args.outputs {
        outs.push(output::parse(spec, &tags, &normalize)?);
    }
    // Like `docker build`: the result goes to the local store unless an
    // output says otherwise; `-t` alone names it there.
    if args.push {
        if tags.is_empty() {
            return Err(Failure::Usage(
                "--push needs a name to push to (-t NAME)".to_owned(),
            ));
        }
        outs.push(output::parse("type=registry", &tags, &normalize)?);
    }
    if args.load {
        // A docker archive without dest: loaded into the engine.
        outs.push(output::parse("type=docker", &tags, &normalize)?);
    }
    let stored = outs.iter().any(|o| o.stores());
    if !stored && (outs.is_empty() || !tags.is_empty()) {
        outs.push(output::parse("type=image", &tags, &normalize)?);
    }
    Ok(outs)
}

/// Gives each `--load` output (a Docker archive without a destination) an
/// archive in `scratch`, loaded into the engine after the build; returns
/// them.
pub(super) fn load_archives(outputs: &mut [Output], scratch: &Path) -> Vec<PathBuf> {
    let mut to_load = Vec::new();
    for (i, o) in outputs.iter_mut().enumerate() {
        if o.loads() {
            let archive = scratch.join(format!("load-{i}.tar"));
            o.set_archive(archive.clone());
            to_load.push(archive);
        }
    }
    to_load
}

/// The registries of the outputs pushed with `registry.insecure=true`.
pub(super) fn insecure_hosts(outputs: &[Output]) -> Vec<String> {
    let mut insecure = Vec::new();
    for o in outputs.iter().filter(|o| o.insecure()) {
        insecure.extend(o.names().iter().filter_map(|n| {
            Reference::parse_normalized(n)
                .ok()
                .map(|r| r.domain().to_owned())
        }));
    }
    insecure
}
