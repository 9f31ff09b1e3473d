//! Fuzzes loading a Hugging Face checkpoint: the input is `config.json`, a NUL byte, then
//! `model.safetensors`. Any input must load or return an error, never panic, hang or allocate
//! without bound (run with `-rss_limit_mb` / `-malloc_limit_mb`); a model that loads runs one
//! forward of two tokens on burn's path and on the host engine. Seeds: `fuzz/make_seeds.py`.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use burn::backend::NdArray;
use libfuzzer_sys::fuzz_target;

/// A valid tokenizer beside the fuzzed files (the tokenizer has its own target).
const TOKENIZER: &[u8] = include_bytes!("../../tests/fixtures/transformers_qwen2/tokenizer.json");

fuzz_target!(|data: &[u8]| {
    let (config, weights) = scratch::split(data);
    let dir = scratch::dir("hf");
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("model.safetensors"), weights).unwrap();
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER).unwrap();
    let device = Default::default();
    // burn's path only (the host engine is turned on below); the RoPE tables hold every served
    // position, so the context is capped as in gguf_model.
    let options = msn::LoadOptions {
        host: msn::HostKernels::Off,
        context: Some(256),
        ..Default::default()
    };
    if let Ok(loaded) = msn::load_with::<NdArray>(dir.to_str().unwrap(), &device, options) {
        let mut m = loaded.model;
        scratch::forward_two(&m);
        m.enable_host_kernels(8);
        scratch::forward_two(&m);
    }
});
