//! TR-Jacobi: tree-based, retrieval-augmented Jacobi decoding (the MSN paper's decoder).
//!
//! Each step verifies one token tree in one forward pass. The tree is a static
//! [`TreeTemplate`] of rank paths filled from a [`CandidateTable`] (the top-`K` tokens the
//! previous step predicted at the Jacobi positions after the accepted prefix), merged as a trie
//! with n-gram retrieval chains from the committed text, so no token is verified twice. Greedy
//! verification keeps the output identical to greedy decoding.

use crate::decode::batch::tree_decode_batch;
use crate::decode::budget::{TreeBudget, TreeShape};
use crate::decode::{Draft, Drafter, NgramIndex, Verified, tree_decode};
use crate::error::{Error, Result};
use crate::generate::{GenerateConfig, Generation};
use crate::model::CausalLm;
use crate::model::tokenizer::Tokenizer;
use crate::rng::Rng;
use burn::prelude::*;

/// The MSN paper's 63-path template (69 tokens per forward with the root and a 5-token
/// retrieval chain), most likely paths first.
const MSN_PATHS: &str = "[0] [0,0] [1] [0,1] [2] [0,0,0] [1,0] [0,2] [3] [0,3] [4] [0,4] [2,0] [0,5] \
[0,0,1] [5] [0,6] [6] [0,7] [0,1,0] [1,1] [7] [0,8] [0,0,2] [3,0] [0,9] [8] [9] [1,0,0] [0,2,0] \
[1,2] [0,0,3] [4,0] [2,1] [0,0,4] [0,0,5] [0,0,0,0] [0,1,1] [0,0,6] [0,3,0] [5,0] [1,3] [0,0,7] \
[0,0,8] [0,0,9] [6,0] [0,4,0] [1,4] [7,0] [0,1,2] [2,0,0] [3,1] [2,2] [8,0] [0,5,0] [1,5] \
[1,0,1] [0,2,1] [9,0] [0,6,0] [0,0,0,1] [1,6] [0,7,0]";

/// A static tree of rank paths: node `[r1, .., rd]` carries `C[d][rd]`, the candidate of rank
/// `rd` at depth `d`. Paths are in priority order and every path's parent comes before it, so any
/// prefix of the template is itself a tree (what a smaller budget uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeTemplate {
    paths: Vec<Vec<usize>>,
    /// Index of each path's parent path (`None` for depth 1).
    parents: Vec<Option<usize>>,
}

impl TreeTemplate {
    /// A template from rank paths.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a path is empty, repeated, or comes before its parent.
    pub fn new(paths: Vec<Vec<usize>>) -> Result<Self> {
        let mut parents = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            if p.is_empty() || paths[..i].contains(p) {
                return Err(Error::InvalidArgument(format!(
                    "tree template path {i} ({p:?}) is empty or repeated; give each rank path once"
                )));
            }
            let parent = if p.len() == 1 {
                None
            } else {
                let up = &p[..p.len() - 1];
                Some(paths[..i].iter().position(|q| q == up).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "tree template path {p:?} comes before its parent {up:?}; list parents first"
                    ))
                })?)
            };
            parents.push(parent);
        }
        Ok(Self { paths, parents })
    }

    /// The MSN paper's template: 63 paths, depth 4, ranks below 10.
    pub fn msn() -> Self {
        Self::parse(MSN_PATHS).expect("the built-in template is valid")
    }

    /// A single chain of `depth` rank-0 nodes: plain Jacobi's window as a template.
    pub fn chain(depth: usize) -> Self {
        Self::new((1..=depth).map(|d| vec![0; d]).collect()).expect("a chain is valid")
    }

    /// Parses `"[0] [0,0] [1] ..."`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on bad syntax or an invalid tree.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "cannot parse tree template {s:?}; write rank paths like \"[0] [0,0] [1]\""
            ))
        };
        let mut paths = Vec::new();
        for part in s.split(']') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let inner = part.strip_prefix('[').ok_or_else(bad)?;
            let path = inner
                .split(',')
                .map(|r| r.trim().parse::<usize>().map_err(|_| bad()))
                .collect::<Result<Vec<_>>>()?;
            paths.push(path);
        }
        Self::new(paths)
    }

    /// Number of paths (tree nodes without the root).
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// True for the empty template.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Deepest path.
    pub fn depth(&self) -> usize {
        self.paths.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Largest rank + 1 (the `K` the template needs).
    pub fn ranks(&self) -> usize {
        self.paths.iter().flatten().max().map_or(0, |r| r + 1)
    }

    /// The rank paths.
    pub fn paths(&self) -> &[Vec<usize>] {
        &self.paths
    }
}

