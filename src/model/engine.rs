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

use crate::model::attention::Attn;
use crate::model::cache::HostKv;
use crate::model::host::{HostBlock, HostConsts, HostWeights, LayerExtra, matmul_many};
use crate::model::scratch;

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
    let d = c.hidden;
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
    if let Some(scale) = c.embed_scale {
        x.iter_mut().for_each(|v| *v *= scale);
    }
    let rope_rows = RopeRows::new(c, positions);
    let mut shared_lists: Option<Vec<Vec<usize>>> = None;
    for (l, blk) in w.blocks.iter().enumerate() {
        let extra = &c.extra[l];
        let attn = Attn {
            c,
            mask,
            positions,
            window: extra.window,
            batch,
            t,
            past,
            capacity,
        };
        let h = rms_norm(&x, &c.attn_norm[l], c.eps, d);
        let [q, k, v] = qkv(c, blk, extra, &h, &rope_rows);
        scratch::recycle(h);
        store_kv(kv, l, (&k, &v), (batch, t), past, capacity);
        scratch::recycle(k);
        scratch::recycle(v);
        // Without a window every layer's queries see the same keys: listed once a forward.
        let own;
        let lists = match extra.window {
            None => &*shared_lists.get_or_insert_with(|| attn.key_lists()),
            Some(_) => {
                own = attn.key_lists();
                &own
            }
        };
        let a = attn.run(&q, (&kv.k[l], &kv.v[l]), kv, lists);
        scratch::recycle(q);
        let mut o = blk.o.matmul(&a, n);
        scratch::recycle(a);
        add_bias(&mut o, extra.o_bias.as_deref());
        add_normed(&mut x, o, extra.attn_out_norm.as_deref(), c.eps, d);
        let h = rms_norm(&x, &c.mlp_norm[l], c.eps, d);
        let down = mlp(c, blk, &h, n);
        scratch::recycle(h);
        add_normed(&mut x, down, extra.mlp_out_norm.as_deref(), c.eps, d);
    }
    rms_norm(&x, &c.final_norm, c.eps, d)
}

/// Writes layer `l`'s new keys and values (`[batch * t, kv_heads * head_dim]` each) into the
/// cache at positions `past..past + t` of every batch row.
fn store_kv(
    kv: &mut HostKv,
    l: usize,
    (k, v): (&[f32], &[f32]),
    (batch, t): (usize, usize),
    past: usize,
    capacity: usize,
) {
    let (heads, hd) = (kv.kv_heads, kv.head_dim);
    for r in 0..batch {
        for i in 0..t {
            for g in 0..heads {
                let at = kv.at(capacity, r, g, past + i);
                let src = ((r * t + i) * heads + g) * hd;
                kv.k[l].put(at, &k[src..src + hd]);
                kv.v[l].put(at, &v[src..src + hd]);
            }
        }
    }
}

/// A layer's queries, keys and values for the normed input `h` (one row per token, at the
/// positions of `rows`): the products, the family's biases and per-head norms, RoPE (a sliding
/// layer's own base where the model has one).
fn qkv(
    c: &HostConsts,
    blk: &HostBlock,
    extra: &LayerExtra,
    h: &[f32],
    rows: &RopeRows,
) -> [Vec<f32>; 3] {
    let (n, hd) = (rows.global.0.len() / c.head_dim, c.head_dim);
    let [mut q, mut k, mut v]: [Vec<f32>; 3] = matmul_many(&[&blk.q, &blk.k, &blk.v], h, n)
        .try_into()
        .expect("three products");
    add_bias(&mut q, extra.q_bias.as_deref());
    add_bias(&mut k, extra.k_bias.as_deref());
    add_bias(&mut v, extra.v_bias.as_deref());
    if let (Some(qn), Some(kn)) = (&extra.q_norm, &extra.k_norm) {
        q = rms_norm(&q, qn, c.eps, hd);
        k = rms_norm(&k, kn, c.eps, hd);
    }
    let (cos, sin) = match (&rows.local, extra.window) {
        (Some((cos, sin)), Some(_)) => (cos, sin),
        _ => (&rows.global.0, &rows.global.1),
    };
    rope(&mut q, c.heads, hd, cos, sin);
    rope(&mut k, c.kv_heads, hd, cos, sin);
    [q, k, v]
}

