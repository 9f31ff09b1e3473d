//! Spec-Bench on this engine: questions through greedy decoding and any other decoders in the
//! same run, interleaved turn by turn, on the model's chat template (second turns see the
//! first answer). Writes Spec-Bench's output format per decoder, checks every decoder's tokens
//! against greedy's, and prints per-category MAT (accepted tokens per forward pass) and speedup
//! (wall clock, against the greedy run made in the same invocation) as a markdown table, plus an
//! SVG plot of both.
//!
//! ```text
//! cargo run --release --features ndarray --example specbench -- \
//!     --decoders pld,tr-jacobi --per-category 2 --max-new-tokens 128
//! ```
//! New tokens per turn are capped at Spec-Bench's 1024 unless `--max-new-tokens` says less, and
//! `--per-category` takes the first questions of each category; the output says both, and gives
//! each decoder's speedup apart over the turns whose greedy answer ends in a repetition loop.
//! `--humaneval data/humaneval/HumanEval.jsonl` asks HumanEval's problems instead, each followed
//! by its tests and a request for the corrected function.

mod common;
use burn::prelude::*;
use clap::Parser;
use common::decoders::DecoderArgs;
use common::llama_cpp::{self, Timed};
use common::plot;
use common::vs_greedy::{Tally, beside_greedy_each};
use common::with_backend;
use msn::AnyDecoder;

use msn::bench::{SpecBenchQuestion, read_spec_bench};
use msn::{GenerateConfig, Generation, Message};
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
    /// Decoders to compare with greedy (comma separated: jacobi, pld, lookahead, suffix, tr-jacobi
    /// (with `--candidates`, default recycled), tr-jacobi-jacobi, tr-jacobi-recycled,
    /// tr-jacobi-mixed (TR-Jacobi with that candidate source); a `+auto` suffix measures the
    /// latency curve at start-up (PLD: sizes drafts by it at all), `+fixed` verifies TR-Jacobi's
    /// whole tree every step, e.g. `pld+auto,tr-jacobi,tr-jacobi+fixed`).
    #[arg(long, default_value = "pld,tr-jacobi", value_delimiter = ',')]
    decoders: Vec<String>,
    /// Ask HumanEval's problems from this file instead (category `humaneval`): each problem, then
    /// its tests with a request for the corrected function (a second turn that repeats most of
    /// the first answer); `--first-turn-only` asks only the problems.
    #[arg(long)]
    humaneval: Option<PathBuf>,
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
    /// Run every prompt in full. By default greedy and each decoder keep their own
    /// `PromptCache` across turns and questions (a second turn runs only the tokens after the
    /// first turn's prompt and answer; a question only those after the system prompt).
    #[arg(long)]
    no_prompt_cache: bool,
    /// New tokens per turn at most (Spec-Bench's protocol: 1024; a lower cap makes a run shorter
    /// and prefill, which no decoder shortens, a larger share of it).
    #[arg(long, default_value_t = 1024)]
    max_new_tokens: usize,
    /// Backend.
    #[arg(long, default_value = "flex")]
    device: String,
    /// Weight storage.
    #[arg(long, default_value = "f16")]
    dtype: msn::WeightDtype,
    /// The host engine's products (`generate --host-kernels`): auto (16-bit activations, the
    /// default) or native-int8 (8-bit activations: cheaper tokens in a verified tree, since
    /// one instruction takes twice the products), and the others. Every decoder, greedy
    /// included, runs on the same products.
    #[arg(long, default_value = "auto")]
    host_kernels: msn::HostKernels,
    /// Output directory (`<decoder>.jsonl`, `summary.json`, `specbench.svg`).
    #[arg(long, default_value = "results/specbench")]
    out: PathBuf,
    /// Folder with llama.cpp's `llama-completion` and `llama-lookup` (`scripts/vs_llamacpp.sh
    /// --build-only` builds them): every turn also runs through llama.cpp's greedy and its
    /// n-gram lookup decoding with a dynamic cache carried from prompt to prompt (`-lcd`), same
    /// GGUF, prompt text and thread count; each is reported against llama.cpp's own greedy.
    #[arg(long)]
    llama: Option<PathBuf>,
    /// Parameters of the decoders (`--decoder` itself is ignored).
    #[command(flatten)]
    params: DecoderArgs,
}

