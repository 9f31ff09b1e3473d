//! Prompt lookup decoding (PLD): one linear draft from an n-gram match in the context, verified
//! causally in one forward pass. Output equals greedy decoding token for token.

use crate::decode::{Draft, DraftBudget, Drafter, NgramIndex, Verified, tree_decode};
use crate::error::Result;
use crate::generate::{GenerateConfig, Generation};
use crate::model::CausalLm;
use crate::model::tokenizer::Tokenizer;
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

/// Prompt lookup decoding. Same contract as [`crate::greedy`]; `steps` counts forward passes
/// and `accept_lengths` the tokens each committed.
///
/// # Errors
/// As [`crate::greedy`].
pub fn prompt_lookup<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    pld: &PldConfig,
    on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<Generation> {
    run(model, tokenizer, prompt, config, pld, None, on_text)
}

/// Prompt lookup decoding whose draft length follows `budget` (the device's latency curve and
/// the acceptance observed so far): a draft is verified only when it is expected to commit more
/// tokens per second than a greedy step. Reuse one budget across prompts to keep what it learnt.
///
/// # Errors
/// As [`crate::greedy`].
pub fn prompt_lookup_with_budget<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    pld: &PldConfig,
    budget: &mut DraftBudget,
    on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<Generation> {
    run(model, tokenizer, prompt, config, pld, Some(budget), on_text)
}

/// PLD's drafter: the n-gram index over everything committed before the root.
struct Lookup<'a> {
    index: NgramIndex,
    max_draft: usize,
    budget: Option<&'a mut DraftBudget>,
}

impl Drafter for Lookup<'_> {
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

fn run<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    pld: &PldConfig,
    budget: Option<&mut DraftBudget>,
    on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<Generation> {
    let mut index = NgramIndex::new(pld.max_ngram);
    index.extend(prompt);
    let mut drafter = Lookup {
        index,
        max_draft: pld.max_draft,
        budget,
    };
    tree_decode(
        model,
        tokenizer,
        prompt,
        config,
        pld.max_draft,
        &mut drafter,
        on_text,
    )
}
