//! The vectors a tile accumulates in: one lane per weight row, over one panel (8 lanes, 256-bit
//! registers) or two adjacent panels (16 lanes, 512-bit registers; the second panel `stride`
//! bytes after the first). The tiles are written once over [`Lanes`]; each lane computes what the
//! scalar definition computes for its row, whatever the width.

use super::PANEL;
use std::arch::x86_64::*;

/// A vector of `8 x PANELS` lanes and the operations the tiles take on it. Every load reads 8
/// lanes' worth from each panel: panel `k`'s at `p + k * stride`.
///
/// # Safety
/// Every method needs the instruction set of its width enabled (AVX2 for 256 bits; AVX-512 F and
/// BW for 512) and, for loads, the bytes it names readable.
pub(super) trait Lanes {
    /// Panels side by side.
    const PANELS: usize;
    /// Integer lanes.
    type I: Copy;
    /// f32 lanes.
    type F: Copy;
    /// Zero integers.
    unsafe fn izero() -> Self::I;
    /// Zero floats.
    unsafe fn fzero() -> Self::F;
    /// `a + b`, lane by lane.
    unsafe fn iadd(a: Self::I, b: Self::I) -> Self::I;
    /// `a - c` in every lane.
    unsafe fn isub(a: Self::I, c: i32) -> Self::I;
    /// The 32 bits at `q` in every lane.
    unsafe fn group<Q>(q: *const Q) -> Self::I;
    /// `v` in every lane.
    unsafe fn splat(v: f32) -> Self::F;
    /// The integers as f32 (rounded to nearest).
    unsafe fn cvt(a: Self::I) -> Self::F;
    /// `a * b`.
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    /// `a * b + c`, rounded once.
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// `-a`.
    unsafe fn neg(a: Self::F) -> Self::F;
    /// 8 f16 values from each panel.
    unsafe fn halves(p: *const u8, stride: usize) -> Self::F;
    /// 8 bytes from each panel as f32: unsigned, or signed where `signed`.
    unsafe fn bytes_f32(p: *const u8, stride: usize, signed: bool) -> Self::F;
    /// The lanes into `out[..8 * PANELS]`.
    unsafe fn store(v: Self::F, out: &mut [f32; 2 * PANEL]);
    /// Nibbles `n` (bytes or 16-bit lanes below 16) with the 2-bit fields of `high` that shifting
    /// it left by `S` (2 or 4; right by `-S` where negative, or not at all) puts at bits 4-5 of
    /// each byte, as their high bits: `n | ((high << S) & 0x30)` per byte. The 16-bit shifts are
    /// right for bytes too, as what crosses a byte boundary is masked off.
    unsafe fn six<const S: i32>(n: Self::I, high: Self::I) -> Self::I;
}

/// One panel in 256-bit registers.
pub(super) struct Y;

/// Two panels in 512-bit registers.
pub(super) struct Z;

/// Two panels in pairs of 256-bit registers (AVX2: the activations broadcast once for both).
pub(super) struct Y2;

/// `f` on both halves of a [`Y2`] value.
macro_rules! both {
    ($f:expr, $($a:expr),+) => {
        [$f($($a[0]),+), $f($($a[1]),+)]
    };
}

