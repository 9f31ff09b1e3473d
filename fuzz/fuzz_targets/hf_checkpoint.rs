//! Fuzzes loading a Hugging Face checkpoint: the input is `config.json`, a NUL byte, then
//! `model.safetensors`. Any input must load or return an error, never panic, hang or allocate
//! without bound (run with `-rss_limit_mb` / `-malloc_limit_mb`); a model that loads runs one
//! forward of two tokens on burn's path and on the host engine. Seeds: `fuzz/make_seeds.py`.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use burn::backend::NdArray;
use libfuzzer_sys::fuzz_target;
use msn::{CausalLm, ForwardInput, WeightDtype};

fuzz_target!(|data: &[u8]| {
    let (config, weights) = scratch::split(data);
    let dir = scratch::dir("hf");
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    let device = Default::default();
    if let Ok(mut m) = msn::load_weights::<NdArray>(&dir, &device, WeightDtype::F32) {
        let vocab = m.config().vocab_size as u32;
        let n = m.config().max_position_embeddings.min(2);
        let ids = [1 % vocab, 2 % vocab];
        for host in [false, true] {
            if host {
                m.enable_host_kernels(8);
            }
            let mut cache = m.new_cache(1, n);
            let _ = m.forward(ForwardInput::causal(&ids[..n], 0, &device), &mut cache);
        }
    }
});
