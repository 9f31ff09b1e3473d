//! The prompt cache: a conversation's next turn starts from the keys and values of the last,
//! and every decoder's output stays exactly what a fresh greedy run of the whole prompt gives.

mod common;
use common::{B, smollm2};
use msn::{
    AnyDecoder, CausalLm, DECODER_NAMES, Decoder, ForwardInput, GenerateConfig, Generation, Greedy,
    Jacobi, JacobiConfig, Llama, Lookahead, LookaheadConfig, PldConfig, PromptCache, PromptLookup,
    TrJacobi, TrJacobiConfig,
};
use proptest::prelude::*;

/// The premise the cache rests on, checked against the one-pass forward as the reference: on
/// the host engine the logits after a prompt run in two passes (a prefix, then the rest on
/// its cache) are bit for bit those of one pass, at every split.
#[test]
fn host_engine_logits_do_not_depend_on_how_the_prompt_is_split() {
    let m = smollm2();
    let prompt = m
        .chat_prompt("Name three prime numbers and explain why.")
        .unwrap();
    let whole = common::last_logits(&m.model, &prompt);
    for split in [1, 2, 7, prompt.len() / 2, prompt.len() - 1] {
        let mut cache = m.model.new_cache(1, prompt.len());
        let d = Default::default();
        m.model
            .forward(ForwardInput::causal(&prompt[..split], 0, &d), &mut cache);
        let rest = ForwardInput::causal(&prompt[split..], split, &d);
        let got: Vec<f32> = m
            .model
            .forward_last(rest, &mut cache)
            .into_data()
            .to_vec()
            .unwrap();
        let same = got
            .iter()
            .zip(&whole)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "split at {split} changed the logits");
    }
}

