//! x86 tiles of [`super::dot`] over panels: multiply-adds into 8 lanes, one per weight row, or,
//! with AVX-512, 16 lanes over two adjacent panels. 16-bit activations by AVX2 (`madd` + `add`)
//! or AVX-512 VNNI / AVX-VNNI (`vpdpwssd`, one instruction for 16 products in 256 bits, 32 in
//! 512); 8-bit ones by AVX2 (`maddubs` + `madd` + `add`) or VNNI (`vpdpbusd`, 32 products in 256
//! bits, 64 in 512). Each block's 32 products per row are summed exactly in i32 before the one
//! conversion and FMA of the definition, so every path gives the scalar results bit for bit.
//!
//! The weight side of `maddubs` / `vpdpbusd` is unsigned: nibbles are used as stored (0..16) and
//! a Q4_0 block's sum corrected by `8 x sum(q)` afterwards (exact integers); VNNI takes a Q8_0
//! byte as `q + 128` (one XOR) and subtracts `128 x sum(q)`, AVX2 moves the weight's sign onto
//! the activation instead (`maddubs` would saturate on `q + 128`).

use super::k_quants::{SUBS, heads, value_bytes};
use super::lanes::{Lanes, Y, Y2, Z, pair128, pair256};
use super::{ActRow, ActRows, GgmlType, Out, PANEL, QK};
use crate::model::act_rows::Quant;
use std::arch::asm;
use std::arch::x86_64::*;
use std::ops::Range;

/// The instruction sets with a path here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 VNNI (with BW and VL): two panels at a time in 512-bit registers.
    Avx512Vnni,
    /// AVX-512 VNNI in 256-bit registers only (AVX-512 VL), a panel at a time.
    Avx512Vnni256,
    /// AVX-VNNI (the VEX form of the same instruction).
    AvxVnni,
}

/// The paths the products take: the one `MSN_HOST_ISA` names where it is set (and valid: the
/// loader rejects the others with the list) for every product, else the best ones this CPU
/// runs (see [`best_for`]).
#[derive(Clone, Copy)]
struct Paths {
    /// For one activation row, and for several rows over short weight rows.
    one: Option<Isa>,
    /// For several activation rows over weight rows at least [`WIDE_512`] values wide.
    wide: Option<Isa>,
}

fn paths() -> Paths {
    static PATHS: std::sync::OnceLock<Paths> = std::sync::OnceLock::new();
    *PATHS.get_or_init(|| match super::isa_override() {
        Some(name) => {
            let isa = chosen(&name).unwrap_or_else(|_| detected());
            Paths {
                one: isa,
                wide: isa,
            }
        }
        None => {
            let one = detected();
            let wide =
                if one == Some(Isa::Avx512Vnni256) && detected_all().contains(&Isa::Avx512Vnni) {
                    Some(Isa::Avx512Vnni)
                } else {
                    one
                };
            Paths { one, wide }
        }
    })
}

/// The path for a product of `rows` activation rows `width` values wide: the detected one,
/// except that on AMD's AVX-512 CPUs (where [`detected`] takes the 256-bit path) a product of
/// [`ROWS_512`] or more rows over long weight rows, or of two rows over longer ones
/// ([`WIDE_512_TWO_ROWS`]), takes the 512-bit tiles. Measured on Zen 4
/// (2 cores, 2026-12-04, 1B Q4_0, forwards into an empty cache, best of 10-12): one or two
/// rows are bound by memory, where the 512-bit tiles' two streams lose (two rows 28.2-28.5
/// against 30.5-31.3 ms); from three rows over 2048-wide weights they gain (3 / 4 / 8 / 16 / 64
/// rows 1.13x / 1.28x / 1.34x / 1.31x / 1.34x), while on SmolLM2's (576 and 1536 values wide)
/// the 256-bit tiles stay as fast or faster (short panels, whose two streams never reach
/// speed) unless the panels are stored in pairs (`paired`, see [`reads_pairs`]): then the
/// wide path takes every product. Every path gives the same bits.
pub(crate) fn best_for(rows: usize, width: usize, paired: bool) -> Option<Isa> {
    let p = paths();
    if paired
        || (rows >= ROWS_512 && width >= WIDE_512)
        || (rows == 2 && width >= WIDE_512_TWO_ROWS)
        || width >= WIDE_512_ONE_ROW
    {
        p.wide
    } else {
        p.one
    }
}

/// Whether panels of `ty`, `panel_bytes` each, are stored in pairs here
/// ([`super::Panels::paired`]): where the 512-bit tiles (which read two panels at a time) are
/// the wide path, for the 32-value block types' panels shorter than [`SHORT_PANEL`] bytes.
/// Those tiles then take every product of them ([`best_for`]).
pub(crate) fn reads_pairs(ty: GgmlType, panel_bytes: usize) -> bool {
    paths().wide == Some(Isa::Avx512Vnni)
        && matches!(
            ty,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0
        )
        && panel_bytes < SHORT_PANEL
}

/// Panels shorter than this (rows under ~1640 values of Q4_0 / Q4_1, ~960 of Q8_0) are stored
/// in pairs on CPUs with 512-bit tiles. Those tiles read two panels, each a memory stream of its
/// own that starts afresh at every pair: over SmolLM2's 576-value rows (Q4_1 panels of 2,880
/// bytes) they streamed at 16-17 GMAC/s against the 256-bit tiles' 44-46 (one Zen 4 core, one
/// activation row; 28 against 68 at two rows). In pairs, streaming at 1 / 2 / 4 / 8 rows
/// (GMAC/s, against the 256-bit tiles over single panels): Q4_1 576 47 / 76 / 90 / 76 (44 /
/// 62-69 / 70 / 67); Q8_0 576 (SmolLM2's output matrix) 31-33 / 59 / 93 / 63 (32 / 55 / 74 /
/// 63); Q4_1 1536 (SmolLM2's `ffn_down`, 7,680-byte panels) 46-47 / 75 / 61-62 / 69 (45-47 /
/// 59-61 / 65-68 / 62-64), 5 rows 58-59 (48-50). Over 2048 values (9 KB and more) pairs
/// measured no faster than the 512-bit tiles over separate panels (Q4_0 2048: 50 / 66 / 58 /
/// 76 against 49 (256-bit) / 63 (256-bit) / 63 / 80), nor did the K-quants. SmolLM2's forward
/// of 1 / 2 / 3 / 4 / 5 / 8 / 64 tokens against the 256-bit tiles over single panels (2 cores,
/// best of 5 interleaved rounds, this and the 4-row 512-bit tiles together): 1.00x / 0.97x /
/// 0.97x / 0.91x / 0.94x / 0.96x / 0.89x the time.
const SHORT_PANEL: usize = 8192;

/// Products of at least this many activation rows take the 512-bit tiles on AMD (see
/// [`best_for`]).
const ROWS_512: usize = 3;

/// Weight rows at least this wide take the 512-bit tiles for several activation rows on AMD
/// (see [`best_for`]).
const WIDE_512: usize = 2048;

/// Weight rows at least this wide take the 512-bit tiles for two activation rows on AMD too.
/// The 256-bit tile of two rows slows down as rows grow (one Zen 4 core, Q4_K, 8192 rows in
/// L3: 62 GMAC/s at 2048 values, 45-47 at 3840-4096, 39 at 4352; the 512-bit one 75 and 63),
/// and two-token forwards into an empty cache (Zen 4, 2 cores, 2026-12-05, best of 8, two
/// runs) took 1B Q4_K_M 31.7 -> 26.3-28.9 ms, 1B Q4_0 29-31 -> 24.1-26.2 ms (its 8192-wide
/// `ffn_down`) and 8B Q4_K_M 265-310 -> 178-196 ms (every matrix 4096 or 14336 wide).
const WIDE_512_TWO_ROWS: usize = 4096;

/// Weight rows at least this wide take the 512-bit tiles on AMD for one activation row too.
/// The 256-bit tiles' one-row product slows down as rows grow beyond 4096 values, with the same
/// bytes streamed (one Zen 4 core, 4096 x 14336 values and the same bytes in narrower rows,
/// GMAC/s): Q4_K 42 at 4096 values, 26 at 8192 and 14336; Q6_K 27, 22, 21 (in cache they are
/// equal: the activation row re-read for every panel, 16-28 KiB, is what no longer stays in L1
/// beside the stream). The 512-bit tiles read it once for two panels: 28 / 34 / 34 and 20 / 22 /
/// 24.
const WIDE_512_ONE_ROW: usize = 8192;

/// The best path this CPU runs, if any. AVX-512 CPUs of AMD take the 256-bit path: on Zen 4
/// (512-bit instructions split in two 256-bit halves) the 512-bit tiles, which read two panels
/// as two memory streams, measured slower at every batch size (SmolLM2 Q4_1, 2 cores,
/// 2026-12-04: one-token decode 160 against 257 tokens/s, a forward of 8 tokens 20.3 against
/// 18.9 ms, prefill 879 against 964 tokens/s); on Intel they are the faster ones.
fn detected() -> Option<Isa> {
    let all = detected_all();
    let has = |i: Isa| all.contains(&i);
    if has(Isa::Avx512Vnni) && !amd() {
        Some(Isa::Avx512Vnni)
    } else if has(Isa::Avx512Vnni256) {
        Some(Isa::Avx512Vnni256)
    } else if has(Isa::AvxVnni) {
        Some(Isa::AvxVnni)
    } else {
        all.first().copied()
    }
}

