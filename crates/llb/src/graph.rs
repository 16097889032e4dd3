//! The graph: content-addressed vertices, deduplicated on insertion.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, Reversed};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::encode;
use crate::op::Op;

/// Where a vertex came from in the Dockerfile. Never part of a digest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexMeta {
    /// What progress output shows, e.g. `[build 2/5] RUN make`.
    pub name: String,
    /// The stage the vertex was made for; `None` for internal helper vertices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<SourceLocation>,
    /// `--no-cache` / `--no-cache-filter`: run even if a cached result exists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_cache: bool,
}

/// A range of lines in a named source file (`Dockerfile:3-5`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLocation {
    pub file: String,
    pub start_line: u32,
    pub end_line: u32,
}

impl std::fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.end_line > self.start_line {
            write!(f, "{}:{}-{}", self.file, self.start_line, self.end_line)
        } else {
            write!(f, "{}:{}", self.file, self.start_line)
        }
    }
}

/// One operation with its inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vertex {
    pub digest: Digest,
    pub op: Op,
    pub inputs: Vec<Digest>,
    pub meta: VertexMeta,
}

/// Why a vertex cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("input {0} is not a vertex of this graph")]
    UnknownInput(Digest),
    #[error("op refers to input #{index} but the vertex has {count} inputs")]
    InputOutOfRange { index: u32, count: usize },
    #[error("input #{0} is not used by the op")]
    UnusedInput(usize),
}

