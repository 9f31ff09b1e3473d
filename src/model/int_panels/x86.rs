//! x86 tiles of [`super::dot`] over panels: 16-bit multiply-adds into 8 lanes, one per weight
//! row, by AVX2 (`madd` + `add`), AVX-512 VNNI on 256-bit registers or AVX-VNNI (`vpdpwssd`,
//! one instruction). Each block's 32 products per row are summed exactly in i32 before the one
//! conversion and FMA of the definition, so every path gives the scalar results bit for bit.

use super::{ActRow, ActRows, GgmlType, Out, PANEL, QK};
use std::arch::x86_64::*;

/// The instruction sets with a path here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 VNNI with 256-bit registers (AVX-512 VL).
    Avx512Vnni,
    /// AVX-VNNI (the VEX form of the same instruction).
    AvxVnni,
}

/// The best path this CPU runs, if any.
pub(crate) fn best() -> Option<Isa> {
    let base = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    if !base {
        return None;
    }
    if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
        Some(Isa::Avx512Vnni)
    } else if is_x86_feature_detected!("avxvnni") {
        Some(Isa::AvxVnni)
    } else {
        Some(Isa::Avx2)
    }
}

/// Every path this CPU runs (for tests).
#[cfg(test)]
pub(crate) fn available() -> Vec<Isa> {
    let Some(best) = best() else {
        return Vec::new();
    };
    let mut v = vec![Isa::Avx2];
    if best == Isa::Avx512Vnni {
        v.push(best);
        if is_x86_feature_detected!("avxvnni") {
            v.push(Isa::AvxVnni);
        }
    } else if best == Isa::AvxVnni {
        v.push(best);
    }
    v
}

/// `acc + (pairwise products of w and x summed into 32-bit lanes)`.
trait MulAdd {
    unsafe fn dp(acc: __m256i, w: __m256i, x: __m256i) -> __m256i;
}

struct Avx2;
impl MulAdd for Avx2 {
    #[inline(always)]
    unsafe fn dp(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY (callers): AVX2 enabled.
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(w, x)) }
    }
}

struct Vnni512;
impl MulAdd for Vnni512 {
    #[inline(always)]
    unsafe fn dp(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY (callers): AVX-512 VNNI and VL enabled.
        unsafe { _mm256_dpwssd_epi32(acc, w, x) }
    }
}

struct VnniVex;
impl MulAdd for VnniVex {
    #[inline(always)]
    unsafe fn dp(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        // SAFETY (callers): AVX-VNNI enabled.
        unsafe { _mm256_dpwssd_avx_epi32(acc, w, x) }
    }
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;

/// Features `first..first + n` from the panels `w` (`nb` blocks each, starting at feature
/// `first`) times every row of `x`, into `out`.
///
/// # Safety
/// The CPU runs `isa`; `w` holds at least `n.div_ceil(8)` panels of `nb` blocks of `ty` (one
/// with integer products); `x` is `nb` blocks wide with `out`'s rows; features
/// `first..first + n` of `out` exist and are this call's alone.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn rows(
    isa: Isa,
    ty: GgmlType,
    w: &[u8],
    nb: usize,
    x: &ActRows<i16>,
    first: usize,
    n: usize,
    out: Out<'_>,
) {
    let t = match ty {
        GgmlType::Q4_1 => Q4_1,
        GgmlType::Q8_0 => Q8_0,
        _ => Q4_0,
    };
    let a = Args {
        w,
        nb,
        x,
        first,
        n,
        out,
    };
    // SAFETY: as this function's.
    unsafe {
        match isa {
            Isa::Avx2 => rows_avx2(t, &a),
            Isa::Avx512Vnni => rows_vnni512(t, &a),
            Isa::AvxVnni => rows_avxvnni(t, &a),
        }
    }
}

