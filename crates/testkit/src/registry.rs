//! Real registries for tests: Debian's `docker-registry` (the CNCF
//! distribution server) on a free loopback port, anonymous or with htpasswd
//! basic auth over TLS; and [`FaultProxy`], a small HTTP proxy in front of it
//! that injects the faults a client must survive and counts what it sees.
//!
//! Nothing here reaches the network beyond loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The server binary (Debian package `docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Why the registry tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !Path::new(REGISTRY_BIN).exists() {
        return Some(format!(
            "{REGISTRY_BIN} is missing (apt-get install docker-registry apache2-utils)"
        ));
    }
    for tool in ["htpasswd", "openssl"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "{tool} is missing (apt-get install apache2-utils openssl)"
            ));
        }
    }
    None
}

/// How to run the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// htpasswd basic auth (user, password), served over TLS.
    pub basic_auth: Option<(String, String)>,
}

impl RegistryOptions {
    pub fn anonymous() -> RegistryOptions {
        RegistryOptions::default()
    }

    pub fn basic_auth_tls(user: &str, password: &str) -> RegistryOptions {
        RegistryOptions {
            basic_auth: Some((user.to_owned(), password.to_owned())),
        }
    }
}

/// A running `docker-registry`; killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: String,
    ca: Option<PathBuf>,
    dir: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

impl Registry {
    /// Starts a registry and waits until it answers.
    pub fn start(opts: RegistryOptions) -> Result<Registry, String> {
        if let Some(why) = unavailable() {
            return Err(why);
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port().map_err(|e| e.to_string())?;
        let addr = format!("127.0.0.1:{port}");
        let d = dir.path();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: kiln-test\n",
            d.join("data").display()
        );
        let mut ca = None;
        if let Some((user, password)) = &opts.basic_auth {
            // A CA (in `certs/ca.crt`, the layout skopeo's --cert-dir and
            // Docker's certs.d read) and a server certificate it signed.
            let certs = d.join("certs");
            std::fs::create_dir_all(&certs).map_err(|e| e.to_string())?;
            let ca_cert = certs.join("ca.crt");
            let ca_key = d.join("ca.key");
            let cert = d.join("cert.pem");
            let key = d.join("key.pem");
            let csr = d.join("server.csr");
            let ext = d.join("server.ext");
            std::fs::write(
                &ext,
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
            )
            .map_err(|e| e.to_string())?;
            run(Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=kiln test CA", "-keyout"])
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca_cert))?;
            run(Command::new("openssl")
                .args([
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr))?;
            run(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-set_serial", "2", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(&ca_cert)
                .arg("-CAkey")
                .arg(&ca_key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert))?;
            let line = run(Command::new("htpasswd").args(["-Bbn", user, password]))?;
            std::fs::write(d.join("htpasswd"), line).map_err(|e| e.to_string())?;
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                cert.display(),
                key.display(),
                d.join("htpasswd").display()
            ));
            ca = Some(ca_cert);
        }
        let config_path = d.join("config.yml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(d.join("registry.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("starting {REGISTRY_BIN}: {e}"))?;
        let mut r = Registry {
            child,
            addr,
            ca,
            dir,
        };
        r.wait_ready()?;
        Ok(r)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("docker-registry exited ({st}): {}", self.log()));
            }
            if TcpStream::connect(&self.addr).is_ok() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!("docker-registry did not start: {}", self.log()))
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// The certificate of a TLS registry (its own CA).
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca.as_deref()
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fault the proxy injects into matching requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (and `Retry-After: 0` for 429) without
    /// forwarding.
    Status(u16),
    /// Close the connection without answering.
    Drop,
    /// Forward, but cut the response body in half.
    Truncate,
    /// Forward, but flip the bytes of the response body (same length).
    Corrupt,
    /// Answer `307` to the same path on `http://localhost:PORT/redirected`
    /// (another host name), which serves it and records whether an
    /// `Authorization` header came along.
    Redirect,
    /// Forward a cross-repository mount (`POST …/blobs/uploads/?mount=…`)
    /// without its query, so the registry opens an upload session instead
    /// (`202`), as a registry that refuses the mount does.
    RefuseMount,
}

#[derive(Debug)]
struct Rule {
    method: String,
    path_contains: String,
    fault: Fault,
    remaining: u32,
}

#[derive(Debug, Default)]
struct ProxyState {
    rules: Vec<Rule>,
    /// "METHOD path" of every request, in order.
    requests: Vec<String>,
    /// Requests to the redirect target that carried `Authorization`.
    leaked_auth: u32,
    redirected: u32,
    /// Tokens issued by the bearer emulation, with the scopes asked for.
    token_scopes: Vec<String>,
    token_basic_auth: Vec<bool>,
}

