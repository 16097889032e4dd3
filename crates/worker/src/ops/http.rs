//! `ADD https://…`: a downloaded file as a one-file layer, as BuildKit's http
//! source makes it (`/<filename>`, mode 0600, mtime from `Last-Modified`).
//!
//! Without `--checksum`, the content decides the cache key (with the
//! `Last-Modified` time, which the layer carries as the file's mtime), so the
//! file is fetched while the key is computed. What a download saw is kept in
//! `<root>/http/<sha256 of the URL>.json` (ETag, Last-Modified, content
//! digest); the next build asks the server first with a HEAD (`If-None-Match`,
//! the same ETag back is enough: BuildKit's way with servers that mishandle
//! conditional GETs), then with a conditional GET (`If-None-Match` /
//! `If-Modified-Since`), and a `304 Not Modified` gives the key without a
//! download, as BuildKit's http source does. A 200 is downloaded into a layer
//! draft that `execute` commits. When a revalidated key misses the cache (its
//! layer was pruned), `execute` downloads again and refuses content that is
//! not the revalidated one.
//!
//! With `--checksum`, the checksum is the key and the download happens only
//! on a miss, verified before the layer is committed.

use std::fs;
use std::io::{self, Read, Write as _};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use kiln_llb::op::{Op, SourceOp};
use kiln_llb::{Digest, Vertex};
use kiln_snapshot::LayerDraft;
use kiln_solver::Key;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, HttpError, InternalError};
use crate::keys;
pub use crate::resolved::Download;
use crate::resolved::Prepared;
use crate::state::State;
use crate::value::{LayerRef, Value};

/// What http sources need of their build: the state (the recorded
/// validators, the layer store), where keying records the content digests
/// for the provenance, and where it leaves each vertex's download for its
/// execution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpOps<'a> {
    pub(crate) state: &'a State,
    pub(crate) resolved: &'a std::sync::Mutex<crate::resolved::Resolved>,
    pub(crate) downloads: &'a std::sync::Mutex<std::collections::HashMap<Digest, Download>>,
}

/// What a download of a URL saw, for conditional requests next time.
#[derive(Debug, Serialize, Deserialize)]
struct Validators {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    /// The content digest of that download.
    digest: String,
}

fn validators_path(ops: HttpOps<'_>, url: &str) -> PathBuf {
    ops.state
        .root
        .join("http")
        .join(format!("{}.json", Digest::of(url.as_bytes()).hex()))
}

/// The recorded validators of `url`, if any (an unreadable record is as good
/// as none: the next download rewrites it).
fn load_validators(ops: HttpOps<'_>, url: &str) -> Option<Validators> {
    let v: Validators = serde_json::from_slice(&fs::read(validators_path(ops, url)).ok()?).ok()?;
    (v.url == url && (v.etag.is_some() || v.last_modified.is_some())).then_some(v)
}

fn save_validators(ops: HttpOps<'_>, v: &Validators) -> Result<(), Error> {
    // An unreadable record is as good as none (`load_validators`).
    Ok(kiln_store::state::write_json(
        &validators_path(ops, &v.url),
        v,
        kiln_oci::Durability::Volatile,
    )?)
}

/// The content part of the key: the digest, and the Last-Modified time the
/// file's mtime comes from.
fn content_id(digest: &str, last_modified: Option<&str>) -> String {
    match last_modified {
        Some(lm) => format!("{digest}\nlast-modified: {lm}"),
        None => digest.to_owned(),
    }
}

/// The outcome of a (possibly conditional) GET.
enum Got<T> {
    NotModified,
    Body(Box<Body<T>>),
}

/// A 200 response, downloaded into `dest`.
struct Body<T> {
    dest: T,
    digest: Digest,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// A 200 response, downloaded into a layer draft.
type Fetched = Body<LayerDraft>;

/// The outcome of a (possibly conditional) GET into a layer draft.
type Fetch = Got<LayerDraft>;

fn parts(v: &Vertex) -> Result<(&str, &str, &str), Error> {
    match &v.op {
        Op::Source(SourceOp::Http {
            url,
            filename,
            checksum,
        }) => Ok((url, filename, checksum)),
        _ => Err(InternalError::WrongKind("an http source").into()),
    }
}

/// GETs `url` (conditionally when `known` is given); a 200 goes into a new
/// layer draft as `/<filename>`.
fn fetch(
    ops: HttpOps<'_>,
    url: &str,
    filename: &str,
    known: Option<&Validators>,
) -> Result<Fetch, Error> {
    get(url, known, || {
        let draft = ops.state.layers.create()?;
        let name = if filename.is_empty() {
            "index.html"
        } else {
            filename
        };
        let path = draft.diff_dir().join(name);
        Ok((draft, path))
    })
}

/// Downloads `url` into the file `path` (mode 0600, mtime from
/// `Last-Modified`): the main build context at a URL. Returns the
/// `Last-Modified` time (Unix seconds), if the server sent one.
pub fn download_to(url: &str, path: &std::path::Path) -> Result<Option<i64>, Error> {
    match get(url, None, || Ok(((), path.to_path_buf())))? {
        Got::Body(b) => Ok(b
            .last_modified
            .as_deref()
            .and_then(parse_http_time)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok())),
        Got::NotModified => Err(HttpError::UnconditionalNotModified {
            url: url.to_owned(),
        }
        .into()),
    }
}

