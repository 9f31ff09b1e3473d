//! msn beside llama.cpp on the same GGUF, CPU and thread count, interleaved in one run; driven
//! by `scripts/vs_llamacpp.sh`, which builds llama.cpp and passes its binaries:
//!
//! ```text
//! scripts/vs_llamacpp.sh            # builds llama.cpp once, then runs this
//! ```
//! Per round: `llama-bench` (pp128, tg128, tg128 at depth 700) beside the same three
//! measurements of msn's forward pass (the host engine, default products), then on the same
//! chat prompts `llama-completion` greedy beside msn's greedy, TR-Jacobi and PLD (auto budgets,
//! every output checked equal to msn's greedy). Prints one table with the ratios and writes
//! JSON, markdown and an SVG bar chart of the ratios.
//!
//! `--scale` measures what matters for a model of real size instead (`scripts/vs_llamacpp.sh
//! --scale FILE`): process start to first token and peak resident memory (each engine a fresh
//! process loading the file and writing one token, page cache warm for both), the forward of
//! T = 1..64 tokens (llama-bench's pp1..pp64: the cost of a token tree or a prefill chunk),
//! prefill of 128, decode, and greedy end to end; it leaves out the drafting decoders.

mod common;
use burn::backend::Flex as B;
use clap::Parser;
use common::llama_cpp::{self, Timed, run};
use common::{cold_start, plot};
use msn::{CausalLm, Decoder, ForwardInput, GenerateConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Folder with llama.cpp's `llama-bench` and `llama-completion`.
    #[arg(long)]
    llama: Option<PathBuf>,
    /// The GGUF both run (default: the demo model's cached file).
    #[arg(long)]
    gguf: Option<PathBuf>,
    /// Threads for both (msn: rayon's global pool).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Interleaved rounds.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Chat prompts (Spec-Bench questions, one per category in turn).
    #[arg(long, default_value_t = 12)]
    prompts: usize,
    /// Most new tokens per prompt.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Output folder.
    #[arg(long, default_value = "results/vs_llamacpp")]
    out: PathBuf,
    /// Print the demo model's GGUF path (fetching it if needed) and exit.
    #[arg(long)]
    print_model: bool,
    /// Real-size measurements: start to first token, peak memory, the T = 1..64 forward curve,
    /// prefill, decode, greedy end to end (no drafting decoders).
    #[arg(long)]
    scale: bool,
    /// Internal: load the model, write one token greedily, exit (what `--scale` times).
    #[arg(long, hide = true)]
    cold_start_child: bool,
    /// msn's host engine products (`generate --host-kernels`): auto (16-bit activations, the
    /// default) or native-int8 (8-bit activations, as llama.cpp's), and the others.
    #[arg(long, default_value = "auto")]
    host_kernels: msn::HostKernels,
}

/// The token counts of the forward curve.
const CURVE: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// New tokens of the decode figure in `--scale` mode.
const SCALE_DECODE: usize = 32;

/// Figures of one round: name -> tokens/s.
type Round = BTreeMap<String, f64>;

