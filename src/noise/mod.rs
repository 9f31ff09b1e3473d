//! MSN noise augmentation: one contiguous segment of each response is replaced by noise in the
//! model's *input*, while the labels stay the clean sequence, so the model learns to predict the
//! right next token even when what it reads is a wrong draft (what Jacobi decoding shows it).
//!
//! [`AheadNoise`] is the paper's scheme (each noised token drawn uniformly from everything before
//! it), [`RandomNoise`] the ablation's alternative (uniform over the vocabulary without special
//! tokens), [`NoNoise`] plain SFT. All are seeded through [`Rng`] and reproducible.

pub use crate::rng::Rng;
use burn::prelude::*;
use std::ops::Range;

/// One sample after augmentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noised {
    /// What the model reads.
    pub input: Vec<u32>,
    /// The clean sequence (what it is trained to predict, shifted by one).
    pub labels: Vec<u32>,
    /// The replaced positions, if any.
    pub segment: Option<Range<usize>>,
}

/// Replaces one segment of a sample's response with noise.
pub trait NoiseAugmenter {
    /// Segment length `L` this augmenter aims for (0 for none).
    fn segment_len(&self) -> usize;

    /// The token written at noised position `i`, given the input so far (`input[..i]` is final).
    fn noise_token(&self, input: &[u32], i: usize, rng: &mut Rng) -> u32;

    /// Augments one sample: `tokens` is `prompt ++ response`, `response` the response positions.
    /// The segment lies inside the response and never covers its last token; responses too
    /// short for `L` get a shorter segment (or none when they have a single token). Position 0
    /// (nothing precedes it) is never noised.
    ///
    /// # Panics
    /// When `response` is not inside `tokens` (a caller bug, not user input).
    fn augment(&self, tokens: &[u32], response: Range<usize>, rng: &mut Rng) -> Noised {
        assert!(
            response.start <= response.end && response.end <= tokens.len(),
            "response range inside the sample"
        );
        let mut input = tokens.to_vec();
        // Position 0 has nothing before it to draw ahead noise from: never noise it.
        let response = response.start.max(1)..response.end.max(1);
        let segment = choose_segment(response, self.segment_len(), rng);
        if let Some(seg) = &segment {
            for i in seg.clone() {
                input[i] = self.noise_token(&input, i, rng);
            }
        }
        Noised {
            input,
            labels: tokens.to_vec(),
            segment,
        }
    }

    /// Augments a padded batch `[b, t]` of token ids on any device; row `r`'s response is
    /// `responses[r]`. Rows are processed in order with `rng`, so the result equals
    /// [`NoiseAugmenter::augment`] applied row by row with the same generator.
    ///
    /// # Panics
    /// When `responses` does not have one range per row inside `t`.
    fn augment_batch<B: Backend>(
        &self,
        tokens: Tensor<B, 2, Int>,
        responses: &[Range<usize>],
        rng: &mut Rng,
    ) -> Tensor<B, 2, Int>
    where
        Self: Sized,
    {
        let [b, t] = tokens.dims();
        assert_eq!(responses.len(), b, "one response range per row");
        let device = tokens.device();
        let ids = crate::logits::token_ids(tokens);
        let mut out = Vec::with_capacity(b * t);
        for (r, resp) in responses.iter().enumerate() {
            let n = self.augment(&ids[r * t..(r + 1) * t], resp.clone(), rng);
            out.extend(n.input.into_iter().map(i64::from));
        }
        Tensor::from_data(TensorData::new(out, [b, t]), &device)
    }
}

/// The segment for a response: `L' = min(L, n - 1)` positions starting uniformly where the
/// segment fits before the response's last token.
pub fn choose_segment(response: Range<usize>, len: usize, rng: &mut Rng) -> Option<Range<usize>> {
    let n = response.end.saturating_sub(response.start);
    let l = len.min(n.saturating_sub(1));
    if l == 0 {
        return None;
    }
    // Starts s..=end-1-l: the segment [start, start+l) ends before the last token (end - 1).
    let choices = n - l;
    let start = response.start + rng.below(choices);
    Some(start..start + l)
}

/// The paper's "ahead noise": every noised token is drawn uniformly from all tokens before it
/// (prompt, clean response prefix, and noise already written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AheadNoise {
    /// Segment length `L` (the paper's ablation finds 4 best).
    pub len: usize,
}

impl Default for AheadNoise {
    fn default() -> Self {
        Self { len: 4 }
    }
}

impl NoiseAugmenter for AheadNoise {
    fn segment_len(&self) -> usize {
        self.len
    }

    fn noise_token(&self, input: &[u32], i: usize, rng: &mut Rng) -> u32 {
        // `augment` never noises position 0, so something precedes `i`.
        input[rng.below(i.max(1))]
    }
}

/// Uniform noise over the vocabulary without special tokens (the ablation's alternative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomNoise {
    /// Segment length `L`.
    pub len: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Token ids never drawn (special tokens), sorted or not.
    pub special: Vec<u32>,
}

impl NoiseAugmenter for RandomNoise {
    fn segment_len(&self) -> usize {
        self.len
    }

    fn noise_token(&self, input: &[u32], i: usize, rng: &mut Rng) -> u32 {
        if self.special.len() >= self.vocab {
            return input[i];
        }
        loop {
            let t = rng.below(self.vocab) as u32;
            if !self.special.contains(&t) {
                return t;
            }
        }
    }
}

/// No noise: plain SFT (`L = 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoNoise;

impl NoiseAugmenter for NoNoise {
    fn segment_len(&self) -> usize {
        0
    }

    fn noise_token(&self, input: &[u32], i: usize, _rng: &mut Rng) -> u32 {
        input[i]
    }
}

/// A noise scheme chosen at run time (command lines, ablations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noise {
    /// [`NoNoise`].
    None,
    /// [`AheadNoise`].
    Ahead(AheadNoise),
    /// [`RandomNoise`].
    Random(RandomNoise),
}

impl NoiseAugmenter for Noise {
    fn segment_len(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Ahead(n) => n.segment_len(),
            Self::Random(n) => n.segment_len(),
        }
    }

    fn noise_token(&self, input: &[u32], i: usize, rng: &mut Rng) -> u32 {
        match self {
            Self::None => input[i],
            Self::Ahead(n) => n.noise_token(input, i, rng),
            Self::Random(n) => n.noise_token(input, i, rng),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_responses_get_short_segments_or_none() {
        let mut rng = Rng::new(1);
        assert_eq!(choose_segment(5..5, 4, &mut rng), None);
        assert_eq!(choose_segment(5..6, 4, &mut rng), None);
        assert_eq!(choose_segment(5..7, 4, &mut rng), Some(5..6));
        let s = choose_segment(5..20, 4, &mut rng).unwrap();
        assert!(s.start >= 5 && s.end <= 19 && s.len() == 4);
        assert_eq!(choose_segment(5..20, 0, &mut rng), None);
    }
}
