//! Activation rows quantized per 32-value block to 8- or 16-bit integers, the other operand of
//! the integer products in [`crate::model::int_panels`].
//!
//! The definition, per block of 32 values `x` of one row, with `Q = 127` (8-bit) or `32767`
//! (16-bit):
//! - `amax = max |x_i|`, the scale `d = amax / Q` and its inverse `id = Q / amax`, each one
//!   rounded f32 division (both 0 for an all-zero block, and for one so small, below ~4e-37 for
//!   8 bits, that `id` would overflow);
//! - `q_i = round_half_to_even(x_i * id)` (an f32 product, then the nearest integer), which lies
//!   in `-Q..=Q`, so the type's minimum never occurs (the sign trick of the 8-bit product
//!   relies on it);
//! - `s = d * (sum of q_i as f32)`, the block's sum, which Q4_1's minimum multiplies, and the
//!   integer sum itself, which corrects products taken with offset weights (with the sum of
//!   the first 16 values, for weights whose two halves have their own scales: Q6_K).
//!
//! Each row is quantized on its own, so a row's blocks never depend on the other rows of the
//! batch: a token inside a tree gets the same products as the same token alone. The AVX2 paths
//! compute exactly the definition for finite inputs (max is exact, the products and divisions
//! are single IEEE roundings and the conversion rounds half to even), bit for bit equal to the
//! scalar one.

/// Values per block.
pub(crate) const QK: usize = 32;

/// An integer type activations are quantized to.
pub(crate) trait Quant: Copy + Default + PartialEq + std::fmt::Debug + Send + Sync {
    /// Largest magnitude.
    const MAX: f32;
    /// From an integer in `-MAX..=MAX`.
    fn from_i32(v: i32) -> Self;
    /// As an integer.
    fn to_i32(self) -> i32;
    /// One block by the definition, `x` into `q`: the scale `d`, `sum q_i` and the sum over the
    /// first 16 values.
    fn block(x: &[f32; QK], q: &mut [Self; QK]) -> (f32, i32, i32) {
        block(x, q)
    }
}

impl Quant for i8 {
    const MAX: f32 = 127.0;
    fn from_i32(v: i32) -> Self {
        v as i8
    }
    fn to_i32(self) -> i32 {
        i32::from(self)
    }
    fn block(x: &[f32; QK], q: &mut [Self; QK]) -> (f32, i32, i32) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected; `x` and `q` are one whole block each (their types).
            return unsafe { avx2::block_i8(x, q) };
        }
        block(x, q)
    }
}

impl Quant for i16 {
    const MAX: f32 = 32767.0;
    fn from_i32(v: i32) -> Self {
        v as i16
    }
    fn to_i32(self) -> i32 {
        i32::from(self)
    }
    fn block(x: &[f32; QK], q: &mut [Self; QK]) -> (f32, i32, i32) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 was just detected; `x` and `q` are one whole block each (their types).
            return unsafe { avx2::block_i16(x, q) };
        }
        block(x, q)
    }
}

/// `m` activation rows of `k` values (`k` a multiple of [`QK`]) as integer blocks.
#[derive(Debug, Clone)]
pub(crate) struct ActRows<Q> {
    k: usize,
    qs: Vec<Q>,
    d: Vec<f32>,
    s: Vec<f32>,
    isum: Vec<i32>,
    ilo: Vec<i32>,
}

/// One quantized row: `k` values, one scale and one sum per block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActRow<'a, Q> {
    pub(crate) qs: &'a [Q],
    pub(crate) d: &'a [f32],
    pub(crate) s: &'a [f32],
    /// Each block's integer sum (`sum q_i`, exact).
    pub(crate) isum: &'a [i32],
    /// Each block's integer sum over its first 16 values.
    pub(crate) ilo: &'a [i32],
}

