//! The loop every decoder shares: prefill, then per step draft a tree, verify it in one forward
//! pass, commit the accepted prefix (stopping exactly where greedy stops), keep only its KV
//! entries, and carry the last committed token as the next root.

use crate::decode::OnText;
use crate::decode::drafter::{Draft, Drafter};
use crate::decode::output::Output;
use crate::decode::step_log::StepLog;
use crate::decode::tree::TokenTree;
use crate::decode::verify::{Verified, verify, verify_sampled};
use crate::error::{Error, Result};
use crate::generation::{GenerateConfig, Generation, check_prompt};
use crate::logits::{argmax, read_back, top_k_rows};
use crate::model::{CausalLm, ForwardInput, KvCache, Tokenizer};
use crate::sample::Picker;
use burn::prelude::*;
use std::time::Instant;

/// A prefilled cache, its device, and the first committed token.
pub(crate) type Prefilled<B> = (
    KvCache<B>,
    <B as burn::tensor::backend::BackendTypes>::Device,
    u32,
);

/// The start every decoder shares: checks the prompt, runs it through a fresh cache with room
/// for `max_new_tokens + slack` more positions (only the tokens after the prefix the
/// [`GenerateConfig::prompt_cache`] holds, where it holds one), and commits the first token
/// (one step).
/// Returns the cache, the device and that token, or `None` when nothing is to be generated.
///
/// # Errors
/// [`Error::EmptyPrompt`], [`Error::ContextOverflow`], [`Error::TokenOutOfRange`],
/// [`Error::Tokenizer`]; [`Error::InvalidArgument`] for sampling parameters
/// [`crate::Sampling::validate`] rejects.
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
    let fresh = model.new_cache(1, capacity);
    let (mut cache, cached) = match &config.prompt_cache {
        Some(pc) => pc.take(prompt, fresh),
        None => (fresh, 0),
    };
    out.set_cached(cached);
    let input = ForwardInput::causal(&prompt[cached..], cached, &device);
    let logits = model.forward_last(input, &mut cache);
    let first = picker.pick_last(logits);
    out.push_block(&[first])?;
    Ok(Some((cache, device, first)))
}

/// Offers `cache`, which holds `prompt` and then `output` (as far as its length goes), to
/// the config's prompt cache, if it has one.
pub(crate) fn keep_for_next<B: Backend>(
    config: &GenerateConfig,
    prompt: &[u32],
    output: &[u32],
    cache: KvCache<B>,
) {
    if let Some(pc) = &config.prompt_cache {
        pc.put(prompt, output, cache);
    }
}

/// Decodes `prompt` with `drafter`'s drafts: greedily, or by sampling when `config.sampling`
/// is set; either way the output is the model's own. `on_text` receives the text as it
/// becomes stable.
///
/// # Errors
/// As [`prefill`], plus [`Error::InvalidArgument`] for a malformed draft.
pub(crate) fn tree_decode<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompt: &[u32],
    config: &GenerateConfig,
    on_text: Option<&mut OnText<'_>>,
    drafter: &mut dyn Drafter,
) -> Result<Generation> {
    let started = Instant::now();
    let mut out = Output::new(config, tokenizer, on_text);
    let mut picker = Picker::new(config.sampling.as_ref());
    // The root of the last step is committed, so a draft needs `max_nodes - 1` beyond the
    // output.
    let slack = drafter.max_nodes().saturating_sub(1);
    let Some((mut cache, device, mut root)) =
        prefill(model, prompt, config, slack, &mut picker, &mut out)?
    else {
        return Ok(out.finish(prompt.len(), started));
    };
    let vocab = model.info().vocab_size;
    let (mut draft_s, prefill_s) = (0.0, started.elapsed().as_secs_f64());
    let (mut forward_tokens, mut log) = (Vec::new(), StepLog::default());
    while !out.is_done() {
        let t0 = Instant::now();
        let step = StepLog::start();
        let start = cache.len();
        // Room for the draft in the cache (and so in the position table); nothing deeper than
        // the tokens still to produce.
        let room = cache.remaining().saturating_sub(1);
        let left = config.max_new_tokens.saturating_sub(out.tokens().len());
        let draft = drafter.draft(root, room, left);
        check_draft(&draft, root, room, vocab)?;
        let before = t0.elapsed().as_secs_f64();
        draft_s += before;
        forward_tokens.push(draft.tree.len());
        let logits = forward_tree_logits(model, &mut cache, &draft.tree, &draft.tokens, &device);
        let preds = argmax(logits.clone());
        let t1 = Instant::now();
        let host = (!picker.is_greedy()).then(|| read_back(logits.clone()).convert::<f32>());
        let host = host
            .as_ref()
            .map(|h| h.as_slice::<f32>().expect("f32 logits"));
        let v = verify_draft(&draft, &preds, &mut picker, host);
        let (rows, k) = drafter.top_k_rows(&draft, &v);
        let t_top = Instant::now();
        let top = top_k_rows(logits, &rows, k, &device);
        let top_s = t_top.elapsed().as_secs_f64();
        drafter.observe(&draft, &preds, &v, &top);
        out.push_block(&v.tokens)?;
        cache.keep(start, &v.path);
        root = *v.tokens.last().expect("at least the root's prediction");
        let after = t1.elapsed().as_secs_f64();
        draft_s += after;
        log.end(step, before + after - top_s);
        drafter.timed(draft.tree.len(), t0.elapsed().as_secs_f64());
    }
    keep_for_next(config, prompt, out.tokens(), cache);
    let mut g = out.finish(prompt.len(), started);
    g.forward_tokens.truncate(1);
    g.forward_tokens.extend(forward_tokens);
    g.draft_time_s = draft_s;
    g.verify_time_s = (g.wall_time_s - draft_s).max(prefill_s);
    log.finish(&mut g);
    Ok(g)
}

