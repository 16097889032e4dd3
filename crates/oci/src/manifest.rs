//! Descriptors, image manifests and indexes (OCI image spec v1.1, and Docker
//! schema 2 which has the same shape with other media types).
//!
//! Field names and omission rules are those of the Go structs in
//! `opencontainers/image-spec/specs-go/v1`: `urls`, `annotations` and
//! `platform` are omitted when empty; `layers` and `manifests` are always
//! written. Serialise with [`crate::to_canonical_json`].

use std::collections::BTreeMap;

use kiln_llb::{Digest, Platform};
use serde::{Deserialize, Serialize};

use crate::content::BlobInfo;
use crate::gojson::nullable;
use crate::media::MediaTypes;

/// A reference to a blob: its media type, digest and size, and optionally the
/// platform it is for and annotations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// Alternative download locations (foreign layers).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub urls: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "oci_platform"
    )]
    pub platform: Option<Platform>,
}

impl Descriptor {
    /// A descriptor of `media_type` for a stored blob.
    pub fn new(media_type: impl Into<String>, blob: BlobInfo) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: blob.digest,
            size: blob.size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
        }
    }

    /// The digest and size.
    pub fn blob(&self) -> BlobInfo {
        BlobInfo {
            digest: self.digest,
            size: self.size,
        }
    }
}

/// An image manifest: one config and its layers, bottom first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    pub config: Descriptor,
    #[serde(default, deserialize_with = "nullable")]
    pub layers: Vec<Descriptor>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// A schema-2 manifest of the given media type family.
    pub fn new(types: MediaTypes, config: Descriptor, layers: Vec<Descriptor>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: types.manifest().to_owned(),
            config,
            layers,
            annotations: BTreeMap::new(),
        }
    }
}

/// An image index (Docker: manifest list): manifests for several platforms,
/// or, as a layout's `index.json`, the named entry points of the layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(default, deserialize_with = "nullable")]
    pub manifests: Vec<Descriptor>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// An index of the given media type family.
    pub fn new(types: MediaTypes, manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: types.index().to_owned(),
            manifests,
            annotations: BTreeMap::new(),
        }
    }
}

/// The OCI JSON shape of a platform (`os.version`, `os.features`), mapped onto
/// `kiln_llb::Platform`. Values are kept as written (not normalised);
/// `os.features` and `features` are read and dropped.
mod oci_platform {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Wire {
        architecture: String,
        os: String,
        #[serde(
            rename = "os.version",
            default,
            skip_serializing_if = "String::is_empty"
        )]
        os_version: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        variant: String,
    }

    pub(super) fn serialize<S: serde::Serializer>(
        p: &Option<Platform>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match p {
            None => s.serialize_none(),
            Some(p) => Wire {
                architecture: p.architecture.clone(),
                os: p.os.clone(),
                os_version: p.os_version.clone(),
                variant: p.variant.clone(),
            }
            .serialize(s),
        }
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Platform>, D::Error> {
        Ok(Option::<Wire>::deserialize(d)?.map(|w| Platform {
            os: w.os,
            architecture: w.architecture,
            variant: w.variant,
            os_version: w.os_version,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::to_canonical_json;
    use crate::media;

    fn s(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn descriptor_shape() {
        let mut d = Descriptor::new(
            media::OCI_MANIFEST,
            BlobInfo {
                digest: Digest::of(b""),
                size: 0,
            },
        );
        assert_eq!(
            s(to_canonical_json(&d).unwrap()),
            r#"{"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","mediaType":"application/vnd.oci.image.manifest.v1+json","size":0}"#
        );
        d.platform = Some(Platform::new("linux", "arm", "v7"));
        d.annotations.insert("b".into(), "2".into());
        d.annotations.insert("a".into(), "1".into());
        let j = s(to_canonical_json(&d).unwrap());
        assert!(
            j.starts_with(r#"{"annotations":{"a":"1","b":"2"},"digest""#),
            "{j}"
        );
        assert!(
            j.ends_with(
                r#""platform":{"architecture":"arm","os":"linux","variant":"v7"},"size":0}"#
            ),
            "{j}"
        );
        let back: Descriptor = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn tolerant_parsing() {
        let j = r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":1,
            "annotations":null,"urls":null,"data":"", "artifactType":"x",
            "platform":{"architecture":"amd64","os":"windows","os.version":"10.0.1","os.features":["win32k"]}}],
            "annotations":null,"subject":null}"#;
        let idx: Index = serde_json::from_str(j).unwrap();
        assert_eq!(idx.media_type, "");
        let p = idx.manifests[0].platform.as_ref().unwrap();
        assert_eq!(
            (p.os.as_str(), p.os_version.as_str()),
            ("windows", "10.0.1")
        );
        let m: Manifest = serde_json::from_str(
            r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":null}"#,
        )
        .unwrap();
        assert!(m.layers.is_empty());
        // Layers are always written, even when empty.
        let out = s(
            to_canonical_json(&Manifest::new(MediaTypes::Oci, m.config.clone(), vec![])).unwrap(),
        );
        assert!(out.contains(r#""layers":[]"#), "{out}");
    }
}
