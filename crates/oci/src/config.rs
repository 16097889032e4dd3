//! The image configuration (`application/vnd.oci.image.config.v1+json` /
//! `application/vnd.docker.container.image.v1+json`): what `docker inspect`
//! shows and what a container starts from. Its digest is the image ID.
//!
//! Field names and omission rules are Docker's (`moby/docker-image-spec`
//! `DockerOCIImage`, which BuildKit writes): the OCI fields plus Docker's
//! `Healthcheck`, `OnBuild` and `Shell`. Checked against images built by
//! BuildKit and by Docker's classic builder in `testdata/oci/config/`.
//!
//! - Always written: `architecture`, `os`, `config` (`{}` when empty, as Go never
//!   omits a struct), `rootfs` with `type` and `diff_ids`.
//! - Omitted when empty: everything else (`created`, `author`, `variant`,
//!   `os.version`, `os.features`, `history`; in `config` every field; in a
//!   history entry every field).
//!
//! Parsing is tolerant, because configs of pulled images come from many tools:
//! unknown fields (`container_config`, `docker_version`, `Hostname`, …) are
//! ignored, missing fields take their defaults, and `null` is read as empty.
//! Unknown fields are not preserved: a config kiln writes contains only the
//! fields above (so does BuildKit's), and `kiln.cache.v1` when the build
//! was asked for an inline cache. `created` is kept as the string it was.

use std::collections::{BTreeMap, BTreeSet};

use kiln_llb::{Digest, Platform};
use serde::{Deserialize, Serialize};

use crate::gojson::{nullable, set_as_object};
use crate::json::{JsonError, to_canonical_json};

/// An image configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigFile {
    /// RFC 3339 creation time (see [`crate::rfc3339`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub created: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub author: String,
    #[serde(default, deserialize_with = "nullable")]
    pub architecture: String,
    #[serde(default, deserialize_with = "nullable")]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub os_version: String,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub os_features: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub variant: String,
    /// Runtime defaults for containers.
    #[serde(default, deserialize_with = "nullable")]
    pub config: RuntimeConfig,
    #[serde(default, deserialize_with = "nullable")]
    pub rootfs: RootFs,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub history: Vec<History>,
    /// kiln's inline build cache (`--cache-to type=inline`): the cache
    /// records of the image's own layers, in kiln's cache format with blob
    /// indexes into the image's layers (`kiln-worker`'s `cache` module).
    /// Written only when asked for, and never inherited by an image built on
    /// this one. BuildKit's counterpart is `moby.buildkit.cache.v0`.
    #[serde(
        rename = "kiln.cache.v1",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub inline_cache: Option<serde_json::Value>,
}

impl ImageConfigFile {
    /// An empty configuration for `platform` with `rootfs.type = "layers"`.
    pub fn new(platform: &Platform) -> ImageConfigFile {
        ImageConfigFile {
            architecture: platform.architecture.clone(),
            os: platform.os.clone(),
            os_version: platform.os_version.clone(),
            variant: platform.variant.clone(),
            rootfs: RootFs::default(),
            ..ImageConfigFile::default()
        }
    }

    /// Parses a configuration (tolerantly, see the module docs). `what` names
    /// the source in the error (a digest or a file).
    pub fn from_json(bytes: &[u8], what: &str) -> Result<ImageConfigFile, JsonError> {
        serde_json::from_slice(bytes).map_err(|source| JsonError::Parse {
            what: what.to_owned(),
            source,
        })
    }

    /// The canonical JSON bytes; their digest is the image ID.
    pub fn to_json(&self) -> Result<Vec<u8>, JsonError> {
        to_canonical_json(self)
    }

    /// The platform the image is for.
    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
        }
    }
}

/// The runtime defaults (`config` in the file). Docker's capitalised field
/// names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub user: String,
    #[serde(
        default,
        skip_serializing_if = "BTreeSet::is_empty",
        with = "set_as_object"
    )]
    pub exposed_ports: BTreeSet<String>,
    /// `KEY=value` in definition order.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub env: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub entrypoint: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub cmd: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeSet::is_empty",
        with = "set_as_object"
    )]
    pub volumes: BTreeSet<String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub working_dir: String,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub stop_signal: String,
    /// Windows-only in Docker's semantics; BuildKit sets it for shell-form
    /// CMD/ENTRYPOINT on every platform.
    #[serde(
        default,
        skip_serializing_if = "std::ops::Not::not",
        deserialize_with = "nullable"
    )]
    pub args_escaped: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub healthcheck: Option<Healthcheck>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub on_build: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub shell: Vec<String>,
}

/// `HEALTHCHECK`. Durations in nanoseconds (Go's `time.Duration`); zero means
/// "inherit the default" and is omitted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    /// `[]` inherit, `["NONE"]` disable, `["CMD", args…]`, `["CMD-SHELL", cmd]`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub test: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "nullable"
    )]
    pub interval: i64,
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "nullable"
    )]
    pub timeout: i64,
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "nullable"
    )]
    pub start_period: i64,
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "nullable"
    )]
    pub start_interval: i64,
    #[serde(
        default,
        skip_serializing_if = "is_zero",
        deserialize_with = "nullable"
    )]
    pub retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// `rootfs`: the layers as uncompressed-tar digests (diffIDs), bottom first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub fs_type: String,
    /// Always written (`[]` when there are no layers).
    #[serde(default, deserialize_with = "nullable")]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            fs_type: "layers".to_owned(),
            diff_ids: Vec::new(),
        }
    }
}

/// One line of `docker history`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub created: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub created_by: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub author: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub comment: String,
    /// This step made no layer (ENV, CMD, …): it has no entry in `diff_ids`.
    #[serde(
        default,
        skip_serializing_if = "std::ops::Not::not",
        deserialize_with = "nullable"
    )]
    pub empty_layer: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_shape() {
        let c = ImageConfigFile::new(&Platform::new("linux", "arm64", ""));
        assert_eq!(
            String::from_utf8(c.to_json().unwrap()).unwrap(),
            r#"{"architecture":"arm64","config":{},"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
        assert_eq!(c.platform(), Platform::new("linux", "arm64", ""));
    }

    #[test]
    fn nulls_and_unknown_fields_are_tolerated() {
        let j = br#"{"architecture":"amd64","os":"linux","created":null,"container_config":{"Hostname":"x"},
            "config":{"Hostname":"","Env":null,"Cmd":null,"ExposedPorts":null,"Volumes":{"/v":{}},"Labels":null,
                      "Healthcheck":null,"OnBuild":null,"ArgsEscaped":null},
            "rootfs":{"type":"layers","diff_ids":null},"history":null,"docker_version":"20.10"}"#;
        let c = ImageConfigFile::from_json(j, "test").unwrap();
        assert!(c.config.env.is_empty() && c.config.cmd.is_empty() && c.created.is_none());
        assert_eq!(c.config.volumes.iter().collect::<Vec<_>>(), ["/v"]);
        let out = String::from_utf8(c.to_json().unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"architecture":"amd64","config":{"Volumes":{"/v":{}}},"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#
        );
        // Missing everything still parses.
        assert!(ImageConfigFile::from_json(b"{}", "t").is_ok());
        let e = ImageConfigFile::from_json(br#"{"os": 5}"#, "sha256:abc").unwrap_err();
        assert!(e.to_string().contains("sha256:abc"));
    }
}
