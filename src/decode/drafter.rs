//! The extension point: a [`Drafter`] proposes a token tree each step and learns from what the
//! model verified; [`crate::DraftDecoder`] runs any drafter on the tree engine, losslessly.

use crate::decode::tree::TokenTree;
use crate::decode::verify::Verified;

/// One step's draft: a token tree after the root (node 0, the last committed token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// Shape (node 0 is the root).
    pub tree: TokenTree,
    /// Token of each node, root first.
    pub tokens: Vec<u32>,
    /// Nodes verification prefers between equally long accepted chains (retrieval chains).
    pub preferred: Vec<bool>,
}

impl Draft {
    /// Only the root: a greedy step.
    pub fn root(root: u32) -> Self {
        Self::chain(root, &[])
    }

    /// The chain `[root, draft..]`.
    pub fn chain(root: u32, draft: &[u32]) -> Self {
        let mut tokens = vec![root];
        tokens.extend_from_slice(draft);
        Self {
            tree: TokenTree::chain(tokens.len()),
            preferred: vec![false; tokens.len()],
            tokens,
        }
    }

    /// Adds `token` as a child of node `parent` and returns the new node.
    ///
    /// # Panics
    /// When `parent` is not a node of the draft.
    pub fn push(&mut self, parent: usize, token: u32) -> usize {
        assert!(parent < self.tokens.len(), "parent {parent} is not a node");
        self.tokens.push(token);
        self.preferred.push(false);
        self.tree.push(parent)
    }

    /// Nodes, root included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Never true: a draft has at least its root.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Proposes a draft tree after the root each step and learns from what the model verified.
///
/// Implement it to plug a new draft source (a small draft model, another retrieval index) into
/// the tree engine; [`crate::DraftDecoder`] turns it into a [`crate::Decoder`] whose output equals greedy
/// decoding whatever the drafts are: a draft only decides how many tokens a step commits.
///
/// # Examples
/// A drafter that guesses each token repeats the one before it:
/// ```
/// use msn::{Draft, DraftDecoder, Drafter, Verified};
///
/// struct Repeat;
///
/// impl Drafter for Repeat {
///     fn max_nodes(&self) -> usize {
///         4
///     }
///     fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft {
///         Draft::chain(root, &vec![root; 3.min(room).min(depth)])
///     }
///     fn observe(&mut self, _: &Draft, _: &[u32], _: &Verified, _: &[Vec<u32>]) {}
/// }
///
/// let decoder = DraftDecoder::new("repeat", Repeat);
/// # let _ = decoder;
/// ```
pub trait Drafter {
    /// The most nodes (root included) a draft of this drafter has: the KV cache keeps that much
    /// room beyond the output.
    fn max_nodes(&self) -> usize;

    /// Called once before each generation with its prompt (nothing by default).
    fn start(&mut self, _prompt: &[u32]) {}

    /// A draft after `root` of at most `1 + room` nodes, none deeper than `depth` (the tokens
    /// still to generate).
    fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft;

    /// The nodes whose top-`k` tokens [`Drafter::observe`] needs, and `k` (none by default).
    fn top_k_rows(&self, _draft: &Draft, _verified: &Verified) -> (Vec<usize>, usize) {
        (Vec::new(), 0)
    }

    /// After verification: the model's argmax at every node, the verified path, and the top-`k`
    /// tokens of the rows asked for by [`Drafter::top_k_rows`].
    fn observe(&mut self, draft: &Draft, preds: &[u32], verified: &Verified, top_k: &[Vec<u32>]);

    /// The wall time of the whole step (drafting, forward, verification, bookkeeping) whose
    /// forward ran `tokens` tokens; budgets learn step costs from it (nothing by default).
    fn timed(&mut self, _tokens: usize, _secs: f64) {}
}
