//! Token trees described by a parent array: attention mask and depth-based position ids.
//!
//! Node 0 is the root (the last committed token, not yet in the cache). Node `i > 0` has parent
//! `parents[i] < i`. A node attends to the whole committed cache, to its ancestors and to itself,
//! and sits at position `committed + depth`.

/// A token tree's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenTree {
    parents: Vec<Option<usize>>,
    depth: Vec<usize>,
}

impl TokenTree {
    /// A tree from its parent array (`parents[0]` must be `None`, every other parent must come
    /// earlier).
    ///
    /// # Panics
    /// When the array does not describe a tree in topological order.
    pub fn new(parents: Vec<Option<usize>>) -> Self {
        assert!(
            matches!(parents.first(), Some(None)),
            "node 0 must be the root"
        );
        let mut depth = vec![0usize; parents.len()];
        for i in 1..parents.len() {
            let p = parents[i].expect("only node 0 is a root");
            assert!(p < i, "parents must precede their children");
            depth[i] = depth[p] + 1;
        }
        Self { parents, depth }
    }

    /// A single chain of `len` nodes (root included): what prompt lookup verifies.
    pub fn chain(len: usize) -> Self {
        Self::new((0..len.max(1)).map(|i| i.checked_sub(1)).collect())
    }

    /// Number of nodes, root included.
    pub fn len(&self) -> usize {
        self.parents.len()
    }

    /// Always false: a tree has a root.
    pub fn is_empty(&self) -> bool {
        self.parents.is_empty()
    }

    /// Parent of node `i`.
    pub fn parent(&self, i: usize) -> Option<usize> {
        self.parents[i]
    }

    /// Depth of node `i` (root 0).
    pub fn depth(&self, i: usize) -> usize {
        self.depth[i]
    }

    /// Adds a child of `parent` and returns its index.
    pub fn push(&mut self, parent: usize) -> usize {
        assert!(parent < self.len());
        self.parents.push(Some(parent));
        self.depth.push(self.depth[parent] + 1);
        self.len() - 1
    }

    /// Row-major `[len, cached + len]` mask, true = may not attend.
    pub fn mask(&self, cached: usize) -> Vec<bool> {
        let n = self.len();
        let s = cached + n;
        let mut m = vec![true; n * s];
        for i in 0..n {
            m[i * s..i * s + cached].iter_mut().for_each(|x| *x = false);
            let mut k = Some(i);
            while let Some(x) = k {
                m[i * s + cached + x] = false;
                k = self.parents[x];
            }
        }
        m
    }

    /// Position ids: `cached + depth`.
    pub fn positions(&self, cached: usize) -> Vec<usize> {
        self.depth.iter().map(|d| cached + d).collect()
    }

    /// Whether every node is the child of the node before it (a causal mask would do).
    pub fn is_chain(&self) -> bool {
        self.parents
            .iter()
            .enumerate()
            .skip(1)
            .all(|(i, p)| *p == Some(i - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_and_positions_of_a_small_tree() {
        // root -> a, root -> b, b -> c
        let t = TokenTree::new(vec![None, Some(0), Some(0), Some(2)]);
        assert_eq!(t.positions(5), vec![5, 6, 6, 7]);
        let m = t.mask(1);
        let row = |i: usize| m[i * 5..(i + 1) * 5].to_vec();
        assert_eq!(row(0), vec![false, false, true, true, true]);
        assert_eq!(row(1), vec![false, false, false, true, true]);
        assert_eq!(row(2), vec![false, false, true, false, true]);
        assert_eq!(row(3), vec![false, false, true, false, false]);
        assert!(!t.is_chain());
        assert!(TokenTree::chain(4).is_chain());
    }
}
