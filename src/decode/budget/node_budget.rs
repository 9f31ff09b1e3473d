//! Per-step draft sizes from the drafts' own confidence: every candidate node carries a learned
//! probability of being accepted given its parent was, and a step verifies the most likely nodes
//! up to the count with the most expected tokens per second.
//!
//! In a token tree under greedy verification at most one child of a node can be right, so the
//! tokens a step commits are `1 + sum over verified nodes of P(the whole path to it is right)`;
//! a node's path probability is the product of its ancestors' conditional probabilities. Those
//! come from calibration cells keyed by what the drafter knows about the node (its rank among
//! the model's own earlier predictions, or how long the suffix match behind it is, how often
//! the continuation occurred and what share of the matches took it), each cell learning from
//! every node of its kind verified so far, starting from a prior that trusts the raw frequency.

use crate::decode::Draft;
use crate::decode::budget::{LatencyCurve, StepCosts};
use std::collections::BinaryHeap;

/// What a candidate node's acceptance is learned from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Evidence {
    /// The `rank`-th prediction (0 = best) at `depth` from the model's own earlier outputs:
    /// `after_token`, its prediction after the parent's token (the token graph), or else its
    /// prediction for that depth (the Jacobi table).
    Predicted {
        rank: usize,
        depth: usize,
        after_token: bool,
    },
    /// A continuation of a suffix match of `matched` tokens, taken by `count` of the `of`
    /// matches that reached its parent.
    Retrieved { matched: usize, count: u32, of: u32 },
}

const PREDICTED_CELLS: usize = 2 * 8 * 4;
const MATCH_BINS: [usize; 6] = [2, 3, 5, 8, 16, usize::MAX];
const RETRIEVED_CELLS: usize = 6 * 3 * 4;

impl Evidence {
    fn cell(self) -> usize {
        match self {
            Self::Predicted {
                rank,
                depth,
                after_token,
            } => usize::from(after_token) * 32 + rank.min(7) * 4 + depth.clamp(1, 4) - 1,
            Self::Retrieved { matched, count, of } => {
                let m = MATCH_BINS.iter().position(|&b| matched < b).unwrap_or(5);
                let seen = match of {
                    0 | 1 => 0,
                    2..=3 => 1,
                    _ => 2,
                };
                let share = f64::from(count) / f64::from(of.max(1));
                let s = match share {
                    x if x >= 1.0 => 3,
                    x if x >= 0.66 => 2,
                    x if x >= 0.34 => 1,
                    _ => 0,
                };
                PREDICTED_CELLS + (m * 3 + seen) * 4 + s
            }
        }
    }

    /// What the cell believes before it has seen anything.
    fn prior(self) -> f64 {
        match self {
            Self::Predicted {
                rank, after_token, ..
            } => (if after_token { 0.4 } else { 0.1 }) / (rank as f64 + 1.0),
            Self::Retrieved { count, of, .. } => 0.85 * f64::from(count) / f64::from(of.max(1)),
        }
    }
}

/// Pseudo-observations behind each prior.
const PRIOR_WEIGHT: f64 = 2.0;
/// Observations a cell keeps (older ones fade by halving), so it follows the text it is in.
const CELL_WINDOW: f64 = 400.0;
/// Every this many steps, verify a few nodes more than planned, to keep learning.
const PROBE_EVERY: u64 = 16;

/// Candidate nodes of one step, merged as a trie (node 0 is the root).
#[derive(Debug, Clone)]
pub(crate) struct CandidateTree {
    pub parent: Vec<usize>,
    pub token: Vec<u32>,
    pub evidence: Vec<Option<Evidence>>,
    /// Conditional probability of each node given its parent (1 for the root).
    q: Vec<f64>,
    pub retrieved: Vec<bool>,
    children: Vec<Vec<usize>>,
}

impl CandidateTree {
    pub fn new(root: u32) -> Self {
        Self {
            parent: vec![0],
            token: vec![root],
            evidence: vec![None],
            q: vec![1.0],
            retrieved: vec![false],
            children: vec![Vec::new()],
        }
    }

    pub fn len(&self) -> usize {
        self.token.len()
    }

