//! Criterion: one forward pass of SmolLM2-135M-Instruct (f16 weights, flex backend) with
//! T = 1, 4, 16 new tokens over a 700-token cache, and one greedy decode step from a short
//! context. `cargo bench --bench forward`. The full table across backends is the
//! `bench_forward` example.

use burn::backend::Flex;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use msn::model::{CausalLm, ForwardInput};

type B = Flex;

fn forward(c: &mut Criterion) {
    let device = Default::default();
    let m = msn::load_with::<B>("smollm2", &device, msn::WeightDtype::F16).expect("load SmolLM2");
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

criterion_group!(benches, forward);
criterion_main!(benches);
