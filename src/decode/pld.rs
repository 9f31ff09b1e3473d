//! Prompt lookup decoding (PLD): one linear draft from an n-gram match in the context, verified
//! causally in one forward pass. Output equals greedy decoding token for token.

use crate::decode::{DraftBudget, NgramIndex, TokenTree, forward_tree, verify};
use crate::error::Result;
use crate::generate::{GenerateConfig, Generation, Output, prefill};
use crate::model::CausalLm;
use crate::model::tokenizer::Tokenizer;
use burn::prelude::*;
use std::time::Instant;

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

fn run<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    pld: &PldConfig,
    mut budget: Option<&mut DraftBudget>,
    on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<Generation> {
    let started = Instant::now();
    let mut out = Output::new(config, tokenizer, on_text);
    let Some((mut cache, device, mut root)) =
        prefill(model, prompt, config, pld.max_draft, &mut out)?
    else {
        return Ok(out.finish(prompt.len(), started));
    };
    let mut index = NgramIndex::new(pld.max_ngram);
    index.extend(prompt);
    while !out.is_done() {
        let start = cache.len();
        // Room for the root and the draft in the cache and the position table.
        let room = cache.remaining().saturating_sub(1);
        let wanted = pld
            .max_draft
            .min(room)
            .min(config.max_new_tokens.saturating_sub(out.tokens().len()));
        let mut draft = index
            .propose(&[root], wanted, 1)
            .into_iter()
            .next()
            .unwrap_or_default();
        if let Some(b) = budget.as_deref_mut() {
            draft.truncate(b.choose(draft.len()));
        }
        let mut tokens = vec![root];
        tokens.extend_from_slice(&draft);
        let tree = TokenTree::chain(tokens.len());
        let preds = forward_tree(model, &mut cache, &tree, &tokens, &device);
        let v = verify(&tree, &tokens, &preds, &[]);
        if let Some(b) = budget.as_deref_mut() {
            b.record(draft.len(), v.path.len() - 1);
        }
        out.push_block(&v.tokens)?;
        cache.keep(start, &v.path);
        index.extend(&[root]);
        index.extend(&v.tokens[..v.tokens.len() - 1]);
        root = *v.tokens.last().expect("at least the root's prediction");
    }
    Ok(out.finish(prompt.len(), started))
}