    /// Adds `token` under `parent` (or merges with the child carrying it, keeping the more
    /// confident evidence); returns the node.
    pub fn add(&mut self, budget: &NodeBudget, parent: usize, token: u32, ev: Evidence) -> usize {
        let q = budget.probability(ev);
        let retrieved = matches!(ev, Evidence::Retrieved { .. });
        if let Some(&c) = self.children[parent]
            .iter()
            .find(|&&c| self.token[c] == token)
        {
            if q > self.q[c] {
                self.q[c] = q;
                self.evidence[c] = Some(ev);
            }
            self.retrieved[c] |= retrieved;
            return c;
        }
        let c = self.token.len();
        self.parent.push(parent);
        self.token.push(token);
        self.evidence.push(Some(ev));
        self.q.push(q);
        self.retrieved.push(retrieved);
        self.children.push(Vec::new());
        self.children[parent].push(c);
        c
    }

    /// Each node's probability given its parent, with its siblings accounted for: at most one
    /// child of a node can be the model's next token, so the children's probabilities are
    /// those of disjoint events and sum to at most 1. Visited most confident first, a child
    /// keeps its calibrated probability up to what its more confident siblings leave
    /// (`min(q, 1 - their sum)`): beside a retrieved chain that is almost sure, a prediction
    /// that disagrees with it is almost surely wrong, whatever its cell's average says.
    fn exclusive(&self) -> Vec<f64> {
        let mut q = self.q.clone();
        let mut kids = Vec::new();
        for children in &self.children {
            kids.clone_from(children);
            kids.sort_by(|&a, &b| self.q[b].total_cmp(&self.q[a]).then(a.cmp(&b)));
            let mut left = 1.0f64;
            for &c in &kids {
                q[c] = self.q[c].min(left).max(0.0);
                left -= q[c];
            }
        }
        q
    }

    /// Nodes after the root, most likely path first (a parent always before its children),
    /// with each one's path probability ([`CandidateTree::exclusive`] along the path); at most
    /// `max` of them.
    fn best_first(&self, max: usize) -> Vec<(usize, f64)> {
        #[derive(PartialEq)]
        struct Item(f64, usize);
        impl Eq for Item {}
        impl PartialOrd for Item {
            fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(o))
            }
        }
        impl Ord for Item {
            fn cmp(&self, o: &Self) -> std::cmp::Ordering {
                // Ties: the earlier node (template rank order, then insertion).
                self.0.total_cmp(&o.0).then(o.1.cmp(&self.1))
            }
        }
        let q = self.exclusive();
        let mut heap: BinaryHeap<Item> = self.children[0].iter().map(|&c| Item(q[c], c)).collect();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(Item(p, n)) = heap.pop() else { break };
            out.push((n, p));
            heap.extend(self.children[n].iter().map(|&c| Item(p * q[c], c)));
        }
        out
    }
}

/// The nodes a step verifies: candidate-tree nodes in draft order (draft node `i + 1` is
/// `nodes[i]`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    pub nodes: Vec<usize>,
}

impl Selection {
    /// The draft of the selected nodes.
    pub fn draft(&self, tree: &CandidateTree) -> Draft {
        let mut d = Draft::root(tree.token[0]);
        let mut at = vec![0usize; tree.len()];
        for &n in &self.nodes {
            at[n] = d.push(at[tree.parent[n]], tree.token[n]);
            d.preferred[at[n]] = tree.retrieved[n];
        }
        d
    }
}

/// Chooses each step's nodes from their calibrated probabilities and the step costs.
#[derive(Debug, Clone)]
pub(crate) struct NodeBudget {
    costs: StepCosts,
    /// Per cell: (accepted, verified) nodes.
    cells: Vec<(f64, f64)>,
    steps: u64,
}

impl NodeBudget {
    pub fn new(curve: LatencyCurve) -> Self {
        Self {
            costs: StepCosts::new(curve),
            cells: vec![(0.0, 0.0); PREDICTED_CELLS + RETRIEVED_CELLS],
            steps: 0,
        }
    }

    pub fn curve(&self) -> &LatencyCurve {
        self.costs.curve()
    }

    /// Plans with the curve alone, ignoring step times ([`StepCosts::curve_only`]).
    pub fn curve_only(mut self) -> Self {
        self.costs = StepCosts::curve_only(self.costs.curve().clone());
        self
    }

