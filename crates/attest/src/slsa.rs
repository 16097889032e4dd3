//! The SLSA provenance predicates as BuildKit writes them: v0.2 with
//! BuildKit 0.13's types (`solver/llbsolver/provenance/types`), v1 with
//! current BuildKit's (`ProvenancePredicateSLSA1`). Field names and
//! omission rules follow the Go structs (`omitempty`), so a tool that
//! decodes BuildKit's provenance decodes kiln's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `predicateType` of SLSA provenance v0.2.
pub const PREDICATE_V02: &str = "https://slsa.dev/provenance/v0.2";
/// `predicateType` of SLSA provenance v1.
pub const PREDICATE_V1: &str = "https://slsa.dev/provenance/v1";
/// `buildType` of v0.2 provenance.
pub const BUILD_TYPE_V02: &str = "https://mobyproject.org/buildkit@v1";
/// `buildType` of v1 provenance.
pub const BUILD_TYPE_V1: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
/// Where kiln's own metadata goes in a v0.2 predicate's `metadata`.
pub const KILN_METADATA_V02: &str = "https://kiln.dev/kiln@v1#metadata";

fn is_false(b: &bool) -> bool {
    !*b
}

/// A set of digests by algorithm (`{"sha256": "<hex>"}`).
pub type DigestSet = BTreeMap<String, String>;

/// A material (v0.2) or resolved dependency (v1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Material {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: DigestSet,
}

/// `invocation.parameters` (v0.2) / `externalParameters.request` (v1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameters {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub frontend: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<MountRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<MountRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locals: Vec<LocalRef>,
}

/// A secret or SSH agent a build used, by id (never its value).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRef {
    pub id: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
}

/// A local source (build context) by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRef {
    pub name: String,
}

/// `buildConfig`: the build's graph, one step per vertex.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildConfig {
    #[serde(
        rename = "llbDefinition",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub definition: Vec<BuildStep>,
    #[serde(
        rename = "digestMapping",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub digest_mapping: BTreeMap<String, String>,
}

/// One step of the graph: its id (`step3`), its operation, its inputs
/// (`step1:0`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildStep {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub op: serde_json::Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
}

/// `metadata["…#metadata"].source`: the Dockerfile and where each step
/// comes from in it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Source {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub locations: BTreeMap<String, Locations>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub infos: Vec<SourceInfo>,
}

/// BuildKit's `pb.Locations`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Locations {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
}

/// BuildKit's `pb.Location`: ranges of one source file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    #[serde(rename = "sourceIndex", default, skip_serializing_if = "is_zero")]
    pub source_index: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Range>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// BuildKit's `pb.Range` (lines from 1; characters are not recorded).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: Position,
    pub end: Position,
}

/// BuildKit's `pb.Position`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub line: i32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub character: i32,
}

/// One source file (the Dockerfile): its name, language and bytes
/// (base64 in JSON, as Go writes `[]byte`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filename: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub language: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "base64_bytes")]
    pub data: Vec<u8>,
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// `metadata["https://mobyproject.org/buildkit@v1#metadata"]` (v0.2) and
/// `runDetails.metadata.buildkit_metadata` (v1).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildKitMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vcs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// `mode=max`: the layers of each step whose result is part of the
    /// image, keyed `step<N>:<output>`, each a list of layer chains.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layers: BTreeMap<String, Vec<Vec<crate::layout::Descriptor>>>,
}

/// kiln's own metadata: what it left out of the parameters and why the
/// provenance is not a complete recipe, and the digests of the local
/// sources, which BuildKit does not record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KilnMetadata {
    /// Frontend options left out (`build-arg:TOKEN`): secret-looking build
    /// arguments, and in `mode=min` every build argument and label.
    #[serde(rename = "leftOut", default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    /// The local sources with kiln's content digests
    /// (`kiln-local://context`, `kiln-local://dockerfile/NAME`): materials
    /// in the form of BuildKit's, kept out of its list of materials, which
    /// names no local source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locals: Vec<Material>,
}

impl KilnMetadata {
    fn is_empty(&self) -> bool {
        self.left_out.is_empty() && self.locals.is_empty()
    }
}

// ---- v0.2 ----