impl<Q: Quant> ActRows<Q> {
    /// Quantizes the `m` rows of `x` (`[m, k]`, row-major).
    ///
    /// # Panics
    /// When `k` is not a multiple of [`QK`] or `x` is not `m * k` long (callers guarantee both:
    /// the weight matrices these rows multiply are whole blocks wide).
    pub(crate) fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        assert!(k.is_multiple_of(QK) && x.len() == m * k, "whole blocks");
        let nb = m * k / QK;
        let mut out = Self {
            k,
            qs: vec![Q::default(); m * k],
            d: vec![0.0; nb],
            s: vec![0.0; nb],
            isum: vec![0; nb],
            ilo: vec![0; nb],
        };
        let blocks = x
            .chunks_exact(QK)
            .zip(out.qs.chunks_exact_mut(QK))
            .zip(out.d.iter_mut().zip(out.s.iter_mut()))
            .zip(out.isum.iter_mut().zip(out.ilo.iter_mut()));
        for (((x, q), (d, s)), (isum, ilo)) in blocks {
            let x: &[f32; QK] = x.try_into().expect("chunks of QK");
            let q: &mut [Q; QK] = q.try_into().expect("chunks of QK");
            let (scale, sum, lo) = Q::block(x, q);
            (*d, *s, *isum, *ilo) = (scale, scale * sum as f32, sum, lo);
        }
        out
    }

    /// Rows.
    pub(crate) fn rows(&self) -> usize {
        self.qs.len() / self.k.max(1)
    }

    /// Values per row.
    pub(crate) fn width(&self) -> usize {
        self.k
    }

    /// Row `j` (inlined: the kernels' tiles take their rows once per panel).
    #[inline(always)]
    pub(crate) fn row(&self, j: usize) -> ActRow<'_, Q> {
        let nb = self.k / QK;
        ActRow {
            qs: &self.qs[j * self.k..(j + 1) * self.k],
            d: &self.d[j * nb..(j + 1) * nb],
            s: &self.s[j * nb..(j + 1) * nb],
            isum: &self.isum[j * nb..(j + 1) * nb],
            ilo: &self.ilo[j * nb..(j + 1) * nb],
        }
    }
}

/// Scale and inverse scale of a block whose largest magnitude is `amax`.
#[inline(always)]
fn scales(amax: f32, max: f32) -> (f32, f32) {
    let id = max / amax;
    if amax == 0.0 || !id.is_finite() {
        (0.0, 0.0)
    } else {
        (amax / max, id)
    }
}

