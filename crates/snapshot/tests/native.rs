//! The native snapshotter against overlay, case by case (needs root; each
//! trial is ignored otherwise).
//!
//! Each case of `testdata/snapshot/native/<case>/` has a `script`, run by
//! `sh -e` in a writable mount of one fixed stack of two layers (with a
//! whiteout, an opaque directory, hard links, a symlink; see [`base`]), and
//! an `expected` listing of the layer tar written from the upper dir
//! afterwards. A case with a `read-only` file instead lists the merged view
//! of a read-only mount (its script is not run). Every case runs three
//! times against the same `expected`: on overlay (trial `<case>-overlayfs`),
//! on the native snapshotter (`<case>-native`), on the native snapshotter
//! with whiteout files in its layers and its diff
//! (`<case>-native-whiteout-files`), and on the native snapshotter keeping
//! its tree (`<case>-native-kept`), where the next mount of the new stack
//! must take that tree and find it equal, entry for entry with full times
//! and digests, to a fresh copy of the stack. Writable cases also run in
//! place (`kiln_snapshot::inplace`, `<case>-in-place`): in a directory that
//! holds paths of its own (excluded: they must stay as they were) and stray
//! files (cleared), and again with the tree first showing the bottom layer
//! and brought forward by applying the top one (`<case>-in-place-forward`);
//! after the step the tree must equal a fresh copy of the new stack but for
//! its own paths. So overlay's output is the reference,
//! and the native one must give the same layer. `UPDATE_EXPECT=1`
//! regenerates the listings (from whichever trial runs last: check the
//! diff).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use filetime::FileTime;
use kiln_snapshot::{
    MountGuard, TarOptions, WhiteoutFormat, mount_overlay, opaque_xattr, private_mount_namespace,
    tar_listing, write_layer_tar,
};
use libtest_mimic::{Arguments, Failed, Trial};

/// Times of the base layers; later ones are clamped to [`CLAMP`].
const OLD: i64 = 1_600_000_000;
const CLAMP: i64 = 1_700_000_000;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Overlay,
    Native(WhiteoutFormat),
    /// Native, keeping the tree for the next mount, which must then be the
    /// tree a fresh mount of the new stack makes.
    NativeKept,
    /// In place (`kiln_snapshot::inplace`): a directory that holds excluded
    /// paths of its own and stray files, cleared and filled with the stack.
    InPlace,
    /// In place, the tree first showing the bottom layer (and an empty
    /// step's layer), then brought forward to the stack by applying the
    /// top layer.
    InPlaceForward,
}

fn main() {
    let root = kiln_testkit::is_root();
    if root {
        // Still single-threaded here.
        private_mount_namespace().unwrap();
    }
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for dir in kiln_testkit::case_dirs(&kiln_testkit::testdata().join("snapshot/native")) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for (suffix, mode) in [
            ("overlayfs", Mode::Overlay),
            ("native", Mode::Native(WhiteoutFormat::Device)),
            ("native-whiteout-files", Mode::Native(WhiteoutFormat::File)),
            ("native-kept", Mode::NativeKept),
            ("in-place", Mode::InPlace),
            ("in-place-forward", Mode::InPlaceForward),
        ] {
            // A tree in place is always a writable one.
            if matches!(mode, Mode::InPlace | Mode::InPlaceForward)
                && dir.join("read-only").exists()
            {
                continue;
            }
            let d = dir.clone();
            trials.push(
                Trial::test(format!("{name}-{suffix}"), move || run_case(&d, mode))
                    .with_ignored_flag(!root),
            );
        }
    }
    libtest_mimic::run(&args, trials).exit();
}

fn set_time(p: &Path, t: i64) {
    let ft = FileTime::from_unix_time(t, 0);
    filetime::set_symlink_file_times(p, ft, ft).unwrap();
}

fn write(root: &Path, rel: &str, content: &str, mode: u32) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, content).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
}

