//! Named build contexts that need the store before planning:
//! `--build-context NAME=oci-layout://DIR[:TAG|@DIGEST]` puts the image of
//! an OCI layout directory into the content store as a pull would (blobs
//! verified, layer blobs recorded for unpacking, the image recorded), so the
//! frontend can plan `FROM NAME` on it like any stored image.
//!
//! Local directories need nothing here: they are [`crate::build::BuildRequest`]
//! `local_contexts`, read in place like the main context.

use std::path::Path;

use kiln_frontend::ResolvedImage;
use kiln_llb::{Digest, Platform};
use kiln_oci::Descriptor;

use crate::error::{BuildContextError, Error};
use crate::image::{load_config, to_llb};
use crate::state::State;

/// Which entry of a layout's `index.json` to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutSelector {
    /// The entry whose `org.opencontainers.image.ref.name` is the tag (a
    /// full reference ending in `:TAG` also matches).
    Tag(String),
    /// The entry with this digest.
    Digest(Digest),
}

/// An image of an OCI layout, imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutImage {
    /// As the frontend resolves images: `digest` is its image ID in the
    /// store.
    pub image: ResolvedImage,
    /// The digest of the entry of the layout's `index.json` taken (what
    /// `@DIGEST` names, or the tag's entry): the provenance's digest of
    /// the source, as buildx sends it to BuildKit.
    pub entry: Digest,
}

/// Stores the image `select` names in the OCI layout `dir` (for
/// `platform`, if the entry is an index) and returns it.
pub fn import_oci_layout(
    state: &State,
    dir: &Path,
    select: &LayoutSelector,
    platform: &Platform,
) -> Result<LayoutImage, Error> {
    let picked = std::cell::Cell::new(None);
    let matches = |d: &Descriptor| match select {
        LayoutSelector::Digest(want) => d.digest == *want,
        LayoutSelector::Tag(tag) => d
            .annotations
            .get(kiln_oci::export::ANNOTATION_REF_NAME)
            .is_some_and(|n| {
                n == tag
                    || n.rsplit_once(':')
                        .is_some_and(|(name, t)| t == tag && !t.contains('/') && !name.is_empty())
            }),
    };
    let pick = |d: &Descriptor| {
        let m = matches(d);
        if m && picked.get().is_none() {
            picked.set(Some(d.digest));
        }
        m
    };
    let img = kiln_oci::load_layout_image(&state.content, dir, &pick, platform).map_err(|e| {
        let what = match select {
            LayoutSelector::Tag(t) => format!("tag {t:?}"),
            LayoutSelector::Digest(d) => format!("digest {d}"),
        };
        BuildContextError::OciLayout {
            dir: dir.to_path_buf(),
            what,
            error: kiln_oci::Error::from(e),
        }
    })?;
    crate::blobs::record_loaded(state, &img.layers)?;
    crate::images::record(state, &img.id)?;
    let config = load_config(state, &img.id)?;
    Ok(LayoutImage {
        image: ResolvedImage {
            digest: Some(img.id.to_string()),
            has_layers: !config.rootfs.diff_ids.is_empty(),
            config: to_llb(&config),
        },
        entry: picked.get().unwrap_or(img.id),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use kiln_oci::{ImageConfigFile, Index, Manifest, MediaTypes, media};

    /// Writes `bytes` as a blob of the layout at `dir`; its descriptor.
    fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> Descriptor {
        let d = Digest::of(bytes);
        let p = dir.join("blobs/sha256");
        fs_err(std::fs::create_dir_all(&p));
        fs_err(std::fs::write(p.join(d.hex()), bytes));
        Descriptor::new(
            media_type,
            kiln_oci::BlobInfo {
                digest: d,
                size: bytes.len() as u64,
            },
        )
    }

    fn fs_err<T>(r: std::io::Result<T>) -> T {
        r.expect("writing the test layout")
    }

    /// A layout with one image (one layer holding `/hello`) tagged `v1`.
    fn layout(dir: &Path) -> (Descriptor, Digest) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, "hello", &b"hi\n"[..]).unwrap();
        let layer = tar.into_inner().unwrap();
        let platform = Platform::host();
        let mut config = ImageConfigFile::new(&platform);
        config.rootfs.diff_ids.push(Digest::of(&layer));
        let config_bytes = kiln_oci::to_canonical_json(&config).unwrap();
        let config_desc = blob(dir, media::OCI_CONFIG, &config_bytes);
        let layer_desc = blob(dir, media::OCI_LAYER_TAR, &layer);
        let manifest = Manifest::new(MediaTypes::Oci, config_desc.clone(), vec![layer_desc]);
        let mut m = blob(
            dir,
            media::OCI_MANIFEST,
            &kiln_oci::to_canonical_json(&manifest).unwrap(),
        );
        m.annotations.insert(
            kiln_oci::export::ANNOTATION_REF_NAME.to_owned(),
            "v1".to_owned(),
        );
        let index = Index::new(MediaTypes::Oci, vec![m.clone()]);
        fs_err(std::fs::write(
            dir.join("index.json"),
            kiln_oci::to_canonical_json(&index).unwrap(),
        ));
        (m, config_desc.digest)
    }

    #[test]
    fn imports_by_tag_and_by_digest() {
        let root = tempfile::tempdir().unwrap();
        let state = State::open(root.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (manifest, config) = layout(dir.path());
        let host = Platform::host();
        let by_tag = import_oci_layout(
            &state,
            dir.path(),
            &LayoutSelector::Tag("v1".to_owned()),
            &host,
        )
        .unwrap();
        assert_eq!(by_tag.image.digest, Some(config.to_string()));
        assert!(by_tag.image.has_layers);
        assert_eq!(by_tag.entry, manifest.digest);
        let by_digest = import_oci_layout(
            &state,
            dir.path(),
            &LayoutSelector::Digest(manifest.digest),
            &host,
        )
        .unwrap();
        assert_eq!(by_digest, by_tag);
        // The image is recorded and its layer blob known for unpacking.
        assert!(crate::images::records(&state).unwrap().contains(&config));
        let cfg = load_config(&state, &config).unwrap();
        assert_eq!(
            state
                .layer_blobs
                .list(&cfg.rootfs.diff_ids[0])
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_missing_tag_is_named() {
        let root = tempfile::tempdir().unwrap();
        let state = State::open(root.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        layout(dir.path());
        let err = import_oci_layout(
            &state,
            dir.path(),
            &LayoutSelector::Tag("v2".to_owned()),
            &Platform::host(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tag \"v2\""), "{err}");
        assert!(err.contains("no such image in the layout"), "{err}");
    }
}
