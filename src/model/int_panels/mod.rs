//! Integer products of GGUF weight blocks (Q4_0, Q4_1, Q5_0, Q8_0 and the K-quants Q4_K, Q5_K,
//! Q6_K)
//! with activation rows quantized to 16- or 8-bit blocks ([`ActRows`]), the weights repacked into
//! **panels of 8 rows** so that one SIMD register holds the partial sums of 8 weight rows: no
//! horizontal sums, the activations are read as stored (two values broadcast to every lane), and
//! each weight block is unpacked once for every activation row of a tile.
//!
//! The arithmetic, for one weight row `w` and one activation row `x` (this is what the scalar
//! [`dot`] computes; every SIMD path reproduces it bit for bit, whatever the tile). A weight row
//! is a row of 32-value blocks ([`Sub`]: integers `v`, a scale, a minimum); `y = 0`, then for
//! each block `b` in order:
//! - `s = sum_i v_i * q_i`, exact in i32, where `v` are the block's weight integers (Q4_0:
//!   `nibble - 8`; Q5_0: `q - 16`; Q4_1, Q4_K, Q5_K: the unsigned value; Q8_0: the signed byte;
//!   Q6_K: `q - 32`)
//!   and `q` the activation integers;
//! - `y = fma(dw * dx, s as f32, y)`, with `dw * dx` one rounded f32 product of the weight
//!   block's scale and the activation block's scale, and `s as f32` rounded to nearest (exact for
//!   the 4-bit types, where `|s| <= 15 * 32767 * 32 < 2^24`). Q6_K's blocks have two halves with
//!   their own scales: this step is taken for values 0..16, then for 16..32;
//! - for Q4_1, Q4_K and Q5_K, then `y = fma(mw, sx, y)`: the block's minimum (for the K-quants
//!   minus ggml's `dmin * m`) times the activation block's sum.
//!
//! Nothing in it depends on any other row, so a row's result is the same whatever tile shape or
//! batch computed it: a token verified inside a tree gets bit for bit the logits it gets alone.
//!
//! The panel layout of Q4_0, Q4_1 and Q8_0, per panel of 8 weight rows and per block `b`,
//! `8 x type_size` bytes: the 8 rows' f16 scales, for Q4_1 the 8 rows' f16 minima, then the rows'
//! quantized bytes interleaved `u` bytes at a time (chunk `c` holds bytes `u c .. u (c + 1)` of
//! rows 0..8), with `u = 2` for 16-bit activations and 4 for 8-bit ones. A 16-bit chunk of
//! nibbles gives values `2c, 2c + 1` (low nibbles) and `16 + 2c, 17 + 2c` (high nibbles) of 8
//! rows; zero-extended to 16 bits, each is one register whose 32-bit lane `r` is the pair of row
//! `r`, which is what one 16-bit multiply-add (`madd`, `vpdpwssd`) takes; an 8-bit chunk gives
//! quads the same way for `maddubs` / `vpdpbusd`. A Q5_0 block is held as the Q8_0 block of
//! the same values (`q - 16` in a byte, the same scale; 8.5 bits per weight instead of 5.5, and
//! no high bits to gather). The K-quants' layout is in [`k_quants`]. A
//! matrix whose row count is not a multiple of 8 is padded with zero rows (scale 0).
//!
//! Panels follow one another, or, where the CPU's fastest tiles read two panels at once and the
//! panels are short, are stored in pairs whose blocks alternate ([`Panels::paired`]), so that
//! those tiles read one memory stream. Every kernel reads either layout, with the same bits.

use crate::model::act_rows::{ActRow, ActRows, QK, Quant};
use crate::model::huge_buf::HugeBuf;
use crate::model::quant::{self, GgmlType};
use half::f16;
use k_quants::{KBlock, SUBS, is_k};
use rayon::prelude::*;
use std::borrow::Cow;
use std::marker::PhantomData;

/// Weight rows per panel.
pub(crate) const PANEL: usize = 8;

