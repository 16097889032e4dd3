//! `ADD https://…`: a downloaded file as a one-file layer, as BuildKit's http
//! source makes it (`/<filename>`, mode 0600, mtime from `Last-Modified`).
//!
//! Without `--checksum`, the content decides the cache key, so the file is
//! downloaded while the key is computed and the layer is kept for `execute`;
//! with `--checksum`, the checksum is the key and the download happens only
//! on a miss, verified before the layer is committed. (Revalidation with
//! ETag/Last-Modified, which saves the download on a hit, belongs to the
//! [modern] milestone.)

use std::fs;
use std::io::{self, Read, Write as _};
use std::os::unix::fs::PermissionsExt;

use kiln_llb::op::{Op, SourceOp};
use kiln_llb::{Digest, Vertex};
use kiln_snapshot::LayerDraft;
use kiln_solver::Key;
use sha2::{Digest as _, Sha256};

use crate::Value;
use crate::error::Error;
use crate::keys;
use crate::worker::LlbWorker;

/// A download made while computing a key.
#[derive(Debug)]
pub struct Download {
    draft: LayerDraft,
}

fn parts(v: &Vertex) -> Result<(&str, &str, &str), Error> {
    match &v.op {
        Op::Source(SourceOp::Http {
            url,
            filename,
            checksum,
        }) => Ok((url, filename, checksum)),
        _ => Err(Error::Other("not an http source".to_owned())),
    }
}

/// Downloads `url` into a new layer draft as `/<filename>`; returns the draft
/// and the content digest.
fn download(w: &LlbWorker, url: &str, filename: &str) -> Result<(LayerDraft, Digest), Error> {
    let fail = |m: String| Error::Other(format!("failed to download {url}: {m}"));
    let mut resp = ureq::get(url).call().map_err(|e| fail(e.to_string()))?;
    let modified = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok());
    let draft = w.state.layers.create()?;
    let name = if filename.is_empty() {
        "index.html"
    } else {
        filename
    };
    let path = draft.diff_dir().join(name);
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
            Err(e) => return Err(fail(e.to_string())),
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
    Ok((draft, Digest::from_bytes(digest)))
}

/// The key of an http source (downloading it when no checksum pins it).
pub fn cache_key(w: &LlbWorker, v: &Vertex) -> Result<Key, Error> {
    let (url, filename, checksum) = parts(v)?;
    if !checksum.is_empty() {
        return Ok(keys::http_key(url, filename, checksum));
    }
    let (draft, digest) = download(w, url, filename)?;
    let key = keys::http_key(url, filename, &digest.to_string());
    if let Ok(mut d) = w.downloads.lock() {
        d.insert(v.digest, Download { draft });
    }
    Ok(key)
}

/// The layer of an http source: the download made for the key, or a fresh
/// one checked against `--checksum`.
pub fn execute(w: &LlbWorker, v: &Vertex) -> Result<Value, Error> {
    let (url, filename, checksum) = parts(v)?;
    let stashed = w
        .downloads
        .lock()
        .ok()
        .and_then(|mut d| d.remove(&v.digest));
    let draft = match stashed {
        Some(d) => d.draft,
        None => {
            let (draft, digest) = download(w, url, filename)?;
            if !checksum.is_empty() && checksum != digest.to_string() {
                return Err(Error::Other(format!(
                    "digest mismatch for {url}: expected {checksum}, got {digest}"
                )));
            }
            draft
        }
    };
    let layer = draft.commit(crate::image::built_layer_meta())?;
    Ok(Value::Fs {
        layers: vec![layer.id.as_str().to_owned()],
    })
}
