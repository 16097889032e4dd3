//! `kiln imagetools create` and `kiln imagetools inspect`: buildx's
//! `imagetools`, for images that already sit in a registry.
//!
//! `create` makes an index (a manifest list when every entry is a Docker
//! manifest, as buildx) from single-platform images and from other indexes,
//! named by tag, by digest or as descriptors, in one or several
//! repositories, and pushes it under every `-t`. Nothing goes through the
//! local store and no layer is downloaded: manifests are fetched, a
//! manifest's config only when its platform is not known from an index, and
//! blobs reach another repository by a cross-repository mount (or, where the
//! registry refuses the mount or the repository is on another registry,
//! streamed from one registry into the other). The index bytes are those
//! buildx writes for the same sources (Go's `json.MarshalIndent` of the
//! OCI structs, field order, `omitempty` and HTML escaping included), so the
//! same sources give the same digest with either tool.
//!
//! `inspect` prints buildx's text layout (Go's `tabwriter`, trailing spaces
//! included), the raw manifest (`--raw`), or a `--format` template over
//! `.Name`, `.Manifest` and `.Image`.
//!
//! Deliberate differences from buildx 0.13: annotations of a manifest entry
//! are listed sorted by key (buildx prints them in Go's random map order);
//! `--annotation` on a result that is a Docker manifest list is refused
//! (buildx drops it silently); a `manifest-descriptor[PLATFORM]:`
//! annotation skips entries without a platform (buildx crashes on them);
//! two sources for one platform give a warning (buildx keeps both silently,
//! as kiln does).

use std::collections::BTreeMap;
use std::io::Write as _;

use anyhow::Context as _;
use kiln_llb::{Digest, Platform};
use kiln_oci::{Descriptor, media};
use kiln_reference::Reference;
use kiln_registry::{Client, PushedBlob, RegistryError};
use serde_json::{Map, Value};

use crate::args::{ImagetoolsArgs, ImagetoolsCommand, ImagetoolsCreateArgs, ImagetoolsInspectArgs};
use crate::failure::Failure;
use crate::globals::Globals;

/// Largest image config read to learn an image's platform.
const CONFIG_LIMIT: u64 = 16 << 20;

pub fn run(globals: &Globals, args: &ImagetoolsArgs) -> Result<(), Failure> {
    match &args.command {
        ImagetoolsCommand::Create(a) => create(globals, a),
        ImagetoolsCommand::Inspect(a) => inspect(globals, a),
    }
}

fn registry_failure(e: RegistryError) -> Failure {
    Failure::Registry(anyhow::Error::new(e))
}

fn parse_named(s: &str) -> Result<Reference, Failure> {
    Reference::parse_normalized(s)
        .map_err(|e| Failure::Usage(format!("invalid reference {s:?}: {e}")))
}

/// A source as given on the command line.
#[derive(Debug, Clone)]
struct Source {
    /// The repository (with the tag or digest it was named by).
    reference: Option<Reference>,
    /// A descriptor given as JSON or as a bare digest.
    desc: Option<Map<String, Value>>,
    arg: String,
}

fn parse_source(s: &str) -> Result<Source, Failure> {
    if s.starts_with("sha256") {
        let d: Digest = s.parse().map_err(|_| {
            Failure::Usage(format!(
                "failed to parse source {s:?}, valid sources are digests, references and descriptors: invalid digest"
            ))
        })?;
        let mut m = Map::new();
        m.insert("digest".into(), Value::String(d.to_string()));
        return Ok(Source {
            reference: None,
            desc: Some(m),
            arg: s.to_owned(),
        });
    }
    if let Ok(r) = Reference::parse_normalized(s) {
        return Ok(Source {
            reference: Some(r),
            desc: None,
            arg: s.to_owned(),
        });
    }
    if !s.trim_start().starts_with('{') {
        return Err(parse_named(s).err().unwrap_or_else(|| {
            Failure::Usage(format!(
                "failed to parse source {s:?}, valid sources are digests, references and descriptors"
            ))
        }));
    }
    let v: Value = serde_json::from_str(s).map_err(|e| {
        Failure::Usage(format!("failed to parse source {s:?} as a descriptor: {e}"))
    })?;
    let Value::Object(m) = v else {
        return Err(Failure::Usage(format!(
            "source {s:?}: a descriptor is a JSON object"
        )));
    };
    match m.get("digest").and_then(Value::as_str) {
        Some(d) if d.parse::<Digest>().is_ok() => {}
        _ => {
            return Err(Failure::Usage(format!(
                "source {s:?}: a descriptor needs a sha256 digest"
            )));
        }
    }
    Ok(Source {
        reference: None,
        desc: Some(m),
        arg: s.to_owned(),
    })
}

/// A source once resolved: where it is, its descriptor, its bytes.
#[derive(Debug, Clone)]
struct Resolved {
    repo: Reference,
    desc: Map<String, Value>,
    bytes: Vec<u8>,
}

fn desc_str<'a>(d: &'a Map<String, Value>, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn desc_digest(d: &Map<String, Value>) -> Result<Digest, Failure> {
    desc_str(d, "digest").parse().map_err(|_| {
        Failure::Other(anyhow::anyhow!(
            "descriptor without a valid digest: {}",
            Value::Object(d.clone())
        ))
    })
}

/// The kiln descriptor of a JSON one (for the registry client).
fn oci_desc(d: &Map<String, Value>) -> Result<Descriptor, Failure> {
    Ok(Descriptor {
        media_type: desc_str(d, "mediaType").to_owned(),
        digest: desc_digest(d)?,
        size: d.get("size").and_then(Value::as_u64).unwrap_or(0),
        urls: Vec::new(),
        annotations: BTreeMap::new(),
        platform: None,
    })
}

