//! Model families beside llama, each against transformers itself: tiny random Qwen 2 (q, k, v
//! biases), Qwen 3 (per-head q/k RMSNorm, a head wider than hidden / heads) and Phi-3 (fused
//! qkv and gate-up projections) checkpoints saved by transformers, with its float64 logits and
//! greedy tokens (`tools/make_family_fixtures.py`), and the same checkpoints as GGUFs written by
//! llama.cpp's converter and quantizer (`tools/make_family_ggufs.py`).

mod common;
use common::{B, fixture};
use msn::{AnyDecoder, DECODER_NAMES, Decoder, Greedy, Llama};
use std::path::PathBuf;

const FAMILIES: [&str; 8] = [
    "qwen2",
    "qwen3",
    "phi3",
    "phi3_longrope",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gemma3_mm",
];

/// The families with a GGUF of llama.cpp's (`gemma3_mm`'s text model is `gemma3_text`'s kind).
fn with_gguf(family: &&str) -> bool {
    *family != "gemma3_mm"
}

/// The `model_type` a fixture states (`phi3_longrope` is a Phi-3 with long-context RoPE).
fn model_type(family: &str) -> &str {
    match family {
        "gemma3_mm" => "gemma3_text",
        other => other.trim_end_matches("_longrope"),
    }
}

/// The options the fixtures load with: the longrope model serves 128 positions (its checkpoint
/// states 128, pre-trained on 16: long RoPE factors, as transformers uses for the 24-token
/// prompt), every other model what its checkpoint states.
fn options(family: &str, host: msn::HostKernels) -> msn::LoadOptions {
    msn::LoadOptions {
        host,
        context: (family == "phi3_longrope").then_some(128),
        ..Default::default()
    }
}

fn load(path: &std::path::Path, family: &str, host: msn::HostKernels) -> msn::LoadedModel<B> {
    msn::load_with::<B>(
        path.to_str().unwrap(),
        &Default::default(),
        options(family, host),
    )
    .unwrap()
}

fn dir(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/transformers_{family}"))
}

fn reference(family: &str) -> (Vec<u32>, Vec<f64>, Vec<u32>) {
    let want = fixture(&format!("transformers_{family}/logits.json"));
    (
        common::ids(&want["ids"]),
        common::f64_rows(&want["logits"]),
        common::ids(&want["greedy"]),
    )
}

