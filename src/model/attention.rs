//! Attention of the host engine's queries over a host KV cache.
//!
//! **A query's result depends only on the keys it may see.** Each query visits exactly its
//! unmasked keys, in key order, with a fixed summation order: its scores key by key, its softmax
//! per segment of its own key list, its mixture accumulated in key order, the segments combined
//! in order. How the queries of a call are grouped into tasks (which share reads of the keys
//! and values) changes no arithmetic, so a token verified inside a tree gets bit for bit the
//! attention output it gets when decoded alone.

use crate::model::cache::{HostKv, KvRows};
use crate::model::family_ops::{key_positions, outside_window};
use crate::model::host::HostConsts;
use crate::model::hot_pool;
use crate::model::scratch;
use std::sync::Mutex;

/// Attention of one call's queries over the cache.
pub(crate) struct Attn<'a> {
    pub(crate) c: &'a HostConsts,
    pub(crate) mask: Option<&'a [bool]>,
    /// Position of each new token, `[batch * t]`.
    pub(crate) positions: &'a [usize],
    /// A sliding layer's window: keys this many positions or more behind a query are hidden.
    pub(crate) window: Option<usize>,
    pub(crate) batch: usize,
    pub(crate) t: usize,
    pub(crate) past: usize,
    pub(crate) capacity: usize,
}

/// Keys per block of the shared key range: a block's keys and values (16 KiB each at 64
/// dimensions) stay in L1 while every query of the task passes over them.
const KEY_BLOCK: usize = 64;

/// Keys per segment of a query's key list (a multiple of [`KEY_BLOCK`]). A longer list is
/// attended a segment at a time, each with its own maximum, sum and mixture, combined in order
/// afterwards: so the tasks of a step over a long cache are many and even however few queries
/// it has (a one-token step of SmolLM2 has 3 KV groups for any number of threads). A list of at
/// most this many keys is one segment, whose result is exactly the one-pass softmax's.
const KEY_SEGMENT: usize = 256;

/// One task's results for its `n` queries, in one buffer: per query its segment's maximum
/// score (`-inf` where the segment holds none of its keys), the sum of `exp(score - max)` and
/// the mixture of values with those weights (`hd` values each).
#[derive(Default)]
struct Part {
    n: usize,
    data: Vec<f32>,
}

impl Part {
    /// Nothing seen yet by `n` queries of `hd` values.
    fn new(n: usize, hd: usize) -> Self {
        let mut data = vec![0f32; n * (hd + 2)];
        data[..n].fill(f32::NEG_INFINITY);
        Self { n, data }
    }

    fn max(&self, i: usize) -> f32 {
        self.data[i]
    }

    fn sum(&self, i: usize) -> f32 {
        self.data[self.n + i]
    }

    /// Query `i`'s mixture.
    fn out(&self, i: usize, hd: usize) -> &[f32] {
        &self.data[2 * self.n + i * hd..][..hd]
    }

    /// Every query's maximum, sum and mixture.
    fn parts_mut(&mut self) -> (&mut [f32], &mut [f32], &mut [f32]) {
        let (max, rest) = self.data.split_at_mut(self.n);
        let (sum, out) = rest.split_at_mut(self.n);
        (max, sum, out)
    }
}

