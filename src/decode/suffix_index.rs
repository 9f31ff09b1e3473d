//! A suffix index over documents (prompts and outputs): where the current text's suffix occurred
//! before, how long each match is, and what followed it, with counts. Bounded: the oldest
//! documents are evicted first. Plain data, no tensors; [`crate::DraftMemory`] shares one
//! between decoders and threads, and each generation keeps one over its own text.
//!
//! Matches are found through hashed n-grams (`n` in [`LEVELS`], longest first) and extended
//! backwards token by token up to [`MAX_MATCH`], so a hit is as long as the text really agrees
//! (what a suffix tree's deepest match gives) without a tree's memory per token.

use std::collections::{HashMap, VecDeque};

/// N-gram lengths indexed, longest first: a query tries the next only when one finds nothing.
pub(crate) const LEVELS: [usize; 3] = [4, 2, 1];
/// Longest match measured (tokens).
pub(crate) const MAX_MATCH: usize = 32;

/// How many tokens two texts read backwards from their ends agree on, at most [`MAX_MATCH`]: a
/// match's length as every retrieval source measures it.
pub(crate) fn match_len<'a>(
    a: impl Iterator<Item = &'a u32>,
    b: impl Iterator<Item = &'a u32>,
) -> usize {
    a.zip(b).take(MAX_MATCH).take_while(|(x, y)| x == y).count()
}
/// Most recent occurrences of one n-gram examined per query.
const SCAN: usize = 128;
/// Occurrences a continuation tree is built from.
const KEEP: usize = 48;
/// Ends every document in the token store (never a token: ids are checked against the
/// vocabulary before decoding).
const SEP: u32 = u32::MAX;

/// Where a query's suffix occurred: the store index of the token after it, and the match length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Occurrence {
    pub next: usize,
    pub matched: usize,
}

/// Continuations of a query's suffix as a trie with counts: node 0 is the query's end.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Continuations {
    /// Longest match among the occurrences used (0: none).
    pub matched: usize,
    pub parent: Vec<usize>,
    pub token: Vec<u32>,
    /// Occurrences whose continuation passes through the node (node 0: all used).
    pub count: Vec<u32>,
    pub depth: Vec<usize>,
}

impl Continuations {
    fn new() -> Self {
        Self {
            matched: 0,
            parent: vec![0],
            token: vec![SEP],
            count: vec![0],
            depth: vec![0],
        }
    }

    fn child(&self, at: usize, t: u32) -> Option<usize> {
        (at + 1..self.token.len()).find(|&c| self.parent[c] == at && self.token[c] == t)
    }

    fn add(&mut self, path: &[u32]) {
        self.count[0] += 1;
        let mut at = 0;
        for &t in path {
            at = match self.child(at, t) {
                Some(c) => c,
                None => {
                    self.parent.push(at);
                    self.token.push(t);
                    self.count.push(0);
                    self.depth.push(self.depth[at] + 1);
                    self.token.len() - 1
                }
            };
            self.count[at] += 1;
        }
    }

    /// The most frequent path (ties: the earliest-inserted child, i.e. the best match).
    pub fn top_chain(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(c) = (at + 1..self.token.len())
            .filter(|&c| self.parent[c] == at)
            .max_by_key(|&c| (self.count[c], std::cmp::Reverse(c)))
        {
            out.push(self.token[c]);
            at = c;
        }
        out
    }
}

/// The index: documents' tokens (each followed by a separator) and, per indexed n-gram, the
/// store positions just after its occurrences, oldest first.
#[derive(Debug, Clone)]
pub(crate) struct SuffixIndex {
    capacity: usize,
    /// Tokens of every document, separators included; `store[i]` has absolute position
    /// `base + i`.
    store: Vec<u32>,
    base: u64,
    /// Token count (separators excluded) of each document, oldest first.
    docs: VecDeque<usize>,
    /// Whether the last document is still open (growing).
    open: bool,
    /// Tokens held (separators excluded).
    held: usize,
    grams: HashMap<u64, VecDeque<u64>>,
}