/// The model on burn's tensor operations, and on the host engine.
fn both_engines(family: &str) -> [(&'static str, Llama<B>); 2] {
    let m = load(&dir(family), family, msn::HostKernels::Off).model;
    let mut host = m.clone();
    host.enable_host_kernels(128);
    [("burn", m), ("host engine", host)]
}

#[test]
fn each_family_matches_transformers_float64_logits() {
    for family in FAMILIES {
        let (ids, want, _) = reference(family);
        let scale = want.iter().fold(0f64, |a, &b| a.max(b.abs()));
        for (engine, m) in both_engines(family) {
            assert_eq!(m.config().model_type, model_type(family));
            let got = common::all_logits(&m, &ids);
            assert_eq!(got.len(), want.len());
            let worst = common::max_difference(&got, &want);
            assert!(
                worst < 1e-4 * scale.max(1.0),
                "{family} on the {engine}: largest logit difference {worst} (scale {scale})"
            );
        }
    }
}

/// Leaving out what a family adds (Qwen 2's biases, Qwen 3's and Gemma 3's q/k norms, Gemma's
/// norms of the sublayers' outputs) moves the logits far past the tolerance above: the check
/// above sees them. (Phi-3 adds no arithmetic: its fused matrices are split at load time, and a
/// wrong split fails the check above; Gemma's soft caps and windows are checked by mutation.)
#[test]
fn what_each_family_adds_changes_the_logits() {
    for family in ["qwen2", "qwen3", "gemma2", "gemma3_text"] {
        let (ids, want, _) = reference(family);
        let [(_, mut m), _] = both_engines(family);
        for b in &mut m.layers {
            let a = &mut b.self_attn;
            for l in [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj] {
                l.bias = None;
            }
            a.q_norm = None;
            a.k_norm = None;
            b.attn_out_norm = None;
            b.mlp_out_norm = None;
        }
        let got = common::all_logits(&m, &ids);
        let worst = common::max_difference(&got, &want);
        assert!(worst > 1e-2, "{family}: {worst}");
    }
}

/// transformers' float64 greedy continuation, from every decoder by name on the host engine
/// (each also equal to our greedy, which the decoders' own tests require).
#[test]
fn every_decoder_gives_transformers_greedy_tokens_on_each_family() {
    for family in FAMILIES {
        let (ids, _, want) = reference(family);
        let [_, (_, m)] = both_engines(family);
        let config = common::plain_config(want.len());
        for name in DECODER_NAMES {
            let mut d: AnyDecoder = name.parse().unwrap();
            let g = d.generate(&m, None, &ids, &config).unwrap();
            assert_eq!(g.tokens, want, "{family}, {name}");
        }
    }
}

/// Exported as a Hugging Face directory and loaded back: the same family and the same logits,
/// bit for bit (biases and q/k norms included in the export).
#[test]
fn each_family_round_trips_through_an_export() {
    for family in FAMILIES {
        let (ids, _, _) = reference(family);
        let m = load(&dir(family), family, msn::HostKernels::Auto);
        let out = tempfile::tempdir().unwrap();
        m.save_hf(out.path(), msn::ExportDtype::F32).unwrap();
        let back = load(out.path(), family, msn::HostKernels::Auto);
        let (m, back) = (m.model, back.model);
        assert_eq!(back.config().model_type, model_type(family));
        assert_eq!(
            common::all_logits(&back, &ids),
            common::all_logits(&m, &ids),
            "{family}"
        );
    }
}

/// The same checkpoints converted by llama.cpp's `convert_hf_to_gguf.py` (f32) and quantized by
/// its `llama-quantize` (Q8_0; the 48-wide down projection falls back to f16), against
/// transformers' float64 logits of the weights read back from each file by llama.cpp's `gguf`
/// package (`tools/make_family_ggufs.py`): the loader reads llama.cpp's metadata and tensor
/// names for each family, and its row layout (no RoPE permutation outside `llama`).
#[test]
fn each_family_from_llama_cpp_gguf_matches_its_float64_reference() {
    use msn::HostKernels::{Native, NativeF32, Off};
    for family in FAMILIES.into_iter().filter(with_gguf) {
        let refs = fixture(&format!("gguf_{family}/logits.json"));
        let ids = common::ids(&refs["ids"]);
        for file in ["model.f32.gguf", "model.q8_0.gguf"] {
            let want = common::f64_rows(&refs["logits"][file]);
            let scale = want.iter().fold(0f64, |a, &b| a.max(b.abs()));
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/fixtures/gguf_{family}/{file}"));
            // Exact products (the dequantized weights times f32 activations) within f32
            // rounding; the default integer products quantize the activations to 16 bits.
            for (host, tolerance) in [(NativeF32, 1e-4), (Off, 1e-4), (Native, 2e-3)] {
                let m = load(&path, family, host);
                assert_eq!(m.model.config().model_type, model_type(family));
                let got = common::all_logits(&m.model, &ids);
                let worst = common::max_difference(&got, &want);
                assert!(
                    worst < tolerance * scale,
                    "{family} {file} {host:?}: largest logit difference {worst} (scale {scale})"
                );
            }
        }
    }
}

/// Each family's tokenizer (byte-level BPE with Qwen 2's pre-tokenizer, ChatML specials) and
/// chat template, from the Hugging Face directory and from llama.cpp's GGUF of it: transformers'
/// own ids for unicode, code and whitespace, and its rendered chat prompt.
#[test]
fn each_family_tokenizes_and_renders_chat_as_transformers_does() {
    for family in FAMILIES {
        let want = fixture(&format!("transformers_{family}/logits.json"));
        let gguf = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/fixtures/gguf_{family}/model.f32.gguf"));
        let paths = match with_gguf(&family) {
            true => vec![dir(family), gguf],
            false => vec![dir(family)],
        };
        for path in paths {
            let m = load(&path, family, msn::HostKernels::Auto);
            let texts = want["texts"].as_array().unwrap();
            for (text, ids) in texts.iter().zip(want["text_ids"].as_array().unwrap()) {
                let text = text.as_str().unwrap();
                let got = m.tokenizer.encode(text).unwrap();
                assert_eq!(got, common::ids(ids), "{family} {path:?}: {text:?}");
                assert_eq!(m.tokenizer.decode(&got).unwrap(), text);
            }
            let user = want["chat_user"].as_str().unwrap();
            let rendered = m
                .tokenizer
                .apply_chat_template(&[msn::Message::new("user", user)], true)
                .unwrap();
            assert_eq!(
                rendered,
                want["chat_text"].as_str().unwrap(),
                "{family} {path:?}"
            );
            assert_eq!(m.chat_prompt(user).unwrap(), common::ids(&want["chat_ids"]));
            let im_end = m.tokenizer.encode("<|im_end|>").unwrap();
            assert_eq!(m.tokenizer.eos_ids, im_end, "{family} {path:?}: EOS");
        }
    }
}

/// Phi-3.5's long-context RoPE by default serves the pre-training context (16 positions here)
/// with the short factors: transformers' logits for a 12-token prompt, from the Hugging Face
/// directory on both engines and from llama.cpp's GGUF of it; a longer prompt is a typed error;
/// a context longer than the checkpoint's serves the checkpoint's. (With `context` 128 the long factors give
/// transformers' logits for 24 tokens: the checks above.)
#[test]
fn longrope_serves_its_pretraining_context_with_the_short_factors_by_default() {
    let want = fixture("transformers_phi3_longrope/logits.json");
    let ids = common::ids(&want["short_ids"]);
    let want = common::f64_rows(&want["short_logits"]);
    let scale = want.iter().fold(0f64, |a, &b| a.max(b.abs()));
    let gguf = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf_phi3_longrope/model.f32.gguf");
    for (path, host) in [
        (dir("phi3_longrope"), msn::HostKernels::Off),
        (dir("phi3_longrope"), msn::HostKernels::Auto),
        (gguf.clone(), msn::HostKernels::NativeF32),
    ] {
        let m = msn::load_with::<B>(
            path.to_str().unwrap(),
            &Default::default(),
            msn::LoadOptions {
                host,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.model.config().max_position_embeddings, 16);
        let worst = common::max_difference(&common::all_logits(&m.model, &ids), &want);
        assert!(
            worst < 1e-4 * scale,
            "{path:?} {host:?}: {worst} (scale {scale})"
        );
        let long: Vec<u32> = ids.iter().chain(&ids).copied().collect();
        let err = Greedy
            .generate(&m.model, None, &long, &common::plain_config(4))
            .unwrap_err();
        assert!(err.to_string().contains("context"), "{err}");
    }
    // More than the checkpoint states serves what it states (128: the long factors).
    for path in [dir("phi3_longrope"), gguf] {
        let more = msn::LoadOptions {
            context: Some(1000),
            ..Default::default()
        };
        let m = msn::load_with::<B>(path.to_str().unwrap(), &Default::default(), more).unwrap();
        assert_eq!(m.model.config().max_position_embeddings, 128);
    }
}

/// A Gemma 3 4B `config.json` as transformers 4.50 saved it (`text_config` holds only what
/// differs from the defaults) reads as transformers itself resolves it
/// (`tools/make_family_fixtures.py`): sizes, heads, norms, RoPE bases and scaling, the window
/// and which layers slide, the end-of-turn ids.
#[test]
fn a_sparse_gemma3_multimodal_config_reads_as_transformers_resolves_it() {
    let f = fixture("gemma3_sparse_config.json");
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("config.json"), f["config"].to_string()).unwrap();
    let c = msn::__internal::read_config(d.path()).unwrap();
    let r = &f["resolved"];
    let n = |k: &str| r[k].as_u64().unwrap() as usize;
    let sizes = [
        c.vocab_size,
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.kv_heads(),
        c.head_dim(),
        c.max_position_embeddings,
        c.sliding_window.unwrap(),
    ];
    let want = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "sliding_window",
    ]
    .map(n);
    assert_eq!(sizes, want);
    assert_eq!(c.model_type, "gemma3_text");
    assert_eq!(c.rms_norm_eps, r["rms_norm_eps"].as_f64().unwrap());
    assert_eq!(c.query_pre_attn_scalar, r["query_pre_attn_scalar"].as_f64());
    assert_eq!(
        c.tie_word_embeddings,
        r["tie_word_embeddings"].as_bool().unwrap()
    );
    let rope = &r["rope_parameters"];
    assert_eq!(
        c.rope_theta,
        rope["full_attention"]["rope_theta"].as_f64().unwrap()
    );
    assert_eq!(
        c.rope_local_base_freq,
        rope["sliding_attention"]["rope_theta"].as_f64()
    );
    let scaling = c.rope_scaling.as_ref().unwrap();
    assert_eq!(scaling.rope_type, "linear");
    assert_eq!(
        scaling.factor,
        rope["full_attention"]["factor"].as_f64().unwrap()
    );
    for (i, t) in r["layer_types"].as_array().unwrap().iter().enumerate() {
        let sliding = t.as_str() == Some("sliding_attention");
        assert_eq!(c.layer_window(i).is_some(), sliding, "layer {i}");
    }
    assert_eq!(c.eos_ids(), [1, 106]);
}

