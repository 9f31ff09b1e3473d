//! The K-quants (Q4_K, Q5_K, Q6_K) in panels: a GGUF super-block of 256 values unpacked
//! ([`KBlock`]), packed back exactly, and laid out for the kernels.
//!
//! In the definition a K-quant row is a row of 32-value blocks like the others, with the
//! scales ggml's dequantizer uses: Q4_K / Q5_K sub-block `j` has the scale `d * sc_j` and the
//! minimum `dmin * m_j` (each one f32 product, as ggml computes them), values `0..16` / `0..32`;
//! a Q6_K block has two 16-value halves with scales `d * sc_h` and values `q - 32`.
//!
//! A panel holds, per super-block, for its 8 rows: the f16 `d` (and `dmin`), then the
//! sub-block scales unpacked to one byte each, sub-block by sub-block (8 rows' bytes together,
//! so one 8-byte load gives a sub-block's 8 lanes), then the values sub-block by sub-block,
//! interleaved `unit` bytes per row like the other types: Q4_K as nibbles (value `i` low, value
//! `16 + i` high, as Q4_0 within a block), Q5_K one byte per value (its one high bit would cost
//! more instructions than it saves memory), Q6_K in its own 6.5 bits per value (see
//! [`q6_row`]): stored a byte per value, its panels were 1.3x the GGUF's, and a one-token
//! product of them ran at the speed of memory (Q6_K 1B shape, Zen 4: 0.8x llama.cpp's decode).
//! Q6_K's values are stored unsigned (`q`, not `q - 32`) and the kernels subtract `32 x` each
//! half's activation sum.

use super::{PANEL, QK, Sub};
use crate::model::quant::{GgmlType, scale_min_k4};
use half::f16;

/// Values per super-block.
pub(super) const SUPER: usize = 256;

/// Sub-blocks (32 values) per super-block.
pub(super) const SUBS: usize = SUPER / QK;

/// One GGUF K-quant super-block, unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KBlock {
    /// The f16 scale's bytes.
    d: [u8; 2],
    /// The f16 minimum scale's bytes (Q4_K, Q5_K).
    dmin: [u8; 2],
    /// Q4_K / Q5_K: the 8 sub-blocks' 6-bit scales; Q6_K: the 16 halves' i8 scales.
    sc: [u8; 16],
    /// Q4_K / Q5_K: the 8 sub-blocks' 6-bit minima.
    m: [u8; 8],
    /// The values as unsigned integers (below 16, 32, 64).
    q: [u8; SUPER],
}

/// Whether `ty` is a K-quant.
pub(super) fn is_k(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K)
}

/// Bytes of the per-super-block heads of a panel: `d` (and `dmin`), the unpacked scales (and
/// minima).
pub(super) const fn heads(q6: bool) -> usize {
    if q6 {
        2 * PANEL + 16 * PANEL
    } else {
        4 * PANEL + 16 * PANEL
    }
}

/// Bytes of one row's values per sub-block in a panel: Q4_K's nibbles, Q6_K's nibbles and high
/// bits, Q5_K's bytes.
pub(super) const fn value_bytes(q4: bool, q6: bool) -> usize {
    if q4 {
        QK / 2
    } else if q6 {
        QK / 2 + QK / 4
    } else {
        QK
    }
}

/// Bytes of one panel per super-block.
pub(super) fn panel_super_bytes(ty: GgmlType) -> usize {
    let (q4, q6) = (ty == GgmlType::Q4K, ty == GgmlType::Q6K);
    heads(q6) + SUBS * PANEL * value_bytes(q4, q6)
}

/// A Q6_K sub-block's value bytes for one row, in their panel order, `unit` bytes per row per
/// chunk: pairs of nibble chunks as Q4_K's (chunk `c`, byte `k` of a row: value
/// `i = c * unit + k` low, `16 + i` high), each pair followed by one chunk of their high bits
/// (byte `k`: bits 0-1 and 2-3 the high bits of chunk `2p`'s values `i` and `16 + i`, bits 4-5
/// and 6-7 those of chunk `2p + 1`'s). Chunk `n` of them goes `n * 8 * unit` bytes into the
/// panel's sub-block, at `unit * lane` within it. The kernels merge a pair and its high bits
/// into four chunks of 6-bit values with a shift and an AND-OR each.
#[inline(always)]
pub(super) fn q6_row(q: &[u8], unit: usize) -> [u8; QK / 2 + QK / 4] {
    debug_assert_eq!(q.len(), QK);
    let mut b = [0u8; QK / 2 + QK / 4];
    for p in 0..QK / 4 / unit {
        for k in 0..unit {
            let (i0, i1) = (2 * p * unit + k, (2 * p + 1) * unit + k);
            let at = 3 * unit * p + k;
            b[at] = (q[i0] & 15) | (q[i0 + 16] & 15) << 4;
            b[at + unit] = (q[i1] & 15) | (q[i1 + 16] & 15) << 4;
            b[at + 2 * unit] =
                q[i0] >> 4 | (q[i0 + 16] >> 4) << 2 | (q[i1] >> 4) << 4 | (q[i1 + 16] >> 4) << 6;
        }
    }
    b
}

