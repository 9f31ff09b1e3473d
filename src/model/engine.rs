//! The host engine: a whole llama forward pass in host memory, for CPU backends.
//!
//! With host kernels on ([`Llama::enable_host_kernels`](crate::model::Llama::enable_host_kernels))
//! and a host KV cache ([`KvCache::new_host`](crate::model::KvCache::new_host), what
//! `Llama::new_cache` then returns), a forward pass never leaves host memory between the
//! embedding lookup and the final norm: RMSNorm, the projections (the host kernels), RoPE,
//! attention over the cache, softmax and SwiGLU run here on `f32` slices. On a CPU backend a
//! decoding step is a few dozen small operations per layer; as tensor operations each one costs
//! a dispatch, an allocation and often a strided copy, which at 1 to 64 tokens is most of the
//! step. Long causal inputs (prefills) are cut into chunks of `max_rows` tokens so the
//! activations stay in cache.
//!
//! **Every row is computed independently of the other rows of the call.** Attention for a query
//! visits exactly its unmasked keys, in key order, with a fixed summation order, so a token's
//! hidden state depends only on the keys it may see, never on how many tokens share the forward
//! pass or what is masked around them. A token verified inside a tree therefore gets bit for bit
//! the logits it gets when decoded alone, which makes tree verification exactly lossless
//! (there is no float near-tie that could flip an argmax between the two).

use crate::model::cache::HostKv;
use crate::model::host::{HostConsts, HostWeights, matmul_many};
use crate::model::hot_pool;
use std::sync::Mutex;

/// One forward call as host data.
pub(crate) struct Step<'a> {
    /// Embeddings `[batch * t, hidden]`.
    pub(crate) x: Vec<f32>,
    /// Position ids `[batch * t]`.
    pub(crate) positions: &'a [usize],
    /// `[batch, t, past + t]`, true = masked; `None` = causal.
    pub(crate) mask: Option<&'a [bool]>,
    pub(crate) batch: usize,
    pub(crate) t: usize,
}

/// Runs `step` through every layer, appending its keys and values to `kv` at `past..past + t`,
/// and returns the final-normed hidden states `[batch * t, hidden]`.
pub(crate) fn forward(
    w: &HostWeights,
    step: Step<'_>,
    kv: &mut HostKv,
    past: usize,
    capacity: usize,
) -> Vec<f32> {
    let Step {
        mut x,
        positions,
        mask,
        batch,
        t,
    } = step;
    let c = &w.engine;
    let n = batch * t;
    let (d, hd) = (c.hidden, c.head_dim);
    assert!(
        past + t <= capacity,
        "KV cache overflow: {} > capacity {capacity}",
        past + t
    );
    assert!(
        positions.iter().all(|&p| p < c.max_positions()),
        "position id past the model's {} positions",
        c.max_positions()
    );
    let attn = Attn {
        c,
        mask,
        batch,
        t,
        past,
        capacity,
    };
    for (l, blk) in w.blocks.iter().enumerate() {
        let h = rms_norm(&x, &c.attn_norm[l], c.eps, d);
        let [mut q, mut k, v]: [Vec<f32>; 3] = matmul_many(&[&blk.q, &blk.k, &blk.v], &h, n)
            .try_into()
            .expect("three products");
        rope(&mut q, positions, c.heads, hd, &c.cos, &c.sin);
        rope(&mut k, positions, c.kv_heads, hd, &c.cos, &c.sin);
        for r in 0..batch {
            for i in 0..t {
                let row = r * t + i;
                for g in 0..c.kv_heads {
                    let at = kv.at(capacity, r, g, past + i);
                    let src = (row * c.kv_heads + g) * hd;
                    kv.k[l][at..at + hd].copy_from_slice(&k[src..src + hd]);
                    kv.v[l][at..at + hd].copy_from_slice(&v[src..src + hd]);
                }
            }
        }
        let a = attn.run(&q, &kv.k[l], &kv.v[l], kv);
        let o = blk.o.matmul(&a, n);
        add(&mut x, &o);
        let h = rms_norm(&x, &c.mlp_norm[l], c.eps, d);
        let [mut g, u]: [Vec<f32>; 2] = matmul_many(&[&blk.gate, &blk.up], &h, n)
            .try_into()
            .expect("two products");
        for (g, u) in g.iter_mut().zip(&u) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        let down = blk.down.matmul(&g, n);
        add(&mut x, &down);
    }
    rms_norm(&x, &c.final_norm, c.eps, d)
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `x / sqrt(mean(x^2) + eps) * gamma` per row of `d` values.
fn rms_norm(x: &[f32], gamma: &[f32], eps: f64, d: usize) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let ss: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let inv = (1.0 / (ss / d as f64 + eps).sqrt()) as f32;
        for ((y, &x), &g) in yr.iter_mut().zip(xr).zip(gamma) {
            *y = x * inv * g;
        }
    }
    y
}

