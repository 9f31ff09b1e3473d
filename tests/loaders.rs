//! Loader correctness and robustness: dequantisation against llama.cpp's Python reference,
//! every malformed-GGUF path, Hugging Face export and re-load.

mod common;
use common::{B, fixture, temp_file, tiny_gguf, tiny_gguf_with};
use msn::__internal::{GgmlType, GgufHeader, MetaValue, dequantize};
use msn::ExportDtype;
use msn::{Error, WeightDtype};

#[test]
fn dequantization_matches_gguf_python_reference() {
    let fx = fixture("quant_blocks.json");
    for (name, ty) in [
        ("Q4_0", GgmlType::Q4_0),
        ("Q4_1", GgmlType::Q4_1),
        ("Q5_0", GgmlType::Q5_0),
        ("Q5_1", GgmlType::Q5_1),
        ("Q8_0", GgmlType::Q8_0),
        ("Q4_K", GgmlType::Q4K),
        ("Q5_K", GgmlType::Q5K),
        ("Q6_K", GgmlType::Q6K),
        ("F16", GgmlType::F16),
        ("BF16", GgmlType::Bf16),
    ] {
        let hex = fx[name]["hex"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let want: Vec<f32> = fx[name]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let mut got = vec![0f32; want.len()];
        dequantize(ty, &bytes, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "{name}[{i}]: {g} vs reference {w}"
            );
        }
    }
}

fn parse_err(bytes: &[u8]) -> Error {
    GgufHeader::parse(bytes).expect_err("malformed input must be rejected")
}

#[test]
fn tiny_gguf_parses() {
    let bytes = tiny_gguf(&[], vec![]);
    let h = GgufHeader::parse(&bytes).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.tensors.len(), 20);
}

#[test]
fn wrong_magic_is_rejected() {
    let mut bytes = tiny_gguf(&[], vec![]);
    bytes[0] = b'X';
    assert!(matches!(parse_err(&bytes), Error::MalformedGguf(m) if m.contains("magic")));
}

#[test]
fn unsupported_version_is_rejected() {
    let mut bytes = tiny_gguf(&[], vec![]);
    bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(parse_err(&bytes), Error::MalformedGguf(m) if m.contains("version")));
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = tiny_gguf(&[], vec![]);
    // Every prefix shorter than the whole file fails cleanly (the data section included).
    for len in (0..bytes.len()).step_by(7) {
        assert!(
            GgufHeader::parse(&bytes[..len]).is_err(),
            "prefix of {len} bytes accepted"
        );
    }
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    let mut bytes = tiny_gguf(&[], vec![]);
    bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    assert!(matches!(parse_err(&bytes), Error::MalformedGguf(m) if m.contains("tensor count")));
    let mut bytes = tiny_gguf(&[], vec![]);
    bytes[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes()); // metadata count
    assert!(matches!(parse_err(&bytes), Error::MalformedGguf(m) if m.contains("metadata count")));
    // First key's length: absurd.
    let mut bytes = tiny_gguf(&[], vec![]);
    bytes[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    assert!(matches!(parse_err(&bytes), Error::MalformedGguf(_)));
}

/// Byte offset of the first tensor-info entry's dims in a `tiny_gguf` file.
fn first_tensor_entry(bytes: &[u8]) -> usize {
    let name = b"token_embd.weight";
    bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len()
}

#[test]
fn absurd_dims_and_ranks_are_rejected() {
    let base = tiny_gguf(&[], vec![]);
    let at = first_tensor_entry(&base);
    // Rank 9.
    let mut bytes = base.clone();
    bytes[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    assert!(matches!(parse_err(&bytes), Error::MalformedGguf(m) if m.contains("dimensions")));
    // A dimension of 2^62: the element count overflows or the data lies past the end.
    let mut bytes = base.clone();
    bytes[at + 4..at + 12].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(parse_err(&bytes), Error::MalformedGguf(_)));
    let mut bytes = base;
    bytes[at + 4..at + 12].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert!(matches!(parse_err(&bytes), Error::MalformedGguf(m) if m.contains("past the end")));
}

