//! Integer products of GGUF weight blocks (Q4_0, Q4_1, Q8_0) with activation rows quantized to
//! 8-bit blocks ([`ActRows`]), the opt-in `NativeInt8` mode (the default 16-bit products are
//! [`crate::model::int_panels`]): 32 byte products per `maddubs`.
//!
//! The arithmetic, for one weight row `w` and one activation row `x` (this is what the scalar
//! [`dot`] computes, and every SIMD path reproduces it bit for bit):
//! - per block `b`, the weight integers `v` (Q4_0: `q - 8`; Q4_1: `q`; Q8_0: `q`) are multiplied
//!   with `x`'s integers and summed in eight lanes, exact in i32: value `i` goes to lane `i / 4`
//!   (the lanes of an AVX2 register after `maddubs` + `madd`);
//! - `acc[l] = fma(dw * dx, lane[l] as f32, acc[l])`, with `dw * dx` one rounded f32 product of
//!   the block's weight scale and activation scale (every lane is below 2^24 in magnitude, so
//!   its conversion is exact);
//! - Q4_1 adds its minimum times the activation block's sum, in eight lanes by block number:
//!   `accm[b % 8] = fma(mw, sx, accm[b % 8])`;
//! - the result is `hsum(acc) + hsum(accm)`, where `hsum(a)` is
//!   `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`.
//!
//! Nothing in it depends on any other row, so a row's result is the same whatever tile shape or
//! batch computed it.

use crate::model::act_rows::{ActRow, ActRows, QK, Quant};
use crate::model::int_panels::{block_values, supports};
use crate::model::quant::GgmlType;

/// Activation integers with integer products: where each value's product goes, and the fast
/// path for the CPU here.
pub(crate) trait Lanes: Quant {
    /// The lane (0..8) value `i` of a block adds into.
    fn lane(i: usize) -> usize;
    /// [`rows`] with SIMD where the CPU has it; whether it ran.
    fn fast_rows(
        ty: GgmlType,
        w: &[u8],
        rb: usize,
        x: &ActRows<Self>,
        m: usize,
        out: &mut [f32],
    ) -> bool;
}

impl Lanes for i8 {
    fn lane(i: usize) -> usize {
        i / 4
    }
    #[allow(unused_variables)]
    fn fast_rows(
        ty: GgmlType,
        w: &[u8],
        rb: usize,
        x: &ActRows<i8>,
        m: usize,
        out: &mut [f32],
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            // SAFETY: the features were just detected; sizes are checked by `rows`' caller.
            unsafe { avx2::rows_i8(ty, w, rb, x, m, out) };
            return true;
        }
        false
    }
}

/// Writes an `R x M` tile of results at weight row `r`, activation row `j` of `out`
/// (`[rows, m]`).
#[inline(always)]
pub(crate) fn put_tile<const R: usize, const M: usize>(
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

/// The horizontal sum in the order an AVX2 register reduces.
#[inline(always)]
fn hsum8(a: [f32; 8]) -> f32 {
    let s: [f32; 4] = std::array::from_fn(|i| a[i] + a[i + 4]);
    (s[0] + s[2]) + (s[1] + s[3])
}

/// The definition: one weight row of `ty` blocks times one quantized activation row.
pub(crate) fn dot<Q: Lanes>(ty: GgmlType, w: &[u8], x: ActRow<'_, Q>) -> f32 {
    let mut acc = [0f32; 8];
    let mut accm = [0f32; 8];
    for (b, blk) in w.chunks_exact(ty.type_size()).enumerate() {
        let (v, dw, mw) = block_values(ty, blk);
        let xq = &x.qs[b * QK..(b + 1) * QK];
        let mut lanes = [0i32; 8];
        for (i, (v, q)) in v.iter().zip(xq).enumerate() {
            lanes[Q::lane(i)] += v * q.to_i32();
        }
        let dd = dw * x.d[b];
        for (a, lane) in acc.iter_mut().zip(lanes) {
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
pub(crate) fn rows<Q: Lanes>(
    ty: GgmlType,
    w: &[u8],
    row_bytes: usize,
    x: &ActRows<Q>,
    m: usize,
    out: &mut [f32],
) {
    assert!(
        supports(ty) && w.len() == out.len() / m * row_bytes,
        "whole rows"
    );
    if Q::fast_rows(ty, w, row_bytes, x, m, out) {
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
pub(crate) mod avx2;

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

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
            if ty == GgmlType::Q8_0 && rng.next_u64().is_multiple_of(3) {
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
        exact_product::<i8>(0.02);
    }

    /// `close`: how near the quantized product must be to the float one, relative to the sum
    /// of the magnitudes of the products.
    fn exact_product<Q: Lanes>(close: f64) {
        // Independent: dequantize both sides (the GGUF dequantizer, the integer blocks by their
        // scales) and sum in f64.
        for ty in TYPES {
            let nb = 9;
            let w = random_blocks(ty, nb, 1);
            let mut wf = vec![0f32; nb * QK];
            crate::model::quant::dequantize(ty, &w, &mut wf).unwrap();
            let xf = activations(nb * QK, 2);
            let x = ActRows::<Q>::quantize(&xf, 1, nb * QK);
            let r = x.row(0);
            let exact: f64 = (0..nb * QK)
                .map(|i| f64::from(wf[i]) * f64::from(r.d[i / QK]) * f64::from(r.qs[i].to_i32()))
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
                (got - float).abs() <= close * scale,
                "{ty:?}: {got} vs {float}"
            );
        }
    }

    #[test]
    fn every_tile_shape_equals_the_definition_bit_for_bit() {
        tile_shapes::<i8>();
    }

    fn tile_shapes<Q: Lanes>() {
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
                let x = ActRows::<Q>::quantize(&xf, m, nb * QK);
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