/// Per decoder (greedy first), per category.
type Tallies = Vec<BTreeMap<String, Tally>>;

/// Per category, llama.cpp's greedy and its lookup decoding with a dynamic cache.
type LlamaTallies = BTreeMap<String, [Timed; 2]>;

/// The tallies of one run: per category, and split by how greedy's turn ended.
struct Tallied {
    by_category: Tallies,
    by_ending: Tallies,
    llama: LlamaTallies,
}

/// Where a turn's answer ends in a repetition loop: its last [`LOOP_SPAN`] tokens repeat with a
/// period of at most [`LOOP_PERIOD`] tokens (what a small model's greedy text does when it runs
/// to the cap; every drafter copies such text from the answer itself).
const LOOP_SPAN: usize = 128;
const LOOP_PERIOD: usize = 64;

/// How a turn ended: in a repetition loop, or otherwise (end of text, or the cap without a loop).
fn ending(tokens: &[u32]) -> &'static str {
    let n = tokens.len();
    let looping = (1..=LOOP_PERIOD)
        .any(|p| n >= LOOP_SPAN + p && (n - LOOP_SPAN..n).all(|i| tokens[i] == tokens[i - p]));
    match looping {
        true => "ends in a repetition loop",
        false => "ends otherwise",
    }
}

fn run<B: Backend>(device: B::Device, args: &Args) -> msn::Result<()> {
    let questions = match &args.humaneval {
        Some(file) => msn::bench::read_humaneval(file)?
            .iter()
            .map(msn::bench::as_two_turns)
            .collect(),
        None => read_spec_bench(&args.questions)?,
    };
    let chosen = choose(questions, args.per_category);
    common::demo_model::resolve(&args.model)?;
    let options = msn::LoadOptions {
        dtype: args.dtype,
        host: args.host_kernels,
        ..Default::default()
    };
    let m = msn::load_with::<B>(&args.model, &device, options)?;
    let decoders = build_decoders(&m.model, args)?;
    let names: Vec<String> = std::iter::once("greedy".to_string())
        .chain(args.decoders.iter().cloned())
        .collect();
    eprintln!(
        "Spec-Bench subset: {} questions ({} per category{}), at most {} new tokens per turn, decoders {:?}, {} on {} (host kernels {}), {}",
        chosen.len(),
        match args.per_category {
            0 => "all".to_string(),
            n => n.to_string(),
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
        args.host_kernels,
        match args.no_prompt_cache {
            true => "every prompt in full",
            false => "a prompt cache per decoder",
        },
    );
    let t = answer(&m, &chosen, decoders, &names, args)?;
    report(&t, &names, chosen.len(), args)?;
    if args.llama.is_some() {
        report_llama(&t.by_category[0], &t.llama, args)?;
    }
    Ok(())
}

/// The first `per_category` questions of each category (all where 0).
fn choose(questions: Vec<SpecBenchQuestion>, per_category: usize) -> Vec<SpecBenchQuestion> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    questions
        .into_iter()
        .filter(|q| {
            let n = seen.entry(q.category.clone()).or_default();
            *n += 1;
            per_category == 0 || *n <= per_category
        })
        .collect()
}

/// The decoders named in `--decoders` (greedy is run beside them anyway).
fn build_decoders<B: Backend>(model: &msn::Llama<B>, args: &Args) -> msn::Result<Vec<AnyDecoder>> {
    let mut decoders = Vec::new();
    for name in &args.decoders {
        let mut p = args.params.clone();
        let mut base = name.as_str();
        if let Some(b) = base.strip_suffix("+auto") {
            (p.auto_budget, base) = (true, b);
        }
        if let Some(b) = base.strip_suffix("+fixed") {
            (p.fixed_tree, base) = (true, b);
        }
        p.decoder = base.to_string();
        if let Some(source) = base.strip_prefix("tr-jacobi-") {
            p.decoder = "tr-jacobi".into();
            p.candidates = source.to_string();
        }
        decoders.push(p.build(model)?);
    }
    Ok(decoders)
}

