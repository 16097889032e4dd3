//! How [`LlbWorker`] answers the solver: each op kind's cache key and
//! execution, dispatched to the op's module of [`crate::ops`]
//! ([`crate::keys`] for the keys), with a small value lending the op what
//! it needs of the worker (made here: [`LlbWorker::file_ops`] and the
//! like). The worker's fields are its parent's ([`crate::worker`]), private
//! to the two; the ops never see the worker.

use std::collections::HashMap;

use kiln_llb::Vertex;
use kiln_llb::op::{FileAction, Op, SourceOp};
use kiln_solver::{Cx, Key, KeyInput, Resolved};

use super::{LlbWorker, Seen};
use crate::error::{Error, ImageError};
use crate::keys::{self, InputPart};
use crate::ops::exec::{self, ExecOps};
use crate::ops::file::{self, FileOps};
use crate::ops::git::{self, GitOps};
use crate::ops::http::{self, HttpOps};
use crate::ops::mounts::{self, MountOps};
use crate::ops::{image, merge};
use crate::value::{LayerRef, Value};

impl LlbWorker {
    /// `value`, just built by `v`: starts computing its new layer's diffID
    /// when the layer goes into the image.
    fn built(&self, v: &Vertex, value: Value) -> Value {
        if let (Some((vertices, clamp)), Value::Fs { layers }) = (&self.image_layers, &value)
            && vertices.contains(&v.digest)
            && let Some(LayerRef::Snapshot(last)) = layers.last()
        {
            kiln_store::layers::prefetch_diff_id(&self.state, last.clone(), *clamp);
        }
        value
    }

    fn file_ops(&self) -> FileOps<'_> {
        FileOps {
            layers: self.layers(),
            contexts: &self.contexts,
        }
    }

    fn mount_ops(&self) -> MountOps<'_> {
        MountOps {
            layers: self.layers(),
            contexts: &self.contexts,
            grants: &self.exec.grants,
            cache_mounts: &self.cache_mounts,
        }
    }

    fn exec_ops(&self) -> ExecOps<'_> {
        ExecOps {
            mounts: self.mount_ops(),
            executor: self.executor.as_ref(),
            settings: &self.exec,
        }
    }

    fn git_ops(&self) -> GitOps<'_> {
        GitOps {
            state: &self.state,
            resolved: &self.resolved,
            commits: &self.git_commits,
        }
    }

    fn http_ops(&self) -> HttpOps<'_> {
        HttpOps {
            state: &self.state,
            resolved: &self.resolved,
            downloads: &self.downloads,
        }
    }
}

impl kiln_solver::Worker for LlbWorker {
    type Payload = Vertex;
    type Value = Value;
    type Error = Error;

    fn cache_key(
        &self,
        v: &Vertex,
        inputs: &[KeyInput<Value>],
        _cx: &Cx,
    ) -> Result<Option<Key>, Error> {
        let key = self.key_of(v, inputs)?;
        if self.explainer.is_some()
            && let Ok(mut m) = self.seen.lock()
        {
            m.insert(
                v.digest,
                Seen {
                    key,
                    files: HashMap::new(),
                },
            );
        }
        Ok(key)
    }

