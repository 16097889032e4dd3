//! Why a step ran (`kiln build --explain`): every step that executes is
//! compared with the last time the same step of the same Dockerfile ran, and
//! the difference is said in words — the instruction text, a build argument
//! or other environment variable, the base image digest, the context files
//! it copies (up to ten paths named), or which input step changed.
//!
//! A *site* is a step's place in a build: the context directory, the
//! Dockerfile, the stage and the step's position (`[build 3/4]`). What a
//! step read when it last ran is kept in `<root>/explain/<site hash>.json`,
//! written (atomically) only when a step executes, so a cached rebuild
//! writes nothing. Host paths name the site file but never enter a cache
//! key: this module only reads what the keys were made from.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;

use kiln_llb::op::{Op, SourceOp};
use kiln_llb::{Digest, Vertex};
use kiln_solver::Key;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::state::State;
use crate::value::Value;

/// Paths named at most in an explanation.
const MAX_PATHS: usize = 10;

/// What a step read when it ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The progress name (`[build 3/4] COPY a.txt /a.txt`).
    pub name: String,
    pub key: String,
    /// A RUN step's environment (build arguments included), `KEY=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// A base image: its reference and digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<(String, String)>,
    pub inputs: Vec<InputRecord>,
}

/// One input of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputRecord {
    /// Another step's result: its key and name.
    Step { key: String, name: String },
    /// Files of the build context the step reads: path → content digest
    /// (symlinks: `-> target`).
    Files { files: BTreeMap<String, String> },
}

/// Where records are kept and what names steps have.
#[derive(Debug, Default)]
pub struct Explainer {
    /// Hash of the context directory and Dockerfile: sites of different
    /// projects never meet.
    pub scope: String,
    /// Vertex digest → progress name.
    pub names: HashMap<Digest, String>,
}

impl Explainer {
    fn site_path(&self, state: &State, v: &Vertex) -> Option<PathBuf> {
        let name = &v.meta.name;
        // Only Dockerfile steps have a place: `[stage n/m]`.
        let position = name.strip_prefix('[')?.split_once(']')?.0;
        if !position.contains('/') {
            return None;
        }
        // `COPY --link` makes a copy and a merge at one position.
        let kind = match &v.op {
            Op::Source(_) => "source",
            Op::File(_) => "file",
            Op::Exec(_) => "exec",
            Op::Merge(_) => "merge",
        };
        let site = format!(
            "{}\0{}\0{}\0{kind}",
            self.scope,
            v.meta.stage.as_deref().unwrap_or_default(),
            position
        );
        Some(
            state
                .root
                .join("explain")
                .join(format!("{}.json", Digest::of(site.as_bytes()).hex())),
        )
    }

    /// The record of `v` as it runs now.
    pub fn record(
        &self,
        v: &Vertex,
        key: Option<Key>,
        inputs: &[(Option<Key>, &Value)],
        files: &dyn Fn(u32) -> Option<BTreeMap<String, String>>,
    ) -> StepRecord {
        let mut r = StepRecord {
            name: v.meta.name.clone(),
            key: key.map(|k| k.to_hex()).unwrap_or_default(),
            ..StepRecord::default()
        };
        match &v.op {
            Op::Exec(e) => r.env = e.env.clone(),
            Op::Source(SourceOp::Image {
                reference, digest, ..
            }) => {
                r.image = Some((
                    reference.clone(),
                    digest.clone().map(|d| d.to_string()).unwrap_or_default(),
                ));
            }
            _ => {}
        }
        for (i, (k, value)) in inputs.iter().enumerate() {
            let name = v
                .inputs
                .get(i)
                .and_then(|d| self.names.get(d))
                .cloned()
                .unwrap_or_default();
            match (k, value) {
                (Some(k), _) => r.inputs.push(InputRecord::Step {
                    key: k.to_hex(),
                    name,
                }),
                (None, Value::Context { .. }) => r.inputs.push(InputRecord::Files {
                    files: files(i as u32).unwrap_or_default(),
                }),
                (None, Value::Fs { .. }) => r.inputs.push(InputRecord::Step {
                    key: String::new(),
                    name,
                }),
            }
        }
        r
    }

    /// Says why `now` runs, compared with the site's last record; returns
    /// the reason and the site's record file (for [`keep`] once the step
    /// succeeded). `None` for steps without a site.
    pub fn explain(
        &self,
        state: &State,
        v: &Vertex,
        now: &StepRecord,
    ) -> Option<(String, PathBuf)> {
        let path = self.site_path(state, v)?;
        let before: Option<StepRecord> = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let why = match &before {
            None => "no earlier run of this step is recorded".to_owned(),
            Some(b) => difference(b, now),
        };
        Some((why, path))
    }
}

/// Keeps `r` as the record of its site, written atomically without an
/// fsync: it is written at every step that runs, and one lost or emptied by
/// a crash of the machine reads as none ([`Explainer::explain`]).
pub fn keep(path: &std::path::Path, r: &StepRecord) -> Result<(), Error> {
    Ok(kiln_store::state::write_json(
        path,
        r,
        kiln_oci::Durability::Volatile,
    )?)
}

