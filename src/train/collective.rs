//! The workers' meeting through burn's collective operations (`burn-collective`, msn's
//! `collective` feature): registration, one all-reduce of a step's gradients, loss and tokens,
//! and the end of a run. Threads of one process meet in burn's local server; processes through
//! its global orchestrator, with every wait bounded by
//! [`Network::timeout`](crate::train::Network::timeout), since a process that died never
//! answers.

use super::data_parallel::worker_error;
use super::world::World;
use crate::error::Result;
use crate::model::Llama;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::TensorPrimitive;
use burn::tensor::backend::AutodiffBackend;
use burn_collective::{AllReduceStrategy, CollectiveConfig, PeerId, ReduceOperation};
use std::time::Duration;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// The worker's id among the workers of its process: its rank for threads, 0 for a
/// process of its own.
fn peer(world: &World) -> PeerId {
    match world.network {
        None => PeerId::from(world.rank as u32),
        Some(_) => PeerId::from(0),
    }
}

fn failed(world: &World, what: &str, e: burn_collective::CollectiveError) -> crate::Error {
    worker_error(world.rank, world.workers, format!("{what}: {e:?}"))
}

/// The error of a worker process that lost the others: the run's only other worker when
/// there are two (a process that died cannot report itself), else this one.
fn lost(world: &World, what: &str) -> crate::Error {
    let (worker, whom) = match world.workers {
        2 => (1 - world.rank, format!("worker {}", world.rank)),
        _ => (
            world.rank,
            format!("worker {} (one of the others is gone)", world.rank),
        ),
    };
    crate::Error::Worker {
        worker,
        workers: world.workers,
        reason: format!("{whom} got no answer {what}"),
    }
}

/// Threads of one process, or one worker per process joined through the orchestrator.
fn config(world: &World) -> Result<CollectiveConfig> {
    let Some(net) = &world.network else {
        return Ok(CollectiveConfig::default().with_num_devices(world.workers));
    };
    let address = |a: &str| {
        a.parse::<burn_communication::Address>()
            .map_err(|e| crate::Error::InvalidArgument(format!("address `{a}`: {e}")))
    };
    Ok(CollectiveConfig::default()
        .with_num_devices(1)
        .with_num_nodes(world.workers as u32)
        .with_global_address(address(&net.orchestrator)?)
        .with_node_address(address(&net.address)?)
        .with_data_service_port(net.port)
        .with_global_all_reduce_strategy(AllReduceStrategy::Centralized))
}

/// The device of the model's inner (non-autodiff) tensors.
fn inner_device<B: AutodiffBackend>(model: &Llama<B>) -> burn::tensor::Device<Inner<B>> {
    model.embed_tokens.weight.val().inner().device()
}

pub(super) fn register<B: AutodiffBackend>(world: &World, model: &Llama<B>) -> Result<()> {
    let (peer, device, config) = (peer(world), inner_device(model), config(world)?);
    let joined = bounded(timeout(world), move || {
        burn_collective::register::<Inner<B>>(peer, device, config)
    });
    match joined {
        Some(r) => r.map_err(|e| failed(world, "joining the other workers", e)),
        None => Err(lost(world, "while joining the others")),
    }
}

/// Leaves the collective (a process waits for it at most 2 seconds: the others may be
/// gone).
pub(super) fn finish<B: AutodiffBackend>(world: &World) {
    let peer = peer(world);
    let short = timeout(world).map(|t| t.min(Duration::from_secs(2)));
    let _ = bounded(short, move || {
        burn_collective::finish_collective::<Inner<B>>(peer)
    });
}

/// How long a worker waits for the others: unbounded for threads of one process (a failed
/// thread releases the others, [`release_peers`]), the network timeout for a process.
fn timeout(world: &World) -> Option<Duration> {
    world.network.as_ref().map(|n| n.timeout)
}

/// Runs `op`, with a `timeout` on a thread of its own, and waits at most that long for it;
/// `None` when it did not finish in time or panicked (burn's global client panics on a
/// connection a dead peer closed).
fn bounded<T: Send + 'static>(
    timeout: Option<Duration>,
    op: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let Some(timeout) = timeout else {
        return Some(op());
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(op());
    });
    rx.recv_timeout(timeout).ok()
}

