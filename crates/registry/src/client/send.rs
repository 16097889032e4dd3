//! [`Client::send`], the one place requests are made: a connection per host
//! (with the system's and the configured CA roots), the auth challenge
//! answered once, retries with backoff on 5xx, 429 and broken connections,
//! redirects followed by hand without the credentials, plain HTTP for
//! insecure registries; and the errors an unexpected response or a broken
//! connection become.

use std::io;
use std::time::Duration;

use ureq::http::{self, Response};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, SendBody};

use crate::error::RegistryError;

use super::response::{error_detail, header, is_retryable, retry_after};
use super::token::parse_challenge;
use super::url::{absolute, registry_host, url_host};
use super::{Body, Client, Target, lock};

impl Client {
    pub(super) fn agent(&self, host: &str) -> Result<Agent, RegistryError> {
        if let Some(a) = lock(&self.inner.agents).get(host) {
            return Ok(a.clone());
        }
        let mut roots = self
            .inner
            .system_roots
            .get_or_init(|| {
                rustls_native_certs::load_native_certs()
                    .certs
                    .iter()
                    .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                    .collect()
            })
            .clone();
        for ca in self.inner.config.ca_files(host) {
            let pem = std::fs::read(&ca).map_err(|e| RegistryError::Io {
                what: format!("reading the CA file {} of {host}", ca.display()),
                source: e,
            })?;
            let mut found = false;
            for item in ureq::tls::parse_pem(&pem) {
                if let Ok(PemItem::Certificate(c)) = item {
                    roots.push(c.to_owned());
                    found = true;
                }
            }
            if !found {
                return Err(RegistryError::Config {
                    path: ca.display().to_string(),
                    detail: format!("no PEM certificate in the CA file of {host}"),
                });
            }
        }
        let roots = if roots.is_empty() {
            RootCerts::WebPki
        } else {
            RootCerts::new_with_certs(&roots)
        };
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .tls_config(TlsConfig::builder().root_certs(roots).build())
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .build()
            .into();
        lock(&self.inner.agents).insert(host.to_owned(), agent.clone());
        Ok(agent)
    }

    pub(super) fn base_url(&self, host: &str) -> String {
        let plain = lock(&self.inner.plain).get(host).copied().unwrap_or(false);
        format!("{}://{host}", if plain { "http" } else { "https" })
    }

    pub(super) fn transport_error(&self, host: &str, e: &ureq::Error) -> RegistryError {
        let detail = e.to_string();
        let hint = if tls_failure(e).is_some() {
            format!(
                " (TLS: put the registry's CA in {}/{host}/ca.crt or name it with `ca = …` in kiln's registry configuration; a registry without TLS needs --insecure-registry {host})",
                crate::config::DOCKER_CERTS_DIR
            )
        } else {
            String::new()
        };
        RegistryError::Connection {
            host: host.to_owned(),
            detail,
            hint,
        }
    }