/// A SentencePiece vocabulary inside a GGUF (`tokenizer.ggml.model = llama`: Llama 2, Mistral,
/// TinyLlama, Phi-3, Gemma): trained by `sentencepiece` in Llama 2's settings, written by
/// llama.cpp's converter (`tools/make_spm_fixture.py`); sentencepiece's own ids (BOS first)
/// for unicode the pieces do not cover (byte fallback), runs of spaces, code and digits, and
/// the text back.
#[test]
fn a_sentencepiece_vocabulary_in_a_gguf_tokenizes_as_sentencepiece_does() {
    let want = fixture("gguf_spm/ids.json");
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_spm/vocab.f32.gguf");
    let m = msn::load::<B>(path.to_str().unwrap(), &Default::default()).unwrap();
    assert!(m.tokenizer.add_bos);
    let bos = want["bos"].as_u64().unwrap() as u32;
    let texts = want["texts"].as_array().unwrap();
    for (text, ids) in texts.iter().zip(want["ids"].as_array().unwrap()) {
        let text = text.as_str().unwrap();
        let got = m.tokenizer.encode(text).unwrap();
        let expect = [vec![bos], common::ids(ids)].concat();
        assert_eq!(got, expect, "{text:?}");
        assert_eq!(m.tokenizer.decode(&got[1..]).unwrap(), text, "{text:?}");
    }
}