/// Forgets every pending operation, so that workers waiting on a failed one get an error.
pub(super) fn release_peers<B: AutodiffBackend>() {
    burn_collective::reset_collective::<Inner<B>>();
}

/// Sums every gradient over the workers in one all-reduce: the gradients, in the model's
/// own parameter order (the same on every worker, whatever its parameter ids), then the
/// loss and the tokens, concatenated into one flat tensor and split back after. One
/// message a step instead of one per parameter.
pub(super) fn sum<B: AutodiffBackend>(
    model: &Llama<B>,
    mut grads: GradientsParams,
    loss: f32,
    tokens: usize,
    world: &World,
) -> Result<(GradientsParams, f32, usize, usize)> {
    let device = inner_device(model);
    let mut gather = Gather::<B> {
        grads: &mut grads,
        parts: Vec::new(),
        backend: std::marker::PhantomData,
    };
    model.visit(&mut gather);
    let mut parts = std::mem::take(&mut gather.parts);
    let bytes = parts.iter().map(|t| t.dims()[0] * 4).sum();
    parts.push(Tensor::<Inner<B>, 1>::from_floats(
        [loss, tokens as f32],
        &device,
    ));
    let flat = Tensor::cat(parts, 0);
    let n = flat.dims()[0];
    let mut summed = Vec::new();
    for range in chunks(n, CHUNK) {
        summed.push(all_reduce(
            world,
            flat.clone().narrow(0, range.start, range.len()),
        )?);
    }
    let summed = Tensor::cat(summed, 0);
    let v: Vec<f32> = summed
        .clone()
        .narrow(0, n - 2, 2)
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32 values");
    let mut scatter = Scatter::<B> {
        grads: &mut grads,
        flat: summed,
        at: 0,
        backend: std::marker::PhantomData,
    };
    model.visit(&mut scatter);
    Ok((grads, v[0], v[1].round() as usize, bytes))
}

/// Values in one all-reduce message: 32 MiB of f32. Between processes a message is one
/// websocket frame, and burn's client refuses frames past 512 MiB (a full fine-tune of a 135M
/// model sends 538 MB a step).
const CHUNK: usize = 1 << 23;

/// `0..n` in consecutive ranges of at most `size` values.
fn chunks(n: usize, size: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n)
        .step_by(size.max(1))
        .map(move |s| s..(s + size).min(n))
}

/// One all-reduce (sum) of `flat` over the workers.
fn all_reduce<B: Backend>(world: &World, flat: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
    let (peer, flat) = (peer(world), flat.into_primitive().tensor());
    let summed = bounded(timeout(world), move || {
        burn_collective::all_reduce::<B>(peer, flat, ReduceOperation::Sum)
    })
    .ok_or_else(|| lost(world, "at a step's all-reduce"))?
    .map_err(|e| match world.network {
        // A process's collective fails when a peer's connection breaks (a dead peer).
        Some(_) => lost(world, &format!("at a step's all-reduce ({e:?})")),
        None => failed(world, "summing gradients", e),
    })?;
    Ok(Tensor::from_primitive(TensorPrimitive::Float(summed)))
}

/// Takes each gradient out, flattened, in the model's parameter order.
struct Gather<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    parts: Vec<Tensor<Inner<B>, 1>>,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Gather<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<Inner<B>, D>(param.id) {
            let n = g.shape().num_elements();
            self.parts.push(g.reshape([n]));
        }
    }
}

/// Puts each summed gradient back, in the same order, in its parameter's shape.
struct Scatter<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    flat: Tensor<Inner<B>, 1>,
    at: usize,
    backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scatter<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(g) = self.grads.remove::<Inner<B>, D>(param.id) else {
            return;
        };
        let shape = g.shape();
        let n = shape.num_elements();
        let part = self.flat.clone().narrow(0, self.at, n).reshape(shape);
        self.at += n;
        self.grads.register::<Inner<B>, D>(param.id, part);
    }
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_cover_the_values_in_order_within_the_size() {
        for (n, size) in [(0, 4), (1, 4), (8, 4), (9, 4), (3, 1), (5, 100)] {
            let got: Vec<_> = chunks(n, size).collect();
            let flat: Vec<usize> = got.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(flat, (0..n).collect::<Vec<_>>(), "n {n} size {size}");
            assert!(got.iter().all(|r| !r.is_empty() && r.len() <= size));
        }
    }
}
