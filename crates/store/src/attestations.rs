//! The attestations the store keeps for an image (`<root>/attestations/<image
//! id hex>`): the digest of the attestation index (provenance, SBOM) a build
//! stored with it, which `kiln push` and `kiln verify` read back, and whose
//! blobs garbage collection keeps while the image stays.

use std::path::PathBuf;

use kiln_llb::Digest;

use crate::error::Error;
use crate::state::{State, write_atomic};

/// Where the local store records an image's attestation index
/// (`<root>/attestations/<image id hex>`).
fn index_record(state: &State, id: &Digest) -> PathBuf {
    state.root.join("attestations").join(id.hex())
}

/// Records `index` as image `id`'s attestations in the local store.
pub fn store_index(state: &State, id: &Digest, index: &Digest) -> Result<(), Error> {
    let path = index_record(state, id);
    let dir = state.root.join("attestations");
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    write_atomic(&path, index.to_string().as_bytes())
}

/// The attestation index the local store records for image `id`.
pub fn stored_index(state: &State, id: &Digest) -> Option<Digest> {
    std::fs::read_to_string(index_record(state, id))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Every blob the attestation index of image `id` reaches (the index, its
/// attestation manifests, their configs and statements), for garbage
/// collection and `kiln check`.
pub fn stored_blobs(state: &State, id: &Digest) -> Vec<Digest> {
    let Some(idx) = stored_index(state, id) else {
        return Vec::new();
    };
    let mut out = vec![idx];
    let Ok(bytes) = state.content.read(&idx) else {
        return out;
    };
    let Ok(index) = serde_json::from_slice::<kiln_oci::Index>(&bytes) else {
        return out;
    };
    for m in &index.manifests {
        out.push(m.digest);
        if let Ok(b) = state.content.read(&m.digest)
            && let Ok(man) = serde_json::from_slice::<kiln_oci::Manifest>(&b)
        {
            out.push(man.config.digest);
            out.extend(man.layers.iter().map(|l| l.digest));
        }
    }
    out
}

/// Removes the attestation record of image `id` (its blobs go with the
/// next collection).
pub fn forget(state: &State, id: &Digest) {
    let _ = std::fs::remove_file(index_record(state, id));
}