/// Every turn of every question through greedy and the decoders (each output checked equal to
/// greedy's), Spec-Bench's answer lines written per decoder; the tallies.
fn answer<B: Backend>(
    m: &msn::LoadedModel<B>,
    chosen: &[SpecBenchQuestion],
    mut decoders: Vec<AnyDecoder>,
    names: &[String],
    args: &Args,
) -> msn::Result<Tallied> {
    std::fs::create_dir_all(&args.out).map_err(|e| msn::Error::io(&args.out, e))?;
    let lookup_cache = args.out.join("llama_lookup.cache");
    if lookup_cache.exists() {
        std::fs::remove_file(&lookup_cache).map_err(|e| msn::Error::io(&lookup_cache, e))?;
    }
    let mut llama = LlamaTallies::new();
    let mut files = Vec::new();
    for n in names {
        let path = args.out.join(format!("{n}.jsonl"));
        files.push(std::fs::File::create(&path).map_err(|e| msn::Error::io(&path, e))?);
    }
    let pristine = decoders.clone();
    let config = GenerateConfig::new(args.max_new_tokens, &m.tokenizer);
    // One prompt cache per run (greedy's and each decoder's own).
    let configs: Vec<GenerateConfig> = (0..names.len())
        .map(|_| match args.no_prompt_cache {
            true => config.clone(),
            false => config.clone().with_prompt_cache(msn::PromptCache::new()),
        })
        .collect();
    let mut tally: Tallies = vec![BTreeMap::new(); names.len()];
    let mut by_ending: Tallies = vec![BTreeMap::new(); names.len()];
    let started = std::time::Instant::now();
    for (qi, q) in chosen.iter().enumerate() {
        if args.fresh_state {
            decoders = pristine.clone();
        }
        let turns = if args.first_turn_only {
            1
        } else {
            q.turns.len()
        };
        // Per decoder, its generation of each turn.
        let mut runs: Vec<Vec<Generation>> = vec![Vec::new(); names.len()];
        let mut messages: Vec<Message> = Vec::new();
        for (ti, turn) in q.turns.iter().take(turns).enumerate() {
            messages.push(Message::new("user", turn));
            let prompt = m.tokenizer.apply_chat_template(&messages, true)?;
            let ids = m.tokenizer.encode(&prompt)?;
            let what = format!("question {} turn {ti}", q.question_id);
            let gens = beside_greedy_each(
                &m.model,
                Some(&m.tokenizer),
                &ids,
                &configs,
                &mut decoders,
                &what,
            )?;
            if let Some(dir) = &args.llama {
                let both = llama.entry(q.category.clone()).or_default();
                let threads = rayon::current_num_threads();
                let n = args.max_new_tokens;
                both[0].add(llama_cpp::completion(dir, &m.path, threads, n, &prompt)?.1);
                both[1].add(llama_cpp::lookup(
                    dir,
                    &m.path,
                    threads,
                    n,
                    &prompt,
                    Some(&lookup_cache),
                )?);
            }
            messages.push(Message::new("assistant", &gens[0].text));
            let end = ending(&gens[0].tokens);
            for (di, g) in gens.into_iter().enumerate() {
                tally[di].entry(q.category.clone()).or_default().add(&g);
                by_ending[di].entry(end.to_string()).or_default().add(&g);
                runs[di].push(g);
            }
        }
        for (f, run) in files.iter_mut().zip(&runs) {
            let line = answer_line(q, run, &args.model);
            writeln!(f, "{line}").map_err(|e| msn::Error::io(&args.out, e))?;
        }
        let (done, el) = (qi + 1, started.elapsed().as_secs_f64());
        eprint!(
            "\r[{done}/{}] {el:.0}s elapsed, ETA {:.0}s   ",
            chosen.len(),
            el / done as f64 * (chosen.len() - done) as f64
        );
    }
    eprintln!();
    Ok(Tallied {
        by_category: tally,
        by_ending,
        llama,
    })
}

