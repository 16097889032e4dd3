//! Content digests and the stat cache. Tests that chown need root and are
//! reported as ignored elsewhere.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use kiln_context::digest::coarse_now_ns;
use kiln_context::{DigestOptions, DigestStats, ExpandOptions, Filter, Matcher, StatCache, Tree};
use libtest_mimic::{Arguments, Failed, Trial};
use sha2::{Digest as _, Sha256};

type TestResult = Result<(), Failed>;

fn main() {
    let args = Arguments::from_args();
    let root = !kiln_testkit::is_root();
    let trials = vec![
        Trial::test("encoding_as_documented", encoding_as_documented),
        Trial::test("every_digest_path_agrees", every_digest_path_agrees),
        Trial::test("stable_across_trees_and_runs", stable_across_trees_and_runs),
        Trial::test(
            "changes_with_content_mode_name_target",
            changes_with_content_mode_name_target,
        ),
        Trial::test("ignores_mtime", ignores_mtime),
        Trial::test("ignored_files_do_not_count", ignored_files_do_not_count),
        Trial::test("cache_hit_reads_nothing", cache_hit_reads_nothing),
        Trial::test("cache_survives_save_and_load", cache_survives_save_and_load),
        Trial::test(
            "changed_ctime_or_inode_rehashes",
            changed_ctime_or_inode_rehashes,
        ),
        Trial::test("racy_entries_are_not_trusted", racy_entries_are_not_trusted),
        Trial::test(
            "unseen_entries_dropped_on_save",
            unseen_entries_dropped_on_save,
        ),
        Trial::test("large_file_streamed", large_file_streamed),
        Trial::test("reading_once_is_one_snapshot", reading_once_is_one_snapshot),
        Trial::test("special_and_vanished_files", special_and_vanished_files),
        Trial::test(
            "permission_denied_is_an_error",
            permission_denied_is_an_error,
        )
        .with_ignored_flag(kiln_testkit::is_root()),
        Trial::test("ownership_only_when_asked", ownership_only_when_asked).with_ignored_flag(root),
    ];
    libtest_mimic::run(&args, trials).exit();
}

const COPY: ExpandOptions = ExpandOptions {
    allow_wildcard: true,
    allow_empty_wildcard: true,
    follow_symlinks: true,
};

