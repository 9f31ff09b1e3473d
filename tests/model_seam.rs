//! The `CausalLm` seam on a small random llama: cache append/truncate/keep, explicit positions,
//! tree masks and padded batches all give the logits of a plain causal forward pass. Each test
//! runs on both engines: burn tensor operations (within float tolerance) and the host engine
//! (host kernels + host cache), where a token's logits must be **bitwise** those of a plain causal
//! pass, because its rows are computed independently of the rest of the call.

mod common;
use burn::prelude::*;
use common::B;
use msn::{CausalLm, ForwardInput, Llama, LlamaConfig};

fn model() -> Llama<B> {
    let mut c = LlamaConfig::tiny(64);
    c.num_hidden_layers = 3;
    Llama::init(&c, &Default::default())
}

/// The same model on both engines; the host one with 3-token prefill chunks so that chunking is
/// exercised too. The flag says whether results must match bitwise.
fn engines() -> [(Llama<B>, bool); 2] {
    let burn = model();
    let mut host = burn.clone();
    host.enable_host_kernels(3);
    [(burn, false), (host, true)]
}

fn same(a: &[f32], b: &[f32], exact: bool) -> bool {
    if exact { a == b } else { close(a, b) }
}

fn rows(t: Tensor<B, 3>) -> Vec<Vec<f32>> {
    let [b, n, v] = t.dims();
    let d: Vec<f32> = t.into_data().convert::<f32>().into_vec().unwrap();
    (0..b * n).map(|i| d[i * v..(i + 1) * v].to_vec()).collect()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
}

fn full(m: &Llama<B>, tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache(1, tokens.len());
    rows(m.forward(
        ForwardInput::causal(tokens, 0, &Default::default()),
        &mut cache,
    ))
}

#[test]
fn incremental_decoding_equals_one_pass() {
    for (m, exact) in engines() {
        incremental(&m, exact);
    }
}

fn incremental(m: &Llama<B>, exact: bool) {
    let tokens = [5u32, 9, 13, 2, 7, 7, 30, 1];
    let want = full(m, &tokens);
    let mut cache = m.new_cache(1, 16);
    let mut got = rows(m.forward(
        ForwardInput::causal(&tokens[..3], 0, &Default::default()),
        &mut cache,
    ));
    for (i, &t) in tokens[3..].iter().enumerate() {
        got.extend(rows(m.forward(
            ForwardInput::causal(&[t], 3 + i, &Default::default()),
            &mut cache,
        )));
    }
    for (g, w) in got.iter().zip(&want) {
        assert!(same(g, w, exact));
    }
    assert_eq!(cache.len(), tokens.len());
}

#[test]
fn truncate_then_rewrite_equals_fresh() {
    for (m, exact) in engines() {
        truncate_rewrite(&m, exact);
    }
}

fn truncate_rewrite(m: &Llama<B>, exact: bool) {
    let mut cache = m.new_cache(1, 16);
    let d = Default::default();
    m.forward(ForwardInput::causal(&[1, 2, 3, 4, 5], 0, &d), &mut cache);
    cache.truncate(3);
    let got = rows(m.forward(ForwardInput::causal(&[8, 9], 3, &d), &mut cache));
    let want = full(m, &[1, 2, 3, 8, 9]);
    assert!(same(&got[0], &want[3], exact) && same(&got[1], &want[4], exact));
}

/// A token tree after a committed prefix: root r, children a (depth 1) and b (depth 1), and
/// c under b (depth 2). Each node must see exactly the prefix, its ancestors and itself, at
/// position `committed + depth`; keeping branch r-b-c must leave the cache of causal `r b c`.
#[test]
fn tree_mask_positions_and_keep_equal_causal_branches() {
    for (m, exact) in engines() {
        tree(&m, exact);
    }
}

