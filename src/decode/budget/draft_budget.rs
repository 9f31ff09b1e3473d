//! How many of a linear draft's tokens a step verifies (prompt lookup's budget).

use crate::decode::budget::{LatencyCurve, StepCosts};

/// Chooses draft lengths from a [`LatencyCurve`] and observed acceptance.
#[derive(Debug, Clone)]
pub struct DraftBudget {
    costs: StepCosts,
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
            costs: StepCosts::new(curve),
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
        let mut best = (1.0 / self.costs.cost(1), 0);
        let (mut expected, mut chain) = (1.0, 1.0);
        for k in 1..=max {
            chain *= self.p(k - 1);
            expected += chain;
            let rate = expected / self.costs.cost(1 + k);
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

    /// Records the wall time of a step whose forward ran `tokens` tokens.
    pub fn record_step(&mut self, tokens: usize, secs: f64) {
        self.costs.record(tokens, secs);
    }

    /// Plans with the curve alone, ignoring step times ([`StepCosts::curve_only`]).
    pub fn curve_only(mut self) -> Self {
        self.costs = StepCosts::curve_only(self.costs.curve().clone());
        self
    }

    /// The step costs it plans with.
    pub fn costs(&self) -> &StepCosts {
        &self.costs
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