/// `C[depth][rank]`: candidate tokens for the positions after the root, best first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CandidateTable {
    rows: Vec<Vec<u32>>,
}

impl CandidateTable {
    /// Candidate of `rank` at `depth` (1-based), if any.
    pub fn get(&self, depth: usize, rank: usize) -> Option<u32> {
        self.rows.get(depth.checked_sub(1)?)?.get(rank).copied()
    }

    /// Rows, depth 1 first.
    pub fn rows(&self) -> &[Vec<u32>] {
        &self.rows
    }
}

/// Where the tokens of a tree node's children come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Candidates {
    /// The paper: node `[r1, .., rd]` carries `C[d][rd]` from the previous step's Jacobi logits,
    /// the same token for every node of a depth. What MSN training makes good.
    Jacobi,
    /// Per parent token: the top-`K` tokens the model predicted after that token the last time it
    /// was in a forward pass (a [`TokenGraph`], as in Token Recycling, Luo et al. 2024), so a
    /// node's children follow from its own token; `C[d]` where the token has not been seen yet.
    /// The default: on SmolLM2 it accepts 1.5x more tokens per pass than [`Candidates::Jacobi`]
    /// on the stock model and 1.4x more after MSN fine-tuning (see the README).
    #[default]
    Recycled,
    /// Both lists interleaved (Jacobi rank 0, recycled rank 0, Jacobi rank 1, ...), repeats
    /// dropped.
    Mixed,
}

/// The model's recent top-`K` predictions after each token it has seen in a forward pass (an
/// adjacency list over the vocabulary). Updated from every verified tree, so it grows with the
/// text decoded; [`crate::decode::TrJacobi`] keeps it across prompts.
#[derive(Debug, Clone, Default)]
pub struct TokenGraph {
    next: std::collections::HashMap<u32, Vec<u32>>,
}

impl TokenGraph {
    /// The predictions after `token`, best first (empty when never seen).
    pub fn after(&self, token: u32) -> &[u32] {
        self.next.get(&token).map_or(&[], Vec::as_slice)
    }

    /// Tokens with predictions.
    pub fn len(&self) -> usize {
        self.next.len()
    }

    /// True before anything was recorded.
    pub fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Records that the model's best `top` follow `token`.
    pub fn set(&mut self, token: u32, top: Vec<u32>) {
        self.next.insert(token, top);
    }
}

/// TR-Jacobi parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrJacobiConfig {
    /// The token tree (rank paths).
    pub template: TreeTemplate,
    /// Candidates kept per depth (`K`); at least the template's ranks.
    pub top_k: usize,
    /// Longest n-gram to match for retrieval (tries `max_ngram..=1`).
    pub max_ngram: usize,
    /// Tokens per retrieval chain (0 disables retrieval).
    pub retrieval_len: usize,
    /// Retrieval chains per step.
    pub retrieval_chains: usize,
    /// Seed for the ahead-noise fill of missing candidate rows.
    pub seed: u64,
    /// Source of the tree's candidate tokens.
    pub candidates: Candidates,
}

impl Default for TrJacobiConfig {
    /// The paper's template and `K = 10`, with retrieval as long as prompt lookup's drafts
    /// (see `ALGORITHMS.md`: 5-token chains lose to prompt lookup on copy-heavy prompts), and
    /// [`Candidates::Recycled`] (the paper's own candidate rows are [`Candidates::Jacobi`]).
    fn default() -> Self {
        Self {
            template: TreeTemplate::msn(),
            top_k: 10,
            max_ngram: 3,
            retrieval_len: 10,
            retrieval_chains: 2,
            seed: 0,
            candidates: Candidates::Recycled,
        }
    }
}

/// The per-sequence state: candidate table, retrieval index, noise source.
struct TrState<'a> {
    cfg: &'a TrJacobiConfig,
    table: CandidateTable,
    index: NgramIndex,
    rng: Rng,
    budget: Option<&'a mut TreeBudget>,
    /// Predictions after each token seen (for [`Candidates::Recycled`] and [`Candidates::Mixed`]).
    graph: TokenGraph,
    /// This step's shape and, per template path, its tree node (if placed).
    shape: TreeShape,
    placed: Vec<Option<usize>>,
    /// Tree children, in insertion order (template rank order first).
    children: Vec<Vec<usize>>,
}