#[test]
fn unknown_dtype_is_a_typed_error() {
    let mut bytes = tiny_gguf(&[], vec![]);
    let at = first_tensor_entry(&bytes) + 4 + 2 * 8; // after rank and two dims
    bytes[at..at + 4].copy_from_slice(&16u32.to_le_bytes()); // IQ2_XXS
    match parse_err(&bytes) {
        Error::UnsupportedDtype { tensor, dtype } => {
            assert_eq!(tensor, "token_embd.weight");
            assert_eq!(dtype, "IQ2_XXS");
        }
        e => panic!("unexpected {e}"),
    }
    bytes[at..at + 4].copy_from_slice(&999u32.to_le_bytes());
    assert!(matches!(parse_err(&bytes), Error::UnsupportedDtype { .. }));
}

#[test]
fn missing_tensor_is_a_typed_error() {
    let f = temp_file(&tiny_gguf(&["blk.1.ffn_up.weight"], vec![]));
    let err = msn::load::<B>(f.path().to_str().unwrap(), &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::MissingTensor(ref n) if n == "model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
}

#[test]
fn wrong_architecture_and_missing_file_are_typed_errors() {
    let f = temp_file(&tiny_gguf(
        &[],
        vec![("general.architecture", MetaValue::String("mamba".into()))],
    ));
    let err = msn::load::<B>(f.path().to_str().unwrap(), &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedArchitecture(ref a) if a == "mamba"),
        "{err}"
    );
    let err = msn::load::<B>("/nonexistent/model.gguf", &Default::default()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn tiny_hf_export_round_trip_is_exact() {
    let f = temp_file(&tiny_gguf(&[], vec![]));
    let m = msn::load::<B>(f.path().to_str().unwrap(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save_hf(dir.path(), ExportDtype::F32).unwrap();
    let back = msn::load::<B>(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let prompt = [3, 4, 5, 6, 7, 3];
    assert_eq!(
        common::all_logits(&m.model, &prompt),
        common::all_logits(&back.model, &prompt)
    );
    assert_eq!(
        back.tokenizer.encode("ab a").unwrap(),
        m.tokenizer.encode("ab a").unwrap()
    );
    assert_eq!(back.tokenizer.eos_ids, vec![2]);
    // The tokenizer alone, from either form, is the loaded model's.
    for spec in [f.path().to_str().unwrap(), dir.path().to_str().unwrap()] {
        let t = msn::load_tokenizer(spec).unwrap();
        assert_eq!(
            t.encode("ab a").unwrap(),
            m.tokenizer.encode("ab a").unwrap()
        );
        assert_eq!(
            (t.vocab_size(), &t.eos_ids),
            (m.tokenizer.vocab_size(), &m.tokenizer.eos_ids)
        );
    }
    let err = msn::load_tokenizer("/nonexistent/model.gguf").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn malformed_hf_directories_are_typed_errors() {
    let f = temp_file(&tiny_gguf(&[], vec![]));
    let m = msn::load::<B>(f.path().to_str().unwrap(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save_hf(dir.path(), ExportDtype::Bf16).unwrap();
    // bf16 export loads (rounded weights).
    msn::load::<B>(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    // Truncated safetensors.
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let err = msn::load::<B>(dir.path().to_str().unwrap(), &Default::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidCheckpoint { .. }), "{err}");
    // No weights at all.
    std::fs::remove_file(&st).unwrap();
    let err = msn::load::<B>(dir.path().to_str().unwrap(), &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::InvalidCheckpoint { ref reason, .. } if reason.contains("model.safetensors")),
        "{err}"
    );
    // A config that is not llama.
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 8, "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64}"#).unwrap();
    let err = msn::load::<B>(dir.path().to_str().unwrap(), &Default::default()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedArchitecture(_)), "{err}");
}

#[test]
fn smollm2_hf_round_trip_gives_identical_logits() {
    // f32 products on both sides: the export holds the dequantized weights in f32, which the
    // loaded directory multiplies as f32 (it has no blocks for integer products).
    let options = msn::LoadOptions {
        host: msn::HostKernels::NativeF32,
        ..Default::default()
    };
    let m = &msn::load_with::<B>(common::demo(), &Default::default(), options).unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save_hf(dir.path(), ExportDtype::F32).unwrap();
    let back = msn::load::<B>(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let prompt = m.tokenizer.encode("def fib(n):\n    return n").unwrap();
    assert_eq!(
        common::all_logits(&m.model, &prompt),
        common::all_logits(&back.model, &prompt)
    );
    // The exported tokenizer and chat template are the same.
    let msgs = [msn::Message::new("user", "Hi")];
    assert_eq!(
        back.tokenizer.apply_chat_template(&msgs, true).unwrap(),
        m.tokenizer.apply_chat_template(&msgs, true).unwrap()
    );
    assert_eq!(
        back.tokenizer.encode("Größe 12345 <|im_end|>").unwrap(),
        m.tokenizer.encode("Größe 12345 <|im_end|>").unwrap()
    );
}

#[test]
fn f16_weights_keep_greedy_output() {
    let refs = fixture("reference_logits.json");
    let m16 = msn::load_with::<B>(common::demo(), &Default::default(), WeightDtype::F16).unwrap();
    for case in refs["cases"].as_array().unwrap() {
        let prompt: Vec<u32> = common::ids(&case["ids"]);
        let want: Vec<u32> = common::ids(&case["greedy_continuation"]);
        let cfg = msn::GenerateConfig {
            max_new_tokens: want.len(),
            eos_ids: vec![],
            stop_strings: vec![],
            sampling: None,
            prompt_cache: None,
        };
        let g = msn::Decoder::generate(&mut msn::Greedy, &m16.model, None, &prompt, &cfg).unwrap();
        assert_eq!(g.tokens, want);
    }
}

/// The tiny GGUF llama and its Hugging Face export (f32) in a temporary directory.
fn tiny_hf() -> (msn::LoadedModel<B>, tempfile::TempDir) {
    let f = temp_file(&tiny_gguf(&[], vec![]));
    let m = msn::load::<B>(f.path().to_str().unwrap(), &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    m.save_hf(dir.path(), ExportDtype::F32).unwrap();
    (m, dir)
}

fn load_err(path: &std::path::Path) -> Error {
    msn::load::<B>(path.to_str().unwrap(), &Default::default()).unwrap_err()
}

/// Rewrites `dir/model.safetensors` with `extra` f32 tensors (name, shape; zeros) added.
fn add_safetensors(dir: &std::path::Path, extra: &[(&str, &[usize])]) {
    use safetensors::{Dtype, SafeTensors, tensor::TensorView};
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let zeros: Vec<Vec<u8>> = extra
        .iter()
        .map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()])
        .collect();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView)> = st.tensors();
    for ((name, shape), data) in extra.iter().zip(&zeros) {
        views.push((
            name.to_string(),
            TensorView::new(Dtype::F32, shape.to_vec(), data).unwrap(),
        ));
    }
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
}

/// Loaders read every tensor a checkpoint holds: one the llama has no place for (a bias, a
/// part of another architecture) is an error naming it, since outputs without it are wrong.
#[test]
fn tensors_the_model_does_not_use_are_typed_errors() {
    // GGUF: a query bias (Qwen2 has them; the llama has not).
    let f = temp_file(&tiny_gguf_with(
        &[],
        vec![],
        &[("blk.0.attn_q.bias", &[16])],
    ));
    let err = load_err(f.path());
    assert!(
        matches!(err, Error::UnusedTensors { ref names } if names == &["blk.0.attn_q.bias"]),
        "{err}"
    );
    assert!(err.to_string().contains("blk.0.attn_q.bias"), "{err}");
    // llama3's RoPE factors are read (by the RoPE tables, not the builder): no error.
    let f = temp_file(&tiny_gguf_with(&[], vec![], &[("rope_freqs.weight", &[2])]));
    msn::load::<B>(f.path().to_str().unwrap(), &Default::default()).unwrap();

    // Hugging Face: biases on two projections, both named, sorted.
    let (_, dir) = tiny_hf();
    add_safetensors(
        dir.path(),
        &[
            ("model.layers.1.mlp.up_proj.bias", &[24]),
            ("model.layers.0.self_attn.q_proj.bias", &[16]),
        ],
    );
    let err = load_err(dir.path());
    let want = [
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.1.mlp.up_proj.bias",
    ];
    assert!(
        matches!(err, Error::UnusedTensors { ref names } if names == &want),
        "{err}"
    );
}

/// What transformers itself ignores loads: RoPE buffers of older checkpoints, and a stored
/// head when the config ties it to the embedding. The logits are the plain model's.
#[test]
fn tensors_transformers_ignores_are_ignored() {
    let (m, dir) = tiny_hf();
    add_safetensors(
        dir.path(),
        &[
            ("model.layers.0.self_attn.rotary_emb.inv_freq", &[2]),
            ("lm_head.weight", &[8, 16]),
        ],
    );
    let back = msn::load::<B>(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let prompt = [3, 4, 5, 6, 7, 3];
    assert_eq!(
        common::all_logits(&m.model, &prompt),
        common::all_logits(&back.model, &prompt)
    );
}

/// Rewrites `dir/config.json` with `edit` applied to its JSON.
fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

/// A config that states what the llama does not compute is an error, never an approximation.
#[test]
fn configs_with_unimplemented_features_are_typed_errors() {
    let (m, dir) = tiny_hf();
    let good = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    // The tiny model's heads are 4 wide: longrope needs 2 divisors of each kind.
    let two = serde_json::json!([1.0, 1.5]);
    let cases: [(&str, serde_json::Value, &str); 8] = [
        ("hidden_act", "gelu".into(), "gelu"),
        ("partial_rotary_factor", 0.5.into(), "partial_rotary_factor"),
        ("mlp_bias", true.into(), "mlp_bias"),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "yarn",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "longrope", "short_factor": two,
                "long_factor": two}),
            "original_max_position_embeddings",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "longrope", "short_factor": two,
                "original_max_position_embeddings": 16}),
            "long_factor",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "longrope", "short_factor": [1.0, 2.0, 3.0],
                "long_factor": two, "original_max_position_embeddings": 16}),
            "short_factor",
        ),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "longrope", "short_factor": two,
                "long_factor": two, "original_max_position_embeddings": 16,
                "partial_rotary_factor": 0.5}),
            "partial_rotary_factor",
        ),
    ];
    for (key, value, says) in cases {
        std::fs::write(dir.path().join("config.json"), &good).unwrap();
        edit_config(dir.path(), |v| v[key] = value);
        let err = load_err(dir.path());
        assert!(
            matches!(
                err,
                Error::UnsupportedArchitecture(_) | Error::InvalidConfig(_)
            ) && err.to_string().contains(says),
            "{key}: {err}"
        );
    }
    // Attention biases are computed (Qwen 2, `attention_bias`): a checkpoint that states them
    // must hold them.
    std::fs::write(dir.path().join("config.json"), &good).unwrap();
    edit_config(dir.path(), |v| v["attention_bias"] = true.into());
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::MissingTensor(ref m) if m.contains("q_proj.bias")),
        "{err}"
    );
    // What is stated but changes nothing loads: SiLU, no biases, "default" RoPE scaling.
    std::fs::write(dir.path().join("config.json"), &good).unwrap();
    edit_config(dir.path(), |v| {
        v["hidden_act"] = "silu".into();
        v["attention_bias"] = false.into();
        v["mlp_bias"] = false.into();
        v["rope_scaling"] = serde_json::json!({"rope_type": "default"});
    });
    let back = msn::load::<B>(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let prompt = [3, 4, 5, 6, 7, 3];
    assert_eq!(
        common::all_logits(&m.model, &prompt),
        common::all_logits(&back.model, &prompt)
    );
}

