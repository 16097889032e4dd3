//! Tests that need root: overlay mounts, whiteouts, device nodes, foreign
//! owners, mount namespaces. Each is skipped (ignored) when not root.
//!
//! The test process first moves into a private mount namespace (the way
//! kiln itself starts), so a failing test cannot leave mounts on the host.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use kiln_snapshot::{
    LayerMeta, LayerStore, TarOptions, WhiteoutFormat, mount_overlay, private_mount_namespace,
    tar_listing, unpack_layer, write_layer_tar,
};
use libtest_mimic::{Arguments, Failed, Trial};

type TestFn = fn() -> Result<(), Failed>;

const CHILD_ENV: &str = "KILN_SNAPSHOT_TEST_CHILD";

fn main() {
    if let Ok(what) = std::env::var(CHILD_ENV) {
        std::process::exit(child(&what));
    }
    let root = kiln_testkit::is_root();
    if root {
        // Still single-threaded here: libtest-mimic starts its threads later.
        private_mount_namespace().unwrap();
    }
    let args = Arguments::from_args();
    let tests: Vec<(&str, TestFn)> = vec![
        ("overlay_one_lower_with_upper", overlay_one_lower_with_upper),
        ("overlay_two_lowers_top_wins", overlay_two_lowers_top_wins),
        ("overlay_forty_layers", overlay_forty_layers),
        (
            "overlay_forty_layers_long_paths_use_fsconfig",
            overlay_forty_layers_long_paths,
        ),
        (
            "read_only_and_layerless_mounts",
            read_only_and_layerless_mounts,
        ),
        (
            "whiteouts_from_overlay_to_tar",
            whiteouts_from_overlay_to_tar,
        ),
        (
            "unpacked_whiteouts_hide_lower_files",
            unpacked_whiteouts_hide_lower_files,
        ),
        ("round_trip_rich_tree", round_trip_rich_tree),
        (
            "private_namespace_hides_mounts",
            private_namespace_hides_mounts,
        ),
        ("mount_guard_drop_unmounts", mount_guard_drop_unmounts),
        ("store_draft_as_overlay_upper", store_draft_as_overlay_upper),
        ("extract_archive_chown", extract_archive_chown),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| Trial::test(name, f).with_ignored_flag(!root))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn mounted(target: &Path) -> bool {
    mounted_in("/proc/self/mountinfo", target)
}

fn mounted_in(mountinfo: &str, target: &Path) -> bool {
    let t = target.to_str().unwrap();
    fs::read_to_string(mountinfo)
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(t))
}

/// A layer dir with the given files (name, content).
fn layer(parent: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let d = parent.join(name);
    fs::create_dir_all(&d).unwrap();
    for (f, c) in files {
        let p = d.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, c).unwrap();
    }
    d
}

fn upper(parent: &Path) -> (PathBuf, PathBuf) {
    let u = parent.join("upper");
    let w = parent.join("work");
    fs::create_dir_all(&u).unwrap();
    fs::create_dir_all(&w).unwrap();
    (u, w)
}

fn target(parent: &Path) -> PathBuf {
    let t = parent.join("mnt");
    fs::create_dir_all(&t).unwrap();
    t
}

fn overlay_one_lower_with_upper() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let l1 = layer(tmp.path(), "l1", &[("etc/os", "one"), ("keep", "k")]);
    let (u, w) = upper(tmp.path());
    let t = target(tmp.path());
    let g = mount_overlay(std::slice::from_ref(&l1), Some((&u, &w)), &t)?;
    assert_eq!(g.path(), t);
    assert_eq!(fs::read_to_string(t.join("etc/os"))?, "one");
    fs::write(t.join("new"), "n")?;
    fs::write(t.join("etc/os"), "changed")?;
    drop(g);
    assert!(!mounted(&t));
    assert_eq!(
        fs::read_to_string(l1.join("etc/os"))?,
        "one",
        "lower modified"
    );
    assert_eq!(fs::read_to_string(u.join("new"))?, "n");
    assert_eq!(fs::read_to_string(u.join("etc/os"))?, "changed");
    assert!(!u.join("keep").exists(), "unchanged file copied up");
    Ok(())
}

