//! Exports without external tools: structure, determinism, adding to a layout,
//! and failure modes. (`external.rs` checks the results with skopeo/umoci.)

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;

use kiln_oci::export::{ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
use kiln_oci::{
    Compression, ContentStore, Descriptor, ExportError, ExportImage, Index, MediaTypes, media,
    write_docker_archive, write_oci_archive, write_oci_layout,
};

fn store() -> (tempfile::TempDir, ContentStore) {
    let d = tempfile::tempdir().expect("test fixture");
    let s = ContentStore::open(d.path().join("blobs")).expect("test fixture");
    (d, s)
}

fn named(d: &Descriptor, names: &[&str]) -> ExportImage {
    ExportImage {
        manifest: d.clone(),
        names: names.iter().map(|s| s.to_string()).collect(),
    }
}

struct TarEntry {
    name: String,
    mode: u32,
    mtime: u64,
    uid: u64,
    gid: u64,
    kind: tar::EntryType,
    data: Vec<u8>,
}

fn entries(archive: &[u8]) -> Vec<TarEntry> {
    let mut a = tar::Archive::new(archive);
    a.entries()
        .expect("test fixture")
        .map(|e| {
            let mut e = e.expect("test fixture");
            let h = e.header().clone();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("test fixture");
            TarEntry {
                name: e
                    .path()
                    .expect("test fixture")
                    .to_string_lossy()
                    .into_owned(),
                mode: h.mode().expect("test fixture"),
                mtime: h.mtime().expect("test fixture"),
                uid: h.uid().expect("test fixture"),
                gid: h.gid().expect("test fixture"),
                kind: h.entry_type(),
                data,
            }
        })
        .collect()
}

#[test]
fn archives_are_deterministic_across_stores() {
    let (_a, sa) = store();
    let (_b, sb) = store();
    let ia = common::make_image(&sa, Compression::gzip(), MediaTypes::Oci, "x").unwrap();
    let ib = common::make_image(&sb, Compression::gzip(), MediaTypes::Oci, "x").unwrap();
    assert_eq!(ia.written, ib.written, "same inputs, same digests");
    let names = ["docker.io/library/hello:latest"];
    let oa = write_oci_archive(&sa, Vec::new(), &[named(&ia.written.manifest, &names)]).unwrap();
    let ob = write_oci_archive(&sb, Vec::new(), &[named(&ib.written.manifest, &names)]).unwrap();
    assert_eq!(oa, ob);
    let da = write_docker_archive(&sa, Vec::new(), &[named(&ia.written.manifest, &names)]).unwrap();
    let db = write_docker_archive(&sb, Vec::new(), &[named(&ib.written.manifest, &names)]).unwrap();
    assert_eq!(da, db);
}

#[test]
fn oci_archive_structure() {
    let (_d, s) = store();
    let img = common::make_image(&s, Compression::zstd(), MediaTypes::Oci, "x").unwrap();
    let m = &img.written.manifest;
    let out = write_oci_archive(
        &s,
        Vec::new(),
        &[named(
            m,
            &["docker.io/library/hello:latest", "localhost:5000/a/b:v1"],
        )],
    )
    .unwrap();
    let es = entries(&out);
    let names: Vec<&str> = es.iter().map(|e| e.name.as_str()).collect();
    let mut blobs = [
        format!("blobs/sha256/{}", m.digest.hex()),
        format!("blobs/sha256/{}", img.written.config.digest.hex()),
        format!("blobs/sha256/{}", img.layer.descriptor.digest.hex()),
    ];
    blobs.sort();
    let mut expected = vec!["blobs/", "blobs/sha256/"];
    expected.extend(blobs.iter().map(String::as_str));
    expected.extend(["index.json", "oci-layout"]);
    assert_eq!(names, expected);
    for e in &es {
        assert_eq!((e.mtime, e.uid, e.gid), (0, 0, 0), "{}", e.name);
        let want = match e.kind {
            tar::EntryType::Directory => 0o755,
            _ if e.name.starts_with("blobs/") || e.name == "oci-layout" => 0o444,
            _ => 0o644,
        };
        assert_eq!(e.mode, want, "{}", e.name);
        if e.name.starts_with("blobs/sha256/") && e.kind == tar::EntryType::Regular {
            assert_eq!(
                format!("blobs/sha256/{}", kiln_llb::Digest::of(&e.data).hex()),
                e.name
            );
        }
    }
    let layout = es.iter().find(|e| e.name == "oci-layout").unwrap();
    assert_eq!(layout.data, br#"{"imageLayoutVersion":"1.0.0"}"#);
    let index: Index =
        serde_json::from_slice(&es.iter().find(|e| e.name == "index.json").unwrap().data).unwrap();
    assert_eq!(index.media_type, media::OCI_INDEX);
    let ann: Vec<(String, String)> = index
        .manifests
        .iter()
        .map(|d| {
            assert_eq!(d.digest, m.digest);
            (
                d.annotations[ANNOTATION_IMAGE_NAME].clone(),
                d.annotations[ANNOTATION_REF_NAME].clone(),
            )
        })
        .collect();
    assert_eq!(
        ann,
        [
            (
                "docker.io/library/hello:latest".to_string(),
                "latest".to_string()
            ),
            ("localhost:5000/a/b:v1".to_string(), "v1".to_string())
        ]
    );
    assert!(index.manifests[0].platform.is_some());
}

#[test]
fn docker_archive_manifest_and_repositories() {
    let (_d, s) = store();
    let a = common::make_image(&s, Compression::gzip(), MediaTypes::Docker, "a").unwrap();
    let b = common::make_image(&s, Compression::Uncompressed, MediaTypes::Docker, "b").unwrap();
    let digest_name = format!("docker.io/library/pinned@{}", a.written.manifest.digest);
    let out = write_docker_archive(
        &s,
        Vec::new(),
        &[
            named(
                &a.written.manifest,
                &["docker.io/library/hello:1", digest_name.as_str()],
            ),
            named(&b.written.manifest, &["localhost:5000/x/y:2"]),
            named(&a.written.manifest, &["docker.io/user/app:latest"]),
        ],
    )
    .unwrap();
    let es = entries(&out);
    let file = |n: &str| {
        es.iter()
            .find(|e| e.name == n)
            .map(|e| e.data.clone())
            .unwrap()
    };
    let manifest: serde_json::Value = serde_json::from_slice(&file("manifest.json")).unwrap();
    let blob = |d: &kiln_llb::Digest| format!("blobs/sha256/{}", d.hex());
    assert_eq!(
        manifest,
        serde_json::json!([
            {
                "Config": blob(&a.written.config.digest),
                "RepoTags": ["hello:1", "user/app:latest"],
                "Layers": [blob(&a.layer.descriptor.digest)],
            },
            {
                "Config": blob(&b.written.config.digest),
                "RepoTags": ["localhost:5000/x/y:2"],
                "Layers": [blob(&b.layer.descriptor.digest)],
            },
        ])
    );
    let repos: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_slice(&file("repositories")).unwrap();
    assert_eq!(repos["hello"]["1"], a.layer.descriptor.digest.hex());
    assert_eq!(
        repos["localhost:5000/x/y"]["2"],
        b.layer.descriptor.digest.hex()
    );
    assert!(!repos.contains_key("pinned"));
    // It is also an OCI archive: index.json has every name, pinned one included.
    let index: Index = serde_json::from_slice(&file("index.json")).unwrap();
    assert_eq!(index.manifests.len(), 4);
    assert_eq!(
        index.manifests[1].annotations[ANNOTATION_REF_NAME],
        digest_name
    );
    // Every file manifest.json references is in the archive.
    for e in ["Config", "Layers"] {
        for item in manifest.as_array().unwrap() {
            let paths: Vec<String> = match &item[e] {
                serde_json::Value::String(s) => vec![s.clone()],
                v => v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap().to_owned())
                    .collect(),
            };
            for p in paths {
                assert!(es.iter().any(|x| x.name == p), "{p} missing");
            }
        }
    }
}

#[test]
fn layout_adds_to_an_existing_layout() {
    let (d, s) = store();
    let a = common::make_image(&s, Compression::gzip(), MediaTypes::Oci, "a").unwrap();
    let b = common::make_image(&s, Compression::gzip(), MediaTypes::Oci, "b").unwrap();
    let c = common::make_image(&s, Compression::zstd(), MediaTypes::Oci, "c").unwrap();
    let dir = d.path().join("layout");
    write_oci_layout(
        &s,
        &dir,
        &[named(&a.written.manifest, &["docker.io/library/app:1"])],
    )
    .unwrap();
    write_oci_layout(
        &s,
        &dir,
        &[named(&b.written.manifest, &["docker.io/library/app:2"])],
    )
    .unwrap();
    write_oci_layout(&s, &dir, &[named(&c.written.manifest, &[])]).unwrap();
    // Re-pointing app:1 replaces its entry; the unnamed entry is not duplicated.
    let idx = write_oci_layout(
        &s,
        &dir,
        &[
            named(&c.written.manifest, &["docker.io/library/app:1"]),
            named(&c.written.manifest, &[]),
        ],
    )
    .unwrap();
    let summary: Vec<(kiln_llb::Digest, Option<String>)> = idx
        .manifests
        .iter()
        .map(|m| (m.digest, m.annotations.get(ANNOTATION_IMAGE_NAME).cloned()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                b.written.manifest.digest,
                Some("docker.io/library/app:2".into())
            ),
            (c.written.manifest.digest, None),
            (
                c.written.manifest.digest,
                Some("docker.io/library/app:1".into())
            ),
        ]
    );
    let on_disk: Index =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(on_disk, idx);
    assert_eq!(
        fs::read(dir.join("oci-layout")).unwrap(),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    // Every blob of every image is there (a's stay: layouts are append-only).
    for img in [&a, &b, &c] {
        for dg in [
            img.written.manifest.digest,
            img.written.config.digest,
            img.layer.descriptor.digest,
        ] {
            let p = dir.join("blobs/sha256").join(dg.hex());
            assert_eq!(kiln_llb::Digest::of(&fs::read(&p).unwrap()), dg);
        }
    }
    // No temp files or lock files are left.
    let stray: Vec<_> = walk(&dir)
        .into_iter()
        .filter(|p| p.contains(".tmp-") || p.ends_with(".lock"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn layout_merge_keeps_foreign_entries_intact() {
    let (d, s) = store();
    let a = common::make_image(&s, Compression::gzip(), MediaTypes::Oci, "a").unwrap();
    let dir = d.path().join("layout");
    fs::create_dir_all(&dir).unwrap();
    // An index written by another tool, with fields kiln does not model.
    let foreign = r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0,
        "artifactType":"application/x-thing","platform":{"architecture":"arm64","os":"linux","os.features":["x"]},
        "annotations":{"org.opencontainers.image.ref.name":"other"}}],"annotations":{"by":"someone"}}"#;
    fs::write(dir.join("index.json"), foreign).unwrap();
    write_oci_layout(
        &s,
        &dir,
        &[named(&a.written.manifest, &["docker.io/library/app:1"])],
    )
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(v["annotations"]["by"], "someone");
    assert_eq!(v["mediaType"], media::OCI_INDEX);
    assert_eq!(v["manifests"][0]["artifactType"], "application/x-thing");
    assert_eq!(v["manifests"][0]["platform"]["os.features"][0], "x");
    assert_eq!(v["manifests"][1]["annotations"][ANNOTATION_REF_NAME], "1");
    // A corrupt index.json is an error naming it, and is left alone.
    fs::write(dir.join("index.json"), b"{").unwrap();
    let err = write_oci_layout(&s, &dir, &[named(&a.written.manifest, &[])]).unwrap_err();
    assert!(err.to_string().contains("index.json"), "{err}");
    assert_eq!(fs::read(dir.join("index.json")).unwrap(), b"{");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).expect("test fixture") {
        let p = e.expect("test fixture").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn indexes_export_to_oci_but_not_to_docker() {
    let (_d, s) = store();
    let a = common::make_image(&s, Compression::gzip(), MediaTypes::Oci, "a").unwrap();
    let b = common::make_image(&s, Compression::gzip(), MediaTypes::Oci, "b").unwrap();
    let index = Index::new(
        MediaTypes::Oci,
        vec![a.written.manifest.clone(), b.written.manifest.clone()],
    );
    let desc = Descriptor::new(media::OCI_INDEX, s.put_json(&index).unwrap());
    let out = write_oci_archive(
        &s,
        Vec::new(),
        &[named(&desc, &["docker.io/library/multi:1"])],
    )
    .unwrap();
    let names: Vec<String> = entries(&out).into_iter().map(|e| e.name).collect();
    for d in [
        desc.digest,
        a.written.manifest.digest,
        b.written.manifest.digest,
        a.written.config.digest,
        b.written.config.digest,
        a.layer.descriptor.digest,
    ] {
        assert!(names.contains(&format!("blobs/sha256/{}", d.hex())), "{d}");
    }
    let err = write_docker_archive(
        &s,
        Vec::new(),
        &[named(&desc, &["docker.io/library/multi:1"])],
    )
    .unwrap_err();
    assert!(
        matches!(err, ExportError::IndexInDockerArchive { .. }),
        "{err}"
    );
    // A config is not exportable on its own.
    let err = write_oci_archive(&s, Vec::new(), &[named(&a.written.config, &[])]).unwrap_err();
    assert!(matches!(err, ExportError::NotAManifest { .. }), "{err}");
}

#[test]
fn missing_or_corrupt_blobs_fail_the_export() {
    use std::os::unix::fs::PermissionsExt;
    let (d, s) = store();
    let a = common::make_image(&s, Compression::gzip(), MediaTypes::Oci, "a").unwrap();
    let img = [named(&a.written.manifest, &["docker.io/library/a:1"])];
    // Corrupt the layer blob in place (same size, other bytes).
    let p = s.path(&a.layer.descriptor.digest);
    let mut bytes = fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&p, &bytes).unwrap();
    let err = write_oci_archive(&s, Vec::new(), &img).unwrap_err();
    assert!(matches!(err, ExportError::BlobMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&a.layer.descriptor.digest.to_string())
    );
    let err = write_oci_layout(&s, &d.path().join("layout"), &img).unwrap_err();
    assert!(matches!(err, ExportError::BlobMismatch { .. }), "{err}");
    assert!(
        !d.path()
            .join("layout/blobs/sha256")
            .join(a.layer.descriptor.digest.hex())
            .exists()
    );
    // Missing entirely.
    s.remove(&a.layer.descriptor.digest).unwrap();
    let err = write_docker_archive(&s, Vec::new(), &img).unwrap_err();
    assert!(
        err.to_string()
            .contains(&a.layer.descriptor.digest.to_string()),
        "{err}"
    );
}