/// A sliding attention window shorter than the context (Mistral 7B v0.1) limits the context to
/// the window, where sliding and full attention agree; past it, a typed error.
#[test]
fn a_sliding_window_limits_the_context() {
    let (m, dir) = tiny_hf();
    edit_config(dir.path(), |v| {
        v["model_type"] = "mistral".into();
        v["sliding_window"] = 8.into();
    });
    let back = msn::load::<B>(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    assert_eq!(back.model.config().max_position_embeddings, 8);
    let prompt = [3, 4, 5, 6, 7, 3];
    assert_eq!(
        common::all_logits(&m.model, &prompt),
        common::all_logits(&back.model, &prompt)
    );
    let cfg = back.generate_config(3);
    let err =
        msn::Decoder::generate(&mut msn::Greedy, &back.model, None, &prompt, &cfg).unwrap_err();
    assert!(
        matches!(err, Error::ContextOverflow { context: 8, .. }),
        "{err}"
    );
}

/// GGUF RoPE scaling other than linear, or linear without its factor, is an error.
#[test]
fn gguf_rope_scaling_must_be_implemented() {
    let load = |kind: &str| {
        let meta = vec![("llama.rope.scaling.type", MetaValue::String(kind.into()))];
        let f = temp_file(&tiny_gguf(&[], meta));
        msn::load::<B>(f.path().to_str().unwrap(), &Default::default())
    };
    for (kind, says) in [("yarn", "yarn"), ("linear", "rope.scaling.factor")] {
        let err = load(kind).unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig(ref m) if m.contains(says)),
            "{kind}: {err}"
        );
    }
    load("none").unwrap();
}