    fn execute(&self, v: &Vertex, inputs: &[Resolved<Value>], cx: &Cx) -> Result<Value, Error> {
        let Some(x) = &self.explainer else {
            return self.run_op(v, inputs, cx);
        };
        if matches!(v.op, Op::Source(SourceOp::Local { .. })) {
            return self.run_op(v, inputs, cx);
        }
        let mut seen = self
            .seen
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&v.digest))
            .unwrap_or_default();
        // The context files the step reads, listed now that it runs (the
        // stat cache makes this a walk, not a read).
        if let Op::File(f) = &v.op {
            for (i, input) in inputs.iter().enumerate() {
                if let (None, Value::Context { name }) = (&input.key, &input.value) {
                    let files = seen.files.entry(i as u32).or_default();
                    file::context_reads(&self.contexts, &f.actions, i as u32, name, Some(files))?;
                }
            }
        }
        let pairs: Vec<(Option<Key>, &Value)> = inputs.iter().map(|r| (r.key, &r.value)).collect();
        let record = x.record(v, seen.key, &pairs, &|i| seen.files.get(&i).cloned());
        let why = x.explain(&self.state, v, &record);
        let value = self.run_op(v, inputs, cx)?;
        if let Some((why, site)) = why {
            // Kept only once the step succeeded: the next run compares with it.
            let _ = crate::explain::keep(&site, &record);
            if let Ok(mut e) = self.explanations.lock() {
                e.push((v.meta.name.clone(), why));
            }
        }
        Ok(value)
    }

    fn is_valid(&self, value: &Value) -> bool {
        match value {
            Value::Fs { layers } => layers
                .iter()
                .all(|l| crate::cache::layer_available(&self.state, &self.imported, l)),
            Value::Context { .. } => false,
        }
    }

    fn is_heavy(&self, v: &Vertex) -> bool {
        matches!(v.op, Op::Exec(_))
    }

    /// A file op copying from a stage or an image (an input with a key that is
    /// not the op's base): its content key names the files it copies, so a
    /// rebuilt stage whose copied files did not change spares the copy and
    /// every step after it (BuildKit's content-based cache keys).
    ///
    /// A RUN step that bind-mounts a stage or an image (`RUN
    /// --mount=from=STAGE`, read-only or not: a writable bind mount's changes
    /// are thrown away) is content-keyed the same way: its content key names
    /// what each such mount shows, so a rebuilt stage whose mounted directory
    /// did not change spares the step.
    fn keys_by_content(&self, v: &Vertex, inputs: &[KeyInput<Value>]) -> bool {
        if let Op::Exec(e) = &v.op {
            return inputs
                .iter()
                .enumerate()
                .any(|(i, input)| input.key.is_some() && mounts::content_mounted(e, i as u32));
        }
        let Op::File(f) = &v.op else { return false };
        f.actions.iter().any(|a| match a {
            FileAction::Copy(c) => c.from.is_some_and(|j| {
                Some(j) != f.base && inputs.get(j as usize).is_some_and(|i| i.key.is_some())
            }),
            _ => false,
        })
    }

    fn content_key(
        &self,
        v: &Vertex,
        inputs: &[Resolved<Value>],
        _cx: &Cx,
    ) -> Result<Option<Key>, Error> {
        if let Op::Exec(e) = &v.op {
            let mut parts = Vec::with_capacity(inputs.len());
            for (i, input) in inputs.iter().enumerate() {
                let i = i as u32;
                parts.push(match (&input.key, &input.value) {
                    (None, Value::Context { name }) => InputPart::Content(
                        e.mounts
                            .iter()
                            .filter(|m| m.input == Some(i))
                            .map(|m| mounts::context_digest(&self.contexts, name, m))
                            .collect::<Result<_, _>>()?,
                    ),
                    (None, _) => return Ok(None),
                    (Some(_), value) if mounts::content_mounted(e, i) => {
                        InputPart::Content(mounts::fs_digests(self.layers(), e, i, value)?)
                    }
                    (Some(k), _) => InputPart::Key(*k),
                });
            }
            return Ok(Some(keys::op_key(&v.op, &parts)));
        }
        let Op::File(f) = &v.op else { return Ok(None) };
        let mut parts = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let i = i as u32;
            match (&input.key, &input.value) {
                (None, Value::Context { name }) => {
                    parts.push(InputPart::Content(file::context_reads(
                        &self.contexts,
                        &f.actions,
                        i,
                        name,
                        None,
                    )?));
                }
                (None, _) => return Ok(None),
                (Some(k), _) if Some(i) == f.base => parts.push(InputPart::Key(*k)),
                (Some(k), value) => {
                    parts.push(InputPart::Content(file::fs_reads(
                        self.layers(),
                        &f.actions,
                        i,
                        k,
                        value,
                    )?));
                }
            }
        }
        Ok(Some(keys::op_key(&v.op, &parts)))
    }
}

