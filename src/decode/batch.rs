//! Several sequences through one tree decoder at once, with ragged acceptance.
//!
//! All sequences share the cache's slots: each step appends every sequence's draft tree (padded
//! to the largest), then each sequence keeps its own accepted branch, padded to the longest
//! accepted branch of the step. A per-sequence validity mask over the slots hides padding and
//! rejected branches from later attention, and position ids are per sequence, so a sequence
//! sees exactly what it would see decoded alone. Prompts are left-padded the same way. When the
//! cache fills up with dead slots it is compacted.

use crate::decode::{Draft, Drafter, Verified, top_k_rows, verify_draft};
use crate::error::Result;
use crate::generate::{GenerateConfig, Generation, Output, argmax, check_prompt};
use crate::model::tokenizer::Tokenizer;
use crate::model::{CausalLm, ForwardInput, KvCache};
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
    fn draft(&mut self, root: u32, _room: usize, _depth: usize) -> Draft {
        Draft::chain(root, &[])
    }

    fn observe(&mut self, _: &Draft, _: &[u32], _: &Verified, _: &[Vec<u32>]) {}
}

/// Greedy decoding (or sampling, with `config.sampling`) of a batch of prompts, one token per
/// sequence per forward pass; outputs equal each prompt decoded alone.
///
/// # Errors
/// As [`crate::greedy`], for any of the prompts.
pub fn greedy_batch<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
) -> Result<Vec<Generation>> {
    let mut none: Vec<NoDraft> = prompts.iter().map(|_| NoDraft).collect();
    let mut drafters: Vec<&mut dyn Drafter> =
        none.iter_mut().map(|d| d as &mut dyn Drafter).collect();
    tree_decode_batch(model, tokenizer, prompts, config, 0, &mut drafters)
}

/// [`crate::decode::tree_decode`] over a batch: `drafters[b]` drafts for `prompts[b]`.
pub(crate) fn tree_decode_batch<B: Backend, M: CausalLm<B>>(
    model: &M,
    tokenizer: Option<&Tokenizer>,
    prompts: &[Vec<u32>],
    config: &GenerateConfig,
    max_nodes: usize,
    drafters: &mut [&mut dyn Drafter],
) -> Result<Vec<Generation>> {
    assert_eq!(prompts.len(), drafters.len(), "one drafter per prompt");
    let started = Instant::now();
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
    let finish = |rows: Vec<Row>| -> Vec<Generation> {
        rows.into_iter()
            .zip(prompts)
            .map(|(r, p)| {
                let mut g = r.out.finish(p.len(), started);
                g.steps = r.steps;
                g.forward_tokens.truncate(1);
                g.forward_tokens.extend(&r.forward_tokens);
                g.verify_time_s = g.wall_time_s;
                g
            })
            .collect()
    };
    if prompts.is_empty() || config.max_new_tokens == 0 {
        return Ok(finish(rows));
    }
    let device = model.device();
    let batch = prompts.len();
    // Prefill, left-padded: row b's prompt ends at the last slot; padding attends only to
    // itself and is invalid for everyone.
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let capacity = width + config.max_new_tokens + 2 * (max_nodes + 1);
    let mut cache = model.new_cache(batch, capacity);
    let (mut ids, mut pos, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (p, row) in prompts.iter().zip(&mut rows) {
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
    let input = ForwardInput {
        tokens: Tensor::from_data(TensorData::new(ids, [batch, width]), &device),
        positions: Tensor::from_data(TensorData::new(pos, [batch, width]), &device),
        mask: Some(Tensor::from_data(
            TensorData::new(mask, [batch, width, width]),
            &device,
        )),
    };
    let logits = model.forward_last(input, &mut cache);
    let firsts = if config.sampling.is_none() {
        argmax(logits)
    } else {
        let data = logits.into_data().convert::<f32>();
        let data = data.as_slice::<f32>().expect("f32 logits");
        let v = info.vocab_size;
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
    while rows.iter().any(|r| !r.out.is_done()) {
        // Compact when the dead slots leave too little room for a full step.
        if cache.remaining() < max_nodes + 1 {
            compact(&mut cache, &mut rows);
        }
        let room = cache.remaining().saturating_sub(1);
        let drafts: Vec<Option<Draft>> = rows
            .iter()
            .zip(drafters.iter_mut())
            .map(|(r, d)| {
                (!r.out.is_done()).then(|| {
                    let left = config.max_new_tokens.saturating_sub(r.out.tokens().len());
                    d.draft(r.root, room, left)
                })
            })
            .collect();
        let t = drafts
            .iter()
            .flatten()
            .map(|d| d.tree.len())
            .max()
            .unwrap_or(1);
        let start = cache.len();
        let s = start + t;
        let (mut ids, mut pos, mut mask) = (Vec::new(), Vec::new(), vec![true; batch * t * s]);
        for (b, (r, d)) in rows.iter().zip(&drafts).enumerate() {
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
        let input = ForwardInput {
            tokens: Tensor::from_data(TensorData::new(ids, [batch, t]), &device),
            positions: Tensor::from_data(TensorData::new(pos, [batch, t]), &device),
            mask: Some(Tensor::from_data(
                TensorData::new(mask, [batch, t, s]),
                &device,
            )),
        };
        let logits = model.forward(input, &mut cache);
        let preds = argmax(logits.clone());
        let host = config
            .sampling
            .is_some()
            .then(|| logits.clone().into_data().convert::<f32>());
        let vocab = logits.dims()[2];
        let flat = logits.reshape([1, batch * t, vocab]);
        let mut keep: Vec<Vec<usize>> = Vec::with_capacity(batch);
        for (b, (row, d)) in rows.iter_mut().zip(&drafts).enumerate() {
            let Some(d) = d else {
                keep.push(Vec::new());
                continue;
            };
            let p = &preds[b * t..b * t + d.tree.len()];
            let rows = host.as_ref().map(|h| {
                let h = h.as_slice::<f32>().expect("f32 logits");
                &h[b * t * vocab..(b * t + d.tree.len()) * vocab]
            });
            let v = verify_draft(d, p, &mut row.picker, rows);
            let (want, k) = drafters[b].top_k_rows(d, &v);
            let want: Vec<usize> = want.iter().map(|&i| b * t + i).collect();
            let top = top_k_rows(flat.clone(), &want, k, &device);
            drafters[b].observe(d, p, &v, &top);
            row.out.push_block(&v.tokens)?;
            row.steps += 1;
            row.forward_tokens.push(d.tree.len());
            row.pos += v.path.len();
            row.root = *v.tokens.last().expect("at least the root's prediction");
            keep.push(v.path);
        }
        let width = keep.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for (row, k) in rows.iter_mut().zip(&mut keep) {
            row.valid.extend((0..width).map(|i| i < k.len()));
            k.resize(width, 0);
        }
        cache.keep_rows(start, &keep);
    }
    Ok(finish(rows))
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
