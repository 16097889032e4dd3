//! The client against a real distribution server (Debian's
//! `docker-registry`), directly and through [`FaultProxy`], which injects
//! failures and emulates a Bearer token service. Every test starts its own
//! registry on a free loopback port; without `docker-registry` they are
//! reported as ignored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kiln_llb::{Digest, Platform};
use kiln_oci::{ContentStore, Descriptor, ImageConfigFile, Index, Manifest, MediaTypes};
use kiln_registry::{
    Auth, Client, ClientOptions, PushedBlob, Reference, RegistryConfig, RegistryError, RetryPolicy,
};
use kiln_testkit::registry::{Fault, FaultProxy, Registry, RegistryOptions, unavailable};
use libtest_mimic::{Arguments, Failed, Trial};

fn options() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        },
        chunk_threshold: 100 << 10,
        chunk_size: 64 << 10,
    }
}

fn client() -> Client {
    Client::with_options(RegistryConfig::default(), Auth::anonymous(), options()).unwrap()
}

fn r(s: &str) -> Reference {
    Reference::parse_normalized(s).unwrap()
}

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

struct Image {
    store: ContentStore,
    _dir: tempfile::TempDir,
    config: Descriptor,
    layers: Vec<Descriptor>,
    manifest: Vec<u8>,
    manifest_digest: Digest,
}

/// An image in a fresh store: a config for `platform` and two layers (one
/// big enough to be uploaded in chunks).
fn image(platform: &Platform, seed: u64) -> Image {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("blobs")).unwrap();
    let big = store.put_bytes(&bytes(300 << 10, seed)).unwrap();
    let small = store.put_bytes(&bytes(1000, seed + 1)).unwrap();
    let mut config = ImageConfigFile::new(platform);
    config.rootfs.diff_ids = vec![big.digest, small.digest];
    let config_blob = store.put_bytes(&config.to_json().unwrap()).unwrap();
    let config = Descriptor::new(MediaTypes::Oci.config(), config_blob);
    let layers = vec![
        Descriptor::new(kiln_oci::media::OCI_LAYER_TAR, big),
        Descriptor::new(kiln_oci::media::OCI_LAYER_TAR, small),
    ];
    let manifest = Manifest::new(MediaTypes::Oci, config.clone(), layers.clone());
    let manifest = kiln_oci::to_canonical_json(&manifest).unwrap();
    let manifest_digest = store.put_bytes(&manifest).unwrap().digest;
    Image {
        store,
        _dir: dir,
        config,
        layers,
        manifest,
        manifest_digest,
    }
}

fn open(
    store: &ContentStore,
    d: Digest,
) -> impl Fn() -> std::io::Result<Box<dyn Read + Send>> + Sync {
    let store = store.clone();
    move || {
        store
            .open_blob(&d)
            .map(|f| Box::new(f) as Box<dyn Read + Send>)
            .map_err(std::io::Error::other)
    }
}

fn push(
    c: &Client,
    img: &Image,
    repo: &str,
    tag: &str,
    mount_from: Option<&str>,
) -> Vec<PushedBlob> {
    let reference = r(repo);
    let mut out = Vec::new();
    for d in std::iter::once(&img.config).chain(&img.layers) {
        out.push(
            c.push_blob(&reference, d, mount_from, &open(&img.store, d.digest))
                .unwrap_or_else(|e| panic!("push {}: {e}", d.digest)),
        );
    }
    let pushed = c
        .put_manifest(
            &reference,
            tag,
            kiln_oci::media::OCI_MANIFEST,
            &img.manifest,
        )
        .unwrap();
    assert_eq!(pushed, img.manifest_digest);
    out
}

fn empty_store() -> (tempfile::TempDir, ContentStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ContentStore::open(dir.path().join("blobs")).unwrap();
    (dir, store)
}