fn write(root: &Path, rel: &str, content: &[u8], mode: u32) {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        fs::create_dir_all(d).expect("mkdir");
    }
    fs::write(&p, content).expect("write");
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A small context: dirs with fixed modes, files, a symlink.
fn sample(root: &Path) {
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).expect("chmod");
    write(root, "a/one.txt", b"one\n", 0o644);
    write(root, "a/two.sh", b"#!/bin/sh\n", 0o755);
    write(root, "b/three", b"3", 0o600);
    fs::set_permissions(root.join("a"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(root.join("b"), fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::symlink("../a/one.txt", root.join("b/link")).expect("symlink");
}

fn digest_with(
    tree: &Tree,
    src: &str,
    cache: &mut StatCache,
    opts: &DigestOptions,
) -> (String, DigestStats) {
    let sources = tree.expand(src, &COPY).expect("expand");
    let (d, stats) = tree
        .digest(&sources, &Filter::default(), cache, opts)
        .expect("digest");
    (d.to_string(), stats)
}

fn digest_of(root: &Path, src: &str) -> String {
    let tree = Tree::new(root.to_owned(), None);
    digest_with(
        &tree,
        src,
        &mut StatCache::in_memory(),
        &DigestOptions::default(),
    )
    .0
}

/// Waits until the coarse clock has passed every ctime under `root`, so the
/// stat cache may trust them (a condition, not a timing threshold).
fn settle(root: &Path) {
    let mut newest = 0i64;
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).expect("lstat");
        use std::os::unix::fs::MetadataExt;
        newest = newest.max(m.ctime() * 1_000_000_000 + m.ctime_nsec());
        if m.is_dir() {
            for e in fs::read_dir(&p).expect("readdir") {
                stack.push(e.expect("entry").path());
            }
        }
    }
    while coarse_now_ns() <= newest {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `Tree::digest` encodes as it walks; `digest_listed` and
/// `digest_selection` encode a walk's entries. Same selection, same digest:
/// through `.dockerignore` rules, copy filters, ownership, a fifo, sources
/// that are files, and with the stat cache cold and warm.
fn every_digest_path_agrees() -> TestResult {
    use kiln_context::digest::digest_selection;
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    sample(root);
    for d in 0..12 {
        for f in 0..7 {
            write(
                root,
                &format!("deep/d{d}/s{}/f{f}.txt", d % 3),
                format!("{d}/{f}").as_bytes(),
                0o640,
            );
        }
        write(root, &format!("deep/d{d}/x.log"), b"log", 0o644);
    }
    nix::unistd::mkfifo(
        &root.join("b/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    write(
        root,
        ".dockerignore",
        b"deep/d1\ndeep/d2/**\n!deep/d2/s2/f3.txt\n",
        0o644,
    );
    settle(root);
    let ignore = Matcher::new(&["deep/d1", "deep/d2/**", "!deep/d2/s2/f3.txt"])?;
    for tree in [
        Tree::new(root.to_owned(), None),
        Tree::new(root.to_owned(), Some(ignore)),
    ] {
        for filter in [
            Filter::default(),
            Filter::new::<&str, &str>(&[], &["**/*.log", "deep/d3"])?,
            Filter::new::<&str, &str>(&["deep/d4", "a"], &[])?,
        ] {
            for src in ["/", "/deep", "/a/one.txt", "/b/*", "/deep/d2"] {
                for include_ownership in [false, true] {
                    let opts = DigestOptions { include_ownership };
                    let sources = tree.expand(src, &COPY)?;
                    let mut cache = StatCache::in_memory();
                    let (streamed, cold) = tree.digest(&sources, &filter, &mut cache, &opts)?;
                    let (warm_digest, warm) = tree.digest(&sources, &filter, &mut cache, &opts)?;
                    let listed =
                        tree.digest_listed(&sources, &filter, &mut StatCache::in_memory(), &opts)?;
                    let walked = sources
                        .iter()
                        .map(|s| tree.walk(s, &filter).map(|e| (s, e)))
                        .collect::<Result<Vec<_>, _>>()?;
                    let selection: Vec<_> =
                        walked.iter().map(|(s, e)| (*s, e.as_slice())).collect();
                    // The walk kept with the listing is the walk.
                    assert!(
                        listed.walked.iter().eq(walked.iter().map(|(_, e)| e)),
                        "{src} {filter:?}"
                    );
                    let listed = listed.digest;
                    let (selected, _) = digest_selection(
                        &selection,
                        &mut StatCache::in_memory(),
                        &opts,
                        coarse_now_ns(),
                    )?;
                    let what = format!("{src} {filter:?} ownership={include_ownership}");
                    assert_eq!(streamed, listed, "{what}");
                    assert_eq!(streamed, selected, "{what}");
                    assert_eq!(streamed, warm_digest, "{what}");
                    assert_eq!(cold.entries, warm.entries, "{what}");
                    assert_eq!(warm.files_hashed, 0, "{what}");
                    assert_eq!(warm.cache_hits, cold.files_hashed, "{what}");
                }
            }
        }
    }
    Ok(())
}

fn encoding_as_documented() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))?;
    fs::create_dir(root.join("d"))?;
    fs::set_permissions(root.join("d"), fs::Permissions::from_mode(0o2755))?;
    write(root, "d/f", b"hello", 0o4750);
    std::os::unix::fs::symlink("f", root.join("d/l"))?;

    let mut h = Sha256::new();
    h.update(b"kiln.context.v1\0");
    h.update([0u8]);
    let put = |h: &mut Sha256, s: &[u8]| {
        h.update((s.len() as u32).to_be_bytes());
        h.update(s);
    };
    h.update(b"S");
    put(&mut h, b"/d");
    h.update(b"E");
    put(&mut h, b"");
    h.update(b"d");
    h.update(0o2755u32.to_be_bytes());
    h.update(b"E");
    put(&mut h, b"f");
    h.update(b"f");
    h.update(0o4750u32.to_be_bytes());
    h.update(5u64.to_be_bytes());
    h.update(Sha256::digest(b"hello"));
    h.update(b"E");
    put(&mut h, b"l");
    h.update(b"l");
    h.update(0o777u32.to_be_bytes());
    put(&mut h, b"f");
    let want = format!("sha256:{}", hex(&h.finalize()));
    assert_eq!(digest_of(root, "/d"), want);
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn stable_across_trees_and_runs() -> TestResult {
    let t1 = tempfile::tempdir()?;
    let t2 = tempfile::tempdir()?;
    sample(t1.path());
    sample(t2.path());
    let d1 = digest_of(t1.path(), "/");
    assert_eq!(d1, digest_of(t1.path(), "/"), "same tree twice");
    assert_eq!(
        d1,
        digest_of(t2.path(), "/"),
        "same content elsewhere, created later"
    );
    Ok(())
}

fn changes_with_content_mode_name_target() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    sample(root);
    let base = digest_of(root, "/");
    let mut seen = vec![base.clone()];
    let mut expect_new = |what: &str| {
        let d = digest_of(root, "/");
        assert!(!seen.contains(&d), "{what} did not change the digest");
        seen.push(d);
    };
    write(root, "a/one.txt", b"One\n", 0o644);
    expect_new("content (same size)");
    fs::set_permissions(root.join("a/one.txt"), fs::Permissions::from_mode(0o664))?;
    expect_new("mode");
    fs::set_permissions(root.join("a/one.txt"), fs::Permissions::from_mode(0o4664))?;
    expect_new("setuid");
    fs::set_permissions(root.join("b"), fs::Permissions::from_mode(0o1750))?;
    expect_new("sticky dir");
    fs::rename(root.join("b/three"), root.join("b/four"))?;
    expect_new("name");
    fs::remove_file(root.join("b/link"))?;
    std::os::unix::fs::symlink("../a/two.sh", root.join("b/link"))?;
    expect_new("symlink target");
    fs::create_dir(root.join("empty"))?;
    expect_new("new empty dir");

    // The source path is part of the digest: same content, other name.
    let t2 = tempfile::tempdir()?;
    write(t2.path(), "x/f", b"same", 0o644);
    write(t2.path(), "y/f", b"same", 0o644);
    fs::set_permissions(t2.path().join("x"), fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(t2.path().join("y"), fs::Permissions::from_mode(0o755))?;
    assert_ne!(digest_of(t2.path(), "/x"), digest_of(t2.path(), "/y"));
    assert_ne!(digest_of(t2.path(), "/x/f"), digest_of(t2.path(), "/y/f"));
    Ok(())
}

fn ignores_mtime() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    sample(root);
    let before = digest_of(root, "/");
    let f = fs::File::options()
        .write(true)
        .open(root.join("a/one.txt"))?;
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))?;
    let d = fs::File::open(root.join("a"))?;
    d.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000))?;
    assert_eq!(before, digest_of(root, "/"));
    Ok(())
}

