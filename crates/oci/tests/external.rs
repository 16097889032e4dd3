//! Tests that run other processes: the real tools that must accept kiln's
//! exports (skopeo, umoci), and kiln-oci itself in child processes to check
//! that concurrent processes do not lose index updates and that a crashed
//! writer's temp file is cleaned up.
//!
//! A tool test is skipped (reported as ignored, with a message on stderr) only
//! when the tool is not installed; CI installs skopeo and umoci.
//!
//! Set `KILN_OCI_KEEP=<dir>` to keep the archives written here (e.g. to try
//! `docker load -i <dir>/docker-archive.tar` by hand).

#![allow(clippy::print_stderr)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use kiln_llb::Digest;
use kiln_oci::{
    Compression, ContentStore, ExportImage, ImageIndex, ImageRef, MediaTypes, write_docker_archive,
    write_oci_archive, write_oci_layout,
};
use libtest_mimic::{Arguments, Failed, Trial};

type R = Result<(), Failed>;

fn fail(msg: impl std::fmt::Display) -> Failed {
    Failed::from(msg.to_string())
}

fn check(cond: bool, msg: impl FnOnce() -> String) -> R {
    if cond { Ok(()) } else { Err(fail(msg())) }
}

fn has_tool(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command; its stdout on success, an error with stderr otherwise.
fn run(cmd: &mut Command) -> Result<Vec<u8>, Failed> {
    let out = cmd.output().map_err(|e| fail(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

fn json(bytes: &[u8]) -> Result<serde_json::Value, Failed> {
    serde_json::from_slice(bytes)
        .map_err(|e| fail(format!("{e}: {}", String::from_utf8_lossy(bytes))))
}

fn tempdir() -> Result<tempfile::TempDir, Failed> {
    tempfile::tempdir().map_err(fail)
}

fn keep(path: &Path, name: &str) {
    if let Some(dir) = std::env::var_os("KILN_OCI_KEEP") {
        let _ = fs::create_dir_all(&dir);
        let _ = fs::copy(path, Path::new(&dir).join(name));
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    store: ContentStore,
    image: common::TestImage,
}

fn fixture(compression: Compression, types: MediaTypes) -> Result<Fixture, Failed> {
    let dir = tempdir()?;
    let root = dir.path().to_path_buf();
    let store = ContentStore::open(root.join("blobs")).map_err(fail)?;
    let image = common::make_image(&store, compression, types, "kiln").map_err(fail)?;
    Ok(Fixture {
        _dir: dir,
        root,
        store,
        image,
    })
}

fn export(f: &Fixture, names: &[&str]) -> Vec<ExportImage> {
    vec![ExportImage {
        manifest: f.image.written.manifest.clone(),
        names: names.iter().map(|s| s.to_string()).collect(),
    }]
}

/// What `skopeo inspect` must report for the test image.
fn check_inspect(v: &serde_json::Value, f: &Fixture, layers: &[Digest]) -> R {
    check(v["Architecture"] == "amd64" && v["Os"] == "linux", || {
        format!("platform: {v}")
    })?;
    check(v["Labels"]["test"] == "kiln", || format!("labels: {v}"))?;
    let got: Vec<String> = v["Layers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let want: Vec<String> = layers.iter().map(Digest::to_string).collect();
    check(got == want, || format!("layers {got:?}, want {want:?}"))?;
    check(v["Created"] == "1970-01-01T00:00:00Z", || {
        format!("created: {v}")
    })?;
    let _ = f;
    Ok(())
}

fn skopeo_oci_layout() -> R {
    let f = fixture(Compression::gzip(), MediaTypes::Oci)?;
    let layout = f.root.join("layout");
    write_oci_layout(
        &f.store,
        &layout,
        &export(&f, &["docker.io/library/hello:latest"]),
    )
    .map_err(fail)?;
    let refname = format!("oci:{}:latest", layout.display());
    let v = json(&run(Command::new("skopeo").args(["inspect", &refname]))?)?;
    check_inspect(&v, &f, &[f.image.layer.descriptor.digest])?;
    check(
        v["Digest"] == f.image.written.manifest.digest.to_string(),
        || format!("digest: {v}"),
    )?;
    // The raw manifest and config are byte-for-byte what the store holds.
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &refname]))?;
    check(
        raw == f
            .store
            .read(&f.image.written.manifest.digest)
            .map_err(fail)?,
        || "raw manifest differs".into(),
    )?;
    let cfg = run(Command::new("skopeo").args(["inspect", "--config", "--raw", &refname]))?;
    check(
        cfg == f.store.read(&f.image.written.config.digest).map_err(fail)?,
        || "raw config differs".into(),
    )
}

fn skopeo_oci_archive() -> R {
    let f = fixture(Compression::zstd(), MediaTypes::Oci)?;
    let path = f.root.join("oci-archive.tar");
    let file = fs::File::create(&path).map_err(fail)?;
    write_oci_archive(
        &f.store,
        file,
        &export(&f, &["docker.io/library/hello:latest"]),
    )
    .map_err(fail)?;
    keep(&path, "oci-archive.tar");
    let v = json(&run(Command::new("skopeo").args([
        "inspect",
        &format!("oci-archive:{}:latest", path.display()),
    ]))?)?;
    check_inspect(&v, &f, &[f.image.layer.descriptor.digest])?;
    check(
        v["Digest"] == f.image.written.manifest.digest.to_string(),
        || format!("digest: {v}"),
    )
}

fn skopeo_docker_archive(compression: Compression) -> R {
    let f = fixture(compression, MediaTypes::Docker)?;
    let path = f.root.join("docker-archive.tar");
    let file = fs::File::create(&path).map_err(fail)?;
    write_docker_archive(
        &f.store,
        file,
        &export(
            &f,
            &[
                "docker.io/library/kiln-oci-test:latest",
                "localhost:5000/kiln/test:v1",
            ],
        ),
    )
    .map_err(fail)?;
    keep(&path, &format!("docker-archive-{}.tar", compression.name()));
    let src = format!("docker-archive:{}", path.display());
    // skopeo reads docker archives by manifest.json and reports the layers by
    // their uncompressed digests (it decompresses gzip layers to check them).
    let v =
        json(&run(Command::new("skopeo").args([
            "inspect",
            &format!("{src}:localhost:5000/kiln/test:v1"),
        ]))?)?;
    check_inspect(&v, &f, &[f.image.layer.diff_id])?;
    let tags =
        run(Command::new("skopeo").args(["inspect", &format!("{src}:kiln-oci-test:latest")]));
    check(tags.is_ok(), || {
        format!("second RepoTag not found: {tags:?}")
    })?;
    let cfg = run(Command::new("skopeo").args(["inspect", "--config", "--raw", &src]))?;
    check(
        cfg == f.store.read(&f.image.written.config.digest).map_err(fail)?,
        || "raw config differs".into(),
    )?;
    // Copying reads and verifies every layer against the config's diffIDs;
    // then unpack the copy and look at the files.
    let copy = f.root.join("copied");
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        &src,
        &format!("oci:{}:copied", copy.display()),
    ]))?;
    if has_tool("umoci") {
        unpack_and_check(&copy, "copied", &f.root.join("bundle"))?;
    }
    Ok(())
}

