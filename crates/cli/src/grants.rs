//! `kiln build --secret`, `--ssh` and `--allow`: what the build grants its
//! RUN steps, parsed as buildx parses them and resolved (files read,
//! environment variables looked up) before the build starts.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt as _;
use std::path::PathBuf;

use kiln_worker::{ExecGrants, Secret};

use crate::failure::Failure;

/// BuildKit's limit on the size of one secret.
const MAX_SECRET_SIZE: u64 = 500 * 1024;

/// One `--secret` value, as buildx reads it.
#[derive(Debug, Default, PartialEq, Eq)]
struct SecretSpec {
    id: String,
    file: String,
    env: String,
}

fn usage(flag: &str, value: &str, msg: impl std::fmt::Display) -> Failure {
    Failure::Usage(format!("{flag} {value:?}: {msg}"))
}

/// `id=ID[,src=FILE|,env=VAR][,type=file|env]` (buildx's `parseSecret`).
fn parse_secret(value: &str) -> Result<SecretSpec, Failure> {
    let mut s = SecretSpec::default();
    let mut typ = "";
    for field in value.split(',') {
        let Some((key, v)) = field.split_once('=') else {
            return Err(usage(
                "--secret",
                value,
                format!("invalid field {field:?}: must be a key=value pair"),
            ));
        };
        match key.to_ascii_lowercase().as_str() {
            "type" => {
                if v != "file" && v != "env" {
                    return Err(usage(
                        "--secret",
                        value,
                        format!("unsupported secret type {v:?}"),
                    ));
                }
                typ = if v == "file" { "file" } else { "env" };
            }
            "id" => s.id = v.to_owned(),
            "source" | "src" => s.file = v.to_owned(),
            "env" => s.env = v.to_owned(),
            other => {
                return Err(usage(
                    "--secret",
                    value,
                    format!("unexpected key {other:?}"),
                ));
            }
        }
    }
    if typ == "env" && s.env.is_empty() {
        s.env = std::mem::take(&mut s.file);
    }
    if s.id.is_empty() {
        // docker 20.10's wording; it does not default the id.
        return Err(usage("--secret", value, "secret missing ID"));
    }
    Ok(s)
}

