//! Which registries may be reached over plain HTTP, and which CA certificates
//! vouch for which registry.
//!
//! kiln's own file (TOML; `--registry-config`, else `$KILN_CONFIG`, else
//! `/etc/kiln/config.toml`; a missing file means defaults):
//!
//! ```toml
//! [registry."registry.example:5000"]
//! insecure = true             # plain HTTP allowed (tried after HTTPS)
//! ca = "/etc/kiln/ca/example.pem"
//! ```
//!
//! Docker's convention is honoured too: every `*.crt` file in
//! `/etc/docker/certs.d/<host[:port]>/` is a CA for that registry. Loopback
//! registries (`localhost`, `127.0.0.0/8`, `::1`) are insecure by default, as
//! with Docker.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::RegistryError;

/// Where `load(None)` looks when `$KILN_CONFIG` is unset.
pub const DEFAULT_CONFIG: &str = "/etc/kiln/config.toml";

/// Docker's per-registry certificate directories.
pub const DOCKER_CERTS_DIR: &str = "/etc/docker/certs.d";

/// The settings of one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Plain HTTP is allowed (after HTTPS fails).
    #[serde(default)]
    pub insecure: bool,
    /// A PEM file of CA certificates trusted for this registry (besides the
    /// system's).
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    registry: BTreeMap<String, HostConfig>,
}

/// The registry settings of one kiln invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    pub hosts: BTreeMap<String, HostConfig>,
    /// Directories of `<host>/*.crt` CA files (Docker's `certs.d`).
    pub certs_dirs: Vec<PathBuf>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            hosts: BTreeMap::new(),
            certs_dirs: vec![PathBuf::from(DOCKER_CERTS_DIR)],
        }
    }
}

impl RegistryConfig {
    /// Reads `path`, or `$KILN_CONFIG`, or [`DEFAULT_CONFIG`]. A file that
    /// does not exist gives the defaults; one that does not parse is an error
    /// naming it.
    pub fn load(path: Option<&Path>) -> Result<RegistryConfig, RegistryError> {
        let explicit = path.is_some();
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => std::env::var_os("KILN_CONFIG")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_CONFIG), PathBuf::from),
        };
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(RegistryConfig::default());
            }
            Err(e) => {
                return Err(RegistryError::Io {
                    what: format!("reading {}", path.display()),
                    source: e,
                });
            }
        };
        RegistryConfig::parse(&text, &path)
    }

    /// Parses the text of a configuration file (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<RegistryConfig, RegistryError> {
        let file: File = toml::from_str(text).map_err(|e| RegistryError::Config {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let mut config = RegistryConfig::default();
        for (host, mut h) in file.registry {
            if let Some(ca) = &h.ca
                && ca.is_relative()
                && let Some(dir) = path.parent()
            {
                h.ca = Some(dir.join(ca));
            }
            config.hosts.insert(normalize_host(&host), h);
        }
        Ok(config)
    }

    /// Allows plain HTTP for `host` (`--insecure-registry`).
    pub fn add_insecure(&mut self, host: &str) {
        self.hosts.entry(normalize_host(host)).or_default().insecure = true;
    }

    /// Whether plain HTTP may be used for `host`.
    pub fn is_insecure(&self, host: &str) -> bool {
        is_loopback(host) || self.hosts.get(host).is_some_and(|h| h.insecure)
    }

    /// The CA files trusted for `host`: the configured one and Docker's
    /// `certs.d/<host>/*.crt`.
    pub fn ca_files(&self, host: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .hosts
            .get(host)
            .and_then(|h| h.ca.clone())
            .into_iter()
            .collect();
        for dir in &self.certs_dirs {
            let Ok(entries) = fs::read_dir(dir.join(host)) else {
                continue;
            };
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            found.sort();
            out.extend(found);
        }
        out
    }
}

/// `https://host:port/` and `host:port` name the same registry.
pub fn normalize_host(host: &str) -> String {
    let h = host
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    h.split('/').next().unwrap_or(h).to_owned()
}

/// Docker allows plain HTTP to these without configuration.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    if name == "localhost" || name == "::1" {
        return true;
    }
    name.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1:5000", "localhost.example:5000"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn parse_file() {
        let c = RegistryConfig::parse(
            "[registry.\"https://r.example:5000\"]\ninsecure = true\nca = \"ca.pem\"\n",
            Path::new("/etc/kiln/config.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.is_insecure("r.example:5000"));
        assert_eq!(
            c.ca_files("r.example:5000"),
            vec![PathBuf::from("/etc/kiln/ca.pem")]
        );
        let e = RegistryConfig::parse("[registry.x]\ninsecur = true\n", Path::new("k.toml"));
        assert!(e.is_err_and(|e| e.to_string().starts_with("k.toml: ")));
    }
}
