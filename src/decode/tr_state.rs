//! TR-Jacobi's per-generation drafter: the candidate table, the request's own suffix index, the
//! shared draft memory and the token graph turned into one token tree per step: the whole
//! configured tree (fixed), or the nodes the [`NodeBudget`] expects to pay for themselves.

use crate::decode::DraftMemory;
use crate::decode::budget::{CandidateTree, Evidence, NodeBudget, Selection};
use crate::decode::candidates::{CandidateTable, Candidates, TokenGraph};
use crate::decode::suffix_index::{Continuations, MAX_MATCH, SuffixIndex};
use crate::decode::tr_config::TrJacobiConfig;
use crate::decode::{Draft, Drafter, Verified};
use crate::rng::Rng;

/// Deepest predicted candidate a budgeted step considers.
const PREDICTED_DEPTH: usize = 8;

/// The per-sequence state: candidate table, retrieval sources, noise source, budget.
pub(crate) struct TrState<'a> {
    cfg: &'a TrJacobiConfig,
    pub(crate) table: CandidateTable,
    /// The request's own text (prompt and committed output, the root excluded).
    index: SuffixIndex,
    memory: Option<&'a DraftMemory>,
    rng: Rng,
    budget: Option<&'a mut NodeBudget>,
    /// Predictions after each token seen (for [`Candidates::Recycled`] and [`Candidates::Mixed`]).
    pub(crate) graph: TokenGraph,
    /// Fixed tree: the draft node of each template path (if placed) and the draft's children.
    placed: Vec<Option<usize>>,
    children: Vec<Vec<usize>>,
    /// Budgeted: this step's candidates and the nodes chosen from them.
    cands: CandidateTree,
    sel: Selection,
}

impl<'a> TrState<'a> {
    pub(crate) fn new(
        prompt: &[u32],
        cfg: &'a TrJacobiConfig,
        memory: Option<&'a DraftMemory>,
        budget: Option<&'a mut NodeBudget>,
        graph: TokenGraph,
    ) -> Self {
        let mut index = SuffixIndex::new(usize::MAX);
        index.extend(prompt);
        let mut state = TrState {
            cfg,
            table: CandidateTable::default(),
            index,
            memory,
            rng: Rng::new(cfg.seed),
            budget,
            graph,
            placed: Vec::new(),
            children: Vec::new(),
            cands: CandidateTree::new(0),
            sel: Selection::default(),
        };
        // Cold start: ahead noise from the prompt in every row.
        state.table.rows = (0..cfg.template.depth())
            .map(|_| state.noise_row())
            .collect();
        state
    }

    fn noise_row(&mut self) -> Vec<u32> {
        let ctx = self.index.open_tokens();
        if ctx.is_empty() {
            return Vec::new();
        }
        (0..self.cfg.top_k.max(1))
            .map(|_| ctx[self.rng.below(ctx.len())])
            .collect()
    }

    /// The token of the `rank`-th child at `depth` of a node carrying `parent`.
    pub(crate) fn candidate(&self, parent: u32, depth: usize, rank: usize) -> Option<u32> {
        self.sourced(parent, depth, rank).map(|c| c.0)
    }

