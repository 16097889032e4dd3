//! Provenance: what kiln records about a build ([`BuildRecord`]), turned
//! into a SLSA predicate ([`predicate`]) as BuildKit would write it, and
//! read back ([`Recipe::read`]) by `kiln verify`.
//!
//! What goes in, beyond BuildKit (the local sources, which BuildKit never
//! digests), in kiln's own metadata (`locals`), not among the materials
//! (v1: resolved dependencies), which hold what BuildKit's hold:
//!
//! * every local source (the build context, each `--build-context` directory)
//!   as a material `kiln-local://NAME` with kiln's content digest of it (the
//!   digest COPY computes: paths, types, modes, contents, link targets,
//!   `.dockerignore` applied);
//! * the Dockerfile as a material `kiln-local://dockerfile/NAME`, with the
//!   SHA-256 of its bytes (`sha256sum Dockerfile` gives it).
//!
//! [`Recipe::read`] gives both as its materials (and reads provenance
//! written before they moved, with them among the materials).
//!
//! Secrets: the values of `--secret` never reach kiln's graph and so never
//! the provenance; build arguments whose names look secret (BuildKit's
//! `SecretsUsedInArgOrEnv` words: `token`, `password`, `key`, …) are left
//! out of the parameters even in `mode=max`, their names listed in kiln's
//! metadata (`leftOut`), and every string of the predicate that contains
//! one of their values (an exec step's environment, a path) has it replaced
//! by `xxxxx`, as are the values of `--secret` if a caller passes them.
//! BuildKit records build arguments as given in `mode=max`; this is a
//! deliberate difference.

use std::collections::BTreeMap;

use crate::slsa::{
    BUILD_TYPE_V1, BUILD_TYPE_V02, BuildConfig, BuildDefinitionV1, BuildKitMetadata, BuildStep,
    BuilderV1, BuilderV02, CompletenessV1, CompletenessV02, ConfigSourceV1, ConfigSourceV02,
    Environment, ExternalParametersV1, InternalParametersV1, InvocationV02, KilnMetadata, LocalRef,
    Locations, Material, MetadataV1, MetadataV02, MountRef, PREDICATE_V1, PREDICATE_V02,
    Parameters, PredicateV1, PredicateV02, RunDetailsV1, Source, SourceInfo,
};

/// The URI scheme of kiln's local-source materials.
pub const LOCAL_SCHEME: &str = "kiln-local://";
/// What replaces a secret value found in a predicate.
pub const REDACTED: &str = "xxxxx";
/// Secret values shorter than this are not searched for in the predicate
/// (replacing every `1` would corrupt digests); their build arguments are
/// still left out.
pub const MIN_SCRUBBED_LEN: usize = 4;

/// `mode=min|max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// The materials, the frontend and its non-argument options: safe for
    /// every build.
    #[default]
    Min,
    /// Also build arguments and labels, secret and SSH ids, the Dockerfile
    /// and the graph of steps with their Dockerfile locations.
    Max,
}

/// `version=v0.2|v1`: v1 by default, as current BuildKit
/// (`docs/attestations/slsa-provenance.md`; BuildKit 0.13 defaulted to v0.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SlsaVersion {
    V02,
    #[default]
    V1,
}

impl SlsaVersion {
    /// The statement's `predicateType`.
    pub fn predicate_type(self) -> &'static str {
        match self {
            SlsaVersion::V02 => PREDICATE_V02,
            SlsaVersion::V1 => PREDICATE_V1,
        }
    }
}

/// `--provenance` / `--attest type=provenance` options.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Options {
    pub mode: Mode,
    pub version: SlsaVersion,
    /// `builder-id=`: SLSA `builder.id`.
    pub builder_id: Option<String>,
    /// `reproducible=true`: SLSA `metadata.reproducible`.
    pub reproducible: bool,
}

/// A step of the build graph for `mode=max`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct Step {
    /// The vertex digest (`sha256:…`).
    pub digest: String,
    /// The operation as JSON (kiln's op encoding).
    pub op: serde_json::Value,
    /// Indexes into the step list of the inputs, in order.
    #[serde(default)]
    pub inputs: Vec<usize>,
    /// Dockerfile lines (first, last), from 1.
    #[serde(default)]
    pub lines: Option<(u32, u32)>,
}

