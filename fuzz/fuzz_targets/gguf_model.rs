//! Fuzzes loading a GGUF model of any family the crate reads (llama, qwen2, qwen3, phi3, gemma,
//! gemma2, gemma3): metadata to configuration, vocabulary to tokenizer, tensors to the host
//! engine's panels. Any input must load or return an error, never panic, hang or allocate
//! without bound (run with `-rss_limit_mb` / `-malloc_limit_mb`); a model that loads runs one
//! forward of two tokens and tokenizes a text. Seeds: the Q8_0 fixtures (`fuzz/make_seeds.py`).
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use burn::backend::NdArray;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch::dir("gguf").join("model.gguf");
    std::fs::write(&path, data).unwrap();
    let device = Default::default();
    // The RoPE tables hold every served position: the context is capped (a file may state up
    // to 2^24 positions, and a checkpoint's own context is a legitimate allocation).
    let options = msn::LoadOptions {
        context: Some(256),
        ..Default::default()
    };
    let Ok(m) = msn::load_with::<NdArray>(path.to_str().unwrap(), &device, options) else {
        return;
    };
    let _ = m.tokenizer.encode("Hello world! naïve café 🦀");
    scratch::forward_two(&m.model);
});
