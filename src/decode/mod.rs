//! Lossless decoders on one engine: a token tree (or chain) is verified in one forward pass and
//! only the accepted branch stays in the KV cache.
//!
//! Decoders, all behind the [`Decoder`] trait and all equal to greedy decoding token for token:
//! [`Greedy`], [`Jacobi`] (plain Jacobi), [`PromptLookup`] (PLD), [`Lookahead`] (lookahead
//! decoding) and [`TrJacobi`] (the MSN paper's tree-based retrieval-augmented Jacobi,
//! [`TrJacobiDecoder`]). Free functions ([`tr_jacobi`], [`prompt_lookup`], [`lookahead`],
//! [`jacobi`], [`crate::greedy`]) are the same decoders without the trait.

pub mod batch;
pub mod budget;
pub mod decoder;
pub mod jacobi;
pub mod lookahead;
pub mod pld;
pub mod retrieval;
pub mod tr_jacobi;
pub mod tree;
pub mod verify;

pub use batch::greedy_batch;
pub use budget::{DraftBudget, LatencyCurve, StepCosts, TreeBudget, TreeShape};
pub use decoder::{
    AnyDecoder, Decoder, Greedy, Jacobi, Lookahead, PromptLookup, TrJacobi, TrJacobiDecoder,
};
pub use jacobi::{JacobiConfig, jacobi};
pub use lookahead::{LookaheadConfig, lookahead};
pub use pld::{PldConfig, prompt_lookup, prompt_lookup_with_budget};
pub use retrieval::NgramIndex;
pub use tr_jacobi::{
    CandidateTable, Candidates, TokenGraph, TrJacobiConfig, TreeTemplate, tr_jacobi,
    tr_jacobi_batch,
};
pub use tree::TokenTree;
pub use verify::{Verified, verify, verify_sampled};

use crate::error::Result;
use crate::generate::{GenerateConfig, Generation, Output, argmax, prefill};
use crate::model::tokenizer::Tokenizer;
use crate::model::{CausalLm, ForwardInput, KvCache};
use crate::sample::Picker;
use burn::prelude::*;
use std::time::Instant;

/// One step's draft: a token tree after the root (node 0, the last committed token).
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    /// Shape.
    pub tree: TokenTree,
    /// Token of each node, root first.
    pub tokens: Vec<u32>,
    /// Nodes on a retrieval chain (verification prefers them on ties).
    pub preferred: Vec<bool>,
}

impl Draft {
    /// The chain `[root, draft..]`.
    pub fn chain(root: u32, draft: &[u32]) -> Self {
        let mut tokens = vec![root];
        tokens.extend_from_slice(draft);
        Self {
            tree: TokenTree::chain(tokens.len()),
            preferred: vec![false; tokens.len()],
            tokens,
        }
    }
}

/// Proposes a draft tree after the root each step and learns from what was verified.
pub(crate) trait Drafter {
    /// A draft after `root` of at most `1 + room` nodes, none deeper than `depth`.
    fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft;
    /// The nodes whose top-`k` tokens [`Drafter::observe`] needs, and `k` (none by default).
    fn top_k_rows(&self, _draft: &Draft, _verified: &Verified) -> (Vec<usize>, usize) {
        (Vec::new(), 0)
    }
    /// After verification: the argmax at every node, the verified path, and the top-`k` tokens
    /// of the rows asked for.
    fn observe(&mut self, draft: &Draft, preds: &[u32], verified: &Verified, top_k: &[Vec<u32>]);
    /// The wall time of the whole step (drafting, forward, verification, bookkeeping) whose
    /// forward ran `tokens` tokens; budgets learn step costs from it (nothing by default).
    fn timed(&mut self, _tokens: usize, _secs: f64) {}
}

