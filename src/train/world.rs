//! A worker's place in a data-parallel run: how many workers, which one this is, and (for
//! workers that are processes) where they meet.

use crate::error::{Error, Result};
use std::time::Duration;

/// A process's place in a data-parallel run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    /// Workers in the run; each computes `grad_accum / workers` micro-batches of every step.
    pub workers: usize,
    /// This worker's index, `0..workers`; worker 0 evaluates, writes metrics, checkpoints and
    /// the LoRA adapter, and prints progress.
    pub rank: usize,
    /// `None`: the workers are threads of one process
    /// ([`train_data_parallel`](crate::train::train_data_parallel)). `Some`: each worker is a
    /// process of its own (on this machine or others), joined through burn's global
    /// orchestrator ([`run_orchestrator`](crate::train::run_orchestrator)).
    pub network: Option<Network>,
}

/// Where a worker process meets the others, and how long it waits for them.
///
/// ```
/// use msn::train::{Network, World};
/// let world = World {
///     workers: 2,
///     rank: 1,
///     network: Some(Network::new("ws://10.0.0.1:3000", "10.0.0.2", 3001)),
/// };
/// assert_eq!(world.network.unwrap().address, "ws://10.0.0.2:3001");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The orchestrator's address, `ws://HOST:PORT` ([`run_orchestrator`] on that port).
    ///
    /// [`run_orchestrator`]: crate::train::run_orchestrator
    pub orchestrator: String,
    /// The address the other workers reach this one at, `ws://HOST:PORT`.
    pub address: String,
    /// The port this worker serves its gradients on (the port of `address`, unless a proxy
    /// or NAT maps it).
    pub port: u16,
    /// How long this worker waits for the others: to join, and at every step's all-reduce
    /// (which also waits for the slowest worker's share of the step). Past it, the run stops
    /// with [`Error::Worker`]. Default 300 s.
    pub timeout: Duration,
}

impl Network {
    /// A worker reached at `ws://host:port` that meets the others at `orchestrator`, with the
    /// default timeout.
    pub fn new(orchestrator: &str, host: &str, port: u16) -> Self {
        Self {
            orchestrator: orchestrator.to_string(),
            address: format!("ws://{host}:{port}"),
            port,
            timeout: Duration::from_secs(300),
        }
    }
}

impl Default for World {
    /// One worker: a plain run.
    fn default() -> Self {
        Self {
            workers: 1,
            rank: 0,
            network: None,
        }
    }
}

impl World {
    /// Checks the world against the run's micro-batches per step.
    pub(crate) fn check(&self, grad_accum: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.workers == 0 || self.rank >= self.workers {
            return bad(format!(
                "worker {} of {}: the rank must be below the number of workers",
                self.rank, self.workers
            ));
        }
        if !grad_accum.is_multiple_of(self.workers) {
            return bad(format!(
                "grad_accum {grad_accum} is not a multiple of {} workers: each worker computes an equal share of every step's micro-batches",
                self.workers
            ));
        }
        if self.workers > 1 && !cfg!(feature = "collective") {
            return bad(
                "data-parallel training needs msn's `collective` feature (burn's collective operations)".into(),
            );
        }
        if self.network.as_ref().is_some_and(|n| n.timeout.is_zero()) {
            return bad("the network timeout must be above zero".into());
        }
        Ok(())
    }

    /// Whether this worker computes micro-batch `micro` of a step.
    pub(crate) fn computes(&self, micro: usize) -> bool {
        micro % self.workers == self.rank
    }

    /// Whether this worker writes the run's files and reports.
    pub(crate) fn leads(&self) -> bool {
        self.rank == 0
    }
}
