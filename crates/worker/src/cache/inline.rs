//! `--cache-to type=inline`: the records of a result in its image config.

use std::collections::HashSet;

use kiln_llb::Digest;
use kiln_solver::Key;

use super::error::CacheError;
use super::format::{CacheConfig, CacheLayer, CacheLink, CacheRecord};
use super::lazy::canonical;
use crate::error::Error;
use crate::state::State;
use crate::value::LayerRef;

/// The records of a result an inline cache holds (`--cache-to
/// type=inline`): those whose filesystem is a prefix of the result's, as
/// `mode=min`, each by its number of layers; and the links to them.
#[derive(Debug, Clone, Default)]
pub struct InlineRecords {
    records: Vec<(Key, usize)>,
    links: Vec<(Key, Key)>,
}

impl InlineRecords {
    /// Selects the records of `result` (its layers, bottom first) among
    /// what the solve saw.
    pub fn select(
        state: &State,
        records: &[(Key, Vec<LayerRef>)],
        links: &[(Key, Key)],
        result: &[LayerRef],
    ) -> InlineRecords {
        let result: Vec<LayerRef> = result.iter().map(|l| canonical(state, l)).collect();
        let records: Vec<(Key, usize)> = records
            .iter()
            .filter_map(|(k, ls)| {
                let ls: Vec<LayerRef> = ls.iter().map(|l| canonical(state, l)).collect();
                (!ls.is_empty() && ls.len() <= result.len() && result[..ls.len()] == ls[..])
                    .then_some((*k, ls.len()))
            })
            .collect();
        let written: HashSet<Key> = records.iter().map(|r| r.0).collect();
        let links = links
            .iter()
            .filter(|(_, t)| written.contains(t))
            .copied()
            .collect();
        InlineRecords { records, links }
    }

    /// The cache config to put in the image config, whose layers have
    /// `diff_ids` (blob `i` is the image's layer `i`).
    pub fn config(&self, diff_ids: &[Digest]) -> Result<serde_json::Value, Error> {
        let config = CacheConfig {
            version: 1,
            layers: diff_ids
                .iter()
                .enumerate()
                .map(|(blob, d)| CacheLayer {
                    diff_id: *d,
                    blob,
                    // The image's history dates its layers
                    // (`format::inline_config`).
                    created: None,
                })
                .collect(),
            records: self
                .records
                .iter()
                .filter(|(_, n)| *n <= diff_ids.len())
                .map(|(key, n)| CacheRecord {
                    key: *key,
                    layers: (0..*n).collect(),
                    age: 0,
                })
                .collect(),
            mounts: Vec::new(),
            links: self
                .links
                .iter()
                .map(|(key, target)| CacheLink {
                    key: *key,
                    target: *target,
                })
                .collect(),
        };
        serde_json::to_value(&config).map_err(|e| CacheError::EncodeInline(e).into())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
