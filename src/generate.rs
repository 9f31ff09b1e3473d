//! Greedy generation with the KV cache, and the output/stop bookkeeping every decoder shares.

use crate::error::{Error, Result};
use crate::model::tokenizer::Tokenizer;
use crate::model::{CausalLm, ForwardInput, KvCache};
use crate::sample::{Picker, Sampling};
use burn::prelude::*;
use std::time::Instant;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// An end-of-sequence token was produced (it is the last token of the output).
    Eos,
    /// A stop string appeared in the text (the text is cut before it).
    StopString,
    /// `max_new_tokens` were produced.
    MaxNewTokens,
}

/// What to generate and when to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Upper bound on new tokens; 0 returns an empty generation.
    pub max_new_tokens: usize,
    /// Token ids that end generation (included as the last output token).
    pub eos_ids: Vec<u32>,
    /// Strings that end generation; the text is cut before the first occurrence.
    pub stop_strings: Vec<String>,
    /// Sample instead of taking the argmax (None, the default: greedy). Every decoder keeps the
    /// output distribution exactly the model's; see [`crate::sample`].
    pub sampling: Option<Sampling>,
}

impl GenerateConfig {
    /// `max_new_tokens` new tokens, stopping at `tokenizer`'s EOS ids.
    pub fn new(max_new_tokens: usize, tokenizer: &Tokenizer) -> Self {
        Self {
            max_new_tokens,
            eos_ids: tokenizer.eos_ids.clone(),
            stop_strings: Vec::new(),
            sampling: None,
        }
    }

    /// Samples with `sampling` instead of decoding greedily.
    pub fn with_sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = Some(sampling);
        self
    }

    /// Adds a stop string.
    pub fn with_stop_string(mut self, s: impl Into<String>) -> Self {
        self.stop_strings.push(s.into());
        self
    }
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Generation {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Generated token ids.
    pub tokens: Vec<u32>,
    /// Generated text (without a trailing EOS token's text, cut before a stop string).
    pub text: String,
    /// Forward passes of the model (prefill included).
    pub steps: usize,
    /// New tokens committed by each forward pass.
    pub accept_lengths: Vec<usize>,
    /// Tokens each forward pass ran (the prompt for prefill, then the root plus the draft),
    /// one per entry of `accept_lengths`: what a tree budget chose, step by step.
    pub forward_tokens: Vec<usize>,
    /// Wall-clock seconds, prefill included.
    pub wall_time_s: f64,
    /// Seconds spent building drafts (trees, retrieval, candidate tables), host side.
    pub draft_time_s: f64,
    /// Seconds spent in forward passes and verification (prefill included).
    pub verify_time_s: f64,
    /// Why it ended.
    pub stop_reason: StopReason,
}

impl Generation {
    /// Mean accepted tokens per forward pass (MAT); 0 when nothing ran.
    pub fn accepted_tokens_per_step(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.tokens.len() as f64 / self.steps as f64
        }
    }
}

/// Collects committed tokens one at a time, stopping exactly where greedy decoding stops, and
/// streams stable text to a callback. Multi-token decoders push whole accepted blocks; whatever
/// follows the stop point is discarded.
pub struct Output<'a, 'c> {
    config: &'a GenerateConfig,
    tokenizer: Option<&'a Tokenizer>,
    on_text: Option<&'c mut dyn FnMut(&str)>,
    tokens: Vec<u32>,
    text: String,
    emitted: usize,
    accept_lengths: Vec<usize>,
    stop: Option<StopReason>,
}

impl<'a, 'c> Output<'a, 'c> {
    /// An empty output. `tokenizer` is needed for stop strings and streaming.
    pub fn new(
        config: &'a GenerateConfig,
        tokenizer: Option<&'a Tokenizer>,
        on_text: Option<&'c mut dyn FnMut(&str)>,
    ) -> Self {
        let stop = (config.max_new_tokens == 0).then_some(StopReason::MaxNewTokens);
        Self {
            config,
            tokenizer,
            on_text,
            tokens: Vec::new(),
            text: String::new(),
            emitted: 0,
            accept_lengths: Vec::new(),
            stop,
        }
    }

    /// True once a stop condition was met.
    pub fn is_done(&self) -> bool {
        self.stop.is_some()
    }

    /// Tokens committed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Commits `block` (the tokens one forward pass accepted), in order, up to the stop point.
    /// Returns how many were committed; records one step.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when decoding fails.
    pub fn push_block(&mut self, block: &[u32]) -> Result<usize> {
        let mut n = 0;
        for &t in block {
            if self.stop.is_some() {
                break;
            }
            self.tokens.push(t);
            n += 1;
            if self.config.eos_ids.contains(&t) {
                self.stop = Some(StopReason::Eos);
            } else if self.tokens.len() >= self.config.max_new_tokens {
                self.stop = Some(StopReason::MaxNewTokens);
            }
            if let Some(tk) = self.tokenizer {
                if self.stop == Some(StopReason::Eos) {
                    // The EOS token's own text is not part of the answer.
                } else {
                    self.text = tk.decode(&self.tokens)?;
                    if let Some(cut) = self.first_stop_string() {
                        self.text.truncate(cut);
                        self.stop = Some(StopReason::StopString);
                    }
                }
            }
        }
        self.accept_lengths.push(n);
        self.stream();
        Ok(n)
    }

    fn first_stop_string(&self) -> Option<usize> {
        self.config
            .stop_strings
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
    }