fn unpack_and_check(layout: &Path, tag: &str, bundle: &Path) -> R {
    let mut cmd = Command::new("umoci");
    cmd.arg("unpack");
    if !kiln_testkit::is_root() {
        cmd.arg("--rootless");
    }
    cmd.arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle);
    run(&mut cmd)?;
    let hello = fs::read(bundle.join("rootfs/hello.txt")).map_err(fail)?;
    check(hello == common::HELLO, || "hello.txt differs".into())?;
    let host = fs::read(bundle.join("rootfs/etc/hostname")).map_err(fail)?;
    check(host == b"kiln\n", || "etc/hostname differs".into())?;
    let config = json(&fs::read(bundle.join("config.json")).map_err(fail)?)?;
    check(
        config["process"]["args"] == serde_json::json!(["/bin/sh"]),
        || format!("runtime config: {config}"),
    )
}

fn umoci_unpack() -> R {
    let f = fixture(Compression::gzip(), MediaTypes::Oci)?;
    let layout = f.root.join("layout");
    write_oci_layout(
        &f.store,
        &layout,
        &export(&f, &["docker.io/library/hello:latest"]),
    )
    .map_err(fail)?;
    unpack_and_check(&layout, "latest", &f.root.join("bundle"))
}

// ---- child processes -------------------------------------------------------

const CHILD: &str = "KILN_OCI_CHILD";

