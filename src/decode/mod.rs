//! Lossless decoders on one engine: a token tree (or chain) is verified in one forward pass and
//! only the accepted branch stays in the KV cache.
//!
//! Available now: [`prompt_lookup`] (prompt lookup decoding, PLD). Greedy decoding is
//! [`crate::greedy`].

pub mod budget;
pub mod pld;
pub mod retrieval;
pub mod tree;
pub mod verify;

pub use budget::{DraftBudget, LatencyCurve};
pub use pld::{PldConfig, prompt_lookup, prompt_lookup_with_budget};
pub use retrieval::NgramIndex;
pub use tree::TokenTree;
pub use verify::{Verified, verify};

use crate::generate::argmax;
use crate::model::{CausalLm, ForwardInput, KvCache};
use burn::prelude::*;

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