fn ignored_files_do_not_count() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    sample(root);
    write(root, "a/debug.log", b"1", 0o644);
    let tree = |root: &Path| {
        Tree::new(
            root.to_owned(),
            Some(Matcher::new(&["**/*.log"]).expect("pattern")),
        )
    };
    let mut cache = StatCache::in_memory();
    let opts = DigestOptions::default();
    let before = digest_with(&tree(root), "/", &mut cache, &opts).0;
    write(root, "a/debug.log", b"22", 0o600);
    assert_eq!(before, digest_with(&tree(root), "/", &mut cache, &opts).0);
    Ok(())
}

fn cache_hit_reads_nothing() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    sample(root);
    settle(root);
    let tree = Tree::new(root.to_owned(), None);
    let mut cache = StatCache::in_memory();
    let opts = DigestOptions::default();
    let (d1, s1) = digest_with(&tree, "/", &mut cache, &opts);
    assert_eq!((s1.files_hashed, s1.cache_hits), (3, 0));
    assert_eq!(s1.bytes_hashed, 4 + 10 + 1);
    assert_eq!(s1.entries, 7);
    let (d2, s2) = digest_with(&tree, "/", &mut cache, &opts);
    assert_eq!(d1, d2);
    assert_eq!((s2.files_hashed, s2.bytes_hashed, s2.cache_hits), (0, 0, 3));
    Ok(())
}