/// Everything kiln knows about one build (one platform's image), for its
/// provenance. (Deserialisable so tests can state one as data.)
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct BuildRecord {
    /// `dockerfile.v0`.
    pub frontend: String,
    /// Frontend options with BuildKit's names: `build-arg:K`, `label:K`,
    /// `target`, `platform`, `context:NAME`, `no-cache`,
    /// `force-network-mode`.
    pub args: BTreeMap<String, String>,
    /// The Dockerfile's name (`invocation.configSource.entryPoint`).
    pub dockerfile_name: String,
    /// The Dockerfile's bytes (`mode=max` includes them).
    #[serde(with = "text_bytes")]
    pub dockerfile: Vec<u8>,
    /// A remote context (git URL) and its digest, as `configSource`.
    pub config_uri: Option<(String, BTreeMap<String, String>)>,
    pub secrets: Vec<(String, bool)>,
    pub ssh: Vec<(String, bool)>,
    /// Local sources by name (`context`, `dockerfile`, named contexts).
    pub locals: Vec<String>,
    /// Images, git commits, HTTP downloads: BuildKit's materials.
    pub materials: Vec<Material>,
    /// The local sources and the Dockerfile (`kiln-local://`), with kiln's
    /// digests: kiln's metadata.
    pub local_materials: Vec<Material>,
    /// Whether every source is among the materials with a digest (never
    /// with a local source, which is no material: BuildKit's rule).
    pub materials_complete: bool,
    /// Whether a RUN step could reach the network.
    pub network: bool,
    /// The platform of the machine that built (`linux/amd64`).
    pub builder_platform: String,
    /// The Dockerfile frontend's version (`dockerfileVersion`; BuildKit
    /// writes it for the `dockerfile.v0` frontend).
    pub dockerfile_version: String,
    pub invocation_id: String,
    /// RFC 3339 times.
    pub started_on: String,
    pub finished_on: String,
    /// `vcs:source`, `vcs:revision`.
    pub vcs: BTreeMap<String, String>,
    /// The graph, in dependency order (inputs first), ending with the
    /// result step (BuildKit's last vertex: no op, the target as input).
    pub steps: Vec<Step>,
    /// The layer chains of the steps whose results are part of the image
    /// (`step<N>:<output>`), for `mode=max`.
    #[serde(skip)]
    pub layers: BTreeMap<String, Vec<Vec<crate::layout::Descriptor>>>,
}

/// Bytes as a JSON string (tests write Dockerfiles as text).
mod text_bytes {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

/// How to tell secrets: which build-argument names are secret, and values
/// that must never appear.
pub struct Secrets<'a> {
    pub is_secret_name: &'a dyn Fn(&str) -> bool,
    /// Values of `--secret` (or anything else) to scrub wherever they occur.
    pub values: Vec<String>,
}

impl std::fmt::Debug for Secrets<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("values", &self.values.len())
            .finish_non_exhaustive()
    }
}

/// A material for a local source: `kiln-local://NAME` with its digest.
pub fn local_material(name: &str, digest: &kiln_llb::Digest) -> Material {
    Material {
        uri: format!("{LOCAL_SCHEME}{name}"),
        digest: BTreeMap::from([("sha256".to_owned(), digest.hex())]),
    }
}

/// The parameters for `mode`, the options left out, and the values to
/// scrub from everything else.
fn parameters(
    rec: &BuildRecord,
    opts: &Options,
    secrets: &Secrets<'_>,
) -> (Parameters, Vec<String>, Vec<String>) {
    let mut args = BTreeMap::new();
    let mut left_out = Vec::new();
    let mut scrub: Vec<String> = secrets.values.clone();
    for (k, v) in &rec.args {
        let arg_name = k.strip_prefix("build-arg:");
        let secret = arg_name.is_some_and(|n| (secrets.is_secret_name)(n));
        if secret {
            scrub.push(v.clone());
        }
        let dropped =
            secret || (opts.mode == Mode::Min && (arg_name.is_some() || k.starts_with("label:")));
        if dropped {
            left_out.push(k.clone());
        } else {
            args.insert(k.clone(), v.clone());
        }
    }
    let max = opts.mode == Mode::Max;
    let refs = |v: &[(String, bool)]| {
        v.iter()
            .map(|(id, optional)| MountRef {
                id: id.clone(),
                optional: *optional,
            })
            .collect()
    };
    let p = Parameters {
        frontend: rec.frontend.clone(),
        args,
        secrets: if max { refs(&rec.secrets) } else { Vec::new() },
        ssh: if max { refs(&rec.ssh) } else { Vec::new() },
        locals: rec
            .locals
            .iter()
            .map(|n| LocalRef { name: n.clone() })
            .collect(),
    };
    scrub.retain(|v| v.len() >= MIN_SCRUBBED_LEN);
    scrub.sort();
    scrub.dedup();
    (p, left_out, scrub)
}

