//! Sizing drafts to the device: a measured forward-latency curve and the acceptance the decoder
//! observes decide how many draft tokens a step verifies.
//!
//! On a GPU a 16-token forward costs about what a 1-token forward costs; on a small CPU it costs
//! several times more (see `bench_forward`). A step that verifies `k` draft tokens commits
//! `1 + E[accepted]` tokens for `cost(1 + k)`; [`DraftBudget::choose`] picks the `k` with the most
//! expected tokens per second (`k = 0` is a greedy step, always a candidate). Costs start from the
//! measured curve and follow the wall time of the steps actually run ([`StepCosts`]), so once the
//! few exploration steps are spent a budgeted decoder does not choose drafts slower than greedy
//! on the device it runs on; how close it comes to greedy is measured (`specbench`, the
//! `decoders` bench), not assumed.

use crate::model::{CausalLm, ForwardInput};
use burn::prelude::*;
use std::time::Instant;

/// Forward latency against the number of new tokens, over a cached context.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencyCurve {
    /// `(t, seconds)` for a forward pass of `t` new tokens, `t` strictly increasing from 1.
    points: Vec<(usize, f64)>,
}

impl LatencyCurve {
    /// A curve from measured seconds for `t = 1, 2, ...`.
    ///
    /// # Panics
    /// When `secs` is empty or holds a non-positive value.
    pub fn new(secs: Vec<f64>) -> Self {
        Self::from_points(
            secs.into_iter()
                .enumerate()
                .map(|(i, s)| (i + 1, s))
                .collect(),
        )
    }

    /// A curve from `(t, seconds)` points, `t` strictly increasing from 1; costs between points
    /// are interpolated linearly.
    ///
    /// # Panics
    /// When the points are empty, do not start at `t = 1`, are not increasing, or hold a
    /// non-positive time.
    pub fn from_points(points: Vec<(usize, f64)>) -> Self {
        assert!(
            Self::valid(&points),
            "positive latencies at increasing t from 1"
        );
        Self { points }
    }

    /// Measures `model` on its own device: for `t = 1..=max_t`, the median of `reps` forward
    /// passes of `t` tokens over a `context`-token cache.
    pub fn measure<B: Backend, M: CausalLm<B>>(
        model: &M,
        context: usize,
        max_t: usize,
        reps: usize,
    ) -> Self {
        let ts: Vec<usize> = (1..=max_t.max(1)).collect();
        Self::measure_at(model, context, &ts, reps)
    }

    /// [`LatencyCurve::measure`] at chosen sizes only (`1` is always measured); the rest is
    /// interpolated. Big trees need the curve up to ~100 tokens, and measuring every size
    /// would take a minute on a CPU.
    pub fn measure_at<B: Backend, M: CausalLm<B>>(
        model: &M,
        context: usize,
        ts: &[usize],
        reps: usize,
    ) -> Self {
        let mut ts: Vec<usize> = ts.iter().copied().filter(|&t| t > 0).collect();
        ts.push(1);
        ts.sort_unstable();
        ts.dedup();
        let max_t = *ts.last().expect("t = 1");
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
        let mut run = |t: usize| {
            let s = Instant::now();
            let input = ForwardInput::causal(&tokens[context..context + t], context, &device);
            let _ = model.forward(input, &mut cache).into_data();
            cache.truncate(context);
            s.elapsed().as_secs_f64()
        };
        // One untimed pass per size first (allocator and cache warm-up would otherwise land on
        // the first sizes measured), then the repetitions round-robin over the sizes, so that a
        // slow spell of the machine (another process, frequency scaling) hits every size alike
        // rather than making some sizes look cheap next to others.
        for &t in &ts {
            run(t);
        }
        let mut secs: Vec<Vec<f64>> = vec![Vec::new(); ts.len()];
        for _ in 0..reps.max(1) {
            for (i, &t) in ts.iter().enumerate() {
                secs[i].push(run(t));
            }
        }
        let points = ts
            .into_iter()
            .zip(secs)
            .map(|(t, v)| (t, median(v).max(1e-9)))
            .collect();
        Self::from_points(points)
    }

