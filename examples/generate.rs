//! Generate text with a llama-family model.
//!
//! ```text
//! cargo run --release --example generate -- --model smollm2 --prompt "What is Rust?" --chat
//! cargo run --release --example generate -- --model m.gguf --prompts p.jsonl --json
//! # SmolLM2 after MSN fine-tuning (the adapter this repository keeps), merged and quantized
//! # to Q8_0, decoded by TR-Jacobi
//! cargo run --release --example generate -- --lora results/msn_scale/adapter --host-kernels q8 \
//!     --chat --decoder tr-jacobi --prompt "Explain recursion in two sentences."
//! ```
//! `--memory FILE` keeps TR-Jacobi's (or suffix's) draft memory across runs: read at start,
//! written after every prompt.
//! `--json` prints one line per prompt: `{"id", "prompt_tokens", "tokens", "text", "new_tokens",
//! "steps", "accept_lengths", "forward_tokens", "wall_time_s", ...}` (`forward_tokens`: tokens each
//! forward pass ran, i.e. the tree sizes an `--auto-budget` decoder chose; per decoding step,
//! `host_step_s` the host's time besides the forward, `host_reads` / `host_read_bytes` what was
//! read back from the device).

mod common;
use burn::prelude::*;
use clap::Parser;
use common::decoders::DecoderArgs;
use common::with_backend;
use msn::Decoder;
use msn::GenerateConfig;
use msn::bench::{PromptLine, read_prompt_lines};
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
    #[command(flatten)]
    decoder: DecoderArgs,
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
    /// Host engine on CPU backends: auto (a GGUF's own blocks with integer products, dense
    /// copies otherwise), q8 (also quantize dense weights, e.g. a Hugging Face checkpoint's, to
    /// Q8_0: faster, logits within ~1 of exact), native-f32, native-int8, converted or off.
    #[arg(long, default_value = "auto")]
    host_kernels: msn::HostKernels,
    /// KV cache of the host engine: f32 (exact) or f16 (half the memory; logits within ~2e-2
    /// of f32's on SmolLM2).
    #[arg(long, default_value = "f32")]
    kv_dtype: msn::KvDtype,
    /// Positions the model serves, prompt and output (default: what the checkpoint states;
    /// Phi-3.5: its 4096-token pre-training context, more selects its long-context RoPE).
    #[arg(long)]
    context: Option<usize>,
    /// A LoRA adapter directory (PEFT's layout) merged into the model's weights first, e.g.
    /// `results/msn_scale/adapter`: SmolLM2 after MSN fine-tuning.
    #[arg(long)]
    lora: Option<PathBuf>,
    /// One JSON line per prompt instead of streamed text.
    #[arg(long)]
    json: bool,
    /// Sample at this temperature instead of decoding greedily (every decoder keeps the model's
    /// output distribution).
    #[arg(long)]
    temperature: Option<f32>,
    /// Sampling: keep the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 0, requires = "temperature")]
    sample_top_k: usize,
    /// Sampling: nucleus mass.
    #[arg(long, default_value_t = 1.0, requires = "temperature")]
    top_p: f32,
    /// Sampling: seed.
    #[arg(long, default_value_t = 0, requires = "temperature")]
    seed: u64,
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
    let options = msn::LoadOptions {
        dtype: args.dtype,
        host: args.host_kernels,
        context: args.context,
        kv_dtype: args.kv_dtype,
    };
    let m = common::load_with_adapter::<B>(&args.model, &device, options, args.lora.as_deref())?;
    let mut config = GenerateConfig::new(args.max_new_tokens, &m.tokenizer);
    config.stop_strings = args.stop.clone();
    config.sampling = args.temperature.map(|temperature| msn::Sampling {
        temperature,
        top_k: args.sample_top_k,
        top_p: args.top_p,
        seed: args.seed,
    });
    let mut decoder = args.decoder.build(&m.model)?;
    for p in prompts {
        let ids = if args.chat {
            m.chat_prompt(&p.prompt)?
        } else {
            m.tokenizer.encode(&p.prompt)?
        };
        let g = if args.json {
            decoder.generate(&m.model, Some(&m.tokenizer), &ids, &config)?
        } else {
            let mut stdout = std::io::stdout();
            let g = decoder.stream(&m.model, &m.tokenizer, &ids, &config, |s| {
                stdout.write_all(s.as_bytes())?;
                stdout.flush()
            })?;
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
        args.decoder.save_memory(&decoder)?;
        if args.json {
            let line = serde_json::json!({
                "id": p.id,
                "prompt_tokens": g.prompt_tokens,
                "tokens": g.tokens,
                "text": g.text,
                "new_tokens": g.tokens.len(),
                "steps": g.steps,
                "accept_lengths": g.accept_lengths,
                "forward_tokens": g.forward_tokens,
                "wall_time_s": g.wall_time_s,
                "draft_time_s": g.draft_time_s,
                "verify_time_s": g.verify_time_s,
                "host_step_s": g.host_step_s,
                "host_reads": g.host_reads,
                "host_read_bytes": g.host_read_bytes,
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
