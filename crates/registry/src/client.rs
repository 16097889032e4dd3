//! The distribution protocol over HTTP: one blocking [`Client`] per kiln
//! invocation, shared by the threads that pull or push blobs in parallel.
//!
//! Every request goes through [`Client::send`], which owns the parts that
//! are easy to get wrong one call at a time:
//!
//! * the auth dance: a 401 carries a `WWW-Authenticate` challenge; Bearer
//!   challenges are answered with a token from the realm (anonymous, basic
//!   credentials, or an OAuth2 refresh token), cached per host and scope;
//!   Basic challenges with the credentials;
//! * retries with exponential backoff on 5xx, 429 (honouring `Retry-After`)
//!   and broken connections, for idempotent requests; uploads restart from
//!   a new session instead;
//! * redirects, followed by hand so that the `Authorization` header is never
//!   sent to another host (blob downloads are commonly redirected to storage);
//! * plain HTTP only for loopback and explicitly insecure registries, tried
//!   after HTTPS as Docker does.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_llb::{Digest, Platform};
use kiln_oci::{ContentStore, Descriptor, Index, media};
use kiln_reference::Reference;
use sha2::{Digest as _, Sha256};
use ureq::http::{self, Response};
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::{Agent, SendBody};

use crate::auth::{Auth, Credential};
use crate::config::RegistryConfig;
use crate::error::RegistryError;
use crate::platform::select;
use crate::progress::{CountingReader, Direction, ProgressSink, Transfer, TransferState};

/// The manifest media types kiln asks for.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest accepted (the distribution server's own limit is 4 MiB).
const MANIFEST_LIMIT: u64 = 16 << 20;

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// First backoff; doubled each time up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
        }
    }
}

/// Tunables of a client (tests shrink them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    pub retry: RetryPolicy,
    /// Blobs larger than this are uploaded in chunks (PATCH), smaller ones in
    /// one PUT.
    pub chunk_threshold: u64,
    /// Size of each PATCH.
    pub chunk_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            retry: RetryPolicy::default(),
            chunk_threshold: 64 << 20,
            chunk_size: 32 << 20,
        }
    }
}

/// A manifest or index as fetched, bytes untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// What a name resolved to for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The index (manifest list) the name pointed at, if it did.
    pub index: Option<FetchedManifest>,
    /// The image manifest for the platform.
    pub manifest: FetchedManifest,
}

/// How a blob got to the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushedBlob {
    /// It was there already.
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// A request body that can be produced again for a retry.
enum Body<'a> {
    Empty,
    Bytes(&'a [u8]),
    Reader(Box<dyn Read + Send>, u64),
}

/// Who a request is for: the registry host and the repository (for errors
/// and token scopes).
#[derive(Debug, Clone)]
struct Target<'a> {
    host: &'a str,
    repo: &'a str,
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: String },
}

struct Inner {
    config: RegistryConfig,
    auth: Auth,
    options: ClientOptions,
    /// Loaded on first use: a build whose bases are all local never pays
    /// for reading the system's certificates.
    system_roots: std::sync::OnceLock<Vec<Certificate<'static>>>,
    agents: Mutex<HashMap<String, Agent>>,
    /// Hosts found to speak plain HTTP.
    plain: Mutex<HashMap<String, bool>>,
    challenges: Mutex<HashMap<String, Challenge>>,
    /// `Authorization` values per (host, scope).
    tokens: Mutex<HashMap<(String, String), String>>,
}

/// A registry client. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Where byte progress of blob transfers goes ([`Client::with_progress`]).
    progress: Option<ProgressSink>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .field("auth", &self.inner.auth.path())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn header(resp: &Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn sha256(bytes: &[u8]) -> Digest {
    Digest::from_bytes(Sha256::digest(bytes).into())
}

/// The `message` of a registry's JSON error body, or the body itself.
fn error_detail(resp: &mut Response<ureq::Body>) -> String {
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_string()
        .unwrap_or_default();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
        && let Some(errors) = v["errors"].as_array()
    {
        let msgs: Vec<String> = errors
            .iter()
            .map(|e| {
                let code = e["code"].as_str().unwrap_or_default();
                let msg = e["message"].as_str().unwrap_or_default();
                if code.is_empty() {
                    msg.to_owned()
                } else {
                    format!("{code}: {msg}")
                }
            })
            .collect();
        if !msgs.is_empty() {
            return msgs.join("; ");
        }
    }
    let t = body.trim();
    if t.is_empty() {
        resp.status()
            .canonical_reason()
            .unwrap_or("no details")
            .to_owned()
    } else {
        t.chars().take(300).collect()
    }
}

/// Parses `Bearer realm="…",service="…"` / `Basic realm="…"`.
fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service").unwrap_or_default(),
    })
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The host (`host[:port]`) of an absolute URL.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

