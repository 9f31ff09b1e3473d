//! Self-distillation: the model answers the training prompts itself (with a lossless decoder,
//! so the answers are exactly its greedy answers), and those answers become the MSN training
//! responses. The model's outputs stay its own while it learns to denoise: the practical way to
//! MSN-train an already tuned chat model without its original SFT data.

use crate::decode::Decoder;
use crate::error::Result;
use crate::generation::GenerateConfig;
use crate::model::CausalLm;
use crate::model::tokenizer::{Message, Tokenizer};
use crate::train::{TrainSample, sample_from_messages};
use burn::prelude::*;

/// What self-distillation produced.
#[derive(Debug, Clone, Default)]
pub struct Distilled {
    /// Training samples (prompt in the chat template + the model's own answer).
    pub samples: Vec<TrainSample>,
    /// Prompts whose answer was empty or did not fit in `max_len`, with the reason.
    pub skipped: Vec<(usize, String)>,
    /// Accepted tokens per forward pass of the decoder over the whole run.
    pub accepted_tokens_per_step: f64,
}

/// Generates an answer to each of `prompts` (user messages) with `decoder` and turns each into a
/// [`TrainSample`] of at most `max_len` tokens. `on_progress(done, total)` is called after each
/// prompt.
///
/// # Errors
/// Generation and tokenizer errors.
#[allow(clippy::too_many_arguments)]
pub fn self_distill<B: Backend, M: CausalLm<B>, D: Decoder>(
    model: &M,
    tokenizer: &Tokenizer,
    decoder: &mut D,
    prompts: &[String],
    max_new_tokens: usize,
    max_len: usize,
    mut on_progress: impl FnMut(usize, usize),
) -> Result<Distilled> {
    let config = GenerateConfig::new(max_new_tokens, tokenizer);
    let mut out = Distilled::default();
    let (mut tokens, mut steps) = (0usize, 0usize);
    for (i, p) in prompts.iter().enumerate() {
        let user = [Message::new("user", p)];
        let text = tokenizer.apply_chat_template(&user, true)?;
        let ids = tokenizer.encode(&text)?;
        let g = decoder.generate(model, Some(tokenizer), &ids, &config)?;
        tokens += g.tokens.len();
        steps += g.steps;
        if g.text.trim().is_empty() {
            out.skipped.push((i, "empty answer".into()));
        } else {
            let messages = [user[0].clone(), Message::new("assistant", &g.text)];
            match sample_from_messages(tokenizer, &messages, max_len) {
                Ok(s) => out.samples.push(s),
                Err(e) => out.skipped.push((i, e.to_string())),
            }
        }
        on_progress(i + 1, prompts.len());
    }
    out.accepted_tokens_per_step = tokens as f64 / steps.max(1) as f64;
    Ok(out)
}