    /// [`LatencyCurve::measure_at`] through a cache file: when `path` holds a curve measured
    /// over the same `context` at the same sizes it is returned without measuring; otherwise
    /// (missing, unreadable, other sizes) the curve is measured and written there atomically.
    /// The file does not know which model, dtype, backend or machine it describes: give each
    /// its own path.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the file cannot be written.
    pub fn measure_cached<B: Backend, M: CausalLm<B>>(
        model: &M,
        context: usize,
        ts: &[usize],
        reps: usize,
        path: &std::path::Path,
    ) -> crate::Result<Self> {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Cached {
            context: usize,
            sizes: Vec<usize>,
            points: Vec<(usize, f64)>,
        }
        let sizes = ts.to_vec();
        if let Ok(text) = std::fs::read_to_string(path) {
            match serde_json::from_str::<Cached>(&text) {
                Ok(c) if c.context == context && c.sizes == sizes && Self::valid(&c.points) => {
                    return Ok(Self { points: c.points });
                }
                Ok(_) => log::info!(
                    "{}: measured for other sizes; measuring again",
                    path.display()
                ),
                Err(e) => log::warn!(
                    "{}: unreadable latency cache ({e}); measuring again",
                    path.display()
                ),
            }
        }
        let curve = Self::measure_at(model, context, ts, reps);
        let c = Cached {
            context,
            sizes,
            points: curve.points.clone(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
        }
        let json = serde_json::to_vec_pretty(&c).expect("plain data serialises");
        crate::util::write_atomic(path, &json)?;
        Ok(curve)
    }

    fn valid(points: &[(usize, f64)]) -> bool {
        points.first().map(|p| p.0) == Some(1)
            && points.windows(2).all(|w| w[0].0 < w[1].0)
            && points.iter().all(|p| p.1 > 0.0 && p.1.is_finite())
    }

    /// The measured `(t, seconds)` points.
    pub fn points(&self) -> &[(usize, f64)] {
        &self.points
    }

    /// Seconds for `t` new tokens (linear between measured sizes and past the last one).
    pub fn cost(&self, t: usize) -> f64 {
        if t == 0 {
            return 0.0;
        }
        let p = &self.points;
        let i = p.partition_point(|q| q.0 < t);
        if i < p.len() && p[i].0 == t {
            return p[i].1;
        }
        let (a, b) = match (i, p.len()) {
            (_, 1) => return p[0].1 * t as f64,
            (i, n) if i >= n => (p[n - 2], p[n - 1]),
            (i, _) => (p[i - 1], p[i]),
        };
        let slope = ((b.1 - a.1) / (b.0 - a.0) as f64).max(0.0);
        a.1 + slope * (t as f64 - a.0 as f64)
    }
}

/// The median of `v` (the upper one of the middle two for an even length); 0 when empty.
fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

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
    pub fn recorded(&self, tokens: usize) -> usize {
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
        self.costs = StepCosts::curve_only(self.costs.curve.clone());
        self
    }

    /// The step costs it plans with.
    pub fn costs(&self) -> &StepCosts {
        &self.costs
    }

    /// Expected committed tokens per second of a greedy step.
    pub fn greedy_rate(&self) -> f64 {
        1.0 / self.costs.cost(1)
    }
}

/// How much of a TR-Jacobi tree a step verifies: the first `template` template paths and
/// retrieval chains cut to `retrieval` tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeShape {
    /// Template paths (a prefix of the template).
    pub template: usize,
    /// Tokens per retrieval chain.
    pub retrieval: usize,
}

/// What one verified step would have committed with smaller shapes: `template[n]` is the longest
/// correct chain among the first `n` template paths, `retrieval[r]` among retrieval chains cut to
/// `r` tokens.
#[derive(Debug, Clone)]
struct StepRecord {
    template: Vec<u8>,
    retrieval: Vec<u8>,
}

/// Chooses TR-Jacobi tree shapes from a [`LatencyCurve`] and the acceptance observed so far,
/// separately for each retrieval context (the length of the n-gram that matched, 0 for none):
/// a 3-gram match predicts long accepted runs, a 1-gram match rarely does.
///
/// A shape verifying `1 + n + r` tokens is expected to commit
/// `1 + E[max(template_acc(n), retrieval_acc(r))]` tokens, estimated from recorded steps whose
/// tree contained that shape; the shape with the most tokens per second wins, and the root alone
/// (a greedy step) is always a candidate, so on a device where big forwards are expensive the
/// decoder falls back to greedy rather than run slower. Every `probe_every` steps of a context it
/// verifies the next larger shape to keep learning.
///
/// Costs are [`StepCosts`]: the curve corrected by the measured wall time of every step the
/// decoder runs (see [`TreeBudget::record_step`]), so a curve measured on a quieter machine, or
/// overheads the curve does not see, cannot keep it choosing trees that are slower than greedy.
/// While trees pay, one step in every `ROOT_EVERY + 1` (33) is a greedy step, keeping the
/// yardstick itself measured.
#[derive(Debug, Clone)]
pub struct TreeBudget {
    costs: StepCosts,
    contexts: Vec<Context>,
    /// Steps since the last root-only (greedy) step, over all contexts.
    since_root: u64,
    /// Steps of full-size exploration at the start of each context.
    explore: u64,
    probe_every: u64,
    last_context: usize,
}