/// An HTTP/1.1 proxy on `127.0.0.1` in front of a plain-HTTP registry.
/// Each request is forwarded on a fresh upstream connection and the answer
/// carries `Connection: close`, so faults never leak between requests.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    state: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
}

const TOKEN: &str = "kiln-test-token";

fn lock(m: &Mutex<ProxyState>) -> std::sync::MutexGuard<'_, ProxyState> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`). With `bearer`, it demands
    /// a Bearer token on `/v2/` requests and issues one from `/token`, as
    /// Docker Hub's auth flow does; the token is not forwarded.
    pub fn start(upstream: &str, bearer: bool) -> Result<FaultProxy, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let upstream = upstream.to_owned();
        let counter = Arc::new(AtomicU64::new(0));
        thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, up, c) = (st.clone(), upstream.clone(), counter.clone());
                thread::spawn(move || {
                    let _ = serve(conn, &up, &st, bearer, port, &c);
                });
            }
        });
        Ok(FaultProxy { port, state, stop })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Injects `fault` into the next `times` requests whose method is
    /// `method` and whose path contains `path_contains`.
    pub fn inject(&self, method: &str, path_contains: &str, fault: Fault, times: u32) {
        lock(&self.state).rules.push(Rule {
            method: method.to_owned(),
            path_contains: path_contains.to_owned(),
            fault,
            remaining: times,
        });
    }

    /// Forgets the faults not injected yet.
    pub fn clear(&self) {
        lock(&self.state).rules.clear();
    }

    /// Injected faults not met yet (0: every fault fired).
    pub fn pending_faults(&self) -> u32 {
        lock(&self.state).rules.iter().map(|r| r.remaining).sum()
    }

    /// How many requests so far had this method and a path containing this.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        let prefix = format!("{method} ");
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.starts_with(&prefix) && r.contains(path_contains))
            .count()
    }

    /// Every request so far, `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }

    /// (requests served by the redirect target, of which carried credentials).
    pub fn redirects(&self) -> (u32, u32) {
        let s = lock(&self.state);
        (s.redirected, s.leaked_auth)
    }

    /// The scopes asked of the token endpoint, and whether each request
    /// carried basic credentials.
    pub fn token_requests(&self) -> Vec<(String, bool)> {
        let s = lock(&self.state);
        s.token_scopes
            .iter()
            .cloned()
            .zip(s.token_basic_auth.iter().copied())
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Header lines up to the blank line.
fn read_headers(r: &mut impl BufRead) -> std::io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(headers)
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let headers = read_headers(r)?;
    Ok(Some(Head {
        method,
        path,
        headers,
    }))
}

/// Reads a request or response body framed by Content-Length or chunked
/// encoding (returned de-chunked).
fn read_body(
    r: &mut impl BufRead,
    head: &Head,
    is_head_response: bool,
) -> std::io::Result<Vec<u8>> {
    if is_head_response {
        return Ok(Vec::new());
    }
    if head
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        let mut out = Vec::new();
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if n == 0 {
                let mut end = String::new();
                r.read_line(&mut end)?;
                return Ok(out);
            }
            let mut chunk = vec![0; n];
            r.read_exact(&mut chunk)?;
            out.extend(chunk);
            let mut crlf = String::new();
            r.read_line(&mut crlf)?;
        }
    }
    let n: usize = head
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; n];
    r.read_exact(&mut body)?;
    Ok(body)
}

