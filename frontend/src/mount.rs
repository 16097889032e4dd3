//! `RUN --mount=…` values: CSV fields, typed once variables are expanded.
//!
//! A port of BuildKit's `instructions/commands_runmount.go`.

use crate::kv;
use crate::quote::go_quote;
use crate::suggest::did_you_mean;

/// The type of a `RUN --mount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    pub fn as_str(&self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// A parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountType,
    pub from: String,
    pub source: String,
    pub target: String,
    pub readonly: bool,
    pub size_limit: u64,
    /// `id=`.
    pub id: String,
    pub sharing: Option<Sharing>,
    pub required: bool,
    pub env: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The `key[=value]` fields of a `--mount` value.
pub fn mount_fields(value: &str) -> Result<Vec<(String, Option<String>)>, String> {
    kv::pairs(value).map_err(|e| format!("failed to parse csv mounts: {e}"))
}

/// The value of the last `from=` field of a `--mount` value, if any.
pub fn mount_from(value: &str) -> Result<Option<String>, String> {
    Ok(mount_fields(value)?
        .into_iter()
        .rev()
        .find(|(k, v)| v.is_some() && k.eq_ignore_ascii_case("from"))
        .and_then(|(_, v)| v))
}

/// The checks BuildKit makes before expansion: valid CSV, and no variable in
/// `from=` (stages must be known before any variable is).
pub fn check_unexpanded(value: &str) -> Result<(), String> {
    for (k, v) in mount_fields(value)? {
        if k.eq_ignore_ascii_case("from")
            && let Some(v) = v
            && let Some(i) = v.find('$')
            && i != v.len() - 1
        {
            return Err(
                "'from' doesn't support variable expansion, define alias stage instead".into(),
            );
        }
    }
    Ok(())
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// docker/go-units `RAMInBytes`: `64m`, `1.5GiB`, `100` (binary multiples).
pub fn ram_in_bytes(s: &str) -> Result<u64, String> {
    let err = || format!("invalid size: {}", go_quote(s));
    let num_len = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let (num, rest) = s.split_at(num_len);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return Err(err());
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut chars = rest.chars();
    let (mult, rest): (f64, &str) = match chars.next() {
        None => (1.0, ""),
        Some(c) => match c.to_ascii_lowercase() {
            'k' => (1024.0, chars.as_str()),
            'm' => (1024f64.powi(2), chars.as_str()),
            'g' => (1024f64.powi(3), chars.as_str()),
            't' => (1024f64.powi(4), chars.as_str()),
            'p' => (1024f64.powi(5), chars.as_str()),
            _ => (1.0, rest),
        },
    };
    let rest = rest.strip_prefix(['i', 'I']).unwrap_or(rest);
    let rest = rest.strip_prefix(['b', 'B']).unwrap_or(rest);
    if !rest.is_empty() {
        return Err(err());
    }
    let bytes = value * mult;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

const MOUNT_KEYS: [&str; 19] = [
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Parses a `--mount` value, expanding each field value with `expand`.
pub fn parse_mount(
    value: &str,
    expand: &mut dyn FnMut(&str) -> Result<String, String>,
) -> Result<Mount, String> {
    let fields = mount_fields(value)?;
    let mut m = Mount {
        kind: MountType::Bind,
        from: String::new(),
        source: String::new(),
        target: String::new(),
        readonly: false,
        size_limit: 0,
        id: String::new(),
        sharing: None,
        required: false,
        env: None,
        mode: None,
        uid: None,
        gid: None,
    };
    let mut ro_auto = true;
    let invalid = |key: &str, value: &str| format!("invalid value for {key}: {value}");
    for (name, raw) in fields {
        let key = name.to_lowercase();
        let field = match &raw {
            Some(v) => format!("{name}={v}"),
            None => name,
        };
        let Some(raw) = raw else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true;
                }
                "required" => {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
                _ => return Err(format!("invalid field '{field}' must be a key=value pair")),
            }
            continue;
        };
        let value = expand(&raw)?;
        match key.as_str() {
            "type" => {
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let mut msg = format!("unsupported mount type {}", go_quote(&value));
                        if let Some(s) =
                            did_you_mean(&value, ["bind", "cache", "tmpfs", "secret", "ssh"])
                        {
                            msg.push_str(&format!(" (did you mean {s}?)"));
                        }
                        return Err(msg);
                    }
                }
            }
            "from" => m.from = value,
            "source" | "src" => m.source = value,
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => {
                m.readonly = parse_go_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !parse_go_bool(&value).ok_or_else(|| invalid(&key, &value))?;
                ro_auto = false;
            }
            "required" => {
                if !matches!(m.kind, MountType::Secret | MountType::Ssh) {
                    return Err(format!(
                        "unexpected key 'required' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
                m.required = parse_go_bool(&value).ok_or_else(|| invalid(&key, &value))?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(format!(
                        "unexpected key 'size' for mount type '{}'",
                        m.kind.as_str()
                    ));
                }
                m.size_limit = ram_in_bytes(&value).map_err(|_| invalid(&key, &value))?;
            }
            "id" => m.id = value,
            "sharing" => {
                m.sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => {
                        return Err(format!(
                            "unsupported sharing value {} (expected shared, private or locked)",
                            go_quote(&value)
                        ));
                    }
                })
            }
            "mode" => {
                let mode = u32::from_str_radix(&value, 8)
                    .map_err(|_| format!("invalid value {value} for mode"))?;
                m.mode = Some(mode);
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| format!("invalid value {value} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| format!("invalid value {value} for gid"))?,
                )
            }
            "env" => m.env = Some(value),
            _ => {
                let mut msg = format!("unexpected key '{key}' in '{field}'");
                if let Some(s) = did_you_mean(&key, MOUNT_KEYS) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                return Err(msg);
            }
        }
    }

    let file_info_allowed = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    if !file_info_allowed {
        let t = m.kind.as_str();
        if m.mode.is_some() {
            return Err(format!("mode not allowed for \"{t}\" type mounts"));
        }
        if m.uid.is_some() {
            return Err(format!("uid not allowed for \"{t}\" type mounts"));
        }
        if m.gid.is_some() {
            return Err(format!("gid not allowed for \"{t}\" type mounts"));
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.kind == MountType::Secret {
        if !m.from.is_empty() {
            return Err("secret mount should not have a from".into());
        }
        if m.sharing.is_some() {
            return Err("secret mount should not define sharing".into());
        }
        if m.source.is_empty() && m.target.is_empty() && m.id.is_empty() {
            return Err("invalid secret mount. one of source, target required".into());
        }
        if !m.source.is_empty() && !m.id.is_empty() {
            return Err("both source and id can't be set".into());
        }
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            m.kind.as_str()
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Mount, String> {
        parse_mount(s, &mut |v| Ok(v.to_owned()))
    }

    #[test]
    fn mounts() {
        let m = parse("type=cache,target=/root/.cache,sharing=locked,mode=0700,uid=1000").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert!(!m.readonly);
        assert_eq!(m.mode, Some(0o700));
        assert_eq!(m.sharing, Some(Sharing::Locked));
        let m = parse("target=/src,rw").unwrap();
        assert_eq!((m.kind, m.readonly), (MountType::Bind, false));
        let m = parse("target=/src").unwrap();
        assert!(m.readonly);
        assert_eq!(
            parse("type=tmpfs,target=/t,size=64m").unwrap().size_limit,
            64 << 20
        );
        assert!(
            parse("type=bind,mode=0700")
                .unwrap_err()
                .contains("mode not allowed")
        );
        assert!(
            parse("type=secret")
                .unwrap_err()
                .contains("one of source, target")
        );
        assert!(
            parse("required,type=secret,id=a")
                .unwrap_err()
                .contains("unexpected key 'required'")
        );
        assert!(
            parse("type=cach")
                .unwrap_err()
                .contains("did you mean cache")
        );
        assert!(parse("type=cache,sharing=x").is_err());
        assert!(
            parse("tagret=/x")
                .unwrap_err()
                .contains("did you mean target")
        );
        assert!(check_unexpanded("from=$x,target=/a").is_err());
        assert!(check_unexpanded("from=a$,target=/a").is_ok());
    }

    #[test]
    fn sizes() {
        assert_eq!(ram_in_bytes("100"), Ok(100));
        assert_eq!(ram_in_bytes("1k"), Ok(1024));
        assert_eq!(ram_in_bytes("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(ram_in_bytes("2 MB"), Ok(2 << 20));
        assert!(ram_in_bytes("x").is_err());
        assert!(ram_in_bytes("1q").is_err());
    }
}
