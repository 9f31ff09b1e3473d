//! HumanEval pass@1 (greedy, one answer per problem): each problem is asked in the model's chat
//! template, the code is taken from the answer and run with the problem's tests in a Python
//! subprocess under a timeout. Any lossless decoder gives the same answers (and so the same
//! score), only faster or slower; the decoder's MAT is printed too.
//!
//! ```text
//! cargo run --release --example humaneval -- --limit 20 --decoder tr-jacobi --tree-nodes 16
//! cargo run --release --example humaneval -- --batch 16   # batched greedy: same answers, faster
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
    /// Host engine: auto, native (the GGUF's own blocks, integer products), native-f32,
    /// native-int8, q8 (dense weights quantized to Q8_0, a merged adapter's too), converted
    /// (dense copies of the tensors: what a model with a merged adapter runs, so compare a base
    /// model with `--lora` runs under `converted`) or off.
    #[arg(long, default_value = "auto")]
    host_kernels: msn::HostKernels,
    /// A LoRA adapter directory (PEFT's layout, as `msn_finetune --lora-rank` writes it to
    /// `OUT/train/adapter`) merged into the model before answering.
    #[arg(long)]
    lora: Option<PathBuf>,
    /// Problems answered per forward pass with batched greedy decoding (each answer equals the
    /// problem's greedy answer decoded alone, so the score is the same; several times the
    /// tokens/s on a CPU). Only with `--decoder greedy`; 1: one problem at a time.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Per-problem results (JSONL) and `summary.json` go here.
    #[arg(long, default_value = "results/humaneval")]
    out: PathBuf,
}

fn run<B: Backend>(device: B::Device, args: &Args) -> msn::Result<()> {
    if args.batch == 0 || (args.batch > 1 && args.decoder.decoder != "greedy") {
        return Err(msn::Error::InvalidArgument(format!(
            "--batch {} needs --decoder greedy and at least 1 (batched decoding is greedy's; \
             every lossless decoder gives the same answers)",
            args.batch
        )));
    }
    let all = read_humaneval(&args.problems)?;
    let limit = if args.limit == 0 {
        usize::MAX
    } else {
        args.limit
    };
    let chosen: Vec<_> = all.iter().skip(args.offset).take(limit).collect();
    let options = msn::LoadOptions {
        dtype: args.dtype,
        host: args.host_kernels,
        ..Default::default()
    };
    let m = common::load_with_adapter::<B>(&args.model, &device, options, args.lora.as_deref())?;
    let mut decoder = args.decoder.build(&m.model)?;
    let config = GenerateConfig::new(args.max_new_tokens, &m.tokenizer);
    std::fs::create_dir_all(&args.out).map_err(|e| msn::Error::io(&args.out, e))?;
    let path = args.out.join("results.jsonl");
    let mut file = std::fs::File::create(&path).map_err(|e| msn::Error::io(&path, e))?;
    let mut tally = Tally::default();
    let started = std::time::Instant::now();
    for chunk in chosen.chunks(args.batch) {
        let ids = chunk
            .iter()
            .map(|p| m.chat_prompt(&chat_prompt(p)))
            .collect::<msn::Result<Vec<_>>>()?;
        let t = std::time::Instant::now();
        let answers = if args.batch > 1 {
            msn::Greedy.generate_batch(&m.model, Some(&m.tokenizer), &ids, &config)?
        } else {
            vec![decoder.generate(&m.model, Some(&m.tokenizer), &ids[0], &config)?]
        };
        tally.decode_s += t.elapsed().as_secs_f64();
        for (p, g) in chunk.iter().zip(&answers) {
            let passed = score(args, p, g, &mut file, &path)?;
            tally.add(passed, g);
        }
        let (done, secs) = (tally.problems, started.elapsed().as_secs_f64());
        let eta = secs / done as f64 * (chosen.len() - done) as f64;
        eprint!(
            "\r[{done}/{}] pass@1 {:.3}, {:.1} tok/s, MAT {:.2}, ETA {eta:.0}s   ",
            chosen.len(),
            tally.passed as f64 / done as f64,
            tally.tokens as f64 / tally.decode_s.max(1e-9),
            tally.tokens as f64 / tally.steps.max(1) as f64,
        );
    }
    eprintln!();
    let n = chosen.len().max(1);
    let summary = serde_json::json!({
        "model": args.model, "lora": args.lora, "dtype": args.dtype.to_string(),
        "host_kernels": args.host_kernels.to_string(),
        "decoder": decoder.name(), "batch": args.batch, "problems": chosen.len(),
        "offset": args.offset, "max_new_tokens": args.max_new_tokens,
        "passed": tally.passed, "pass_at_1": tally.passed as f64 / n as f64,
        "mat": tally.tokens as f64 / tally.steps.max(1) as f64,
        "tokens_per_s": tally.tokens as f64 / tally.decode_s.max(1e-9),
    });
    let sp = args.out.join("summary.json");
    std::fs::write(&sp, serde_json::to_string_pretty(&summary).expect("json"))
        .map_err(|e| msn::Error::io(&sp, e))?;
    println!("{summary}");
    Ok(())
}

/// Problems, passes, new tokens and decoding steps so far.
#[derive(Default)]
struct Tally {
    problems: usize,
    passed: usize,
    tokens: usize,
    steps: usize,
    /// Seconds spent decoding (not running the tests).
    decode_s: f64,
}

impl Tally {
    fn add(&mut self, passed: bool, g: &msn::Generation) {
        self.problems += 1;
        self.passed += usize::from(passed);
        self.tokens += g.tokens.len();
        self.steps += g.steps;
    }
}

/// Runs one answer's code against its problem's tests and appends the result line.
fn score(
    args: &Args,
    p: &msn::bench::HumanEvalProblem,
    g: &msn::Generation,
    file: &mut std::fs::File,
    path: &std::path::Path,
) -> msn::Result<bool> {
    let code = extract_code(&g.text);
    let outcome = run_python(
        &args.python,
        &program(p, &code),
        Duration::from_secs_f64(args.timeout),
    )?;
    let line = serde_json::json!({
        "task_id": p.task_id, "passed": outcome.passed(), "outcome": outcome,
        "new_tokens": g.tokens.len(), "steps": g.steps, "wall_time_s": g.wall_time_s,
        "answer": g.text,
    });
    writeln!(file, "{line}").map_err(|e| msn::Error::io(path, e))?;
    Ok(outcome.passed())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = with_backend!(args.device.as_str(), run(&args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