/// The media type of a manifest's bytes, as buildx's `detectMediaType`.
fn detect_media_type(bytes: &[u8]) -> Result<String, Failure> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| Failure::Other(anyhow::anyhow!("invalid manifest JSON: {e}")))?;
    if let Some(t) = v.get("mediaType").and_then(Value::as_str)
        && !t.is_empty()
    {
        return Ok(t.to_owned());
    }
    if v.get("config").is_some() {
        return Ok(media::DOCKER_MANIFEST.to_owned());
    }
    if v.get("fsLayers").is_some() {
        return Ok("application/vnd.docker.distribution.manifest.v1+json".to_owned());
    }
    Ok(media::DOCKER_MANIFEST_LIST.to_owned())
}

fn is_index_type(t: &str) -> bool {
    t == media::OCI_INDEX || t == media::DOCKER_MANIFEST_LIST
}

fn is_manifest_type(t: &str) -> bool {
    t == media::OCI_MANIFEST || t == media::DOCKER_MANIFEST
}

fn resolve_source(client: &Client, repo: &Reference, s: &Source) -> Result<Resolved, Failure> {
    let given = s.desc.clone();
    let has_type = given
        .as_ref()
        .is_some_and(|d| !desc_str(d, "mediaType").is_empty());
    let (mut desc, bytes) = if has_type {
        // A full descriptor: fetched by its digest from the repository.
        let d = given.clone().unwrap_or_default();
        let digest = desc_digest(&d)?;
        let fetched = client
            .get_manifest_in(repo, &digest.to_string())
            .map_err(registry_failure)?;
        (d, fetched.bytes)
    } else {
        let fetched = client.get_manifest(repo).map_err(registry_failure)?;
        let mut d = Map::new();
        d.insert(
            "mediaType".into(),
            Value::String(fetched.media_type.clone()),
        );
        d.insert("digest".into(), Value::String(fetched.digest.to_string()));
        d.insert("size".into(), Value::from(fetched.bytes.len() as u64));
        if let Some(g) = &given {
            // buildx's mergeDesc: the given size must agree; its media type,
            // annotations and platform win.
            if let Some(sz) = g.get("size").and_then(Value::as_u64)
                && sz != 0
                && sz != fetched.bytes.len() as u64
            {
                return Err(Failure::Usage(format!(
                    "invalid size mismatch for {}, {sz} != {}",
                    fetched.digest,
                    fetched.bytes.len()
                )));
            }
            for k in ["mediaType", "annotations", "platform"] {
                if let Some(v) = g.get(k) {
                    d.insert(k.into(), v.clone());
                }
            }
        }
        (d, fetched.bytes)
    };
    if desc_str(&desc, "mediaType").is_empty() {
        desc.insert(
            "mediaType".into(),
            Value::String(detect_media_type(&bytes)?),
        );
    }
    let _ = &s.arg;
    Ok(Resolved {
        repo: repo.clone(),
        desc,
        bytes,
    })
}

/// Fills in the platform of a single-image source from its config, as
/// buildx's `loadPlatform`.
fn load_platform(client: &Client, r: &mut Resolved) -> Result<(), Failure> {
    let mut p = match r.desc.get("platform") {
        Some(Value::Object(p)) => p.clone(),
        _ => Map::new(),
    };
    if desc_str(&p, "os").is_empty() || desc_str(&p, "architecture").is_empty() {
        let manifest: Value = serde_json::from_slice(&r.bytes)
            .map_err(|e| Failure::Other(anyhow::anyhow!("{}: invalid manifest: {e}", r.repo)))?;
        let config: Descriptor =
            serde_json::from_value(manifest["config"].clone()).map_err(|e| {
                Failure::Other(anyhow::anyhow!("{}: invalid manifest config: {e}", r.repo))
            })?;
        let bytes = client
            .get_blob_bytes(&r.repo, &config, CONFIG_LIMIT)
            .map_err(registry_failure)?;
        let c: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Failure::Other(anyhow::anyhow!("{}: invalid image config: {e}", r.repo))
        })?;
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
        let from_config = Platform::new(s("os"), s("architecture"), s("variant"));
        if desc_str(&p, "architecture").is_empty() {
            p.insert(
                "architecture".into(),
                Value::String(from_config.architecture.clone()),
            );
            if desc_str(&p, "variant").is_empty() && !from_config.variant.is_empty() {
                p.insert("variant".into(), Value::String(from_config.variant.clone()));
            }
        }
        if desc_str(&p, "os").is_empty() {
            p.insert("os".into(), Value::String(from_config.os.clone()));
        }
    }
    r.desc.insert("platform".into(), Value::Object(p));
    Ok(())
}

/// `os/arch[/variant]` of a descriptor's platform, as `platforms.Format`.
fn platform_string(d: &Map<String, Value>) -> Option<String> {
    let Some(Value::Object(p)) = d.get("platform") else {
        return None;
    };
    let os = desc_str(p, "os");
    let mut s = format!(
        "{}/{}",
        if os.is_empty() { "unknown" } else { os },
        desc_str(p, "architecture")
    );
    let v = desc_str(p, "variant");
    if !v.is_empty() {
        s.push('/');
        s.push_str(v);
    }
    Some(s)
}

/// A parsed `--annotation`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Annotation {
    kind: String,
    platform: Option<String>,
    key: String,
    value: String,
}

