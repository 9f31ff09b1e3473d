use burn::prelude::*;
use msn::model::{CausalLm, ForwardInput};
use std::time::Instant;
type B = burn::backend::Flex;
fn main() {
    let t: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let dev = Default::default(); let iters: usize = std::env::args().nth(2).map(|s| s.parse().unwrap()).unwrap_or(30);
    let lm = msn::load::load_with::<B>("smollm2", &dev, msn::load::WeightDtype::F16).unwrap();
    let m = &lm.model;
    let toks: Vec<u32> = (0..800u32).map(|i| 1 + (i * 7919) % 40000).collect();
    let mut cache = m.new_cache(1, 800);
    let _ = m.forward_last(ForwardInput::causal(&toks[..700], 0, &dev), &mut cache).into_data();
    let s = Instant::now();
    for _ in 0..iters {
        let _ = m.forward(ForwardInput::causal(&toks[700..700 + t], 700, &dev), &mut cache).into_data();
        cache.truncate(700);
    }
    println!("T={t}: {:.1} ms", s.elapsed().as_secs_f64() / iters as f64 * 1e3);
}
