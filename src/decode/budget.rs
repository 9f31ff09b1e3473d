//! Sizing drafts to the device: a measured forward-latency curve and the acceptance the decoder
//! observes decide how many draft tokens a step verifies.
//!
//! On a GPU a 16-token forward costs about what a 1-token forward costs; on a small CPU it costs
//! several times more (see `bench_forward`). A step that verifies `k` draft tokens commits
//! `1 + E[accepted]` tokens for `cost(1 + k)`; [`DraftBudget::choose`] picks the `k` with the most
//! expected tokens per second, so a decoder using it is never slower than greedy by design
//! (`k = 0` is a greedy step).

use crate::model::{CausalLm, ForwardInput};
use burn::prelude::*;
use std::time::Instant;

/// Forward latency against the number of new tokens, over a cached context.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyCurve {
    /// `secs[t - 1]`: seconds for a forward pass of `t` new tokens.
    secs: Vec<f64>,
}

impl LatencyCurve {
    /// A curve from measured seconds for `t = 1, 2, ...`.
    ///
    /// # Panics
    /// When `secs` is empty or holds a non-positive value.
    pub fn new(secs: Vec<f64>) -> Self {
        assert!(
            !secs.is_empty() && secs.iter().all(|s| *s > 0.0),
            "positive latencies"
        );
        Self { secs }
    }

    /// Measures `model` on its own device: for `t = 1..=max_t`, the median of `reps` forward
    /// passes of `t` tokens over a `context`-token cache.
    pub fn measure<B: Backend, M: CausalLm<B>>(
        model: &M,
        context: usize,
        max_t: usize,
        reps: usize,
    ) -> Self {
        let device = model.device();
        let vocab = model.info().vocab_size.max(2) as u32;
        let tokens: Vec<u32> = (0..(context + max_t) as u32)
            .map(|i| 1 + (i * 7919) % (vocab - 1))
            .collect();
        let mut cache = model.new_cache(1, context + max_t);
        let _ = model
            .forward_last(
                ForwardInput::causal(&tokens[..context], 0, &device),
                &mut cache,
            )
            .into_data();
        let secs = (1..=max_t)
            .map(|t| {
                let mut v: Vec<f64> = (0..reps.max(1))
                    .map(|_| {
                        let s = Instant::now();
                        let input =
                            ForwardInput::causal(&tokens[context..context + t], context, &device);
                        let _ = model.forward(input, &mut cache).into_data();
                        cache.truncate(context);
                        s.elapsed().as_secs_f64()
                    })
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            })
            .collect();
        Self::new(secs)
    }

    /// Seconds for `t` new tokens (linear extrapolation past the measured range).
    pub fn cost(&self, t: usize) -> f64 {
        let n = self.secs.len();
        match t {
            0 => 0.0,
            t if t <= n => self.secs[t - 1],
            t if n >= 2 => {
                self.secs[n - 1] + (self.secs[n - 1] - self.secs[n - 2]).max(0.0) * (t - n) as f64
            }
            t => self.secs[0] * t as f64,
        }
    }
}

/// Chooses draft lengths from a [`LatencyCurve`] and observed acceptance.
#[derive(Debug, Clone)]
pub struct DraftBudget {
    curve: LatencyCurve,
    /// Per draft position `j`: (accepted, tried) given that position `j - 1` was accepted.
    stats: Vec<(u64, u64)>,
    /// Steps that verify the full draft regardless of cost, to learn the acceptance.
    explore: u64,
}

impl DraftBudget {
    /// A budget for drafts up to `max_draft` tokens, exploring full drafts for the first
    /// `explore` drafted steps.
    pub fn new(curve: LatencyCurve, max_draft: usize, explore: u64) -> Self {
        Self {
            curve,
            stats: vec![(0, 0); max_draft],
            explore,
        }
    }

    /// Probability that draft position `j` (0-based) is accepted given position `j - 1` was,
    /// with a uniform prior.
    fn p(&self, j: usize) -> f64 {
        let (a, n) = self.stats[j];
        (a as f64 + 1.0) / (n as f64 + 2.0)
    }

    /// How many of `available` draft tokens to verify this step (0 = a greedy step).
    pub fn choose(&mut self, available: usize) -> usize {
        let max = available.min(self.stats.len());
        if max == 0 {
            return 0;
        }
        if self.explore > 0 {
            self.explore -= 1;
            return max;
        }
        let mut best = (1.0 / self.curve.cost(1), 0);
        let (mut expected, mut chain) = (1.0, 1.0);
        for k in 1..=max {
            chain *= self.p(k - 1);
            expected += chain;
            let rate = expected / self.curve.cost(1 + k);
            if rate > best.0 {
                best = (rate, k);
            }
        }
        best.1
    }

    /// Records that `accepted` of `drafted` draft tokens were accepted.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        for j in 0..drafted.min(self.stats.len()) {
            if j > accepted {
                break;
            }
            self.stats[j].1 += 1;
            if j < accepted {
                self.stats[j].0 += 1;
            }
        }
    }

    /// Expected committed tokens per second of a greedy step under the curve.
    pub fn greedy_rate(&self) -> f64 {
        1.0 / self.curve.cost(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expensive_drafts_are_not_verified_once_acceptance_is_known() {
        // T=2 costs 2.7x T=1 (this project's 2-core CPU).
        let curve = LatencyCurve::new(vec![1.0, 2.7, 3.3, 3.8, 4.2, 4.6, 5.0, 5.4]);
        let mut b = DraftBudget::new(curve, 8, 2);
        assert_eq!(b.choose(8), 8, "explores first");
        b.record(8, 1);
        assert_eq!(b.choose(8), 8);
        b.record(8, 0);
        assert_eq!(b.choose(8), 0, "1.3 tokens/pass cannot pay for a 2.7x pass");
    }

    #[test]
    fn cheap_drafts_with_high_acceptance_are_verified() {
        // A GPU-like flat curve.
        let curve = LatencyCurve::new(vec![1.0, 1.01, 1.02, 1.03, 1.04]);
        let mut b = DraftBudget::new(curve, 5, 0);
        for _ in 0..20 {
            b.record(5, 5);
        }
        assert_eq!(b.choose(5), 5);
        assert_eq!(b.choose(2), 2);
        assert_eq!(b.choose(0), 0);
    }

    #[test]
    fn record_counts_only_reached_positions() {
        let mut b = DraftBudget::new(LatencyCurve::new(vec![1.0]), 4, 0);
        b.record(4, 1); // position 0 accepted, position 1 rejected, 2 and 3 never reached
        assert_eq!(b.stats, vec![(1, 1), (0, 1), (0, 0), (0, 0)]);
    }
}
