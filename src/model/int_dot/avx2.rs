//! AVX2 + FMA + F16C tiles of [`super::dot`]: 8-bit activations by `maddubs` + `madd` (32
//! byte products per instruction), summed into the definition's lanes, so the results are bit
//! for bit the scalar ones.

use super::{ActRow, ActRows, GgmlType, QK, Quant, put_tile as put};
use std::arch::x86_64::*;

pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

const fn type_size(t: u8) -> usize {
    match t {
        Q4_0 => 18,
        Q4_1 => 20,
        _ => 34,
    }
}

/// How one activation integer type meets the weight blocks.
trait Form {
    /// The activation integers.
    type Q: Quant;
    /// One weight block, unpacked.
    type W: Copy;
    /// One activation block, loaded.
    type X: Copy;
    /// The block at `p` (a whole block).
    unsafe fn weights<const T: u8>(p: *const u8) -> Self::W;
    /// The 32 activation integers at `p`.
    unsafe fn acts(p: *const Self::Q) -> Self::X;
    /// The eight lane sums of the definition.
    unsafe fn lanes<const T: u8>(w: Self::W, x: Self::X) -> __m256i;
}

/// The 32 nibbles of the 16 bytes at `p`: values 0..16 (low nibbles) in the low half, 16..32
/// (high nibbles) in the high half, as bytes 0..15.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> (__m128i, __m128i) {
    // SAFETY (callers): 16 readable bytes at `p`.
    unsafe {
        let q = _mm_loadu_si128(p.cast());
        let low = _mm_set1_epi8(0x0f);
        (
            _mm_and_si128(q, low),
            _mm_and_si128(_mm_srli_epi16(q, 4), low),
        )
    }
}

/// 8-bit activations.
struct I8;

impl Form for I8 {
    type Q = i8;
    /// The weight integers (Q4_1 unsigned, the others signed) and their magnitudes.
    type W = (__m256i, __m256i);
    type X = __m256i;

    #[inline(always)]
    unsafe fn weights<const T: u8>(p: *const u8) -> Self::W {
        // SAFETY (callers): `p` is a whole block.
        unsafe {
            let v = if T == Q8_0 {
                _mm256_loadu_si256(p.add(2).cast())
            } else {
                let (lo, hi) = nibbles(p.add(if T == Q4_1 { 4 } else { 2 }));
                let v = _mm256_set_m128i(hi, lo);
                if T == Q4_1 {
                    v
                } else {
                    _mm256_sub_epi8(v, _mm256_set1_epi8(8))
                }
            };
            (v, _mm256_sign_epi8(v, v))
        }
    }

