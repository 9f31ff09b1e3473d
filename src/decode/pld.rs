//! Prompt lookup decoding (PLD): one linear draft from an n-gram match in the context, verified
//! causally in one forward pass. Output equals greedy decoding token for token.

use crate::decode::budget::{CandidateTree, Evidence, LatencyCurve, NodeBudget, Selection};
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
/// acceptance observed for drafts behind a match as long as this one (how many tokens before
/// the continuation equal the end of the text: a draft inside repeated text is cut late, one
/// after a lone common word early); [`PromptLookup::fixed`] verifies every draft whole.
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
    /// Draft lengths from the device's latency curve and the acceptance per match length
    /// (kept across prompts).
    budget: Option<NodeBudget>,
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
            budget: Some(NodeBudget::new(curve)),
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
        self.budget.as_ref().map(NodeBudget::curve)
    }

    /// Plans with the start-up latency curve only, never with measured step times (keeps runs
    /// reproducible where timing is not).
    pub fn curve_only(mut self) -> Self {
        self.budget = self.budget.map(NodeBudget::curve_only);
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
            cands: CandidateTree::new(0),
            sel: Selection::default(),
        };
        tree_decode(model, tokenizer, prompt, config, on_text, &mut drafter)
    }
}

/// PLD's drafter: the n-gram index over everything committed before the root.
struct Lookup<'a> {
    index: NgramIndex,
    max_draft: usize,
    budget: Option<&'a mut NodeBudget>,
    /// The last budgeted step's candidates and the nodes it verified.
    cands: CandidateTree,
    sel: Selection,
}

impl Drafter for Lookup<'_> {
    fn max_nodes(&self) -> usize {
        self.max_draft + 1
    }

    fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft {
        let len = self.max_draft.min(room).min(depth);
        let found = self.index.propose(&[root], len, 1).into_iter().next();
        let Some(b) = self.budget.as_deref_mut() else {
            return Draft::chain(root, &found.map(|p| p.tokens).unwrap_or_default());
        };
        // The chain as candidates: the `j`-th token follows a match of `matched + j` tokens.
        let mut t = CandidateTree::new(root);
        if let Some(p) = found {
            let mut at = 0;
            for (j, &token) in p.tokens.iter().enumerate() {
                let ev = Evidence::Retrieved {
                    matched: p.matched + j,
                    count: 1,
                    of: 1,
                };
                at = t.add(b, at, token, ev);
            }
        }
        let sel = b.select(&t, len);
        let d = sel.draft(&t);
        (self.cands, self.sel) = (t, sel);
        d
    }

    fn observe(&mut self, draft: &Draft, preds: &[u32], v: &Verified, _top_k: &[Vec<u32>]) {
        let committed = &v.tokens;
        if let Some(b) = self.budget.as_deref_mut() {
            b.record(&self.cands, &self.sel, draft, preds);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each extra token costs a fifth of a step.
    fn cpu() -> LatencyCurve {
        LatencyCurve::from_points(vec![(1, 1.0), (101, 21.0)])
    }

    #[test]
    fn drafts_inside_repeated_text_and_learns_that_lone_matches_fail() {
        let mut budget = NodeBudget::new(cpu());
        let seg: Vec<u32> = (100..140).collect();
        let mut index = NgramIndex::new(3);
        // The text repeats its first 20 tokens, then a token after an unseen one.
        index.extend(&seg);
        index.extend(&seg[..19]);
        let mut l = Lookup {
            index,
            max_draft: 10,
            budget: Some(&mut budget),
            cands: CandidateTree::new(0),
            sel: Selection::default(),
        };
        // Agreement of 20 tokens; with no acceptance seen yet each node is trusted at 0.85, and
        // (1 + sum of 0.85^d, d <= n) / (1 + n / 5) is largest at n = 5 (2.08; 2.06 at 4 and 6).
        let long = l.draft(seg[19], 100, 100);
        assert_eq!(long.tokens, [&seg[19..20], &seg[20..25]].concat());
        // The same prior behind a one-token match, until drafts behind such matches fail.
        l.index.extend(&[seg[19], 999]);
        let lone = l.draft(seg[5], 100, 100);
        assert_eq!(lone.tokens, [&seg[5..6], &seg[6..11]].concat());
        for _ in 0..20 {
            let d = l.draft(seg[5], 100, 100);
            let wrong = vec![0; d.len()];
            let b = l.budget.as_deref_mut().expect("budgeted");
            b.record(&l.cands, &l.sel, &d, &wrong);
        }
        // Learned: 0 of 20 right, (0 + 2 x 0.85) / 22 = 0.08 < 0.2, so a greedy step; a long
        // match is a different cell and still drafts.
        assert_eq!(l.draft(seg[5], 100, 100).len(), 1);
        l.index.extend(&seg[..19]);
        assert_eq!(l.draft(seg[19], 100, 100).len(), 6);
    }
}
