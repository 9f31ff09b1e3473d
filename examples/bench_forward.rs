//! Forward-pass speed of a model on each backend: prefill and decode tokens/s, peak RSS, and the
//! latency of one forward pass of T = 1..64 new tokens over a 700-token cache (the curve that
//! decides how large a token tree a decoder can afford on a device).
//!
//! ```text
//! cargo run --release --features ndarray --example bench_forward -- --devices flex,ndarray
//! cargo run --release --example bench_forward -- --host native,converted,off
//! ```
//! Each backend runs in its own child process so that peak RSS is its own. Prints a markdown
//! table, writes `results/forward_<device>.json` and `results/forward_latency.svg`.

mod common;
use burn::prelude::*;
use clap::Parser;
use common::plot;
use common::with_backend;
use msn::{CausalLm, ForwardInput};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug, Clone)]
struct Args {
    /// Model: .gguf, Hugging Face directory, or `smollm2`.
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// Comma-separated backends to compare.
    #[arg(long, default_value = "flex")]
    devices: String,
    /// Weight storage, f16 or f32 (comma-separated to compare both).
    #[arg(long, default_value = "f16")]
    dtypes: String,
    /// Host copies for decoding steps: native (the GGUF's own quantized blocks), converted
    /// (f16/f32 copies of the tensors), off (burn only); comma-separated to compare.
    #[arg(long, default_value = "native")]
    host: String,
    /// Cached context for the latency curve.
    #[arg(long, default_value_t = 700)]
    context: usize,
    /// Tokens decoded for the decode-speed figures.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Repetitions per latency point (the median is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Output directory.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Re-draw the table and plot from the JSON files of an earlier run in `--out`.
    #[arg(long)]
    replot: bool,
    /// Internal: run one (device, dtype) and print its JSON.
    #[arg(long, hide = true)]
    child: Option<String>,
}

const TS: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sync<B: Backend>(t: Tensor<B, 3>) {
    // Reading one value forces lazy/asynchronous backends to finish.
    let [b, n, v] = t.dims();
    let _ = t.slice([0..b, n - 1..n, 0..1.min(v)]).into_data();
}

fn run<B: Backend>(
    device: B::Device,
    args: &Args,
    dtype: msn::WeightDtype,
    host: msn::HostKernels,
) -> msn::Result<serde_json::Value> {
    common::demo_model::resolve(&args.model)?;
    let m = msn::load_with::<B>(
        &args.model,
        &device,
        msn::LoadOptions {
            dtype,
            host,
            ..Default::default()
        },
    )?;
    let host_storage = m.model.host_storage().unwrap_or_else(|| "none".into());
    let model = &m.model;
    let vocab = model.info().vocab_size as u32;
    // Deterministic pseudo-text: real token ids spread over the vocabulary.
    let tokens: Vec<u32> = (0..args.context + TS[TS.len() - 1])
        .map(|i| 200 + (i as u32 * 7919) % (vocab - 400))
        .collect();
    // Warm-up.
    let mut cache = model.new_cache(1, 64);
    sync(model.forward_last(ForwardInput::causal(&tokens[..16], 0, &device), &mut cache));
    // Prefill 128 tokens.
    let prefill: Vec<f64> = (0..3)
        .map(|_| {
            let mut cache = model.new_cache(1, 128);
            let t = Instant::now();
            sync(model.forward_last(ForwardInput::causal(&tokens[..128], 0, &device), &mut cache));
            128.0 / t.elapsed().as_secs_f64()
        })
        .collect();
    let decode = |ctx: usize| -> f64 {
        let mut cache = model.new_cache(1, ctx + args.decode_tokens);
        sync(model.forward_last(ForwardInput::causal(&tokens[..ctx], 0, &device), &mut cache));
        let t = Instant::now();
        for i in 0..args.decode_tokens {
            let l = model.forward_last(
                ForwardInput::causal(&tokens[ctx + i % 64..ctx + i % 64 + 1], ctx + i, &device),
                &mut cache,
            );
            sync(l);
        }
        args.decode_tokens as f64 / t.elapsed().as_secs_f64()
    };
    let decode_short = decode(16);
    let decode_long = decode(args.context);
    // Latency curve over a cached context.
    let mut cache = model.new_cache(1, args.context + TS[TS.len() - 1]);
    sync(model.forward_last(
        ForwardInput::causal(&tokens[..args.context], 0, &device),
        &mut cache,
    ));
    let mut latency = Vec::new();
    for &t in &TS {
        let times: Vec<f64> = (0..args.reps)
            .map(|_| {
                let s = Instant::now();
                sync(model.forward(
                    ForwardInput::causal(
                        &tokens[args.context..args.context + t],
                        args.context,
                        &device,
                    ),
                    &mut cache,
                ));
                let e = s.elapsed().as_secs_f64();
                cache.truncate(args.context);
                e
            })
            .collect();
        latency.push(serde_json::json!({"t": t, "ms": median(times) * 1e3}));
    }
    Ok(serde_json::json!({
        "prefill_tok_s": median(prefill),
        "decode_tok_s_short": decode_short,
        "decode_tok_s_context": decode_long,
        "context": args.context,
        "peak_rss_mib": common::peak_rss_mib(),
        "host_storage": host_storage,
        "latency": latency,
    }))
}

