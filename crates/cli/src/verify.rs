//! `kiln verify IMAGE [CONTEXT]`: rebuilds an image from what its
//! provenance names and says whether the rebuild is the same image, bit for
//! bit.
//!
//! 1. The image's provenance is read from the local store, when the store
//!    has the image with the attestation index it keeps for an image built
//!    with attestations, else from the registry: the attestation manifest
//!    of the index that names the image's manifest, its SLSA statement
//!    (v0.2 or v1) about that digest.
//! 2. What a rebuild needs is checked first, and what is missing is named:
//!    the frontend options (`mode=min` leaves build arguments out: give them
//!    with `--build-arg`), `SOURCE_DATE_EPOCH` (without it an image's times
//!    are its build's clock), the Dockerfile and context materials
//!    (`kiln-local://`), each base image's digest. The Dockerfile given is
//!    checked against the provenance's digest before anything is built.
//! 3. The rebuild is this binary run again (`kiln build`, so every option
//!    means what it means in a build), on a scratch state directory with
//!    `--no-cache`, into an OCI layout: the same build arguments, target,
//!    platform and network mode, each base image pinned to the digest of
//!    its material (`--build-context NAME=docker-image://REF@DIGEST` for
//!    registry images; an image of the local store, named by its ID, is
//!    copied into the scratch state with `save` and `load`).
//! 4. The rebuild's own provenance gives its materials: the context's
//!    content digest, the Dockerfile's, the bases', git commits, download
//!    checksums; each that differs from the image's is named (a changed
//!    context is refused as "not verified", whatever the image).
//! 5. The rebuilt manifest digest is compared with the image's; when they
//!    differ, the configurations are compared field by field and each layer
//!    that differs is listed path by path (the image's config and those
//!    layers are downloaded), as `kiln build --check-reproducible` does.
//!
//! Exit status: 0 verified; 1 the rebuild differs, the context or the
//! Dockerfile is not the one the provenance names, or the provenance lacks
//! what a rebuild needs; 2 usage; 3 registry errors.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use kiln_attest::Recipe;
use kiln_attest::slsa::Material;
use kiln_llb::{Digest, Platform};
use kiln_oci::Descriptor;
use kiln_reference::Reference;
use kiln_registry::Client;
use serde_json::Value;

use crate::args::VerifyArgs;
use crate::failure::Failure;
use crate::globals::Globals;
use crate::reproducible::{Labels, compare};

const PROVENANCE_TYPES: [&str; 2] = [
    kiln_attest::slsa::PREDICATE_V02,
    kiln_attest::slsa::PREDICATE_V1,
];
const BLOB_LIMIT: u64 = 64 << 20;

/// A message that ends the verification without a verdict on the image.
fn cannot(msg: impl std::fmt::Display) -> Failure {
    Failure::Build(format!("error: kiln verify: {msg}"))
}

fn say(line: &str) {
    println!("{line}");
}

/// Where the image and its attestations are read from.
enum Origin {
    Registry {
        client: Client,
        reference: Reference,
    },
    /// The local store, which keeps the attestation index of an image built
    /// with asked-for attestations (`<root>/attestations/<image id>`).
    Local(kiln_worker::State),
}

impl Origin {
    /// A manifest (or index) by digest.
    fn manifest(&self, digest: &str) -> Result<Vec<u8>, Failure> {
        match self {
            Origin::Registry { client, reference } => {
                Ok(client.get_manifest_in(reference, digest)?.bytes)
            }
            Origin::Local(state) => local_blob(state, digest),
        }
    }

    /// A small blob (config, statement).
    fn blob(&self, desc: &Descriptor) -> Result<Vec<u8>, Failure> {
        match self {
            Origin::Registry { client, reference } => client
                .get_blob_bytes(reference, desc, BLOB_LIMIT)
                .map_err(Failure::from),
            Origin::Local(state) => local_blob(state, &desc.digest.to_string()),
        }
    }

