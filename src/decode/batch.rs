//! Several sequences through one tree decoder at once, with ragged acceptance.
//!
//! All sequences share the cache's slots: each step appends every sequence's draft tree (padded
//! to the largest), then each sequence keeps its own accepted branch, padded to the longest
//! accepted branch of the step. A per-sequence validity mask over the slots hides padding and
//! rejected branches from later attention, and position ids are per sequence, so a sequence
//! sees exactly what it would see decoded alone. Prompts are left-padded the same way. When the
//! cache fills up with dead slots it is compacted.

use crate::decode::output::Output;
use crate::decode::tree_decode::{check_draft, verify_draft};
use crate::decode::{Draft, Drafter, Greedy, Verified};
use crate::error::Result;
use crate::generation::{GenerateConfig, Generation, check_prompt};
use crate::logits::{argmax, top_k_rows};
use crate::model::{CausalLm, ForwardInput, KvCache, Tokenizer};
use crate::sample::Picker;
use burn::prelude::*;
use std::time::Instant;

/// One sequence's state in the batch.
struct Row<'o> {
    out: Output<'o, 'o>,
    picker: Picker,
    /// Which cache slots this sequence may attend to.
    valid: Vec<bool>,
    /// Position id of the next root (tokens of this sequence in the cache).
    pos: usize,
    root: u32,
    steps: usize,
    /// Tree tokens of this sequence's draft at each step after prefill.
    forward_tokens: Vec<usize>,
}

/// A drafter that never drafts: each step verifies the root alone (batched greedy decoding).
struct NoDraft;

impl Drafter for NoDraft {
    fn max_nodes(&self) -> usize {
        1
    }

    fn draft(&mut self, root: u32, _room: usize, _depth: usize) -> Draft {
        Draft::chain(root, &[])
    }

    fn observe(&mut self, _: &Draft, _: &[u32], _: &Verified, _: &[Vec<u32>]) {}
}

impl Greedy {
    /// Greedy decoding (or sampling, with [`GenerateConfig::sampling`]) of a batch of prompts,
    /// one token per sequence per forward pass; each output equals its prompt decoded alone.
    /// Every [`Generation::wall_time_s`] is the whole batch's time.
    ///
    /// # Errors
    /// As [`crate::Decoder::decode`], for any of the prompts.
    pub fn generate_batch<B: Backend, M: CausalLm<B>>(
        &self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompts: &[Vec<u32>],
        config: &GenerateConfig,
    ) -> Result<Vec<Generation>> {
        let mut none: Vec<NoDraft> = prompts.iter().map(|_| NoDraft).collect();
        let mut drafters: Vec<&mut dyn Drafter> =
            none.iter_mut().map(|d| d as &mut dyn Drafter).collect();
        tree_decode_batch(model, tokenizer, prompts, config, &mut drafters)
    }
}

/// [`tree_decode`](crate::decode::tree_decode) over a batch: `drafters[b]` drafts for
/// `prompts[b]`.
pub(crate) fn tree_decode_batch<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    drafters: &mut [&mut dyn Drafter],
) -> Result<Vec<Generation>> {
    assert_eq!(prompts.len(), drafters.len(), "one drafter per prompt");
    // The most draft nodes after a root, of any sequence.
    let max_nodes = drafters
        .iter()
        .map(|d| d.max_nodes())
        .max()
        .unwrap_or(1)
        .saturating_sub(1);
    let started = Instant::now();
    check_batch(model, prompts, config)?;
    let mut rows: Vec<Row> = prompts
        .iter()
        .map(|p| Row {
            out: Output::new(config, tokenizer, None),
            picker: Picker::new(config.sampling.as_ref()),
            valid: Vec::new(),
            pos: p.len(),
            root: 0,
            steps: 0,
            forward_tokens: Vec::new(),
        })
        .collect();
    if !prompts.is_empty() && config.max_new_tokens > 0 {
        let mut cache = prefill_batch(model, prompts, config, max_nodes, &mut rows)?;
        while rows.iter().any(|r| !r.out.is_done()) {
            // Compact when the dead slots leave too little room for a full step.
            if cache.remaining() < max_nodes + 1 {
                compact(&mut cache, &mut rows);
            }
            step_batch(model, config, &mut cache, &mut rows, drafters)?;
        }
    }
    Ok(rows
        .into_iter()
        .zip(prompts)
        .map(|(r, p)| {
            let mut g = r.out.finish(p.len(), started);
            g.steps = r.steps;
            g.forward_tokens.truncate(1);
            g.forward_tokens.extend(&r.forward_tokens);
            g.verify_time_s = g.wall_time_s;
            g
        })
        .collect())
}