    /// The cells' learned acceptance, for logs: (cell, accepted, verified).
    pub fn cells(&self) -> Vec<(usize, f64, f64)> {
        (0..self.cells.len())
            .filter(|&i| self.cells[i].1 > 0.0)
            .map(|i| (i, self.cells[i].0, self.cells[i].1))
            .collect()
    }

    pub fn record_step(&mut self, tokens: usize, secs: f64) {
        self.costs.record(tokens, secs);
    }

    /// The calibrated probability that a node with this evidence is right given its parent is.
    pub fn probability(&self, ev: Evidence) -> f64 {
        let (hit, n) = self.cells[ev.cell()];
        ((hit + PRIOR_WEIGHT * ev.prior()) / (n + PRIOR_WEIGHT)).clamp(0.0, 1.0)
    }

    /// The nodes to verify this step: at most `room`, the most likely first, as many as give the
    /// most expected tokens per second (none: a greedy step).
    pub fn select(&mut self, tree: &CandidateTree, room: usize) -> Selection {
        self.steps += 1;
        let order = tree.best_first(room);
        let mut best = (1.0 / self.costs.cost(1), 0usize);
        let mut expected = 1.0;
        for (n, &(_, p)) in order.iter().enumerate() {
            expected += p;
            let rate = expected / self.costs.cost(n + 2);
            if rate > best.0 {
                best = (rate, n + 1);
            }
        }
        let mut take = best.1;
        if self.steps.is_multiple_of(PROBE_EVERY) {
            take = (take + 2).min(order.len());
        }
        Selection {
            nodes: order[..take].iter().map(|&(n, _)| n).collect(),
        }
    }

