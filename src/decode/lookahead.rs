//! Lookahead decoding (Fu et al., 2024) on this crate's tree engine: a 2-D Jacobi window
//! (`W` columns, `N - 1` levels) runs beside the verification branch in the same forward pass and
//! feeds an n-gram pool keyed by first token; up to `G` pool n-grams starting with the last
//! committed token are verified. Output equals greedy decoding token for token.
//!
//! The lookahead branch is a token tree. Level-0 tokens form a chain after the root; the level-`l`
//! token of column `j` hangs below the level-`l - 1` token of the same column. So the top token
//! of column `j` attends to the context, level 0 up to column `j`, then column `j` upwards: the
//! attention pattern of the paper, expressed with ancestors only. Its prediction completes the
//! n-gram `(level_0[j], level_1[j], .., level_{N-2}[j], prediction)`, which enters the pool; the
//! levels then shift down by one and the predictions become the new top level. During the first
//! `N - 2` steps (warm-up) the levels are built up instead, one per step, from level-0 noise
//! drawn from the context.
//!
//! The lookahead branch is part of the verified tree: when its level-0 chain happens to match the
//! model's greedy continuation it is accepted like any draft (the verification branch wins ties).

use crate::decode::tree_decode::tree_decode;
use crate::decode::{Decoder, Draft, Drafter, OnText, TokenTree, Verified};
use crate::error::{Error, Result};
use crate::generation::{GenerateConfig, Generation};
use crate::model::{CausalLm, Tokenizer};
use crate::rng::Rng;
use burn::prelude::*;
use std::collections::HashMap;

/// Lookahead parameters. The default is Spec-Bench's setting (`W = 7`, `N = 5`, `G = 7`): 28
/// lookahead tokens and up to 28 verification tokens per forward pass, which suits a GPU; a CPU
/// wants a much smaller window (each extra token costs time there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookaheadConfig {
    /// Window `W`: columns of the lookahead branch.
    pub window: usize,
    /// N-gram size `N` (>= 2): the branch has `N - 1` levels, verified n-grams `N - 1` tokens.
    pub ngram: usize,
    /// `G`: most n-grams verified per step (and kept per key in the pool).
    pub guesses: usize,
    /// Seed of the level-0 noise (tokens drawn from the context).
    pub seed: u64,
}

impl Default for LookaheadConfig {
    fn default() -> Self {
        Self {
            window: 7,
            ngram: 5,
            guesses: 7,
            seed: 0,
        }
    }
}

impl LookaheadConfig {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `N < 2` or `W` or `G` is 0.
    pub fn validate(&self) -> Result<()> {
        if self.ngram < 2 || self.window == 0 || self.guesses == 0 {
            return Err(Error::InvalidArgument(format!(
                "lookahead needs N >= 2, W >= 1 and G >= 1 (got N = {}, W = {}, G = {}); \
                 Spec-Bench uses N = 5, W = 7, G = 7",
                self.ngram, self.window, self.guesses
            )));
        }
        Ok(())
    }

    /// Most tree nodes one step uses, root included.
    pub fn max_nodes(&self) -> usize {
        1 + (self.window + self.guesses) * (self.ngram - 1)
    }
}

/// The n-gram pool: continuations (`N - 1` tokens) by first token, most recent first.
#[derive(Debug, Default)]
struct Pool {
    grams: HashMap<u32, Vec<Vec<u32>>>,
    per_key: usize,
}

impl Pool {
    fn insert(&mut self, key: u32, cont: Vec<u32>) {
        let list = self.grams.entry(key).or_default();
        if let Some(i) = list.iter().position(|c| *c == cont) {
            list.remove(i);
        }
        list.insert(0, cont);
        list.truncate(self.per_key);
    }
}

/// The 2-D window, the pool, and where this step's branch nodes sit in the tree.
struct Window2d {
    config: LookaheadConfig,
    /// `levels[l][j]`: level `l` (0 oldest), column `j`.
    levels: Vec<Vec<u32>>,
    pool: Pool,
    context: Vec<u32>,
    rng: Rng,
    /// Node of the top level of each column this step (None: branch left out this step).
    tops: Vec<usize>,
}