/// A draft the engine can run: rooted at `root`, one token and flag per node, within the room
/// left in the cache, every token in the vocabulary.
///
/// # Errors
/// [`Error::InvalidArgument`] naming what is wrong (a [`Drafter`] bug, not user input).
pub(crate) fn check_draft(draft: &Draft, root: u32, room: usize, vocab: usize) -> Result<()> {
    let n = draft.tree.len();
    let bad = |what: String| Err(Error::InvalidArgument(format!("the drafter {what}")));
    if draft.tokens.len() != n || draft.preferred.len() != n {
        return bad(format!(
            "returned a draft of {n} nodes with {} tokens and {} flags; give one of each per node",
            draft.tokens.len(),
            draft.preferred.len()
        ));
    }
    if draft.tokens.first() != Some(&root) {
        return bad(format!("did not put the root {root} at node 0"));
    }
    if n > room + 1 {
        return bad(format!(
            "returned {n} nodes where {} fit; respect `room`",
            room + 1
        ));
    }
    if let Some(t) = draft.tokens.iter().find(|&&t| t as usize >= vocab) {
        return bad(format!(
            "drafted token {t}, outside the vocabulary of {vocab}"
        ));
    }
    Ok(())
}

/// Verifies `draft` greedily from the argmax `preds` at its nodes or, when `picker` samples, by
/// the sampled walk over `logits`: one row of host logits per draft node, node 0 first (so each
/// row is `logits.len() / nodes` wide).
pub(crate) fn verify_draft(
    draft: &Draft,
    preds: &[u32],
    picker: &mut Picker,
    logits: Option<&[f32]>,
) -> Verified {
    match logits {
        Some(rows) if !picker.is_greedy() => {
            let vocab = rows.len() / draft.tree.len();
            verify_sampled(&draft.tree, &draft.tokens, &draft.preferred, |node| {
                picker.pick(&rows[node * vocab..(node + 1) * vocab])
            })
        }
        _ => verify(&draft.tree, &draft.tokens, preds, &draft.preferred),
    }
}

/// Runs `tree` with node `tokens` after the cached context and returns its logits,
/// `[1, nodes, vocab]`. The nodes' keys and values are appended to `cache`; trim them with
/// [`KvCache::keep`].
pub(crate) fn forward_tree_logits<B: Backend, M: CausalLm<B>>(
    model: &M,
    cache: &mut KvCache<B>,
    tree: &TokenTree,
    tokens: &[u32],
    device: &B::Device,
) -> Tensor<B, 3> {
    let n = tree.len();
    let cached = cache.len();
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let pos: Vec<i64> = tree
        .positions(cached)
        .into_iter()
        .map(|p| p as i64)
        .collect();
    let mask = (!tree.is_chain()).then(|| {
        Tensor::<B, 3, Bool>::from_data(
            TensorData::new(tree.mask(cached), [1, n, cached + n]),
            device,
        )
    });
    let input = ForwardInput {
        tokens: Tensor::from_data(TensorData::new(ids, [1, n]), device),
        positions: Tensor::from_data(TensorData::new(pos, [1, n]), device),
        mask,
    };
    model.forward(input, cache)
}