#[derive(Debug, Clone, Default)]
struct Context {
    records: std::collections::VecDeque<StepRecord>,
    steps: u64,
}

/// Template sizes considered (then capped by the template's own size).
const TEMPLATE_GRID: [usize; 12] = [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48];
/// Retrieval lengths considered (then capped by the proposal's length).
const RETRIEVAL_GRID: [usize; 7] = [0, 1, 2, 3, 4, 6, 8];
/// Most tree steps in a row before a greedy step re-measures the greedy cost.
const ROOT_EVERY: u64 = 32;
/// Records kept per context.
const WINDOW: usize = 256;
/// Cap on exploration steps' template size (a 69-token forward is ~18x a 1-token one on a CPU).
const EXPLORE_TEMPLATE: usize = 16;

impl TreeBudget {
    /// A budget over `curve`, exploring `explore` steps per retrieval context first.
    pub fn new(curve: LatencyCurve, explore: u64) -> Self {
        Self {
            costs: StepCosts::new(curve),
            contexts: Vec::new(),
            since_root: 0,
            explore,
            probe_every: 16,
            last_context: 0,
        }
    }

    /// The latency curve measured before decoding.
    pub fn curve(&self) -> &LatencyCurve {
        self.costs.curve()
    }

    /// The step costs it plans with (the curve corrected by recorded steps).
    pub fn costs(&self) -> &StepCosts {
        &self.costs
    }

    /// Records the wall time of a step whose forward ran `tokens` tokens (the root included).
    pub fn record_step(&mut self, tokens: usize, secs: f64) {
        self.costs.record(tokens, secs);
    }

    /// Plans with the curve alone, ignoring step times ([`StepCosts::curve_only`]).
    pub fn curve_only(mut self) -> Self {
        self.costs = StepCosts::curve_only(self.costs.curve.clone());
        self
    }

    fn candidates(full: TreeShape) -> (Vec<usize>, Vec<usize>) {
        let mut t: Vec<usize> = TEMPLATE_GRID
            .iter()
            .copied()
            .filter(|&n| n < full.template)
            .collect();
        t.push(full.template);
        let mut r: Vec<usize> = RETRIEVAL_GRID
            .iter()
            .copied()
            .filter(|&n| n < full.retrieval)
            .collect();
        r.push(full.retrieval);
        (t, r)
    }

    /// Expected committed tokens of `shape` and how many records cover it.
    fn estimate(&self, ctx: usize, shape: TreeShape) -> (f64, usize) {
        let Some(c) = self.contexts.get(ctx) else {
            return (1.0, 0);
        };
        let (mut sum, mut n) = (0.0, 0usize);
        for rec in &c.records {
            if let (Some(&t), Some(&r)) = (
                rec.template.get(shape.template),
                rec.retrieval.get(shape.retrieval),
            ) {
                sum += f64::from(t.max(r));
                n += 1;
            }
        }
        // Shrunk toward "nothing accepted" by one pseudo-record, so a shape seen once or twice
        // must have done well to be chosen over a greedy step.
        (1.0 + sum / (n as f64 + 1.0), n)
    }

    /// The shape to verify when the largest available is `full` and the retrieval match was an
    /// `ngram`-gram (0: none).
    pub fn choose(&mut self, full: TreeShape, ngram: usize) -> TreeShape {
        let shape = self.pick(full, ngram);
        if shape == TreeShape::default() {
            self.since_root = 0;
        } else {
            self.since_root += 1;
        }
        shape
    }

