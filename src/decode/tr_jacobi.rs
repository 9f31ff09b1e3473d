//! TR-Jacobi: tree-based, retrieval-augmented Jacobi decoding (the MSN paper's decoder).
//!
//! Each step verifies one token tree in one forward pass. The tree is a static
//! [`TreeTemplate`](crate::TreeTemplate) of rank paths filled from a candidate table (the top-`K` tokens the
//! previous step predicted at the Jacobi positions after the accepted prefix), merged as a trie
//! with n-gram retrieval chains from the committed text, so no token is verified twice. Greedy
//! verification keeps the output identical to greedy decoding.

use crate::decode::batch::tree_decode_batch;
use crate::decode::budget::{LatencyCurve, NodeBudget};
use crate::decode::candidates::TokenGraph;
use crate::decode::tr_config::TrJacobiConfig;
use crate::decode::tr_state::TrState;
use crate::decode::tree_decode::tree_decode;
use crate::decode::{Decoder, DraftMemory, Drafter, OnText};
use crate::error::Result;
use crate::generation::{GenerateConfig, Generation};
use crate::model::{CausalLm, Tokenizer};
use burn::prelude::*;

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

/// TR-Jacobi decoding: each step verifies one token tree (the [`TreeTemplate`](crate::TreeTemplate) filled from the
/// chosen [`Candidates`](crate::Candidates), merged with what followed the current text in the request itself and
/// in a [`DraftMemory`] of earlier requests) in one forward pass; greedy verification keeps the
/// output identical to greedy decoding.
///
/// By default ([`TrJacobi::default`], [`TrJacobi::new`], `"tr-jacobi".parse()`) each step
/// verifies only the nodes expected to pay for themselves on the device: every candidate
/// carries a learned probability of being accepted (from its rank among the model's earlier
/// predictions, or how long and how frequent its match is), and the step takes the most likely
/// nodes up to the count with the most expected tokens per second on the device's latency curve
/// (measured on first use, a second or two on a small model; [`TrJacobi::auto_cached`] keeps it
/// in a file), possibly none: a greedy step. [`TrJacobi::fixed`] verifies the whole configured
/// tree every step, as the paper does.
///
/// The decoder keeps its token graph, budget and memory across prompts, so it learns as it goes;
/// every prompt and its output go into the memory. A clone copies the decoder's own memory, but
/// shares one given by [`TrJacobi::with_memory`].
///
/// # Examples
/// ```
/// use msn::{Candidates, DraftMemory, TrJacobi, TrJacobiConfig, TreeTemplate};
///
/// let config = TrJacobiConfig {
///     template: TreeTemplate::parse("[0] [0,0] [1] [0,1]").unwrap(),
///     top_k: 2,
///     candidates: Candidates::Jacobi,
///     ..Default::default()
/// };
/// // Budgeted, with a memory shared with other decoders:
/// let memory = DraftMemory::default();
/// let decoder = TrJacobi::new(config.clone())?.with_memory(memory.clone());
/// assert!(decoder.memory().unwrap().same_as(&memory));
/// // The paper's fixed tree, every node every step, no memory:
/// let fixed = TrJacobi::fixed(config)?;
/// assert_eq!(fixed.config().template.len(), 4);
/// # Ok::<(), msn::Error>(())
/// ```
#[derive(Debug)]
pub struct TrJacobi {
    config: TrJacobiConfig,
    /// How each step's tree is sized (the budget is kept across prompts).
    plan: Plan,
    /// Predictions after each token seen, for recycled candidates (kept across prompts).
    graph: TokenGraph,
    /// Earlier prompts and outputs.
    memory: Option<DraftMemory>,
    /// Whether the memory was given (shared by clones) rather than the decoder's own (copied).
    shared_memory: bool,
}

impl Clone for TrJacobi {
    fn clone(&self) -> Self {
        let memory = match (&self.memory, self.shared_memory) {
            (Some(m), false) => Some(m.snapshot()),
            (m, _) => m.clone(),
        };
        Self {
            config: self.config.clone(),
            plan: self.plan.clone(),
            graph: self.graph.clone(),
            memory,
            shared_memory: self.shared_memory,
        }
    }
}

/// How each step's tree is sized.
#[derive(Debug, Clone)]
enum Plan {
    /// The whole configured tree.
    Fixed,
    /// A budget over a latency curve measured at the first generation.
    FirstUse,
    Budget(NodeBudget),
}

impl Default for TrJacobi {
    /// [`TrJacobi::new`] with the default configuration.
    fn default() -> Self {
        Self::new(TrJacobiConfig::default()).expect("the default configuration is valid")
    }
}

