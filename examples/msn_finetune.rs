//! MSN fine-tuning of a real chat model by self-distillation (default SmolLM2-135M-Instruct).
//!
//! 1. Training prompts: this file's own templates x topics, or `--prompt-file` (for instance
//!    `data/train_prompts.jsonl`: 1,104 prompts); both written for this project, disjoint from
//!    Spec-Bench and HumanEval.
//! 2. The model answers them itself with batched greedy decoding (`--distill-batch` prompts per
//!    forward pass; a journal lets a killed run continue without answering anything twice).
//! 3. Before/after on the same weights in f32: clean held-out loss (the self-distilled answers of
//!    held-out prompts, no noise) and accepted tokens per forward pass (MAT) of Jacobi and
//!    TR-Jacobi on a Spec-Bench subset (first question of each category, first turn).
//! 4. MSN training (ahead noise, L = 4; full or `--lora-rank`) with checkpoints in `<out>/train`
//!    (an interrupted run resumes where it stopped; `--measure-every` measures along the way
//!    into `<out>/growth.jsonl`), then the tuned model exported as a Hugging Face directory
//!    (`<out>/model`, loadable by every example: `--model <out>/model`).
//!
//! ```text
//! cargo run --release --example msn_finetune -- --prompts 240 --epochs 1
//! cargo run --release --example humaneval -- --model results/msn_finetune/model   # quality
//! ```
//! Ends with one JSON line (also `<out>/msn_finetune.json`) and a bar chart of MAT before and
//! after (`<out>/mat.svg`). `--plot-runs A,B` only redraws the chart from the JSON of earlier runs
//! in directories A and B (the original model from A, the tuned model of each run).
//! `--tuned DIR --distilled FILE` only measures: the original against an already tuned model
//! (for instance at another `--eval-tokens`), without training.

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use clap::Parser;
mod common;
use common::plot;
use common::vs_greedy::{Tally, beside_greedy};
use msn::ExportDtype;
use msn::Llama;
use msn::Tokenizer;
use msn::noise::AheadNoise;
use msn::train::{
    DistillRun, MsnTrainer, TrainConfig, TrainSample, Trainer, denoise_accuracy, eval_loss,
};
use msn::{AnyDecoder, Candidates, Jacobi, JacobiConfig, TrJacobi, TrJacobiConfig};
use msn::{GenerateConfig, Result};
use std::path::PathBuf;

type B = Flex;
type AB = Autodiff<Flex>;