/// A checkpoint written by transformers 5 (`tools/make_transformers_fixture.py`): RoPE in its
/// `rope_parameters` layout (llama3 scaling, base 50000), grouped-query attention, a head width
/// other than hidden / heads, an untied head. Our logits against transformers' float64 ones.
#[test]
fn a_transformers_5_checkpoint_matches_transformers() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers_llama3");
    let want = fixture("transformers_llama3/logits.json");
    let ids = common::ids(&want["ids"]);
    let model = msn::load_weights::<B>(&dir, &Default::default(), WeightDtype::F32).unwrap();
    let got = common::all_logits(&model, &ids);
    let worst = common::max_difference(&got, &common::f64_rows(&want["logits"]));
    // f32 against f64 (4.4e-6 measured); reading RoPE wrongly moves the logits by up to 8.3.
    assert!(worst < 1e-4, "largest logit difference {worst}");
}

/// A config stating RoPE twice (version 4's keys and version 5's `rope_parameters`) must agree.
#[test]
fn rope_stated_twice_must_agree() {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers_llama3");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let load =
        |dir: &std::path::Path| msn::load_weights::<B>(dir, &Default::default(), WeightDtype::F32);
    edit_config(dir.path(), |v| v["rope_theta"] = 50000.0.into());
    load(dir.path()).unwrap();
    edit_config(dir.path(), |v| v["rope_theta"] = 10000.0.into());
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ref m) if m.contains("rope_theta")),
        "{err}"
    );
    edit_config(dir.path(), |v| {
        v["rope_theta"] = serde_json::Value::Null;
        v["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 8.0});
    });
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ref m) if m.contains("twice")),
        "{err}"
    );
}

