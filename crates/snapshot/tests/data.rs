//! Unprivileged data-driven tests: resolve_in_root vectors, tar writer
//! listings, hostile tars.

#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use kiln_snapshot::{
    ExtractOptions, TarOptions, UnpackError, WhiteoutFormat, extract_archive, resolve_in_root,
    tar_listing, unpack_layer, write_layer_tar,
};

fn area() -> PathBuf {
    kiln_testkit::testdata().join("snapshot")
}

// ----- resolve_in_root -----

fn build_tree(root: &Path, spec: &str) {
    for line in spec.lines().filter(|l| !l.trim().is_empty()) {
        let (kind, rest) = line.split_once(' ').unwrap();
        match kind {
            "dir" => fs::create_dir_all(root.join(rest)).unwrap(),
            "file" => {
                let p = root.join(rest);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, b"I am not a directory!").unwrap();
            }
            "symlink" => {
                let (path, target) = rest.split_once(" -> ").unwrap();
                let p = root.join(path);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(target, p).unwrap();
            }
            other => panic!("unknown tree item {other:?}"),
        }
    }
}

#[test]
fn resolve_in_root_vectors() {
    let cases = kiln_testkit::case_dirs(&area().join("securejoin"));
    let mut failures = Vec::new();
    for case in &cases {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        build_tree(&root, &fs::read_to_string(case.join("tree")).unwrap());
        let mut out = String::new();
        for q in fs::read_to_string(case.join("queries")).unwrap().lines() {
            if q.is_empty() {
                continue;
            }
            let (follow, path) = match q.strip_prefix("nofollow ") {
                Some(p) => (false, p),
                None => (true, q),
            };
            let result = match resolve_in_root(&root, Path::new(path), follow) {
                Ok(p) => {
                    let rel = p
                        .strip_prefix(&root)
                        .unwrap_or_else(|_| panic!("{q}: {p:?} escaped"));
                    format!("/{}", rel.display())
                }
                Err(e) => {
                    let msg = e.to_string();
                    format!("error: {}", msg.rsplit(": ").next().unwrap())
                }
            };
            out.push_str(&format!("{q} => {result}\n"));
        }
        failures.extend(kiln_testkit::check(&case.join("expected"), &out));
    }
    kiln_testkit::assert_all(failures, cases.len());
}

