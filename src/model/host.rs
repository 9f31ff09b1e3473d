//! Host-side matrix-times-few-vectors kernels for CPU backends.
//!
//! A decoding step multiplies every weight matrix by a handful of activation rows (1 for greedy,
//! up to ~100 for a token tree). burn's CPU backends hand that to a general GEMM, which repacks
//! (and, for f16, converts) the whole weight matrix on every call once there are two or more
//! rows: measured on this project's 2-core CPU, a 2-row forward of SmolLM2 cost 2.7x a 1-row
//! one. Here each weight row is read once, converted once, and dotted with every activation row,
//! so the cost of a forward grows slowly with the number of rows, which is what tree decoding
//! needs. Each output element is computed the same way whatever the number of rows, so a token's
//! logits do not depend on what else is in the batch.
//!
//! Weights are kept in `[out, in]` layout in their storage type (f16, f32, or a GGUF checkpoint's
//! own quantized blocks), beside the burn tensors (which training and long prefills still use).
//! Quantized rows are expanded to f32 four at a time into a small scratch buffer that stays in
//! L1 and then multiplied exactly like f32 rows, so a quantized matrix gives bit for bit the
//! product of its dequantized f32 values while streaming 4.5 to 8.5 bits per weight from memory
//! instead of 16: on a memory-bound CPU that is most of a decoding step. Matrices given
//! [`HostMatrix::with_products`] multiply Q4_0/Q4_1/Q5_0/Q8_0 and K-quant blocks by integer dot
//! products instead:
//! with 16-bit activations over weights repacked in 8-row panels ([`crate::model::int_panels`],
//! the default), or with 8-bit ones over the same panels.

use crate::error::{Error, Result};
use crate::model::act_rows::ActRows;
use crate::model::hot_pool;
use crate::model::int_panels::{self, Out, PANEL, Panels};
use crate::model::quant::{self, GgmlType};
use crate::model::rope::HostRope;
use crate::model::scratch;
use half::f16;
use half::slice::HalfFloatSliceExt;
use std::borrow::Cow;
use std::sync::Mutex;

/// Most activation rows one pass over a weight matrix multiplies (longer inputs take several
/// passes): 32 rows of up to 1536 f32 values stay in L2.
pub const ROWS_PER_PASS: usize = 32;

/// Weight values in storage order.
#[derive(Debug, Clone)]
enum Data {
    F16(Vec<f16>),
    F32(Vec<f32>),
    /// GGUF blocks, `row_bytes` per row (rows are whole blocks), expanded to f32 in products.
    Blocks {
        ty: GgmlType,
        bytes: Vec<u8>,
        row_bytes: usize,
    },
    /// GGUF blocks repacked into panels for integer products.
    Panels(Panels),
}

/// How a matrix of GGUF blocks is multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Products {
    /// Blocks expanded to f32: bit for bit the dequantized weights times the f32 activations.
    F32,
    /// Integer dot products with activations quantized to 16 bits per 32 values, the weights
    /// repacked into 8-row panels ([`int_panels`]).
    Int16,
    /// Integer dot products with activations quantized to 8 bits per 32 values, over the same
    /// panels ([`int_panels`]).
    Int8,
}

/// One weight matrix `[out, in]` in host memory.
#[derive(Debug, Clone)]
pub struct HostMatrix {
    out: usize,
    inp: usize,
    data: Data,
}

/// Output rows per parallel task (a multiple of the integer panels' 8). Measured on a 2-core
/// Zen 4 EPYC, interleaved: a one-token step took ~15% less time with 128 than with 64 (longer
/// runs of each weight stream), 32 was slower still, 256 left cores idle on the 576-row
/// matrices.
const ROWS_PER_TASK: usize = 128;

