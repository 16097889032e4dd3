//! `type=registry`: an OCI registry reference. The cache manifest is pushed
//! by digest and then tagged; its blobs are the build's layer blobs, so a
//! push of the result to the same registry mounts them. An import also reads
//! an image's inline cache (`--cache-to type=inline`).

use std::sync::Arc;

use kiln_llb::{Digest, Platform};
use kiln_oci::{Descriptor, Manifest, media};
use kiln_reference::Reference;
use kiln_registry::Client;

use super::attrs::Attrs;
use super::error::CacheError;
use super::format::{self, CONFIG_MEDIA_TYPE, Cache};
use super::transport::{Current, Cx, Remote, Transport};
use crate::error::{Error, InternalError};
use crate::state::State;

/// Largest cache config read back from a registry to merge with.
const CONFIG_LIMIT: u64 = 256 << 20;

/// `type=registry,ref=NAME`.
#[derive(Debug, Clone)]
pub struct Registry {
    name: String,
}

/// Parses `type=registry`'s attributes.
pub fn parse(a: &mut Attrs) -> Result<Arc<dyn Transport>, String> {
    Ok(Arc::new(Registry {
        name: a.required("ref")?,
    }))
}

impl Transport for Registry {
    fn kind(&self) -> &'static str {
        "registry"
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn per_platform(&self) -> bool {
        true
    }

    fn connect(&self, cx: &Cx<'_>) -> Result<Arc<dyn Remote>, Error> {
        let client = cx
            .registry
            .ok_or(InternalError::NoRegistryClient("a registry cache"))?;
        let reference = Reference::parse_normalized(&self.name)
            .map_err(|source| CacheError::BadRef {
                name: self.name.clone(),
                source,
            })?
            .with_default_tag();
        Ok(Arc::new(RegistryRemote {
            client: client.clone(),
            name: self.name.clone(),
            reference,
        }))
    }
}

/// A registry reference and the client to reach it.
#[derive(Debug)]
pub struct RegistryRemote {
    client: Client,
    /// As given (the tag the export writes).
    name: String,
    reference: Reference,
}

impl Remote for RegistryRemote {
    fn describe(&self) -> String {
        self.reference.to_string()
    }

    fn current(&self, cx: &Cx<'_>) -> Result<Option<Current>, Error> {
        let fetched = match self.client.get_manifest(&self.reference) {
            Ok(f) => f,
            Err(kiln_registry::RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let what = self.reference.to_string();
        let manifest = match serde_json::from_slice::<Manifest>(&fetched.bytes) {
            Ok(m) if m.config.media_type == CONFIG_MEDIA_TYPE => m,
            _ => {
                (cx.log)(&format!(
                    "warning: --cache-to {what}: replacing {} ({}), which is not a kiln cache",
                    fetched.digest, fetched.media_type
                ));
                return Ok(Some(Current {
                    digest: fetched.digest,
                    cache: None,
                }));
            }
        };
        let bytes = self
            .client
            .get_blob_bytes(&self.reference, &manifest.config, CONFIG_LIMIT)
            .map_err(Error::from)?;
        let config = format::parse_config(&bytes, &what)?;
        Ok(Some(Current {
            digest: fetched.digest,
            cache: Some((manifest, config)),
        }))
    }

    fn import(&self, cx: &Cx<'_>, platform: &Platform) -> Result<Option<Cache>, Error> {
        let (client, reference) = (&self.client, &self.reference);
        let fetched = match client.resolve(reference, platform) {
            Ok(r) => r.manifest,
            Err(kiln_registry::RegistryError::NotFound { .. }) => {
                (cx.log)(&format!("warning: --cache-from {reference}: not found"));
                return Ok(None);
            }
            Err(source) => {
                return Err(CacheError::Import {
                    reference: reference.to_string(),
                    source,
                }
                .into());
            }
        };
        let what = reference.to_string();
        let manifest: Manifest = serde_json::from_slice(&fetched.bytes).map_err(|source| {
            CacheError::InvalidManifest {
                what: what.clone(),
                source,
            }
        })?;
        client
            .fetch_blob(reference, &manifest.config, &cx.state.content, &|_| {})
            .map_err(|source| CacheError::Import {
                reference: reference.to_string(),
                source,
            })?;
        let config_bytes = cx.state.content.read(&manifest.config.digest)?;
        let config = if media::is_image_config(&manifest.config.media_type) {
            // An image: its inline cache, if it was built with one.
            match format::inline_config(&config_bytes, &what)? {
                Some(c) => c,
                None => {
                    (cx.log)(&format!(
                        "warning: --cache-from {reference}: an image without an inline \
                         cache (build it with --cache-to type=inline)"
                    ));
                    return Ok(None);
                }
            }
        } else {
            format::check_cache_manifest(&manifest, &what)?;
            format::parse_config(&config_bytes, &what)?
        };
        // The blobs live in that repository: a push of the result to the
        // same registry mounts them.
        let mut digests: Vec<Digest> = manifest.layers.iter().map(|l| l.digest).collect();
        digests.push(manifest.config.digest);
        crate::registry::remember(
            cx.state,
            &digests,
            &format!("{}/{}", reference.domain(), reference.path()),
        );
        Ok(Some((manifest, config)))
    }

    fn has(&self, desc: &Descriptor) -> Result<bool, Error> {
        self.client
            .head_blob(&self.reference, &desc.digest)
            .map(|s| s.is_some())
            .map_err(Error::from)
    }

    fn fetch(&self, state: &State, desc: &Descriptor) -> Result<(), Error> {
        if state.content.has(&desc.digest)? {
            return Ok(());
        }
        self.client
            .fetch_blob(&self.reference, desc, &state.content, &|_| {})
            .map_err(|source| {
                CacheError::Fetch {
                    reference: self.reference.to_string(),
                    source,
                }
                .into()
            })
    }

    fn put(&self, state: &State, desc: &Descriptor) -> Result<(), Error> {
        let path = state.content.path(&desc.digest);
        let open = move || -> std::io::Result<Box<dyn std::io::Read + Send>> {
            Ok(Box::new(std::fs::File::open(&path)?))
        };
        self.client
            .push_blob(&self.reference, desc, None, &open)
            .map(|_| ())
            .map_err(Error::from)
    }

    /// Pushed by digest, with the registry's blob mounts.
    fn put_cache(&self, cx: &Cx<'_>, _: &Manifest, desc: &Descriptor) -> Result<(), Error> {
        let by_digest = format!(
            "{}/{}@{}",
            self.reference.domain(),
            self.reference.path(),
            desc.digest
        );
        crate::registry::push(cx.state, &self.client, desc, &[by_digest], cx.log)?;
        Ok(())
    }

    fn write_index(&self, cx: &Cx<'_>, desc: &Descriptor) -> Result<(), Error> {
        crate::registry::push(
            cx.state,
            &self.client,
            desc,
            std::slice::from_ref(&self.name),
            cx.log,
        )?;
        Ok(())
    }

    /// Pushing under the tag pushes what the registry lacks first.
    fn publish(&self, cx: &Cx<'_>, _: &Manifest, desc: &Descriptor) -> Result<(), Error> {
        self.write_index(cx, desc)
    }
}