    /// One request with auth, retries, redirects and the HTTP fallback.
    /// `path` is below the registry root (`/v2/…`) or an absolute URL on the
    /// same registry (upload locations). `retry`: the request is idempotent.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &self,
        t: &Target<'_>,
        scope: &str,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        mut body: Body<'_>,
        retry: bool,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let opts = self.inner.options.retry;
        let attempts = if retry { opts.attempts.max(1) } else { 1 };
        let mut delay = opts.base_delay;
        let mut authed = false;
        let mut redirects = 0;
        let mut redirect: Option<String> = None;
        let mut attempt = 0;
        let mut fell_back = false;
        loop {
            let url = match &redirect {
                Some(u) => u.clone(),
                None if path.starts_with("http://") || path.starts_with("https://") => {
                    path.to_owned()
                }
                None => format!("{}{path}", self.base_url(t.host)),
            };
            let url_host = url_host(&url).to_owned();
            let same_host = url_host == t.host;
            let mut req = http::Request::builder().method(method).uri(&url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if same_host && let Some(a) = self.authorization(t.host, scope)? {
                req = req.header("Authorization", a);
            }
            let send_body = match &mut body {
                Body::Empty => {
                    if matches!(method, "PUT" | "POST" | "PATCH") {
                        req = req.header("Content-Length", "0");
                    }
                    SendBody::none()
                }
                Body::Bytes(b) => {
                    req = req.header("Content-Length", b.len().to_string());
                    SendBody::from_owned_reader(io::Cursor::new(b.to_vec()))
                }
                Body::Reader(r, len) => {
                    req = req.header("Content-Length", len.to_string());
                    let r = std::mem::replace(r, Box::new(io::empty()));
                    SendBody::from_owned_reader(r)
                }
            };
            let req = req.body(send_body).map_err(|e| RegistryError::Protocol {
                host: t.host.to_owned(),
                detail: format!("building {method} {url}: {e}"),
            })?;
            attempt += 1;
            let result = self.agent(&url_host)?.run(req);
            let mut resp = match result {
                Ok(r) => r,
                Err(e) => {
                    // An insecure registry that does not speak TLS: plain HTTP.
                    // (Not after a certificate error: that server speaks TLS.)
                    if same_host
                        && redirect.is_none()
                        && !fell_back
                        && tls_failure(&e) != Some(TlsFailure::Certificate)
                        && url.starts_with("https://")
                        && !path.starts_with("https://")
                        && self.inner.config.is_insecure(t.host)
                    {
                        fell_back = true;
                        lock(&self.inner.plain).insert(t.host.to_owned(), true);
                        attempt -= 1;
                        continue;
                    }
                    let transient = !matches!(
                        e,
                        ureq::Error::BadUri(_) | ureq::Error::HostNotFound | ureq::Error::Tls(_)
                    ) && !matches!(e, ureq::Error::Rustls(_));
                    if transient && attempt < attempts {
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(opts.max_delay);
                        continue;
                    }
                    return Err(self.transport_error(&url_host, &e));
                }
            };
            let status = resp.status().as_u16();
            if status == 401 && same_host && !authed {
                authed = true;
                let challenge = header(&resp, "www-authenticate").and_then(|h| parse_challenge(&h));
                if let Some(c) = challenge {
                    let _ = error_detail(&mut resp);
                    self.authenticate(t, scope, c)?;
                    if matches!(body, Body::Reader(..)) {
                        // The reader was consumed; the caller starts over.
                        return Err(RegistryError::Unauthorized {
                            host: t.host.to_owned(),
                            repository: t.repo.to_owned(),
                            detail: "authentication needed mid-upload".to_owned(),
                        });
                    }
                    attempt -= 1;
                    continue;
                }
            }
            if matches!(status, 301 | 302 | 303 | 307 | 308) && matches!(method, "GET" | "HEAD") {
                let Some(loc) = header(&resp, "location") else {
                    return Ok(resp);
                };
                redirects += 1;
                if redirects > 10 {
                    return Err(RegistryError::Protocol {
                        host: t.host.to_owned(),
                        detail: format!("{method} {path}: too many redirects"),
                    });
                }
                redirect = Some(absolute(&url, &loc));
                attempt -= 1;
                continue;
            }
            if is_retryable(status) && attempt < attempts {
                let wait = retry_after(&resp).unwrap_or(delay);
                let _ = error_detail(&mut resp);
                std::thread::sleep(wait);
                delay = (delay * 2).min(opts.max_delay);
                continue;
            }
            return Ok(resp);
        }
    }

    /// Turns an unexpected response into the error a user can act on.
    pub(super) fn status_error(
        &self,
        t: &Target<'_>,
        method: &str,
        path: &str,
        what: &str,
        mut resp: Response<ureq::Body>,
    ) -> RegistryError {
        let status = resp.status().as_u16();
        let detail = error_detail(&mut resp);
        match status {
            401 => RegistryError::Unauthorized {
                host: t.host.to_owned(),
                repository: t.repo.to_owned(),
                detail,
            },
            403 => RegistryError::Denied {
                host: t.host.to_owned(),
                repository: t.repo.to_owned(),
                detail,
            },
            404 => RegistryError::NotFound {
                host: t.host.to_owned(),
                repository: t.repo.to_owned(),
                what: what.to_owned(),
            },
            _ => RegistryError::Status {
                host: t.host.to_owned(),
                method: method.to_owned(),
                path: path.to_owned(),
                status,
                detail,
            },
        }
    }

    /// `GET /v2/` with the auth flow (`kiln login` checks credentials so).
    pub fn ping(&self, host: &str) -> Result<(), RegistryError> {
        let host = registry_host(host);
        let t = Target {
            host: &host,
            repo: "",
        };
        let resp = self.send(&t, "", "GET", "/v2/", &[], Body::Empty, true)?;
        if resp.status().as_u16() == 200 {
            return Ok(());
        }
        Err(self.status_error(&t, "GET", "/v2/", "the registry API", resp))
    }
}

/// What kind of TLS failure a transport error is, if it is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsFailure {
    /// The server speaks TLS but its certificate was not accepted.
    Certificate,
    /// Anything else of TLS (a server that does not speak it, a setup error).
    Other,
}

/// ureq reports rustls's handshake errors inside an `io::Error` (the TLS
/// stream's), its own set-up errors as `Tls`, others as `Rustls`.
fn tls_failure(e: &ureq::Error) -> Option<TlsFailure> {
    let r = match e {
        ureq::Error::Tls(_) => return Some(TlsFailure::Other),
        ureq::Error::Rustls(r) => r,
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        _ => return None,
    };
    Some(match r {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsFailure::Certificate
        }
        _ => TlsFailure::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(inner: rustls::Error) -> ureq::Error {
        ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, inner))
    }

    #[test]
    fn tls_failures_are_told_by_type() {
        // What an untrusted registry certificate gives (registry-auth).
        let untrusted = io(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert_eq!(tls_failure(&untrusted), Some(TlsFailure::Certificate));
        // What a plain-HTTP server answering a TLS hello gives: not a
        // certificate failure, so an insecure registry falls back to HTTP.
        let plain = io(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert_eq!(tls_failure(&plain), Some(TlsFailure::Other));
        let refused = ureq::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(tls_failure(&refused), None);
        assert_eq!(tls_failure(&ureq::Error::HostNotFound), None);
    }
}
