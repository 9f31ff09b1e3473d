//! Lossless decoding: every decoder's output equals greedy decoding, token for token, on random
//! tiny llamas (proptest) and on SmolLM2-135M-Instruct.
//!
//! Float near-ties are the known enemy: a T-token verification pass and a 1-token greedy step
//! compute the same logits through different matmul paths, so two candidates within ~1e-5 of
//! each other may swap. The random-model test therefore scales the logits up (embedding init
//! std 1.0 instead of 0.02 makes the top-2 gap large), and when outputs differ it checks the
//! greedy logits at the first differing position: a top-2 gap below 1e-3 is reported as a tie
//! (the case is rejected), anything else fails the test.

mod common;
use common::{B, smollm2};
use msn::{
    Candidates, Decoder, GenerateConfig, Generation, Greedy, Jacobi, JacobiConfig, LatencyCurve,
    Llama, Lookahead, LookaheadConfig, PldConfig, PromptLookup, TrJacobi, TrJacobiConfig,
    TreeTemplate,
};
use proptest::prelude::*;

/// SmolLM2 token ids of `q` as a user message in the chat template.
fn chat_ids(q: &str) -> Vec<u32> {
    smollm2().chat_prompt(q).unwrap()
}

/// `decoder`'s output for `prompt` (no tokenizer: tokens only).
fn run(
    mut decoder: impl Decoder,
    m: &Llama<B>,
    prompt: &[u32],
    cfg: &GenerateConfig,
) -> Generation {
    decoder.generate(m, None, prompt, cfg).unwrap()
}

/// TR-Jacobi's candidate sources, indexed by the proptests' `candidates`.
const CANDIDATES: [Candidates; 3] = [Candidates::Jacobi, Candidates::Recycled, Candidates::Mixed];

fn random_model(family: &str, vocab: usize, kv_heads: usize, seed: u64) -> Llama<B> {
    // Larger embeddings and head give well-separated logits (see the module doc) and outputs
    // that do not collapse to one repeated token.
    common::random_family(family, vocab, kv_heads, seed, 1.0)
}