impl Lanes for Y2 {
    const PANELS: usize = 2;
    type I = [__m256i; 2];
    type F = [__m256; 2];
    #[inline(always)]
    unsafe fn izero() -> Self::I {
        unsafe { [_mm256_setzero_si256(); 2] }
    }
    #[inline(always)]
    unsafe fn fzero() -> Self::F {
        unsafe { [_mm256_setzero_ps(); 2] }
    }
    #[inline(always)]
    unsafe fn iadd(a: Self::I, b: Self::I) -> Self::I {
        unsafe { both!(Y::iadd, a, b) }
    }
    #[inline(always)]
    unsafe fn isub(a: Self::I, c: i32) -> Self::I {
        unsafe { [Y::isub(a[0], c), Y::isub(a[1], c)] }
    }
    #[inline(always)]
    unsafe fn group<Q>(q: *const Q) -> Self::I {
        unsafe {
            let g = Y::group(q);
            [g, g]
        }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self::F {
        unsafe {
            let s = Y::splat(v);
            [s, s]
        }
    }
    #[inline(always)]
    unsafe fn cvt(a: Self::I) -> Self::F {
        unsafe { both!(Y::cvt, a) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F {
        unsafe { both!(Y::mul, a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F {
        unsafe { both!(Y::fma, a, b, c) }
    }
    #[inline(always)]
    unsafe fn neg(a: Self::F) -> Self::F {
        unsafe { both!(Y::neg, a) }
    }
    #[inline(always)]
    unsafe fn halves(p: *const u8, stride: usize) -> Self::F {
        unsafe { [Y::halves(p, 0), Y::halves(p.add(stride), 0)] }
    }
    #[inline(always)]
    unsafe fn bytes_f32(p: *const u8, stride: usize, signed: bool) -> Self::F {
        unsafe {
            [
                Y::bytes_f32(p, 0, signed),
                Y::bytes_f32(p.add(stride), 0, signed),
            ]
        }
    }
    #[inline(always)]
    unsafe fn store(v: Self::F, out: &mut [f32; 2 * PANEL]) {
        unsafe {
            _mm256_storeu_ps(out.as_mut_ptr(), v[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(PANEL), v[1]);
        }
    }
    #[inline(always)]
    unsafe fn six<const S: i32>(n: Self::I, high: Self::I) -> Self::I {
        unsafe { [Y::six::<S>(n[0], high[0]), Y::six::<S>(n[1], high[1])] }
    }
}

impl Lanes for Y {
    const PANELS: usize = 1;
    type I = __m256i;
    type F = __m256;
    #[inline(always)]
    unsafe fn izero() -> __m256i {
        unsafe { _mm256_setzero_si256() }
    }
    #[inline(always)]
    unsafe fn fzero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn iadd(a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_add_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn isub(a: __m256i, c: i32) -> __m256i {
        unsafe { _mm256_sub_epi32(a, _mm256_set1_epi32(c)) }
    }
    #[inline(always)]
    unsafe fn group<Q>(q: *const Q) -> __m256i {
        unsafe { _mm256_set1_epi32(q.cast::<i32>().read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> __m256 {
        unsafe { _mm256_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn cvt(a: __m256i) -> __m256 {
        unsafe { _mm256_cvtepi32_ps(a) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn neg(a: __m256) -> __m256 {
        unsafe { _mm256_xor_ps(a, _mm256_set1_ps(-0.0)) }
    }
    #[inline(always)]
    unsafe fn halves(p: *const u8, _stride: usize) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    unsafe fn bytes_f32(p: *const u8, _stride: usize, signed: bool) -> __m256 {
        unsafe {
            let b = _mm_loadl_epi64(p.cast());
            _mm256_cvtepi32_ps(if signed {
                _mm256_cvtepi8_epi32(b)
            } else {
                _mm256_cvtepu8_epi32(b)
            })
        }
    }
    #[inline(always)]
    unsafe fn store(v: __m256, out: &mut [f32; 2 * PANEL]) {
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
    }
    #[inline(always)]
    unsafe fn six<const S: i32>(n: __m256i, high: __m256i) -> __m256i {
        unsafe {
            let h = match S {
                4 => _mm256_slli_epi16::<4>(high),
                2 => _mm256_slli_epi16::<2>(high),
                -2 => _mm256_srli_epi16::<2>(high),
                _ => high,
            };
            _mm256_or_si256(n, _mm256_and_si256(h, _mm256_set1_epi8(0x30)))
        }
    }
}

/// 16 bytes from each of two panels, one register (the first panel's low).
#[inline(always)]
pub(super) unsafe fn pair128(p: *const u8, stride: usize) -> __m256i {
    unsafe {
        _mm256_inserti128_si256::<1>(
            _mm256_castsi128_si256(_mm_loadu_si128(p.cast())),
            _mm_loadu_si128(p.add(stride).cast()),
        )
    }
}

/// 32 bytes from each of two panels, one register (the first panel's low).
#[inline(always)]
pub(super) unsafe fn pair256(p: *const u8, stride: usize) -> __m512i {
    unsafe {
        _mm512_inserti64x4::<1>(
            _mm512_castsi256_si512(_mm256_loadu_si256(p.cast())),
            _mm256_loadu_si256(p.add(stride).cast()),
        )
    }
}

impl Lanes for Z {
    const PANELS: usize = 2;
    type I = __m512i;
    type F = __m512;
    #[inline(always)]
    unsafe fn izero() -> __m512i {
        unsafe { _mm512_setzero_si512() }
    }
    #[inline(always)]
    unsafe fn fzero() -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn iadd(a: __m512i, b: __m512i) -> __m512i {
        unsafe { _mm512_add_epi32(a, b) }
    }
    #[inline(always)]
    unsafe fn isub(a: __m512i, c: i32) -> __m512i {
        unsafe { _mm512_sub_epi32(a, _mm512_set1_epi32(c)) }
    }
    #[inline(always)]
    unsafe fn group<Q>(q: *const Q) -> __m512i {
        unsafe { _mm512_set1_epi32(q.cast::<i32>().read_unaligned()) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> __m512 {
        unsafe { _mm512_set1_ps(v) }
    }
    #[inline(always)]
    unsafe fn cvt(a: __m512i) -> __m512 {
        unsafe { _mm512_cvtepi32_ps(a) }
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    unsafe fn neg(a: __m512) -> __m512 {
        unsafe {
            _mm512_castsi512_ps(_mm512_xor_si512(
                _mm512_castps_si512(a),
                _mm512_set1_epi32(i32::MIN),
            ))
        }
    }
    #[inline(always)]
    unsafe fn halves(p: *const u8, stride: usize) -> __m512 {
        unsafe { _mm512_cvtph_ps(pair128(p, stride)) }
    }
    #[inline(always)]
    unsafe fn bytes_f32(p: *const u8, stride: usize, signed: bool) -> __m512 {
        unsafe {
            let b = _mm_unpacklo_epi64(
                _mm_loadl_epi64(p.cast()),
                _mm_loadl_epi64(p.add(stride).cast()),
            );
            _mm512_cvtepi32_ps(if signed {
                _mm512_cvtepi8_epi32(b)
            } else {
                _mm512_cvtepu8_epi32(b)
            })
        }
    }
    #[inline(always)]
    unsafe fn store(v: __m512, out: &mut [f32; 2 * PANEL]) {
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) }
    }
    #[inline(always)]
    unsafe fn six<const S: i32>(n: __m512i, high: __m512i) -> __m512i {
        unsafe {
            let h = match S {
                4 => _mm512_slli_epi16::<4>(high),
                2 => _mm512_slli_epi16::<2>(high),
                -2 => _mm512_srli_epi16::<2>(high),
                _ => high,
            };
            _mm512_or_si512(n, _mm512_and_si512(h, _mm512_set1_epi8(0x30)))
        }
    }
}
