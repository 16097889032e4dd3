//! File reuse between COPY layers: the one-file edit of a large context
//! must not recopy the other 29,999 files.
//!
//! A COPY whose destination is a fresh directory is staged (see
//! [`crate::copy::Copier::copy_staged`]); the layer it makes carries a
//! *copy manifest* (`<layer>/copy-manifest`): for each regular file copied
//! from the build context, its path in the layer and the SHA-256 of its
//! content (the digest the cache key was computed from). The layer is
//! labelled with the copy's *site* (a digest of its sources and
//! destination), so the next execution of the same COPY finds the latest
//! such layer as a *donor* and hard-links every file whose digest, size,
//! mode, owner and mtime are what the copy would produce, copying only the
//! rest.
//!
//! Sharing inodes between layers is sound because committed layers are
//! immutable: they are only ever overlay lower dirs (a write copies up),
//! tar sources, or removed whole (which drops one name of the inode). The
//! layer tar writer treats a file as a hard link only when two paths of the
//! *same* layer share its inode, which reuse never creates. Correctness
//! rests on the checks, not on the site: a wrong donor only means fewer
//! links.
//!
//! Manifest format (`kiln.copy-manifest.v1`): the magic line, then per file
//! `[32] sha256, u32 big-endian length, path bytes` (paths are relative to
//! the layer root and may hold any byte).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The layer label naming a staged copy's site.
pub const LABEL_COPY_SITE: &str = "kiln.copy.site";
/// The side file of a layer holding its copy manifest.
pub const MANIFEST_FILE: &str = "copy-manifest";
const MAGIC: &[u8] = b"kiln.copy-manifest.v1\n";

/// The site of a copy: which earlier layers are worth looking at for reuse.
pub fn site(context: &str, sources: &[String], dest: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"kiln.copy-site.v1\0");
    h.update(context.as_bytes());
    h.update([0]);
    for s in sources {
        h.update(s.as_bytes());
        h.update([0]);
    }
    h.update(dest.as_bytes());
    hex::encode(h.finalize())
}

/// Files of one layer by path (relative to the layer root), with their
/// content digests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Manifest {
    files: HashMap<Vec<u8>, [u8; 32]>,
}

impl Manifest {
    pub fn insert(&mut self, path: Vec<u8>, sha: [u8; 32]) {
        self.files.insert(path, sha);
    }

    pub fn get(&self, path: &[u8]) -> Option<&[u8; 32]> {
        self.files.get(path)
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut entries: Vec<(&Vec<u8>, &[u8; 32])> = self.files.iter().collect();
        entries.sort();
        let mut out = MAGIC.to_vec();
        for (path, sha) in entries {
            let Ok(len) = u32::try_from(path.len()) else {
                continue;
            };
            out.extend_from_slice(sha);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(path);
        }
        out
    }

    /// Parses a manifest; `None` when it is not one (a donor without a
    /// readable manifest is simply not used).
    pub fn decode(data: &[u8]) -> Option<Manifest> {
        let mut rest = data.strip_prefix(MAGIC)?;
        let mut files = HashMap::new();
        while !rest.is_empty() {
            let (sha, r) = rest.split_first_chunk::<32>()?;
            let (len, r) = r.split_first_chunk::<4>()?;
            let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
            if r.len() < len {
                return None;
            }
            let (path, r) = r.split_at(len);
            files.insert(path.to_vec(), *sha);
            rest = r;
        }
        Some(Manifest { files })
    }
}

/// An earlier layer whose files a copy may link.
#[derive(Debug)]
pub struct Donor {
    /// The layer's content directory.
    pub diff: PathBuf,
    pub manifest: Manifest,
}

impl Donor {
    /// The donor of a layer directory (`<store>/<id>`), if it has a manifest.
    pub fn open(layer_dir: &Path, diff: PathBuf) -> Option<Donor> {
        let data = fs::read(layer_dir.join(MANIFEST_FILE)).ok()?;
        Some(Donor {
            diff,
            manifest: Manifest::decode(&data)?,
        })
    }
}

/// Writes `manifest` next to a draft's diff directory (made durable by the
/// draft's commit).
pub fn write_manifest(draft_root: &Path, manifest: &Manifest) -> io::Result<()> {
    fs::write(draft_root.join(MANIFEST_FILE), manifest.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_any_path_bytes() {
        let mut m = Manifest::default();
        m.insert(b"app/a.txt".to_vec(), [1; 32]);
        m.insert(b"app/new\nline\xff".to_vec(), [2; 32]);
        m.insert(Vec::new(), [3; 32]);
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Some(m.clone()));
        // Deterministic.
        assert_eq!(bytes, m.encode());
        // Truncated or foreign data is not a manifest.
        assert_eq!(Manifest::decode(&bytes[..bytes.len() - 1]), None);
        assert_eq!(Manifest::decode(b"something else"), None);
    }

    #[test]
    fn site_separates_fields() {
        assert_ne!(
            site("context", &["ab".into()], "/c"),
            site("context", &["a".into()], "b/c")
        );
        assert_eq!(
            site("c", &[".".into()], "/app"),
            site("c", &[".".into()], "/app")
        );
    }
}