/// The definition, one block: writes `q`, returns `d`, `sum q_i` and the sum of the first 16.
pub(crate) fn block<Q: Quant>(x: &[f32; QK], q: &mut [Q; QK]) -> (f32, i32, i32) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let (d, id) = scales(amax, Q::MAX);
    let (mut sum, mut lo) = (0i32, 0i32);
    for (i, (q, v)) in q.iter_mut().zip(x).enumerate() {
        let r = (v * id).round_ties_even().clamp(-Q::MAX, Q::MAX) as i32;
        *q = Q::from_i32(r);
        sum += r;
        if i < QK / 2 {
            lo += r;
        }
    }
    (d, sum, lo)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::QK;
    use std::arch::x86_64::*;

    /// Scales of the block at `x` and its values times the inverse scale, rounded to integers
    /// (half to even under the default MXCSR, which Rust code never changes), with their sum
    /// and the sum of the first 16.
    #[inline(always)]
    unsafe fn rounded(x: &[f32; QK], max: f32) -> (f32, [__m256i; 4], i32, i32) {
        // SAFETY (callers): AVX2 enabled; the 32 values of `x` are readable (its type).
        unsafe {
            let p = x.as_ptr();
            let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(p.add(o)));
            let sign = _mm256_set1_ps(-0.0);
            let a = v.map(|v| _mm256_andnot_ps(sign, v));
            let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
            let (d, id) = super::scales(_mm_cvtss_f32(m), max);
            let idv = _mm256_set1_ps(id);
            let i = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, idv)));
            let lo = _mm256_add_epi32(i[0], i[1]);
            let all = _mm256_add_epi32(lo, _mm256_add_epi32(i[2], i[3]));
            (d, i, hsum(all), hsum(lo))
        }
    }

    /// The sum of the eight lanes.
    #[inline(always)]
    unsafe fn hsum(v: __m256i) -> i32 {
        // SAFETY (callers): AVX2 enabled.
        unsafe {
            let t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            let t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0b01_00_11_10));
            let t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0b10_11_00_01));
            _mm_cvtsi128_si32(t)
        }
    }

    /// [`super::block`] for 8 bits.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block_i8(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, i32, i32) {
        // SAFETY: 32 values in `x`, 32 bytes writable in `q` (their types).
        unsafe {
            let (d, i, sum, lo) = rounded(x, 127.0);
            // i32 -> i8 in order: the packs work within 128-bit halves, a permute restores order.
            let w = _mm256_packs_epi32(i[0], i[1]);
            let z = _mm256_packs_epi32(i[2], i[3]);
            let b = _mm256_packs_epi16(w, z);
            let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(q.as_mut_ptr().cast(), b);
            (d, sum, lo)
        }
    }

    /// [`super::block`] for 16 bits.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block_i16(x: &[f32; QK], q: &mut [i16; QK]) -> (f32, i32, i32) {
        // SAFETY: 32 values in `x`, 32 i16 writable in `q` (their types).
        unsafe {
            let (d, i, sum, lo) = rounded(x, 32767.0);
            for (h, pair) in i.chunks_exact(2).enumerate() {
                let w = _mm256_packs_epi32(pair[0], pair[1]);
                let w = _mm256_permute4x64_epi64(w, 0b11_01_10_00);
                _mm256_storeu_si256(q.as_mut_ptr().add(16 * h).cast(), w);
            }
            (d, sum, lo)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random activations with a spread of magnitudes, exact ties and all-zero blocks.
    fn activations(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n)
            .map(|i| match i % 97 {
                // A block of zeros now and then.
                _ if (i / QK) % 11 == 5 => 0.0,
                0 => 127.0,
                1 => -63.5,
                _ => {
                    let u = (rng.next_u64() % 20001) as f32 / 10000.0 - 1.0;
                    u * (1 << (rng.next_u64() % 8)) as f32
                }
            })
            .collect()
    }

    fn follows_the_definition<Q: Quant>() {
        let (m, k) = (5, 7 * QK);
        let x = activations(m * k, 3);
        let q = ActRows::<Q>::quantize(&x, m, k);
        for j in 0..m {
            let r = q.row(j);
            for (b, xb) in x[j * k..(j + 1) * k].chunks_exact(QK).enumerate() {
                // The definition, written out again in f64 where it is exact.
                let amax = xb.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max);
                let d = (amax / f64::from(Q::MAX)) as f32;
                assert_eq!(r.d[b].to_bits(), d.to_bits(), "scale");
                let (mut sum, mut lo) = (0i64, 0i64);
                for (i, v) in xb.iter().enumerate() {
                    let qi = r.qs[b * QK + i].to_i32();
                    assert!(qi.abs() <= Q::MAX as i32, "the type's minimum never occurs");
                    sum += i64::from(qi);
                    if i < QK / 2 {
                        lo += i64::from(qi);
                    }
                    // Nearest: within half a step of the value (plus one f32 rounding).
                    let err = (f64::from(*v) - f64::from(d) * f64::from(qi)).abs();
                    assert!(err <= f64::from(d) * 0.5001 + 1e-30, "{v} -> {qi} x {d}");
                }
                assert_eq!(r.s[b], d * sum as f32, "sum");
                assert_eq!(i64::from(r.isum[b]), sum, "integer sum");
                assert_eq!(i64::from(r.ilo[b]), lo, "integer sum of the first half");
                if amax == 0.0 {
                    assert!(r.qs[b * QK..(b + 1) * QK].iter().all(|q| q.to_i32() == 0));
                }
            }
        }
        // Half-way products round to even.
        let mut one = [0f32; QK];
        one[0] = Q::MAX;
        one[1..4].copy_from_slice(&[0.5, 1.5, 2.5]);
        let q = ActRows::<Q>::quantize(&one, 1, QK);
        let got: Vec<i32> = q.row(0).qs[..4].iter().map(|q| q.to_i32()).collect();
        assert_eq!(got, [Q::MAX as i32, 0, 2, 2]);
    }

    #[test]
    fn rows_follow_the_definition_and_bound_the_error() {
        follows_the_definition::<i8>();
        follows_the_definition::<i16>();
    }

    fn simd_equals_scalar<Q: Quant>() {
        let x = activations(64 * QK, 7);
        let fast = ActRows::<Q>::quantize(&x, 64, QK);
        let mut q = [Q::default(); QK];
        for b in 0..64 {
            let (d, sum, lo) = block(x[b * QK..(b + 1) * QK].try_into().unwrap(), &mut q);
            let r = fast.row(b);
            assert_eq!(
                (r.d[0].to_bits(), r.s[0].to_bits(), r.isum[0], r.ilo[0]),
                (d.to_bits(), (d * sum as f32).to_bits(), sum, lo)
            );
            assert_eq!(r.qs, &q[..]);
        }
    }

    #[test]
    fn the_simd_path_equals_the_scalar_definition_bit_for_bit() {
        simd_equals_scalar::<i8>();
        simd_equals_scalar::<i16>();
    }
}
