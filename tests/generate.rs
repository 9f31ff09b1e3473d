//! Generation on the real model: stopping rules, streaming, errors for bad input, chat template.

mod common;
use common::{fixture, smollm2};
use msn::{Decoder, Error, GenerateConfig, Generation, Greedy, Message, StopReason};
use std::ops::ControlFlow;

/// Greedy decoding of `prompt` with `cfg`, no streaming.
fn greedy(prompt: &[u32], cfg: &GenerateConfig) -> msn::Result<Generation> {
    let m = smollm2();
    Greedy.generate(&m.model, Some(&m.tokenizer), prompt, cfg)
}

/// Greedy decoding of `prompt` with `cfg`, streamed: the generation and the text streamed.
fn streamed(prompt: &[u32], cfg: &GenerateConfig) -> (Generation, String) {
    let m = smollm2();
    let mut text = String::new();
    let g = Greedy
        .stream(&m.model, &m.tokenizer, prompt, cfg, |s| text.push_str(s))
        .unwrap();
    (g, text)
}

fn chat_prompt(q: &str) -> Vec<u32> {
    smollm2().chat_prompt(q).unwrap()
}

#[test]
fn chat_template_renders_like_llama_cpp_prompt() {
    // The second fixture string is SmolLM2's chat template applied by llama.cpp.
    let fx = fixture("tokenize_llamacpp.json");
    let want = fx[1]["text"].as_str().unwrap();
    let m = smollm2();
    let got = m
        .tokenizer
        .apply_chat_template(
            &[Message::new("user", "What is the capital of France?")],
            true,
        )
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn stops_at_eos_and_streams_the_text_once() {
    let m = smollm2();
    let prompt = chat_prompt("What is the capital of France?");
    let cfg = GenerateConfig::new(64, &m.tokenizer);
    let (g, streamed) = streamed(&prompt, &cfg);
    assert_eq!(g.stop_reason, StopReason::Eos);
    assert_eq!(*g.tokens.last().unwrap(), 2, "EOS is the last token");
    assert!(g.text.contains("Paris"), "{}", g.text);
    assert!(!g.text.contains("<|im_end|>"));
    assert_eq!(streamed, g.text);
    assert_eq!(g.steps, g.tokens.len());
    assert!(g.accept_lengths.iter().all(|&a| a == 1));
}

#[test]
fn stop_string_cuts_text_and_tokens_exactly() {
    let m = smollm2();
    let prompt = chat_prompt("What is the capital of France?");
    let free = greedy(&prompt, &GenerateConfig::new(64, &m.tokenizer)).unwrap();
    let cfg = GenerateConfig::new(64, &m.tokenizer).with_stop_string("Paris");
    let (g, streamed) = streamed(&prompt, &cfg);
    assert_eq!(g.stop_reason, StopReason::StopString);
    let cut = free.text.find("Paris").unwrap();
    assert_eq!(g.text, free.text[..cut]);
    assert_eq!(streamed, g.text, "a partial stop string is never streamed");
    // The tokens end with the token that completed the stop string, and are greedy's prefix.
    assert_eq!(g.tokens[..], free.tokens[..g.tokens.len()]);
    let before = m.tokenizer.decode(&g.tokens[..g.tokens.len() - 1]).unwrap();
    assert!(!before.contains("Paris"));
}

#[test]
fn max_new_tokens_zero_and_one() {
    let m = smollm2();
    let prompt = chat_prompt("Tell me a story.");
    let g = greedy(&prompt, &GenerateConfig::new(0, &m.tokenizer)).unwrap();
    assert!(g.tokens.is_empty() && g.steps == 0 && g.text.is_empty());
    assert_eq!(g.stop_reason, StopReason::MaxNewTokens);
    let g = greedy(&prompt, &GenerateConfig::new(1, &m.tokenizer)).unwrap();
    assert_eq!(g.tokens.len(), 1);
    assert_eq!(g.stop_reason, StopReason::MaxNewTokens);
}

#[test]
fn bad_prompts_are_typed_errors() {
    let m = smollm2();
    let cfg = GenerateConfig::new(8, &m.tokenizer);
    let err = greedy(&[], &cfg).unwrap_err();
    assert!(matches!(err, Error::EmptyPrompt));
    let err = greedy(&[1, 999_999], &cfg).unwrap_err();
    assert!(matches!(err, Error::TokenOutOfRange { id: 999_999, .. }));
    let long = vec![198u32; 8190];
    let err = greedy(&long, &cfg).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ContextOverflow {
                prompt_tokens: 8190,
                max_new_tokens: 8,
                context: 8192
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("shorten the prompt"));
}

#[test]
fn a_stream_can_stop_early_or_fail_and_the_text_so_far_is_greedys() {
    let m = smollm2();
    let prompt = chat_prompt("Tell me a story about a dragon.");
    let cfg = GenerateConfig::new(48, &m.tokenizer);
    let full = greedy(&prompt, &cfg).unwrap();
    // Stop once 20 bytes of text arrived.
    let mut text = String::new();
    let g = Greedy
        .stream(&m.model, &m.tokenizer, &prompt, &cfg, |s| {
            text.push_str(s);
            if text.len() >= 20 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(g.stop_reason, StopReason::Cancelled);
    assert!(g.tokens.len() < full.tokens.len(), "{}", g.tokens.len());
    assert_eq!(g.tokens[..], full.tokens[..g.tokens.len()]);
    assert!(full.text.starts_with(&text), "{text:?}");
    // An I/O error from the callback ends generation as a typed error.
    let err = Greedy
        .stream(&m.model, &m.tokenizer, &prompt, &cfg, |_| {
            Err::<(), _>(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        })
        .unwrap_err();
    assert!(matches!(err, Error::Stream(_)), "{err}");
}

#[test]
fn incremental_text_equals_decoding_all_tokens_at_once() {
    // Random token ids (byte tokens that split UTF-8 characters, spaces, special tokens), fed
    // one at a time: the text built incrementally, and the text streamed, equal the tokenizer's
    // decoding of the whole sequence (the independent reference).
    let m = smollm2();
    let vocab = m.tokenizer.vocab_size() as u64;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for case in 0..40 {
        let ids: Vec<u32> = (0..1 + case * 7)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Half of the ids among the first 300 (bytes and short pieces).
                let r = state % (2 * vocab);
                (if r < vocab { r } else { r % 300 }) as u32
            })
            .filter(|&t| !m.tokenizer.eos_ids.contains(&t))
            .collect();
        let (text, streamed) = msn::__internal::stream_text(&m.tokenizer, &ids).unwrap();
        let want = m.tokenizer.decode(&ids).unwrap();
        assert_eq!(text, want, "case {case}: {ids:?}");
        assert_eq!(streamed, want, "case {case}");
    }
}

#[test]
fn malformed_prompt_file_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.jsonl");
    std::fs::write(
        &p,
        "{\"id\": 1, \"prompt\": \"hi\"}\n\n{\"id\": 2, \"prompt\": 5}\n",
    )
    .unwrap();
    match msn::bench::read_prompt_lines(&p).unwrap_err() {
        Error::MalformedInput { line, .. } => assert_eq!(line, 3),
        e => panic!("unexpected {e}"),
    }
}

/// With integer products (16-bit activations, the default, and 8-bit ones) every decoder still
/// gives greedy's tokens on the real model: a token's activations are quantized on their own, so
/// its logits inside a token tree are bit for bit its logits alone.
#[test]
fn every_decoder_equals_greedy_with_integer_products() {
    assert_eq!(
        smollm2().model.host_storage().as_deref(),
        Some("Q4_1 x Q16")
    );
    every_decoder_equals_greedy(smollm2());
    let options = msn::LoadOptions {
        host: msn::HostKernels::NativeInt8,
        ..Default::default()
    };
    let m = msn::load_with::<common::B>(common::demo(), &Default::default(), options).unwrap();
    assert_eq!(m.model.host_storage().as_deref(), Some("Q4_1 x Q8"));
    every_decoder_equals_greedy(&m);
}

fn every_decoder_equals_greedy(m: &msn::LoadedModel<common::B>) {
    let cfg = GenerateConfig::new(48, &m.tokenizer);
    for q in [
        "Write a Python function that returns the squares of a list.",
        "List three facts about the Moon.",
    ] {
        let ids = m.chat_prompt(q).unwrap();
        let want = msn::Greedy
            .generate(&m.model, Some(&m.tokenizer), &ids, &cfg)
            .unwrap();
        for name in msn::DECODER_NAMES {
            let mut d: msn::AnyDecoder = name.parse().unwrap();
            let g = d
                .generate(&m.model, Some(&m.tokenizer), &ids, &cfg)
                .unwrap();
            assert_eq!(g.tokens, want.tokens, "{name} on {q:?}");
        }
    }
}