fn tree(m: &Llama<B>, exact: bool) {
    let d = Default::default();
    let prefix = [3u32, 14, 15, 9];
    let (r, a, b, c) = (26u32, 5, 35, 8);
    let parents: [Option<usize>; 4] = [None, Some(0), Some(0), Some(2)];
    let depth = [0usize, 1, 1, 2];
    let mut cache = m.new_cache(1, 16);
    m.forward(ForwardInput::causal(&prefix, 0, &d), &mut cache);
    let p = prefix.len();
    let n = 4;
    let mut mask = vec![true; n * (p + n)];
    for i in 0..n {
        for j in 0..p {
            mask[i * (p + n) + j] = false;
        }
        let mut k = Some(i);
        while let Some(x) = k {
            mask[i * (p + n) + p + x] = false;
            k = parents[x];
        }
    }
    let tokens: Vec<i64> = [r, a, b, c].iter().map(|&t| t as i64).collect();
    let pos: Vec<i64> = depth.iter().map(|&x| (p + x) as i64).collect();
    let input = ForwardInput {
        tokens: Tensor::from_data(TensorData::new(tokens, [1, n]), &d),
        positions: Tensor::from_data(TensorData::new(pos, [1, n]), &d),
        mask: Some(Tensor::from_data(TensorData::new(mask, [1, n, p + n]), &d)),
    };
    let tree = rows(m.forward(input, &mut cache));
    let with = |tail: &[u32]| full(m, &[&prefix[..], tail].concat());
    assert!(same(&tree[1], with(&[r, a]).last().unwrap(), exact));
    assert!(same(&tree[2], with(&[r, b]).last().unwrap(), exact));
    assert!(same(&tree[3], with(&[r, b, c]).last().unwrap(), exact));
    // Accept r, b, c: keep tree slots 0, 2, 3, then continue causally.
    cache.keep(p, &[0, 2, 3]);
    assert_eq!(cache.len(), p + 3);
    let next = rows(m.forward(ForwardInput::causal(&[11], p + 3, &d), &mut cache));
    assert!(same(&next[0], with(&[r, b, c, 11]).last().unwrap(), exact));
}

#[test]
fn left_padded_batch_equals_each_sequence_alone() {
    for (m, exact) in engines() {
        padded(&m, exact);
    }
}

fn padded(m: &Llama<B>, exact: bool) {
    let d = Default::default();
    let s1 = [4u32, 8, 15, 16, 23];
    let s2 = [42u32, 7];
    let t = s1.len();
    let pad = t - s2.len();
    let tokens: Vec<i64> = s1
        .iter()
        .chain(std::iter::repeat_n(&0, pad))
        .chain(&s2)
        .map(|&x| x as i64)
        .collect();
    let pos: Vec<i64> = (0..t as i64)
        .chain((0..t as i64).map(|i| (i - pad as i64).max(0)))
        .collect();
    let mut mask = vec![false; 2 * t * t];
    for i in 0..t {
        for j in 0..t {
            mask[i * t + j] = j > i;
            // Row 2: padding is invisible; padding rows see only themselves.
            mask[t * t + i * t + j] = j > i || (j < pad && j != i);
        }
    }
    let input = ForwardInput {
        tokens: Tensor::from_data(TensorData::new(tokens, [2, t]), &d),
        positions: Tensor::from_data(TensorData::new(pos, [2, t]), &d),
        mask: Some(Tensor::from_data(TensorData::new(mask, [2, t, t]), &d)),
    };
    let mut cache = m.new_cache(2, t);
    let got = rows(m.forward(input, &mut cache));
    let a = full(m, &s1);
    let b = full(m, &s2);
    for i in 0..t {
        assert!(same(&got[i], &a[i], exact));
    }
    for i in 0..s2.len() {
        assert!(same(&got[t + pad + i], &b[i], exact));
    }
}

#[test]
fn forward_last_equals_last_row_of_forward() {
    for (m, exact) in engines() {
        last(&m, exact);
    }
}

fn last(m: &Llama<B>, exact: bool) {
    let tokens = [1u32, 2, 3, 4];
    let want = full(m, &tokens);
    let mut cache = m.new_cache(1, 4);
    let got = rows(m.forward_last(
        ForwardInput::causal(&tokens, 0, &Default::default()),
        &mut cache,
    ));
    assert_eq!(got.len(), 1);
    assert!(same(&got[0], &want[3], exact));
}

/// The host engine against burn's tensor operations on the same weights: an independent
/// implementation of the same forward pass (tree mask, chunked prefill, host cache keep).
#[test]
fn host_engine_matches_tensor_engine() {
    let [(burn, _), (host, _)] = engines();
    assert!(host.new_cache(1, 4).is_host() && !burn.new_cache(1, 4).is_host());
    let tokens = [5u32, 9, 13, 2, 7, 7, 30, 1, 60, 44];
    let (a, b) = (full(&burn, &tokens), full(&host, &tokens));
    for (x, y) in a.iter().zip(&b) {
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "host vs tensor logits differ by {worst}");
    }
}