impl LlbWorker {
    fn key_of(&self, v: &Vertex, inputs: &[KeyInput<Value>]) -> Result<Option<Key>, Error> {
        match &v.op {
            Op::Source(SourceOp::Local { .. }) => Ok(None),
            Op::Source(
                s @ SourceOp::Image {
                    digest, reference, ..
                },
            ) => match digest {
                Some(d) => Ok(Some(keys::image_key(d, s))),
                None => Err(ImageError::NotInStore {
                    reference: reference.clone(),
                }
                .into()),
            },
            Op::Source(SourceOp::Http { .. }) => http::cache_key(self.http_ops(), v).map(Some),
            Op::Source(SourceOp::Git { .. }) => git::cache_key(self.git_ops(), v).map(Some),
            Op::File(f) => {
                let mut parts = Vec::with_capacity(inputs.len());
                for (i, input) in inputs.iter().enumerate() {
                    match (&input.key, &input.value) {
                        (Some(k), _) => parts.push(InputPart::Key(*k)),
                        (None, Some(Value::Context { name })) => {
                            parts.push(InputPart::Content(file::context_reads(
                                &self.contexts,
                                &f.actions,
                                i as u32,
                                name,
                                None,
                            )?));
                        }
                        (None, _) => return Ok(None),
                    }
                }
                Ok(Some(keys::op_key(&v.op, &parts)))
            }
            Op::Exec(e) => {
                // Refused even when cached, as BuildKit checks entitlements
                // before solving.
                exec::check_supported(&self.exec.grants, e)?;
                let mut parts = Vec::with_capacity(inputs.len());
                for (i, input) in inputs.iter().enumerate() {
                    match (&input.key, &input.value) {
                        (Some(k), _) => parts.push(InputPart::Key(*k)),
                        // A context mounted by the step: what it shows.
                        (None, Some(Value::Context { name })) => {
                            let mut reads = Vec::new();
                            for m in e.mounts.iter().filter(|m| m.input == Some(i as u32)) {
                                reads.push(mounts::context_digest(&self.contexts, name, m)?);
                            }
                            parts.push(InputPart::Content(reads));
                        }
                        (None, _) => return Ok(None),
                    }
                }
                Ok(Some(keys::op_key(&v.op, &parts)))
            }
            Op::Merge(_) => {
                let mut parts = Vec::with_capacity(inputs.len());
                for input in inputs {
                    match input.key {
                        Some(k) => parts.push(InputPart::Key(k)),
                        None => return Ok(None),
                    }
                }
                Ok(Some(keys::op_key(&v.op, &parts)))
            }
        }
    }

    /// Runs `v` (what `execute` does, without the explanation).
    fn run_op(&self, v: &Vertex, inputs: &[Resolved<Value>], cx: &Cx) -> Result<Value, Error> {
        match &v.op {
            Op::Source(SourceOp::Local { name }) => {
                self.contexts.get(name)?;
                Ok(Value::Context { name: name.clone() })
            }
            Op::Source(s @ SourceOp::Image { .. }) => image::source(&self.state, s),
            Op::Source(SourceOp::Http { .. }) => http::execute(self.http_ops(), v),
            Op::Source(SourceOp::Git { .. }) => git::execute(self.git_ops(), v),
            Op::File(f) => Ok(self.built(v, file::execute(self.file_ops(), f, inputs, cx)?)),
            Op::Exec(e) => Ok(self.built(
                v,
                exec::execute(self.exec_ops(), e, inputs, v.meta.ignore_cache, cx)?,
            )),
            Op::Merge(m) => merge::execute(m, inputs),
        }
    }
}