/// The same checkpoint's tokenizer as transformers 5 saves it (BOS from `tokenizer.json`'s
/// post-processor, the chat template in `chat_template.jinja`): transformers' own token ids for
/// a text and for a chat prompt (one BOS, written by the template).
#[test]
fn a_transformers_5_tokenizer_matches_transformers() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers_llama3");
    let want = fixture("transformers_llama3/logits.json");
    let m = msn::load::<B>(dir.to_str().unwrap(), &Default::default()).unwrap();
    let text = want["text"].as_str().unwrap();
    assert_eq!(
        m.tokenizer.encode(text).unwrap(),
        common::ids(&want["text_ids"])
    );
    let user = want["chat_user"].as_str().unwrap();
    assert_eq!(m.chat_prompt(user).unwrap(), common::ids(&want["chat_ids"]));
}

/// transformers' `generate` stops at the end-of-sequence ids of `generation_config.json` too;
/// so does this crate. A malformed file is a typed error.
#[test]
fn generation_config_adds_end_of_sequence_ids() {
    let (_, dir) = tiny_hf();
    let path = dir.path().join("generation_config.json");
    std::fs::write(&path, r#"{"bos_token_id": 0, "eos_token_id": [2, 5]}"#).unwrap();
    let m = msn::load::<B>(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    assert_eq!(m.tokenizer.eos_ids, vec![2, 5]);
    std::fs::write(&path, "{").unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::InvalidCheckpoint { ref path, .. } if path.ends_with("generation_config.json")),
        "{err}"
    );
}