thread_local! {
    /// Each thread's score lists, kept between tasks (their capacity is the point).
    static SCORES: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Attn<'_> {
    /// `[batch * t, heads * hd]` attention outputs for queries `q` (same layout).
    ///
    /// One task per batch row, KV group, chunk of that group's queries (its `t` tokens times
    /// the heads that share the group) and [`KEY_SEGMENT`] of their key lists: the keys every
    /// query of the chunk sees first, in the same order, are visited a block at a time by all
    /// of them (each key and value row read from memory once per chunk instead of once per
    /// query); the rest query by query. Each query's arithmetic is the same in any chunk: per
    /// segment of its own key list, its scores key by key in groups of eight (the shared range
    /// is a multiple of eight), its softmax over the segment, its mixture accumulated in key
    /// order; then the segments combined in order ([`combine`]).
    ///
    /// `lists` are [`Attn::key_lists`] (the same for every layer without a window).
    pub(crate) fn run(
        &self,
        q: &[f32],
        (k, v): (&KvRows, &KvRows),
        kv: &HostKv,
        lists: &[Vec<usize>],
    ) -> Vec<f32> {
        let c = self.c;
        let (h, hd, t) = (c.heads, c.head_dim, self.t);
        let rep = h / c.kv_heads;
        let per_group = t * rep;
        let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
        let segments = longest.div_ceil(KEY_SEGMENT).max(1);
        let all = self.batch * c.kv_heads * per_group * segments;
        // At least a token's heads in a chunk, so that they read each key and value once.
        let chunk = (all / (4 * rayon::current_num_threads())).clamp(rep.min(8), 8);
        let chunks = per_group.div_ceil(chunk);
        let groups = self.batch * c.kv_heads * chunks;
        // Group task -> (batch row, KV group, its queries).
        let split = |gt: usize| {
            let (rg, ci) = (gt / chunks, gt % chunks);
            let queries = ci * chunk..((ci + 1) * chunk).min(per_group);
            (rg / c.kv_heads, rg % c.kv_heads, queries)
        };
        let parts: Vec<Mutex<Part>> = (0..groups * segments).map(|_| Mutex::default()).collect();
        hot_pool::for_each(groups * segments, &|task| {
            let (r, g, queries) = split(task / segments);
            let seg = task % segments * KEY_SEGMENT..(task % segments + 1) * KEY_SEGMENT;
            let part = self.chunk(q, k, v, kv, lists, r, g, queries, seg);
            *parts[task].lock().unwrap_or_else(|e| e.into_inner()) = part;
        });
        let parts: Vec<Part> = parts
            .into_iter()
            .map(|p| p.into_inner().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let mut a = scratch::zeroed(self.batch * t * h * hd);
        for (gt, group_parts) in parts.chunks_exact(segments).enumerate() {
            let (r, g, queries) = split(gt);
            for (n, qi) in queries.enumerate() {
                let (i, head) = (qi / rep, g * rep + qi % rep);
                let dst = ((r * t + i) * h + head) * hd;
                combine(group_parts, n, &mut a[dst..dst + hd]);
            }
        }
        a
    }

    /// The keys each query token sees, in order (row `r * t + i`: token `i` of batch row `r`);
    /// a token's heads share its list.
    pub(crate) fn key_lists(&self) -> Vec<Vec<usize>> {
        (0..self.batch * self.t)
            .map(|row| self.keys(row / self.t, row % self.t))
            .collect()
    }

    /// The keys query token `i` of batch row `r` sees, in order.
    fn keys(&self, r: usize, i: usize) -> Vec<usize> {
        let (t, s, past) = (self.t, self.past + self.t, self.past);
        let mut keys: Vec<usize> = match self.mask {
            Some(m) => {
                let mr = &m[(r * t + i) * s..(r * t + i + 1) * s];
                (0..s).filter(|&j| !mr[j]).collect()
            }
            None => (0..=past + i).collect(),
        };
        if let Some(w) = self.window {
            let pos = &self.positions[r * t..(r + 1) * t];
            let mut at = key_positions(pos, past);
            keys.retain(|&j| !outside_window(pos[i], at(j), w));
        }
        keys
    }

    /// The group-`g` queries `queries` of batch row `r` (query `qi` is token `qi / rep`, head
    /// `g * rep + qi % rep`, its keys `lists[r * t + qi / rep]`) over positions `seg` of their
    /// key lists: per query the segment's maximum score, sum and mixture `[queries, hd]`.
    #[allow(clippy::too_many_arguments)]
    fn chunk(
        &self,
        q: &[f32],
        k: &KvRows,
        v: &KvRows,
        kv: &HostKv,
        lists: &[Vec<usize>],
        r: usize,
        g: usize,
        queries: std::ops::Range<usize>,
        seg: std::ops::Range<usize>,
    ) -> Part {
        let c = self.c;
        let (h, hd, t) = (c.heads, c.head_dim, self.t);
        let rep = h / c.kv_heads;
        let scale = c.attn_scale;
        let base = kv.at(self.capacity, r, g, 0);
        // Each query's part of its list in this segment.
        let lists: Vec<&[usize]> = queries
            .clone()
            .map(|qi| {
                let l = &lists[r * t + qi / rep];
                &l[seg.start.min(l.len())..seg.end.min(l.len())]
            })
            .collect();
        let qvs: Vec<&[f32]> = queries
            .clone()
            .map(|qi| &q[((r * t + qi / rep) * h + g * rep + qi % rep) * hd..][..hd])
            .collect();
        // The shared range: the longest common prefix of the key lists, in whole groups of 8
        // (the segment starts at a multiple of 8 of each list, so its groups are the lists').
        let first = lists[0];
        let common = lists.iter().fold(first.len(), |n, l| {
            n.min(l.iter().zip(first).take_while(|(a, b)| a == b).count())
        }) / 8
            * 8;
        let n = lists.len();
        let mut pool = SCORES.with(|p| std::mem::take(&mut *p.borrow_mut()));
        if pool.len() < n {
            pool.resize_with(n, Vec::new);
        }
        let ps = &mut pool[..n];
        ps.iter_mut().for_each(Vec::clear);
        let mut w = Widened::new(k, lists.iter().map(|l| l.len()).max().unwrap_or(0));
        for lo in (0..common).step_by(KEY_BLOCK) {
            let keys = &first[lo..(lo + KEY_BLOCK).min(common)];
            let (k, base, keys) = w.rows(k, base, keys, hd);
            scores_shared(&qvs, k, base, keys, hd, scale, ps);
        }
        let mut part = Part::new(n, hd);
        let (max, sum, out) = part.parts_mut();
        for (n, ((qv, p), l)) in qvs.iter().zip(ps.iter_mut()).zip(&lists).enumerate() {
            let (k, base, keys) = w.rows(k, base, &l[common..], hd);
            scores(qv, k, base, keys, hd, scale, p);
            if let Some(cap) = c.softcap {
                p.iter_mut().for_each(|x| *x = cap * (*x / cap).tanh());
            }
            if !l.is_empty() {
                (max[n], sum[n]) = softmax_numerators(p);
            }
        }
        mixtures(ps, &lists, common, (v, base), hd, &mut w, out);
        SCORES.with(|p| *p.borrow_mut() = pool);
        part
    }
}

/// The mixtures `out` (`[queries, hd]`) of the values `v` (a task's group at `base`) with each
/// query's weights `ps` over its keys `lists`: the first `common` keys (shared by every list)
/// a block at a time for all queries, the rest query by query.
fn mixtures(
    ps: &[Vec<f32>],
    lists: &[&[usize]],
    common: usize,
    (v, base): (&KvRows, usize),
    hd: usize,
    w: &mut Widened,
    out: &mut [f32],
) {
    let mut weights: Vec<&[f32]> = Vec::with_capacity(ps.len());
    for lo in (0..common).step_by(KEY_BLOCK) {
        let hi = (lo + KEY_BLOCK).min(common);
        weights.clear();
        weights.extend(ps.iter().map(|p| &p[lo..hi]));
        let (v, base, keys) = w.rows(v, base, &lists[0][lo..hi], hd);
        mix_shared(&weights, v, base, keys, hd, out);
    }
    for (n, (p, l)) in ps.iter().zip(lists).enumerate() {
        let (v, base, keys) = w.rows(v, base, &l[common..], hd);
        mix(
            &p[common..],
            v,
            base,
            keys,
            hd,
            &mut out[n * hd..(n + 1) * hd],
        );
    }
}

/// A task's buffer for stored rows widened to f32 ([`rows_f32`]), with the indices to read
/// them by.
struct Widened {
    buf: Vec<f32>,
    iota: Vec<usize>,
}

impl Widened {
    /// For rows of `store`, at most `longest` at a time.
    fn new(store: &KvRows, longest: usize) -> Self {
        let iota = match store {
            KvRows::F32(_) => Vec::new(),
            KvRows::F16(_) => (0..longest).collect(),
        };
        Self {
            buf: Vec::new(),
            iota,
        }
    }

    /// [`rows_f32`] through this buffer.
    fn rows<'a>(
        &'a mut self,
        store: &'a KvRows,
        base: usize,
        keys: &'a [usize],
        hd: usize,
    ) -> (&'a [f32], usize, &'a [usize]) {
        rows_f32(store, base, keys, hd, &mut self.buf, &self.iota)
    }
}

