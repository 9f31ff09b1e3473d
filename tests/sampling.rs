//! Sampling is lossless: with `GenerateConfig::sampling`, every decoder's output distribution is
//! the model's. Checked statistically on a tiny random llama (10-token vocabulary, 3 new tokens):
//! the exact probability of each of the 1000 possible outputs is computed here from one-token
//! forward passes (this file's own softmax / temperature / top-k / top-p code), and each
//! decoder's 3000 samples are compared with it by a chi-square test. The seeds are fixed, so the
//! test is deterministic; a negative control (plain sampling at a wrong temperature) shows the
//! test rejects a distribution that is off by that much.

mod common;
use common::B;
use msn::{
    AnyDecoder, Candidates, Decoder, GenerateConfig, Greedy, Jacobi, JacobiConfig, Llama,
    Lookahead, LookaheadConfig, PldConfig, PromptLookup, Sampling, TrJacobi, TrJacobiConfig,
    TreeTemplate,
};
use std::collections::HashMap;

const VOCAB: usize = 10;
const NEW: usize = 3;
const SAMPLES: u64 = 3000;
const SCALE: f64 = 0.6;

/// The next-token distribution after `prefix`, computed independently of `Sampling`.
fn next_probs(m: &Llama<B>, prefix: &[u32], s: &Sampling) -> Vec<f64> {
    let logits = common::last_logits(m, prefix);
    let z: Vec<f64> = logits
        .iter()
        .map(|&l| f64::from(l) / f64::from(s.temperature))
        .collect();
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut p: Vec<f64> = z.iter().map(|&x| (x - max).exp()).collect();
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let k = if s.top_k == 0 { p.len() } else { s.top_k };
    for &i in &order[k..] {
        p[i] = 0.0;
    }
    let total: f64 = p.iter().sum();
    let (mut cum, mut cut) = (0.0, false);
    for &i in &order {
        if cut {
            p[i] = 0.0;
            continue;
        }
        cum += p[i] / total;
        cut = cum >= f64::from(s.top_p);
    }
    let kept: f64 = p.iter().sum();
    p.iter().map(|x| x / kept).collect()
}

/// Probability of every `NEW`-token output.
fn exact(m: &Llama<B>, prompt: &[u32], s: &Sampling) -> HashMap<Vec<u32>, f64> {
    let mut dist = HashMap::from([(Vec::new(), 1.0)]);
    for _ in 0..NEW {
        let mut next = HashMap::new();
        for (seq, p) in dist {
            let probs = next_probs(m, &[prompt, &seq[..]].concat(), s);
            for (t, q) in probs.iter().enumerate() {
                if *q > 0.0 {
                    let mut s2 = seq.clone();
                    s2.push(t as u32);
                    next.insert(s2, p * q);
                }
            }
        }
        dist = next;
    }
    dist
}

/// Chi-square statistic of `counts` against `dist` (cells with expected count below 5 pooled)
/// and the upper-tail z-score of it (Wilson-Hilferty); z > 3.72 is p < 1e-4. Infinite when an
/// output of probability 0 occurs.
fn chi_square(counts: &HashMap<Vec<u32>, u64>, dist: &HashMap<Vec<u32>, f64>, n: u64) -> f64 {
    let (mut stat, mut cells) = (0.0, 0usize);
    let (mut pool_obs, mut pool_exp) = (0.0, 0.0);
    for (seq, p) in dist {
        let e = p * n as f64;
        let o = *counts.get(seq).unwrap_or(&0) as f64;
        if e < 5.0 {
            pool_obs += o;
            pool_exp += e;
        } else {
            stat += (o - e).powi(2) / e;
            cells += 1;
        }
    }
    let impossible: u64 = counts
        .iter()
        .filter(|(s, _)| !dist.contains_key(*s))
        .map(|(_, c)| c)
        .sum();
    if impossible > 0 {
        // An output of probability 0 was sampled: the distribution is certainly wrong.
        return f64::INFINITY;
    }
    if pool_exp > 0.0 {
        stat += (pool_obs - pool_exp).powi(2) / pool_exp.max(1e-9);
        cells += 1;
    }
    let k = (cells - 1) as f64;
    ((stat / k).cbrt() - (1.0 - 2.0 / (9.0 * k))) / (2.0 / (9.0 * k)).sqrt()
}

fn decoders() -> Vec<(&'static str, AnyDecoder)> {
    // Mixed candidates: the Jacobi table and the token graph both draft.
    let mut tr = TrJacobiConfig {
        top_k: 6,
        candidates: Candidates::Mixed,
        ..Default::default()
    };
    tr.template = TreeTemplate::new(tr.template.paths()[..12].to_vec()).unwrap();
    vec![
        (
            "pld",
            AnyDecoder::PromptLookup(PromptLookup::fixed(PldConfig {
                max_ngram: 2,
                max_draft: 4,
            })),
        ),
        (
            "jacobi",
            AnyDecoder::Jacobi(Jacobi::new(JacobiConfig { window: 3, seed: 1 })),
        ),
        (
            "lookahead",
            AnyDecoder::Lookahead(
                Lookahead::new(LookaheadConfig {
                    window: 3,
                    ngram: 3,
                    guesses: 3,
                    seed: 1,
                })
                .unwrap(),
            ),
        ),
        (
            "tr-jacobi",
            AnyDecoder::TrJacobi(TrJacobi::fixed(tr).unwrap()),
        ),
    ]
}