/// The gated MLP of `n` normed rows `h`: `down(act(gate h) * up h)`, the activation SiLU or
/// (Gemma) GELU-tanh.
fn mlp(c: &HostConsts, blk: &HostBlock, h: &[f32], n: usize) -> Vec<f32> {
    let [mut g, u]: [Vec<f32>; 2] = matmul_many(&[&blk.gate, &blk.up], h, n)
        .try_into()
        .expect("two products");
    match c.gelu {
        true => geglu(&mut g, &u),
        false => swiglu(&mut g, &u),
    }
    scratch::recycle(u);
    let down = blk.down.matmul(&g, n);
    scratch::recycle(g);
    down
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Adds `y` to `x`, through the RMSNorm of gains `norm` first where there is one (Gemma 2 / 3's
/// norms of a sublayer's output).
fn add_normed(x: &mut [f32], y: Vec<f32>, norm: Option<&[f32]>, eps: f64, d: usize) {
    match norm {
        Some(g) => {
            let normed = rms_norm(&y, g, eps, d);
            add(x, &normed);
            scratch::recycle(normed);
        }
        None => add(x, &y),
    }
    scratch::recycle(y);
}

/// `g = gelu_tanh(g) * u` (Gemma's gate), elementwise: PyTorch's `gelu(approximate="tanh")`,
/// `0.5 g (1 + tanh(sqrt(2 / pi) (g + 0.044715 g^3)))`.
fn geglu(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    let k = (2.0 / std::f64::consts::PI).sqrt() as f32;
    for (a, &b) in g.iter_mut().zip(u) {
        let x = *a;
        *a = 0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh()) * b;
    }
}

/// Adds `bias` (one value per column) to every row of `x`, if there is one.
fn add_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            add(row, b);
        }
    }
}

/// `x / sqrt(mean(x^2) + eps) * gamma` per row of `d` values.
fn rms_norm(x: &[f32], gamma: &[f32], eps: f64, d: usize) -> Vec<f32> {
    // Every value is written below.
    let mut y = scratch::to_overwrite(x.len());
    for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
        let ss = sum_of_squares(xr);
        let inv = (1.0 / (ss / d as f64 + eps).sqrt()) as f32;
        for ((y, &x), &g) in yr.iter_mut().zip(xr).zip(gamma) {
            *y = x * inv * g;
        }
    }
    y
}

