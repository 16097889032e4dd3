//! Blob downloads: small blobs into memory, streams, `HEAD`, and downloads
//! into the content store, verified before they become visible and
//! retried from the start when broken or corrupt.

use std::io::{self, Read};

use kiln_llb::Digest;
use kiln_oci::{ContentStore, Descriptor};
use kiln_reference::Reference;

use crate::error::RegistryError;
use crate::progress::{Direction, TransferState};

use super::response::header;
use super::url::registry_host;
use super::{Body, Client, Target, sha256};

impl Client {
    /// A small blob (an image config) of `repo`, read into memory and
    /// verified against its digest and size; never written to a store.
    pub fn get_blob_bytes(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let host = registry_host(repo.domain());
        if desc.size > limit {
            return Err(RegistryError::Protocol {
                host,
                detail: format!(
                    "blob {} of {} is {} bytes, more than the {limit} read into memory",
                    desc.digest,
                    repo.path(),
                    desc.size
                ),
            });
        }
        let t = Target {
            host: &host,
            repo: repo.path(),
        };
        let scope = format!("repository:{}:pull", repo.path());
        let path = format!("/v2/{}/blobs/{}", repo.path(), desc.digest);
        let mut resp = self.send(&t, &scope, "GET", &path, &[], Body::Empty, true)?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(
                &t,
                "GET",
                &path,
                &format!("blob {}", desc.digest),
                resp,
            ));
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(limit.saturating_add(1))
            .read_to_vec()
            .map_err(|e| self.transport_error(&host, &e))?;
        let actual = sha256(&bytes);
        if actual != desc.digest || bytes.len() as u64 != desc.size {
            return Err(RegistryError::DigestMismatch {
                host: host.clone(),
                repository: repo.path().to_owned(),
                what: format!("blob {}", desc.digest),
                expected: format!("{} ({} bytes)", desc.digest, desc.size),
                actual: format!("{actual} ({} bytes)", bytes.len()),
            });
        }
        Ok(bytes)
    }

    /// Blob `desc` of `repo` as a stream (not verified here: the reader's
    /// consumer checks it, as a registry does on upload).
    pub fn open_blob(
        &self,
        repo: &Reference,
        desc: &Descriptor,
    ) -> Result<Box<dyn Read + Send>, RegistryError> {
        let host = registry_host(repo.domain());
        let t = Target {
            host: &host,
            repo: repo.path(),
        };
        let scope = format!("repository:{}:pull", repo.path());
        let path = format!("/v2/{}/blobs/{}", repo.path(), desc.digest);
        let resp = self.send(&t, &scope, "GET", &path, &[], Body::Empty, true)?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(
                &t,
                "GET",
                &path,
                &format!("blob {}", desc.digest),
                resp,
            ));
        }
        Ok(Box::new(resp.into_body().into_reader()))
    }

    /// The size of blob `digest` in `repo`'s repository, if it is there.
    pub fn head_blob(
        &self,
        repo: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        self.head_blob_scoped(repo, digest, &format!("repository:{}:pull", repo.path()))
    }

    pub(super) fn head_blob_scoped(
        &self,
        repo: &Reference,
        digest: &Digest,
        scope: &str,
    ) -> Result<Option<u64>, RegistryError> {
        let host = registry_host(repo.domain());
        let t = Target {
            host: &host,
            repo: repo.path(),
        };
        let path = format!("/v2/{}/blobs/{digest}", repo.path());
        let resp = self.send(&t, scope, "HEAD", &path, &[], Body::Empty, true)?;
        match resp.status().as_u16() {
            200 => Ok(Some(
                header(&resp, "content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0),
            )),
            404 => Ok(None),
            _ => Err(self.status_error(&t, "HEAD", &path, &format!("blob {digest}"), resp)),
        }
    }

    /// Downloads blob `desc` of `repo` into `store`, verified against its
    /// digest and size before it becomes visible; a no-op when the store has
    /// it. A broken or corrupt transfer is retried from the start.
    pub fn fetch_blob(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        store: &ContentStore,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        let host = registry_host(repo.domain());
        let store_err = |source| RegistryError::Store {
            host: host.clone(),
            repository: repo.path().to_owned(),
            digest: desc.digest.to_string(),
            source,
        };
        if store.has(&desc.digest).map_err(store_err)? {
            return Ok(());
        }
        let t = Target {
            host: &host,
            repo: repo.path(),
        };
        let scope = format!("repository:{}:pull", repo.path());
        let path = format!("/v2/{}/blobs/{}", repo.path(), desc.digest);
        let opts = self.inner.options.retry;
        let mut delay = opts.base_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let resp = self.send(&t, &scope, "GET", &path, &[], Body::Empty, true)?;
            if resp.status().as_u16() != 200 {
                return Err(self.status_error(
                    &t,
                    "GET",
                    &path,
                    &format!("blob {}", desc.digest),
                    resp,
                ));
            }
            let mut reader = resp.into_body().into_reader();
            let mut w = store.writer().map_err(store_err)?;
            self.report(desc, Direction::Download, 0, TransferState::Started);
            let copied = copy_progress(&mut reader, &mut w, &|n| {
                self.report(desc, Direction::Download, n, TransferState::Moving);
                progress(n);
            });
            let failure = match copied {
                Err(e) => format!("download interrupted: {e}"),
                Ok(n) if n != desc.size => {
                    format!("size mismatch: expected {} bytes, got {n}", desc.size)
                }
                Ok(n) => match w.commit(Some(&desc.digest)) {
                    Ok(_) => {
                        self.report(desc, Direction::Download, n, TransferState::Finished);
                        return Ok(());
                    }
                    Err(kiln_oci::ContentError::Mismatch { actual, .. }) => {
                        if attempt >= opts.attempts.max(1) {
                            return Err(RegistryError::DigestMismatch {
                                host: host.clone(),
                                repository: repo.path().to_owned(),
                                what: format!("blob {}", desc.digest),
                                expected: desc.digest.to_string(),
                                actual: actual.to_string(),
                            });
                        }
                        "digest mismatch".to_owned()
                    }
                    Err(e) => return Err(store_err(e)),
                },
            };
            if attempt >= opts.attempts.max(1) {
                return Err(RegistryError::Connection {
                    host: host.clone(),
                    detail: format!("blob {} of {}: {failure}", desc.digest, repo.path()),
                    hint: String::new(),
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(opts.max_delay);
        }
    }
}

fn copy_progress(
    r: &mut impl Read,
    w: &mut impl io::Write,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
        progress(total);
    }
}
