//! TR-Jacobi: tree-based, retrieval-augmented Jacobi decoding (the MSN paper's decoder).
//!
//! Each step verifies one token tree in one forward pass. The tree is a static
//! [`TreeTemplate`] of rank paths filled from a candidate table (the top-`K` tokens the
//! previous step predicted at the Jacobi positions after the accepted prefix), merged as a trie
//! with n-gram retrieval chains from the committed text, so no token is verified twice. Greedy
//! verification keeps the output identical to greedy decoding.

use crate::decode::batch::tree_decode_batch;
use crate::decode::budget::{LatencyCurve, TreeBudget, TreeShape};
use crate::decode::candidates::{CandidateTable, Candidates, TokenGraph};
use crate::decode::retrieval::NgramIndex;
use crate::decode::tree_decode::tree_decode;
use crate::decode::tree_template::TreeTemplate;
use crate::decode::{Decoder, Draft, Drafter, OnText, Verified};
use crate::error::{Error, Result};
use crate::generation::{GenerateConfig, Generation};
use crate::model::{CausalLm, Tokenizer};
use crate::rng::Rng;
use burn::prelude::*;

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
    fn max_nodes(&self) -> usize {
        self.cfg.max_nodes() + 1
    }

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

/// The MSN paper's decoder: a [`Decoder`] that verifies a token tree built from candidate
/// tokens and retrieval chains, its size fixed or chosen per step by a budget.
pub trait TrJacobiDecoder: Decoder {
    /// Tree, `K` and retrieval parameters.
    fn tree_config(&self) -> &TrJacobiConfig;

    /// The latency curve the tree budget plans with (`None` for a fixed tree).
    fn latency_curve(&self) -> Option<&LatencyCurve>;

    /// Decodes several prompts in one batch (ragged acceptance; each output equals the prompt
    /// decoded alone, see [`TrJacobi::generate_batch`]).
    ///
    /// # Errors
    /// As [`Decoder::decode`], for any of the prompts.
    fn generate_batch<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompts: &[Vec<u32>],
        config: &GenerateConfig,
    ) -> Result<Vec<Generation>>;
}

/// TR-Jacobi decoding: each step verifies one token tree (the [`TreeTemplate`] filled from the
/// chosen [`Candidates`], merged with n-gram retrieval chains) in one forward pass; greedy
/// verification keeps the output identical to greedy decoding.
///
/// With a budget ([`TrJacobi::auto`]) each step verifies the prefix of the template and the
/// retrieval length that the device's latency curve and the acceptance observed say is fastest
/// (possibly just the root: a greedy step). The decoder keeps its budget and token graph across
/// prompts, so it learns as it goes; build a new one to start fresh.
///
/// # Examples
/// ```
/// use msn::{Candidates, TrJacobi, TrJacobiConfig, TreeTemplate};
///
/// let config = TrJacobiConfig {
///     template: TreeTemplate::parse("[0] [0,0] [1] [0,1]").unwrap(),
///     top_k: 2,
///     candidates: Candidates::Jacobi,
///     ..Default::default()
/// };
/// let decoder = TrJacobi::new(config).unwrap();
/// assert_eq!(decoder.config().template.len(), 4);
/// ```
#[derive(Debug, Clone, Default)]
pub struct TrJacobi {
    config: TrJacobiConfig,
    /// Tree sizes from the device's latency curve (kept across prompts).
    budget: Option<TreeBudget>,
    /// Predictions after each token seen, for recycled candidates (kept across prompts).
    graph: TokenGraph,
}

impl TrJacobi {
    /// TR-Jacobi with a fixed tree (no budget).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `top_k` is below the template's ranks.
    pub fn new(config: TrJacobiConfig) -> Result<Self> {
        config.check()?;
        Ok(Self {
            config,
            budget: None,
            graph: TokenGraph::default(),
        })
    }

    /// TR-Jacobi whose tree size follows `model`'s measured latency curve on its device
    /// (measured now, over a 256-token context; a few seconds on a CPU).
    ///
    /// # Errors
    /// As [`TrJacobi::new`].
    pub fn auto<B: Backend, M: CausalLm<B>>(model: &M, config: TrJacobiConfig) -> Result<Self> {
        config.check()?;
        let curve = LatencyCurve::for_budget(model, &Self::curve_sizes(&config));
        Self::with_curve(config, curve)
    }

    /// [`TrJacobi::auto`] reading the latency curve from the file `cache` when it was measured
    /// there before for the same tree sizes (one file per model, dtype, backend and machine).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be written; [`Error::InvalidArgument`] as
    /// [`TrJacobi::new`].
    pub fn auto_cached<B: Backend, M: CausalLm<B>>(
        model: &M,
        config: TrJacobiConfig,
        cache: &std::path::Path,
    ) -> Result<Self> {
        config.check()?;
        let curve = LatencyCurve::for_budget_cached(model, &Self::curve_sizes(&config), cache)?;
        Self::with_curve(config, curve)
    }

    /// TR-Jacobi budgeted by a given latency curve.
    ///
    /// # Errors
    /// As [`TrJacobi::new`].
    pub fn with_curve(config: TrJacobiConfig, curve: LatencyCurve) -> Result<Self> {
        let mut d = Self::new(config)?;
        d.budget = Some(TreeBudget::new(curve, 2));
        Ok(d)
    }