impl HostMatrix {
    /// From `[out, in]` f32 values.
    pub fn from_f32(out: usize, inp: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), out * inp, "matrix size");
        Self {
            out,
            inp,
            data: Data::F32(data),
        }
    }

    /// From `[out, in]` f32 values, kept as f32 or rounded to f16 (`f16`), as
    /// [`crate::WeightDtype`] stores dense weights.
    pub(crate) fn from_f32_as(out: usize, inp: usize, data: Vec<f32>, f16: bool) -> Self {
        match f16 {
            true => Self::from_f16(out, inp, data.iter().map(|&x| f16::from_f32(x)).collect()),
            false => Self::from_f32(out, inp, data),
        }
    }

    /// From `[out, in]` f16 values.
    pub fn from_f16(out: usize, inp: usize, data: Vec<f16>) -> Self {
        assert_eq!(data.len(), out * inp, "matrix size");
        Self {
            out,
            inp,
            data: Data::F16(data),
        }
    }

    /// From a GGUF tensor's raw data: `out` rows of `inp` values stored as `ty` blocks (the
    /// rows of a GGUF matrix are whole blocks). The values are kept as stored and expanded to
    /// f32 inside the product, with exactly the arithmetic of [`quant::dequantize`].
    ///
    /// # Errors
    /// [`Error::MalformedGguf`] when `inp` is not a whole number of blocks or `bytes` is not
    /// `out` such rows.
    pub fn from_blocks(ty: GgmlType, out: usize, inp: usize, bytes: Vec<u8>) -> Result<Self> {
        let row_bytes = Self::check_blocks(ty, out, inp, bytes.len())?;
        Ok(Self {
            out,
            inp,
            data: Data::Blocks {
                ty,
                bytes,
                row_bytes,
            },
        })
    }

    /// [`HostMatrix::from_blocks`] from borrowed bytes (a mapped file), stored for `products`
    /// at once: repacked into panels where they are integer products of a type that has them,
    /// else copied as blocks (`None` or [`Products::F32`]: expanded to f32 in products).
    ///
    /// # Errors
    /// As [`HostMatrix::from_blocks`].
    pub(crate) fn from_block_slice(
        ty: GgmlType,
        out: usize,
        inp: usize,
        bytes: &[u8],
        products: Option<Products>,
    ) -> Result<Self> {
        let row_bytes = Self::check_blocks(ty, out, inp, bytes.len())?;
        let products = products.unwrap_or(Products::F32);
        let data = Self::blocks_as(ty, Cow::Borrowed(bytes), row_bytes, out, products);
        Ok(Self { out, inp, data })
    }

    /// The bytes per row of an `[out, inp]` matrix of `ty` blocks held in `len` bytes.
    fn check_blocks(ty: GgmlType, out: usize, inp: usize, len: usize) -> Result<usize> {
        let row_bytes = ty.bytes_for(inp).ok_or_else(|| {
            Error::MalformedGguf(format!(
                "{ty:?} rows of {inp} values are not whole {}-value blocks",
                ty.block_size()
            ))
        })?;
        if row_bytes.checked_mul(out) != Some(len) {
            return Err(Error::MalformedGguf(format!(
                "{ty:?} matrix [{out}, {inp}] needs {out} x {row_bytes} bytes, found {len}"
            )));
        }
        Ok(row_bytes)
    }

    /// The same matrix multiplied as `products` where its block type has integer products
    /// (Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K): each activation row is then quantized to
    /// integer blocks on its own and multiplied with the weight blocks, repacked into panels, as
    /// [`int_panels`] defines.
    /// Other storage is unchanged.
    pub fn with_products(self, products: Products) -> Self {
        let (out, inp) = (self.out, self.inp);
        let data = match self.data {
            Data::Panels(p) if products != panel_products(&p) => {
                let ty = p.ty();
                let bytes = p.gguf_rows(0, out);
                let row_bytes = bytes.len() / out.max(1);
                Self::blocks_as(ty, Cow::Owned(bytes), row_bytes, out, products)
            }
            Data::Blocks {
                ty,
                bytes,
                row_bytes,
            } => Self::blocks_as(ty, Cow::Owned(bytes), row_bytes, out, products),
            data => data,
        };
        Self { out, inp, data }
    }

    /// The same matrix with dense f32 or f16 storage quantized to Q8_0 blocks (llama.cpp's
    /// reference quantizer: 8.5 bits per weight) and multiplied by integer `products`; block
    /// storage, and rows that are not whole 32-value blocks, are unchanged.
    pub fn quantized_q8_0(self, products: Products) -> Self {
        let (out, inp) = (self.out, self.inp);
        let values = match &self.data {
            _ if inp % 32 != 0 => return self,
            Data::F32(v) => quant::quantize_q8_0(v),
            // A row at a time: no f32 copy of the whole matrix (rows are whole blocks).
            Data::F16(v) => {
                let mut row = vec![0f32; inp];
                let mut blocks = Vec::with_capacity(out * (inp / 32 * 34));
                for r in v.chunks_exact(inp) {
                    r.convert_to_f32_slice(&mut row);
                    blocks.extend(quant::quantize_q8_0(&row));
                }
                blocks
            }
            _ => return self,
        };
        let row_bytes = inp / 32 * 34;
        let data = Self::blocks_as(GgmlType::Q8_0, Cow::Owned(values), row_bytes, out, products);
        Self { out, inp, data }
    }

    /// `out` rows of `ty` blocks stored for `products`: repacked into panels (the source is
    /// only read) or kept as blocks (an owned source is moved, not copied).
    fn blocks_as(
        ty: GgmlType,
        bytes: Cow<'_, [u8]>,
        row_bytes: usize,
        out: usize,
        products: Products,
    ) -> Data {
        match products {
            Products::Int16 if int_panels::supports(ty) => {
                Data::Panels(Panels::new::<i16>(ty, out, row_bytes, &bytes))
            }
            Products::Int8 if int_panels::supports(ty) => {
                Data::Panels(Panels::new::<i8>(ty, out, row_bytes, &bytes))
            }
            _ => Data::Blocks {
                ty,
                bytes: bytes.into_owned(),
                row_bytes,
            },
        }
    }

    /// How the products are computed (`F32` for f32/f16 storage).
    fn products(&self) -> Products {
        match &self.data {
            Data::Panels(p) => panel_products(p),
            _ => Products::F32,
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.out
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.inp
    }

    /// How the values are stored: `"f16"`, `"f32"` or the GGUF block type (`"Q4_1"`, ..),
    /// followed by ` x Q8` or ` x Q16` where the products are integer ones.
    pub fn storage(&self) -> String {
        match &self.data {
            Data::F16(_) => "f16".into(),
            Data::F32(_) => "f32".into(),
            Data::Panels(p) => format!(
                "{} x Q{}",
                GgmlType::name_of_id(p.ty().id()),
                if p.eight_bit() { 8 } else { 16 }
            ),
            Data::Blocks { ty, .. } => GgmlType::name_of_id(ty.id()),
        }
    }

    /// Rows `first..first + n` as f32 values into `out` (`n * in` long).
    fn expand_rows(&self, first: usize, n: usize, out: &mut [f32]) {
        let k = self.inp;
        match &self.data {
            Data::F32(v) => out.copy_from_slice(&v[first * k..(first + n) * k]),
            Data::F16(v) => v[first * k..(first + n) * k].convert_to_f32_slice(out),
            Data::Blocks {
                ty,
                bytes,
                row_bytes,
                ..
            } => expand_blocks(*ty, &bytes[first * row_bytes..(first + n) * row_bytes], out),
            Data::Panels(p) => expand_blocks(p.ty(), &p.gguf_rows(first, n), out),
        }
    }

    /// Whether the values are stored dense (f32 or f16) rather than as blocks.
    fn is_dense(&self) -> bool {
        matches!(self.data, Data::F32(_) | Data::F16(_))
    }

    /// `x @ W^T` for `m` rows of `x` (`[m, in]`, row-major): `[m, out]`. Many rows are taken
    /// [`ROWS_PER_PASS`] at a time so they stay in cache; each row's result is the same either way.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        matmul_many(&[self], x, m).pop().expect("one product")
    }
}

