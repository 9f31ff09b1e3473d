//! Forward latency against the number of new tokens, measured on the device before decoding.

use crate::model::{CausalLm, ForwardInput};
use burn::prelude::*;
use std::time::Instant;

/// Cached tokens the budgets' curves are measured over.
pub(crate) const BUDGET_CONTEXT: usize = 256;
/// Passes per size the budgets' curves take the median of.
pub(crate) const BUDGET_REPS: usize = 3;

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

    /// The curve a decoder's budget plans with: `sizes` measured over a [`BUDGET_CONTEXT`]-token
    /// context, the median of [`BUDGET_REPS`] passes each.
    pub(crate) fn for_budget<B: Backend, M: CausalLm<B>>(model: &M, sizes: &[usize]) -> Self {
        Self::measure_at(model, BUDGET_CONTEXT, sizes, BUDGET_REPS)
    }

    /// A quick curve for a budget built without a model (`TrJacobi::default()`): each size up to
    /// 33 tokens once after a warm-up, over a 64-token context; the budget's own step times
    /// correct its level as decoding goes.
    pub(crate) fn for_first_use<B: Backend, M: CausalLm<B>>(model: &M, sizes: &[usize]) -> Self {
        let sizes: Vec<usize> = sizes.iter().copied().filter(|&t| t <= 33).collect();
        Self::measure_at(model, 64, &sizes, 1)
    }

    /// [`LatencyCurve::for_budget`] through the cache file `path` (see
    /// [`LatencyCurve::measure_cached`]).
    pub(crate) fn for_budget_cached<B: Backend, M: CausalLm<B>>(
        model: &M,
        sizes: &[usize],
        path: &std::path::Path,
    ) -> crate::Result<Self> {
        Self::measure_cached(model, BUDGET_CONTEXT, sizes, BUDGET_REPS, path)
    }

    /// Measures `model` on its own device: for `t = 1..=max_t`, the median of `reps` forward
    /// passes of `t` tokens over a `context`-token cache, made non-decreasing in `t` (a size
    /// measured below a smaller one shares their mean with it: more tokens never cost less).
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
        let medians: Vec<f64> = secs.into_iter().map(|v| median(v).max(1e-9)).collect();
        Self::from_points(ts.into_iter().zip(non_decreasing(&medians)).collect())
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

/// The closest non-decreasing sequence to `v` in least squares (pool adjacent violators): a
/// forward of more tokens never costs less, so where a measurement says so (a quiet moment for
/// one size, a busy one for its neighbour) both get their mean.
fn non_decreasing(v: &[f64]) -> Vec<f64> {
    // Blocks of (sum, count), each block's mean above the previous block's.
    let mut blocks: Vec<(f64, usize)> = Vec::new();
    for &x in v {
        blocks.push((x, 1));
        while let [.., (s0, n0), (s1, n1)] = blocks[..] {
            if s0 / n0 as f64 <= s1 / n1 as f64 {
                break;
            }
            blocks.pop();
            *blocks.last_mut().expect("two blocks") = (s0 + s1, n0 + n1);
        }
    }
    blocks
        .into_iter()
        .flat_map(|(s, n)| std::iter::repeat_n(s / n as f64, n))
        .collect()
}

/// The median of `v` (the upper one of the middle two for an even length); 0 when empty.
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn measured_costs_are_made_non_decreasing_by_pooling_violators() {
        assert_eq!(non_decreasing(&[1.0, 2.0, 3.0]), vec![1.0, 2.0, 3.0]);
        assert_eq!(
            non_decreasing(&[1.0, 3.0, 2.0, 4.0]),
            vec![1.0, 2.5, 2.5, 4.0]
        );
        // A violation that spreads back over an earlier block: 3, 2, 1 pool to 2 each.
        assert_eq!(
            non_decreasing(&[0.5, 3.0, 2.0, 1.0]),
            vec![0.5, 2.0, 2.0, 2.0]
        );
        // Against brute force: the least-squares non-decreasing fit of random short sequences,
        // searched over a grid that holds the exact answer (means of runs of the values).
        let mut rng = crate::rng::Rng::new(3);
        for _ in 0..300 {
            let v: Vec<f64> = (0..1 + rng.below(4)).map(|_| rng.below(9) as f64).collect();
            let got = non_decreasing(&v);
            assert!(
                got.windows(2).all(|w| w[0] <= w[1] + 1e-12),
                "{v:?} -> {got:?}"
            );
            let sse = |f: &[f64]| -> f64 { v.iter().zip(f).map(|(a, b)| (a - b).powi(2)).sum() };
            let mut grid: Vec<f64> = Vec::new();
            for i in 0..v.len() {
                for j in i + 1..=v.len() {
                    grid.push(v[i..j].iter().sum::<f64>() / (j - i) as f64);
                }
            }
            let mut best = f64::INFINITY;
            let mut fit = vec![0.0; v.len()];
            search(&grid, &mut fit, 0, &sse, &mut best);
            assert!(
                (sse(&got) - best).abs() < 1e-9,
                "{v:?}: {got:?} vs best {best}"
            );
        }
    }

    /// The least squared error over non-decreasing sequences drawn from `grid`.
    fn search(
        grid: &[f64],
        fit: &mut [f64],
        i: usize,
        sse: &dyn Fn(&[f64]) -> f64,
        best: &mut f64,
    ) {
        if i == fit.len() {
            *best = best.min(sse(fit));
            return;
        }
        for &g in grid {
            if i == 0 || g >= fit[i - 1] {
                fit[i] = g;
                search(grid, fit, i + 1, sse, best);
            }
        }
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
}
