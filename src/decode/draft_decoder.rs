//! Any [`Drafter`] as a [`Decoder`]: the tree engine runs its drafts.

use crate::decode::drafter::Drafter;
use crate::decode::tree_decode::tree_decode;
use crate::decode::{Decoder, OnText};
use crate::error::Result;
use crate::generation::{GenerateConfig, Generation};
use crate::model::{CausalLm, Tokenizer};
use burn::prelude::*;

/// Any [`Drafter`] as a lossless [`Decoder`]: each step verifies the draft in one forward pass
/// and commits the longest prefix greedy decoding agrees with (or, when sampling, a draw from
/// the model's own distribution).
#[derive(Debug, Clone)]
pub struct DraftDecoder<D> {
    name: &'static str,
    drafter: D,
}

impl<D: Drafter> DraftDecoder<D> {
    /// `drafter` under `name` (what [`Decoder::name`] returns).
    pub fn new(name: &'static str, drafter: D) -> Self {
        Self { name, drafter }
    }

    /// The drafter.
    pub fn drafter(&self) -> &D {
        &self.drafter
    }

    /// The drafter, to change between generations.
    pub fn drafter_mut(&mut self) -> &mut D {
        &mut self.drafter
    }
}

impl<D: Drafter> Decoder for DraftDecoder<D> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn decode<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut OnText<'_>>,
    ) -> Result<Generation> {
        self.drafter.start(prompt);
        tree_decode(model, tokenizer, prompt, config, on_text, &mut self.drafter)
    }
}