/// `x @ W^T` for several matrices of the same input width at once (q, k and v; gate and up):
/// one parallel region instead of one per matrix, which on a few cores saves thread wake-ups
/// that cost as much as a small product. Results as [`HostMatrix::matmul`] gives them.
pub fn matmul_many(ws: &[&HostMatrix], x: &[f32], m: usize) -> Vec<Vec<f32>> {
    let inp = ws.first().map_or(0, |w| w.inp);
    assert!(ws.iter().all(|w| w.inp == inp), "same input width");
    assert_eq!(x.len(), m * inp, "activation size");
    // Every value is written by a task below (panel tasks write all their features of every
    // row; the others' chunks are transposed in).
    let mut ys: Vec<Vec<f32>> = ws
        .iter()
        .map(|w| scratch::to_overwrite(m * w.out))
        .collect();
    // Each pass writes its rows' results straight into their place in `ys` (`[m, out]`
    // row-major, so a pass's rows are one contiguous range of each).
    for (i, part) in x.chunks(ROWS_PER_PASS * inp.max(1)).enumerate() {
        let (first, rows) = (i * ROWS_PER_PASS, part.len() / inp.max(1));
        let mut outs: Vec<&mut [f32]> = ys
            .iter_mut()
            .zip(ws)
            .map(|(y, w)| &mut y[first * w.out..(first + rows) * w.out])
            .collect();
        pass(ws, part, rows, &mut outs);
    }
    ys
}

/// One pass of [`matmul_many`]: `m` (at most [`ROWS_PER_PASS`]) rows of `x` times every matrix
/// of `ws`, into `ys` (`[m, out]` each).
fn pass(ws: &[&HostMatrix], x: &[f32], m: usize, ys: &mut [&mut [f32]]) {
    let inp = ws.first().map_or(0, |w| w.inp);
    // Quantized once for every matrix that takes integer activations.
    let needs = |p: Products| ws.iter().any(|w| w.products() == p);
    let x8 = needs(Products::Int8).then(|| ActRows::<i8>::quantize(x, m, inp));
    let x16 = needs(Products::Int16).then(|| ActRows::<i16>::quantize(x, m, inp));
    if m == 0 {
        return;
    }
    // Panel matrices write their features straight into `ys`; the others write `[out, m]`
    // chunks, transposed below.
    let mut outs_t: Vec<Vec<f32>> = ws
        .iter()
        .map(|w| match w.data {
            Data::Panels(_) => Vec::new(),
            _ => vec![0f32; w.out * m],
        })
        .collect();
    let mut tasks: Vec<Task<'_>> = Vec::new();
    for ((w, out_t), y) in ws.iter().zip(outs_t.iter_mut()).zip(ys.iter_mut()) {
        match &w.data {
            Data::Panels(p) => {
                let out = Out::new(y, m);
                let rows = task_rows(w.out, hot_pool::threads());
                for first in (0..w.out).step_by(rows) {
                    let n = rows.min(w.out - first);
                    tasks.push(Task::Panels(p, first, n, out));
                }
            }
            _ => {
                for (task, chunk) in out_t.chunks_mut(ROWS_PER_TASK * m).enumerate() {
                    tasks.push(Task::Rows(Mutex::new((w, task * ROWS_PER_TASK, chunk))));
                }
            }
        }
    }
    let quantized = "activations quantized for every integer matrix";
    hot_pool::for_each(tasks.len(), &|i| match &tasks[i] {
        // SAFETY (both): every task has its own features `first..first + n` of its matrix.
        Task::Panels(p, first, n, out) if p.eight_bit() => unsafe {
            p.rows_to(*first, *n, x8.as_ref().expect(quantized), *out)
        },
        Task::Panels(p, first, n, out) => unsafe {
            p.rows_to(*first, *n, x16.as_ref().expect(quantized), *out)
        },
        Task::Rows(task) => {
            let mut task = task.lock().unwrap_or_else(|e| e.into_inner());
            let (w, first, chunk) = &mut *task;
            rows(w, *first, x, m, chunk);
        }
    });
    drop(tasks);
    // [out, m] -> [m, out] for the matrices that wrote chunks.
    for ((w, out_t), y) in ws.iter().zip(&outs_t).zip(ys.iter_mut()) {
        for (o, col) in out_t.chunks_exact(m).enumerate() {
            for (j, v) in col.iter().enumerate() {
                y[j * w.out + o] = *v;
            }
        }
    }
}

/// Output rows per task of a panel matrix of `out` rows on `threads` threads: at most
/// [`ROWS_PER_TASK`], a whole number of panel pairs, and a count of tasks the threads share
/// evenly where the rows allow (SmolLM2's 576-row matrices on two threads: 6 tasks of 96 rows
/// rather than 4 of 128 and one of 64, which left one thread a third more to do).
fn task_rows(out: usize, threads: usize) -> usize {
    let tasks = out.div_ceil(ROWS_PER_TASK).next_multiple_of(threads.max(1));
    out.div_ceil(tasks).next_multiple_of(2 * PANEL)
}