/// Sets every time under `root` (deepest first) to [`OLD`].
fn age(root: &Path) {
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            all.push(p);
        }
    }
    for p in all.iter().rev() {
        set_time(p, OLD);
    }
    set_time(root, OLD);
}

/// A layer dir as a store names it (`<id>/diff`), which kept trees rely on.
fn layer_dir(dir: &Path, id: &str) -> PathBuf {
    let d = dir.join(id).join("diff");
    fs::create_dir_all(&d).unwrap();
    d
}

/// The two layers every case starts from (bottom first).
///
/// - layer 1: `a/{f1,f2,sub/g}`, `b`, `c/x`, `d -> a/f1`, `hl1` = `hl2`
///   (hard links), `e/y`, `p/q/r`;
/// - layer 2: deletes `a/f2` and `e`, replaces `b`, makes `c` opaque with
///   `c/new` (so `c/x` is hidden), adds `f`.
fn base(dir: &Path, whiteouts: WhiteoutFormat) -> Vec<PathBuf> {
    let l1 = layer_dir(dir, "l1");
    write(&l1, "a/f1", "one\n", 0o644);
    write(&l1, "a/f2", "two\n", 0o644);
    write(&l1, "a/sub/g", "g\n", 0o600);
    write(&l1, "b", "b\n", 0o755);
    write(&l1, "c/x", "x\n", 0o644);
    std::os::unix::fs::symlink("a/f1", l1.join("d")).unwrap();
    write(&l1, "hl1", "linked\n", 0o644);
    fs::hard_link(l1.join("hl1"), l1.join("hl2")).unwrap();
    write(&l1, "e/y", "y\n", 0o644);
    write(&l1, "p/q/r", "r\n", 0o644);
    std::os::unix::fs::chown(l1.join("p/q/r"), Some(1000), Some(1000)).unwrap();
    age(&l1);

    let l2 = layer_dir(dir, "l2");
    fs::create_dir_all(l2.join("a")).unwrap();
    kiln_snapshot::whiteout::make_whiteout(&l2.join("a/f2"), whiteouts).unwrap();
    kiln_snapshot::whiteout::make_whiteout(&l2.join("e"), whiteouts).unwrap();
    write(&l2, "b", "b, second\n", 0o755);
    write(&l2, "c/new", "new\n", 0o644);
    xattr::set(l2.join("c"), opaque_xattr(), b"y").unwrap();
    write(&l2, "f", "f\n", 0o644);
    age(&l2);
    vec![l1, l2]
}

fn mount(
    mode: Mode,
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    target: &Path,
    views: &Path,
) -> MountGuard {
    match mode {
        Mode::Overlay => mount_overlay(lowers, upper, target).unwrap(),
        Mode::Native(w) => kiln_snapshot::native::mount(lowers, upper, target, w, None).unwrap(),
        Mode::NativeKept => {
            kiln_snapshot::native::mount(lowers, upper, target, WhiteoutFormat::Device, Some(views))
                .unwrap()
        }
        Mode::InPlace | Mode::InPlaceForward => unreachable!("run_in_place"),
    }
}

/// Every entry of a tree, with full times and content digests.
fn full_listing(dir: &Path) -> String {
    let mut tar = Vec::new();
    write_layer_tar(dir, &mut tar, &TarOptions { mtime_clamp: None }).unwrap();
    kiln_snapshot::tar_listing_with_digests(tar.as_slice()).unwrap()
}