fn leftovers(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs/ingest"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Push through a Bearer-token proxy (chunked upload, HEAD before upload,
/// cross-repository mount with the right scopes), then read back with
/// skopeo and with the client.
fn round_trip() -> Result<(), Failed> {
    let reg = Registry::start(RegistryOptions::anonymous())?;
    let proxy = FaultProxy::start(&reg.addr(), true)?;
    let c = client();
    let host = proxy.addr();
    let img = image(&Platform::new("linux", "amd64", ""), 1);
    let first = push(&c, &img, &format!("{host}/team/one"), "1", None);
    assert_eq!(first, vec![PushedBlob::Uploaded; 3]);
    assert!(
        proxy.count("PATCH", "/v2/team/one/blobs/uploads/") >= 5,
        "{:?}",
        proxy.requests()
    );
    assert!(proxy.count("HEAD", "/v2/team/one/blobs/") >= 3);
    let again = push(&c, &img, &format!("{host}/team/one"), "1", None);
    assert_eq!(again, vec![PushedBlob::Existed; 3]);
    let mounted = push(&c, &img, &format!("{host}/team/two"), "1", Some("team/one"));
    assert_eq!(mounted, vec![PushedBlob::Mounted; 3]);
    assert_eq!(proxy.count("POST", "mount="), 3);
    assert_eq!(proxy.count("PATCH", "/v2/team/two/"), 0);
    let scopes: Vec<String> = proxy.token_requests().into_iter().map(|(s, _)| s).collect();
    assert!(
        scopes.contains(&"repository:team/two:pull,push repository:team/one:pull".to_owned()),
        "{scopes:?}"
    );
    // skopeo (an independent client) sees the same manifest.
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/team/two:1", reg.addr()))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, img.manifest);
    // And the client pulls it back into an empty store.
    let (dir, store) = empty_store();
    let resolved = c
        .resolve(
            &r(&format!("{host}/team/two:1")),
            &Platform::new("linux", "amd64", ""),
        )
        .map_err(|e| e.to_string())?;
    assert_eq!(resolved.index, None);
    assert_eq!(resolved.manifest.digest, img.manifest_digest);
    for d in std::iter::once(&img.config).chain(&img.layers) {
        c.fetch_blob(&r(&format!("{host}/team/two")), d, &store, &|_| {})
            .map_err(|e| e.to_string())?;
        assert!(store.has(&d.digest)?);
    }
    assert_eq!(leftovers(dir.path()), 0);
    Ok(())
}

/// An index of two platforms resolves per platform; a platform it lacks is
/// an error listing what it has.
fn platforms() -> Result<(), Failed> {
    let reg = Registry::start(RegistryOptions::anonymous())?;
    let c = client();
    let host = reg.addr();
    let amd = image(&Platform::new("linux", "amd64", ""), 10);
    let arm = image(&Platform::new("linux", "arm64", "v8"), 20);
    push(
        &c,
        &amd,
        &format!("{host}/multi"),
        &amd.manifest_digest.to_string(),
        None,
    );
    push(
        &c,
        &arm,
        &format!("{host}/multi"),
        &arm.manifest_digest.to_string(),
        None,
    );
    let entry = |img: &Image, p: Platform| {
        let mut d = Descriptor::new(
            kiln_oci::media::OCI_MANIFEST,
            kiln_oci::BlobInfo {
                digest: img.manifest_digest,
                size: img.manifest.len() as u64,
            },
        );
        d.platform = Some(p);
        d
    };
    let index = Index::new(
        MediaTypes::Oci,
        vec![
            entry(&amd, Platform::new("linux", "amd64", "")),
            entry(&arm, Platform::new("linux", "arm64", "v8")),
        ],
    );
    let index = kiln_oci::to_canonical_json(&index)?;
    c.put_manifest(
        &r(&format!("{host}/multi")),
        "1",
        kiln_oci::media::OCI_INDEX,
        &index,
    )
    .map_err(|e| e.to_string())?;
    let name = r(&format!("{host}/multi:1"));
    let got = c
        .resolve(&name, &Platform::new("linux", "amd64", ""))
        .map_err(|e| e.to_string())?;
    assert_eq!(got.manifest.digest, amd.manifest_digest);
    assert!(got.index.is_some());
    let got = c
        .resolve(&name, &Platform::new("linux", "arm64", ""))
        .map_err(|e| e.to_string())?;
    assert_eq!(got.manifest.digest, arm.manifest_digest);
    match c.resolve(&name, &Platform::new("linux", "s390x", "")) {
        Err(e @ RegistryError::NoPlatform { .. }) => {
            let msg = e.to_string().replace(&host, "$REGISTRY");
            assert_eq!(
                msg,
                "$REGISTRY/multi:1: no image for platform linux/s390x (the index has: linux/amd64, linux/arm64)"
            );
        }
        other => panic!("{other:?}"),
    }
    // skopeo reads the index too.
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{host}/multi:1"))
        .output()?;
    assert_eq!(out.stdout, index);
    Ok(())
}

/// 500, 429 and dropped connections are retried; exhausted retries say so.
fn retries() -> Result<(), Failed> {
    let reg = Registry::start(RegistryOptions::anonymous())?;
    let proxy = FaultProxy::start(&reg.addr(), false)?;
    let c = client();
    let host = proxy.addr();
    let img = image(&Platform::new("linux", "amd64", ""), 30);
    proxy.inject("PUT", "/manifests/", Fault::Status(503), 1);
    proxy.inject("HEAD", "/blobs/", Fault::Status(429), 2);
    push(&c, &img, &format!("{host}/retry"), "1", None);
    assert_eq!(proxy.count("PUT", "/manifests/1"), 2);
    proxy.inject("GET", "/manifests/", Fault::Status(500), 2);
    proxy.inject("GET", "/blobs/", Fault::Drop, 2);
    let (_dir, store) = empty_store();
    let got = c
        .resolve(
            &r(&format!("{host}/retry:1")),
            &Platform::new("linux", "amd64", ""),
        )
        .map_err(|e| e.to_string())?;
    assert_eq!(got.manifest.digest, img.manifest_digest);
    c.fetch_blob(
        &r(&format!("{host}/retry")),
        &img.layers[0],
        &store,
        &|_| {},
    )
    .map_err(|e| e.to_string())?;
    assert_eq!(
        proxy.count("GET", &format!("/blobs/{}", img.layers[0].digest)),
        3
    );
    proxy.inject("GET", "/manifests/", Fault::Status(500), 10);
    let e = c
        .get_manifest(&r(&format!("{host}/retry:1")))
        .expect_err("retries must run out");
    assert_eq!(
        e.to_string().replace(&host, "$PROXY"),
        "$PROXY: GET /v2/retry/manifests/1: unexpected status 500: FAULT: injected"
    );
    Ok(())
}

/// Uploads interrupted at each step (the upload session's start, its data,
/// its commit) restart cleanly: the push succeeds and what a pull gets is
/// the image, byte for byte.
fn interrupted_pushes() -> Result<(), Failed> {
    let reg = Registry::start(RegistryOptions::anonymous())?;
    let proxy = FaultProxy::start(&reg.addr(), false)?;
    let c = client();
    let host = proxy.addr();
    let img = image(&Platform::new("linux", "amd64", ""), 50);
    proxy.inject("POST", "/blobs/uploads/", Fault::Drop, 1);
    proxy.inject("PATCH", "/blobs/uploads/", Fault::Drop, 1);
    proxy.inject("PUT", "/blobs/uploads/", Fault::Drop, 1);
    proxy.inject("PUT", "/blobs/uploads/", Fault::Status(500), 1);
    push(&c, &img, &format!("{host}/interrupted"), "1", None);
    // Every fault was met (and answered by a retry or a new upload).
    check(proxy.pending_faults() == 0, "an injected fault never fired")?;
    let repo = r(&format!("{host}/interrupted"));
    let (dir, store) = empty_store();
    for d in std::iter::once(&img.config).chain(&img.layers) {
        c.fetch_blob(&repo, d, &store, &|_| {})
            .map_err(|e| e.to_string())?;
        check(
            store.read(&d.digest)? == img.store.read(&d.digest)?,
            "a pushed blob differs",
        )?;
    }
    check(leftovers(dir.path()) == 0, "ingest files left")?;
    Ok(())
}

fn check(cond: bool, what: &str) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(what.into()) }
}

