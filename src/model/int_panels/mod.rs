//! Integer products of GGUF weight blocks (Q4_0, Q4_1, Q8_0) with activation rows quantized to
//! 16- or 8-bit blocks ([`ActRows`]), the weights repacked into **panels of 8 rows** so that one SIMD
//! register holds the partial sums of 8 weight rows: no horizontal sums, the activations are
//! read as stored (two values broadcast to every lane), and each weight block is unpacked once
//! for every activation row of a tile.
//!
//! The arithmetic, for one weight row `w` and one activation row `x` (this is what the scalar
//! [`dot`] computes; every SIMD path reproduces it bit for bit, whatever the tile):
//! - `y = 0`; then for each block `b` in order:
//! - `s = sum_i v_i * q_i`, exact in i32, where `v` are the block's weight integers (Q4_0:
//!   `nibble - 8`; Q4_1: `nibble`; Q8_0: the signed byte) and `q` the activation integers;
//! - `y = fma(dw * dx, s as f32, y)`, with `dw * dx` one rounded f32 product of the weight
//!   block's scale and the activation block's scale, and `s as f32` rounded to nearest (exact for
//!   the 4-bit types, where `|s| <= 15 * 32767 * 32 < 2^24`);
//! - for Q4_1, then `y = fma(mw, sx, y)`: the block's minimum times the activation block's sum.
//!
//! Nothing in it depends on any other row, so a row's result is the same whatever tile shape or
//! batch computed it: a token verified inside a tree gets bit for bit the logits it gets alone.
//!
//! The panel layout, per panel of 8 weight rows and per block `b`, `8 x type_size` bytes: the 8
//! rows' f16 scales, for Q4_1 the 8 rows' f16 minima, then the rows' quantized bytes
//! interleaved `u` bytes at a time (chunk `c` holds bytes `u c .. u (c + 1)` of rows 0..8), with
//! `u = 2` for 16-bit activations and 4 for 8-bit ones. A 16-bit chunk of nibbles gives values
//! `2c, 2c + 1` (low nibbles) and `16 + 2c, 17 + 2c` (high nibbles) of 8 rows; zero-extended to
//! 16 bits, each is one register whose 32-bit lane `r` is the pair of row `r`, which is what
//! one 16-bit multiply-add (`madd`, `vpdpwssd`) takes; an 8-bit chunk gives quads the same way
//! for `maddubs` / `vpdpbusd`. A matrix whose row count is not a multiple of 8 is padded with
//! zero rows (scale 0).

use crate::model::act_rows::{ActRow, ActRows, QK, Quant};
use crate::model::quant::GgmlType;
use half::f16;
use std::marker::PhantomData;

/// Weight rows per panel.
pub(crate) const PANEL: usize = 8;

/// Whether `ty` has integer products.
pub(crate) fn supports(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
}

/// The weight integers of one GGUF block and its scale and minimum (0 where the type has none).
pub(crate) fn block_values(ty: GgmlType, b: &[u8]) -> ([i32; QK], f32, f32) {
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

/// The definition over a row given block by block as `(values, scale, minimum)`.
fn dot_blocks<Q: Quant>(
    ty: GgmlType,
    blocks: impl Iterator<Item = ([i32; QK], f32, f32)>,
    x: ActRow<'_, Q>,
) -> f32 {
    let mut y = 0f32;
    for (b, (v, dw, mw)) in blocks.enumerate() {
        let xq = &x.qs[b * QK..(b + 1) * QK];
        let s: i32 = v.iter().zip(xq).map(|(v, q)| v * q.to_i32()).sum();
        y = (dw * x.d[b]).mul_add(s as f32, y);
        if ty == GgmlType::Q4_1 {
            y = mw.mul_add(x.s[b], y);
        }
    }
    y
}

/// The definition: one weight row of GGUF `ty` blocks times one quantized activation row (the
/// kernels read panels; the tests hold them to this).
#[cfg(test)]
pub(crate) fn dot<Q: Quant>(ty: GgmlType, w: &[u8], x: ActRow<'_, Q>) -> f32 {
    dot_blocks(
        ty,
        w.chunks_exact(ty.type_size()).map(|b| block_values(ty, b)),
        x,
    )
}

/// A matrix of GGUF blocks repacked into panels of [`PANEL`] rows.
#[derive(Debug, Clone)]
pub(crate) struct Panels {
    ty: GgmlType,
    rows: usize,
    /// Blocks per row.
    nb: usize,
    /// Bytes of each row per chunk: [`PanelAct::UNIT`] of the activation type packed for.
    unit: usize,
    bytes: Vec<u8>,
}

/// An activation integer type with panel products: how many bytes of a row a chunk holds (the
/// values one 32-bit lane multiplies: pairs for 16 bits, quads for 8), and its x86 kernels.
pub(crate) trait PanelAct: Quant {
    /// Bytes per row per chunk.
    const UNIT: usize;
    /// The x86 kernels ([`x86::rows16`], [`x86::rows8`]).
    ///
    /// # Safety
    /// As those functions'.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn x86_rows(
        isa: x86::Isa,
        ty: GgmlType,
        w: &[u8],
        nb: usize,
        x: &ActRows<Self>,
        first: usize,
        n: usize,
        out: Out<'_>,
    );
}

