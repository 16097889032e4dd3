//! `-o/--output` in buildx syntax: `type=oci,dest=img.tar`, `type=local,dest=dir`,
//! or a bare path (`-o dir`, short for `type=local,dest=dir`).
//!
//! Every type and attribute buildx documents is recognised; the ones kiln does not
//! implement yet are refused by name, never ignored. This file reads the
//! syntax and the attributes; each output type builds itself from them
//! (`kiln_worker::export::EXPORTERS`, by `type=`).

use std::path::PathBuf;

use kiln_oci::Compression;
use kiln_worker::Output;
use kiln_worker::export::{Attrs, FileAttrs};

use crate::failure::Failure;

/// Normalises a name given to an image (`-t`, `name=`).
pub type Normalize<'a> = &'a dyn Fn(&str) -> Result<String, Failure>;

fn not_yet(what: String) -> Failure {
    Failure::Usage(format!("{what} is not supported yet"))
}

/// Splits a buildx CSV spec into `key=value` fields (double quotes group, as
/// Go's encoding/csv reads them).
fn fields(spec: &str) -> Result<Vec<(String, String)>, Failure> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = spec.chars().peekable();
    let mut push = |field: &mut String| -> Result<(), Failure> {
        let f = std::mem::take(field);
        match f.split_once('=') {
            Some((k, v)) => {
                out.push((k.trim().to_ascii_lowercase(), v.to_owned()));
                Ok(())
            }
            None => Err(Failure::Usage(format!(
                "invalid --output {spec:?}: field {f:?} is not of the form key=value"
            ))),
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => push(&mut field)?,
            c => field.push(c),
        }
    }
    if quoted {
        return Err(Failure::Usage(format!(
            "invalid --output {spec:?}: unterminated quote"
        )));
    }
    push(&mut field)?;
    Ok(out)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, Failure> {
    match v {
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        _ => Err(Failure::Usage(format!(
            "invalid --output value {key}={v:?}: expected true or false"
        ))),
    }
}

/// The exporter's `SOURCE_DATE_EPOCH` attributes of one `-o` value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EpochAttrs {
    /// `source-date-epoch=N` (`Some(Some(N))`) or `source-date-epoch=`
    /// (`Some(None)`: the exporter has no epoch); `None`: not given, the
    /// build's `SOURCE_DATE_EPOCH` is the exporter's.
    pub source_date_epoch: Option<Option<i64>>,
    /// `rewrite-timestamp=true`.
    pub rewrite_timestamp: bool,
}

/// `source-date-epoch=` value: seconds since 1970, or empty.
fn parse_epoch(v: &str) -> Result<Option<i64>, Failure> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<i64>().map(Some).map_err(|_| {
        Failure::Usage(format!(
            "invalid --output source-date-epoch={v:?}: expected seconds since 1970"
        ))
    })
}

/// The `source-date-epoch` and `rewrite-timestamp` attributes of `spec`
/// (which [`parse`] has accepted).
pub fn epoch_attrs(spec: &str) -> Result<EpochAttrs, Failure> {
    let mut out = EpochAttrs::default();
    if spec == "-" || !spec.contains('=') {
        return Ok(out);
    }
    for (k, v) in fields(spec)? {
        match k.as_str() {
            "source-date-epoch" => out.source_date_epoch = Some(parse_epoch(&v)?),
            "rewrite-timestamp" => out.rewrite_timestamp = parse_bool(&k, &v)?,
            _ => {}
        }
    }
    Ok(out)
}