/// A sub-block's value bytes for one row in their panel order (its first
/// [`value_bytes`] bytes): Q4_K's nibbles (value `i` low, `16 + i` high), Q5_K's values as they
/// are, Q6_K's [`q6_row`].
#[inline(always)]
fn row_bytes(q: &[u8], q4: bool, q6: bool, unit: usize) -> [u8; QK] {
    let mut v = [0u8; QK];
    if q6 {
        v[..QK / 2 + QK / 4].copy_from_slice(&q6_row(q, unit));
    } else if q4 {
        for i in 0..QK / 2 {
            v[i] = q[i] | q[i + 16] << 4;
        }
    } else {
        v.copy_from_slice(q);
    }
    v
}

/// The inverse of [`q6_row`]: a sub-block's values from a row's bytes in their panel order.
fn q6_values(unit: usize, b: &[u8], q: &mut [u8]) {
    for p in 0..QK / 4 / unit {
        for k in 0..unit {
            let (i0, i1) = (2 * p * unit + k, (2 * p + 1) * unit + k);
            let at = 3 * unit * p + k;
            let (n0, n1, high) = (b[at], b[at + unit], b[at + 2 * unit]);
            q[i0] = n0 & 15 | (high & 3) << 4;
            q[i0 + 16] = n0 >> 4 | ((high >> 2) & 3) << 4;
            q[i1] = n1 & 15 | ((high >> 4) & 3) << 4;
            q[i1 + 16] = n1 >> 4 | (high >> 6) << 4;
        }
    }
}

impl KBlock {
    /// All zeros.
    pub(super) const EMPTY: Self = Self {
        d: [0; 2],
        dmin: [0; 2],
        sc: [0; 16],
        m: [0; 8],
        q: [0; SUPER],
    };