/// The difference between two runs of a step, in words.
pub fn difference(before: &StepRecord, now: &StepRecord) -> String {
    if let (Some((r0, d0)), Some((r1, d1))) = (&before.image, &now.image)
        && d0 != d1
    {
        if r0 == r1 {
            return format!("base image {r1} changed: {} → {}", short(d0), short(d1));
        }
        return format!("base image changed: {r0} → {r1}");
    }
    if before.env != now.env {
        let old: BTreeMap<&str, &str> = before.env.iter().map(|e| split_env(e)).collect();
        let new: BTreeMap<&str, &str> = now.env.iter().map(|e| split_env(e)).collect();
        let mut changes = Vec::new();
        for (k, v) in &new {
            match old.get(k) {
                None => changes.push(format!("{k}={v} (new)")),
                Some(o) if o != v => changes.push(format!("{k}: {o} → {v}")),
                _ => {}
            }
        }
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            changes.push(format!("{k} (unset)"));
        }
        return format!(
            "build arguments or environment changed: {}",
            changes.join(", ")
        );
    }
    if before.name != now.name {
        return format!("the instruction changed (it was: {})", before.name);
    }
    let mut reasons = Vec::new();
    for (i, input) in now.inputs.iter().enumerate() {
        match (before.inputs.get(i), input) {
            (Some(InputRecord::Files { files: old }), InputRecord::Files { files: new }) => {
                if let Some(d) = file_changes(old, new) {
                    reasons.push(format!("the context files it reads changed: {d}"));
                }
            }
            (Some(InputRecord::Step { key: k0, .. }), InputRecord::Step { key: k1, name }) => {
                if k0 != k1 || k1.is_empty() {
                    reasons.push(format!("its input changed: {name}"));
                }
            }
            (None, _) => reasons.push("it has a new input".to_owned()),
            (Some(_), InputRecord::Step { name, .. }) => {
                reasons.push(format!("its input changed: {name}"));
            }
            (Some(_), InputRecord::Files { .. }) => {
                reasons.push("it reads the build context now".to_owned());
            }
        }
    }
    if !reasons.is_empty() {
        return reasons.join("; ");
    }
    if before.key == now.key && !now.key.is_empty() {
        return "its cached result was missing or unusable (pruned), or --no-cache".to_owned();
    }
    "its definition changed (an option not shown in its name)".to_owned()
}

fn split_env(e: &str) -> (&str, &str) {
    e.split_once('=').unwrap_or((e, ""))
}

fn short(d: &str) -> &str {
    d.get(..19).unwrap_or(d)
}

/// `a.txt (modified), b (added), c (removed)`, at most [`MAX_PATHS`] named.
fn file_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Option<String> {
    let mut changes = Vec::new();
    for (p, d) in new {
        match old.get(p) {
            None => changes.push(format!("{p} (added)")),
            Some(o) if o != d => changes.push(format!("{p} (modified)")),
            _ => {}
        }
    }
    for p in old.keys().filter(|p| !new.contains_key(*p)) {
        changes.push(format!("{p} (removed)"));
    }
    if changes.is_empty() {
        return None;
    }
    let more = changes.len().saturating_sub(MAX_PATHS);
    changes.truncate(MAX_PATHS);
    let mut s = changes.join(", ");
    if more > 0 {
        s.push_str(&format!(" and {more} more"));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> StepRecord {
        StepRecord {
            name: name.into(),
            key: "k1".into(),
            ..StepRecord::default()
        }
    }

    #[test]
    fn names_what_changed() {
        let a = rec("[2/3] RUN make");
        let mut b = rec("[2/3] RUN make install");
        assert_eq!(
            difference(&a, &b),
            "the instruction changed (it was: [2/3] RUN make)"
        );
        b.name = a.name.clone();
        let mut a2 = a.clone();
        a2.env = vec!["V=1".into(), "GONE=x".into()];
        b.env = vec!["V=2".into(), "NEW=y".into()];
        assert_eq!(
            difference(&a2, &b),
            "build arguments or environment changed: NEW=y (new), V: 1 → 2, GONE (unset)"
        );
        let files = |pairs: &[(&str, &str)]| InputRecord::Files {
            files: pairs
                .iter()
                .map(|(p, d)| (p.to_string(), d.to_string()))
                .collect(),
        };
        let mut c0 = a.clone();
        c0.inputs = vec![files(&[("/a", "1"), ("/b", "2"), ("/gone", "3")])];
        let mut c1 = a.clone();
        c1.inputs = vec![files(&[("/a", "1"), ("/b", "9"), ("/new", "4")])];
        assert_eq!(
            difference(&c0, &c1),
            "the context files it reads changed: /b (modified), /new (added), /gone (removed)"
        );
        let many: Vec<(String, String)> =
            (0..13).map(|i| (format!("/f{i:02}"), "x".into())).collect();
        let mut m1 = a.clone();
        m1.inputs = vec![InputRecord::Files {
            files: many.into_iter().collect(),
        }];
        let mut m0 = a.clone();
        m0.inputs = vec![files(&[])];
        assert!(difference(&m0, &m1).ends_with("/f09 (added) and 3 more"));
        assert_eq!(
            difference(&a, &a),
            "its cached result was missing or unusable (pruned), or --no-cache"
        );
    }

    #[test]
    fn base_image_digest() {
        let mut a = rec("[1/2] FROM busybox@sha256:aaa");
        a.image = Some((
            "docker.io/library/busybox:latest".into(),
            "sha256:aaaaaaaaaaaaaaaa".into(),
        ));
        let mut b = rec("[1/2] FROM busybox@sha256:bbb");
        b.image = Some((
            "docker.io/library/busybox:latest".into(),
            "sha256:bbbbbbbbbbbbbbbb".into(),
        ));
        assert_eq!(
            difference(&a, &b),
            "base image docker.io/library/busybox:latest changed: sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb"
        );
    }
}
