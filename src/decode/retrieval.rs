//! N-gram retrieval over the committed text (prompt + generated): the most recent earlier
//! occurrence of the longest suffix (n = max..1) proposes the tokens that followed it.
//! Plain data structures, no tensors.

use crate::decode::suffix_index::match_len;
use std::collections::HashMap;

/// A continuation [`NgramIndex::propose`] found, and how well the text before it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The tokens that followed the earlier occurrence.
    pub tokens: Vec<u32>,
    /// How many tokens before them equal the end of the current text: at least the n-gram
    /// that matched, at most 32 (a draft behind a long agreement is more often right).
    pub matched: usize,
}

/// An index of every n-gram (n in `1..=max_n`) of a growing token sequence to its most recent
/// end positions.
#[derive(Debug, Clone)]
pub struct NgramIndex {
    max_n: usize,
    tokens: Vec<u32>,
    /// n-gram -> end positions (exclusive), most recent last.
    ends: HashMap<Vec<u32>, Vec<usize>>,
}

impl NgramIndex {
    /// An empty index of n-grams up to `max_n` tokens.
    pub fn new(max_n: usize) -> Self {
        Self {
            max_n: max_n.max(1),
            tokens: Vec::new(),
            ends: HashMap::new(),
        }
    }

    /// Appends tokens, indexing the n-grams that end at each new position.
    pub fn extend(&mut self, tokens: &[u32]) {
        for &t in tokens {
            self.tokens.push(t);
            let end = self.tokens.len();
            for n in 1..=self.max_n.min(end) {
                self.ends
                    .entry(self.tokens[end - n..end].to_vec())
                    .or_default()
                    .push(end);
            }
        }
    }

    /// Up to `chains` continuations of up to `len` tokens each, for the current suffix followed by
    /// `pending` (tokens committed but not yet indexed, such as the next root). Tries the longest
    /// suffix first (n = max..1); within one n, the most recent occurrence that is followed by
    /// `len` tokens, then the most recent shorter ones. Occurrences that are the suffix itself
    /// (nothing follows them) are skipped; duplicate proposals are dropped.
    pub fn propose(&self, pending: &[u32], len: usize, chains: usize) -> Vec<Proposal> {
        let mut out: Vec<Proposal> = Vec::new();
        if len == 0 || chains == 0 {
            return out;
        }
        let mut seq: Vec<u32> =
            self.tokens[self.tokens.len().saturating_sub(self.max_n)..].to_vec();
        seq.extend_from_slice(pending);
        let total = self.tokens.len() + pending.len();
        for n in (1..=self.max_n.min(seq.len())).rev() {
            let key = &seq[seq.len() - n..];
            let Some(ends) = self.ends.get(key) else {
                continue;
            };
            // Most recent first, but an occurrence followed by a full-length continuation beats
            // a more recent one followed by fewer tokens (in repetitive text the most recent
            // occurrence is often the one just before the suffix, with one token after it).
            let mut cands: Vec<usize> = ends
                .iter()
                .rev()
                .copied()
                .filter(|&end| end < total && end < self.tokens.len())
                .collect();
            cands.sort_by_key(|&end| self.tokens.len() - end < len);
            for end in cands {
                let avail = self.tokens.len() - end;
                let cont = self.tokens[end..end + avail.min(len)].to_vec();
                if !out.iter().any(|p| p.tokens == cont) {
                    out.push(Proposal {
                        tokens: cont,
                        matched: self.agreement(pending, end),
                    });
                    if out.len() == chains {
                        return out;
                    }
                }
            }
        }
        out
    }

    /// How many tokens ending at `end` equal the end of the current text (the indexed tokens
    /// followed by `pending`), at most
    /// [`MAX_MATCH`](crate::decode::suffix_index::MAX_MATCH).
    fn agreement(&self, pending: &[u32], end: usize) -> usize {
        let text = self.tokens.iter().chain(pending).rev();
        match_len(self.tokens[..end].iter().rev(), text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposes_what_followed_the_most_recent_longest_match() {
        let mut idx = NgramIndex::new(3);
        // a b c d | x b c e | ... b c  -> longest match "b c": most recent is at "x b c" -> e
        idx.extend(&[1, 2, 3, 4, 9, 2, 3, 5, 7]);
        let p = idx.propose(&[2, 3], 3, 2);
        // The older "b c" has three tokens after it, the more recent only two.
        assert_eq!(p[0].tokens, vec![4, 9, 2]);
        assert_eq!(p[1].tokens, vec![5, 7]);
        // Before "b c": "a" at the first, "x" at the second; the text ends "5 7 b c".
        assert_eq!((p[0].matched, p[1].matched), (2, 2));
        // Without pending tokens the suffix is "5 7": it occurs only at the end, so "7" (the
        // 1-gram) gives the proposal: nothing followed its only occurrence either.
        assert!(idx.propose(&[], 4, 1).is_empty());
    }

    /// The agreement behind each proposal, against a direct count on the whole text.
    #[test]
    fn agreement_is_the_length_of_the_equal_run_before_the_continuation() {
        let mut rng = crate::rng::Rng::new(7);
        for round in 0..200 {
            // Few distinct tokens, so that matches of every length occur.
            let text: Vec<u32> = (0..20 + round % 60).map(|_| rng.below(3) as u32).collect();
            let (done, pending) = text.split_at(text.len() - 1);
            let mut idx = NgramIndex::new(3);
            idx.extend(done);
            for p in idx.propose(pending, 4, 8) {
                // Every earlier position whose continuation this is and whose preceding run
                // equals the text's end for `matched` tokens, but not `matched + 1`.
                let run = |end: usize| {
                    (1..=end.min(crate::decode::suffix_index::MAX_MATCH))
                        .take_while(|&i| text[end - i] == text[text.len() - i])
                        .count()
                };
                let found = (1..done.len()).any(|end| {
                    done[end..].starts_with(&p.tokens)
                        && (done.len() - end == p.tokens.len() || p.tokens.len() == 4)
                        && run(end) == p.matched
                });
                assert!(found && p.matched >= 1, "round {round}: {p:?} in {text:?}");
            }
        }
    }

    #[test]
    fn nothing_to_propose_without_a_match() {
        let mut idx = NgramIndex::new(3);
        idx.extend(&[1, 2, 3]);
        assert!(idx.propose(&[42], 5, 3).is_empty());
        assert!(idx.propose(&[1], 0, 3).is_empty());
    }
}