/// `sum x_i^2` in `f64`, in eight interleaved partial sums (value `i` into sum `i % 8`) added
/// pairwise at the end: eight independent chains instead of one, which the compiler keeps in
/// vector registers (an RMSNorm of a 4-token SmolLM2 step 2.3x faster, 1.6% of the step). A
/// row's sum depends only on its own values.
fn sum_of_squares(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(v) * f64::from(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f64::from(v) * f64::from(v);
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// The RoPE rows of one forward's positions (`[n, head_dim]` cosines and sines), and of the
/// sliding layers' own base where the model has one.
struct RopeRows {
    global: (Vec<f32>, Vec<f32>),
    local: Option<(Vec<f32>, Vec<f32>)>,
}

impl RopeRows {
    fn new(c: &HostConsts, positions: &[usize]) -> Self {
        Self {
            global: c.rope.rows(positions),
            local: c.local_rope.as_ref().map(|r| r.rows(positions)),
        }
    }
}

/// Rotate-half RoPE in place on `x` `[n, heads * hd]`, row `i` by row `i` of `cos` and `sin`
/// (`[n, hd]`).
fn rope(x: &mut [f32], heads: usize, hd: usize, cos: &[f32], sin: &[f32]) {
    let half = hd / 2;
    let rows = cos.chunks_exact(hd).zip(sin.chunks_exact(hd));
    for (row, (c, s)) in x.chunks_exact_mut(heads * hd).zip(rows) {
        for v in row.chunks_exact_mut(hd) {
            for i in 0..half {
                let (a, b) = (v[i], v[i + half]);
                v[i] = a * c[i] - b * s[i];
                v[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    }
}

/// `g = silu(g) * u = g / (1 + exp(-g)) * u`, elementwise.
fn swiglu(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len());
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: AVX2 + FMA detected; equal lengths (asserted).
        unsafe { avx2::swiglu(g, u) };
        return;
    }
    for (g, u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::model::attention::avx2::exp8;
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }

    /// `v / (1 + exp(-v))` (a function, not a closure: closures would not inherit the
    /// caller's target features).
    #[inline(always)]
    unsafe fn silu8(v: __m256) -> __m256 {
        // SAFETY (callers): AVX2 + FMA enabled.
        unsafe {
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), v));
            _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0), e))
        }
    }

    /// See `super::swiglu`; eight values at a time, the tail one at a time through a copy.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn swiglu(g: &mut [f32], u: &[f32]) {
        // SAFETY: chunks of 8 within both slices; the tail through arrays.
        unsafe {
            let n = g.len() / 8 * 8;
            for i in (0..n).step_by(8) {
                let v = _mm256_loadu_ps(g.as_ptr().add(i));
                let w = _mm256_loadu_ps(u.as_ptr().add(i));
                _mm256_storeu_ps(g.as_mut_ptr().add(i), _mm256_mul_ps(silu8(v), w));
            }
            if n < g.len() {
                let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
                let k = g.len() - n;
                a[..k].copy_from_slice(&g[n..]);
                b[..k].copy_from_slice(&u[n..]);
                let r = _mm256_mul_ps(
                    silu8(_mm256_loadu_ps(a.as_ptr())),
                    _mm256_loadu_ps(b.as_ptr()),
                );
                _mm256_storeu_ps(a.as_mut_ptr(), r);
                g[n..].copy_from_slice(&a[..k]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_is_the_definition_in_f64() {
        // Independent: the definition in f64 with one running sum, rounded once. Widths with
        // and without a tail of the eight partial sums, two rows each.
        let mut rng = crate::rng::Rng::new(7);
        for d in [1usize, 7, 8, 13, 576, 2049] {
            let x: Vec<f32> = (0..2 * d)
                .map(|_| ((rng.next_u64() % 20001) as f32 / 10000.0 - 1.0) * 30.0)
                .collect();
            let gamma: Vec<f32> = (0..d).map(|i| 0.5 + (i % 5) as f32 * 0.25).collect();
            let y = rms_norm(&x, &gamma, 1e-5, d);
            for (xr, yr) in x.chunks_exact(d).zip(y.chunks_exact(d)) {
                let ss: f64 = xr.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
                let inv = 1.0 / (ss / d as f64 + 1e-5).sqrt();
                for ((&v, &g), &got) in xr.iter().zip(&gamma).zip(yr) {
                    let want = f64::from(v) * inv * f64::from(g);
                    let err = (f64::from(got) - want).abs();
                    assert!(err <= 4e-7 * want.abs() + 1e-30, "d {d}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn swiglu_is_silu_times_up() {
        // Independent: f64. Lengths with and without a tail; large magnitudes both ways.
        let mut rng = crate::rng::Rng::new(5);
        for len in [1usize, 9, 16, 1536] {
            let g0: Vec<f32> = (0..len)
                .map(|_| ((rng.next_u64() % 20001) as f32 / 10000.0 - 1.0) * 120.0)
                .collect();
            let u: Vec<f32> = (0..len)
                .map(|_| (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let mut g = g0.clone();
            swiglu(&mut g, &u);
            for i in 0..len {
                let x = f64::from(g0[i]);
                let want = x / (1.0 + (-x).exp()) * f64::from(u[i]);
                let err = (f64::from(g[i]) - want).abs();
                assert!(
                    err <= 1e-6 * want.abs() + 1e-30,
                    "silu({x}) * {}: {} vs {want}",
                    u[i],
                    g[i]
                );
            }
        }
    }
}