/// The products panels are packed for.
fn panel_products(p: &Panels) -> Products {
    match p.eight_bit() {
        true => Products::Int8,
        false => Products::Int16,
    }
}

/// One parallel task of [`matmul_many`]: features `first..first + n` of a panel matrix written
/// straight into the result, or rows of another matrix into their `[rows, m]` chunk.
enum Task<'a> {
    Panels(&'a Panels, usize, usize, Out<'a>),
    Rows(Mutex<(&'a HostMatrix, usize, &'a mut [f32])>),
}

/// Dequantizes whole blocks (`bytes` holds exactly `out.len()` values; checked at construction).
fn expand_blocks(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: AVX2 and F16C were just detected; sizes are whole blocks (checked at construction).
            unsafe { avx2::expand(ty, bytes, out) };
            return;
        }
    }
    quant::dequantize(ty, bytes, out).expect("block sizes checked when the matrix was built");
}

/// Output rows `first..` of `w` into `out` (`[rows, m]`), with the best instruction set here.
fn rows(w: &HostMatrix, first: usize, x: &[f32], m: usize, out: &mut [f32]) {
    // What the SIMD path's unchecked loads rest on: `m` whole activation rows, and whole
    // weight rows `first..` for the output chunk.
    assert_eq!(x.len(), m * w.inp, "m activation rows");
    assert!(
        m > 0 && out.len().is_multiple_of(m) && first + out.len() / m <= w.out,
        "output rows within the matrix"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
        {
            // SAFETY: the features `avx2::rows` is compiled for were just detected; the sizes
            // its loads read are asserted above.
            unsafe { avx2::rows(w, first, x, m, out) };
            return;
        }
    }
    rows_body(w, first, x, m, out);
}

/// AVX2 + FMA + F16C tiles: 4 weight rows x 2 activation rows per pass over `in`, so each
/// weight vector loaded (and converted from f16) feeds two FMAs and each activation vector four.
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use super::{Data, HostMatrix};
    use crate::model::quant::GgmlType;

    use std::arch::x86_64::*;

    /// The horizontal sum of 8 lanes: `((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7))`
    /// (also the engine's).
    #[inline(always)]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY (callers): AVX enabled.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }

    /// Writes an `R x M` tile of results at weight row `r`, activation row `j` of `out`
    /// (`[rows, m]`).
    #[inline(always)]
    fn put<const R: usize, const M: usize>(
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

    /// Weight rows as stored, or converted to f32 (scratch).
    #[derive(Clone, Copy)]
    enum Rows<'a> {
        F16(&'a [half::f16]),
        F32(&'a [f32]),
    }

    #[inline(always)]
    unsafe fn load(w: Rows<'_>, at: usize) -> __m256 {
        // SAFETY (callers): `at + 8 <= len`.
        unsafe {
            match w {
                Rows::F16(v) => _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(at).cast())),
                Rows::F32(v) => _mm256_loadu_ps(v.as_ptr().add(at)),
            }
        }
    }

    fn scalar(w: Rows<'_>, at: usize) -> f32 {
        match w {
            Rows::F16(v) => v[at].to_f32(),
            Rows::F32(v) => v[at],
        }
    }

    /// `R` rows of `w` (each `k` long, from row 0) times `M` activation rows from `j`.
    /// Index loops over the const tile sizes unroll into registers.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn tile<const R: usize, const M: usize>(
        w: Rows<'_>,
        k: usize,
        x: &[f32],
        j: usize,
        res: &mut [[f32; M]; R],
    ) {
        let k8 = k - k % 8;
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); M]; R];
            let mut i = 0;
            while i < k8 {
                let mut wv = [_mm256_setzero_ps(); R];
                for (a, v) in wv.iter_mut().enumerate() {
                    *v = load(w, a * k + i);
                }
                for b in 0..M {
                    let xv = _mm256_loadu_ps(x.as_ptr().add((j + b) * k + i));
                    for a in 0..R {
                        acc[a][b] = _mm256_fmadd_ps(wv[a], xv, acc[a][b]);
                    }
                }
                i += 8;
            }
            for a in 0..R {
                for b in 0..M {
                    let mut s = hsum(acc[a][b]);
                    for t in k8..k {
                        s += scalar(w, a * k + t) * x[(j + b) * k + t];
                    }
                    res[a][b] = s;
                }
            }
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows(w: &HostMatrix, first: usize, x: &[f32], m: usize, out: &mut [f32]) {
        let k = w.inp;
        let n = out.len() / m;
        // With more than two activation rows each f16 weight would be converted several times:
        // convert a 4-row block once into f32 scratch instead. Quantized rows always go through
        // the scratch (4 rows of f32 stay in L1).
        let expand = m > 2 || matches!(w.data, Data::Blocks { .. });
        let mut scratch = vec![0f32; if expand { 4 * k } else { 0 }];
        let mut r = 0;
        while r < n {
            let rr = (n - r).min(4);
            let lo = (first + r) * k;
            let block = match &w.data {
                Data::F32(v) => Rows::F32(&v[lo..lo + rr * k]),
                Data::F16(v) if !expand => Rows::F16(&v[lo..lo + rr * k]),
                _ => {
                    w.expand_rows(first + r, rr, &mut scratch[..rr * k]);
                    Rows::F32(&scratch[..rr * k])
                }
            };
            let mut j = 0;
            while j < m {
                let mm = (m - j).min(2);
                // SAFETY: the block holds rr rows of k and activations j..j+mm exist.
                unsafe {
                    match (rr, mm) {
                        (4, 2) => {
                            let mut t = [[0f32; 2]; 4];
                            tile::<4, 2>(block, k, x, j, &mut t);
                            put(out, m, r, j, &t);
                        }
                        (4, _) => {
                            let mut t = [[0f32; 1]; 4];
                            tile::<4, 1>(block, k, x, j, &mut t);
                            put(out, m, r, j, &t);
                        }
                        _ => {
                            for a in 0..rr {
                                let one = match block {
                                    Rows::F16(v) => Rows::F16(&v[a * k..]),
                                    Rows::F32(v) => Rows::F32(&v[a * k..]),
                                };
                                for b in j..j + mm {
                                    let mut t = [[0f32; 1]; 1];
                                    tile::<1, 1>(one, k, x, b, &mut t);
                                    put(out, m, r + a, b, &t);
                                }
                            }
                        }
                    }
                }
                j += mm;
            }
            r += rr;
        }
    }

    /// [`crate::model::quant::dequantize`] for Q4_0, Q4_1 and Q8_0 with the same arithmetic
    /// (an exact integer-to-float conversion, one rounded multiply, one rounded add; no fused
    /// multiply-add), so every value is bit-identical to the scalar one.
    #[target_feature(enable = "avx2,f16c")]
    pub(super) unsafe fn expand(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
        let (bs, ts) = (32, ty.type_size());
        debug_assert_eq!(bytes.len() / ts * bs, out.len());
        for (b, o) in bytes.chunks_exact(ts).zip(out.chunks_exact_mut(bs)) {
            // SAFETY: `b` is one whole block (at least 18 bytes) and `o` holds 32 values.
            unsafe {
                // The block's f16 scale (and Q4_1's minimum) in one F16C conversion.
                let head =
                    _mm_cvtph_ps(_mm_cvtsi32_si128(b.as_ptr().cast::<i32>().read_unaligned()));
                let d = _mm256_broadcastss_ps(head);
                let mut v = [_mm256_setzero_ps(); 4];
                match ty {
                    GgmlType::Q8_0 => {
                        for (c, v) in v.iter_mut().enumerate() {
                            let q = _mm_loadl_epi64(b.as_ptr().add(2 + 8 * c).cast());
                            *v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
                        }
                    }
                    GgmlType::Q4_1 => {
                        let m = _mm256_broadcastss_ps(_mm_movehdup_ps(head));
                        for (v, p) in v.iter_mut().zip(nibbles(b.as_ptr().add(4))) {
                            let q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(p));
                            *v = _mm256_add_ps(_mm256_mul_ps(q, d), m);
                        }
                    }
                    _ => {
                        let eight = _mm256_set1_epi32(8);
                        for (v, p) in v.iter_mut().zip(nibbles(b.as_ptr().add(2))) {
                            let i = _mm256_sub_epi32(_mm256_cvtepu8_epi32(p), eight);
                            *v = _mm256_mul_ps(_mm256_cvtepi32_ps(i), d);
                        }
                    }
                }
                for (c, v) in v.iter().enumerate() {
                    _mm256_storeu_ps(o.as_mut_ptr().add(8 * c), *v);
                }
            }
        }
    }

    /// The 32 nibbles of 16 bytes as four groups of 8 in the low halves of four registers
    /// (values 0..8 are the low nibbles of bytes 0..8, 16..24 the high nibbles, and so on).
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> [__m128i; 4] {
        // SAFETY (callers): 16 readable bytes at `p`.
        unsafe {
            let q = _mm_loadu_si128(p.cast());
            let low = _mm_set1_epi8(0x0f);
            let lo = _mm_and_si128(q, low);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
            [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)]
        }
    }
}