/// The next mount of lowers + `upper` took the kept tree, which is what a
/// fresh copy of that stack gives.
fn check_kept(tmp: &Path, lowers: &[PathBuf], upper: &Path, views: &Path) -> Result<(), Failed> {
    let mut stack = lowers.to_vec();
    stack.push(upper.to_path_buf());
    let mut trees = Vec::new();
    for (name, views) in [("kept", Some(views)), ("fresh", None)] {
        let up = layer_dir(tmp, &format!("next-{name}"));
        let work = tmp.join(format!("next-{name}-work"));
        let target = tmp.join(format!("next-{name}-mnt"));
        fs::create_dir_all(&work).unwrap();
        fs::create_dir_all(&target).unwrap();
        let g = kiln_snapshot::native::mount(
            &stack,
            Some((&up, &work)),
            &target,
            WhiteoutFormat::Device,
            views,
        )
        .unwrap();
        if name == "kept" && fs::read_dir(views.unwrap()).unwrap().next().is_some() {
            return Err("the next mount did not take the kept tree".into());
        }
        trees.push(full_listing(&target));
        drop(g);
    }
    if trees[0] != trees[1] {
        return Err(format!(
            "the kept tree differs from a fresh one:\n--- kept\n{}\n--- fresh\n{}",
            trees[0], trees[1]
        )
        .into());
    }
    Ok(())
}

fn listing(dir: &Path) -> String {
    let mut tar = Vec::new();
    write_layer_tar(
        dir,
        &mut tar,
        &TarOptions {
            mtime_clamp: Some(CLAMP),
        },
    )
    .unwrap();
    tar_listing(tar.as_slice()).unwrap()
}

/// Paths of the in-place root that are not the stack's: (path, content).
const CONTAINER_FILES: [(&str, &str); 3] = [
    ("kiln/state/s", "kiln's state\n"),
    ("p/mnt", "a mount point in a directory of the image\n"),
    (
        "etc/hosts",
        "a mount point in a directory of the container\n",
    ),
];

fn container_root(tmp: &Path) -> (PathBuf, kiln_snapshot::Exclusions) {
    let root = tmp.join("root");
    let mut x = kiln_snapshot::Exclusions::new();
    for (p, content) in CONTAINER_FILES {
        write(&root, p, content, 0o644);
    }
    for p in ["kiln", "p/mnt", "etc/hosts"] {
        x.add(Path::new(p)).unwrap();
    }
    // What was there before is not the stack's and goes.
    write(&root, "stray", "stray\n", 0o644);
    write(&root, "a/stray", "stray\n", 0o644);
    write(&root, "p/q/stray", "stray\n", 0o644);
    (root, x)
}

