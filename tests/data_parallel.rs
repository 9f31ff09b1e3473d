//! Data-parallel MSN training (`collective` feature): two workers, threads of one process or
//! processes joined over loopback through burn's orchestrator, each with half of every step's
//! micro-batches summed by burn's collective all-reduce, take the steps one worker takes on the
//! whole batch; a 2-worker run resumes on 1 worker; a worker that fails, is SIGKILLed or stops
//! answering stops the run with an error naming it, and the run resumes from the checkpoint.
#![cfg(feature = "collective")]

mod common;
use common::training::{AB, model, samples, weights};
use msn::noise::AheadNoise;
use msn::train::{
    LoraConfig, LoraTarget, MsnTrainer, Network, TrainConfig, Trainer, World, run_orchestrator,
    train_data_parallel,
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
        network: None,
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

/// Two worker processes joined over loopback through burn's orchestrator (a third process)
/// take the steps one worker takes in this process on the same global batches.
#[test]
fn two_processes_over_loopback_take_the_steps_one_worker_takes() {
    let _turn = one_run_at_a_time();
    let one = trainer(true)
        .train(model(43), &samples(24, 4), &[])
        .unwrap();
    let mut run = Processes::start("same");
    let status = run.wait(&[0, 1], 300);
    assert!(
        status.iter().all(|s| s.is_some_and(|s| s.success())),
        "worker processes: {status:?}"
    );
    for rank in 0..2 {
        let out = run.outcome(rank);
        let Outcome::Trained(weights_, losses, tokens) = out else {
            panic!("worker {rank}: {out:?}");
        };
        let gap = relative_gap(&weights(&one.0), &weights_);
        assert!(gap < TOLERANCE, "worker {rank}: weights differ by {gap}");
        assert_eq!(tokens, one.1.tokens, "worker {rank}: tokens");
        assert_eq!(losses.len(), one.1.losses.len());
        for (a, b) in one.1.losses.iter().zip(&losses) {
            assert!((a - b).abs() <= TOLERANCE * a.abs(), "losses {a} and {b}");
        }
    }
}

/// Worker 1 of a 2-process run is SIGKILLed after worker 0's first checkpoint: worker 0 stops
/// with an error naming worker 1 (its connection breaks), its checkpoints load, and the run
/// resumed on one worker ends where one worker's uninterrupted run ends.
#[test]
fn a_killed_worker_process_stops_the_run_and_it_resumes_on_one_worker() {
    stop_worker_1_midway("KILL");
}

/// The same with worker 1 frozen (SIGSTOP: its connections stay open, it never answers):
/// worker 0 stops after its network timeout.
#[test]
fn a_frozen_worker_process_stops_the_run_within_the_timeout() {
    stop_worker_1_midway("STOP");
}

fn stop_worker_1_midway(signal: &str) {
    let _turn = one_run_at_a_time();
    let whole = fault_trainer()
        .train(model(44), &samples(24, 5), &[])
        .unwrap();
    let mut run = Processes::start("fault");
    let latest = run.dir.path().join("run").join("latest");
    let started = std::time::Instant::now();
    while !latest.exists() && started.elapsed().as_secs() < 300 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(latest.exists(), "worker 0 wrote no checkpoint");
    let signal_number = match signal {
        "KILL" => libc::SIGKILL,
        _ => libc::SIGSTOP,
    };
    // SAFETY: a plain system call on the pid of a child this test started and has not waited
    // for (so the pid is not reused).
    let sent = unsafe { libc::kill(run.workers[1].id() as libc::pid_t, signal_number) };
    assert_eq!(sent, 0, "kill -{signal}");
    let stopped = std::time::Instant::now();
    let status = run.wait(&[0], 120);
    let stopped_after = stopped.elapsed().as_secs_f64();
    eprintln!("SIG{signal}: worker 0 stopped {stopped_after:.2} s later");
    assert!(status[0].is_some(), "worker 0 did not stop");
    // The timeout, then at most 5 s to leave the collective, and the process's exit.
    assert!(
        stopped_after < FAULT_TIMEOUT_S as f64 + 8.0,
        "worker 0 stopped {stopped_after:.1} s after SIG{signal}"
    );
    match run.outcome(0) {
        Outcome::Failed(worker, message) => {
            assert_eq!(worker, 1, "{message}");
            assert!(message.contains("no answer"), "{message}");
        }
        other => panic!("worker 0 went on after worker 1 stopped: {other:?}"),
    }
    let mut t = fault_trainer();
    t.config.out_dir = Some(run.dir.path().join("run"));
    let resumed = t.train(model(44), &samples(24, 5), &[]).unwrap();
    let from = resumed.1.resumed_from.expect("resumed from a checkpoint");
    assert!((2..12).contains(&from), "resumed from step {from}");
    check_same_run(&whole, &resumed);
}

const FAULT_TIMEOUT_S: u64 = 5;

/// The killed run: 12 full fine-tuning steps, a checkpoint every 2.
fn fault_trainer() -> Trainer<AheadNoise> {
    let mut t = trainer(false);
    t.config.steps = 12;
    t.config.checkpoint_every = 2;
    t
}

/// What a worker process reports: its weights, losses and tokens, or the failure's worker and
/// message.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Outcome {
    Trained(Vec<f32>, Vec<f32>, usize),
    Failed(usize, String),
}

