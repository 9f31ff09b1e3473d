//! Host-side matrix-times-few-vectors kernels for CPU backends.
//!
//! A decoding step multiplies every weight matrix by a handful of activation rows (1 for greedy,
//! up to ~100 for a token tree). burn's CPU backends hand that to a general GEMM, which repacks
//! (and, for f16, converts) the whole weight matrix on every call once there are two or more
//! rows: measured on this project's 2-core CPU, a 2-row forward of SmolLM2 cost 2.7x a 1-row
//! one. Here each weight row is read once, converted once, and dotted with every activation row,
//! so the cost of a forward grows slowly with the number of rows, which is what tree decoding
//! needs. Each output element is computed the same way whatever the number of rows, so a token's
//! logits do not depend on what else is in the batch.
//!
//! Weights are kept in `[out, in]` layout in their storage type (f16 or f32), beside the burn
//! tensors (which training and long prefills still use).

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Weight values in storage order.
#[derive(Debug, Clone)]
enum Data {
    F16(Vec<f16>),
    F32(Vec<f32>),
}

/// One weight matrix `[out, in]` in host memory.
#[derive(Debug, Clone)]
pub struct HostMatrix {
    out: usize,
    inp: usize,
    data: Data,
}

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 64;

impl HostMatrix {
    /// From `[out, in]` f32 values.
    pub fn from_f32(out: usize, inp: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), out * inp, "matrix size");
        Self {
            out,
            inp,
            data: Data::F32(data),
        }
    }

    /// From `[out, in]` f16 values.
    pub fn from_f16(out: usize, inp: usize, data: Vec<f16>) -> Self {
        assert_eq!(data.len(), out * inp, "matrix size");
        Self {
            out,
            inp,
            data: Data::F16(data),
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::F16(v) => v.len() * 2,
            Data::F32(v) => v.len() * 4,
        }
    }

    /// `x @ W^T` for `m` rows of `x` (`[m, in]`, row-major): `[m, out]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.inp, "activation size");
        let mut out_t = vec![0f32; self.out * m];
        out_t
            .par_chunks_mut(ROWS_PER_TASK * m.max(1))
            .enumerate()
            .for_each(|(task, chunk)| {
                let first = task * ROWS_PER_TASK;
                rows(self, first, x, m, chunk);
            });
        // [out, m] -> [m, out]
        let mut y = vec![0f32; m * self.out];
        for (o, col) in out_t.chunks_exact(m.max(1)).enumerate() {
            for (j, v) in col.iter().enumerate() {
                y[j * self.out + o] = *v;
            }
        }
        y
    }
}

/// Output rows `first..` of `w` into `out` (`[rows, m]`), with the best instruction set here.
fn rows(w: &HostMatrix, first: usize, x: &[f32], m: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: the features `avx2::rows` is compiled for were just detected.
            unsafe { avx2::rows(w, first, x, m, out) };
            return;
        }
    }
    rows_body(w, first, x, m, out);
}