fn is_retryable(status: u16) -> bool {
    status == 429 || (500..600).contains(&status) && status != 501 && status != 505
}

fn retry_after(resp: &Response<ureq::Body>) -> Option<Duration> {
    header(resp, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(30)))
}

impl Client {
    /// A client with the default retries and upload sizes.
    pub fn new(config: RegistryConfig, auth: Auth) -> Result<Client, RegistryError> {
        Client::with_options(config, auth, ClientOptions::default())
    }

    pub fn with_options(
        config: RegistryConfig,
        auth: Auth,
        options: ClientOptions,
    ) -> Result<Client, RegistryError> {
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                auth,
                options,
                system_roots: std::sync::OnceLock::new(),
                agents: Mutex::new(HashMap::new()),
                plain: Mutex::new(HashMap::new()),
                challenges: Mutex::new(HashMap::new()),
                tokens: Mutex::new(HashMap::new()),
            }),
            progress: None,
        })
    }

    /// This client (sharing connections and tokens), reporting the bytes of
    /// every blob it downloads or uploads to `sink`.
    pub fn with_progress(&self, sink: ProgressSink) -> Client {
        Client {
            inner: self.inner.clone(),
            progress: Some(sink),
        }
    }

    /// The sink given to [`Client::with_progress`], if any.
    pub fn progress(&self) -> Option<&ProgressSink> {
        self.progress.as_ref()
    }

    fn report(&self, desc: &Descriptor, direction: Direction, current: u64, state: TransferState) {
        if let Some(sink) = &self.progress {
            sink(&Transfer {
                digest: desc.digest,
                direction,
                total: desc.size,
                current,
                state,
            });
        }
    }

    fn agent(&self, host: &str) -> Result<Agent, RegistryError> {
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

    fn base_url(&self, host: &str) -> String {
        let plain = lock(&self.inner.plain).get(host).copied().unwrap_or(false);
        format!("{}://{host}", if plain { "http" } else { "https" })
    }

    /// The `Authorization` value to send to `host` for `scope`, if known.
    fn authorization(&self, host: &str, scope: &str) -> Result<Option<String>, RegistryError> {
        let challenge = lock(&self.inner.challenges).get(host).cloned();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.basic(host)?),
            Some(Challenge::Bearer { .. }) => Ok(lock(&self.inner.tokens)
                .get(&(host.to_owned(), scope.to_owned()))
                .cloned()),
        }
    }

    fn basic(&self, host: &str) -> Result<Option<String>, RegistryError> {
        use base64::Engine as _;
        Ok(match self.inner.auth.credential(host)? {
            Some(Credential::Basic { username, password }) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            )),
            _ => None,
        })
    }

    /// Answers a challenge: gets a token (Bearer) or checks there are
    /// credentials (Basic).
    fn authenticate(
        &self,
        t: &Target<'_>,
        scope: &str,
        challenge: Challenge,
    ) -> Result<(), RegistryError> {
        lock(&self.inner.challenges).insert(t.host.to_owned(), challenge.clone());
        let Challenge::Bearer { realm, service } = challenge else {
            return Ok(());
        };
        let cred = self.inner.auth.credential(t.host)?;
        let mut query = vec![format!("service={}", url_encode(&service))];
        for s in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(format!("scope={}", url_encode(s)));
        }
        let realm_host = url_host(&realm).to_owned();
        let agent = self.agent(&realm_host)?;
        let unauthorized = |detail: String| RegistryError::Unauthorized {
            host: t.host.to_owned(),
            repository: t.repo.to_owned(),
            detail,
        };
        let mut resp = match &cred {
            Some(Credential::IdentityToken { token, .. }) => {
                let mut form = vec![
                    ("grant_type".to_owned(), "refresh_token".to_owned()),
                    ("refresh_token".to_owned(), token.clone()),
                    ("service".to_owned(), service.clone()),
                    ("client_id".to_owned(), "kiln".to_owned()),
                ];
                if !scope.is_empty() {
                    form.push(("scope".to_owned(), scope.to_owned()));
                }
                agent.post(&realm).send_form(form)
            }
            _ => {
                let url = format!(
                    "{realm}{}{}",
                    if realm.contains('?') { "&" } else { "?" },
                    query.join("&")
                );
                let mut req = agent.get(&url);
                if let Some(Credential::Basic { username, .. }) = &cred {
                    req = req.query("account", username);
                }
                if let Some(b) = self.basic(t.host)? {
                    req = req.header("Authorization", &b);
                }
                req.call()
            }
        }
        .map_err(|e| self.transport_error(&realm_host, &e))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(unauthorized(format!(
                "the token service {realm} refused the credentials: {}",
                error_detail(&mut resp)
            )));
        }
        if status != 200 {
            return Err(RegistryError::Status {
                host: realm_host,
                method: "GET".to_owned(),
                path: realm.clone(),
                status,
                detail: error_detail(&mut resp),
            });
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| self.transport_error(&realm_host, &e))?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
                host: realm_host.clone(),
                detail: format!("token response: {e}"),
            })?;
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol {
                host: realm_host.clone(),
                detail: "token response without a token".to_owned(),
            })?;
        lock(&self.inner.tokens).insert(
            (t.host.to_owned(), scope.to_owned()),
            format!("Bearer {token}"),
        );
        Ok(())
    }

    fn transport_error(&self, host: &str, e: &ureq::Error) -> RegistryError {
        let detail = e.to_string();
        let lower = detail.to_ascii_lowercase();
        let hint = if lower.contains("certificate")
            || lower.contains("tls")
            || lower.contains("rustls")
            || lower.contains("handshake")
        {
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
    fn send(
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
                        && !e.to_string().to_ascii_lowercase().contains("certificate")
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
    fn status_error(
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

    fn fetch_manifest(
        &self,
        r: &Reference,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let host = registry_host(r.domain());
        let t = Target {
            host: &host,
            repo: r.path(),
        };
        let scope = format!("repository:{}:pull", r.path());
        let path = format!("/v2/{}/manifests/{reference}", r.path());
        let mut resp = self.send(
            &t,
            &scope,
            "GET",
            &path,
            &[("Accept", MANIFEST_ACCEPT.to_owned())],
            Body::Empty,
            true,
        )?;
        if resp.status().as_u16() != 200 {
            return Err(self.status_error(
                &t,
                "GET",
                &path,
                &format!("manifest {}", r.familiar()),
                resp,
            ));
        }
        let content_type = header(&resp, "content-type").unwrap_or_default();
        let header_digest = header(&resp, "docker-content-digest");
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MANIFEST_LIMIT)
            .read_to_vec()
            .map_err(|e| self.transport_error(&host, &e))?;
        let digest = sha256(&bytes);
        let expected = if reference.contains(':') {
            Some(reference.to_owned())
        } else {
            header_digest
        };
        if let Some(exp) = expected
            && exp != digest.to_string()
        {
            return Err(RegistryError::DigestMismatch {
                host: host.clone(),
                repository: r.path().to_owned(),
                what: format!("manifest {}", r.familiar()),
                expected: exp,
                actual: digest.to_string(),
            });
        }
        let body_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_owned));
        let media_type = match body_type {
            Some(t) if !t.is_empty() => t,
            _ => content_type
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        Ok(FetchedManifest {
            media_type,
            digest,
            bytes,
        })
    }

    /// The manifest or index `r` names (by digest if it has one, else by
    /// tag, `latest` by default), verified against its digest.
    pub fn get_manifest(&self, r: &Reference) -> Result<FetchedManifest, RegistryError> {
        let reference = match (r.digest(), r.tag()) {
            (Some(d), _) => d.to_owned(),
            (None, Some(t)) => t.to_owned(),
            (None, None) => "latest".to_owned(),
        };
        self.fetch_manifest(r, &reference)
    }

    /// The image manifest of `r` for `platform`, through its index if `r`
    /// names one.
    pub fn resolve(&self, r: &Reference, platform: &Platform) -> Result<Resolved, RegistryError> {
        let top = self.get_manifest(r)?;
        if !media::is_index(&top.media_type) {
            return Ok(Resolved {
                index: None,
                manifest: top,
            });
        }
        let index: Index =
            serde_json::from_slice(&top.bytes).map_err(|e| RegistryError::Protocol {
                host: r.domain().to_owned(),
                detail: format!("{}: invalid index: {e}", r.familiar()),
            })?;
        let chosen = select(&index.manifests, platform).ok_or_else(|| {
            let available: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .filter(|p| p.os != "unknown")
                .map(Platform::format)
                .collect();
            RegistryError::NoPlatform {
                reference: r.familiar(),
                wanted: platform.format(),
                available: if available.is_empty() {
                    "no platforms".to_owned()
                } else {
                    available.join(", ")
                },
            }
        })?;
        let manifest = self.fetch_manifest(r, &chosen.digest.to_string())?;
        Ok(Resolved {
            index: Some(top),
            manifest,
        })
    }

    /// The manifest or index `reference` (a tag or a digest) of repository
    /// `repo` (whose own tag or digest is ignored), verified against its
    /// digest when fetched by digest.
    pub fn get_manifest_in(
        &self,
        repo: &Reference,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        self.fetch_manifest(repo, reference)
    }

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

    /// The size of blob `digest` in `repo`'s repository, if it is there.
    pub fn head_blob(
        &self,
        repo: &Reference,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        self.head_blob_scoped(repo, digest, &format!("repository:{}:pull", repo.path()))
    }

    fn head_blob_scoped(
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

    fn upload(
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

    fn location(
        &self,
        t: &Target<'_>,
        resp: &Response<ureq::Body>,
    ) -> Result<String, RegistryError> {
        header(resp, "location").ok_or_else(|| RegistryError::Protocol {
            host: t.host.to_owned(),
            detail: "upload response without a Location".to_owned(),
        })
    }

    /// Stores a manifest or index under `tag_or_digest`; returns its digest,
    /// checked against what the registry says.
    pub fn put_manifest(
        &self,
        repo: &Reference,
        tag_or_digest: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let host = registry_host(repo.domain());
        let t = Target {
            host: &host,
            repo: repo.path(),
        };
        let scope = format!("repository:{}:pull,push", repo.path());
        let path = format!("/v2/{}/manifests/{tag_or_digest}", repo.path());
        let resp = self.send(
            &t,
            &scope,
            "PUT",
            &path,
            &[("Content-Type", media_type.to_owned())],
            Body::Bytes(bytes),
            true,
        )?;
        if resp.status().as_u16() != 201 {
            return Err(self.status_error(&t, "PUT", &path, "manifest", resp));
        }
        let digest = sha256(bytes);
        if let Some(d) = header(&resp, "docker-content-digest")
            && d != digest.to_string()
        {
            return Err(RegistryError::DigestMismatch {
                host,
                repository: repo.path().to_owned(),
                what: format!("manifest {tag_or_digest}"),
                expected: digest.to_string(),
                actual: d,
            });
        }
        Ok(digest)
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

/// Docker Hub's API lives at `registry-1.docker.io`.
fn registry_host(domain: &str) -> String {
    match domain {
        "docker.io" | "index.docker.io" => "registry-1.docker.io".to_owned(),
        d => d.to_owned(),
    }
}

/// `loc` (absolute, or relative to `base`'s origin) as an absolute URL.
fn absolute(base: &str, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        return loc.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let host = rest.split(['/', '?']).next().unwrap_or(rest);
    if loc.starts_with('/') {
        format!("{scheme}://{host}{loc}")
    } else {
        format!("{scheme}://{host}/{loc}")
    }
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", url_encode(value))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: "registry.docker.io".into()
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="basic-realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            absolute(
                "http://127.0.0.1:5000/v2/x",
                "/v2/x/blobs/uploads/u?_state=a"
            ),
            "http://127.0.0.1:5000/v2/x/blobs/uploads/u?_state=a"
        );
        assert_eq!(absolute("https://a/b", "https://c/d"), "https://c/d");
        assert_eq!(
            with_query("http://a/u?s=1", "digest", "sha256:ab"),
            "http://a/u?s=1&digest=sha256%3Aab"
        );
        assert_eq!(
            url_host("https://auth.example:8443/token?x"),
            "auth.example:8443"
        );
        assert_eq!(registry_host("docker.io"), "registry-1.docker.io");
    }
}