    /// Learns from a verified step: `preds` is the model's argmax at each draft node.
    pub fn record(&mut self, tree: &CandidateTree, sel: &Selection, draft: &Draft, preds: &[u32]) {
        let mut right = vec![true; draft.len()];
        for i in 1..draft.len() {
            let p = draft.tree.parent(i).expect("non-root");
            right[i] = right[p] && draft.tokens[i] == preds[p];
            if !right[p] {
                continue;
            }
            let Some(ev) = tree.evidence[sel.nodes[i - 1]] else {
                continue;
            };
            let cell = &mut self.cells[ev.cell()];
            if cell.1 >= CELL_WINDOW {
                cell.0 /= 2.0;
                cell.1 /= 2.0;
            }
            cell.0 += f64::from(u8::from(right[i]));
            cell.1 += 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> LatencyCurve {
        // Each extra token costs a fifth of a step.
        LatencyCurve::from_points(vec![(1, 1.0), (101, 21.0)])
    }

    #[test]
    fn drafts_only_nodes_that_pay_for_themselves() {
        let mut b = NodeBudget::new(cpu());
        let mut t = CandidateTree::new(1);
        let sure = Evidence::Retrieved {
            matched: 20,
            count: 5,
            of: 5,
        };
        let mut at = 0;
        for tok in 2..8 {
            at = t.add(&b, at, tok, sure);
        }
        // A weak prediction beside the chain.
        t.add(
            &b,
            0,
            50,
            Evidence::Predicted {
                rank: 5,
                depth: 1,
                after_token: true,
            },
        );
        let s = b.select(&t, 100);
        // Prior 0.85 per node, path probabilities 0.85^d; tokens per cost unit for n nodes,
        // (1 + sum of 0.85^d for d <= n) / (1 + 0.2 n): 1.54, 1.84, 1.99, 2.06, 2.07, 2.05 for
        // n = 1..6: five nodes. The rank-5 guess (0.4 / 6 = 0.067) never pays for 0.2.
        assert_eq!(s.nodes, vec![1, 2, 3, 4, 5]);
        // Nothing known to be likely: a greedy step.
        let mut weak = CandidateTree::new(1);
        weak.add(
            &b,
            0,
            9,
            Evidence::Predicted {
                rank: 3,
                depth: 1,
                after_token: true,
            },
        );
        assert!(b.select(&weak, 100).nodes.is_empty());
    }

    #[test]
    fn siblings_share_one_unit_of_probability() {
        // Each extra token costs a tenth of a step.
        let mut b = NodeBudget::new(LatencyCurve::from_points(vec![(1, 1.0), (101, 11.0)]));
        let sure = Evidence::Retrieved {
            matched: 20,
            count: 5,
            of: 5,
        };
        let guess = Evidence::Predicted {
            rank: 0,
            depth: 1,
            after_token: true,
        };
        // Alone, the model's best guess (prior 0.4) pays for its tenth of a step.
        let mut alone = CandidateTree::new(1);
        alone.add(&b, 0, 50, guess);
        assert_eq!(b.select(&alone, 100).nodes, vec![1]);
        // Beside a chain whose first token is 0.85 likely, a different first token is right at
        // most 0.15 of the time: it no longer pays (at its raw 0.4 it would come sixth).
        let mut t = CandidateTree::new(1);
        let mut at = 0;
        for tok in 2..8 {
            at = t.add(&b, at, tok, sure);
        }
        let other = t.add(&b, 0, 50, guess);
        let order = t.best_first(100);
        let p = order.iter().find(|x| x.0 == other).expect("listed").1;
        assert!((p - 0.15).abs() < 1e-9, "{p}");
        assert_eq!(b.select(&t, 100).nodes, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn exclusive_probabilities_of_siblings_sum_to_at_most_one() {
        let b = NodeBudget::new(cpu());
        let mut rng = crate::rng::Rng::new(7);
        for _ in 0..200 {
            let mut t = CandidateTree::new(0);
            for _ in 0..1 + rng.below(40) {
                let parent = rng.below(t.len());
                let ev = if rng.below(2) == 0 {
                    Evidence::Predicted {
                        rank: rng.below(4),
                        depth: 1 + rng.below(4),
                        after_token: rng.below(2) == 0,
                    }
                } else {
                    let of = 1 + rng.below(6) as u32;
                    Evidence::Retrieved {
                        matched: 1 + rng.below(30),
                        count: 1 + rng.below(of as usize) as u32,
                        of,
                    }
                };
                t.add(&b, parent, rng.below(6) as u32, ev);
            }
            let q = t.exclusive();
            for (n, kids) in t.children.iter().enumerate() {
                let sum: f64 = kids.iter().map(|&c| q[c]).sum();
                assert!(sum <= 1.0 + 1e-12, "node {n}: {sum}");
                for &c in kids {
                    assert!((0.0..=t.q[c]).contains(&q[c]));
                }
                // The most confident child keeps its calibrated probability.
                let most = |v: &[f64]| kids.iter().map(|&c| v[c]).fold(0.0, f64::max);
                assert_eq!(most(&q), most(&t.q));
            }
        }
    }

    #[test]
    fn calibration_learns_that_confident_nodes_fail() {
        let mut b = NodeBudget::new(cpu());
        let ev = Evidence::Retrieved {
            matched: 4,
            count: 1,
            of: 1,
        };
        let before = b.probability(ev);
        let mut t = CandidateTree::new(1);
        t.add(&b, 0, 2, ev);
        let s = Selection { nodes: vec![1] };
        let d = s.draft(&t);
        for _ in 0..20 {
            b.record(&t, &s, &d, &[3, 0]);
        }
        let after = b.probability(ev);
        assert!(before > 0.8 && after < 0.1, "{before} -> {after}");
        let mut again = CandidateTree::new(1);
        again.add(&b, 0, 2, ev);
        assert!(b.select(&again, 10).nodes.is_empty());
    }

    #[test]
    fn path_probabilities_multiply_and_order_best_first() {
        let b = NodeBudget::new(cpu());
        let mut t = CandidateTree::new(0);
        let p0 = Evidence::Predicted {
            rank: 0,
            depth: 1,
            after_token: true,
        };
        let p1 = Evidence::Predicted {
            rank: 1,
            depth: 1,
            after_token: true,
        };
        let a = t.add(&b, 0, 1, p0);
        let c = t.add(&b, 0, 2, p1);
        let aa = t.add(&b, a, 3, p0);
        // Merging keeps one node per token, with the more confident evidence.
        assert_eq!(t.add(&b, 0, 2, p0), c);
        let order = t.best_first(10);
        let q0 = b.probability(p0);
        assert_eq!(
            order.iter().map(|x| x.0).collect::<Vec<_>>(),
            vec![a, c, aa]
        );
        assert!((order[2].1 - q0 * q0).abs() < 1e-12);
    }
}
