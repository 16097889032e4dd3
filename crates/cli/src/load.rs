//! `--load` / `-o type=docker` without `dest`: the image goes to a running
//! Docker engine, as `docker buildx build --load` does. The engine's API is
//! HTTP over its Unix socket (`$DOCKER_HOST=unix://…`, default
//! `/var/run/docker.sock`); kiln writes a `docker load` archive into its
//! scratch space and POSTs it to `/images/load`. A few dozen lines of
//! HTTP/1.1 instead of a Docker client crate: two requests are all it needs.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::failure::Failure;

/// The engine's socket, as `unix://PATH` for messages and the path.
pub fn socket() -> Result<(String, PathBuf), Failure> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => match h.strip_prefix("unix://") {
            Some(p) => Ok((h.clone(), PathBuf::from(p))),
            None => Err(Failure::Usage(format!(
                "--load: DOCKER_HOST={h} is not supported (only unix:// sockets)"
            ))),
        },
        _ => Ok((
            "unix:///var/run/docker.sock".to_owned(),
            PathBuf::from("/var/run/docker.sock"),
        )),
    }
}

fn no_engine(name: &str, why: impl std::fmt::Display) -> Failure {
    Failure::Other(anyhow::anyhow!(
        "--load: no Docker engine at {name} (is dockerd running?): {why}"
    ))
}

/// One request; returns (status, body).
fn request(path: &Path, head: &str, body: Option<&Path>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
    s.write_all(head.as_bytes())?;
    if let Some(file) = body {
        std::io::copy(&mut std::fs::File::open(file)?, &mut s)?;
    }
    s.flush()?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status)?;
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut chunked = false;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        let l = h.to_ascii_lowercase();
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    let mut out = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            if r.read_line(&mut size)? == 0 {
                break;
            }
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n];
            r.read_exact(&mut chunk)?;
            out.extend(chunk);
            let mut crlf = String::new();
            r.read_line(&mut crlf)?;
        }
    } else {
        r.read_to_end(&mut out)?;
    }
    Ok((code, out))
}

/// Checks that an engine answers, before the build starts.
pub fn ping() -> Result<(), Failure> {
    let (name, path) = socket()?;
    let head = "GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n";
    match request(&path, head, None) {
        Ok((200, _)) => Ok(()),
        Ok((code, body)) => Err(no_engine(
            &name,
            format!(
                "/_ping answered {code}: {}",
                String::from_utf8_lossy(&body).trim()
            ),
        )),
        Err(e) => Err(no_engine(&name, e)),
    }
}

/// Loads the `docker load` archive at `archive`; returns the engine's
/// messages ("Loaded image: …").
pub fn load(archive: &Path) -> Result<Vec<String>, Failure> {
    let (name, path) = socket()?;
    let len = std::fs::metadata(archive)
        .map_err(|e| Failure::Other(anyhow::anyhow!("--load: {}: {e}", archive.display())))?
        .len();
    let head = format!(
        "POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    let (code, body) = request(&path, &head, Some(archive)).map_err(|e| no_engine(&name, e))?;
    let text = String::from_utf8_lossy(&body);
    let mut messages = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        if let Some(err) = v["errorDetail"]["message"].as_str().or(v["error"].as_str()) {
            return Err(Failure::Other(anyhow::anyhow!(
                "--load: the Docker engine at {name} refused the image: {err}"
            )));
        }
        if let Some(s) = v["stream"].as_str() {
            messages.push(s.trim().to_owned());
        } else if v.is_null() {
            messages.push(line.trim().to_owned());
        }
    }
    if code != 200 {
        return Err(Failure::Other(anyhow::anyhow!(
            "--load: the Docker engine at {name} answered {code}: {}",
            text.trim()
        )));
    }
    Ok(messages)
}
