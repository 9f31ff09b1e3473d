//! Plain Jacobi decoding: a window of `W` draft tokens after the last committed token is refined
//! by the model's own predictions, one forward pass per step. Cold start and refills use "ahead
//! noise" (tokens drawn uniformly from the context), the distribution MSN training targets.

use crate::decode::tree_decode::tree_decode;
use crate::decode::{Decoder, Draft, Drafter, OnText, Verified};
use crate::error::Result;
use crate::generation::{GenerateConfig, Generation};
use crate::model::{CausalLm, Tokenizer};
use crate::rng::Rng;
use burn::prelude::*;

/// Jacobi parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JacobiConfig {
    /// Draft window `W`.
    pub window: usize,
    /// Seed of the ahead-noise sampler.
    pub seed: u64,
}

impl Default for JacobiConfig {
    fn default() -> Self {
        Self { window: 5, seed: 0 }
    }
}

/// The Jacobi window and its noise source.
struct Window {
    drafts: Vec<u32>,
    context: Vec<u32>,
    window: usize,
    rng: Rng,
}

impl Window {
    fn noise(&mut self) -> u32 {
        self.context[self.rng.below(self.context.len())]
    }
}

impl Drafter for Window {
    fn max_nodes(&self) -> usize {
        self.window + 1
    }

    fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft {
        while self.drafts.len() < self.window {
            let t = self.noise();
            self.drafts.push(t);
        }
        Draft::chain(root, &self.drafts[..self.window.min(room).min(depth)])
    }

    fn observe(&mut self, draft: &Draft, preds: &[u32], v: &Verified, _top_k: &[Vec<u32>]) {
        let (root, drafted, committed) = (draft.tokens[0], &draft.tokens[1..], &v.tokens);
        self.context.push(root);
        self.context
            .extend_from_slice(&committed[..committed.len() - 1]);
        // The predictions after the accepted prefix become the next drafts (shifted); the
        // window is refilled with noise on the next `draft`.
        // `preds` has one entry per chain node (root + drafts): the entries after the accepted
        // prefix are the predictions for the positions after the new root.
        let accepted = committed.len() - 1;
        debug_assert_eq!(preds.len(), drafted.len() + 1);
        self.drafts = preds[accepted + 1..].to_vec();
    }
}

/// Plain Jacobi decoding: a window of `W` tokens after the last committed one, refined by the
/// model's own predictions each step (cold start and refills from ahead noise).
///
/// # Examples
/// ```
/// use msn::{Jacobi, JacobiConfig};
///
/// let decoder = Jacobi::new(JacobiConfig { window: 8, ..Default::default() });
/// assert_eq!(decoder.config().window, 8);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Jacobi {
    config: JacobiConfig,
}

impl Jacobi {
    /// Jacobi decoding with `config`.
    pub fn new(config: JacobiConfig) -> Self {
        Self { config }
    }

    /// The parameters.
    pub fn config(&self) -> &JacobiConfig {
        &self.config
    }
}

impl Decoder for Jacobi {
    fn name(&self) -> &'static str {
        "jacobi"
    }

    fn decode<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut OnText<'_>>,
    ) -> Result<Generation> {
        let jc = &self.config;
        let mut window = Window {
            drafts: Vec::new(),
            context: prompt.to_vec(),
            window: jc.window,
            rng: Rng::new(jc.seed),
        };
        tree_decode(model, tokenizer, prompt, config, on_text, &mut window)
    }
}
