//! x86 tiles of [`super::dot`] over panels: multiply-adds into 8 lanes, one per weight row. 16-bit
//! activations by AVX2 (`madd` + `add`) or AVX-512 VNNI / AVX-VNNI (`vpdpwssd`, one instruction
//! for 16 products); 8-bit ones by AVX2 (`maddubs` + `madd` + `add`) or VNNI (`vpdpbusd`, 32
//! products). Each block's 32 products per row are summed exactly in i32 before the one
//! conversion and FMA of the definition, so every path gives the scalar results bit for bit.
//!
//! The weight side of `maddubs` / `vpdpbusd` is unsigned: nibbles are used as stored (0..16) and
//! a Q4_0 block's sum corrected by `8 x sum(q)` afterwards (exact integers); VNNI takes a Q8_0
//! byte as `q + 128` (one XOR) and subtracts `128 x sum(q)`, AVX2 moves the weight's sign onto
//! the activation instead (`maddubs` would saturate on `q + 128`).

use super::k_quants::{SUBS, heads, value_bytes};
use super::{ActRow, ActRows, GgmlType, Out, PANEL, QK};
use crate::model::act_rows::Quant;
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

/// The path the products take: the one `MSN_HOST_ISA` names where it is set (and valid: the
/// loader rejects the others with the list), else the best one this CPU runs.
pub(crate) fn best() -> Option<Isa> {
    static CHOICE: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| match super::isa_override() {
        Some(name) => chosen(&name).unwrap_or_else(|_| detected()),
        None => detected(),
    })
}

/// The best path this CPU runs, if any.
fn detected() -> Option<Isa> {
    let base = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    if !base {
        return None;
    }
    // Every feature the AVX-512 kernels enable (`avx512f`, `avx512vl`, `avx512vnni`).
    if is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512f")
    {
        Some(Isa::Avx512Vnni)
    } else if is_x86_feature_detected!("avxvnni") {
        Some(Isa::AvxVnni)
    } else {
        Some(Isa::Avx2)
    }
}

/// The path `name` names (`scalar` for the definition itself), if this CPU runs it.
pub(crate) fn chosen(name: &str) -> Result<Option<Isa>, String> {
    let isa = match name {
        "scalar" => return Ok(None),
        "avx2" => Isa::Avx2,
        "avx-vnni" => Isa::AvxVnni,
        "avx512-vnni" => Isa::Avx512Vnni,
        other => return Err(format!("`{other}` is not one of {}", super::ISA_NAMES)),
    };
    if detected_all().contains(&isa) {
        Ok(Some(isa))
    } else {
        Err(format!(
            "`{name}` is not an instruction set this CPU runs (it runs: scalar{})",
            detected_all()
                .iter()
                .map(|i| format!(", {}", i.name()))
                .collect::<String>()
        ))
    }
}

impl Isa {
    /// The name `MSN_HOST_ISA` takes.
    fn name(self) -> &'static str {
        match self {
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512-vnni",
            Isa::AvxVnni => "avx-vnni",
        }
    }
}

/// Every path this CPU runs (for tests, whatever `MSN_HOST_ISA` says).
#[cfg(test)]
pub(crate) fn available() -> Vec<Isa> {
    detected_all()
}