fn run(
    m: &Llama<B>,
    prompt: &[u32],
    s: &Sampling,
    dec: &mut AnyDecoder,
) -> (HashMap<Vec<u32>, u64>, Vec<Vec<u32>>, usize) {
    let mut counts = HashMap::new();
    let mut outs = Vec::new();
    let mut steps = 0;
    for seed in 0..SAMPLES {
        let cfg = GenerateConfig {
            max_new_tokens: NEW,
            eos_ids: vec![],
            stop_strings: vec![],
            sampling: Some(Sampling { seed, ..*s }),
            prompt_cache: None,
        };
        let g = dec.generate(m, None, prompt, &cfg).unwrap();
        assert_eq!(g.tokens.len(), NEW);
        assert_eq!(g.accept_lengths.iter().sum::<usize>(), NEW);
        steps += g.steps;
        *counts.entry(g.tokens.clone()).or_default() += 1;
        outs.push(g.tokens);
    }
    (counts, outs, steps)
}

fn check(s: Sampling) {
    let m = common::random_llama(VOCAB, 2, 7, SCALE);
    // The model's own greedy continuation of a short start: random tiny models fall into
    // cycles, so n-gram and Jacobi drafts are often right.
    let start = GenerateConfig {
        max_new_tokens: 16,
        eos_ids: vec![],
        stop_strings: vec![],
        sampling: None,
        prompt_cache: None,
    };
    let g = Greedy.generate(&m, None, &[3, 1, 4], &start).unwrap();
    let prompt = [&[3, 1, 4][..], &g.tokens].concat();
    eprintln!("prompt {prompt:?}");
    let dist = exact(&m, &prompt, &s);
    let total: f64 = dist.values().sum();
    assert!((total - 1.0).abs() < 1e-9);
    let top = dist.values().cloned().fold(0.0, f64::max);
    eprintln!(
        "top output probability {top:.3}, {} possible outputs",
        dist.len()
    );
    assert!(
        top < 0.8 && dist.len() > 4,
        "the test needs a spread distribution (top {top}, {} outputs)",
        dist.len()
    );
    let (counts, reference, _) = run(&m, &prompt, &s, &mut AnyDecoder::Greedy(Greedy));
    let z = chi_square(&counts, &dist, SAMPLES);
    eprintln!("plain sampling: z = {z:.2}");
    assert!(
        z < 3.72,
        "plain sampling is off the model's distribution: z = {z:.2}"
    );
    // Negative control: the test has the power to reject a wrong temperature.
    let wrong = Sampling {
        temperature: s.temperature * 1.3,
        ..s
    };
    let (counts, _, _) = run(&m, &prompt, &wrong, &mut AnyDecoder::Greedy(Greedy));
    let z = chi_square(&counts, &dist, SAMPLES);
    eprintln!("negative control (temperature x1.3): z = {z:.2}");
    assert!(
        z > 3.72,
        "the chi-square test cannot tell a wrong temperature: z = {z:.2}"
    );
    for (name, mut dec) in decoders() {
        let (counts, outs, steps) = run(&m, &prompt, &s, &mut dec);
        let z = chi_square(&counts, &dist, SAMPLES);
        let same = outs.iter().zip(&reference).filter(|(a, b)| a == b).count();
        eprintln!(
            "{name}: z = {z:.2}, {:.2} tokens per forward pass, same tokens as plain sampling for {same}/{SAMPLES} seeds",
            (NEW as u64 * SAMPLES) as f64 / steps as f64
        );
        assert!(
            z < 3.72,
            "{name} is off the model's distribution: z = {z:.2}"
        );
        // The drafts were accepted (the tree walk was exercised), and each committed token used
        // one uniform number in order, so with the same seed the tokens match plain sampling
        // except where float rounding moves a draw across a boundary.
        assert!(
            steps < NEW * SAMPLES as usize,
            "{name} never accepted a draft"
        );
        assert!(
            same as f64 >= 0.98 * SAMPLES as f64,
            "{name} drew the same tokens as plain sampling for only {same} of {SAMPLES} seeds"
        );
    }
}

#[test]
fn every_decoder_samples_the_models_distribution() {
    check(Sampling::default());
}

#[test]
fn every_decoder_samples_the_truncated_distribution() {
    check(Sampling {
        temperature: 1.5,
        top_k: 8,
        top_p: 0.95,
        seed: 0,
    });
}

#[test]
fn bad_sampling_parameters_are_typed_errors() {
    let m = common::random_llama(VOCAB, 2, 7, 0.6);
    let cfg = GenerateConfig {
        max_new_tokens: 4,
        eos_ids: vec![],
        stop_strings: vec![],
        sampling: Some(Sampling {
            temperature: 0.0,
            ..Default::default()
        }),
        prompt_cache: None,
    };
    for (_, mut dec) in decoders() {
        let e = dec.generate(&m, None, &[1, 2], &cfg).unwrap_err();
        assert!(matches!(e, msn::Error::InvalidArgument(_)), "{e}");
    }
}