impl TrState<'_> {
    fn noise_row(&mut self) -> Vec<u32> {
        let ctx = self.index.tokens();
        if ctx.is_empty() {
            return Vec::new();
        }
        (0..self.cfg.top_k.max(1))
            .map(|_| ctx[self.rng.below(ctx.len())])
            .collect()
    }

    /// The token of the `rank`-th child at `depth` of a node carrying `parent`.
    fn candidate(&self, parent: u32, depth: usize, rank: usize) -> Option<u32> {
        let table = || self.table.get(depth, rank);
        match self.cfg.candidates {
            Candidates::Jacobi => table(),
            Candidates::Recycled => self.graph.after(parent).get(rank).copied().or_else(table),
            Candidates::Mixed => {
                let row = self
                    .table
                    .rows
                    .get(depth - 1)
                    .map_or(&[][..], Vec::as_slice);
                let after = self.graph.after(parent);
                let mut seen = Vec::with_capacity(rank + 1);
                for i in 0..row.len().max(after.len()) {
                    for t in [row.get(i), after.get(i)].into_iter().flatten() {
                        if !seen.contains(t) {
                            if seen.len() == rank {
                                return Some(*t);
                            }
                            seen.push(*t);
                        }
                    }
                }
                None
            }
        }
    }

    /// The Jacobi positions after the accepted prefix: from the last accepted node, down the
    /// first child at each level (the template's rank-0 continuation).
    fn jacobi_rows(&self, v: &Verified) -> Vec<usize> {
        let mut rows = Vec::new();
        let mut at = *v.path.last().expect("root");
        while rows.len() < self.cfg.template.depth() {
            let Some(&c) = self.children[at].first() else {
                break;
            };
            rows.push(c);
            at = c;
        }
        rows
    }

    /// Adds `token` under `parent` unless a child already carries it; returns the node.
    fn insert(&mut self, d: &mut Draft, parent: usize, token: u32, preferred: bool) -> usize {
        if let Some(&c) = self.children[parent]
            .iter()
            .find(|&&c| d.tokens[c] == token)
        {
            d.preferred[c] |= preferred;
            return c;
        }
        let c = d.tree.push(parent);
        d.tokens.push(token);
        d.preferred.push(preferred);
        self.children[parent].push(c);
        self.children.push(Vec::new());
        c
    }
}

