//! MSN from scratch, fast: a small byte-level llama trained on an offline corpus (the Python
//! standard library's own sources, present wherever Python is), once with plain SFT and once
//! with MSN ahead noise, same budget and seed; then clean held-out loss, and accepted tokens per
//! forward pass (MAT) of Jacobi and TR-Jacobi decoding on held-out prompts.
//!
//! ```text
//! cargo run --release --example msn_tiny                 # SFT vs MSN (L = 4), ~9 minutes
//! cargo run --release --example msn_tiny -- --ablation   # L in {0,1,2,4,8}, ahead vs random
//! cargo run --release --example msn_tiny -- --steps 10 --eval-prompts 2   # CI smoke test
//! ```
//! Ends with one JSON line: `{"sft": {"eval_loss", "jacobi_mat", "tr_jacobi_mat"}, "msn": {..}}`
//! (plus the ablation rows). Writes `<out>/msn_tiny.json` and, with `--ablation`, plots.

mod common;
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use clap::Parser;
use common::plot;
use common::vs_greedy::{Tally, beside_greedy};
use msn::noise::{AheadNoise, Noise, RandomNoise};
use msn::train::{MsnTrainer, TrainConfig, TrainSample, Trainer, denoise_accuracy, eval_loss};
use msn::{AnyDecoder, Candidates, Jacobi, TrJacobi, TrJacobiConfig};
use msn::{GenerateConfig, Result};
use msn::{Llama, LlamaConfig};
use std::path::{Path, PathBuf};

type B = Flex;
type AB = Autodiff<Flex>;

#[derive(Parser, Debug)]
#[command(about = "SFT vs MSN on a small byte-level llama trained from scratch")]
struct Args {
    /// Directory of .py files (default: this machine's Python standard library).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Training corpus size in bytes.
    #[arg(long, default_value_t = 3_000_000)]
    corpus_bytes: usize,
    /// Optimizer steps per run.
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    /// Samples per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// MSN noise segment length L.
    #[arg(long, default_value_t = 4)]
    noise_len: usize,
    /// Held-out prompts for MAT.
    #[arg(long, default_value_t = 16)]
    eval_prompts: usize,
    /// New bytes generated per prompt (the prompt is the first half of a held-out window).
    #[arg(long, default_value_t = 32)]
    new_tokens: usize,
    /// Also run L in {0,1,2,4,8} (ahead) and random noise with L = 4.
    #[arg(long)]
    ablation: bool,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bytes per training window (one noise segment per window: shorter windows show the
    /// model more noise per token trained).
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Leading bytes of each window that act as the prompt (masked from the loss).
    #[arg(long, default_value_t = 16)]
    prompt_bytes: usize,
    /// Output directory.
    #[arg(long, default_value = "results/msn_tiny")]
    out: PathBuf,
}

fn python_stdlib() -> Result<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .map_err(|e| {
            msn::Error::InvalidArgument(format!(
                "cannot run python3 to find its standard library ({e}); pass --corpus DIR"
            ))
        })?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn py_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| Some(e.ok()?.path())).collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() && !name.starts_with('.') && name != "site-packages" && name != "test" {
            py_files(&p, out);
        } else if name.ends_with(".py") {
            out.push(p);
        }
    }
}

/// Train and held-out byte streams: every 10th file is held out.
fn corpus(args: &Args) -> Result<(Vec<u32>, Vec<u32>)> {
    let dir = match &args.corpus {
        Some(d) => d.clone(),
        None => python_stdlib()?,
    };
    let mut files = Vec::new();
    py_files(&dir, &mut files);
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, f) in files.iter().enumerate() {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        let dst = if i % 10 == 9 { &mut held } else { &mut train };
        if dst.len() < args.corpus_bytes {
            dst.extend(bytes.iter().map(|&b| u32::from(b)));
        }
        if train.len() >= args.corpus_bytes && held.len() >= args.corpus_bytes / 10 {
            break;
        }
    }
    if train.len() < args.window * 64 || held.len() < args.window * 8 {
        return Err(msn::Error::InvalidArgument(format!(
            "corpus {dir:?} has too little Python ({} bytes); pass --corpus DIR",
            train.len()
        )));
    }
    held.truncate(args.corpus_bytes / 10);
    Ok((train, held))
}

/// Windows of `window` bytes whose first `prompt` bytes are the (untrained) prompt.
fn windows(stream: &[u32], window: usize, prompt: usize) -> Vec<TrainSample> {
    let mut samples = msn::train::windows(stream, window);
    for s in &mut samples {
        s.response = prompt..window;
    }
    samples
}

