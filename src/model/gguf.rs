//! GGUF (v2/v3) reader: header, metadata, tensor table and memory-mapped tensor data.
//!
//! Written for hostile input: every length and count is checked against the bytes that remain
//! before anything is allocated, tensor ranks are limited to GGML's 4, element counts may not
//! overflow, and every tensor's data must lie inside the file. A malformed file is an
//! [`Error::MalformedGguf`], never a panic or a huge allocation (`fuzz/fuzz_targets/gguf_header.rs`).
//!
//! The published crates were evaluated first (`ggus`, `gguf-rs-lib`); this parser is ours because
//! it has to bound every header field before allocating and stay small enough to audit.

use crate::error::{Error, Result};
use crate::model::mapped;
use crate::model::quant::{self, GgmlType};
use std::collections::BTreeMap;
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_DIMS: usize = 4;
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v as u64),
            Self::U16(v) => Some(v as u64),
            Self::U32(v) => Some(v as u64),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v as f64),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A tensor's entry in the GGUF tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in GGML order: `dims[0]` is the innermost (contiguous) one.
    pub dims: Vec<usize>,
    /// Storage type.
    pub dtype: GgmlType,
    /// Byte range of the data inside the file.
    pub range: std::ops::Range<usize>,
}

impl TensorInfo {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape in row-major (PyTorch) order: outermost dimension first.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF header: version, metadata and tensor table (no tensor data).
#[derive(Debug, Clone)]
pub struct GgufHeader {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key/value pairs.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
}

impl GgufHeader {
    /// Parses the header of a GGUF file held in `bytes`, checking that every tensor's data lies
    /// inside `bytes`.
    ///
    /// # Errors
    /// [`Error::MalformedGguf`] for any inconsistency, [`Error::UnsupportedDtype`] for a tensor
    /// stored in a type this crate cannot decode.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader { b: bytes, pos: 0 };
        if r.take(4)? != MAGIC {
            return Err(malformed("wrong magic (expected `GGUF`)"));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(malformed(format!(
                "unsupported GGUF version {version} (2 and 3 are supported)"
            )));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        // A key/value pair needs at least 8 (key length) + 4 (type) + 1 bytes; a tensor entry
        // 8 + 4 + 4 + 8 bytes. Reject counts the file cannot possibly hold before allocating.
        r.check_count(n_kv, 13, "metadata count")?;
        r.check_count(n_tensors, 24, "tensor count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            metadata.insert(key, value);
        }
        let raw = (0..n_tensors)
            .map(|_| r.tensor_entry())
            .collect::<Result<Vec<_>>>()?;
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(malformed("general.alignment must be a power of two")),
            },
        };
        let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
        let tensors = raw
            .into_iter()
            .map(|e| e.locate(data_start, alignment, bytes.len()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            version,
            metadata,
            tensors,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }
}

/// A tensor table entry as the file states it, before its data is located.
struct TensorEntry {
    name: String,
    dims: Vec<usize>,
    ty: u32,
    offset: u64,
}

impl TensorEntry {
    /// The entry's type and data range in a file of `file_len` bytes whose data section starts
    /// at `data_start`, checked: a known type, a whole number of blocks, an aligned offset, and
    /// data inside the file.
    fn locate(self, data_start: u64, alignment: u64, file_len: usize) -> Result<TensorInfo> {
        let Self {
            name,
            dims,
            ty,
            offset,
        } = self;
        let dtype = GgmlType::from_id(ty).ok_or_else(|| Error::UnsupportedDtype {
            tensor: name.clone(),
            dtype: GgmlType::name_of_id(ty),
        })?;
        let n = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| malformed(format!("tensor `{name}`: element count overflows")))?;
        let size = dtype.bytes_for(n).ok_or_else(|| {
            malformed(format!(
                "tensor `{name}`: {n} elements is not a whole number of {dtype:?} blocks"
            ))
        })?;
        if offset % alignment != 0 {
            return Err(malformed(format!(
                "tensor `{name}`: misaligned data offset"
            )));
        }
        let start = data_start
            .checked_add(offset)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| malformed(format!("tensor `{name}`: offset overflows")))?;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= file_len)
            .ok_or_else(|| {
                malformed(format!(
                    "tensor `{name}` ends past the end of the file ({file_len} bytes): truncated"
                ))
            })?;
        Ok(TensorInfo {
            name,
            dims,
            dtype,
            range: start..end,
        })
    }
}