#[derive(Parser, Debug)]
#[command(about = "MSN fine-tuning of a chat model on its own answers, with before/after MAT")]
struct Args {
    /// A .gguf file, a Hugging Face model directory, or `smollm2`.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Training prompts: the first N of `--prompt-file`, or of the templates x topics below
    /// (at most 240) without one.
    #[arg(long, default_value_t = 240)]
    prompts: usize,
    /// A JSONL prompt file (`{"id": ..., "prompt": "..."}` a line), e.g.
    /// `data/train_prompts.jsonl` (1,104 prompts, built by `tools/make_train_prompts.py`).
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Prompts answered per forward pass when self-distilling (batched greedy decoding).
    #[arg(long, default_value_t = 8)]
    distill_batch: usize,
    /// Stop after self-distilling (prints its tokens/s).
    #[arg(long)]
    distill_only: bool,
    /// Also measure the model every this many optimizer steps (0: only at the end), each
    /// measurement a line of `OUT/growth.jsonl` (steps, training tokens, the same measures as
    /// before/after): how the effect grows with training. The run stops at each such step (the
    /// trainer resumes bit for bit from its checkpoint), so a killed run continues; steps already
    /// in the file are not measured again.
    #[arg(long, default_value_t = 0)]
    measure_every: usize,
    /// Every n-th prompt is held out for the clean loss.
    #[arg(long, default_value_t = 10)]
    hold_out_every: usize,
    /// New tokens per self-distilled answer.
    #[arg(long, default_value_t = 128)]
    answer_tokens: usize,
    /// Passes over the training answers.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Batch answers of similar length (less padding; `TrainConfig::group_by_length`).
    #[arg(long)]
    group_by_length: bool,
    /// Optimizer steps in total, overriding `--epochs` (0: from the epochs).
    #[arg(long, default_value_t = 0)]
    steps: usize,
    /// Sequences per optimizer step.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-5)]
    lr: f64,
    /// Ahead-noise segment length L.
    #[arg(long, default_value_t = 4)]
    noise_len: usize,
    /// Train LoRA adapters of this rank (alpha = 2 x rank, all seven projections) instead of
    /// every weight; they are written to OUT/train/adapter. 0: full fine-tuning.
    #[arg(long, default_value_t = 0)]
    lora_rank: usize,
    /// Spec-Bench questions for MAT.
    #[arg(long, default_value = "data/spec_bench/question.jsonl")]
    questions: PathBuf,
    /// New tokens per Spec-Bench answer when measuring MAT (0: no MAT, only the held-out loss
    /// and denoising accuracy).
    #[arg(long, default_value_t = 64)]
    eval_tokens: usize,
    /// Output directory.
    #[arg(long, default_value = "results/msn_finetune")]
    out: PathBuf,
    /// Reuse self-distilled samples written by an earlier run (`OUT/distilled.jsonl`, one
    /// tokenized sample a line) instead of generating them again: they depend only on the model,
    /// `--prompts` and `--answer-tokens`, so runs that vary the training reuse them.
    #[arg(long)]
    distilled: Option<PathBuf>,
    /// Only draw `<out>/mat.svg` from earlier runs' `msn_finetune.json` (comma-separated
    /// output directories), without loading a model.
    #[arg(long, value_delimiter = ',')]
    plot_runs: Vec<PathBuf>,
    /// Measure only: compare the original with this already tuned model (a directory written
    /// by an earlier run: `OUT/model`, or a LoRA adapter such as `OUT/train/adapter`, merged
    /// into `--model`); needs `--distilled` for the held-out answers.
    #[arg(long)]
    tuned: Option<PathBuf>,
    /// Measure only the MAT: skip the held-out loss and top-1 at noise (written as null), e.g.
    /// when a run at another `--eval-tokens` already measured them.
    #[arg(long)]
    mat_only: bool,
}

const TEMPLATES: [&str; 6] = [
    "Explain {} to a curious twelve-year-old.",
    "Give me three practical tips about {}.",
    "Write a short paragraph describing {}.",
    "What are common misconceptions about {}?",
    "Write a four-line poem about {}.",
    "List the pros and cons of {}.",
];

const TOPICS: [&str; 40] = [
    "keeping houseplants alive",
    "learning a second language",
    "riding a bicycle in the rain",
    "baking bread at home",
    "saving money on groceries",
    "the water cycle",
    "how volcanoes form",
    "caring for a puppy",
    "writing a cover letter",
    "public libraries",
    "morning routines",
    "composting kitchen scraps",
    "the history of the printing press",
    "playing chess",
    "solar panels on houses",
    "taking better photos with a phone",
    "working from home",
    "the moon's phases",
    "running a first marathon",
    "organising a small wedding",
    "birdwatching",
    "learning to swim as an adult",
    "electric cars",
    "board games for families",
    "the human immune system",
    "recycling plastic",
    "keeping a journal",
    "planting a vegetable garden",
    "how airplanes stay in the air",
    "studying for exams",
    "camping in the mountains",
    "making friends in a new city",
    "the invention of the telephone",
    "drinking enough water",
    "painting with watercolours",
    "volunteering",
    "how bees make honey",
    "reducing screen time",
    "choosing a good book",
    "the seasons of the year",
];