impl Window2d {
    fn noise(&mut self) -> u32 {
        self.context[self.rng.below(self.context.len())]
    }
}

impl Drafter for Window2d {
    fn max_nodes(&self) -> usize {
        self.config.max_nodes()
    }

    fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft {
        let n1 = self.config.ngram - 1;
        let mut tree = TokenTree::chain(1);
        let mut tokens = vec![root];
        let mut preferred = vec![false];
        // Verification branch: pool n-grams after the root, as a trie (shared prefixes once).
        let grams = self.pool.grams.get(&root).cloned().unwrap_or_default();
        for g in grams.iter().take(self.config.guesses) {
            let mut at = 0;
            for &t in g.iter().take(depth) {
                let child = (1..tree.len())
                    .find(|&c| tree.parent(c) == Some(at) && tokens[c] == t && preferred[c]);
                at = match child {
                    Some(c) => c,
                    None if tree.len() < room + 1 => {
                        tokens.push(t);
                        preferred.push(true);
                        tree.push(at)
                    }
                    None => break,
                };
            }
        }
        // Lookahead branch: as many whole columns as fit; missing tokens are context noise.
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        for l in 0..self.levels.len() {
            while self.levels[l].len() < self.config.window {
                let t = self.noise();
                self.levels[l].push(t);
            }
        }
        let levels = self.levels.len();
        let columns = self
            .config
            .window
            .min((room + 1 - tree.len()) / levels.max(1));
        self.tops.clear();
        let mut prev = 0;
        for j in 0..columns {
            prev = tree.push(prev);
            tokens.push(self.levels[0][j]);
            preferred.push(false);
            let mut top = prev;
            for level in &self.levels[1..] {
                top = tree.push(top);
                tokens.push(level[j]);
                preferred.push(false);
            }
            self.tops.push(top);
        }
        debug_assert!(levels <= n1);
        Draft {
            tree,
            tokens,
            preferred,
        }
    }

    fn observe(&mut self, draft: &Draft, preds: &[u32], v: &Verified, _top_k: &[Vec<u32>]) {
        let committed = &v.tokens;
        self.context.push(draft.tokens[0]);
        self.context
            .extend_from_slice(&committed[..committed.len() - 1]);
        if self.tops.is_empty() {
            return;
        }
        let n1 = self.config.ngram - 1;
        let new_top: Vec<u32> = self.tops.iter().map(|&n| preds[n]).collect();
        if self.levels.len() == n1 {
            // Full window: every column completes an n-gram; shift the levels down.
            for (j, &p) in new_top.iter().enumerate() {
                let mut gram: Vec<u32> = self.levels.iter().map(|l| l[j]).collect();
                gram.push(p);
                let key = gram.remove(0);
                self.pool.insert(key, gram);
            }
            self.levels.remove(0);
        }
        // Columns left out this step (a full cache) are refilled with noise by `draft`.
        for level in &mut self.levels {
            level.truncate(new_top.len());
        }
        self.levels.push(new_top);
    }
}

/// Lookahead decoding (Fu et al., 2024): a 2-D Jacobi window beside the verification branch
/// in the same forward pass, feeding an n-gram pool that drafts.
///
/// # Examples
/// ```
/// use msn::{Lookahead, LookaheadConfig};
///
/// let cpu = LookaheadConfig { window: 4, ngram: 3, guesses: 4, seed: 0 };
/// let decoder = Lookahead::new(cpu).unwrap();
/// assert_eq!(decoder.config().max_nodes(), 17);
/// assert!(Lookahead::new(LookaheadConfig { ngram: 1, ..cpu }).is_err());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lookahead {
    config: LookaheadConfig,
}

impl Lookahead {
    /// Lookahead decoding with `config`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for parameters [`LookaheadConfig::validate`] rejects.
    pub fn new(config: LookaheadConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The parameters.
    pub fn config(&self) -> &LookaheadConfig {
        &self.config
    }
}

impl Decoder for Lookahead {
    fn name(&self) -> &'static str {
        "lookahead"
    }