/// A DAG of vertices. Inputs must exist before the vertices that use them, so the
/// graph is acyclic by construction and insertion order is a topological order.
/// Adding a vertex whose digest is already present returns the existing one:
/// identical sub-graphs collapse.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: DiGraph<Vertex, ()>,
    by_digest: HashMap<Digest, NodeIndex>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds `op` reading `inputs`, or finds the identical vertex already present.
    /// When it is found, it takes the newer metadata (as BuildKit, whose last
    /// marshalled occurrence names a vertex), and `ignore_cache` sticks.
    pub fn add(
        &mut self,
        op: Op,
        inputs: Vec<Digest>,
        meta: VertexMeta,
    ) -> Result<Digest, GraphError> {
        let mut used = vec![false; inputs.len()];
        for index in op.input_refs() {
            let slot = used
                .get_mut(index as usize)
                .ok_or(GraphError::InputOutOfRange {
                    index,
                    count: inputs.len(),
                })?;
            *slot = true;
        }
        if let Some(unused) = used.iter().position(|u| !u) {
            return Err(GraphError::UnusedInput(unused));
        }
        let mut input_nodes = Vec::with_capacity(inputs.len());
        for input in &inputs {
            let node = self
                .by_digest
                .get(input)
                .ok_or(GraphError::UnknownInput(*input))?;
            input_nodes.push(*node);
        }
        let digest = encode::digest(&op, &inputs);
        if let Some(&existing) = self.by_digest.get(&digest) {
            let v = &mut self.g[existing];
            let ignore_cache = v.meta.ignore_cache || meta.ignore_cache;
            v.meta = meta;
            v.meta.ignore_cache = ignore_cache;
            return Ok(digest);
        }
        let node = self.g.add_node(Vertex {
            digest,
            op,
            inputs,
            meta,
        });
        for input in input_nodes {
            self.g.update_edge(input, node, ());
        }
        self.by_digest.insert(digest, node);
        Ok(digest)
    }

    pub fn get(&self, digest: &Digest) -> Option<&Vertex> {
        self.by_digest.get(digest).map(|n| &self.g[*n])
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    /// All vertices, inputs before the vertices that use them.
    pub fn vertices(&self) -> impl Iterator<Item = &Vertex> {
        self.g.node_indices().map(|n| &self.g[n])
    }

    /// The vertices `roots` depend on (themselves included), in topological order.
    pub fn ancestors(&self, roots: &[Digest]) -> Vec<&Vertex> {
        let mut keep = vec![false; self.g.node_count()];
        let reversed = Reversed(&self.g);
        for root in roots {
            if let Some(&start) = self.by_digest.get(root) {
                let mut dfs = Dfs::new(reversed, start);
                while let Some(n) = dfs.next(reversed) {
                    keep[n.index()] = true;
                }
            }
        }
        self.g
            .node_indices()
            .filter(|n| keep[n.index()])
            .map(|n| &self.g[n])
            .collect()
    }

    /// A graph holding only what `roots` depend on.
    pub fn pruned(&self, roots: &[Digest]) -> Graph {
        let mut out = Graph::new();
        for v in self.ancestors(roots) {
            let node = out.g.add_node(v.clone());
            for input in &v.inputs {
                if let Some(&i) = out.by_digest.get(input) {
                    out.g.update_edge(i, node, ());
                }
            }
            out.by_digest.insert(v.digest, node);
        }
        out
    }

    /// Adds every vertex of `other` (in its topological order); vertices
    /// present in both collapse into one, which keeps this graph's metadata.
    /// How the graphs of a multi-platform build become one solve: what does
    /// not depend on the target platform is built once.
    pub fn merge(&mut self, other: &Graph) {
        for v in other.vertices() {
            if self.by_digest.contains_key(&v.digest) {
                continue;
            }
            let node = self.g.add_node(v.clone());
            for input in &v.inputs {
                if let Some(&i) = self.by_digest.get(input) {
                    self.g.update_edge(i, node, ());
                }
            }
            self.by_digest.insert(v.digest, node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::{FileAction, FileOp, MergeOp, Mkdir, SourceOp};

    fn local(name: &str) -> Op {
        Op::Source(SourceOp::Local {
            name: name.to_owned(),
        })
    }

    fn mkdir(path: &str) -> Op {
        Op::File(FileOp {
            base: Some(0),
            actions: vec![FileAction::Mkdir(Mkdir {
                path: path.to_owned(),
                mode: 0o755,
                parents: true,
                chown: None,
            })],
        })
    }

    #[test]
    fn identical_vertices_collapse() {
        let mut g = Graph::new();
        let meta = |name: &str| VertexMeta {
            name: name.to_owned(),
            ..VertexMeta::default()
        };
        let a = g.add(local("context"), vec![], meta("a")).unwrap();
        let b = g.add(local("context"), vec![], meta("b")).unwrap();
        assert_eq!(a, b);
        let x = g.add(mkdir("/x"), vec![a], meta("x")).unwrap();
        let y = g.add(mkdir("/x"), vec![b], meta("y")).unwrap();
        assert_eq!(x, y);
        assert_eq!(g.len(), 2);
        assert_eq!(g.get(&x).map(|v| v.meta.name.as_str()), Some("y"));
        let z = g.add(mkdir("/z"), vec![a], meta("z")).unwrap();
        assert_ne!(x, z);
        assert_eq!(g.ancestors(&[z]).len(), 2);
        assert_eq!(g.pruned(&[z]).len(), 2);
    }

    #[test]
    fn merge_shares_identical_vertices() {
        let meta = |name: &str| VertexMeta {
            name: name.to_owned(),
            ..VertexMeta::default()
        };
        let mut g = Graph::new();
        let a = g.add(local("context"), vec![], meta("a")).unwrap();
        let x = g.add(mkdir("/x"), vec![a], meta("x")).unwrap();
        let mut h = Graph::new();
        let b = h.add(local("context"), vec![], meta("b")).unwrap();
        h.add(mkdir("/x"), vec![b], meta("x2")).unwrap();
        let y = h.add(mkdir("/y"), vec![b], meta("y")).unwrap();
        g.merge(&h);
        assert_eq!(g.len(), 3);
        assert_eq!(g.get(&x).map(|v| v.meta.name.as_str()), Some("x"));
        assert_eq!(g.ancestors(&[x, y]).len(), 3);
        // Insertion order stays topological: every input comes first.
        let order: Vec<Digest> = g.vertices().map(|v| v.digest).collect();
        for v in g.vertices() {
            let at = order.iter().position(|d| *d == v.digest).unwrap();
            for i in &v.inputs {
                assert!(order.iter().position(|d| d == i).unwrap() < at);
            }
        }
    }

    #[test]
    fn rejects_dangling_and_unused_inputs() {
        let mut g = Graph::new();
        let other = Digest::of(b"elsewhere");
        assert_eq!(
            g.add(mkdir("/x"), vec![other], VertexMeta::default()),
            Err(GraphError::UnknownInput(other))
        );
        assert_eq!(
            g.add(mkdir("/x"), vec![], VertexMeta::default()),
            Err(GraphError::InputOutOfRange { index: 0, count: 0 })
        );
        let a = g.add(local("a"), vec![], VertexMeta::default()).unwrap();
        let merge = Op::Merge(MergeOp { inputs: vec![0] });
        assert_eq!(
            g.add(merge, vec![a, a], VertexMeta::default()),
            Err(GraphError::UnusedInput(1))
        );
    }
}
