//! The keys and values of the last sequence a conversation ran, kept for its next turn.

use crate::model::KvCache;
use burn::prelude::*;
use std::any::Any;
use std::sync::{Arc, Mutex, PoisonError};

/// Keeps the KV cache of the last generation made with it (prompt and output), so that the
/// next prompt that starts with the same tokens (the next turn of a conversation, the same
/// instructions before another question) runs only the tokens after the common prefix.
///
/// Set it on a [`crate::GenerateConfig`] ([`crate::GenerateConfig::with_prompt_cache`]) and
/// reuse that config for every turn; every decoder uses it. The output is unchanged, bit for
/// bit: a cache is reused only by the weights that filled it, and only on the host engine
/// (the llama model's CPU engine), whose keys and values at a position depend on that
/// position's prefix alone, however the tokens were grouped into forward passes. Elsewhere
/// (a GPU backend, a model without the host engine) the prompt runs in full, as without it.
///
/// It holds one sequence: the memory of one KV cache of the model at the length of the last
/// prompt and output, until the next generation replaces it or [`PromptCache::clear`] frees it.
/// Clones share the one slot (one per conversation is the intended use; two threads using one
/// cache stay correct, each reusing what the other left or running the prompt in full).
///
/// # Examples
/// ```no_run
/// use msn::{Decoder, PromptCache, TrJacobi};
/// # fn f<B: burn::prelude::Backend>(m: &msn::LoadedModel<B>) -> msn::Result<()> {
/// let config = m.generate_config(128).with_prompt_cache(PromptCache::new());
/// let mut decoder = TrJacobi::default();
/// let mut chat = m.tokenizer.encode("<|im_start|>user\nWrite a haiku.<|im_end|>\n<|im_start|>assistant\n")?;
/// let first = decoder.generate(&m.model, Some(&m.tokenizer), &chat, &config)?;
/// chat.extend(&first.tokens);
/// chat.extend(m.tokenizer.encode("\n<|im_start|>user\nAnother.<|im_end|>\n<|im_start|>assistant\n")?);
/// let second = decoder.generate(&m.model, Some(&m.tokenizer), &chat, &config)?;
/// assert!(second.cached_prompt_tokens > 0); // the first turn was not run again
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct PromptCache {
    slot: Arc<Mutex<Option<Held>>>,
}

/// What the slot holds: a `KvCache<B>` of some backend `B`, and the tokens at its positions,
/// in order.
struct Held {
    tokens: Vec<u32>,
    cache: Box<dyn Any + Send>,
}

impl PromptCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Frees the cached sequence.
    pub fn clear(&self) {
        *self.lock() = None;
    }

    /// Tokens held (0 when empty).
    pub fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, |h| h.tokens.len())
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Held>> {
        // A panic while holding the lock cannot leave a half-written entry: the slot is
        // replaced whole.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `fresh` (a new, empty cache the model made for `prompt`), or, where the held sequence
    /// shares a prefix with `prompt`, a cache holding that prefix's keys and values; with the
    /// number of prompt tokens it holds. Never all of `prompt`: its last token always runs,
    /// for the logits of the first new token. The slot is emptied either way.
    pub(crate) fn take<B: Backend>(
        &self,
        prompt: &[u32],
        fresh: KvCache<B>,
    ) -> (KvCache<B>, usize) {
        let Some(Held { tokens, cache }) = self.lock().take() else {
            return (fresh, 0);
        };
        let Ok(cache) = cache.downcast::<KvCache<B>>() else {
            return (fresh, 0);
        };
        let mut cache = *cache;
        // Only host caches carry an owner (see `KvCache::owner`).
        let same_weights = fresh.owner().is_some() && cache.owner() == fresh.owner();
        if !same_weights || fresh.batch() != 1 {
            return (fresh, 0);
        }
        let common = tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        let n = common.min(cache.len()).min(prompt.len().saturating_sub(1));
        if n == 0 {
            return (fresh, 0);
        }
        if cache.capacity() >= fresh.capacity() {
            cache.truncate(n);
            return (cache, n);
        }
        let mut fresh = fresh;
        fresh.copy_prefix_from(&cache, n);
        (fresh, n)
    }

    /// Keeps `cache` for the next prompt: its positions hold the keys and values of `prompt`
    /// followed by `output`, as far as its length goes.
    pub(crate) fn put<B: Backend>(&self, prompt: &[u32], output: &[u32], mut cache: KvCache<B>) {
        if cache.owner().is_none() || cache.batch() != 1 {
            return;
        }
        let tokens: Vec<u32> = prompt.iter().chain(output).copied().collect();
        cache.truncate(tokens.len());
        let mut tokens = tokens;
        tokens.truncate(cache.len());
        let cache = Box::new(cache);
        *self.lock() = Some(Held { tokens, cache });
    }
}

impl std::fmt::Debug for PromptCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptCache")
            .field("tokens", &self.len())
            .finish()
    }
}

/// Two configs are equal only when they share one cache.
impl PartialEq for PromptCache {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.slot, &other.slot)
    }
}
