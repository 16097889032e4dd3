//! `buildkit_metadata.layers` of a `mode=max` provenance: for each step
//! whose result is a prefix of the image's layer stack (the target and the
//! chain of root filesystems under it), the descriptors of those layers,
//! keyed `step<N>:<output>`, as BuildKit lists the remotes of the records
//! its cache exporter walks from the result.
//!
//! kiln's solve keeps no result of a step the cache answered, so how many
//! of the image's layers each step holds is read from the graph, top down
//! from the target (which holds them all): an exec or file op adds one
//! layer to its root or base, a merge op concatenates its inputs' stacks, a
//! git or HTTP source is one layer, an image source holds what is left.

use kiln_llb::op::{MountKind, Op, SourceOp};
use kiln_llb::{Digest, Graph, Vertex};

/// The vertices of the image chain under `target` (which holds `total`
/// layers), each with the number of the image's bottom layers its result
/// holds, target first. A vertex whose count the graph does not settle
/// (a merge of two images) is left out with what is under it.
pub fn chain_lengths(graph: &Graph, target: Digest, total: usize) -> Vec<(Digest, usize)> {
    let mut out: Vec<(Digest, usize)> = Vec::new();
    let mut todo = vec![(target, total)];
    while let Some((d, len)) = todo.pop() {
        let Some(v) = graph.get(&d) else { continue };
        if out.iter().any(|(x, _)| *x == d) {
            continue;
        }
        out.push((d, len));
        match &v.op {
            Op::Exec(_) | Op::File(_) => {
                if let Some(below) = root_input(v)
                    && len > 0
                {
                    todo.push((below, len - 1));
                }
            }
            Op::Merge(m) => {
                let inputs: Vec<Digest> = m
                    .inputs
                    .iter()
                    .filter_map(|i| v.inputs.get(*i as usize).copied())
                    .collect();
                let known: Vec<Option<usize>> =
                    inputs.iter().map(|d| stack_len(graph, *d)).collect();
                let unknown = known.iter().filter(|k| k.is_none()).count();
                let sum: usize = known.iter().flatten().sum();
                if unknown > 1 || sum > len || (unknown == 0 && sum != len) {
                    continue;
                }
                for (d, k) in inputs.iter().zip(known) {
                    todo.push((*d, k.unwrap_or(len - sum)));
                }
            }
            Op::Source(_) => {}
        }
    }
    out
}

/// The input an exec's root or a file op's base comes from (`None`: an
/// empty filesystem).
fn root_input(v: &Vertex) -> Option<Digest> {
    let index = match &v.op {
        Op::Exec(e) => {
            e.mounts
                .iter()
                .find(|m| m.target == "/" && m.output && matches!(m.kind, MountKind::Bind))?
                .input?
        }
        Op::File(f) => f.base?,
        _ => return None,
    };
    v.inputs.get(index as usize).copied()
}

/// How many layers `d`'s result has, when the graph says it without the
/// store (not for an image source).
fn stack_len(graph: &Graph, d: Digest) -> Option<usize> {
    let v = graph.get(&d)?;
    match &v.op {
        Op::Exec(_) | Op::File(_) => match root_input(v) {
            Some(below) => stack_len(graph, below).map(|n| n + 1),
            None => Some(1),
        },
        Op::Merge(m) => m
            .inputs
            .iter()
            .map(|i| v.inputs.get(*i as usize).and_then(|d| stack_len(graph, *d)))
            .sum(),
        Op::Source(SourceOp::Git { .. } | SourceOp::Http { .. }) => Some(1),
        Op::Source(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_llb::VertexMeta;
    use kiln_llb::op::{ExecOp, FileAction, FileOp, MergeOp, Mkdir, Mount};

    fn image(g: &mut Graph, name: &str) -> Digest {
        g.add(
            Op::Source(SourceOp::Image {
                reference: name.to_owned(),
                digest: None,
                platform: kiln_llb::Platform::host(),
            }),
            Vec::new(),
            VertexMeta::default(),
        )
        .unwrap()
    }

    fn mkdir(g: &mut Graph, base: Option<Digest>, path: &str) -> Digest {
        g.add(
            Op::File(FileOp {
                base: base.map(|_| 0),
                actions: vec![FileAction::Mkdir(Mkdir {
                    path: path.to_owned(),
                    mode: 0o755,
                    parents: false,
                    chown: None,
                })],
            }),
            base.into_iter().collect(),
            VertexMeta::default(),
        )
        .unwrap()
    }

    fn run(g: &mut Graph, root: Digest) -> Digest {
        g.add(
            Op::Exec(ExecOp {
                args: vec!["true".to_owned()],
                env: Vec::new(),
                cwd: "/".to_owned(),
                user: String::new(),
                mounts: vec![Mount::root(Some(0))],
                network: Default::default(),
                security: Default::default(),
                hostname: String::new(),
                proxy_env: Default::default(),
                devices: Vec::new(),
                platform: None,
            }),
            vec![root],
            VertexMeta::default(),
        )
        .unwrap()
    }

    #[test]
    fn each_step_holds_a_prefix() {
        let mut g = Graph::new();
        let base = image(&mut g, "busybox");
        let r = run(&mut g, base);
        let f = mkdir(&mut g, Some(r), "/x");
        // busybox's 1 layer, the RUN's, the mkdir's.
        assert_eq!(chain_lengths(&g, f, 3), [(f, 3), (r, 2), (base, 1)]);
    }

    #[test]
    fn a_merge_splits_by_what_the_graph_knows() {
        let mut g = Graph::new();
        let base = image(&mut g, "busybox");
        let top = mkdir(&mut g, None, "/linked");
        let m = g
            .add(
                Op::Merge(MergeOp { inputs: vec![0, 1] }),
                vec![base, top],
                VertexMeta::default(),
            )
            .unwrap();
        let got = chain_lengths(&g, m, 4);
        assert!(got.contains(&(m, 4)) && got.contains(&(base, 3)) && got.contains(&(top, 1)));
    }
}