macro_rules! panel_act {
    ($q:ty, $unit:expr, $rows:ident) => {
        impl PanelAct for $q {
            const UNIT: usize = $unit;
            #[cfg(target_arch = "x86_64")]
            unsafe fn x86_rows(
                isa: x86::Isa,
                ty: GgmlType,
                w: &[u8],
                nb: usize,
                x: &ActRows<Self>,
                first: usize,
                n: usize,
                out: Out<'_>,
            ) {
                // SAFETY: as this function's.
                unsafe { x86::$rows(isa, ty, w, nb, x, first, n, out) }
            }
        }
    };
}

panel_act!(i16, 2, rows16);
panel_act!(i8, 4, rows8);

/// Where a type's quantized bytes start in a GGUF block (after its f16 fields).
fn quant_start(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4_1 => 4,
        _ => 2,
    }
}

/// Where byte `i` of a row's GGUF block lies in its panel's block, for the row at `lane` and
/// chunks of `unit` bytes per row: the f16 fields (scale, Q4_1's minimum) two bytes per row,
/// then the quantized bytes `unit` per row.
fn panel_offset(ty: GgmlType, unit: usize, lane: usize, i: usize) -> usize {
    let q0 = quant_start(ty);
    if i < q0 {
        (i / 2) * 2 * PANEL + 2 * lane + i % 2
    } else {
        let j = i - q0;
        PANEL * q0 + (j / unit) * unit * PANEL + unit * lane + j % unit
    }
}

impl Panels {
    /// Repacks `rows` GGUF rows of `row_bytes` bytes (whole `ty` blocks) from `src`, for
    /// activations of type `Q`.
    ///
    /// # Panics
    /// When `ty` has no integer products or `src` is not `rows` such rows (callers check both).
    pub(crate) fn new<Q: PanelAct>(
        ty: GgmlType,
        rows: usize,
        row_bytes: usize,
        src: &[u8],
    ) -> Self {
        let ts = ty.type_size();
        assert!(
            supports(ty) && row_bytes.is_multiple_of(ts) && src.len() == rows * row_bytes,
            "whole rows of integer-product blocks"
        );
        let nb = row_bytes / ts;
        let mut bytes = vec![0u8; rows.div_ceil(PANEL) * PANEL * row_bytes];
        for r in 0..rows {
            let (p, lane) = (r / PANEL, r % PANEL);
            for b in 0..nb {
                let blk = &src[r * row_bytes + b * ts..][..ts];
                let dst = &mut bytes[(p * nb + b) * PANEL * ts..][..PANEL * ts];
                for (i, v) in blk.iter().enumerate() {
                    dst[panel_offset(ty, Q::UNIT, lane, i)] = *v;
                }
            }
        }
        Self {
            ty,
            rows,
            nb,
            unit: Q::UNIT,
            bytes,
        }
    }

    /// Bytes per panel.
    fn panel_bytes(&self) -> usize {
        self.nb * PANEL * self.ty.type_size()
    }

    /// Block `b` of row `r` as stored in the GGUF (`blk`, one block long).
    fn gguf_block(&self, r: usize, b: usize, blk: &mut [u8]) {
        let ts = self.ty.type_size();
        let (p, lane) = (r / PANEL, r % PANEL);
        let src = &self.bytes[(p * self.nb + b) * PANEL * ts..][..PANEL * ts];
        for (i, v) in blk.iter_mut().enumerate() {
            *v = src[panel_offset(self.ty, self.unit, lane, i)];
        }
    }

    /// Whether the panels are packed for 8-bit activations (else 16-bit).
    pub(crate) fn eight_bit(&self) -> bool {
        self.unit == i8::UNIT
    }

    /// The rows as GGUF stores them (the inverse of [`Self::new`]).
    pub(crate) fn gguf_rows(&self, first: usize, n: usize) -> Vec<u8> {
        let ts = self.ty.type_size();
        let mut out = vec![0u8; n * self.nb * ts];
        for (i, row) in out.chunks_exact_mut(self.nb * ts).enumerate() {
            for (b, blk) in row.chunks_exact_mut(ts).enumerate() {
                self.gguf_block(first + i, b, blk);
            }
        }
        out
    }

    /// The block type.
    pub(crate) fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Block `b` of row `r` as `(values, scale, minimum)`, read back from the panels.
    fn values(&self, r: usize, b: usize) -> ([i32; QK], f32, f32) {
        let mut blk = [0u8; 34];
        let ts = self.ty.type_size();
        self.gguf_block(r, b, &mut blk[..ts]);
        block_values(self.ty, &blk[..ts])
    }

