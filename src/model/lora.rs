//! Low-rank adapters (LoRA, Hu et al. 2021) on the llama projections: `y = x W + s (x A) B`
//! with `W` frozen, `A` `[in, rank]`, `B` `[rank, out]` trained and `s = alpha / rank`. `B`
//! starts at zero, so an adapted model starts as the base model; after training the adapters are
//! merged into `W` (`W + s A B`) and the model is a plain one again.

use crate::error::{Error, Result};
use crate::rng::Rng;
use burn::module::Param;
use burn::prelude::*;
use std::fmt;
use std::str::FromStr;

/// One of the seven projections of a llama block, by its Hugging Face name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoraTarget {
    /// `self_attn.q_proj`.
    Q,
    /// `self_attn.k_proj`.
    K,
    /// `self_attn.v_proj`.
    V,
    /// `self_attn.o_proj`.
    O,
    /// `mlp.gate_proj`.
    Gate,
    /// `mlp.up_proj`.
    Up,
    /// `mlp.down_proj`.
    Down,
}

impl LoraTarget {
    /// All seven, in block order.
    pub const ALL: [LoraTarget; 7] = [
        Self::Q,
        Self::K,
        Self::V,
        Self::O,
        Self::Gate,
        Self::Up,
        Self::Down,
    ];

    /// The Hugging Face name (`q_proj`, ..., `down_proj`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }
}

impl fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LoraTarget {
    type Err = Error;

    /// Parses `q_proj` (or `q`), ..., `down_proj` (or `down`).
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| s == t.name() || s == t.name().trim_end_matches("_proj"))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|t| t.name()).collect();
                Error::InvalidArgument(format!(
                    "unknown LoRA target `{s}`; use one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// Which projections get adapters, of what rank and scale.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of each adapter.
    pub rank: usize,
    /// `alpha`: the update is scaled by `alpha / rank`.
    pub alpha: f64,
    /// The projections adapted in every block.
    pub targets: Vec<LoraTarget>,
}

impl Default for LoraConfig {
    /// Rank 16, alpha 32, all seven projections.
    fn default() -> Self {
        Self::with_rank(16)
    }
}

impl LoraConfig {
    /// Rank `rank` with alpha `2 x rank` (an update scale of 2) on all seven projections.
    ///
    /// ```
    /// let c = msn::train::LoraConfig::with_rank(8);
    /// assert_eq!((c.rank, c.alpha, c.targets.len()), (8, 16.0, 7));
    /// ```
    pub fn with_rank(rank: usize) -> Self {
        Self {
            rank,
            alpha: 2.0 * rank as f64,
            targets: LoraTarget::ALL.to_vec(),
        }
    }

    /// Checks the rank, scale and targets.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for rank 0, a non-finite or non-positive alpha, or no target.
    pub fn check(&self) -> Result<()> {
        if self.rank == 0
            || self.targets.is_empty()
            || !(self.alpha > 0.0 && self.alpha.is_finite())
        {
            return Err(Error::InvalidArgument(format!(
                "LoRA needs a rank >= 1, a positive alpha and at least one target (got rank {}, \
                 alpha {}, {} targets)",
                self.rank,
                self.alpha,
                self.targets.len()
            )));
        }
        Ok(())
    }
}

/// One adapter: `s (x A) B`.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[in, rank]`.
    pub a: Param<Tensor<B, 2>>,
    /// `[rank, out]`.
    pub b: Param<Tensor<B, 2>>,
    scale: f64,
}