/// The hash key of an n-gram (exact for `n <= 2`, with the length folded in).
fn key(gram: &[u32]) -> u64 {
    match *gram {
        [a] => u64::from(a),
        [a, b] => (u64::from(a) << 32 | u64::from(b)).rotate_left(7) ^ 0x2,
        _ => {
            let mut h = 0xcbf2_9ce4_8422_2325u64 ^ gram.len() as u64;
            for &t in gram {
                h = (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01b3);
                h ^= h >> 29;
            }
            h | 1 << 63
        }
    }
}

impl SuffixIndex {
    /// An empty index keeping at most `capacity` tokens (oldest documents evicted first; an open
    /// document is never evicted).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            store: Vec::new(),
            base: 0,
            docs: VecDeque::new(),
            open: false,
            held: 0,
            grams: HashMap::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tokens held (separators excluded).
    pub fn tokens(&self) -> usize {
        self.held
    }

    /// Documents held, oldest first.
    pub fn documents(&self) -> impl Iterator<Item = &[u32]> + '_ {
        let (mut at, store) = (0usize, &self.store);
        self.docs.iter().map(move |&n| {
            let s = at;
            at += n + 1;
            &store[s..s + n]
        })
    }

    /// The open document's tokens (empty when none is open).
    pub fn open_tokens(&self) -> &[u32] {
        if !self.open {
            return &[];
        }
        let n = *self.docs.back().expect("an open document");
        &self.store[self.store.len() - n..]
    }

    /// Adds a whole document.
    pub fn add_document(&mut self, tokens: &[u32]) {
        self.close();
        self.extend(tokens);
        self.close();
    }

    /// Appends to the open document (opening one if needed).
    pub fn extend(&mut self, tokens: &[u32]) {
        if !self.open {
            self.docs.push_back(0);
            self.open = true;
        }
        for &t in tokens {
            debug_assert_ne!(t, SEP);
            self.store.push(t);
            *self.docs.back_mut().expect("open") += 1;
            self.held += 1;
            let n_doc = *self.docs.back().expect("open");
            let len = self.store.len();
            let end = self.base + len as u64;
            for n in LEVELS.into_iter().filter(|&n| n <= n_doc) {
                let k = key(&self.store[len - n..]);
                self.grams.entry(k).or_default().push_back(end);
            }
        }
    }

    /// Ends the open document, then evicts the oldest closed ones beyond capacity.
    pub fn close(&mut self) {
        if self.open {
            self.store.push(SEP);
            self.open = false;
        }
        while self.tokens() > self.capacity && !self.docs.is_empty() {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        let Some(n) = self.docs.pop_front() else {
            return;
        };
        let doc: Vec<u32> = self.store.drain(..=n).take(n).collect();
        self.held -= n;
        for end in 1..=n {
            let abs = self.base + end as u64;
            for g in LEVELS.into_iter().filter(|&g| g <= end) {
                let k = key(&doc[end - g..end]);
                if let Some(q) = self.grams.get_mut(&k) {
                    // Oldest first: this document's entries are at the front.
                    while q.front().is_some_and(|&p| p <= abs) {
                        q.pop_front();
                    }
                    if q.is_empty() {
                        self.grams.remove(&k);
                    }
                }
            }
        }
        self.base += n as u64 + 1;
    }

    /// Occurrences of the longest suffix of `context` found (longest n-gram level with a hit),
    /// most recent first, each with its true match length (up to [`MAX_MATCH`]).
    pub fn occurrences(&self, context: &[u32]) -> Vec<Occurrence> {
        let s = &self.store;
        let mut out = Vec::new();
        for n in LEVELS.into_iter().filter(|&n| n <= context.len()) {
            let Some(q) = self.grams.get(&key(&context[context.len() - n..])) else {
                continue;
            };
            for &end in q.iter().rev().take(SCAN) {
                let next = (end - self.base) as usize;
                if next >= s.len() || s[next] == SEP {
                    continue; // nothing follows (the text's own end)
                }
                let matched = match_len(s[..next].iter().rev(), context.iter().rev());
                if matched >= n {
                    out.push(Occurrence { next, matched });
                }
            }
            if !out.is_empty() {
                break;
            }
        }
        out
    }

    /// What followed the longest matches of `context`'s suffix, up to `depth` tokens each, as a
    /// counted trie: occurrences whose match is at least half the longest (and at least the
    /// n-gram found), the longest and most recent first, at most [`KEEP`].
    pub fn continuations(&self, context: &[u32], depth: usize) -> Continuations {
        let mut c = Continuations::new();
        if depth == 0 {
            return c;
        }
        let mut occ = self.occurrences(context);
        let Some(best) = occ.iter().map(|o| o.matched).max() else {
            return c;
        };
        c.matched = best;
        occ.retain(|o| 2 * o.matched >= best);
        occ.sort_by_key(|o| std::cmp::Reverse(o.matched));
        let s = &self.store;
        for o in occ.into_iter().take(KEEP) {
            let end = s[o.next..]
                .iter()
                .take(depth)
                .position(|&t| t == SEP)
                .unwrap_or(depth.min(s.len() - o.next));
            c.add(&s[o.next..o.next + end]);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_longest_match_and_counts_what_followed() {
        let mut idx = SuffixIndex::new(1000);
        idx.add_document(&[1, 2, 3, 4, 5]);
        idx.add_document(&[9, 2, 3, 4, 6, 7]);
        idx.add_document(&[8, 3, 4, 6, 7]);
        // "2 3 4" matches twice (3 tokens), "3 4" a third time: the 3-token ones are kept.
        let c = idx.continuations(&[0, 2, 3, 4], 2);
        assert_eq!(c.matched, 3);
        assert_eq!(
            c.count[0], 3,
            "half the longest match (>= 1.5 tokens) keeps all three"
        );
        assert_eq!(c.top_chain(), vec![6, 7]);
        // Continuations stop at the end of their document.
        let c = idx.continuations(&[4, 6, 7], 5);
        assert_eq!(c.token.len(), 1);
        let c = idx.continuations(&[1, 2], 5);
        assert_eq!(c.top_chain(), vec![3, 4, 5]);
    }

    #[test]
    fn eviction_drops_the_oldest_documents_and_their_matches() {
        let mut idx = SuffixIndex::new(8);
        idx.add_document(&[1, 2, 3, 4, 5]);
        idx.add_document(&[6, 7, 8]);
        assert_eq!(idx.tokens(), 8);
        idx.add_document(&[1, 2, 9]);
        assert_eq!(idx.tokens(), 6, "the first document went");
        assert_eq!(idx.continuations(&[1, 2], 3).top_chain(), vec![9]);
        assert_eq!(idx.continuations(&[3], 3).token.len(), 1);
        let docs: Vec<&[u32]> = idx.documents().collect();
        assert_eq!(docs, vec![&[6, 7, 8][..], &[1, 2, 9][..]]);
    }

    #[test]
    fn an_open_document_matches_its_own_earlier_text_but_not_its_end() {
        let mut idx = SuffixIndex::new(100);
        idx.extend(&[5, 6, 7, 5, 6]);
        assert_eq!(idx.continuations(&[5, 6], 4).top_chain(), vec![7, 5, 6]);
        idx.extend(&[7]);
        assert_eq!(idx.open_tokens(), &[5, 6, 7, 5, 6, 7]);
        assert_eq!(
            idx.continuations(idx.open_tokens(), 2).top_chain(),
            vec![5, 6]
        );
    }

    /// Every occurrence of `context`'s suffix in `docs` (the last one open: its end is the
    /// query's own position), by brute force: (document, index after the match, match length).
    fn brute(docs: &[Vec<u32>], context: &[u32]) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for (d, doc) in docs.iter().enumerate() {
            for next in 1..doc.len() {
                let m = doc[..next]
                    .iter()
                    .rev()
                    .zip(context.iter().rev())
                    .take(MAX_MATCH)
                    .take_while(|(a, b)| a == b)
                    .count();
                if m > 0 {
                    out.push((d, next, m));
                }
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// The trie holds exactly the continuations of the occurrences a scan of the whole text
        /// finds: those matching at least the longest indexed n-gram that matched anywhere and
        /// at least half the longest match, each counted once per occurrence.
        #[test]
        fn continuations_equal_a_brute_force_scan(
            docs in proptest::collection::vec(proptest::collection::vec(0u32..4, 0..24), 1..5),
            context in proptest::collection::vec(0u32..4, 1..10),
            depth in 1usize..6,
            open in proptest::bool::ANY,
        ) {
            let mut idx = SuffixIndex::new(usize::MAX);
            for (i, d) in docs.iter().enumerate() {
                if open && i + 1 == docs.len() {
                    idx.extend(d);
                } else {
                    idx.add_document(d);
                }
            }
            let c = idx.continuations(&context, depth);
            let all = brute(&docs, &context);
            let best = all.iter().map(|o| o.2).max().unwrap_or(0);
            let level = LEVELS.into_iter().find(|&n| n <= context.len() && n <= best).unwrap_or(0);
            let kept: Vec<&[u32]> = all
                .iter()
                .filter(|o| o.2 >= level && 2 * o.2 >= best)
                .map(|o| {
                    let doc = &docs[o.0];
                    &doc[o.1..doc.len().min(o.1 + depth)]
                })
                .collect();
            proptest::prop_assume!(kept.len() <= KEEP);
            proptest::prop_assert_eq!(c.matched, if kept.is_empty() { 0 } else { best });
            proptest::prop_assert_eq!(c.count[0] as usize, kept.len());
            for n in 1..c.token.len() {
                let mut path = vec![c.token[n]];
                let mut at = c.parent[n];
                while at != 0 {
                    path.push(c.token[at]);
                    at = c.parent[at];
                }
                path.reverse();
                let want = kept.iter().filter(|k| k.starts_with(&path)).count();
                proptest::prop_assert_eq!(c.count[n] as usize, want, "{:?}", path);
            }
            let leaves: usize = kept.iter().map(|k| k.len()).sum();
            let paths: usize = c.count[1..].iter().map(|&x| x as usize).sum();
            proptest::prop_assert_eq!(paths, leaves, "every kept token is in the trie");
        }

        /// After eviction the index answers exactly as one built from the documents it kept,
        /// which are the newest that fit.
        #[test]
        fn an_evicted_index_equals_one_built_from_what_it_kept(
            docs in proptest::collection::vec(proptest::collection::vec(0u32..5, 0..20), 1..8),
            capacity in 0usize..60,
            context in proptest::collection::vec(0u32..5, 1..8),
        ) {
            let mut idx = SuffixIndex::new(capacity);
            for d in &docs {
                idx.add_document(d);
            }
            let mut want: Vec<&Vec<u32>> = Vec::new();
            let mut total = 0;
            for d in docs.iter().rev() {
                if total + d.len() > capacity {
                    break;
                }
                total += d.len();
                want.push(d);
            }
            want.reverse();
            let kept: Vec<&[u32]> = idx.documents().collect();
            proptest::prop_assert_eq!(kept.len(), want.len());
            proptest::prop_assert!(kept.iter().zip(&want).all(|(a, b)| *a == &b[..]));
            proptest::prop_assert_eq!(idx.tokens(), total);
            let mut fresh = SuffixIndex::new(usize::MAX);
            for d in &want {
                fresh.add_document(d);
            }
            proptest::prop_assert_eq!(idx.continuations(&context, 4), fresh.continuations(&context, 4));
            proptest::prop_assert_eq!(idx.grams.len(), fresh.grams.len(), "no stale n-grams");
        }
    }
}
