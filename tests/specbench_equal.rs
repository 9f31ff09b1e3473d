//! Every decoder equals greedy decoding on the real model: 20 Spec-Bench questions (spread over
//! all 13 categories), first turn in SmolLM2's chat template, 128 new tokens each.
//!
//! TR-Jacobi runs the paper's template cut to its first 16 paths plus two 10-token retrieval
//! chains (at most 37 tree tokens per forward): the full 84-token tree is ~0.8 s per step on a
//! 2-core CPU and would make this test take half an hour; the random-model proptest in
//! `decode.rs` covers full and random templates.

mod common;
use common::B;
use msn::{
    AnyDecoder, Candidates, Decoder, Greedy, Jacobi, JacobiConfig, Lookahead, LookaheadConfig,
    PromptLookup, TrJacobi, TrJacobiConfig, TreeTemplate,
};
use msn::{GenerateConfig, WeightDtype};

/// Lookahead with a CPU-sized window (W = 4, N = 3, G = 4: at most 17 tree tokens per step);
/// Spec-Bench's W = 7, N = 5, G = 7 is up to 57.
const LOOKAHEAD: LookaheadConfig = LookaheadConfig {
    window: 4,
    ngram: 3,
    guesses: 4,
    seed: 0,
};

#[test]
fn every_decoder_equals_greedy_on_20_spec_bench_questions() {
    let m = msn::load_with::<B>(common::demo(), &Default::default(), WeightDtype::F16).unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/spec_bench/question.jsonl");
    let questions = msn::bench::read_spec_bench(&path).unwrap();
    assert_eq!(questions.len(), 480);
    // The first question of each MT-bench category, then 12 spread over the other five.
    let chosen: Vec<_> = (0..8)
        .map(|c| &questions[c * 10])
        .chain((0..12).map(|k| &questions[80 + k * 34]))
        .collect();
    let cats: std::collections::BTreeSet<_> = chosen.iter().map(|q| &q.category).collect();
    assert_eq!(cats.len(), 13, "{cats:?}");
    // Mixed candidates: the Jacobi table and the token graph both draft.
    let mut tr = TrJacobiConfig {
        candidates: Candidates::Mixed,
        ..Default::default()
    };
    tr.template = TreeTemplate::new(tr.template.paths()[..16].to_vec()).unwrap();
    let mut decoders = [
        AnyDecoder::Greedy(Greedy),
        AnyDecoder::PromptLookup(PromptLookup::default()),
        AnyDecoder::PromptLookup(PromptLookup::fixed(Default::default())),
        AnyDecoder::Jacobi(Jacobi::new(JacobiConfig::default())),
        AnyDecoder::Lookahead(Lookahead::new(LOOKAHEAD).unwrap()),
        AnyDecoder::TrJacobi(TrJacobi::fixed(tr).unwrap()),
    ];
    let names: Vec<&str> = decoders.iter().map(|d| d.name()).collect();
    let cfg = GenerateConfig::new(128, &m.tokenizer);
    let mut totals = vec![(0usize, 0usize); names.len()];
    for (qi, q) in chosen.iter().enumerate() {
        let ids = m.chat_prompt(&q.turns[0]).unwrap();
        let mut reference = None;
        for (di, dec) in decoders.iter_mut().enumerate() {
            let g = dec
                .generate(&m.model, Some(&m.tokenizer), &ids, &cfg)
                .unwrap();
            totals[di].0 += g.tokens.len();
            totals[di].1 += g.steps;
            assert_eq!(
                g.accept_lengths.iter().sum::<usize>(),
                g.tokens.len(),
                "{} on question {}",
                names[di],
                q.question_id
            );
            match &reference {
                None => reference = Some(g.tokens),
                Some(r) => assert_eq!(
                    &g.tokens, r,
                    "{} differs from greedy on question {} ({})",
                    names[di], q.question_id, q.category
                ),
            }
        }
        eprintln!(
            "[{}/20] question {} ({}) equal",
            qi + 1,
            q.question_id,
            q.category
        );
    }
    for (n, (t, s)) in names.iter().zip(&totals) {
        eprintln!(
            "{n}: {t} tokens in {s} forward passes ({:.2} per pass)",
            *t as f64 / *s as f64
        );
    }
    // Drafting decoders never take more forward passes than greedy; those that verify their
    // whole drafts every step (the fixed ones) must have saved some. (The budgeted default
    // decides from this machine's step times whether drafting pays, so may save none.)
    assert!((1..names.len()).all(|d| totals[d].1 <= totals[0].1));
    assert!(totals[2].1 < totals[0].1 && totals[5].1 < totals[0].1);
}
