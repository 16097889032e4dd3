//! `--provenance`, `--sbom`, `--attest` and `--annotation` of `kiln build`,
//! read as buildx 0.13 reads them, into the worker's
//! [`kiln_worker::attest::AttestRequest`].
//!
//! * `--provenance=V` is `--attest type=provenance,V` (a Go boolean `V` is
//!   `disabled=!V`); `--sbom=V` likewise for `type=sbom`. A type given twice
//!   is refused, as buildx does.
//! * Without a provenance attestation, buildx asks for `mode=min,
//!   inline-only=true` (only registry pushes carry it), unless
//!   `BUILDX_NO_DEFAULT_ATTESTATIONS` is true; kiln does the same.
//! * Provenance without `mode=` is `mode=max` (BuildKit's default).
//! * The SBOM is kiln's own scan of the image, or, with `generator=IMAGE`,
//!   what that image writes when run by BuildKit's SBOM protocol (the other
//!   attributes reach it as `BUILDKIT_SCAN_<KEY>=<value>`, as BuildKit
//!   passes them). Without a generator, `scan-context` and `scan-stage` may
//!   only be false: kiln's scanner scans the image alone.

use std::collections::BTreeMap;

use kiln_worker::attest::{AttestRequest, SbomRequest};
use kiln_worker::export::Output;

use crate::args::BuildArgs;
use crate::failure::Failure;

fn usage(flag: &str, value: &str, why: impl std::fmt::Display) -> Failure {
    Failure::Usage(format!("invalid {flag} {value:?}: {why}"))
}

fn not_yet(what: impl std::fmt::Display) -> Failure {
    Failure::Usage(format!("{what} is not supported yet"))
}

/// One `--attest` value: its type and its other attributes (`None`: the
/// attestation is disabled).
fn parse_attest(
    flag: &str,
    value: &str,
) -> Result<(String, Option<BTreeMap<String, String>>), Failure> {
    let pairs = kiln_frontend::kv::pairs(value).map_err(|e| usage(flag, value, e))?;
    let mut kind = None;
    let mut attrs = BTreeMap::new();
    let mut disabled = false;
    for (k, v) in pairs {
        let v = v.unwrap_or_default();
        match k.as_str() {
            "type" => kind = Some(v),
            "disabled" => {
                disabled = crate::args::go_bool(&v)
                    .ok_or_else(|| usage(flag, value, format!("disabled={v:?} is not a boolean")))?
            }
            _ => {
                attrs.insert(k, v);
            }
        }
    }
    let kind = kind.ok_or_else(|| usage(flag, value, "attestation type not specified"))?;
    Ok((kind, (!disabled).then_some(attrs)))
}

/// buildx's `CanonicalizeAttest`: `true`/`false` or attributes.
fn canonical(kind: &str, value: &str) -> String {
    match crate::args::go_bool(value) {
        Some(b) => format!("type={kind},disabled={}", !b),
        None => format!("type={kind},{value}"),
    }
}