/// AVX2 + FMA + F16C tiles: 4 weight rows x 2 activation rows per pass over `in`, so each
/// weight vector loaded (and converted from f16) feeds two FMAs and each activation vector four.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Data, HostMatrix};

    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }

    /// Weight rows as stored, or converted to f32 (scratch).
    #[derive(Clone, Copy)]
    enum Rows<'a> {
        F16(&'a [half::f16]),
        F32(&'a [f32]),
    }

    #[inline(always)]
    unsafe fn load(w: Rows<'_>, at: usize) -> __m256 {
        // SAFETY (callers): `at + 8 <= len`.
        unsafe {
            match w {
                Rows::F16(v) => _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(at).cast())),
                Rows::F32(v) => _mm256_loadu_ps(v.as_ptr().add(at)),
            }
        }
    }

    fn scalar(w: Rows<'_>, at: usize) -> f32 {
        match w {
            Rows::F16(v) => v[at].to_f32(),
            Rows::F32(v) => v[at],
        }
    }

    /// `R` rows of `w` (each `k` long, from row 0) times `M` activation rows from `j`.
    /// Index loops over the const tile sizes unroll into registers.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn tile<const R: usize, const M: usize>(
        w: Rows<'_>,
        k: usize,
        x: &[f32],
        j: usize,
        res: &mut [[f32; M]; R],
    ) {
        let k8 = k - k % 8;
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); M]; R];
            let mut i = 0;
            while i < k8 {
                let mut wv = [_mm256_setzero_ps(); R];
                for (a, v) in wv.iter_mut().enumerate() {
                    *v = load(w, a * k + i);
                }
                for b in 0..M {
                    let xv = _mm256_loadu_ps(x.as_ptr().add((j + b) * k + i));
                    for a in 0..R {
                        acc[a][b] = _mm256_fmadd_ps(wv[a], xv, acc[a][b]);
                    }
                }
                i += 8;
            }
            for a in 0..R {
                for b in 0..M {
                    let mut s = hsum(acc[a][b]);
                    for t in k8..k {
                        s += scalar(w, a * k + t) * x[(j + b) * k + t];
                    }
                    res[a][b] = s;
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(w: &HostMatrix, first: usize, x: &[f32], m: usize, out: &mut [f32]) {
        let k = w.inp;
        let n = out.len() / m;
        // With more than two activation rows each f16 weight would be converted several times:
        // convert a 4-row block once into f32 scratch instead.
        let mut scratch = vec![0f32; if m > 2 { 4 * k } else { 0 }];
        let mut r = 0;
        while r < n {
            let rr = (n - r).min(4);
            let lo = (first + r) * k;
            let block = match &w.data {
                Data::F32(v) => Rows::F32(&v[lo..lo + rr * k]),
                Data::F16(v) if m > 2 => {
                    use half::slice::HalfFloatSliceExt;
                    v[lo..lo + rr * k].convert_to_f32_slice(&mut scratch[..rr * k]);
                    Rows::F32(&scratch[..rr * k])
                }
                Data::F16(v) => Rows::F16(&v[lo..lo + rr * k]),
            };
            let mut j = 0;
            while j < m {
                let mm = (m - j).min(2);
                // SAFETY: the block holds rr rows of k and activations j..j+mm exist.
                unsafe {
                    match (rr, mm) {
                        (4, 2) => {
                            let mut t = [[0f32; 2]; 4];
                            tile::<4, 2>(block, k, x, j, &mut t);
                            put(out, m, r, j, &t);
                        }
                        (4, _) => {
                            let mut t = [[0f32; 1]; 4];
                            tile::<4, 1>(block, k, x, j, &mut t);
                            put(out, m, r, j, &t);
                        }
                        _ => {
                            for a in 0..rr {
                                let one = match block {
                                    Rows::F16(v) => Rows::F16(&v[a * k..]),
                                    Rows::F32(v) => Rows::F32(&v[a * k..]),
                                };
                                for b in j..j + mm {
                                    let mut t = [[0f32; 1]; 1];
                                    tile::<1, 1>(one, k, x, b, &mut t);
                                    put(out, m, r + a, b, &t);
                                }
                            }
                        }
                    }
                }
                j += mm;
            }
            r += rr;
        }
    }

    #[inline(always)]
    fn put<const R: usize, const M: usize>(
        out: &mut [f32],
        m: usize,
        r: usize,
        j: usize,
        t: &[[f32; M]; R],
    ) {
        for (a, row) in t.iter().enumerate() {
            for (b, v) in row.iter().enumerate() {
                out[(r + a) * m + j + b] = *v;
            }
        }
    }
}

/// Portable fallback: each weight row converted once, then dotted with every activation row.
fn rows_body(w: &HostMatrix, first: usize, x: &[f32], m: usize, out: &mut [f32]) {
    let inp = w.inp;
    let mut buf = vec![0f32; inp];
    for (k, o) in out.chunks_exact_mut(m.max(1)).enumerate() {
        let r = first + k;
        let row: &[f32] = match &w.data {
            Data::F32(v) => &v[r * inp..(r + 1) * inp],
            Data::F16(v) => {
                v[r * inp..(r + 1) * inp].convert_to_f32_slice(&mut buf);
                &buf
            }
        };
        for (j, y) in o.iter_mut().enumerate() {
            *y = dot(row, &x[j * inp..(j + 1) * inp]);
        }
    }
}

/// Dot product with 16 independent accumulators (vectorises; fixed summation order).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut s = 0f32;
    for v in acc {
        s += v;
    }
    for (x, y) in ra.iter().zip(rb) {
        s = x.mul_add(*y, s);
    }
    s
}

/// The host copies of one transformer block's matrices.
#[derive(Debug, Clone)]
pub struct HostBlock {
    /// q, k, v, o projections.
    pub q: HostMatrix,
    /// Key projection.
    pub k: HostMatrix,
    /// Value projection.
    pub v: HostMatrix,
    /// Output projection.
    pub o: HostMatrix,
    /// Gate projection.
    pub gate: HostMatrix,
    /// Up projection.
    pub up: HostMatrix,
    /// Down projection.
    pub down: HostMatrix,
}

/// Host copies of every matrix of a model.
#[derive(Debug, Clone)]
pub struct HostWeights {
    /// Per block.
    pub blocks: Vec<HostBlock>,
    /// LM head `[vocab, hidden]`.
    pub head: HostMatrix,
    /// Most activation rows a product may have to run here (longer inputs use the backend).
    pub max_rows: usize,
}

impl HostWeights {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.head.bytes()
            + self
                .blocks
                .iter()
                .map(|b| {
                    [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down]
                        .iter()
                        .map(|m| m.bytes())
                        .sum::<usize>()
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_plain_product_in_f32_and_f16() {
        let (out, inp, m) = (70, 37, 5);
        let w: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
            .collect();
        let x: Vec<f32> = (0..m * inp)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0)
            .collect();
        let expect: Vec<f64> = (0..m)
            .flat_map(|j| {
                let (w, x) = (&w, &x);
                (0..out).map(move |o| {
                    (0..inp)
                        .map(|i| f64::from(w[o * inp + i]) * f64::from(x[j * inp + i]))
                        .sum()
                })
            })
            .collect();
        let f32m = HostMatrix::from_f32(out, inp, w.clone());
        let f16m = HostMatrix::from_f16(out, inp, w.iter().map(|&v| f16::from_f32(v)).collect());
        for y in [f32m.matmul(&x, m), f16m.matmul(&x, m)] {
            for (a, b) in y.iter().zip(&expect) {
                assert!((f64::from(*a) - b).abs() < 1e-3, "{a} vs {b}");
            }
        }
        // Row results do not depend on how many rows are multiplied together.
        let one = f16m.matmul(&x[2 * inp..3 * inp], 1);
        assert_eq!(one, f16m.matmul(&x, m)[2 * out..3 * out]);
    }
}