/// A random tree template: each pick names an earlier path (or the root) to extend with a rank
/// below `k`; repeated paths are skipped.
fn random_template(picks: &[(usize, usize)], k: usize) -> TreeTemplate {
    let mut paths: Vec<Vec<usize>> = Vec::new();
    for &(parent, rank) in picks {
        let mut p = match parent % (paths.len() + 1) {
            0 => Vec::new(),
            i => paths[i - 1].clone(),
        };
        p.push(rank % k);
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    TreeTemplate::new(paths).unwrap()
}

/// Top-2 gap of the greedy logits after `prefix`.
fn top2_gap(m: &Llama<B>, prefix: &[u32]) -> f32 {
    let mut v = common::last_logits(m, prefix);
    v.sort_by(|a, b| b.total_cmp(a));
    v[0] - v[1]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn decoders_equal_greedy_on_random_models(
        seed in 0u64..1000,
        kv_heads in prop::sample::select(vec![1usize, 2, 4]),
        // Prompts repeat a random phrase with random edits, so n-gram drafts exist and are
        // sometimes right, sometimes wrong.
        phrase in proptest::collection::vec(0u32..160, 2..8),
        edits in proptest::collection::vec((0usize..24, 0u32..160), 0..4),
        reps in 1usize..4,
        max_new in 0usize..40,
        max_ngram in 1usize..4,
        max_draft in 1usize..12,
        eos in proptest::option::of(0u32..160),
        // 0: PLD with a fixed draft length; 1: PLD with a budget over a random latency curve
        // of slope `slope`; 2: Jacobi with window `max_draft`; 3: TR-Jacobi with a random
        // template, K and retrieval, the whole tree every step; 4: the same with its budget over
        // the random curve and a draft memory that knows (or half knows) the answer;
        // 5: lookahead with W = `max_draft`, N = `max_ngram + 1`, G = `top_k`.
        decoder in 0u8..6,
        slope in 0.0f64..3.0,
        picks in proptest::collection::vec((0usize..64, 0usize..8), 0..24),
        top_k in 1usize..8,
        chains in 0usize..3,
        // TR-Jacobi's candidate source: Jacobi table, token graph, or both.
        candidates in 0usize..3,
        // The host kernels (CPU fast path) or the backend's matmuls.
        host in any::<bool>(),
        // The model family: llama, Qwen 2 (q/k/v biases), Qwen 3 (q/k norms), Gemma 2 / 3.
        family in prop::sample::select(vec!["llama", "qwen2", "qwen3", "gemma2", "gemma3_text"]),
    ) {
        let mut prompt: Vec<u32> = phrase.iter().cycle().take(phrase.len() * reps).copied().collect();
        for &(at, t) in &edits {
            let i = at % prompt.len();
            prompt[i] = t;
        }
        let mut m = random_model(family, 160, kv_heads, seed);
        if host {
            m.enable_host_kernels(128);
        }
        let cfg = GenerateConfig { max_new_tokens: max_new, eos_ids: eos.into_iter().collect(), stop_strings: vec![], sampling: None, prompt_cache: None };
        let g = run(Greedy, &m, &prompt, &cfg);
        let pld = PldConfig { max_ngram, max_draft };
        let p = match decoder {
            0 => run(PromptLookup::fixed(pld), &m, &prompt, &cfg),
            1 => {
                let curve = LatencyCurve::new((0..max_draft + 1).map(|t| 1.0 + slope * t as f64).collect());
                run(PromptLookup::with_curve(pld, curve), &m, &prompt, &cfg)
            }
            2 => run(Jacobi::new(JacobiConfig { window: max_draft, seed }), &m, &prompt, &cfg),
            5 => {
                let la = LookaheadConfig { window: max_draft, ngram: max_ngram + 1, guesses: top_k, seed };
                run(Lookahead::new(la).unwrap(), &m, &prompt, &cfg)
            }
            _ => {
                let tc = TrJacobiConfig {
                    template: random_template(&picks, top_k),
                    top_k,
                    retrieval_len: max_draft,
                    retrieval_chains: chains,
                    seed,
                    candidates: CANDIDATES[candidates],
                };
                let d = if decoder == 4 {
                    let curve = LatencyCurve::from_points(vec![(1, 1.0), (200, 1.0 + slope * 199.0)]);
                    // A draft memory holding the prompt with greedy's own output (drafts that
                    // are right for a long way) or with its edits shifted (right, then wrong).
                    let memory = msn::DraftMemory::new(64 + 64 * (seed as usize % 3));
                    let mut seen = [&prompt[..], &g.tokens[..]].concat();
                    if seed % 2 == 1 {
                        for (at, t) in &edits {
                            let i = (at + 3) % seen.len();
                            seen[i] = *t;
                        }
                    }
                    memory.add(&seen);
                    memory.add(&phrase);
                    TrJacobi::with_curve(tc, curve).unwrap().with_memory(memory)
                } else {
                    TrJacobi::fixed(tc).unwrap()
                };
                run(d, &m, &prompt, &cfg)
            }
        };
        if g.tokens != p.tokens {
            let i = g.tokens.iter().zip(&p.tokens).position(|(a, b)| a != b).unwrap_or(g.tokens.len().min(p.tokens.len()));
            let prefix = [&prompt[..], &g.tokens[..i]].concat();
            let gap = top2_gap(&m, &prefix);
            // A float tie is not a decoder error: reject the case (proptest counts rejections).
            prop_assume!(gap >= 1e-3);
            prop_assert_eq!(&g.tokens, &p.tokens, "diverged at {} with top-2 gap {}", i, gap);
        }
        prop_assert_eq!(g.stop_reason, p.stop_reason);
        prop_assert!(p.steps <= g.steps);
        prop_assert_eq!(p.accept_lengths.iter().sum::<usize>(), p.tokens.len());
        // One forward size per step: the prompt for prefill, then at least what was accepted.
        for d in [&g, &p] {
            prop_assert_eq!(d.forward_tokens.len(), d.steps);
            // A host time per decoding step (prefill has none), each within the wall time.
            prop_assert_eq!(d.host_step_s.len(), d.steps.saturating_sub(1));
            prop_assert!(d.host_step_s.iter().all(|s| (0.0..=d.wall_time_s).contains(s)));
            if d.steps > 0 {
                prop_assert_eq!(d.forward_tokens[0], prompt.len());
            }
            for (f, a) in d.forward_tokens.iter().zip(&d.accept_lengths).skip(1) {
                prop_assert!(a <= f, "accepted {} of a {}-token forward", a, f);
            }
        }
        prop_assert!(g.forward_tokens.iter().skip(1).all(|&f| f == 1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Batched decoding (ragged acceptance, left-padded prompts of different lengths, cache
    /// compaction) gives every sequence exactly what it gets decoded alone.
    #[test]
    fn batched_decoding_equals_each_sequence_alone(
        seed in 0u64..1000,
        kv_heads in prop::sample::select(vec![1usize, 2, 4]),
        prompts in proptest::collection::vec(proptest::collection::vec(0u32..40, 1..12), 1..6),
        reps in 1usize..4,
        max_new in 0usize..64,
        eos in proptest::option::of(0u32..40),
        picks in proptest::collection::vec((0usize..64, 0usize..8), 0..16),
        top_k in 1usize..6,
        retrieval_len in 0usize..8,
        chains in 0usize..3,
        candidates in 0usize..3,
        tr in any::<bool>(),
        host in any::<bool>(),
        family in prop::sample::select(vec!["llama", "qwen2", "qwen3", "gemma2", "gemma3_text"]),
    ) {
        // Repeated phrases, so retrieval drafts exist.
        let prompts: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| p.iter().cycle().take(p.len() * reps).copied().collect())
            .collect();
        let mut m = random_model(family, 40, kv_heads, seed);
        if host {
            m.enable_host_kernels(128);
        }
        let cfg = GenerateConfig { max_new_tokens: max_new, eos_ids: eos.into_iter().collect(), stop_strings: vec![], sampling: None, prompt_cache: None };
        let tc = TrJacobiConfig {
            template: random_template(&picks, top_k),
            top_k,
            retrieval_len,
            retrieval_chains: chains,
            seed,
            candidates: CANDIDATES[candidates],
        };
        let batch = if tr {
            TrJacobi::fixed(tc.clone()).unwrap().generate_batch(&m, None, &prompts, &cfg).unwrap()
        } else {
            Greedy.generate_batch(&m, None, &prompts, &cfg).unwrap()
        };
        prop_assert_eq!(batch.len(), prompts.len());
        for (p, b) in prompts.iter().zip(&batch) {
            let g = run(Greedy, &m, p, &cfg);
            if g.tokens != b.tokens {
                let i = g.tokens.iter().zip(&b.tokens).position(|(x, y)| x != y).unwrap_or(g.tokens.len().min(b.tokens.len()));
                let gap = top2_gap(&m, &[&p[..], &g.tokens[..i]].concat());
                prop_assume!(gap >= 1e-3);
                prop_assert_eq!(&g.tokens, &b.tokens, "diverged at {} with top-2 gap {}", i, gap);
            }
            prop_assert_eq!(g.stop_reason, b.stop_reason);
            prop_assert_eq!(b.accept_lengths.iter().sum::<usize>(), b.tokens.len());
            prop_assert_eq!(b.steps, b.accept_lengths.len());
            // Alone, TR-Jacobi takes the same steps as in the batch (same drafts, same verdicts).
            if tr {
                let a = run(TrJacobi::fixed(tc.clone()).unwrap(), &m, p, &cfg);
                prop_assert_eq!(&a.accept_lengths, &b.accept_lengths);
                prop_assert_eq!(&a.forward_tokens, &b.forward_tokens);
            }
        }
    }
}

#[test]
fn pld_equals_greedy_on_smollm2_and_saves_steps() {
    let m = smollm2();
    let prompts = [
        "Repeat the following sentence exactly three times: The quick brown fox jumps over the lazy dog.",
        "Fix the bug in this function and return the whole function:\n\ndef mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(x)\n",
        "Translate to French: I like apples. I like pears. I like apples and pears.",
    ];
    let mut steps = (0, 0);
    for q in prompts {
        let ids = chat_ids(q);
        let cfg = GenerateConfig::new(64, &m.tokenizer);
        let g = Greedy
            .generate(&m.model, Some(&m.tokenizer), &ids, &cfg)
            .unwrap();
        let mut streamed = String::new();
        let p = PromptLookup::fixed(Default::default())
            .stream(&m.model, &m.tokenizer, &ids, &cfg, |s| streamed.push_str(s))
            .unwrap();
        assert_eq!(p.tokens, g.tokens, "prompt {q:?}");
        assert_eq!(p.text, g.text);
        assert_eq!(streamed, g.text);
        steps.0 += g.steps;
        steps.1 += p.steps;
    }
    assert!(
        steps.1 < steps.0,
        "PLD took {} forward passes, greedy {}",
        steps.1,
        steps.0
    );
}

#[test]
fn budgeted_pld_stops_drafting_when_forwards_are_expensive() {
    // A curve where a 2-token forward costs 2.7x a 1-token one: after the exploration steps the
    // budget verifies no more drafts, so every later step is a greedy step. The curve alone
    // decides (step times would say what this machine really costs).
    let m = smollm2();
    let q = "Write the numbers from 1 to 30, comma separated.";
    let ids = chat_ids(q);
    let cfg = GenerateConfig::new(48, &m.tokenizer);
    let g = Greedy
        .generate(&m.model, Some(&m.tokenizer), &ids, &cfg)
        .unwrap();
    let curve = LatencyCurve::new(vec![1.0, 2.7, 3.3, 3.8, 4.2, 4.6, 5.0, 5.4, 5.8, 6.2, 6.6]);
    let mut pld = PromptLookup::with_curve(PldConfig::default(), curve).curve_only();
    let p = pld
        .generate(&m.model, Some(&m.tokenizer), &ids, &cfg)
        .unwrap();
    assert_eq!(p.tokens, g.tokens);
    // Only the 4 exploration steps may have verified drafts.
    let multi = p.accept_lengths.iter().filter(|&&a| a > 1).count();
    assert!(multi <= 4, "{:?}", p.accept_lengths);
    assert!(
        p.steps + 20 >= g.steps,
        "drafting continued: {:?}",
        p.accept_lengths
    );
}

#[test]
fn jacobi_equals_greedy_on_smollm2() {
    let m = smollm2();
    let q = "List the days of the week, one per line.";
    let ids = chat_ids(q);
    let cfg = GenerateConfig::new(48, &m.tokenizer);
    let g = Greedy
        .generate(&m.model, Some(&m.tokenizer), &ids, &cfg)
        .unwrap();
    let mut streamed = String::new();
    let j = Jacobi::default()
        .stream(&m.model, &m.tokenizer, &ids, &cfg, |s| streamed.push_str(s))
        .unwrap();
    assert_eq!(j.tokens, g.tokens);
    assert_eq!(streamed, g.text);
    assert_eq!(j.accept_lengths.iter().sum::<usize>(), j.tokens.len());
}

#[test]
fn latency_curves_are_cached_per_file_and_remeasured_when_stale() {
    let m = random_model("llama", 64, 2, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves/tiny.json");
    let a = LatencyCurve::measure_cached(&m, 16, &[1, 4, 8], 2, &path).unwrap();
    assert!(path.exists());
    // Read back, not measured again (timings never repeat to the last bit).
    let b = LatencyCurve::measure_cached(&m, 16, &[1, 4, 8], 2, &path).unwrap();
    assert_eq!(a, b);
    // Other sizes or context: measured again and the file replaced.
    let c = LatencyCurve::measure_cached(&m, 16, &[1, 2, 8], 2, &path).unwrap();
    assert_eq!(
        c.points().iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![1, 2, 8]
    );
    let d = LatencyCurve::measure_cached(&m, 16, &[1, 2, 8], 2, &path).unwrap();
    assert_eq!(c, d);
    // A corrupt or invalid file is measured over, not an error.
    std::fs::write(&path, b"{not json").unwrap();
    let e = LatencyCurve::measure_cached(&m, 16, &[1, 2, 8], 2, &path).unwrap();
    assert_ne!(e, d);
    std::fs::write(
        &path,
        br#"{"context":16,"sizes":[1,2,8],"points":[[1,-1.0],[2,1.0],[8,2.0]]}"#,
    )
    .unwrap();
    let f = LatencyCurve::measure_cached(&m, 16, &[1, 2, 8], 2, &path).unwrap();
    assert!(f.points().iter().all(|p| p.1 > 0.0));
}

#[test]
fn batched_tr_jacobi_equals_greedy_on_smollm2() {
    let m = smollm2();
    let prompts: Vec<Vec<u32>> = [
        "List the days of the week, one per line.",
        "Write a Python function that returns the n-th Fibonacci number.",
        "Repeat exactly: the cat sat on the mat, the cat sat on the mat.",
        "What is the capital of France? Answer in one sentence.",
    ]
    .iter()
    .map(|q| chat_ids(q))
    .collect();
    let cfg = GenerateConfig::new(48, &m.tokenizer);
    let mut tc = TrJacobiConfig {
        retrieval_chains: 1,
        retrieval_len: 6,
        ..Default::default()
    };
    tc.template = TreeTemplate::new(tc.template.paths()[..10].to_vec()).unwrap();
    let mut dec = TrJacobi::fixed(tc).unwrap();
    let batch = dec
        .generate_batch(&m.model, Some(&m.tokenizer), &prompts, &cfg)
        .unwrap();
    let (mut tokens, mut steps) = (0, 0);
    for (p, b) in prompts.iter().zip(&batch) {
        let g = Greedy
            .generate(&m.model, Some(&m.tokenizer), p, &cfg)
            .unwrap();
        assert_eq!(b.tokens, g.tokens);
        assert_eq!(b.text, g.text);
        tokens += b.tokens.len();
        steps += b.steps;
    }
    assert!(steps < tokens, "{tokens} tokens in {steps} steps");
}

/// Past several attention segments (256 keys each, combined afterwards) and with either KV
/// cache dtype: TR-Jacobi (its default budget and the full tree) and PLD give greedy's tokens
/// on a 700-token prompt; an f16 cache needs the host engine (a typed error without it).
#[test]
fn decoders_equal_greedy_past_several_attention_segments_with_either_cache_dtype() {
    let text = "The river rises in the hills, runs past the mill and the old stone bridge, \
        and reaches the sea after forty miles. "
        .repeat(28);
    let q = format!("{text}\nSummarize the text above in one sentence, then continue it.");
    let half = msn::LoadOptions {
        kv_dtype: msn::KvDtype::F16,
        ..Default::default()
    };
    let f16 = msn::load_with::<B>(common::demo(), &Default::default(), half).unwrap();
    for (name, m) in [("f32", smollm2()), ("f16", &f16)] {
        let ids = m.chat_prompt(&q).unwrap();
        assert!(ids.len() > 700, "{} prompt tokens", ids.len());
        let cfg = GenerateConfig::new(40, &m.tokenizer);
        let g = Greedy
            .generate(&m.model, Some(&m.tokenizer), &ids, &cfg)
            .unwrap();
        let mut full = TrJacobi::fixed(TrJacobiConfig::default()).unwrap();
        for (decoder, out) in [
            (
                "tr-jacobi",
                TrJacobi::default().generate(&m.model, None, &ids, &cfg),
            ),
            (
                "tr-jacobi full tree",
                full.generate(&m.model, None, &ids, &cfg),
            ),
            (
                "pld",
                PromptLookup::default().generate(&m.model, None, &ids, &cfg),
            ),
        ] {
            let out = out.unwrap();
            assert_eq!(out.tokens, g.tokens, "{name} cache, {decoder}");
        }
    }
    let off = msn::LoadOptions {
        kv_dtype: msn::KvDtype::F16,
        host: msn::HostKernels::Off,
        ..Default::default()
    };
    let e = msn::load_with::<B>(common::demo(), &Default::default(), off).unwrap_err();
    assert!(matches!(e, msn::Error::InvalidArgument(_)), "{e}");
}
