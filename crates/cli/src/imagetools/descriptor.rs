//! What the `imagetools` subcommands share: descriptors as JSON maps (their
//! fields, media types and platform), names, and the config size limit.

use std::collections::BTreeMap;

use kiln_llb::Digest;
use kiln_oci::{Descriptor, media};
use kiln_reference::Reference;
use serde_json::{Map, Value};

use crate::failure::Failure;

/// Largest image config read to learn an image's platform.
pub(super) const CONFIG_LIMIT: u64 = 16 << 20;

pub(super) fn parse_named(s: &str) -> Result<Reference, Failure> {
    Reference::parse_normalized(s)
        .map_err(|e| Failure::Usage(format!("invalid reference {s:?}: {e}")))
}
pub(super) fn desc_str<'a>(d: &'a Map<String, Value>, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or_default()
}

pub(super) fn desc_digest(d: &Map<String, Value>) -> Result<Digest, Failure> {
    desc_str(d, "digest").parse().map_err(|_| {
        Failure::Other(anyhow::anyhow!(
            "descriptor without a valid digest: {}",
            Value::Object(d.clone())
        ))
    })
}

/// The kiln descriptor of a JSON one (for the registry client).
pub(super) fn oci_desc(d: &Map<String, Value>) -> Result<Descriptor, Failure> {
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
pub(super) fn detect_media_type(bytes: &[u8]) -> Result<String, Failure> {
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

pub(super) fn is_index_type(t: &str) -> bool {
    t == media::OCI_INDEX || t == media::DOCKER_MANIFEST_LIST
}

pub(super) fn is_manifest_type(t: &str) -> bool {
    t == media::OCI_MANIFEST || t == media::DOCKER_MANIFEST
}
/// `os/arch[/variant]` of a descriptor's platform, as `platforms.Format`.
pub(super) fn platform_string(d: &Map<String, Value>) -> Option<String> {
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