    /// A layer, written to `dest`.
    fn layer(&self, desc: &Descriptor, dest: &Path) -> Result<(), Failure> {
        let mut f = fs::File::create(dest).context("writing a layer")?;
        match self {
            Origin::Registry { client, reference } => {
                let mut r = client.open_blob(reference, desc)?;
                std::io::copy(&mut r, &mut f).context("downloading a layer")?;
            }
            Origin::Local(state) => {
                let b = local_blob(state, &desc.digest.to_string())?;
                std::io::Write::write_all(&mut f, &b).context("writing a layer")?;
            }
        }
        Ok(())
    }
}

fn local_blob(state: &kiln_worker::State, digest: &str) -> Result<Vec<u8>, Failure> {
    let d: Digest = digest
        .parse()
        .map_err(|_| Failure::Other(anyhow::anyhow!("invalid digest {digest:?}")))?;
    state.content.read(&d).map_err(|e| {
        Failure::Other(anyhow::anyhow!(
            "reading {digest} from the local store: {e}"
        ))
    })
}

/// The image's manifest digest, its configuration, and its provenance.
struct Subject {
    origin: Origin,
    digest: Digest,
    manifest: Value,
    predicate_type: String,
    predicate: Value,
    /// The digest of the provenance statement's blob.
    statement_digest: Digest,
    /// The image's platform, as its index names it.
    platform: Option<Platform>,
}

/// The image in the local store, when the store has it with an attestation
/// index: the index's bytes and the store.
fn local_index(
    globals: &Globals,
    args: &VerifyArgs,
) -> Option<(Vec<u8>, Digest, kiln_worker::State)> {
    let dir = crate::store::state_dir(globals.root.as_deref());
    if !dir.join("images").exists() {
        return None;
    }
    let state = kiln_worker::State::open(&dir).ok()?;
    let name = Reference::parse_normalized(&args.image)
        .ok()?
        .with_default_tag()
        .to_string();
    let r = state
        .images
        .get(&name)
        .ok()
        .flatten()
        .or_else(|| state.images.get(&args.image).ok().flatten())?;
    let idx = kiln_worker::attest::stored_index(&state, &r.id)?;
    let bytes = state.content.read(&idx).ok()?;
    Some((bytes, idx, state))
}