    /// [`TrState::candidate`], and whether it is the model's prediction after `parent` itself
    /// (the token graph) rather than the table's for the depth.
    fn sourced(&self, parent: u32, depth: usize, rank: usize) -> Option<(u32, bool)> {
        let table = || self.table.get(depth, rank).map(|t| (t, false));
        let graph_at = |r: usize| self.graph.after(parent).get(r).map(|&t| (t, true));
        match self.cfg.candidates {
            Candidates::Jacobi => table(),
            Candidates::Recycled => graph_at(rank).or_else(table),
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
                                return Some((*t, after.contains(t)));
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
    /// first child at each level (the template's rank-0 continuation, or the likeliest node).
    fn jacobi_rows(&self, draft: &Draft, v: &Verified) -> Vec<usize> {
        let mut rows = Vec::new();
        let mut at = *v.path.last().expect("root");
        while rows.len() < self.cfg.template.depth() {
            let Some(c) = (at + 1..draft.len()).find(|&c| draft.tree.parent(c) == Some(at)) else {
                break;
            };
            rows.push(c);
            at = c;
        }
        rows
    }

    /// What followed the current text (the root included) in the request and in the memory.
    fn continuations(&self, root: u32, depth: usize) -> [Continuations; 2] {
        let text = self.index.open_tokens();
        let mut ctx = text[text.len().saturating_sub(MAX_MATCH - 1)..].to_vec();
        ctx.push(root);
        let mine = self.index.continuations(&ctx, depth);
        let shared = self
            .memory
            .map(|m| m.continuations(&ctx, depth))
            .unwrap_or_default();
        [mine, shared]
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
        let c = d.push(parent, token);
        d.preferred[c] = preferred;
        self.children[parent].push(c);
        self.children.push(Vec::new());
        c
    }

    /// The whole configured tree: every template path, then the top retrieval chains.
    fn draft_fixed(&mut self, root: u32, room: usize, depth: usize) -> Draft {
        let mut d = Draft::root(root);
        self.children = vec![Vec::new()];
        let len = self.cfg.retrieval_len.min(depth);
        let chains: Vec<Vec<u32>> = if len == 0 {
            Vec::new()
        } else {
            self.continuations(root, len)
                .iter()
                .map(Continuations::top_chain)
                .filter(|c| !c.is_empty())
                .take(self.cfg.retrieval_chains)
                .collect()
        };
        // Template first keeps the candidate rows' rank order among the root's children.
        self.placed = vec![None; self.cfg.template.len()];
        for (i, path) in self.cfg.template.paths.iter().enumerate() {
            if d.len() > room || path.len() > depth {
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
            for &t in chain {
                if d.len() > room && !self.children[at].iter().any(|&c| d.tokens[c] == t) {
                    break;
                }
                at = self.insert(&mut d, at, t, true);
            }
        }
        d
    }

    /// The model's own predicted continuations, most likely first: from the root, each node's
    /// candidates of every rank the template uses, at any depth up to [`PREDICTED_DEPTH`], until
    /// as many nodes as the template has are placed.
    fn expand_predicted(&self, t: &mut CandidateTree, budget: &NodeBudget, depth: usize) {
        let ranks = self.cfg.template.ranks();
        let mut frontier = vec![(1.0f64, 0usize, 0usize)];
        let mut placed = 0;
        while placed < self.cfg.template.len() {
            let Some(i) =
                (0..frontier.len()).max_by(|&a, &b| frontier[a].0.total_cmp(&frontier[b].0))
            else {
                break;
            };
            let (p, node, d) = frontier.swap_remove(i);
            if d >= depth.min(PREDICTED_DEPTH) {
                continue;
            }
            for rank in 0..ranks {
                let Some((token, after_token)) = self.sourced(t.token[node], d + 1, rank) else {
                    break;
                };
                let ev = Evidence::Predicted {
                    rank,
                    depth: d + 1,
                    after_token,
                };
                let before = t.len();
                let c = t.add(budget, node, token, ev);
                if t.len() > before {
                    placed += 1;
                    frontier.push((p * budget.probability(ev), c, d + 1));
                }
            }
        }
    }

    /// Every candidate (the model's predicted continuations and the retrieval tries) with its
    /// evidence, then the nodes the budget expects to pay.
    fn draft_budgeted(&mut self, root: u32, room: usize, depth: usize) -> Draft {
        let conts = if self.cfg.retrieval_len == 0 {
            Default::default()
        } else {
            self.continuations(root, self.cfg.retrieval_len.min(depth))
        };
        let budget = self.budget.as_deref().expect("budgeted");
        let mut t = CandidateTree::new(root);
        self.expand_predicted(&mut t, budget, depth);
        for c in &conts {
            let mut at = vec![0usize; c.token.len()];
            // Trie order: every parent before its children.
            for n in 1..c.token.len() {
                let p = c.parent[n];
                let ev = Evidence::Retrieved {
                    matched: c.matched + c.depth[n] - 1,
                    count: c.count[n],
                    of: c.count[p],
                };
                at[n] = t.add(budget, at[p], c.token[n], ev);
            }
        }
        let room = room.min(self.cfg.max_nodes());
        let sel = self
            .budget
            .as_deref_mut()
            .expect("budgeted")
            .select(&t, room);
        let d = sel.draft(&t);
        (self.cands, self.sel) = (t, sel);
        d
    }
}

impl Drafter for TrState<'_> {
    fn max_nodes(&self) -> usize {
        self.cfg.max_nodes() + 1
    }

    fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft {
        if self.budget.is_some() {
            self.draft_budgeted(root, room, depth)
        } else {
            self.draft_fixed(root, room, depth)
        }
    }

    fn top_k_rows(&self, draft: &Draft, v: &Verified) -> (Vec<usize>, usize) {
        if self.cfg.template.is_empty() {
            return (Vec::new(), 0);
        }
        let k = self.cfg.top_k.max(self.cfg.template.ranks());
        match self.cfg.candidates {
            Candidates::Jacobi => (self.jacobi_rows(draft, v), k),
            // The accepted path (each node's prediction, from the real context, goes into the
            // token graph), then the Jacobi rows. Rejected branches are not read: their
            // predictions came from a context that did not happen, and each row read costs a
            // scan of the vocabulary.
            Candidates::Recycled | Candidates::Mixed => {
                let mut rows = v.path.clone();
                rows.extend(self.jacobi_rows(draft, v));
                (rows, k)
            }
        }
    }

    fn observe(&mut self, draft: &Draft, preds: &[u32], v: &Verified, top_k: &[Vec<u32>]) {
        if let Some(b) = self.budget.as_deref_mut() {
            b.record(&self.cands, &self.sel, draft, preds);
        }
        self.index.extend(&draft.tokens[..1]);
        self.index.extend(&v.tokens[..v.tokens.len() - 1]);
        if self.cfg.template.is_empty() {
            return;
        }
        // New depth d sits at old depth d + accepted + 1: old rows there are still guesses for
        // it; top-k rows from this step are better; noise fills the rest.
        let shift = v.path.len();
        let depth = self.cfg.template.depth();
        let mut rows: Vec<Vec<u32>> = match self.cfg.candidates {
            Candidates::Jacobi => top_k.to_vec(),
            Candidates::Recycled | Candidates::Mixed => {
                // Rows as `top_k_rows` asked: the accepted path, then the Jacobi rows.
                let (path, jacobi) = top_k.split_at(v.path.len().min(top_k.len()));
                for (&i, row) in v.path.iter().zip(path) {
                    self.graph.set(draft.tokens[i], row.clone());
                }
                jacobi.to_vec()
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
    }

    fn timed(&mut self, tokens: usize, secs: f64) {
        if let Some(b) = self.budget.as_deref_mut() {
            b.record_step(tokens, secs);
        }
    }
}