/// Every path this CPU runs.
fn detected_all() -> Vec<Isa> {
    let Some(best) = detected() else {
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

/// How one instruction set multiplies one activation type with the chunks of a panel block: a
/// chunk holds `UNIT` bytes of each of the 8 rows (`8 x UNIT` bytes), and one multiply-add takes
/// `UNIT` products per lane.
trait Kernel {
    /// The activation integers.
    type Q: Quant;
    /// Values per lane and per row in a chunk.
    const UNIT: usize;
    /// What a Q8_0 block's sum is corrected by, times the activation block's integer sum.
    const Q8_OFFSET: i32;
    /// The nibble chunk at `p`: low and high nibbles, unsigned.
    unsafe fn nibbles(p: *const u8) -> (__m256i, __m256i);
    /// The Q8_0 chunk at `p`, as [`Self::dp_q8`] takes it.
    unsafe fn bytes(p: *const u8) -> __m256i;
    /// The chunk of unsigned bytes at `p` (below 64), as [`Self::dp`] takes it.
    unsafe fn ubytes(p: *const u8) -> __m256i;
    /// `acc` plus the products of unsigned weights `w` (below 16) with activations `x`.
    unsafe fn dp(acc: __m256i, w: __m256i, x: __m256i) -> __m256i;
    /// `acc` plus the products of a Q8_0 chunk from [`Self::bytes`] with activations `x`
    /// (offset by [`Self::Q8_OFFSET`] per activation).
    unsafe fn dp_q8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i;
}

/// 16-bit activations: chunks of 16 bytes, zero- or sign-extended to 16 bits.
macro_rules! kernel16 {
    ($name:ident, $dp:expr) => {
        struct $name;
        impl Kernel for $name {
            type Q = i16;
            const UNIT: usize = 2;
            const Q8_OFFSET: i32 = 0;
            #[inline(always)]
            unsafe fn nibbles(p: *const u8) -> (__m256i, __m256i) {
                // SAFETY (callers): 16 readable bytes; AVX2 enabled.
                unsafe {
                    let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(p.cast()));
                    (
                        _mm256_and_si256(v, _mm256_set1_epi16(0x0f)),
                        _mm256_srli_epi16(v, 4),
                    )
                }
            }
            #[inline(always)]
            unsafe fn bytes(p: *const u8) -> __m256i {
                // SAFETY (callers): 16 readable bytes; AVX2 enabled.
                unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast())) }
            }
            #[inline(always)]
            unsafe fn ubytes(p: *const u8) -> __m256i {
                // SAFETY (callers): 16 readable bytes; AVX2 enabled.
                unsafe { _mm256_cvtepu8_epi16(_mm_loadu_si128(p.cast())) }
            }
            #[inline(always)]
            unsafe fn dp(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
                // SAFETY (callers): the instruction set enabled.
                unsafe { $dp(acc, w, x) }
            }
            #[inline(always)]
            unsafe fn dp_q8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
                // SAFETY (callers): the instruction set enabled.
                unsafe { $dp(acc, w, x) }
            }
        }
    };
}

/// 8-bit activations: chunks of 32 bytes as they are.
macro_rules! kernel8 {
    ($name:ident, $dp:expr, $q8_offset:expr, $bytes:expr, $dp_q8:expr) => {
        struct $name;
        impl Kernel for $name {
            type Q = i8;
            const UNIT: usize = 4;
            const Q8_OFFSET: i32 = $q8_offset;
            #[inline(always)]
            unsafe fn nibbles(p: *const u8) -> (__m256i, __m256i) {
                // SAFETY (callers): 32 readable bytes; AVX2 enabled.
                unsafe {
                    let v = _mm256_loadu_si256(p.cast());
                    let low = _mm256_set1_epi8(0x0f);
                    (
                        _mm256_and_si256(v, low),
                        _mm256_and_si256(_mm256_srli_epi16(v, 4), low),
                    )
                }
            }
            #[inline(always)]
            unsafe fn bytes(p: *const u8) -> __m256i {
                // SAFETY (callers): 32 readable bytes; AVX2 enabled.
                unsafe { $bytes(_mm256_loadu_si256(p.cast())) }
            }
            #[inline(always)]
            unsafe fn ubytes(p: *const u8) -> __m256i {
                // SAFETY (callers): 32 readable bytes; AVX2 enabled.
                unsafe { _mm256_loadu_si256(p.cast()) }
            }
            #[inline(always)]
            unsafe fn dp(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
                // SAFETY (callers): the instruction set enabled.
                unsafe { $dp(acc, w, x) }
            }
            #[inline(always)]
            unsafe fn dp_q8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
                // SAFETY (callers): the instruction set enabled.
                unsafe { $dp_q8(acc, w, x) }
            }
        }
    };
}

/// AVX2's 16-bit multiply-add: `madd` then `add`.
#[inline(always)]
unsafe fn madd16(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    // SAFETY (callers): AVX2 enabled.
    unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(w, x)) }
}

/// AVX2's 8-bit multiply-add of unsigned `w` and signed `x` (pairs summed in 16 bits, which
/// holds for weights below 16 or of magnitude at most 128 against activations of at most 127).
#[inline(always)]
unsafe fn maddubs8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    // SAFETY (callers): AVX2 enabled.
    unsafe {
        let p = _mm256_maddubs_epi16(w, x);
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
    }
}

/// AVX2's signed 8-bit product: the weight's magnitude times the activation with its sign.
#[inline(always)]
unsafe fn signed8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    // SAFETY (callers): AVX2 enabled.
    unsafe { maddubs8(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(x, w)) }
}

/// `q + 128` as unsigned bytes.
#[inline(always)]
unsafe fn biased(v: __m256i) -> __m256i {
    // SAFETY (callers): AVX2 enabled.
    unsafe { _mm256_xor_si256(v, _mm256_set1_epi8(-128)) }
}

