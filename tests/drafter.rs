//! The public extension point: a drafter written outside the crate, run through the tree engine
//! by `DraftDecoder`, gives exactly greedy decoding's tokens, and a drafter that breaks the
//! rules gets a typed error, not a panic.

mod common;
use common::B;
use msn::{Decoder, Draft, DraftDecoder, Drafter, GenerateConfig, Greedy, Llama, Verified};
use proptest::prelude::*;

/// Guesses a small tree: each token's last two successors seen in the text so far, two levels
/// deep (a bigram model built from the committed text).
#[derive(Default)]
struct Bigrams {
    next: std::collections::HashMap<u32, Vec<u32>>,
    last: Option<u32>,
    observed: usize,
}

impl Bigrams {
    fn learn(&mut self, tokens: &[u32]) {
        for &t in tokens {
            if let Some(p) = self.last {
                let e = self.next.entry(p).or_default();
                e.retain(|&x| x != t);
                e.insert(0, t);
                e.truncate(2);
            }
            self.last = Some(t);
        }
    }
}

impl Drafter for Bigrams {
    fn max_nodes(&self) -> usize {
        7
    }

    fn start(&mut self, prompt: &[u32]) {
        *self = Self::default();
        self.learn(prompt);
    }

    fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft {
        let mut d = Draft::root(root);
        if depth == 0 {
            return d;
        }
        for &a in self.next.get(&root).into_iter().flatten() {
            if d.len() > room {
                break;
            }
            let n = d.push(0, a);
            if depth < 2 {
                continue;
            }
            for &b in self.next.get(&a).into_iter().flatten() {
                if d.len() > room {
                    break;
                }
                d.push(n, b);
            }
        }
        d
    }

    fn observe(&mut self, draft: &Draft, _preds: &[u32], v: &Verified, _top_k: &[Vec<u32>]) {
        self.observed += 1;
        // Everything committed before the new root (the root was learnt last step).
        let _ = draft;
        self.learn(&v.tokens);
    }
}

/// Breaks the rules: drafts a token outside the vocabulary.
struct OutOfVocab;

impl Drafter for OutOfVocab {
    fn max_nodes(&self) -> usize {
        2
    }
    fn draft(&mut self, root: u32, _room: usize, _depth: usize) -> Draft {
        Draft::chain(root, &[u32::MAX])
    }
    fn observe(&mut self, _: &Draft, _: &[u32], _: &Verified, _: &[Vec<u32>]) {}
}

fn model(seed: u64) -> Llama<B> {
    common::random_llama(64, 2, seed, 1.0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn an_outside_drafter_equals_greedy(
        seed in 0u64..1000,
        phrase in proptest::collection::vec(0u32..64, 2..6),
        reps in 1usize..4,
        max_new in 1usize..40,
    ) {
        let m = model(seed);
        let prompt: Vec<u32> = phrase.iter().cycle().take(phrase.len() * reps).copied().collect();
        let cfg = GenerateConfig { max_new_tokens: max_new, eos_ids: vec![], stop_strings: vec![], sampling: None, prompt_cache: None };
        let g = Greedy.generate(&m, None, &prompt, &cfg).unwrap();
        let mut d = DraftDecoder::new("bigrams", Bigrams::default());
        let b = d.generate(&m, None, &prompt, &cfg).unwrap();
        if g.tokens != b.tokens {
            // A float near-tie between a 1-token and a tree forward is not a drafter error.
            let i = g.tokens.iter().zip(&b.tokens).position(|(x, y)| x != y).unwrap();
            let mut v = common::last_logits(&m, &[&prompt[..], &g.tokens[..i]].concat());
            v.sort_by(|a, b| b.total_cmp(a));
            prop_assume!(v[0] - v[1] >= 1e-3);
            prop_assert_eq!(&g.tokens, &b.tokens);
        }
        prop_assert_eq!(b.accept_lengths.iter().sum::<usize>(), b.tokens.len());
        prop_assert_eq!(d.drafter().observed + 1, b.steps);
        prop_assert_eq!(d.name(), "bigrams");
    }
}

#[test]
fn a_drafter_that_breaks_the_rules_gets_a_typed_error() {
    let m = model(1);
    let cfg = GenerateConfig {
        max_new_tokens: 8,
        eos_ids: vec![],
        stop_strings: vec![],
        sampling: None,
        prompt_cache: None,
    };
    let err = DraftDecoder::new("bad", OutOfVocab)
        .generate(&m, None, &[1, 2, 3], &cfg)
        .unwrap_err();
    assert!(matches!(err, msn::Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}
