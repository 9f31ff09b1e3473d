//! Data-parallel training: `workers` copies of the model, each computing the gradients of its
//! share of every optimizer step's micro-batches (micro-batch `a` of a step belongs to worker
//! `a % workers`), summed across workers by burn's collective all-reduce (`burn-collective`,
//! msn's `collective` feature), so that every worker takes the AdamW step one worker would take
//! on the whole global batch. The global batches, their order and their noise do not depend on
//! the number of workers, so a run resumes on any worker count.

use crate::error::{Error, Result};
use crate::model::Llama;
use crate::noise::NoiseAugmenter;
use crate::train::{MsnTrainer, TrainReport, TrainSample, Trainer};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// A process's place in a data-parallel run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct World {
    /// Workers in the run; each computes `grad_accum / workers` micro-batches of every step.
    pub workers: usize,
    /// This worker's index, `0..workers`; worker 0 evaluates, writes metrics, checkpoints and
    /// the LoRA adapter, and prints progress.
    pub rank: usize,
}

impl Default for World {
    /// One worker: a plain run.
    fn default() -> Self {
        Self {
            workers: 1,
            rank: 0,
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
                t.config.world = World { workers, rank };
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
    let w = trainer.config.world;
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

fn worker_error(worker: usize, workers: usize, reason: String) -> Error {
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
        collective::finish::<B>(self.world);
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
    collective::register::<B>(*world, model)?;
    Ok(Some(Member {
        world: *world,
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
    let (grads, loss, tokens, bytes) = collective::sum::<B>(model, grads, loss, tokens, *world)?;
    report.all_reduce_s += started.elapsed().as_secs_f64();
    report.all_reduce_bytes = bytes;
    Ok((grads, loss, tokens))
}

#[cfg(feature = "collective")]
mod collective {
    use super::{World, worker_error};
    use crate::error::Result;
    use crate::model::Llama;
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use burn::prelude::*;
    use burn::tensor::TensorPrimitive;
    use burn::tensor::backend::AutodiffBackend;
    use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

    type Inner<B> = <B as AutodiffBackend>::InnerBackend;

    fn peer(world: World) -> PeerId {
        PeerId::from(world.rank as u32)
    }

    fn failed(world: World, what: &str, e: burn_collective::CollectiveError) -> crate::Error {
        worker_error(world.rank, world.workers, format!("{what}: {e:?}"))
    }

    /// The device of the model's inner (non-autodiff) tensors.
    fn inner_device<B: AutodiffBackend>(model: &Llama<B>) -> burn::tensor::Device<Inner<B>> {
        model.embed_tokens.weight.val().inner().device()
    }

    pub(super) fn register<B: AutodiffBackend>(world: World, model: &Llama<B>) -> Result<()> {
        let config = CollectiveConfig::default().with_num_devices(world.workers);
        burn_collective::register::<Inner<B>>(peer(world), inner_device(model), config)
            .map_err(|e| failed(world, "joining the other workers", e))
    }

    pub(super) fn finish<B: AutodiffBackend>(world: World) {
        let _ = burn_collective::finish_collective::<Inner<B>>(peer(world));
    }

    /// Forgets every pending operation, so that workers waiting on a failed one get an error.
    pub(super) fn release_peers<B: AutodiffBackend>() {
        burn_collective::reset_collective::<Inner<B>>();
    }

    /// Sums every gradient over the workers, parameter by parameter in the model's own order
    /// (the same on every worker, whatever its parameter ids), then the loss and tokens.
    pub(super) fn sum<B: AutodiffBackend>(
        model: &Llama<B>,
        mut grads: GradientsParams,
        loss: f32,
        tokens: usize,
        world: World,
    ) -> Result<(GradientsParams, f32, usize, usize)> {
        let mut visitor = SumGrads::<B> {
            grads: &mut grads,
            peer: peer(world),
            error: None,
            bytes: 0,
            backend: std::marker::PhantomData,
        };
        model.visit(&mut visitor);
        if let Some(e) = visitor.error {
            return Err(failed(world, "summing gradients", e));
        }
        let bytes = visitor.bytes;
        let scalars =
            Tensor::<Inner<B>, 1>::from_floats([loss, tokens as f32], &inner_device(model));
        let summed = burn_collective::all_reduce::<Inner<B>>(
            peer(world),
            scalars.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| failed(world, "summing the loss", e))?;
        let v: Vec<f32> = Tensor::<Inner<B>, 1>::from_primitive(TensorPrimitive::Float(summed))
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 values");
        Ok((grads, v[0], v[1].round() as usize, bytes))
    }

    struct SumGrads<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        peer: PeerId,
        error: Option<burn_collective::CollectiveError>,
        /// f32 bytes sent in.
        bytes: usize,
        backend: std::marker::PhantomData<B>,
    }

    impl<B: AutodiffBackend> ModuleVisitor<B> for SumGrads<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.error.is_some() {
                return;
            }
            let Some(g) = self.grads.remove::<Inner<B>, D>(param.id) else {
                return;
            };
            self.bytes += g.shape().num_elements() * 4;
            let reduced = burn_collective::all_reduce::<Inner<B>>(
                self.peer,
                g.into_primitive().tensor(),
                ReduceOperation::Sum,
            );
            match reduced {
                Ok(t) => self.grads.register::<Inner<B>, D>(
                    param.id,
                    Tensor::from_primitive(TensorPrimitive::Float(t)),
                ),
                Err(e) => self.error = Some(e),
            }
        }
    }
}

/// Without the `collective` feature a run has one worker ([`World::check`] refuses more).
#[cfg(not(feature = "collective"))]
mod collective {
    use super::World;
    use crate::error::Result;
    use crate::model::Llama;
    use burn::optim::GradientsParams;
    use burn::tensor::backend::AutodiffBackend;

    pub(super) fn register<B: AutodiffBackend>(world: World, _: &Llama<B>) -> Result<()> {
        World::check(&world, world.workers)
    }
    pub(super) fn finish<B: AutodiffBackend>(_: World) {}
    pub(super) fn release_peers<B: AutodiffBackend>() {}
    pub(super) fn sum<B: AutodiffBackend>(
        _: &Llama<B>,
        grads: GradientsParams,
        loss: f32,
        tokens: usize,
        world: World,
    ) -> Result<(GradientsParams, f32, usize, usize)> {
        World::check(&world, world.workers)?;
        Ok((grads, loss, tokens, 0))
    }
}
