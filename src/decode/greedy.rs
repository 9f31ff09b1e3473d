//! Plain greedy decoding: one forward pass per token. The reference every other decoder equals.

use crate::decode::output::Output;
use crate::decode::tree_decode::{DecodeRun, prefill};
use crate::decode::{Decoder, OnText};
use crate::error::Result;
use crate::generation::{GenerateConfig, Generation};
use crate::model::{CausalLm, ForwardInput, Tokenizer};
use crate::sample::Picker;
use burn::prelude::*;
use std::time::Instant;

/// Greedy decoding: one token per forward pass, the argmax. With
/// [`GenerateConfig::sampling`] it samples instead, one token per pass (plain ancestral
/// sampling: the reference for the other decoders' output distribution).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Greedy;

impl Decoder for Greedy {
    fn name(&self) -> &'static str {
        "greedy"
    }

    fn decode<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut OnText<'_>>,
    ) -> Result<Generation> {
        let run = DecodeRun {
            prompt,
            config,
            max_nodes: 0,
        };
        greedy(model, run, Output::new(config, tokenizer, on_text))
    }
}

/// The greedy loop (see [`Greedy`]).
pub(crate) fn greedy<B: Backend, M: CausalLm<B>>(
    model: &M,
    run: DecodeRun<'_>,
    mut out: Output<'_, '_>,
) -> Result<Generation> {
    let started = Instant::now();
    let mut picker = Picker::new(run.config.sampling.as_ref());
    let Some((mut cache, device, mut next)) = prefill(model, run, &mut picker, &mut out)? else {
        return Ok(out.finish(run.prompt.len(), started));
    };
    while !out.is_done() {
        let start = cache.len();
        let logits = model.forward_last(ForwardInput::causal(&[next], start, &device), &mut cache);
        next = picker.pick_last(logits);
        out.push_block(&[next])?;
    }
    let mut g = out.finish(run.prompt.len(), started);
    g.verify_time_s = g.wall_time_s;
    Ok(g)
}