/// `buildConfig` and `source` for `mode=max`.
fn definition(rec: &BuildRecord) -> (BuildConfig, Source) {
    let id = |i: usize| format!("step{i}");
    let mut bc = BuildConfig::default();
    let mut src = Source::default();
    for (i, s) in rec.steps.iter().enumerate() {
        bc.definition.push(BuildStep {
            id: id(i),
            op: s.op.clone(),
            inputs: s.inputs.iter().map(|j| format!("{}:0", id(*j))).collect(),
        });
        bc.digest_mapping.insert(s.digest.clone(), id(i));
        if let Some((start, end)) = s.lines {
            let line = |n: u32| crate::slsa::Position {
                line: i32::try_from(n).unwrap_or(i32::MAX),
                character: 0,
            };
            src.locations.insert(
                id(i),
                Locations {
                    locations: vec![crate::slsa::Location {
                        source_index: 0,
                        ranges: vec![crate::slsa::Range {
                            start: line(start),
                            end: line(end),
                        }],
                    }],
                },
            );
        }
    }
    src.infos.push(SourceInfo {
        filename: rec.dockerfile_name.clone(),
        language: "Dockerfile".to_owned(),
        data: rec.dockerfile.clone(),
    });
    (bc, src)
}

/// The predicate (`predicateType`, JSON) of `rec` with `opts`, secrets
/// left out and scrubbed.
pub fn predicate(
    rec: &BuildRecord,
    opts: &Options,
    secrets: &Secrets<'_>,
) -> (&'static str, serde_json::Value) {
    let (params, left_out, scrub) = parameters(rec, opts, secrets);
    let complete_params = !rec.frontend.is_empty() && left_out.is_empty();
    let hermetic = rec.materials_complete && !rec.network;
    let max = opts.mode == Mode::Max;
    let (build_config, source) = if max {
        let (b, s) = definition(rec);
        (Some(b), Some(s))
    } else {
        (None, None)
    };
    let buildkit = BuildKitMetadata {
        vcs: rec.vcs.clone(),
        source,
        layers: if max {
            rec.layers.clone()
        } else {
            BTreeMap::new()
        },
    };
    let kiln = KilnMetadata {
        left_out,
        locals: rec.local_materials.clone(),
    };
    let (config_uri, config_digest) = rec.config_uri.clone().unwrap_or_default();
    let builder_id = opts.builder_id.clone().unwrap_or_default();
    let value = match opts.version {
        SlsaVersion::V02 => serde_json::to_value(PredicateV02 {
            builder: BuilderV02 { id: builder_id },
            build_type: BUILD_TYPE_V02.to_owned(),
            materials: rec.materials.clone(),
            invocation: InvocationV02 {
                config_source: ConfigSourceV02 {
                    uri: config_uri,
                    digest: config_digest,
                    entry_point: rec.dockerfile_name.clone(),
                },
                parameters: params,
                environment: Environment {
                    platform: rec.builder_platform.clone(),
                    dockerfile_version: rec.dockerfile_version.clone(),
                },
            },
            build_config,
            metadata: Some(MetadataV02 {
                invocation_id: rec.invocation_id.clone(),
                started_on: Some(rec.started_on.clone()).filter(|s| !s.is_empty()),
                finished_on: Some(rec.finished_on.clone()).filter(|s| !s.is_empty()),
                completeness: CompletenessV02 {
                    parameters: complete_params,
                    environment: true,
                    materials: rec.materials_complete,
                },
                reproducible: opts.reproducible,
                buildkit,
                hermetic,
                kiln,
            }),
        }),
        SlsaVersion::V1 => serde_json::to_value(PredicateV1 {
            build_definition: BuildDefinitionV1 {
                build_type: BUILD_TYPE_V1.to_owned(),
                external_parameters: ExternalParametersV1 {
                    config_source: ConfigSourceV1 {
                        uri: config_uri,
                        digest: config_digest,
                        path: rec.dockerfile_name.clone(),
                    },
                    request: params,
                },
                internal_parameters: InternalParametersV1 {
                    build_config,
                    builder_platform: rec.builder_platform.clone(),
                    dockerfile_version: rec.dockerfile_version.clone(),
                },
                resolved_dependencies: rec.materials.clone(),
            },
            run_details: RunDetailsV1 {
                builder: BuilderV1 { id: builder_id },
                metadata: Some(MetadataV1 {
                    invocation_id: rec.invocation_id.clone(),
                    started_on: Some(rec.started_on.clone()).filter(|s| !s.is_empty()),
                    finished_on: Some(rec.finished_on.clone()).filter(|s| !s.is_empty()),
                    buildkit,
                    hermetic,
                    completeness: CompletenessV1 {
                        request: complete_params,
                        resolved_dependencies: rec.materials_complete,
                    },
                    reproducible: opts.reproducible,
                    kiln,
                }),
            },
        }),
    };
    // The structs above have string keys only: serialising cannot fail.
    let mut value = value.unwrap_or(serde_json::Value::Null);
    scrub_value(&mut value, &scrub);
    (opts.version.predicate_type(), value)
}