/// An orchestrator and two worker processes over loopback (this test binary re-run as the
/// helpers below), killed when dropped.
struct Processes {
    orchestrator: std::process::Child,
    workers: Vec<std::process::Child>,
    dir: tempfile::TempDir,
}

impl Processes {
    fn start(kind: &str) -> Self {
        let ports: Vec<u16> = (0..3)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().port()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let orchestrator = child(
            "dp_orchestrator",
            "MSN_DP_ORCHESTRATOR",
            ports[0].to_string(),
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
        let workers = (0..2)
            .map(|rank| {
                let (o, p, d) = (ports[0], ports[1 + rank], dir.path().display());
                child(
                    "dp_worker",
                    "MSN_DP_WORKER",
                    format!("{rank},{o},{p},{d},{kind}"),
                )
            })
            .collect();
        Self {
            orchestrator,
            workers,
            dir,
        }
    }

    /// Waits at most `limit_s` seconds for the workers named; their exit statuses.
    fn wait(&mut self, ranks: &[usize], limit_s: u64) -> Vec<Option<std::process::ExitStatus>> {
        let started = std::time::Instant::now();
        let mut status = vec![None; ranks.len()];
        while status.iter().any(Option::is_none) && started.elapsed().as_secs() < limit_s {
            for (&r, s) in ranks.iter().zip(status.iter_mut()) {
                if s.is_none() {
                    *s = self.workers[r].try_wait().unwrap();
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        status
    }

    fn outcome(&self, rank: usize) -> Outcome {
        let path = self.dir.path().join(format!("worker-{rank}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in self.workers.iter_mut().chain([&mut self.orchestrator]) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// This test binary run as one helper process of the tests above.
fn child(test: &str, var: &str, value: String) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", test, "--test-threads", "1"])
        .env(var, value)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The orchestrator process (only when a test above starts it).
#[test]
#[ignore]
fn dp_orchestrator() {
    if let Ok(port) = std::env::var("MSN_DP_ORCHESTRATOR") {
        run_orchestrator(port.parse().unwrap()).unwrap();
    }
}

/// A worker process (only when a test above starts it): trains and writes its [`Outcome`].
#[test]
#[ignore]
fn dp_worker() {
    let Ok(spec) = std::env::var("MSN_DP_WORKER") else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let (rank, orchestrator, port): (usize, u16, u16) = (
        parts[0].parse().unwrap(),
        parts[1].parse().unwrap(),
        parts[2].parse().unwrap(),
    );
    let (dir, kind) = (std::path::Path::new(parts[3]), parts[4]);
    let mut network = Network::new(&format!("ws://127.0.0.1:{orchestrator}"), "127.0.0.1", port);
    let world = |network| World {
        workers: 2,
        rank,
        network: Some(network),
    };
    let result = if kind == "same" {
        let mut t = trainer(true);
        t.config.world = world(network);
        t.train(model(43), &samples(24, 4), &[])
    } else {
        network.timeout = std::time::Duration::from_secs(FAULT_TIMEOUT_S);
        let t = fault_trainer();
        let mut slow = Trainer {
            config: t.config,
            noise: Slow(t.noise),
        };
        slow.config.world = world(network);
        slow.config.out_dir = Some(dir.join("run"));
        slow.train(model(44), &samples(24, 5), &[])
    };
    let out = match result {
        Ok((m, report)) => Outcome::Trained(weights(&m), report.losses, report.tokens),
        Err(e) => match e {
            Error::Worker { worker, .. } => Outcome::Failed(worker, e.to_string()),
            _ => Outcome::Failed(usize::MAX, e.to_string()),
        },
    };
    let path = dir.join(format!("worker-{rank}.json"));
    std::fs::write(path, serde_json::to_string(&out).unwrap()).unwrap();
}

/// The same noise, a millisecond a token slower: the killed run's steps last long enough for
/// the test to kill a worker in the middle.
#[derive(Clone)]
struct Slow(AheadNoise);

impl msn::noise::NoiseAugmenter for Slow {
    fn segment_len(&self) -> usize {
        self.0.segment_len()
    }
    fn noise_token(&self, input: &[u32], i: usize, rng: &mut msn::noise::Rng) -> u32 {
        std::thread::sleep(std::time::Duration::from_millis(1));
        self.0.noise_token(input, i, rng)
    }
}