fn cache_survives_save_and_load() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("ctx");
    fs::create_dir(&root)?;
    sample(&root);
    settle(&root);
    let state = tmp.path().join("state");
    fs::create_dir(&state)?;
    let file = state.join("statcache");
    let tree = Tree::new(root.clone(), None);
    let opts = DigestOptions::default();
    let mut cache = StatCache::load(&file);
    let (d1, _) = digest_with(&tree, "/", &mut cache, &opts);
    cache.save()?;
    // Only the cache file remains in the state directory (the temporary
    // file was renamed over it).
    let names: Vec<_> = fs::read_dir(&state)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, vec![std::ffi::OsString::from("statcache")]);
    let mut cache = StatCache::load(&file);
    assert_eq!(cache.len(), 3);
    let (d2, s2) = digest_with(&tree, "/", &mut cache, &opts);
    assert_eq!(d1, d2);
    assert_eq!(s2.files_hashed, 0);
    // A corrupt cache file is an empty cache, not an error.
    fs::write(&file, b"garbage")?;
    let mut cache = StatCache::load(&file);
    assert!(cache.is_empty());
    let (d3, s3) = digest_with(&tree, "/", &mut cache, &opts);
    assert_eq!((d3, s3.files_hashed), (d1, 3));
    Ok(())
}

fn changed_ctime_or_inode_rehashes() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    sample(root);
    let f = root.join("a/one.txt");
    let old_mtime = fs::metadata(&f)?.modified()?;
    settle(root);
    let tree = Tree::new(root.to_owned(), None);
    let mut cache = StatCache::in_memory();
    let opts = DigestOptions::default();
    let (d1, _) = digest_with(&tree, "/", &mut cache, &opts);

    // Same size, mtime put back: only ctime tells.
    fs::write(&f, b"ONE\n")?;
    fs::File::options()
        .write(true)
        .open(&f)?
        .set_modified(old_mtime)?;
    settle(root);
    let (d2, s2) = digest_with(&tree, "/", &mut cache, &opts);
    assert_ne!(d1, d2, "content change behind an unchanged size and mtime");
    assert_eq!((s2.files_hashed, s2.cache_hits), (1, 2));

    // Replaced by another inode with the same size, mtime and content
    // shape: rehashed (the digest itself is content-only).
    let tmp_file = root.join("a/.new");
    fs::write(&tmp_file, b"one\n")?;
    fs::set_permissions(&tmp_file, fs::Permissions::from_mode(0o644))?;
    fs::File::options()
        .write(true)
        .open(&tmp_file)?
        .set_modified(old_mtime)?;
    fs::rename(&tmp_file, &f)?;
    settle(root);
    let (d3, s3) = digest_with(&tree, "/", &mut cache, &opts);
    assert_eq!(d3, d1, "same content as at first");
    assert_eq!(s3.files_hashed, 1);
    Ok(())
}