/// The environment variable that chooses the integer products' instruction set instead of the
/// best one the CPU runs (to measure a slower path, or to run the scalar definition itself).
pub(crate) const ISA_VAR: &str = "MSN_HOST_ISA";

/// The values [`ISA_VAR`] takes.
const ISA_NAMES: &str = "scalar, avx2, avx-vnni, avx512-vnni-256, avx512-vnni";

/// [`ISA_VAR`]'s value where it is set and not empty.
fn isa_override() -> Option<String> {
    std::env::var(ISA_VAR).ok().filter(|v| !v.is_empty())
}

/// Checks [`ISA_VAR`]: unset, or a path this CPU runs.
///
/// # Errors
/// [`crate::Error::InvalidArgument`] naming the valid values otherwise.
pub(crate) fn check_isa_override() -> crate::Result<()> {
    let Some(name) = isa_override() else {
        return Ok(());
    };
    #[cfg(target_arch = "x86_64")]
    let checked = x86::chosen(&name).map(|_| ());
    #[cfg(not(target_arch = "x86_64"))]
    let checked = match name.as_str() {
        "scalar" => Ok(()),
        _ => Err(format!(
            "`{name}`: this CPU runs only `scalar` (of {ISA_NAMES})"
        )),
    };
    checked.map_err(|e| crate::Error::InvalidArgument(format!("{ISA_VAR}={name}: {e}")))
}

/// Whether `ty` has integer products.
pub(crate) fn supports(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0
    ) || is_k(ty)
}

/// Every type with integer products (for tests).
#[cfg(test)]
pub(crate) const INTEGER_TYPES: [GgmlType; 7] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// The block type whose panel layout `ty` is held in (Q5_0 as Q8_0).
fn layout(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::Q5_0 => GgmlType::Q8_0,
        _ => ty,
    }
}

/// A Q5_0 block as the Q8_0 block of the same values.
fn q5_0_as_q8_0(b: &[u8]) -> [u8; 34] {
    let mut o = [0u8; 34];
    o[..2].copy_from_slice(&b[..2]);
    for (o, q) in o[2..].iter_mut().zip(quant::q5_values(&b[2..22])) {
        *o = (q as i8 - 16) as u8;
    }
    o
}

/// The inverse of [`q5_0_as_q8_0`] (for the Q8_0 blocks it gives).
fn q8_0_as_q5_0(b: &[u8], o: &mut [u8]) {
    o.fill(0);
    o[..2].copy_from_slice(&b[..2]);
    for (j, v) in b[2..34].iter().enumerate() {
        let q = (*v as i8 + 16) as u8;
        o[2 + j / 8] |= ((q >> 4) & 1) << (j % 8);
        o[6 + j % 16] |= (q & 15) << (4 * (j / 16));
    }
}

/// One 32-value block of a weight row in the definition's terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sub {
    /// The weight integers.
    pub(crate) v: [i32; QK],
    /// The scales of values 0..16 and 16..32 (the same but for Q6_K).
    pub(crate) d: [f32; 2],
    /// What multiplies the activation block's sum (Q4_1, Q4_K, Q5_K; 0 for the others).
    pub(crate) m: f32,
}

/// Whether a block of `ty` has two halves with their own scales.
fn halves(ty: GgmlType) -> bool {
    ty == GgmlType::Q6K
}

/// Whether a block of `ty` has a minimum.
fn has_min(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_1 | GgmlType::Q4K | GgmlType::Q5K)
}

/// A Q4_0, Q4_1, Q5_0 or Q8_0 GGUF block in the definition's terms.
pub(crate) fn block_values(ty: GgmlType, b: &[u8]) -> Sub {
    let half = |at: usize| f16::from_le_bytes([b[at], b[at + 1]]).to_f32();
    let mut v = [0i32; QK];
    match ty {
        GgmlType::Q5_0 => {
            for (v, q) in v.iter_mut().zip(quant::q5_values(&b[2..22])) {
                *v = i32::from(q) - 16;
            }
        }
        GgmlType::Q8_0 => {
            for (v, q) in v.iter_mut().zip(&b[2..34]) {
                *v = i32::from(*q as i8);
            }
        }
        _ => {
            let (off, bias) = if ty == GgmlType::Q4_1 { (4, 0) } else { (2, 8) };
            for (i, q) in b[off..off + 16].iter().enumerate() {
                v[i] = i32::from(q & 0x0f) - bias;
                v[i + 16] = i32::from(q >> 4) - bias;
            }
        }
    }
    let m = if ty == GgmlType::Q4_1 { half(2) } else { 0.0 };
    Sub {
        v,
        d: [half(0); 2],
        m,
    }
}