fn prompts(n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for topic in TOPICS {
        for t in TEMPLATES {
            out.push(t.replace("{}", topic));
        }
    }
    // Interleave templates and topics so a prefix of the list covers both.
    out.sort_by_key(|p| {
        p.bytes().fold(0u64, |a, b| {
            a.wrapping_mul(0x100_0000_01B3).wrapping_add(u64::from(b))
        })
    });
    out.truncate(n);
    out
}

#[derive(serde::Serialize, Clone, Copy, Default)]
struct Measure {
    clean_loss: f32,
    /// Top-1 accuracy of the clean next token at ahead-noised positions (L = `--noise-len`,
    /// fixed seed) of the held-out answers, reading the noise; and reading the clean answers.
    denoise_noised: f64,
    denoise_clean: f64,
    jacobi_mat: f64,
    /// TR-Jacobi with the paper's Jacobi candidate rows.
    tr_jacobi_mat: f64,
    /// TR-Jacobi with recycled candidates (this crate's default).
    tr_recycled_mat: f64,
}

/// What every model is measured on: the held-out answers and the Spec-Bench prompts.
struct EvalSet<'a> {
    tok: &'a Tokenizer,
    held: &'a [TrainSample],
    questions: &'a [Vec<u32>],
    /// New tokens per Spec-Bench answer (0: no MAT).
    new_tokens: usize,
    /// Noise segment length for the denoising accuracy.
    noise_len: usize,
    /// Skip the held-out loss and denoising accuracy.
    mat_only: bool,
}

/// Clean held-out loss, denoising accuracy and MAT of Jacobi and TR-Jacobi (each checked
/// against greedy).
fn measure(model: &Llama<B>, e: &EvalSet) -> Result<Measure> {
    let (tok, held, questions, new_tokens) = (e.tok, e.held, e.questions, e.new_tokens);
    let noise_len = e.noise_len;
    let mut out = Measure {
        clean_loss: f32::NAN,
        denoise_noised: f64::NAN,
        denoise_clean: f64::NAN,
        jacobi_mat: f64::NAN,
        tr_jacobi_mat: f64::NAN,
        tr_recycled_mat: f64::NAN,
    };
    if !e.mat_only {
        let den = denoise_accuracy(model, held, &AheadNoise { len: noise_len }, 7, 4);
        out.clean_loss = eval_loss(model, held, 4);
        (out.denoise_noised, out.denoise_clean) = (den.noised, den.clean);
    }
    if new_tokens == 0 {
        return Ok(out);
    }
    let config = GenerateConfig::new(new_tokens, tok);
    let jacobi_candidates = TrJacobiConfig {
        candidates: Candidates::Jacobi,
        ..Default::default()
    };
    let mut decoders: Vec<AnyDecoder> = vec![
        Jacobi::new(JacobiConfig::default()).into(),
        TrJacobi::fixed(jacobi_candidates)?.into(),
        TrJacobi::fixed(TrJacobiConfig::default())?.into(),
    ];
    // Greedy, Jacobi, TR-Jacobi (Jacobi candidates), TR-Jacobi (recycled).
    let mut tally: [Tally; 4] = Default::default();
    for (i, q) in questions.iter().enumerate() {
        let what = format!("question {i}");
        let gens = beside_greedy(model, Some(tok), q, &config, &mut decoders, &what)?;
        for (t, g) in tally.iter_mut().zip(&gens) {
            t.add(g);
        }
        eprint!("  MAT [{}/{}]\r", i + 1, questions.len());
    }
    eprintln!();
    out.jacobi_mat = tally[1].mat();
    out.tr_jacobi_mat = tally[2].mat();
    out.tr_recycled_mat = tally[3].mat();
    Ok(out)
}

fn inference(model: &Llama<AB>) -> Llama<B> {
    let mut m: Llama<B> = model.valid();
    m.enable_host_kernels(128);
    m
}

