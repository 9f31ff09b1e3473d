//! The model seam ([`CausalLm`]) and the llama-family implementation with its loaders.
//!
//! Decoders and trainers only see [`CausalLm`]: token ids and **explicit position ids** in, an
//! optional attention mask over (cached + new) positions, a [`KvCache`], logits at every input
//! position out. Token trees need all three: depth-based positions, a tree mask, and a cache that
//! can keep just the accepted branch.

pub(crate) mod act_rows;
pub(crate) mod adapter;
mod attention;
pub(crate) mod cache;
pub(crate) mod config;
mod engine;
mod family_ops;
pub(crate) mod gguf;
pub(crate) mod hf;
pub(crate) mod host;
mod hot_pool;
pub(crate) mod huge_buf;
pub(crate) mod int_panels;
pub(crate) mod llama;
pub(crate) mod lora;
mod mapped;
mod multimodal;
pub(crate) mod quant;
pub(crate) mod rope;
mod scratch;
mod spm_vocab;
pub(crate) mod tokenizer;
pub(crate) mod weights;

pub use cache::{KvCache, KvDtype};
pub use config::{LlamaConfig, RopeScaling};
pub use hf::ExportDtype;
pub use llama::Llama;
pub use lora::{LoraConfig, LoraTarget};
pub use tokenizer::{Message, Tokenizer};

use burn::prelude::*;

/// One forward call's inputs.
///
/// # Shapes
/// - `tokens`: `[batch, new]` token ids.
/// - `positions`: `[batch, new]` position ids (RoPE angle of each token). For plain causal input
///   these are `cache.len() .. cache.len() + new`; for a token tree, `committed + depth`.
/// - `mask`: `[batch, new, cache.len() + new]`, **true = may not attend**. `None` means causal:
///   new token `i` sees the whole cache and new tokens `0..=i`.
#[derive(Debug, Clone)]
pub struct ForwardInput<B: Backend> {
    /// Token ids, `[batch, new]`.
    pub tokens: Tensor<B, 2, Int>,
    /// Position ids, `[batch, new]`.
    pub positions: Tensor<B, 2, Int>,
    /// Attention mask over cached + new keys, `[batch, new, cached + new]`, true = masked.
    pub mask: Option<Tensor<B, 3, Bool>>,
}

impl<B: Backend> ForwardInput<B> {
    /// Causal input for one sequence of `tokens` following `start` cached positions.
    pub fn causal(tokens: &[u32], start: usize, device: &B::Device) -> Self {
        let n = tokens.len();
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let pos: Vec<i64> = (start..start + n).map(|p| p as i64).collect();
        Self {
            tokens: Tensor::from_data(TensorData::new(ids, [1, n]), device),
            positions: Tensor::from_data(TensorData::new(pos, [1, n]), device),
            mask: None,
        }
    }
}

/// Static facts about a model that decoders need.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Vocabulary size (logit width).
    pub vocab_size: usize,
    /// Longest sequence the model supports (cache capacity upper bound).
    pub max_positions: usize,
}

/// A causal language model the decoders and trainers can drive.
///
/// Implement this for your own model to use every decoder of this crate with it.
pub trait CausalLm<B: Backend> {
    /// Static facts about the model.
    fn info(&self) -> ModelInfo;

    /// The device the model's parameters live on.
    fn device(&self) -> B::Device;

    /// An empty KV cache for `batch` sequences of up to `capacity` positions.
    fn new_cache(&self, batch: usize, capacity: usize) -> KvCache<B>;

    /// Runs the new tokens, appending their keys and values to `cache`.
    ///
    /// Returns logits at every new position, `[batch, new, vocab]`.
    ///
    /// # Panics
    /// When shapes disagree (see [`ForwardInput`]) or the cache has no room for the new tokens;
    /// callers check [`KvCache::remaining`] first.
    fn forward(&self, input: ForwardInput<B>, cache: &mut KvCache<B>) -> Tensor<B, 3>;

    /// Like [`CausalLm::forward`] but returns logits of the last new position only,
    /// `[batch, 1, vocab]`. Implementations override it to skip the LM head elsewhere (prefill).
    fn forward_last(&self, input: ForwardInput<B>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let logits = self.forward(input, cache);
        let [b, t, v] = logits.dims();
        logits.slice([0..b, t - 1..t, 0..v])
    }
}
