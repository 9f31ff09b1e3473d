//! Spec-Bench on this engine: questions through greedy decoding and any other decoders in the
//! same run, interleaved question by question, on the model's chat template (second turns see the
//! first answer). Writes Spec-Bench's output format per decoder, checks every decoder's tokens
//! against greedy's, and prints per-category MAT (accepted tokens per forward pass) and speedup
//! (wall clock, against the greedy run made in the same invocation) as a markdown table, plus an
//! SVG plot of both.
//!
//! ```text
//! cargo run --release --features ndarray --example specbench -- \
//!     --decoders pld,tr-jacobi --per-category 2 --max-new-tokens 128
//! ```
//! CPU runs cap new tokens per turn and take the first `--per-category` questions of each
//! category; the output says so.

mod common;
use burn::prelude::*;
use clap::Parser;
use common::decoders::DecoderArgs;
use common::plot;
use common::with_backend;
use msn::{AnyDecoder, Decoder, Greedy};

use msn::bench::read_spec_bench;
use msn::{GenerateConfig, Message};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Spec-Bench: MAT and speedup over greedy per category, same engine and run")]
struct Args {
    /// A .gguf file, a Hugging Face model directory, or `smollm2`.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Spec-Bench question file.
    #[arg(long, default_value = "data/spec_bench/question.jsonl")]
    questions: PathBuf,
    /// Decoders to compare with greedy (comma separated: jacobi, pld, lookahead, tr-jacobi (with
    /// `--candidates`, default recycled), tr-jacobi-jacobi, tr-jacobi-recycled, tr-jacobi-mixed
    /// (TR-Jacobi with that candidate source); a `+auto` suffix sizes drafts from the device's
    /// latency curve, e.g. `tr-jacobi+auto`).
    #[arg(long, default_value = "pld,tr-jacobi", value_delimiter = ',')]
    decoders: Vec<String>,
    /// Questions per category (the first ones); 0 = all.
    #[arg(long, default_value_t = 2)]
    per_category: usize,
    /// Only the first turn of each question.
    #[arg(long)]
    first_turn_only: bool,
    /// Start every question with the decoders' state as built (TR-Jacobi's token graph and
    /// tree budget, PLD's budget); by default that state carries over from question to question.
    #[arg(long)]
    fresh_state: bool,
    /// New tokens per turn (Spec-Bench uses 1024; CPU runs cap it).
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Backend.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Weight storage.
    #[arg(long, default_value = "f16")]
    dtype: msn::WeightDtype,
    /// Output directory (`<decoder>.jsonl`, `summary.json`, `specbench.svg`).
    #[arg(long, default_value = "results/specbench")]
    out: PathBuf,
    /// Parameters of the decoders (`--decoder` itself is ignored).
    #[command(flatten)]
    params: DecoderArgs,
}

#[derive(Default, Clone)]
struct Tally {
    tokens: usize,
    steps: usize,
    secs: f64,
}

