//! Sizing drafts to the device: a measured forward-latency curve and the acceptance the decoder
//! observes decide how many draft tokens a step verifies.
//!
//! On a GPU a 16-token forward costs about what a 1-token forward costs; on a small CPU it costs
//! several times more (see `bench_forward`). A step that verifies `k` draft tokens commits
//! `1 + E[accepted]` tokens for `cost(1 + k)`; [`NodeBudget::select`] picks the `k` likeliest
//! nodes with the most expected tokens per second (`k = 0` is a greedy step, always a
//! candidate), each node's probability learned from drafts with the same evidence (its match
//! length, or its rank among the model's own predictions). Costs are the measured curve's,
//! scaled by how fast the steps actually run now ([`StepCosts`]), so apart from a probe every
//! few steps (a few nodes more than planned, to keep learning) a budgeted decoder does not
//! choose drafts it expects to be slower than greedy on the device it runs on; how close it
//! comes to greedy is measured (`specbench`, the `decoders` bench), not assumed.

mod latency_curve;
mod node_budget;
mod step_costs;

pub use latency_curve::LatencyCurve;
pub(crate) use node_budget::{CandidateTree, Evidence, NodeBudget, Selection};
pub(crate) use step_costs::StepCosts;
