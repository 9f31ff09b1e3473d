//! Integer products of GGUF weight blocks (Q4_0, Q4_1, Q8_0) with activation rows quantized to
//! 8-bit blocks ([`Q8Rows`]): the weights are multiplied as stored, 32 products per instruction,
//! instead of being expanded to f32 first.
//!
//! The arithmetic, for one weight row `w` and one activation row `x` (this is what the scalar
//! [`dot`] computes, and every SIMD path reproduces it bit for bit):
//! - per block `b`, the weight integers `v` (Q4_0: `q - 8`; Q4_1: `q`; Q8_0: `q`) are multiplied
//!   with `x`'s integers in eight lanes of four consecutive values each:
//!   `lane[l] = sum_{t<4} v[4l+t] * xq[4l+t]`, exact in i32;
//! - `acc[l] = fma(dw * dx, lane[l] as f32, acc[l])`, with `dw * dx` one rounded f32 product of
//!   the block's weight scale and activation scale;
//! - Q4_1 adds its minimum times the activation block's sum, in eight lanes by block number:
//!   `accm[b % 8] = fma(mw, sx, accm[b % 8])`;
//! - the result is `hsum(acc) + hsum(accm)`, where `hsum(a)` is
//!   `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`.
//!
//! Nothing in it depends on any other row, so a row's result is the same whatever tile shape or
//! batch computed it. The lanes are those of an AVX2 register (`maddubs` + `madd` sum four
//! adjacent byte products into one i32), which keeps the fast path free of any reordering.

use crate::model::q8_rows::{Q8Row, Q8Rows, QK};
use crate::model::quant::GgmlType;
use half::f16;

/// Whether `ty` has integer products.
pub(crate) fn supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
}

/// The weight integers of one block and its scale and minimum (0 where the type has none).
fn block_values(ty: GgmlType, b: &[u8]) -> ([i32; QK], f32, f32) {
    let half = |at: usize| f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    let mut v = [0i32; QK];
    match ty {
        GgmlType::Q8_0 => {
            for (v, q) in v.iter_mut().zip(&b[2..34]) {
                *v = i32::from(*q as i8);
            }
            (v, half(0), 0.0)
        }
        _ => {
            let (off, bias, m) = match ty {
                GgmlType::Q4_1 => (4, 0, half(2)),
                _ => (2, 8, 0.0),
            };
            for (i, q) in b[off..off + 16].iter().enumerate() {
                v[i] = i32::from(q & 0x0f) - bias;
                v[i + 16] = i32::from(q >> 4) - bias;
            }
            (v, half(0), m)
        }
    }
}

/// The horizontal sum in the order an AVX2 register reduces.
#[inline(always)]
fn hsum8(a: [f32; 8]) -> f32 {
    let s: [f32; 4] = std::array::from_fn(|i| a[i] + a[i + 4]);
    (s[0] + s[2]) + (s[1] + s[3])
}

/// The definition: one weight row of `ty` blocks times one quantized activation row.
pub(crate) fn dot(ty: GgmlType, w: &[u8], x: Q8Row<'_>) -> f32 {
    let mut acc = [0f32; 8];
    let mut accm = [0f32; 8];
    for (b, blk) in w.chunks_exact(ty.type_size()).enumerate() {
        let (v, dw, mw) = block_values(ty, blk);
        let xq = &x.qs[b * QK..(b + 1) * QK];
        let dd = dw * x.d[b];
        for (l, a) in acc.iter_mut().enumerate() {
            let lane: i32 = (4 * l..4 * l + 4).map(|i| v[i] * i32::from(xq[i])).sum();
            *a = dd.mul_add(lane as f32, *a);
        }
        if ty == GgmlType::Q4_1 {
            accm[b % 8] = mw.mul_add(x.s[b], accm[b % 8]);
        }
    }
    hsum8(acc) + hsum8(accm)
}