fn run<B: Backend>(device: B::Device, args: &Args) -> msn::Result<()> {
    let questions = read_spec_bench(&args.questions)?;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let chosen: Vec<_> = questions
        .into_iter()
        .filter(|q| {
            let n = seen.entry(q.category.clone()).or_default();
            *n += 1;
            args.per_category == 0 || *n <= args.per_category
        })
        .collect();
    let m = msn::load_with::<B>(&args.model, &device, args.dtype)?;
    let mut decoders: Vec<AnyDecoder> = vec![AnyDecoder::Greedy(Greedy)];
    for name in &args.decoders {
        let mut p = args.params.clone();
        let base = match name.strip_suffix("+auto") {
            Some(base) => {
                p.auto_budget = true;
                base
            }
            None => name.as_str(),
        };
        p.decoder = base.to_string();
        if let Some(source) = base.strip_prefix("tr-jacobi-") {
            p.decoder = "tr-jacobi".into();
            p.candidates = source.to_string();
        }
        decoders.push(p.build(&m.model)?);
    }
    let pristine = decoders.clone();
    let names: Vec<String> = std::iter::once("greedy".to_string())
        .chain(args.decoders.iter().cloned())
        .collect();
    std::fs::create_dir_all(&args.out).map_err(|e| msn::Error::io(&args.out, e))?;
    let mut files = Vec::new();
    for n in &names {
        let path = args.out.join(format!("{n}.jsonl"));
        files.push(std::fs::File::create(&path).map_err(|e| msn::Error::io(&path, e))?);
    }
    eprintln!(
        "Spec-Bench subset: {} questions ({} per category{}), at most {} new tokens per turn, decoders {:?}, {} on {}",
        chosen.len(),
        if args.per_category == 0 {
            "all".to_string()
        } else {
            args.per_category.to_string()
        },
        if args.first_turn_only {
            ", first turns only"
        } else {
            ""
        },
        args.max_new_tokens,
        names,
        args.dtype,
        args.device,
    );
    let config = GenerateConfig::new(args.max_new_tokens, &m.tokenizer);
    // tally[decoder][category]
    let mut tally: Vec<BTreeMap<String, Tally>> = vec![BTreeMap::new(); decoders.len()];
    let mut mismatches = 0usize;
    let started = std::time::Instant::now();
    for (qi, q) in chosen.iter().enumerate() {
        let turns = if args.first_turn_only {
            1
        } else {
            q.turns.len()
        };
        let mut per_decoder: Vec<serde_json::Value> = Vec::new();
        let mut reference: Vec<Vec<u32>> = Vec::new();
        if args.fresh_state {
            decoders = pristine.clone();
        }
        for (di, dec) in decoders.iter_mut().enumerate() {
            let mut messages: Vec<Message> = Vec::new();
            let (mut texts, mut new_tokens, mut walls, mut accepts) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (ti, turn) in q.turns.iter().take(turns).enumerate() {
                messages.push(Message::new("user", turn));
                let prompt = m.tokenizer.apply_chat_template(&messages, true)?;
                let ids = m.tokenizer.encode(&prompt)?;
                let g = dec.generate(&m.model, Some(&m.tokenizer), &ids, &config)?;
                if di == 0 {
                    reference.push(g.tokens.clone());
                } else if reference[ti] != g.tokens {
                    mismatches += 1;
                    eprintln!(
                        "MISMATCH: {} differs from greedy on question {} turn {}",
                        names[di], q.question_id, ti
                    );
                }
                let t = tally[di].entry(q.category.clone()).or_default();
                t.tokens += g.tokens.len();
                t.steps += g.steps;
                t.secs += g.wall_time_s;
                messages.push(Message::new("assistant", &g.text));
                texts.push(g.text.clone());
                new_tokens.push(g.tokens.len());
                walls.push(g.wall_time_s);
                accepts.push(g.accept_lengths.clone());
            }
            per_decoder.push(serde_json::json!({
                "question_id": q.question_id,
                "category": q.category,
                "model_id": args.model,
                "choices": [{"index": 0, "turns": texts, "new_tokens": new_tokens,
                             "wall_time": walls, "accept_lengths": accepts}],
            }));
        }
        for (f, line) in files.iter_mut().zip(&per_decoder) {
            writeln!(f, "{line}").map_err(|e| msn::Error::io(&args.out, e))?;
        }
        let done = qi + 1;
        let el = started.elapsed().as_secs_f64();
        eprint!(
            "\r[{done}/{}] {:.0}s elapsed, ETA {:.0}s   ",
            chosen.len(),
            el,
            el / done as f64 * (chosen.len() - done) as f64
        );
    }
    eprintln!();
    // Table: per category, greedy tok/s, then MAT and speedup per decoder.
    let cats: Vec<String> = tally[0].keys().cloned().collect();
    let total = |v: &BTreeMap<String, Tally>| {
        v.values().fold(Tally::default(), |a, t| Tally {
            tokens: a.tokens + t.tokens,
            steps: a.steps + t.steps,
            secs: a.secs + t.secs,
        })
    };
    let mut head = "| category | greedy tok/s |".to_string();
    let mut rule = "|---|---|".to_string();
    for n in &names[1..] {
        head += &format!(" {n} MAT | {n} speedup |");
        rule += "---|---|";
    }
    println!("{head}\n{rule}");
    let mut rows: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let all: Vec<Tally> = tally.iter().map(total).collect();
    for c in cats.iter().map(Some).chain([None]) {
        let get = |di: usize| match c {
            Some(c) => tally[di].get(c).cloned().unwrap_or_default(),
            None => all[di].clone(),
        };
        let g = get(0);
        let rate = |t: &Tally| t.tokens as f64 / t.secs.max(1e-9);
        let mut line = format!(
            "| {} | {:.1} |",
            c.map_or("**overall**", |s| s.as_str()),
            rate(&g)
        );
        let mut vals = Vec::new();
        for di in 1..names.len() {
            let t = get(di);
            let mat = t.tokens as f64 / t.steps.max(1) as f64;
            let sp = rate(&t) / rate(&g).max(1e-9);
            line += &format!(" {mat:.2} | {sp:.2}x |");
            vals.push((mat, sp));
        }
        println!("{line}");
        rows.push((c.cloned().unwrap_or_else(|| "overall".into()), vals));
    }
    println!(
        "\n{} questions, {} turns each at most, {} new tokens per turn at most; {} mismatches against greedy.",
        chosen.len(),
        if args.first_turn_only { 1 } else { 2 },
        args.max_new_tokens,
        mismatches
    );
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let series = |f: fn(&(f64, f64)) -> f64| -> Vec<(String, Vec<f64>)> {
        (1..names.len())
            .map(|di| {
                (
                    names[di].to_string(),
                    rows.iter().map(|r| f(&r.1[di - 1])).collect(),
                )
            })
            .collect()
    };
    let title = format!(
        "Spec-Bench subset on {} ({}), {} new tokens/turn",
        args.device, args.dtype, args.max_new_tokens
    );
    let mat_svg = plot::bar_chart(
        &format!("MAT (accepted tokens per forward pass). {title}"),
        "MAT",
        &labels,
        &series(|v| v.0),
        Some(1.0),
    );
    let sp_svg = plot::bar_chart(
        &format!("Speedup over greedy (same run). {title}"),
        "speedup (x)",
        &labels,
        &series(|v| v.1),
        Some(1.0),
    );
    for (name, svg) in [
        ("specbench_mat.svg", mat_svg),
        ("specbench_speedup.svg", sp_svg),
    ] {
        let p = args.out.join(name);
        msn::bench::write_atomic(&p, svg.as_bytes())?;
    }
    let summary = serde_json::json!({
        "questions": chosen.len(), "per_category": args.per_category,
        "max_new_tokens": args.max_new_tokens, "device": args.device,
        "dtype": format!("{}", args.dtype), "mismatches": mismatches,
        "categories": rows.iter().map(|(c, v)| serde_json::json!({
            "category": c,
            "decoders": v.iter().zip(&names[1..]).map(|((mat, sp), n)| serde_json::json!({"decoder": n, "mat": mat, "speedup": sp})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    msn::bench::write_atomic(
        &args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)
            .expect("json")
            .as_bytes(),
    )?;
    if mismatches > 0 {
        return Err(msn::Error::InvalidArgument(format!(
            "{mismatches} outputs differ from greedy decoding"
        )));
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