    #[inline(always)]
    unsafe fn acts(p: *const i8) -> __m256i {
        // SAFETY (callers): 32 readable values.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    #[inline(always)]
    unsafe fn lanes<const T: u8>(w: Self::W, x: __m256i) -> __m256i {
        // SAFETY (callers): AVX2 enabled.
        unsafe {
            // Unsigned x signed byte pairs: Q4_1's values are unsigned already, the signed
            // types move their sign onto the activation (which is never -128).
            let p = if T == Q4_1 {
                _mm256_maddubs_epi16(w.0, x)
            } else {
                _mm256_maddubs_epi16(w.1, _mm256_sign_epi8(x, w.0))
            };
            _mm256_madd_epi16(p, _mm256_set1_epi16(1))
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn rows_i8(
    ty: GgmlType,
    w: &[u8],
    rb: usize,
    x: &ActRows<i8>,
    m: usize,
    out: &mut [f32],
) {
    // SAFETY: as for `rows_of`.
    unsafe {
        match ty {
            GgmlType::Q4_1 => rows_of::<I8, Q4_1>(w, rb, x, m, out),
            GgmlType::Q8_0 => rows_of::<I8, Q8_0>(w, rb, x, m, out),
            _ => rows_of::<I8, Q4_0>(w, rb, x, m, out),
        }
    }
}

/// Tiles over the rows: 4 weight rows x 1 activation row for a single row (greedy), else 2 x 2
/// (2 x 4 measured slower on a Zen 3 EPYC: it spills registers), each weight block unpacked
/// once per tile and each activation block loaded once per tile row.
///
/// # Safety
/// AVX2, FMA and F16C enabled; `w` holds `out.len() / m` rows of `rb` bytes of whole `T`
/// blocks; `x` has `m` rows as wide.
#[inline(always)]
unsafe fn rows_of<F: Form, const T: u8>(
    w: &[u8],
    rb: usize,
    x: &ActRows<F::Q>,
    m: usize,
    out: &mut [f32],
) {
    let n = out.len() / m;
    let nb = rb / type_size(T);
    let tr = if m == 1 { 4 } else { 2 };
    let mut r = 0;
    while r < n {
        let rr = (n - r).min(tr);
        let wp = w[r * rb..].as_ptr();
        let mut j = 0;
        while j < m {
            let mm = (m - j).min(2);
            // SAFETY: rows r..r+rr of `w` and activation rows j..j+mm exist.
            unsafe {
                if rr == tr {
                    match (rr, mm) {
                        (4, _) => put(out, m, r, j, &tile::<F, T, 4, 1>(wp, rb, nb, x, j)),
                        (_, 2) => put(out, m, r, j, &tile::<F, T, 2, 2>(wp, rb, nb, x, j)),
                        _ => put(out, m, r, j, &tile::<F, T, 2, 1>(wp, rb, nb, x, j)),
                    }
                } else {
                    for a in 0..rr {
                        let p = wp.add(a * rb);
                        match mm {
                            2 => put(out, m, r + a, j, &tile::<F, T, 1, 2>(p, rb, nb, x, j)),
                            _ => put(out, m, r + a, j, &tile::<F, T, 1, 1>(p, rb, nb, x, j)),
                        }
                    }
                }
            }
            j += mm;
        }
        r += rr;
    }
}

/// The horizontal sum of 8 lanes in the definition's order (also the f32 host kernels').
#[inline(always)]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// `R` weight rows from `w` (`rb` bytes apart, `nb` blocks each) times activation rows
/// `j..j + M`, exactly as [`super::dot`].
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile<F: Form, const T: u8, const R: usize, const M: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    x: &ActRows<F::Q>,
    j: usize,
) -> [[f32; M]; R] {
    let xs: [ActRow<'_, F::Q>; M] = std::array::from_fn(|c| x.row(j + c));
    let ts = type_size(T);
    // SAFETY (callers): R rows of nb blocks at `w`; the activation rows are nb blocks wide.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); M]; R];
        for b in 0..nb {
            // No closures here: they would not inherit this function's target features.
            let mut wv = [F::weights::<T>(w); R];
            let mut dw = [_mm256_setzero_ps(); R];
            for a in 0..R {
                let p = w.add(a * rb + b * ts);
                let h = i32::from(p.cast::<u16>().read_unaligned());
                dw[a] = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
                wv[a] = F::weights::<T>(p);
            }
            for c in 0..M {
                let xv = F::acts(xs[c].qs.as_ptr().add(b * QK));
                let dx = _mm256_set1_ps(*xs[c].d.get_unchecked(b));
                for a in 0..R {
                    let lanes = _mm256_cvtepi32_ps(F::lanes::<T>(wv[a], xv));
                    acc[a][c] = _mm256_fmadd_ps(_mm256_mul_ps(dw[a], dx), lanes, acc[a][c]);
                }
            }
        }
        let mut res = [[0f32; M]; R];
        for a in 0..R {
            for c in 0..M {
                res[a][c] = hsum(acc[a][c]);
            }
        }
        if T == Q4_1 {
            let mins = min_sums::<F::Q, R, M>(w, rb, nb, &xs);
            for a in 0..R {
                for c in 0..M {
                    res[a][c] += mins[a][c];
                }
            }
        }
        res
    }
}

/// `hsum(accm)` of the definition for `R` Q4_1 rows at `w` and `M` activation rows: the
/// minima times the activation block sums in eight lanes by block number (padding lanes add
/// `0 * 0`, which leaves a lane as it is).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn min_sums<Q, const R: usize, const M: usize>(
    w: *const u8,
    rb: usize,
    nb: usize,
    xs: &[ActRow<'_, Q>; M],
) -> [[f32; M]; R] {
    // SAFETY (callers): R rows of nb whole 20-byte blocks at `w`; AVX2, FMA, F16C enabled.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); M]; R];
        for b0 in (0..nb).step_by(8) {
            let k = (nb - b0).min(8);
            let mut mv = [_mm256_setzero_ps(); R];
            for a in 0..R {
                let p = w.add(a * rb + b0 * 20 + 2);
                let mut h = [0i16; 8];
                for (i, h) in h.iter_mut().enumerate().take(k) {
                    *h = p.add(i * 20).cast::<i16>().read_unaligned();
                }
                let h = _mm_setr_epi16(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
                mv[a] = _mm256_cvtph_ps(h);
            }
            for c in 0..M {
                let sv = if k == 8 {
                    _mm256_loadu_ps(xs[c].s.as_ptr().add(b0))
                } else {
                    let mut s = [0f32; 8];
                    s[..k].copy_from_slice(&xs[c].s[b0..b0 + k]);
                    _mm256_loadu_ps(s.as_ptr())
                };
                for a in 0..R {
                    acc[a][c] = _mm256_fmadd_ps(mv[a], sv, acc[a][c]);
                }
            }
        }
        let mut res = [[0f32; M]; R];
        for a in 0..R {
            for c in 0..M {
                res[a][c] = hsum(acc[a][c]);
            }
        }
        res
    }
}