/// An HTTP date as Go's `http.ParseTime` reads it: IMF-fixdate, RFC 850 or
/// asctime, and (as Go's `MST` layout) a zone of `UTC` where HTTP says `GMT`.
fn parse_http_time(s: &str) -> Option<std::time::SystemTime> {
    httpdate::parse_http_date(s).ok().or_else(|| {
        let gmt = format!("{} GMT", s.trim().strip_suffix(" UTC")?);
        httpdate::parse_http_date(&gmt).ok()
    })
}

/// GETs `url` (conditionally when `known` is given); a 200 goes into the
/// file `dest` names (called once the response is a 200). With a known
/// ETag, a HEAD asks first, as BuildKit's http source does for servers
/// that mishandle `If-None-Match` on a GET: the same ETag back is
/// [`Got::NotModified`] without a GET.
fn get<T>(
    url: &str,
    known: Option<&Validators>,
    dest: impl FnOnce() -> Result<(T, PathBuf), Error>,
) -> Result<Got<T>, Error> {
    if let Some(etag) = known.and_then(|k| k.etag.as_deref())
        && head_matches(url, etag)
    {
        return Ok(Got::NotModified);
    }
    let mut req = ureq::get(url);
    if let Some(k) = known {
        if let Some(etag) = &k.etag {
            req = req.header("If-None-Match", etag);
        }
        if let Some(lm) = &k.last_modified {
            req = req.header("If-Modified-Since", lm);
        }
    }
    let mut resp = req.call().map_err(|e| HttpError::Request {
        url: url.to_owned(),
        source: Box::new(e),
    })?;
    if resp.status() == 304 {
        if known.is_some() {
            return Ok(Got::NotModified);
        }
        return Err(HttpError::UnconditionalNotModified {
            url: url.to_owned(),
        }
        .into());
    }
    if !resp.status().is_success() {
        return Err(HttpError::Status {
            url: url.to_owned(),
            status: resp.status(),
        }
        .into());
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header("etag");
    let last_modified = header("last-modified");
    let modified = last_modified.as_deref().and_then(parse_http_time);
    let (dest, path) = dest()?;
    let mut file = fs::File::create(&path).map_err(|source| Error::Io {
        what: format!("creating {}", path.display()),
        source,
    })?;
    let mut hasher = Sha256::new();
    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(HttpError::Read {
                    url: url.to_owned(),
                    source,
                }
                .into());
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(|source| Error::Io {
            what: format!("writing {}", path.display()),
            source,
        })?;
    }
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|source| Error::Io {
            what: format!("chmod {}", path.display()),
            source,
        })?;
    drop(file);
    if let Some(t) = modified {
        let ft = filetime::FileTime::from_system_time(t);
        filetime::set_file_times(&path, ft, ft).map_err(|source| Error::Io {
            what: format!("setting times on {}", path.display()),
            source,
        })?;
    }
    let digest: [u8; 32] = hasher.finalize().into();
    Ok(Got::Body(Box::new(Body {
        dest,
        digest: Digest::from_bytes(digest),
        etag,
        last_modified,
    })))
}

/// Whether a HEAD of `url` with `If-None-Match: etag` answers 200 or 304
/// with that ETag (weak or strong; a 304 without one means the one asked
/// about). Any failure is a no: the GET decides.
fn head_matches(url: &str, etag: &str) -> bool {
    let Ok(resp) = ureq::head(url)
        .header("If-None-Match", etag)
        // Servers may give another ETag to another encoding; BuildKit's
        // GET asks for gzip, so its HEAD does.
        .header("Accept-Encoding", "gzip")
        .call()
    else {
        return false;
    };
    let status = resp.status().as_u16();
    if status != 200 && status != 304 {
        return false;
    }
    let weakless = |s: &str| s.trim().trim_start_matches("W/").to_owned();
    match resp.headers().get("etag").and_then(|v| v.to_str().ok()) {
        Some(got) => weakless(got) == weakless(etag),
        None => status == 304,
    }
}