/// llama.cpp's Llama 3 pre-tokenizer group (`llama-bpe`, `llama3`, `llama-v3` in its
/// `llama-vocab.cpp`): a word that is in the vocabulary is one token even when no merge builds it
/// (`ignore_merges`), and BOS is added unless the file says otherwise. Other pre-tokenizers
/// apply the merges and add BOS only when asked. llama.cpp 0.3.36 itself (`llama-completion
/// --verbose-prompt`) gives `[1, 5]`, `[5]` and `[1, 3, 4]` for the first, second and fourth of
/// these files.
#[test]
fn the_llama3_pre_tokenizer_group_follows_llama_cpp() {
    let tokenizer = |pre: &str, add_bos: Option<bool>| {
        let mut meta = vec![
            ("tokenizer.ggml.pre", MetaValue::String(pre.into())),
            (
                "tokenizer.ggml.merges",
                MetaValue::Array(vec![MetaValue::String("Ġ a".into())]),
            ),
            ("tokenizer.ggml.bos_token_id", MetaValue::U32(1)),
        ];
        meta.extend(add_bos.map(|b| ("tokenizer.ggml.add_bos_token", MetaValue::Bool(b))));
        let f = temp_file(&tiny_gguf(&[], meta));
        let m = msn::load::<B>(f.path().to_str().unwrap(), &Default::default()).unwrap();
        m.tokenizer.encode("ab").unwrap()
    };
    // The tiny vocabulary: 1 "<|im_start|>" (BOS here), 3 "a", 4 "b", 5 "ab"; no merge builds
    // "ab".
    assert_eq!(tokenizer("llama-bpe", None), vec![1, 5]);
    assert_eq!(tokenizer("llama3", Some(false)), vec![5]);
    assert_eq!(tokenizer("gpt2", None), vec![3, 4]);
    assert_eq!(tokenizer("smollm", Some(true)), vec![1, 3, 4]);
}

/// The burn tensors of every matrix and of the embedding.
fn dense_params(m: &msn::Llama<B>) -> Vec<&burn::module::Param<burn::tensor::Tensor<B, 2>>> {
    let mut v = vec![&m.embed_tokens.weight];
    for l in &m.layers {
        let (a, f) = (&l.self_attn, &l.mlp);
        v.extend([&a.q_proj.weight, &a.k_proj.weight, &a.v_proj.weight]);
        v.extend([&a.o_proj.weight, &f.gate_proj.weight, &f.up_proj.weight]);
        v.push(&f.down_proj.weight);
    }
    v.extend(m.lm_head.as_ref().map(|h| &h.weight));
    v
}

/// On a CPU backend a GGUF's matrices are held once, in the host engine's form: loading and
/// decoding build none of the dense burn tensors; built on demand they equal the ones an eager
/// load builds, and the logits (the embedding looked up in the host engine's copy) are bit for
/// bit those of a model whose host copies were converted from eagerly built tensors. Tied and
/// untied heads, f32 and f16 tensors, GGUF files and Hugging Face directories.
#[test]
fn gguf_weights_are_held_once_and_built_on_demand_equal() {
    use msn::{HostKernels, LoadOptions};
    let untied: &[(&str, &[usize])] = &[("output.weight", &[8, 16])];
    for (extra, dtype, hf) in [
        (&[][..], WeightDtype::F32, false),
        (untied, WeightDtype::F32, false),
        (&[][..], WeightDtype::F16, false),
        (&[][..], WeightDtype::F32, true),
        (untied, WeightDtype::F16, true),
    ] {
        let f = temp_file(&tiny_gguf_with(&[], vec![], extra));
        let d = Default::default();
        // The same model as a Hugging Face directory (f32 safetensors).
        let dir = tempfile::tempdir().unwrap();
        if hf {
            let m = msn::load::<B>(f.path().to_str().unwrap(), &d).unwrap();
            m.save_hf(dir.path(), ExportDtype::F32).unwrap();
        }
        let path = match hf {
            true => dir.path().to_str().unwrap(),
            false => f.path().to_str().unwrap(),
        };
        let lazy = msn::load_with::<B>(path, &d, dtype).unwrap();
        let options = LoadOptions {
            dtype,
            host: HostKernels::Converted,
            ..Default::default()
        };
        let eager = msn::load_with::<B>(path, &d, options).unwrap();
        let prompt = [3, 4, 5, 6, 7, 3];
        let cfg = msn::GenerateConfig::new(6, &lazy.tokenizer);
        let g = msn::Decoder::generate(&mut msn::Greedy, &lazy.model, None, &prompt, &cfg).unwrap();
        assert_eq!(
            common::all_logits(&lazy.model, &prompt),
            common::all_logits(&eager.model, &prompt)
        );
        let e = msn::Decoder::generate(&mut msn::Greedy, &eager.model, None, &prompt, &cfg);
        assert_eq!(g.tokens, e.unwrap().tokens);
        let (lazy_p, eager_p) = (dense_params(&lazy.model), dense_params(&eager.model));
        assert_eq!(lazy_p.len(), 15 + extra.len());
        assert!(
            lazy_p.iter().all(|p| !p.is_initialized()),
            "{dtype}, {hf}: built"
        );
        assert!(eager_p.iter().all(|p| p.is_initialized()));
        for (a, b) in lazy_p.iter().zip(&eager_p) {
            assert_eq!(a.val().into_data(), b.val().into_data());
        }
    }
}

