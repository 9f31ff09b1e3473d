//! Storage types of GGUF tensors and their dequantisation to `f32`.
//!
//! Block layouts follow the GGML specification (`ggml-common.h`): every quantized type stores
//! blocks of `block_size()` elements in `type_size()` bytes. The functions here are written from
//! that specification and checked against the `gguf` Python package's independent dequantiser
//! (`tests/quant.rs`).

use crate::error::{Error, Result};
use half::{bf16, f16};

/// A GGUF/GGML tensor storage type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
    /// 32 4-bit values with one f16 scale.
    Q4_0,
    /// 32 4-bit values with an f16 scale and an f16 minimum.
    Q4_1,
    /// 32 5-bit values (four high bits in a 32-bit word) with one f16 scale, offset by 16.
    Q5_0,
    /// 32 5-bit values with an f16 scale and an f16 minimum.
    Q5_1,
    /// 32 8-bit values with one f16 scale.
    Q8_0,
    /// 256-element super-blocks of 4-bit values, 6-bit sub-block scales and minima.
    Q4K,
    /// 256-element super-blocks of 5-bit values, 6-bit sub-block scales and minima.
    Q5K,
    /// 256-element super-blocks of 6-bit values, 8-bit sub-block scales.
    Q6K,
}

impl GgmlType {
    /// Decodes the GGUF type id; `None` for types this crate does not support.
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::Bf16,
            _ => return None,
        })
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Bf16 => 30,
        }
    }

    /// Human name of a GGUF type id, including ones this crate cannot decode.
    pub fn name_of_id(id: u32) -> String {
        const NAMES: [&str; 31] = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
            "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
            "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
            "BF16",
        ];
        NAMES
            .get(id as usize)
            .map(|s| s.to_string())
            .unwrap_or_else(|| format!("unknown type id {id}"))
    }

    /// Elements per block.
    pub fn block_size(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::Bf16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q5K | Self::Q6K => 256,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }

    /// Bytes needed for `n` elements, or `None` when `n` is not a whole number of blocks or the
    /// size overflows.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        if !n.is_multiple_of(self.block_size()) {
            return None;
        }
        (n / self.block_size()).checked_mul(self.type_size())
    }
}

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Quantizes `values` (a whole number of 32-value blocks) to Q8_0 blocks as llama.cpp's
/// reference quantizer does: per block `d = max|x| / 127` (stored as f16) and
/// `q = round(x / d)` to nearest, ties away from zero, computed with the unrounded `d`.
pub(crate) fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    assert_eq!(values.len() % 32, 0, "Q8_0 rows are whole 32-value blocks");
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|&x| ((x * id).round() as i8) as u8));
    }
    out
}

/// Dequantizes `data` (exactly [`GgmlType::bytes_for`]`(n)` bytes) into `out` (`n` values).
///
/// # Errors
/// [`Error::MalformedGguf`] when the byte count does not match the element count.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<()> {
    let n = out.len();
    if ty.bytes_for(n) != Some(data.len()) {
        return Err(Error::MalformedGguf(format!(
            "{ty:?} tensor of {n} elements needs {:?} bytes, found {}",
            ty.bytes_for(n),
            data.len()
        )));
    }
    let bs = ty.block_size();
    for (b, o) in data
        .chunks_exact(ty.type_size())
        .zip(out.chunks_exact_mut(bs))
    {
        dequantize_block(ty, b, o);
    }
    Ok(())
}

