//! in-toto statements: a predicate about subjects named by digest.
//! <https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md>

use std::collections::BTreeMap;

use kiln_llb::Digest;
use serde::{Deserialize, Serialize};

/// `_type` of current BuildKit's statements, whatever their predicate
/// (BuildKit 0.13 wrote `https://in-toto.io/Statement/v0.1`).
pub const STATEMENT_V1: &str = "https://in-toto.io/Statement/v1";
/// The media type of an in-toto statement blob (an attestation layer).
pub const MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// The layer annotation naming the predicate type.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

/// One subject: a name and its digests (`{"sha256": "<hex>"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    pub fn new(name: &str, digest: &Digest) -> Subject {
        Subject {
            name: name.to_owned(),
            digest: BTreeMap::from([("sha256".to_owned(), digest.hex())]),
        }
    }

    /// The sha256 digest, if there is one.
    pub fn sha256(&self) -> Option<Digest> {
        self.digest
            .get("sha256")
            .and_then(|h| format!("sha256:{h}").parse().ok())
    }
}

/// A statement: `_type`, `subject`, `predicateType`, `predicate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub kind: String,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    #[serde(default)]
    pub subject: Vec<Subject>,
    pub predicate: serde_json::Value,
}

impl Statement {
    /// A statement of `predicate_type` about `subjects`.
    pub fn new(
        kind: &str,
        predicate_type: &str,
        subjects: Vec<Subject>,
        predicate: serde_json::Value,
    ) -> Statement {
        Statement {
            kind: kind.to_owned(),
            predicate_type: predicate_type.to_owned(),
            subject: subjects,
            predicate,
        }
    }
}

/// The subjects BuildKit gives an image's attestations: one per image name,
/// as a purl with the platform (`pkg:docker/x/y@tag?platform=linux%2Famd64`),
/// each with the image manifest's digest. Without names: one subject `_`
/// (the attestation-storage document's example), so the statement still
/// names what it is about.
pub fn image_subjects(
    names: &[String],
    platform: &kiln_llb::Platform,
    manifest: &Digest,
) -> Vec<Subject> {
    let mut out: Vec<Subject> = names
        .iter()
        .filter_map(|n| crate::purl::image_purl("docker", n, Some(platform)))
        .map(|name| Subject::new(&name, manifest))
        .collect();
    if out.is_empty() {
        out.push(Subject::new("_", manifest));
    }
    out
}