/// A corrupt or truncated blob never enters the store; a transient
/// truncation is retried.
fn verification() -> Result<(), Failed> {
    let reg = Registry::start(RegistryOptions::anonymous())?;
    let proxy = FaultProxy::start(&reg.addr(), false)?;
    let c = client();
    let host = proxy.addr();
    let img = image(&Platform::new("linux", "amd64", ""), 40);
    push(&c, &img, &format!("{host}/verify"), "1", None);
    let repo = r(&format!("{host}/verify"));
    let layer = &img.layers[0];
    let (dir, store) = empty_store();
    proxy.inject("GET", "/blobs/", Fault::Corrupt, 10);
    let e = c
        .fetch_blob(&repo, layer, &store, &|_| {})
        .expect_err("corrupt blob accepted");
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    assert!(!store.has(&layer.digest)?);
    assert_eq!(leftovers(dir.path()), 0);
    proxy.clear();
    proxy.inject("GET", "/blobs/", Fault::Truncate, 10);
    let e = c
        .fetch_blob(&repo, layer, &store, &|_| {})
        .expect_err("truncated blob accepted");
    assert!(
        e.to_string().contains("interrupted") || e.to_string().contains("size"),
        "{e}"
    );
    assert!(!store.has(&layer.digest)?);
    assert_eq!(leftovers(dir.path()), 0);
    // One truncation: retried.
    proxy.clear();
    let (_d2, store2) = empty_store();
    proxy.inject("GET", "/blobs/", Fault::Truncate, 1);
    c.fetch_blob(&repo, layer, &store2, &|_| {})
        .map_err(|e| e.to_string())?;
    assert!(store2.has(&layer.digest)?);
    Ok(())
}