/// Whether the CPU's vendor string (CPUID leaf 0) is AMD's.
fn amd() -> bool {
    let r = std::arch::x86_64::__cpuid(0);
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..].copy_from_slice(&r.ecx.to_le_bytes());
    &v == b"AuthenticAMD"
}

/// The path `name` names (`scalar` for the definition itself), if this CPU runs it.
pub(crate) fn chosen(name: &str) -> Result<Option<Isa>, String> {
    let isa = match name {
        "scalar" => return Ok(None),
        "avx2" => Isa::Avx2,
        "avx-vnni" => Isa::AvxVnni,
        "avx512-vnni" => Isa::Avx512Vnni,
        "avx512-vnni-256" => Isa::Avx512Vnni256,
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
            Isa::Avx512Vnni256 => "avx512-vnni-256",
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
    let base = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    if !base {
        return Vec::new();
    }
    let mut v = vec![Isa::Avx2];
    // Every feature the AVX-512 kernels enable (`avx512f`, `avx512vl`, `avx512vnni`; the
    // 512-bit ones also `avx512bw`).
    if is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512f")
    {
        v.push(Isa::Avx512Vnni256);
        if is_x86_feature_detected!("avx512bw") {
            v.push(Isa::Avx512Vnni);
        }
    }
    if is_x86_feature_detected!("avxvnni") {
        v.push(Isa::AvxVnni);
    }
    v
}

/// How one instruction set multiplies one activation type with the chunks of panel blocks: a
/// chunk holds `UNIT` bytes of each of a panel's 8 rows (`8 x UNIT` bytes), and one multiply-add
/// takes `UNIT` products per lane, over the lanes of `L` (one panel, or two `stride` bytes apart).
trait Kernel {
    /// The activation integers.
    type Q: Quant;
    /// The registers.
    type L: Lanes;
    /// Values per lane and per row in a chunk.
    const UNIT: usize;
    /// What a Q8_0 block's sum is corrected by, times the activation block's integer sum.
    const Q8_OFFSET: i32;
    /// Tiles of up to this many activation rows split each sum into two chains, so that enough
    /// multiply-adds are in flight to cover the instruction's latency (the integer sums are
    /// exact, so the split changes nothing); 0 where the chain is a 1-cycle add (AVX2).
    const DUAL_UP_TO: usize;
    /// Whether one-row K-quant tiles prefetch their weights ([`PREFETCH_AHEAD`]) as tiles of
    /// more rows do: on the AVX2 path, whose one-row products stream slower. One-token forward
    /// on one Zen 4 VM, one process switching between forwards: AVX2 path, Llama 3.2 1B shape
    /// Q4_K_M 0.95x the time, Llama 3.1 8B shape 0.93x; the AVX-512 VNNI path measured 1.05-1.10x
    /// slower with it, so it stays off there.
    const PREFETCH_ONE_ROW_K: bool = false;
    /// The nibble chunks at `p` (and `p + stride`): low and high nibbles, unsigned.
    unsafe fn nibbles(p: *const u8, stride: usize) -> (Iv<Self>, Iv<Self>);
    /// The Q8_0 chunks at `p` (and `p + stride`), as [`Self::dp_q8`] takes them.
    unsafe fn bytes(p: *const u8, stride: usize) -> Iv<Self>;
    /// The chunks of unsigned bytes at `p` (and `p + stride`; below 64), as [`Self::dp`] takes
    /// them.
    unsafe fn ubytes(p: *const u8, stride: usize) -> Iv<Self>;
    /// `acc` plus the products of unsigned weights `w` (below 16) with activations `x`.
    unsafe fn dp(acc: Iv<Self>, w: Iv<Self>, x: Iv<Self>) -> Iv<Self>;
    /// [`Self::dp`] with the activation group at `x` in every lane (one instruction that
    /// broadcasts from memory where the instruction set has one).
    #[inline(always)]
    unsafe fn dp_at(acc: Iv<Self>, w: Iv<Self>, x: *const Self::Q) -> Iv<Self> {
        // SAFETY (callers): a group of activations readable at `x`; the features enabled.
        unsafe { Self::dp(acc, w, Self::L::group(x)) }
    }
    /// `acc` plus the products of Q8_0 chunks from [`Self::bytes`] with activations `x`
    /// (offset by [`Self::Q8_OFFSET`] per activation).
    unsafe fn dp_q8(acc: Iv<Self>, w: Iv<Self>, x: Iv<Self>) -> Iv<Self>;
    /// One activation row's whole block of nibble chunks (as [`nibble_block`] with one row and
    /// two chains) in one piece of assembly, where the kernel has one: false where not.
    #[inline(always)]
    unsafe fn nibble_block_one(
        _w: *const u8,
        _x: *const Self::Q,
        _lo: &mut Iv<Self>,
        _hi: &mut Iv<Self>,
    ) -> bool {
        false
    }
    /// As [`Self::nibble_block_one`] for two activation rows (`x[0]`, `x[1]`).
    #[inline(always)]
    unsafe fn nibble_block_two(
        _w: *const u8,
        _x: [*const Self::Q; 2],
        _lo: [&mut Iv<Self>; 2],
        _hi: [&mut Iv<Self>; 2],
    ) -> bool {
        false
    }
    /// As [`Self::nibble_block_one`] for a Q6_K sub-block ([`six_block`] with one row).
    #[inline(always)]
    unsafe fn six_block_one(
        _w: *const u8,
        _x: *const Self::Q,
        _lo: &mut Iv<Self>,
        _hi: &mut Iv<Self>,
    ) -> bool {
        false
    }
}

/// A kernel's integer lanes.
type Iv<K> = <<K as Kernel>::L as Lanes>::I;
/// A kernel's f32 lanes.
type Fv<K> = <<K as Kernel>::L as Lanes>::F;

/// A 16-bit kernel's `dp_at`: `$dp_at`, which broadcasts from memory itself.
macro_rules! dp_at {
    ($dp_at:expr) => {
        #[inline(always)]
        unsafe fn dp_at(acc: __m256i, w: __m256i, x: *const i16) -> __m256i {
            // SAFETY (callers): 4 readable bytes at `x`; the instruction set enabled.
            unsafe { $dp_at(acc, w, x) }
        }
    };
}

/// A 16-bit kernel's blocks of nibble chunks for two rows: `$nibbles`.
macro_rules! two_rows {
    ($nibbles:expr) => {
        #[inline(always)]
        unsafe fn nibble_block_two(
            w: *const u8,
            x: [*const i16; 2],
            lo: [&mut __m256i; 2],
            hi: [&mut __m256i; 2],
        ) -> bool {
            // SAFETY (callers): a block of chunks at `w`, of activations at each `x`; the
            // instruction set enabled.
            unsafe { $nibbles(w, x, lo, hi) };
            true
        }
    };
}

/// A 16-bit kernel's one-row blocks: `$nibbles` for a block of nibble chunks, `$six` for a
/// Q6_K sub-block.
macro_rules! one_row {
    ($nibbles:expr, $six:expr) => {
        #[inline(always)]
        unsafe fn nibble_block_one(
            w: *const u8,
            x: *const i16,
            lo: &mut __m256i,
            hi: &mut __m256i,
        ) -> bool {
            // SAFETY (callers): a block of chunks at `w`, of activations at `x`; the
            // instruction set enabled.
            unsafe { $nibbles(w, x, lo, hi) };
            true
        }
        #[inline(always)]
        unsafe fn six_block_one(
            w: *const u8,
            x: *const i16,
            lo: &mut __m256i,
            hi: &mut __m256i,
        ) -> bool {
            // SAFETY (callers): a Q6_K sub-block at `w`, a block of activations at `x`; the
            // instruction set enabled.
            unsafe { $six(w, x, lo, hi) };
            true
        }
    };
}

/// 16-bit activations in 256-bit registers: chunks of 16 bytes, zero- or sign-extended to 16
/// bits.
macro_rules! kernel16 {
    // Without a broadcasting form: the trait's `dp_at` (a separate broadcast).
    ($name:ident, $dp:expr, $dual:expr) => {
        kernel16!(@impl $name, $dp, $dual, {});
    };
    // With the items given (`dp_at!`, `one_row!`).
    ($name:ident, $dp:expr, $dual:expr, { $($extra:item)* }) => {
        kernel16!(@impl $name, $dp, $dual, { $($extra)* });
    };
    (@impl $name:ident, $dp:expr, $dual:expr, { $($extra:item)* }) => {
        struct $name;
        impl Kernel for $name {
            type Q = i16;
            type L = Y;
            const UNIT: usize = 2;
            const Q8_OFFSET: i32 = 0;
            const DUAL_UP_TO: usize = $dual;
            #[inline(always)]
            unsafe fn nibbles(p: *const u8, _: usize) -> (__m256i, __m256i) {
                // SAFETY (callers): 16 readable bytes; AVX2 enabled.
                unsafe { nibbles16(p) }
            }
            #[inline(always)]
            unsafe fn bytes(p: *const u8, _: usize) -> __m256i {
                // SAFETY (callers): 16 readable bytes; AVX2 enabled.
                unsafe { _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast())) }
            }
            #[inline(always)]
            unsafe fn ubytes(p: *const u8, _: usize) -> __m256i {
                // SAFETY (callers): 16 readable bytes; AVX2 enabled.
                unsafe { _mm256_cvtepu8_epi16(_mm_loadu_si128(p.cast())) }
            }
            #[inline(always)]
            unsafe fn dp(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
                // SAFETY (callers): the instruction set enabled.
                unsafe { $dp(acc, w, x) }
            }
            $($extra)*
            #[inline(always)]
            unsafe fn dp_q8(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
                // SAFETY (callers): the instruction set enabled.
                unsafe { $dp(acc, w, x) }
            }
        }
    };
}