/// Portable fallback: each weight row converted once, then dotted with every activation row.
fn rows_body(w: &HostMatrix, first: usize, x: &[f32], m: usize, out: &mut [f32]) {
    let inp = w.inp;
    let mut buf = vec![0f32; inp];
    for (k, o) in out.chunks_exact_mut(m.max(1)).enumerate() {
        let r = first + k;
        let row: &[f32] = match &w.data {
            Data::F32(v) => &v[r * inp..(r + 1) * inp],
            _ => {
                w.expand_rows(r, 1, &mut buf);
                &buf
            }
        };
        for (j, y) in o.iter_mut().enumerate() {
            *y = dot(row, &x[j * inp..(j + 1) * inp]);
        }
    }
}

/// Dot product with 16 independent accumulators (vectorises; fixed summation order).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut s = 0f32;
    for v in acc {
        s += v;
    }
    for (x, y) in ra.iter().zip(rb) {
        s = x.mul_add(*y, s);
    }
    s
}

/// The host copies of one transformer block's matrices.
#[derive(Debug, Clone)]
pub struct HostBlock {
    /// q, k, v, o projections.
    pub q: HostMatrix,
    /// Key projection.
    pub k: HostMatrix,
    /// Value projection.
    pub v: HostMatrix,
    /// Output projection.
    pub o: HostMatrix,
    /// Gate projection.
    pub gate: HostMatrix,
    /// Up projection.
    pub up: HostMatrix,
    /// Down projection.
    pub down: HostMatrix,
}

/// Where the host engine looks token embeddings up.
#[derive(Debug, Clone)]
pub(crate) enum HostEmbed {
    /// burn's embedding tensor.
    Tensor,
    /// The rows of [`HostWeights::head`] (tied embeddings).
    Head,
    /// A matrix of its own (a checkpoint's blocks as stored).
    Own(HostMatrix),
}