/// buildx's `ParseAnnotations`, with kiln's refusals for what buildx's
/// `imagetools create` refuses.
fn parse_annotation(a: &str) -> Result<Annotation, Failure> {
    let Some((k, v)) = a.split_once('=') else {
        return Err(Failure::Usage(format!(
            "invalid annotation {a:?}, expected key=value"
        )));
    };
    let re = regex_lite(k).ok_or_else(|| {
        Failure::Usage(format!(
            "invalid annotation format, expected <type>:<key>=<value>, got {a:?}"
        ))
    })?;
    let (kind, platform, key) = re;
    match kind.as_str() {
        "index" | "manifest-descriptor" => {}
        "" | "manifest" => {
            return Err(Failure::Usage(format!(
                "--annotation {a:?}: {kind:?} annotations are not supported yet (use index: or manifest-descriptor:)"
            )));
        }
        "index-descriptor" => {
            return Err(Failure::Usage(format!(
                "--annotation {a:?}: \"index-descriptor\" annotations are invalid while creating an image"
            )));
        }
        other => {
            return Err(Failure::Usage(format!(
                "--annotation {a:?}: unknown annotation type {other:?}"
            )));
        }
    }
    let platform = match platform {
        Some(p) => Some(
            p.parse::<Platform>()
                .map_err(|e| Failure::Usage(format!("--annotation {a:?}: invalid platform: {e}")))?
                .format(),
        ),
        None => None,
    };
    Ok(Annotation {
        kind,
        platform,
        key,
        value: v.to_owned(),
    })
}

/// `^(?:([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?:)?(\S+)$` by hand: (type,
/// platform, key).
fn regex_lite(k: &str) -> Option<(String, Option<String>, String)> {
    let valid_key = |s: &str| !s.is_empty() && !s.chars().any(char::is_whitespace);
    let valid_type =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    let valid_platform = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '-'))
    };
    // Try the prefixed forms first, as the regular expression's greedy
    // optional group does.
    if let Some((head, key)) = k.split_once(':') {
        if let Some(open) = head.find('[')
            && head.ends_with(']')
        {
            let (t, p) = (&head[..open], &head[open + 1..head.len() - 1]);
            if valid_type(t) && valid_platform(p) && valid_key(key) {
                return Some((t.to_owned(), Some(p.to_owned()), key.to_owned()));
            }
        } else if valid_type(head) && valid_key(key) {
            return Some((head.to_owned(), None, key.to_owned()));
        }
    }
    valid_key(k).then(|| (String::new(), None, k.to_owned()))
}

/// The index buildx's `Combine` makes of `srcs`: its bytes and media type.
/// A single index source with no annotations is kept as it is.
fn combine(
    srcs: &[Resolved],
    annotations: &[Annotation],
    warn: &dyn Fn(&str),
) -> Result<(Vec<u8>, Map<String, Value>), Failure> {
    if srcs.len() == 1 && annotations.is_empty() {
        let t = desc_str(&srcs[0].desc, "mediaType");
        if is_index_type(t) {
            return Ok((srcs[0].bytes.clone(), srcs[0].desc.clone()));
        }
    }
    let mut descs: Vec<Map<String, Value>> = Vec::new();
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    let mut add = |d: Map<String, Value>| {
        let digest = desc_str(&d, "digest").to_owned();
        match at.get(&digest) {
            Some(&i) => {
                let old = &mut descs[i];
                if desc_str(old, "mediaType").is_empty()
                    && let Some(t) = d.get("mediaType")
                {
                    old.insert("mediaType".into(), t.clone());
                }
                if let Some(p) = d.get("platform") {
                    old.insert("platform".into(), p.clone());
                }
                let mut ann = match old.remove("annotations") {
                    Some(Value::Object(a)) => a,
                    _ => Map::new(),
                };
                if let Some(Value::Object(a)) = d.get("annotations") {
                    for (k, v) in a {
                        ann.insert(k.clone(), v.clone());
                    }
                }
                old.insert("annotations".into(), Value::Object(ann));
            }
            None => {
                at.insert(digest, descs.len());
                descs.push(d);
            }
        }
    };
    for s in srcs {
        let t = desc_str(&s.desc, "mediaType");
        if is_index_type(t) {
            let idx: Value = serde_json::from_slice(&s.bytes)
                .map_err(|e| Failure::Other(anyhow::anyhow!("{}: invalid index: {e}", s.repo)))?;
            for m in idx["manifests"].as_array().into_iter().flatten() {
                if let Value::Object(m) = m {
                    add(m.clone());
                }
            }
        } else {
            add(s.desc.clone());
        }
    }
    // Two images for one platform: kept, as buildx does; a client picks the
    // first.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for d in &descs {
        if let Some(p) = platform_string(d)
            && p != "unknown/unknown"
        {
            let digest = desc_str(d, "digest").to_owned();
            if let Some(first) = seen.get(&p) {
                warn(&format!(
                    "warning: two images for {p} ({first} and {digest}): both are kept, clients pick the first"
                ));
            } else {
                seen.insert(p, digest);
            }
        }
    }
    let docker = descs
        .iter()
        .filter(|d| desc_str(d, "mediaType").starts_with("application/vnd.docker."))
        .count();
    let media_type = if docker == descs.len() {
        media::DOCKER_MANIFEST_LIST
    } else {
        media::OCI_INDEX
    };
    let mut index_annotations = Map::new();
    if !annotations.is_empty() && media_type == media::DOCKER_MANIFEST_LIST {
        return Err(Failure::Usage(
            "--annotation: every source is a Docker manifest, so the result is a Docker \
             manifest list, which has no annotations (buildx drops them; push the sources \
             with OCI media types)"
                .to_owned(),
        ));
    }
    for a in annotations {
        match a.kind.as_str() {
            "index" => {
                index_annotations.insert(a.key.clone(), Value::String(a.value.clone()));
            }
            _ => {
                for d in descs.iter_mut() {
                    let applies = match &a.platform {
                        None => true,
                        Some(p) => platform_string(d).as_deref() == Some(p.as_str()),
                    };
                    let mut ann = match d.remove("annotations") {
                        Some(Value::Object(x)) => x,
                        _ => Map::new(),
                    };
                    if applies {
                        ann.insert(a.key.clone(), Value::String(a.value.clone()));
                    }
                    d.insert("annotations".into(), Value::Object(ann));
                }
            }
        }
    }
    let index = GoJson::Obj(vec![
        ("schemaVersion".into(), GoJson::Num("2".into())),
        ("mediaType".into(), GoJson::Str(media_type.into())),
        (
            "manifests".into(),
            GoJson::Arr(descs.iter().map(go_descriptor).collect()),
        ),
        ("annotations".into(), go_string_map(&index_annotations)),
    ]);
    let bytes = index.indent().into_bytes();
    let mut desc = Map::new();
    desc.insert("mediaType".into(), Value::String(media_type.into()));
    desc.insert(
        "digest".into(),
        Value::String(Digest::of(&bytes).to_string()),
    );
    desc.insert("size".into(), Value::from(bytes.len() as u64));
    Ok((bytes, desc))
}