fn overlay_two_lowers_top_wins() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let l1 = layer(tmp.path(), "l1", &[("f", "bottom"), ("only1", "1")]);
    let l2 = layer(tmp.path(), "l2", &[("f", "top"), ("only2", "2")]);
    let (u, w) = upper(tmp.path());
    let t = target(tmp.path());
    {
        let _g = mount_overlay(&[l1.clone(), l2.clone()], Some((&u, &w)), &t)?;
        assert_eq!(fs::read_to_string(t.join("f"))?, "top");
        assert_eq!(fs::read_to_string(t.join("only1"))?, "1");
        assert_eq!(fs::read_to_string(t.join("only2"))?, "2");
    }
    // Read-only: two lowers, no upper.
    let g = mount_overlay(&[l2, l1], None, &t)?;
    assert_eq!(fs::read_to_string(t.join("f"))?, "bottom");
    let err = fs::write(t.join("x"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    g.unmount()?;
    assert!(!mounted(&t));
    Ok(())
}

fn forty(tmp: &Path, dir_name: &str) -> Result<(), Failed> {
    let base = tmp.join(dir_name);
    let layers: Vec<PathBuf> = (0..40)
        .map(|i| {
            layer(
                &base,
                &format!("{i:02}"),
                &[(&format!("f{i:02}"), "x"), ("top", &i.to_string())],
            )
        })
        .collect();
    let (u, w) = upper(tmp);
    let t = target(tmp);
    let option_bytes: usize = layers.iter().map(|l| l.as_os_str().len() + 1).sum();
    println!("{dir_name:.10}…: 40 lower dirs, {option_bytes} bytes of lowerdir=");
    let g = mount_overlay(&layers, Some((&u, &w)), &t)?;
    for i in 0..40 {
        assert!(t.join(format!("f{i:02}")).exists(), "layer {i} missing");
    }
    assert_eq!(fs::read_to_string(t.join("top"))?, "39", "layer order");
    fs::remove_file(t.join("f00"))?;
    drop(g);
    assert!(
        fs::symlink_metadata(u.join("f00"))?
            .file_type()
            .is_char_device()
    );
    Ok(())
}

fn overlay_forty_layers() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    forty(tmp.path(), "s")
}

fn overlay_forty_layers_long_paths() -> Result<(), Failed> {
    // 40 lower dirs of ~150 bytes each: over a 4 KiB page, so mount(2)
    // cannot take them and the fsconfig("lowerdir+") path is used.
    let tmp = tempfile::tempdir()?;
    let name = "long".repeat(30);
    assert!(40 * (tmp.path().join(&name).join("00").as_os_str().len() + 1) > 4096);
    forty(tmp.path(), &name)
}

fn extract_archive_chown() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let dest = tmp.path().join("rootfs");
    fs::create_dir(&dest)?;
    let tar = raw_tar(
        &[
            Raw::dir("app/"),
            Raw::file("app/bin", b"x"),
            Raw::symlink("app/l", "bin"),
            Raw::file("implied/f", b"f"),
        ],
        7,
        8,
    );
    let opts = kiln_snapshot::ExtractOptions {
        chown: Some((1234, 5678)),
    };
    kiln_snapshot::extract_archive(&tar[..], &dest, &opts)?;
    for p in ["app", "app/bin", "app/l", "implied/f"] {
        let m = fs::symlink_metadata(dest.join(p))?;
        assert_eq!((m.uid(), m.gid()), (1234, 5678), "{p}");
    }
    // Implied parents belong to root, as in moby.
    let m = fs::metadata(dest.join("implied"))?;
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 0, 0o755));
    // Without chown, the tar's owners.
    let dest2 = tmp.path().join("rootfs2");
    fs::create_dir(&dest2)?;
    kiln_snapshot::extract_archive(&tar[..], &dest2, &Default::default())?;
    assert_eq!(fs::symlink_metadata(dest2.join("app/l"))?.uid(), 7);
    Ok(())
}

