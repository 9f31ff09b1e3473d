//! One interface over every decoder, so benchmarks and applications switch decoders without
//! changing code. Every implementation returns exactly greedy decoding's tokens.

use crate::decode::{
    DraftBudget, JacobiConfig, LatencyCurve, LookaheadConfig, PldConfig, TokenGraph,
    TrJacobiConfig, TreeBudget, jacobi, lookahead, prompt_lookup, prompt_lookup_with_budget,
    tr_jacobi::tr_jacobi_with_graph, tr_jacobi_batch,
};
use crate::error::Result;
use crate::generate::{GenerateConfig, Generation, greedy};
use crate::model::CausalLm;
use crate::model::tokenizer::Tokenizer;
use burn::prelude::*;

/// A lossless decoder: [`Decoder::generate`] has [`crate::greedy`]'s contract and output.
///
/// # Examples
/// ```no_run
/// use msn::decode::{Decoder, TrJacobi};
/// # fn f<B: burn::prelude::Backend>(m: &msn::LoadedModel<B>) -> msn::Result<()> {
/// let mut dec = TrJacobi::default();
/// let ids = m.tokenizer.encode("def fib(n):")?;
/// let g = dec.generate(&m.model, Some(&m.tokenizer), &ids, &msn::GenerateConfig::new(64, &m.tokenizer), None)?;
/// println!("{} ({:.2} tokens per forward pass)", g.text, g.accepted_tokens_per_step());
/// # Ok(()) }
/// ```
pub trait Decoder {
    /// Short name (`greedy`, `jacobi`, `pld`, `lookahead`, `tr-jacobi`).
    fn name(&self) -> &'static str;

    /// Generates from `prompt`; `on_text` receives the text in order, once.
    ///
    /// # Errors
    /// As [`crate::greedy`].
    fn generate<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation>;
}

/// The MSN paper's decoder: a [`Decoder`] that verifies a token tree built from a candidate
/// table and retrieval chains, sized by an optional [`TreeBudget`].
pub trait TrJacobiDecoder: Decoder {
    /// Tree, `K` and retrieval parameters.
    fn tree_config(&self) -> &TrJacobiConfig;
    /// The budget sizing each step's tree, when "auto".
    fn tree_budget(&self) -> Option<&TreeBudget>;

    /// Decodes several prompts in one batch (ragged acceptance; each output equals the prompt
    /// decoded alone) with the configured tree; the budget is not used. Every
    /// [`Generation::wall_time_s`] is the whole batch's time.
    ///
    /// # Errors
    /// As [`Decoder::generate`], for any of the prompts.
    fn generate_batch<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompts: &[Vec<u32>],
        config: &GenerateConfig,
    ) -> Result<Vec<Generation>> {
        tr_jacobi_batch(model, tokenizer, prompts, config, self.tree_config())
    }
}

/// Greedy decoding: one token per forward pass.
#[derive(Debug, Clone, Copy, Default)]
pub struct Greedy;

impl Decoder for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn generate<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation> {
        greedy(model, tokenizer, prompt, config, on_text)
    }
}

/// Plain Jacobi decoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct Jacobi(pub JacobiConfig);

impl Decoder for Jacobi {
    fn name(&self) -> &'static str {
        "jacobi"
    }

    fn generate<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation> {
        jacobi(model, tokenizer, prompt, config, &self.0, on_text)
    }
}

/// Lookahead decoding.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lookahead(pub LookaheadConfig);

impl Decoder for Lookahead {
    fn name(&self) -> &'static str {
        "lookahead"
    }

    fn generate<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation> {
        lookahead(model, tokenizer, prompt, config, &self.0, on_text)
    }
}

/// Prompt lookup decoding, optionally budgeted.
#[derive(Debug, Clone, Default)]
pub struct PromptLookup {
    /// Parameters.
    pub config: PldConfig,
    /// Draft lengths from the device's latency curve (kept across prompts).
    pub budget: Option<DraftBudget>,
}

impl Decoder for PromptLookup {
    fn name(&self) -> &'static str {
        "pld"
    }

    fn generate<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation> {
        match self.budget.as_mut() {
            Some(b) => prompt_lookup_with_budget(
                model,
                tokenizer,
                prompt,
                config,
                &self.config,
                b,
                on_text,
            ),
            None => prompt_lookup(model, tokenizer, prompt, config, &self.config, on_text),
        }
    }
}

