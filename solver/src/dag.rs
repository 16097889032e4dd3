//! The graph the solver runs: nodes in topological order.

/// One unit of work: an opaque payload for the worker plus its inputs.
#[derive(Debug, Clone)]
pub struct Node<P> {
    /// What the worker needs to compute the node's key and value.
    pub payload: P,
    /// Indices of the nodes whose values this node consumes, in the order the worker
    /// expects them. Each must be smaller than this node's own index; repeats are allowed.
    pub inputs: Vec<usize>,
    /// Execute even on a cache hit (and force everything downstream, see [`crate::Solver`]).
    pub ignore_cache: bool,
    /// Human-readable name for events and errors (for example the Dockerfile step).
    pub name: String,
}

/// A node referring to an input that is not strictly before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node} ({name}): input {input} is not an earlier node (nodes must be in topological order)"
)]
pub struct DagError {
    /// Index of the offending node.
    pub node: usize,
    /// Its name.
    pub name: String,
    /// The input index that is not smaller than `node`.
    pub input: usize,
}

/// Nodes in topological order: every input index is smaller than the index of the node
/// that uses it. That one rule (checked by [`Dag::new`]) rules out cycles, self-references
/// and dangling indices, so the solver never has to detect them.
#[derive(Debug, Clone)]
pub struct Dag<P> {
    nodes: Vec<Node<P>>,
}

impl<P> Dag<P> {
    /// Checks the topological-order rule and wraps the nodes.
    pub fn new(nodes: Vec<Node<P>>) -> Result<Dag<P>, DagError> {
        for (i, node) in nodes.iter().enumerate() {
            if let Some(&input) = node.inputs.iter().find(|&&input| input >= i) {
                return Err(DagError {
                    node: i,
                    name: node.name.clone(),
                    input,
                });
            }
        }
        Ok(Dag { nodes })
    }

    /// All nodes, in order.
    pub fn nodes(&self) -> &[Node<P>] {
        &self.nodes
    }

    /// The node at `index`, if any.
    pub fn node(&self, index: usize) -> Option<&Node<P>> {
        self.nodes.get(index)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Marks every node that `targets` need: the targets and all their ancestors.
    /// Indices out of range are ignored (the solver checks targets before calling this).
    pub fn ancestors(&self, targets: &[usize]) -> Vec<bool> {
        let mut needed = vec![false; self.nodes.len()];
        for &t in targets {
            if let Some(slot) = needed.get_mut(t) {
                *slot = true;
            }
        }
        // Inputs come before their users, so one backward sweep reaches every ancestor.
        for i in (0..self.nodes.len()).rev() {
            if needed[i] {
                for &input in &self.nodes[i].inputs {
                    needed[input] = true;
                }
            }
        }
        needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, inputs: &[usize]) -> Node<()> {
        Node {
            payload: (),
            inputs: inputs.to_vec(),
            ignore_cache: false,
            name: name.to_owned(),
        }
    }

    #[test]
    fn accepts_topological_order_with_repeated_inputs() {
        let dag = Dag::new(vec![node("a", &[]), node("b", &[0, 0]), node("c", &[1, 0])])
            .expect("valid dag");
        assert_eq!(dag.len(), 3);
        assert!(Dag::<()>::new(vec![]).expect("empty dag").is_empty());
    }

    #[test]
    fn rejects_forward_reference() {
        let err = Dag::new(vec![node("a", &[1]), node("b", &[])]).expect_err("forward ref");
        assert_eq!(
            err,
            DagError {
                node: 0,
                name: "a".into(),
                input: 1
            }
        );
        assert!(err.to_string().contains("node 0 (a)"));
    }

    #[test]
    fn rejects_self_reference_and_cycles() {
        let err = Dag::new(vec![node("a", &[]), node("b", &[1])]).expect_err("self ref");
        assert_eq!((err.node, err.input), (1, 1));
        // A two-node cycle a <-> b needs one forward edge, which is caught.
        let err = Dag::new(vec![node("a", &[1]), node("b", &[0])]).expect_err("cycle");
        assert_eq!((err.node, err.input), (0, 1));
    }

    #[test]
    fn rejects_dangling_index() {
        let err = Dag::new(vec![node("a", &[]), node("b", &[7])]).expect_err("dangling");
        assert_eq!((err.node, err.input), (1, 7));
    }

    #[test]
    fn ancestors_are_exactly_what_targets_need() {
        // 0 -> 2 -> 4, 1 -> 3, 3 -> 4, 5 alone
        let dag = Dag::new(vec![
            node("a", &[]),
            node("b", &[]),
            node("c", &[0]),
            node("d", &[1]),
            node("e", &[2, 3]),
            node("f", &[]),
        ])
        .expect("valid dag");
        assert_eq!(
            dag.ancestors(&[2]),
            [true, false, true, false, false, false]
        );
        assert_eq!(dag.ancestors(&[4]), [true, true, true, true, true, false]);
        assert_eq!(
            dag.ancestors(&[5, 99]),
            [false, false, false, false, false, true]
        );
    }
}