/// The secrets of `--secret` flags: files are read now; an environment
/// variable that is not set leaves the secret missing, as BuildKit does
/// (an error only for `required` mounts). With neither `src` nor `env`, the
/// environment variable named like the id is used when it is set, else the
/// file named like it.
fn secrets(
    values: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HashMap<String, Secret>, Failure> {
    let mut out = HashMap::new();
    for value in values {
        let mut s = parse_secret(value)?;
        if s.env.is_empty() && s.file.is_empty() {
            if env(&s.id).is_some() {
                s.env = s.id.clone();
            } else {
                s.file = s.id.clone();
            }
        }
        if !s.file.is_empty() {
            let meta = std::fs::metadata(&s.file)
                .map_err(|e| usage("--secret", value, format!("{}: {e}", s.file)))?;
            if meta.len() > MAX_SECRET_SIZE {
                return Err(usage(
                    "--secret",
                    value,
                    format!("secret {} too big: max size 500KB", s.id),
                ));
            }
            let data = std::fs::read(&s.file)
                .map_err(|e| usage("--secret", value, format!("reading {}: {e}", s.file)))?;
            out.insert(s.id, Secret(data));
        } else if let Some(v) = env(&s.env) {
            out.insert(s.id, Secret(v.into_bytes()));
        }
    }
    Ok(out)
}

/// `default|ID[=SOCKET|KEYFILE[,KEYFILE…]]`: an agent's socket (default:
/// `$SSH_AUTH_SOCK`), or private key files, which an agent of kiln's own
/// serves ([`crate::ssh_agent`], bound here and started by
/// [`SshAgents::serve`]).
fn ssh(
    values: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(HashMap<String, PathBuf>, SshAgents), Failure> {
    let mut out = HashMap::new();
    let mut agents = SshAgents(Vec::new());
    for value in values {
        let (id, paths) = match value.split_once('=') {
            Some((id, p)) => (id, p),
            None => (value.as_str(), ""),
        };
        if id.is_empty() {
            return Err(usage("--ssh", value, "the id is empty"));
        }
        let given: Vec<&str> = paths.split(',').filter(|p| !p.is_empty()).collect();
        let from_env = given.is_empty();
        let paths: Vec<String> = if from_env {
            match env("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
                Some(s) => vec![s],
                None => {
                    return Err(usage(
                        "--ssh",
                        value,
                        "invalid empty ssh agent socket, make sure SSH_AUTH_SOCK is set",
                    ));
                }
            }
        } else {
            given.iter().map(|p| (*p).to_owned()).collect()
        };
        // Each path is looked at once: an agent's socket (the only path of
        // its id, as in BuildKit) or private key files.
        let mut metas = Vec::with_capacity(paths.len());
        for p in &paths {
            metas.push(
                std::fs::metadata(p).map_err(|e| usage("--ssh", value, format!("{p}: {e}")))?,
            );
        }
        match (paths.as_slice(), metas.as_slice()) {
            ([sock], [meta]) if meta.file_type().is_socket() => {
                out.insert(id.to_owned(), PathBuf::from(sock));
                continue;
            }
            ([sock], _) if from_env => {
                return Err(usage("--ssh", value, format!("{sock} is not a socket")));
            }
            _ => {}
        }
        if let Some((p, _)) = paths.iter().zip(&metas).find(|(_, m)| !m.is_file()) {
            return Err(usage(
                "--ssh",
                value,
                format!(
                    "{p} is neither an agent's socket nor a private key file (a socket must \
                     be the only path of its id)"
                ),
            ));
        }
        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
        let keys = crate::ssh_agent::read_keys(&paths).map_err(|e| usage("--ssh", value, e))?;
        let agent = crate::ssh_agent::Agent::bind(keys).map_err(|e| {
            usage(
                "--ssh",
                value,
                format!("making the socket of kiln's agent for the key files: {e}"),
            )
        })?;
        out.insert(id.to_owned(), agent.path());
        agents.0.push(agent);
    }
    Ok((out, agents))
}

/// The agents serving `--ssh ID=KEYFILE` ids: their sockets are bound (and
/// named in the grants) but nothing answers until [`SshAgents::serve`],
/// which starts threads, so it comes after the process's last `unshare`.
/// Dropped, their sockets go.
#[derive(Debug)]
#[must_use = "dropping the agents removes their sockets"]
pub struct SshAgents(Vec<crate::ssh_agent::Agent>);

impl SshAgents {
    pub fn serve(&mut self) {
        for a in &mut self.0 {
            a.serve();
        }
    }
}

/// Everything `--secret`, `--ssh` and `--allow` grant. `network` is the
/// `--network` flag: `host` needs `--allow network.host` too (refused here,
/// before the build; `RUN --network=host` is refused by the step).
pub fn grants(
    secret_values: &[String],
    ssh_values: &[String],
    allow: &[String],
    network: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(ExecGrants, SshAgents), Failure> {
    let mut allow_insecure = false;
    let mut allow_network_host = false;
    for a in allow.iter().flat_map(|a| a.split(',')) {
        match a {
            "security.insecure" => allow_insecure = true,
            "network.host" => allow_network_host = true,
            other => {
                return Err(Failure::Usage(format!(
                    "invalid --allow {other:?}: expected security.insecure or network.host"
                )));
            }
        }
    }
    if network == Some("host") && !allow_network_host {
        // BuildKit's wording (`entitlements.Set.Check`), and the way out.
        return Err(Failure::Usage(
            "network.host is not allowed: --network=host needs --allow network.host".to_owned(),
        ));
    }
    let (ssh, agents) = ssh(ssh_values, env)?;
    Ok((
        ExecGrants {
            secrets: secrets(secret_values, env)?,
            ssh,
            allow_insecure,
            allow_network_host,
        },
        agents,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, file: &str, env: &str) -> SecretSpec {
        SecretSpec {
            id: id.to_owned(),
            file: file.to_owned(),
            env: env.to_owned(),
        }
    }

    #[test]
    fn secret_forms() {
        let ok = |v: &str| parse_secret(v).unwrap_or_else(|_| panic!("{v}"));
        assert_eq!(ok("id=a,src=/x/b"), spec("a", "/x/b", ""));
        assert_eq!(ok("id=a,source=b"), spec("a", "b", ""));
        assert!(parse_secret("src=/x/file.txt").is_err());
        assert_eq!(ok("id=a,env=VAR"), spec("a", "", "VAR"));
        assert_eq!(ok("id=a,type=env,src=VAR"), spec("a", "", "VAR"));
        assert_eq!(ok("id=a"), spec("a", "", ""));
        assert!(parse_secret("id=a,bogus=1").is_err());
        assert!(parse_secret("id=a,type=socket").is_err());
        assert!(parse_secret("a").is_err());
        assert!(parse_secret("env=X").is_err());
    }

    #[test]
    fn bare_id_prefers_the_environment() {
        let env = |k: &str| (k == "tok").then(|| "from-env".to_owned());
        let s = secrets(&["id=tok".to_owned()], &env).unwrap_or_default();
        assert_eq!(s.get("tok"), Some(&Secret(b"from-env".to_vec())));
        let none = |_: &str| None;
        let s = secrets(&["id=a,env=UNSET".to_owned()], &none).unwrap_or_default();
        assert!(s.is_empty());
    }

    #[test]
    fn allow_values() {
        let none = |_: &str| None;
        assert!(
            grants(&[], &[], &["security.insecure".to_owned()], None, &none)
                .is_ok_and(|(g, _)| g.allow_insecure && !g.allow_network_host)
        );
        assert!(grants(&[], &[], &["device".to_owned()], None, &none).is_err());
        assert!(grants(&[], &["default".to_owned()], &[], None, &none).is_err());
        // --network=host is an entitlement too.
        assert!(grants(&[], &[], &[], Some("host"), &none).is_err());
        assert!(
            grants(&[], &[], &["network.host".to_owned()], Some("host"), &none)
                .is_ok_and(|(g, _)| g.allow_network_host && !g.allow_insecure)
        );
        assert!(grants(&[], &[], &[], Some("none"), &none).is_ok());
    }
}