/// The definition over a row given block by block.
fn dot_blocks<Q: Quant>(ty: GgmlType, blocks: impl Iterator<Item = Sub>, x: ActRow<'_, Q>) -> f32 {
    let mut y = 0f32;
    for (b, w) in blocks.enumerate() {
        let xq = &x.qs[b * QK..(b + 1) * QK];
        let s = |r: std::ops::Range<usize>| -> i32 {
            w.v[r.clone()]
                .iter()
                .zip(&xq[r])
                .map(|(v, q)| v * q.to_i32())
                .sum()
        };
        if halves(ty) {
            y = (w.d[0] * x.d[b]).mul_add(s(0..QK / 2) as f32, y);
            y = (w.d[1] * x.d[b]).mul_add(s(QK / 2..QK) as f32, y);
        } else {
            y = (w.d[0] * x.d[b]).mul_add(s(0..QK) as f32, y);
        }
        if has_min(ty) {
            y = w.m.mul_add(x.s[b], y);
        }
    }
    y
}

/// A GGUF row of `ty` block by block in the definition's terms.
#[cfg(test)]
fn row_blocks(ty: GgmlType, w: &[u8]) -> Vec<Sub> {
    let blocks = w.chunks_exact(ty.type_size());
    if is_k(ty) {
        blocks
            .flat_map(|b| {
                let k = KBlock::decode(ty, b);
                (0..SUBS).map(move |j| k.sub(ty, j))
            })
            .collect()
    } else {
        blocks.map(|b| block_values(ty, b)).collect()
    }
}

/// The definition: one weight row of GGUF `ty` blocks times one quantized activation row (the
/// kernels read panels; the tests hold them to this).
#[cfg(test)]
pub(crate) fn dot<Q: Quant>(ty: GgmlType, w: &[u8], x: ActRow<'_, Q>) -> f32 {
    dot_blocks(ty, row_blocks(ty, w).into_iter(), x)
}

/// A matrix of GGUF blocks repacked into panels of [`PANEL`] rows.
#[derive(Debug, Clone)]
pub(crate) struct Panels {
    ty: GgmlType,
    rows: usize,
    /// 32-value blocks per row (8 per K-quant super-block).
    nb: usize,
    /// Bytes of each row per chunk: [`PanelAct::UNIT`] of the activation type packed for.
    unit: usize,
    /// See [`Self::paired`].
    paired: usize,
    bytes: HugeBuf,
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
        paired: usize,
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
                paired: usize,
                out: Out<'_>,
            ) {
                // SAFETY: as this function's.
                unsafe { x86::$rows(isa, ty, w, nb, x, first, n, paired, out) }
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

/// Where the parts of panel `h`'s (0 or 1) block of `pgb` bytes (`heads` bytes of heads, then
/// values `vals` bytes per 32-value block) lie in its pair's block: each part's range in the
/// panel's own block, with where it starts in the pair's (see [`Panels::paired`]).
fn pair_parts(
    heads: usize,
    vals: usize,
    pgb: usize,
    h: usize,
) -> impl Iterator<Item = (std::ops::Range<usize>, usize)> {
    let head = (0..heads, h * heads);
    let values = (0..(pgb - heads) / vals.max(1)).map(move |i| {
        let from = heads + i * vals;
        (from..from + vals, 2 * heads + (2 * i + h) * vals)
    });
    std::iter::once(head).chain(values)
}

/// Bytes of a panel of `ty` per GGUF block (per super-block for the K-quants).
fn panel_block_bytes(ty: GgmlType) -> usize {
    if is_k(ty) {
        k_quants::panel_super_bytes(ty)
    } else {
        PANEL * layout(ty).type_size()
    }
}

/// Writes a panel from its GGUF `rows` (at most [`PANEL`]; missing rows stay zero) into `units`,
/// its blocks' places (its super-blocks' for the K-quants), in order.
fn write_panel<'a, Q: PanelAct>(
    ty: GgmlType,
    rows: impl ExactSizeIterator<Item = &'a [u8]>,
    mut units: Vec<&mut [u8]>,
) {
    let ts = ty.type_size();
    let rows: Vec<&[u8]> = rows.collect();
    if is_k(ty) {
        // Super-block by super-block, the panel's rows together.
        let mut ks = [KBlock::EMPTY; PANEL];
        for (s, dst) in units.iter_mut().enumerate() {
            for (k, row) in ks.iter_mut().zip(&rows) {
                *k = KBlock::decode(ty, &row[s * ts..(s + 1) * ts]);
            }
            KBlock::write_panel(&ks[..rows.len()], ty, Q::UNIT, dst);
        }
        return;
    }
    for (lane, row) in rows.iter().enumerate() {
        for (blk, dst) in row.chunks_exact(ts).zip(units.iter_mut()) {
            let q8;
            let blk = match ty {
                GgmlType::Q5_0 => {
                    q8 = q5_0_as_q8_0(blk);
                    &q8[..]
                }
                _ => blk,
            };
            match Q::UNIT {
                2 => write_block::<2>(layout(ty), lane, blk, dst),
                _ => write_block::<4>(layout(ty), lane, blk, dst),
            }
        }
    }
}