fn racy_entries_are_not_trusted() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    sample(root);
    settle(root);
    let tree = Tree::new(root.to_owned(), None);
    let mut cache = StatCache::in_memory();
    let opts = DigestOptions::default();
    digest_with(&tree, "/", &mut cache, &opts);
    // Change a file and digest again before the clock moves on: its new
    // stat is racy (a same-tick rewrite could keep it), so it is hashed now
    // and again next time, until its ctime is in the past.
    let now = coarse_now_ns();
    fs::write(root.join("b/three"), b"4")?;
    let (_, s1) = digest_with(&tree, "/", &mut cache, &opts);
    assert_eq!(s1.files_hashed, 1);
    if coarse_now_ns() == now {
        // The write and the digest happened in the tick that is still
        // current (almost always): the entry cannot have been trusted.
        let (_, s2) = digest_with(&tree, "/", &mut cache, &opts);
        assert_eq!(s2.files_hashed, 1, "racy entry trusted");
    }
    settle(root);
    digest_with(&tree, "/", &mut cache, &opts);
    let (_, s3) = digest_with(&tree, "/", &mut cache, &opts);
    assert_eq!(s3.files_hashed, 0);
    Ok(())
}

/// A `reading_once` tree (a build's context) walks a directory as it first
/// read it, in its clones too; a plain tree, or a walk from a directory not
/// read yet, sees the files as they are now.
fn reading_once_is_one_snapshot() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    sample(root);
    let once = Tree::new(root.to_owned(), None).reading_once();
    let plain = Tree::new(root.to_owned(), None);
    let all = once.expand("/", &COPY)?;
    let first = once.walk(&all[0], &Filter::default())?;
    write(root, "a/new.txt", b"new", 0o644);
    fs::remove_file(root.join("b/three"))?;
    let paths = |entries: &[kiln_context::Entry]| -> Vec<String> {
        entries
            .iter()
            .map(|e| e.path.display().to_string())
            .collect()
    };
    assert!(!paths(&first).contains(&"a/new.txt".to_owned()));
    assert!(paths(&first).contains(&"b/three".to_owned()));
    assert_eq!(once.walk(&all[0], &Filter::default())?, first);
    assert_eq!(once.clone().walk(&all[0], &Filter::default())?, first);
    // The digest reads the same walk: the file removed since is not missed.
    once.digest(
        &all,
        &Filter::default(),
        &mut StatCache::in_memory(),
        &DigestOptions::default(),
    )
    .err()
    .ok_or("expected the digest to read b/three, removed since the walk")?;
    let now = paths(&plain.walk(&plain.expand("/", &COPY)?[0], &Filter::default())?);
    assert!(now.contains(&"a/new.txt".to_owned()), "{now:?}");
    assert!(!now.contains(&"b/three".to_owned()), "{now:?}");
    let a = once.expand("/a", &COPY)?;
    let from_a = paths(&once.walk(&a[0], &Filter::default())?);
    assert!(from_a.contains(&"new.txt".to_owned()), "{from_a:?}");
    Ok(())
}

fn unseen_entries_dropped_on_save() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("ctx");
    fs::create_dir(&root)?;
    sample(&root);
    settle(&root);
    let file = tmp.path().join("cache");
    let tree = Tree::new(root.clone(), None);
    let opts = DigestOptions::default();
    let mut cache = StatCache::load(&file);
    digest_with(&tree, "/", &mut cache, &opts);
    cache.save()?;
    let mut cache = StatCache::load(&file);
    assert_eq!(cache.len(), 3);
    digest_with(&tree, "/a", &mut cache, &opts);
    cache.save()?;
    assert_eq!(StatCache::load(&file).len(), 2, "only /a's files were used");
    Ok(())
}