impl Drafter for TrState<'_> {
    fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft {
        let mut d = Draft::chain(root, &[]);
        self.children = vec![Vec::new()];
        let scored = self.index.propose_scored(
            &[root],
            self.cfg.retrieval_len.min(depth),
            self.cfg.retrieval_chains,
        );
        let ngram = scored.first().map_or(0, |c| c.0);
        let chains: Vec<Vec<u32>> = scored.into_iter().map(|c| c.1).collect();
        let match_len = chains.iter().map(Vec::len).max().unwrap_or(0);
        let full = TreeShape {
            template: self.cfg.template.len(),
            retrieval: match_len,
        };
        self.shape = match self.budget.as_deref_mut() {
            Some(b) => b.choose(full, ngram),
            None => full,
        };
        // Retrieval first would change which nodes merge, not what is verified; template first
        // keeps the candidate rows' rank order among the root's children.
        self.placed = vec![None; self.cfg.template.len()];
        for (i, path) in self
            .cfg
            .template
            .paths
            .iter()
            .enumerate()
            .take(self.shape.template)
        {
            if d.tree.len() > room || path.len() > depth {
                continue;
            }
            let parent = match self.cfg.template.parents[i] {
                None => Some(0),
                Some(p) => self.placed[p],
            };
            let Some(parent) = parent else {
                continue;
            };
            let Some(token) = self.candidate(d.tokens[parent], path.len(), path[path.len() - 1])
            else {
                continue;
            };
            self.placed[i] = Some(self.insert(&mut d, parent, token, false));
        }
        for chain in &chains {
            let mut at = 0;
            for &t in chain.iter().take(self.shape.retrieval) {
                if d.tree.len() > room && !self.children[at].iter().any(|&c| d.tokens[c] == t) {
                    break;
                }
                at = self.insert(&mut d, at, t, true);
            }
        }
        d
    }

    fn top_k_rows(&self, draft: &Draft, v: &Verified) -> (Vec<usize>, usize) {
        let k = self.cfg.top_k.max(self.cfg.template.ranks());
        match self.cfg.candidates {
            Candidates::Jacobi => (self.jacobi_rows(v), k),
            // Every node: each one's prediction goes into the token graph.
            Candidates::Recycled | Candidates::Mixed => ((0..draft.tree.len()).collect(), k),
        }
    }

    fn observe(&mut self, draft: &Draft, preds: &[u32], v: &Verified, top_k: &[Vec<u32>]) {
        if let Some(b) = self.budget.as_deref_mut() {
            b.record(&self.shape, draft, preds, &self.placed);
        }
        // New depth d sits at old depth d + accepted + 1: old rows there are still guesses for
        // it; top-k rows from this step are better; noise fills the rest.
        let shift = v.path.len();
        let depth = self.cfg.template.depth();
        let mut rows: Vec<Vec<u32>> = match self.cfg.candidates {
            Candidates::Jacobi => top_k.to_vec(),
            Candidates::Recycled | Candidates::Mixed => {
                // Accepted nodes last: their predictions came from the real context.
                let on_path = |i: &usize| v.path.contains(i);
                let (path, off): (Vec<usize>, Vec<usize>) =
                    (0..draft.tree.len()).partition(on_path);
                for i in off.into_iter().chain(path) {
                    self.graph.set(draft.tokens[i], top_k[i].clone());
                }
                self.jacobi_rows(v)
                    .into_iter()
                    .map(|i| top_k[i].clone())
                    .collect()
            }
        };
        while rows.len() < depth {
            let old = self.table.rows.get(rows.len() + shift).cloned();
            let row = match old {
                Some(r) => r,
                None => self.noise_row(),
            };
            rows.push(row);
        }
        self.table.rows = rows;
        self.index.extend(&draft.tokens[..1]);
        self.index.extend(&v.tokens[..v.tokens.len() - 1]);
    }
    fn timed(&mut self, tokens: usize, secs: f64) {
        if let Some(b) = self.budget.as_deref_mut() {
            b.record_step(tokens, secs);
        }
    }
}

/// TR-Jacobi decoding. Same contract as [`crate::greedy`] (identical output); `steps` counts
/// forward passes and `accept_lengths` the tokens each committed.
///
/// With a `budget`, the tree each step verifies is the prefix of the template and the retrieval
/// length that the device's latency curve and the observed acceptance say is fastest (possibly
/// just the root: a greedy step). Reuse one budget across prompts to keep what it learnt.
///
/// # Errors
/// As [`crate::greedy`]; [`Error::InvalidArgument`] when `top_k` is below the template's ranks.
pub fn tr_jacobi<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    tc: &TrJacobiConfig,
    budget: Option<&mut TreeBudget>,
    on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<Generation> {
    let mut graph = TokenGraph::default();
    tr_jacobi_with_graph(
        model, tokenizer, prompt, config, tc, budget, &mut graph, on_text,
    )
}

/// [`tr_jacobi`] drafting from (and adding to) a [`TokenGraph`] kept by the caller.
#[allow(clippy::too_many_arguments)]
pub(crate) fn tr_jacobi_with_graph<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    tc: &TrJacobiConfig,
    budget: Option<&mut TreeBudget>,
    graph: &mut TokenGraph,
    on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<Generation> {
    tc.check()?;
    let mut state = TrState::new(prompt, tc, budget, std::mem::take(graph));
    let out = tree_decode(
        model,
        tokenizer,
        prompt,
        config,
        tc.max_nodes(),
        &mut state,
        on_text,
    );
    *graph = state.graph;
    out
}

/// TR-Jacobi over a batch of prompts (ragged acceptance: each sequence keeps its own accepted
/// branch in one shared cache); every output equals the prompt decoded alone. No tree budget:
/// the tree is the configured one; each sequence starts its own, empty [`TokenGraph`].
///
/// # Errors
/// As [`tr_jacobi`], for any of the prompts.
pub fn tr_jacobi_batch<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    tc: &TrJacobiConfig,
) -> Result<Vec<Generation>> {
    tc.check()?;
    let mut states: Vec<TrState> = prompts
        .iter()
        .map(|p| TrState::new(p, tc, None, TokenGraph::default()))
        .collect();
    let mut drafters: Vec<&mut dyn Drafter> =
        states.iter_mut().map(|s| s as &mut dyn Drafter).collect();
    tree_decode_batch(
        model,
        tokenizer,
        prompts,
        config,
        tc.max_nodes(),
        &mut drafters,
    )
}