#[inline(always)]
unsafe fn same(v: __m256i) -> __m256i {
    v
}

kernel16!(Avx2x16, madd16);
kernel16!(Vnni512x16, _mm256_dpwssd_epi32);
kernel16!(VexX16, _mm256_dpwssd_avx_epi32);
kernel8!(Avx2x8, maddubs8, 0, same, signed8);
kernel8!(
    Vnni512x8,
    _mm256_dpbusd_epi32,
    128,
    biased,
    _mm256_dpbusd_epi32
);
kernel8!(
    VexX8,
    _mm256_dpbusd_avx_epi32,
    128,
    biased,
    _mm256_dpbusd_avx_epi32
);

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;
const Q4K: u8 = 3;
const Q5K: u8 = 4;
const Q6K: u8 = 5;

macro_rules! rows_fn {
    ($(#[$doc:meta])* $name:ident, $q:ty, $avx2:ty, $vnni:ty, $vex:ty) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU runs `isa`; `w` holds at least `n.div_ceil(8)` panels of `nb` blocks of `ty`
        /// (one with integer products) packed for this activation type; `x` is `nb` blocks
        /// wide with `out`'s rows; features `first..first + n` of `out` exist and are this
        /// call's alone.
        #[allow(clippy::too_many_arguments)]
        pub(super) unsafe fn $name(
            isa: Isa,
            ty: GgmlType,
            w: &[u8],
            nb: usize,
            x: &ActRows<$q>,
            first: usize,
            n: usize,
            out: Out<'_>,
        ) {
            let t = match ty {
                GgmlType::Q4_1 => Q4_1,
                GgmlType::Q8_0 | GgmlType::Q5_0 => Q8_0,
                GgmlType::Q4K => Q4K,
                GgmlType::Q5K => Q5K,
                GgmlType::Q6K => Q6K,
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
                    Isa::Avx2 => rows_avx2::<$avx2>(t, &a),
                    Isa::Avx512Vnni => rows_vnni512::<$vnni>(t, &a),
                    Isa::AvxVnni => rows_avxvnni::<$vex>(t, &a),
                }
            }
        }
    };
}

rows_fn!(
    /// Features `first..first + n` from the panels `w` (`nb` blocks each, starting at feature
    /// `first`) times every row of the 16-bit `x`, into `out`.
    rows16, i16, Avx2x16, Vnni512x16, VexX16
);
rows_fn!(
    /// As [`rows16`] for 8-bit activations.
    rows8, i8, Avx2x8, Vnni512x8, VexX8
);

/// What every tile reads, and where the results go.
struct Args<'a, Q> {
    w: &'a [u8],
    nb: usize,
    x: &'a ActRows<Q>,
    first: usize,
    n: usize,
    out: Out<'a>,
}