    /// Output features `first..first + n` (`first` a multiple of [`PANEL`]) for every row of
    /// `x`, into `out`, with the best instruction set here.
    ///
    /// # Safety
    /// No other thread reads or writes features `first..first + n` of `out` meanwhile (parallel
    /// callers hand each task its own features).
    pub(crate) unsafe fn rows_to<Q: PanelAct>(
        &self,
        first: usize,
        n: usize,
        x: &ActRows<Q>,
        out: Out<'_>,
    ) {
        assert!(
            Q::UNIT == self.unit
                && first.is_multiple_of(PANEL)
                && first + n <= self.rows
                && x.width() == self.nb * QK
                && out.m == x.rows()
                && out.features == self.rows,
            "activations of the type packed for, features of this matrix from a panel start, \
             activations as wide, out as large"
        );
        // SAFETY: as this function's.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            self.rows_by(x86::best(), first, n, x, out);
            #[cfg(not(target_arch = "x86_64"))]
            self.scalar_rows(first, n, x, out);
        }
    }

    /// [`Self::rows_to`] by `isa`, or by the definition where `None`.
    ///
    /// # Safety
    /// As [`Self::rows_to`], whose checks callers have made; the CPU runs `isa`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn rows_by<Q: PanelAct>(
        &self,
        isa: Option<x86::Isa>,
        first: usize,
        n: usize,
        x: &ActRows<Q>,
        out: Out<'_>,
    ) {
        match isa {
            Some(isa) => {
                let w = &self.bytes[first / PANEL * self.panel_bytes()..];
                // SAFETY: `isa` runs here; `w` holds the panels of rows first..first + n
                // (padded to whole panels), `nb` blocks each; `x` is as wide, `out` as large
                // (checked by `rows_to`), and features first..first + n are ours.
                unsafe { Q::x86_rows(isa, self.ty, w, self.nb, x, first, n, out) }
            }
            None => unsafe { self.scalar_rows(first, n, x, out) },
        }
    }

    /// [`Self::rows_to`] by the definition.
    ///
    /// # Safety
    /// As [`Self::rows_to`], whose checks callers have made.
    unsafe fn scalar_rows<Q: PanelAct>(
        &self,
        first: usize,
        n: usize,
        x: &ActRows<Q>,
        out: Out<'_>,
    ) {
        for r in first..first + n {
            // Each block unpacked once per weight row, not once per activation row.
            let blocks: Vec<_> = (0..self.nb).map(|b| self.values(r, b)).collect();
            for j in 0..out.m {
                let y = dot_blocks(self.ty, blocks.iter().copied(), x.row(j));
                // SAFETY: j < m, r < features; feature r is ours (callers).
                unsafe { out.set(j, r, y) };
            }
        }
    }
}

/// Where a product goes: `[m, features]` row-major (activation row `j`, output feature `r` at
/// `j * features + r`), shared by parallel tasks that each write their own features.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out<'a> {
    ptr: *mut f32,
    m: usize,
    features: usize,
    _y: PhantomData<&'a mut [f32]>,
}

// SAFETY: an `Out` is a `&mut [f32]` that tasks write at disjoint features (the contract of
// every function that takes one).
unsafe impl Send for Out<'_> {}
// SAFETY: as above.
unsafe impl Sync for Out<'_> {}

impl<'a> Out<'a> {
    /// `y` as `m` rows (`y.len()` a multiple of `m`).
    pub(crate) fn new(y: &'a mut [f32], m: usize) -> Self {
        assert!(m > 0 && y.len().is_multiple_of(m), "whole rows");
        Self {
            ptr: y.as_mut_ptr(),
            m,
            features: y.len() / m,
            _y: PhantomData,
        }
    }

    /// Writes `v` at row `j`, feature `r`.
    ///
    /// # Safety
    /// `j < m`, `r < features`, and no other thread touches that element meanwhile.
    #[inline(always)]
    unsafe fn set(&self, j: usize, r: usize, v: f32) {
        debug_assert!(j < self.m && r < self.features);
        // SAFETY: in bounds and ours (callers).
        unsafe { *self.ptr.add(j * self.features + r) = v };
    }

    /// Writes `v` at row `j`, features `r..r + v.len()`.
    ///
    /// # Safety
    /// As [`Self::set`] for each of them.
    #[inline(always)]
    pub(super) unsafe fn set_run(&self, j: usize, r: usize, v: &[f32]) {
        debug_assert!(j < self.m && r + v.len() <= self.features);
        // SAFETY: in bounds and ours (callers); `v` is not part of the output.
        unsafe {
            std::ptr::copy_nonoverlapping(v.as_ptr(), self.ptr.add(j * self.features + r), v.len())
        };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;