/// Checks the sampling parameters and every prompt, before any forward pass.
fn check_batch<B: Backend, M: CausalLm<B>>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
) -> Result<()> {
    if let Some(s) = &config.sampling {
        s.validate()?;
    }
    let info = model.info();
    for p in prompts {
        check_prompt(
            p,
            config.max_new_tokens,
            info.vocab_size,
            info.max_positions,
        )?;
    }
    Ok(())
}

/// Runs the prompts, left-padded, through a new cache and commits each row's first token.
/// Row `b`'s prompt ends at the last slot; padding attends only to itself and is invalid for
/// everyone.
fn prefill_batch<B: Backend, M: CausalLm<B>>(
    model: &M,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    max_nodes: usize,
    rows: &mut [Row],
) -> Result<KvCache<B>> {
    let device = model.device();
    let batch = prompts.len();
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let capacity = width + config.max_new_tokens + 2 * (max_nodes + 1);
    let mut cache = model.new_cache(batch, capacity);
    let (mut ids, mut pos, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (p, row) in prompts.iter().zip(rows.iter_mut()) {
        let pad = width - p.len();
        ids.extend(
            std::iter::repeat_n(p[0], pad)
                .chain(p.iter().copied())
                .map(i64::from),
        );
        pos.extend((0..width).map(|i| i.saturating_sub(pad) as i64));
        for i in 0..width {
            mask.extend((0..width).map(|j| if i < pad { j != i } else { j < pad || j > i }));
        }
        row.valid = (0..width).map(|i| i >= pad).collect();
    }
    let input = batch_input::<B>(ids, pos, mask, [batch, width, width], &device);
    let logits = model.forward_last(input, &mut cache);
    let firsts = if config.sampling.is_none() {
        argmax(logits)
    } else {
        let data = crate::logits::read_back(logits).convert::<f32>();
        let data = data.as_slice::<f32>().expect("f32 logits");
        let v = model.info().vocab_size;
        rows.iter_mut()
            .enumerate()
            .map(|(b, r)| r.picker.pick(&data[b * v..(b + 1) * v]))
            .collect()
    };
    for (row, first) in rows.iter_mut().zip(firsts) {
        row.root = first;
        row.out.push_block(&[first])?;
        row.steps = 1;
    }
    Ok(cache)
}

/// A forward input of `[batch, t]` ids and positions and a `[batch, t, s]` mask.
fn batch_input<B: Backend>(
    ids: Vec<i64>,
    pos: Vec<i64>,
    mask: Vec<bool>,
    [batch, t, s]: [usize; 3],
    device: &B::Device,
) -> ForwardInput<B> {
    ForwardInput {
        tokens: Tensor::from_data(TensorData::new(ids, [batch, t]), device),
        positions: Tensor::from_data(TensorData::new(pos, [batch, t]), device),
        mask: Some(Tensor::from_data(
            TensorData::new(mask, [batch, t, s]),
            device,
        )),
    }
}

/// One step for every unfinished row: draft, one forward pass of all drafts padded to the
/// largest, verify and commit per row, keep each row's accepted branch.
fn step_batch<B: Backend, M: CausalLm<B>>(
    model: &M,
    config: &GenerateConfig,
    cache: &mut KvCache<B>,
    rows: &mut [Row],
    drafters: &mut [&mut dyn Drafter],
) -> Result<()> {
    let room = cache.remaining().saturating_sub(1);
    let vocab = model.info().vocab_size;
    let mut drafts: Vec<Option<Draft>> = Vec::with_capacity(rows.len());
    for (r, d) in rows.iter().zip(drafters.iter_mut()) {
        drafts.push(if r.out.is_done() {
            None
        } else {
            let left = config.max_new_tokens.saturating_sub(r.out.tokens().len());
            let draft = d.draft(r.root, room, left);
            check_draft(&draft, r.root, room, vocab)?;
            Some(draft)
        });
    }
    let t = drafts
        .iter()
        .flatten()
        .map(|d| d.tree.len())
        .max()
        .unwrap_or(1);
    let start = cache.len();
    let device = model.device();
    let input = tree_input::<B>(rows, &drafts, start, t, &device);
    let logits = model.forward(input, cache);
    let mut keep = verify_batch(config, logits, rows, &drafts, drafters, t, &device)?;
    let width = keep.iter().map(Vec::len).max().unwrap_or(1).max(1);
    for (row, k) in rows.iter_mut().zip(&mut keep) {
        row.valid.extend((0..width).map(|i| i < k.len()));
        k.resize(width, 0);
    }
    cache.keep_rows(start, &keep);
    Ok(())
}

/// The step's input: each row's draft after the cache (`start` slots), padded to `t` nodes;
/// each node sees its row's valid slots and its own ancestors, padding only itself.
fn tree_input<B: Backend>(
    rows: &[Row],
    drafts: &[Option<Draft>],
    start: usize,
    t: usize,
    device: &B::Device,
) -> ForwardInput<B> {
    let (batch, s) = (rows.len(), start + t);
    let (mut ids, mut pos, mut mask) = (Vec::new(), Vec::new(), vec![true; batch * t * s]);
    for (b, (r, d)) in rows.iter().zip(drafts).enumerate() {
        let n = d.as_ref().map_or(0, |d| d.tree.len());
        for i in 0..t {
            let m = &mut mask[(b * t + i) * s..(b * t + i + 1) * s];
            match d.as_ref().filter(|_| i < n) {
                Some(d) => {
                    ids.push(i64::from(d.tokens[i]));
                    pos.push((r.pos + d.tree.depth(i)) as i64);
                    for (slot, v) in r.valid.iter().enumerate() {
                        m[slot] = !v;
                    }
                    let mut k = Some(i);
                    while let Some(x) = k {
                        m[start + x] = false;
                        k = d.tree.parent(x);
                    }
                }
                None => {
                    ids.push(i64::from(r.root));
                    pos.push(r.pos as i64);
                    m[start + i] = false;
                }
            }
        }
    }
    batch_input(ids, pos, mask, [batch, t, s], device)
}

/// Verifies and commits each row's draft from the step's `[batch, t, vocab]` logits; returns
/// each row's accepted nodes (empty for finished rows).
fn verify_batch<B: Backend>(
    config: &GenerateConfig,
    logits: Tensor<B, 3>,
    rows: &mut [Row],
    drafts: &[Option<Draft>],
    drafters: &mut [&mut dyn Drafter],
    t: usize,
    device: &B::Device,
) -> Result<Vec<Vec<usize>>> {
    let batch = rows.len();
    let preds = argmax(logits.clone());
    let host = config
        .sampling
        .is_some()
        .then(|| crate::logits::read_back(logits.clone()).convert::<f32>());
    let vocab = logits.dims()[2];
    let flat = logits.reshape([1, batch * t, vocab]);
    let mut keep: Vec<Vec<usize>> = Vec::with_capacity(batch);
    for (b, (row, d)) in rows.iter_mut().zip(drafts).enumerate() {
        let Some(d) = d else {
            keep.push(Vec::new());
            continue;
        };
        let p = &preds[b * t..b * t + d.tree.len()];
        let logits = host.as_ref().map(|h| {
            let h = h.as_slice::<f32>().expect("f32 logits");
            &h[b * t * vocab..(b * t + d.tree.len()) * vocab]
        });
        let v = verify_draft(d, p, &mut row.picker, logits);
        let (want, k) = drafters[b].top_k_rows(d, &v);
        let want: Vec<usize> = want.iter().map(|&i| b * t + i).collect();
        let top = top_k_rows(flat.clone(), &want, k, device);
        drafters[b].observe(d, p, &v, &top);
        row.out.push_block(&v.tokens)?;
        row.steps += 1;
        row.forward_tokens.push(d.tree.len());
        row.pos += v.path.len();
        row.root = *v.tokens.last().expect("at least the root's prediction");
        keep.push(v.path);
    }
    Ok(keep)
}

/// Moves every unfinished row's valid slots to the front (rows padded to the longest with dead
/// slots); finished rows keep nothing.
fn compact<B: Backend>(cache: &mut KvCache<B>, rows: &mut [Row]) {
    let lists: Vec<Vec<usize>> = rows
        .iter()
        .map(|r| match r.out.is_done() {
            true => Vec::new(),
            false => (0..r.valid.len()).filter(|&i| r.valid[i]).collect(),
        })
        .collect();
    let width = lists.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let keep: Vec<Vec<usize>> = lists
        .iter()
        .map(|l| {
            let mut k = l.clone();
            k.resize(width, 0);
            k
        })
        .collect();
    cache.keep_rows(0, &keep);
    for (r, l) in rows.iter_mut().zip(&lists) {
        r.valid = (0..width).map(|i| i < l.len()).collect();
    }
}
