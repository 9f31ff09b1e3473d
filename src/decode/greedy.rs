//! Plain greedy decoding: one forward pass per token. The reference every other decoder equals.

use crate::decode::output::Output;
use crate::decode::step_log::StepLog;
use crate::decode::tree_decode::{keep_for_next, prefill};
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
        let started = Instant::now();
        let mut out = Output::new(config, tokenizer, on_text);
        let mut picker = Picker::new(config.sampling.as_ref());
        let Some((mut cache, device, mut next)) =
            prefill(model, prompt, config, 0, &mut picker, &mut out)?
        else {
            return Ok(out.finish(prompt.len(), started));
        };
        let mut log = StepLog::default();
        while !out.is_done() {
            let step = StepLog::start();
            let start = cache.len();
            let input = ForwardInput::causal(&[next], start, &device);
            next = picker.pick_last(model.forward_last(input, &mut cache));
            // The host's part of a greedy step: the output's bookkeeping and text.
            let t = Instant::now();
            out.push_block(&[next])?;
            log.end(step, t.elapsed().as_secs_f64());
        }
        keep_for_next(config, prompt, out.tokens(), cache);
        let mut g = out.finish(prompt.len(), started);
        g.verify_time_s = g.wall_time_s;
        log.finish(&mut g);
        Ok(g)
    }
}