/// Writes GGUF block `blk` of a Q4_0, Q4_1 or Q8_0 row into its panel block `dst` as the row
/// at `lane`, `U` bytes per row per chunk: where [`panel_offset`] puts each byte (the tests
/// hold the two together), whole chunks at a time.
fn write_block<const U: usize>(ty: GgmlType, lane: usize, blk: &[u8], dst: &mut [u8]) {
    let q0 = quant_start(ty);
    for (i, f) in blk[..q0].chunks_exact(2).enumerate() {
        let at = i * 2 * PANEL + 2 * lane;
        dst[at..at + 2].copy_from_slice(f);
    }
    for (c, chunk) in blk[q0..].chunks_exact(U).enumerate() {
        let at = PANEL * q0 + c * U * PANEL + U * lane;
        dst[at..at + U].copy_from_slice(chunk);
    }
}

impl Panels {
    /// Repacks `rows` GGUF rows of `row_bytes` bytes (whole `ty` blocks) from `src`, for
    /// activations of type `Q`, in the layout this CPU's kernels read fastest (panels in pairs
    /// where they take two panels at a time; see [`Self::paired`]).
    ///
    /// # Panics
    /// When `ty` has no integer products or `src` is not `rows` such rows (callers check both).
    pub(crate) fn new<Q: PanelAct>(
        ty: GgmlType,
        rows: usize,
        row_bytes: usize,
        src: &[u8],
    ) -> Self {
        #[cfg(target_arch = "x86_64")]
        let paired = x86::reads_pairs(ty, row_bytes / ty.type_size() * panel_block_bytes(ty));
        #[cfg(not(target_arch = "x86_64"))]
        let paired = false;
        Self::with_layout::<Q>(ty, rows, row_bytes, src, paired)
    }