/// A 200: its validators recorded; the draft, its content digest and the
/// key's content part.
fn settle(ops: HttpOps<'_>, url: &str, f: Fetched) -> Result<(LayerDraft, Digest, String), Error> {
    let Fetched {
        dest: draft,
        digest,
        etag,
        last_modified,
    } = f;
    remember(ops, url, &digest, etag, last_modified.clone())?;
    let id = content_id(&digest.to_string(), last_modified.as_deref());
    Ok((draft, digest, id))
}

/// An unconditional download: the draft, its content digest and the key's
/// content part.
fn download(
    ops: HttpOps<'_>,
    url: &str,
    filename: &str,
) -> Result<(LayerDraft, Digest, String), Error> {
    match fetch(ops, url, filename, None)? {
        Got::Body(f) => settle(ops, url, *f),
        Got::NotModified => Err(HttpError::UnconditionalNotModified {
            url: url.to_owned(),
        }
        .into()),
    }
}

/// Records what a 200 saw, when it gave anything to revalidate with.
fn remember(
    ops: HttpOps<'_>,
    url: &str,
    digest: &Digest,
    etag: Option<String>,
    last_modified: Option<String>,
) -> Result<(), Error> {
    if etag.is_none() && last_modified.is_none() {
        return Ok(());
    }
    save_validators(
        ops,
        &Validators {
            url: url.to_owned(),
            etag,
            last_modified,
            digest: digest.to_string(),
        },
    )
}

/// The key of an http source: the checksum when one pins it; otherwise the
/// content, revalidated with the server or downloaded.
pub(crate) fn cache_key(ops: HttpOps<'_>, v: &Vertex) -> Result<Key, Error> {
    let (url, filename, checksum) = parts(v)?;
    if !checksum.is_empty() {
        if let (Ok(d), Ok(mut r)) = (checksum.parse::<Digest>(), ops.resolved.lock()) {
            r.http.insert(v.digest, d);
        }
        return Ok(keys::http_key(url, filename, checksum));
    }
    let known = load_validators(ops, url);
    let (prepared, id) = match fetch(ops, url, filename, known.as_ref())? {
        Got::NotModified => {
            // `fetch` answers NotModified only to a conditional request.
            let Some(k) = known else {
                return Err(HttpError::UnexpectedNotModified {
                    url: url.to_owned(),
                }
                .into());
            };
            let digest: Digest = k.digest.parse().map_err(|_| HttpError::BadValidators {
                path: validators_path(ops, url),
                digest: k.digest.clone(),
            })?;
            let id = content_id(&k.digest, k.last_modified.as_deref());
            if let Ok(mut r) = ops.resolved.lock() {
                r.http.insert(v.digest, digest);
            }
            (Prepared::Revalidated(digest), id)
        }
        Got::Body(f) => {
            let (draft, digest, id) = settle(ops, url, *f)?;
            if let Ok(mut r) = ops.resolved.lock() {
                r.http.insert(v.digest, digest);
            }
            (Prepared::Fetched(draft), id)
        }
    };
    if let Ok(mut d) = ops.downloads.lock() {
        d.insert(v.digest, Download { prepared });
    }
    Ok(keys::http_key(url, filename, &id))
}

/// The layer of an http source: the download made for the key, or a fresh
/// one checked against `--checksum` or against the revalidated content.
pub(crate) fn execute(ops: HttpOps<'_>, v: &Vertex) -> Result<Value, Error> {
    let (url, filename, checksum) = parts(v)?;
    let stashed = ops
        .downloads
        .lock()
        .ok()
        .and_then(|mut d| d.remove(&v.digest));
    let draft = match stashed.map(|d| d.prepared) {
        Some(Prepared::Fetched(draft)) => draft,
        Some(Prepared::Revalidated(expected)) => {
            let (draft, digest, _) = download(ops, url, filename)?;
            if digest != expected {
                return Err(HttpError::Changed {
                    url: url.to_owned(),
                }
                .into());
            }
            draft
        }
        None => {
            let (draft, digest, _) = download(ops, url, filename)?;
            if !checksum.is_empty() && checksum != digest.to_string() {
                return Err(HttpError::DigestMismatch {
                    url: url.to_owned(),
                    expected: checksum.to_owned(),
                    actual: digest,
                }
                .into());
            }
            draft
        }
    };
    let layer = draft.commit(kiln_store::blobs::built_layer_meta())?;
    Ok(Value::Fs {
        layers: vec![LayerRef::Snapshot(layer.id)],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn http_times_as_go_reads_them() {
        let t = |s: &str| {
            parse_http_time(s).map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs())
        };
        assert_eq!(t("Tuesday, 14-Nov-23 22:16:41 UTC"), Some(1_700_000_201));
        assert_eq!(t("Tue, 14 Nov 2023 22:16:41 GMT"), Some(1_700_000_201));
        assert_eq!(t("yesterday"), None);
    }
}