/// The attestations and annotations the flags ask for, checked against
/// the outputs; with the notes to print (attestations some outputs leave
/// out). The build record (Dockerfile, arguments, secrets) is added by
/// [`complete`] once the Dockerfile is read.
pub fn request(
    args: &BuildArgs,
    outputs: &[Output],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(AttestRequest, Vec<String>), Failure> {
    let mut given: Vec<(String, String)> = args
        .attest
        .iter()
        .map(|v| ("--attest".to_owned(), v.clone()))
        .collect();
    if let Some(v) = &args.provenance {
        given.push(("--provenance".to_owned(), canonical("provenance", v)));
    }
    if let Some(v) = &args.sbom {
        given.push(("--sbom".to_owned(), canonical("sbom", v)));
    }
    let mut req = AttestRequest::default();
    let mut seen: Vec<String> = Vec::new();
    for (flag, value) in &given {
        let (kind, attrs) = parse_attest(flag, value)?;
        if seen.contains(&kind) {
            return Err(usage(
                flag,
                value,
                format!("duplicate attestation field {kind}"),
            ));
        }
        seen.push(kind.clone());
        match (kind.as_str(), attrs) {
            ("provenance", Some(attrs)) => {
                req.provenance = Some(
                    kiln_attest::Options::from_attrs(&attrs).map_err(|e| usage(flag, value, e))?,
                );
            }
            ("sbom", Some(mut attrs)) => {
                let mut sbom = SbomRequest::default();
                if let Some(g) = attrs.remove("generator") {
                    // BuildKit's `ParseNormalizedNamed` and `TagNameOnly`.
                    let r = kiln_reference::Reference::parse_normalized(&g).map_err(|e| {
                        usage(
                            flag,
                            value,
                            format!("failed to parse sbom scanner {g}: {e}"),
                        )
                    })?;
                    sbom.generator = Some(r.with_default_tag().to_string());
                    sbom.params = attrs;
                } else {
                    for (k, v) in &attrs {
                        match k.as_str() {
                            "scan-stage" | "scan-context" => {
                                if crate::args::go_bool(v) != Some(false) {
                                    return Err(not_yet(format!(
                                        "{flag} {k}={v} with kiln's own SBOM scanner (it scans the image alone; an SBOM generator image, generator=IMAGE, gets it as BUILDKIT_SCAN_{k})"
                                    )));
                                }
                            }
                            _ => {
                                return Err(usage(
                                    flag,
                                    value,
                                    format!("unknown SBOM option {k:?} (without generator=)"),
                                ));
                            }
                        }
                    }
                }
                req.sbom = Some(sbom);
            }
            ("provenance" | "sbom", None) => {}
            (other, _) => {
                return Err(usage(
                    flag,
                    value,
                    format!("unknown attestation type {other:?}: expected provenance or sbom"),
                ));
            }
        }
    }
    // buildx's default: min provenance, registry pushes only.
    let no_default = env("BUILDX_NO_DEFAULT_ATTESTATIONS")
        .and_then(|v| crate::args::go_bool(&v))
        .unwrap_or(false);
    if !seen.iter().any(|k| k == "provenance") && !no_default {
        req.provenance = Some(kiln_attest::Options {
            mode: kiln_attest::Mode::Min,
            ..Default::default()
        });
        req.default_provenance = true;
    }
    req.annotations = kiln_attest::Annotations::parse(&args.annotation)
        .map_err(|e| Failure::Usage(format!("invalid --annotation: {e}")))?;
    if !req.annotations.is_empty()
        && let Some(o) = outputs.iter().find(|o| !o.holds_index())
    {
        return Err(not_yet(format!(
            "--annotation with a {} output ({})",
            o.kind(),
            o.asked_by()
        )));
    }
    let notes = kiln_worker::export::check_attestations(&req, outputs).map_err(Failure::Usage)?;
    Ok((req, notes))
}

/// Adds what the cli knows of the build to `req`'s provenance record: the
/// frontend options with BuildKit's names, the Dockerfile, the builder's
/// platform, the values of `--secret` (never to appear) and the image's
/// name (the SBOM's root package).
pub fn complete(
    req: &mut AttestRequest,
    args: &crate::args::BuildArgs,
    opts: &kiln_frontend::BuildOptions,
    dockerfile: &[u8],
    grants: &kiln_worker::ops::mounts::ExecGrants,
    image_names: &[String],
) {
    let rec = &mut req.record;
    rec.frontend = "dockerfile.v0".to_owned();
    rec.dockerfile_version = kiln_frontend::VERSION.to_owned();
    for (k, v) in &opts.build_args {
        rec.args.insert(format!("build-arg:{k}"), v.clone());
    }
    for (k, v) in &opts.labels {
        rec.args.insert(format!("label:{k}"), v.clone());
    }
    if let Some(t) = &opts.target {
        rec.args.insert("target".to_owned(), t.clone());
    }
    // No `platform`: BuildKit's `FilterArgs` leaves it out (with
    // `image-resolve-mode`, `cgroup-parent`, `cache-imports` and
    // `attest:*`, none of which kiln records) as specific to the host.
    if opts.no_cache {
        rec.args.insert("no-cache".to_owned(), String::new());
    }
    // buildx sends the build context and the Dockerfile as two locals, and
    // each named context as its value (a URL without its credentials) or,
    // for a directory, as `local:NAME` with a local of that name.
    rec.locals = vec!["context".to_owned(), "dockerfile".to_owned()];
    for name in opts.named_contexts.keys() {
        let given = args
            .build_contexts
            .iter()
            .filter_map(|c| c.split_once('='))
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .next_back()
            .unwrap_or_default();
        let value = match opts.named_contexts.get(name) {
            Some(kiln_frontend::NamedContext::Local { .. }) => {
                rec.locals.push(name.clone());
                format!("local:{name}")
            }
            _ => kiln_attest::provenance::redact_credentials(given),
        };
        rec.args.insert(format!("context:{name}"), value);
    }
    // `-f` names the Dockerfile by its file name (`Dockerfile` for stdin).
    rec.dockerfile_name = match args.file.as_deref() {
        Some("-") | None => "Dockerfile".to_owned(),
        Some(p) => std::path::Path::new(p)
            .file_name()
            .map_or_else(|| p.to_owned(), |n| n.to_string_lossy().into_owned()),
    };
    rec.dockerfile = dockerfile.to_vec();
    rec.builder_platform = kiln_llb::Platform::host().format();
    let mut values = Vec::new();
    for s in grants.secrets.values() {
        let v = String::from_utf8_lossy(&s.0).into_owned();
        let t = v.trim().to_owned();
        if t != v && !t.is_empty() {
            values.push(t);
        }
        values.push(v);
    }
    req.secret_values = values;
    req.is_secret_name = Some(kiln_frontend::lint::is_secret_key);
    req.image_name = image_names.first().cloned();
}

/// A git URL as the main build context, as fetched.
#[derive(Debug, Clone, Copy)]
pub struct GitContext<'a> {
    /// The URL as given.
    pub given: &'a str,
    pub remote: &'a str,
    pub git_ref: &'a str,
    pub subdir: &'a str,
    /// The commit checked out.
    pub commit: &'a str,
    /// The Dockerfile is not the repository's (`-f -`, an absolute `-f`).
    pub local_dockerfile: bool,
}