/// Rotate-half RoPE in place on `x` `[n, heads * hd]`, row `i` at `positions[i]`.
fn rope(x: &mut [f32], positions: &[usize], heads: usize, hd: usize, cos: &[f32], sin: &[f32]) {
    let half = hd / 2;
    for (row, &p) in x.chunks_exact_mut(heads * hd).zip(positions) {
        let (c, s) = (&cos[p * hd..(p + 1) * hd], &sin[p * hd..(p + 1) * hd]);
        for v in row.chunks_exact_mut(hd) {
            for i in 0..half {
                let (a, b) = (v[i], v[i + half]);
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    }
}

/// Attention of one call's queries over the cache.
struct Attn<'a> {
    c: &'a HostConsts,
    mask: Option<&'a [bool]>,
    batch: usize,
    t: usize,
    past: usize,
    capacity: usize,
}

impl Attn<'_> {
    /// `[batch * t, heads * hd]` attention outputs for queries `q` (same layout).
    fn run(&self, q: &[f32], k: &[f32], v: &[f32], kv: &HostKv) -> Vec<f32> {
        let c = self.c;
        let (h, hd, t) = (c.heads, c.head_dim, self.t);
        let rep = h / c.kv_heads;
        let s = self.past + t;
        let scale = (1.0 / (hd as f64).sqrt()) as f32;
        // One task per (row, head): its `t` query rows, `[t, hd]`.
        let outs: Vec<Mutex<Vec<f32>>> = (0..self.batch * h).map(|_| Mutex::default()).collect();
        hot_pool::for_each(outs.len(), &|task| {
            *outs[task].lock().unwrap_or_else(|e| e.into_inner()) = {
                let (r, head) = (task / h, task % h);
                let g = head / rep;
                let base = kv.at(self.capacity, r, g, 0);
                let mut out = vec![0f32; t * hd];
                let mut keys: Vec<usize> = Vec::with_capacity(s);
                let mut p: Vec<f32> = Vec::with_capacity(s);
                for i in 0..t {
                    keys.clear();
                    match self.mask {
                        Some(m) => {
                            let mr = &m[(r * t + i) * s..(r * t + i + 1) * s];
                            keys.extend((0..s).filter(|&j| !mr[j]));
                        }
                        None => keys.extend(0..=self.past + i),
                    }
                    if keys.is_empty() {
                        continue; // a padding query that may see nothing: zeros
                    }
                    let qv = &q[((r * t + i) * h + head) * hd..][..hd];
                    scores(qv, k, base, &keys, hd, scale, &mut p);
                    let max = p.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for e in p.iter_mut() {
                        *e = (*e - max).exp();
                        sum += *e;
                    }
                    let o = &mut out[i * hd..(i + 1) * hd];
                    mix(&p, v, base, &keys, hd, o);
                    let inv = 1.0 / sum;
                    o.iter_mut().for_each(|x| *x *= inv);
                }
                out
            };
        });
        let mut a = vec![0f32; self.batch * t * h * hd];
        for (task, out) in outs.into_iter().enumerate() {
            let out = out.into_inner().unwrap_or_else(|e| e.into_inner());
            let (r, head) = (task / h, task % h);
            for i in 0..t {
                let dst = ((r * t + i) * h + head) * hd;
                a[dst..dst + hd].copy_from_slice(&out[i * hd..(i + 1) * hd]);
            }
        }
        a
    }
}

/// `out = [q . k_j * scale for j in keys]`, key `j` at `k[base + j * hd..][..hd]`.
fn scores(
    q: &[f32],
    k: &[f32],
    base: usize,
    keys: &[usize],
    hd: usize,
    scale: f32,
    out: &mut Vec<f32>,
) {
    out.clear();
    assert!(
        keys.iter().all(|&j| base + (j + 1) * hd <= k.len()),
        "key index in range"
    );
    #[cfg(target_arch = "x86_64")]
    if hd % 8 == 0 && avx2::available() {
        // SAFETY: AVX2 + FMA detected; every key row is in range (checked above), `q` is `hd` long.
        unsafe { avx2::scores(q, k, base, keys, hd, scale, out) };
        return;
    }
    for &j in keys {
        let kr = &k[base + j * hd..base + (j + 1) * hd];
        out.push(q.iter().zip(kr).fold(0f32, |a, (x, y)| a + x * y) * scale);
    }
}

/// `out = sum_j p_j * v_j` over `keys` in order (fixed summation order per output element).
fn mix(p: &[f32], v: &[f32], base: usize, keys: &[usize], hd: usize, out: &mut [f32]) {
    assert!(
        keys.iter().all(|&j| base + (j + 1) * hd <= v.len()),
        "value index in range"
    );
    assert!(out.len() == hd && p.len() == keys.len());
    #[cfg(target_arch = "x86_64")]
    if hd % 8 == 0 && avx2::available() {
        // SAFETY: AVX2 + FMA detected; every value row is in range (checked above).
        unsafe { avx2::mix(p, v, base, keys, hd, out) };
        return;
    }
    out.iter_mut().for_each(|o| *o = 0.0);
    for (&j, &e) in keys.iter().zip(p) {
        let vr = &v[base + j * hd..base + (j + 1) * hd];
        for (o, &x) in out.iter_mut().zip(vr) {
            *o += e * x;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    /// See `super::scores`; `hd % 8 == 0`, rows in range.
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
        for &j in keys {
            // SAFETY: the caller checked `base + (j + 1) * hd <= k.len()` and `q.len() == hd`.
            unsafe {
                let kr = k.as_ptr().add(base + j * hd);
                let mut acc = _mm256_mul_ps(_mm256_loadu_ps(qp), _mm256_loadu_ps(kr));
                let mut c = 8;
                while c < hd {
                    acc = _mm256_fmadd_ps(
                        _mm256_loadu_ps(qp.add(c)),
                        _mm256_loadu_ps(kr.add(c)),
                        acc,
                    );
                    c += 8;
                }
                out.push(hsum(acc) * scale);
            }
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
