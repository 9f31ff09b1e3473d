//! How much of a TR-Jacobi tree a step verifies, per retrieval context.

use crate::decode::budget::{LatencyCurve, StepCosts};

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

    /// Records the wall time of a step whose forward ran `tokens` tokens (the root included).
    pub fn record_step(&mut self, tokens: usize, secs: f64) {
        self.costs.record(tokens, secs);
    }

    /// Plans with the curve alone, ignoring step times ([`StepCosts::curve_only`]).
    pub fn curve_only(mut self) -> Self {
        self.costs = StepCosts::curve_only(self.costs.curve().clone());
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
}