fn main() {
    let args = Args::parse();
    if let Some(child) = &args.child {
        let mut parts = child.split(':');
        let (dev, dtype, host) = (
            parts.next().expect("device"),
            parts.next().expect("dtype"),
            parts.next().expect("host"),
        );
        let dtype: msn::WeightDtype = dtype.parse().expect("dtype");
        let host: msn::HostKernels = host.parse().expect("host");
        match with_backend!(dev, run(&args, dtype, host)) {
            Ok(v) => println!("{v}"),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    std::fs::create_dir_all(&args.out).expect("create output dir");
    let mut rows = Vec::new();
    for dev in args.devices.split(',') {
        for dtype in args.dtypes.split(',') {
            for host in args.host.split(',') {
                rows.extend(measure(&args, dev, dtype, host));
            }
        }
    }
    table_and_chart(&args, &rows);
}

/// One configuration measured in a child process (or, with `--replot`, read back), labelled.
fn measure(args: &Args, dev: &str, dtype: &str, host: &str) -> Option<(String, serde_json::Value)> {
    let path = args.out.join(format!("forward_{dev}_{dtype}_{host}.json"));
    let label = |v: &serde_json::Value| {
        format!(
            "{dev} {dtype}, host {host} ({})",
            v["host_storage"].as_str().unwrap_or("?")
        )
    };
    if args.replot {
        let text = std::fs::read_to_string(&path).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).expect("result JSON");
        return Some((label(&v), v));
    }
    eprintln!("measuring {dev} ({dtype}, host {host}) ...");
    let out = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args(std::env::args().skip(1))
        .arg("--child")
        .arg(format!("{dev}:{dtype}:{host}"))
        .output()
        .expect("run child");
    if !out.status.success() {
        eprintln!(
            "{dev} ({dtype}, host {host}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("child JSON");
    std::fs::write(&path, v.to_string()).expect("write");
    Some((label(&v), v))
}

/// The markdown table of every configuration and the latency chart.
fn table_and_chart(args: &Args, rows: &[(String, serde_json::Value)]) {
    println!(
        "model: {}, {} tokens of cached context for the latency columns\n",
        args.model, args.context
    );
    print!(
        "| backend | prefill tok/s | decode tok/s (short ctx) | decode tok/s (ctx {}) | peak RSS MiB |",
        args.context
    );
    for t in TS {
        print!(" T={t} ms |");
    }
    println!();
    println!("|---|---|---|---|---|{}", "---|".repeat(TS.len()));
    let mut series = Vec::new();
    for (name, v) in rows {
        print!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.0} |",
            v["prefill_tok_s"].as_f64().unwrap(),
            v["decode_tok_s_short"].as_f64().unwrap(),
            v["decode_tok_s_context"].as_f64().unwrap(),
            v["peak_rss_mib"].as_f64().unwrap()
        );
        let pts: Vec<(f64, f64)> = v["latency"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["t"].as_f64().unwrap(), p["ms"].as_f64().unwrap()))
            .collect();
        for (_, ms) in &pts {
            print!(" {ms:.1} |");
        }
        println!();
        series.push(plot::Series {
            name: name.clone(),
            points: pts,
        });
    }
    let svg = plot::line_chart(
        &format!("Forward latency over a {}-token cache", args.context),
        "new tokens per forward (T)",
        "ms per forward",
        &series,
    );
    std::fs::write(args.out.join("forward_latency.svg"), svg).expect("write svg");
    eprintln!("wrote {}/forward_latency.svg", args.out.display());
}