    fn pick(&mut self, full: TreeShape, ngram: usize) -> TreeShape {
        if self.contexts.len() <= ngram {
            self.contexts.resize_with(ngram + 1, Context::default);
        }
        self.last_context = ngram;
        let steps = self.contexts[ngram].steps;
        self.contexts[ngram].steps += 1;
        if full == TreeShape::default() {
            return full;
        }
        if steps < self.explore {
            // Explore with a tree that costs at most twice a greedy step: on a GPU (flat curve)
            // that is the exploration cap, on a CPU a few tokens, so that learning what pays
            // cannot make a short generation slower than greedy; probes grow it later.
            let limit = 2.0 * self.costs.cost(1);
            let mut shape = TreeShape {
                template: full.template.min(EXPLORE_TEMPLATE),
                retrieval: full.retrieval,
            };
            while shape.retrieval > 0 && self.costs.cost(1 + shape.retrieval) > limit {
                shape.retrieval -= 1;
            }
            while shape.template > 0
                && self.costs.cost(1 + shape.template + shape.retrieval) > limit
            {
                shape.template -= 1;
            }
            return shape;
        }
        let (ts, rs) = Self::candidates(full);
        let mut best = (1.0 / self.costs.cost(1), TreeShape::default());
        for &t in &ts {
            for &r in &rs {
                let shape = TreeShape {
                    template: t,
                    retrieval: r,
                };
                let (tokens, n) = self.estimate(ngram, shape);
                if n == 0 {
                    continue;
                }
                let rate = tokens / self.costs.cost(1 + t + r);
                if rate > best.0 {
                    best = (rate, shape);
                }
            }
        }
        if steps % self.probe_every == self.probe_every - 1 {
            // Probe one grid step larger in both directions.
            let next =
                |grid: &[usize], cur: usize| grid.iter().copied().find(|&x| x > cur).unwrap_or(cur);
            return TreeShape {
                template: next(&ts, best.1.template),
                retrieval: next(&rs, best.1.retrieval),
            };
        }
        if self.since_root >= ROOT_EVERY {
            // A greedy step now and then keeps its cost measured, the yardstick every tree is
            // compared with (its curve value alone may be off).
            return TreeShape::default();
        }
        best.1
    }