    /// Plans with the start-up latency curve only, never with measured step times (keeps runs
    /// reproducible where timing is not).
    pub fn curve_only(mut self) -> Self {
        self.budget = self.budget.map(TreeBudget::curve_only);
        self
    }

    /// Forward sizes the budget needs measured: a grid up to the largest tree.
    fn curve_sizes(config: &TrJacobiConfig) -> Vec<usize> {
        let max = 1 + config.max_nodes();
        [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96]
            .into_iter()
            .filter(|&t| t < max)
            .chain([max])
            .collect()
    }

    /// The parameters.
    pub fn config(&self) -> &TrJacobiConfig {
        &self.config
    }

    /// Decodes several prompts in one batch (ragged acceptance: each sequence keeps its own
    /// accepted branch in one shared cache); every output equals the prompt decoded alone.
    /// A batch always verifies the configured tree: the budget, which prices one sequence's
    /// steps, is not used, and each sequence starts an empty token graph. Every
    /// [`Generation::wall_time_s`] is the whole batch's time. Streaming is not offered here.
    ///
    /// # Errors
    /// As [`Decoder::decode`], for any of the prompts.
    pub fn generate_batch<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompts: &[Vec<u32>],
        config: &GenerateConfig,
    ) -> Result<Vec<Generation>> {
        let tc = &self.config;
        let mut states: Vec<TrState> = prompts
            .iter()
            .map(|p| TrState::new(p, tc, None, TokenGraph::default()))
            .collect();
        let mut drafters: Vec<&mut dyn Drafter> =
            states.iter_mut().map(|s| s as &mut dyn Drafter).collect();
        tree_decode_batch(model, tokenizer, prompts, config, &mut drafters)
    }
}

impl Decoder for TrJacobi {
    fn name(&self) -> &'static str {
        "tr-jacobi"
    }

    fn decode<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut OnText<'_>>,
    ) -> Result<Generation> {
        let graph = std::mem::take(&mut self.graph);
        let mut state = TrState::new(prompt, &self.config, self.budget.as_mut(), graph);
        let out = tree_decode(model, tokenizer, prompt, config, on_text, &mut state);
        self.graph = state.graph;
        out
    }
}

impl TrJacobiDecoder for TrJacobi {
    fn tree_config(&self) -> &TrJacobiConfig {
        &self.config
    }

    fn latency_curve(&self) -> Option<&LatencyCurve> {
        self.budget.as_ref().map(TreeBudget::curve)
    }

    fn generate_batch<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompts: &[Vec<u32>],
        config: &GenerateConfig,
    ) -> Result<Vec<Generation>> {
        TrJacobi::generate_batch(self, model, tokenizer, prompts, config)
    }
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
    fn a_step_moves_only_ids_to_the_host_on_a_device() {
        use crate::{AnyDecoder, Decoder, GenerateConfig, Greedy, Llama, LlamaConfig};
        type B = burn::backend::Flex;
        let d = Default::default();
        let mut c = LlamaConfig::tiny(64);
        c.tie_word_embeddings = false;
        let mut m = Llama::<B>::init_seeded(&c, 5, &d);
        // Peaked next-token distributions: no float near-ties between a tree and a chain.
        if let Some(head) = m.lm_head.as_mut() {
            head.weight = head.weight.clone().map(|w| w * 40.0);
        }
        let cfg = GenerateConfig {
            max_new_tokens: 40,
            eos_ids: vec![],
            stop_strings: vec![],
            sampling: None,
        };
        let prompt = [3, 9, 4, 3, 9, 4, 3, 9];
        let greedy = Greedy.generate(&m, None, &prompt, &cfg).unwrap();
        let jacobi_rows = TrJacobi::new(TrJacobiConfig {
            candidates: Candidates::Jacobi,
            ..Default::default()
        });
        let decoders: Vec<AnyDecoder> = vec![
            AnyDecoder::Greedy(Greedy),
            "jacobi".parse().unwrap(),
            "pld".parse().unwrap(),
            "lookahead".parse().unwrap(),
            // The full tree (63 template paths, 2 retrieval chains), recycled candidates: the
            // top-K of every node each step.
            "tr-jacobi".parse().unwrap(),
            AnyDecoder::TrJacobi(jacobi_rows.unwrap()),
        ];
        crate::logits::DEVICE_TOP_K.with(|f| f.set(true));
        for mut dec in decoders {
            let g = dec.generate(&m, None, &prompt, &cfg).unwrap();
            assert_eq!(g.tokens, greedy.tokens, "{}", dec.name());
            assert_eq!(g.host_reads.len(), g.steps - 1);
            let max = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
            let (reads, bytes) = (max(&g.host_reads), max(&g.host_read_bytes));
            let nodes = max(&g.forward_tokens[1..]);
            eprintln!(
                "{}: up to {nodes} tokens a step, at most {reads} reads and {bytes} bytes a step",
                dec.name()
            );
            if dec.name() == "tr-jacobi" {
                assert!(nodes > 60, "the full tree ran ({nodes} nodes)");
            }
            assert!(
                reads <= 2 && bytes <= 64 * 1024,
                "{reads} reads, {bytes} bytes"
            );
        }
        crate::logits::DEVICE_TOP_K.with(|f| f.set(false));
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
}
