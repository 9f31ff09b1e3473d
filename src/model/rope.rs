//! Rotary position embedding applied by **explicit position ids**.
//!
//! burn-nn's `RotaryEncoding` rotates contiguous positions only; token trees give sibling nodes
//! the same position (`committed + depth`), so the angle is looked up per token here. The layout
//! is the Hugging Face "rotate half" one: the GGUF loader converts llama Q/K weights from GGUF's
//! interleaved-pair layout once, at load time (`weights::unpermute_rope_rows`).

use crate::model::config::LlamaConfig;
use burn::prelude::*;

/// Inverse frequencies `theta^(-2i/d)` for `i in 0..d/2`, with the config's scaling applied.
pub fn inv_frequencies(config: &LlamaConfig, factors: Option<&[f32]>) -> Vec<f64> {
    let d = config.head_dim();
    let mut inv: Vec<f64> = (0..d / 2)
        .map(|i| config.rope_theta.powf(-(2.0 * i as f64) / d as f64))
        .collect();
    if let Some(s) = &config.rope_scaling {
        match s.rope_type.as_str() {
            "linear" => inv.iter_mut().for_each(|f| *f /= s.factor),
            "llama3" => {
                let old = s.original_max_position_embeddings.unwrap_or(8192) as f64;
                let lo = s.low_freq_factor.unwrap_or(1.0);
                let hi = s.high_freq_factor.unwrap_or(4.0);
                let (lo_wl, hi_wl) = (old / lo, old / hi);
                for f in inv.iter_mut() {
                    let wl = 2.0 * std::f64::consts::PI / *f;
                    if wl > lo_wl {
                        *f /= s.factor;
                    } else if wl >= hi_wl {
                        let smooth = (old / wl - lo) / (hi - lo);
                        *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                    }
                }
            }
            // Phi-3's long context: the short divisors while the model serves no more positions
            // than it was pre-trained with, the long ones for every position otherwise
            // (llama.cpp's rule for its context size; transformers switches per call).
            "longrope" => {
                let original = s.original_max_position_embeddings.unwrap_or(usize::MAX);
                let long = config.max_position_embeddings > original;
                let divisors = match long {
                    true => s.long_factor.as_deref(),
                    false => s.short_factor.as_deref(),
                };
                for (f, k) in inv.iter_mut().zip(divisors.unwrap_or_default()) {
                    *f /= *k;
                }
            }
            // `LlamaConfig::validate`, which every model build runs, admits no other type.
            other => unreachable!("rope_scaling type `{other}` passed validation"),
        }
    }
    if let Some(ff) = factors {
        for (f, k) in inv.iter_mut().zip(ff) {
            *f /= *k as f64;
        }
    }
    inv
}

/// Cosine and sine tables, `[max_positions, head_dim]`, halves duplicated, and the rotate-half
/// matrix.
#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    /// `[head_dim, head_dim]` with `x @ rotate = cat(-x2, x1)`: one small contiguous matmul
    /// instead of strided half-slices.
    rotate: Tensor<B, 2>,
    /// What the tables are made of, for the host engine's rows.
    #[module(skip)]
    host: HostRope,
}

/// RoPE for the host engine: the rows of [`Rope`]'s tables computed for the positions a forward
/// takes (the same bits as the tables' rows: one formula, [`HostRope::row`]), instead of tables
/// of every position the model serves (2 x 33.5 MB at Llama 3's 131,072 positions and head 64,
/// and ~0.4 s of a load).
#[derive(Debug, Clone)]
pub(crate) struct HostRope {
    inv_freq: Vec<f64>,
    scale: f64,
    positions: usize,
}

impl HostRope {
    /// Tables of `positions` positions that rotate nothing (for tests of what follows RoPE).
    #[cfg(test)]
    pub(crate) fn identity(positions: usize) -> Self {
        Self {
            inv_freq: Vec::new(),
            scale: 1.0,
            positions,
        }
    }

    /// Positions served.
    pub(crate) fn positions(&self) -> usize {
        self.positions
    }