/// The demo model holds its weights once too: after loading and decoding no dense tensor exists.
#[test]
fn smollm2_builds_no_dense_weights() {
    let m = msn::load::<B>(common::demo(), &Default::default()).unwrap();
    assert_eq!(m.model.host_storage().as_deref(), Some("Q4_1 x Q16"));
    let prompt = m.chat_prompt("What is the capital of France?").unwrap();
    let cfg = m.generate_config(4);
    msn::Decoder::generate(
        &mut msn::Greedy,
        &m.model,
        Some(&m.tokenizer),
        &prompt,
        &cfg,
    )
    .unwrap();
    let built = dense_params(&m.model)
        .iter()
        .filter(|p| p.is_initialized())
        .count();
    assert_eq!(built, 0);
}

/// A `tokenizer.json` on which the tokenizers crate panics (an `expect` in its decoder
/// deserializer; found by `fuzz/fuzz_targets/hf_tokenizer.rs`) is a typed error.
#[test]
fn a_tokenizer_file_the_tokenizers_crate_panics_on_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostile/tokenizer_decoder_panic.json");
    std::fs::copy(hostile, dir.path().join("tokenizer.json")).unwrap();
    let err = msn::Tokenizer::from_hf_dir(dir.path(), &[]).unwrap_err();
    assert!(
        matches!(err, Error::Tokenizer(ref m) if m.contains("malformed")),
        "{err}"
    );
}

/// A Phi-3 GGUF whose fused qkv matrix holds fewer rows than its metadata's heads need (found
/// by `fuzz/fuzz_targets/gguf_model.rs`): a shape error at load, never a panic when a lazily
/// built tensor reads it later.
#[test]
fn a_fused_matrix_too_short_for_its_parts_is_a_shape_error_at_load_on_every_path() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hostile/phi3_fused_rows_short.gguf");
    for host in [msn::HostKernels::Auto, msn::HostKernels::Off] {
        let options = msn::LoadOptions {
            host,
            ..Default::default()
        };
        let err =
            msn::load_with::<B>(path.to_str().unwrap(), &Default::default(), options).unwrap_err();
        assert!(
            matches!(err, Error::ShapeMismatch { .. }),
            "{host:?}: {err}"
        );
    }
}

/// Counts a file states are not allocated before what they count exists (found by
/// `fuzz/fuzz_targets/gguf_model.rs`: a block count of 2^60 aborted the process), and an
/// absurd context is refused before its RoPE tables are built.
#[test]
fn absurd_layer_counts_and_contexts_are_typed_errors_before_allocating() {
    let many_layers = tiny_gguf(&[], vec![("llama.block_count", MetaValue::U64(1 << 60))]);
    let f = temp_file(&many_layers);
    let err = msn::load::<B>(f.path().to_str().unwrap(), &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::MissingTensor(ref n) if n.contains("layers.2.")),
        "{err}"
    );
    let long = tiny_gguf(&[], vec![("llama.context_length", MetaValue::U64(1 << 40))]);
    let f = temp_file(&long);
    let err = msn::load::<B>(f.path().to_str().unwrap(), &Default::default()).unwrap_err();
    assert!(
        matches!(err, Error::InvalidConfig(ref m) if m.contains("context")),
        "{err}"
    );
    // A context asked for below the stated one builds tables for that many positions only.
    let options = msn::LoadOptions {
        context: Some(16),
        ..Default::default()
    };
    let f = temp_file(&tiny_gguf(&[], vec![]));
    let m = msn::load_with::<B>(f.path().to_str().unwrap(), &Default::default(), options).unwrap();
    assert_eq!(m.model.config().max_position_embeddings, 16);
}
