//! Decoders run beside greedy on the same prompt, every output checked equal to greedy's, and
//! their totals (tokens, forward passes, seconds) kept per decoder: what `specbench`,
//! `msn_finetune` and `msn_tiny` report as MAT and speedup.

use burn::prelude::Backend;
use msn::{AnyDecoder, CausalLm, Decoder, GenerateConfig, Generation, Greedy, Tokenizer};

/// One decoder's totals over some prompts.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Generations added.
    pub generations: usize,
    /// Generated tokens.
    pub tokens: usize,
    /// Forward passes (prefill included).
    pub steps: usize,
    /// Wall-clock seconds (prefill included).
    pub secs: f64,
    /// Of those, seconds to the first token (the prompt's forward pass).
    pub first_secs: f64,
    /// Prompt tokens, and of those the ones a prompt cache held (not run again).
    pub prompt_tokens: (usize, usize),
    /// Each decoding step's host time besides the forward (`Generation::host_step_s`).
    pub host_steps: Vec<f64>,
    /// The most reads back from the device, and their bytes, of any decoding step.
    pub max_reads: (usize, usize),
}

impl Tally {
    /// Adds one generation.
    pub fn add(&mut self, g: &Generation) {
        self.generations += 1;
        self.tokens += g.tokens.len();
        self.steps += g.steps;
        self.secs += g.wall_time_s;
        self.first_secs += g.first_token_s;
        self.prompt_tokens.0 += g.prompt_tokens;
        self.prompt_tokens.1 += g.cached_prompt_tokens;
        self.host_steps.extend(&g.host_step_s);
        let most = |v: &[usize]| v.iter().copied().max().unwrap_or(0);
        self.max_reads.0 = self.max_reads.0.max(most(&g.host_reads));
        self.max_reads.1 = self.max_reads.1.max(most(&g.host_read_bytes));
    }

    /// Both totals together.
    pub fn plus(mut self, o: &Tally) -> Tally {
        self.generations += o.generations;
        self.tokens += o.tokens;
        self.steps += o.steps;
        self.secs += o.secs;
        self.first_secs += o.first_secs;
        self.prompt_tokens.0 += o.prompt_tokens.0;
        self.prompt_tokens.1 += o.prompt_tokens.1;
        self.host_steps.extend(&o.host_steps);
        self.max_reads = (
            self.max_reads.0.max(o.max_reads.0),
            self.max_reads.1.max(o.max_reads.1),
        );
        self
    }

    /// The median host time of a decoding step besides the forward, in milliseconds (NaN with
    /// no steps).
    pub fn median_host_step_ms(&self) -> f64 {
        let mut v = self.host_steps.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).map_or(f64::NAN, |s| s * 1e3)
    }

    /// Accepted tokens per forward pass.
    pub fn mat(&self) -> f64 {
        self.tokens as f64 / self.steps.max(1) as f64
    }

    /// Tokens per second.
    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.secs.max(1e-9)
    }
}

/// Greedy, then each of `decoders`, on `prompt`: the generations, greedy's first, once every
/// decoder's tokens are checked equal to greedy's (an error naming the decoder and `what`, the
/// prompt, otherwise: that would be a bug in msn).
pub fn beside_greedy<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    decoders: &mut [AnyDecoder],
    what: &str,
) -> msn::Result<Vec<Generation>> {
    let configs = vec![config.clone(); decoders.len() + 1];
    beside_greedy_each(model, tokenizer, prompt, &configs, decoders, what)
}

/// [`beside_greedy`] with a config per run: `configs[0]` for greedy, then one per decoder (each
/// with its own prompt cache, say, so that no decoder starts from another's).
pub fn beside_greedy_each<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    configs: &[GenerateConfig],
    decoders: &mut [AnyDecoder],
    what: &str,
) -> msn::Result<Vec<Generation>> {
    assert_eq!(configs.len(), decoders.len() + 1, "a config per run");
    let mut out = vec![Greedy.generate(model, tokenizer, prompt, &configs[0])?];
    for (d, config) in decoders.iter_mut().zip(&configs[1..]) {
        let g = d.generate(model, tokenizer, prompt, config)?;
        if g.tokens != out[0].tokens {
            return Err(msn::Error::InvalidArgument(format!(
                "{}: {what}: the output differs from greedy's (a bug in msn: please report it)",
                d.name()
            )));
        }
        out.push(g);
    }
    Ok(out)
}