/// Blob downloads redirected to another host get no credentials.
fn redirects() -> Result<(), Failed> {
    let reg = Registry::start(RegistryOptions::anonymous())?;
    let proxy = FaultProxy::start(&reg.addr(), true)?;
    let c = client();
    let host = proxy.addr();
    let img = image(&Platform::new("linux", "amd64", ""), 50);
    push(&c, &img, &format!("{host}/redir"), "1", None);
    proxy.inject("GET", "/blobs/", Fault::Redirect, 3);
    let (_dir, store) = empty_store();
    for d in &img.layers {
        c.fetch_blob(&r(&format!("{host}/redir")), d, &store, &|_| {})
            .map_err(|e| e.to_string())?;
    }
    assert_eq!(
        proxy.redirects(),
        (2, 0),
        "redirected requests, with credentials"
    );
    Ok(())
}

/// htpasswd basic auth over TLS with a CA made by the test.
fn basic_auth_tls() -> Result<(), Failed> {
    let reg = Registry::start(RegistryOptions::basic_auth_tls("kiln", "secret"))?;
    let host = reg.addr();
    let ca = reg.ca_file().ok_or("no CA")?.to_path_buf();
    let mut config = RegistryConfig::default();
    config.hosts.insert(
        host.clone(),
        kiln_registry::config::HostConfig {
            insecure: false,
            ca: Some(ca),
        },
    );
    let good = Auth::anonymous().with_credentials(&host, "kiln", "secret");
    let bad = Auth::anonymous().with_credentials(&host, "kiln", "wrong");
    Client::with_options(config.clone(), good.clone(), options())?
        .ping(&host)
        .map_err(|e| e.to_string())?;
    let e = Client::with_options(config.clone(), bad, options())?
        .ping(&host)
        .expect_err("wrong password accepted");
    assert!(matches!(e, RegistryError::Unauthorized { .. }), "{e}");
    let img = image(&Platform::new("linux", "amd64", ""), 60);
    let c = Client::with_options(config, good.clone(), options())?;
    push(&c, &img, &format!("{host}/secure"), "1", None);
    let e = Client::with_options(RegistryConfig::default(), good, options())?
        .ping(&host)
        .expect_err("unknown CA accepted");
    let msg = e.to_string();
    assert!(
        msg.contains("UnknownIssuer") && msg.contains("ca.crt"),
        "{msg}"
    );
    Ok(())
}