fn main() -> msn::Result<()> {
    let args = Args::parse();
    if args.print_model {
        common::demo_model::ensure()?;
        let m = msn::load::<B>("smollm2", &Default::default())?;
        println!("{}", m.path.display());
        return Ok(());
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
        .map_err(|e| msn::Error::InvalidArgument(format!("thread pool: {e}")))?;
    let spec = args
        .gguf
        .as_ref()
        .map_or("smollm2".to_string(), |p| p.display().to_string());
    let opts = msn::LoadOptions {
        host: args.host_kernels,
        ..Default::default()
    };
    if args.cold_start_child {
        return cold_start_child(&spec, opts);
    }
    let llama = args.llama.clone().ok_or_else(|| {
        msn::Error::InvalidArgument(
            "--llama DIR is required (scripts/vs_llamacpp.sh passes it)".into(),
        )
    })?;
    common::demo_model::resolve(&spec)?;
    let m = msn::load_with::<B>(&spec, &Default::default(), opts)?;
    let gguf = m.path.clone();
    let prompts = chat_prompts(&m, args.prompts)?;
    if args.scale {
        return scale(&args, &llama, &m, &prompts);
    }
    let mut rounds: Vec<(Round, Round)> = Vec::new();
    let mut agree = (0, 0.0);
    for r in 0..args.rounds {
        eprintln!("round {} of {}", r + 1, args.rounds);
        let mut ll = llama_bench(&llama, &gguf, args.threads)?;
        let mut ours = forward_speed(&m)?;
        let (greedy, llama_texts) =
            llama_completion(&llama, &gguf, args.threads, &prompts, args.max_new_tokens)?;
        ll.extend(greedy);
        ll.extend(llama_lookup(
            &llama,
            &gguf,
            args.threads,
            &prompts,
            args.max_new_tokens,
        )?);
        let (decoded, texts) = decoders(&m, &prompts, args.max_new_tokens, true)?;
        ours.extend(decoded);
        agree = agreement(&llama_texts, &texts);
        // PLD against llama.cpp's own PLD as well as against its greedy.
        let pld = ours["PLD (auto budget) end to end"];
        ours.insert("PLD end to end (llama-lookup, draft 8)".into(), pld);
        rounds.push((ll, ours));
    }
    report(&args, &gguf, &rounds, agree)
}

/// `--scale`: start to first token, peak memory, the forward curve, prefill, decode and greedy
/// end to end for both engines, `args.rounds` rounds interleaved.
fn scale(
    args: &Args,
    llama: &Path,
    m: &msn::LoadedModel<B>,
    prompts: &[(String, Vec<u32>)],
) -> msn::Result<()> {
    let gguf = m.path.clone();
    let threads = args.threads.to_string();
    let failed = |e: String| msn::Error::InvalidArgument(e);
    let mut rounds: Vec<(Round, Round)> = Vec::new();
    let mut agree = (0, 0.0);
    for r in 0..args.rounds {
        eprintln!("round {} of {} (scale)", r + 1, args.rounds);
        let mut ll = Round::new();
        let mut ours = Round::new();
        let mut theirs = Command::new(llama.join("llama-completion"));
        theirs
            .arg("-m")
            .arg(&gguf)
            .args(["-t", &threads, "-n", "1", "--temp", "0", "-c", "2048"])
            .args(llama_cpp::off_amx(false))
            .args([
                "--no-warmup",
                "-no-cnv",
                "--no-display-prompt",
                "-p",
                &prompts[0].0,
            ]);
        let exe = std::env::current_exe().map_err(|e| msn::Error::io("current_exe", e))?;
        let mut mine = Command::new(exe);
        mine.arg("--cold-start-child")
            .arg("--gguf")
            .arg(&gguf)
            .args(["--threads", &threads])
            .args(["--host-kernels", &args.host_kernels.to_string()]);
        for (cmd, round) in [(&mut theirs, &mut ll), (&mut mine, &mut ours)] {
            let (secs, mb) = cold_start::measure(cmd).map_err(failed)?;
            round.insert("start to first token (s)".into(), secs);
            round.insert("peak RSS (MB)".into(), mb);
        }
        ll.extend(llama_bench_curve(llama, &gguf, args.threads)?);
        ours.extend(forward_curve(m)?);
        let (greedy, llama_texts) =
            llama_completion(llama, &gguf, args.threads, prompts, args.max_new_tokens)?;
        ll.extend(greedy);
        let (decoded, texts) = decoders(m, prompts, args.max_new_tokens, false)?;
        ours.extend(decoded);
        agree = agreement(&llama_texts, &texts);
        rounds.push((ll, ours));
    }
    report(args, &gguf, &rounds, agree)
}

/// The `--cold-start-child` process: load `spec`, write one token of the first chat prompt.
fn cold_start_child(spec: &str, opts: msn::LoadOptions) -> msn::Result<()> {
    let m = msn::load_with::<B>(spec, &Default::default(), opts)?;
    let prompts = chat_prompts(&m, 1)?;
    let cfg = GenerateConfig::new(1, &m.tokenizer);
    msn::Greedy.generate(&m.model, Some(&m.tokenizer), &prompts[0].1, &cfg)?;
    Ok(())
}

/// llama-bench's pp1..pp128 and tg32 (tokens/s), keyed as [`forward_curve`]'s figures.
fn llama_bench_curve(dir: &Path, gguf: &Path, threads: usize) -> msn::Result<Round> {
    let sizes: Vec<String> = CURVE.iter().chain(&[128]).map(|t| t.to_string()).collect();
    let (so, _) = run(Command::new(dir.join("llama-bench"))
        .arg("-m")
        .arg(gguf)
        .args(["-t", &threads.to_string(), "-o", "json", "-r", "3"])
        .args(llama_cpp::off_amx(true))
        .args(["-p", &sizes.join(","), "-n", &SCALE_DECODE.to_string()]))?;
    let v: serde_json::Value = serde_json::from_str(&so)
        .map_err(|e| msn::Error::InvalidArgument(format!("llama-bench JSON: {e}")))?;
    let mut r = Round::new();
    for test in v.as_array().into_iter().flatten() {
        let (p, ts) = (
            test["n_prompt"].as_u64().unwrap_or(0),
            test["avg_ts"].as_f64(),
        );
        let key = match p {
            0 => format!("decode {SCALE_DECODE}"),
            128 => "prefill 128".into(),
            t => format!("forward of {t} tokens"),
        };
        if let Some(ts) = ts {
            r.insert(key, ts);
        }
    }
    Ok(r)
}

/// msn's forward of T = 1..64 tokens (every logit) and prefill of 128 (the last logit) into an
/// empty cache, and decode of [`SCALE_DECODE`] tokens one at a time (tokens/s, medians of 3
/// after one unmeasured run).
fn forward_curve(m: &msn::LoadedModel<B>) -> msn::Result<Round> {
    let d = Default::default();
    let ids: Vec<u32> = (0..256u32).map(|i| 100 + (i * 37) % 20000).collect();
    let time = |f: &mut dyn FnMut()| -> f64 {
        f();
        median(
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let mut r = Round::new();
    for t in CURVE.into_iter().chain([128]) {
        // The curve's forwards return every token's logits (a tree's verification needs them
        // all; llama-bench's ppT computes the last only); prefill, as generation runs it and as
        // llama-bench measures it, the last token's.
        let secs = time(&mut || {
            let mut cache = m.model.new_cache(1, t);
            let input = ForwardInput::<B>::causal(&ids[..t], 0, &d);
            let l = if t == 128 {
                m.model.forward_last(input, &mut cache)
            } else {
                m.model.forward(input, &mut cache)
            };
            std::hint::black_box(l.into_data());
        });
        let key = match t {
            128 => "prefill 128".into(),
            t => format!("forward of {t} tokens"),
        };
        r.insert(key, t as f64 / secs);
    }
    let secs = time(&mut || {
        let mut cache = m.model.new_cache(1, SCALE_DECODE);
        for i in 0..SCALE_DECODE {
            let l = m
                .model
                .forward(ForwardInput::<B>::causal(&ids[i..=i], i, &d), &mut cache);
            std::hint::black_box(l.into_data());
        }
    });
    r.insert(format!("decode {SCALE_DECODE}"), SCALE_DECODE as f64 / secs);
    Ok(r)
}

/// The chat-formatted prompts as text, with their ids.
fn chat_prompts(m: &msn::LoadedModel<B>, n: usize) -> msn::Result<Vec<(String, Vec<u32>)>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/spec_bench/question.jsonl");
    let questions = msn::bench::read_spec_bench(&path)?;
    let mut by_cat: BTreeMap<&str, Vec<&msn::bench::SpecBenchQuestion>> = BTreeMap::new();
    for q in &questions {
        by_cat.entry(&q.category).or_default().push(q);
    }
    let cats: Vec<_> = by_cat.values().collect();
    (0..n)
        .map(|i| {
            let q = cats[i % cats.len()][i / cats.len()];
            let text = m
                .tokenizer
                .apply_chat_template(&[msn::Message::new("user", &q.turns[0])], true)?;
            let ids = m.tokenizer.encode(&text)?;
            Ok((text, ids))
        })
        .collect()
}

/// The median of `v` (non-empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// llama-bench's pp128, tg128 and tg128 at depth 700 (tokens/s).
fn llama_bench(dir: &Path, gguf: &Path, threads: usize) -> msn::Result<Round> {
    let mut r = Round::new();
    for (args, keys) in [
        (
            vec!["-p", "128", "-n", "128"],
            ["prefill 128", "decode 128"],
        ),
        (
            vec!["-p", "0", "-n", "128", "-d", "700"],
            ["", "decode 128 at depth 700"],
        ),
    ] {
        let (so, _) = run(Command::new(dir.join("llama-bench"))
            .arg("-m")
            .arg(gguf)
            .args(["-t", &threads.to_string(), "-o", "json", "-r", "3"])
            .args(llama_cpp::off_amx(true))
            .args(&args))?;
        let v: serde_json::Value = serde_json::from_str(&so)
            .map_err(|e| msn::Error::InvalidArgument(format!("llama-bench JSON: {e}")))?;
        for test in v.as_array().into_iter().flatten() {
            let key = if test["n_prompt"].as_u64() > Some(0) {
                keys[0]
            } else {
                keys[1]
            };
            if let Some(ts) = test["avg_ts"].as_f64() {
                r.insert(key.into(), ts);
            }
        }
    }
    Ok(r)
}

/// The same three figures for msn's forward pass (medians of 3).
fn forward_speed(m: &msn::LoadedModel<B>) -> msn::Result<Round> {
    let d = Default::default();
    let ids: Vec<u32> = (0..828u32).map(|i| 100 + (i * 37) % 20000).collect();
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    let mut tg_deep = Vec::new();
    for _ in 0..3 {
        let mut cache = m.model.new_cache(1, 1024);
        let t = Instant::now();
        m.model
            .forward(ForwardInput::<B>::causal(&ids[..128], 0, &d), &mut cache);
        pp.push(128.0 / t.elapsed().as_secs_f64());
        for (start, out) in [(0, &mut tg), (700, &mut tg_deep)] {
            let mut cache = m.model.new_cache(1, 1024);
            if start > 0 {
                m.model
                    .forward(ForwardInput::<B>::causal(&ids[..start], 0, &d), &mut cache);
            }
            let t = Instant::now();
            for i in start..start + 128 {
                let l = m
                    .model
                    .forward(ForwardInput::<B>::causal(&ids[i..=i], i, &d), &mut cache);
                std::hint::black_box(l.into_data());
            }
            out.push(128.0 / t.elapsed().as_secs_f64());
        }
    }
    Ok(Round::from([
        ("prefill 128".into(), median(pp)),
        ("decode 128".into(), median(tg)),
        ("decode 128 at depth 700".into(), median(tg_deep)),
    ]))
}

/// llama-completion greedy on every prompt: generated tokens over prompt + generation time, and
/// the texts it generated.
fn llama_completion(
    dir: &Path,
    gguf: &Path,
    threads: usize,
    prompts: &[(String, Vec<u32>)],
    max_new: usize,
) -> msn::Result<(Round, Vec<String>)> {
    let (mut all, mut texts) = (Timed::default(), Vec::new());
    for (text, _) in prompts {
        let (so, t) = llama_cpp::completion(dir, gguf, threads, max_new, text)?;
        all.add(t);
        texts.push(so);
    }
    Ok((
        Round::from([("greedy end to end".into(), all.tokens_per_s())]),
        texts,
    ))
}

/// How far msn's greedy texts agree with llama.cpp's on the same prompts: prompts whose texts
/// are identical, and the mean share of the shorter text the two have in common from the start.
fn agreement(llama: &[String], ours: &[String]) -> (usize, f64) {
    let clean = |t: &str| t.replace("[end of text]", "").trim_end().to_string();
    let (mut same, mut share) = (0, 0.0);
    for (a, b) in llama.iter().zip(ours) {
        let (a, b) = (clean(a), clean(b));
        let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        let shorter = a.chars().count().min(b.chars().count()).max(1);
        same += usize::from(a == b);
        share += common.min(shorter) as f64 / shorter as f64;
    }
    (same, share / llama.len().max(1) as f64)
}

/// llama-lookup (llama.cpp's prompt lookup decoding, up to 8 drafted tokens) on every prompt:
/// decoded tokens over encode + decode time.
fn llama_lookup(
    dir: &Path,
    gguf: &Path,
    threads: usize,
    prompts: &[(String, Vec<u32>)],
    max_new: usize,
) -> msn::Result<Round> {
    let mut all = Timed::default();
    for (text, _) in prompts {
        all.add(llama_cpp::lookup(dir, gguf, threads, max_new, text, None)?);
    }
    Ok(Round::from([(
        "PLD end to end (llama-lookup, draft 8)".into(),
        all.tokens_per_s(),
    )]))
}

/// msn's greedy and, with `drafting`, its drafting decoders on every prompt, each output
/// checked equal to greedy's; greedy's texts.
fn decoders(
    m: &msn::LoadedModel<B>,
    prompts: &[(String, Vec<u32>)],
    max_new: usize,
    drafting: bool,
) -> msn::Result<(Round, Vec<String>)> {
    let cfg = GenerateConfig::new(max_new, &m.tokenizer);
    let mut named: Vec<(&str, msn::AnyDecoder)> =
        vec![("greedy end to end", msn::AnyDecoder::Greedy(msn::Greedy))];
    if drafting {
        named.push((
            "TR-Jacobi (auto budget) end to end",
            msn::AnyDecoder::TrJacobi(msn::TrJacobi::auto(&m.model, Default::default())?),
        ));
        named.push((
            "PLD (auto budget) end to end",
            msn::AnyDecoder::PromptLookup(msn::PromptLookup::auto(&m.model, Default::default())),
        ));
    }
    let mut totals = vec![(0usize, 0f64); named.len()];
    let mut texts = Vec::new();
    for (_, ids) in prompts {
        let mut reference: Option<Vec<u32>> = None;
        for ((name, d), t) in named.iter_mut().zip(totals.iter_mut()) {
            let g = d.generate(&m.model, Some(&m.tokenizer), ids, &cfg)?;
            match &reference {
                None => {
                    reference = Some(g.tokens.clone());
                    texts.push(g.text.clone());
                }
                Some(r) if *r != g.tokens => {
                    return Err(msn::Error::InvalidArgument(format!(
                        "{name} differs from greedy"
                    )));
                }
                _ => {}
            }
            t.0 += g.tokens.len();
            t.1 += g.wall_time_s;
        }
    }
    let round = named
        .iter()
        .zip(totals)
        .map(|((name, _), (n, s))| (name.to_string(), n as f64 / s))
        .collect();
    Ok((round, texts))
}

/// Whether a figure is a time or a memory (lower is better) rather than a speed.
fn lower_is_better(key: &str) -> bool {
    key.ends_with("(s)") || key.ends_with("(MB)")
}

/// Median over rounds of each figure, the table, JSON, markdown and SVG.
fn report(
    args: &Args,
    gguf: &Path,
    rounds: &[(Round, Round)],
    (same, share): (usize, f64),
) -> msn::Result<()> {
    let rows = median_rows(rounds);
    let mut cpu = msn::bench::cpu_description();
    if args.host_kernels != msn::HostKernels::default() {
        cpu.push_str(&format!("; msn's host kernels {}", args.host_kernels));
    }
    if let Ok(isa) = std::env::var("MSN_COMPARE_ISA") {
        cpu.push_str(&format!(
            "; both engines limited to {isa} (llama.cpp built for it, msn's MSN_HOST_ISA)"
        ));
    }
    let file = gguf
        .file_name()
        .map_or(String::new(), |f| f.to_string_lossy().into_owned());
    let mut md = format!(
        "{file} on {cpu}, {} threads, {} rounds interleaved (medians), {} chat prompts x up to {} new tokens\n\n| tokens/s (time and memory where named; lower is better there) | llama.cpp | msn | msn / llama.cpp |\n|---|---|---|---|\n",
        args.threads,
        rounds.len(),
        args.prompts,
        args.max_new_tokens
    );
    for (k, t, o, r) in &rows {
        let vs = if k.contains("(auto budget)") {
            format!("{k} (vs llama.cpp greedy)")
        } else {
            k.clone()
        };
        md += &format!("| {vs} | {t:.1} | {o:.1} | {r:.2}x |\n");
    }
    md += &format!(
        "\nGreedy texts: identical to llama.cpp's on {same} of {} prompts; on average the first \
         {:.0}% of the shorter text agrees (the two engines round differently, so a near-tie \
         can go either way).\n",
        args.prompts,
        100.0 * share
    );
    println!("{md}");
    std::fs::create_dir_all(&args.out).map_err(|e| msn::Error::io(&args.out, e))?;
    let json = serde_json::json!({
        "gguf": file, "cpu": cpu, "threads": args.threads, "rounds": rounds.len(),
        "greedy_texts_identical": same, "prompts": args.prompts, "greedy_common_prefix_share": share,
        "rows": rows.iter().map(|(k, t, o, r)| serde_json::json!({"what": k, "llama_cpp": t, "msn": o, "ratio": r})).collect::<Vec<_>>(),
    });
    msn::bench::write_atomic(
        &args.out.join("vs_llamacpp.json"),
        serde_json::to_string_pretty(&json)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    msn::bench::write_atomic(&args.out.join("vs_llamacpp.md"), md.as_bytes())?;
    write_charts(args, &file, &rows)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The ratio bar chart and, with `--scale`, the forward curve.
fn write_charts(args: &Args, file: &str, rows: &[(String, f64, f64, f64)]) -> msn::Result<()> {
    // Every bar is msn's advantage (above 1: msn better): speed ratios as they are, time and
    // memory inverted.
    let (labels, advantage): (Vec<String>, Vec<f64>) = rows
        .iter()
        .map(|(k, _, _, r)| match lower_is_better(k) {
            true => (
                format!("{} (inverse)", k.rsplit_once(" (").map_or(&k[..], |p| p.0)),
                1.0 / r,
            ),
            false => (k.clone(), *r),
        })
        .unzip();
    let svg = plot::bar_chart(
        "msn's advantage over llama.cpp (same GGUF, CPU, threads; above 1: msn better)",
        "ratio",
        &labels,
        &[("msn advantage".into(), advantage)],
        Some(1.0),
    );
    msn::bench::write_atomic(&args.out.join("vs_llamacpp.svg"), svg.as_bytes())?;
    let curve = |col: fn(&(String, f64, f64, f64)) -> f64| -> Vec<(f64, f64)> {
        CURVE
            .iter()
            .filter_map(|t| {
                let row = rows
                    .iter()
                    .find(|r| r.0 == format!("forward of {t} tokens"))?;
                Some((*t as f64, 1000.0 * *t as f64 / col(row)))
            })
            .collect()
    };
    if !curve(|r| r.1).is_empty() {
        let svg = plot::line_chart(
            &format!("Forward of T tokens: {file}, {} threads", args.threads),
            "tokens in the forward (T)",
            "milliseconds",
            &[
                plot::Series {
                    name: "llama.cpp (llama-bench ppT)".into(),
                    points: curve(|r| r.1),
                },
                plot::Series {
                    name: "msn".into(),
                    points: curve(|r| r.2),
                },
            ],
        );
        msn::bench::write_atomic(&args.out.join("forward_curve.svg"), svg.as_bytes())?;
    }
    Ok(())
}

/// Every figure of the rounds in the report's order: (name, llama.cpp's median, msn's median,
/// msn / llama.cpp); the end-to-end decoders llama.cpp lacks are compared with its greedy.
fn median_rows(rounds: &[(Round, Round)]) -> Vec<(String, f64, f64, f64)> {
    let mut order: Vec<String> = ["start to first token (s)", "peak RSS (MB)", "prefill 128"]
        .map(String::from)
        .to_vec();
    order.extend(CURVE.map(|t| format!("forward of {t} tokens")));
    order.extend(
        [
            "decode 32",
            "decode 128",
            "decode 128 at depth 700",
            "greedy end to end",
            "TR-Jacobi (auto budget) end to end",
            "PLD (auto budget) end to end",
            "PLD end to end (llama-lookup, draft 8)",
        ]
        .map(String::from),
    );
    let keys: Vec<String> = order
        .into_iter()
        .filter(|k| rounds[0].1.contains_key(k))
        .collect();
    let llama_greedy = median(
        rounds
            .iter()
            .filter_map(|r| r.0.get("greedy end to end").copied())
            .collect(),
    );
    let mut rows = Vec::new();
    for k in &keys {
        let ours = median(rounds.iter().map(|r| r.1[k]).collect());
        // End-to-end decoders compare with llama.cpp's greedy.
        let theirs = rounds
            .iter()
            .filter_map(|r| r.0.get(k).copied())
            .collect::<Vec<_>>();
        let theirs = if theirs.is_empty() {
            llama_greedy
        } else {
            median(theirs)
        };
        rows.push((k.clone(), theirs, ours, ours / theirs));
    }
    rows
}
