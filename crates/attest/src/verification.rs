//! `https://kiln.dev/verification/v1`: what `kiln verify` checked when a
//! rebuild from an image's provenance gave the same image, bit for bit.
//!
//! ```json
//! {
//!   "verifier": {"id": "https://kiln.dev/kiln", "version": "0.1.0"},
//!   "timeVerified": "2026-11-27T10:00:00Z",
//!   "provenance": {"predicateType": "https://slsa.dev/provenance/v0.2",
//!                  "digest": {"sha256": "<the provenance statement's blob>"}},
//!   "result": "identical",
//!   "rebuilt": {"digest": {"sha256": "<the rebuilt manifest = the subject>"}},
//!   "checked": {
//!     "materials": [{"uri": "pkg:docker/busybox@latest?platform=linux%2Famd64",
//!                    "digest": {"sha256": "…"}}, …],
//!     "parameters": {"build-arg:VERSION": "1.0", …}
//!   }
//! }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::slsa::{DigestSet, Material};

/// The predicate type.
pub const PREDICATE: &str = "https://kiln.dev/verification/v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub verifier: Verifier,
    #[serde(rename = "timeVerified")]
    pub time_verified: String,
    pub provenance: ProvenanceRef,
    /// `identical`.
    pub result: String,
    pub rebuilt: Rebuilt,
    pub checked: Checked,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verifier {
    pub id: String,
    pub version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenanceRef {
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub digest: DigestSet,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebuilt {
    pub digest: DigestSet,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    pub materials: Vec<Material>,
    pub parameters: BTreeMap<String, String>,
}
