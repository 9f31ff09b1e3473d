//! HumanEval pass@1 (greedy, one answer per problem): each problem is asked in the model's chat
//! template, the code is taken from the answer and run with the problem's tests in a Python
//! subprocess under a timeout. Any lossless decoder gives the same answers (and so the same
//! score), only faster or slower; the decoder's MAT is printed too.
//!
//! ```text
//! cargo run --release --example humaneval -- --limit 20 --decoder tr-jacobi --tree-nodes 16
//! ```
//!
//! This executes code the model wrote: run it where that is acceptable.

mod common;
use burn::prelude::*;
use clap::Parser;
use common::decoders::DecoderArgs;
use common::with_backend;
use msn::Decoder;
use msn::GenerateConfig;
use msn::bench::{chat_prompt, extract_code, program, read_humaneval, run_python};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "HumanEval pass@1 by executing the model's code")]
struct Args {
    /// A .gguf file, a Hugging Face model directory, or `smollm2`.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// HumanEval.jsonl.
    #[arg(long, default_value = "data/humaneval/HumanEval.jsonl")]
    problems: PathBuf,
    /// Problems to run (0 = all 164), from `--offset`.
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// First problem.
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// New tokens per answer.
    #[arg(long, default_value_t = 384)]
    max_new_tokens: usize,
    /// Seconds each program may run.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Python interpreter.
    #[arg(long, default_value = "python3")]
    python: String,
    #[command(flatten)]
    decoder: DecoderArgs,
    /// Backend: flex, ndarray, cuda or wgpu (those compiled in).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Weight storage.
    #[arg(long, default_value = "f16")]
    dtype: msn::WeightDtype,
    /// A LoRA adapter directory (PEFT's layout, as `msn_finetune --lora-rank` writes it to
    /// `OUT/train/adapter`) merged into the model before answering.
    #[arg(long)]
    lora: Option<PathBuf>,
    /// Per-problem results (JSONL) and `summary.json` go here.
    #[arg(long, default_value = "results/humaneval")]
    out: PathBuf,
}

fn run<B: Backend>(device: B::Device, args: &Args) -> msn::Result<()> {
    let all = read_humaneval(&args.problems)?;
    let chosen: Vec<_> = all
        .iter()
        .skip(args.offset)
        .take(if args.limit == 0 {
            usize::MAX
        } else {
            args.limit
        })
        .collect();
    let mut m = msn::load_with::<B>(&args.model, &device, args.dtype)?;
    if let Some(dir) = &args.lora {
        m.model = m.model.apply_lora_adapter(dir)?;
    }
    let mut decoder = args.decoder.build(&m.model)?;
    let config = GenerateConfig::new(args.max_new_tokens, &m.tokenizer);
    std::fs::create_dir_all(&args.out).map_err(|e| msn::Error::io(&args.out, e))?;
    let path = args.out.join("results.jsonl");
    let mut file = std::fs::File::create(&path).map_err(|e| msn::Error::io(&path, e))?;
    let (mut passed, mut tokens, mut steps, mut secs) = (0usize, 0usize, 0usize, 0.0f64);
    let started = std::time::Instant::now();
    for (i, p) in chosen.iter().enumerate() {
        let ids = m.chat_prompt(&chat_prompt(p))?;
        let g = decoder.generate(&m.model, Some(&m.tokenizer), &ids, &config)?;
        let code = extract_code(&g.text);
        let outcome = run_python(
            &args.python,
            &program(p, &code),
            Duration::from_secs_f64(args.timeout),
        )?;
        passed += usize::from(outcome.passed());
        tokens += g.tokens.len();
        steps += g.steps;
        secs += g.wall_time_s;
        let line = serde_json::json!({
            "task_id": p.task_id, "passed": outcome.passed(), "outcome": outcome,
            "new_tokens": g.tokens.len(), "steps": g.steps, "wall_time_s": g.wall_time_s,
            "answer": g.text,
        });
        writeln!(file, "{line}").map_err(|e| msn::Error::io(&path, e))?;
        let done = i + 1;
        let eta = started.elapsed().as_secs_f64() / done as f64 * (chosen.len() - done) as f64;
        eprint!(
            "\r[{done}/{}] pass@1 {:.3}, {:.1} tok/s, MAT {:.2}, ETA {eta:.0}s   ",
            chosen.len(),
            passed as f64 / done as f64,
            tokens as f64 / secs.max(1e-9),
            tokens as f64 / steps.max(1) as f64,
        );
    }
    eprintln!();
    let n = chosen.len().max(1);
    let summary = serde_json::json!({
        "model": args.model, "decoder": decoder.name(), "problems": chosen.len(),
        "offset": args.offset, "max_new_tokens": args.max_new_tokens,
        "passed": passed, "pass_at_1": passed as f64 / n as f64,
        "mat": tokens as f64 / steps.max(1) as f64, "tokens_per_s": tokens as f64 / secs.max(1e-9),
    });
    let sp = args.out.join("summary.json");
    std::fs::write(&sp, serde_json::to_string_pretty(&summary).expect("json"))
        .map_err(|e| msn::Error::io(&sp, e))?;
    println!("{summary}");
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = with_backend!(args.device.as_str(), run(&args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
