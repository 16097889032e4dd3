//! `kiln imagetools create`: the index of the sources, pushed under every
//! `-t` after the sources' blobs and manifests are copied to its repository.

use std::io::Write as _;

use anyhow::Context as _;
use kiln_llb::Digest;
use kiln_reference::Reference;
use kiln_registry::{Client, PushedBlob};
use serde_json::{Map, Value};

use super::annotation::parse_annotation;
use super::combine::combine;
use super::descriptor::{
    desc_digest, desc_str, is_index_type, is_manifest_type, oci_desc, parse_named,
};
use super::source::{load_platform, parse_source, resolve_source};
use crate::args::ImagetoolsCreateArgs;
use crate::failure::Failure;
use crate::globals::Globals;

/// What a copy of a source to a repository did with the blobs.
#[derive(Debug, Default)]
pub(super) struct Copied {
    present: usize,
    mounted: usize,
    /// Streamed from the source registry: a mount refused.
    streamed_refused: Vec<Digest>,
    /// Streamed from another registry.
    streamed_across: usize,
    manifests: usize,
}

/// Copies the manifest or index `bytes` (descriptor `desc`) and everything
/// it refers to from `from` to `to`, manifests by digest.
pub(super) fn copy_chain(
    client: &Client,
    from: &Reference,
    to: &Reference,
    desc: &Map<String, Value>,
    bytes: &[u8],
    copied: &mut Copied,
) -> Result<(), Failure> {
    let t = desc_str(desc, "mediaType").to_owned();
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Failure::Other(anyhow::anyhow!("{from}: invalid manifest: {e}")))?;
    if is_index_type(&t) {
        for m in v["manifests"].as_array().into_iter().flatten() {
            let Value::Object(m) = m else { continue };
            let child = client.get_manifest_in(from, desc_str(m, "digest"))?;
            let mut md = m.clone();
            if desc_str(&md, "mediaType").is_empty() {
                md.insert("mediaType".into(), Value::String(child.media_type.clone()));
            }
            copy_chain(client, from, to, &md, &child.bytes, copied)?;
        }
    } else {
        let mut blobs = Vec::new();
        if let Some(Value::Object(c)) = v.get("config") {
            blobs.push(c.clone());
        }
        for l in v["layers"].as_array().into_iter().flatten() {
            if let Value::Object(l) = l {
                blobs.push(l.clone());
            }
        }
        let same_registry = from.domain() == to.domain();
        for b in &blobs {
            let d = oci_desc(b)?;
            match client.copy_blob(from, to, &d)? {
                PushedBlob::Existed => copied.present += 1,
                PushedBlob::Mounted => copied.mounted += 1,
                PushedBlob::Uploaded if same_registry => copied.streamed_refused.push(d.digest),
                PushedBlob::Uploaded => copied.streamed_across += 1,
            }
        }
    }
    let digest = desc_digest(desc)?;
    client.put_manifest(to, &digest.to_string(), &t, bytes)?;
    copied.manifests += 1;
    Ok(())
}

