//! Prompt lookup decoding (PLD): one linear draft from an n-gram match in the context, verified
//! causally in one forward pass. Output equals greedy decoding token for token.

use crate::decode::budget::{DraftBudget, LatencyCurve};
use crate::decode::retrieval::NgramIndex;
use crate::decode::tree_decode::tree_decode;
use crate::decode::{Decoder, Draft, Drafter, OnText, Verified};
use crate::error::Result;
use crate::generation::{GenerateConfig, Generation};
use crate::model::{CausalLm, Tokenizer};
use burn::prelude::*;

/// Prompt lookup parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PldConfig {
    /// Longest n-gram to match (tries `max_ngram..=1`).
    pub max_ngram: usize,
    /// Most draft tokens per step.
    pub max_draft: usize,
}

impl Default for PldConfig {
    fn default() -> Self {
        Self {
            max_ngram: 3,
            max_draft: 10,
        }
    }
}

/// Prompt lookup decoding (PLD): one linear draft from an n-gram match in the context,
/// verified causally in one forward pass. By default a draft is cut to the length expected to
/// commit the most tokens per second on the device (none: a greedy step), from the device's
/// latency curve (measured at the first generation, or now with [`PromptLookup::auto`]) and the
/// acceptance observed; [`PromptLookup::fixed`] verifies every draft whole.
///
/// # Examples
/// ```
/// use msn::{PldConfig, PromptLookup};
///
/// let decoder = PromptLookup::fixed(PldConfig { max_draft: 4, ..Default::default() });
/// assert_eq!(decoder.config().max_draft, 4);
/// assert!(decoder.latency_curve().is_none());
/// ```
#[derive(Debug, Clone)]
pub struct PromptLookup {
    config: PldConfig,
    /// Draft lengths from the device's latency curve (kept across prompts).
    budget: Option<DraftBudget>,
    /// Whether the budget is still to be made at the first generation.
    first_use: bool,
}

impl Default for PromptLookup {
    /// [`PromptLookup::new`] with the default configuration.
    fn default() -> Self {
        Self::new(PldConfig::default())
    }
}

impl PromptLookup {
    /// PLD with `config`, its drafts cut by a budget whose latency curve is measured at the
    /// first generation.
    pub fn new(config: PldConfig) -> Self {
        Self {
            config,
            budget: None,
            first_use: true,
        }
    }

    /// PLD with `config`, verifying as much as matches every step (no budget).
    pub fn fixed(config: PldConfig) -> Self {
        Self {
            first_use: false,
            ..Self::new(config)
        }
    }

    /// PLD whose draft length follows `model`'s latency curve on its device (measured now over
    /// a 256-token context; a few seconds on a CPU) and the acceptance observed.
    pub fn auto<B: Backend, M: CausalLm<B>>(model: &M, config: PldConfig) -> Self {
        let curve = LatencyCurve::for_budget(model, &Self::curve_sizes(&config));
        Self::with_curve(config, curve)
    }

    /// [`PromptLookup::auto`] reading the latency curve from the file `cache` when it was
    /// measured there before for the same sizes (one file per model, dtype, backend and
    /// machine).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the file cannot be written.
    pub fn auto_cached<B: Backend, M: CausalLm<B>>(
        model: &M,
        config: PldConfig,
        cache: &std::path::Path,
    ) -> Result<Self> {
        let curve = LatencyCurve::for_budget_cached(model, &Self::curve_sizes(&config), cache)?;
        Ok(Self::with_curve(config, curve))
    }

    /// PLD budgeted by a given latency curve.
    pub fn with_curve(config: PldConfig, curve: LatencyCurve) -> Self {
        Self {
            budget: Some(DraftBudget::new(curve, config.max_draft, 4)),
            config,
            first_use: false,
        }
    }

    /// Forward sizes the budget needs: every draft length.
    fn curve_sizes(config: &PldConfig) -> Vec<usize> {
        (1..=config.max_draft + 1).collect()
    }

    /// The parameters.
    pub fn config(&self) -> &PldConfig {
        &self.config
    }

    /// The latency curve the budget plans with (`None` without a budget).
    pub fn latency_curve(&self) -> Option<&LatencyCurve> {
        self.budget.as_ref().map(|b| b.costs().curve())
    }

    /// Plans with the start-up latency curve only, never with measured step times (keeps runs
    /// reproducible where timing is not).
    pub fn curve_only(mut self) -> Self {
        self.budget = self.budget.map(DraftBudget::curve_only);
        self
    }
}

impl Decoder for PromptLookup {
    fn name(&self) -> &'static str {
        "pld"
    }

    fn decode<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut OnText<'_>>,
    ) -> Result<Generation> {
        if self.first_use {
            let curve = LatencyCurve::for_first_use(model, &Self::curve_sizes(&self.config));
            *self = Self::with_curve(self.config, curve);
        }
        let pld = &self.config;
        let mut index = NgramIndex::new(pld.max_ngram);
        index.extend(prompt);
        let mut drafter = Lookup {
            index,
            max_draft: pld.max_draft,
            budget: self.budget.as_mut(),
        };
        tree_decode(model, tokenizer, prompt, config, on_text, &mut drafter)
    }
}

/// PLD's drafter: the n-gram index over everything committed before the root.
struct Lookup<'a> {
    index: NgramIndex,
    max_draft: usize,
    budget: Option<&'a mut DraftBudget>,
}

impl Drafter for Lookup<'_> {
    fn max_nodes(&self) -> usize {
        self.max_draft + 1
    }

    fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft {
        let mut draft = self
            .index
            .propose(&[root], self.max_draft.min(room).min(depth), 1)
            .into_iter()
            .next()
            .unwrap_or_default();
        if let Some(b) = self.budget.as_deref_mut() {
            draft.truncate(b.choose(draft.len()));
        }
        Draft::chain(root, &draft)
    }

    fn observe(&mut self, draft: &Draft, _preds: &[u32], v: &Verified, _top_k: &[Vec<u32>]) {
        let committed = &v.tokens;
        if let Some(b) = self.budget.as_deref_mut() {
            b.record(draft.tokens.len() - 1, committed.len() - 1);
        }
        self.index.extend(&draft.tokens[..1]);
        self.index.extend(&committed[..committed.len() - 1]);
    }
    fn timed(&mut self, tokens: usize, secs: f64) {
        if let Some(b) = self.budget.as_deref_mut() {
            b.record_step(tokens, secs);
        }
    }
}