    /// [`Self::new`] in pairs of panels or not, as `paired` says (every kernel reads both).
    pub(crate) fn with_layout<Q: PanelAct>(
        ty: GgmlType,
        rows: usize,
        row_bytes: usize,
        src: &[u8],
        paired: bool,
    ) -> Self {
        let ts = ty.type_size();
        assert!(
            supports(ty) && row_bytes.is_multiple_of(ts) && src.len() == rows * row_bytes,
            "whole rows of integer-product blocks"
        );
        let gb = row_bytes / ts;
        let mut p = Self {
            ty,
            rows,
            nb: gb * ty.block_size() / QK,
            unit: Q::UNIT,
            paired: 0,
            bytes: HugeBuf::zeroed(0),
        };
        let panels = rows.div_ceil(PANEL);
        p.paired = if paired { panels / 2 * 2 } else { 0 };
        let (pb, pgb) = (p.panel_bytes(), p.panel_gguf_block_bytes());
        let mut bytes = HugeBuf::zeroed(panels * pb);
        // Each task writes the panels of one pair (or one unpaired panel) from their rows.
        let (in_pairs, rest) = bytes.split_at_mut(p.paired * pb);
        let write = |panel: usize, dst: &mut [u8]| {
            let lanes = PANEL.min(rows - panel * PANEL);
            let rows =
                (0..lanes).map(|lane| &src[(panel * PANEL + lane) * row_bytes..][..row_bytes]);
            write_panel::<Q>(ty, rows, dst.chunks_exact_mut(pgb.max(1)).collect());
        };
        let (heads, vals) = p.parts();
        in_pairs
            .par_chunks_mut((2 * pb).max(1))
            .enumerate()
            .for_each(|(pair, dst)| {
                let mut one = vec![0u8; 2 * pb];
                let (a, b) = one.split_at_mut(pb);
                write(2 * pair, a);
                write(2 * pair + 1, b);
                for (u, d) in dst.chunks_exact_mut(2 * pgb.max(1)).enumerate() {
                    for (h, src) in [&a[u * pgb..][..pgb], &b[u * pgb..][..pgb]]
                        .iter()
                        .enumerate()
                    {
                        for (part, at) in pair_parts(heads, vals, pgb, h) {
                            d[at..at + part.len()].copy_from_slice(&src[part]);
                        }
                    }
                }
            });
        rest.par_chunks_mut(pb.max(1))
            .enumerate()
            .for_each(|(i, dst)| write(p.paired + i, dst));
        p.bytes = bytes;
        p
    }

    /// How many panels, from the first, are stored in pairs (an even count; 0 when the layout
    /// is one panel after another). A pair holds its two panels' GGUF blocks (super-blocks for
    /// the K-quants) in order, each block as both panels' heads (scales, minima), then both
    /// panels' values of each 32-value block, so that a kernel reading both panels at once
    /// reads one memory stream, not two a panel apart (one Zen 4 core streaming a 131072 x 576
    /// Q4_1 matrix by the 512-bit tiles: 17 -> 47 GMAC/s at one activation row, 47 -> 90 at
    /// four). The last panel of an odd count is stored alone.
    pub(crate) fn paired(&self) -> usize {
        self.paired
    }

    /// Bytes of a panel block's heads and of one 32-value block's values in it (see
    /// [`Self::paired`]).
    fn parts(&self) -> (usize, usize) {
        let pgb = self.panel_gguf_block_bytes();
        if is_k(self.ty) {
            let heads = k_quants::heads(self.ty == GgmlType::Q6K);
            (heads, (pgb - heads) / SUBS)
        } else {
            let heads = PANEL * quant_start(layout(self.ty));
            (heads, pgb - heads)
        }
    }

    /// Bytes of a panel per GGUF block (per super-block for the K-quants).
    fn panel_gguf_block_bytes(&self) -> usize {
        panel_block_bytes(self.ty)
    }

    /// GGUF blocks per row.
    fn gguf_blocks(&self) -> usize {
        self.nb * QK / self.ty.block_size()
    }

    /// Bytes per panel.
    fn panel_bytes(&self) -> usize {
        self.gguf_blocks() * self.panel_gguf_block_bytes()
    }

    /// Values per row.
    pub(crate) fn width(&self) -> usize {
        self.nb * QK
    }

