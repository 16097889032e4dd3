//! A small image made from scratch, shared by the export tests.

#![allow(dead_code)]

use std::io;

use kiln_llb::Platform;
use kiln_oci::{
    Compression, ContentStore, Descriptor, History, ImageConfigFile, LayerBlob, MediaTypes,
    WrittenImage, compress_layer, write_image,
};

/// The content of `hello.txt` in the layer.
pub const HELLO: &[u8] = b"hello from kiln\n";

/// A one-layer tar: `etc/`, `etc/hostname`, `hello.txt`, deterministic headers.
pub fn layer_tar() -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(1_700_000_000);
    dir.set_cksum();
    b.append_data(&mut dir, "etc/", io::empty())?;
    for (name, data, mode) in [
        ("etc/hostname", &b"kiln\n"[..], 0o644),
        ("hello.txt", HELLO, 0o644),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, data)?;
    }
    b.into_inner()
}

/// An image with the layer compressed as `compression`, in the store.
pub struct TestImage {
    pub written: WrittenImage,
    pub layer: LayerBlob,
    pub config: ImageConfigFile,
}

/// Builds the test image into `store`. `label` varies the config so several
/// distinct images can be made.
pub fn make_image(
    store: &ContentStore,
    compression: Compression,
    types: MediaTypes,
    label: &str,
) -> Result<TestImage, Box<dyn std::error::Error>> {
    let tar = layer_tar()?;
    let layer = compress_layer(store, &tar[..], compression)?;
    let mut config = ImageConfigFile::new(&Platform::new("linux", "amd64", ""));
    config.created = Some(kiln_oci::rfc3339(0, 0)?);
    config.config.env =
        vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()];
    config.config.cmd = vec!["/bin/sh".into()];
    config.config.labels.insert("test".into(), label.into());
    config.rootfs.diff_ids = vec![layer.diff_id];
    config.history = vec![History {
        created: config.created.clone(),
        created_by: "COPY . / # kiln test".into(),
        ..History::default()
    }];
    let layers: Vec<Descriptor> = vec![layer.descriptor.clone()];
    let written = write_image(store, &config, &layers, types)?;
    Ok(TestImage {
        written,
        layer,
        config,
    })
}
