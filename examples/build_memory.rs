//! Builds a draft memory file from earlier answers, for `--memory FILE` (TR-Jacobi and suffix
//! decoding draft from it): what a server's memory holds after it has answered those prompts.
//!
//! ```text
//! cargo run --release --example build_memory -- \
//!     --distilled results/msn_scale/distilled.jsonl --out /tmp/warm.msnmem
//! cargo run --release --features ndarray --example specbench -- --memory /tmp/warm.msnmem ...
//! ```
//! `--distilled` takes msn's pre-tokenized samples (`msn_finetune` writes them: each a
//! chat-templated prompt and the model's greedy answer), added one document each, as a decoder
//! adds a prompt and its output. The same file comes from decoding the prompts themselves with
//! `generate --memory FILE --chat --prompts ...` (slower: it runs the model).

mod common;
use clap::Parser;
use msn::DraftMemory;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Build a draft memory file from earlier prompts and answers")]
struct Args {
    /// msn's pre-tokenized samples (`{"tokens": [...], "response": {...}}` a line).
    #[arg(long)]
    distilled: PathBuf,
    /// The model the samples were written for (every id is checked against its vocabulary).
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Tokens the memory keeps (the oldest documents evicted beyond it).
    #[arg(long, default_value_t = 1 << 18)]
    capacity: usize,
    /// Where to write the memory.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> msn::Result<()> {
    let args = Args::parse();
    common::demo_model::resolve(&args.model)?;
    // The tokenizer alone: its vocabulary checks the samples' ids; the weights are not needed.
    let tokenizer = msn::load_tokenizer(&args.model)?;
    let samples = common::distilled::read(&args.distilled, tokenizer.vocab_size())?;
    let t0 = Instant::now();
    let memory = DraftMemory::new(args.capacity);
    for s in &samples {
        memory.add(&s.tokens);
    }
    memory.save(&args.out)?;
    println!(
        "{} samples -> {} documents, {} tokens kept (capacity {}), {:.1} s: {}",
        samples.len(),
        memory.documents(),
        memory.tokens(),
        memory.capacity(),
        t0.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