    /// GGUF block `b` of row `r`, where the panels hold it.
    fn panel_block(&self, r: usize, b: usize) -> Cow<'_, [u8]> {
        let (pgb, p) = (self.panel_gguf_block_bytes(), r / PANEL);
        if p >= self.paired {
            return Cow::Borrowed(&self.bytes[(p * self.panel_bytes() + b * pgb)..][..pgb]);
        }
        let (heads, vals) = self.parts();
        let pair = &self.bytes[(p - p % 2) * self.panel_bytes() + 2 * b * pgb..][..2 * pgb];
        let mut blk = vec![0u8; pgb];
        for (part, at) in pair_parts(heads, vals, pgb, p % 2) {
            blk[part.clone()].copy_from_slice(&pair[at..at + part.len()]);
        }
        Cow::Owned(blk)
    }

    /// Block `b` of row `r` as stored in the GGUF (`blk`, one block long).
    fn gguf_block(&self, r: usize, b: usize, blk: &mut [u8]) {
        let (src, lane) = (self.panel_block(r, b), r % PANEL);
        if is_k(self.ty) {
            KBlock::read(self.ty, self.unit, lane, &src).encode(self.ty, blk);
        } else if self.ty == GgmlType::Q5_0 {
            q8_0_as_q5_0(&self.layout_block(r, b), blk);
        } else {
            blk.copy_from_slice(&self.layout_block(r, b)[..blk.len()]);
        }
    }

    /// Block `b` of row `r` of a non-K type as its layout type's GGUF block (the first
    /// `type_size` bytes).
    fn layout_block(&self, r: usize, b: usize) -> [u8; 34] {
        let (src, lane, ty) = (self.panel_block(r, b), r % PANEL, layout(self.ty));
        let mut blk = [0u8; 34];
        for (i, v) in blk[..ty.type_size()].iter_mut().enumerate() {
            *v = src[panel_offset(ty, self.unit, lane, i)];
        }
        blk
    }

    /// Whether the panels are packed for 8-bit activations (else 16-bit).
    pub(crate) fn eight_bit(&self) -> bool {
        self.unit == i8::UNIT
    }

    /// The rows as GGUF stores them (the inverse of [`Self::new`]).
    pub(crate) fn gguf_rows(&self, first: usize, n: usize) -> Vec<u8> {
        let ts = self.ty.type_size();
        let gb = self.gguf_blocks();
        let mut out = vec![0u8; n * gb * ts];
        for (i, row) in out.chunks_exact_mut(gb * ts).enumerate() {
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

    /// Row `r`'s blocks in the definition's terms, read back from the panels.
    fn row_values(&self, r: usize) -> Vec<Sub> {
        let lane = r % PANEL;
        if is_k(self.ty) {
            let blocks = (0..self.gguf_blocks())
                .map(|b| KBlock::read(self.ty, self.unit, lane, &self.panel_block(r, b)));
            return blocks
                .flat_map(|k| (0..SUBS).map(move |j| k.sub(self.ty, j)))
                .collect();
        }
        (0..self.nb)
            .map(|b| block_values(layout(self.ty), &self.layout_block(r, b)))
            .collect()
    }

    /// Output features `first..first + n` (`first` a multiple of [`PANEL`], of twice that where
    /// it falls among the [`Self::paired`] panels) for every row of `x`, into `out`, with the
    /// best instruction set here.
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
                && (first / PANEL >= self.paired || (first / PANEL).is_multiple_of(2))
                && first + n <= self.rows
                && x.width() == self.width()
                && out.m == x.rows()
                && out.features == self.rows,
            "activations of the type packed for, features of this matrix from a panel start \
             (a pair's, where panels are paired), activations as wide, out as large"
        );
        // SAFETY: as this function's.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            self.rows_by(
                x86::best_for(x.rows(), self.width(), self.paired() > 0),
                first,
                n,
                x,
                out,
            );
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
                let paired = self.paired.saturating_sub(first / PANEL);
                // SAFETY: `isa` runs here; `w` holds the panels of rows first..first + n
                // (padded to whole panels), `nb` blocks each, the first `paired` of them in
                // pairs (`first` starts a pair where it is in one, checked by `rows_to`); `x` is
                // as wide, `out` as large (checked by `rows_to`), and features first..first + n
                // are ours.
                unsafe { Q::x86_rows(isa, self.ty, w, self.nb, x, first, n, paired, out) }
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
            let blocks = self.row_values(r);
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

mod k_quants;
#[cfg(target_arch = "x86_64")]
mod lanes;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;