/// Self-distils `args.prompts` prompts with batched greedy decoding (journal
/// `OUT/distill_journal.jsonl`: a rerun continues where a killed one stopped) and writes the
/// samples to `OUT/distilled.jsonl`; returns them and the answer tokens per second.
fn distill(
    args: &Args,
    base: &Llama<B>,
    tok: &Tokenizer,
) -> Result<(Vec<TrainSample>, Option<f64>)> {
    let all = match &args.prompt_file {
        Some(f) => msn::bench::read_prompt_lines(f)?
            .into_iter()
            .map(|p| p.prompt)
            .take(args.prompts)
            .collect(),
        None => prompts(args.prompts),
    };
    eprintln!(
        "self-distilling {} prompts ({} new tokens each), {} per forward pass",
        all.len(),
        args.answer_tokens,
        args.distill_batch
    );
    let run = DistillRun {
        batch_size: args.distill_batch,
        max_new_tokens: args.answer_tokens,
        max_len: 64 + args.answer_tokens + 32,
        journal: Some(args.out.join("distill_journal.jsonl")),
    };
    let started = std::time::Instant::now();
    let mut first = None;
    let distilled = run.run(base, tok, &all, |done, total| {
        let s = started.elapsed().as_secs_f64();
        let (d0, s0) = *first.get_or_insert((done, s));
        let rate = (done - d0) as f64 / (s - s0).max(1e-9);
        eprint!(
            "  [{done}/{total}] {s:.0}s elapsed, {rate:.2} prompts/s, ETA {:.0}s   \r",
            (total - done) as f64 / rate.max(1e-9)
        );
    })?;
    let rate = distilled.new_tokens as f64 / distilled.seconds.max(1e-9);
    eprintln!(
        "\n{} samples, {} skipped; {} answer tokens generated now in {:.0} s: {rate:.1} tokens/s",
        distilled.samples.len(),
        distilled.skipped.len(),
        distilled.new_tokens,
        distilled.seconds
    );
    let mut lines = String::new();
    for s in &distilled.samples {
        lines.push_str(&serde_json::to_string(s).expect("a sample serializes"));
        lines.push('\n');
    }
    msn::bench::write_atomic(&args.out.join("distilled.jsonl"), lines.as_bytes())?;
    // None when the journal held every answer (nothing generated, nothing timed).
    Ok((
        distilled.samples,
        (distilled.new_tokens > 0).then_some(rate),
    ))
}

fn main() {
    let args = Args::parse();
    msn::train::reuse_freed_memory();
    if let Err(e) = go(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The MAT bar chart: the original model (from the first run) and each run's tuned model (a
/// figure a run did not measure draws no bar).
fn plot_runs(runs: &[(String, serde_json::Value)]) -> String {
    let mats = |m: &serde_json::Value| {
        ["jacobi_mat", "tr_jacobi_mat", "tr_recycled_mat"]
            .iter()
            .map(|k| m[*k].as_f64().unwrap_or(f64::NAN))
            .collect::<Vec<f64>>()
    };
    let mut series = vec![("original".to_string(), mats(&runs[0].1["before"]))];
    for (name, run) in runs {
        series.push((format!("MSN {name}"), mats(&run["after"])));
    }
    let categories =
        ["Jacobi", "TR-Jacobi (Jacobi rows)", "TR-Jacobi (recycled)"].map(String::from);
    plot::bar_chart(
        "SmolLM2-135M-Instruct before and after MSN fine-tuning",
        "accepted tokens per forward pass (MAT)",
        &categories,
        &series,
        Some(1.0),
    )
}

fn replot(args: &Args) -> Result<()> {
    let mut runs = Vec::new();
    for dir in &args.plot_runs {
        let path = dir.join("msn_finetune.json");
        let text = std::fs::read_to_string(&path).map_err(|e| msn::Error::io(&path, e))?;
        let run: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            msn::Error::InvalidArgument(format!(
                "{}: not an msn_finetune result ({e}); run the example there first",
                path.display()
            ))
        })?;
        runs.push((run_name(&run), run));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| msn::Error::io(&args.out, e))?;
    let svg = args.out.join("mat.svg");
    msn::bench::write_atomic(&svg, plot_runs(&runs).as_bytes())?;
    eprintln!("wrote {}", svg.display());
    Ok(())
}

