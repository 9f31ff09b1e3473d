//! Generate text with a llama-family model.
//!
//! ```text
//! cargo run --release --example generate -- --model smollm2 --prompt "What is Rust?" --chat
//! cargo run --release --example generate -- --model m.gguf --prompts p.jsonl --json
//! ```
//! `--json` prints one line per prompt: `{"id", "prompt_tokens", "tokens", "text", "new_tokens",
//! "steps", "accept_lengths", "wall_time_s"}`.

mod common;
use burn::prelude::*;
use clap::Parser;
use common::with_backend;
use msn::decode::{
    DraftBudget, JacobiConfig, LatencyCurve, PldConfig, jacobi, prompt_lookup,
    prompt_lookup_with_budget,
};
use msn::prompts::{PromptLine, read_prompt_lines};
use msn::{GenerateConfig, Message};
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    about = "Generate text with a llama-family model (GGUF file, Hugging Face directory, or `smollm2`)"
)]
struct Args {
    /// A .gguf file, a Hugging Face model directory, or `smollm2` (fetched on first use).
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// One prompt.
    #[arg(long, conflicts_with = "prompts")]
    prompt: Option<String>,
    /// A JSONL file of `{"id": ..., "prompt": "..."}` lines.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Wrap each prompt as a user message in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Decoding method: greedy, pld (prompt lookup) or jacobi; all give greedy's output.
    #[arg(long, default_value = "greedy", value_parser = ["greedy", "pld", "jacobi"])]
    decoder: String,
    /// Jacobi: draft window.
    #[arg(long, default_value_t = 5)]
    window: usize,
    /// PLD: most draft tokens per step.
    #[arg(long, default_value_t = 10)]
    max_draft: usize,
    /// PLD: size drafts from this device's measured latency curve and the observed acceptance
    /// (measured once at start-up, about a second per draft length on a CPU).
    #[arg(long)]
    auto_budget: bool,
    /// PLD: longest n-gram matched.
    #[arg(long, default_value_t = 3)]
    max_ngram: usize,
    /// Upper bound on new tokens per prompt.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Backend: flex, ndarray, cuda or wgpu (those compiled in).
    #[arg(long, default_value = "flex")]
    device: String,
    /// Weight storage: f16 (half the memory traffic) or f32 (exact).
    #[arg(long, default_value = "f16")]
    dtype: msn::WeightDtype,
    /// One JSON line per prompt instead of streamed text.
    #[arg(long)]
    json: bool,
}

fn run<B: Backend>(device: B::Device, args: &Args) -> msn::Result<()> {
    let prompts = match (&args.prompt, &args.prompts) {
        (Some(p), None) => vec![PromptLine {
            id: serde_json::json!(0),
            prompt: p.clone(),
        }],
        (None, Some(path)) => read_prompt_lines(path)?,
        _ => {
            return Err(msn::Error::InvalidArgument(
                "give --prompt TEXT or --prompts FILE.jsonl".into(),
            ));
        }
    };
    let m = msn::load_with::<B>(&args.model, &device, args.dtype)?;
    let mut config = GenerateConfig::new(args.max_new_tokens, &m.tokenizer);
    config.stop_strings = args.stop.clone();
    let mut budget = (args.decoder == "pld" && args.auto_budget).then(|| {
        let curve = LatencyCurve::measure(&m.model, 256, args.max_draft + 1, 3);
        eprintln!(
            "[latency curve: {}]",
            (1..=args.max_draft + 1)
                .map(|t| format!("T={t} {:.0} ms", curve.cost(t) * 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        );
        DraftBudget::new(curve, args.max_draft, 4)
    });
    for p in prompts {
        let text = if args.chat {
            m.tokenizer
                .apply_chat_template(&[Message::new("user", &p.prompt)], true)?
        } else {
            p.prompt.clone()
        };
        let ids = m.tokenizer.encode(&text)?;
        let pld = PldConfig {
            max_ngram: args.max_ngram,
            max_draft: args.max_draft,
        };
        let mut decode = |on_text: Option<&mut dyn FnMut(&str)>| match args.decoder.as_str() {
            "pld" => match budget.as_mut() {
                Some(b) => prompt_lookup_with_budget::<B, _>(
                    &m.model,
                    Some(&m.tokenizer),
                    &ids,
                    &config,
                    &pld,
                    b,
                    on_text,
                ),
                None => prompt_lookup::<B, _>(
                    &m.model,
                    Some(&m.tokenizer),
                    &ids,
                    &config,
                    &pld,
                    on_text,
                ),
            },
            "jacobi" => {
                let jc = JacobiConfig {
                    window: args.window,
                    seed: 0,
                };
                jacobi::<B, _>(&m.model, Some(&m.tokenizer), &ids, &config, &jc, on_text)
            }
            _ => msn::greedy::<B, _>(&m.model, Some(&m.tokenizer), &ids, &config, on_text),
        };
        let g = if args.json {
            decode(None)?
        } else {
            let mut stdout = std::io::stdout();
            let mut print = |s: &str| {
                let _ = stdout.write_all(s.as_bytes());
                let _ = stdout.flush();
            };
            let g = decode(Some(&mut print))?;
            println!();
            eprintln!(
                "[{} prompt tokens, {} new tokens in {:.2}s: {:.1} tokens/s, {} forward passes ({:.2} tokens/pass), {:?}]",
                g.prompt_tokens,
                g.tokens.len(),
                g.wall_time_s,
                g.tokens.len() as f64 / g.wall_time_s.max(1e-9),
                g.steps,
                g.accepted_tokens_per_step(),
                g.stop_reason
            );
            g
        };
        if args.json {
            let line = serde_json::json!({
                "id": p.id,
                "prompt_tokens": g.prompt_tokens,
                "tokens": g.tokens,
                "text": g.text,
                "new_tokens": g.tokens.len(),
                "steps": g.steps,
                "accept_lengths": g.accept_lengths,
                "wall_time_s": g.wall_time_s,
                "stop_reason": g.stop_reason,
            });
            println!("{line}");
        }
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = with_backend!(args.device.as_str(), run(&args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
