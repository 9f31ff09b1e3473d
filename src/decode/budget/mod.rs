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

mod draft_budget;
mod latency_curve;
mod node_budget;
mod step_costs;

pub(crate) use draft_budget::DraftBudget;
pub use latency_curve::LatencyCurve;
pub(crate) use node_budget::{CandidateTree, Evidence, NodeBudget, Selection};
pub(crate) use step_costs::StepCosts;
