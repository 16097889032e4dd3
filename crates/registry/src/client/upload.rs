//! Blob uploads: `HEAD` first, a cross-repository mount when the blob is
//! in another repository of the registry, else one `PUT` or chunked
//! `PATCH`es; an upload that breaks restarts from a new session.

use std::io::{self, Read};

use kiln_oci::Descriptor;
use kiln_reference::Reference;
use ureq::http::Response;

use crate::error::RegistryError;
use crate::progress::{CountingReader, Direction, Transfer, TransferState};

use super::response::{error_detail, header, is_retryable};
use super::url::{absolute, registry_host, url_encode, with_query};
use super::{Body, Client, PushedBlob, Target};

impl Client {
    /// Copies blob `desc` from repository `from` to repository `to` without
    /// the local store: nothing when `to` has it; a cross-repository mount
    /// when both are on one registry and it agrees; otherwise (another
    /// registry, or a registry that answers the mount with an upload
    /// session) the bytes stream from `from` straight into the upload,
    /// which the registry checks against the digest.
    pub fn copy_blob(
        &self,
        from: &Reference,
        to: &Reference,
        desc: &Descriptor,
    ) -> Result<PushedBlob, RegistryError> {
        let same_registry = registry_host(from.domain()) == registry_host(to.domain());
        let mount_from = same_registry.then(|| from.path().to_owned());
        let open = || -> io::Result<Box<dyn Read + Send>> {
            self.open_blob(from, desc).map_err(io::Error::other)
        };
        self.push_blob(to, desc, mount_from.as_deref(), &open)
    }

    /// Uploads blob `desc` to `repo` unless the registry has it: mounted from
    /// repository `mount_from` of the same registry when given (and the
    /// registry agrees), else uploaded in one PUT or in chunks. `open` gives
    /// the blob's bytes, again for each attempt.
    pub fn push_blob(
        &self,
        repo: &Reference,
        desc: &Descriptor,
        mount_from: Option<&str>,
        open: &(dyn Fn() -> io::Result<Box<dyn Read + Send>> + Sync),
    ) -> Result<PushedBlob, RegistryError> {
        let host = registry_host(repo.domain());
        let t = Target {
            host: &host,
            repo: repo.path(),
        };
        let mut scope = format!("repository:{}:pull,push", repo.path());
        if let Some(from) = mount_from {
            scope.push_str(&format!(" repository:{from}:pull"));
        }
        if self.head_blob_scoped(repo, &desc.digest, &scope)?.is_some() {
            return Ok(PushedBlob::Existed);
        }
        let opts = self.inner.options.retry;
        let mut delay = opts.base_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.upload(&t, &scope, repo, desc, mount_from, open) {
                Ok(p) => return Ok(p),
                Err(e) if attempt < opts.attempts.max(1) && retryable_error(&e) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(opts.max_delay);
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) fn upload(
        &self,
        t: &Target<'_>,
        scope: &str,
        repo: &Reference,
        desc: &Descriptor,
        mount_from: Option<&str>,
        open: &(dyn Fn() -> io::Result<Box<dyn Read + Send>> + Sync),
    ) -> Result<PushedBlob, RegistryError> {
        let start = match mount_from {
            Some(from) => format!(
                "/v2/{}/blobs/uploads/?mount={}&from={}",
                repo.path(),
                desc.digest,
                url_encode(from)
            ),
            None => format!("/v2/{}/blobs/uploads/", repo.path()),
        };
        let mut resp = self.send(t, scope, "POST", &start, &[], Body::Empty, false)?;
        let status = resp.status().as_u16();
        if status == 201 && mount_from.is_some() {
            return Ok(PushedBlob::Mounted);
        }
        if status != 202 {
            return Err(self.status_error(t, "POST", &start, "upload", resp));
        }
        let _ = error_detail(&mut resp);
        let mut location = self.location(t, &resp)?;
        let base = format!("{}/", self.base_url(t.host));
        let open_blob = || -> Result<Box<dyn Read + Send>, RegistryError> {
            let r = open().map_err(|e| RegistryError::Io {
                what: format!("reading blob {}", desc.digest),
                source: e,
            })?;
            self.report(desc, Direction::Upload, 0, TransferState::Started);
            Ok(match &self.progress {
                Some(sink) => Box::new(CountingReader {
                    inner: r,
                    sink: sink.clone(),
                    template: Transfer {
                        digest: desc.digest,
                        direction: Direction::Upload,
                        total: desc.size,
                        current: 0,
                        state: TransferState::Moving,
                    },
                }),
                None => r,
            })
        };
        let size = desc.size;
        let threshold = self.inner.options.chunk_threshold;
        if size > threshold {
            let chunk = self.inner.options.chunk_size.max(1);
            let mut reader = open_blob()?;
            let mut offset = 0u64;
            while offset < size {
                let n = chunk.min(size - offset);
                let mut buf = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
                (&mut reader)
                    .take(n)
                    .read_to_end(&mut buf)
                    .map_err(|e| RegistryError::Io {
                        what: format!("reading blob {}", desc.digest),
                        source: e,
                    })?;
                if buf.len() as u64 != n {
                    return Err(RegistryError::Io {
                        what: format!("reading blob {}", desc.digest),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "shorter than its size",
                        ),
                    });
                }
                let range = format!("{offset}-{}", offset + n - 1);
                let url = absolute(&base, &location);
                let mut resp = self.send(
                    t,
                    scope,
                    "PATCH",
                    &url,
                    &[
                        ("Content-Type", "application/octet-stream".to_owned()),
                        ("Content-Range", range),
                    ],
                    Body::Bytes(&buf),
                    false,
                )?;
                if resp.status().as_u16() != 202 {
                    return Err(self.status_error(t, "PATCH", &url, "upload", resp));
                }
                let _ = error_detail(&mut resp);
                location = self.location(t, &resp)?;
                offset += n;
            }
            let url = with_query(
                &absolute(&base, &location),
                "digest",
                &desc.digest.to_string(),
            );
            let resp = self.send(t, scope, "PUT", &url, &[], Body::Empty, false)?;
            if resp.status().as_u16() != 201 {
                return Err(self.status_error(t, "PUT", &url, "upload", resp));
            }
        } else {
            let url = with_query(
                &absolute(&base, &location),
                "digest",
                &desc.digest.to_string(),
            );
            let resp = self.send(
                t,
                scope,
                "PUT",
                &url,
                &[("Content-Type", "application/octet-stream".to_owned())],
                Body::Reader(open_blob()?, size),
                false,
            )?;
            if resp.status().as_u16() != 201 {
                return Err(self.status_error(t, "PUT", &url, "upload", resp));
            }
        }
        self.report(desc, Direction::Upload, size, TransferState::Finished);
        Ok(PushedBlob::Uploaded)
    }

    pub(super) fn location(
        &self,
        t: &Target<'_>,
        resp: &Response<ureq::Body>,
    ) -> Result<String, RegistryError> {
        header(resp, "location").ok_or_else(|| RegistryError::Protocol {
            host: t.host.to_owned(),
            detail: "upload response without a Location".to_owned(),
        })
    }
}

/// Errors worth restarting an upload for.
fn retryable_error(e: &RegistryError) -> bool {
    match e {
        RegistryError::Connection { .. } => true,
        RegistryError::Status { status, .. } => is_retryable(*status),
        _ => false,
    }
}