/// Query `n`'s attention output from its segments' `parts` (in list order) into `out` (zeros):
/// with `M` the largest segment maximum and `w_s = exp(max_s - M)`, `sum_s w_s out_s / sum_s
/// w_s sum_s`, each element one chain in segment order. With one segment `w = 1` exactly, so
/// the result is the one-pass softmax's `out / sum`; a query with no keys (a padding query)
/// keeps zeros.
fn combine(parts: &[Part], n: usize, out: &mut [f32]) {
    let hd = out.len();
    let m = parts
        .iter()
        .map(|p| p.max(n))
        .fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return;
    }
    let mut sum = 0f32;
    for p in parts.iter().filter(|p| p.max(n) != f32::NEG_INFINITY) {
        let w = (p.max(n) - m).exp();
        sum += p.sum(n) * w;
        for (o, &x) in out.iter_mut().zip(p.out(n, hd)) {
            *o += x * w;
        }
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|x| *x *= inv);
}

/// The rows `keys` (`hd` values each from `base`) of a layer's stored keys or values as f32,
/// with the base and indices to read them at: the stored rows themselves where they are f32,
/// else widened into `buf` one after another (indices `iota[..keys.len()]`). Widening is exact,
/// so a row's values, and every score and mixture computed from them, are the same whichever
/// list the row is read for.
fn rows_f32<'a>(
    s: &'a KvRows,
    base: usize,
    keys: &'a [usize],
    hd: usize,
    buf: &'a mut Vec<f32>,
    iota: &'a [usize],
) -> (&'a [f32], usize, &'a [usize]) {
    match s {
        KvRows::F32(b) => (b, base, keys),
        KvRows::F16(h) => {
            buf.resize(keys.len() * hd, 0.0);
            #[cfg(target_arch = "x86_64")]
            if hd.is_multiple_of(8) && avx2::f16c() {
                assert!(keys.iter().all(|&j| base + (j + 1) * hd <= h.len()));
                // SAFETY: AVX2 and F16C detected; every row in range (asserted), `buf` holds
                // `keys.len()` rows.
                unsafe { avx2::widen_rows(h, base, keys, hd, buf) };
                return (buf, 0, &iota[..keys.len()]);
            }
            for (&j, out) in keys.iter().zip(buf.chunks_exact_mut(hd)) {
                s.get(base + j * hd, out);
            }
            (buf, 0, &iota[..keys.len()])
        }
    }
}

/// Appends `q . k_j * scale` for each of `keys` to `out`, key `j` at `k[base + j * hd..][..hd]`
/// (a key's score is the same bits wherever it falls in `keys`).
fn scores(
    q: &[f32],
    k: &[f32],
    base: usize,
    keys: &[usize],
    hd: usize,
    scale: f32,
    out: &mut Vec<f32>,
) {
    assert!(
        keys.iter().all(|&j| base + (j + 1) * hd <= k.len()),
        "key index in range"
    );
    assert_eq!(q.len(), hd, "one query head");
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(8) && avx2::available() {
        // SAFETY: AVX2 + FMA detected; every key row is in range and `q` is `hd` long (both
        // asserted above).
        unsafe { avx2::scores(q, k, base, keys, hd, scale, out) };
        return;
    }
    for &j in keys {
        let kr = &k[base + j * hd..base + (j + 1) * hd];
        out.push(q.iter().zip(kr).fold(0f32, |a, (x, y)| a + x * y) * scale);
    }
}

/// `p_j = exp(p_j - max p)` in place; returns `max p` and their sum (a fixed order for a given length, so
/// a query's weights depend only on its own scores).
fn softmax_numerators(p: &mut [f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 + FMA detected.
        return unsafe { avx2::softmax_numerators(p) };
    }
    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for e in p.iter_mut() {
        *e = (*e - max).exp();
        sum += *e;
    }
    (max, sum)
}

