//! Where attestations go in an image: BuildKit's attestation storage
//! (`docs/attestations/attestation-storage.md`, BuildKit 0.13's
//! `exporter/containerimage/writer.go`).
//!
//! Each platform's image manifest gets an *attestation manifest*: an OCI
//! image manifest whose config is an image config for `unknown/unknown`
//! (diffIDs = the statements' digests) and whose layers are the in-toto
//! statements (`application/vnd.in-toto+json`, annotated with
//! `in-toto.io/predicate-type`). The index lists the platform manifests
//! first, then the attestation manifests, each with platform
//! `unknown/unknown` and the annotations `vnd.docker.reference.type:
//! attestation-manifest` and `vnd.docker.reference.digest: <the image
//! manifest>`. The image manifests themselves are untouched: an image
//! has the same manifest digest with or without attestations.
//!
//! Documents are handed to a [`BlobSink`] as JSON values; the sink stores
//! them (canonically: the worker's content store) and says their digest.

use std::collections::BTreeMap;

use kiln_llb::{Digest, Platform};
use serde::{Deserialize, Serialize};

use crate::statement::{ANNOTATION_PREDICATE_TYPE, MEDIA_TYPE, Statement};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_INDEX: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// `vnd.docker.reference.type`.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// `vnd.docker.reference.digest`.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// The value of [`REFERENCE_TYPE`] for attestation manifests.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// Stores JSON documents; returns their digest and size.
pub trait BlobSink {
    type Error;
    fn put_json(&mut self, value: &serde_json::Value) -> Result<(Digest, u64), Self::Error>;
}

/// An OCI descriptor (the fields kiln writes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<OciPlatform>,
}

/// An OCI platform object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciPlatform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

impl OciPlatform {
    pub fn of(p: &Platform) -> OciPlatform {
        OciPlatform {
            architecture: p.architecture.clone(),
            os: p.os.clone(),
            os_version: p.os_version.clone(),
            variant: p.variant.clone(),
        }
    }

    /// `unknown/unknown`: the platform of attestation manifests.
    pub fn unknown() -> OciPlatform {
        OciPlatform {
            architecture: "unknown".to_owned(),
            os: "unknown".to_owned(),
            os_version: String::new(),
            variant: String::new(),
        }
    }

    pub fn to_platform(&self) -> Platform {
        let mut p = Platform::new(&self.os, &self.architecture, &self.variant);
        p.os_version = self.os_version.clone();
        p
    }
}

/// `--annotation` values by where they go (buildx's `TYPE[PLATFORM]:KEY=VALUE`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    /// (platform or all, key, value) for image manifests (`manifest:`, and
    /// no type).
    pub manifest: Vec<(Option<Platform>, String, String)>,
    /// For the manifests' descriptors in the index (`manifest-descriptor:`).
    pub manifest_descriptor: Vec<(Option<Platform>, String, String)>,
    /// The index (`index:`).
    pub index: BTreeMap<String, String>,
    /// The index's descriptor in an OCI layout (`index-descriptor:`).
    pub index_descriptor: BTreeMap<String, String>,
}

/// A bad `--annotation`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnotationError {
    #[error("invalid annotation {0:?}, expected key=value")]
    NoValue(String),
    #[error("invalid annotation format, expected <type>:<key>=<value>, got {0:?}")]
    Format(String),
    #[error("unknown annotation type {0:?}")]
    UnknownType(String),
    #[error("invalid platform {0:?} in annotation: {1}")]
    Platform(String, String),
}