/// Reads the image's provenance from the local store (an image built there
/// with attestations) or else from the registry.
fn read_subject(globals: &Globals, args: &VerifyArgs) -> Result<Subject, Failure> {
    let (top_bytes, top_digest, origin) = match local_index(globals, args) {
        Some((bytes, digest, state)) => {
            say(&format!(
                "kiln verify: {} and its attestations are in the local store",
                args.image
            ));
            (bytes, digest, Origin::Local(state))
        }
        None => {
            let reference = Reference::parse_normalized(&args.image)
                .map_err(|e| Failure::Usage(format!("invalid reference {:?}: {e}", args.image)))?
                .with_default_tag();
            let client = crate::registry::client(globals, &[])?;
            let top = client.get_manifest(&reference)?;
            (
                top.bytes,
                top.digest,
                Origin::Registry { client, reference },
            )
        }
    };
    let v: Value = serde_json::from_slice(&top_bytes)
        .map_err(|e| Failure::Other(anyhow::anyhow!("{}: invalid manifest: {e}", args.image)))?;
    let Some(entries) = v["manifests"].as_array() else {
        return Err(cannot(format!(
            "{} is a single image manifest ({}): it carries no attestations, so no provenance (build it with --provenance=mode=max and push it)",
            args.image, top_digest
        )));
    };
    let is_attestation = |m: &Value| !m["annotations"]["vnd.docker.reference.type"].is_null();
    let images: Vec<&Value> = entries.iter().filter(|m| !is_attestation(m)).collect();
    let want = match &args.platform {
        Some(p) => Some(
            p.parse::<Platform>()
                .map_err(|e| Failure::Usage(format!("invalid --platform {p:?}: {e}")))?,
        ),
        None if images.len() > 1 => Some(Platform::host()),
        None => None,
    };
    let platform_of = |m: &Value| -> Option<Platform> {
        let p = &m["platform"];
        Some(Platform::new(
            p["os"].as_str()?,
            p["architecture"].as_str()?,
            p["variant"].as_str().unwrap_or_default(),
        ))
    };
    let image = images
        .iter()
        .find(|m| match &want {
            None => true,
            Some(w) => platform_of(m).is_some_and(|p| p.normalized() == w.normalized()),
        })
        .ok_or_else(|| {
            cannot(format!(
                "{} has no image for {}",
                args.image,
                want.as_ref().map(Platform::format).unwrap_or_default()
            ))
        })?;
    let digest_str = image["digest"].as_str().unwrap_or_default().to_owned();
    let digest: Digest = digest_str
        .parse()
        .map_err(|_| Failure::Other(anyhow::anyhow!("{}: invalid digest in index", args.image)))?;
    let att = entries
        .iter()
        .find(|m| {
            is_attestation(m)
                && m["annotations"]["vnd.docker.reference.digest"].as_str()
                    == Some(digest_str.as_str())
        })
        .ok_or_else(|| {
            cannot(format!(
                "{} carries no attestation manifest for its image {digest}: it was built without provenance",
                args.image
            ))
        })?;
    let fetch_json = |d: &str| -> Result<Value, Failure> {
        let m = origin.manifest(d)?;
        serde_json::from_slice(&m).map_err(|e| {
            Failure::Other(anyhow::anyhow!("{}@{d}: invalid manifest: {e}", args.image))
        })
    };
    let manifest = fetch_json(&digest_str)?;
    let att_manifest = fetch_json(att["digest"].as_str().unwrap_or_default())?;
    let layer = att_manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| {
            l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .is_some_and(|t| PROVENANCE_TYPES.contains(&t))
        })
        .ok_or_else(|| {
            cannot(format!(
                "the attestations of {} hold no SLSA provenance (only {})",
                args.image,
                att_manifest["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|l| l["annotations"]["in-toto.io/predicate-type"].as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let desc: Descriptor = serde_json::from_value(layer.clone())
        .map_err(|e| Failure::Other(anyhow::anyhow!("invalid attestation layer: {e}")))?;
    let bytes = origin.blob(&desc)?;
    let statement: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::Other(anyhow::anyhow!("invalid provenance statement: {e}")))?;
    let about_image = statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["digest"]["sha256"].as_str() == Some(digest.hex().as_str()));
    if !about_image {
        return Err(cannot(format!(
            "the provenance of {} is not about its image {digest} (its subjects name other digests)",
            args.image
        )));
    }
    Ok(Subject {
        platform: platform_of(image),
        origin,
        statement_digest: desc.digest,
        digest,
        manifest,
        predicate_type: statement["predicateType"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        predicate: statement["predicate"].clone(),
    })
}

/// A base image material: the reference its purl names and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BaseImage {
    /// As FROM would name it (`busybox:latest`, `host:5000/base/busybox:1`).
    reference: String,
    digest: String,
}

/// `%XX` escapes undone.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The image a `pkg:docker/…` or `pkg:oci/…` material names.
fn base_image(m: &Material) -> Option<BaseImage> {
    let rest = m
        .uri
        .strip_prefix("pkg:docker/")
        .or_else(|| m.uri.strip_prefix("pkg:oci/"))?;
    let (path, _qualifiers) = rest.split_once('?').unwrap_or((rest, ""));
    let (name, version) = path.rsplit_once('@').unwrap_or((path, ""));
    let name = unescape(name);
    let reference = if version.is_empty() {
        name
    } else {
        format!("{name}:{}", unescape(version))
    };
    let digest = format!("sha256:{}", m.digest.get("sha256")?);
    Some(BaseImage { reference, digest })
}

/// The `kiln build` flags that give the build the provenance's options,
/// and what is missing for a rebuild.
fn build_flags(recipe: &Recipe, given: &BTreeMap<String, String>) -> (Vec<String>, Vec<String>) {
    let mut flags = Vec::new();
    let mut missing = Vec::new();
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &recipe.args {
        if let Some(name) = k.strip_prefix("build-arg:") {
            args.insert(name.to_owned(), v.clone());
        } else if let Some(name) = k.strip_prefix("label:") {
            flags.push("--label".to_owned());
            flags.push(format!("{name}={v}"));
        } else {
            match k.as_str() {
                "target" => {
                    flags.push("--target".to_owned());
                    flags.push(v.clone());
                }
                "platform" => {
                    flags.push("--platform".to_owned());
                    flags.push(v.clone());
                }
                "force-network-mode" => {
                    flags.push("--network".to_owned());
                    flags.push(v.clone());
                }
                // The rebuild never uses a cache.
                "no-cache" => {}
                other if other.starts_with("context:") => missing.push(format!(
                    "the named build context {:?} (kiln verify cannot supply named contexts yet)",
                    &other["context:".len()..]
                )),
                other => missing.push(format!(
                    "the frontend option {other:?} (unknown to kiln verify)"
                )),
            }
        }
    }
    for k in &recipe.left_out {
        if let Some(name) = k.strip_prefix("build-arg:") {
            if !given.contains_key(name) {
                let why = if recipe.max {
                    "left out as secret-looking"
                } else {
                    "mode=min records no build arguments"
                };
                missing.push(format!(
                    "the value of build argument {name} ({why}): give it with --build-arg {name}=VALUE"
                ));
            }
        } else if let Some(name) = k.strip_prefix("label:") {
            missing.push(format!(
                "the value of label {name} (mode=min records no labels; rebuild from a mode=max provenance)"
            ));
        }
    }
    for (k, v) in given {
        args.insert(k.clone(), v.clone());
    }
    if !args.contains_key("SOURCE_DATE_EPOCH")
        && !missing.iter().any(|m| m.contains("SOURCE_DATE_EPOCH"))
    {
        missing.push(
            "SOURCE_DATE_EPOCH: the image was built without it, so its creation and file times are its build's clock and no rebuild can give the same digest (build with SOURCE_DATE_EPOCH set, or --build-arg SOURCE_DATE_EPOCH=…)".to_owned(),
        );
    }
    for (k, v) in args {
        flags.push("--build-arg".to_owned());
        flags.push(format!("{k}={v}"));
    }
    (flags, missing)
}

/// The image ID of `base` in the verifying store, if it holds it: an image
/// of that name whose ID or manifest digest is the material's digest (an
/// image imported or built locally is named by one or the other).
fn local_base_id(exe: &Path, globals: &Globals, base: &BaseImage) -> Option<String> {
    let mut inspect = Command::new(exe);
    if let Some(r) = &globals.root {
        inspect.arg("--root").arg(r);
    }
    let out = inspect.args(["inspect", &base.reference]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let suffix = format!("@{}", base.digest);
    v.as_array()?.iter().find_map(|i| {
        let id = i["Id"].as_str()?;
        let named = id == base.digest
            || i["RepoDigests"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|d| d.as_str().is_some_and(|d| d.ends_with(&suffix)));
        named.then(|| id.to_owned())
    })
}

/// Copies the image `id` of the verifying store into the scratch state
/// under `base`'s name (`save`, `load`, `tag`).
fn copy_local_base(
    exe: &Path,
    globals: &Globals,
    scratch_root: &Path,
    dir: &Path,
    base: &BaseImage,
    id: &str,
) -> anyhow::Result<()> {
    let archive = dir.join(format!("base-{}.tar", &id["sha256:".len()..][..12]));
    let mut save = Command::new(exe);
    if let Some(r) = &globals.root {
        save.arg("--root").arg(r);
    }
    save.args(["save", "--format", "oci", "-o"])
        .arg(&archive)
        .arg(id);
    let steps = [
        ("save", save),
        ("load", {
            let mut c = Command::new(exe);
            c.arg("--root")
                .arg(scratch_root)
                .args(["load", "-q", "-i"])
                .arg(&archive);
            c
        }),
        ("tag", {
            let mut c = Command::new(exe);
            c.arg("--root")
                .arg(scratch_root)
                .args(["tag", id, &base.reference]);
            c
        }),
    ];
    for (what, mut cmd) in steps {
        let out = cmd
            .output()
            .with_context(|| format!("running kiln {what}"))?;
        if !out.status.success() {
            anyhow::bail!(
                "copying the base image {} ({}) into the scratch state: kiln {what} failed: {}",
                base.reference,
                base.digest,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// The materials of the rebuilt layout's provenance.
fn rebuilt_materials(layout: &Path) -> anyhow::Result<Vec<Material>> {
    let index = crate::reproducible::read_json(&layout.join("index.json"))?;
    let top_digest = index["manifests"][0]["digest"]
        .as_str()
        .context("the rebuilt layout names no manifest")?;
    let top = crate::reproducible::read_json(&crate::reproducible::blob(layout, top_digest))?;
    for m in top["manifests"].as_array().into_iter().flatten() {
        if m["annotations"]["vnd.docker.reference.type"].is_null() {
            continue;
        }
        let att = crate::reproducible::read_json(&crate::reproducible::blob(
            layout,
            m["digest"].as_str().unwrap_or_default(),
        ))?;
        for l in att["layers"].as_array().into_iter().flatten() {
            let t = l["annotations"]["in-toto.io/predicate-type"]
                .as_str()
                .unwrap_or_default();
            if !PROVENANCE_TYPES.contains(&t) {
                continue;
            }
            let s = crate::reproducible::read_json(&crate::reproducible::blob(
                layout,
                l["digest"].as_str().unwrap_or_default(),
            ))?;
            let r = Recipe::read(t, &s["predicate"])?;
            return Ok(r.materials);
        }
    }
    anyhow::bail!("the rebuild wrote no provenance")
}

/// The materials that differ: (what, the image's, the rebuild's).
/// `same_image` maps a base's digest in the provenance to the other digest
/// (the image ID) the rebuild may name the same image by.
fn material_differences(
    image: &[Material],
    rebuilt: &[Material],
    same_image: &BTreeMap<String, String>,
) -> Vec<String> {
    let show = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = Vec::new();
    for m in image {
        // Base images are pinned by digest in the rebuild, so their URIs
        // differ (a digest instead of a tag): compare their digests.
        let other = match base_image(m) {
            Some(b) => {
                let alias = same_image.get(&b.digest);
                rebuilt.iter().find(|r| {
                    base_image(r)
                        .is_some_and(|rb| rb.digest == b.digest || Some(&rb.digest) == alias)
                })
            }
            None => rebuilt.iter().find(|r| r.uri == m.uri),
        };
        match other {
            Some(r) if r.digest == m.digest || base_image(r).is_some() => {}
            Some(r) => out.push(format!(
                "{}: {} in the provenance, {} in the rebuild",
                m.uri,
                show(&m.digest),
                show(&r.digest)
            )),
            None => out.push(format!(
                "{}: {} in the provenance, not used by the rebuild",
                m.uri,
                show(&m.digest)
            )),
        }
    }
    out
}

/// Writes an OCI layout holding the image's manifest, its config and the
/// layers whose digests the rebuild does not have (what the comparison
/// reads).
fn fetch_image(
    subject: &Subject,
    rebuilt: &kiln_oci::Manifest,
    dest: &Path,
) -> Result<(), Failure> {
    let blobs = dest.join("blobs/sha256");
    fs::create_dir_all(&blobs).context("making the image's layout")?;
    let manifest_bytes = serde_json::to_vec(&subject.manifest).context("encoding the manifest")?;
    // The manifest is stored under the digest the registry gave (its
    // original bytes are not needed: the comparison reads its fields).
    fs::write(blobs.join(subject.digest.hex()), &manifest_bytes)
        .context("writing the image's manifest")?;
    fs::write(
        dest.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": subject.manifest["mediaType"],
                "digest": subject.digest.to_string(),
                "size": manifest_bytes.len(),
            }],
        }))
        .context("encoding index.json")?,
    )
    .context("writing the image's index.json")?;
    let m: kiln_oci::Manifest = serde_json::from_value(subject.manifest.clone())
        .map_err(|e| Failure::Other(anyhow::anyhow!("invalid image manifest: {e}")))?;
    let config = subject.origin.blob(&m.config)?;
    fs::write(blobs.join(m.config.digest.hex()), config).context("writing the image's config")?;
    for (i, l) in m.layers.iter().enumerate() {
        if rebuilt.layers.get(i).is_some_and(|r| r.digest == l.digest) {
            continue;
        }
        subject.origin.layer(l, &blobs.join(l.digest.hex()))?;
    }
    Ok(())
}

/// Runs `kiln verify`.
pub fn run(globals: &Globals, args: &VerifyArgs) -> Result<(), Failure> {
    let mut given = BTreeMap::new();
    for a in &args.build_args {
        let (k, v) = a.split_once('=').ok_or_else(|| {
            Failure::Usage(format!("invalid --build-arg {a:?}: expected NAME=VALUE"))
        })?;
        given.insert(k.to_owned(), v.to_owned());
    }
    if !args.context.is_dir() {
        return Err(Failure::Usage(format!(
            "the context {} is not a directory",
            args.context.display()
        )));
    }
    let subject = read_subject(globals, args)?;
    let recipe = Recipe::read(&subject.predicate_type, &subject.predicate)
        .map_err(|e| cannot(format!("{}: {e}", args.image)))?;
    say(&format!(
        "kiln verify: {} is {}; its provenance: {} ({})",
        args.image,
        subject.digest,
        recipe.predicate_type,
        if recipe.max { "mode=max" } else { "mode=min" }
    ));

    // What the rebuild needs and the provenance does not say.
    let mut missing = Vec::new();
    if recipe.frontend != "dockerfile.v0" {
        missing.push(format!(
            "a Dockerfile build (the frontend is {:?})",
            recipe.frontend
        ));
    }
    let (mut flags, more) = build_flags(&recipe, &given);
    missing.extend(more);
    // The platform of the image when it is not this machine's (BuildKit's
    // provenance leaves `platform` out of the request; kiln recorded it
    // before following that).
    if !recipe.args.contains_key("platform")
        && let Some(p) = &subject.platform
        && p.normalized() != Platform::host().normalized()
    {
        flags.push("--platform".to_owned());
        flags.push(p.format());
    }
    let context_digest = recipe.local_digest("context");
    if context_digest.is_none() {
        missing.push(
            "the context's content digest (a kiln-local://context material; BuildKit records none)"
                .to_owned(),
        );
    }
    let dockerfile = recipe.dockerfile();
    if dockerfile.is_none() {
        missing.push("the Dockerfile's digest (a kiln-local://dockerfile/NAME material; BuildKit records none)".to_owned());
    }
    let bases: Vec<BaseImage> = recipe.materials.iter().filter_map(base_image).collect();
    for m in &recipe.materials {
        if m.digest.is_empty() {
            missing.push(format!("the digest of material {}", m.uri));
        }
    }
    if !missing.is_empty() {
        let mut msg = format!(
            "error: kiln verify: the provenance of {} does not say everything a rebuild needs:",
            args.image
        );
        for m in &missing {
            msg.push_str(&format!("\n  missing: {m}"));
        }
        return Err(Failure::Build(msg));
    }

    // The Dockerfile given must be the one built.
    let (df_name, df_digest) = dockerfile.unwrap_or_default();
    let df_path = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join(&df_name));
    let bytes = fs::read(&df_path)
        .with_context(|| format!("reading the Dockerfile {}", df_path.display()))?;
    let given_digest = Digest::of(&bytes).to_string();
    if given_digest != df_digest {
        return Err(Failure::Build(format!(
            "error: kiln verify: {} is not the Dockerfile the image was built from: its digest is {given_digest}, the provenance names {df_digest}",
            df_path.display()
        )));
    }

    // The rebuild.
    let scratch = tempfile::Builder::new()
        .prefix("kiln-verify.")
        .tempdir()
        .context("making a scratch directory")?;
    let state = scratch.path().join("state");
    let exe = std::env::current_exe().context("locating the kiln binary")?;
    let mut same_image = BTreeMap::new();
    for b in &bases {
        if let Some(id) = local_base_id(&exe, globals, b) {
            copy_local_base(&exe, globals, &state, scratch.path(), b, &id)?;
            same_image.insert(b.digest.clone(), id);
            say(&format!(
                "kiln verify: base {} {} from the local store",
                b.reference, b.digest
            ));
            continue;
        }
        let key = kiln_frontend::contexts::context_key(&b.reference).ok_or_else(|| {
            cannot(format!(
                "the base image {:?} has no valid name",
                b.reference
            ))
        })?;
        let pinned = Reference::parse_normalized(&b.reference)
            .and_then(|r| {
                let name = r.name();
                Reference::parse_normalized(&format!("{name}@{}", b.digest))
            })
            .map_err(|e| cannot(format!("the base image {:?}: {e}", b.reference)))?;
        flags.push("--build-context".to_owned());
        flags.push(format!("{key}=docker-image://{pinned}"));
        say(&format!(
            "kiln verify: base {} pinned to {}",
            b.reference, b.digest
        ));
    }
    let layout = match &args.keep {
        Some(d) => d.clone(),
        None => scratch.path().join("rebuilt"),
    };
    let mut cmd = Command::new(&exe);
    for h in &globals.insecure_registries {
        cmd.arg("--insecure-registry").arg(h);
    }
    if let Some(c) = &globals.registry_config {
        cmd.arg("--registry-config").arg(c);
    }
    cmd.arg("--root")
        .arg(&state)
        .args(["build", "-q", "--no-cache", "--provenance=mode=min"])
        .arg("-o")
        .arg(format!("type=oci,dest={},tar=false", layout.display()))
        .arg("-f")
        .arg(&df_path)
        .args(&flags);
    for s in &args.secrets {
        cmd.arg("--secret").arg(s);
    }
    cmd.arg(&args.context)
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS");
    let shown: Vec<String> = flags
        .chunks(2)
        .map(|f| match f {
            [flag, v] if flag == "--build-arg" => {
                let name = v.split_once('=').map_or(v.as_str(), |(n, _)| n);
                if given.contains_key(name) {
                    format!("{flag} {name}=(given)")
                } else {
                    format!("{flag} {v}")
                }
            }
            _ => f.join(" "),
        })
        .collect();
    say(&format!(
        "kiln verify: rebuilding in a scratch state directory, without a cache: kiln build {}",
        shown.join(" ")
    ));
    let out = cmd.output().context("running the rebuild")?;
    if !out.status.success() {
        return Err(Failure::Build(format!(
            "{}\nerror: kiln verify: the rebuild failed ({})",
            String::from_utf8_lossy(&out.stderr).trim_end(),
            out.status
        )));
    }

    // The materials the rebuild used.
    let rebuilt = rebuilt_materials(&layout)?;
    let differences = material_differences(&recipe.materials, &rebuilt, &same_image);
    let (rebuilt_digest, rebuilt_manifest) = crate::reproducible::manifest(&layout)?;
    let same_image = rebuilt_digest == subject.digest.to_string();
    if differences.is_empty() && same_image {
        say(&format!(
            "kiln verify: verified: the rebuild is {} bit for bit ({} materials checked: context {}, Dockerfile {}{})",
            subject.digest,
            recipe.materials.len(),
            context_digest.unwrap_or_default(),
            df_digest,
            if bases.is_empty() {
                String::new()
            } else {
                format!(
                    ", bases {}",
                    bases
                        .iter()
                        .map(|b| format!("{}@{}", b.reference, b.digest))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        ));
        if let Some(path) = &args.statement {
            write_statement(path, args, &subject, &recipe)?;
            say(&format!(
                "kiln verify: wrote the verification statement to {}",
                path.display()
            ));
        }
        return Ok(());
    }
    for d in &differences {
        say(&format!("kiln verify: material differs: {d}"));
    }
    if differences
        .iter()
        .any(|d| d.starts_with(kiln_attest::provenance::LOCAL_SCHEME))
    {
        say(&format!(
            "kiln verify: the context {} is not the one the image was built from (the provenance records its digest, not its files: the image comparison below shows what the change does)",
            args.context.display()
        ));
    }
    if !same_image {
        let original = scratch.path().join("image");
        fetch_image(&subject, &rebuilt_manifest, &original)?;
        let report = compare(
            &original,
            &layout,
            &Labels {
                prefix: "kiln verify",
                same: "the same image",
                differ: "the rebuild differs: the image is",
                first: "the image",
                second: "the rebuild",
                all_paths: true,
            },
        )?;
        for l in report.text.lines() {
            say(l);
        }
    } else {
        say(&format!(
            "kiln verify: the rebuild is {} nonetheless",
            subject.digest
        ));
    }
    Err(Failure::Build(format!(
        "error: kiln verify: {} is not verified",
        args.image
    )))
}

/// The `https://kiln.dev/verification/v1` statement of a verified image.
fn write_statement(
    path: &Path,
    args: &VerifyArgs,
    subject: &Subject,
    recipe: &Recipe,
) -> Result<(), Failure> {
    use kiln_attest::verification::{
        Checked, PREDICATE, ProvenanceRef, Rebuilt, Verification, Verifier,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let digest_set = |d: &Digest| BTreeMap::from([("sha256".to_owned(), d.hex())]);
    let predicate = Verification {
        verifier: Verifier {
            id: "https://kiln.dev/kiln".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        time_verified: kiln_oci::rfc3339(i64::try_from(now.as_secs()).unwrap_or(0), 0)
            .unwrap_or_default(),
        provenance: ProvenanceRef {
            predicate_type: recipe.predicate_type.clone(),
            digest: digest_set(&subject.statement_digest),
        },
        result: "identical".to_owned(),
        rebuilt: Rebuilt {
            digest: digest_set(&subject.digest),
        },
        checked: Checked {
            materials: recipe.materials.clone(),
            parameters: recipe.args.clone(),
        },
    };
    let statement = kiln_attest::Statement::new(
        kiln_attest::statement::STATEMENT_V1,
        PREDICATE,
        vec![kiln_attest::Subject::new(&args.image, &subject.digest)],
        serde_json::to_value(&predicate).context("encoding the verification")?,
    );
    let mut bytes = serde_json::to_vec_pretty(&statement).context("encoding the statement")?;
    bytes.push(b'\n');
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(uri: &str, hex: &str) -> Material {
        Material {
            uri: uri.to_owned(),
            digest: BTreeMap::from([("sha256".to_owned(), hex.to_owned())]),
        }
    }

    #[test]
    fn base_images_from_purls() {
        let b = base_image(&material(
            "pkg:docker/127.0.0.1:5000/base/busybox@1?platform=linux%2Famd64",
            "ab",
        ))
        .unwrap();
        assert_eq!(b.reference, "127.0.0.1:5000/base/busybox:1");
        assert_eq!(b.digest, "sha256:ab");
        let b = base_image(&material("pkg:docker/busybox@latest", "cd")).unwrap();
        assert_eq!(b.reference, "busybox:latest");
        assert!(base_image(&material("kiln-local://context", "ef")).is_none());
    }

    #[test]
    fn missing_values_are_named() {
        let recipe = Recipe {
            left_out: vec![
                "build-arg:SOURCE_DATE_EPOCH".to_owned(),
                "build-arg:VERSION".to_owned(),
            ],
            ..Recipe::default()
        };
        let (_, missing) = build_flags(&recipe, &BTreeMap::new());
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].contains("--build-arg SOURCE_DATE_EPOCH=VALUE"));
        let given = BTreeMap::from([
            ("SOURCE_DATE_EPOCH".to_owned(), "1".to_owned()),
            ("VERSION".to_owned(), "2".to_owned()),
        ]);
        let (flags, missing) = build_flags(&recipe, &given);
        assert!(missing.is_empty(), "{missing:?}");
        assert_eq!(
            flags,
            [
                "--build-arg",
                "SOURCE_DATE_EPOCH=1",
                "--build-arg",
                "VERSION=2"
            ]
        );
        let (_, missing) = build_flags(&Recipe::default(), &BTreeMap::new());
        assert!(missing[0].starts_with("SOURCE_DATE_EPOCH: the image was built without it"));
    }

    #[test]
    fn materials_compared() {
        let a = [
            material("pkg:docker/busybox@latest", "aa"),
            material("kiln-local://context", "c1"),
        ];
        let b = [
            material("pkg:docker/busybox@sha256:aa", "aa"),
            material("kiln-local://context", "c2"),
        ];
        let d = material_differences(&a, &b, &BTreeMap::new());
        assert_eq!(
            d,
            ["kiln-local://context: sha256:c1 in the provenance, sha256:c2 in the rebuild"]
        );
    }
}
