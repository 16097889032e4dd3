//! The `k=v,k=v` attributes of one `--cache-to` / `--cache-from` value, as
//! buildx splits them, for the spec parser and each transport's parser.

use std::collections::BTreeMap;

/// Which flag a value was given with: transports name some attributes after
/// the direction (`type=local,dest=` / `src=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    CacheTo,
    CacheFrom,
}

impl Flag {
    pub fn name(self) -> &'static str {
        match self {
            Flag::CacheTo => "--cache-to",
            Flag::CacheFrom => "--cache-from",
        }
    }
}

/// The attributes of one value; each parser takes those it knows, and
/// [`Attrs::finish`] refuses what is left.
#[derive(Debug)]
pub struct Attrs {
    pub flag: Flag,
    spec: String,
    map: BTreeMap<String, String>,
}

impl Attrs {
    /// Splits `type=local,dest=d,mode=max` into its attributes (a bare value
    /// is a registry reference, as buildx reads it).
    pub fn parse(flag: Flag, spec: &str) -> Result<Attrs, String> {
        let name = flag.name();
        let mut map = BTreeMap::new();
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = match part.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None if !spec.contains('=') => ("ref", part.trim()),
                None => {
                    return Err(format!(
                        "{name} {:?}: {part:?} is not KEY=VALUE",
                        redact(spec)
                    ));
                }
            };
            if map.insert(k.to_owned(), v.to_owned()).is_some() {
                return Err(format!("{name} {:?}: {k} given twice", redact(spec)));
            }
        }
        if !map.contains_key("type") && map.contains_key("ref") {
            map.insert("type".to_owned(), "registry".to_owned());
        }
        Ok(Attrs {
            flag,
            spec: spec.to_owned(),
            map,
        })
    }

    /// The value as given, secrets blanked, for messages.
    pub fn spec(&self) -> String {
        redact(&self.spec)
    }

    /// Takes attribute `k`.
    pub fn take(&mut self, k: &str) -> Option<String> {
        self.map.remove(k)
    }

    /// Takes attribute `k`, which must be there.
    pub fn required(&mut self, k: &str) -> Result<String, String> {
        self.take(k)
            .ok_or_else(|| format!("{} {:?}: {k} is required", self.flag.name(), self.spec()))
    }

    /// Takes boolean attribute `k` (`true` or `false`).
    pub fn boolean(&mut self, k: &str) -> Result<Option<bool>, String> {
        match self.take(k).as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(v) => Err(format!(
                "{} {k}={v:?}: expected true or false",
                self.flag.name()
            )),
        }
    }

    /// Whether attribute `k` is (still) there.
    pub fn has(&self, k: &str) -> bool {
        self.map.contains_key(k)
    }

    /// Refuses the attributes no parser took.
    pub fn finish(&self) -> Result<(), String> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(format!(
                "{} {:?}: unknown attribute {k:?}",
                self.flag.name(),
                self.spec()
            )),
        }
    }
}

/// Attributes whose values are secrets: a message shows them as `***`.
const SECRETS: &[&str] = &["secret_access_key", "session_token", "access_key_id"];

/// `spec` with the values of [`SECRETS`] blanked.
pub fn redact(spec: &str) -> String {
    spec.split(',')
        .map(|part| match part.split_once('=') {
            Some((k, _)) if SECRETS.contains(&k.trim()) => format!("{k}=***"),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}