/// `out += sum_j p_j * v_j` over `keys` in order, each output element one chain of
/// multiply-adds from its value in `out` (so a mixture split into consecutive calls is the same
/// bits as one call).
fn mix(p: &[f32], v: &[f32], base: usize, keys: &[usize], hd: usize, out: &mut [f32]) {
    assert!(
        keys.iter().all(|&j| base + (j + 1) * hd <= v.len()),
        "value index in range"
    );
    assert!(out.len() == hd && p.len() == keys.len());
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(8) && avx2::available() {
        // SAFETY: AVX2 + FMA detected; every value row is in range (checked above).
        unsafe { avx2::mix(p, v, base, keys, hd, out) };
        return;
    }
    for (&j, &e) in keys.iter().zip(p) {
        let vr = &v[base + j * hd..base + (j + 1) * hd];
        for (o, &x) in out.iter_mut().zip(vr) {
            *o += e * x;
        }
    }
}

/// [`scores`] for every query of `qs` over the same `keys`, appended to `ps` (one list per
/// query): the same bits as one [`scores`] call per query, with each key row loaded once for
/// two queries.
fn scores_shared(
    qs: &[&[f32]],
    k: &[f32],
    base: usize,
    keys: &[usize],
    hd: usize,
    scale: f32,
    ps: &mut [Vec<f32>],
) {
    assert!(
        keys.iter().all(|&j| base + (j + 1) * hd <= k.len()),
        "key index in range"
    );
    assert!(qs.len() == ps.len() && qs.iter().all(|q| q.len() == hd));
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(8) && avx2::available() {
        let pairs = qs.len() / 2 * 2;
        let (two, rest) = ps.split_at_mut(pairs);
        for (q, p) in qs[..pairs].chunks_exact(2).zip(two.chunks_exact_mut(2)) {
            let [pa, pb] = p else { unreachable!() };
            // SAFETY: AVX2 + FMA detected; every key row is in range and both queries are
            // `hd` long (asserted above).
            unsafe { avx2::scores_pair([q[0], q[1]], k, base, keys, hd, scale, [pa, pb]) };
        }
        for (q, p) in qs[pairs..].iter().zip(rest) {
            scores(q, k, base, keys, hd, scale, p);
        }
        return;
    }
    for (q, p) in qs.iter().zip(ps) {
        scores(q, k, base, keys, hd, scale, p);
    }
}

