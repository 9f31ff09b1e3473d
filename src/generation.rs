//! What to generate and what came out: [`GenerateConfig`] in, [`Generation`] out, the same for
//! every decoder.

use crate::error::{Error, Result};
use crate::model::Tokenizer;
use crate::prompt_cache::PromptCache;
use crate::sample::Sampling;

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
    /// The streaming callback asked to stop ([`std::ops::ControlFlow::Break`]).
    Cancelled,
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
    /// output distribution exactly the model's; see [`crate::Sampling`].
    pub sampling: Option<Sampling>,
    /// Where to keep this generation's keys and values for the next prompt that starts the
    /// same way (None, the default: every prompt runs in full); see [`PromptCache`].
    pub prompt_cache: Option<PromptCache>,
}

impl GenerateConfig {
    /// `max_new_tokens` new tokens, stopping at `tokenizer`'s EOS ids.
    pub fn new(max_new_tokens: usize, tokenizer: &Tokenizer) -> Self {
        Self {
            max_new_tokens,
            eos_ids: tokenizer.eos_ids.clone(),
            stop_strings: Vec::new(),
            sampling: None,
            prompt_cache: None,
        }
    }

    /// Keeps each generation's keys and values in `cache` and starts the next from them
    /// where its prompt begins with the same tokens (a conversation's next turn).
    pub fn with_prompt_cache(mut self, cache: PromptCache) -> Self {
        self.prompt_cache = Some(cache);
        self
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
    /// Tokens at the start of the prompt whose keys and values came from the
    /// [`GenerateConfig::prompt_cache`] instead of a forward pass.
    pub cached_prompt_tokens: usize,
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
    /// Wall-clock seconds from the call to the first token, the prompt's forward pass (time to
    /// first token; 0 when nothing was generated).
    pub first_token_s: f64,
    /// Seconds spent building drafts (trees, retrieval, candidate tables), host side.
    pub draft_time_s: f64,
    /// Seconds spent in forward passes and verification (prefill included).
    pub verify_time_s: f64,
    /// Per decoding step after prefill, the seconds spent on the host besides the forward pass
    /// and the reductions of its logits (argmax, the drafter's top-K rows): drafting, the
    /// draft's checks, verification, the drafter's bookkeeping, the output's text. What a step
    /// adds to a forward that a GPU runs in a few milliseconds. Empty for batched decoding.
    pub host_step_s: Vec<f64>,
    /// Per decoding step after prefill, the reads from the model's device back to the host
    /// (each one a synchronization with the device): the argmax ids, the drafter's top-K ids
    /// (on a device; on burn's CPU backends the rows of logits, already in host memory), the
    /// logits when sampling. Empty for batched decoding.
    pub host_reads: Vec<usize>,
    /// Per decoding step after prefill, the bytes of those reads.
    pub host_read_bytes: Vec<usize>,
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

/// Checks a prompt against the model before any forward pass.
///
/// # Errors
/// [`Error::EmptyPrompt`], [`Error::TokenOutOfRange`], [`Error::ContextOverflow`].
pub(crate) fn check_prompt(
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
