//! Data-parallel training: `workers` copies of the model, each computing the gradients of its
//! share of every optimizer step's micro-batches (micro-batch `a` of a step belongs to worker
//! `a % workers`), summed across workers by burn's collective all-reduce (`burn-collective`,
//! msn's `collective` feature), so that every worker takes the AdamW step one worker would take
//! on the whole global batch. The global batches, their order and their noise do not depend on
//! the number of workers, so a run resumes on any worker count.

use crate::error::{Error, Result};
use crate::model::Llama;
use crate::noise::NoiseAugmenter;
use crate::train::world::World;
use crate::train::{MsnTrainer, TrainReport, TrainSample, Trainer};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Trains one worker per device in this process (threads; the same device repeated for CPU
/// threads) and returns worker 0's model and report (its `tokens` and `tokens_per_s` count
/// every worker's tokens). The trainer's `world` is set for each worker; its `grad_accum` must
/// be a multiple of the number of devices. Needs the `collective` feature for more than one
/// device.
///
/// # Errors
/// Those of [`MsnTrainer::train`]; [`Error::Worker`] naming the worker that failed (the others
/// stop too; nothing checkpointed is lost).
pub fn train_data_parallel<B, N>(
    trainer: &Trainer<N>,
    model: Llama<B>,
    devices: &[B::Device],
    train: &[TrainSample],
    eval: &[TrainSample],
) -> Result<(Llama<B>, TrainReport)>
where
    B: AutodiffBackend,
    N: NoiseAugmenter + Clone + Send + Sync,
{
    let workers = devices.len();
    if workers <= 1 {
        let mut t = trainer.clone();
        t.config.world = World::default();
        let device = devices
            .first()
            .cloned()
            .unwrap_or_else(|| crate::model::CausalLm::device(&model));
        return t.train(model.fork(&device), train, eval);
    }
    let results: Vec<Outcome<B>> = std::thread::scope(|s| {
        let handles: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(rank, device)| {
                let mut t = trainer.clone();
                t.config.world = World {
                    workers,
                    rank,
                    network: None,
                };
                let m = model.clone().fork(device);
                s.spawn(move || worker::<B, N>(t, m, train, eval))
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, h)| {
                h.join().unwrap_or_else(|_| Outcome {
                    result: Err(worker_error(rank, workers, "panicked".into())),
                    own_failure: true,
                })
            })
            .collect()
    });
    // The worker that failed by itself is named, not those the failure released.
    let mut failures: Vec<(bool, Error)> = Vec::new();
    let mut lead = None;
    for (rank, o) in results.into_iter().enumerate() {
        match o.result {
            Ok(out) if rank == 0 => lead = Some(out),
            Ok(_) => {}
            Err(e @ Error::Worker { .. }) => failures.push((o.own_failure, e)),
            Err(e) => failures.push((true, worker_error(rank, workers, e.to_string()))),
        }
    }
    failures.sort_by_key(|(own, _)| !own);
    match (failures.into_iter().next(), lead) {
        (Some((_, e)), _) => Err(e),
        (None, Some(out)) => Ok(out),
        (None, None) => Err(worker_error(0, workers, "returned nothing".into())),
    }
}

/// A worker's result, and whether it failed by itself (rather than being stopped by another's
/// failure).
struct Outcome<B: AutodiffBackend> {
    result: Result<(Llama<B>, TrainReport)>,
    own_failure: bool,
}

/// One worker's run; on failure it releases the others waiting on it in an all-reduce.
fn worker<B: AutodiffBackend, N: NoiseAugmenter>(
    mut trainer: Trainer<N>,
    model: Llama<B>,
    train: &[TrainSample],
    eval: &[TrainSample],
) -> Outcome<B> {
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        trainer.train(model, train, eval)
    }));
    if !matches!(out, Ok(Ok(_))) {
        collective::release_peers::<B>();
    }
    let w = &trainer.config.world;
    match out {
        Ok(result) => Outcome {
            // Only the collective reports `Error::Worker` inside a worker: a peer's failure.
            own_failure: !matches!(result, Err(Error::Worker { .. })),
            result,
        },
        Err(_) => Outcome {
            result: Err(worker_error(w.rank, w.workers, "panicked".into())),
            own_failure: true,
        },
    }
}

pub(crate) fn worker_error(worker: usize, workers: usize, reason: String) -> Error {
    Error::Worker {
        worker,
        workers,
        reason,
    }
}

/// This worker's membership in the collective for a run: registered by [`join`], finished on
/// drop.
pub(crate) struct Member<B: AutodiffBackend> {
    #[cfg_attr(not(feature = "collective"), allow(dead_code))]
    world: World,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> Drop for Member<B> {
    fn drop(&mut self) {
        collective::finish::<B>(&self.world);
    }
}

/// Registers this worker with the others (nothing for one worker).
///
/// # Errors
/// [`Error::Worker`] when the collective refuses the registration.
pub(crate) fn join<B: AutodiffBackend>(
    world: &World,
    model: &Llama<B>,
) -> Result<Option<Member<B>>> {
    if world.workers == 1 {
        return Ok(None);
    }
    collective::register::<B>(world, model)?;
    Ok(Some(Member {
        world: world.clone(),
        backend: std::marker::PhantomData,
    }))
}

/// One step's gradients, loss and tokens summed over the workers (unchanged for one worker).
///
/// # Errors
/// [`Error::Worker`] when a peer is gone or the collective fails.
pub(crate) fn all_reduce<B: AutodiffBackend>(
    model: &Llama<B>,
    (grads, loss, tokens): (GradientsParams, f32, usize),
    world: &World,
    report: &mut TrainReport,
) -> Result<(GradientsParams, f32, usize)> {
    if world.workers == 1 {
        return Ok((grads, loss, tokens));
    }
    let started = std::time::Instant::now();
    let (grads, loss, tokens, bytes) = collective::sum::<B>(model, grads, loss, tokens, world)?;
    report.all_reduce_s += started.elapsed().as_secs_f64();
    report.all_reduce_bytes = bytes;
    Ok((grads, loss, tokens))
}

#[cfg(feature = "collective")]
use super::collective;

/// Without the `collective` feature a run has one worker ([`World::check`] refuses more, and
/// one worker never reaches these).
#[cfg(not(feature = "collective"))]
mod collective {
    use super::World;
    use crate::error::{Error, Result};
    use crate::model::Llama;
    use burn::optim::GradientsParams;
    use burn::tensor::backend::AutodiffBackend;

    fn needed() -> Error {
        Error::InvalidArgument("more than one worker needs msn's `collective` feature".into())
    }
    pub(super) fn register<B: AutodiffBackend>(_: &World, _: &Llama<B>) -> Result<()> {
        Err(needed())
    }
    pub(super) fn finish<B: AutodiffBackend>(_: &World) {}
    pub(super) fn release_peers<B: AutodiffBackend>() {}
    pub(super) fn sum<B: AutodiffBackend>(
        _: &Llama<B>,
        _: GradientsParams,
        _: f32,
        _: usize,
        _: &World,
    ) -> Result<(GradientsParams, f32, usize, usize)> {
        Err(needed())
    }
}