/// A URL with the credentials of its user information replaced by
/// [`REDACTED`] (BuildKit's `urlutil.RedactCredentials`): `user:pass@` →
/// `xxxxx:xxxxx@`, `user@` → `xxxxx@`, `:pass@` → `:xxxxx@`. Anything else
/// is returned as it is.
pub fn redact_credentials(s: &str) -> String {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return s.to_owned();
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    let masked = match (user.is_empty(), password) {
        (false, Some(_)) => format!("{REDACTED}:{REDACTED}"),
        (false, None) => REDACTED.to_owned(),
        (true, Some(_)) => format!(":{REDACTED}"),
        (true, None) => String::new(),
    };
    format!("{scheme}://{masked}@{host}{tail}")
}

/// Replaces every occurrence of each of `values` in the strings (and keys)
/// of `v` by [`REDACTED`].
pub fn scrub_value(v: &mut serde_json::Value, values: &[String]) {
    if values.is_empty() {
        return;
    }
    let scrub = |s: &str| -> Option<String> {
        values.iter().any(|x| s.contains(x.as_str())).then(|| {
            values
                .iter()
                .fold(s.to_owned(), |acc, x| acc.replace(x.as_str(), REDACTED))
        })
    };
    match v {
        serde_json::Value::String(s) => {
            if let Some(n) = scrub(s) {
                *s = n;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| scrub_value(x, values)),
        serde_json::Value::Object(m) => {
            let keys: Vec<String> = m.keys().filter(|k| scrub(k).is_some()).cloned().collect();
            for k in keys {
                if let Some(x) = m.remove(&k) {
                    m.insert(scrub(&k).unwrap_or(k), x);
                }
            }
            m.values_mut().for_each(|x| scrub_value(x, values));
        }
        _ => {}
    }
}

/// What `kiln verify` needs from a provenance predicate of either version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipe {
    pub predicate_type: String,
    pub frontend: String,
    pub args: BTreeMap<String, String>,
    pub entry_point: String,
    pub secrets: Vec<String>,
    /// BuildKit's materials, then kiln's local ones (`kiln-local://`).
    pub materials: Vec<Material>,
    /// Whether the parameters are all there (BuildKit's completeness).
    pub complete: bool,
    /// Options left out (kiln's metadata).
    pub left_out: Vec<String>,
    pub builder_platform: String,
    /// Whether the graph is recorded (`mode=max`).
    pub max: bool,
}

/// A predicate that is not SLSA provenance as kiln reads it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("unsupported provenance predicate type {0:?}")]
    UnknownType(String),
    #[error("invalid {kind} provenance: {source}")]
    Invalid {
        kind: &'static str,
        source: serde_json::Error,
    },
}

