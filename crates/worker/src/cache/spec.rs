//! `--cache-to` and `--cache-from` values in buildx's syntax: the
//! attributes every cache has (mode, compression, …) and the registration
//! table of transports, each of which parses its own attributes.

use std::sync::Arc;

use kiln_oci::Compression;

use super::attrs::{Attrs, Flag};
use super::transport::Transport;
use super::{local, registry, s3};

/// Records a cache destination keeps at most, unless `max-records=` says.
pub const DEFAULT_MAX_RECORDS: usize = 10_000;

/// A transport's parser: takes its attributes from `Attrs`.
type Parse = fn(&mut Attrs) -> Result<Arc<dyn Transport>, String>;

/// The transports, by `type=`. Adding one is a file beside this one and a
/// line here.
const TRANSPORTS: &[(&str, Parse)] = &[
    ("local", local::parse),
    ("registry", registry::parse),
    ("s3", s3::parse),
];

/// Which records an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The result's layers only.
    #[default]
    Min,
    /// Every step of every stage.
    Max,
}

/// Where a cache goes or comes from.
#[derive(Debug, Clone)]
pub enum Location {
    /// `--cache-to type=inline`: in the image's own config.
    Inline,
    /// A transport: a local directory, a registry, object storage.
    Transport(Arc<dyn Transport>),
}

impl Location {
    /// Whether this is `type=inline`.
    pub fn is_inline(&self) -> bool {
        matches!(self, Location::Inline)
    }

    /// The transport, unless inline.
    pub fn transport(&self) -> Option<&Arc<dyn Transport>> {
        match self {
            Location::Inline => None,
            Location::Transport(t) => Some(t),
        }
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            Location::Inline => "inline".to_owned(),
            Location::Transport(t) => t.describe(),
        }
    }
}

impl PartialEq for Location {
    fn eq(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Inline, Location::Inline) => true,
            (Location::Transport(a), Location::Transport(b)) => {
                a.kind() == b.kind() && a.describe() == b.describe()
            }
            _ => false,
        }
    }
}

impl Eq for Location {}

/// `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    pub location: Location,
    pub mode: Mode,
    pub compression: Compression,
    /// `ignore-error=true`: a failed export is reported, not fatal.
    pub ignore_error: bool,
    /// `mounts=true`: the build's `RUN --mount=type=cache` directories go too.
    pub mounts: bool,
    /// `max-records=N` (kiln's): at most this many records stay at the
    /// destination after merging with what is there; the least recently
    /// exported go first ([`DEFAULT_MAX_RECORDS`]).
    pub max_records: usize,
}

/// `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFrom {
    pub location: Location,
}

fn location(a: &mut Attrs) -> Result<Location, String> {
    let flag = a.flag.name();
    let kind = a.take("type").unwrap_or_default();
    if let Some((_, parse)) = TRANSPORTS.iter().find(|(k, _)| *k == kind) {
        return Ok(Location::Transport(parse(a)?));
    }
    let known: Vec<&str> = TRANSPORTS.iter().map(|(k, _)| *k).collect();
    match kind.as_str() {
        "inline" if a.flag == Flag::CacheTo => Ok(Location::Inline),
        "inline" => Err(format!(
            "{flag} type=inline: an inline cache is read from its image: \
             --cache-from type=registry,ref=<image>"
        )),
        "gha" | "azblob" => Err(format!(
            "{flag} type={kind} is not supported yet (kiln's caches go to {})",
            listed(&known)
        )),
        "" => Err(format!("{flag} {:?}: type is required", a.spec())),
        other => Err(format!(
            "{flag} {:?}: unknown cache type {other:?} (expected {} or inline)",
            a.spec(),
            known.join(", ")
        )),
    }
}

/// `type=a, type=b and type=c`.
fn listed(kinds: &[&str]) -> String {
    let all: Vec<String> = kinds.iter().map(|k| format!("type={k}")).collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => all.join(""),
    }
}