/// A memory-mapped GGUF file.
pub struct GgufFile {
    mmap: memmap2::Mmap,
    /// The parsed header.
    pub header: GgufHeader,
    index: BTreeMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and memory-maps `path`, parsing its header.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; the errors of [`GgufHeader::parse`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and shared with the file; every read is bounds-checked
        // against the length mapped here. What a concurrent change to the file does: a writer
        // changes the values a later read sees (weights, not bounds: the header is parsed once,
        // below); truncating it makes a later read of the cut pages raise SIGBUS. Loading copies
        // every matrix the host engine multiplies out of the map; lazily built tensors and
        // dequantizing calls read it again, so the file must stay unchanged while a model
        // loaded from it lives, as with llama.cpp's mapped weights.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = GgufHeader::parse(&mmap)?;
        let index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            mmap,
            header,
            index,
        })
    }

    /// Drops the file's pages from this process's resident memory ([`mapped::release`]).
    pub(crate) fn release_pages(&self) {
        mapped::release(&self.mmap, 0..self.mmap.len());
    }

    /// [`GgufFile::release_pages`] for one tensor's bytes: called as soon as the host engine
    /// has its copy, so a load never holds the file and the copies at once.
    pub(crate) fn release_tensor(&self, info: &TensorInfo) {
        mapped::release(&self.mmap, info.range.clone());
    }

    /// The tensor table entry for `name`.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.header.tensors[i])
    }

    /// The raw bytes of a tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.range.clone()]
    }

    /// Dequantizes tensor `name` to `f32`, returning `(shape, values)` with the shape in
    /// row-major order. `Ok(None)` when there is no such tensor.
    ///
    /// # Errors
    /// [`Error::MalformedGguf`] when the data does not match the declared type.
    pub fn dequantize(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let Some(info) = self.tensor_info(name) else {
            return Ok(None);
        };
        let mut out = vec![0f32; info.len()];
        quant::dequantize(info.dtype, self.tensor_bytes(info), &mut out)?;
        Ok(Some((info.shape(), out)))
    }
}

fn malformed(msg: impl Into<String>) -> Error {
    Error::MalformedGguf(msg.into())
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(malformed(format!(
                "unexpected end of file at byte {} (needed {n} more bytes): truncated",
                self.pos
            )));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// One tensor table entry: name, dimensions (1 to `MAX_DIMS`), type id and data offset.
    fn tensor_entry(&mut self) -> Result<TensorEntry> {
        let name = self.string()?;
        let n_dims = self.u32()? as usize;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(malformed(format!(
                "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            )));
        }
        let dims = (0..n_dims)
            .map(|_| {
                let d = self.u64()?;
                usize::try_from(d).map_err(|_| malformed("dimension too large"))
            })
            .collect::<Result<Vec<_>>>()?;
        let ty = self.u32()?;
        let offset = self.u64()?;
        Ok(TensorEntry {
            name,
            dims,
            ty,
            offset,
        })
    }

    fn check_count(&self, n: u64, min_bytes_each: u64, what: &str) -> Result<()> {
        if n.saturating_mul(min_bytes_each) > self.remaining() as u64 {
            return Err(malformed(format!(
                "{what} {n} cannot fit in the {} bytes that remain",
                self.remaining()
            )));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        self.check_count(len, 1, "string length")?;
        let bytes = self.take(len as usize)?;
        // Vocabularies of some converters contain invalid UTF-8; keep them lossily.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>()?[0]),
            1 => MetaValue::I8(self.array::<1>()?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array()?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array()?)),
            4 => MetaValue::U32(self.u32()?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array()?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(malformed(format!("invalid bool byte {b}"))),
            },
            8 => MetaValue::String(self.string()?),
            9 => {
                if depth >= 2 {
                    return Err(malformed("metadata arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let len = self.u64()?;
                let min = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    t => return Err(malformed(format!("unknown metadata type {t}"))),
                };
                self.check_count(len, min, "array length")?;
                let mut v = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    v.push(self.value(elem, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64()?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array()?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array()?)),
            t => return Err(malformed(format!("unknown metadata type {t}"))),
        })
    }
}

/// Writes a minimal GGUF v3 file (for tests and tools): `metadata` and F32 tensors given in
/// row-major shape order.
pub fn write_gguf(metadata: &[(&str, MetaValue)], tensors: &[(&str, &[usize], &[f32])]) -> Vec<u8> {
    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    fn type_id(v: &MetaValue) -> u32 {
        match v {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }
    fn put_val(out: &mut Vec<u8>, v: &MetaValue) {
        match v {
            MetaValue::U8(x) => out.push(*x),
            MetaValue::I8(x) => out.push(*x as u8),
            MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::Bool(x) => out.push(*x as u8),
            MetaValue::String(s) => put_str(out, s),
            MetaValue::Array(a) => {
                out.extend_from_slice(&a.first().map_or(4, type_id).to_le_bytes());
                out.extend_from_slice(&(a.len() as u64).to_le_bytes());
                for x in a {
                    put_val(out, x);
                }
            }
            MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend_from_slice(&type_id(v).to_le_bytes());
        put_val(&mut out, v);
    }
    let mut offset = 0u64;
    for (name, shape, data) in tensors {
        put_str(&mut out, name);
        out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&GgmlType::F32.id().to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += (data.len() as u64 * 4).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    }
    while !(out.len() as u64).is_multiple_of(DEFAULT_ALIGNMENT) {
        out.push(0);
    }
    for (_, _, data) in tensors {
        for x in *data {
            out.extend_from_slice(&x.to_le_bytes());
        }
        while !(out.len() as u64).is_multiple_of(DEFAULT_ALIGNMENT) {
            out.push(0);
        }
    }
    out
}