impl Recipe {
    /// Reads a v0.2 or v1 predicate.
    pub fn read(predicate_type: &str, v: &serde_json::Value) -> Result<Recipe, ReadError> {
        match predicate_type {
            PREDICATE_V02 => {
                let p: PredicateV02 =
                    serde_json::from_value(v.clone()).map_err(|source| ReadError::Invalid {
                        kind: "SLSA v0.2",
                        source,
                    })?;
                let md = p.metadata.unwrap_or_default();
                Ok(Recipe {
                    predicate_type: predicate_type.to_owned(),
                    frontend: p.invocation.parameters.frontend.clone(),
                    args: p.invocation.parameters.args.clone(),
                    entry_point: p.invocation.config_source.entry_point,
                    secrets: p
                        .invocation
                        .parameters
                        .secrets
                        .iter()
                        .map(|s| s.id.clone())
                        .collect(),
                    materials: p.materials.into_iter().chain(md.kiln.locals).collect(),
                    complete: md.completeness.parameters,
                    left_out: md.kiln.left_out,
                    builder_platform: p.invocation.environment.platform,
                    max: p.build_config.is_some(),
                })
            }
            PREDICATE_V1 => {
                let p: PredicateV1 =
                    serde_json::from_value(v.clone()).map_err(|source| ReadError::Invalid {
                        kind: "SLSA v1",
                        source,
                    })?;
                let md = p.run_details.metadata.unwrap_or_default();
                let ext = p.build_definition.external_parameters;
                Ok(Recipe {
                    predicate_type: predicate_type.to_owned(),
                    frontend: ext.request.frontend.clone(),
                    args: ext.request.args.clone(),
                    entry_point: ext.config_source.path,
                    secrets: ext.request.secrets.iter().map(|s| s.id.clone()).collect(),
                    materials: p
                        .build_definition
                        .resolved_dependencies
                        .into_iter()
                        .chain(md.kiln.locals)
                        .collect(),
                    complete: md.completeness.request,
                    left_out: md.kiln.left_out,
                    builder_platform: p.build_definition.internal_parameters.builder_platform,
                    max: p
                        .build_definition
                        .internal_parameters
                        .build_config
                        .is_some(),
                })
            }
            other => Err(ReadError::UnknownType(other.to_owned())),
        }
    }

    /// The digest (`sha256:…`) of the local-source material `name`.
    pub fn local_digest(&self, name: &str) -> Option<String> {
        let uri = format!("{LOCAL_SCHEME}{name}");
        self.materials
            .iter()
            .find(|m| m.uri == uri)
            .and_then(|m| m.digest.get("sha256"))
            .map(|h| format!("sha256:{h}"))
    }

    /// The Dockerfile material: (name, `sha256:…`).
    pub fn dockerfile(&self) -> Option<(String, String)> {
        let prefix = format!("{LOCAL_SCHEME}dockerfile/");
        self.materials.iter().find_map(|m| {
            let name = m.uri.strip_prefix(&prefix)?;
            Some((
                name.to_owned(),
                format!("sha256:{}", m.digest.get("sha256")?),
            ))
        })
    }
}

impl Options {
    /// The options of `--provenance`/`--attest type=provenance` given as
    /// `key=value` attributes (`mode`, `version`, `builder-id`,
    /// `reproducible`; `filename` and `inline-only` are accepted, as
    /// BuildKit does, and have no use here).
    pub fn from_attrs(attrs: &BTreeMap<String, String>) -> Result<Options, String> {
        let mut o = Options {
            // BuildKit's default when provenance is asked for without a mode.
            mode: Mode::Max,
            ..Options::default()
        };
        for (k, v) in attrs {
            match k.as_str() {
                "mode" => {
                    o.mode = match v.as_str() {
                        "min" => Mode::Min,
                        "max" | "full" => Mode::Max,
                        _ => {
                            return Err(format!(
                                "invalid provenance mode {v:?}: expected min or max"
                            ));
                        }
                    }
                }
                "version" => {
                    o.version = match v.as_str() {
                        "v0.2" => SlsaVersion::V02,
                        "v1" => SlsaVersion::V1,
                        _ => {
                            return Err(format!(
                                "invalid provenance version {v:?}: expected v0.2 or v1"
                            ));
                        }
                    }
                }
                "builder-id" => o.builder_id = Some(v.clone()),
                "reproducible" => {
                    o.reproducible = parse_bool(v).ok_or_else(|| {
                        format!("invalid provenance reproducible {v:?}: expected true or false")
                    })?
                }
                "filename" | "inline-only" => {}
                _ => return Err(format!("unknown provenance option {k:?}")),
            }
        }
        Ok(o)
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}
