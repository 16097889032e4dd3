//! Credentials, from and to the files Docker and Podman use.
//!
//! Read order (the first file that exists wins): `$REGISTRY_AUTH_FILE`,
//! `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`. An entry in
//! `auths` has `auth` (base64 of `user:password`), or `username` and
//! `password`, and may have `identitytoken` (an OAuth2 refresh token).
//! `credHelpers` (per host) and `credsStore` (default) name a
//! `docker-credential-<name>` program spoken to with Docker's protocol (`get`,
//! `store`, `erase`; JSON on stdin/stdout). Docker Hub is keyed
//! `https://index.docker.io/v1/`, other registries `host[:port]`; keys written
//! as URLs (`https://host/v1/`) are found too.
//!
//! `login`/`logout` rewrite the file atomically and keep every key they do not
//! know, so kiln and docker can share it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::config::normalize_host;
use crate::error::RegistryError;

/// Docker Hub's key in `auths` and for credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// User name and password (or a personal access token).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token from an earlier login.
    IdentityToken { username: String, token: String },
}

impl std::fmt::Debug for Credential {
    // Never print a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::IdentityToken { username, .. } => {
                write!(f, "IdentityToken({username}, ***)")
            }
        }
    }
}

/// The credential sources of one kiln invocation.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// The file read (and written by `login`), if any.
    path: Option<PathBuf>,
    doc: Map<String, Value>,
    /// Credentials given directly (`kiln login` checks them before storing).
    given: BTreeMap<String, Credential>,
}

fn config_err(path: &Path, detail: impl std::fmt::Display) -> RegistryError {
    RegistryError::Config {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

/// The `auths` key / helper server URL of a registry host.
fn key_of(host: &str) -> String {
    if host == "docker.io" {
        DOCKER_HUB_KEY.to_owned()
    } else {
        host.to_owned()
    }
}

/// The registry host an `auths` key names.
fn host_of_key(key: &str) -> String {
    let h = normalize_host(key);
    match h.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_owned(),
        _ => h,
    }
}

impl Auth {
    /// No credentials at all.
    pub fn anonymous() -> Auth {
        Auth::default()
    }

    /// The credentials file the environment names (see the module docs).
    pub fn from_env() -> Result<Auth, RegistryError> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let candidates: Vec<PathBuf> = [
            env("REGISTRY_AUTH_FILE").map(PathBuf::from),
            env("DOCKER_CONFIG").map(|d| PathBuf::from(d).join("config.json")),
            env("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
        ]
        .into_iter()
        .flatten()
        .collect();
        for c in &candidates {
            if c.exists() {
                return Auth::from_file(c);
            }
        }
        // Nothing yet: `login` writes the first candidate.
        Ok(Auth {
            path: candidates.into_iter().next(),
            ..Auth::default()
        })
    }

    /// Credentials from `path` (which need not exist yet).
    pub fn from_file(path: &Path) -> Result<Auth, RegistryError> {
        let doc = match fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(config_err(path, "not a JSON object")),
                Err(e) => return Err(config_err(path, format!("invalid JSON: {e}"))),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(e) => {
                return Err(RegistryError::Io {
                    what: format!("reading {}", path.display()),
                    source: e,
                });
            }
        };
        Ok(Auth {
            path: Some(path.to_path_buf()),
            doc,
            given: BTreeMap::new(),
        })
    }

    /// The file credentials are read from and stored in.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The same sources, with `user`/`password` for `host` taking precedence.
    pub fn with_credentials(&self, host: &str, user: &str, password: &str) -> Auth {
        let mut a = self.clone();
        a.given.insert(
            host_of_key(host),
            Credential::Basic {
                username: user.to_owned(),
                password: password.to_owned(),
            },
        );
        a
    }

    fn helper_for(&self, host: &str) -> Option<String> {
        if let Some(Value::Object(h)) = self.doc.get("credHelpers") {
            for (k, v) in h {
                if host_of_key(k) == host
                    && let Some(name) = v.as_str()
                {
                    return Some(name.to_owned());
                }
            }
        }
        self.doc
            .get("credsStore")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// The credentials for registry `host` (`docker.io` for Docker Hub).
    pub fn credential(&self, host: &str) -> Result<Option<Credential>, RegistryError> {
        let host = host_of_key(host);
        if let Some(c) = self.given.get(&host) {
            return Ok(Some(c.clone()));
        }
        if let Some(helper) = self.helper_for(&host) {
            return helper_get(&helper, &host);
        }
        let path = self.path.clone().unwrap_or_default();
        let Some(Value::Object(auths)) = self.doc.get("auths") else {
            return Ok(None);
        };
        for (k, entry) in auths {
            if host_of_key(k) != host {
                continue;
            }
            return parse_entry(entry).map_err(|d| config_err(&path, format!("auths.{k}: {d}")));
        }
        Ok(None)
    }

    /// Stores credentials for `host`: with its credential helper if one is
    /// configured, else in the file. Returns where they went.
    pub fn login(&self, host: &str, user: &str, password: &str) -> Result<String, RegistryError> {
        let host = host_of_key(host);
        if let Some(helper) = self.helper_for(&host) {
            let body = serde_json::json!({
                "ServerURL": key_of(&host),
                "Username": user,
                "Secret": password,
            });
            run_helper(&helper, "store", &host, body.to_string().as_bytes())?;
            return Ok(format!("docker-credential-{helper}"));
        }
        let path = self.path.clone().ok_or_else(|| RegistryError::Config {
            path: "~/.docker/config.json".to_owned(),
            detail: "no credentials file: set DOCKER_CONFIG or HOME".to_owned(),
        })?;
        let mut doc = self.doc.clone();
        let auths = doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(a) = auths {
            a.retain(|k, _| host_of_key(k) != host);
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            a.insert(key_of(&host), serde_json::json!({ "auth": token }));
        }
        write_file(&path, &doc)?;
        Ok(path.display().to_string())
    }

    /// Removes the credentials of `host`. Returns whether there were any.
    pub fn logout(&self, host: &str) -> Result<bool, RegistryError> {
        let host = host_of_key(host);
        let mut removed = false;
        if let Some(helper) = self.helper_for(&host) {
            removed = run_helper(&helper, "erase", &host, key_of(&host).as_bytes()).is_ok();
        }
        let Some(path) = self.path.clone() else {
            return Ok(removed);
        };
        let mut doc = self.doc.clone();
        if let Some(Value::Object(a)) = doc.get_mut("auths") {
            let before = a.len();
            a.retain(|k, _| host_of_key(k) != host);
            if a.len() != before {
                removed = true;
                write_file(&path, &doc)?;
            }
        }
        Ok(removed)
    }
}

fn parse_entry(entry: &Value) -> Result<Option<Credential>, String> {
    let field = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let (mut user, mut pass) = (
        field("username").map(str::to_owned),
        field("password").map(str::to_owned),
    );
    if let Some(a) = field("auth") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|e| format!("auth is not base64: {e}"))?;
        let s = String::from_utf8(raw).map_err(|_| "auth is not UTF-8".to_owned())?;
        let (u, p) = s
            .split_once(':')
            .ok_or_else(|| "auth is not user:password".to_owned())?;
        user = Some(u.to_owned());
        pass = Some(p.to_owned());
    }
    if let Some(token) = field("identitytoken") {
        return Ok(Some(Credential::IdentityToken {
            username: user.unwrap_or_default(),
            token: token.to_owned(),
        }));
    }
    Ok(match (user, pass) {
        (Some(username), Some(password)) => Some(Credential::Basic { username, password }),
        _ => None,
    })
}