    /// The cosine and sine row of position `p` (halves duplicated, times the scale) into `cos`
    /// and `sin` (head_dim values each).
    fn row(&self, p: usize, cos: &mut [f32], sin: &mut [f32]) {
        let half = self.inv_freq.len();
        for (i, f) in self.inv_freq.iter().enumerate() {
            let a = p as f64 * f;
            let (s, c) = a.sin_cos();
            for j in [i, i + half] {
                cos[j] = (c * self.scale) as f32;
                sin[j] = (s * self.scale) as f32;
            }
        }
    }

    /// The rows of `positions`, `[positions.len(), head_dim]` each (cosines, sines).
    pub(crate) fn rows(&self, positions: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let d = 2 * self.inv_freq.len();
        let mut cos = vec![0f32; positions.len() * d];
        let mut sin = vec![0f32; positions.len() * d];
        for ((&p, c), s) in positions
            .iter()
            .zip(cos.chunks_exact_mut(d))
            .zip(sin.chunks_exact_mut(d))
        {
            self.row(p, c, s);
        }
        (cos, sin)
    }
}

impl<B: Backend> Rope<B> {
    /// Builds the tables for `max_positions` positions, cosines and sines multiplied by
    /// `scale` (longrope's attention factor; 1 otherwise).
    pub fn new(inv_freq: &[f64], max_positions: usize, scale: f64, device: &B::Device) -> Self {
        let half = inv_freq.len();
        let d = 2 * half;
        let host = HostRope {
            inv_freq: inv_freq.to_vec(),
            scale,
            positions: max_positions,
        };
        let mut cos = vec![0f32; max_positions * d];
        let mut sin = vec![0f32; max_positions * d];
        for ((p, c), s) in cos
            .chunks_exact_mut(d)
            .enumerate()
            .zip(sin.chunks_exact_mut(d))
        {
            host.row(p, c, s);
        }
        let mut rotate = vec![0f32; d * d];
        for i in 0..half {
            rotate[(i + half) * d + i] = -1.0; // out[i] = -x[i + half]
            rotate[i * d + i + half] = 1.0; // out[i + half] = x[i]
        }
        Self {
            rotate: Tensor::from_data(TensorData::new(rotate, [d, d]), device),
            cos: Tensor::from_data(TensorData::new(cos, [max_positions, d]), device),
            sin: Tensor::from_data(TensorData::new(sin, [max_positions, d]), device),
            host,
        }
    }

    /// The host engine's RoPE: rows of these tables for the positions of each forward.
    pub(crate) fn host(&self) -> HostRope {
        self.host.clone()
    }

    /// The `(cos, sin)` rows for `positions` `[batch, t]`, laid out contiguously as
    /// `[batch, t, heads, head_dim]` (the same rows repeated per head), so that the products in
    /// [`Rope::apply`] are plain element-wise ones, forward and backward, instead of broadcasts
    /// walked by stride. Compute once per forward for each head count and pass to every layer.
    pub fn angles(
        &self,
        positions: Tensor<B, 2, Int>,
        heads: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, t] = positions.dims();
        let d = self.cos.dims()[1];
        let flat = positions.reshape([b * t]);
        let rows = |table: &Tensor<B, 2>, flat: Tensor<B, 1, Int>| {
            table
                .clone()
                .select(0, flat)
                .reshape([b, t, 1, d])
                .expand([b, t, heads, d])
                // Reshaping the stride-0 view materializes it.
                .reshape([b * t * heads * d])
                .reshape([b, t, heads, d])
        };
        (rows(&self.cos, flat.clone()), rows(&self.sin, flat))
    }

    /// Rotates `x` `[batch, t, heads, head_dim]` (contiguous, heads not yet moved forward) by
    /// the angles from [`Rope::angles`] for the same head count.
    pub fn apply(&self, x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, t, h, d] = x.dims();
        let rotated = x
            .clone()
            .reshape([b * t * h, d])
            .matmul(self.rotate.clone())
            .reshape([b, t, h, d]);
        x * cos.clone() + rotated * sin.clone()
    }
}