fn read_only_and_layerless_mounts() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let t = target(tmp.path());
    // No layers, read-only: empty and read-only.
    {
        let _g = mount_overlay(&[], None, &t)?;
        assert_eq!(fs::read_dir(&t)?.count(), 0);
        assert_eq!(
            fs::write(t.join("x"), "x").unwrap_err().raw_os_error(),
            Some(libc::EROFS)
        );
    }
    // One layer, read-only: a bind mount.
    let l1 = layer(tmp.path(), "l1", &[("a", "a")]);
    {
        let _g = mount_overlay(std::slice::from_ref(&l1), None, &t)?;
        assert_eq!(fs::read_to_string(t.join("a"))?, "a");
        assert_eq!(
            fs::write(t.join("x"), "x").unwrap_err().raw_os_error(),
            Some(libc::EROFS)
        );
    }
    // No layers with an upper: writes land in the upper.
    let (u, w) = upper(tmp.path());
    {
        let _g = mount_overlay(&[], Some((&u, &w)), &t)?;
        assert_eq!(fs::read_dir(&t)?.count(), 0);
        fs::create_dir(t.join("d"))?;
        fs::write(t.join("d/f"), "f")?;
    }
    assert!(!mounted(&t));
    assert_eq!(fs::read_to_string(u.join("d/f"))?, "f");
    Ok(())
}

fn whiteouts_from_overlay_to_tar() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let l1 = layer(
        tmp.path(),
        "l1",
        &[
            ("a", "a"),
            ("d/x", "x"),
            ("d/sub/y", "y"),
            ("e/old", "o"),
            ("keep/k", "k"),
        ],
    );
    let (u, w) = upper(tmp.path());
    let t = target(tmp.path());
    {
        let _g = mount_overlay(&[l1], Some((&u, &w)), &t)?;
        fs::remove_file(t.join("a"))?;
        fs::remove_dir_all(t.join("d"))?;
        fs::remove_dir_all(t.join("e"))?;
        fs::create_dir(t.join("e"))?;
        fs::write(t.join("e/new"), "new")?;
        fs::write(t.join("keep/k2"), "k2")?;
    }
    let mut tar = Vec::new();
    write_layer_tar(
        &u,
        &mut tar,
        &TarOptions {
            mtime_clamp: Some(1000),
        },
    )?;
    let listing = tar_listing(&tar[..])?;
    kiln_testkit::assert_all(
        kiln_testkit::check(
            &kiln_testkit::testdata().join("snapshot/tar/overlay-whiteouts/expected"),
            &listing,
        )
        .into_iter()
        .collect(),
        1,
    );
    Ok(())
}

fn unpacked_whiteouts_hide_lower_files() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let l1 = layer(
        tmp.path(),
        "l1",
        &[("a", "a"), ("b", "b"), ("d/x", "x"), ("o/old", "old")],
    );
    // An OCI layer deleting a and d, and replacing o's content.
    let (uid, gid) = (0, 0);
    let tar = raw_tar(
        &[
            Raw::file(".wh.a", b""),
            Raw::file(".wh.d", b""),
            Raw::dir("o/"),
            Raw::file("o/.wh..wh..opq", b""),
            Raw::file("o/new", b"new"),
            Raw::file("c", b"c"),
        ],
        uid,
        gid,
    );
    let l2 = tmp.path().join("l2");
    fs::create_dir(&l2)?;
    let stats = unpack_layer(&tar[..], &l2, WhiteoutFormat::Device)?;
    assert_eq!(stats.whiteouts, 3);
    assert!(
        fs::symlink_metadata(l2.join("a"))?
            .file_type()
            .is_char_device()
    );
    assert_eq!(fs::symlink_metadata(l2.join("a"))?.rdev(), 0);
    assert!(!l2.join(".wh.a").exists());
    assert!(!l2.join("o/.wh..wh..opq").exists());
    assert_eq!(
        xattr::get(l2.join("o"), "trusted.overlay.opaque")?,
        Some(b"y".to_vec())
    );
    let t = target(tmp.path());
    let _g = mount_overlay(&[l1, l2.clone()], None, &t)?;
    let mut names: Vec<String> = fs::read_dir(&t)?
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "c", "o"]);
    let o: Vec<_> = fs::read_dir(t.join("o"))?
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(o, ["new"]);
    // And back to a tar: the same whiteouts.
    drop(_g);
    let mut out = Vec::new();
    write_layer_tar(&l2, &mut out, &TarOptions::default())?;
    let listing = tar_listing(&out[..])?;
    assert!(listing.contains("file  .wh.a mode=0000"), "{listing}");
    assert!(listing.contains("file  .wh.d mode=0000"), "{listing}");
    assert!(
        listing.contains("file  o/.wh..wh..opq mode=0755"),
        "{listing}"
    );
    Ok(())
}