/// `--tuned`: the tuned model measured like `before`; the run's learning rate and steps come
/// from the `msn_finetune.json` next to the model directory, when there is one.
fn measure_only(args: &Args, dir: &std::path::Path, e: &EvalSet, before: Measure) -> Result<()> {
    let device = Default::default();
    // host kernels are on (load_with), and rebuilt from the merged weights by the adapter
    let model = if dir.join("adapter_config.json").is_file() {
        common::demo_model::resolve(&args.model)?;
        let base = msn::load_with::<B>(&args.model, &device, msn::WeightDtype::F32)?;
        base.model.apply_lora_adapter(dir)?
    } else {
        msn::load_with::<B>(&dir.to_string_lossy(), &device, msn::WeightDtype::F32)?.model
    };
    eprintln!("measuring {}", dir.display());
    let after = measure(&model, e)?;
    let run: serde_json::Value = dir
        .parent()
        .and_then(|p| std::fs::read_to_string(p.join("msn_finetune.json")).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let out = serde_json::json!({
        "model": args.model,
        "tuned": dir,
        "held_out_samples": e.held.len(),
        "steps": run["steps"],
        "lr": run["lr"],
        "noise_len": args.noise_len,
        "spec_bench_questions": e.questions.len(),
        "eval_tokens": args.eval_tokens,
        "before": before,
        "after": after,
    });
    std::fs::create_dir_all(&args.out).map_err(|e| msn::Error::io(&args.out, e))?;
    write_result(&args.out, &out)
}

/// A run's legend name: its learning rate and steps.
fn run_name(run: &serde_json::Value) -> String {
    format!(
        "lr {}, {} steps",
        run["lr"].as_f64().unwrap_or(f64::NAN),
        run["steps"].as_u64().unwrap_or(0)
    )
}

/// Writes `OUT/msn_finetune.json` and `OUT/mat.svg` and prints the JSON line.
fn write_result(dir: &std::path::Path, out: &serde_json::Value) -> Result<()> {
    msn::bench::write_atomic(
        &dir.join("msn_finetune.json"),
        format!("{out}\n").as_bytes(),
    )?;
    msn::bench::write_atomic(
        &dir.join("mat.svg"),
        plot_runs(&[(run_name(out), out.clone())]).as_bytes(),
    )?;
    println!("{out}");
    Ok(())
}

fn go(args: &Args) -> Result<()> {
    if !args.plot_runs.is_empty() {
        return replot(args);
    }
    if args.tuned.is_some() && args.distilled.is_none() {
        return Err(msn::Error::InvalidArgument(
            "--tuned measures on the held-out answers of an earlier run: pass --distilled \
             OUT/distilled.jsonl of the run that trained it"
                .into(),
        ));
    }
    let device = Default::default();
    std::fs::create_dir_all(&args.out).map_err(|e| msn::Error::io(&args.out, e))?;
    common::demo_model::resolve(&args.model)?;
    let loaded = msn::load_with::<AB>(&args.model, &device, msn::WeightDtype::F32)?;
    let tok = loaded.tokenizer.clone();
    let base = inference(&loaded.model);

    // 1-2. Self-distilled answers (or an earlier run's).
    let (samples, distill_rate) = match &args.distilled {
        Some(path) => {
            let samples = common::distilled::read(path, tok.vocab_size())?;
            eprintln!(
                "{} self-distilled samples from {}",
                samples.len(),
                path.display()
            );
            (samples, None)
        }
        None => distill(args, &base, &tok)?,
    };
    if args.distill_only {
        return Ok(());
    }
    let (train, held) = split_held_out(samples, args.hold_out_every.max(2));
    let questions = spec_bench_prompts(args, &tok)?;

    // 3. Before.
    eprintln!(
        "measuring the original model ({} questions)",
        questions.len()
    );
    let eval = EvalSet {
        tok: &tok,
        held: &held,
        questions: &questions,
        new_tokens: args.eval_tokens,
        noise_len: args.noise_len,
        mat_only: args.mat_only,
    };
    let before = measure(&base, &eval)?;
    drop(base);
    if let Some(dir) = &args.tuned {
        return measure_only(args, dir, &eval, before);
    }

    // 4. MSN training.
    let mut trainer = make_trainer(args, train.len());
    let steps = trainer.config.steps;
    eprintln!("MSN training: {} samples, {steps} steps", train.len());
    let (tuned, report, after) = train_measured(args, &mut trainer, loaded.model, &train, &eval)?;
    growth_report(&args.out, &before)?;
    let exported = msn::LoadedModel {
        model: tuned.valid(),
        tokenizer: tok.clone(),
        path: args.out.join("model"),
    };
    exported.save_hf(&args.out.join("model"), ExportDtype::F32)?;

    let out = serde_json::json!({
        "model": args.model,
        "train_samples": train.len(),
        "held_out_samples": held.len(),
        "distill_tokens_per_s": distill_rate,
        "distill_batch": args.distill_batch,
        "steps": report.steps,
        "train_tokens_per_s": report.tokens_per_s,
        "noise_len": args.noise_len,
        "lr": args.lr,
        "spec_bench_questions": questions.len(),
        "eval_tokens": args.eval_tokens,
        "before": before,
        "after": after,
    });
    write_result(&args.out, &out)
}

/// The trainer `msn_finetune`'s flags describe, for `n_train` training samples.
fn make_trainer(args: &Args, n_train: usize) -> Trainer<AheadNoise> {
    let steps = match args.steps {
        0 => (n_train / args.batch_size).max(1) * args.epochs,
        n => n,
    };
    Trainer {
        config: TrainConfig {
            lr: args.lr,
            warmup_steps: steps / 10 + 1,
            steps,
            batch_size: args.batch_size,
            group_by_length: args.group_by_length,
            progress: true,
            checkpoint_every: 25,
            out_dir: Some(args.out.join("train")),
            lora: (args.lora_rank > 0).then(|| msn::train::LoraConfig::with_rank(args.lora_rank)),
            ..Default::default()
        },
        noise: AheadNoise {
            len: args.noise_len,
        },
    }
}

/// Trains to the end, stopping every `--measure-every` steps to measure the model (a line of
/// `OUT/growth.jsonl` each; steps already there are not measured again); returns the trained
/// model, its report and its final measurement.
fn train_measured(
    args: &Args,
    trainer: &mut Trainer<AheadNoise>,
    model: Llama<AB>,
    train: &[TrainSample],
    eval: &EvalSet,
) -> Result<(Llama<AB>, msn::train::TrainReport, Measure)> {
    let steps = trainer.config.steps;
    let every = if args.measure_every == 0 {
        steps
    } else {
        args.measure_every
    };
    let path = args.out.join("growth.jsonl");
    let done: std::collections::BTreeSet<u64> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["steps"].as_u64())
        .collect();
    let mut stops: Vec<usize> = (1..=steps / every).map(|k| k * every).collect();
    if stops.last() != Some(&steps) {
        stops.push(steps);
    }
    let mut last = None;
    for stop in stops {
        if stop < steps && done.contains(&(stop as u64)) {
            continue;
        }
        trainer.config.stop_at = Some(stop);
        let (tuned, report) = trainer.train(model.clone(), train, eval.held)?;
        eprintln!(
            "measuring after {} steps ({} training tokens)",
            report.steps, report.tokens
        );
        let m = measure(&inference(&tuned), eval)?;
        let line = serde_json::json!({"steps": report.steps, "tokens": report.tokens,
            "measure": m});
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| msn::Error::io(&path, e))?;
        std::io::Write::write_all(&mut f, format!("{line}\n").as_bytes())
            .map_err(|e| msn::Error::io(&path, e))?;
        last = Some((tuned, report, m));
    }
    Ok(last.expect("at least the final stop"))
}

