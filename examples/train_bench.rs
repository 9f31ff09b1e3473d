//! Training throughput and peak memory of MSN fine-tuning on a real model (default SmolLM2-135M,
//! f32 weights, autodiff on flex): a few optimizer steps on fixed-length samples with ahead
//! noise, then tokens/s (forward + backward + AdamW, over response and prompt tokens alike)
//! and the process's peak resident memory.
//!
//! ```text
//! cargo run --release --example train_bench -- --steps 6 --batch-size 4 --seq-len 256
//! ```
//!
//! `scripts/train_side_by_side.sh` runs it and the same step in PyTorch, one after the other.

mod common;
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use clap::Parser;
use msn::noise::Rng;
use msn::noise::{AheadNoise, NoNoise};
use msn::train::{LoraConfig, TrainConfig, TrainReport, TrainSample, Trainer, train_data_parallel};

type AB = Autodiff<Flex>;

#[derive(Parser, Debug)]
#[command(about = "MSN training throughput and peak memory on a real model")]
struct Args {
    /// A .gguf file, a Hugging Face model directory, or `smollm2`.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Optimizer steps timed (after one warm-up step).
    #[arg(long, default_value_t = 6)]
    steps: usize,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Tokens per sequence (the second half is the response).
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Train without noise (plain SFT) instead of ahead noise.
    #[arg(long)]
    no_noise: bool,
    /// Also write the loaded model as a Hugging Face directory here (f32), so that another
    /// framework can time the same step on the same weights (`scripts/torch_train_bench.py`).
    #[arg(long)]
    export_hf: Option<std::path::PathBuf>,
    /// Train LoRA adapters of this rank on all seven projections (alpha = 2 x rank) instead of
    /// every weight; 0: full fine-tuning.
    #[arg(long, default_value_t = 0)]
    lora_rank: usize,
    /// Leave the C allocator's defaults (do not call `msn::train::reuse_freed_memory`), to
    /// measure what that setting is worth.
    #[arg(long)]
    default_allocator: bool,
    /// Data-parallel workers (threads, `collective` feature): each step is this many
    /// micro-batches, timed once on one worker and once split over the workers.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

fn main() -> msn::Result<()> {
    let args = Args::parse();
    let reuse = !args.default_allocator && msn::train::reuse_freed_memory();
    let device = Default::default();
    common::demo_model::resolve(&args.model)?;
    let m = msn::load_with::<AB>(&args.model, &device, msn::WeightDtype::F32)?;
    let vocab = m.model.config().vocab_size;
    let params: usize = msn::__internal::named_tensors(&m.model)
        .iter()
        .map(|(_, _, v)| v.len())
        .sum();
    let after_load = common::peak_rss_mib();
    if let Some(dir) = &args.export_hf {
        let valid = msn::LoadedModel {
            model: m.model.valid(),
            tokenizer: m.tokenizer.clone(),
            path: dir.clone(),
        };
        valid.save_hf(dir, msn::ExportDtype::F32)?;
        eprintln!("wrote {}", dir.display());
    }
    // Fixed-length samples of random tokens: throughput does not depend on the text.
    let mut rng = Rng::new(1);
    let w = args.workers.max(1);
    let samples: Vec<TrainSample> = (0..args.batch_size * w * (args.steps + 1))
        .map(|_| TrainSample {
            tokens: (0..args.seq_len).map(|_| rng.below(vocab) as u32).collect(),
            response: args.seq_len / 2..args.seq_len,
        })
        .collect();
    let config = |steps: usize| TrainConfig {
        lr: 1e-5,
        warmup_steps: 1,
        steps,
        batch_size: args.batch_size,
        grad_accum: w,
        progress: true,
        lora: (args.lora_rank > 0).then(|| LoraConfig::with_rank(args.lora_rank)),
        ..Default::default()
    };
    let devices = vec![device; w];
    // Seconds and report of a run of `steps` on `workers` workers.
    let run = |model, steps: usize, workers: usize| -> msn::Result<(f64, TrainReport)> {
        let started = std::time::Instant::now();
        let report = if args.no_noise {
            let t = Trainer {
                config: config(steps),
                noise: NoNoise,
            };
            train_data_parallel(&t, model, &devices[..workers], &samples, &[])?.1
        } else {
            let t = Trainer {
                config: config(steps),
                noise: AheadNoise::default(),
            };
            train_data_parallel(&t, model, &devices[..workers], &samples, &[])?.1
        };
        assert!(report.losses.iter().all(|l| l.is_finite()));
        Ok((started.elapsed().as_secs_f64(), report))
    };
    // One warm-up step (allocations, first-call costs), then the timed run.
    run(m.model.clone(), 1, 1)?;
    let (secs, _) = run(m.model.clone(), args.steps, 1)?;
    let tokens = args.steps * args.batch_size * w * args.seq_len;
    let parallel = match w {
        1 => serde_json::Value::Null,
        _ => {
            run(m.model.clone(), 1, w)?;
            let (s, report) = run(m.model, args.steps, w)?;
            serde_json::json!({
                "workers": w,
                "tokens_per_s": tokens as f64 / s,
                "speedup": secs / s,
                "all_reduce_share": report.all_reduce_s / s,
                "all_reduce_bytes_per_step": report.all_reduce_bytes,
            })
        }
    };
    let out = serde_json::json!({
        "model": args.model,
        "parameters": params,
        "noise": if args.no_noise { "none" } else { "ahead L=4" },
        "lora_rank": args.lora_rank,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "tokens_per_s": tokens as f64 / secs,
        "s_per_step": secs / args.steps as f64,
        "peak_rss_mib_after_load": after_load,
        "peak_rss_mib": common::peak_rss_mib(),
        "reuse_freed_memory": reuse,
        "micro_batches_per_step": w,
        "data_parallel": parallel,
    });
    println!("{out}");
    Ok(())
}