/// Files, dirs, symlinks, hardlinks, devices, a fifo, foreign owners,
/// setuid, xattrs (user.* and security.capability), a whiteout and an
/// opaque dir.
fn rich_tree(r: &Path) {
    dir(r, "bin", 0o755);
    file(r, "bin/su", b"su", 0o4755);
    fs::hard_link(r.join("bin/su"), r.join("bin/su2")).unwrap();
    let ping = file(r, "bin/ping", b"ping", 0o755);
    // cap_net_raw+ep, VFS_CAP_REVISION_2.
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    xattr::set(&ping, "security.capability", &cap).unwrap();
    dir(r, "home/user", 0o750);
    let f = file(r, "home/user/notes", b"notes", 0o640);
    xattr::set(&f, "user.tag", b"v").unwrap();
    std::os::unix::fs::lchown(r.join("home/user"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::lchown(&f, Some(1000), Some(100)).unwrap();
    let s = symlink(r, "home/user/link", "notes");
    std::os::unix::fs::lchown(&s, Some(1000), Some(1000)).unwrap();
    dir(r, "dev", 0o755);
    let mk = |name: &str, kind, mode: u32, dev| {
        nix::sys::stat::mknod(
            &r.join(name),
            kind,
            nix::sys::stat::Mode::from_bits_truncate(mode),
            dev,
        )
        .unwrap();
        fs::set_permissions(r.join(name), fs::Permissions::from_mode(mode)).unwrap();
    };
    mk(
        "dev/null",
        nix::sys::stat::SFlag::S_IFCHR,
        0o666,
        nix::sys::stat::makedev(1, 3),
    );
    mk(
        "dev/sda",
        nix::sys::stat::SFlag::S_IFBLK,
        0o660,
        nix::sys::stat::makedev(8, 0),
    );
    mk("dev/fifo", nix::sys::stat::SFlag::S_IFIFO, 0o600, 0);
    mk("gone", nix::sys::stat::SFlag::S_IFCHR, 0, 0);
    let o = dir(r, "opaque", 0o755);
    xattr::set(&o, "trusted.overlay.opaque", b"y").unwrap();
    file(r, "opaque/inside", b"i", 0o644);
    file(r, format!("long/{}", "n".repeat(200)), b"", 0o644);
    set_all_mtimes(r, 1_600_000_000);
    // unpack_layer gives whiteouts mtime 0 (it is not in the tar).
    set_mtime(&r.join("gone"), 0);
}

fn long_dir_fix(r: &Path) {
    // `file` does not create parents.
    fs::create_dir_all(r.join("long")).unwrap();
}

fn round_trip_rich_tree() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let src = tmp.path().join("src");
    fs::create_dir(&src)?;
    long_dir_fix(&src);
    rich_tree(&src);
    let mut t1 = Vec::new();
    write_layer_tar(&src, &mut t1, &TarOptions::default())?;
    kiln_testkit::assert_all(
        kiln_testkit::check(
            &kiln_testkit::testdata().join("snapshot/tar/rich/expected"),
            &tar_listing(&t1[..])?,
        )
        .into_iter()
        .collect(),
        1,
    );
    let dst = tmp.path().join("dst");
    fs::create_dir(&dst)?;
    unpack_layer(&t1[..], &dst, WhiteoutFormat::Device)?;
    let mut t2 = Vec::new();
    write_layer_tar(&dst, &mut t2, &TarOptions::default())?;
    assert!(
        t1 == t2,
        "round trip changed the tar:\n{}\nvs\n{}",
        tar_listing(&t1[..])?,
        tar_listing(&t2[..])?
    );
    assert_eq!(tree_listing(&src), tree_listing(&dst));
    // GNU tar reads it without complaint.
    let tar_path = tmp.path().join("rich.tar");
    fs::write(&tar_path, &t1)?;
    let out = Command::new("tar")
        .args(["--xattrs", "--numeric-owner", "-tvf"])
        .arg(&tar_path)
        .output()?;
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let null = line(" dev/null");
    assert!(
        null.starts_with("crw-rw-rw- 0/0") && null.contains(" 1,3 "),
        "{null}"
    );
    assert!(line(" bin/su").starts_with("-rwsr-xr-x 0/0"), "{text}");
    assert!(
        line(" bin/su2 link to bin/su").starts_with("hrwsr-xr-x 0/0"),
        "{text}"
    );
    // `*`: GNU tar saw the xattr.
    assert!(
        line(" home/user/notes").starts_with("-rw-r-----* 1000/100"),
        "{text}"
    );
    Ok(())
}

fn child(what: &str) -> i32 {
    match what {
        "mountns" => {
            // kiln's start-up: a private namespace, then a mount.
            if let Err(e) = private_mount_namespace() {
                eprintln_child(&format!("private_mount_namespace: {e}"));
                return 2;
            }
            let t = PathBuf::from(std::env::var("KILN_TARGET").unwrap());
            let _g = match mount_overlay(&[], None, &t) {
                Ok(g) => g,
                Err(e) => {
                    eprintln_child(&format!("mount: {e}"));
                    return 3;
                }
            };
            let here = mounted(&t);
            let in_init = mounted_in("/proc/1/mountinfo", &t);
            if here && !in_init { 0 } else { 4 }
        }
        _ => 99,
    }
}

#[allow(clippy::print_stderr)]
fn eprintln_child(msg: &str) {
    eprintln!("{msg}");
}

fn private_namespace_hides_mounts() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let t = target(tmp.path());
    let status = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, "mountns")
        .env("KILN_TARGET", &t)
        .status()?;
    assert_eq!(
        status.code(),
        Some(0),
        "child: mount visible in /proc/1/mountinfo or failed"
    );
    assert!(!mounted(&t), "the child's mount leaked into the parent");
    Ok(())
}