/// One block of `ty` (`ty.type_size()` bytes) into `ty.block_size()` values.
fn dequantize_block(ty: GgmlType, b: &[u8], o: &mut [f32]) {
    match ty {
        GgmlType::F32 => o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => o[0] = h(b, 0),
        GgmlType::Bf16 => o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q4_0 => {
            let d = h(b, 0);
            for j in 0..16 {
                let q = b[2 + j];
                o[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                o[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
            }
        }
        GgmlType::Q4_1 => {
            let (d, m) = (h(b, 0), h(b, 2));
            for j in 0..16 {
                let q = b[4 + j];
                o[j] = (q & 0x0f) as f32 * d + m;
                o[j + 16] = (q >> 4) as f32 * d + m;
            }
        }
        GgmlType::Q5_0 => {
            let d = h(b, 0);
            for (j, q) in q5_values(&b[2..22]).into_iter().enumerate() {
                o[j] = (i32::from(q) - 16) as f32 * d;
            }
        }
        GgmlType::Q5_1 => {
            let (d, m) = (h(b, 0), h(b, 2));
            for (j, q) in q5_values(&b[4..24]).into_iter().enumerate() {
                o[j] = f32::from(q) * d + m;
            }
        }
        GgmlType::Q8_0 => {
            let d = h(b, 0);
            for j in 0..32 {
                o[j] = (b[2 + j] as i8) as f32 * d;
            }
        }
        GgmlType::Q4K => q4k_block(b, o),
        GgmlType::Q5K => q5k_block(b, o),
        GgmlType::Q6K => q6k_block(b, o),
    }
}

/// The 32 unsigned 5-bit values of a Q5_0 / Q5_1 block from its 4 bytes of high bits (value
/// `j`'s is bit `j` of the little-endian word) and 16 bytes of nibbles (value `j` low, `16 + j`
/// high).
pub(crate) fn q5_values(b: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut q = [0u8; 32];
    for j in 0..16 {
        let hi = |i: usize| (((qh >> i) & 1) as u8) << 4;
        q[j] = (b[4 + j] & 0x0f) | hi(j);
        q[j + 16] = (b[4 + j] >> 4) | hi(j + 16);
    }
    q
}

/// A Q4_K super-block: 8 sub-blocks of 32 4-bit values with 6-bit scales and minimums.
fn q4k_block(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let scales = &b[4..16];
    let qs = &b[16..144];
    for j in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[32 * j..32 * j + 32];
        let y = &mut o[64 * j..64 * j + 64];
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0x0f) as f32 - m1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// A Q5_K super-block: Q4_K's layout plus one high bit per value.
fn q5k_block(b: &[u8], o: &mut [f32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for j in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * j, scales);
        let (sc2, m2) = scale_min_k4(2 * j + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let q = &qs[32 * j..32 * j + 32];
        let y = &mut o[64 * j..64 * j + 64];
        for l in 0..32 {
            let hi1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let hi2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((q[l] & 0x0f) + hi1) as f32 - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + hi2) as f32 - m2;
        }
    }
}

/// A Q6_K super-block: 16 sub-blocks of 16 6-bit values with 8-bit scales.
fn q6k_block(b: &[u8], o: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let sc = &b[192..208];
    let d = h(b, 208);
    for n in 0..2 {
        let ql = &ql[64 * n..];
        let qh = &qh[32 * n..];
        let sc = &sc[8 * n..];
        let y = &mut o[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) of a Q4_K / Q5_K super-block.
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block_by_hand() {
        // d = 0.5, values -2, 0, 3, then zeros.
        let mut b = vec![0u8; 34];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = (-2i8) as u8;
        b[4] = 3;
        let mut out = vec![0f32; 32];
        dequantize(GgmlType::Q8_0, &b, &mut out).unwrap();
        assert_eq!(&out[..3], &[-1.0, 0.0, 1.5]);
    }

    #[test]
    fn q8_0_quantizer_by_hand() {
        // Block 1: max |x| = 127, so d = 1 and q = x rounded, halves away from zero.
        let mut x = vec![0f32; 96];
        x[..5].copy_from_slice(&[127.0, -63.5, 0.49, -0.5, 2.5]);
        // Block 2: all zeros (d = 0, q = 0). Block 3: max |x| = 1, d = 1/127, q = round(127 x).
        x[64..67].copy_from_slice(&[-1.0, 0.5, 0.1]);
        let b = quantize_q8_0(&x);
        assert_eq!(b.len(), 3 * 34);
        assert_eq!(&b[..2], &f16::from_f32(1.0).to_le_bytes());
        let q = |blk: usize, j: usize| b[blk * 34 + 2 + j] as i8;
        assert_eq!(
            [q(0, 0), q(0, 1), q(0, 2), q(0, 3), q(0, 4)],
            [127, -64, 0, -1, 3]
        );
        assert!((5..32).all(|j| q(0, j) == 0));
        assert_eq!(&b[34..36], &[0, 0]);
        assert!((0..32).all(|j| q(1, j) == 0));
        assert_eq!(&b[68..70], &f16::from_f32(1.0 / 127.0).to_le_bytes());
        assert_eq!([q(2, 0), q(2, 1), q(2, 2)], [-127, 64, 13]);
    }

    #[test]
    fn q8_0_round_trip_is_within_half_a_step() {
        let mut rng = crate::rng::Rng::new(4);
        let x: Vec<f32> = (0..32 * 40)
            .map(|i| ((rng.unit() - 0.5) * (1 + i / 32) as f64) as f32)
            .collect();
        let b = quantize_q8_0(&x);
        let mut y = vec![0f32; x.len()];
        dequantize(GgmlType::Q8_0, &b, &mut y).unwrap();
        for (blk, (xs, ys)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let d = xs.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let d16 = f16::from_le_bytes([b[blk * 34], b[blk * 34 + 1]]).to_f32();
            let bound = d / 2.0 + 127.0 * (d16 - d).abs() + 1e-7;
            for (a, c) in xs.iter().zip(ys) {
                assert!((a - c).abs() <= bound, "block {blk}: {a} -> {c}");
            }
        }
    }

    #[test]
    fn q4_1_block_by_hand() {
        // d = 2, m = -1; first byte: low nibble 3 -> 5, high nibble 1 -> element 16 = 1.
        let mut b = vec![0u8; 20];
        b[..2].copy_from_slice(&f16::from_f32(2.0).to_le_bytes());
        b[2..4].copy_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b[4] = 0x13;
        let mut out = vec![0f32; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out).unwrap();
        assert_eq!(out[0], 5.0);
        assert_eq!(out[16], 1.0);
        assert_eq!(out[1], -1.0);
    }

    #[test]
    fn q5_0_block_by_hand() {
        // d = 0.5; value 0: nibble 3 with its high bit -> 19 - 16 = 3; value 17: high nibble 2
        // without -> 2 - 16 = -14; value 1: 0 - 16.
        let mut b = vec![0u8; 22];
        b[..2].copy_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b[2] = 1;
        b[6] = 0x03;
        b[7] = 0x20;
        let mut out = vec![0f32; 32];
        dequantize(GgmlType::Q5_0, &b, &mut out).unwrap();
        assert_eq!((out[0], out[1], out[17]), (1.5, -8.0, -7.0));
    }

    #[test]
    fn wrong_length_is_an_error() {
        let mut out = vec![0f32; 32];
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 17], &mut out).is_err());
        let mut out = vec![0f32; 31];
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 18], &mut out).is_err());
    }
}
