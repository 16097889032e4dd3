//! Base images as the caller resolves them. The frontend does no I/O: the
//! configuration of a `FROM` image (its ENV, WORKDIR, ONBUILD, platform) comes
//! in through an [`ImageResolver`] the caller implements (the local store,
//! a registry).

use std::collections::BTreeMap;

use kiln_llb::{ImageConfig, Platform};

/// A base image as the resolver found it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Manifest digest (`sha256:…`) the reference resolved to.
    pub digest: Option<String>,
    /// The image's configuration (env, workdir, user, onbuild, history, …).
    pub config: ImageConfig,
    /// Whether the image has any layers (an image without layers is `scratch`).
    pub has_layers: bool,
}

/// The answer of an [`ImageResolver`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per base image; not worth a box
pub enum Resolution {
    Resolved(ResolvedImage),
    /// Could not be looked up (offline, empty store): planning goes on, and the
    /// image's configuration takes no part in substitution.
    Unresolved,
}

/// Supplies base-image configurations. The frontend does no I/O itself; the
/// caller looks images up (local store, registry) however it likes.
pub trait ImageResolver {
    /// Resolves `reference` (normalised, e.g. `docker.io/library/alpine:3.20`) for
    /// `platform`. An `Err` is a real failure (bad credentials, no such image) and
    /// stops the build with the message at the FROM line.
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Resolution, String>;

    /// The time of a remote source that `SOURCE_DATE_EPOCH` names (BuildKit's
    /// `ResolveSourceMetadata`, then the archive): `Ok(None)` when it has
    /// none. An `Err` stops the build. The default knows no times, as
    /// [`Offline`] resolves no images: planning still works.
    fn source_time(&self, source: &TimedSource) -> Result<Option<i64>, String> {
        let _ = source;
        Ok(None)
    }
}

/// A remote source whose time `ARG SOURCE_DATE_EPOCH=NAME` asks for: the
/// named build context `NAME`, or the one remote `ADD` of stage `NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimedSource {
    /// Its `Last-Modified`; without one, the newest regular file of the
    /// (possibly compressed) tar archive it is; nothing for another file.
    Http { url: String },
    /// The committer time of the commit `git_ref` resolves to (`checksum`:
    /// a prefix that commit must have, as for `ADD`).
    Git {
        remote: String,
        git_ref: String,
        checksum: String,
    },
}

/// Resolves nothing: every image is [`Resolution::Unresolved`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Offline;

impl ImageResolver for Offline {
    fn resolve(&self, _: &str, _: &Platform) -> Result<Resolution, String> {
        Ok(Resolution::Unresolved)
    }
}

/// Resolves from a fixed table (tests, and images already in a store).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    pub images: BTreeMap<String, ResolvedImage>,
    /// Times of sources: by URL (HTTP), by `remote#ref` (git).
    pub times: BTreeMap<String, i64>,
}

impl ImageResolver for StaticResolver {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<Resolution, String> {
        Ok(match self.images.get(reference) {
            Some(i) => Resolution::Resolved(i.clone()),
            None => Resolution::Unresolved,
        })
    }

    fn source_time(&self, source: &TimedSource) -> Result<Option<i64>, String> {
        let key = match source {
            TimedSource::Http { url } => url.clone(),
            TimedSource::Git {
                remote, git_ref, ..
            } => format!("{remote}#{git_ref}"),
        };
        Ok(self.times.get(&key).copied())
    }
}
