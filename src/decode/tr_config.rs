//! TR-Jacobi's parameters: the tree template, `K`, retrieval and the candidate source.

use crate::decode::candidates::Candidates;
use crate::decode::tree_template::TreeTemplate;
use crate::error::{Error, Result};

/// TR-Jacobi parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrJacobiConfig {
    /// The token tree (rank paths).
    pub template: TreeTemplate,
    /// Candidates kept per depth (`K`); at least the template's ranks.
    pub top_k: usize,
    /// Tokens per retrieval chain (0 disables retrieval). Retrieval matches the longest
    /// suffix of the text that occurred before (in the request or the draft memory, up to 32
    /// tokens) and follows what came after it.
    pub retrieval_len: usize,
    /// Retrieval chains per step.
    pub retrieval_chains: usize,
    /// Seed for the ahead-noise fill of missing candidate rows.
    pub seed: u64,
    /// Source of the tree's candidate tokens.
    pub candidates: Candidates,
}

impl Default for TrJacobiConfig {
    /// The paper's template and `K = 10`, with retrieval as long as prompt lookup's drafts
    /// (see `ALGORITHMS.md`: 5-token chains lose to prompt lookup on copy-heavy prompts), and
    /// [`Candidates::Recycled`] (the paper's own candidate rows are [`Candidates::Jacobi`]).
    fn default() -> Self {
        Self {
            template: TreeTemplate::msn(),
            top_k: 10,
            retrieval_len: 10,
            retrieval_chains: 2,
            seed: 0,
            candidates: Candidates::Recycled,
        }
    }
}

impl TrJacobiConfig {
    /// Most tree nodes after the root.
    pub(crate) fn max_nodes(&self) -> usize {
        self.template.len() + self.retrieval_len * self.retrieval_chains
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.top_k < self.template.ranks() {
            return Err(Error::InvalidArgument(format!(
                "top_k = {} but the tree template uses ranks up to {}; raise top_k",
                self.top_k,
                self.template.ranks()
            )));
        }
        Ok(())
    }
}