/// A git URL as the main build context (`kiln build URL`): BuildKit reads
/// it as a git source, so the provenance records it as one, not as the
/// local sources `context` and `dockerfile` the cli made of it: a resolved
/// dependency `REMOTE#REF` (credentials redacted) with the commit
/// (`sha1`, or `sha256` for a SHA-256 repository), `configSource.uri` the
/// URL as given (redacted), no locals for it, no vcs information.
/// BuildKit's `findMaterial` gives `configSource` the commit's digest (and
/// the URL in fragment form) when the URL matches the dependency's, which
/// it compares before redacting: only a URL without credentials does.
/// A Dockerfile read from outside the repository (`-f -`, an absolute
/// `-f`), which buildx sends as the local `dockerfile`, stays one.
pub fn git_context(req: &mut AttestRequest, git: &GitContext<'_>) {
    let GitContext {
        given,
        remote,
        git_ref,
        subdir,
        commit,
        local_dockerfile,
    } = *git;
    let with_ref = if git_ref.is_empty() {
        remote.to_owned()
    } else {
        format!("{remote}#{git_ref}")
    };
    let alg = if commit.len() == 64 { "sha256" } else { "sha1" };
    let digest = BTreeMap::from([(alg.to_owned(), commit.to_owned())]);
    let material = kiln_attest::slsa::Material {
        uri: kiln_attest::provenance::redact_credentials(&with_ref),
        digest: digest.clone(),
    };
    let rec = &mut req.record;
    rec.config_uri = Some(if material.uri == with_ref {
        let subdir = kiln_frontend::paths::join(&["/", subdir])
            .trim_start_matches('/')
            .to_owned();
        let uri = match (git_ref.is_empty(), subdir.is_empty()) {
            (true, true) => remote.to_owned(),
            (_, true) => with_ref.clone(),
            _ => format!("{remote}#{git_ref}:{subdir}"),
        };
        (uri, digest)
    } else {
        (
            kiln_attest::provenance::redact_credentials(given),
            BTreeMap::new(),
        )
    });
    rec.locals
        .retain(|l| l != "context" && (local_dockerfile || l != "dockerfile"));
    rec.vcs.clear();
    req.context_material = Some(material);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_git(given: &str, remote: &str, commit: &str) -> AttestRequest {
        let mut req = AttestRequest::default();
        req.record.locals = vec!["context".into(), "dockerfile".into(), "named".into()];
        req.record.vcs.insert("revision".into(), "abc".into());
        git_context(
            &mut req,
            &GitContext {
                given,
                remote,
                git_ref: "v1",
                subdir: "./src/",
                commit,
                local_dockerfile: false,
            },
        );
        req
    }

    #[test]
    fn a_git_context_is_a_dependency_not_a_local() {
        let sha1 = "a".repeat(40);
        let req = with_git(
            "http://user:pass@host/repo.git#v1:src",
            "http://user:pass@host/repo.git",
            &sha1,
        );
        let m = req.context_material.expect("material");
        assert_eq!(m.uri, "http://xxxxx:xxxxx@host/repo.git#v1");
        assert_eq!(m.digest["sha1"], sha1);
        assert_eq!(req.record.locals, ["named"]);
        assert!(req.record.vcs.is_empty());
        // As BuildKit's findMaterial: a URL with credentials does not match
        // its (redacted) dependency, so configSource has no digest.
        let (uri, digest) = req.record.config_uri.expect("config source");
        assert_eq!(uri, "http://xxxxx:xxxxx@host/repo.git#v1:src");
        assert!(digest.is_empty());
    }

    #[test]
    fn a_git_context_without_credentials_names_its_commit() {
        let sha256 = "b".repeat(64);
        let req = with_git(
            "http://host/repo.git#v1:./src/",
            "http://host/repo.git",
            &sha256,
        );
        let (uri, digest) = req.record.config_uri.expect("config source");
        assert_eq!(uri, "http://host/repo.git#v1:src");
        assert_eq!(digest["sha256"], sha256);
    }
}