impl TrJacobiConfig {
    /// Most tree nodes after the root.
    fn max_nodes(&self) -> usize {
        self.template.len() + self.retrieval_len * self.retrieval_chains
    }

    fn check(&self) -> Result<()> {
        if self.top_k < self.template.ranks() {
            return Err(Error::InvalidArgument(format!(
                "top_k = {} but the tree template uses ranks up to {}; raise top_k",
                self.top_k,
                self.template.ranks()
            )));
        }
        Ok(())
    }
}

impl<'a> TrState<'a> {
    fn new(
        prompt: &[u32],
        tc: &'a TrJacobiConfig,
        budget: Option<&'a mut TreeBudget>,
        graph: TokenGraph,
    ) -> Self {
        let mut index = NgramIndex::new(tc.max_ngram);
        index.extend(prompt);
        let mut state = TrState {
            cfg: tc,
            table: CandidateTable::default(),
            index,
            rng: Rng::new(tc.seed),
            budget,
            graph,
            shape: TreeShape::default(),
            placed: Vec::new(),
            children: Vec::new(),
        };
        // Cold start: ahead noise from the prompt in every row.
        state.table.rows = (0..tc.template.depth())
            .map(|_| state.noise_row())
            .collect();
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_template_has_63_paths_of_depth_4() {
        let t = TreeTemplate::msn();
        assert_eq!((t.len(), t.depth(), t.ranks()), (63, 4, 10));
    }

    /// The tokens of the draft's nodes at `depth`, in node order.
    fn at_depth(d: &Draft, depth: usize) -> Vec<u32> {
        (1..d.tree.len())
            .filter(|&i| d.tree.depth(i) == depth)
            .map(|i| d.tokens[i])
            .collect()
    }

    #[test]
    fn candidate_sources_fill_the_template_from_the_table_the_graph_or_both() {
        let template = TreeTemplate::parse("[0] [1] [0,0] [0,1] [1,0]").unwrap();
        let cfg = |candidates| TrJacobiConfig {
            template: template.clone(),
            top_k: 2,
            retrieval_len: 0,
            candidates,
            ..Default::default()
        };
        let mut graph = TokenGraph::default();
        graph.set(5, vec![7, 8]);
        graph.set(7, vec![9, 1]);
        // Token 8 was never seen: its children come from the table.
        let table = vec![vec![1, 2], vec![3, 4]];
        let draft = |c: &TrJacobiConfig| {
            let mut st = TrState::new(&[], c, None, graph.clone());
            st.table.rows = table.clone();
            st.draft(5, 100, 10)
        };
        let d = draft(&cfg(Candidates::Jacobi));
        assert_eq!(at_depth(&d, 1), vec![1, 2]);
        assert_eq!(at_depth(&d, 2), vec![3, 4, 3]);
        let d = draft(&cfg(Candidates::Recycled));
        assert_eq!(at_depth(&d, 1), vec![7, 8]);
        assert_eq!(at_depth(&d, 2), vec![9, 1, 3]);
        // Interleaved: table rank 0, graph rank 0, table rank 1, ...
        let d = draft(&cfg(Candidates::Mixed));
        assert_eq!(at_depth(&d, 1), vec![1, 7]);
        assert_eq!(at_depth(&d, 2), vec![3, 4, 3]);
        let mixed_cfg = cfg(Candidates::Mixed);
        let mut mixed = TrState::new(&[], &mixed_cfg, None, graph.clone());
        mixed.table.rows = vec![vec![7, 2], vec![9, 4]];
        // Repeats dropped: table [7, 2] and graph [7, 8] give 7, 2, 8.
        assert_eq!(
            (0..4).map(|r| mixed.candidate(5, 1, r)).collect::<Vec<_>>(),
            vec![Some(7), Some(2), Some(8), None]
        );
    }

    #[test]
    fn templates_reject_orphans_and_bad_syntax() {
        assert!(TreeTemplate::parse("[0] [1,0]").is_err());
        assert!(TreeTemplate::parse("[0] [0]").is_err());
        assert!(TreeTemplate::parse("[0] [x]").is_err());
        assert_eq!(
            TreeTemplate::parse("[0] [0,0]").unwrap(),
            TreeTemplate::chain(2)
        );
    }
}