/// What every tile reads, and where the results go.
struct Args<'a> {
    w: &'a [u8],
    nb: usize,
    x: &'a ActRows<i16>,
    first: usize,
    n: usize,
    out: Out<'a>,
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2(t: u8, a: &Args<'_>) {
    // SAFETY: as for `rows_of`.
    unsafe {
        match t {
            Q4_1 => rows_of::<Avx2, Q4_1, 4>(a),
            Q8_0 => rows_of::<Avx2, Q8_0, 4>(a),
            _ => rows_of::<Avx2, Q4_0, 4>(a),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn rows_vnni512(t: u8, a: &Args<'_>) {
    // SAFETY: as for `rows_of`.
    unsafe {
        match t {
            Q4_1 => rows_of::<Vnni512, Q4_1, 8>(a),
            Q8_0 => rows_of::<Vnni512, Q8_0, 8>(a),
            _ => rows_of::<Vnni512, Q4_0, 8>(a),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn rows_avxvnni(t: u8, a: &Args<'_>) {
    // SAFETY: as for `rows_of`.
    unsafe {
        match t {
            Q4_1 => rows_of::<VnniVex, Q4_1, 4>(a),
            Q8_0 => rows_of::<VnniVex, Q8_0, 4>(a),
            _ => rows_of::<VnniVex, Q4_0, 4>(a),
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

/// Tiles over the output, one panel at a time (a tile over several panels reads several
/// streams at once, which measured up to 2x slower from memory on a Zen 4 EPYC): `M`
/// activation rows per tile, the tail by tiles of 4, 2 and 1; each weight chunk is unpacked once
/// per tile and each activation pair broadcast once per tile.
///
/// # Safety
/// As [`rows`]; the enabled features cover `I`.
#[inline(always)]
unsafe fn rows_of<I: MulAdd, const T: u8, const M: usize>(a: &Args<'_>) {
    let m = a.x.rows();
    let pb = a.nb * PANEL * type_size(T);
    let (nb, x) = (a.nb, a.x);
    // SAFETY: every tile reads panel p < n.div_ceil(8) and activation rows < m, and writes
    // features first + 8p.. (< first + n) of rows < m.
    unsafe {
        for p in 0..a.n.div_ceil(PANEL) {
            let w = a.w.as_ptr().add(p * pb);
            let mut j = 0;
            while j < m {
                let left = m - j;
                j += if left >= M {
                    put(a, p, j, &tile::<I, T, M>(w, nb, x, j));
                    M
                } else if M > 4 && left >= 4 {
                    put(a, p, j, &tile::<I, T, 4>(w, nb, x, j));
                    4
                } else if left >= 2 {
                    put(a, p, j, &tile::<I, T, 2>(w, nb, x, j));
                    2
                } else {
                    put(a, p, j, &tile::<I, T, 1>(w, nb, x, j));
                    1
                };
            }
        }
    }
}

/// Writes a tile of results (the 8 features of panel `p`) for activation rows from `j`,
/// leaving out the padding features.
///
/// # Safety
/// AVX enabled; panel `p`'s features and rows `j..j + M` are the call's (see [`rows`]).
#[inline(always)]
unsafe fn put<const M: usize>(a: &Args<'_>, p: usize, j: usize, t: &[__m256; M]) {
    let r0 = p * PANEL;
    let count = (a.n - r0).min(PANEL);
    for (c, v) in t.iter().enumerate() {
        let mut lanes = [0f32; PANEL];
        // SAFETY: 8 writable floats; the features and rows are ours (callers).
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), *v);
            a.out.set_run(j + c, a.first + r0, &lanes[..count]);
        }
    }
}

/// The pair of 16-bit activations at `q` (two values), broadcast to every lane.
#[inline(always)]
unsafe fn pair(q: *const i16) -> __m256i {
    // SAFETY (callers): two readable values.
    unsafe { _mm256_set1_epi32(q.cast::<i32>().read_unaligned()) }
}

/// The panel at `w` (`nb` blocks) times activation rows `j..j + M`: its 8 rows' results per
/// activation row, exactly as [`super::dot`].
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile<I: MulAdd, const T: u8, const M: usize>(
    w: *const u8,
    nb: usize,
    x: &ActRows<i16>,
    j: usize,
) -> [__m256; M] {
    let xs: [ActRow<'_, i16>; M] = std::array::from_fn(|c| x.row(j + c));
    let bs = PANEL * type_size(T);
    let heads = if T == Q4_1 { 32 } else { 16 };
    // Small tiles split each sum into two chains, so that enough multiply-adds are in flight
    // to cover the instruction's latency (the integer sums are exact, so the split changes
    // nothing).
    let dual = M <= 4;
    // SAFETY (callers): a panel of nb blocks at `w`; the activation rows are nb blocks wide.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); M];
        for b in 0..nb {
            // No closures here: they would not inherit this function's target features.
            let mut lo = [_mm256_setzero_si256(); M];
            let mut hi = [_mm256_setzero_si256(); M];
            let xq: [*const i16; M] = std::array::from_fn(|c| xs[c].qs.as_ptr().add(b * QK));
            let blk = w.add(b * bs);
            if T == Q8_0 {
                for c in 0..16 {
                    let q = blk.add(heads + 16 * c);
                    let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(q.cast()));
                    for k in 0..M {
                        let xv = pair(xq[k].add(2 * c));
                        if dual && c % 2 == 1 {
                            hi[k] = I::dp(hi[k], wv, xv);
                        } else {
                            lo[k] = I::dp(lo[k], wv, xv);
                        }
                    }
                }
            } else {
                let low = _mm256_set1_epi16(0x0f);
                for c in 0..8 {
                    let q = blk.add(heads + 16 * c);
                    let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(q.cast()));
                    let mut wl = _mm256_and_si256(v, low);
                    let mut wh = _mm256_srli_epi16(v, 4);
                    if T == Q4_0 {
                        let eight = _mm256_set1_epi16(8);
                        wl = _mm256_sub_epi16(wl, eight);
                        wh = _mm256_sub_epi16(wh, eight);
                    }
                    for k in 0..M {
                        lo[k] = I::dp(lo[k], wl, pair(xq[k].add(2 * c)));
                        let xh = pair(xq[k].add(16 + 2 * c));
                        if dual {
                            hi[k] = I::dp(hi[k], wh, xh);
                        } else {
                            lo[k] = I::dp(lo[k], wh, xh);
                        }
                    }
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.cast()));
            let mw = if T == Q4_1 {
                _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16).cast()))
            } else {
                dw
            };
            for k in 0..M {
                let s = if dual {
                    _mm256_add_epi32(lo[k], hi[k])
                } else {
                    lo[k]
                };
                let dd = _mm256_mul_ps(dw, _mm256_set1_ps(*xs[k].d.get_unchecked(b)));
                acc[k] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(s), acc[k]);
                if T == Q4_1 {
                    let sx = _mm256_set1_ps(*xs[k].s.get_unchecked(b));
                    acc[k] = _mm256_fmadd_ps(mw, sx, acc[k]);
                }
            }
        }
        acc
    }
}

