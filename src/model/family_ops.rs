//! What the families beside llama add to its forward pass on burn's tensors (the host engine has
//! its own versions): Gemma's GELU gate, soft-capping, and the window of sliding layers.

use burn::prelude::*;
use burn::tensor::activation::silu;

/// `cap * tanh(x / cap)`: Gemma 2's soft-capping of attention scores and of logits.
pub(crate) fn softcap<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    cap: Option<f64>,
) -> Tensor<B, D> {
    match cap {
        Some(c) => (x / c).tanh() * c,
        None => x,
    }
}

/// The MLP gate's activation: SiLU, or for Gemma GELU with the tanh approximation
/// (`0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`, PyTorch's `gelu(approximate="tanh")`).
pub(crate) fn gate_act<B: Backend>(x: Tensor<B, 3>, gelu: bool) -> Tensor<B, 3> {
    if !gelu {
        return silu(x);
    }
    let k = (2.0 / std::f64::consts::PI).sqrt();
    let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715) * k;
    x * (inner.tanh() + 1.0) * 0.5
}

/// Whether the query at position `q` may not see the key at position `k` in a window of
/// `window` positions (itself included): the key is `window` or more positions back.
pub(crate) fn outside_window(q: usize, k: usize, window: usize) -> bool {
    q >= k + window
}

/// Positions of the keys a query sees, called once per visible slot in slot order: a new
/// token's is its stated one (`positions`, the row's new tokens); the cached keys a query sees
/// are its row's committed tokens, in order (padding and a batch's discarded branches are
/// masked), so the n-th is at position n.
pub(crate) fn key_positions(positions: &[usize], past: usize) -> impl FnMut(usize) -> usize + '_ {
    let mut committed = 0;
    move |j| match j < past {
        true => {
            committed += 1;
            committed - 1
        }
        false => positions[j - past],
    }
}

/// `mask` (`[b, t, past + t]`, true = masked) with every key outside the window of its query
/// also masked (key positions from [`key_positions`]).
pub(crate) fn window_mask<B: Backend>(
    mask: Tensor<B, 3, Bool>,
    positions: &[Vec<usize>],
    past: usize,
    window: usize,
    device: &B::Device,
) -> Tensor<B, 3, Bool> {
    let (b, t) = (positions.len(), positions.first().map_or(0, Vec::len));
    let s = past + t;
    let mut data: Vec<bool> = mask.into_data().iter::<bool>().collect();
    for (r, pos) in positions.iter().enumerate() {
        for (i, &q) in pos.iter().enumerate() {
            let row = &mut data[(r * t + i) * s..(r * t + i + 1) * s];
            let mut at = key_positions(pos, past);
            // Only visible keys are asked their position (which counts the committed ones).
            for (j, hidden) in row.iter_mut().enumerate() {
                if !*hidden && outside_window(q, at(j), window) {
                    *hidden = true;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(data, [b, t, s]), device)
}