fn mount_guard_drop_unmounts() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let l1 = layer(tmp.path(), "l1", &[("a", "a")]);
    let l2 = layer(tmp.path(), "l2", &[("b", "b")]);
    let t = target(tmp.path());
    let g = mount_overlay(&[l1, l2], None, &t)?;
    assert!(mounted(&t));
    drop(g);
    assert!(!mounted(&t));
    assert_eq!(fs::read_dir(&t)?.count(), 0);
    Ok(())
}

fn store_draft_as_overlay_upper() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let store = LayerStore::open(tmp.path().join("snapshots"))?;
    let base = store.create()?;
    fs::write(base.diff_dir().join("base"), "b")?;
    let base = base.commit(LayerMeta::default())?;
    let draft = store.create()?;
    let t = target(tmp.path());
    {
        let _g = mount_overlay(
            std::slice::from_ref(&base.diff),
            Some((draft.diff_dir(), draft.work_dir())),
            &t,
        )?;
        fs::write(t.join("run"), "r")?;
        fs::remove_file(t.join("base"))?;
    }
    // overlay left work/work (mode 000, root-owned) behind.
    assert!(draft.work_dir().join("work").exists());
    let layer = draft.commit(LayerMeta::default())?;
    assert!(!layer.path.join("work").exists());
    assert_eq!(fs::read_to_string(layer.diff.join("run"))?, "r");
    assert!(
        fs::symlink_metadata(layer.diff.join("base"))?
            .file_type()
            .is_char_device()
    );
    // Both layers stack.
    let _g = mount_overlay(&[base.diff, layer.diff.clone()], None, &t)?;
    assert!(!t.join("base").exists());
    assert!(t.join("run").exists());
    Ok(())
}