/// The peak multiply-adds per second of `I`'s 16-bit multiply-add on one core: 12 independent
/// chains, `iters` rounds, each step multiplying the chain's own value (so nothing is loop
/// invariant).
#[cfg(test)]
#[inline(always)]
unsafe fn peak_of<I: MulAdd>(iters: usize) -> (f64, i32) {
    // SAFETY (callers): the features of `I` enabled.
    unsafe {
        let mut acc = [_mm256_setzero_si256(); 12];
        let x = std::hint::black_box(_mm256_set1_epi16(5));
        let t = std::time::Instant::now();
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = I::dp(*a, *a, x);
            }
        }
        std::hint::black_box(&mut acc);
        let s = t.elapsed().as_secs_f64();
        let sum = acc.iter().map(|a| _mm256_extract_epi32(*a, 0)).sum();
        ((iters * 12 * 16) as f64 / s, sum)
    }
}

/// The peak 16-bit multiply-adds per second of one core on `isa`.
#[cfg(test)]
pub(crate) fn peak(isa: Isa, iters: usize) -> f64 {
    #[target_feature(enable = "avx2")]
    unsafe fn avx2(iters: usize) -> (f64, i32) {
        unsafe { peak_of::<Avx2>(iters) }
    }
    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    unsafe fn vnni512(iters: usize) -> (f64, i32) {
        unsafe { peak_of::<Vnni512>(iters) }
    }
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn vex(iters: usize) -> (f64, i32) {
        unsafe { peak_of::<VnniVex>(iters) }
    }
    // SAFETY: `isa` is one this CPU runs (callers take it from `best`/`available`).
    unsafe {
        match isa {
            Isa::Avx2 => avx2(iters).0,
            Isa::Avx512Vnni => vnni512(iters).0,
            Isa::AvxVnni => vex(iters).0,
        }
    }
}