/// TR-Jacobi decoding, optionally budgeted ("auto" tree size).
#[derive(Debug, Clone, Default)]
pub struct TrJacobi {
    /// Parameters.
    pub config: TrJacobiConfig,
    /// Tree sizes from the device's latency curve (kept across prompts).
    pub budget: Option<TreeBudget>,
    /// Predictions after each token seen, for recycled candidates (kept across prompts).
    pub graph: TokenGraph,
}

impl TrJacobi {
    /// TR-Jacobi with a fixed tree (no budget).
    pub fn new(config: TrJacobiConfig) -> Self {
        Self {
            config,
            budget: None,
            graph: TokenGraph::default(),
        }
    }

    /// TR-Jacobi whose tree size follows `model`'s measured latency curve on its device
    /// (measured now, over a 256-token context; a few seconds on a CPU).
    pub fn auto<B: Backend, M: CausalLm<B>>(model: &M, config: TrJacobiConfig) -> Self {
        let curve = LatencyCurve::measure_at(model, 256, &Self::curve_sizes(&config), 3);
        Self::with_curve(config, curve)
    }

    /// [`TrJacobi::auto`] reading the latency curve from `cache` when it was measured there
    /// before for the same tree sizes (see [`LatencyCurve::measure_cached`]; one file per model,
    /// dtype, backend and machine).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the cache file cannot be written.
    pub fn auto_cached<B: Backend, M: CausalLm<B>>(
        model: &M,
        config: TrJacobiConfig,
        cache: &std::path::Path,
    ) -> Result<Self> {
        let sizes = Self::curve_sizes(&config);
        let curve = LatencyCurve::measure_cached(model, 256, &sizes, 3, cache)?;
        Ok(Self::with_curve(config, curve))
    }

    /// Forward sizes the budget needs measured: a grid up to the largest tree.
    fn curve_sizes(config: &TrJacobiConfig) -> Vec<usize> {
        let max = 1 + config.template.len() + config.retrieval_len * config.retrieval_chains;
        [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96]
            .into_iter()
            .filter(|&t| t < max)
            .chain([max])
            .collect()
    }

    /// TR-Jacobi budgeted by a given (e.g. cached) latency curve.
    pub fn with_curve(config: TrJacobiConfig, curve: LatencyCurve) -> Self {
        Self {
            config,
            budget: Some(TreeBudget::new(curve, 2)),
            graph: TokenGraph::default(),
        }
    }
}

impl Decoder for TrJacobi {
    fn name(&self) -> &'static str {
        "tr-jacobi"
    }

    fn generate<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation> {
        tr_jacobi_with_graph(
            model,
            tokenizer,
            prompt,
            config,
            &self.config,
            self.budget.as_mut(),
            &mut self.graph,
            on_text,
        )
    }
}

impl TrJacobiDecoder for TrJacobi {
    fn tree_config(&self) -> &TrJacobiConfig {
        &self.config
    }

    fn tree_budget(&self) -> Option<&TreeBudget> {
        self.budget.as_ref()
    }
}

/// Any of this crate's decoders, chosen at run time (command lines, benchmark tables).
#[derive(Debug, Clone)]
pub enum AnyDecoder {
    /// [`Greedy`].
    Greedy(Greedy),
    /// [`Jacobi`].
    Jacobi(Jacobi),
    /// [`PromptLookup`].
    PromptLookup(PromptLookup),
    /// [`Lookahead`].
    Lookahead(Lookahead),
    /// [`TrJacobi`].
    TrJacobi(TrJacobi),
}

impl Decoder for AnyDecoder {
    fn name(&self) -> &'static str {
        match self {
            Self::Greedy(d) => d.name(),
            Self::Jacobi(d) => d.name(),
            Self::PromptLookup(d) => d.name(),
            Self::Lookahead(d) => d.name(),
            Self::TrJacobi(d) => d.name(),
        }
    }

    fn generate<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut dyn FnMut(&str)>,
    ) -> Result<Generation> {
        match self {
            Self::Greedy(d) => d.generate(model, tokenizer, prompt, config, on_text),
            Self::Jacobi(d) => d.generate(model, tokenizer, prompt, config, on_text),
            Self::PromptLookup(d) => d.generate(model, tokenizer, prompt, config, on_text),
            Self::Lookahead(d) => d.generate(model, tokenizer, prompt, config, on_text),
            Self::TrJacobi(d) => d.generate(model, tokenizer, prompt, config, on_text),
        }
    }
}
