//! The committed output of one generation: tokens in, stop conditions checked token by token
//! (so every decoder stops exactly where greedy decoding stops), text detokenized incrementally
//! and streamed to the caller's callback as it becomes stable.

use crate::decode::stream::OnText;
use crate::error::Result;
use crate::generation::{GenerateConfig, Generation, StopReason};
use crate::model::Tokenizer;
use std::ops::ControlFlow;
use std::time::Instant;

/// Incremental detokenization with a sliding window (as candle's `TokenOutputStream`): only the
/// tokens since the last stable point are decoded again, so a token costs the same at position
/// 10 and at position 10 000. The window starts one emission back, so tokenizers whose decoding
/// depends on the previous token (a leading space stripped at the start) see the same context
/// they see when the whole output is decoded.
#[derive(Debug, Default)]
struct Detokenizer {
    /// Tokens `window..` are decoded together; `window..read` is the context already in `text`.
    window: usize,
    read: usize,
    /// Length of the decoding of `window..read`.
    context_len: usize,
    /// Length of `text` up to `read` (the text that can no longer change).
    settled: usize,
}

impl Detokenizer {
    /// Updates `text` to the decoding of `tokens` after the newest token was pushed.
    fn push(&mut self, tk: &Tokenizer, tokens: &[u32], text: &mut String) -> Result<()> {
        let tail = tk.decode(&tokens[self.window..])?;
        text.truncate(self.settled);
        let new = tail.get(self.context_len..).unwrap_or("");
        text.push_str(new);
        if !new.is_empty() && !new.ends_with('\u{FFFD}') && tail.is_char_boundary(self.context_len)
        {
            self.settled = text.len();
            self.window = self.read;
            self.read = tokens.len();
            self.context_len = tk.decode(&tokens[self.window..self.read])?.len();
        }
        Ok(())
    }
}

/// Collects committed tokens one at a time, stopping exactly where greedy decoding stops, and
/// streams stable text to a callback. Multi-token decoders push whole accepted blocks; whatever
/// follows the stop point is discarded.
pub(crate) struct Output<'a, 'c> {
    config: &'a GenerateConfig,
    tokenizer: Option<&'a Tokenizer>,
    on_text: Option<&'c mut OnText<'c>>,
    tokens: Vec<u32>,
    text: String,
    detok: Detokenizer,
    emitted: usize,
    accept_lengths: Vec<usize>,
    stop: Option<StopReason>,
    /// When the first block (the prompt's forward pass) was committed.
    first_at: Option<Instant>,
    /// Prompt tokens taken from the prompt cache.
    cached: usize,
}

impl<'a, 'c> Output<'a, 'c> {
    /// An empty output. `tokenizer` is needed for stop strings and streaming.
    pub fn new<'d: 'c>(
        config: &'a GenerateConfig,
        tokenizer: Option<&'a Tokenizer>,
        on_text: Option<&'c mut OnText<'d>>,
    ) -> Self {
        let on_text = on_text.map(|f| f as &'c mut OnText<'c>);
        let stop = (config.max_new_tokens == 0).then_some(StopReason::MaxNewTokens);
        Self {
            config,
            tokenizer,
            on_text,
            tokens: Vec::new(),
            text: String::new(),
            detok: Detokenizer::default(),
            emitted: 0,
            accept_lengths: Vec::new(),
            first_at: None,
            stop,
            cached: 0,
        }
    }

    /// Records that the first `n` prompt tokens came from the prompt cache.
    pub fn set_cached(&mut self, n: usize) {
        self.cached = n;
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
    /// [`crate::Error::Tokenizer`] when decoding fails, and whatever the streaming callback
    /// returns.
    pub fn push_block(&mut self, block: &[u32]) -> Result<usize> {
        self.first_at.get_or_insert_with(Instant::now);
        let mut n = 0;
        for &t in block {
            if self.stop.is_some() {
                break;
            }
            self.tokens.push(t);
            n += 1;
            self.push_text()?;
        }
        self.accept_lengths.push(n);
        self.stream()?;
        Ok(n)
    }

    /// Checks the stop conditions after the newest token and extends the text.
    fn push_text(&mut self) -> Result<()> {
        let t = *self.tokens.last().expect("a token was pushed");
        if self.config.eos_ids.contains(&t) {
            // The EOS token's own text is not part of the answer.
            self.stop = Some(StopReason::Eos);
            return Ok(());
        }
        if self.tokens.len() >= self.config.max_new_tokens {
            self.stop = Some(StopReason::MaxNewTokens);
        }
        if let Some(tk) = self.tokenizer {
            let checked = self.detok.settled;
            self.detok.push(tk, &self.tokens, &mut self.text)?;
            if let Some(cut) = self.first_stop_string(checked) {
                self.text.truncate(cut);
                self.stop = Some(StopReason::StopString);
            }
        }
        Ok(())
    }

    /// The first stop string in the text; `checked` bytes at the start were searched before and
    /// have not changed since, so an occurrence must end after them.
    fn first_stop_string(&self, checked: usize) -> Option<usize> {
        let longest = self.config.stop_strings.iter().map(String::len).max()?;
        let mut from = checked.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        self.config
            .stop_strings
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min()
    }

    /// Sends the text that can no longer change: not an incomplete UTF-8 sequence and not a
    /// possible start of a stop string. A callback that breaks ends the generation.
    fn stream(&mut self) -> Result<()> {
        let Some(cb) = self.on_text.as_mut() else {
            return Ok(());
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
            let flow = cb(&self.text[self.emitted..stable])?;
            self.emitted = stable;
            if flow == ControlFlow::Break(()) && self.stop.is_none() {
                self.stop = Some(StopReason::Cancelled);
            }
        }
        Ok(())
    }

    /// Finishes into a [`Generation`].
    pub fn finish(self, prompt_tokens: usize, started: Instant) -> Generation {
        Generation {
            prompt_tokens,
            cached_prompt_tokens: self.cached,
            steps: self.accept_lengths.len(),
            tokens: self.tokens,
            text: self.text,
            forward_tokens: std::iter::once(prompt_tokens - self.cached)
                .chain(std::iter::repeat(1))
                .take(self.accept_lengths.len())
                .collect(),
            accept_lengths: self.accept_lengths,
            wall_time_s: started.elapsed().as_secs_f64(),
            first_token_s: self
                .first_at
                .map_or(0.0, |t| t.duration_since(started).as_secs_f64()),
            draft_time_s: 0.0,
            verify_time_s: 0.0,
            host_step_s: Vec::new(),
            host_reads: Vec::new(),
            host_read_bytes: Vec::new(),
            stop_reason: self.stop.unwrap_or(StopReason::MaxNewTokens),
        }
    }
}

/// `ids` pushed one at a time through an [`Output`] that stops after the last: the text built
/// and the text streamed.
pub(crate) fn stream_text(tokenizer: &Tokenizer, ids: &[u32]) -> Result<(String, String)> {
    let config = GenerateConfig {
        max_new_tokens: ids.len(),
        eos_ids: Vec::new(),
        stop_strings: Vec::new(),
        sampling: None,
        prompt_cache: None,
    };
    let mut streamed = String::new();
    let mut sink = |s: &str| {
        streamed.push_str(s);
        Ok(ControlFlow::Continue(()))
    };
    let mut out = Output::new(&config, Some(tokenizer), Some(&mut sink));
    for &t in ids {
        out.push_block(&[t])?;
    }
    let text = out.finish(0, Instant::now()).text;
    Ok((text, streamed))
}