pub(super) fn create(globals: &Globals, args: &ImagetoolsCreateArgs) -> Result<(), Failure> {
    if args.sources.is_empty() && args.files.is_empty() {
        return Err(Failure::Usage("no sources specified".to_owned()));
    }
    if !args.dry_run && args.tags.is_empty() {
        return Err(Failure::Usage(
            "can't push with no tags specified, please set --tag or --dry-run".to_owned(),
        ));
    }
    let quiet = match args.progress.as_str() {
        "auto" | "plain" | "tty" => false,
        "quiet" | "none" => true,
        other => {
            return Err(Failure::Usage(format!(
                "invalid --progress {other:?}: expected auto, plain, tty or quiet"
            )));
        }
    };
    let log = |line: &str| {
        if !quiet {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    };
    let warn = |line: &str| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    };
    let annotations = args
        .annotation
        .iter()
        .map(|a| parse_annotation(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut raw: Vec<String> = Vec::new();
    for f in &args.files {
        raw.push(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the source descriptor {}", f.display()))?,
        );
    }
    raw.extend(args.sources.iter().cloned());
    let mut tags = Vec::new();
    for t in &args.tags {
        let r = parse_named(t)?;
        if r.digest().is_some() {
            return Err(Failure::Usage(format!(
                "-t {t}: the new index is pushed under a tag, not a digest"
            )));
        }
        tags.push(r.with_default_tag());
    }
    if args.append {
        match tags.first() {
            Some(t) => raw.insert(0, t.to_string()),
            None => {
                return Err(Failure::Usage(
                    "--append needs a -t naming the index to add to".to_owned(),
                ));
            }
        }
    }
    let mut srcs = raw
        .iter()
        .map(|s| parse_source(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut repos: Vec<String> = tags.iter().map(Reference::name).collect();
    repos.extend(
        srcs.iter()
            .filter_map(|s| s.reference.as_ref().map(Reference::name)),
    );
    repos.sort();
    repos.dedup();
    if repos.is_empty() {
        return Err(Failure::Usage(
            "no repositories specified, please set a reference in tag or source".to_owned(),
        ));
    }
    for s in srcs.iter_mut() {
        if s.reference.is_some() {
            continue;
        }
        if repos.len() != 1 {
            return Err(Failure::Usage(format!(
                "multiple repositories specified, cannot infer repository for {:?}",
                s.arg
            )));
        }
        let repo = parse_named(&repos[0])?;
        let digest = s
            .desc
            .as_ref()
            .map(|d| desc_str(d, "digest").to_owned())
            .unwrap_or_default();
        s.reference = Some(
            repo.with_digest(&digest)
                .map_err(|e| Failure::Usage(format!("source {:?}: {e}", s.arg)))?,
        );
    }
    let client = crate::registry::client(globals, &[])?;
    let mut resolved = Vec::with_capacity(srcs.len());
    for s in &srcs {
        let Some(r) = &s.reference else { continue };
        let repo = r.clone().with_default_tag();
        let mut res = resolve_source(&client, &repo, s)?;
        let t = desc_str(&res.desc, "mediaType").to_owned();
        if is_manifest_type(&t) {
            load_platform(&client, &mut res)?;
        } else if t == "application/vnd.docker.distribution.manifest.v1+json"
            || t == "application/vnd.docker.distribution.manifest.v1+prettyjws"
        {
            return Err(Failure::Usage(format!(
                "{}: schema1 manifests are not allowed in manifest lists",
                s.arg
            )));
        } else if !is_index_type(&t) {
            return Err(Failure::Usage(format!(
                "{}: {t:?} is neither an image manifest nor an index",
                s.arg
            )));
        }
        resolved.push(res);
    }
    let (bytes, desc) = combine(&resolved, &annotations, &warn)?;
    if args.dry_run {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&bytes);
        let _ = out.write_all(b"\n");
        return Ok(());
    }
    let media_type = desc_str(&desc, "mediaType").to_owned();
    let digest = desc_str(&desc, "digest").to_owned();
    for t in &tags {
        log(&format!("pushing {t}"));
        for s in &resolved {
            if s.repo.name() == t.name() {
                continue;
            }
            log(&format!(
                "copying {} from {} to {t}",
                desc_str(&s.desc, "digest"),
                s.repo
            ));
            let mut copied = Copied::default();
            copy_chain(&client, &s.repo, t, &s.desc, &s.bytes, &mut copied)?;
            for d in &copied.streamed_refused {
                log(&format!(
                    "the registry refused to mount {d} from {}: copied it by streaming from \
                     the source repository (not through the local store)",
                    s.repo.name()
                ));
            }
            log(&format!(
                "  manifests: {}; blobs: {} mounted, {} already there, {} streamed",
                copied.manifests,
                copied.mounted,
                copied.present,
                copied.streamed_refused.len() + copied.streamed_across
            ));
        }
        log(&format!("pushing {digest} to {t}"));
        let tag = t.tag().unwrap_or("latest").to_owned();
        client.put_manifest(t, &tag, &media_type, &bytes)?;
    }
    Ok(())
}