fn tiny_config() -> LlamaConfig {
    let mut c = LlamaConfig::tiny(256);
    c.hidden_size = 128;
    c.intermediate_size = 384;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.num_key_value_heads = Some(2);
    c.max_position_embeddings = 512;
    c
}

#[derive(serde::Serialize, Clone)]
struct Outcome {
    noise: String,
    len: usize,
    eval_loss: f32,
    /// Top-1 accuracy of the clean next token at ahead-noised positions (L = 4, fixed seed)
    /// of held-out windows, reading the noise, and reading the clean text.
    denoise_noised: f64,
    denoise_clean: f64,
    jacobi_mat: f64,
    tr_jacobi_mat: f64,
    train_tokens_per_s: f64,
    train_s: f64,
}

fn run(
    args: &Args,
    name: &str,
    noise: Noise,
    train: &[TrainSample],
    held: &[TrainSample],
) -> Result<Outcome> {
    let device = Default::default();
    <AB as burn::tensor::backend::Backend>::seed(&device, args.seed);
    let model: Llama<AB> = Llama::init(&tiny_config(), &device);
    let len = match &noise {
        Noise::None => 0,
        Noise::Ahead(a) => a.len,
        Noise::Random(r) => r.len,
    };
    let mut trainer = Trainer {
        config: TrainConfig {
            lr: args.lr,
            warmup_steps: args.steps / 20 + 1,
            steps: args.steps,
            batch_size: args.batch_size,
            seed: args.seed,
            progress: true,
            out_dir: Some(args.out.join(format!("run-{name}"))),
            ..Default::default()
        },
        noise,
    };
    // A fresh run each time: clear an earlier run's checkpoints.
    let _ = std::fs::remove_dir_all(args.out.join(format!("run-{name}")));
    eprintln!("training {name}");
    let t0 = std::time::Instant::now();
    let eval_set: Vec<TrainSample> = held.iter().take(64).cloned().collect();
    let (model, report) = trainer.train(model, train, &[])?;
    let train_s = t0.elapsed().as_secs_f64();
    let mut m: Llama<B> = model.valid();
    m.enable_host_kernels(128);
    let loss = eval_loss(&m, &eval_set, 16);
    let den = denoise_accuracy(&m, &eval_set, &AheadNoise { len: 4 }, 7, 16);
    let cfg = GenerateConfig {
        max_new_tokens: args.new_tokens,
        eos_ids: vec![],
        stop_strings: vec![],
        sampling: None,
        prompt_cache: None,
    };
    // Greedy, Jacobi, TR-Jacobi with the paper's candidates (what noisy training is meant to
    // improve).
    let mut tally: [Tally; 3] = Default::default();
    for (i, s) in held.iter().step_by(7).take(args.eval_prompts).enumerate() {
        let prompt = &s.tokens[..s.tokens.len() / 2];
        let mut decoders: Vec<AnyDecoder> = vec![
            Jacobi::default().into(),
            TrJacobi::fixed(TrJacobiConfig {
                candidates: Candidates::Jacobi,
                ..Default::default()
            })?
            .into(),
        ];
        let what = format!("held-out prompt {i}");
        let gens = beside_greedy(&m, None, prompt, &cfg, &mut decoders, &what)?;
        for (t, g) in tally.iter_mut().zip(&gens) {
            t.add(g);
        }
    }
    let o = Outcome {
        noise: name.to_string(),
        len,
        eval_loss: loss,
        denoise_noised: den.noised,
        denoise_clean: den.clean,
        jacobi_mat: tally[1].mat(),
        tr_jacobi_mat: tally[2].mat(),
        train_tokens_per_s: report.tokens_per_s,
        train_s,
    };
    eprintln!(
        "{name}: clean eval loss {:.4}, top-1 at noised positions {:.3} (clean input {:.3}), Jacobi MAT {:.3}, TR-Jacobi MAT {:.3} ({:.0} s, {:.0} tok/s)",
        o.eval_loss,
        o.denoise_noised,
        o.denoise_clean,
        o.jacobi_mat,
        o.tr_jacobi_mat,
        train_s,
        o.train_tokens_per_s
    );
    Ok(o)
}