/// [`mix`] for every query over the same `keys`, query `n`'s weights `ps[n]` into
/// `out[n * hd..][..hd]`: the same bits as one [`mix`] call per query, with each value row
/// loaded once for two queries.
fn mix_shared(ps: &[&[f32]], v: &[f32], base: usize, keys: &[usize], hd: usize, out: &mut [f32]) {
    assert!(
        keys.iter().all(|&j| base + (j + 1) * hd <= v.len()),
        "value index in range"
    );
    assert!(out.len() == ps.len() * hd && ps.iter().all(|p| p.len() == keys.len()));
    #[cfg(target_arch = "x86_64")]
    if hd.is_multiple_of(8) && avx2::available() {
        let pairs = ps.len() / 2 * 2;
        let (two, rest) = out.split_at_mut(pairs * hd);
        for (p, o) in ps[..pairs]
            .chunks_exact(2)
            .zip(two.chunks_exact_mut(2 * hd))
        {
            let (oa, ob) = o.split_at_mut(hd);
            // SAFETY: AVX2 + FMA detected; every value row is in range and the weights and
            // outputs have the right lengths (asserted above).
            unsafe { avx2::mix_pair([p[0], p[1]], v, base, keys, hd, [oa, ob]) };
        }
        for (p, o) in ps[pairs..].iter().zip(rest.chunks_exact_mut(hd)) {
            mix(p, v, base, keys, hd, o);
        }
        return;
    }
    for (p, o) in ps.iter().zip(out.chunks_exact_mut(hd)) {
        mix(p, v, base, keys, hd, o);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// AVX2 and F16C (every AVX2 CPU made has both).
    pub(super) fn f16c() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")
    }

    use crate::model::host::avx2::hsum;

    /// The sums of the eight lanes of each of `k[0..8]`, as one vector, each in the order
    /// `((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))` (a key's sum involves only its own
    /// lanes, so it does not depend on the other seven).
    #[inline(always)]
    unsafe fn hsum8x8(k: &[__m256; 8]) -> __m256 {
        // SAFETY (callers): AVX enabled.
        unsafe {
            let h0 = _mm256_hadd_ps(k[0], k[1]);
            let h1 = _mm256_hadd_ps(k[2], k[3]);
            let h2 = _mm256_hadd_ps(k[4], k[5]);
            let h3 = _mm256_hadd_ps(k[6], k[7]);
            let g0 = _mm256_hadd_ps(h0, h1);
            let g1 = _mm256_hadd_ps(h2, h3);
            _mm256_add_ps(
                _mm256_permute2f128_ps(g0, g1, 0x20),
                _mm256_permute2f128_ps(g0, g1, 0x31),
            )
        }
    }

    /// Rows `keys` of `hd` values (a multiple of 8) from `base` in `src`, widened to f32 into
    /// `out` one after another (`vcvtph2ps`: exact, as every widening of f16 is).
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn widen_rows(
        src: &[half::f16],
        base: usize,
        keys: &[usize],
        hd: usize,
        out: &mut [f32],
    ) {
        for (&j, o) in keys.iter().zip(out.chunks_exact_mut(hd)) {
            let row = &src[base + j * hd..base + (j + 1) * hd];
            for (s8, o8) in row.chunks_exact(8).zip(o.chunks_exact_mut(8)) {
                // SAFETY: 8 f16 (16 bytes) readable at `s8`, 8 f32 writable at `o8`.
                unsafe {
                    let h = _mm_loadu_si128(s8.as_ptr().cast());
                    _mm256_storeu_ps(o8.as_mut_ptr(), _mm256_cvtph_ps(h));
                }
            }
        }
    }

    /// The rows of the keys `g` (at most `N`; a shorter group padded with copies of its first
    /// key) in `k` from `base`, `hd` values each.
    ///
    /// # Safety
    /// `g` is not empty and `base + (j + 1) * hd <= k.len()` for every key `j` of it.
    #[inline(always)]
    unsafe fn key_rows<const N: usize>(
        k: &[f32],
        base: usize,
        g: &[usize],
        hd: usize,
    ) -> [*const f32; N] {
        // SAFETY (callers): every row is in range.
        unsafe {
            let kp = k.as_ptr().add(base);
            std::array::from_fn(|i| kp.add(g[if i < g.len() { i } else { 0 }] * hd))
        }
    }

    /// See `super::scores`; `hd % 8 == 0`, rows in range. Eight keys at a time, each with its
    /// own accumulator (a multiply, then FMAs in order) and [`hsum8x8`]'s order; the last
    /// group is padded with copies of its first key and the extra scores dropped. So a key's
    /// score is the same bits in any group, and eight chains hide the FMA latency.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores(
        q: &[f32],
        k: &[f32],
        base: usize,
        keys: &[usize],
        hd: usize,
        scale: f32,
        out: &mut Vec<f32>,
    ) {
        let qp = q.as_ptr();
        let sv = _mm256_set1_ps(scale);
        for g in keys.chunks(8) {
            // SAFETY: the caller checked `base + (j + 1) * hd <= k.len()` for every key and
            // `q.len() == hd`; padding repeats a key of the group.
            unsafe {
                let kr = key_rows::<8>(k, base, g, hd);
                let q0 = _mm256_loadu_ps(qp);
                let mut acc = [_mm256_setzero_ps(); 8];
                for i in 0..8 {
                    acc[i] = _mm256_mul_ps(q0, _mm256_loadu_ps(kr[i]));
                }
                let mut c = 8;
                while c < hd {
                    let qc = _mm256_loadu_ps(qp.add(c));
                    for i in 0..8 {
                        acc[i] = _mm256_fmadd_ps(qc, _mm256_loadu_ps(kr[i].add(c)), acc[i]);
                    }
                    c += 8;
                }
                let mut s = [0f32; 8];
                _mm256_storeu_ps(s.as_mut_ptr(), _mm256_mul_ps(hsum8x8(&acc), sv));
                out.extend_from_slice(&s[..g.len()]);
            }
        }
    }

    /// [`scores`] for two queries at once: four keys at a time (the last four padded with
    /// copies of the group's first key), each (query, key) pair with its own accumulator in
    /// exactly `scores`' order (a multiply, FMAs by chunk, [`hsum8x8`], the scale), so the
    /// same bits; each key chunk is loaded once for both queries.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn scores_pair(
        q: [&[f32]; 2],
        k: &[f32],
        base: usize,
        keys: &[usize],
        hd: usize,
        scale: f32,
        out: [&mut Vec<f32>; 2],
    ) {
        let [oa, ob] = out;
        let (qa, qb) = (q[0].as_ptr(), q[1].as_ptr());
        let sv = _mm256_set1_ps(scale);
        for g in keys.chunks(4) {
            // SAFETY: the caller checked every key row and both query lengths; padding repeats
            // a key of the group.
            unsafe {
                let kr = key_rows::<4>(k, base, g, hd);
                let (a0, b0) = (_mm256_loadu_ps(qa), _mm256_loadu_ps(qb));
                let mut acc = [_mm256_setzero_ps(); 8];
                for i in 0..4 {
                    let kv = _mm256_loadu_ps(kr[i]);
                    acc[i] = _mm256_mul_ps(a0, kv);
                    acc[4 + i] = _mm256_mul_ps(b0, kv);
                }
                let mut c = 8;
                while c < hd {
                    let (ac, bc) = (_mm256_loadu_ps(qa.add(c)), _mm256_loadu_ps(qb.add(c)));
                    for i in 0..4 {
                        let kv = _mm256_loadu_ps(kr[i].add(c));
                        acc[i] = _mm256_fmadd_ps(ac, kv, acc[i]);
                        acc[4 + i] = _mm256_fmadd_ps(bc, kv, acc[4 + i]);
                    }
                    c += 8;
                }
                let mut s = [0f32; 8];
                _mm256_storeu_ps(s.as_mut_ptr(), _mm256_mul_ps(hsum8x8(&acc), sv));
                oa.extend_from_slice(&s[..g.len()]);
                ob.extend_from_slice(&s[4..4 + g.len()]);
            }
        }
    }

    /// [`mix`] for two queries at once, 32 output values of each at a time: each output
    /// element is `mix`'s chain (from its value in `out`, one FMA per key in order), so the
    /// same bits; each value chunk is loaded once for both queries.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mix_pair(
        p: [&[f32]; 2],
        v: &[f32],
        base: usize,
        keys: &[usize],
        hd: usize,
        out: [&mut [f32]; 2],
    ) {
        let [oa, ob] = out;
        let mut c0 = 0;
        while c0 < hd {
            // SAFETY: as the caller checked; `c0 + 8 * W <= hd`.
            unsafe {
                if hd - c0 >= 32 {
                    pair_block::<4>(p, v, base, keys, hd, c0, [oa, ob]);
                    c0 += 32;
                } else {
                    pair_block::<1>(p, v, base, keys, hd, c0, [oa, ob]);
                    c0 += 8;
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn pair_block<const W: usize>(
        p: [&[f32]; 2],
        v: &[f32],
        base: usize,
        keys: &[usize],
        hd: usize,
        c0: usize,
        out: [&mut [f32]; 2],
    ) {
        let [oa, ob] = out;
        // SAFETY: value rows in range (the caller checked), `c0 + 8 * W <= hd` and both
        // outputs are `hd` long.
        unsafe {
            let mut a = [_mm256_setzero_ps(); W];
            let mut b = [_mm256_setzero_ps(); W];
            for l in 0..W {
                a[l] = _mm256_loadu_ps(oa.as_ptr().add(c0 + 8 * l));
                b[l] = _mm256_loadu_ps(ob.as_ptr().add(c0 + 8 * l));
            }
            for ((&j, &ea), &eb) in keys.iter().zip(p[0]).zip(p[1]) {
                let (ea, eb) = (_mm256_set1_ps(ea), _mm256_set1_ps(eb));
                let vr = v.as_ptr().add(base + j * hd + c0);
                for l in 0..W {
                    let x = _mm256_loadu_ps(vr.add(8 * l));
                    a[l] = _mm256_fmadd_ps(ea, x, a[l]);
                    b[l] = _mm256_fmadd_ps(eb, x, b[l]);
                }
            }
            for l in 0..W {
                _mm256_storeu_ps(oa.as_mut_ptr().add(c0 + 8 * l), a[l]);
                _mm256_storeu_ps(ob.as_mut_ptr().add(c0 + 8 * l), b[l]);
            }
        }
    }

    /// `exp(x)` within 2 ulp for `-87.3 <= x <= 88`: `x = n ln 2 + r`, `|r| <= ln 2 / 2`,
    /// Cephes' degree-7 polynomial for `e^r`, times `2^n`. Inputs are clamped to that range:
    /// below it (where `e^x` leaves the normal range) the result is `e^-87.3`, which softmax
    /// weights never notice beside the largest one (1), above it `e^88`.
    #[inline(always)]
    pub(crate) unsafe fn exp8(x: __m256) -> __m256 {
        // SAFETY (callers): AVX2 + FMA enabled.
        unsafe {
            let x = _mm256_min_ps(
                _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
                _mm256_set1_ps(88.0),
            );
            let n = _mm256_round_ps(
                _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            );
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
            let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
            let mut y = _mm256_set1_ps(1.987_569_1e-4);
            for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
                y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
            }
            let y = _mm256_fmadd_ps(
                y,
                _mm256_mul_ps(r, r),
                _mm256_add_ps(r, _mm256_set1_ps(1.0)),
            );
            let pow2 = _mm256_slli_epi32(_mm256_cvtps_epi32(n), 23);
            _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(y), pow2))
        }
    }

    /// See `super::softmax_numerators`: the maximum (exact in any order), `exp8` eight values at
    /// a time (the tail padded), the sum in eight lanes then the horizontal sum.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_numerators(p: &mut [f32]) -> (f32, f32) {
        // SAFETY: every access is within `p` (chunks of 8, the tail through a copy).
        unsafe {
            let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
            let mut chunks = p.chunks_exact(8);
            for c in &mut chunks {
                mv = _mm256_max_ps(mv, _mm256_loadu_ps(c.as_ptr()));
            }
            let mut max = chunks
                .remainder()
                .iter()
                .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), mv);
            max = lanes.iter().fold(max, |a, &b| a.max(b));
            let m = _mm256_set1_ps(max);
            let mut sum = _mm256_setzero_ps();
            let mut chunks = p.chunks_exact_mut(8);
            for c in &mut chunks {
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
                _mm256_storeu_ps(c.as_mut_ptr(), e);
                sum = _mm256_add_ps(sum, e);
            }
            let tail = chunks.into_remainder();
            if !tail.is_empty() {
                let mut t = [max; 8];
                t[..tail.len()].copy_from_slice(tail);
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(t.as_ptr()), m));
                _mm256_storeu_ps(t.as_mut_ptr(), e);
                let n = tail.len();
                tail.copy_from_slice(&t[..n]);
                t[n..].fill(0.0);
                sum = _mm256_add_ps(sum, _mm256_loadu_ps(t.as_ptr()));
            }
            (max, hsum(sum))
        }
    }

    /// See `super::mix`; `hd % 8 == 0`, rows in range. Output lanes stay in registers, 64
    /// values at a time, while the keys stream past.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mix(
        p: &[f32],
        v: &[f32],
        base: usize,
        keys: &[usize],
        hd: usize,
        out: &mut [f32],
    ) {
        let mut c0 = 0;
        while c0 < hd {
            // SAFETY: as the caller checked; `c0 + 8 * W <= hd`.
            unsafe {
                if hd - c0 >= 64 {
                    block::<8>(p, v, base, keys, hd, c0, out);
                    c0 += 64;
                } else {
                    block::<1>(p, v, base, keys, hd, c0, out);
                    c0 += 8;
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const W: usize>(
        p: &[f32],
        v: &[f32],
        base: usize,
        keys: &[usize],
        hd: usize,
        c0: usize,
        out: &mut [f32],
    ) {
        let mut acc = [_mm256_setzero_ps(); W];
        for (l, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c0 + 8 * W <= hd == out.len()`.
            *a = unsafe { _mm256_loadu_ps(out.as_ptr().add(c0 + 8 * l)) };
        }
        for (&j, &e) in keys.iter().zip(p) {
            let ev = _mm256_set1_ps(e);
            // SAFETY: value row `j` is in range and `c0 + 8 * W <= hd`.
            unsafe {
                let vr = v.as_ptr().add(base + j * hd + c0);
                for (l, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(ev, _mm256_loadu_ps(vr.add(8 * l)), *a);
                }
            }
        }
        for (l, a) in acc.iter().enumerate() {
            // SAFETY: `c0 + 8 * W <= hd == out.len()`.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(c0 + 8 * l), *a) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_numerators_are_exp_of_the_distance_to_the_max() {
        // Independent: f64 exp. Lengths with and without a tail, scores far below the max.
        let mut rng = crate::rng::Rng::new(4);
        for len in [1usize, 7, 8, 13, 64, 700] {
            let p0: Vec<f32> = (0..len)
                .map(|_| ((rng.next_u64() % 20001) as f32 / 10000.0 - 1.0) * 60.0)
                .collect();
            let mut p = p0.clone();
            let (got_max, sum) = softmax_numerators(&mut p);
            let max = p0.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(got_max, max, "the maximum, {len}");
            let mut exact_sum = 0f64;
            for (got, &x) in p.iter().zip(&p0) {
                let want = f64::from(x - max).exp(); // the f32 difference, as softmax takes it
                exact_sum += want;
                let err = (f64::from(*got) - want).abs();
                assert!(
                    err <= 3e-7 * want || err < 1e-37,
                    "exp({x} - {max}): {got} vs {want}"
                );
            }
            assert!(
                (f64::from(sum) - exact_sum).abs() <= 1e-6 * exact_sum,
                "sum, {len}"
            );
        }
    }

    /// A cache of `len` positions of random keys and values, as `dtype` holds them, and those
    /// values as attention reads them (f16: rounded), `[kv_heads, len, hd]`.
    fn random_cache(
        kv_heads: usize,
        len: usize,
        hd: usize,
        dtype: crate::model::KvDtype,
        seed: u64,
    ) -> (HostKv, Vec<f32>, Vec<f32>) {
        let mut rng = crate::rng::Rng::new(seed);
        let mut val = || (rng.next_u64() % 4001) as f32 / 1000.0 - 2.0;
        let n = kv_heads * len * hd;
        let (k, v): (Vec<f32>, Vec<f32>) = (0..n).map(|_| (val(), val())).unzip();
        let half = dtype == crate::model::KvDtype::F16;
        let read = |x: &[f32]| -> Vec<f32> {
            x.iter()
                .map(|&e| {
                    if half {
                        half::f16::from_f32(e).to_f32()
                    } else {
                        e
                    }
                })
                .collect()
        };
        let (rk, rv) = (read(&k), read(&v));
        let mut kv = HostKv {
            k: vec![KvRows::zeros(n, half)],
            v: vec![KvRows::zeros(n, half)],
            kv_heads,
            head_dim: hd,
        };
        kv.k[0].put(0, &k);
        kv.v[0].put(0, &v);
        (kv, rk, rv)
    }

    /// Attention over a cache longer than several [`KEY_SEGMENT`]s, in segments combined
    /// afterwards: each query's output is the softmax mixture of the values over its own keys
    /// (independent: f64, from the values as stored), for a token tree of three tokens (two
    /// siblings) after 700 cached positions; and a token's output is the same bits when it is
    /// attended alone, at its own position, with the same keys. Both cache dtypes.
    #[test]
    fn segmented_attention_is_the_softmax_mixture_and_the_same_bits_alone() {
        use crate::model::KvDtype;
        let (heads, kv_heads, hd, past) = (6, 2, 64, 700);
        let c = HostConsts::attention_only(heads, kv_heads, hd);
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let cap = past + 3;
            let (kv, rk, rv) = random_cache(kv_heads, cap, hd, dtype, 21);
            let mut rng = crate::rng::Rng::new(22);
            let q: Vec<f32> = (0..3 * heads * hd)
                .map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            // Token 0 at `past`; tokens 1 and 2 its two children.
            let s = past + 3;
            let mut mask = vec![false; 3 * s];
            mask[s + past + 2] = true; // token 1 does not see token 2
            mask[2 * s + past + 1] = true; // token 2 does not see token 1
            mask[past + 1] = true;
            mask[past + 2] = true;
            let positions = [past, past + 1, past + 1];
            let tree = Attn {
                c: &c,
                mask: Some(&mask),
                positions: &positions,
                window: None,
                batch: 1,
                t: 3,
                past,
                capacity: cap,
            };
            let out = tree.run(&q, (&kv.k[0], &kv.v[0]), &kv, &tree.key_lists());
            let seen = [past + 1, past + 2, past + 2];
            for i in 0..3 {
                let keys: Vec<usize> = (0..s).filter(|&j| !mask[i * s + j]).collect();
                assert_eq!(keys.len(), seen[i]);
                for head in 0..heads {
                    let g = head / (heads / kv_heads);
                    let qv = &q[(i * heads + head) * hd..][..hd];
                    let sc: Vec<f64> = keys
                        .iter()
                        .map(|&j| {
                            let kr = &rk[(g * cap + j) * hd..][..hd];
                            qv.iter()
                                .zip(kr)
                                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
                    for e in 0..hd {
                        let want: f64 = keys
                            .iter()
                            .zip(&sc)
                            .map(|(&j, x)| {
                                (x - m).exp() / z * f64::from(rv[(g * cap + j) * hd + e])
                            })
                            .sum();
                        let got = f64::from(out[(i * heads + head) * hd + e]);
                        assert!(
                            (got - want).abs() < 2e-5,
                            "{dtype:?} token {i} head {head}: {got} vs {want}"
                        );
                    }
                }
            }
            // Token 2 alone at position past + 1: its keys are 0..=past and itself, so its key
            // and value go where token 1's were.
            let (mut alone_kv, _, _) = random_cache(kv_heads, cap, hd, dtype, 21);
            for g in 0..kv_heads {
                let (from, to) = ((g * cap + past + 2) * hd, (g * cap + past + 1) * hd);
                let (mut kr, mut vr) = (vec![0f32; hd], vec![0f32; hd]);
                kv.k[0].get(from, &mut kr);
                kv.v[0].get(from, &mut vr);
                alone_kv.k[0].put(to, &kr);
                alone_kv.v[0].put(to, &vr);
            }
            let alone = Attn {
                c: &c,
                mask: None,
                positions: &[past + 1],
                window: None,
                batch: 1,
                t: 1,
                past: past + 1,
                capacity: cap,
            };
            let one = alone.run(
                &q[2 * heads * hd..],
                (&alone_kv.k[0], &alone_kv.v[0]),
                &alone_kv,
                &alone.key_lists(),
            );
            for (e, (a, b)) in one.iter().zip(&out[2 * heads * hd..]).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{dtype:?} value {e}");
            }
        }
    }

    #[test]
    fn a_keys_score_does_not_depend_on_its_neighbours() {
        let hd = 64;
        let mut rng = crate::rng::Rng::new(9);
        let mut val = || (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0;
        let q: Vec<f32> = (0..hd).map(|_| val()).collect();
        let k: Vec<f32> = (0..12 * hd).map(|_| val()).collect();
        let keys: Vec<usize> = vec![3, 0, 7, 10, 1, 2, 9, 4, 5];
        let mut all = Vec::new();
        scores(&q, &k, hd, &keys[..], hd, 0.125, &mut all);
        let mut one = Vec::new();
        for (i, &j) in keys.iter().enumerate() {
            one.clear();
            scores(&q, &k, hd, &[j], hd, 0.125, &mut one);
            assert_eq!(all[i].to_bits(), one[0].to_bits(), "key {j}");
            // And it is the dot product (independent: f64).
            let exact: f64 = (0..hd)
                .map(|c| f64::from(q[c]) * f64::from(k[hd + j * hd + c]))
                .sum::<f64>()
                * 0.125;
            assert!((f64::from(all[i]) - exact).abs() < 1e-5, "key {j}");
        }
    }

    #[test]
    fn a_mixture_split_at_any_key_is_the_same_bits_as_one_call() {
        let hd = 72; // one 64-wide block and one 8-wide one
        let mut rng = crate::rng::Rng::new(11);
        let mut val = || (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0;
        let v: Vec<f32> = (0..40 * hd).map(|_| val()).collect();
        let keys: Vec<usize> = (0..37).map(|i| (i * 7) % 40).collect();
        let p: Vec<f32> = keys.iter().map(|_| val().abs()).collect();
        let mut whole = vec![0f32; hd];
        mix(&p, &v, 0, &keys, hd, &mut whole);
        for cut in [0, 1, 8, 13, 36, 37] {
            let mut split = vec![0f32; hd];
            mix(&p[..cut], &v, 0, &keys[..cut], hd, &mut split);
            mix(&p[cut..], &v, 0, &keys[cut..], hd, &mut split);
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&whole), bits(&split), "cut at {cut}");
        }
        // And it is the weighted sum (independent: f64).
        for c in 0..hd {
            let exact: f64 = keys
                .iter()
                .zip(&p)
                .map(|(&j, &e)| f64::from(e) * f64::from(v[j * hd + c]))
                .sum();
            assert!((f64::from(whole[c]) - exact).abs() < 1e-4, "element {c}");
        }
    }

    #[test]
    fn shared_scores_and_mixtures_are_the_same_bits_as_query_by_query() {
        let hd = 72;
        let mut rng = crate::rng::Rng::new(13);
        let mut val = || (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0;
        let k: Vec<f32> = (0..30 * hd).map(|_| val()).collect();
        let v: Vec<f32> = (0..30 * hd).map(|_| val()).collect();
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for n in 1..=5 {
            for len in [0, 1, 3, 4, 7, 8, 9, 29] {
                let keys: Vec<usize> = (0..len).map(|i| (i * 11) % 29).collect();
                let qs: Vec<Vec<f32>> = (0..n).map(|_| (0..hd).map(|_| val()).collect()).collect();
                let qr: Vec<&[f32]> = qs.iter().map(Vec::as_slice).collect();
                let mut shared = vec![vec![0.5f32]; n]; // appended to, not replaced
                scores_shared(&qr, &k, hd, &keys, hd, 0.125, &mut shared);
                let ps: Vec<Vec<f32>> = (0..n)
                    .map(|_| keys.iter().map(|_| val()).collect())
                    .collect();
                let pr: Vec<&[f32]> = ps.iter().map(Vec::as_slice).collect();
                let mut out: Vec<f32> = (0..n * hd).map(|_| val()).collect();
                let start = out.clone();
                mix_shared(&pr, &v, 0, &keys, hd, &mut out);
                for a in 0..n {
                    let mut one = vec![0.5f32];
                    scores(&qs[a], &k, hd, &keys, hd, 0.125, &mut one);
                    assert_eq!(bits(&shared[a]), bits(&one), "{n} queries, {len} keys");
                    let mut o = start[a * hd..(a + 1) * hd].to_vec();
                    mix(&ps[a], &v, 0, &keys, hd, &mut o);
                    assert_eq!(
                        bits(&out[a * hd..(a + 1) * hd]),
                        bits(&o),
                        "{n} queries, {len} keys"
                    );
                }
            }
        }
    }
}