/// The work of a child process (this binary re-executed with `KILN_OCI_CHILD`).
fn child_main(role: &str) -> Result<(), String> {
    let dir = std::env::var("KILN_OCI_DIR").map_err(|e| e.to_string())?;
    match role {
        "index-writer" => {
            let prefix = std::env::var("KILN_OCI_PREFIX").map_err(|e| e.to_string())?;
            let idx = ImageIndex::open(&dir).map_err(|e| e.to_string())?;
            for i in 0..25u32 {
                let r = ImageRef {
                    id: Digest::of(format!("{prefix}{i}").as_bytes()),
                    manifest: None,
                };
                idx.set(&format!("example.com/{prefix}:{i}"), r)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        "blob-writer" => {
            let store = ContentStore::open(&dir).map_err(|e| e.to_string())?;
            let mut w = store.writer().map_err(|e| e.to_string())?;
            w.write_all(b"never committed").map_err(|e| e.to_string())?;
            w.flush().map_err(|e| e.to_string())?;
            let mut out = std::io::stdout();
            writeln!(out, "ready").map_err(|e| e.to_string())?;
            out.flush().map_err(|e| e.to_string())?;
            // Wait to be killed (the parent simulates a crash).
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            Err("parent closed stdin instead of killing".into())
        }
        other => Err(format!("unknown child role {other}")),
    }
}

fn spawn_child(role: &str, dir: &Path, prefix: &str) -> Result<std::process::Child, Failed> {
    let exe = std::env::current_exe().map_err(fail)?;
    Command::new(exe)
        .env(CHILD, role)
        .env("KILN_OCI_DIR", dir)
        .env("KILN_OCI_PREFIX", prefix)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(fail)
}

fn index_concurrent_processes() -> R {
    let dir = tempdir()?;
    let children: Vec<_> = (0..4)
        .map(|p| spawn_child("index-writer", dir.path(), &format!("p{p}")))
        .collect::<Result<_, _>>()?;
    // The parent writes too, at the same time.
    let idx = ImageIndex::open(dir.path()).map_err(fail)?;
    for i in 0..25u32 {
        let r = ImageRef {
            id: Digest::of(format!("parent{i}").as_bytes()),
            manifest: None,
        };
        idx.set(&format!("example.com/parent:{i}"), r)
            .map_err(fail)?;
    }
    for c in children {
        let out = c.wait_with_output().map_err(fail)?;
        check(out.status.success(), || {
            format!("child failed: {}", out.status)
        })?;
    }
    let all = idx.list().map_err(fail)?;
    check(all.len() == 125, || {
        format!("{} names, want 125: updates were lost", all.len())
    })?;
    for p in ["p0", "p1", "p2", "p3", "parent"] {
        for i in 0..25u32 {
            let got = idx
                .get(&format!("example.com/{p}:{i}"))
                .map_err(fail)?
                .map(|r| r.id);
            check(
                got == Some(Digest::of(format!("{p}{i}").as_bytes())),
                || format!("{p}:{i} = {got:?}"),
            )?;
        }
    }
    Ok(())
}

fn crashed_writer_is_cleaned_up() -> R {
    let dir = tempdir()?;
    let store = ContentStore::open(dir.path()).map_err(fail)?;
    let mut child = spawn_child("blob-writer", dir.path(), "")?;
    let stdout = child.stdout.take().ok_or_else(|| fail("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(fail)?;
    check(line == "ready\n", || format!("child said {line:?}"))?;
    let ingest = || {
        fs::read_dir(dir.path().join("ingest"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    check(ingest() == 1, || {
        "the child's ingest file should exist".into()
    })?;
    // A live writer's file is left alone, even by another process's cleanup.
    check(store.cleanup().map_err(fail)? == 0, || {
        "cleanup removed a live writer's file".into()
    })?;
    check(ingest() == 1, || "live ingest file vanished".into())?;
    // Crash: SIGKILL, no destructors run, the temp file stays behind.
    child.kill().map_err(fail)?;
    child.wait().map_err(fail)?;
    check(ingest() == 1, || {
        "a killed writer cannot clean up after itself".into()
    })?;
    check(store.cleanup().map_err(fail)? == 1, || {
        "cleanup did not remove the dead writer's file".into()
    })?;
    check(ingest() == 0, || "ingest file left".into())?;
    check(store.digests().map_err(fail)?.is_empty(), || {
        "a partial blob was stored".into()
    })
}

fn main() {
    if let Ok(role) = std::env::var(CHILD) {
        if let Err(e) = child_main(&role) {
            eprintln!("child {role}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args = Arguments::from_args();
    let skopeo = has_tool("skopeo");
    let umoci = has_tool("umoci");
    if !skopeo {
        eprintln!("note: skopeo is not installed; its tests are skipped (ignored)");
    }
    if !umoci {
        eprintln!("note: umoci is not installed; its tests are skipped (ignored)");
    }
    let trials = vec![
        Trial::test("skopeo_inspects_oci_layout", skopeo_oci_layout).with_ignored_flag(!skopeo),
        Trial::test("skopeo_inspects_oci_archive", skopeo_oci_archive).with_ignored_flag(!skopeo),
        Trial::test("skopeo_reads_docker_archive_gzip", || {
            skopeo_docker_archive(Compression::gzip())
        })
        .with_ignored_flag(!skopeo),
        Trial::test("skopeo_reads_docker_archive_uncompressed", || {
            skopeo_docker_archive(Compression::Uncompressed)
        })
        .with_ignored_flag(!skopeo),
        Trial::test("umoci_unpacks_oci_layout", umoci_unpack).with_ignored_flag(!umoci),
        Trial::test("index_concurrent_processes", index_concurrent_processes),
        Trial::test("crashed_writer_is_cleaned_up", crashed_writer_is_cleaned_up),
    ];
    libtest_mimic::run(&args, trials).exit();
}
