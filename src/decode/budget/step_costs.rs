//! What a decoding step of each forward size costs: the latency curve, corrected by the wall
//! time of the steps actually run.

use crate::decode::budget::LatencyCurve;
use crate::decode::budget::latency_curve::median;

/// Step costs a budget plans with: the [`LatencyCurve`] measured before decoding, corrected by
/// the wall time of the steps actually run.
///
/// The curve times bare causal forwards; a decoding step also builds the draft, its tree mask
/// and the top-`K` rows, and the machine may be busier (or cooler) than when the curve was
/// measured. So each step's wall time is recorded against its forward size; a size with
/// recorded steps costs the median of its recent ones, and any other size the curve's value
/// scaled by the observed-to-curve ratio, interpolated between the recorded sizes around it.
#[derive(Debug, Clone)]
pub struct StepCosts {
    curve: LatencyCurve,
    /// Recent step seconds per forward size (index = tokens in the forward).
    observed: Vec<std::collections::VecDeque<f64>>,
    /// The median of each size's recent steps (`None`: none recorded), kept up to date by
    /// [`StepCosts::record`] because [`StepCosts::cost`] runs for every candidate shape of every
    /// step.
    medians: Vec<Option<f64>>,
    /// Whether recorded steps count (off: the curve alone, for reproducible decisions).
    learn: bool,
}

/// Step times kept per forward size.
const COST_WINDOW: usize = 9;

impl StepCosts {
    /// Costs from `curve` alone, until steps are recorded.
    pub fn new(curve: LatencyCurve) -> Self {
        Self {
            curve,
            observed: Vec::new(),
            medians: Vec::new(),
            learn: true,
        }
    }

    /// Costs from `curve` only, ignoring recorded steps: the same decisions on every run (tests,
    /// reproducible benchmarks), at the price of trusting the curve.
    pub fn curve_only(curve: LatencyCurve) -> Self {
        Self {
            learn: false,
            ..Self::new(curve)
        }
    }

    /// The measured curve.
    pub fn curve(&self) -> &LatencyCurve {
        &self.curve
    }

    /// Records that a step with a `tokens`-token forward took `secs` seconds, end to end.
    pub fn record(&mut self, tokens: usize, secs: f64) {
        if !self.learn || tokens == 0 || !secs.is_finite() || secs <= 0.0 {
            return;
        }
        if self.observed.len() <= tokens {
            self.observed.resize_with(tokens + 1, Default::default);
            self.medians.resize(tokens + 1, None);
        }
        let q = &mut self.observed[tokens];
        if q.len() == COST_WINDOW {
            q.pop_front();
        }
        q.push_back(secs);
        self.medians[tokens] = Some(median(q.iter().copied().collect()));
    }

    /// Recorded steps of `tokens` tokens (at most the window kept).
    #[cfg(test)]
    fn recorded(&self, tokens: usize) -> usize {
        self.observed
            .get(tokens)
            .map_or(0, std::collections::VecDeque::len)
    }

    fn observed(&self, t: usize) -> Option<f64> {
        self.medians.get(t).copied().flatten()
    }

    /// Expected seconds of a step whose forward runs `t` tokens.
    pub fn cost(&self, t: usize) -> f64 {
        if t == 0 {
            return 0.0;
        }
        if let Some(s) = self.observed(t) {
            return s;
        }
        // The observed-to-curve ratio, interpolated linearly between the nearest recorded
        // sizes below and above `t` (the nearer one's beyond the recorded range).
        let ratio = |u: usize| self.observed(u).expect("recorded") / self.curve.cost(u);
        let recorded = |u: &usize| self.observed(*u).is_some();
        let below = (1..t).rev().find(recorded);
        let above = (t + 1..self.medians.len()).find(recorded);
        let scale = match (below, above) {
            (None, None) => 1.0,
            (Some(u), None) | (None, Some(u)) => ratio(u),
            (Some(a), Some(b)) => {
                let f = (t - a) as f64 / (b - a) as f64;
                ratio(a) + (ratio(b) - ratio(a)) * f
            }
        };
        self.curve.cost(t) * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn step_costs_follow_recorded_steps_and_scale_the_curve_elsewhere() {
        let curve = LatencyCurve::from_points(vec![(1, 1.0), (10, 2.0)]);
        let mut c = StepCosts::new(curve);
        assert_eq!(c.cost(10), 2.0, "the curve until something is recorded");
        // Steps of one token take twice the curve's value: every size is scaled by 2.
        c.record(1, 2.0);
        assert_eq!(c.cost(1), 2.0);
        assert!((c.cost(10) - 4.0).abs() < 1e-12);
        // Recorded sizes use their own median; others scale the curve by the ratio interpolated
        // between the recorded sizes around them (here 2 at t = 1 and 1.5 at t = 10).
        for s in [3.0, 100.0, 2.9] {
            c.record(10, s);
        }
        assert_eq!(
            c.cost(10),
            3.0,
            "median, not mean: one stall does not move it"
        );
        let eight = c.curve().cost(8) * (2.0 - 0.5 * 7.0 / 9.0);
        assert!(
            (c.cost(8) - eight).abs() < 1e-12,
            "{} vs {eight}",
            c.cost(8)
        );
        // A curve-only cost table ignores steps.
        let mut frozen = StepCosts::curve_only(c.curve().clone());
        frozen.record(10, 50.0);
        assert_eq!((frozen.cost(10), frozen.recorded(10)), (2.0, 0));
        // Nonsense is ignored.
        c.record(0, 1.0);
        c.record(5, f64::NAN);
        c.record(5, -1.0);
        assert_eq!(c.recorded(5), 0);
    }
}
