//! Properties of the MSN noise schemes (ALGORITHMS.md section 1), on random samples.

mod common;
use burn::prelude::*;
use common::B;
use msn::noise::Rng;
use msn::noise::{AheadNoise, NoNoise, NoiseAugmenter, RandomNoise};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ahead_noise_properties(
        tokens in proptest::collection::vec(0u32..50, 1..40),
        cut in 0usize..40,
        len in 0usize..10,
        seed in any::<u64>(),
    ) {
        let start = cut % (tokens.len() + 1);
        let resp = start..tokens.len();
        let n = AheadNoise { len }.augment(&tokens, resp.clone(), &mut Rng::new(seed));
        // Labels are the clean sequence.
        prop_assert_eq!(&n.labels, &tokens);
        // Only response positions change, and only inside the segment.
        for (i, (a, b)) in n.input.iter().zip(&tokens).enumerate() {
            if a != b {
                prop_assert!(resp.contains(&i));
                prop_assert!(n.segment.as_ref().is_some_and(|s| s.contains(&i)));
            }
        }
        // Position 0 is never noised (nothing precedes it).
        let rl = resp.end - resp.start.max(1).min(resp.end);
        match &n.segment {
            None => prop_assert!(len == 0 || rl <= 1),
            Some(s) => {
                // Contiguous, of length L (or shorter only when the response is too short),
                // inside the response, never covering its last token.
                prop_assert_eq!(s.len(), len.min(rl - 1));
                prop_assert!(s.start >= resp.start && s.end < resp.end);
                // Every noise token occurs earlier in the (noised) sequence.
                for i in s.clone() {
                    prop_assert!(n.input[..i].contains(&n.input[i]), "position {}", i);
                }
            }
        }
    }

    #[test]
    fn random_noise_avoids_special_tokens_and_batches_agree(
        rows in proptest::collection::vec((proptest::collection::vec(0u32..40, 2..20), 0usize..20), 1..5),
        seed in any::<u64>(),
        len in 1usize..6,
    ) {
        let t = rows.iter().map(|r| r.0.len()).max().unwrap();
        let special = vec![0u32, 1, 2];
        let rn = RandomNoise { len, vocab: 40, special: special.clone() };
        // Padded batch: pad with 0 after each row; responses end at the row's own length.
        let mut flat = Vec::new();
        let mut resp = Vec::new();
        for (r, cut) in &rows {
            let mut row: Vec<i64> = r.iter().map(|&x| i64::from(x)).collect();
            row.resize(t, 0);
            flat.extend(row);
            resp.push((cut % r.len())..r.len());
        }
        let batch = Tensor::<B, 2, Int>::from_data(TensorData::new(flat.clone(), [rows.len(), t]), &Default::default());
        let out: Vec<i64> = rn.augment_batch(batch, &resp, &mut Rng::new(seed)).into_data().convert::<i64>().into_vec().unwrap();
        let mut rng = Rng::new(seed);
        for (ri, (r, _)) in rows.iter().enumerate() {
            let mut padded: Vec<u32> = r.clone();
            padded.resize(t, 0);
            let one = rn.augment(&padded, resp[ri].clone(), &mut rng);
            let got: Vec<u32> = out[ri * t..(ri + 1) * t].iter().map(|&x| x as u32).collect();
            prop_assert_eq!(&got, &one.input);
            if let Some(s) = one.segment {
                for i in s {
                    prop_assert!(!special.contains(&one.input[i]));
                }
            }
            // Padding is never touched.
            prop_assert!(got[r.len()..].iter().all(|&x| x == 0));
        }
    }
}

#[test]
fn no_noise_is_identity_and_seeds_reproduce() {
    let tokens: Vec<u32> = (0..30).collect();
    let n = NoNoise.augment(&tokens, 10..30, &mut Rng::new(3));
    assert_eq!(n.input, tokens);
    let a = AheadNoise::default().augment(&tokens, 10..30, &mut Rng::new(3));
    let b = AheadNoise::default().augment(&tokens, 10..30, &mut Rng::new(3));
    assert_eq!(a, b);
    assert_ne!(
        a.input, tokens,
        "L = 4 noise over distinct tokens changes the input"
    );
}