    /// Records a verified step: the shape used, the draft, the argmax at every node, and the tree
    /// node of each template path (`None` when not placed).
    pub(crate) fn record(
        &mut self,
        shape: &TreeShape,
        draft: &crate::decode::Draft,
        preds: &[u32],
        placed: &[Option<usize>],
    ) {
        let tree = &draft.tree;
        let mut correct = vec![true; tree.len()];
        for i in 1..tree.len() {
            let p = tree.parent(i).expect("non-root");
            correct[i] = correct[p] && draft.tokens[i] == preds[p];
        }
        let depth_if = |i: usize| if correct[i] { tree.depth(i) } else { 0 };
        let mut template = vec![0u8; shape.template + 1];
        for n in 1..=shape.template {
            let d = placed.get(n - 1).copied().flatten().map_or(0, depth_if);
            template[n] = template[n - 1].max(d.min(255) as u8);
        }
        let retrieved = (1..tree.len())
            .filter(|&i| draft.preferred[i])
            .map(depth_if)
            .max()
            .unwrap_or(0);
        let retrieval = (0..=shape.retrieval)
            .map(|r| r.min(retrieved).min(255) as u8)
            .collect();
        let c = &mut self.contexts[self.last_context];
        if c.records.len() == WINDOW {
            c.records.pop_front();
        }
        c.records.push_back(StepRecord {
            template,
            retrieval,
        });
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
    fn curve_interpolates_between_and_past_measured_sizes() {
        let c = LatencyCurve::from_points(vec![(1, 1.0), (3, 2.0), (5, 4.0)]);
        assert_eq!(c.cost(0), 0.0);
        assert_eq!(c.cost(1), 1.0);
        assert!((c.cost(2) - 1.5).abs() < 1e-12);
        assert!((c.cost(4) - 3.0).abs() < 1e-12);
        assert!((c.cost(7) - 6.0).abs() < 1e-12);
        assert_eq!(LatencyCurve::new(vec![2.0]).cost(3), 6.0);
    }

    #[test]
    fn tree_budget_falls_back_to_greedy_when_trees_do_not_pay() {
        // Every tree size costs 3x a greedy step and nothing is ever accepted.
        let curve = LatencyCurve::from_points(vec![(1, 1.0), (2, 3.0), (100, 3.0)]);
        let mut b = TreeBudget::new(curve, 2);
        let full = TreeShape {
            template: 63,
            retrieval: 5,
        };
        let draft = crate::decode::Draft::chain(1, &[2, 3]);
        for _ in 0..8 {
            let s = b.choose(full, 2);
            b.record(&s, &draft, &[9, 9, 9], &[Some(1), Some(2)]);
        }
        assert_eq!(b.choose(full, 2), TreeShape::default());
    }

    #[test]
    fn exploration_trees_cost_at_most_two_greedy_steps() {
        // CPU-like: cost grows ~linearly; GPU-like: flat.
        let cpu = LatencyCurve::from_points(vec![(1, 1.0), (3, 1.9), (4, 2.4), (100, 60.0)]);
        let gpu = LatencyCurve::from_points(vec![(1, 1.0), (100, 1.1)]);
        let full = TreeShape {
            template: 63,
            retrieval: 8,
        };
        let s = TreeBudget::new(cpu.clone(), 2).choose(full, 1);
        assert!(cpu.cost(1 + s.template + s.retrieval) <= 2.0, "{s:?}");
        assert_eq!(s.template + s.retrieval, 2, "{s:?}");
        let s = TreeBudget::new(gpu, 2).choose(full, 1);
        assert_eq!(s.template, EXPLORE_TEMPLATE);
        assert_eq!(s.retrieval, 8);
    }

    /// A tree budget over `curve`, a full shape of `template` paths (no retrieval), and the
    /// 2-token chain draft `[1] -> 2 -> 3` the tests verify.
    fn setup(
        curve: LatencyCurve,
        explore: u64,
        template: usize,
    ) -> (TreeBudget, TreeShape, crate::decode::Draft) {
        let full = TreeShape {
            template,
            retrieval: 0,
        };
        let draft = crate::decode::Draft::chain(1, &[2, 3]);
        (TreeBudget::new(curve, explore), full, draft)
    }

    #[test]
    fn tree_budget_keeps_trees_that_pay() {
        // A flat (GPU-like) curve and a template whose first two paths are always right.
        let curve = LatencyCurve::from_points(vec![(1, 1.0), (100, 1.1)]);
        let (mut b, full, draft) = setup(curve, 1, 2);
        for _ in 0..8 {
            let s = b.choose(full, 0);
            b.record(&s, &draft, &[2, 3, 4], &[Some(1), Some(2)]);
        }
        assert_eq!(b.choose(full, 0), full);
    }

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

    #[test]
    fn trees_the_curve_calls_cheap_but_steps_show_slow_lose_to_greedy() {
        // The curve says a 9-token forward costs what a 1-token one does (GPU-like), and every
        // tree commits 2 tokens; but the steps actually run take 3x a greedy step.
        let curve = LatencyCurve::from_points(vec![(1, 1.0), (100, 1.0)]);
        let (mut b, full, draft) = setup(curve, 1, 8);
        let s = b.choose(full, 0);
        assert_ne!(s, TreeShape::default(), "explores a tree first");
        b.record(&s, &draft, &[2, 9, 9], &[Some(1), Some(2)]);
        b.record_step(3, 3.0);
        b.record_step(1, 1.0);
        for _ in 0..4 {
            assert_eq!(b.choose(full, 0), TreeShape::default());
        }
        // The same with steps as cheap as the curve says: the tree pays.
        let mut b = TreeBudget::new(LatencyCurve::from_points(vec![(1, 1.0), (100, 1.0)]), 1);
        let s = b.choose(full, 0);
        b.record(&s, &draft, &[2, 9, 9], &[Some(1), Some(2)]);
        b.record_step(3, 1.0);
        b.record_step(1, 1.0);
        assert_ne!(b.choose(full, 0), TreeShape::default());
    }

    #[test]
    fn trees_that_pay_still_leave_room_for_a_greedy_step_now_and_then() {
        let curve = LatencyCurve::from_points(vec![(1, 1.0), (100, 1.1)]);
        let (mut b, full, draft) = setup(curve, 1, 2);
        let mut shapes = Vec::new();
        for _ in 0..100 {
            let s = b.choose(full, 0);
            b.record(&s, &draft, &[2, 3, 4], &[Some(1), Some(2)]);
            shapes.push(s);
        }
        let greedy = shapes
            .iter()
            .filter(|s| **s == TreeShape::default())
            .count();
        // The first step (nothing recorded yet) and one in every ROOT_EVERY + 1 after it.
        assert!((2..=5).contains(&greedy), "{greedy} greedy steps of 100");
        let gaps: Vec<usize> = shapes
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == TreeShape::default())
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[1] - w[0])
            .collect();
        assert!(gaps.iter().all(|&g| g as u64 == ROOT_EVERY + 1), "{gaps:?}");
    }

    #[test]
    fn record_counts_only_reached_positions() {
        let mut b = DraftBudget::new(LatencyCurve::new(vec![1.0]), 4, 0);
        b.record(4, 1); // position 0 accepted, position 1 rejected, 2 and 3 never reached
        assert_eq!(b.stats, vec![(1, 1), (0, 1), (0, 0), (0, 0)]);
    }
}