/// One question's answer line in Spec-Bench's format.
fn answer_line(q: &SpecBenchQuestion, run: &[Generation], model: &str) -> serde_json::Value {
    let texts: Vec<&str> = run.iter().map(|g| g.text.as_str()).collect();
    let new_tokens: Vec<usize> = run.iter().map(|g| g.tokens.len()).collect();
    let walls: Vec<f64> = run.iter().map(|g| g.wall_time_s).collect();
    let accepts: Vec<&[usize]> = run.iter().map(|g| g.accept_lengths.as_slice()).collect();
    serde_json::json!({
        "question_id": q.question_id,
        "category": q.category,
        "model_id": model,
        "choices": [{"index": 0, "turns": texts, "new_tokens": new_tokens,
                     "wall_time": walls, "accept_lengths": accepts}],
    })
}

/// The markdown table (per category: greedy tokens/s, then each decoder's MAT and speedup), the
/// two charts and `summary.json`.
fn report(t: &Tallied, names: &[String], questions: usize, args: &Args) -> msn::Result<()> {
    let tally = &t.by_category;
    let mut head = "| category | greedy tok/s |".to_string();
    let mut rule = "|---|---|".to_string();
    for n in &names[1..] {
        head += &format!(" {n} MAT | {n} speedup |");
        rule += "---|---|";
    }
    println!("{head}\n{rule}");
    let total = |v: &BTreeMap<String, Tally>| v.values().fold(Tally::default(), |a, t| a.plus(t));
    let all: Vec<Tally> = tally.iter().map(total).collect();
    let mut rows: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    let cats: Vec<Option<&String>> = tally[0].keys().map(Some).chain([None]).collect();
    for c in cats {
        let get = |di: usize| match c {
            Some(c) => tally[di].get(c).cloned().unwrap_or_default(),
            None => all[di].clone(),
        };
        let g = get(0);
        let mut line = format!(
            "| {} | {:.1} |",
            c.map_or("**overall**", |s| s.as_str()),
            g.tokens_per_s()
        );
        let mut vals = Vec::new();
        for di in 1..names.len() {
            let t = get(di);
            let sp = t.tokens_per_s() / g.tokens_per_s().max(1e-9);
            line += &format!(" {:.2} | {sp:.2}x |", t.mat());
            vals.push((t.mat(), sp));
        }
        println!("{line}");
        rows.push((c.cloned().unwrap_or_else(|| "overall".into()), vals));
    }
    println!(
        "\n{questions} questions, {} turns each at most, {} new tokens per turn at most; every output equal to greedy's.",
        if args.first_turn_only { 1 } else { 2 },
        args.max_new_tokens,
    );
    // What a step costs on the host besides the forward (drafting, verification, bookkeeping),
    // and what it reads back from the device.
    let host_ms: Vec<f64> = all.iter().map(Tally::median_host_step_ms).collect();
    // Prefill is the same work for every decoder, so it bounds the end-to-end ratio.
    println!("\nseconds to the first tokens (prefill) and the decoding phase after them:");
    let decoding = |t: &Tally| (t.secs - t.first_secs).max(1e-9);
    for (n, t) in names.iter().zip(&all) {
        println!(
            "- {n}: prefill {:.1} s of {:.1} s ({:.0}%; {} of {} prompt tokens from its prompt \
             cache), decoding phase {:.2}x greedy's speed",
            t.first_secs,
            t.secs,
            100.0 * t.first_secs / t.secs.max(1e-9),
            t.prompt_tokens.1,
            t.prompt_tokens.0,
            decoding(&all[0]) / decoding(t)
        );
    }
    println!(
        "\nper decoding step: host time besides the forward (median), reads back from the device \
         and their bytes (most in any step):"
    );
    for ((n, ms), t) in names.iter().zip(&host_ms).zip(&all) {
        let (reads, bytes) = t.max_reads;
        println!("- {n}: {ms:.3} ms, {reads} reads, {bytes} bytes");
    }
    let endings = report_endings(&t.by_ending, names);
    charts(&rows, names, args)?;
    let summary = serde_json::json!({
        "questions": questions, "per_category": args.per_category,
        "max_new_tokens": args.max_new_tokens, "device": args.device,
        "prompt_cache": !args.no_prompt_cache,
        "dtype": format!("{}", args.dtype), "host_kernels": args.host_kernels.to_string(), "mismatches": 0,
        "per_step": names.iter().zip(&host_ms).zip(&all).map(|((n, ms), t)| serde_json::json!({"decoder": n, "median_host_ms": ms, "max_reads": t.max_reads.0, "max_read_bytes": t.max_reads.1})).collect::<Vec<_>>(),
        "endings": endings,
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
    )
}

/// Each decoder's speedup over the turns whose greedy answer ends in a repetition loop and over
/// the rest (a small model's loops are text that every drafter copies from the answer itself);
/// the rows for `summary.json`.
fn report_endings(by_ending: &Tallies, names: &[String]) -> Vec<serde_json::Value> {
    println!(
        "\nturns by how greedy's answer ends (a loop: its last {LOOP_SPAN} tokens repeat with a \
         period of at most {LOOP_PERIOD}):"
    );
    let mut rows = Vec::new();
    for (end, g) in &by_ending[0] {
        let mut line = format!(
            "- {end}: {} turns, {} tokens, greedy {:.1} tok/s",
            g.generations,
            g.tokens,
            g.tokens_per_s()
        );
        let mut decoders = Vec::new();
        for (n, t) in names.iter().zip(by_ending).skip(1) {
            let t = t.get(end).cloned().unwrap_or_default();
            let sp = t.tokens_per_s() / g.tokens_per_s().max(1e-9);
            line += &format!("; {n} {sp:.2}x (MAT {:.2})", t.mat());
            decoders.push(serde_json::json!({"decoder": n, "mat": t.mat(), "speedup": sp}));
        }
        println!("{line}");
        rows.push(serde_json::json!({"ending": end, "turns": g.generations, "tokens": g.tokens, "decoders": decoders}));
    }
    rows
}

/// llama.cpp beside msn, per category: each engine's greedy tokens/s and its drafting against
/// its own greedy (msn: every decoder of the run; llama.cpp: `llama-lookup` with its dynamic
/// cache); `llama_cpp.json`.
fn report_llama(
    greedy: &BTreeMap<String, Tally>,
    llama: &LlamaTallies,
    args: &Args,
) -> msn::Result<()> {
    println!(
        "\n| category | llama.cpp greedy tok/s | llama-lookup -lcd tok/s | llama-lookup / llama.cpp greedy | msn greedy / llama.cpp greedy |\n|---|---|---|---|---|"
    );
    let mut all = [Timed::default(); 2];
    let mut ours = Tally::default();
    let mut rows = Vec::new();
    let cats: Vec<Option<&String>> = llama.keys().map(Some).chain([None]).collect();
    for c in cats {
        let (both, g) = match c {
            Some(c) => {
                let both = llama[c];
                all[0].add(both[0]);
                all[1].add(both[1]);
                ours = ours.plus(&greedy[c]);
                (both, greedy[c].clone())
            }
            None => (all, ours.clone()),
        };
        let (lg, ll) = (both[0].tokens_per_s(), both[1].tokens_per_s());
        let name = c.map_or("**overall**", |s| s.as_str());
        println!(
            "| {name} | {lg:.1} | {ll:.1} | {:.2}x | {:.2}x |",
            ll / lg,
            g.tokens_per_s() / lg
        );
        rows.push(
            serde_json::json!({"category": c.map_or("overall", |s| s.as_str()),
            "llama_greedy_tok_s": lg, "llama_lookup_tok_s": ll, "lookup_speedup": ll / lg,
            "msn_greedy_tok_s": g.tokens_per_s()}),
        );
    }
    msn::bench::write_atomic(
        &args.out.join("llama_cpp.json"),
        serde_json::to_string_pretty(&rows)
            .expect("json")
            .as_bytes(),
    )
}

/// MAT and speedup per category as bar charts.
fn charts(rows: &[(String, Vec<(f64, f64)>)], names: &[String], args: &Args) -> msn::Result<()> {
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
        msn::bench::write_atomic(&args.out.join(name), svg.as_bytes())?;
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
