//! Activation rows quantized to 8 bits per 32-value block, the other operand of the integer
//! products in [`crate::model::int_dot`].
//!
//! The definition, per block of 32 values `x` of one row:
//! - `amax = max |x_i|`, the scale `d = amax / 127` and its inverse `id = 127 / amax` (both 0
//!   for an all-zero block, and for one so small, below ~4e-37, that `id` would overflow), each
//!   one rounded f32 division;
//! - `q_i = round_half_to_even(x_i * id)` (an f32 product, then the nearest integer), which lies
//!   in `-127..=127`, so `-128` never occurs (the sign trick of the Q8_0 product relies on it);
//! - `s = d * (sum of q_i as f32)`, the block's sum, which Q4_1's minimum multiplies.
//!
//! Each row is quantized on its own, so a row's blocks never depend on the other rows of the
//! batch: a token inside a tree gets the same products as the same token alone. The AVX2 path
//! computes exactly the definition for finite inputs (max is exact, the products and divisions are single IEEE
//! roundings and the conversion rounds half to even), bit for bit equal to the scalar one.

/// Values per block.
pub(crate) const QK: usize = 32;

/// `m` activation rows of `k` values (`k` a multiple of [`QK`]) as 8-bit blocks.
#[derive(Debug, Clone)]
pub(crate) struct Q8Rows {
    k: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

/// One quantized row: `k` values, one scale and one sum per block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Q8Row<'a> {
    pub(crate) qs: &'a [i8],
    pub(crate) d: &'a [f32],
    pub(crate) s: &'a [f32],
}

impl Q8Rows {
    /// Quantizes the `m` rows of `x` (`[m, k]`, row-major).
    ///
    /// # Panics
    /// When `k` is not a multiple of [`QK`] or `x` is not `m * k` long (callers guarantee both:
    /// the weight matrices these rows multiply are whole blocks wide).
    pub(crate) fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        assert!(k % QK == 0 && x.len() == m * k, "whole blocks");
        let nb = m * k / QK;
        let mut out = Self {
            k,
            qs: vec![0; m * k],
            d: vec![0.0; nb],
            s: vec![0.0; nb],
        };
        let blocks = x
            .chunks_exact(QK)
            .zip(out.qs.chunks_exact_mut(QK))
            .zip(out.d.iter_mut().zip(out.s.iter_mut()));
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            for ((x, q), (d, s)) in blocks {
                // SAFETY: AVX2 was just detected; `x` and `q` are one whole block each.
                (*d, *s) = unsafe { avx2::block(x, q) };
            }
            return out;
        }
        for ((x, q), (d, s)) in blocks {
            (*d, *s) = block(x, q);
        }
        out
    }

    /// Row `j`.
    pub(crate) fn row(&self, j: usize) -> Q8Row<'_> {
        let nb = self.k / QK;
        Q8Row {
            qs: &self.qs[j * self.k..(j + 1) * self.k],
            d: &self.d[j * nb..(j + 1) * nb],
            s: &self.s[j * nb..(j + 1) * nb],
        }
    }
}

/// Scale and inverse scale of a block whose largest magnitude is `amax`.
#[inline(always)]
fn scales(amax: f32) -> (f32, f32) {
    let id = 127.0 / amax;
    if amax == 0.0 || !id.is_finite() {
        (0.0, 0.0)
    } else {
        (amax / 127.0, id)
    }
}

/// The definition, one block: writes `q`, returns `(d, s)`.
pub(crate) fn block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let (d, id) = scales(amax);
    let mut sum = 0i32;
    for (q, v) in q.iter_mut().zip(x) {
        let r = (v * id).round_ties_even().clamp(-127.0, 127.0) as i32;
        *q = r as i8;
        sum += r;
    }
    (d, d * sum as f32)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::block`] with AVX2 (the conversion rounds half to even under the default MXCSR,
    /// which Rust code never changes).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
        debug_assert!(x.len() == 32 && q.len() == 32);
        // SAFETY: 32 values readable in `x`, 32 bytes writable in `q`.
        unsafe {
            let p = x.as_ptr();
            let v = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(p.add(o)));
            let sign = _mm256_set1_ps(-0.0);
            let a = v.map(|v| _mm256_andnot_ps(sign, v));
            let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
            let (d, id) = super::scales(_mm_cvtss_f32(m));
            let idv = _mm256_set1_ps(id);
            let i = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, idv)));
            // Sum of the 32 integers (exact).
            let t = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
            let t = _mm_add_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256(t, 1));
            let t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0b01_00_11_10));
            let t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0b10_11_00_01));
            let sum = _mm_cvtsi128_si32(t);
            // i32 -> i8 in order: the packs work within 128-bit halves, a permute restores order.
            let w = _mm256_packs_epi32(i[0], i[1]);
            let z = _mm256_packs_epi32(i[2], i[3]);
            let b = _mm256_packs_epi16(w, z);
            let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(q.as_mut_ptr().cast(), b);
            (d, d * sum as f32)
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

    #[test]
    fn rows_follow_the_definition_and_bound_the_error() {
        let (m, k) = (5, 7 * QK);
        let x = activations(m * k, 3);
        let q = Q8Rows::quantize(&x, m, k);
        for j in 0..m {
            let r = q.row(j);
            for (b, xb) in x[j * k..(j + 1) * k].chunks_exact(QK).enumerate() {
                // The definition, written out again in f64 where it is exact.
                let amax = xb.iter().map(|v| f64::from(v.abs())).fold(0.0, f64::max);
                let d = (amax / 127.0) as f32;
                assert_eq!(r.d[b].to_bits(), d.to_bits(), "scale");
                let mut sum = 0i64;
                for (i, v) in xb.iter().enumerate() {
                    let qi = r.qs[b * QK + i];
                    assert!(qi != -128, "-128 never occurs");
                    sum += i64::from(qi);
                    // Nearest: within half a step of the value (plus one f32 rounding).
                    let err = (f64::from(*v) - f64::from(d) * f64::from(qi)).abs();
                    assert!(err <= f64::from(d) * 0.5001 + 1e-30, "{v} -> {qi} x {d}");
                }
                assert_eq!(r.s[b], d * sum as f32, "sum");
                if amax == 0.0 {
                    assert!(r.qs[b * QK..(b + 1) * QK].iter().all(|&q| q == 0));
                }
            }
        }
        // Half-way products round to even: 0.5 * 127 / 127 -> 0, 1.5 -> 2, 2.5 -> 2.
        let mut one = [0f32; QK];
        one[..4].copy_from_slice(&[127.0, 0.5, 1.5, 2.5]);
        let q = Q8Rows::quantize(&one, 1, QK);
        assert_eq!(&q.row(0).qs[..4], &[127, 0, 2, 2]);
    }

    #[test]
    fn the_simd_path_equals_the_scalar_definition_bit_for_bit() {
        let x = activations(64 * QK, 7);
        let fast = Q8Rows::quantize(&x, 64, QK);
        let mut q = vec![0i8; QK];
        for b in 0..64 {
            let (d, s) = block(&x[b * QK..(b + 1) * QK], &mut q);
            let r = fast.row(b);
            assert_eq!(
                (r.d[0].to_bits(), r.s[0].to_bits()),
                (d.to_bits(), s.to_bits())
            );
            assert_eq!(r.qs, &q[..]);
        }
    }
}
