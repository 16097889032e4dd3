//! Manifests and indexes: fetched by tag or digest and verified against
//! their digest, resolved to a platform's image through an index, and put.

use kiln_llb::{Digest, Platform};
use kiln_oci::{Index, media};
use kiln_reference::Reference;

use crate::error::RegistryError;
use crate::platform::select;

use super::response::header;
use super::url::registry_host;
use super::{Body, Client, FetchedManifest, MANIFEST_ACCEPT, Resolved, Target, sha256};

/// Largest manifest accepted (the distribution server's own limit is 4 MiB).
const MANIFEST_LIMIT: u64 = 16 << 20;

impl Client {
    pub(super) fn fetch_manifest(
        &self,
        r: &Reference,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let host = registry_host(r.domain());
        let t = Target {
            host: &host,
            repo: r.path(),
        };
        let scope = format!("repository:{}:pull", r.path());
        let path = format!("/v2/{}/manifests/{reference}", r.path());
        let mut resp = self.send(
            &t,
            &scope,
            "GET",
            &path,
            &[("Accept", MANIFEST_ACCEPT.to_owned())],
            Body::Empty,
            true,
        )?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(
                &t,
                "GET",
                &path,
                &format!("manifest {}", r.familiar()),
                resp,
            ));
        }
        let content_type = header(&resp, "content-type").unwrap_or_default();
        let header_digest = header(&resp, "docker-content-digest");
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_to_vec()
            .map_err(|e| self.transport_error(&host, &e))?;
        let digest = sha256(&bytes);
        let expected = if reference.contains(':') {
            Some(reference.to_owned())
        } else {
            header_digest
        };
        if let Some(exp) = expected
            && exp != digest.to_string()
        {
            return Err(RegistryError::DigestMismatch {
                host: host.clone(),
                repository: r.path().to_owned(),
                what: format!("manifest {}", r.familiar()),
                expected: exp,
                actual: digest.to_string(),
            });
        }
        let body_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_owned));
        let media_type = match body_type {
            Some(t) if !t.is_empty() => t,
            _ => content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        Ok(FetchedManifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// The manifest or index `r` names (by digest if it has one, else by
    /// tag, `latest` by default), verified against its digest.
    pub fn get_manifest(&self, r: &Reference) -> Result<FetchedManifest, RegistryError> {
        let reference = match (r.digest(), r.tag()) {
            (Some(d), _) => d.to_owned(),
            (None, Some(t)) => t.to_owned(),
            (None, None) => "latest".to_owned(),
        };
        self.fetch_manifest(r, &reference)
    }

    /// The image manifest of `r` for `platform`, through its index if `r`
    /// names one.
    pub fn resolve(&self, r: &Reference, platform: &Platform) -> Result<Resolved, RegistryError> {
        let top = self.get_manifest(r)?;
        if !media::is_index(&top.media_type) {
            return Ok(Resolved {
                index: None,
                manifest: top,
            });
        }
        let index: Index =
            serde_json::from_slice(&top.bytes).map_err(|e| RegistryError::Protocol {
                host: r.domain().to_owned(),
                detail: format!("{}: invalid index: {e}", r.familiar()),
            })?;
        let chosen = select(&index.manifests, platform).ok_or_else(|| {
            let available: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(Platform::format)
                .collect();
            RegistryError::NoPlatform {
                reference: r.familiar(),
                wanted: platform.format(),
                available: if available.is_empty() {
                    "no platforms".to_owned()
                } else {
                    available.join(", ")
                },
            }
        })?;
        let manifest = self.fetch_manifest(r, &chosen.digest.to_string())?;
        Ok(Resolved {
            index: Some(top),
            manifest,
        })
    }

    /// The manifest or index `reference` (a tag or a digest) of repository
    /// `repo` (whose own tag or digest is ignored), verified against its
    /// digest when fetched by digest.
    pub fn get_manifest_in(
        &self,
        repo: &Reference,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        self.fetch_manifest(repo, reference)
    }

    /// Stores a manifest or index under `tag_or_digest`; returns its digest,
    /// checked against what the registry says.
    pub fn put_manifest(
        &self,
        repo: &Reference,
        tag_or_digest: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let host = registry_host(repo.domain());
        let t = Target {
            host: &host,
            repo: repo.path(),
        };
        let scope = format!("repository:{}:pull,push", repo.path());
        let path = format!("/v2/{}/manifests/{tag_or_digest}", repo.path());
        let resp = self.send(
            &t,
            &scope,
            "PUT",
            &path,
            &[("Content-Type", media_type.to_owned())],
            Body::Bytes(bytes),
            true,
        )?;
        if resp.status().as_u16() != 201 {
            return Err(self.status_error(&t, "PUT", &path, "manifest", resp));
        }
        let digest = sha256(bytes);
        if let Some(d) = header(&resp, "docker-content-digest")
            && d != digest.to_string()
        {
            return Err(RegistryError::DigestMismatch {
                host,
                repository: repo.path().to_owned(),
                what: format!("manifest {tag_or_digest}"),
                expected: digest.to_string(),
                actual: d,
            });
        }
        Ok(digest)
    }
}