/// Turn one of a chat, then turn two (turn one's prompt and answer, then a new question), for
/// every decoder by its name: with a prompt cache the second turn runs only the new tokens and
/// gives exactly fresh greedy decoding's output.
#[test]
fn every_decoder_continues_a_conversation_from_the_cache_with_greedys_output() {
    let m = smollm2();
    let turn1 = m
        .chat_prompt("Write a Python function that reverses a list.")
        .unwrap();
    let config = m.generate_config(48);
    let g1 = Greedy.generate(&m.model, None, &turn1, &config).unwrap();
    let follow = m
        .tokenizer
        .encode("<|im_end|>\n<|im_start|>user\nNow make it work for strings too.<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let turn2 = [&turn1[..], &g1.tokens, &follow].concat();
    let want = Greedy.generate(&m.model, None, &turn2, &config).unwrap();
    for name in DECODER_NAMES {
        let mut d: AnyDecoder = name.parse().unwrap();
        let cached = config.clone().with_prompt_cache(PromptCache::new());
        let first = d.generate(&m.model, None, &turn1, &cached).unwrap();
        assert_eq!(first.tokens, g1.tokens, "{name}: turn one");
        assert_eq!(first.cached_prompt_tokens, 0, "{name}: nothing cached yet");
        let second = d.generate(&m.model, None, &turn2, &cached).unwrap();
        assert_eq!(second.tokens, want.tokens, "{name}: turn two");
        // At least turn one's prompt and all of its answer but the last token (whose keys and
        // values no forward pass computed) came from the cache.
        let at_least = turn1.len() + g1.tokens.len() - 1;
        assert!(
            second.cached_prompt_tokens >= at_least,
            "{name}: {} cached, want >= {at_least}",
            second.cached_prompt_tokens
        );
        assert_eq!(
            second.forward_tokens[0],
            turn2.len() - second.cached_prompt_tokens,
            "{name}: the prefill ran the rest"
        );
    }
}

#[test]
fn a_cache_filled_by_other_weights_or_off_the_host_engine_is_not_used() {
    let a = common::random_llama(64, 2, 1, 1.0);
    let mut b = common::random_llama(64, 2, 2, 1.0);
    let mut a_host = a.clone();
    a_host.enable_host_kernels(128);
    b.enable_host_kernels(128);
    let prompt: Vec<u32> = (0..20).map(|i| (i * 7 % 64) as u32).collect();
    let cfg = config(12).with_prompt_cache(PromptCache::new());
    Greedy.generate(&a_host, None, &prompt, &cfg).unwrap();
    assert!(!cfg.prompt_cache.as_ref().unwrap().is_empty());
    // Other weights (same shapes): the prompt runs in full and the output is b's own.
    let got = Greedy.generate(&b, None, &prompt, &cfg).unwrap();
    assert_eq!(got.cached_prompt_tokens, 0);
    assert_eq!(
        got.tokens,
        Greedy
            .generate(&b, None, &prompt, &config(12))
            .unwrap()
            .tokens
    );
    // The backend's own matmuls (no host engine): no reuse, and nothing kept.
    let cfg = config(12).with_prompt_cache(PromptCache::new());
    Greedy.generate(&a, None, &prompt, &cfg).unwrap();
    assert!(cfg.prompt_cache.as_ref().unwrap().is_empty());
    let got = Greedy.generate(&a, None, &prompt, &cfg).unwrap();
    assert_eq!(got.cached_prompt_tokens, 0);
    // Cleared: nothing left to reuse.
    Greedy.generate(&a_host, None, &prompt, &cfg).unwrap();
    cfg.prompt_cache.as_ref().unwrap().clear();
    let got = Greedy.generate(&a_host, None, &prompt, &cfg).unwrap();
    assert_eq!(got.cached_prompt_tokens, 0);
}

fn config(max_new_tokens: usize) -> GenerateConfig {
    common::plain_config(max_new_tokens)
}

/// A decoder run: model, prompt, config in; its generation out.
type Run = Box<dyn FnMut(&Llama<B>, &[u32], &GenerateConfig) -> Generation>;

/// Decoder `which` of the fixed-draft decoders (no latency curve to measure).
fn decoder(which: u8, seed: u64) -> Run {
    fn boxed(mut d: impl Decoder + 'static) -> Run {
        Box::new(move |m, p, c| d.generate(m, None, p, c).unwrap())
    }
    let pld = PldConfig {
        max_ngram: 3,
        max_draft: 6,
    };
    match which {
        0 => boxed(Greedy),
        1 => boxed(PromptLookup::fixed(pld)),
        2 => boxed(Jacobi::new(JacobiConfig { window: 5, seed })),
        3 => boxed(
            Lookahead::new(LookaheadConfig {
                window: 4,
                ngram: 3,
                guesses: 3,
                seed,
            })
            .unwrap(),
        ),
        _ => boxed(
            TrJacobi::fixed(TrJacobiConfig {
                seed,
                ..TrJacobiConfig::default()
            })
            .unwrap(),
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random tiny models on the host engine, random turns: the second prompt shares a prefix
    /// of any length with the first turn's prompt and output (none, part of the prompt, all of
    /// it, into the output, the same prompt again), room for the second turn larger or smaller
    /// than the first's. Each decoder with the cache gives fresh greedy decoding's tokens, and
    /// reuses exactly the common prefix greedy's cache holds.
    #[test]
    fn cached_turns_equal_fresh_greedy_on_random_models(
        seed in 0u64..1000,
        kv_heads in prop::sample::select(vec![1usize, 2, 4]),
        first in proptest::collection::vec(0u32..96, 1..24),
        keep in 0usize..60,
        extra in proptest::collection::vec(0u32..96, 0..12),
        max1 in 0usize..24,
        max2 in 1usize..24,
        which in 0u8..5,
    ) {
        let mut m = common::random_llama(96, kv_heads, seed, 1.0);
        m.enable_host_kernels(128);
        let cache = PromptCache::new();
        let mut run = decoder(which, seed);
        let g1 = run(&m, &first, &config(max1).with_prompt_cache(cache.clone()));
        let seen = [&first[..], &g1.tokens].concat();
        let mut second: Vec<u32> = seen[..keep.min(seen.len())].to_vec();
        second.extend(&extra);
        prop_assume!(!second.is_empty());
        let g2 = run(&m, &second, &config(max2).with_prompt_cache(cache.clone()));
        let want = Greedy.generate(&m, None, &second, &config(max2)).unwrap();
        prop_assert_eq!(&g2.tokens, &want.tokens);
        // Greedy's cache holds the prompt and every output token but the last (nothing when
        // turn one generated nothing: no forward pass ran).
        let held = match g1.tokens.len() {
            0 => 0,
            n => first.len() + n - 1,
        };
        let common = seen[..held].iter().zip(&second).take_while(|(a, b)| a == b).count();
        let expect = common.min(second.len() - 1);
        if which == 0 {
            prop_assert_eq!(g2.cached_prompt_tokens, expect);
        } else {
            prop_assert!(g2.cached_prompt_tokens >= expect);
            prop_assert!(g2.cached_prompt_tokens < second.len());
        }
        prop_assert_eq!(g2.forward_tokens[0], second.len() - g2.cached_prompt_tokens);
    }
}