/// A client made `with_progress` reports every blob it uploads (the chunked
/// one too) and downloads: started at 0, bytes growing to the size,
/// finished with the size; a blob the registry has reports nothing; a
/// download retried after a cut body starts again.
fn progress() -> Result<(), Failed> {
    use kiln_registry::{Direction, Transfer, TransferState};
    use std::sync::{Arc, Mutex};
    let reg = Registry::start(RegistryOptions::anonymous())?;
    let proxy = FaultProxy::start(&reg.addr(), false)?;
    let seen: Arc<Mutex<Vec<Transfer>>> = Arc::default();
    let s = seen.clone();
    let c = client().with_progress(Arc::new(move |t: &Transfer| {
        s.lock().unwrap().push(t.clone());
    }));
    assert!(c.progress().is_some() && client().progress().is_none());
    let host = proxy.addr();
    let img = image(&Platform::new("linux", "amd64", ""), 30);
    let blobs: Vec<&Descriptor> = std::iter::once(&img.config).chain(&img.layers).collect();
    push(&c, &img, &format!("{host}/p/one"), "1", None);
    let check_all = |direction: Direction, events: &[Transfer], restarts: usize| {
        for d in &blobs {
            let mine: Vec<&Transfer> = events
                .iter()
                .filter(|t| t.digest == d.digest && t.direction == direction)
                .collect();
            let states: Vec<TransferState> = mine.iter().map(|t| t.state).collect();
            assert_eq!(
                states
                    .iter()
                    .filter(|s| **s == TransferState::Started)
                    .count(),
                1 + restarts * usize::from(d.size > 1000),
                "{direction:?} {}: {states:?}",
                d.digest
            );
            assert_eq!(states.last(), Some(&TransferState::Finished), "{states:?}");
            assert!(
                mine.iter()
                    .all(|t| t.total == d.size && t.current <= d.size)
            );
            assert_eq!(mine.last().map(|t| t.current), Some(d.size));
            // Bytes only grow between two starts.
            for w in mine.windows(2) {
                if w[1].state != TransferState::Started {
                    assert!(w[1].current >= w[0].current, "{w:?}");
                }
            }
            if d.size > 100_000 {
                assert!(
                    states
                        .iter()
                        .filter(|s| **s == TransferState::Moving)
                        .count()
                        > 1,
                    "a big blob reports bytes as they move: {states:?}"
                );
            }
        }
    };
    check_all(Direction::Upload, &seen.lock().unwrap(), 0);
    // Pushed again: the registry has every blob, nothing moves.
    seen.lock().unwrap().clear();
    push(&c, &img, &format!("{host}/p/one"), "1", None);
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
    // Downloads; the big layer's first body is cut, and it starts again.
    let (_dir, store) = empty_store();
    proxy.inject("GET", &img.layers[0].digest.to_string(), Fault::Truncate, 1);
    for d in &blobs {
        c.fetch_blob(&r(&format!("{host}/p/one")), d, &store, &|_| {})
            .map_err(|e| e.to_string())?;
    }
    check_all(Direction::Download, &seen.lock().unwrap(), 1);
    Ok(())
}

type TestFn = fn() -> Result<(), Failed>;

fn main() {
    let args = Arguments::from_args();
    let skip = unavailable();
    if let Some(why) = &skip {
        eprintln!("registry tests ignored: {why}");
    }
    let tests: [(&str, TestFn); 8] = [
        ("round_trip", round_trip),
        ("platforms", platforms),
        ("retries", retries),
        ("interrupted_pushes", interrupted_pushes),
        ("verification", verification),
        ("redirects", redirects),
        ("basic_auth_tls", basic_auth_tls),
        ("progress", progress),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| Trial::test(name, f).with_ignored_flag(skip.is_some()))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
