//! Greedy verification of a token tree: the longest chain of nodes whose token equals the
//! model's argmax at their parent.

use crate::decode::tree::TokenTree;

/// What one verified forward pass commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Accepted tree nodes, root first; their KV entries are the ones to keep.
    pub path: Vec<usize>,
    /// Committed tokens: the argmax at each node of `path` (so `path.len()` tokens).
    pub tokens: Vec<u32>,
}

/// Verifies `tree` with node tokens `tokens` and the model's argmax `preds` at each node.
///
/// Node `i > 0` is correct when `tokens[i] == preds[parent(i)]`. The accepted path is the root
/// plus the longest chain of correct nodes; between equally long chains, `preferred` nodes
/// (retrieval paths) win, then the lower index.
pub fn verify(tree: &TokenTree, tokens: &[u32], preds: &[u32], preferred: &[bool]) -> Verified {
    let n = tree.len();
    assert!(
        tokens.len() == n && preds.len() == n,
        "one token and one prediction per node"
    );
    // best[i]: length of the longest correct chain starting at i; next[i]: its next node.
    let mut best = vec![1usize; n];
    let mut next: Vec<Option<usize>> = vec![None; n];
    let better = |c: usize, cur: Option<usize>, best: &[usize]| match cur {
        None => true,
        Some(o) => {
            let pc = preferred.get(c).copied().unwrap_or(false);
            let po = preferred.get(o).copied().unwrap_or(false);
            best[c] > best[o] || (best[c] == best[o] && ((pc && !po) || (pc == po && c < o)))
        }
    };
    for c in (1..n).rev() {
        let p = tree.parent(c).expect("non-root has a parent");
        if tokens[c] == preds[p] && better(c, next[p], &best) {
            best[p] = best[c] + 1;
            next[p] = Some(c);
        }
    }
    let mut path = vec![0];
    while let Some(c) = next[*path.last().expect("non-empty")] {
        path.push(c);
    }
    let tokens = path.iter().map(|&i| preds[i]).collect();
    Verified { path, tokens }
}

/// Verifies `tree` by sampling: from the root, `draw(node)` draws the token after `node` from the
/// model's distribution there; when a child of `node` carries it (a preferred one first, then
/// the lower index) the walk moves into that child and draws again, otherwise it stops. Each
/// committed token is a draw from the model's distribution given everything before it, so the
/// output distribution is the model's whatever the draft (see [`crate::sample`]).
pub fn verify_sampled(
    tree: &TokenTree,
    tokens: &[u32],
    preferred: &[bool],
    mut draw: impl FnMut(usize) -> u32,
) -> Verified {
    let n = tree.len();
    assert_eq!(tokens.len(), n, "one token per node");
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for c in 1..n {
        children[tree.parent(c).expect("non-root has a parent")].push(c);
    }
    let is_pref = |c: usize| preferred.get(c).copied().unwrap_or(false);
    let mut path = vec![0];
    let mut committed = Vec::new();
    loop {
        let node = *path.last().expect("non-empty");
        let t = draw(node);
        committed.push(t);
        let next = children[node]
            .iter()
            .copied()
            .filter(|&c| tokens[c] == t)
            .min_by_key(|&c| (!is_pref(c), c));
        match next {
            Some(c) => path.push(c),
            None => break,
        }
    }
    Verified {
        path,
        tokens: committed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_correct_chain_wins() {
        // root(0) -> 1 -> 2 ; root -> 3
        let t = TokenTree::new(vec![None, Some(0), Some(1), Some(0)]);
        let tokens = [100, 7, 8, 7];
        let preds = [7, 8, 9, 5];
        let v = verify(&t, &tokens, &preds, &[]);
        assert_eq!(v.path, vec![0, 1, 2]);
        assert_eq!(v.tokens, vec![7, 8, 9]);
    }

    #[test]
    fn nothing_correct_commits_the_roots_prediction() {
        let t = TokenTree::chain(3);
        let v = verify(&t, &[1, 2, 3], &[4, 5, 6], &[]);
        assert_eq!(v.path, vec![0]);
        assert_eq!(v.tokens, vec![4]);
    }

    #[test]
    fn sampled_walk_follows_drawn_tokens() {
        // root -> 1 (7) -> 2 (8); root -> 3 (7, preferred) -> 4 (9)
        let t = TokenTree::new(vec![None, Some(0), Some(1), Some(0), Some(3)]);
        let tokens = [0, 7, 8, 7, 9];
        let draws = |m: [u32; 5]| move |node: usize| m[node];
        // Draw 7 at the root: the preferred child 3; then 9: node 4; then 1: stop.
        let v = verify_sampled(
            &t,
            &tokens,
            &[false, false, false, true, false],
            draws([7, 0, 0, 9, 1]),
        );
        assert_eq!(v.path, vec![0, 3, 4]);
        assert_eq!(v.tokens, vec![7, 9, 1]);
        // Without preference the lower index; a draw no child carries stops at once.
        let v = verify_sampled(&t, &tokens, &[], draws([7, 5, 0, 0, 0]));
        assert_eq!((v.path, v.tokens), (vec![0, 1], vec![7, 5]));
        let v = verify_sampled(&t, &tokens, &[], draws([3, 0, 0, 0, 0]));
        assert_eq!((v.path, v.tokens), (vec![0], vec![3]));
    }

    #[test]
    fn ties_prefer_retrieval_then_lower_index() {
        let t = TokenTree::new(vec![None, Some(0), Some(0), Some(0)]);
        let (tokens, preds) = ([0, 5, 5, 5], [5, 1, 2, 3]);
        assert_eq!(verify(&t, &tokens, &preds, &[]).path, vec![0, 1]);
        assert_eq!(
            verify(&t, &tokens, &preds, &[false, false, false, true]).path,
            vec![0, 3]
        );
    }
}
