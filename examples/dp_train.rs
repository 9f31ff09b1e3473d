//! Data-parallel MSN training, the launcher (feature `collective`): one worker per device or
//! process, each computing its share of every step, gradients summed by burn's collective
//! all-reduce, worker 0 writing checkpoints (a stopped run resumes from the last one, on any
//! worker count) and the LoRA adapter.
//!
//! ```text
//! F="--release --features ndarray,collective --example dp_train --"
//! D=results/msn_scale/distilled.jsonl          # msn_finetune's self-distilled answers
//! # one machine, 2 workers as threads of this process
//! cargo run $F --data $D --workers 2 --steps 20 --out runs/dp
//! # one machine, 2 worker processes (this process starts the orchestrator and the workers)
//! cargo run $F --data $D --processes 2 --steps 20 --out runs/dp
//! # several machines: the orchestrator, on one of them (port 3000) ...
//! cargo run $F --orchestrator-only 3000
//! # ... and on each machine, its worker (rank R of N) reachable at THIS_HOST:3001
//! cargo run $F --data $D --rank R --of N --orchestrator ws://ORCH_HOST:3000 \
//!     --host THIS_HOST --port 3001 --steps 20 --out runs/dp
//! # the three side by side on this machine: a table, results/data_parallel/dp_compare.{json,svg}
//! cargo run $F --data $D --compare 2 --steps 12 --batch-size 2 --max-len 256
//! # CUDA (features cuda,collective): --device cuda; --workers N puts one worker on each of
//! # GPUs 0..N of this machine; with processes, one GPU (its first) per process.
//! ```
//! `--data` takes msn's pre-tokenized samples (`{"tokens": [...], "response": {"start", "end"}}`
//! a line, as `msn_finetune` writes them) or chat samples (`{"messages": [...]}` or
//! `{"prompt", "response"}`). Every worker reads the whole file and takes its own micro-batches.
//! `--grad-accum` (micro-batches a step, default: the workers) must be a multiple of the workers.

use burn::backend::Autodiff;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Parser;
use msn::noise::AheadNoise;
use msn::train::{
    LoraConfig, MsnTrainer, Network, TrainConfig, TrainSample, Trainer, World, run_orchestrator,
    train_data_parallel,
};
use std::path::{Path, PathBuf};
mod common;
use common::with_backend;

#[derive(Parser, Debug, Clone)]
#[command(about = "Data-parallel MSN training: threads, processes or machines")]
struct Args {
    /// A .gguf file, a Hugging Face model directory, or `smollm2`.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Training samples (JSONL, see above).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tokens a sample keeps at most.
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Samples a micro-batch.
    #[arg(long, default_value_t = 2)]
    batch_size: usize,
    /// Micro-batches a step, over all workers (default: one per worker).
    #[arg(long)]
    grad_accum: Option<usize>,
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// LoRA rank (0: full fine-tune).
    #[arg(long, default_value_t = 16)]
    lora_rank: usize,
    /// Checkpoints, metrics and adapter (worker 0 writes them; a run resumes from them).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 10)]
    checkpoint_every: usize,
    /// flex, ndarray, cuda or wgpu (what this build has).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Workers as threads of this process (one per GPU 0..N on a GPU backend).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Workers as processes on this machine, over loopback: starts the orchestrator and them.
    #[arg(long)]
    processes: Option<usize>,
    /// This process's rank in a run of processes (with --of, --orchestrator, --host, --port).
    #[arg(long)]
    rank: Option<usize>,
    /// Worker processes in the run.
    #[arg(long)]
    of: Option<usize>,
    /// The orchestrator's address, ws://HOST:PORT.
    #[arg(long)]
    orchestrator: Option<String>,
    /// The host the other workers reach this one at.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port this worker serves its gradients on.
    #[arg(long, default_value_t = 3001)]
    port: u16,
    /// Seconds a worker process waits for the others before it stops the run.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Measure: the same run as 1 worker, N threads and N processes; a table and a chart.
    #[arg(long)]
    compare: Option<usize>,
    /// Where --compare writes its table (JSON) and chart.
    #[arg(long, default_value = "results/data_parallel")]
    report: PathBuf,
    /// Only run the orchestrator, on this port, until stopped.
    #[arg(long)]
    orchestrator_only: Option<u16>,
}

