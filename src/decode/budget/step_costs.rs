//! What a decoding step of each forward size costs: the latency curve, corrected by the wall
//! time of the steps actually run.

use crate::decode::budget::LatencyCurve;
use crate::decode::budget::latency_curve::median;

/// Step costs a budget plans with: the [`LatencyCurve`] measured before decoding, scaled by how
/// fast the steps actually run now.
///
/// The curve gives the shape, what a forward of `t` tokens costs against one of another size,
/// measured on the device. The level moves as decoding goes: a step also builds the draft, its
/// tree mask and the top-`K` rows, every token attends to every cached one (at 2,048 cached
/// tokens a forward of SmolLM2 on a 2-core CPU costs twice what it costs at 256, whatever its
/// size), and the machine may be busier or cooler than when the curve was measured. So a step
/// of `t` tokens is expected to cost `curve(t) * scale`, where `scale` is the median of the last
/// [`SCALE_WINDOW`] steps' times over the curve's, whatever their sizes: one stall does not move
/// it, and it follows a growing context within a few steps.
///
/// One scale for every size, rather than each size's own recent times: a size the budget stopped
/// choosing kept the cost it had when it last ran (at a shorter context, or in a slow spell), so
/// it looked dearer than its neighbours and was never chosen again; on Zen 4 the budgets ended
/// up drafting only odd or only even numbers of tokens.
#[derive(Debug, Clone)]
pub struct StepCosts {
    curve: LatencyCurve,
    /// The last steps' times over the curve's.
    recent: std::collections::VecDeque<f64>,
    /// Their median (1 until a step is recorded), kept up to date by [`StepCosts::record`]
    /// because [`StepCosts::cost`] runs for every candidate size of every step.
    scale: f64,
    /// Whether recorded steps count (off: the curve alone, for reproducible decisions).
    learn: bool,
}

/// Steps the scale is the median of.
const SCALE_WINDOW: usize = 15;

impl StepCosts {
    /// Costs from `curve` alone, until steps are recorded.
    pub fn new(curve: LatencyCurve) -> Self {
        Self {
            curve,
            recent: std::collections::VecDeque::with_capacity(SCALE_WINDOW),
            scale: 1.0,
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
        if self.recent.len() == SCALE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(secs / self.curve.cost(tokens));
        self.scale = median(self.recent.iter().copied().collect());
    }

    /// Expected seconds of a step whose forward runs `t` tokens.
    pub fn cost(&self, t: usize) -> f64 {
        self.curve.cost(t) * self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_costs_scale_the_curve_by_the_recent_steps() {
        let curve = LatencyCurve::from_points(vec![(1, 1.0), (10, 2.0)]);
        let mut c = StepCosts::new(curve);
        assert_eq!(c.cost(10), 2.0, "the curve until something is recorded");
        // Steps of one token take twice the curve's value: every size is scaled by 2.
        c.record(1, 2.0);
        assert_eq!(c.cost(1), 2.0);
        assert!((c.cost(10) - 4.0).abs() < 1e-12);
        // Steps of ten tokens at three times the curve: the median of 2, 3, 3.
        c.record(10, 6.0);
        c.record(10, 6.0);
        assert!((c.cost(1) - 3.0).abs() < 1e-12);
        // Median, not mean: one stall does not move it.
        c.record(4, 500.0);
        assert!((c.cost(1) - 3.0).abs() < 1e-12, "{}", c.cost(1));
        assert_eq!(c.cost(0), 0.0);
        // A curve-only cost table ignores steps.
        let mut frozen = StepCosts::curve_only(c.curve().clone());
        frozen.record(10, 50.0);
        assert_eq!(frozen.cost(10), 2.0);
        // Nonsense is ignored.
        let before = c.cost(5);
        c.record(0, 1.0);
        c.record(5, f64::NAN);
        c.record(5, -1.0);
        assert_eq!(c.cost(5), before);
    }

    #[test]
    fn a_size_last_run_at_a_shorter_context_is_priced_at_the_current_one() {
        // A step's true cost: the curve's, times a factor for the context that triples over
        // the run (attention over a growing cache), with a stall of 30 times now and then.
        let curve = LatencyCurve::from_points(vec![(1, 1.0), (16, 4.0)]);
        let truth = |t: usize, step: usize| curve.cost(t) * (1.0 + 2.0 * step as f64 / 600.0);
        let mut c = StepCosts::new(curve.clone());
        // Sizes 1 and 8 early on, then 500 steps of sizes 2 to 4 only.
        for step in 0..600 {
            let sizes: &[usize] = if step < 100 { &[1, 8] } else { &[2, 3, 4] };
            let t = sizes[step % sizes.len()];
            let stall = if step % 97 == 0 { 30.0 } else { 1.0 };
            c.record(t, truth(t, step) * stall);
        }
        for t in [1, 8] {
            let now = c.cost(t) / truth(t, 600);
            assert!((now - 1.0).abs() < 0.05, "size {t}: {now} of the true cost");
        }
    }
}
