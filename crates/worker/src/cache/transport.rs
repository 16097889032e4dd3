//! Where a cache is kept: the [`Transport`] trait that a local directory, a
//! registry and S3-compatible object storage implement. A transport moves
//! blobs and the one mutable name (the index) that says which cache
//! manifest is current; what the manifest and its config mean is
//! `super::format`'s business, and the export's merge on write
//! (`super::export`) is the same for every transport.

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use kiln_llb::{Digest, Platform};
use kiln_oci::{Descriptor, Manifest};
use kiln_registry::Client;

use super::error::CacheError;
use super::format::{self, Cache};
use crate::error::Error;
use crate::state::State;

impl Debug for Cx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cx").finish_non_exhaustive()
    }
}

/// What a transport is handed when it is used: the store, the registry
/// client (the registry transport's), the progress log.
#[derive(Clone, Copy)]
pub struct Cx<'a> {
    pub state: &'a State,
    pub registry: Option<&'a Client>,
    pub log: &'a (dyn Fn(&str) + Sync),
}

/// What the index of a destination names now.
#[derive(Debug)]
pub struct Current {
    /// The digest of the manifest it names.
    pub digest: Digest,
    /// That manifest and its config, when it is a kiln cache (`None`: it
    /// names something else, which an export replaces).
    pub cache: Option<Cache>,
}

/// A cache destination or source as parsed from `--cache-to` /
/// `--cache-from`; [`Transport::connect`] makes the [`Remote`] an import or
/// an export works with.
pub trait Transport: Debug + Send + Sync {
    /// The `type=` it was registered under.
    fn kind(&self) -> &'static str;
    /// How messages name it; never holds a secret.
    fn describe(&self) -> String;
    /// The directory on this machine it reads and writes, if any (the cli
    /// gives a rootless build access to it).
    fn local_dir(&self) -> Option<&Path> {
        None
    }
    /// Whether an import reads something else for each platform (a registry
    /// reference may name an index of images, each with an inline cache).
    fn per_platform(&self) -> bool {
        false
    }
    /// A connection for one import or export.
    fn connect(&self, cx: &Cx<'_>) -> Result<Arc<dyn Remote>, Error>;
}

/// A connected transport.
pub trait Remote: Debug + Send + Sync {
    /// How messages name it; never holds a secret.
    fn describe(&self) -> String;

    /// What the index names now; `None` when there is no cache yet.
    fn current(&self, cx: &Cx<'_>) -> Result<Option<Current>, Error>;

    /// The cache to import for `platform`, or `None` (after a warning
    /// through the log) when there is none yet.
    fn import(&self, cx: &Cx<'_>, platform: &Platform) -> Result<Option<Cache>, Error> {
        let _ = platform;
        let what = self.describe();
        match self.current(cx)? {
            None => {
                (cx.log)(&format!("warning: --cache-from {what}: no cache there yet"));
                Ok(None)
            }
            Some(Current { cache: Some(c), .. }) => Ok(Some(c)),
            Some(Current { cache: None, .. }) => Err(Error::Cache(CacheError::NotACache { what })),
        }
    }

    /// Whether it holds blob `desc`.
    fn has(&self, desc: &Descriptor) -> Result<bool, Error>;

    /// Copies blob `desc` into the content store.
    fn fetch(&self, state: &State, desc: &Descriptor) -> Result<(), Error>;

    /// Copies blob `desc` from the content store.
    fn put(&self, state: &State, desc: &Descriptor) -> Result<(), Error>;

    /// Stores a cache (config, layer blobs, the manifest itself as a blob)
    /// without naming it: each blob it lacks.
    fn put_cache(&self, cx: &Cx<'_>, manifest: &Manifest, desc: &Descriptor) -> Result<(), Error> {
        let mut all = vec![manifest.config.clone()];
        all.extend(manifest.layers.iter().cloned());
        all.push(desc.clone());
        for d in &all {
            if !self.has(d)? {
                self.put(cx.state, d)?;
            }
        }
        Ok(())
    }

    /// Names the stored cache manifest `desc` as the current one.
    fn write_index(&self, cx: &Cx<'_>, desc: &Descriptor) -> Result<(), Error>;

    /// Stores the cache `manifest` (`desc`) and names it as the current one.
    fn publish(&self, cx: &Cx<'_>, manifest: &Manifest, desc: &Descriptor) -> Result<(), Error> {
        self.put_cache(cx, manifest, desc)?;
        self.write_index(cx, desc)
    }

    /// Exclusive access for one export's read, merge and write (a local
    /// directory's lock); `None` when the transport has none, and the export
    /// checks after its write that no other exporter replaced it.
    fn exclusive(&self) -> Result<Option<Box<dyn Send>>, Error> {
        Ok(None)
    }
}

/// Reads the cache manifest `digest` and its config through `remote`'s
/// blobs (fetched into the content store): for transports whose index is
/// a manifest digest.
pub fn read_cache(cx: &Cx<'_>, remote: &dyn Remote, manifest: &Descriptor) -> Result<Cache, Error> {
    let what = remote.describe();
    remote.fetch(cx.state, manifest)?;
    let m = format::parse_manifest(&cx.state.content.read(&manifest.digest)?, &what)?;
    remote.fetch(cx.state, &m.config)?;
    let c = format::parse_config(&cx.state.content.read(&m.config.digest)?, &what)?;
    Ok((m, c))
}