impl Annotations {
    /// Parses buildx's `--annotation` values: `[TYPE[PLATFORM]:]KEY=VALUE`
    /// with TYPE `manifest` (the default), `manifest-descriptor`, `index`
    /// or `index-descriptor`.
    pub fn parse(values: &[String]) -> Result<Annotations, AnnotationError> {
        let mut out = Annotations::default();
        for inp in values {
            let (k, v) = inp
                .split_once('=')
                .ok_or_else(|| AnnotationError::NoValue(inp.clone()))?;
            let (typ, platform, key) =
                split_key(k).ok_or_else(|| AnnotationError::Format(inp.clone()))?;
            let platform = match platform {
                None => None,
                Some(p) => Some(
                    p.parse::<Platform>()
                        .map_err(|e| AnnotationError::Platform(p.to_owned(), e.to_string()))?,
                ),
            };
            let entry = (platform, key.to_owned(), v.to_owned());
            match typ {
                "" | "manifest" => out.manifest.push(entry),
                "manifest-descriptor" => out.manifest_descriptor.push(entry),
                "index" => {
                    out.index.insert(entry.1, entry.2);
                }
                "index-descriptor" => {
                    out.index_descriptor.insert(entry.1, entry.2);
                }
                other => return Err(AnnotationError::UnknownType(other.to_owned())),
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.manifest.is_empty()
            && self.manifest_descriptor.is_empty()
            && self.index.is_empty()
            && self.index_descriptor.is_empty()
    }

    /// Whether an index is needed for them (index or index-descriptor
    /// annotations).
    pub fn need_index(&self) -> bool {
        !self.index.is_empty() || !self.index_descriptor.is_empty()
    }

    fn for_platform(
        list: &[(Option<Platform>, String, String)],
        p: &Platform,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        // Annotations for every platform first, then the platform's own.
        for (q, k, v) in list.iter().filter(|(q, _, _)| q.is_none()) {
            let _ = q;
            out.insert(k.clone(), v.clone());
        }
        for (_, k, v) in list
            .iter()
            .filter(|(q, _, _)| q.as_ref().is_some_and(|q| q.normalized() == p.normalized()))
        {
            out.insert(k.clone(), v.clone());
        }
        out
    }

    /// Manifest annotations of the image for `p`.
    pub fn manifest_for(&self, p: &Platform) -> BTreeMap<String, String> {
        Self::for_platform(&self.manifest, p)
    }

    /// Manifest-descriptor annotations of the image for `p`.
    pub fn manifest_descriptor_for(&self, p: &Platform) -> BTreeMap<String, String> {
        Self::for_platform(&self.manifest_descriptor, p)
    }

    /// The platforms annotations name that are not among `have`.
    pub fn unknown_platforms(&self, have: &[Platform]) -> Vec<String> {
        self.manifest
            .iter()
            .chain(&self.manifest_descriptor)
            .filter_map(|(p, _, _)| p.as_ref())
            .filter(|p| !have.iter().any(|h| h.normalized() == p.normalized()))
            .map(Platform::format)
            .collect()
    }
}

/// `type[platform]:key` → (type, platform, key), as buildx's
/// `^(?:([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?:)?(\S+)$`.
fn split_key(k: &str) -> Option<(&str, Option<&str>, &str)> {
    let ok_key = |s: &str| !s.is_empty() && !s.chars().any(char::is_whitespace);
    let typed = (|| {
        let (head, key) = k.split_once(':')?;
        let (typ, platform) = match head.split_once('[') {
            Some((t, rest)) => {
                let p = rest.strip_suffix(']')?;
                let ok = !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '-'));
                if !ok {
                    return None;
                }
                (t, Some(p))
            }
            None => (head, None),
        };
        let ok_typ = !typ.is_empty() && typ.chars().all(|c| c.is_ascii_lowercase() || c == '-');
        (ok_typ && ok_key(key)).then_some((typ, platform, key))
    })();
    typed.or_else(|| ok_key(k).then_some(("", None, k)))
}

/// One platform's image and what is attested about it.
#[derive(Clone, Debug)]
pub struct ImageEntry {
    /// The image manifest's descriptor (with its platform).
    pub manifest: Descriptor,
    pub statements: Vec<Statement>,
}

/// Writes the statements about `subject` and their attestation manifest;
/// returns the manifest's descriptor as the index lists it.
pub fn attestation_manifest<S: BlobSink>(
    sink: &mut S,
    subject: &Descriptor,
    statements: &[Statement],
) -> Result<Descriptor, S::Error> {
    let mut layers = Vec::with_capacity(statements.len());
    let mut diff_ids = Vec::with_capacity(statements.len());
    for st in statements {
        // A statement is plain JSON with string keys: it always serialises.
        let v = serde_json::to_value(st).unwrap_or(serde_json::Value::Null);
        let (digest, size) = sink.put_json(&v)?;
        diff_ids.push(digest.to_string());
        layers.push(Descriptor {
            media_type: MEDIA_TYPE.to_owned(),
            digest,
            size,
            annotations: BTreeMap::from([(
                ANNOTATION_PREDICATE_TYPE.to_owned(),
                st.predicate_type.clone(),
            )]),
            platform: None,
        });
    }
    let config = serde_json::json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (cd, cs) = sink.put_json(&config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cd.to_string(), "size": cs},
        "layers": layers,
    });
    let (md, ms) = sink.put_json(&manifest)?;
    Ok(Descriptor {
        media_type: OCI_MANIFEST.to_owned(),
        digest: md,
        size: ms,
        annotations: BTreeMap::from([
            (REFERENCE_TYPE.to_owned(), ATTESTATION_MANIFEST.to_owned()),
            (REFERENCE_DIGEST.to_owned(), subject.digest.to_string()),
        ]),
        platform: Some(OciPlatform::unknown()),
    })
}

