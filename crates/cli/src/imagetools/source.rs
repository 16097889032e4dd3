//! `imagetools create`'s sources: parsed from the command line (references,
//! digests, descriptors), then resolved against their registry.

use kiln_llb::{Digest, Platform};
use kiln_oci::Descriptor;
use kiln_reference::Reference;
use kiln_registry::Client;
use serde_json::{Map, Value};

use super::descriptor::{CONFIG_LIMIT, desc_digest, desc_str, detect_media_type, parse_named};
use crate::failure::Failure;

/// A source as given on the command line.
#[derive(Debug, Clone)]
pub(super) struct Source {
    /// The repository (with the tag or digest it was named by).
    pub(super) reference: Option<Reference>,
    /// A descriptor given as JSON or as a bare digest.
    pub(super) desc: Option<Map<String, Value>>,
    pub(super) arg: String,
}

pub(super) fn parse_source(s: &str) -> Result<Source, Failure> {
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
pub(super) struct Resolved {
    pub(super) repo: Reference,
    pub(super) desc: Map<String, Value>,
    pub(super) bytes: Vec<u8>,
}

pub(super) fn resolve_source(
    client: &Client,
    repo: &Reference,
    s: &Source,
) -> Result<Resolved, Failure> {
    let given = s.desc.clone();
    let has_type = given
        .as_ref()
        .is_some_and(|d| !desc_str(d, "mediaType").is_empty());
    let (mut desc, bytes) = if has_type {
        // A full descriptor: fetched by its digest from the repository.
        let d = given.clone().unwrap_or_default();
        let digest = desc_digest(&d)?;
        let fetched = client.get_manifest_in(repo, &digest.to_string())?;
        (d, fetched.bytes)
    } else {
        let fetched = client.get_manifest(repo)?;
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
pub(super) fn load_platform(client: &Client, r: &mut Resolved) -> Result<(), Failure> {
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
        let bytes = client.get_blob_bytes(&r.repo, &config, CONFIG_LIMIT)?;
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
