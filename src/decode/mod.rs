//! Lossless decoders on one engine: a token tree (or chain) is verified in one forward pass and
//! only the accepted branch stays in the KV cache.
//!
//! Available now: [`prompt_lookup`] (prompt lookup decoding, PLD) and [`jacobi`] (plain Jacobi
//! decoding). Greedy decoding is [`crate::greedy`].

pub mod budget;
pub mod jacobi;
pub mod pld;
pub mod retrieval;
pub mod tree;
pub mod verify;

pub use budget::{DraftBudget, LatencyCurve};
pub use jacobi::{JacobiConfig, jacobi};
pub use pld::{PldConfig, prompt_lookup, prompt_lookup_with_budget};
pub use retrieval::NgramIndex;
pub use tree::TokenTree;
pub use verify::{Verified, verify};

use crate::error::Result;
use crate::generate::{GenerateConfig, Generation, Output, argmax, prefill};
use crate::model::tokenizer::Tokenizer;
use crate::model::{CausalLm, ForwardInput, KvCache};
use burn::prelude::*;
use std::time::Instant;

/// Proposes a linear draft after the root each step and learns from what was verified.
pub(crate) trait Drafter {
    /// Up to `wanted` draft tokens to follow `root`.
    fn draft(&mut self, root: u32, wanted: usize) -> Vec<u32>;
    /// After verification: the draft, the argmax at every chain node (root first), and the
    /// committed tokens (`preds[..committed.len()]`).
    fn observe(&mut self, root: u32, drafted: &[u32], preds: &[u32], committed: &[u32]);
}

/// The loop every linear-draft decoder shares: prefill, then per step draft, verify the chain
/// `[root, draft..]` in one forward pass, commit the accepted prefix (stopping exactly), keep
/// its KV entries, and carry the last committed token as the next root.
pub(crate) fn chain_decode<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    max_draft: usize,
    drafter: &mut dyn Drafter,
    on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<Generation> {
    let started = Instant::now();
    let mut out = Output::new(config, tokenizer, on_text);
    let Some((mut cache, device, mut root)) = prefill(model, prompt, config, max_draft, &mut out)?
    else {
        return Ok(out.finish(prompt.len(), started));
    };
    while !out.is_done() {
        let start = cache.len();
        // Room for the root and the draft in the cache (and so in the position table); no
        // draft longer than the tokens still to produce.
        let room = cache.remaining().saturating_sub(1);
        let left = config.max_new_tokens.saturating_sub(out.tokens().len());
        let draft = drafter.draft(root, max_draft.min(room).min(left));
        let mut tokens = vec![root];
        tokens.extend_from_slice(&draft);
        let tree = TokenTree::chain(tokens.len());
        let preds = forward_tree(model, &mut cache, &tree, &tokens, &device);
        let v = verify(&tree, &tokens, &preds, &[]);
        drafter.observe(root, &draft, &preds, &v.tokens);
        out.push_block(&v.tokens)?;
        cache.keep(start, &v.path);
        root = *v.tokens.last().expect("at least the root's prediction");
    }
    Ok(out.finish(prompt.len(), started))
}

/// Runs `tree` with node `tokens` after the cached context and returns the argmax at every node.
/// The nodes' keys and values are appended to `cache`; trim them with [`KvCache::keep`].
pub fn forward_tree<B: Backend, M: CausalLm<B>>(
    model: &M,
    cache: &mut KvCache<B>,
    tree: &TokenTree,
    tokens: &[u32],
    device: &B::Device,
) -> Vec<u32> {
    let n = tree.len();
    let cached = cache.len();
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let pos: Vec<i64> = tree
        .positions(cached)
        .into_iter()
        .map(|p| p as i64)
        .collect();
    let mask = (!tree.is_chain()).then(|| {
        Tensor::<B, 3, Bool>::from_data(
            TensorData::new(tree.mask(cached), [1, n, cached + n]),
            device,
        )
    });
    let input = ForwardInput {
        tokens: Tensor::from_data(TensorData::new(ids, [1, n]), device),
        positions: Tensor::from_data(TensorData::new(pos, [1, n]), device),
        mask,
    };
    argmax(model.forward(input, cache))
}