/// Writes an OCI index of `images` (each manifest as given, then one
/// attestation manifest per image that has statements) with `annotations`
/// (`index:`); returns the index's descriptor and every manifest it lists.
pub fn index<S: BlobSink>(
    sink: &mut S,
    images: &[ImageEntry],
    annotations: &BTreeMap<String, String>,
    media_type: &str,
) -> Result<(Descriptor, Vec<Descriptor>), S::Error> {
    let mut manifests: Vec<Descriptor> = images.iter().map(|i| i.manifest.clone()).collect();
    for img in images.iter().filter(|i| !i.statements.is_empty()) {
        manifests.push(attestation_manifest(sink, &img.manifest, &img.statements)?);
    }
    let mut idx = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": manifests,
    });
    if !annotations.is_empty()
        && let Some(o) = idx.as_object_mut()
    {
        o.insert(
            "annotations".to_owned(),
            serde_json::to_value(annotations).unwrap_or_default(),
        );
    }
    let (d, s) = sink.put_json(&idx)?;
    Ok((
        Descriptor {
            media_type: media_type.to_owned(),
            digest: d,
            size: s,
            annotations: BTreeMap::new(),
            platform: None,
        },
        manifests,
    ))
}

/// What an index says about attestations: for each image manifest (by
/// digest), the attestation manifest that refers to it.
pub fn attestations_of(index: &serde_json::Value) -> BTreeMap<Digest, Descriptor> {
    let mut out = BTreeMap::new();
    let Some(ms) = index["manifests"].as_array() else {
        return out;
    };
    for m in ms {
        let Ok(d) = serde_json::from_value::<Descriptor>(m.clone()) else {
            continue;
        };
        if d.annotations.get(REFERENCE_TYPE).map(String::as_str) != Some(ATTESTATION_MANIFEST) {
            continue;
        }
        if let Some(target) = d
            .annotations
            .get(REFERENCE_DIGEST)
            .and_then(|t| t.parse::<Digest>().ok())
        {
            out.insert(target, d);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_syntax() {
        let a = Annotations::parse(&[
            "org.opencontainers.image.title=x".to_owned(),
            "manifest[linux/arm64]:a=b=c".to_owned(),
            "index:i=1".to_owned(),
            "index-descriptor:d=2".to_owned(),
            "manifest-descriptor:m=3".to_owned(),
        ])
        .unwrap();
        let arm = Platform::new("linux", "arm64", "");
        let amd = Platform::new("linux", "amd64", "");
        assert_eq!(a.manifest_for(&arm).get("a").unwrap(), "b=c");
        assert!(!a.manifest_for(&amd).contains_key("a"));
        assert_eq!(
            a.manifest_for(&amd)
                .get("org.opencontainers.image.title")
                .unwrap(),
            "x"
        );
        assert_eq!(a.index.get("i").unwrap(), "1");
        assert_eq!(a.index_descriptor.get("d").unwrap(), "2");
        assert_eq!(a.manifest_descriptor_for(&amd).get("m").unwrap(), "3");
        assert_eq!(a.unknown_platforms(&[amd]), ["linux/arm64"]);
        assert_eq!(
            Annotations::parse(&["nokey".to_owned()]),
            Err(AnnotationError::NoValue("nokey".to_owned()))
        );
        assert_eq!(
            Annotations::parse(&["bogus:k=v".to_owned()]),
            Err(AnnotationError::UnknownType("bogus".to_owned()))
        );
        assert!(matches!(
            Annotations::parse(&["manifest[x y]:k=v".to_owned()]),
            Err(AnnotationError::Format(_))
        ));
    }
}