/// The loop every drafting decoder shares: prefill, then per step draft a tree, verify it in one
/// forward pass (greedily, or by sampling when `config.sampling` is set), commit the accepted
/// prefix (stopping exactly), keep its KV entries compacted, and carry the last committed token
/// as the next root.
pub(crate) fn tree_decode<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    max_nodes: usize,
    drafter: &mut dyn Drafter,
    on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<Generation> {
    let started = Instant::now();
    let mut out = Output::new(config, tokenizer, on_text);
    let mut picker = Picker::new(config.sampling.as_ref());
    let Some((mut cache, device, mut root)) =
        prefill(model, prompt, config, max_nodes, &mut picker, &mut out)?
    else {
        return Ok(out.finish(prompt.len(), started));
    };
    let (mut draft_s, prefill_s) = (0.0, started.elapsed().as_secs_f64());
    let mut forward_tokens = Vec::new();
    while !out.is_done() {
        let t0 = Instant::now();
        let start = cache.len();
        // Room for the draft in the cache (and so in the position table); nothing deeper than
        // the tokens still to produce.
        let room = cache.remaining().saturating_sub(1);
        let left = config.max_new_tokens.saturating_sub(out.tokens().len());
        let draft = drafter.draft(root, room, left);
        debug_assert!(draft.tree.len() <= room + 1);
        draft_s += t0.elapsed().as_secs_f64();
        forward_tokens.push(draft.tree.len());
        let logits = forward_tree_logits(model, &mut cache, &draft.tree, &draft.tokens, &device);
        let preds = argmax(logits.clone());
        let t1 = Instant::now();
        let host = (!picker.is_greedy()).then(|| logits.clone().into_data().convert::<f32>());
        let host = host
            .as_ref()
            .map(|h| h.as_slice::<f32>().expect("f32 logits"));
        let v = verify_draft(&draft, &preds, &mut picker, host);
        let (rows, k) = drafter.top_k_rows(&draft, &v);
        let top = top_k_rows(logits, &rows, k, &device);
        drafter.observe(&draft, &preds, &v, &top);
        out.push_block(&v.tokens)?;
        cache.keep(start, &v.path);
        root = *v.tokens.last().expect("at least the root's prediction");
        draft_s += t1.elapsed().as_secs_f64();
        drafter.timed(draft.tree.len(), t0.elapsed().as_secs_f64());
    }
    let mut g = out.finish(prompt.len(), started);
    g.forward_tokens.truncate(1);
    g.forward_tokens.extend(forward_tokens);
    g.draft_time_s = draft_s;
    g.verify_time_s = (g.wall_time_s - draft_s).max(prefill_s);
    Ok(g)
}

/// Verifies `draft` greedily from the argmax `preds` at its nodes or, when `picker` samples, by
/// the sampled walk over `logits`: one row of host logits per draft node, node 0 first (so each
/// row is `logits.len() / nodes` wide).
pub(crate) fn verify_draft(
    draft: &Draft,
    preds: &[u32],
    picker: &mut Picker,
    logits: Option<&[f32]>,
) -> Verified {
    match logits {
        Some(rows) if !picker.is_greedy() => {
            let vocab = rows.len() / draft.tree.len();
            verify_sampled(&draft.tree, &draft.tokens, &draft.preferred, |node| {
                picker.pick(&rows[node * vocab..(node + 1) * vocab])
            })
        }
        _ => verify(&draft.tree, &draft.tokens, preds, &draft.preferred),
    }
}

/// The `k` highest-scoring tokens of each of `rows` of `[1, n, vocab]` logits, best first (ties
/// to the lower id).
pub(crate) fn top_k_rows<B: Backend>(
    logits: Tensor<B, 3>,
    rows: &[usize],
    k: usize,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    if rows.is_empty() || k == 0 {
        return Vec::new();
    }
    let [_, n, vocab] = logits.dims();
    let all = rows.len() == n && rows.iter().enumerate().all(|(i, &r)| i == r);
    let sel = if all {
        logits
    } else {
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        logits.select(
            1,
            Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows.len()]), device),
        )
    };
    let data = sel.into_data().convert::<f32>();
    let vals = data.as_slice::<f32>().expect("f32 logits");
    vals.chunks(vocab).map(|row| top_k(row, k)).collect()
}

/// Indices of the `k` largest values, largest first, ties to the lower index (values ordered by
/// [`f32::total_cmp`]). One pass with a small sorted buffer: most values lose against the
/// buffer's last entry in one comparison, so a 49k-token row costs tens of microseconds.
pub(crate) fn top_k(row: &[f32], k: usize) -> Vec<u32> {
    use std::cmp::Ordering::Greater;
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for (i, &x) in row.iter().enumerate() {
        if best.len() == k && x.total_cmp(&best[k - 1].0) != Greater {
            continue;
        }
        // Before the first strictly smaller value: equal values seen earlier (lower ids) stay
        // ahead.
        let at = best.partition_point(|b| b.0.total_cmp(&x) != std::cmp::Ordering::Less);
        best.insert(at, (x, i as u32));
        best.truncate(k);
    }
    best.into_iter().map(|b| b.1).collect()
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
    argmax(forward_tree_logits(model, cache, tree, tokens, device))
}

/// [`forward_tree`] returning the logits, `[1, nodes, vocab]`.
pub fn forward_tree_logits<B: Backend, M: CausalLm<B>>(
    model: &M,
    cache: &mut KvCache<B>,
    tree: &TokenTree,
    tokens: &[u32],
    device: &B::Device,
) -> Tensor<B, 3> {
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
    model.forward(input, cache)
}

#[cfg(test)]
mod tests {
    use super::top_k;

    #[test]
    fn top_k_equals_a_full_sort_with_ties_to_the_lower_id() {
        let mut rng = crate::rng::Rng::new(7);
        for case in 0..200 {
            // Few distinct values, so ties are common; some NaN and infinities.
            let n = 1 + rng.below(300);
            let row: Vec<f32> = (0..n)
                .map(|_| match rng.below(40) {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => f32::INFINITY,
                    v => (v % 7) as f32 - 3.0,
                })
                .collect();
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            for k in [0, 1, 2, 5, 10, n, n + 3] {
                assert_eq!(top_k(&row, k), order[..k.min(n)], "case {case}, k {k}");
            }
        }
    }
}
