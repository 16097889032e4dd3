//! How [`LlbWorker`] answers the solver: each op kind's cache key and
//! execution, dispatched to the op's module ([`crate::keys`] for the keys).
//! The worker's state is [`crate::worker`]'s; the ops use that, and this
//! module uses the ops.

use std::collections::HashMap;

use kiln_context::StatCache;
use kiln_llb::op::{FileAction, Op, SourceOp};
use kiln_llb::{Digest, Vertex};
use kiln_solver::{Cx, Key, KeyInput, Resolved};

use crate::error::{Error, ImageError, InternalError, Unsupported};
use crate::keys::{self, InputPart};
use crate::value::{LayerRef, Value};
use crate::worker::{LlbWorker, Seen};
use crate::{exec, fileop, git, http, image};

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

    /// Content digests of what `op`'s copy actions read from input `index`
    /// (a context): one digest per action, in action order. With `files`,
    /// also each file read and its digest (for `--explain`; only for steps
    /// that run, so that a cached rebuild of a large context pays nothing).
    fn context_reads(
        &self,
        actions: &[FileAction],
        index: u32,
        name: &str,
        mut files: Option<&mut std::collections::BTreeMap<String, String>>,
    ) -> Result<Vec<Digest>, Error> {
        let ctx = self.context(name)?;
        let mut out = Vec::new();
        for a in actions {
            let FileAction::Copy(c) = a else { continue };
            if c.from != Some(index) {
                continue;
            }
            let sources = fileop::expand(&ctx.tree, c)?;
            let filter = fileop::filter(c)?;
            let mut cache = ctx
                .stat_cache
                .lock()
                .map_err(|_| InternalError::Poisoned("stat cache"))?;
            let opts = kiln_context::DigestOptions {
                include_ownership: false,
            };
            let digest = if let Some(files) = files.as_deref_mut() {
                let (digest, _, listing) = ctx
                    .tree
                    .digest_listed(&sources, &filter, &mut cache, &opts)?;
                for (path, sha) in listing {
                    files.insert(
                        String::from_utf8_lossy(&path).into_owned(),
                        Digest::from_bytes(sha).hex()[..16].to_owned(),
                    );
                }
                digest
            } else {
                ctx.tree.digest(&sources, &filter, &mut cache, &opts)?.0
            };
            out.push(digest);
        }
        Ok(out)
    }

    /// Content digests of what `actions`' copies read from input `index`, a
    /// filesystem (a stage or an image): one per copy, with ownership (COPY
    /// --from keeps it). The filesystem is mounted read-only for the walk.
    fn fs_reads(
        &self,
        actions: &[FileAction],
        index: u32,
        value: &Value,
    ) -> Result<Vec<Digest>, Error> {
        let scratch = self.state.scratch()?;
        let (tree, guard) = self.mount_read_only(value, &scratch.path().join("src"))?;
        let mut cache = StatCache::in_memory();
        let opts = kiln_context::DigestOptions {
            include_ownership: true,
        };
        let digests = actions
            .iter()
            .filter_map(|a| match a {
                FileAction::Copy(c) if c.from == Some(index) => Some(c),
                _ => None,
            })
            .map(|c| {
                let sources = fileop::expand(&tree, c)?;
                let filter = fileop::filter(c)?;
                Ok(tree.digest(&sources, &filter, &mut cache, &opts)?.0)
            })
            .collect::<Result<Vec<_>, Error>>();
        guard.unmount()?;
        digests
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
                    self.context_reads(&f.actions, i as u32, name, Some(files))?;
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
            return inputs.iter().enumerate().any(|(i, input)| {
                input.key.is_some() && crate::mounts::content_mounted(e, i as u32)
            });
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
                            .map(|m| crate::mounts::context_digest(self, name, m))
                            .collect::<Result<_, _>>()?,
                    ),
                    (None, _) => return Ok(None),
                    (Some(_), value) if crate::mounts::content_mounted(e, i) => {
                        InputPart::Content(crate::mounts::fs_digests(self, e, i, value)?)
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
                    parts.push(InputPart::Content(
                        self.context_reads(&f.actions, i, name, None)?,
                    ));
                }
                (None, _) => return Ok(None),
                (Some(k), _) if Some(i) == f.base => parts.push(InputPart::Key(*k)),
                (Some(_), value) => {
                    parts.push(InputPart::Content(self.fs_reads(&f.actions, i, value)?));
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
            Op::Source(SourceOp::Http { .. }) => http::cache_key(self, v).map(Some),
            Op::Source(SourceOp::Git { .. }) => git::cache_key(self, v).map(Some),
            Op::File(f) => {
                let mut parts = Vec::with_capacity(inputs.len());
                for (i, input) in inputs.iter().enumerate() {
                    match (&input.key, &input.value) {
                        (Some(k), _) => parts.push(InputPart::Key(*k)),
                        (None, Some(Value::Context { name })) => {
                            parts.push(InputPart::Content(
                                self.context_reads(&f.actions, i as u32, name, None)?,
                            ));
                        }
                        (None, _) => return Ok(None),
                    }
                }
                Ok(Some(keys::op_key(&v.op, &parts)))
            }
            Op::Exec(e) => {
                // Refused even when cached, as BuildKit checks entitlements
                // before solving.
                exec::check_supported(self, e)?;
                let mut parts = Vec::with_capacity(inputs.len());
                for (i, input) in inputs.iter().enumerate() {
                    match (&input.key, &input.value) {
                        (Some(k), _) => parts.push(InputPart::Key(*k)),
                        // A context mounted by the step: what it shows.
                        (None, Some(Value::Context { name })) => {
                            let mut reads = Vec::new();
                            for m in e.mounts.iter().filter(|m| m.input == Some(i as u32)) {
                                reads.push(crate::mounts::context_digest(self, name, m)?);
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
                self.context(name)?;
                Ok(Value::Context { name: name.clone() })
            }
            Op::Source(s @ SourceOp::Image { .. }) => image::source(self, s),
            Op::Source(SourceOp::Http { .. }) => http::execute(self, v),
            Op::Source(SourceOp::Git { .. }) => git::execute(self, v),
            Op::File(f) => Ok(self.built(v, fileop::execute(self, f, inputs, cx)?)),
            Op::Exec(e) => {
                Ok(self.built(v, exec::execute(self, e, inputs, v.meta.ignore_cache, cx)?))
            }
            Op::Merge(m) => {
                let mut layers = Vec::new();
                for i in &m.inputs {
                    let input =
                        inputs
                            .get(*i as usize)
                            .ok_or_else(|| InternalError::MissingInput {
                                user: "merge".to_owned(),
                                index: *i,
                            })?;
                    match &input.value {
                        Value::Fs { layers: l } => layers.extend(l.iter().cloned()),
                        Value::Context { name } => {
                            return Err(Unsupported::MergeContext { name: name.clone() }.into());
                        }
                    }
                }
                Ok(Value::Fs { layers })
            }
        }
    }
}