/// The v0.2 predicate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PredicateV02 {
    pub builder: BuilderV02,
    #[serde(rename = "buildType")]
    pub build_type: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub materials: Vec<Material>,
    #[serde(default)]
    pub invocation: InvocationV02,
    #[serde(
        rename = "buildConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub build_config: Option<BuildConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataV02>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderV02 {
    #[serde(default)]
    pub id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InvocationV02 {
    #[serde(rename = "configSource", default)]
    pub config_source: ConfigSourceV02,
    #[serde(default)]
    pub parameters: Parameters,
    #[serde(default)]
    pub environment: Environment,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSourceV02 {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: DigestSet,
    #[serde(
        rename = "entryPoint",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub entry_point: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    #[serde(default)]
    pub platform: String,
    /// The version of the Dockerfile frontend (kiln's is built in: the
    /// `kiln-frontend` crate's version).
    #[serde(
        rename = "dockerfileVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub dockerfile_version: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataV02 {
    #[serde(
        rename = "buildInvocationID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub invocation_id: String,
    #[serde(
        rename = "buildStartedOn",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub started_on: Option<String>,
    #[serde(
        rename = "buildFinishedOn",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_on: Option<String>,
    #[serde(default)]
    pub completeness: CompletenessV02,
    #[serde(default)]
    pub reproducible: bool,
    #[serde(rename = "https://mobyproject.org/buildkit@v1#metadata", default)]
    pub buildkit: BuildKitMetadata,
    #[serde(
        rename = "https://mobyproject.org/buildkit@v1#hermetic",
        default,
        skip_serializing_if = "is_false"
    )]
    pub hermetic: bool,
    #[serde(
        rename = "https://kiln.dev/kiln@v1#metadata",
        default,
        skip_serializing_if = "KilnMetadata::is_empty"
    )]
    pub kiln: KilnMetadata,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletenessV02 {
    #[serde(default)]
    pub parameters: bool,
    #[serde(default)]
    pub environment: bool,
    #[serde(default)]
    pub materials: bool,
}

// ---- v1 ----

/// The v1 predicate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PredicateV1 {
    #[serde(rename = "buildDefinition")]
    pub build_definition: BuildDefinitionV1,
    #[serde(rename = "runDetails")]
    pub run_details: RunDetailsV1,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BuildDefinitionV1 {
    #[serde(rename = "buildType")]
    pub build_type: String,
    #[serde(rename = "externalParameters", default)]
    pub external_parameters: ExternalParametersV1,
    #[serde(rename = "internalParameters", default)]
    pub internal_parameters: InternalParametersV1,
    #[serde(
        rename = "resolvedDependencies",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub resolved_dependencies: Vec<Material>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExternalParametersV1 {
    #[serde(rename = "configSource", default)]
    pub config_source: ConfigSourceV1,
    #[serde(default)]
    pub request: Parameters,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSourceV1 {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uri: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: DigestSet,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InternalParametersV1 {
    #[serde(
        rename = "buildConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub build_config: Option<BuildConfig>,
    #[serde(rename = "builderPlatform", default)]
    pub builder_platform: String,
    /// As [`Environment::dockerfile_version`].
    #[serde(
        rename = "dockerfileVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub dockerfile_version: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunDetailsV1 {
    pub builder: BuilderV1,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataV1>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderV1 {
    #[serde(default)]
    pub id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataV1 {
    #[serde(
        rename = "invocationId",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub invocation_id: String,
    #[serde(rename = "startedOn", default, skip_serializing_if = "Option::is_none")]
    pub started_on: Option<String>,
    #[serde(
        rename = "finishedOn",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_on: Option<String>,
    #[serde(rename = "buildkit_metadata", default)]
    pub buildkit: BuildKitMetadata,
    #[serde(
        rename = "buildkit_hermetic",
        default,
        skip_serializing_if = "is_false"
    )]
    pub hermetic: bool,
    #[serde(rename = "buildkit_completeness", default)]
    pub completeness: CompletenessV1,
    #[serde(
        rename = "buildkit_reproducible",
        default,
        skip_serializing_if = "is_false"
    )]
    pub reproducible: bool,
    #[serde(
        rename = "kiln_metadata",
        default,
        skip_serializing_if = "KilnMetadata::is_empty"
    )]
    pub kiln: KilnMetadata,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletenessV1 {
    #[serde(default)]
    pub request: bool,
    #[serde(rename = "resolvedDependencies", default)]
    pub resolved_dependencies: bool,
}