/// Host copies of every matrix of a model.
#[derive(Debug, Clone)]
pub struct HostWeights {
    /// Per block.
    pub blocks: Vec<HostBlock>,
    /// LM head `[vocab, hidden]`.
    pub head: HostMatrix,
    /// Most activation rows a product may have to run here (longer inputs use the backend).
    pub max_rows: usize,
    /// Norms, RoPE tables and shapes for the host engine.
    pub(crate) engine: HostConsts,
    /// Dense matrices were quantized to Q8_0 ([`crate::Llama::quantize_host_kernels`]): copies
    /// rebuilt from new weights (a merged adapter) are quantized too.
    pub(crate) q8: bool,
    /// The token embedding.
    pub(crate) embed: HostEmbed,
    /// Embedding rows are rounded to f16, as burn's tensor of them is stored
    /// ([`crate::WeightDtype::F16`]).
    pub(crate) embed_f16: bool,
    /// Unique to these values ([`next_weights_id`]): the owner of the caches they fill.
    pub(crate) id: u64,
}

/// A fresh id for a set of host weights, never handed out before in this process: a cache
/// marked with it was filled by those weights and no others.
pub(crate) fn next_weights_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl HostWeights {
    /// The embeddings of `ids`, `[ids.len(), hidden]`, as burn's embedding tensor holds them;
    /// `None` where the look-up is that tensor's ([`HostEmbed::Tensor`]).
    ///
    /// # Panics
    /// For an id past the vocabulary (decoders check prompts against it).
    pub(crate) fn embed(&self, ids: &[usize]) -> Option<Vec<f32>> {
        let m = match &self.embed {
            HostEmbed::Tensor => return None,
            HostEmbed::Head => &self.head,
            HostEmbed::Own(m) => m,
        };
        let d = m.inp;
        let mut x = vec![0f32; ids.len() * d];
        for (&id, row) in ids.iter().zip(x.chunks_exact_mut(d)) {
            assert!(id < m.out, "token id {id} past the vocabulary of {}", m.out);
            m.expand_rows(id, 1, row);
            if self.embed_f16 {
                for v in row.iter_mut() {
                    *v = f16::from_f32(*v).to_f32();
                }
            }
        }
        Some(x)
    }

    /// Every dense matrix (blocks' and head) quantized to Q8_0 for 16-bit integer products
    /// ([`HostMatrix::quantized_q8_0`]); block storage is kept. Marks the weights `q8`.
    pub(crate) fn quantize_q8_0(&mut self) {
        let quantize = |m: &mut HostMatrix| {
            let dense = std::mem::replace(m, HostMatrix::from_f32(0, 0, Vec::new()));
            *m = dense.quantized_q8_0(Products::Int16);
        };
        for b in &mut self.blocks {
            for m in [
                &mut b.q,
                &mut b.k,
                &mut b.v,
                &mut b.o,
                &mut b.gate,
                &mut b.up,
                &mut b.down,
            ] {
                quantize(m);
            }
        }
        if matches!(self.embed, HostEmbed::Head) && self.head.is_dense() {
            // The look-up keeps the unquantized values burn's embedding holds.
            self.embed = HostEmbed::Own(self.head.clone());
        }
        quantize(&mut self.head);
        self.q8 = true;
        self.id = next_weights_id();
    }
}

/// Everything besides the matrices that the host engine needs.
#[derive(Debug, Clone)]
pub(crate) struct HostConsts {
    /// Per layer, what its family adds to a llama layer.
    pub(crate) extra: Vec<LayerExtra>,
    /// Gemma: the embedding's factor, `sqrt(hidden)`.
    pub(crate) embed_scale: Option<f32>,
    /// The factor on attention scores.
    pub(crate) attn_scale: f32,
    /// Gemma 2: the soft cap of attention scores.
    pub(crate) softcap: Option<f32>,
    /// Gemma: GELU (tanh) gate instead of SiLU.
    pub(crate) gelu: bool,
    /// Gemma 3: RoPE tables of the sliding layers.
    pub(crate) local_rope: Option<HostRope>,
    pub(crate) attn_norm: Vec<Vec<f32>>,
    pub(crate) mlp_norm: Vec<Vec<f32>>,
    pub(crate) final_norm: Vec<f32>,
    pub(crate) eps: f64,
    /// RoPE rows, as the tensor path's tables have them.
    pub(crate) rope: HostRope,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) hidden: usize,
}

/// What a family adds to a llama layer: attention biases (Qwen 2, `attention_bias`), per-head
/// q/k norm gains (Qwen 3, Gemma 3), norms of the sublayers' outputs (Gemma 2 / 3), the
/// attention window (Gemma 2 / 3's sliding layers).
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerExtra {
    pub(crate) attn_out_norm: Option<Vec<f32>>,
    pub(crate) mlp_out_norm: Option<Vec<f32>>,
    pub(crate) window: Option<usize>,
    pub(crate) q_bias: Option<Vec<f32>>,
    pub(crate) k_bias: Option<Vec<f32>>,
    pub(crate) v_bias: Option<Vec<f32>>,
    pub(crate) o_bias: Option<Vec<f32>>,
    pub(crate) q_norm: Option<Vec<f32>>,
    pub(crate) k_norm: Option<Vec<f32>>,
}

impl HostConsts {
    pub(crate) fn max_positions(&self) -> usize {
        self.rope.positions()
    }