impl TrJacobi {
    /// TR-Jacobi sized per step by its budget, whose latency curve is measured at the first
    /// generation (a forward of each of a few sizes), with a draft memory of its own.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `top_k` is below the template's ranks.
    pub fn new(config: TrJacobiConfig) -> Result<Self> {
        config.check()?;
        Ok(Self {
            config,
            plan: Plan::FirstUse,
            graph: TokenGraph::default(),
            memory: Some(DraftMemory::default()),
            shared_memory: false,
        })
    }

    /// TR-Jacobi verifying the whole configured tree every step (the paper's decoder; on a CPU
    /// much slower than greedy, see the README), with no draft memory unless
    /// [`TrJacobi::with_memory`] gives one.
    ///
    /// # Errors
    /// As [`TrJacobi::new`].
    pub fn fixed(config: TrJacobiConfig) -> Result<Self> {
        let mut d = Self::new(config)?;
        d.plan = Plan::Fixed;
        d.memory = None;
        Ok(d)
    }

    /// [`TrJacobi::new`] with `model`'s latency curve measured now (over a 256-token context; a
    /// few seconds on a CPU) instead of at the first generation.
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
    /// [`Error::Io`](crate::Error::Io) when the file cannot be written; [`Error::InvalidArgument`](crate::Error::InvalidArgument) as
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
        d.plan = Plan::Budget(NodeBudget::new(curve));
        Ok(d)
    }

    /// Drafts also from `memory` (and adds every prompt and output to it), replacing the
    /// decoder's own; clones of one [`DraftMemory`] share it between decoders and threads.
    pub fn with_memory(mut self, memory: DraftMemory) -> Self {
        self.memory = Some(memory);
        self.shared_memory = true;
        self
    }

    /// Drafts from the current request only (its own text and the token graph).
    pub fn without_memory(mut self) -> Self {
        self.memory = None;
        self
    }

    /// The draft memory (`None` without one).
    pub fn memory(&self) -> Option<&DraftMemory> {
        self.memory.as_ref()
    }

    /// Plans with the start-up latency curve only, never with measured step times (keeps runs
    /// reproducible where timing is not).
    pub fn curve_only(mut self) -> Self {
        if let Plan::Budget(b) = self.plan {
            self.plan = Plan::Budget(b.curve_only());
        }
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
    /// steps, is not used, each sequence starts an empty token graph, and the memory is not
    /// read or written. Every [`Generation::wall_time_s`] is the whole batch's time. Streaming
    /// is not offered here.
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
            .map(|p| TrState::new(p, tc, None, None, TokenGraph::default()))
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
        if matches!(self.plan, Plan::FirstUse) {
            let s = std::time::Instant::now();
            let curve = LatencyCurve::for_first_use(model, &Self::curve_sizes(&self.config));
            log::info!(
                "tr-jacobi: latency curve measured in {:.2} s",
                s.elapsed().as_secs_f64()
            );
            self.plan = Plan::Budget(NodeBudget::new(curve));
        }
        let budget = match &mut self.plan {
            Plan::Budget(b) => Some(b),
            _ => None,
        };
        let graph = std::mem::take(&mut self.graph);
        let mut state = TrState::new(prompt, &self.config, self.memory.as_ref(), budget, graph);
        let out = tree_decode(model, tokenizer, prompt, config, on_text, &mut state);
        self.graph = std::mem::take(&mut state.graph);
        drop(state);
        if let Plan::Budget(b) = &self.plan {
            log::debug!(
                "tr-jacobi: node acceptance by evidence cell {:?}",
                b.cells()
            );
        }
        if let (Ok(g), Some(m)) = (&out, &self.memory) {
            m.add(&[prompt, &g.tokens[..]].concat());
        }
        out
    }
}

impl TrJacobiDecoder for TrJacobi {
    fn tree_config(&self) -> &TrJacobiConfig {
        &self.config
    }

    fn latency_curve(&self) -> Option<&LatencyCurve> {
        match &self.plan {
            Plan::Budget(b) => Some(b.curve()),
            _ => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Candidates, Draft, TreeTemplate};

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
            prompt_cache: None,
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
            AnyDecoder::TrJacobi(TrJacobi::fixed(TrJacobiConfig::default()).unwrap()),
            "tr-jacobi".parse().unwrap(),
            "suffix".parse().unwrap(),
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
            if let AnyDecoder::TrJacobi(t) = &dec
                && t.latency_curve().is_none()
            {
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
            let mut st = TrState::new(&[], c, None, None, graph.clone());
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
        let mut mixed = TrState::new(&[], &mixed_cfg, None, None, graph.clone());
        mixed.table.rows = vec![vec![7, 2], vec![9, 4]];
        // Repeats dropped: table [7, 2] and graph [7, 8] give 7, 2, 8.
        assert_eq!(
            (0..4).map(|r| mixed.candidate(5, 1, r)).collect::<Vec<_>>(),
            vec![Some(7), Some(2), Some(8), None]
        );
    }
}
