//! Suffix decoding: drafts only from what followed the current text before, in the request and
//! in a [`DraftMemory`] of earlier requests, sized per step by the drafts' own confidence.

use crate::decode::tr_config::TrJacobiConfig;
use crate::decode::tr_jacobi::TrJacobi;
use crate::decode::tree_template::TreeTemplate;
use crate::decode::{Decoder, DraftMemory, OnText};
use crate::error::Result;
use crate::generation::{GenerateConfig, Generation};
use crate::model::{CausalLm, Tokenizer};
use burn::prelude::*;

/// Suffix decoding (as SuffixDecoding, arXiv 2411.04975, on this crate's engine): each step
/// drafts a tree of the continuations that followed the longest match of the current text, in
/// the request itself and in a [`DraftMemory`] of every earlier prompt and output, each node
/// with a learned probability from its match length and how often it occurred; the step
/// verifies the nodes that pay for themselves on the device (none: a greedy step). Output equals
/// greedy decoding token for token.
///
/// It is [`TrJacobi`] without the model's own candidate tokens: where text repeats across
/// requests it drafts long, elsewhere it costs what greedy does. A clone copies the decoder's own
/// memory, but shares one given by [`SuffixDecoder::with_memory`].
///
/// # Examples
/// ```
/// use msn::{DraftMemory, SuffixDecoder};
///
/// let memory = DraftMemory::default();
/// let decoder = SuffixDecoder::new().with_memory(memory.clone());
/// assert!(decoder.memory().same_as(&memory));
/// ```
#[derive(Debug, Clone)]
pub struct SuffixDecoder {
    inner: TrJacobi,
}

impl Default for SuffixDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SuffixDecoder {
    /// A suffix decoder with a memory of its own; the latency curve is measured at the first
    /// generation.
    pub fn new() -> Self {
        let config = TrJacobiConfig {
            template: TreeTemplate::new(Vec::new()).expect("an empty template is valid"),
            top_k: 0,
            retrieval_len: 16,
            ..Default::default()
        };
        Self {
            inner: TrJacobi::new(config).expect("valid"),
        }
    }

    /// Drafts from `memory` (and adds every prompt and output to it), replacing its own.
    pub fn with_memory(self, memory: DraftMemory) -> Self {
        Self {
            inner: self.inner.with_memory(memory),
        }
    }

    /// The draft memory.
    pub fn memory(&self) -> &DraftMemory {
        self.inner
            .memory()
            .expect("a suffix decoder always has a memory")
    }
}

impl Decoder for SuffixDecoder {
    fn name(&self) -> &'static str {
        "suffix"
    }

    fn decode<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut OnText<'_>>,
    ) -> Result<Generation> {
        self.inner.decode(model, tokenizer, prompt, config, on_text)
    }
}
