//! Outputs of a build (`-o`): one [`Exporter`] per `type=`, each in a file
//! of its own with the parser of its attributes, as BuildKit's
//! `exporter/<name>/` packages.
//!
//! # Layout
//!
//! - `exporter`: the [`Exporter`] trait and what writing is handed
//!   ([`Single`], [`Multi`]);
//! - `image`, `registry`, `oci`, `docker`, `local`, `tar`: one output each,
//!   registered in [`EXPORTERS`];
//! - `attrs`: the attributes of an `-o` value ([`Attrs`]), which the cli
//!   reads from its syntax;
//! - `manifest`: the manifests and indexes image outputs write into the
//!   content store; `file`: files written whole (or to stdout) with their
//!   progress, for every archive; `store`: naming images in the local
//!   store (`type=image`, and `type=image,push=true` after its push).
//!
//! The files of `export/` import each other without a circle: this file
//! only declares and re-exports; children name siblings, never `super::X`
//! of this file.

mod attrs;
mod docker;
mod exporter;
mod file;
mod image;
mod local;
mod manifest;
mod oci;
mod registry;
mod store;
mod tar;

pub use attrs::{Attrs, FileAttrs, Parse};
pub use docker::Docker;
pub use exporter::{Exporter, Multi, Output, Single, check_attestations, platform_dir};
pub use file::STDOUT;
pub use image::Image;
pub use local::Local;
pub use manifest::REWRITTEN_TIMESTAMP;
pub use oci::Oci;
pub use registry::Registry;
pub use tar::Tar;

/// The outputs, by `type=`. Adding one is a file beside this one, its
/// `mod` line and a line here.
pub const EXPORTERS: &[(&str, Parse)] = &[
    ("local", local::parse),
    ("tar", tar::parse),
    ("oci", oci::parse),
    ("docker", docker::parse),
    ("image", image::parse),
    ("registry", registry::parse),
];

/// The parser of output type `kind`, if there is one.
pub fn parser(kind: &str) -> Option<Parse> {
    EXPORTERS.iter().find(|(k, _)| *k == kind).map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn attrs(kind: &str) -> Attrs {
        Attrs {
            kind: kind.to_owned(),
            dest: Some(PathBuf::from("out")),
            tar: true,
            names: vec!["docker.io/library/t:1".to_owned()],
            compression: kiln_oci::Compression::gzip(),
            force_compression: false,
            push: false,
            insecure: false,
            oci_types: None,
            epoch: false,
            files: FileAttrs::default(),
        }
    }

    #[test]
    fn each_output_is_its_registered_type() {
        for (kind, parse) in EXPORTERS {
            let out = parse(attrs(kind)).unwrap();
            assert_eq!(out.kind(), *kind);
            assert_eq!(
                out.needs_image(),
                !matches!(*kind, "local" | "tar"),
                "{kind}"
            );
        }
        assert!(parser("cacheonly").is_none());
    }

    #[test]
    fn what_outputs_say_of_themselves() {
        let out = |kind: &str| parser(kind).unwrap()(attrs(kind)).unwrap();
        assert_eq!(out("oci").dest(), Some(Path::new("out")));
        assert_eq!(out("image").dest(), None);
        assert!(out("image").stores() && !out("registry").stores());
        assert!(out("registry").pushes() && !out("oci").pushes());
        assert!(!out("docker").holds_index() && out("oci").holds_index());
        assert!(out("local").names().is_empty());
        assert_eq!(out("docker").names(), ["docker.io/library/t:1"]);
        let mut load = parser("docker").unwrap()(Attrs {
            dest: None,
            ..attrs("docker")
        })
        .unwrap();
        assert!(load.loads());
        load.set_archive(PathBuf::from("scratch/load-0.tar"));
        assert!(!load.loads());
        let pushed = parser("image").unwrap()(Attrs {
            push: true,
            ..attrs("image")
        })
        .unwrap();
        assert_eq!(pushed.kind(), "registry");
        assert!(pushed.stores());
        assert_eq!(
            parser("registry").unwrap()(Attrs {
                names: Vec::new(),
                ..attrs("registry")
            })
            .unwrap_err(),
            "--output type=registry needs a name to push to (name=… or -t)"
        );
        assert_eq!(
            parser("tar").unwrap()(Attrs {
                epoch: true,
                ..attrs("tar")
            })
            .unwrap_err(),
            "--output type=tar with source-date-epoch or rewrite-timestamp is not supported yet"
        );
    }
}