    /// Sends the text that can no longer change: not an incomplete UTF-8 sequence and not a
    /// possible start of a stop string.
    fn stream(&mut self) {
        let Some(cb) = self.on_text.as_mut() else {
            return;
        };
        let mut stable = self.text.len();
        if self.stop.is_none() {
            if self.text.ends_with('\u{FFFD}') {
                stable = self.text.trim_end_matches('\u{FFFD}').len();
            }
            for s in &self.config.stop_strings {
                for k in (1..s.len()).rev() {
                    if s.is_char_boundary(k) && self.text[..stable].ends_with(&s[..k]) {
                        stable = stable.min(self.text.len() - k);
                        break;
                    }
                }
            }
        }
        if stable > self.emitted && self.text.is_char_boundary(stable) {
            cb(&self.text[self.emitted..stable]);
            self.emitted = stable;
        }
    }

    /// Finishes into a [`Generation`].
    pub fn finish(self, prompt_tokens: usize, started: Instant) -> Generation {
        Generation {
            prompt_tokens,
            steps: self.accept_lengths.len(),
            tokens: self.tokens,
            text: self.text,
            forward_tokens: std::iter::once(prompt_tokens)
                .chain(std::iter::repeat(1))
                .take(self.accept_lengths.len())
                .collect(),
            accept_lengths: self.accept_lengths,
            wall_time_s: started.elapsed().as_secs_f64(),
            draft_time_s: 0.0,
            verify_time_s: 0.0,
            stop_reason: self.stop.unwrap_or(StopReason::MaxNewTokens),
        }
    }
}

/// Checks a prompt against the model before any forward pass.
///
/// # Errors
/// [`Error::EmptyPrompt`], [`Error::TokenOutOfRange`], [`Error::ContextOverflow`].
pub fn check_prompt(
    prompt: &[u32],
    max_new_tokens: usize,
    vocab: usize,
    context: usize,
) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    if let Some(&id) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::TokenOutOfRange {
            id,
            vocab_size: vocab,
        });
    }
    if prompt.len() + max_new_tokens > context {
        return Err(Error::ContextOverflow {
            prompt_tokens: prompt.len(),
            max_new_tokens,
            context,
        });
    }
    Ok(())
}

/// Greedy argmax of every row of `[batch, t, vocab]` logits, as `batch * t` ids (row-major).
/// Ties go to the lowest id (the backend's argmax rule, shared by every decoder).
pub fn argmax<B: Backend>(logits: Tensor<B, 3>) -> Vec<u32> {
    token_ids(logits.argmax(2))
}

/// The values of an integer tensor of token ids, row-major, as `u32`.
pub(crate) fn token_ids<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<u32> {
    t.into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("int data")
        .into_iter()
        .map(|x| x as u32)
        .collect()
}

/// Plain greedy decoding: one forward pass per token. The reference every other decoder equals.
/// With `config.sampling` it samples instead, one token per forward pass (plain ancestral
/// sampling, the reference for the decoders' sampled output distribution).
///
/// `on_text` receives the generated text in order, once, as it becomes stable.
///
/// # Errors
/// [`Error::EmptyPrompt`], [`Error::ContextOverflow`], [`Error::TokenOutOfRange`],
/// [`Error::Tokenizer`]; [`Error::InvalidArgument`] for sampling parameters
/// [`Sampling::validate`] rejects.
pub fn greedy<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    on_text: Option<&mut dyn FnMut(&str)>,
) -> Result<Generation> {
    let started = Instant::now();
    let mut out = Output::new(config, tokenizer, on_text);
    let mut picker = Picker::new(config.sampling.as_ref());
    let Some((mut cache, device, mut next)) =
        prefill(model, prompt, config, 0, &mut picker, &mut out)?
    else {
        return Ok(out.finish(prompt.len(), started));
    };
    while !out.is_done() {
        let start = cache.len();
        let logits = model.forward_last(ForwardInput::causal(&[next], start, &device), &mut cache);
        next = picker.pick_last(logits);
        out.push_block(&[next])?;
    }
    let mut g = out.finish(prompt.len(), started);
    g.verify_time_s = g.wall_time_s;
    Ok(g)
}

/// A prefilled cache, its device, and the first committed token.
pub(crate) type Prefilled<B> = (
    KvCache<B>,
    <B as burn::tensor::backend::BackendTypes>::Device,
    u32,
);

/// The start every decoder shares: checks the prompt, runs it through a fresh cache with room
/// for `max_new_tokens + slack` more positions, and commits greedy's first token (one step).
/// Returns the cache, the device and that token, or `None` when nothing is to be generated.
///
/// # Errors
/// As [`greedy`].
pub(crate) fn prefill<B: Backend, M: CausalLm<B>>(
    model: &M,
    prompt: &[u32],
    config: &GenerateConfig,
    slack: usize,
    picker: &mut Picker,
    out: &mut Output<'_, '_>,
) -> Result<Option<Prefilled<B>>> {
    if let Some(s) = &config.sampling {
        s.validate()?;
    }
    let info = model.info();
    check_prompt(
        prompt,
        config.max_new_tokens,
        info.vocab_size,
        info.max_positions,
    )?;
    if out.is_done() {
        return Ok(None);
    }
    let device = model.device();
    let capacity = (prompt.len() + config.max_new_tokens + slack).min(info.max_positions);
    let mut cache = model.new_cache(1, capacity);
    let logits = model.forward_last(ForwardInput::causal(prompt, 0, &device), &mut cache);
    let first = picker.pick_last(logits);
    out.push_block(&[first])?;
    Ok(Some((cache, device, first)))
}