impl<B: Backend> Lora<B> {
    /// A fresh adapter for an `[in, out]` weight: `A` uniform in `±1/sqrt(in)` (PEFT's
    /// Kaiming-uniform bound) from `rng`, `B` zero.
    pub(crate) fn new(
        input: usize,
        output: usize,
        config: &LoraConfig,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Self {
        let r = config.rank;
        let bound = 1.0 / (input as f64).sqrt();
        let a: Vec<f32> = (0..input * r)
            .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
            .collect();
        Self {
            a: Param::from_tensor(Tensor::from_data(TensorData::new(a, [input, r]), device)),
            b: Param::from_tensor(Tensor::zeros([r, output], device)),
            scale: config.alpha / r as f64,
        }
    }

    /// From trained factors (`a` `[in, rank]`, `b` `[rank, out]`) and the scale `alpha / rank`.
    pub(crate) fn from_factors(a: Tensor<B, 2>, b: Tensor<B, 2>, scale: f64) -> Self {
        Self {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            scale,
        }
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The update `s (x A) B` for `x` `[batch, t, in]` (f32).
    pub(crate) fn delta(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = x.dims();
        let o = self.b.dims()[1];
        let y = x
            .reshape([b * t, d])
            .matmul(self.a.val())
            .matmul(self.b.val());
        (y * self.scale).reshape([b, t, o])
    }

    /// `s A B`, `[in, out]`: what merging adds to the weight.
    pub(crate) fn product(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()) * self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CausalLm, ForwardInput, Llama, LlamaConfig};
    use burn::backend::Flex;

    type B = Flex;

    fn logits(m: &Llama<B>, ids: &[u32]) -> Vec<f32> {
        let d = Default::default();
        let n = ids.len();
        let tokens: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        let pos: Vec<i64> = (0..n as i64).collect();
        let mut cache = m.new_cache(1, n);
        m.forward(
            ForwardInput {
                tokens: Tensor::from_data(TensorData::new(tokens, [1, n]), &d),
                positions: Tensor::from_data(TensorData::new(pos, [1, n]), &d),
                mask: None,
            },
            &mut cache,
        )
        .into_data()
        .into_vec::<f32>()
        .unwrap()
    }

    fn base() -> Llama<B> {
        let d = Default::default();
        Llama::init_seeded(&LlamaConfig::tiny(64), 11, &d)
    }

    fn host(t: Tensor<B, 2>) -> (Vec<f64>, [usize; 2]) {
        let dims = t.dims();
        let v = t.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        (v.into_iter().map(f64::from).collect(), dims)
    }

    const IDS: [u32; 7] = [3, 17, 5, 60, 22, 9, 41];

    #[test]
    fn fresh_adapters_leave_the_model_unchanged() {
        let m = base();
        let adapted = base().with_lora(&LoraConfig::default(), 1);
        assert!(adapted.has_lora() && !m.has_lora());
        // B starts at zero: the update is exactly zero.
        assert_eq!(logits(&adapted, &IDS), logits(&m, &IDS));
    }

    #[test]
    fn merging_equals_the_adapted_model_and_w_plus_s_a_b() {
        let config = LoraConfig {
            rank: 3,
            alpha: 6.0,
            targets: vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Down],
        };
        let mut adapted = base().with_lora(&config, 1);
        // Non-zero B, as after training.
        let mut rng = Rng::new(9);
        for block in &mut adapted.layers {
            for l in block
                .self_attn
                .lora
                .iter_mut()
                .chain(block.mlp.lora.iter_mut())
                .flatten()
            {
                let [r, o] = l.b.dims();
                let v: Vec<f32> = (0..r * o).map(|_| (rng.unit() - 0.5) as f32).collect();
                let d = l.b.device();
                *l = Lora::from_factors(
                    l.a.val(),
                    Tensor::from_data(TensorData::new(v, [r, o]), &d),
                    l.scale(),
                );
            }
        }
        assert!(
            adapted.layers[0].self_attn.lora[1].is_none(),
            "k is not a target"
        );
        let want = logits(&adapted, &IDS);
        let (w_q, _) = host(adapted.layers[1].self_attn.q_proj.weight.val());
        let lq = adapted.layers[1].self_attn.lora[0].as_ref().unwrap();
        let ((a, [i, r]), (b, [_, o])) = (host(lq.a.val()), host(lq.b.val()));
        let s = lq.scale();
        assert_eq!(s, 2.0);
        let (w_k, _) = host(adapted.layers[1].self_attn.k_proj.weight.val());
        let merged = adapted.merge_lora();
        assert!(!merged.has_lora());
        // The merged weight, against W + s A B in f64.
        let (got, _) = host(merged.layers[1].self_attn.q_proj.weight.val());
        for row in 0..i {
            for col in 0..o {
                let ab: f64 = (0..r).map(|k| a[row * r + k] * b[k * o + col]).sum();
                let w = w_q[row * o + col] + s * ab;
                assert!((got[row * o + col] - w).abs() < 1e-5, "[{row},{col}]");
            }
        }
        // Untargeted projections are untouched, bit for bit.
        assert_eq!(host(merged.layers[1].self_attn.k_proj.weight.val()).0, w_k);
        let got = logits(&merged, &IDS);
        let max = want
            .iter()
            .zip(&got)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-4, "merged logits differ by {max}");
        assert_ne!(logits(&base(), &IDS), got, "the adapters changed the model");
    }

    #[test]
    fn targets_parse_by_name_and_unknown_ones_are_errors() {
        assert_eq!("q_proj".parse::<LoraTarget>().unwrap(), LoraTarget::Q);
        assert_eq!("down".parse::<LoraTarget>().unwrap(), LoraTarget::Down);
        let e = "qkv".parse::<LoraTarget>().unwrap_err().to_string();
        assert!(e.contains("gate_proj"), "{e}");
        for t in LoraTarget::ALL {
            assert_eq!(t.to_string().parse::<LoraTarget>().unwrap(), t);
        }
        let bad = LoraConfig {
            rank: 0,
            ..Default::default()
        };
        assert!(bad.check().is_err());
        assert!(LoraConfig::default().check().is_ok());
    }
}