fn large_file_streamed() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let data: Vec<u8> = (0..5 * 1024 * 1024 + 7)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    write(root, "big", &data, 0o644);
    let tree = Tree::new(root.to_owned(), None);
    let sources = tree.expand("/big", &COPY)?;
    let (_, stats) = tree.digest(
        &sources,
        &Filter::default(),
        &mut StatCache::in_memory(),
        &DigestOptions::default(),
    )?;
    assert_eq!(stats.bytes_hashed, data.len() as u64);
    // Same digest as a small tree holding the same bytes written at once.
    let t2 = tempfile::tempdir()?;
    fs::write(t2.path().join("big"), &data)?;
    fs::set_permissions(t2.path().join("big"), fs::Permissions::from_mode(0o644))?;
    assert_eq!(digest_of(root, "/big"), digest_of(t2.path(), "/big"));
    Ok(())
}

/// A FIFO is an entry, never opened; a file that turned into a directory
/// between walk and hash is an error naming it.
fn special_and_vanished_files() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    write(root, "f", b"x", 0o644);
    nix::unistd::mkfifo(
        &root.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )?;
    let tree = Tree::new(root.to_owned(), None);
    let sources = tree.expand("/", &COPY)?;
    // The FIFO is an entry, not opened (this would block otherwise).
    let (_, stats) = tree.digest(
        &sources,
        &Filter::default(),
        &mut StatCache::in_memory(),
        &DigestOptions::default(),
    )?;
    assert_eq!(stats.files_hashed, 1);
    // A file that turns into a directory between walk and hash: error naming it.
    let entries = tree.walk(&sources[0], &Filter::default())?;
    fs::remove_file(root.join("f"))?;
    fs::create_dir(root.join("f"))?;
    let sel = [(&sources[0], entries.as_slice())];
    let err = kiln_context::digest::digest_selection(
        &sel,
        &mut StatCache::in_memory(),
        &DigestOptions::default(),
        coarse_now_ns(),
    )
    .err()
    .ok_or("expected an error")?;
    assert!(
        err.to_string()
            .contains(&root.join("f").display().to_string()),
        "{err}"
    );
    Ok(())
}

/// Not as root (root reads anything): an unreadable file or directory is
/// an error naming it, never silently skipped.
fn permission_denied_is_an_error() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    write(root, "secret", b"x", 0o000);
    let tree = Tree::new(root.to_owned(), None);
    let sources = tree.expand("/", &COPY)?;
    let err = tree
        .digest(
            &sources,
            &Filter::default(),
            &mut StatCache::in_memory(),
            &DigestOptions::default(),
        )
        .err()
        .ok_or("expected an error")?;
    assert!(err.to_string().contains("secret"), "{err}");
    fs::remove_file(root.join("secret"))?;
    fs::create_dir(root.join("locked"))?;
    write(root, "locked/f", b"x", 0o644);
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o000))?;
    let err = tree
        .walk(&sources[0], &Filter::default())
        .err()
        .ok_or("expected an error")?;
    fs::set_permissions(root.join("locked"), fs::Permissions::from_mode(0o755))?;
    assert!(err.to_string().contains("locked"), "{err}");
    Ok(())
}

fn ownership_only_when_asked() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    sample(root);
    let tree = Tree::new(root.to_owned(), None);
    let no = DigestOptions {
        include_ownership: false,
    };
    let yes = DigestOptions {
        include_ownership: true,
    };
    let mut cache = StatCache::in_memory();
    let (n1, _) = digest_with(&tree, "/", &mut cache, &no);
    let (y1, _) = digest_with(&tree, "/", &mut cache, &yes);
    assert_ne!(n1, y1);
    std::os::unix::fs::lchown(root.join("a/one.txt"), Some(1234), Some(5678))?;
    let (n2, _) = digest_with(&tree, "/", &mut cache, &no);
    let (y2, _) = digest_with(&tree, "/", &mut cache, &yes);
    assert_eq!(n1, n2, "chown changed a digest without ownership");
    assert_ne!(y1, y2, "chown did not change a digest with ownership");
    Ok(())
}