/// Parses one `-o` value. `tags` (`-t`, normalised) name every image output
/// too; `normalize` normalises `name=` values.
pub fn parse(spec: &str, tags: &[String], normalize: Normalize<'_>) -> Result<Output, Failure> {
    if spec == "-" {
        // buildx: `-o -` is the filesystem as a tar on stdout.
        return Ok(Box::new(kiln_worker::export::Tar {
            dest: PathBuf::from(kiln_worker::export::STDOUT),
            files: FileAttrs::default(),
        }));
    }
    if !spec.contains('=') {
        return Ok(Box::new(kiln_worker::export::Local {
            dest: PathBuf::from(spec),
            files: FileAttrs::default(),
        }));
    }
    let fields = fields(spec)?;
    let mut ty = None;
    let mut dest = None;
    let mut tar = true;
    let mut names: Vec<String> = tags.to_vec();
    let mut compression = "gzip".to_owned();
    let mut level = None;
    let mut push = false;
    let mut insecure = false;
    let mut oci_types = None;
    let mut force_compression = false;
    let mut epoch_attr = false;
    let mut files = FileAttrs::default();
    for (k, v) in &fields {
        match k.as_str() {
            "type" => ty = Some(v.clone()),
            "dest" => dest = Some(PathBuf::from(v)),
            "tar" => tar = parse_bool(k, v)?,
            "name" => {
                for n in v.split(',').filter(|s| !s.is_empty()) {
                    let n = normalize(n)?;
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
            "compression" => match v.as_str() {
                "gzip" | "zstd" | "uncompressed" => compression = v.clone(),
                "estargz" => return Err(not_yet("compression=estargz".to_owned())),
                other => {
                    return Err(Failure::Usage(format!(
                        "invalid --output compression {other:?}: expected gzip, zstd or uncompressed"
                    )));
                }
            },
            "compression-level" => {
                level = Some(v.parse::<i64>().map_err(|_| {
                    Failure::Usage(format!(
                        "invalid --output compression-level {v:?}: expected a number"
                    ))
                })?)
            }
            "push" => push = parse_bool(k, v)?,
            "registry.insecure" => insecure = parse_bool(k, v)?,
            "oci-mediatypes" => oci_types = Some(parse_bool(k, v)?),
            "push-by-digest" | "unpack" | "store" => {
                if parse_bool(k, v)? {
                    return Err(not_yet(format!("--output {k}=true")));
                }
            }
            "force-compression" => force_compression = parse_bool(k, v)?,
            "platform-split" => files.platform_split = Some(parse_bool(k, v)?),
            "attestation-prefix" => files.attestation_prefix = v.clone(),
            // Read by `epoch_attrs`; checked here.
            "rewrite-timestamp" => epoch_attr = epoch_attr || parse_bool(k, v)?,
            "source-date-epoch" => {
                parse_epoch(v)?;
                epoch_attr = true;
            }
            "oci-artifact"
            | "buildinfo"
            | "buildinfo-attrs"
            | "annotation"
            | "dangling-name-prefix"
            | "name-canonical"
            | "attest"
            | "context" => return Err(not_yet(format!("--output attribute {k}"))),
            _ if k.starts_with("annotation") || k.starts_with("attest:") => {
                return Err(not_yet(format!("--output attribute {k}")));
            }
            _ => {
                return Err(Failure::Usage(format!(
                    "invalid --output {spec:?}: unknown attribute {k:?}"
                )));
            }
        }
    }
    let compression = Compression::parse(&compression, level)
        .map_err(|e| Failure::Usage(format!("--output compression: {e}")))?;
    let ty = ty.unwrap_or_else(|| "local".to_owned());
    let Some(parse_output) = kiln_worker::export::parser(&ty) else {
        return Err(match ty.as_str() {
            _ if oci_types.is_some() => not_yet(format!(
                "--output oci-mediatypes with type={ty} (it applies to registry pushes)"
            )),
            "cacheonly" => not_yet(format!("--output type={ty}")),
            other => Failure::Usage(format!(
                "invalid --output type {other:?}: expected local, tar, oci, docker or image"
            )),
        });
    };
    parse_output(Attrs {
        kind: ty,
        dest,
        tar,
        names,
        compression,
        force_compression,
        push,
        insecure,
        oci_types,
        epoch: epoch_attr,
        files,
    })
    .map_err(Failure::Usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_oci::MediaTypes;
    use kiln_worker::export::{Exporter, Image, Local, Oci, Registry, Tar};

    /// Outputs are trait objects without `PartialEq`: two are the same
    /// output when their `Debug` forms (every field) are.
    fn assert_is(got: Output, want: impl Exporter) {
        assert_eq!(format!("{got:?}"), format!("{want:?}"));
    }

    fn same(n: &str) -> Result<String, Failure> {
        Ok(format!("docker.io/library/{n}"))
    }

    fn ok(spec: &str) -> Output {
        match parse(spec, &["docker.io/library/t:1".to_owned()], &same) {
            Ok(o) => o,
            Err(e) => panic!("{spec}: {e:?}"),
        }
    }

    fn err(spec: &str) -> String {
        match parse(spec, &[], &same) {
            Ok(o) => panic!("{spec}: unexpectedly {o:?}"),
            Err(Failure::Usage(m)) => m,
            Err(e) => panic!("{spec}: {e:?}"),
        }
    }

    #[test]
    fn forms() {
        assert_is(
            ok("out"),
            Local {
                dest: PathBuf::from("out"),
                files: FileAttrs::default(),
            },
        );
        assert_is(
            ok("type=oci,dest=x.tar"),
            Oci {
                dest: PathBuf::from("x.tar"),
                tar: true,
                names: vec!["docker.io/library/t:1".into()],
                compression: Compression::gzip(),
                force_compression: false,
            },
        );
        assert_is(
            ok("type=oci,dest=dir,tar=false,\"name=a:1,b:2\",compression=zstd"),
            Oci {
                dest: PathBuf::from("dir"),
                tar: false,
                names: vec![
                    "docker.io/library/t:1".into(),
                    "docker.io/library/a:1".into(),
                    "docker.io/library/b:2".into(),
                ],
                compression: Compression::zstd(),
                force_compression: false,
            },
        );
        assert_is(
            ok("type=image,name=x"),
            Image {
                names: vec!["docker.io/library/t:1".into(), "docker.io/library/x".into()],
            },
        );
    }

    #[test]
    fn refusals() {
        assert_is(
            ok("-"),
            Tar {
                dest: PathBuf::from("-"),
                files: FileAttrs::default(),
            },
        );
        assert_is(
            ok("type=tar,dest=x.tar"),
            Tar {
                dest: PathBuf::from("x.tar"),
                files: FileAttrs::default(),
            },
        );
        assert!(err("type=local,dest=-").contains("needs an archive output"));
        assert_eq!(
            err("type=registry"),
            "--output type=registry needs a name to push to (name=… or -t)"
        );
        assert_is(
            ok("type=image,push=true,oci-mediatypes=false"),
            Registry {
                names: vec!["docker.io/library/t:1".into()],
                compression: Compression::gzip(),
                types: MediaTypes::Docker,
                force_compression: false,
                store: true,
                insecure: false,
            },
        );
        assert_is(
            ok("type=registry,registry.insecure=true,compression=zstd"),
            Registry {
                names: vec!["docker.io/library/t:1".into()],
                compression: Compression::zstd(),
                types: MediaTypes::Oci,
                force_compression: false,
                store: false,
                insecure: true,
            },
        );
        assert_eq!(err("type=oci"), "--output type=oci needs dest=PATH");
        assert_eq!(
            err("type=oci,dest=x,colour=red"),
            "invalid --output \"type=oci,dest=x,colour=red\": unknown attribute \"colour\""
        );
        assert_eq!(
            err("type=oci,dest=\"x"),
            "invalid --output \"type=oci,dest=\\\"x\": unterminated quote"
        );
        assert!(err("type=oci,dest=x,compression=zstd,compression-level=99").contains("level"));
    }

    #[test]
    fn file_attributes() {
        assert_is(
            ok("type=local,dest=out,platform-split=false,attestation-prefix=att-"),
            Local {
                dest: PathBuf::from("out"),
                files: FileAttrs {
                    platform_split: Some(false),
                    attestation_prefix: "att-".to_owned(),
                },
            },
        );
        assert_is(
            ok("type=tar,dest=x.tar,platform-split=true"),
            Tar {
                dest: PathBuf::from("x.tar"),
                files: FileAttrs {
                    platform_split: Some(true),
                    attestation_prefix: String::new(),
                },
            },
        );
        assert!(err("type=local,dest=out,platform-split=maybe").contains("true or false"));
        assert_eq!(
            err("type=oci,dest=x,platform-split=true"),
            "--output type=oci: platform-split and attestation-prefix apply to \
             type=local and type=tar"
        );
        assert!(err("type=image,push=true,attestation-prefix=x").contains("apply to"));
        assert!(err("type=local,dest=o,attestation-prefix=a/b").contains("not supported yet"));
    }

    #[test]
    fn epoch_attributes() {
        let a = |spec: &str| {
            ok(spec);
            epoch_attrs(spec).unwrap()
        };
        assert_eq!(a("type=oci,dest=x"), EpochAttrs::default());
        assert_eq!(
            a("type=oci,dest=x,rewrite-timestamp=true,source-date-epoch=12"),
            EpochAttrs {
                source_date_epoch: Some(Some(12)),
                rewrite_timestamp: true
            }
        );
        assert_eq!(
            a("type=docker,dest=x,source-date-epoch="),
            EpochAttrs {
                source_date_epoch: Some(None),
                rewrite_timestamp: false
            }
        );
        assert!(err("type=oci,dest=x,source-date-epoch=soon").contains("seconds since 1970"));
        assert!(err("type=oci,dest=x,rewrite-timestamp=maybe").contains("true or false"));
        assert_eq!(
            err("type=local,dest=x,rewrite-timestamp=true"),
            "--output type=local with source-date-epoch or rewrite-timestamp is not supported yet"
        );
    }
}
