//! Generation on the real model: stopping rules, streaming, errors for bad input, chat template.

mod common;
use common::{B, fixture, smollm2};
use msn::{Error, GenerateConfig, Message, StopReason, greedy};

fn chat_prompt(q: &str) -> Vec<u32> {
    let m = smollm2();
    let text = m
        .tokenizer
        .apply_chat_template(&[Message::new("user", q)], true)
        .unwrap();
    m.tokenizer.encode(&text).unwrap()
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
    let mut streamed = String::new();
    let mut cb = |s: &str| streamed.push_str(s);
    let g = greedy::<B, _>(&m.model, Some(&m.tokenizer), &prompt, &cfg, Some(&mut cb)).unwrap();
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
    let free = greedy::<B, _>(
        &m.model,
        Some(&m.tokenizer),
        &prompt,
        &GenerateConfig::new(64, &m.tokenizer),
        None,
    )
    .unwrap();
    let cfg = GenerateConfig::new(64, &m.tokenizer).with_stop_string("Paris");
    let mut streamed = String::new();
    let mut cb = |s: &str| streamed.push_str(s);
    let g = greedy::<B, _>(&m.model, Some(&m.tokenizer), &prompt, &cfg, Some(&mut cb)).unwrap();
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
    let g = greedy::<B, _>(
        &m.model,
        Some(&m.tokenizer),
        &prompt,
        &GenerateConfig::new(0, &m.tokenizer),
        None,
    )
    .unwrap();
    assert!(g.tokens.is_empty() && g.steps == 0 && g.text.is_empty());
    assert_eq!(g.stop_reason, StopReason::MaxNewTokens);
    let g = greedy::<B, _>(
        &m.model,
        Some(&m.tokenizer),
        &prompt,
        &GenerateConfig::new(1, &m.tokenizer),
        None,
    )
    .unwrap();
    assert_eq!(g.tokens.len(), 1);
    assert_eq!(g.stop_reason, StopReason::MaxNewTokens);
}

#[test]
fn bad_prompts_are_typed_errors() {
    let m = smollm2();
    let cfg = GenerateConfig::new(8, &m.tokenizer);
    let err = greedy::<B, _>(&m.model, None, &[], &cfg, None).unwrap_err();
    assert!(matches!(err, Error::EmptyPrompt));
    let err = greedy::<B, _>(&m.model, None, &[1, 999_999], &cfg, None).unwrap_err();
    assert!(matches!(err, Error::TokenOutOfRange { id: 999_999, .. }));
    let long = vec![198u32; 8190];
    let err = greedy::<B, _>(&m.model, None, &long, &cfg, None).unwrap_err();
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
fn malformed_prompt_file_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.jsonl");
    std::fs::write(
        &p,
        "{\"id\": 1, \"prompt\": \"hi\"}\n\n{\"id\": 2, \"prompt\": 5}\n",
    )
    .unwrap();
    match msn::prompts::read_prompt_lines(&p).unwrap_err() {
        Error::MalformedInput { line, .. } => assert_eq!(line, 3),
        e => panic!("unexpected {e}"),
    }
}