fn main() {
    let args = Args::parse();
    let result = if let Some(port) = args.orchestrator_only {
        eprintln!("orchestrator on port {port} (Ctrl-C stops it)");
        run_orchestrator(port)
    } else if let Some(n) = args.compare {
        compare(n, &args.report)
    } else if let Some(n) = args.processes {
        launch(n)
    } else {
        common::demo_model::resolve(&args.model)
            .and_then(|()| with_backend!(args.device.as_str(), run(&args)))
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Starts the orchestrator and `n` worker processes (this program again) on loopback ports,
/// and waits for the workers; the first that fails stops the others.
fn launch(n: usize) -> msn::Result<()> {
    let free_port = || -> msn::Result<u16> {
        let l =
            std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| msn::Error::io("a port", e))?;
        Ok(l.local_addr()
            .map_err(|e| msn::Error::io("a port", e))?
            .port())
    };
    let spawn = |extra: Vec<String>| {
        again(&["--processes"], extra)?
            .spawn()
            .map_err(|e| msn::Error::io("this program", e))
    };
    let orch_port = free_port()?;
    let mut orchestrator = spawn(vec!["--orchestrator-only".into(), orch_port.to_string()])?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut workers = Vec::new();
    for rank in 0..n {
        let extra = [
            "--rank",
            &rank.to_string(),
            "--of",
            &n.to_string(),
            "--orchestrator",
            &format!("ws://127.0.0.1:{orch_port}"),
            "--host",
            "127.0.0.1",
            "--port",
            &free_port()?.to_string(),
        ];
        workers.push(spawn(extra.iter().map(|s| s.to_string()).collect())?);
    }
    let mut failed = None;
    let mut done = vec![false; n];
    while failed.is_none() && done.iter().any(|d| !d) {
        for (rank, w) in workers.iter_mut().enumerate() {
            if let (false, Ok(Some(status))) = (done[rank], w.try_wait()) {
                done[rank] = true;
                if !status.success() {
                    failed = Some((rank, status));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for w in workers.iter_mut().chain([&mut orchestrator]) {
        let _ = w.kill();
        let _ = w.wait();
    }
    match failed {
        None => Ok(()),
        Some((rank, status)) => Err(msn::Error::Worker {
            worker: rank,
            workers: n,
            reason: format!("its process ended with {status}"),
        }),
    }
}

/// This program again with this invocation's flags, less those named in `drop` (each with its
/// value), plus `extra`.
fn again(drop: &[&str], extra: Vec<String>) -> msn::Result<std::process::Command> {
    let me = std::env::current_exe().map_err(|e| msn::Error::io("this program", e))?;
    let mut kept: Vec<String> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let flag = a.split('=').next().unwrap_or_default().to_string();
        if drop.contains(&flag.as_str()) {
            if !a.contains('=') {
                it.next();
            }
        } else {
            kept.push(a);
        }
    }
    let mut c = std::process::Command::new(me);
    c.args(kept.into_iter().chain(extra));
    Ok(c)
}

/// Runs the same training as 1 worker, `n` threads and `n` processes (each a fresh run of this
/// program, `n` micro-batches a step, no checkpoints), then prints a table and writes it with a
/// bar chart into `dir`.
fn compare(n: usize, dir: &Path) -> msn::Result<()> {
    let runs = [
        ("1 worker", vec!["--workers".to_string(), "1".into()]),
        (
            &*format!("{n} threads"),
            vec!["--workers".into(), n.to_string()],
        ),
        (
            &*format!("{n} processes"),
            vec!["--processes".into(), n.to_string()],
        ),
    ];
    let mut rows = Vec::new();
    for (name, flags) in runs {
        eprintln!("== {name}");
        let mut extra = flags;
        extra.extend(["--grad-accum".into(), n.to_string()]);
        let drop = [
            "--compare",
            "--report",
            "--out",
            "--workers",
            "--grad-accum",
        ];
        let out = again(&drop, extra)?
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| msn::Error::io("this program", e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{'));
        let json: serde_json::Value = match (out.status.success(), line) {
            (true, Some(l)) => serde_json::from_str(l).unwrap_or_default(),
            _ => {
                return Err(msn::Error::InvalidArgument(format!(
                    "the {name} run failed ({})",
                    out.status
                )));
            }
        };
        rows.push((name.to_string(), json));
    }
    let base = rows[0].1["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
    println!(
        "| run | tokens/s | against 1 worker | all-reduce share | bytes a step | final loss |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, j) in &rows {
        let tps = j["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {name} | {tps:.1} | {:.2}x | {:.1}% | {:.1} MB | {} |",
            tps / base,
            100.0 * j["all_reduce_share"].as_f64().unwrap_or(0.0),
            j["all_reduce_bytes_per_step"].as_f64().unwrap_or(0.0) / 1e6,
            j["final_loss"]
        );
    }
    std::fs::create_dir_all(dir).map_err(|e| msn::Error::io(dir, e))?;
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let speed: Vec<f64> = rows
        .iter()
        .map(|r| r.1["tokens_per_s"].as_f64().unwrap_or(f64::NAN) / base)
        .collect();
    let svg = common::plot::bar_chart(
        "Data-parallel MSN training: tokens/s against 1 worker",
        "speedup",
        &names,
        &[("tokens/s over 1 worker's".to_string(), speed)],
        Some(1.0),
    );
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| msn::Error::io(&p, e))
    };
    write("dp_compare.svg", svg)?;
    let json: Vec<_> = rows
        .iter()
        .map(|(n, j)| serde_json::json!({"run": n, "result": j}))
        .collect();
    write(
        "dp_compare.json",
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
}

/// Trains on this process's worker(s) and reports.
fn run<B: Backend>(device: B::Device, args: &Args) -> msn::Result<()> {
    type AB<B> = Autodiff<B>;
    let m = msn::load_with::<AB<B>>(&args.model, &device, msn::WeightDtype::F32)?;
    let samples = read_samples(args.data.as_deref(), &m.tokenizer, args.max_len)?;
    let workers = args.of.unwrap_or(args.workers).max(1);
    let world = match (args.rank, args.of, &args.orchestrator) {
        (Some(rank), Some(of), Some(orch)) => World {
            workers: of,
            rank,
            network: Some(Network {
                timeout: std::time::Duration::from_secs(args.timeout_s),
                ..Network::new(orch, &args.host, args.port)
            }),
        },
        (None, None, None) => World::default(),
        _ => {
            return Err(msn::Error::InvalidArgument(
                "a worker process needs --rank, --of and --orchestrator together".into(),
            ));
        }
    };
    let mut trainer = Trainer {
        config: TrainConfig {
            lr: args.lr,
            steps: args.steps,
            batch_size: args.batch_size,
            grad_accum: args.grad_accum.unwrap_or(workers),
            lora: (args.lora_rank > 0).then(|| LoraConfig::with_rank(args.lora_rank)),
            out_dir: args.out.clone(),
            checkpoint_every: args.checkpoint_every,
            progress: true,
            world: world.clone(),
            ..Default::default()
        },
        noise: AheadNoise::default(),
    };
    let started = std::time::Instant::now();
    let report = if world.network.is_some() {
        trainer.train(m.model, &samples, &[])?.1
    } else {
        let devices = worker_devices::<AB<B>>(&device, &args.device, workers);
        train_data_parallel(&trainer, m.model, &devices, &samples, &[])?.1
    };
    let secs = started.elapsed().as_secs_f64();
    if world.rank == 0 {
        let out = serde_json::json!({
            "workers": workers,
            "steps": report.steps,
            "resumed_from": report.resumed_from,
            "final_loss": report.losses.last(),
            "tokens": report.tokens,
            "tokens_per_s": report.tokens as f64 / secs,
            "all_reduce_share": report.all_reduce_s / secs,
            "all_reduce_bytes_per_step": report.all_reduce_bytes,
        });
        println!("{out}");
    }
    Ok(())
}

/// One device per worker: the same CPU device for every thread, GPUs 0..n otherwise.
fn worker_devices<AB: AutodiffBackend>(
    first: &AB::Device,
    name: &str,
    n: usize,
) -> Vec<AB::Device> {
    use burn::tensor::backend::{Device, DeviceId};
    if matches!(name, "flex" | "ndarray") {
        return vec![first.clone(); n];
    }
    let id = first.to_id();
    (0..n)
        .map(|i| {
            AB::Device::from_id(DeviceId {
                type_id: id.type_id,
                index_id: i as u16,
            })
        })
        .collect()
}

/// msn's pre-tokenized samples, or chat samples rendered with the model's template.
fn read_samples(
    path: Option<&Path>,
    tokenizer: &msn::Tokenizer,
    max_len: usize,
) -> msn::Result<Vec<TrainSample>> {
    let Some(path) = path else {
        return Err(msn::Error::InvalidArgument(
            "--data FILE is needed (for instance results/msn_scale/distilled.jsonl)".into(),
        ));
    };
    // The format from the first non-empty line (each reader below reads the whole file).
    let file = std::fs::File::open(path).map_err(|e| msn::Error::io(path, e))?;
    let first = std::io::BufRead::lines(std::io::BufReader::new(file))
        .map_while(std::io::Result::ok)
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    if !first.contains("\"tokens\"") {
        return Ok(msn::train::load_jsonl(path, tokenizer, max_len, false)?.samples);
    }
    let mut samples = common::distilled::read(path, tokenizer.vocab_size())?;
    for s in &mut samples {
        s.tokens.truncate(max_len);
        s.response.end = s.response.end.min(s.tokens.len());
    }
    samples.retain(|s| s.response.start < s.response.end);
    Ok(samples)
}