fn write_file(path: &Path, doc: &Map<String, Value>) -> Result<(), RegistryError> {
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| RegistryError::Io { what, source }
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("creating the directory of"))?;
    let mut body = serde_json::to_vec_pretty(doc).map_err(|e| config_err(path, e))?;
    body.push(b'\n');
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("creating a file beside"))?;
    tmp.write_all(&body).map_err(io("writing"))?;
    tmp.as_file().sync_all().map_err(io("syncing"))?;
    // Permissions: 0600, as docker writes it (tempfile's default).
    tmp.persist(path)
        .map_err(|e| io("renaming into")(e.error))?;
    Ok(())
}

fn run_helper(
    helper: &str,
    action: &str,
    host: &str,
    input: &[u8],
) -> Result<Vec<u8>, RegistryError> {
    let err = |detail: String| RegistryError::Helper {
        helper: helper.to_owned(),
        action: action.to_owned(),
        host: host.to_owned(),
        detail,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| err(format!("writing to it: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("waiting for it: {e}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).trim().to_owned()
            + String::from_utf8_lossy(&out.stderr).trim();
        return Err(err(msg));
    }
    Ok(out.stdout)
}

fn helper_get(helper: &str, host: &str) -> Result<Option<Credential>, RegistryError> {
    let out = match run_helper(helper, "get", host, key_of(host).as_bytes()) {
        Ok(o) => o,
        // Docker's helpers say this when they have nothing for the host.
        Err(RegistryError::Helper { detail, .. }) if detail.contains("credentials not found") => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let v: Value = serde_json::from_slice(&out).map_err(|e| RegistryError::Helper {
        helper: helper.to_owned(),
        action: "get".to_owned(),
        host: host.to_owned(),
        detail: format!("invalid JSON: {e}"),
    })?;
    let user = v["Username"].as_str().unwrap_or_default().to_owned();
    let secret = v["Secret"].as_str().unwrap_or_default().to_owned();
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if user == "<token>" {
        Credential::IdentityToken {
            username: user,
            token: secret,
        }
    } else {
        Credential::Basic {
            username: user,
            password: secret,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let e = serde_json::json!({"auth": "dXNlcjpwYTpzcw=="});
        assert_eq!(
            parse_entry(&e),
            Ok(Some(Credential::Basic {
                username: "user".into(),
                password: "pa:ss".into()
            }))
        );
        let e = serde_json::json!({"auth": "dXNlcjpwYXNz", "identitytoken": "tok"});
        assert_eq!(
            parse_entry(&e),
            Ok(Some(Credential::IdentityToken {
                username: "user".into(),
                token: "tok".into()
            }))
        );
        assert!(parse_entry(&serde_json::json!({"auth": "!!"})).is_err());
        assert_eq!(parse_entry(&serde_json::json!({})), Ok(None));
    }

    #[test]
    fn keys() {
        assert_eq!(host_of_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(host_of_key("https://r.example:5000/v2/"), "r.example:5000");
        assert_eq!(key_of("docker.io"), DOCKER_HUB_KEY);
    }

    #[test]
    fn login_keeps_other_keys_and_logout_removes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("config.json");
        fs::write(
            &path,
            r#"{"auths":{"other:1":{"auth":"YTpi"}},"psFormat":"table"}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let a = Auth::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        a.login("r:5000", "u", "p")
            .unwrap_or_else(|e| panic!("{e}"));
        let a = Auth::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            a.credential("r:5000").ok().flatten(),
            Some(Credential::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert!(a.credential("other:1").ok().flatten().is_some());
        let text = fs::read_to_string(&path).unwrap_or_default();
        assert!(text.contains("psFormat"));
        assert_eq!(a.logout("r:5000").ok(), Some(true));
        let a = Auth::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.credential("r:5000").ok().flatten(), None);
        assert_eq!(a.logout("r:5000").ok(), Some(false));
    }
}