impl CacheTo {
    /// Parses a `--cache-to` value, buildx's syntax.
    pub fn parse(spec: &str) -> Result<CacheTo, String> {
        const FLAG: &str = "--cache-to";
        let mut a = Attrs::parse(Flag::CacheTo, spec)?;
        let location = location(&mut a)?;
        let mode = match a.take("mode").as_deref() {
            None | Some("min") => Mode::Min,
            Some("max") => Mode::Max,
            Some(m) => {
                return Err(format!("{FLAG} mode={m:?}: expected min or max"));
            }
        };
        let has_compression = a.has("compression");
        let compression = match a.take("compression").as_deref() {
            None | Some("gzip") => Compression::gzip(),
            Some("zstd") => Compression::zstd(),
            Some("uncompressed") => Compression::Uncompressed,
            Some(c) => {
                return Err(format!(
                    "{FLAG} compression={c:?}: expected gzip, zstd or uncompressed"
                ));
            }
        };
        let ignore_error = a.boolean("ignore-error")?.unwrap_or(false);
        let mounts = a.boolean("mounts")?.unwrap_or(false);
        let max_records = match a.take("max-records") {
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(format!(
                        "{FLAG} max-records={v:?}: expected a number of records above 0"
                    ));
                }
            },
            None => DEFAULT_MAX_RECORDS,
        };
        // What kiln's format always is.
        for (k, always) in [("image-manifest", "true"), ("oci-mediatypes", "true")] {
            if let Some(v) = a.take(k)
                && v != always
            {
                return Err(format!(
                    "{FLAG} {k}={v}: kiln's cache is always an OCI image manifest ({k}={always})"
                ));
            }
        }
        a.finish()?;
        if location.is_inline() {
            // BuildKit's inline cache is min mode only; it has no blobs of
            // its own to carry mounts, and its layers are the image's.
            if mode == Mode::Max {
                return Err(format!(
                    "{FLAG} type=inline: mode=max is not supported (an inline cache holds the \
                     image's own layers; use type=registry or type=local for mode=max)"
                ));
            }
            if mounts {
                return Err(format!(
                    "{FLAG} type=inline: mounts=true is not supported (cache mounts travel with \
                     type=registry or type=local)"
                ));
            }
            if has_compression {
                return Err(format!(
                    "{FLAG} type=inline: compression= does not apply (the layers are the image's, \
                     compressed as its output says)"
                ));
            }
        }
        Ok(CacheTo {
            location,
            mode,
            compression,
            ignore_error,
            mounts,
            max_records,
        })
    }
}

impl CacheFrom {
    /// Parses a `--cache-from` value, buildx's syntax.
    pub fn parse(spec: &str) -> Result<CacheFrom, String> {
        let mut a = Attrs::parse(Flag::CacheFrom, spec)?;
        let location = location(&mut a)?;
        a.finish()?;
        Ok(CacheFrom { location })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn describe(l: &Location) -> (String, String) {
        let t = l.transport().expect("a transport");
        (t.kind().to_owned(), t.describe())
    }

    #[test]
    fn parses_buildx_cache_specs() {
        let t = CacheTo::parse("type=local,dest=/tmp/c,mode=max").unwrap();
        assert_eq!(describe(&t.location), ("local".into(), "/tmp/c".into()));
        assert_eq!(t.mode, Mode::Max);
        let t = CacheTo::parse("type=registry,ref=host:5000/a/b:cache,compression=zstd").unwrap();
        assert_eq!(
            describe(&t.location),
            ("registry".into(), "host:5000/a/b:cache".into())
        );
        assert_eq!(t.mode, Mode::Min);
        assert_eq!(t.compression, Compression::zstd());
        let f = CacheFrom::parse("host:5000/a/b:cache").unwrap();
        assert_eq!(
            describe(&f.location),
            ("registry".into(), "host:5000/a/b:cache".into())
        );
        let f = CacheFrom::parse("type=local,src=d").unwrap();
        assert_eq!(describe(&f.location), ("local".into(), "d".into()));
    }

    #[test]
    fn refuses_what_it_does_not_do() {
        let e = |s: &str| CacheTo::parse(s).unwrap_err();
        assert!(CacheTo::parse("type=inline").unwrap().location.is_inline());
        assert!(e("type=inline,mode=max").contains("mode=max is not supported"));
        assert!(e("type=inline,compression=zstd").contains("does not apply"));
        assert!(
            CacheFrom::parse("type=inline")
                .unwrap_err()
                .contains("--cache-from type=registry,ref=<image>")
        );
        assert!(e("type=local").contains("dest is required"));
        assert!(e("type=local,dest=d,mode=all").contains("expected min or max"));
        assert!(e("type=local,dest=d,bogus=1").contains("unknown attribute \"bogus\""));
        assert!(
            CacheTo::parse("type=local,dest=d,mounts=true")
                .unwrap()
                .mounts
        );
        assert!(e("type=local,dest=d,mounts=yes").contains("expected true or false"));
        assert!(e("type=gha").contains("not supported"));
        assert!(e("type=azblob").contains("not supported"));
        assert!(e("type=local,dest=d,dest=e").contains("given twice"));
        let e = CacheFrom::parse("type=local,dest=d").unwrap_err();
        assert!(e.contains("src is required"), "{e}");
    }
}