fn respond(
    w: &mut impl Write,
    status: u16,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut s = format!(
        "HTTP/1.1 {status} Fault\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    w.write_all(s.as_bytes())?;
    w.write_all(body)?;
    w.flush()
}

fn serve(
    conn: TcpStream,
    upstream: &str,
    state: &Mutex<ProxyState>,
    bearer: bool,
    port: u16,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    let Some(head) = read_head(&mut reader)? else {
        return Ok(());
    };
    let body = read_body(&mut reader, &head, false)?;
    let mut path = head.path.clone();
    let redirected = path.starts_with("/redirected/");
    if redirected {
        path = path.trim_start_matches("/redirected").to_owned();
        let mut s = lock(state);
        s.redirected += 1;
        if head.get("authorization").is_some() {
            s.leaked_auth += 1;
        }
    } else {
        lock(state)
            .requests
            .push(format!("{} {}", head.method, path));
    }
    if path.starts_with("/token") {
        let scopes: Vec<String> = path
            .split(['?', '&'])
            .filter_map(|kv| kv.strip_prefix("scope="))
            .map(|s| {
                s.replace("%3A", ":")
                    .replace("%2C", ",")
                    .replace("%2F", "/")
            })
            .collect();
        {
            let mut s = lock(state);
            s.token_scopes.push(scopes.join(" "));
            s.token_basic_auth.push(
                head.get("authorization")
                    .is_some_and(|a| a.starts_with("Basic ")),
            );
        }
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let body = format!("{{\"token\":\"{TOKEN}-{n}\",\"expires_in\":300}}");
        return respond(
            &mut w,
            200,
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    }
    if bearer && !redirected {
        let ok = head
            .get("authorization")
            .is_some_and(|a| a.starts_with(&format!("Bearer {TOKEN}")));
        if !ok {
            let challenge = format!(
                "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"kiln-fault-proxy\""
            );
            let body =
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
            return respond(&mut w, 401, &[("WWW-Authenticate", challenge)], body);
        }
    }
    let fault = if redirected {
        None
    } else {
        let mut s = lock(state);
        let mut found = None;
        for rule in s.rules.iter_mut() {
            if rule.remaining > 0
                && rule.method == head.method
                && path.contains(&rule.path_contains)
            {
                rule.remaining -= 1;
                found = Some(rule.fault.clone());
                break;
            }
        }
        found
    };
    match fault {
        Some(Fault::Status(code)) => {
            let mut h = Vec::new();
            if code == 429 {
                h.push(("Retry-After", "0".to_owned()));
            }
            return respond(
                &mut w,
                code,
                &h,
                b"{\"errors\":[{\"code\":\"FAULT\",\"message\":\"injected\"}]}",
            );
        }
        Some(Fault::Drop) => {
            let _ = w.shutdown(Shutdown::Both);
            return Ok(());
        }
        Some(Fault::Redirect) => {
            let location = format!("http://localhost:{port}/redirected{path}");
            return respond(&mut w, 307, &[("Location", location)], b"");
        }
        _ => {}
    }
    if fault == Some(Fault::RefuseMount)
        && let Some((p, _)) = path.split_once('?')
    {
        path = p.to_owned();
    }
    // Forward on a fresh connection.
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{} {} HTTP/1.1\r\n", head.method, path);
    for (k, v) in &head.headers {
        let lk = k.to_ascii_lowercase();
        if lk == "connection" || lk == "transfer-encoding" || lk == "content-length" {
            continue;
        }
        if lk == "authorization" && (bearer || redirected) {
            continue;
        }
        if lk == "host" {
            req.push_str(&format!("Host: {upstream}\r\n"));
            continue;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    up.write_all(req.as_bytes())?;
    up.write_all(&body)?;
    let mut ur = BufReader::new(up);
    let mut status_line = String::new();
    ur.read_line(&mut status_line)?;
    let Some(mut rhead) = read_head_after_status(&mut ur)? else {
        return Ok(());
    };
    let mut rbody = read_body(&mut ur, &rhead, head.method == "HEAD")?;
    // Upstream's absolute Locations point past the proxy: rewrite them.
    for (k, v) in rhead.headers.iter_mut() {
        if k.eq_ignore_ascii_case("location") {
            *v = v.replace(
                &format!("http://{upstream}"),
                &format!("http://127.0.0.1:{port}"),
            );
        }
    }
    let declared = rhead.get("content-length").map(str::to_owned);
    match fault {
        Some(Fault::Corrupt) => {
            for b in rbody.iter_mut() {
                *b = !*b;
            }
        }
        Some(Fault::Truncate) => {
            let full = rbody.len();
            rbody.truncate(full / 2);
            // Declare the full length, then hang up early.
            let mut s = status_line.clone();
            for (k, v) in &rhead.headers {
                let lk = k.to_ascii_lowercase();
                if lk == "connection" || lk == "transfer-encoding" || lk == "content-length" {
                    continue;
                }
                s.push_str(&format!("{k}: {v}\r\n"));
            }
            s.push_str(&format!(
                "Content-Length: {full}\r\nConnection: close\r\n\r\n"
            ));
            w.write_all(s.as_bytes())?;
            w.write_all(&rbody)?;
            let _ = w.shutdown(Shutdown::Both);
            return Ok(());
        }
        _ => {}
    }
    let mut s = status_line;
    for (k, v) in &rhead.headers {
        let lk = k.to_ascii_lowercase();
        if lk == "connection" || lk == "transfer-encoding" || lk == "content-length" {
            continue;
        }
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    let len = if head.method == "HEAD" {
        declared.unwrap_or_else(|| "0".to_owned())
    } else {
        rbody.len().to_string()
    };
    s.push_str(&format!(
        "Content-Length: {len}\r\nConnection: close\r\n\r\n"
    ));
    w.write_all(s.as_bytes())?;
    w.write_all(&rbody)?;
    w.flush()?;
    let _ = w.shutdown(Shutdown::Write);
    Ok(())
}

fn read_head_after_status(r: &mut impl BufRead) -> std::io::Result<Option<Head>> {
    let headers = read_headers(r)?;
    Ok(Some(Head {
        method: String::new(),
        path: String::new(),
        headers,
    }))
}