    /// The constants attention reads, for a model of `heads` query and `kv_heads` KV heads of
    /// `head_dim` values, scores scaled by `1 / sqrt(head_dim)` (for tests of attention alone).
    #[cfg(test)]
    pub(crate) fn attention_only(heads: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self {
            extra: Vec::new(),
            embed_scale: None,
            attn_scale: 1.0 / (head_dim as f32).sqrt(),
            softcap: None,
            gelu: false,
            local_rope: None,
            attn_norm: Vec::new(),
            mlp_norm: Vec::new(),
            final_norm: Vec::new(),
            eps: 1e-5,
            rope: crate::model::rope::HostRope::identity(1 << 16),
            heads,
            kv_heads,
            head_dim,
            hidden: heads * head_dim,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `[out, inp]` weight matrix in [-50/64, 50/64] and `m` activation rows in [-14/8, 14/8].
    fn weights_and_activations(out: usize, inp: usize, m: usize) -> (Vec<f32>, Vec<f32>) {
        let w = (0..out * inp)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
            .collect();
        let x = (0..m * inp)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0)
            .collect();
        (w, x)
    }

    #[test]
    fn matches_a_plain_product_in_f32_and_f16() {
        let (out, inp, m) = (70, 37, 5);
        let (w, x) = weights_and_activations(out, inp, m);
        let expect: Vec<f64> = (0..m)
            .flat_map(|j| {
                let (w, x) = (&w, &x);
                (0..out).map(move |o| {
                    (0..inp)
                        .map(|i| f64::from(w[o * inp + i]) * f64::from(x[j * inp + i]))
                        .sum()
                })
            })
            .collect();
        let f32m = HostMatrix::from_f32(out, inp, w.clone());
        let f16m = HostMatrix::from_f16(out, inp, w.iter().map(|&v| f16::from_f32(v)).collect());
        for y in [f32m.matmul(&x, m), f16m.matmul(&x, m)] {
            for (a, b) in y.iter().zip(&expect) {
                assert!((f64::from(*a) - b).abs() < 1e-3, "{a} vs {b}");
            }
        }
        // Row results do not depend on how many rows are multiplied together.
        let one = f16m.matmul(&x[2 * inp..3 * inp], 1);
        assert_eq!(one, f16m.matmul(&x, m)[2 * out..3 * out]);
    }

    /// Random blocks of `ty` with finite, moderate scales.
    fn random_blocks(ty: GgmlType, values: usize, seed: u64) -> Vec<u8> {
        let mut rng = crate::rng::Rng::new(seed);
        let n = values / ty.block_size() * ty.type_size();
        let mut b: Vec<u8> = (0..n).map(|_| (rng.next_u64() & 0xff) as u8).collect();
        // Where the f16 scales (and minima) lie in a block; the K-quants' sub-block scales
        // multiply theirs by up to 63 (Q6_K: 127).
        let (heads, k): (&[usize], f32) = match ty {
            GgmlType::Q4_1 | GgmlType::Q5_1 => (&[0, 2], 1.0),
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => (&[0], 1.0),
            GgmlType::Q4K | GgmlType::Q5K => (&[0, 2], 64.0),
            GgmlType::Q6K => (&[208], 64.0),
            _ => (&[], 1.0),
        };
        if ty == GgmlType::F16 {
            // Finite halves: clear the top exponent bit (|v| < 2).
            for h in b.chunks_exact_mut(2) {
                h[1] &= 0xbf;
            }
        }
        for blk in b.chunks_exact_mut(ty.type_size()) {
            for &at in heads {
                let v = (rng.next_u64() % 2000) as f32 / 1000.0 - 1.0;
                blk[at..at + 2].copy_from_slice(&f16::from_f32(v / 16.0 / k).to_le_bytes());
            }
        }
        b
    }

    #[test]
    fn quantized_rows_multiply_exactly_as_their_dequantized_values() {
        // 70 rows (not a multiple of the 4-row tile), 96 = 3 blocks per row, 1..7 activation
        // rows (the 1- and 2-row tiles and the expanded path).
        let (out, inp) = (70, 96);
        for (t, ty) in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::F16,
        ]
        .into_iter()
        .enumerate()
        {
            let bytes = random_blocks(ty, out * inp, t as u64 + 1);
            let mut deq = vec![0f32; out * inp];
            quant::dequantize(ty, &bytes, &mut deq).unwrap();
            let mut expanded = vec![0f32; out * inp];
            expand_blocks(ty, &bytes, &mut expanded);
            assert_eq!(
                expanded.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                deq.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{ty:?} expansion"
            );
            let q = HostMatrix::from_blocks(ty, out, inp, bytes).unwrap();
            let f = HostMatrix::from_f32(out, inp, deq);
            for m in 1..=7 {
                let x: Vec<f32> = (0..m * inp)
                    .map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0)
                    .collect();
                let y = q.matmul(&x, m);
                assert_eq!(y, f.matmul(&x, m), "{ty:?}, {m} rows");
                // Each row's result is the same whatever tile shape computed it.
                for j in 0..m {
                    let one = q.matmul(&x[j * inp..(j + 1) * inp], 1);
                    assert_eq!(one, y[j * out..(j + 1) * out], "{ty:?}, row {j} of {m}");
                }
            }
        }
        let q =
            HostMatrix::from_blocks(GgmlType::Q4K, 2, 256, random_blocks(GgmlType::Q4K, 512, 9));
        assert_eq!(q.unwrap().storage(), "Q4_K");
    }

    #[test]
    fn products_write_every_value_of_a_recycled_buffer() {
        // The outputs come from buffers recycled with their old values: fill this thread's
        // with NaN first; every value must be the product's, as it is from fresh buffers.
        let (out, inp) = (600, 64);
        let kinds = [GgmlType::Q4_1, GgmlType::Q8_0]
            .into_iter()
            .flat_map(|ty| [Products::Int16, Products::Int8, Products::F32].map(|p| (ty, p)));
        for (ty, products) in kinds {
            let q = HostMatrix::from_blocks(ty, out, inp, random_blocks(ty, out * inp, 3))
                .unwrap()
                .with_products(products);
            // Before any NaN is recycled: a value left unwritten here would be a stale finite
            // one or a zero, and NaN below.
            let fresh: Vec<Vec<f32>> = (1..=9)
                .map(|m| q.matmul(&weights_and_activations(out, inp, m).1, m))
                .collect();
            for (m, want) in (1..=9).zip(&fresh) {
                for n in [out * m, out * m + 7, 2 * out * m] {
                    scratch::recycle(vec![f32::NAN; n]);
                }
                let (_, x) = weights_and_activations(out, inp, m);
                let y = q.matmul(&x, m);
                assert!(
                    y.iter().all(|v| v.is_finite()),
                    "{ty:?} {products:?}, {m} rows"
                );
                assert_eq!(&y, want, "{ty:?} {products:?}, {m} rows");
            }
        }
    }

    #[test]
    fn tasks_split_evenly_in_whole_panel_pairs() {
        for (out, threads, rows) in [(576, 2, 96), (192, 2, 96), (1536, 2, 128), (49152, 2, 128)] {
            assert_eq!(
                task_rows(out, threads),
                rows,
                "{out} rows, {threads} threads"
            );
        }
        for out in [8, 16, 72, 192, 576, 960, 1536, 2048, 5632, 14336, 49152] {
            for threads in 1..=16 {
                let rows = task_rows(out, threads);
                let tasks = out.div_ceil(rows);
                assert!(
                    rows <= ROWS_PER_TASK && rows.is_multiple_of(2 * PANEL),
                    "{out}, {threads}"
                );
                // No more tasks than a split of ROWS_PER_TASK rows rounded up to the threads.
                assert!(tasks <= out.div_ceil(ROWS_PER_TASK).next_multiple_of(threads));
            }
        }
    }

    #[test]
    fn dense_matrices_quantized_to_q8_0_stay_close_to_their_products() {
        let (out, inp, m) = (70, 96, 3);
        let (w, x) = weights_and_activations(out, inp, m);
        let dense = HostMatrix::from_f32(out, inp, w.clone());
        let want = dense.matmul(&x, m);
        let half = HostMatrix::from_f16(out, inp, w.iter().map(|&v| f16::from_f32(v)).collect());
        for q in [dense, half].map(|d| d.quantized_q8_0(Products::Int16)) {
            assert_eq!(q.storage(), "Q8_0 x Q16");
            // Each weight moves by at most half a step, max|w| / 254 (here 50/64/254), and
            // each activation by 1/32767 of its block's largest.
            let bound = |j: usize| -> f32 {
                let xs = &x[j * inp..(j + 1) * inp];
                xs.iter().map(|v| v.abs()).sum::<f32>() * (50.0 / 64.0 / 254.0) * 1.01
            };
            for (i, (a, b)) in q.matmul(&x, m).iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= bound(i / out), "{i}: {a} vs {b}");
            }
        }
        // Rows that are not whole blocks stay dense; block storage stays as it is.
        let odd = HostMatrix::from_f32(2, 37, vec![0.5; 74]).quantized_q8_0(Products::Int16);
        assert_eq!(odd.storage(), "f32");
        let q41 =
            HostMatrix::from_blocks(GgmlType::Q4_1, 2, 32, random_blocks(GgmlType::Q4_1, 64, 3))
                .unwrap()
                .quantized_q8_0(Products::Int16);
        assert_eq!(q41.storage(), "Q4_1");
    }

    #[test]
    fn integer_products_stay_close_to_the_f32_ones_row_by_row() {
        for (t, ty) in int_panels::INTEGER_TYPES.into_iter().enumerate() {
            // 3 blocks per row; 2 super-blocks for the K-quants.
            let (out, inp) = (70, if ty.block_size() > 32 { 512 } else { 96 });
            let bytes = random_blocks(ty, out * inp, t as u64 + 5);
            let f = HostMatrix::from_blocks(ty, out, inp, bytes.clone()).unwrap();
            for (products, close, tag) in [
                (Products::Int8, 0.02, " x Q8"),
                (Products::Int16, 1e-4, " x Q16"),
            ] {
                let q = f.clone().with_products(products);
                assert!(q.storage().ends_with(tag));
                for m in [1, 2, 3, 40] {
                    let x: Vec<f32> = (0..m * inp)
                        .map(|i| ((i * 13 % 29) as f32 - 14.0) / 8.0)
                        .collect();
                    let (yq, yf) = (q.matmul(&x, m), f.matmul(&x, m));
                    let scale = yf.iter().fold(0f32, |a, v| a.max(v.abs()));
                    for (a, b) in yq.iter().zip(&yf) {
                        assert!(
                            (a - b).abs() <= close * scale,
                            "{ty:?}, {m} rows: {a} vs {b}"
                        );
                    }
                    for j in 0..m {
                        let one = q.matmul(&x[j * inp..(j + 1) * inp], 1);
                        assert_eq!(one, yq[j * out..(j + 1) * out], "{ty:?}, row {j} of {m}");
                    }
                }
            }
        }
    }

    #[test]
    fn block_matrices_reject_partial_blocks_and_wrong_sizes() {
        assert!(matches!(
            HostMatrix::from_blocks(GgmlType::Q4_1, 2, 48, vec![0; 60]),
            Err(Error::MalformedGguf(_))
        ));
        assert!(matches!(
            HostMatrix::from_blocks(GgmlType::Q8_0, 2, 64, vec![0; 135]),
            Err(Error::MalformedGguf(_))
        ));
        assert!(HostMatrix::from_blocks(GgmlType::Q8_0, 2, 64, vec![0; 136]).is_ok());
    }
}