    fn decode<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut OnText<'_>>,
    ) -> Result<Generation> {
        let la = &self.config;
        let mut drafter = Window2d {
            config: *la,
            levels: Vec::new(),
            pool: Pool {
                grams: HashMap::new(),
                per_key: la.guesses,
            },
            context: prompt.to_vec(),
            rng: Rng::new(la.seed),
            tops: Vec::new(),
        };
        tree_decode(model, tokenizer, prompt, config, on_text, &mut drafter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drafter(window: usize, ngram: usize) -> Window2d {
        Window2d {
            config: LookaheadConfig {
                window,
                ngram,
                guesses: 2,
                seed: 1,
            },
            levels: Vec::new(),
            pool: Pool {
                grams: HashMap::new(),
                per_key: 2,
            },
            context: vec![5, 6, 7],
            rng: Rng::new(1),
            tops: Vec::new(),
        }
    }

    #[test]
    fn warm_up_builds_levels_then_collects_ngrams() {
        let mut d = drafter(3, 3);
        d.context = vec![5]; // all noise is 5
        // Step 1: one level of noise, 3 nodes after the root, a chain.
        let a = d.draft(9, 100, 100);
        assert_eq!(a.tokens, vec![9, 5, 5, 5]);
        assert!(a.tree.is_chain());
        let v = Verified {
            path: vec![0],
            tokens: vec![1],
        };
        d.observe(&a, &[0, 11, 12, 13], &v, &[]);
        assert_eq!(d.levels, vec![vec![5, 5, 5], vec![11, 12, 13]]);
        assert!(d.pool.grams.is_empty());
        // Step 2: two levels; column j's level-1 node hangs below its level-0 node.
        let b = d.draft(1, 100, 100);
        assert_eq!(b.tokens, vec![1, 5, 11, 5, 12, 5, 13]);
        assert_eq!(b.tree.parent(2), Some(1)); // (1, 0) below (0, 0)
        assert_eq!(b.tree.parent(3), Some(1)); // (0, 1) after (0, 0)
        assert_eq!(b.tree.depth(6), 4); // (1, 2): column 2, level 1
        let v = Verified {
            path: vec![0],
            tokens: vec![11],
        };
        d.observe(&b, &[0, 0, 21, 0, 22, 0, 23], &v, &[]);
        // Full window: n-grams (level0[j], level1[j], prediction) entered the pool, the most
        // recent first, G = 2 per key; the levels shifted down.
        assert_eq!(d.pool.grams[&5], vec![vec![13, 23], vec![12, 22]]);
        assert_eq!(d.levels, vec![vec![11, 12, 13], vec![21, 22, 23]]);
        // Step 3: root 5's n-grams are verified first (preferred), then the window.
        let c = d.draft(5, 100, 100);
        assert_eq!(&c.tokens[..5], &[5, 13, 23, 12, 22]);
        assert_eq!(c.preferred[..5], [false, true, true, true, true]);
        assert_eq!(c.tree.parent(2), Some(1));
        assert_eq!(c.tree.parent(3), Some(0));
        assert_eq!(&c.tokens[5..], &[11, 21, 12, 22, 13, 23]);
        // Depth limits verified n-grams.
        let e = d.draft(5, 100, 1);
        assert_eq!(&e.tokens[..3], &[5, 13, 12]);
    }

    #[test]
    fn small_room_drops_columns_and_never_overflows() {
        let mut d = drafter(4, 4);
        for room in 0..12 {
            let a = d.draft(3, room, 100);
            assert!(a.tree.len() <= room + 1, "room {room}");
        }
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        for (window, ngram, guesses) in [(0, 3, 1), (3, 1, 1), (3, 3, 0)] {
            let c = LookaheadConfig {
                window,
                ngram,
                guesses,
                seed: 0,
            };
            assert!(matches!(c.validate(), Err(Error::InvalidArgument(_))));
        }
    }
}