/// A listing of `root` without the container's own paths.
fn stack_listing(root: &Path) -> String {
    full_listing(root)
        .lines()
        .filter(|l| {
            !["kiln", "etc", ".kiln-work", "p/mnt"]
                .iter()
                .any(|x| l.contains(&format!(" {x}/")) || l.contains(&format!(" {x} ")))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn run_in_place(
    dir: &Path,
    tmp: &Path,
    lowers: &[PathBuf],
    forward: bool,
) -> Result<String, Failed> {
    use kiln_snapshot::InPlace;
    let (root, x) = container_root(tmp);
    let mut tree = InPlace::new(&root, x, WhiteoutFormat::Device, Path::new(".kiln-work")).unwrap();
    let mut stack = lowers.to_vec();
    if forward {
        let u0 = layer_dir(tmp, "u0");
        tree.checkout(&lowers[..1], &u0).unwrap().commit().unwrap();
        stack = vec![lowers[0].clone(), u0, lowers[1].clone()];
    }
    let upper = layer_dir(tmp, "upper");
    let co = tree.checkout(&stack, &upper).unwrap();
    for p in ["stray", "a/stray", "p/q/stray"] {
        if root.join(p).exists() {
            return Err(format!("{p} was not cleared").into());
        }
    }
    let st = Command::new("sh")
        .arg("-e")
        .arg(dir.join("script"))
        .current_dir(&root)
        .status()
        .unwrap();
    if !st.success() {
        return Err(format!("script failed: {st}").into());
    }
    co.commit().unwrap();
    for (p, content) in CONTAINER_FILES {
        if fs::read_to_string(root.join(p)).ok().as_deref() != Some(content) {
            return Err(format!("the container's {p} was changed").into());
        }
    }
    // The tree now shows the stack with the new layer, as a fresh copy of
    // it would, but for the container's own paths.
    stack.push(upper.clone());
    let fresh = tmp.join("fresh");
    let fresh_up = layer_dir(tmp, "fresh-up");
    let work = tmp.join("fresh-work");
    fs::create_dir_all(&fresh).unwrap();
    fs::create_dir_all(&work).unwrap();
    // The fresh tree's root takes the upper dir's metadata: give it the
    // tree's root metadata, as the next checkout would.
    let m = fs::symlink_metadata(&root).unwrap();
    fs::set_permissions(&fresh_up, m.permissions()).unwrap();
    set_time(&fresh_up, std::os::unix::fs::MetadataExt::mtime(&m));
    let g = kiln_snapshot::native::mount(
        &stack,
        Some((&fresh_up, &work)),
        &fresh,
        WhiteoutFormat::Device,
        None,
    )
    .unwrap();
    let (a, b) = (stack_listing(&root), full_listing(&fresh));
    drop(g);
    if a != b {
        return Err(format!(
            "the tree in place differs from a fresh one:\n--- in place\n{a}\n--- fresh\n{b}"
        )
        .into());
    }
    tree.clear().unwrap();
    for (p, content) in CONTAINER_FILES {
        if fs::read_to_string(root.join(p)).ok().as_deref() != Some(content) {
            return Err(format!("clearing changed the container's {p}").into());
        }
    }
    if root.join("a").exists() || !root.join("p").is_dir() || root.join("p/q").exists() {
        return Err("clearing left the stack's files, or removed the container's".into());
    }
    Ok(listing(&upper))
}

fn run_case(dir: &Path, mode: Mode) -> Result<(), Failed> {
    let tmp = tempfile::tempdir().unwrap();
    let whiteouts = match mode {
        Mode::Native(w) => w,
        _ => WhiteoutFormat::Device,
    };
    if matches!(mode, Mode::InPlace | Mode::InPlaceForward) {
        let lowers = base(tmp.path(), whiteouts);
        let actual = run_in_place(
            dir,
            tmp.path(),
            &lowers,
            matches!(mode, Mode::InPlaceForward),
        )?;
        return match kiln_testkit::check(&dir.join("expected"), &actual) {
            None => Ok(()),
            Some(diff) => Err(diff.into()),
        };
    }
    let lowers = base(tmp.path(), whiteouts);
    let target = tmp.path().join("mnt");
    fs::create_dir(&target).unwrap();
    let views = tmp.path().join("views");
    fs::create_dir(&views).unwrap();
    let actual = if dir.join("read-only").exists() {
        let guard = mount(mode, &lowers, None, &target, &views);
        // Nothing writes through a read-only view.
        if fs::write(target.join("a/f1"), "changed").is_ok() {
            return Err("a read-only view was writable".into());
        }
        let out = listing(&target);
        guard.unmount().unwrap();
        out
    } else {
        let (upper, work) = (layer_dir(tmp.path(), "upper"), tmp.path().join("work"));
        fs::create_dir(&work).unwrap();
        let guard = mount(mode, &lowers, Some((&upper, &work)), &target, &views);
        let st = Command::new("sh")
            .arg("-e")
            .arg(dir.join("script"))
            .current_dir(&target)
            .status()
            .unwrap();
        if !st.success() {
            return Err(format!("script failed: {st}").into());
        }
        guard.unmount().unwrap();
        if matches!(mode, Mode::NativeKept) {
            check_kept(tmp.path(), &lowers, &upper, &views)?;
        }
        listing(&upper)
    };
    // The layers themselves are never changed (hard-linked views).
    for l in &lowers {
        let m = fs::metadata(l.join("b")).unwrap();
        if std::os::unix::fs::MetadataExt::nlink(&m) != 1 {
            return Err(format!("{}/b still has extra links", l.display()).into());
        }
    }
    if fs::read_dir(&target).unwrap().next().is_some() {
        return Err("the mount point was not emptied".into());
    }
    match kiln_testkit::check(&dir.join("expected"), &actual) {
        None => Ok(()),
        Some(diff) => Err(diff.into()),
    }
}