#[test]
fn resolve_in_root_rejects_unclean_roots() {
    for root in ["foo/..", "../foo", "/tmp/x/../y"] {
        assert!(
            resolve_in_root(Path::new(root), Path::new("a"), true).is_err(),
            "{root}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let unclean = format!("{}/./foo///bar/.", tmp.path().display());
    assert!(resolve_in_root(Path::new(&unclean), Path::new("a"), true).is_ok());
}

// ----- the tar writer -----

/// Writes the tar twice (identical bytes required) and returns it.
fn tar_of(root: &Path, opts: &TarOptions) -> Vec<u8> {
    let mut a = Vec::new();
    let stats = write_layer_tar(root, &mut a, opts).unwrap();
    assert_eq!(stats.bytes, a.len() as u64);
    let mut b = Vec::new();
    write_layer_tar(root, &mut b, opts).unwrap();
    assert!(a == b, "two writes of {} differ", root.display());
    a
}

/// The listing with the test user's ids shown as 0 (the trees are built
/// unprivileged, owned by whoever runs the tests).
fn listing(tar: &[u8]) -> String {
    let (uid, gid) = me();
    tar_listing(tar)
        .unwrap()
        .replace(&format!(" uid={uid} gid={gid} "), " uid=0 gid=0 ")
}

const T: i64 = 1_700_000_000;

fn tree_basic(r: &Path) {
    dir(r, "bin", 0o755);
    file(r, "bin/tool", b"#!/bin/sh\necho hi\n", 0o755);
    file(r, "bin/suid", b"x", 0o4755);
    file(r, "bin/sgid", b"", 0o2711);
    dir(r, "tmp", 0o1777);
    dir(r, "etc", 0o755);
    file(r, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644);
    file(r, "etc/empty", b"", 0o600);
    symlink(r, "etc/abs", "/etc/passwd");
    symlink(r, "etc/rel", "../bin/tool");
    dir(r, "private", 0o700);
    // Sorted by bytes: "a-b" < "a.txt" < "a/" would be wrong: names are
    // sorted per directory, so "a" (a dir) comes before "a-b" and "a.txt".
    dir(r, "a", 0o755);
    file(r, "a/inner", b"inner", 0o644);
    file(r, "a-b", b"", 0o644);
    file(r, "a.txt", b"", 0o644);
    nix::unistd::mkfifo(
        &r.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(r.join("socket")).unwrap();
    // A 1 MiB + 1 byte file crosses the copy buffer and needs padding.
    let big: Vec<u8> = (0..(1 << 20) + 1).map(|i| (i % 251) as u8).collect();
    file(r, "big", &big, 0o644);
    set_all_mtimes(r, T);
    set_mtime(&r.join("etc/passwd"), T + 100);
}

fn tree_hardlinks(r: &Path) {
    file(r, "a", b"shared", 0o644);
    fs::hard_link(r.join("a"), r.join("b")).unwrap();
    dir(r, "sub", 0o755);
    fs::hard_link(r.join("a"), r.join("sub/c")).unwrap();
    file(r, "d", b"alone", 0o644);
    symlink(r, "s", "a");
    fs::hard_link(r.join("s"), r.join("s2")).unwrap();
    set_all_mtimes(r, T);
}

fn tree_long_names(r: &Path) {
    // 150 bytes, ASCII, splittable at a '/': ustar prefix.
    let d = "d".repeat(60);
    dir(r, &d, 0o755);
    file(r, format!("{d}/{}", "f".repeat(89)), b"split", 0o644);
    // A single 120-byte component: not splittable, PAX path.
    file(r, "n".repeat(120), b"pax", 0o644);
    // A directory whose name with its slash is 101 bytes.
    dir(r, "e".repeat(100), 0o755);
    // A path over 255 bytes (PAX).
    let deep = format!(
        "{}/{}/{}",
        "x".repeat(100),
        "y".repeat(100),
        "z".repeat(100)
    );
    fs::create_dir_all(r.join(format!("{}/{}", "x".repeat(100), "y".repeat(100)))).unwrap();
    file(r, &deep, b"deep", 0o644);
    // A long symlink target (PAX linkpath).
    symlink(r, "longlink", "t".repeat(150));
    set_all_mtimes(r, T);
}

fn tree_non_utf8(r: &Path) {
    file(r, OsStr::from_bytes(b"caf\xe9"), b"latin-1", 0o644);
    file(r, "caf\u{e9}-utf8", b"utf-8", 0o644);
    symlink(r, "to-latin1", OsStr::from_bytes(b"caf\xe9"));
    set_all_mtimes(r, T);
}

fn tree_xattrs(r: &Path) {
    let f = file(r, "file", b"x", 0o644);
    xattr::set(&f, "user.kiln.test", b"value").unwrap();
    xattr::set(&f, "user.binary", b"\x00\x01\xff=").unwrap();
    let d = dir(r, "dir", 0o755);
    xattr::set(&d, "user.on-dir", b"d").unwrap();
    // A long name with an xattr: PAX path instead of the ustar prefix.
    let long = file(r, format!("dir/{}", "l".repeat(110)), b"", 0o644);
    xattr::set(&long, "user.x", b"1").unwrap();
    set_all_mtimes(r, T);
}

type TreeFn = fn(&Path);

const TAR_CASES: &[(&str, TreeFn, Option<i64>)] = &[
    ("basic", tree_basic, None),
    ("basic-clamped", tree_basic, Some(T + 50)),
    ("hardlinks", tree_hardlinks, None),
    ("long-names", tree_long_names, None),
    ("non-utf8", tree_non_utf8, None),
    ("xattrs", tree_xattrs, None),
];

#[test]
fn tar_writer_listings() {
    let mut failures = Vec::new();
    for (name, build, clamp) in TAR_CASES {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("layer");
        fs::create_dir(&root).unwrap();
        build(&root);
        let tar = tar_of(
            &root,
            &TarOptions {
                mtime_clamp: *clamp,
            },
        );
        failures.extend(kiln_testkit::check(
            &area().join("tar").join(name).join("expected"),
            &listing(&tar),
        ));
    }
    kiln_testkit::assert_all(failures, TAR_CASES.len());
}

#[test]
fn tar_output_is_independent_of_creation_order_and_inodes() {
    // The same tree built in two different orders (different inode numbers
    // and, on most filesystems, different readdir orders) and read after
    // atime changes gives identical bytes.
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let names: Vec<String> = (0..50).map(|i| format!("f{i:02}")).collect();
    for n in &names {
        file(&a, n, n.as_bytes(), 0o644);
    }
    for n in names.iter().rev() {
        file(&b, n, n.as_bytes(), 0o644);
    }
    set_all_mtimes(&a, T);
    set_all_mtimes(&b, T);
    let ta = tar_of(&a, &TarOptions::default());
    for n in &names {
        let _ = fs::read(b.join(n)).unwrap();
    }
    assert!(ta == tar_of(&b, &TarOptions::default()));
}

#[test]
fn header_bytes_follow_go_archive_tar() {
    // One file: check the raw ustar header field by field.
    let tmp = tempfile::tempdir().unwrap();
    file(tmp.path(), "hello", b"hi\n", 0o644);
    set_mtime(&tmp.path().join("hello"), T);
    let tar = tar_of(tmp.path(), &TarOptions::default());
    assert_eq!(tar.len(), 512 + 512 + 1024);
    let h = &tar[..512];
    assert_eq!(&h[0..6], b"hello\0");
    assert_eq!(&h[100..108], b"0000644\0");
    assert_eq!(&h[124..136], b"00000000003\0");
    assert_eq!(&h[136..148], b"14524770400\0");
    assert_eq!(h[156], b'0');
    assert_eq!(&h[257..265], b"ustar\x0000");
    assert_eq!(&h[265..297], &[0u8; 32], "uname must be empty");
    assert_eq!(&h[329..337], b"0000000\0", "devmajor");
    // Checksum: six octal digits, NUL, space.
    assert_eq!(h[154], 0);
    assert_eq!(h[155], b' ');
    let mut sum = 0u32;
    for (i, b) in h.iter().enumerate() {
        sum += if (148..156).contains(&i) {
            32
        } else {
            u32::from(*b)
        };
    }
    assert_eq!(&h[148..154], format!("{sum:06o}").as_bytes());
    assert_eq!(&tar[512..515], b"hi\n");
    assert!(tar[515..].iter().all(|&b| b == 0));
}

#[test]
fn gnu_tar_reads_the_output_cleanly() {
    // GNU tar lists and extracts every case without a warning, and the
    // extracted tree equals the source (names, modes, content, symlinks).
    for (name, build, _) in TAR_CASES {
        if *name == "basic-clamped" {
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("layer");
        fs::create_dir(&root).unwrap();
        build(&root);
        let tar = tar_of(&root, &TarOptions::default());
        let tar_path = tmp.path().join("layer.tar");
        fs::write(&tar_path, &tar).unwrap();
        let out = Command::new("tar")
            .arg("--xattrs")
            .arg("-tvf")
            .arg(&tar_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: tar tvf failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{name}: tar tvf warned: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let x = tmp.path().join("x");
        fs::create_dir(&x).unwrap();
        let out = Command::new("tar")
            .args([
                "--xattrs",
                "--xattrs-include=user.*",
                "--same-permissions",
                "-xf",
            ])
            .arg(&tar_path)
            .arg("-C")
            .arg(&x)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: tar xf failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{name}: tar xf warned: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The socket is (rightly) not in the tar.
        let _ = fs::remove_file(root.join("socket"));
        assert_eq!(
            tree_listing(&root),
            tree_listing(&x),
            "{name}: GNU tar extraction differs"
        );
    }
}

// ----- hostile tars -----

struct Arena {
    _tmp: tempfile::TempDir,
    top: PathBuf,
    sentinel: PathBuf,
    target: PathBuf,
}

fn arena() -> Arena {
    let tmp = tempfile::tempdir().unwrap();
    let top = fs::canonicalize(tmp.path()).unwrap();
    let sentinel = top.join("sentinel");
    fs::create_dir(&sentinel).unwrap();
    fs::write(sentinel.join("secret"), b"secret").unwrap();
    let target = top.join("target");
    fs::create_dir(&target).unwrap();
    Arena {
        _tmp: tmp,
        top,
        sentinel,
        target,
    }
}

impl Arena {
    fn outside(&self) -> String {
        // Everything but the target directory's content.
        let mut names: Vec<_> = fs::read_dir(&self.top)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        format!("{names:?}\n{}", tree_listing(&self.sentinel))
    }
}

fn hostile(entries: &[Raw<'_>]) -> Vec<u8> {
    let (uid, gid) = me();
    raw_tar(entries, u64::from(uid), u64::from(gid))
}

/// Unpacks (layer mode, then ADD mode into a fresh target) and checks that
/// nothing outside the target changed; returns both results.
fn both_modes(entries: &[Raw<'_>]) -> [(Result<(), String>, Arena); 2] {
    let tar = hostile(entries);
    let layer = arena();
    let before = layer.outside();
    let r1 = unpack_layer(&tar[..], &layer.target, WhiteoutFormat::Device)
        .map(drop)
        .map_err(|e| e.to_string());
    assert_eq!(
        before,
        layer.outside(),
        "unpack_layer wrote outside the target: {r1:?}"
    );
    let add = arena();
    let before = add.outside();
    let r2 = extract_archive(&tar[..], &add.target, &ExtractOptions::default())
        .map(drop)
        .map_err(|e| e.to_string());
    assert_eq!(
        before,
        add.outside(),
        "extract_archive wrote outside the target: {r2:?}"
    );
    [(r1, layer), (r2, add)]
}

#[test]
fn hostile_dotdot_names_are_rejected() {
    for name in [
        "../sentinel/pwned",
        "a/../../sentinel/pwned",
        "/../sentinel/pwned",
        "./../pwned",
    ] {
        for (r, _) in both_modes(&[Raw::dir("a/"), Raw::file(name, b"pwned")]) {
            let e = r.unwrap_err();
            assert!(
                e.contains("escapes the target") && e.contains(name),
                "{name}: {e}"
            );
        }
    }
}

#[test]
fn hostile_absolute_names_are_made_relative() {
    let sentinel_abs = format!("{}/sentinel/pwned", arena().top.display());
    for (r, a) in both_modes(&[
        Raw::file("/etc/pwned", b"x"),
        Raw::file(&sentinel_abs, b"x"),
    ]) {
        r.unwrap();
        assert_eq!(fs::read(a.target.join("etc/pwned")).unwrap(), b"x");
        assert!(a.target.join(sentinel_abs.trim_start_matches('/')).exists());
    }
}

#[test]
fn hostile_hardlinks_outside_are_refused() {
    let abs = format!("{}/sentinel/secret", arena().top.display());
    for link in [
        "../sentinel/secret",
        "../../../../sentinel/secret",
        abs.as_str(),
        "/etc/passwd",
    ] {
        let [(r1, l), (r2, a)] = both_modes(&[Raw::hardlink("h", link)]);
        assert!(r1.is_err(), "layer: hardlink to {link} accepted");
        assert!(!l.target.join("h").exists());
        // ADD may only link to files inside the destination; these do not
        // exist there.
        assert!(r2.is_err(), "ADD: hardlink to {link} accepted");
        assert!(!a.target.join("h").exists());
    }
}

#[test]
fn hostile_hardlink_through_a_symlink_is_refused() {
    let abs = arena().top.join("sentinel").display().to_string();
    let [(r1, _), (r2, _)] = both_modes(&[
        Raw::dir("d/"),
        Raw::file("d/secret", b"mine"),
        Raw::symlink("s", &abs),
        Raw::hardlink("h", "s/secret"),
    ]);
    let e = r1.unwrap_err();
    assert!(e.contains("\"h\"") && e.contains("s/secret"), "{e}");
    // ADD resolves s inside the destination, where <abs>/secret does not
    // exist.
    assert!(r2.is_err());
}

#[test]
fn hostile_entries_below_a_symlink() {
    let abs = arena().top.join("sentinel").display().to_string();
    for link in ["../sentinel", abs.as_str(), "/"] {
        let [(r1, _), (r2, a)] = both_modes(&[
            Raw::symlink("evil", link),
            Raw::file("evil/pwned", b"pwned"),
        ]);
        let e = r1.unwrap_err();
        assert!(e.contains("evil/pwned") && e.contains("symlink"), "{e}");
        // ADD follows the symlink, confined to the destination.
        r2.unwrap();
        let landed = resolve_in_root(&a.target, Path::new("evil/pwned"), true).unwrap();
        assert!(landed.starts_with(&a.target));
        assert_eq!(fs::read(landed).unwrap(), b"pwned");
    }
}

#[test]
fn duplicate_entries_later_wins() {
    for (r, a) in both_modes(&[
        Raw::file("f", b"one"),
        Raw::file("f", b"two"),
        Raw::dir("d/"),
        Raw::file("d/inner", b"gone"),
        Raw::file("d", b"now a file"),
        Raw::symlink("s", "f"),
        Raw::dir("s/"),
        Raw::file("s/x", b"x"),
    ]) {
        r.unwrap();
        assert_eq!(fs::read(a.target.join("f")).unwrap(), b"two");
        assert_eq!(fs::read(a.target.join("d")).unwrap(), b"now a file");
        assert!(fs::symlink_metadata(a.target.join("s")).unwrap().is_dir());
        assert_eq!(fs::read(a.target.join("s/x")).unwrap(), b"x");
    }
}

#[test]
fn entry_below_a_file_is_an_error() {
    for (r, _) in both_modes(&[Raw::file("f", b"x"), Raw::file("f/x", b"y")]) {
        let e = r.unwrap_err();
        assert!(e.contains("f/x") && e.contains("not a directory"), "{e}");
    }
}

#[test]
fn truncated_tar_names_the_last_entry() {
    let mut tar = hostile(&[Raw::file("first", b"1"), Raw::file("second", &[7u8; 2000])]);
    tar.truncate(512 * 3 + 100);
    let dir = tempfile::tempdir().unwrap();
    let e = unpack_layer(&tar[..], dir.path(), WhiteoutFormat::Device).unwrap_err();
    assert!(
        matches!(
            e,
            UnpackError::Tar { .. } | UnpackError::BadEntry { .. } | UnpackError::Io { .. }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("second"), "{e}");
}

#[test]
fn add_merges_into_existing_tree_and_follows_symlinks_inside() {
    let a = arena();
    // The destination: an existing dir with metadata, a file to overwrite,
    // and an absolute symlink to a directory inside the destination.
    dir(&a.target, "etc", 0o700);
    file(&a.target, "etc/keep", b"keep", 0o644);
    file(&a.target, "etc/over", b"old", 0o644);
    dir(&a.target, "real", 0o755);
    symlink(&a.target, "link", "/real");
    let tar = hostile(&[
        Raw::dir("etc/"),
        Raw::file("etc/over", b"new"),
        Raw::file("link/through", b"t"),
        Raw::file("dir/.wh.x", b""),
        Raw::file("dir/.wh..wh..opq", b""),
    ]);
    let stats = extract_archive(&tar[..], &a.target, &ExtractOptions::default()).unwrap();
    assert_eq!(stats.entries, 5);
    assert_eq!(fs::read(a.target.join("etc/keep")).unwrap(), b"keep");
    assert_eq!(fs::read(a.target.join("etc/over")).unwrap(), b"new");
    // The existing dir takes the tar's mode, as moby does.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(a.target.join("etc"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o755
    );
    assert_eq!(fs::read(a.target.join("real/through")).unwrap(), b"t");
    // No whiteout interpretation in ADD.
    assert!(a.target.join("dir/.wh.x").is_file());
    assert!(a.target.join("dir/.wh..wh..opq").is_file());
}

#[test]
fn huge_sparse_files_are_unpacked_sparse() {
    // GNU tar writes a 16 GiB file holding 10 bytes as a GNU sparse entry;
    // unpack_layer must recreate it with holes, not 16 GiB of zeros.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    let f = fs::File::create(src.join("sparse")).unwrap();
    let size = 16u64 << 30;
    f.set_len(size).unwrap();
    {
        use std::os::unix::fs::FileExt;
        f.write_at(b"0123456789", 1 << 30).unwrap();
    }
    drop(f);
    let tar_path = tmp.path().join("sparse.tar");
    let out = Command::new("tar")
        .args(["--format=gnu", "--sparse", "-cf"])
        .arg(&tar_path)
        .arg("-C")
        .arg(&src)
        .arg("sparse")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        fs::metadata(&tar_path).unwrap().len() < 1 << 20,
        "GNU tar did not write a sparse entry"
    );
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst).unwrap();
    let stats = unpack_layer(
        fs::File::open(&tar_path).unwrap(),
        &dst,
        WhiteoutFormat::Device,
    )
    .unwrap();
    assert_eq!(stats.entries, 1);
    let m = fs::metadata(dst.join("sparse")).unwrap();
    assert_eq!(m.len(), size);
    use std::os::unix::fs::MetadataExt;
    assert!(
        m.blocks() * 512 < 1 << 20,
        "written densely: {} blocks",
        m.blocks()
    );
    let mut buf = [0u8; 10];
    use std::os::unix::fs::FileExt;
    fs::File::open(dst.join("sparse"))
        .unwrap()
        .read_exact_at(&mut buf, 1 << 30)
        .unwrap();
    assert_eq!(&buf, b"0123456789");
}
