//! Sampling (temperature, top-k, top-p) that every decoder applies losslessly.
//!
//! A drafting decoder's drafts are deterministic functions of the text so far, so the rule that
//! keeps the output distribution exactly the model's is the simplest one: at each node of the
//! verified path, starting at the root, draw the next token from the model's (processed)
//! distribution at that node; if a child of the node carries that token, move into it and draw
//! again, otherwise stop. Every committed token is then a draw from
//! `p(. | everything before it)`, exactly what one-token-at-a-time sampling produces; the draft
//! only decides how many of those draws one forward pass serves.
//!
//! Each committed token consumes one uniform number from the generator in order, so with the
//! same seed every decoder draws the same tokens as [`crate::greedy`] with sampling, except where
//! float rounding (a tree pass and a one-token pass compute logits through different matmul
//! shapes) moves a draw across a probability boundary.

use crate::error::{Error, Result};
use crate::rng::Rng;
use burn::prelude::*;

/// How to draw each token: softmax of `logits / temperature`, cut to the `top_k` most likely
/// tokens (0: no cut), then to the smallest set whose probability reaches `top_p`, renormalised.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    /// Temperature (> 0); lower is closer to greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 keeps all).
    pub top_k: usize,
    /// Nucleus: keep the most likely tokens until their probability reaches `top_p` (in (0, 1]).
    pub top_p: f32,
    /// Seed of the generator.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the temperature is not a positive finite number or
    /// `top_p` is outside (0, 1].
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "sampling temperature must be a positive number (got {}); for greedy decoding \
                 leave `GenerateConfig::sampling` as None",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "top_p must be in (0, 1] (got {}); 1 keeps every token",
                self.top_p
            )));
        }
        Ok(())
    }

    /// The distribution tokens are drawn from: `(token, probability)` in decreasing probability
    /// (ties to the lower id), only tokens with non-zero probability.
    pub fn distribution(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        let t = f64::from(self.temperature);
        let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
        ids.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        if self.top_k > 0 {
            ids.truncate(self.top_k);
        }
        let Some(&best) = ids.first() else {
            return Vec::new();
        };
        let max = f64::from(logits[best as usize]);
        let mut dist: Vec<(u32, f64)> = ids
            .into_iter()
            .map(|i| (i, ((f64::from(logits[i as usize]) - max) / t).exp()))
            .filter(|(_, w)| *w > 0.0)
            .collect();
        let total: f64 = dist.iter().map(|(_, w)| w).sum();
        let mut cum = 0.0;
        let mut keep = None;
        for (i, (_, w)) in dist.iter_mut().enumerate() {
            *w /= total;
            cum += *w;
            if keep.is_none() && cum >= f64::from(self.top_p) {
                keep = Some(i + 1);
            }
        }
        if let Some(k) = keep {
            dist.truncate(k);
        }
        let kept: f64 = dist.iter().map(|(_, w)| w).sum();
        dist.iter_mut().for_each(|(_, w)| *w /= kept);
        dist
    }
}

/// Picks each token: the argmax, or a draw from [`Sampling::distribution`].
#[derive(Debug, Clone)]
pub(crate) enum Picker {
    Greedy,
    Sample(Sampling, Rng),
}

impl Picker {
    pub fn new(sampling: Option<&Sampling>) -> Self {
        match sampling {
            None => Self::Greedy,
            Some(s) => Self::Sample(*s, Rng::new(s.seed)),
        }
    }

    pub fn is_greedy(&self) -> bool {
        matches!(self, Self::Greedy)
    }

    /// The token after the last row of `[1, 1, vocab]` logits.
    pub fn pick_last<B: Backend>(&mut self, logits: Tensor<B, 3>) -> u32 {
        match self {
            Self::Greedy => crate::logits::argmax(logits)[0],
            Self::Sample(..) => {
                let row = crate::logits::read_back(logits).convert::<f32>();
                self.pick(row.as_slice::<f32>().expect("f32 logits"))
            }
        }
    }

    /// The token after one row of logits; consumes one uniform number when sampling.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        match self {
            Self::Greedy => crate::logits::top_k(logits, 1)[0],
            Self::Sample(s, rng) => {
                let dist = s.distribution(logits);
                let u = rng.unit();
                let mut cum = 0.0;
                for &(id, p) in &dist {
                    cum += p;
                    if u < cum {
                        return id;
                    }
                }
                dist.last().map_or(0, |d| d.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_applies_temperature_top_k_and_top_p() {
        let logits = [0.0f32, 2.0f32.ln(), 4.0f32.ln(), -f32::INFINITY];
        let s = Sampling::default();
        let d = s.distribution(&logits);
        let ids: Vec<u32> = d.iter().map(|x| x.0).collect();
        assert_eq!(ids, vec![2, 1, 0]);
        assert!((d[0].1 - 4.0 / 7.0).abs() < 1e-6);
        // Temperature 0.5 squares the weights: 16 : 4 : 1.
        let d = Sampling {
            temperature: 0.5,
            ..s
        }
        .distribution(&logits);
        assert!((d[0].1 - 16.0 / 21.0).abs() < 1e-6);
        // top_k = 2: 4 : 2.
        let d = Sampling { top_k: 2, ..s }.distribution(&logits);
        assert_eq!(d.len(), 2);
        assert!((d[1].1 - 1.0 / 3.0).abs() < 1e-6);
        // top_p = 0.8: 4/7 < 0.8 <= 6/7, so two tokens.
        let d = Sampling { top_p: 0.8, ..s }.distribution(&logits);
        assert_eq!(d.len(), 2);
        // A tiny top_p keeps the best token only.
        let d = Sampling { top_p: 1e-9, ..s }.distribution(&logits);
        assert_eq!(d, vec![(2, 1.0)]);
    }

    #[test]
    fn bad_parameters_are_typed_errors() {
        for (temperature, top_p) in [
            (0.0, 1.0),
            (-1.0, 1.0),
            (f32::NAN, 1.0),
            (1.0, 0.0),
            (1.0, 1.5),
        ] {
            let s = Sampling {
                temperature,
                top_p,
                ..Default::default()
            };
            assert!(matches!(s.validate(), Err(Error::InvalidArgument(_))));
        }
    }
}