/// [`rows_of`] for the block type `t`, `M` activation rows per tile (inlined into each
/// instruction set's entry point, which enables its features).
///
/// # Safety
/// As for `rows_of`.
#[inline(always)]
unsafe fn by_type<K: Kernel, const M: usize>(t: u8, a: &Args<'_, K::Q>) {
    // SAFETY: as this function's.
    unsafe {
        match t {
            Q4_1 => rows_of::<K, Q4_1, M>(a),
            Q8_0 => rows_of::<K, Q8_0, M>(a),
            Q4K => rows_of::<K, Q4K, M>(a),
            Q5K => rows_of::<K, Q5K, M>(a),
            Q6K => rows_of::<K, Q6K, M>(a),
            _ => rows_of::<K, Q4_0, M>(a),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<K: Kernel>(t: u8, a: &Args<'_, K::Q>) {
    // SAFETY: as for `by_type`.
    unsafe { by_type::<K, 4>(t, a) }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn rows_vnni512<K: Kernel>(t: u8, a: &Args<'_, K::Q>) {
    // SAFETY: as for `by_type`.
    unsafe { by_type::<K, 8>(t, a) }
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn rows_avxvnni<K: Kernel>(t: u8, a: &Args<'_, K::Q>) {
    // SAFETY: as for `by_type`.
    unsafe { by_type::<K, 4>(t, a) }
}

/// Bytes of a panel per 32 values.
const fn block_bytes(t: u8) -> usize {
    match t {
        Q4_0 => PANEL * 18,
        Q4_1 => PANEL * 20,
        Q8_0 => PANEL * 34,
        _ => super_bytes(t) / SUBS,
    }
}

/// Bytes of a K-quant panel per super-block.
const fn super_bytes(t: u8) -> usize {
    heads(t == Q6K) + SUBS * PANEL * value_bytes(t == Q4K)
}

/// Tiles over the output, one panel at a time (a tile over several panels reads several
/// memory streams at once, which measured up to 2x slower from memory on a Zen 4 EPYC): `M`
/// activation rows per tile, the tail by tiles of 4, 2 and 1; each weight chunk is unpacked once
/// per tile and each activation group broadcast once per tile.
///
/// # Safety
/// As [`rows16`]; the enabled features cover `K`.
#[inline(always)]
unsafe fn rows_of<K: Kernel, const T: u8, const M: usize>(a: &Args<'_, K::Q>) {
    let m = a.x.rows();
    let pb = a.nb * block_bytes(T);
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
                    put(a, p, j, &any_tile::<K, T, M>(w, nb, x, j));
                    M
                } else if M > 4 && left >= 4 {
                    put(a, p, j, &any_tile::<K, T, 4>(w, nb, x, j));
                    4
                } else if left >= 2 {
                    put(a, p, j, &any_tile::<K, T, 2>(w, nb, x, j));
                    2
                } else {
                    put(a, p, j, &any_tile::<K, T, 1>(w, nb, x, j));
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
/// AVX enabled; panel `p`'s features and rows `j..j + M` are the call's (see [`rows16`]).
#[inline(always)]
unsafe fn put<Q, const M: usize>(a: &Args<'_, Q>, p: usize, j: usize, t: &[__m256; M]) {
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

/// The 32 bits of activations at `q` (two 16-bit or four 8-bit values), broadcast to every lane.
#[inline(always)]
unsafe fn group<Q>(q: *const Q) -> __m256i {
    // SAFETY (callers): four readable bytes.
    unsafe { _mm256_set1_epi32(q.cast::<i32>().read_unaligned()) }
}

/// Activation rows `j..j + M` (a loop, not `array::from_fn`: its closure is not inlined into
/// the kernels, which measured ~4% of a forward).
#[inline(always)]
fn rows_at<Q: Quant, const M: usize>(x: &ActRows<Q>, j: usize) -> [ActRow<'_, Q>; M] {
    let mut xs = [x.row(j); M];
    for (c, r) in xs.iter_mut().enumerate().skip(1) {
        *r = x.row(j + c);
    }
    xs
}

/// Where block `b` of each row starts.
#[inline(always)]
fn starts<Q, const M: usize>(xs: &[ActRow<'_, Q>; M], b: usize) -> [*const Q; M] {
    let mut p = [std::ptr::null(); M];
    for (p, r) in p.iter_mut().zip(xs) {
        *p = r.qs.as_ptr().wrapping_add(b * QK);
    }
    p
}

/// One block of nibbles at `w` (a panel's 8 rows, chunks of `K::UNIT` bytes per row: value `i`
/// low, `16 + i` high) times the activations at `xq`, into `lo` (and `hi` where `dual`).
///
/// # Safety
/// The enabled features cover `K`; `w` holds the block, each `xq` a block of activations.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn nibble_block<K: Kernel, const M: usize>(
    w: *const u8,
    xq: &[*const K::Q; M],
    dual: bool,
    lo: &mut [__m256i; M],
    hi: &mut [__m256i; M],
) {
    let (unit, chunk) = (K::UNIT, PANEL * K::UNIT);
    // SAFETY (callers): as above.
    unsafe {
        for c in 0..QK / 2 / unit {
            let (wl, wh) = K::nibbles(w.add(chunk * c));
            for k in 0..M {
                lo[k] = K::dp(lo[k], wl, group(xq[k].add(unit * c)));
                let xh = group(xq[k].add(QK / 2 + unit * c));
                if dual {
                    hi[k] = K::dp(hi[k], wh, xh);
                } else {
                    lo[k] = K::dp(lo[k], wh, xh);
                }
            }
        }
    }
}

/// [`tile`] or [`tile_k`], as `T` is.
///
/// # Safety
/// As theirs.
#[inline(always)]
unsafe fn any_tile<K: Kernel, const T: u8, const M: usize>(
    w: *const u8,
    nb: usize,
    x: &ActRows<K::Q>,
    j: usize,
) -> [__m256; M] {
    // SAFETY (callers): as the tiles'.
    unsafe {
        if T >= Q4K {
            tile_k::<K, T, M>(w, nb, x, j)
        } else {
            tile::<K, T, M>(w, nb, x, j)
        }
    }
}

/// The panel at `w` (`nb` blocks) times activation rows `j..j + M`: its 8 rows' results per
/// activation row, exactly as [`super::dot`].
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile<K: Kernel, const T: u8, const M: usize>(
    w: *const u8,
    nb: usize,
    x: &ActRows<K::Q>,
    j: usize,
) -> [__m256; M] {
    let xs = rows_at::<K::Q, M>(x, j);
    let bs = block_bytes(T);
    let heads = if T == Q4_1 { 32 } else { 16 };
    let (unit, chunk) = (K::UNIT, PANEL * K::UNIT);
    // Per block, the integer sum is corrected by this times the activations' integer sum.
    let offset = match T {
        Q4_0 => 8,
        Q8_0 => K::Q8_OFFSET,
        _ => 0,
    };
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
            let xq = starts(&xs, b);
            let blk = w.add(b * bs);
            if T == Q8_0 {
                for c in 0..QK / unit {
                    let wv = K::bytes(blk.add(heads + chunk * c));
                    for k in 0..M {
                        let xv = group(xq[k].add(unit * c));
                        if dual && c % 2 == 1 {
                            hi[k] = K::dp_q8(hi[k], wv, xv);
                        } else {
                            lo[k] = K::dp_q8(lo[k], wv, xv);
                        }
                    }
                }
            } else {
                nibble_block::<K, M>(blk.add(heads), &xq, dual, &mut lo, &mut hi);
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(blk.cast()));
            let mw = if T == Q4_1 {
                _mm256_cvtph_ps(_mm_loadu_si128(blk.add(16).cast()))
            } else {
                dw
            };
            for k in 0..M {
                let mut s = if dual {
                    _mm256_add_epi32(lo[k], hi[k])
                } else {
                    lo[k]
                };
                if offset != 0 {
                    let c = offset * *xs[k].isum.get_unchecked(b);
                    s = _mm256_sub_epi32(s, _mm256_set1_epi32(c));
                }
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

/// Eight lanes of bytes at `p` as f32: unsigned, or signed where `signed`.
#[inline(always)]
unsafe fn lanes_f32(p: *const u8, signed: bool) -> __m256 {
    // SAFETY (callers): 8 readable bytes; AVX2 enabled.
    unsafe {
        let b = _mm_loadl_epi64(p.cast());
        _mm256_cvtepi32_ps(if signed {
            _mm256_cvtepi8_epi32(b)
        } else {
            _mm256_cvtepu8_epi32(b)
        })
    }
}

/// [`tile`] for the K-quants (`T` one of them, `nb` a multiple of 8): per super-block the panel's
/// `d` (and `dmin`), per 32-value block its 8 rows' scales `d * sc` (and minima `-(dmin * m)`),
/// each one f32 product as the definition takes them; Q6_K's two halves summed apart and
/// corrected by `32 x` their activation sums.
///
/// # Safety
/// As [`tile`].
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile_k<K: Kernel, const T: u8, const M: usize>(
    w: *const u8,
    nb: usize,
    x: &ActRows<K::Q>,
    j: usize,
) -> [__m256; M] {
    let xs = rows_at::<K::Q, M>(x, j);
    let q6 = T == Q6K;
    let (vb, head) = (value_bytes(T == Q4K), heads(q6));
    let (unit, chunk) = (K::UNIT, PANEL * K::UNIT);
    let dual = M <= 4;
    // SAFETY (callers): a panel of nb / 8 super-blocks at `w`; the activation rows are nb
    // blocks wide.
    unsafe {
        let mut acc = [_mm256_setzero_ps(); M];
        for sb in 0..nb / SUBS {
            let blk = w.add(sb * super_bytes(T));
            let d = _mm256_cvtph_ps(_mm_loadu_si128(blk.cast()));
            let dmin = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(2 * PANEL).cast()));
            for sub in 0..SUBS {
                let b = sb * SUBS + sub;
                let vals = blk.add(head + sub * PANEL * vb);
                let xq = starts(&xs, b);
                let mut lo = [_mm256_setzero_si256(); M];
                let mut hi = [_mm256_setzero_si256(); M];
                if T == Q4K {
                    nibble_block::<K, M>(vals, &xq, dual, &mut lo, &mut hi);
                } else {
                    for c in 0..QK / unit {
                        let wv = K::ubytes(vals.add(chunk * c));
                        // Q6_K: the second half apart; Q5_K: two chains for small tiles.
                        let upper = if q6 {
                            c >= QK / 2 / unit
                        } else {
                            dual && c % 2 == 1
                        };
                        for k in 0..M {
                            let xv = group(xq[k].add(unit * c));
                            if upper {
                                hi[k] = K::dp(hi[k], wv, xv);
                            } else {
                                lo[k] = K::dp(lo[k], wv, xv);
                            }
                        }
                    }
                }
                if q6 {
                    let sc = blk.add(2 * PANEL + 2 * PANEL * sub);
                    let dlo = _mm256_mul_ps(d, lanes_f32(sc, true));
                    let dhi = _mm256_mul_ps(d, lanes_f32(sc.add(PANEL), true));
                    for k in 0..M {
                        let ilo = *xs[k].ilo.get_unchecked(b);
                        let ihi = *xs[k].isum.get_unchecked(b) - ilo;
                        let slo = _mm256_sub_epi32(lo[k], _mm256_set1_epi32(32 * ilo));
                        let shi = _mm256_sub_epi32(hi[k], _mm256_set1_epi32(32 * ihi));
                        let dx = _mm256_set1_ps(*xs[k].d.get_unchecked(b));
                        acc[k] = _mm256_fmadd_ps(
                            _mm256_mul_ps(dlo, dx),
                            _mm256_cvtepi32_ps(slo),
                            acc[k],
                        );
                        acc[k] = _mm256_fmadd_ps(
                            _mm256_mul_ps(dhi, dx),
                            _mm256_cvtepi32_ps(shi),
                            acc[k],
                        );
                    }
                } else {
                    let dw = _mm256_mul_ps(d, lanes_f32(blk.add(4 * PANEL + PANEL * sub), false));
                    let m =
                        _mm256_mul_ps(dmin, lanes_f32(blk.add(12 * PANEL + PANEL * sub), false));
                    let mw = _mm256_xor_ps(m, _mm256_set1_ps(-0.0));
                    for k in 0..M {
                        let s = if dual {
                            _mm256_add_epi32(lo[k], hi[k])
                        } else {
                            lo[k]
                        };
                        let dx = _mm256_set1_ps(*xs[k].d.get_unchecked(b));
                        acc[k] =
                            _mm256_fmadd_ps(_mm256_mul_ps(dw, dx), _mm256_cvtepi32_ps(s), acc[k]);
                        let sx = _mm256_set1_ps(*xs[k].s.get_unchecked(b));
                        acc[k] = _mm256_fmadd_ps(mw, sx, acc[k]);
                    }
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
unsafe fn peak_of<K: Kernel>(iters: usize) -> (f64, i32) {
    // SAFETY (callers): the features of `I` enabled.
    unsafe {
        let mut acc = [_mm256_setzero_si256(); 12];
        let x = std::hint::black_box(_mm256_set1_epi16(5));
        let t = std::time::Instant::now();
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = K::dp(*a, *a, x);
            }
        }
        std::hint::black_box(&mut acc);
        let s = t.elapsed().as_secs_f64();
        let sum = acc.iter().map(|a| _mm256_extract_epi32(*a, 0)).sum();
        ((iters * 12 * 8 * K::UNIT) as f64 / s, sum)
    }
}

/// The peak multiply-adds per second of one core on `isa` with 8- or 16-bit activations.
#[cfg(test)]
pub(crate) fn peak(isa: Isa, eight: bool, iters: usize) -> f64 {
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<K: Kernel>(iters: usize) -> f64 {
        unsafe { peak_of::<K>(iters).0 }
    }
    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    unsafe fn vnni512<K: Kernel>(iters: usize) -> f64 {
        unsafe { peak_of::<K>(iters).0 }
    }
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn vex<K: Kernel>(iters: usize) -> f64 {
        unsafe { peak_of::<K>(iters).0 }
    }
    // SAFETY: `isa` is one this CPU runs (callers take it from `best`/`available`).
    unsafe {
        match (isa, eight) {
            (Isa::Avx2, false) => avx2::<Avx2x16>(iters),
            (Isa::Avx2, true) => avx2::<Avx2x8>(iters),
            (Isa::Avx512Vnni, false) => vnni512::<Vnni512x16>(iters),
            (Isa::Avx512Vnni, true) => vnni512::<Vnni512x8>(iters),
            (Isa::AvxVnni, false) => vex::<VexX16>(iters),
            (Isa::AvxVnni, true) => vex::<VexX8>(iters),
        }
    }
}