/// `n = out.len() / m` weight rows (`w`, `row_bytes` each) times the `m` rows of `x`, into
/// `out` as `[n, m]`, with the best instruction set here.
pub(crate) fn rows(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    x: &Q8Rows,
    m: usize,
    out: &mut [f32],
) {
    debug_assert!(supports(ty) && w.len() == out.len() / m * row_bytes);
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the features were just detected; `w` holds whole rows of whole blocks and
        // `x` has `m` rows as wide as them (checked by the caller).
        unsafe { avx2::rows(ty, w, row_bytes, x, m, out) };
        return;
    }
    for (r, o) in out.chunks_exact_mut(m).enumerate() {
        let wr = &w[r * row_bytes..(r + 1) * row_bytes];
        for (j, y) in o.iter_mut().enumerate() {
            *y = dot(ty, wr, x.row(j));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{GgmlType, Q8Row, Q8Rows, QK};
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q8_0: u8 = 2;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(
        ty: GgmlType,
        w: &[u8],
        rb: usize,
        x: &Q8Rows,
        m: usize,
        out: &mut [f32],
    ) {
        // SAFETY (all three): as for `rows_of`.
        unsafe {
            match ty {
                GgmlType::Q4_1 => rows_of::<Q4_1>(w, rb, x, m, out),
                GgmlType::Q8_0 => rows_of::<Q8_0>(w, rb, x, m, out),
                _ => rows_of::<Q4_0>(w, rb, x, m, out),
            }
        }
    }

    const fn type_size(t: u8) -> usize {
        match t {
            Q4_0 => 18,
            Q4_1 => 20,
            _ => 34,
        }
    }

    /// Tiles over the rows: 4 weight rows x 1 activation row for a single row (greedy), else
    /// 2 x 2 (2 x 4 measured slower on a Zen 3 EPYC: it spills registers), each weight block
    /// unpacked once per tile and each activation block loaded once per tile row.
    #[inline(always)]
    unsafe fn rows_of<const T: u8>(w: &[u8], rb: usize, x: &Q8Rows, m: usize, out: &mut [f32]) {
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
                            (4, _) => put(out, m, r, j, &tile::<T, 4, 1>(wp, rb, nb, x, j)),
                            (_, 2) => put(out, m, r, j, &tile::<T, 2, 2>(wp, rb, nb, x, j)),
                            _ => put(out, m, r, j, &tile::<T, 2, 1>(wp, rb, nb, x, j)),
                        }
                    } else {
                        for a in 0..rr {
                            let p = wp.add(a * rb);
                            match mm {
                                2 => put(out, m, r + a, j, &tile::<T, 1, 2>(p, rb, nb, x, j)),
                                _ => put(out, m, r + a, j, &tile::<T, 1, 1>(p, rb, nb, x, j)),
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
            for (c, v) in row.iter().enumerate() {
                out[(r + a) * m + j + c] = *v;
            }
        }
    }

    /// The 32 weight integers of the block at `p`: Q4_1 unsigned (0..15), the others signed.
    #[inline(always)]
    unsafe fn unpack<const T: u8>(p: *const u8) -> __m256i {
        // SAFETY (callers): `p` is a whole block.
        unsafe {
            if T == Q8_0 {
                return _mm256_loadu_si256(p.add(2).cast());
            }
            let q = _mm_loadu_si128(p.add(if T == Q4_1 { 4 } else { 2 }).cast());
            let low = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(q, low);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
            let v = _mm256_set_m128i(hi, lo);
            if T == Q4_1 {
                v
            } else {
                _mm256_sub_epi8(v, _mm256_set1_epi8(8))
            }
        }
    }

    /// `hsum(accm)` of the definition for `R` Q4_1 rows at `w` and `M` activation rows: the
    /// minima times the activation block sums in eight lanes by block number (padding lanes
    /// add `0 * 0`, which leaves a lane as it is).
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn min_sums<const R: usize, const M: usize>(
        w: *const u8,
        rb: usize,
        nb: usize,
        xs: &[Q8Row<'_>; M],
    ) -> [[f32; M]; R] {
        // SAFETY (callers): R rows of nb whole 20-byte blocks at `w`; AVX2, FMA, F16C enabled.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); M]; R];
            for b0 in (0..nb).step_by(8) {
                let k = (nb - b0).min(8);
                let mut mv = [_mm256_setzero_ps(); R];
                for a in 0..R {
                    let p = w.add(a * rb + b0 * 20 + 2);
                    let m = |i: usize| i32::from(p.add(i * 20).cast::<u16>().read_unaligned());
                    let h = if k == 8 {
                        _mm_setr_epi16(
                            m(0) as i16,
                            m(1) as i16,
                            m(2) as i16,
                            m(3) as i16,
                            m(4) as i16,
                            m(5) as i16,
                            m(6) as i16,
                            m(7) as i16,
                        )
                    } else {
                        let mut h = _mm_setzero_si128();
                        for i in 0..k {
                            h = insert16(h, m(i), i);
                        }
                        h
                    };
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
            acc.map(|row| row.map(|v| hsum(v)))
        }
    }

    /// `h` with 16-bit lane `i` (< 8) set to `v`.
    #[inline(always)]
    unsafe fn insert16(h: __m128i, v: i32, i: usize) -> __m128i {
        // SAFETY (callers): SSE2, which every x86_64 has.
        unsafe {
            match i {
                0 => _mm_insert_epi16(h, v, 0),
                1 => _mm_insert_epi16(h, v, 1),
                2 => _mm_insert_epi16(h, v, 2),
                3 => _mm_insert_epi16(h, v, 3),
                4 => _mm_insert_epi16(h, v, 4),
                5 => _mm_insert_epi16(h, v, 5),
                6 => _mm_insert_epi16(h, v, 6),
                _ => _mm_insert_epi16(h, v, 7),
            }
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
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
    unsafe fn tile<const T: u8, const R: usize, const M: usize>(
        w: *const u8,
        rb: usize,
        nb: usize,
        x: &Q8Rows,
        j: usize,
    ) -> [[f32; M]; R] {
        let xs: [Q8Row<'_>; M] = std::array::from_fn(|c| x.row(j + c));
        let ts = type_size(T);
        // SAFETY (callers): R rows of nb blocks at `w`; the activation rows are nb blocks wide.
        unsafe {
            let ones = _mm256_set1_epi16(1);
            let mut acc = [[_mm256_setzero_ps(); M]; R];
            for b in 0..nb {
                let mut qw = [_mm256_setzero_si256(); R];
                let mut aw = [_mm256_setzero_si256(); R];
                let mut dw = [_mm256_setzero_ps(); R];
                for a in 0..R {
                    let p = w.add(a * rb + b * ts);
                    let h = i32::from(p.cast::<u16>().read_unaligned());
                    dw[a] = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
                    qw[a] = unpack::<T>(p);
                    aw[a] = _mm256_sign_epi8(qw[a], qw[a]);
                }
                for c in 0..M {
                    let qx = _mm256_loadu_si256(xs[c].qs.as_ptr().add(b * QK).cast());
                    let dx = _mm256_set1_ps(*xs[c].d.get_unchecked(b));
                    for a in 0..R {
                        // Unsigned x signed byte pairs: Q4_1's values are unsigned already,
                        // the signed types move their sign onto the activation (never -128).
                        let p = if T == Q4_1 {
                            _mm256_maddubs_epi16(qw[a], qx)
                        } else {
                            _mm256_maddubs_epi16(aw[a], _mm256_sign_epi8(qx, qw[a]))
                        };
                        let lanes = _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones));
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
                let mins = min_sums::<R, M>(w, rb, nb, &xs);
                for a in 0..R {
                    for c in 0..M {
                        res[a][c] += mins[a][c];
                    }
                }
            }
            res
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random blocks with moderate finite scales (and, for Q8_0, the value -128 now and then).
    fn random_blocks(ty: GgmlType, blocks: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::rng::Rng::new(seed);
        let ts = ty.type_size();
        let mut b: Vec<u8> = (0..blocks * ts).map(|_| rng.next_u64() as u8).collect();
        for blk in b.chunks_exact_mut(ts) {
            for h in 0..if ty == GgmlType::Q4_1 { 2 } else { 1 } {
                let v = ((rng.next_u64() % 2001) as f32 / 1000.0 - 1.0) / 16.0;
                blk[2 * h..2 * h + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
            if ty == GgmlType::Q8_0 && rng.next_u64() % 3 == 0 {
                blk[2 + (rng.next_u64() % 32) as usize] = 0x80;
            }
        }
        b
    }

    fn activations(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n)
            .map(|_| ((rng.next_u64() % 20001) as f32 / 10000.0 - 1.0) * 3.0)
            .collect()
    }

    const TYPES: [GgmlType; 3] = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0];

    #[test]
    fn the_definition_is_the_exact_product_of_the_dequantized_operands() {
        // Independent: dequantize both sides (the GGUF dequantizer, the 8-bit blocks by their
        // scales) and sum in f64.
        for ty in TYPES {
            let nb = 9;
            let w = random_blocks(ty, nb, 1);
            let mut wf = vec![0f32; nb * QK];
            crate::model::quant::dequantize(ty, &w, &mut wf).unwrap();
            let xf = activations(nb * QK, 2);
            let x = Q8Rows::quantize(&xf, 1, nb * QK);
            let r = x.row(0);
            let exact: f64 = (0..nb * QK)
                .map(|i| f64::from(wf[i]) * f64::from(r.d[i / QK]) * f64::from(r.qs[i]))
                .sum();
            let scale: f64 = (0..nb * QK)
                .map(|i| (f64::from(wf[i]) * f64::from(xf[i])).abs())
                .sum();
            let got = f64::from(dot(ty, &w, r));
            assert!(
                (got - exact).abs() <= 1e-5 * scale,
                "{ty:?}: {got} vs {exact}"
            );
            // And the quantized activations are close to the float ones.
            let float: f64 = (0..nb * QK)
                .map(|i| f64::from(wf[i]) * f64::from(xf[i]))
                .sum();
            assert!(
                (got - float).abs() <= 0.02 * scale,
                "{ty:?}: {got} vs {float}"
            );
        }
    }

    #[test]
    fn every_tile_shape_equals_the_definition_bit_for_bit() {
        for (t, ty) in TYPES.into_iter().enumerate() {
            for (n, nb, m) in [
                (1, 1, 1),
                (7, 3, 1),
                (9, 5, 2),
                (6, 2, 5),
                (5, 18, 3),
                (4, 1, 8),
            ] {
                let seed = 10 * t as u64 + n as u64;
                let w = random_blocks(ty, n * nb, seed);
                let xf = activations(m * nb * QK, seed + 100);
                let x = Q8Rows::quantize(&xf, m, nb * QK);
                let rb = nb * ty.type_size();
                let mut out = vec![0f32; n * m];
                rows(ty, &w, rb, &x, m, &mut out);
                for r in 0..n {
                    for j in 0..m {
                        let want = dot(ty, &w[r * rb..(r + 1) * rb], x.row(j));
                        assert_eq!(
                            out[r * m + j].to_bits(),
                            want.to_bits(),
                            "{ty:?} [{n} x {nb} blocks] x {m}: row {r}, activation {j}"
                        );
                    }
                }
            }
        }
    }
}
