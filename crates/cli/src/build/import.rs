//! `kiln import`: a tar archive as a one-layer image, `--change`
//! instructions parsed by the frontend.

use std::io::{Read, Write as _};
use std::path::Path;

use anyhow::Context as _;
use kiln_frontend::{BuildOptions, Offline, SourceFile};
use kiln_llb::Platform;
use kiln_worker::{ImportRequest, State};

use crate::args::ImportArgs;
use crate::failure::Failure;
use crate::store::env_var;

use super::epoch::now;
use super::outputs::normalize;

/// The configuration `--change` instructions describe, parsed by the
/// frontend (`FROM scratch` plus the instructions).
fn changes(args: &ImportArgs, platform: &Platform) -> Result<kiln_llb::ImageConfig, Failure> {
    const ALLOWED: [&str; 10] = [
        "CMD",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "LABEL",
        "ONBUILD",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ];
    let mut text = String::from("FROM scratch\n");
    for c in &args.changes {
        let word = c
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !ALLOWED.contains(&word.as_str()) {
            return Err(Failure::Usage(format!(
                "--change {c:?}: {word} is not allowed (allowed: {})",
                ALLOWED.join(", ")
            )));
        }
        text.push_str(c);
        text.push('\n');
    }
    let opts = BuildOptions {
        target_platform: Some(platform.clone()),
        build_platform: platform.clone(),
        ..BuildOptions::default()
    };
    let config_of = |text: String| -> Result<kiln_llb::ImageConfig, Failure> {
        let file = SourceFile::from_bytes("--change".to_owned(), text.into_bytes())?;
        let plan = kiln_frontend::plan(&file, &opts, &Offline)?;
        Ok(plan.definition.target_stage().config.clone())
    };
    // What the changes set is what differs from a bare `FROM scratch` stage
    // (the frontend gives every stage a default PATH and working directory;
    // `docker import` adds neither).
    let baseline = config_of("FROM scratch\n".to_owned())?;
    let changed = config_of(text)?;
    let mut out = kiln_llb::ImageConfig {
        platform: changed.platform.clone(),
        ..kiln_llb::ImageConfig::default()
    };
    let base_json = serde_json::to_value(&baseline).context("encoding the configuration")?;
    let mut json = serde_json::to_value(&changed).context("encoding the configuration")?;
    if let (Some(obj), Some(base)) = (json.as_object_mut(), base_json.as_object()) {
        obj.retain(|k, v| k != "history" && k != "env" && base.get(k) != Some(v));
        let merged: kiln_llb::ImageConfig =
            serde_json::from_value(serde_json::Value::Object(obj.clone()))
                .context("decoding the configuration")?;
        out = kiln_llb::ImageConfig {
            platform: out.platform,
            ..merged
        };
    }
    out.env = changed
        .env
        .iter()
        .filter(|e| !baseline.env.contains(e))
        .cloned()
        .collect();
    Ok(out)
}

/// `kiln import --platform P … NAME`: a name that has an image for another
/// platform gets an index of both (replacing its image for `P`, if any), as a
/// registry would; `FROM NAME` then picks the build's platform.
fn name_platform(
    state: &State,
    name: &str,
    platform: &Platform,
    new: kiln_oci::ImageRef,
) -> anyhow::Result<()> {
    kiln_worker::images::naming(state, &[new.id], |ix| {
        let mut per = ix.platforms_of(name)?;
        if per.is_empty()
            && let Some(old) = ix.get(name)?
        {
            let p = kiln_worker::image::load_config(state, &old.id)?.platform();
            if !p.os.is_empty() {
                per.insert(p.format(), old);
            }
        }
        per.insert(platform.format(), new);
        if per.len() == 1 {
            ix.set(name, new)?;
            return Ok(());
        }
        let host = Platform::host().format();
        let default = per.get(&host).copied().unwrap_or(new);
        let all: Vec<(String, kiln_oci::ImageRef)> = per.into_iter().collect();
        ix.set_platforms(name, &all, default)?;
        Ok(())
    })?;
    Ok(())
}

/// Writes the manifest of the imported image `id` (its one gzip layer
/// blob, as the import stored it) into the content store.
fn import_manifest(state: &State, id: &kiln_llb::Digest) -> anyhow::Result<kiln_llb::Digest> {
    let config = kiln_worker::image::load_config(state, id)?;
    let mut layers = Vec::with_capacity(config.rootfs.diff_ids.len());
    for d in &config.rootfs.diff_ids {
        let blobs = state.layer_blobs.list(d)?;
        let (_, desc) = blobs
            .into_iter()
            .find(|(c, _)| *c == kiln_oci::Compression::gzip())
            .ok_or_else(|| anyhow::anyhow!("layer {d}: the import stored no gzip blob"))?;
        layers.push(desc);
    }
    let written =
        kiln_oci::write_image(&state.content, &config, &layers, kiln_oci::MediaTypes::Oci)?;
    Ok(written.manifest.digest)
}

/// `kiln import`.
pub fn import(root: Option<&Path>, args: &ImportArgs) -> Result<(), Failure> {
    let platform = match &args.platform {
        None => Platform::host(),
        Some(p) => p
            .parse::<Platform>()
            .map_err(|e| Failure::Usage(format!("--platform: {e}")))?,
    };
    let config = changes(args, &platform)?;
    let name = args.name.as_deref().map(normalize).transpose()?;
    let state = crate::store::open_for_layers(root)?;
    let _lock = crate::store::lock(&state, kiln_worker::lock::LockKind::Shared)?;
    let reader: Box<dyn Read> = if args.file == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file))?,
        ))
    };
    let created = match env_var("SOURCE_DATE_EPOCH").and_then(|s| s.parse::<i64>().ok()) {
        Some(e) => (e, 0),
        None => now(),
    };
    let id = kiln_worker::import(
        &state,
        ImportRequest {
            tar: reader,
            config,
            comment: args
                .message
                .clone()
                .unwrap_or_else(|| "Imported from -".to_owned()),
            platform: platform.clone(),
            created,
        },
    )
    .with_context(|| format!("importing {}", args.file))?;
    // The image's manifest, as `docker import` into containerd's image store
    // makes one: what `kiln images --digests` shows and what a push of the
    // name sends (the layer as imported, gzip, OCI media types).
    let manifest = import_manifest(&state, &id).context("writing the image manifest")?;
    if let Some(n) = name {
        let new = kiln_oci::ImageRef {
            id,
            manifest: Some(manifest),
        };
        if args.platform.is_some() {
            name_platform(&state, &n, &platform, new).context("naming the image")?;
        } else {
            kiln_worker::images::naming(&state, &[id], |ix| Ok(ix.set(&n, new)?))
                .context("naming the image")?;
        }
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{id}");
    Ok(())
}