fn main() {
    let args = Args::parse();
    if let Err(e) = go(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn go(args: &Args) -> Result<()> {
    if args.prompt_bytes == 0 || args.prompt_bytes + 8 > args.window {
        return Err(msn::Error::InvalidArgument(format!(
            "--prompt-bytes {} must be at least 1 and leave 8 response bytes in a --window of {}",
            args.prompt_bytes, args.window
        )));
    }
    let (train_stream, held_stream) = corpus(args)?;
    let (train, held) = (
        windows(&train_stream, args.window, args.prompt_bytes),
        windows(&held_stream, args.window, args.prompt_bytes),
    );
    eprintln!(
        "corpus: {} train windows, {} held-out windows of {} bytes ({}-byte prompt)",
        train.len(),
        held.len(),
        args.window,
        args.prompt_bytes
    );
    std::fs::create_dir_all(&args.out).map_err(|e| msn::Error::io(&args.out, e))?;
    let sft = run(args, "sft", Noise::None, &train, &held)?;
    let msn_run = run(
        args,
        "msn",
        Noise::Ahead(AheadNoise {
            len: args.noise_len,
        }),
        &train,
        &held,
    )?;
    let mut rows = vec![sft.clone(), msn_run.clone()];
    if args.ablation {
        rows.extend(ablation(args, &train, &held)?);
        ablation_report(args, &rows)?;
    }
    let summary = serde_json::json!({
        "sft": {"eval_loss": sft.eval_loss, "jacobi_mat": sft.jacobi_mat, "tr_jacobi_mat": sft.tr_jacobi_mat, "denoise_top1": sft.denoise_noised},
        "msn": {"eval_loss": msn_run.eval_loss, "jacobi_mat": msn_run.jacobi_mat, "tr_jacobi_mat": msn_run.tr_jacobi_mat, "denoise_top1": msn_run.denoise_noised},
        "runs": rows,
        "setup": {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "window": args.window, "prompt": args.prompt_bytes,
                  "corpus_bytes": train_stream.len(), "new_tokens": args.new_tokens, "eval_prompts": args.eval_prompts},
    });
    msn::bench::write_atomic(
        &args.out.join("msn_tiny.json"),
        serde_json::to_string_pretty(&summary)
            .expect("json")
            .as_bytes(),
    )?;
    println!(
        "{}",
        serde_json::json!({"sft": summary["sft"], "msn": summary["msn"]})
    );
    Ok(())
}

/// The ablation runs beyond SFT and MSN at L = 4: ahead noise of 1, 2 and 8 tokens, and random
/// noise of 4.
fn ablation(args: &Args, train: &[TrainSample], held: &[TrainSample]) -> Result<Vec<Outcome>> {
    let mut rows = Vec::new();
    for l in [1usize, 2, 8] {
        let noise = Noise::Ahead(AheadNoise { len: l });
        rows.push(run(args, &format!("ahead-L{l}"), noise, train, held)?);
    }
    let random = Noise::Random(RandomNoise {
        len: 4,
        vocab: 256,
        special: Vec::new(),
    });
    rows.push(run(args, "random-L4", random, train, held)?);
    Ok(rows)
}

/// The ablation's table and its charts (MAT and clean loss against L).
fn ablation_report(args: &Args, rows: &[Outcome]) -> Result<()> {
    println!(
        "| run | L | clean eval loss | top-1 at noise | Jacobi MAT | TR-Jacobi MAT |\n|---|---|---|---|---|---|"
    );
    for r in rows {
        println!(
            "| {} | {} | {:.4} | {:.3} | {:.3} | {:.3} |",
            r.noise, r.len, r.eval_loss, r.denoise_noised, r.jacobi_mat, r.tr_jacobi_mat
        );
    }
    let mut ahead: Vec<&Outcome> = rows.iter().filter(|r| r.noise != "random-L4").collect();
    ahead.sort_by_key(|r| r.len);
    let series = |f: fn(&Outcome) -> f64, name: &str| plot::Series {
        name: name.into(),
        points: ahead.iter().map(|r| (r.len as f64, f(r))).collect(),
    };
    let svg = plot::line_chart(
        "MSN ablation (ahead noise), byte-level llama from scratch",
        "noise segment length L",
        "accepted tokens per forward pass",
        &[
            series(|r| r.jacobi_mat, "Jacobi MAT"),
            series(|r| r.tr_jacobi_mat, "TR-Jacobi MAT"),
        ],
    );
    msn::bench::write_atomic(&args.out.join("ablation_mat.svg"), svg.as_bytes())?;
    let svg = plot::line_chart(
        "MSN ablation: clean held-out loss",
        "noise segment length L",
        "clean eval loss (nats/byte)",
        &[series(|r| f64::from(r.eval_loss), "clean eval loss")],
    );
    msn::bench::write_atomic(&args.out.join("ablation_loss.svg"), svg.as_bytes())
}
