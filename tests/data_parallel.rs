//! Data-parallel MSN training (`collective` feature): two workers in one process, each with
//! half of every step's micro-batches summed by burn's collective all-reduce, take the steps one
//! worker takes on the whole batch; a 2-worker run resumes on 1 worker; a worker that fails
//! stops the run with an error naming it.
#![cfg(feature = "collective")]

mod common;
use common::training::{AB, model, samples, weights};
use msn::noise::AheadNoise;
use msn::train::{
    LoraConfig, LoraTarget, MsnTrainer, TrainConfig, Trainer, World, train_data_parallel,
};
use msn::{Error, Llama};

/// burn's collective server is one per backend and process: runs take turns.
fn one_run_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RUNS.lock().unwrap_or_else(|e| e.into_inner())
}

fn trainer(lora: bool) -> Trainer<AheadNoise> {
    Trainer {
        config: TrainConfig {
            lr: 3e-3,
            warmup_steps: 1,
            steps: 4,
            batch_size: 2,
            grad_accum: 4,
            seed: 11,
            lora: lora.then(|| LoraConfig {
                rank: 4,
                alpha: 8.0,
                targets: vec![LoraTarget::Q, LoraTarget::V],
            }),
            ..Default::default()
        },
        noise: AheadNoise { len: 3 },
    }
}

/// The largest difference between two weight vectors, relative to the largest weight.
fn relative_gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Tolerance for weights and losses: the workers' gradients are summed in another order than
/// one worker accumulates them (f32 rounding, amplified a little by AdamW's normalization).
const TOLERANCE: f32 = 1e-5;

fn check_same_run(
    one: &(Llama<AB>, msn::train::TrainReport),
    two: &(Llama<AB>, msn::train::TrainReport),
) {
    let gap = relative_gap(&weights(&one.0), &weights(&two.0));
    eprintln!("weights differ by {gap:e} (relative to the largest)");
    assert!(gap < TOLERANCE, "weights differ by {gap} (relative)");
    assert_eq!(one.1.steps, two.1.steps);
    assert_eq!(one.1.tokens, two.1.tokens, "tokens read");
    for (a, b) in one.1.losses.iter().zip(&two.1.losses) {
        assert!((a - b).abs() <= TOLERANCE * a.abs(), "losses {a} and {b}");
    }
}

#[test]
fn two_workers_take_the_steps_one_worker_takes_on_the_whole_batch() {
    let _turn = one_run_at_a_time();
    let data = samples(24, 1);
    let d = Default::default();
    for lora in [false, true] {
        let start = model(40);
        let t = trainer(lora);
        let one = t.clone().train(start.clone(), &data, &[]).unwrap();
        let two = train_data_parallel(&t, start.clone(), &[d, d], &data, &[]).unwrap();
        check_same_run(&one, &two);
        // And the step moved the weights: equal runs that changed nothing would pass above.
        let moved = relative_gap(&weights(&start), &weights(&one.0));
        assert!(
            moved > 100.0 * TOLERANCE,
            "lora {lora}: training moved the weights by {moved}"
        );
    }
}

/// A 2-worker run stopped after 2 steps (worker 0 checkpoints) and resumed on 1 worker ends
/// where 1 worker's uninterrupted run ends: the global batches do not depend on the workers.
#[test]
fn a_two_worker_run_resumes_on_one_worker() {
    let _turn = one_run_at_a_time();
    let data = samples(24, 2);
    let d = Default::default();
    let start = model(41);
    let whole = trainer(false).train(start.clone(), &data, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(false);
    t.config.out_dir = Some(dir.path().to_path_buf());
    t.config.checkpoint_every = 2;
    t.config.stop_at = Some(2);
    let part = train_data_parallel(&t, start.clone(), &[d, d], &data, &[]).unwrap();
    assert_eq!(part.1.steps, 2);
    t.config.stop_at = None;
    let resumed = t.clone().train(start, &data, &[]).unwrap();
    assert_eq!(resumed.1.resumed_from, Some(2));
    check_same_run(&whole, &resumed);
}

/// A worker that fails (here its noise panics at one call) stops every worker, and the error
/// names it; the shares of a step must divide evenly.
#[test]
fn a_failing_worker_stops_the_run_with_an_error_naming_it() {
    let _turn = one_run_at_a_time();
    let data = samples(24, 3);
    let d = Default::default();
    let noise = PanicsOnWorker {
        inner: AheadNoise { len: 3 },
        clones: Default::default(),
        id: 0,
    };
    let t = Trainer {
        config: trainer(false).config,
        noise,
    };
    let err = train_data_parallel(&t, model(42), &[d, d], &data, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Worker {
                worker: 1,
                workers: 2,
                ..
            }
        ),
        "{err}"
    );
    let mut uneven = trainer(false);
    uneven.config.grad_accum = 3;
    let err = train_data_parallel(&uneven, model(42), &[d, d], &data, &[]).unwrap_err();
    assert!(err.to_string().contains("multiple"), "{err}");
    uneven.config.world = World {
        workers: 2,
        rank: 2,
    };
    assert!(uneven.train(model(42), &data, &[]).is_err());
}

/// Noise that panics in the second worker's copy (its second clone: the launcher clones the
/// trainer once per worker, in rank order) at its 20th noised token.
struct PanicsOnWorker {
    inner: AheadNoise,
    clones: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    id: usize,
}

impl Clone for PanicsOnWorker {
    fn clone(&self) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        Self {
            inner: self.inner,
            clones: self.clones.clone(),
            id: self.clones.fetch_add(1, SeqCst) + 1,
        }
    }
}

impl msn::noise::NoiseAugmenter for PanicsOnWorker {
    fn segment_len(&self) -> usize {
        self.inner.segment_len()
    }
    fn noise_token(&self, input: &[u32], i: usize, rng: &mut msn::noise::Rng) -> u32 {
        thread_local!(static CALLS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
        let calls = CALLS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        if self.id == 2 && calls == 20 {
            panic!("noise failed on purpose");
        }
        self.inner.noise_token(input, i, rng)
    }
}