    /// From a GGUF block of `ty` (`ty.type_size()` bytes).
    pub(super) fn decode(ty: GgmlType, b: &[u8]) -> Self {
        let mut k = Self::EMPTY;
        if ty == GgmlType::Q6K {
            let (ql, qh) = (&b[0..128], &b[128..192]);
            k.sc.copy_from_slice(&b[192..208]);
            k.d.copy_from_slice(&b[208..210]);
            for n in 0..2 {
                for l in 0..32 {
                    let (lo, hi, h) = (ql[64 * n + l], ql[64 * n + l + 32], qh[32 * n + l]);
                    let q = &mut k.q[128 * n..];
                    q[l] = (lo & 15) | (h & 3) << 4;
                    q[l + 32] = (hi & 15) | ((h >> 2) & 3) << 4;
                    q[l + 64] = (lo >> 4) | ((h >> 4) & 3) << 4;
                    q[l + 96] = (hi >> 4) | ((h >> 6) & 3) << 4;
                }
            }
            return k;
        }
        k.d.copy_from_slice(&b[0..2]);
        k.dmin.copy_from_slice(&b[2..4]);
        for j in 0..SUBS {
            (k.sc[j], k.m[j]) = scale_min_k4(j, &b[4..16]);
        }
        let (qh, qs) = match ty {
            GgmlType::Q5K => (Some(&b[16..48]), &b[48..176]),
            _ => (None, &b[16..144]),
        };
        for j in 0..SUBS {
            for l in 0..32 {
                let high = qh.map_or(0, |qh| ((qh[l] >> j) & 1) << 4);
                k.q[32 * j + l] = ((qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15) | high;
            }
        }
        k
    }

    /// The GGUF block of `ty` (`ty.type_size()` bytes into `b`): the inverse of [`Self::decode`].
    pub(super) fn encode(&self, ty: GgmlType, b: &mut [u8]) {
        b.fill(0);
        if ty == GgmlType::Q6K {
            for n in 0..2 {
                for l in 0..32 {
                    let q = &self.q[128 * n..];
                    b[64 * n + l] = (q[l] & 15) | (q[l + 64] & 15) << 4;
                    b[64 * n + l + 32] = (q[l + 32] & 15) | (q[l + 96] & 15) << 4;
                    b[128 + 32 * n + l] = q[l] >> 4
                        | (q[l + 32] >> 4) << 2
                        | (q[l + 64] >> 4) << 4
                        | (q[l + 96] >> 4) << 6;
                }
            }
            b[192..208].copy_from_slice(&self.sc);
            b[208..210].copy_from_slice(&self.d);
            return;
        }
        b[0..2].copy_from_slice(&self.d);
        b[2..4].copy_from_slice(&self.dmin);
        let (sc, m) = (&self.sc, &self.m);
        for j in 0..4 {
            b[4 + j] = sc[j] | (sc[j + 4] >> 4) << 6;
            b[8 + j] = m[j] | (m[j + 4] >> 4) << 6;
            b[12 + j] = (sc[j + 4] & 15) | (m[j + 4] & 15) << 4;
        }
        let qs = if ty == GgmlType::Q5K { 48 } else { 16 };
        for j in 0..SUBS {
            for l in 0..32 {
                let q = self.q[32 * j + l];
                b[qs + 32 * (j / 2) + l] |= (q & 15) << (4 * (j % 2));
                if ty == GgmlType::Q5K {
                    b[16 + l] |= (q >> 4) << j;
                }
            }
        }
    }

    /// Sub-block `j` (0..8) in the definition's terms.
    pub(super) fn sub(&self, ty: GgmlType, j: usize) -> Sub {
        let d = f16::from_le_bytes(self.d).to_f32();
        let mut v = [0i32; QK];
        let q = &self.q[QK * j..QK * (j + 1)];
        if ty == GgmlType::Q6K {
            for (v, q) in v.iter_mut().zip(q) {
                *v = i32::from(*q) - 32;
            }
            let scale = |h: usize| d * f32::from(self.sc[h] as i8);
            return Sub {
                v,
                d: [scale(2 * j), scale(2 * j + 1)],
                m: 0.0,
            };
        }
        for (v, q) in v.iter_mut().zip(q) {
            *v = i32::from(*q);
        }
        let dmin = f16::from_le_bytes(self.dmin).to_f32();
        let scale = d * f32::from(self.sc[j]);
        Sub {
            v,
            d: [scale, scale],
            m: -(dmin * f32::from(self.m[j])),
        }
    }

    /// Writes the blocks of a panel's rows (`ks[lane]`, at most [`PANEL`]; the lanes after
    /// them are left as they are, zero in a new panel) into its super-block `dst`
    /// ([`panel_super_bytes`] long), values interleaved `unit` bytes per row.
    /// The layout is [`Self::fields`]' (the tests hold the two together); this is its fast form
    /// for loading: the destination is written in order, whole `unit`-byte chunks at a time,
    /// rather than row by row across it.
    pub(super) fn write_panel(ks: &[KBlock], ty: GgmlType, unit: usize, dst: &mut [u8]) {
        let q6 = ty == GgmlType::Q6K;
        let q4 = ty == GgmlType::Q4K;
        assert!(ks.len() <= PANEL, "a panel's rows");
        assert_eq!(dst.len(), panel_super_bytes(ty), "one panel super-block");
        for (lane, k) in ks.iter().enumerate() {
            dst[2 * lane..2 * lane + 2].copy_from_slice(&k.d);
            if !q6 {
                dst[2 * PANEL + 2 * lane..2 * PANEL + 2 * lane + 2].copy_from_slice(&k.dmin);
            }
        }
        if q6 {
            for h in 0..16 {
                for (lane, k) in ks.iter().enumerate() {
                    dst[2 * PANEL + PANEL * h + lane] = k.sc[h];
                }
            }
        } else {
            for j in 0..SUBS {
                for (lane, k) in ks.iter().enumerate() {
                    dst[4 * PANEL + PANEL * j + lane] = k.sc[j];
                    dst[12 * PANEL + PANEL * j + lane] = k.m[j];
                }
            }
        }
        match unit {
            2 => Self::write_values::<2>(ks, q6, q4, dst),
            4 => Self::write_values::<4>(ks, q6, q4, dst),
            _ => panic!("chunks of 2 or 4 bytes"),
        }
    }

    /// The value bytes of [`Self::write_panel`], `U` bytes per row per chunk.
    fn write_values<const U: usize>(ks: &[KBlock], q6: bool, q4: bool, dst: &mut [u8]) {
        let vb = value_bytes(q4, q6);
        for j in 0..SUBS {
            let base = heads(q6) + j * PANEL * vb;
            let mut rows = [[0u8; QK]; PANEL];
            for (r, k) in rows.iter_mut().zip(ks) {
                *r = row_bytes(&k.q[QK * j..QK * (j + 1)], q4, q6, U);
            }
            let out = &mut dst[base..base + PANEL * vb];
            for (c, chunk) in out.chunks_exact_mut(U * PANEL).enumerate() {
                for (o, r) in chunk.chunks_exact_mut(U).zip(&rows[..ks.len()]) {
                    o.copy_from_slice(&r[c * U..(c + 1) * U]);
                }
            }
        }
    }

    /// One row's part of [`Self::write_panel`] by the general visitor (for the test that holds
    /// the two together).
    #[cfg(test)]
    pub(super) fn write_slow(&self, ty: GgmlType, unit: usize, lane: usize, dst: &mut [u8]) {
        self.fields(ty, unit, lane, dst.len(), |at, v| dst[at] = v);
    }

    /// The block of the row at `lane` in the panel super-block `src`: the inverse of
    /// [`Self::write_panel`].
    pub(super) fn read(ty: GgmlType, unit: usize, lane: usize, src: &[u8]) -> Self {
        let mut k = Self::EMPTY;
        let mut bytes = Vec::with_capacity(SUPER + 32);
        k.fields(ty, unit, lane, src.len(), |at, _| bytes.push(src[at]));
        k.set_fields(ty, unit, &bytes);
        k
    }

    /// Visits the block's bytes in a fixed order (`d`, `dmin`, scales, minima, value bytes) with
    /// their offsets in a panel super-block of `len` bytes and their values.
    fn fields(
        &self,
        ty: GgmlType,
        unit: usize,
        lane: usize,
        len: usize,
        mut f: impl FnMut(usize, u8),
    ) {
        let q6 = ty == GgmlType::Q6K;
        let q4 = ty == GgmlType::Q4K;
        debug_assert_eq!(len, panel_super_bytes(ty));
        for i in 0..2 {
            f(2 * lane + i, self.d[i]);
        }
        if q6 {
            for (h, sc) in self.sc.iter().enumerate() {
                f(2 * PANEL + PANEL * h + lane, *sc);
            }
        } else {
            for i in 0..2 {
                f(2 * PANEL + 2 * lane + i, self.dmin[i]);
            }
            for j in 0..SUBS {
                f(4 * PANEL + PANEL * j + lane, self.sc[j]);
                f(12 * PANEL + PANEL * j + lane, self.m[j]);
            }
        }
        let vb = value_bytes(q4, q6);
        for j in 0..SUBS {
            let base = heads(q6) + j * PANEL * vb;
            let v = row_bytes(&self.q[QK * j..QK * (j + 1)], q4, q6, unit);
            for (i, &v) in v[..vb].iter().enumerate() {
                f(base + (i / unit) * unit * PANEL + unit * lane + i % unit, v);
            }
        }
    }

    /// The inverse of [`Self::fields`]' order: sets the block from its bytes in that order.
    fn set_fields(&mut self, ty: GgmlType, unit: usize, bytes: &[u8]) {
        let q6 = ty == GgmlType::Q6K;
        let mut it = bytes.iter().copied();
        let mut next = || it.next().expect("a whole block");
        self.d = [next(), next()];
        if q6 {
            for sc in self.sc.iter_mut() {
                *sc = next();
            }
        } else {
            self.dmin = [next(), next()];
            for j in 0..SUBS {
                self.sc[j] = next();
                self.m[j] = next();
            }
        }
        for j in 0..SUBS {
            let q = &mut self.q[QK * j..QK * (j + 1)];
            if q6 {
                let b: [u8; QK / 2 + QK / 4] = std::array::from_fn(|_| next());
                q6_values(unit, &b, q);
            } else if ty == GgmlType::Q4K {
                for i in 0..QK / 2 {
                    let v = next();
                    (q[i], q[i + 16]) = (v & 15, v >> 4);
                }
            } else {
                for q in q.iter_mut() {
                    *q = next();
                }
            }
        }
    }
}