/// What a copy of a source to a repository did with the blobs.
#[derive(Debug, Default)]
struct Copied {
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
fn copy_chain(
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
            let child = client
                .get_manifest_in(from, desc_str(m, "digest"))
                .map_err(registry_failure)?;
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
            match client.copy_blob(from, to, &d).map_err(registry_failure)? {
                PushedBlob::Existed => copied.present += 1,
                PushedBlob::Mounted => copied.mounted += 1,
                PushedBlob::Uploaded if same_registry => copied.streamed_refused.push(d.digest),
                PushedBlob::Uploaded => copied.streamed_across += 1,
            }
        }
    }
    let digest = desc_digest(desc)?;
    client
        .put_manifest(to, &digest.to_string(), &t, bytes)
        .map_err(registry_failure)?;
    copied.manifests += 1;
    Ok(())
}

fn create(globals: &Globals, args: &ImagetoolsCreateArgs) -> Result<(), Failure> {
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
        client
            .put_manifest(t, &tag, &media_type, &bytes)
            .map_err(registry_failure)?;
    }
    Ok(())
}

fn inspect(globals: &Globals, args: &ImagetoolsInspectArgs) -> Result<(), Failure> {
    if args.format.is_some() && args.raw {
        return Err(Failure::Usage(
            "format and raw cannot be used together".to_owned(),
        ));
    }
    let reference = parse_named(&args.name)?.with_default_tag();
    let client = crate::registry::client(globals, &[])?;
    let top = client.get_manifest(&reference).map_err(registry_failure)?;
    let mut out = std::io::stdout().lock();
    if args.raw {
        let _ = out.write_all(&top.bytes);
        return Ok(());
    }
    let v: Value = serde_json::from_slice(&top.bytes)
        .map_err(|e| Failure::Other(anyhow::anyhow!("{reference}: invalid manifest: {e}")))?;
    let text = match args.format.as_deref() {
        None => listing(&reference, &top.media_type, &top.digest, &v),
        Some(f) if f.starts_with("{{.Manifest") => {
            listing(&reference, &top.media_type, &top.digest, &v)
        }
        Some(f) => format_template(&client, &reference, &args.name, &top, &v, f)?,
    };
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

/// buildx's text layout of a manifest or index.
fn listing(reference: &Reference, media_type: &str, digest: &Digest, v: &Value) -> String {
    let mut out = String::new();
    let mut w = TabWriter::default();
    w.line("Name:", &reference.to_string());
    w.line("MediaType:", media_type);
    w.line("Digest:", &digest.to_string());
    out.push_str(&w.flush());
    if !is_index_type(media_type) {
        return out;
    }
    w.line("", "");
    w.line("Manifests:", "");
    out.push_str(&w.flush());
    let name = reference.name();
    let tagged = match reference.tag() {
        Some(t) => format!("{name}:{t}"),
        None => name,
    };
    for (i, m) in v["manifests"].as_array().into_iter().flatten().enumerate() {
        let Value::Object(m) = m else { continue };
        if i != 0 {
            w.line("", "");
        }
        w.line("  Name:", &format!("{tagged}@{}", desc_str(m, "digest")));
        w.line("  MediaType:", desc_str(m, "mediaType"));
        let Some(Value::Object(p)) = m.get("platform") else {
            continue;
        };
        w.line("  Platform:", &platform_string(m).unwrap_or_default());
        let osv = desc_str(p, "os.version");
        if !osv.is_empty() {
            w.line("  OSVersion:", osv);
        }
        if let Some(Value::Array(f)) = p.get("os.features")
            && !f.is_empty()
        {
            let f: Vec<&str> = f.iter().filter_map(Value::as_str).collect();
            w.line("  OSFeatures:", &f.join(", "));
        }
        if let Some(Value::Array(u)) = m.get("urls")
            && !u.is_empty()
        {
            let u: Vec<&str> = u.iter().filter_map(Value::as_str).collect();
            w.line("  URLs:", &u.join(", "));
        }
        if let Some(Value::Object(a)) = m.get("annotations")
            && !a.is_empty()
        {
            w.line("  Annotations:", "");
            out.push_str(&w.flush());
            let mut w2 = TabWriter::default();
            for (k, v) in a {
                w2.line(&format!("    {k}:"), v.as_str().unwrap_or_default());
            }
            out.push_str(&w2.flush());
        }
    }
    out.push_str(&w.flush());
    out
}

/// `--format`: the actions buildx's templates are used with.
fn format_template(
    client: &Client,
    reference: &Reference,
    name: &str,
    top: &kiln_registry::FetchedManifest,
    v: &Value,
    format: &str,
) -> Result<String, Failure> {
    let manifest = if is_index_type(&top.media_type) {
        let mut fields = vec![
            (
                "schemaVersion".to_owned(),
                GoJson::Num(v["schemaVersion"].as_u64().unwrap_or(0).to_string()),
            ),
            ("mediaType".to_owned(), omit_empty_str(&top.media_type)),
            ("digest".to_owned(), GoJson::Str(top.digest.to_string())),
            ("size".to_owned(), GoJson::Num(top.bytes.len().to_string())),
        ];
        fields.push((
            "manifests".to_owned(),
            GoJson::Arr(
                v["manifests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object)
                    .map(go_descriptor)
                    .collect(),
            ),
        ));
        let ann = v["annotations"].as_object().cloned().unwrap_or_default();
        fields.push(("annotations".to_owned(), go_string_map(&ann)));
        GoJson::Obj(fields)
    } else {
        let mut d = Map::new();
        d.insert("mediaType".into(), Value::String(top.media_type.clone()));
        d.insert("digest".into(), Value::String(top.digest.to_string()));
        d.insert("size".into(), Value::from(top.bytes.len() as u64));
        go_descriptor(&d)
    };
    let mut image: Option<GoJson> = None;
    let mut image_fn = || -> Result<GoJson, Failure> {
        if let Some(i) = &image {
            return Ok(i.clone());
        }
        let configs = image_configs(client, reference, top, v)?;
        let i = if configs.len() == 1 {
            configs.into_values().next().unwrap_or(GoJson::Null)
        } else {
            GoJson::Obj(configs.into_iter().collect())
        };
        image = Some(i.clone());
        Ok(i)
    };
    let mut out = String::new();
    // Written as given: buildx does not read `\n` or `\t` as escapes.
    let mut rest = format.to_owned();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = rest[start + 2..].to_owned();
        let Some(end) = after.find("}}") else {
            return Err(Failure::Usage(format!(
                "template: unclosed action in {format:?}"
            )));
        };
        let action = after[..end].trim();
        match action {
            ".Name" => out.push_str(name),
            "json .Name" => out.push_str(&GoJson::Str(name.to_owned()).indent()),
            "json .Manifest" => out.push_str(&manifest.indent()),
            "json .Image" => out.push_str(&image_fn()?.indent()),
            "json .Provenance" | "json .SBOM" => {
                let a = attestation_stubs(client, reference, top, v)?;
                let stubs = if action == "json .Provenance" {
                    a.provenance
                } else {
                    a.sbom
                };
                let value = if a.platforms > 1 {
                    GoJson::Obj(stubs.into_iter().collect())
                } else {
                    stubs
                        .into_values()
                        .next()
                        .unwrap_or(GoJson::Obj(Vec::new()))
                };
                out.push_str(&value.indent());
            }
            "json ." => {
                let mut fields = vec![("name".to_owned(), GoJson::Str(name.to_owned()))];
                fields.push(("manifest".to_owned(), manifest.clone()));
                let i = image_fn()?;
                if !matches!(i, GoJson::Null) {
                    fields.push(("image".to_owned(), i));
                }
                out.push_str(&GoJson::Obj(fields).indent());
            }
            other => {
                return Err(Failure::Usage(format!(
                    "--format {{{{{other}}}}} is not supported yet (kiln knows {{{{.Name}}}}, \
                     {{{{.Manifest}}}}, {{{{json .Name}}}}, {{{{json .Manifest}}}}, \
                     {{{{json .Image}}}}, {{{{json .Provenance}}}}, {{{{json .SBOM}}}} \
                     and {{{{json .}}}})"
                )));
            }
        }
        rest = after[end + 2..].to_owned();
    }
    out.push_str(&rest);
    // buildx writes the template's output as it is, without a newline.
    Ok(out)
}

/// What buildx's loader finds for `.Provenance` and `.SBOM`: per platform
/// image, `{"SLSA": predicate}` and `{"SPDX": first, "AdditionalSPDXs":
/// [rest]}` from the in-toto layers of the attestation manifests that name
/// the image (`vnd.docker.reference.digest`); images without them are
/// left out. `platforms` counts the images (buildx prints a map by
/// platform when there are several, else the one stub or `{}`).
struct AttestationStubs {
    platforms: usize,
    provenance: BTreeMap<String, GoJson>,
    sbom: BTreeMap<String, GoJson>,
}

const IN_TOTO: &str = "application/vnd.in-toto+json";
const PREDICATE_SPDX: &str = "https://spdx.dev/Document";

fn attestation_stubs(
    client: &Client,
    reference: &Reference,
    top: &kiln_registry::FetchedManifest,
    v: &Value,
) -> Result<AttestationStubs, Failure> {
    let mut out = AttestationStubs {
        platforms: 1,
        provenance: BTreeMap::new(),
        sbom: BTreeMap::new(),
    };
    if !is_index_type(&top.media_type) {
        return Ok(out);
    }
    let entries: Vec<&Map<String, Value>> = v["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter(|m| is_manifest_type(desc_str(m, "mediaType")))
        .collect();
    let refers = |m: &Map<String, Value>| -> Option<String> {
        let ann = m.get("annotations").and_then(Value::as_object)?;
        ["com.docker.reference.digest", "vnd.docker.reference.digest"]
            .iter()
            .find_map(|k| ann.get(*k).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let mut images: BTreeMap<String, String> = BTreeMap::new();
    let mut refs: BTreeMap<String, Vec<&Map<String, Value>>> = BTreeMap::new();
    for m in &entries {
        match refers(m) {
            Some(d) => refs.entry(d).or_default().push(m),
            None => {
                let p = match platform_string(m) {
                    Some(s) => s.parse::<Platform>().map(|p| p.format()).unwrap_or(s),
                    None => {
                        let child = client
                            .get_manifest_in(reference, desc_str(m, "digest"))
                            .map_err(registry_failure)?;
                        let c: Value = serde_json::from_slice(&child.bytes).unwrap_or_default();
                        let config: Descriptor = serde_json::from_value(c["config"].clone())
                            .map_err(|e| {
                                Failure::Other(anyhow::anyhow!(
                                    "{reference}: invalid manifest config: {e}"
                                ))
                            })?;
                        let c = client
                            .get_blob_bytes(reference, &config, CONFIG_LIMIT)
                            .map_err(registry_failure)?;
                        let c: Value = serde_json::from_slice(&c).unwrap_or_default();
                        let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                        Platform::new(&s("os"), &s("architecture"), &s("variant")).format()
                    }
                };
                images.insert(p, desc_str(m, "digest").to_owned());
            }
        }
    }
    out.platforms = images.len();
    for (platform, digest) in &images {
        let mut slsa = None;
        let mut spdx: Vec<GoJson> = Vec::new();
        for att in refs.get(digest).into_iter().flatten() {
            let child = client
                .get_manifest_in(reference, desc_str(att, "digest"))
                .map_err(registry_failure)?;
            let m: Value = serde_json::from_slice(&child.bytes).map_err(|e| {
                Failure::Other(anyhow::anyhow!("{reference}: invalid manifest: {e}"))
            })?;
            for layer in m["layers"].as_array().into_iter().flatten() {
                let kind = layer["annotations"]["in-toto.io/predicate-type"]
                    .as_str()
                    .unwrap_or_default();
                let is_slsa = kind.starts_with("https://slsa.dev/provenance/");
                if layer["mediaType"] != IN_TOTO || !(is_slsa || kind == PREDICATE_SPDX) {
                    continue;
                }
                if is_slsa && slsa.is_some() {
                    continue;
                }
                let desc: Descriptor = serde_json::from_value(layer.clone()).map_err(|e| {
                    Failure::Other(anyhow::anyhow!("{reference}: invalid layer: {e}"))
                })?;
                let b = client
                    .get_blob_bytes(reference, &desc, 64 << 20)
                    .map_err(registry_failure)?;
                let statement: Value = serde_json::from_slice(&b).map_err(|e| {
                    Failure::Other(anyhow::anyhow!(
                        "{reference}: invalid in-toto statement: {e}"
                    ))
                })?;
                let predicate = GoJson::from_value(&statement["predicate"]);
                if is_slsa {
                    slsa = Some(predicate);
                } else {
                    spdx.push(predicate);
                }
            }
        }
        if let Some(p) = slsa {
            out.provenance
                .insert(platform.clone(), GoJson::Obj(vec![("SLSA".to_owned(), p)]));
        }
        if !spdx.is_empty() {
            let first = spdx.remove(0);
            let rest = if spdx.is_empty() {
                GoJson::Omit
            } else {
                GoJson::Arr(spdx)
            };
            out.sbom.insert(
                platform.clone(),
                GoJson::Obj(vec![
                    ("SPDX".to_owned(), first),
                    ("AdditionalSPDXs".to_owned(), rest),
                ]),
            );
        }
    }
    Ok(out)
}

/// The image configs of an image or index, by platform (attestation
/// manifests left out, as buildx's loader does).
fn image_configs(
    client: &Client,
    reference: &Reference,
    top: &kiln_registry::FetchedManifest,
    v: &Value,
) -> Result<BTreeMap<String, GoJson>, Failure> {
    let mut out = BTreeMap::new();
    let mut one = |bytes: &[u8], platform: Option<String>| -> Result<(), Failure> {
        let m: Value = serde_json::from_slice(bytes)
            .map_err(|e| Failure::Other(anyhow::anyhow!("{reference}: invalid manifest: {e}")))?;
        let config: Descriptor = serde_json::from_value(m["config"].clone()).map_err(|e| {
            Failure::Other(anyhow::anyhow!("{reference}: invalid manifest config: {e}"))
        })?;
        let c = client
            .get_blob_bytes(reference, &config, CONFIG_LIMIT)
            .map_err(registry_failure)?;
        let c: Value = serde_json::from_slice(&c)
            .map_err(|e| Failure::Other(anyhow::anyhow!("{reference}: invalid config: {e}")))?;
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
        let p = platform
            .unwrap_or_else(|| Platform::new(s("os"), s("architecture"), s("variant")).format());
        out.insert(p, go_image(&c));
        Ok(())
    };
    if is_index_type(&top.media_type) {
        for m in v["manifests"].as_array().into_iter().flatten() {
            let Some(m) = m.as_object() else { continue };
            let ann = m.get("annotations").and_then(Value::as_object);
            let attestation = ann.is_some_and(|a| {
                a.contains_key("vnd.docker.reference.digest")
                    || a.contains_key("com.docker.reference.digest")
            });
            if attestation || !is_manifest_type(desc_str(m, "mediaType")) {
                continue;
            }
            let child = client
                .get_manifest_in(reference, desc_str(m, "digest"))
                .map_err(registry_failure)?;
            let p =
                platform_string(m).map(|s| s.parse::<Platform>().map(|p| p.format()).unwrap_or(s));
            one(&child.bytes, p)?;
        }
    } else {
        one(&top.bytes, None)?;
    }
    Ok(out)
}

/// A JSON value with the field order of a Go struct, written as Go's
/// `encoding/json` writes it.
#[derive(Debug, Clone)]
enum GoJson {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<GoJson>),
    /// Fields in order; a field whose value is [`GoJson::Omit`] is left out.
    Obj(Vec<(String, GoJson)>),
    /// An `omitempty` field that is empty.
    Omit,
}

impl GoJson {
    fn from_value(v: &Value) -> GoJson {
        match v {
            Value::Null => GoJson::Null,
            Value::Bool(b) => GoJson::Bool(*b),
            Value::Number(n) => GoJson::Num(n.to_string()),
            Value::String(s) => GoJson::Str(s.clone()),
            Value::Array(a) => GoJson::Arr(a.iter().map(GoJson::from_value).collect()),
            // Go maps: keys sorted (serde_json's map is sorted).
            Value::Object(m) => GoJson::Obj(
                m.iter()
                    .map(|(k, v)| (k.clone(), GoJson::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// `json.MarshalIndent(v, "", "  ")`.
    fn indent(&self) -> String {
        let mut s = String::new();
        self.write(&mut s, 0);
        s
    }

    fn write(&self, s: &mut String, depth: usize) {
        let pad = |s: &mut String, d: usize| {
            s.push('\n');
            for _ in 0..d {
                s.push_str("  ");
            }
        };
        match self {
            GoJson::Null | GoJson::Omit => s.push_str("null"),
            GoJson::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
            GoJson::Num(n) => s.push_str(n),
            GoJson::Str(x) => go_quote(s, x),
            GoJson::Arr(a) if a.is_empty() => s.push_str("[]"),
            GoJson::Arr(a) => {
                s.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    pad(s, depth + 1);
                    x.write(s, depth + 1);
                }
                pad(s, depth);
                s.push(']');
            }
            GoJson::Obj(f) => {
                let f: Vec<&(String, GoJson)> = f
                    .iter()
                    .filter(|(_, v)| !matches!(v, GoJson::Omit))
                    .collect();
                if f.is_empty() {
                    s.push_str("{}");
                    return;
                }
                s.push('{');
                for (i, (k, v)) in f.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    pad(s, depth + 1);
                    go_quote(s, k);
                    s.push_str(": ");
                    v.write(s, depth + 1);
                }
                pad(s, depth);
                s.push('}');
            }
        }
    }
}

/// A Go JSON string: HTML-sensitive characters and U+2028/9 escaped.
fn go_quote(s: &mut String, x: &str) {
    s.push('"');
    for c in x.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                s.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

fn omit_empty_str(x: &str) -> GoJson {
    if x.is_empty() {
        GoJson::Omit
    } else {
        GoJson::Str(x.to_owned())
    }
}

fn omit_empty(v: Option<&Value>) -> GoJson {
    match v {
        None | Some(Value::Null) => GoJson::Omit,
        Some(Value::String(s)) if s.is_empty() => GoJson::Omit,
        Some(Value::Array(a)) if a.is_empty() => GoJson::Omit,
        Some(Value::Object(m)) if m.is_empty() => GoJson::Omit,
        Some(Value::Bool(false)) => GoJson::Omit,
        Some(v) => GoJson::from_value(v),
    }
}

fn go_string_map(m: &Map<String, Value>) -> GoJson {
    if m.is_empty() {
        GoJson::Omit
    } else {
        GoJson::from_value(&Value::Object(m.clone()))
    }
}

/// An OCI descriptor in `ocispec.Descriptor`'s field order.
fn go_descriptor(d: &Map<String, Value>) -> GoJson {
    let platform = match d.get("platform") {
        Some(Value::Object(p)) => GoJson::Obj(vec![
            (
                "architecture".into(),
                GoJson::Str(desc_str(p, "architecture").to_owned()),
            ),
            ("os".into(), GoJson::Str(desc_str(p, "os").to_owned())),
            ("os.version".into(), omit_empty(p.get("os.version"))),
            ("os.features".into(), omit_empty(p.get("os.features"))),
            ("variant".into(), omit_empty(p.get("variant"))),
        ]),
        _ => GoJson::Omit,
    };
    GoJson::Obj(vec![
        ("mediaType".into(), omit_empty(d.get("mediaType"))),
        (
            "digest".into(),
            GoJson::Str(desc_str(d, "digest").to_owned()),
        ),
        (
            "size".into(),
            GoJson::Num(
                d.get("size")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    .to_string(),
            ),
        ),
        ("urls".into(), omit_empty(d.get("urls"))),
        ("annotations".into(), omit_empty(d.get("annotations"))),
        ("data".into(), omit_empty(d.get("data"))),
        ("platform".into(), platform),
        ("artifactType".into(), omit_empty(d.get("artifactType"))),
    ])
}

/// An image config in `ocispec.Image`'s field order (Docker-only fields,
/// such as `Healthcheck`, left out as buildx's struct leaves them out).
fn go_image(c: &Value) -> GoJson {
    let empty = Map::new();
    let config = c.get("config").and_then(Value::as_object).unwrap_or(&empty);
    let rootfs = c.get("rootfs").and_then(Value::as_object).unwrap_or(&empty);
    let history = c
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            GoJson::Arr(
                h.iter()
                    .filter_map(Value::as_object)
                    .map(|e| {
                        GoJson::Obj(
                            ["created", "created_by", "author", "comment", "empty_layer"]
                                .iter()
                                .map(|k| ((*k).to_owned(), omit_empty(e.get(*k))))
                                .collect(),
                        )
                    })
                    .collect(),
            )
        })
        .filter(|h| !matches!(h, GoJson::Arr(a) if a.is_empty()))
        .unwrap_or(GoJson::Omit);
    let s = |k: &str| {
        GoJson::Str(
            c.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        )
    };
    GoJson::Obj(vec![
        ("created".into(), omit_empty(c.get("created"))),
        ("author".into(), omit_empty(c.get("author"))),
        ("architecture".into(), s("architecture")),
        ("variant".into(), omit_empty(c.get("variant"))),
        ("os".into(), s("os")),
        ("os.version".into(), omit_empty(c.get("os.version"))),
        ("os.features".into(), omit_empty(c.get("os.features"))),
        (
            "config".into(),
            GoJson::Obj(
                [
                    "User",
                    "ExposedPorts",
                    "Env",
                    "Entrypoint",
                    "Cmd",
                    "Volumes",
                    "WorkingDir",
                    "Labels",
                    "StopSignal",
                    "ArgsEscaped",
                ]
                .iter()
                .map(|k| ((*k).to_owned(), omit_empty(config.get(*k))))
                .collect(),
            ),
        ),
        (
            "rootfs".into(),
            GoJson::Obj(vec![
                (
                    "type".into(),
                    GoJson::Str(desc_str(rootfs, "type").to_owned()),
                ),
                (
                    "diff_ids".into(),
                    match rootfs.get("diff_ids") {
                        Some(v @ Value::Array(_)) => GoJson::from_value(v),
                        _ => GoJson::Null,
                    },
                ),
            ]),
        ),
        ("history".into(), history),
    ])
}

/// Go's `text/tabwriter` as buildx configures it (`minwidth 0, tabwidth 0,
/// padding 1`, spaces, no flags), for lines of one cell and a trailing
/// text: cells are padded to the widest cell since the last flush plus one.
#[derive(Debug, Default)]
struct TabWriter {
    lines: Vec<(String, String)>,
}

impl TabWriter {
    fn line(&mut self, cell: &str, rest: &str) {
        self.lines.push((cell.to_owned(), rest.to_owned()));
    }

    fn flush(&mut self) -> String {
        let width = self
            .lines
            .iter()
            .map(|(c, _)| c.chars().count())
            .max()
            .unwrap_or(0)
            + 1;
        let mut out = String::new();
        for (c, r) in self.lines.drain(..) {
            out.push_str(&c);
            out.push_str(&" ".repeat(width - c.chars().count()));
            out.push_str(&r);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_parse_as_buildx() {
        let a = parse_annotation("index:org.opencontainers.image.title=x=y").unwrap();
        assert_eq!(
            (
                a.kind.as_str(),
                a.platform,
                a.key.as_str(),
                a.value.as_str()
            ),
            ("index", None, "org.opencontainers.image.title", "x=y")
        );
        let a = parse_annotation("manifest-descriptor[linux/arm64]:k=v").unwrap();
        assert_eq!(a.platform.as_deref(), Some("linux/arm64"));
        assert!(
            matches!(parse_annotation("k=v"), Err(Failure::Usage(m)) if m.contains("not supported yet"))
        );
        assert!(
            matches!(parse_annotation("manifest:k=v"), Err(Failure::Usage(m)) if m.contains("not supported yet"))
        );
        assert!(
            matches!(parse_annotation("index-descriptor:k=v"), Err(Failure::Usage(m)) if m.contains("invalid while creating"))
        );
        assert!(
            matches!(parse_annotation("bogus:k=v"), Err(Failure::Usage(m)) if m.contains("unknown annotation type"))
        );
        assert!(
            matches!(parse_annotation("index:k"), Err(Failure::Usage(m)) if m.contains("expected key=value"))
        );
    }

    #[test]
    fn go_json_is_go_s() {
        let mut d = Map::new();
        d.insert(
            "mediaType".into(),
            Value::String(media::OCI_MANIFEST.into()),
        );
        d.insert("digest".into(), Value::String(Digest::of(b"x").to_string()));
        d.insert("size".into(), Value::from(7));
        d.insert(
            "annotations".into(),
            serde_json::json!({"b": "<&>", "a": "1"}),
        );
        d.insert(
            "platform".into(),
            serde_json::json!({"os": "linux", "architecture": "arm64", "variant": ""}),
        );
        let s = go_descriptor(&d).indent();
        let expected = format!(
            "{{\n  \"mediaType\": \"{}\",\n  \"digest\": \"{}\",\n  \"size\": 7,\n  \"annotations\": {{\n    \"a\": \"1\",\n    \"b\": \"\\u003c\\u0026\\u003e\"\n  }},\n  \"platform\": {{\n    \"architecture\": \"arm64\",\n    \"os\": \"linux\"\n  }}\n}}",
            media::OCI_MANIFEST,
            Digest::of(b"x")
        );
        assert_eq!(s, expected);
    }

    fn resolved(desc: Value, bytes: &[u8]) -> Resolved {
        let Value::Object(desc) = desc else {
            unreachable!()
        };
        Resolved {
            repo: Reference::parse_normalized("registry.test/a/b").unwrap(),
            desc,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn combine_keeps_attestations_and_flattens_indexes() {
        let d = |s: &[u8]| Digest::of(s).to_string();
        let image = |p: &str, x: &[u8]| {
            serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d(x), "size": 10,
                "platform": {"os": "linux", "architecture": p}})
        };
        let attestation = serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d(b"att"),
            "size": 20, "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.digest": d(b"amd"),
                            "vnd.docker.reference.type": "attestation-manifest"}});
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX,
            "manifests": [image("amd64", b"amd"), attestation]});
        let index_bytes = serde_json::to_vec(&index).unwrap();
        let srcs = [
            resolved(
                serde_json::json!({"mediaType": media::OCI_INDEX, "digest": d(&index_bytes),
                    "size": index_bytes.len()}),
                &index_bytes,
            ),
            resolved(image("arm64", b"arm"), b"arm"),
        ];
        let warned = std::cell::RefCell::new(Vec::new());
        let (bytes, desc) =
            combine(&srcs, &[], &|w| warned.borrow_mut().push(w.to_owned())).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let digests: Vec<&str> = v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        assert_eq!(digests, [d(b"amd"), d(b"att"), d(b"arm")]);
        assert_eq!(
            v["manifests"][1]["annotations"]["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        assert_eq!(desc_str(&desc, "mediaType"), media::OCI_INDEX);
        assert_eq!(desc_str(&desc, "digest"), Digest::of(&bytes).to_string());
        assert!(warned.borrow().is_empty(), "{:?}", warned.borrow());
        // The same image twice is one entry; two images for one platform are
        // both kept, with a warning.
        let twice = [
            resolved(image("arm64", b"arm"), b"arm"),
            resolved(image("arm64", b"arm"), b"arm"),
            resolved(image("arm64", b"arm2"), b"arm2"),
        ];
        let (bytes, _) = combine(&twice, &[], &|w| warned.borrow_mut().push(w.to_owned())).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
        assert_eq!(warned.borrow().len(), 1);
        // A single index and no annotations: its bytes unchanged.
        let (same, _) = combine(&srcs[..1], &[], &|_| {}).unwrap();
        assert_eq!(same, index_bytes);
    }

    #[test]
    fn tabwriter_pads_cells() {
        let mut w = TabWriter::default();
        w.line("Name:", "a");
        w.line("MediaType:", "b");
        w.line("", "");
        assert_eq!(w.flush(), "Name:      a\nMediaType: b\n           \n");
    }
}