/// Prints `OUT/growth.jsonl` (with the original model at 0 tokens) as a table and draws
/// `OUT/growth_denoise.svg` and `OUT/growth_mat.svg` against training tokens.
fn growth_report(out: &std::path::Path, before: &Measure) -> Result<()> {
    let path = out.join("growth.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| msn::Error::io(&path, e))?;
    let mut rows: Vec<(u64, u64, Measure)> = vec![(0, 0, *before)];
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| msn::Error::InvalidArgument(format!("{}: {e}", path.display())))?;
        let m = &v["measure"];
        let f = |k: &str| m[k].as_f64().unwrap_or(f64::NAN);
        let measure = Measure {
            clean_loss: f("clean_loss") as f32,
            denoise_noised: f("denoise_noised"),
            denoise_clean: f("denoise_clean"),
            jacobi_mat: f("jacobi_mat"),
            tr_jacobi_mat: f("tr_jacobi_mat"),
            tr_recycled_mat: f("tr_recycled_mat"),
        };
        rows.push((
            v["steps"].as_u64().unwrap_or(0),
            v["tokens"].as_u64().unwrap_or(0),
            measure,
        ));
    }
    rows.sort_by_key(|r| r.0);
    println!(
        "| steps | training tokens | clean loss | top-1 at noise | Jacobi MAT | TR-Jacobi MAT (Jacobi rows) | TR-Jacobi MAT (recycled) |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (s, t, m) in &rows {
        println!(
            "| {s} | {t} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            m.clean_loss, m.denoise_noised, m.jacobi_mat, m.tr_jacobi_mat, m.tr_recycled_mat
        );
    }
    let series = |f: fn(&Measure) -> f64, name: &str| plot::Series {
        name: name.into(),
        points: rows.iter().map(|(_, t, m)| (*t as f64, f(m))).collect(),
    };
    let svg = plot::line_chart(
        "MSN on SmolLM2: reading through noise",
        "training tokens",
        "top-1 accuracy of the clean token at noised positions",
        &[series(|m| m.denoise_noised, "top-1 at noise")],
    );
    msn::bench::write_atomic(&out.join("growth_denoise.svg"), svg.as_bytes())?;
    let svg = plot::line_chart(
        "MSN on SmolLM2: accepted tokens per forward pass",
        "training tokens",
        "MAT",
        &[
            series(|m| m.jacobi_mat, "Jacobi"),
            series(|m| m.tr_jacobi_mat, "TR-Jacobi, Jacobi rows"),
            series(|m| m.tr_recycled_mat, "TR-Jacobi, recycled"),
        ],
    );
    msn::bench::write_atomic(&out.join("growth_mat.svg"), svg.as_bytes())
}

/// Every `every`-th sample held out, the rest for training.
fn split_held_out(samples: Vec<TrainSample>, every: usize) -> (Vec<TrainSample>, Vec<TrainSample>) {
    let (mut train, mut held) = (Vec::new(), Vec::new());
    for (i, s) in samples.into_iter().enumerate() {
        if i % every == every - 1 {
            held.push(s);
        } else {
            train.push(s);
        }
    }
    (train, held)
}

/// The Spec-Bench subset MAT is measured on: the first question of each category, first turn,
/// in the chat template.
fn spec_bench_prompts(args: &Args, tok: &Tokenizer) -> Result<Vec<Vec<u32>>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut questions = Vec::new();
    for q in msn::bench::read_spec_bench(&args.questions)? {
        if seen.insert(q.category.clone()) {
            questions.push(tok.chat_prompt(&q.turns[0])?);
        }
    }
    Ok(questions)
}