/// The nibble unpacking in assembly: the 16 bytes at `[$at..]` zero-extended to 16 bits in
/// `{h}`, their low nibbles into `{l}` (`{m}`: words of `0x0f`), `{h}` shifted to the high ones.
#[rustfmt::skip]
macro_rules! unpack_nibbles {
    ($($at:literal),+) => {
        concat!(
            "vpmovzxbw {h}, xmmword ptr [", $($at,)+ "]\n",
            "vpand {l}, {h}, {m}\n",
            "vpsrlw {h}, {h}, 4\n",
        )
    };
}

/// The 16 bytes at `p` zero-extended to 16 bits, as low and high nibbles: one widening load, an
/// AND and a shift, in inline assembly because LLVM rewrites the intrinsics' form into the AND
/// and shift on 128 bits, each followed by its own widening (6 vector instructions instead of
/// 3, which bounded a one-row product on Zen 4).
///
/// # Safety
/// 16 readable bytes at `p`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn nibbles16(p: *const u8) -> (__m256i, __m256i) {
    let (lo, hi): (__m256i, __m256i);
    // SAFETY (callers): 16 readable bytes at `p`; AVX2 (VEX encodings only: `ymm_reg` is
    // ymm0-15).
    unsafe {
        asm!(
            unpack_nibbles!("{p}"),
            p = in(reg) p,
            m = in(ymm_reg) _mm256_set1_epi16(0x0f),
            l = out(ymm_reg) lo,
            h = out(ymm_reg) hi,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
    (lo, hi)
}

/// 8-bit activations in 256-bit registers: chunks of 32 bytes as they are.
macro_rules! kernel8 {
    ($name:ident, $dp:expr, $q8_offset:expr, $bytes:expr, $dp_q8:expr, $dual:expr) => {
        struct $name;
        impl Kernel for $name {
            type Q = i8;
            type L = Y;
            const UNIT: usize = 4;
            const Q8_OFFSET: i32 = $q8_offset;
            const DUAL_UP_TO: usize = $dual;
            #[inline(always)]
            unsafe fn nibbles(p: *const u8, _: usize) -> (__m256i, __m256i) {
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
            unsafe fn bytes(p: *const u8, _: usize) -> __m256i {
                // SAFETY (callers): 32 readable bytes; AVX2 enabled.
                unsafe { $bytes(_mm256_loadu_si256(p.cast())) }
            }
            #[inline(always)]
            unsafe fn ubytes(p: *const u8, _: usize) -> __m256i {
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

// The 16-bit VNNI multiply-add in inline assembly: with a generic CPU tuning (what a library is
// built with) LLVM rewrites the register form of `vpdpwssd` into `vpmaddwd` + `vpaddd`, two
// instructions where the CPU takes one (it keeps only forms that read memory). The 8-bit
// `vpdpbusd` has no such rewrite.

/// `acc + w . x` in 32-bit lanes (pairs of 16-bit products), EVEX, 256 bits.
#[target_feature(enable = "avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn dpwssd256(mut acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    // SAFETY: register operands only; the features are enabled.
    unsafe {
        asm!("vpdpwssd {a}, {w}, {x}", a = inout(ymm_reg) acc, w = in(ymm_reg) w,
            x = in(ymm_reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

/// As [`dpwssd256`], VEX (AVX-VNNI).
#[target_feature(enable = "avxvnni")]
#[inline]
unsafe fn dpwssd_vex(mut acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
    // SAFETY: as above.
    unsafe {
        asm!("{{vex}} vpdpwssd {a}, {w}, {x}", a = inout(ymm_reg) acc, w = in(ymm_reg) w,
            x = in(ymm_reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

/// As [`dpwssd256`] in 512 bits.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn dpwssd512(mut acc: __m512i, w: __m512i, x: __m512i) -> __m512i {
    // SAFETY: as above.
    unsafe {
        asm!("vpdpwssd {a}, {w}, {x}", a = inout(zmm_reg) acc, w = in(zmm_reg) w,
            x = in(zmm_reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    acc
}

// One-row blocks in assembly measured no faster here (Zen 4's AVX2 path, in cache: Q4_0 and
// Q6_K unchanged, Q4_K +6%): AVX2's multiply-add is three instructions whatever the addressing.
kernel16!(Avx2x16, madd16, 0, {
    const PREFETCH_ONE_ROW_K: bool = true;
});

/// A one-panel kernel `K` over two panels in pairs of 256-bit registers ([`Y2`]): each
/// activation group loaded once for both panels.
struct Two<K>(std::marker::PhantomData<K>);

impl<K: Kernel<L = Y>> Kernel for Two<K> {
    type Q = K::Q;
    type L = Y2;
    const UNIT: usize = K::UNIT;
    const Q8_OFFSET: i32 = K::Q8_OFFSET;
    const DUAL_UP_TO: usize = K::DUAL_UP_TO;
    const PREFETCH_ONE_ROW_K: bool = K::PREFETCH_ONE_ROW_K;
    #[inline(always)]
    unsafe fn nibbles(p: *const u8, stride: usize) -> ([__m256i; 2], [__m256i; 2]) {
        // SAFETY (callers): a chunk at both; the features of `K` enabled.
        unsafe {
            let (a, b) = (K::nibbles(p, 0), K::nibbles(p.add(stride), 0));
            ([a.0, b.0], [a.1, b.1])
        }
    }
    #[inline(always)]
    unsafe fn bytes(p: *const u8, stride: usize) -> [__m256i; 2] {
        // SAFETY (callers): as above.
        unsafe { [K::bytes(p, 0), K::bytes(p.add(stride), 0)] }
    }
    #[inline(always)]
    unsafe fn ubytes(p: *const u8, stride: usize) -> [__m256i; 2] {
        // SAFETY (callers): as above.
        unsafe { [K::ubytes(p, 0), K::ubytes(p.add(stride), 0)] }
    }
    #[inline(always)]
    unsafe fn dp(acc: [__m256i; 2], w: [__m256i; 2], x: [__m256i; 2]) -> [__m256i; 2] {
        // SAFETY (callers): the features of `K` enabled.
        unsafe { [K::dp(acc[0], w[0], x[0]), K::dp(acc[1], w[1], x[1])] }
    }
    #[inline(always)]
    unsafe fn dp_q8(acc: [__m256i; 2], w: [__m256i; 2], x: [__m256i; 2]) -> [__m256i; 2] {
        // SAFETY (callers): the features of `K` enabled.
        unsafe { [K::dp_q8(acc[0], w[0], x[0]), K::dp_q8(acc[1], w[1], x[1])] }
    }
}
kernel16!(Vnni512x16, dpwssd256, 4, {
    dp_at!(dpwssd256_at);
    one_row!(nibbles256_one, six256_one);
    two_rows!(nibbles256_two);
});
// AVX-VNNI has no broadcasting form.
kernel16!(VexX16, dpwssd_vex, 4);
kernel8!(Avx2x8, maddubs8, 0, same, signed8, 0);
kernel8!(
    Vnni512x8,
    _mm256_dpbusd_epi32,
    128,
    biased,
    _mm256_dpbusd_epi32,
    4
);
kernel8!(
    VexX8,
    _mm256_dpbusd_avx_epi32,
    128,
    biased,
    _mm256_dpbusd_avx_epi32,
    4
);

/// [`dpwssd256`] of the 32-bit group at `x` in every lane, broadcast by the instruction itself
/// (EVEX `{1to8}`): no separate broadcast, which on Zen 4 takes a vector pipe.
#[target_feature(enable = "avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn dpwssd256_at(mut acc: __m256i, w: __m256i, x: *const i16) -> __m256i {
    // SAFETY (callers): 4 readable bytes at `x`; the features are enabled.
    unsafe {
        asm!("vpdpwssd {a}, {w}, dword ptr [{x}]{{1to8}}", a = inout(ymm_reg) acc,
            w = in(ymm_reg) w, x = in(reg) x, options(pure, readonly, nostack, preserves_flags));
    }
    acc
}

/// One chunk of [`nibbles256_one`]: weight bytes at `w + $w`, activation pairs at `x + $lo`
/// (low nibbles) and `x + $hi` (high).
#[rustfmt::skip]
macro_rules! nibble_chunk {
    ($w:literal, $lo:literal, $hi:literal, $a:literal, $b:literal) => {
        concat!(
            unpack_nibbles!("{w} + ", $w),
            "vpdpwssd {", $a, "}, {l}, dword ptr [{x} + ", $lo, "]{{1to8}}\n",
            "vpdpwssd {", $b, "}, {h}, dword ptr [{x} + ", $hi, "]{{1to8}}\n",
        )
    };
}

/// A block of 8 nibble chunks (16 bytes each: 8 rows' values `2c, 2c + 1` low, `16 + 2c,
/// 17 + 2c` high) at `w` times one row's 16-bit activations at `x`: the low nibbles' products
/// into `lo`, the high ones' into `hi`, as [`nibble_block`] computes them, in one piece of
/// assembly with constant offsets (the intrinsics' form took an address computation and a
/// reload of a spilled pointer per chunk).
///
/// # Safety
/// 128 readable bytes at `w`, 64 at `x`; the features enabled.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn nibbles256_one(w: *const u8, x: *const i16, lo: &mut __m256i, hi: &mut __m256i) {
    // SAFETY (callers): as above.
    unsafe {
        asm!(
            "vpxor {lo2}, {lo2}, {lo2}",
            "vpxor {hi2}, {hi2}, {hi2}",
            nibble_chunk!("0", "0", "32", "lo", "hi"),
            nibble_chunk!("16", "4", "36", "lo2", "hi2"),
            nibble_chunk!("32", "8", "40", "lo", "hi"),
            nibble_chunk!("48", "12", "44", "lo2", "hi2"),
            nibble_chunk!("64", "16", "48", "lo", "hi"),
            nibble_chunk!("80", "20", "52", "lo2", "hi2"),
            nibble_chunk!("96", "24", "56", "lo", "hi"),
            nibble_chunk!("112", "28", "60", "lo2", "hi2"),
            "vpaddd {lo}, {lo}, {lo2}",
            "vpaddd {hi}, {hi}, {hi2}",
            w = in(reg) w,
            x = in(reg) x,
            m = in(ymm_reg) _mm256_set1_epi16(0x0f),
            lo = inout(ymm_reg) *lo,
            hi = inout(ymm_reg) *hi,
            lo2 = out(ymm_reg) _,
            hi2 = out(ymm_reg) _,
            l = out(ymm_reg) _,
            h = out(ymm_reg) _,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
}

/// One chunk of [`nibbles256_two`]: as [`nibble_chunk`], for activation rows at `x0` and `x1`,
/// into the chains named with suffix `$s`.
#[rustfmt::skip]
macro_rules! nibble_chunk_two {
    ($w:literal, $lo:literal, $hi:literal, $s:literal) => {
        concat!(
            unpack_nibbles!("{w} + ", $w),
            "vpdpwssd {lo0", $s, "}, {l}, dword ptr [{x0} + ", $lo, "]{{1to8}}\n",
            "vpdpwssd {hi0", $s, "}, {h}, dword ptr [{x0} + ", $hi, "]{{1to8}}\n",
            "vpdpwssd {lo1", $s, "}, {l}, dword ptr [{x1} + ", $lo, "]{{1to8}}\n",
            "vpdpwssd {hi1", $s, "}, {h}, dword ptr [{x1} + ", $hi, "]{{1to8}}\n",
        )
    };
}

/// [`nibbles256_one`] for two activation rows: each chunk unpacked once for both, each of the
/// four sums in two chains.
///
/// # Safety
/// 128 readable bytes at `w`, 64 at each `x`; the features enabled.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn nibbles256_two(
    w: *const u8,
    x: [*const i16; 2],
    lo: [&mut __m256i; 2],
    hi: [&mut __m256i; 2],
) {
    let ([lo0, lo1], [hi0, hi1]) = (lo, hi);
    // SAFETY (callers): as above.
    unsafe {
        asm!(
            "vpxor {lo0b}, {lo0b}, {lo0b}",
            "vpxor {hi0b}, {hi0b}, {hi0b}",
            "vpxor {lo1b}, {lo1b}, {lo1b}",
            "vpxor {hi1b}, {hi1b}, {hi1b}",
            nibble_chunk_two!("0", "0", "32", ""),
            nibble_chunk_two!("16", "4", "36", "b"),
            nibble_chunk_two!("32", "8", "40", ""),
            nibble_chunk_two!("48", "12", "44", "b"),
            nibble_chunk_two!("64", "16", "48", ""),
            nibble_chunk_two!("80", "20", "52", "b"),
            nibble_chunk_two!("96", "24", "56", ""),
            nibble_chunk_two!("112", "28", "60", "b"),
            "vpaddd {lo0}, {lo0}, {lo0b}",
            "vpaddd {hi0}, {hi0}, {hi0b}",
            "vpaddd {lo1}, {lo1}, {lo1b}",
            "vpaddd {hi1}, {hi1}, {hi1b}",
            w = in(reg) w,
            x0 = in(reg) x[0],
            x1 = in(reg) x[1],
            m = in(ymm_reg) _mm256_set1_epi16(0x0f),
            lo0 = inout(ymm_reg) *lo0,
            hi0 = inout(ymm_reg) *hi0,
            lo1 = inout(ymm_reg) *lo1,
            hi1 = inout(ymm_reg) *hi1,
            lo0b = out(ymm_reg) _,
            hi0b = out(ymm_reg) _,
            lo1b = out(ymm_reg) _,
            hi1b = out(ymm_reg) _,
            l = out(ymm_reg) _,
            h = out(ymm_reg) _,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
}

/// One pair of nibble chunks and their high bits in [`six256_one`]: the chunks at `w + $w`
/// (values `4p, 4p + 1` low, `16 + 4p, 17 + 4p` high), `w + $w + 16` (the next two of each) and
/// the high bits at `w + $w + 32`; activation pairs at `x + $x` (+ 4) and `x + 32 + $x` (+ 4).
#[rustfmt::skip]
macro_rules! six_pair {
    ($w:literal, $w1:literal, $wh:literal, $x:literal, $x1:literal, $xh:literal, $xh1:literal) => {
        concat!(
            "vpmovzxbw {h}, xmmword ptr [{w} + ", $w, "]\n",
            "vpmovzxbw {g}, xmmword ptr [{w} + ", $wh, "]\n",
            "vpand {l}, {h}, {m}\n",
            "vpsrlw {h}, {h}, 4\n",
            "vpsllw {t}, {g}, 4\n",
            "vpternlogq {l}, {t}, {s}, 0xf8\n",
            "vpdpwssd {lo}, {l}, dword ptr [{x} + ", $x, "]{{1to8}}\n",
            "vpsllw {t}, {g}, 2\n",
            "vpternlogq {h}, {t}, {s}, 0xf8\n",
            "vpdpwssd {hi}, {h}, dword ptr [{x} + ", $xh, "]{{1to8}}\n",
            unpack_nibbles!("{w} + ", $w1),
            "vpternlogq {l}, {g}, {s}, 0xf8\n",
            "vpdpwssd {lo2}, {l}, dword ptr [{x} + ", $x1, "]{{1to8}}\n",
            "vpsrlw {t}, {g}, 2\n",
            "vpternlogq {h}, {t}, {s}, 0xf8\n",
            "vpdpwssd {hi2}, {h}, dword ptr [{x} + ", $xh1, "]{{1to8}}\n",
        )
    };
}

/// A Q6_K sub-block (laid out as [`super::k_quants::q6_row`] says, 16-bit units) at `w` times
/// one row's 16-bit activations at `x`: values `0..16` into `lo`, `16..32` into `hi`, as
/// [`six_block`] computes them, in one piece of assembly (see [`nibbles256_one`]), each sum in
/// two chains.
///
/// # Safety
/// 192 readable bytes at `w`, 64 at `x`; the features enabled.
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
#[inline]
unsafe fn six256_one(w: *const u8, x: *const i16, lo: &mut __m256i, hi: &mut __m256i) {
    // SAFETY (callers): as above.
    unsafe {
        asm!(
            "vpxor {lo2}, {lo2}, {lo2}",
            "vpxor {hi2}, {hi2}, {hi2}",
            six_pair!("0", "16", "32", "0", "4", "32", "36"),
            six_pair!("48", "64", "80", "8", "12", "40", "44"),
            six_pair!("96", "112", "128", "16", "20", "48", "52"),
            six_pair!("144", "160", "176", "24", "28", "56", "60"),
            "vpaddd {lo}, {lo}, {lo2}",
            "vpaddd {hi}, {hi}, {hi2}",
            w = in(reg) w,
            x = in(reg) x,
            m = in(ymm_reg) _mm256_set1_epi16(0x0f),
            s = in(ymm_reg) _mm256_set1_epi8(0x30),
            lo = inout(ymm_reg) *lo,
            hi = inout(ymm_reg) *hi,
            lo2 = out(ymm_reg) _,
            hi2 = out(ymm_reg) _,
            l = out(ymm_reg) _,
            h = out(ymm_reg) _,
            g = out(ymm_reg) _,
            t = out(ymm_reg) _,
            options(pure, readonly, nostack, preserves_flags),
        );
    }
}

/// As [`dpwssd256_at`] in 512 bits (`{1to16}`).
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn dpwssd512_at(mut acc: __m512i, w: __m512i, x: *const i16) -> __m512i {
    // SAFETY (callers): 4 readable bytes at `x`; the features are enabled.
    unsafe {
        asm!("vpdpwssd {a}, {w}, dword ptr [{x}]{{1to16}}", a = inout(zmm_reg) acc,
            w = in(zmm_reg) w, x = in(reg) x, options(pure, readonly, nostack, preserves_flags));
    }
    acc
}

/// 16-bit activations over two panels in 512-bit registers (AVX-512 BW and VNNI).
struct Zmm16;
impl Kernel for Zmm16 {
    type Q = i16;
    type L = Z;
    const UNIT: usize = 2;
    const Q8_OFFSET: i32 = 0;
    const DUAL_UP_TO: usize = 5;
    #[inline(always)]
    unsafe fn nibbles(p: *const u8, stride: usize) -> (__m512i, __m512i) {
        // SAFETY (callers): 16 readable bytes at both; AVX-512 BW enabled.
        unsafe {
            let v = _mm512_cvtepu8_epi16(pair128(p, stride));
            (
                _mm512_and_si512(v, _mm512_set1_epi16(0x0f)),
                _mm512_srli_epi16::<4>(v),
            )
        }
    }
    #[inline(always)]
    unsafe fn bytes(p: *const u8, stride: usize) -> __m512i {
        // SAFETY (callers): as above.
        unsafe { _mm512_cvtepi8_epi16(pair128(p, stride)) }
    }
    #[inline(always)]
    unsafe fn ubytes(p: *const u8, stride: usize) -> __m512i {
        // SAFETY (callers): as above.
        unsafe { _mm512_cvtepu8_epi16(pair128(p, stride)) }
    }
    #[inline(always)]
    unsafe fn dp(acc: __m512i, w: __m512i, x: __m512i) -> __m512i {
        // SAFETY (callers): AVX-512 VNNI enabled.
        unsafe { dpwssd512(acc, w, x) }
    }
    #[inline(always)]
    unsafe fn dp_at(acc: __m512i, w: __m512i, x: *const i16) -> __m512i {
        // SAFETY (callers): 4 readable bytes at `x`; AVX-512 VNNI enabled.
        unsafe { dpwssd512_at(acc, w, x) }
    }
    #[inline(always)]
    unsafe fn dp_q8(acc: __m512i, w: __m512i, x: __m512i) -> __m512i {
        // SAFETY (callers): AVX-512 VNNI enabled.
        unsafe { dpwssd512(acc, w, x) }
    }
}

/// 8-bit activations over two panels in 512-bit registers (AVX-512 BW and VNNI).
struct Zmm8;
impl Kernel for Zmm8 {
    type Q = i8;
    type L = Z;
    const UNIT: usize = 4;
    const Q8_OFFSET: i32 = 128;
    const DUAL_UP_TO: usize = 4;
    #[inline(always)]
    unsafe fn nibbles(p: *const u8, stride: usize) -> (__m512i, __m512i) {
        // SAFETY (callers): 32 readable bytes at both; AVX-512 BW enabled.
        unsafe {
            let v = pair256(p, stride);
            let low = _mm512_set1_epi8(0x0f);
            (
                _mm512_and_si512(v, low),
                _mm512_and_si512(_mm512_srli_epi16::<4>(v), low),
            )
        }
    }
    #[inline(always)]
    unsafe fn bytes(p: *const u8, stride: usize) -> __m512i {
        // SAFETY (callers): as above.
        unsafe { _mm512_xor_si512(pair256(p, stride), _mm512_set1_epi8(-128)) }
    }
    #[inline(always)]
    unsafe fn ubytes(p: *const u8, stride: usize) -> __m512i {
        // SAFETY (callers): as above.
        unsafe { pair256(p, stride) }
    }
    #[inline(always)]
    unsafe fn dp(acc: __m512i, w: __m512i, x: __m512i) -> __m512i {
        // SAFETY (callers): AVX-512 VNNI enabled.
        unsafe { _mm512_dpbusd_epi32(acc, w, x) }
    }
    #[inline(always)]
    unsafe fn dp_q8(acc: __m512i, w: __m512i, x: __m512i) -> __m512i {
        // SAFETY (callers): AVX-512 VNNI enabled.
        unsafe { _mm512_dpbusd_epi32(acc, w, x) }
    }
}

const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q8_0: u8 = 2;
const Q4K: u8 = 3;
const Q5K: u8 = 4;
const Q6K: u8 = 5;

macro_rules! rows_fn {
    ($(#[$doc:meta])* $name:ident, $q:ty, $avx2:ty, $vnni:ty, $zmm:ty, $vex:ty) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU runs `isa`; `w` holds at least `n.div_ceil(8)` panels of `nb` blocks of `ty`
        /// (one with integer products) packed for this activation type, the first `paired` of
        /// them (an even count) in pairs; `x` is `nb` blocks wide with `out`'s rows; features
        /// `first..first + n` of `out` exist and are this call's alone.
        #[allow(clippy::too_many_arguments)]
        pub(super) unsafe fn $name(
            isa: Isa,
            ty: GgmlType,
            w: &[u8],
            nb: usize,
            x: &ActRows<$q>,
            first: usize,
            n: usize,
            paired: usize,
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
                paired,
                out,
            };
            // SAFETY: as this function's.
            unsafe {
                match isa {
                    Isa::Avx2 => rows_avx2::<$avx2>(t, &a),
                    Isa::Avx512Vnni => rows_zmm::<$zmm, $vnni>(t, &a),
                    Isa::Avx512Vnni256 => rows_vnni512::<$vnni>(t, &a),
                    Isa::AvxVnni => rows_avxvnni::<$vex>(t, &a),
                }
            }
        }
    };
}

rows_fn!(
    /// Features `first..first + n` from the panels `w` (`nb` blocks each, starting at feature
    /// `first`) times every row of the 16-bit `x`, into `out`.
    rows16, i16, Avx2x16, Vnni512x16, Zmm16, VexX16
);
rows_fn!(
    /// As [`rows16`] for 8-bit activations.
    rows8, i8, Avx2x8, Vnni512x8, Zmm8, VexX8
);

/// What every tile reads, and where the results go.
struct Args<'a, Q> {
    w: &'a [u8],
    nb: usize,
    x: &'a ActRows<Q>,
    first: usize,
    n: usize,
    /// The call's first this many panels (an even count) are stored in pairs (see
    /// [`super::Panels`]); the rest one after another.
    paired: usize,
    out: Out<'a>,
}

/// [`rows_of`] for the block type `t` over `panels`, `M` activation rows per tile (inlined into
/// each instruction set's entry point, which enables its features).
///
/// # Safety
/// As for `rows_of`.
#[inline(always)]
unsafe fn by_type<K: Kernel, const M: usize>(t: u8, a: &Args<'_, K::Q>, panels: Range<usize>) {
    // SAFETY: as this function's.
    unsafe {
        match t {
            Q4_1 => rows_of::<K, Q4_1, M>(a, panels),
            Q8_0 => rows_of::<K, Q8_0, M>(a, panels),
            Q4K => rows_of::<K, Q4K, M>(a, panels),
            Q5K => rows_of::<K, Q5K, M>(a, panels),
            Q6K => rows_of::<K, Q6K, M>(a, panels),
            _ => rows_of::<K, Q4_0, M>(a, panels),
        }
    }
}

/// Every panel of the call.
fn all_panels<Q>(a: &Args<'_, Q>) -> Range<usize> {
    0..a.n.div_ceil(PANEL)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_avx2<K: Kernel<L = Y>>(t: u8, a: &Args<'_, K::Q>) {
    // SAFETY: as for `by_type`.
    unsafe {
        let (m, width) = (a.x.rows(), a.nb * QK);
        let two_from = avx2_two_from();
        if (m == 1 && width >= two_from) || (m == 2 && t == Q6K && width >= two_from / 2) {
            // Wide rows, one activation row (two for Q6_K): two panels a tile (see
            // `AVX2_TWO_FROM`).
            let panels = a.n.div_ceil(PANEL);
            let pairs = panels / 2 * 2;
            by_type::<Two<K>, 2>(t, a, 0..pairs);
            by_type::<K, 2>(t, a, pairs..panels);
        } else if K::UNIT == 2 {
            // Tiles of 6 rows for 16 bits (6 sums, 6 partial sums and the weights fit AVX2's 16
            // registers); 4 for 8 bits, whose multiply-add takes two more.
            by_type::<K, 6>(t, a, all_panels(a))
        } else {
            by_type::<K, 4>(t, a, all_panels(a))
        }
    }
}

/// AVX2 products of one activation row over weight rows at least this wide (two rows of Q6_K:
/// half as wide) take two panels a tile, so that the activation rows, re-read for every tile
/// and at 16-28 KiB no longer held in L1 beside the streamed weights, are read once for two
/// panels. One Zen 4 core limited to AVX2 streaming Q4_K / Q6_K / Q4_0 (GMAC/s, one panel a tile
/// -> two), with the weights' prefetch ([`PREFETCH_AHEAD`]): one row over 8192 / 14336 values
/// 32.4 -> 36.6 and 22.5 -> 29.2 / 20.2 -> 19.7 and 18.6 -> 19.5 / 40.3 -> 46.9 and 32.3 ->
/// 42.9; two rows over 4096 / 8192 / 14336 values, Q6_K 30.2 -> 31.3, 30.2 -> 33.6, 27.9 ->
/// 33.7, but Q4_K 47.0 -> 26.8, 49.4 -> 32.4, 43.9 -> 31.8 and Q4_0 50.5 -> 34.2 (before the
/// prefetch, two rows of Q4_K ran at 26-29 either way); one row over 4096 values 38.2 -> 23.0
/// (there the row still fits).
const AVX2_TWO_FROM: usize = 8192;

fn avx2_two_from() -> usize {
    #[cfg(test)]
    if let Some(w) = TEST_AVX2_TWO_FROM.with(|w| w.get()) {
        return w;
    }
    AVX2_TWO_FROM
}

#[cfg(test)]
thread_local! {
    /// [`AVX2_TWO_FROM`] in this thread's products, where set (the tests' 0: every width).
    pub(super) static TEST_AVX2_TWO_FROM: std::cell::Cell<Option<usize>> =
        const { std::cell::Cell::new(None) };
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn rows_vnni512<K: Kernel>(t: u8, a: &Args<'_, K::Q>) {
    // SAFETY: as for `by_type`.
    unsafe { by_type::<K, 8>(t, a, all_panels(a)) }
}

/// Pairs of panels by the 512-bit kernel `Z`, an odd last panel by the 256-bit `K`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn rows_zmm<Z: Kernel, K: Kernel<Q = Z::Q>>(t: u8, a: &Args<'_, K::Q>) {
    let panels = a.n.div_ceil(PANEL);
    let paired = panels / 2 * 2;
    // Tiles of 5 rows (two chains per sum) over 8 (one chain): one Zen 4 core in cache, tiles of
    // 4 against 8 at 8 / 16 / 64 rows, GMAC/s: Q4_1 87-88 -> 94, Q4_0 94 -> 97-98, Q4_K 89 ->
    // 93; but Q6_K, whose unpacking a tile of 8 shares among more rows, 81-82 -> 53-69. Five
    // rows in one tile: 46.7 us where 3 + 2 took 51.3 (Q4_1 1536 x 576).
    // SAFETY: as for `by_type`.
    unsafe {
        if t == Q6K {
            by_type::<Z, 8>(t, a, 0..paired);
        } else {
            by_type::<Z, 5>(t, a, 0..paired);
        }
        by_type::<K, 8>(t, a, paired..panels);
    }
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn rows_avxvnni<K: Kernel>(t: u8, a: &Args<'_, K::Q>) {
    // SAFETY: as for `by_type`.
    unsafe { by_type::<K, 4>(t, a, all_panels(a)) }
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
    heads(t == Q6K) + SUBS * PANEL * value_bytes(t == Q4K, t == Q6K)
}

/// Where a tile finds its panel's parts (see [`super::Panels::paired`]): per block (super-block
/// for the K-quants) the heads (scales, minima) and the values of each 32-value block.
#[derive(Clone, Copy)]
struct Walk {
    /// From one block (super-block) to the next.
    step: usize,
    /// From the first panel's heads to the second's (two-panel tiles).
    hstride: usize,
    /// From the heads to the first 32-value block's values.
    voff: usize,
    /// From one 32-value block's values to the next (within a K-quant super-block).
    vstep: usize,
    /// From the first panel's values to the second's (two-panel tiles).
    vstride: usize,
}

impl Walk {
    /// Where panel `p` (and `p + 1` where `two`) of a call starts, and its walk: `pb` bytes
    /// per panel, stored in pairs where `paired`.
    #[inline(always)]
    fn of(t: u8, p: usize, paired: bool, two: bool, pb: usize) -> (usize, Walk) {
        let k = t >= Q4K;
        let unit = if k { super_bytes(t) } else { block_bytes(t) };
        let heads = if k {
            heads(t == Q6K)
        } else if t == Q4_1 {
            2 * 2 * PANEL
        } else {
            2 * PANEL
        };
        // The values of one 32-value block.
        let vals = if k {
            (unit - heads) / SUBS
        } else {
            unit - heads
        };
        if !paired {
            let walk = Walk {
                step: unit,
                hstride: pb,
                voff: heads,
                vstep: vals,
                vstride: pb,
            };
            return (p * pb, walk);
        }
        // A pair: per block both heads, then per 32-value block both values.
        let walk = Walk {
            step: 2 * unit,
            hstride: heads,
            voff: 2 * heads,
            vstep: 2 * vals,
            vstride: vals,
        };
        if two {
            return (p * pb, walk);
        }
        let h = p % 2;
        let voff = 2 * heads + h * vals - h * heads;
        ((p - h) * pb + h * heads, Walk { voff, ..walk })
    }
}

/// Tiles over the output, `K::L::PANELS` panels at a time (each panel a memory stream of its
/// own; tiles over 4+ panels measured up to 2x slower from memory on a Zen 4 EPYC, the 512-bit
/// tiles' 2 are not yet measured there): `M` activation rows per tile, the tail by tiles of 4,
/// 3, 2 and 1; each weight chunk is unpacked once per tile and each activation group broadcast
/// once per tile.
///
/// # Safety
/// As [`rows16`], for the panels `panels` (a multiple of `K::L::PANELS` of them, all within the
/// call's); the enabled features cover `K`.
#[inline(always)]
unsafe fn rows_of<K: Kernel, const T: u8, const M: usize>(
    a: &Args<'_, K::Q>,
    panels: Range<usize>,
) {
    let m = a.x.rows();
    let pb = a.nb * block_bytes(T);
    let (nb, x) = (a.nb, a.x);
    // SAFETY: every tile reads panels p, p + 1 (< n.div_ceil(8)) and activation rows < m, and
    // writes features first + 8p.. (< first + n) of rows < m.
    unsafe {
        for p in panels.step_by(K::L::PANELS) {
            let (at, walk) = Walk::of(T, p, p < a.paired, K::L::PANELS == 2, pb);
            let w = a.w.as_ptr().add(at);
            let mut j = 0;
            while j < m {
                let c = tile_rows::<M>(m - j);
                if c == M {
                    put::<K, M>(a, p, j, &any_tile::<K, T, M>(w, &walk, nb, x, j));
                } else if c == 4 {
                    put::<K, 4>(a, p, j, &any_tile::<K, T, 4>(w, &walk, nb, x, j));
                } else if c == 3 {
                    put::<K, 3>(a, p, j, &any_tile::<K, T, 3>(w, &walk, nb, x, j));
                } else if c == 2 {
                    put::<K, 2>(a, p, j, &any_tile::<K, T, 2>(w, &walk, nb, x, j));
                } else {
                    put::<K, 1>(a, p, j, &any_tile::<K, T, 1>(w, &walk, nb, x, j));
                }
                j += c;
            }
        }
    }
}

/// The rows of the next tile, `left` rows to go, tiles of `M` (at least 4), 4, 3, 2 and 1 rows:
/// the largest that fits without leaving one row alone (a one-row tile costs what a tile of
/// three or four does per panel), e.g. 5 as 3 + 2 where `M` is 4, 9 as 4 + 3 + 2 where it is
/// 8; with the 512-bit tiles of 5 rows, without leaving two either where a split in threes and
/// more exists (in cache, 6 rows as 3 + 3 took 57.6 us where 4 + 2 took 60.0, 7 as 4 + 3 66.4
/// where 5 + 2 took 68.7).
const fn tile_rows<const M: usize>(left: usize) -> usize {
    let sizes = [M, 4, 3, 2];
    let mut i = 0;
    while i < sizes.len() {
        let (c, rest) = (sizes[i], left.wrapping_sub(sizes[i]));
        if c <= left && rest != 1 && !(M == 5 && rest == 2 && c > 3) {
            return c;
        }
        i += 1;
    }
    1
}

/// Writes a tile of results (the features of panels `p..p + K::L::PANELS`) for activation rows
/// from `j`, leaving out the padding features.
///
/// # Safety
/// The features of `K` enabled; those panels' features and rows `j..j + M` are the call's (see
/// [`rows16`]).
#[inline(always)]
unsafe fn put<K: Kernel, const M: usize>(a: &Args<'_, K::Q>, p: usize, j: usize, t: &[Fv<K>; M]) {
    let r0 = p * PANEL;
    let count = (a.n - r0).min(PANEL * K::L::PANELS);
    for (c, v) in t.iter().enumerate() {
        let mut lanes = [0f32; 2 * PANEL];
        // SAFETY: the features and rows are ours (callers).
        unsafe {
            K::L::store(*v, &mut lanes);
            a.out.set_run(j + c, a.first + r0, &lanes[..count]);
        }
    }
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

/// One block of nibbles at `w` (and `w + stride`: a panel's 8 rows, chunks of `K::UNIT` bytes
/// per row: value `i` low, `16 + i` high) times the activations at `xq`, into `lo` (and `hi`
/// where `dual`).
///
/// # Safety
/// The enabled features cover `K`; `w` holds the block, each `xq` a block of activations.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn nibble_block<K: Kernel, const M: usize>(
    w: *const u8,
    stride: usize,
    xq: &[*const K::Q; M],
    dual: bool,
    lo: &mut [Iv<K>; M],
    hi: &mut [Iv<K>; M],
) {
    let (unit, chunk) = (K::UNIT, PANEL * K::UNIT);
    // SAFETY (callers): as above.
    unsafe {
        if M == 1 && dual && K::nibble_block_one(w, xq[0], &mut lo[0], &mut hi[0]) {
            return;
        }
        if let ([x0, x1], [l0, l1], [h0, h1]) = (&xq[..], &mut lo[..], &mut hi[..])
            && dual
            && K::nibble_block_two(w, [*x0, *x1], [l0, l1], [h0, h1])
        {
            return;
        }
        for c in 0..QK / 2 / unit {
            let (wl, wh) = K::nibbles(w.add(chunk * c), stride);
            for k in 0..M {
                lo[k] = K::dp_at(lo[k], wl, xq[k].add(unit * c));
                if dual {
                    hi[k] = K::dp_at(hi[k], wh, xq[k].add(QK / 2 + unit * c));
                } else {
                    lo[k] = K::dp_at(lo[k], wh, xq[k].add(QK / 2 + unit * c));
                }
            }
        }
    }
}

/// One Q6_K sub-block at `w` (and `w + stride`; laid out as [`super::k_quants::q6_row`]
/// says) times the activations at `xq`: its first 16 values into `lo`, the others into `hi`.
///
/// # Safety
/// As [`nibble_block`].
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn six_block<K: Kernel, const M: usize>(
    w: *const u8,
    stride: usize,
    xq: &[*const K::Q; M],
    lo: &mut [Iv<K>; M],
    hi: &mut [Iv<K>; M],
) {
    let (unit, chunk) = (K::UNIT, PANEL * K::UNIT);
    // SAFETY (callers): as above.
    unsafe {
        if M == 1 && K::six_block_one(w, xq[0], &mut lo[0], &mut hi[0]) {
            return;
        }
        for p in 0..QK / 4 / unit {
            let at = w.add(3 * chunk * p);
            let (n0, n1) = (K::nibbles(at, stride), K::nibbles(at.add(chunk), stride));
            let high = K::ubytes(at.add(2 * chunk), stride);
            let w0 = [
                K::L::six::<4>(n0.0, high),
                K::L::six::<2>(n0.1, high),
                K::L::six::<0>(n1.0, high),
                K::L::six::<-2>(n1.1, high),
            ];
            let (c0, c1) = (2 * p * unit, (2 * p + 1) * unit);
            for k in 0..M {
                lo[k] = K::dp_at(lo[k], w0[0], xq[k].add(c0));
                hi[k] = K::dp_at(hi[k], w0[1], xq[k].add(QK / 2 + c0));
                lo[k] = K::dp_at(lo[k], w0[2], xq[k].add(c1));
                hi[k] = K::dp_at(hi[k], w0[3], xq[k].add(QK / 2 + c1));
            }
        }
    }
}

/// [`Kernel::dp_q8`] of the group at `x` where `Q8`, else [`Kernel::dp_at`].
///
/// # Safety
/// As theirs.
#[inline(always)]
unsafe fn dp_any<K: Kernel, const Q8: bool>(acc: Iv<K>, w: Iv<K>, x: *const K::Q) -> Iv<K> {
    // SAFETY (callers): as theirs.
    unsafe {
        // A 16-bit kernel's `dp_q8` is its `dp`: its `dp_at` takes the group straight from
        // memory (one instruction where the instruction set broadcasts from memory).
        if Q8 && K::UNIT != 2 {
            K::dp_q8(acc, w, K::L::group(x))
        } else {
            K::dp_at(acc, w, x)
        }
    }
}

/// `count` (even) chunks of bytes from chunk `from` of the block at `w` (and `w + stride`) times
/// the activations at `xq`: into `a`, or with `dual` the odd ones into `b`; Q8_0 chunks
/// ([`Kernel::bytes`], [`Kernel::dp_q8`]) where `Q8`, else unsigned ones. Two chunks a step, so
/// that the choice of sum is fixed in the code rather than a branch per chunk (LLVM left the
/// one-chunk loops rolled, with that branch, in the Q8_0, Q5_K and Q6_K tiles).
///
/// # Safety
/// The enabled features cover `K`; `w` holds the chunks, each `xq` the activations.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline(always)]
unsafe fn byte_chunks<K: Kernel, const M: usize, const Q8: bool>(
    w: *const u8,
    stride: usize,
    xq: &[*const K::Q; M],
    from: usize,
    count: usize,
    dual: bool,
    a: &mut [Iv<K>; M],
    b: &mut [Iv<K>; M],
) {
    let (unit, chunk) = (K::UNIT, PANEL * K::UNIT);
    // SAFETY (callers): as above.
    unsafe {
        for i in 0..count / 2 {
            let c = from + 2 * i;
            let (p0, p1) = (w.add(chunk * c), w.add(chunk * (c + 1)));
            let (w0, w1) = if Q8 {
                (K::bytes(p0, stride), K::bytes(p1, stride))
            } else {
                (K::ubytes(p0, stride), K::ubytes(p1, stride))
            };
            for k in 0..M {
                let (x0, x1) = (xq[k].add(unit * c), xq[k].add(unit * (c + 1)));
                a[k] = dp_any::<K, Q8>(a[k], w0, x0);
                if dual {
                    b[k] = dp_any::<K, Q8>(b[k], w1, x1);
                } else {
                    a[k] = dp_any::<K, Q8>(a[k], w1, x1);
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
    walk: &Walk,
    nb: usize,
    x: &ActRows<K::Q>,
    j: usize,
) -> [Fv<K>; M] {
    // SAFETY (callers): as the tiles'.
    unsafe {
        if T >= Q4K {
            tile_k::<K, T, M>(w, walk, nb, x, j)
        } else {
            tile::<K, T, M>(w, walk, nb, x, j)
        }
    }
}

/// How far ahead of a tile's current block the weights are prefetched, in bytes. With the
/// hardware prefetchers alone, a tile that computes while it streams read DRAM at about half
/// the rate a bare stream gets (SmolLM2's forward of 4 tokens on two cores of a Zen 4 EPYC VM
/// took 2.2x its one-token forward, no faster than on one core). With this distance (2048 and
/// 4096 measured within a few percent of it, 512-1024 less), same VM, in-process alternation,
/// forward of 1 / 2 / 4 / 8 tokens: SmolLM2 (Q4_1) 0.96-0.98x / 0.91x / 0.88x / 0.83x the time,
/// Llama 3.2 1B shape (Q4_K_M) 1.0x / 0.91x / 0.84x / 0.90x, Llama 3.1 8B shape (Q4_K_M)
/// 1.0x / 0.85x / - / 0.88x (8 tokens).
const PREFETCH_AHEAD: usize = 3072;

/// Asks for the `len` bytes `PREFETCH_AHEAD` past `at` (and past `at + second`, the second
/// panel of a two-panel tile over panels stored one after another; 0 where there is none) to
/// be brought into L1.
///
/// A prefetch is a hint: it never faults, so the addresses may run past the weights (the
/// pointers are formed with `wrapping_add` and never dereferenced).
#[inline(always)]
fn prefetch_ahead(at: *const u8, len: usize, second: usize) {
    let mut off = 0;
    while off < len {
        let p = at.wrapping_add(PREFETCH_AHEAD + off);
        // SAFETY: a prefetch reads nothing the program sees and cannot fault (SSE, which every
        // x86-64 CPU has).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
        if second != 0 {
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(second).cast()) };
        }
        off += 64;
    }
}

/// The distance from a tile's first panel stream to its second: the second panel's, where
/// a two-panel tile reads panels stored one after another (in pairs they are one stream).
#[inline(always)]
fn second_stream<K: Kernel>(walk: &Walk) -> usize {
    if K::L::PANELS == 2 && walk.hstride >= walk.step {
        walk.hstride
    } else {
        0
    }
}

/// Whether tiles of `m` activation rows split each sum into two chains
/// ([`Kernel::DUAL_UP_TO`]).
const fn dual<K: Kernel>(m: usize) -> bool {
    m <= K::DUAL_UP_TO
}

/// The panel at `w` (and the next, for two-panel lanes; `nb` blocks, laid out as `walk` says)
/// times activation rows `j..j + M`: its rows' results per activation row, exactly as
/// [`super::dot`].
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn tile<K: Kernel, const T: u8, const M: usize>(
    w: *const u8,
    walk: &Walk,
    nb: usize,
    x: &ActRows<K::Q>,
    j: usize,
) -> [Fv<K>; M] {
    let xs = rows_at::<K::Q, M>(x, j);
    let Walk {
        step,
        hstride,
        voff,
        vstride,
        ..
    } = *walk;
    let unit = K::UNIT;
    // Per block, the integer sum is corrected by this times the activations' integer sum.
    let offset = match T {
        Q4_0 => 8,
        Q8_0 => K::Q8_OFFSET,
        _ => 0,
    };
    let dual = dual::<K>(M);
    // SAFETY (callers): a panel of nb blocks at `w`; the activation rows are nb blocks wide.
    unsafe {
        let mut acc = [K::L::fzero(); M];
        let second = second_stream::<K>(walk);
        for b in 0..nb {
            prefetch_ahead(w.wrapping_add(b * step), step, second);
            // No closures here: they would not inherit this function's target features.
            let mut lo = [K::L::izero(); M];
            let mut hi = [K::L::izero(); M];
            let xq = starts(&xs, b);
            let blk = w.add(b * step);
            if T == Q8_0 {
                let (w, n) = (blk.add(voff), QK / unit);
                byte_chunks::<K, M, true>(w, vstride, &xq, 0, n, dual, &mut lo, &mut hi);
            } else {
                nibble_block::<K, M>(blk.add(voff), vstride, &xq, dual, &mut lo, &mut hi);
            }
            let dw = K::L::halves(blk, hstride);
            let mw = if T == Q4_1 {
                K::L::halves(blk.add(16), hstride)
            } else {
                dw
            };
            for k in 0..M {
                let mut s = if dual {
                    K::L::iadd(lo[k], hi[k])
                } else {
                    lo[k]
                };
                if offset != 0 {
                    // Wrapping: non-finite activations quantize to i32::MIN lanes (the
                    // result is NaN through their scale either way), which must not panic.
                    s = K::L::isub(s, offset.wrapping_mul(*xs[k].isum.get_unchecked(b)));
                }
                let dd = K::L::mul(dw, K::L::splat(*xs[k].d.get_unchecked(b)));
                acc[k] = K::L::fma(dd, K::L::cvt(s), acc[k]);
                if T == Q4_1 {
                    let sx = K::L::splat(*xs[k].s.get_unchecked(b));
                    acc[k] = K::L::fma(mw, sx, acc[k]);
                }
            }
        }
        acc
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
    walk: &Walk,
    nb: usize,
    x: &ActRows<K::Q>,
    j: usize,
) -> [Fv<K>; M] {
    let xs = rows_at::<K::Q, M>(x, j);
    let q6 = T == Q6K;
    let Walk {
        step,
        hstride,
        voff,
        vstep,
        vstride,
    } = *walk;
    let unit = K::UNIT;
    let dual = dual::<K>(M);
    // SAFETY (callers): a panel of nb / 8 super-blocks at `w`; the activation rows are nb
    // blocks wide.
    unsafe {
        let mut acc = [K::L::fzero(); M];
        let second = second_stream::<K>(walk);
        for sb in 0..nb / SUBS {
            let blk = w.add(sb * step);
            let d = K::L::halves(blk, hstride);
            let dmin = K::L::halves(blk.add(2 * PANEL), hstride);
            for sub in 0..SUBS {
                let b = sb * SUBS + sub;
                let vals = blk.add(voff + sub * vstep);
                if M > 1 || K::PREFETCH_ONE_ROW_K {
                    // Spread over the sub-blocks (all of a super-block's at its start measured
                    // slower); for one row only where the kernel says (see
                    // `Kernel::PREFETCH_ONE_ROW_K`).
                    let part = step / SUBS;
                    prefetch_ahead(blk.wrapping_add(sub * part), part, second);
                }
                let xq = starts(&xs, b);
                let mut lo = [K::L::izero(); M];
                let mut hi = [K::L::izero(); M];
                if T == Q4K {
                    nibble_block::<K, M>(vals, vstride, &xq, dual, &mut lo, &mut hi);
                } else if q6 {
                    // The two halves apart.
                    six_block::<K, M>(vals, vstride, &xq, &mut lo, &mut hi);
                } else {
                    byte_chunks::<K, M, false>(
                        vals,
                        vstride,
                        &xq,
                        0,
                        QK / unit,
                        dual,
                        &mut lo,
                        &mut hi,
                    );
                }
                if q6 {
                    let sc = blk.add(2 * PANEL + 2 * PANEL * sub);
                    let dlo = K::L::mul(d, K::L::bytes_f32(sc, hstride, true));
                    let dhi = K::L::mul(d, K::L::bytes_f32(sc.add(PANEL), hstride, true));
                    for k in 0..M {
                        let ilo = *xs[k].ilo.get_unchecked(b);
                        let ihi = xs[k].isum.get_unchecked(b).wrapping_sub(ilo);
                        let slo = K::L::isub(lo[k], ilo.wrapping_mul(32));
                        let shi = K::L::isub(hi[k], ihi.wrapping_mul(32));
                        let dx = K::L::splat(*xs[k].d.get_unchecked(b));
                        acc[k] = K::L::fma(K::L::mul(dlo, dx), K::L::cvt(slo), acc[k]);
                        acc[k] = K::L::fma(K::L::mul(dhi, dx), K::L::cvt(shi), acc[k]);
                    }
                } else {
                    let sc = blk.add(4 * PANEL + PANEL * sub);
                    let dw = K::L::mul(d, K::L::bytes_f32(sc, hstride, false));
                    let mn = blk.add(12 * PANEL + PANEL * sub);
                    let mw = K::L::neg(K::L::mul(dmin, K::L::bytes_f32(mn, hstride, false)));
                    for k in 0..M {
                        let s = if dual {
                            K::L::iadd(lo[k], hi[k])
                        } else {
                            lo[k]
                        };
                        let dx = K::L::splat(*xs[k].d.get_unchecked(b));
                        acc[k] = K::L::fma(K::L::mul(dw, dx), K::L::cvt(s), acc[k]);
                        let sx = K::L::splat(*xs[k].s.get_unchecked(b));
                        acc[k] = K::L::fma(mw, sx, acc[k]);
                    }
                }
            }
        }
        acc
    }
}

/// The peak multiply-adds per second of `K`'s multiply-add on one core: 12 independent chains,
/// `iters` rounds, each step multiplying the chain's own value (so nothing is loop invariant).
#[cfg(test)]
#[inline(always)]
unsafe fn peak_of<K: Kernel>(iters: usize) -> f64 {
    // SAFETY (callers): the features of `K` enabled.
    unsafe {
        let mut acc = [K::L::izero(); 12];
        let five = 0x0005_0005i32;
        let x = std::hint::black_box(K::L::group(&five));
        let t = std::time::Instant::now();
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = K::dp(*a, *a, x);
            }
        }
        std::hint::black_box(&mut acc);
        let s = t.elapsed().as_secs_f64();
        (iters * 12 * PANEL * K::L::PANELS * K::UNIT) as f64 / s
    }
}

/// The peak multiply-adds per second of one core on `isa` with 8- or 16-bit activations.
#[cfg(test)]
pub(crate) fn peak(isa: Isa, eight: bool, iters: usize) -> f64 {
    #[target_feature(enable = "avx2")]
    unsafe fn avx2<K: Kernel>(iters: usize) -> f64 {
        unsafe { peak_of::<K>(iters) }
    }
    #[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn vnni512<K: Kernel>(iters: usize) -> f64 {
        unsafe { peak_of::<K>(iters) }
    }
    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn vex<K: Kernel>(iters: usize) -> f64 {
        unsafe { peak_of::<K>(iters) }
    }
    // SAFETY: `isa` is one this CPU runs (callers take it from `best`/`available`).
    unsafe {
        match (isa, eight) {
            (Isa::Avx2, false) => avx2::<Avx2x16>(iters),
            (Isa::Avx2, true) => avx2::<Avx2x8>(iters),
            (Isa::Avx512Vnni, false) => vnni512::<Zmm16>(iters),
            (Isa::Avx512Vnni, true) => vnni512::<Zmm8>(iters),
            (Isa::Avx512Vnni256, false) => vnni512::<Vnni512x16>(iters),
            (Isa::Avx512Vnni256, true) => vnni512::<Vnni512x8>(iters),
            (Isa::AvxVnni, false) => vex::<VexX16>(iters),
            (Isa::AvxVnni, true) => vex::<VexX8>(iters),
        }
    }
}
