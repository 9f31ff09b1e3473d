//! A preallocated key/value cache with append, truncate and keep-by-index.
//!
//! Each layer owns one `[batch, kv_heads, capacity, head_dim]` buffer for keys and one for values,
//! allocated once. New entries are written in place (`slice_assign` on a uniquely owned tensor
//! does not copy on the CPU backends), attention reads the `0..len` prefix, and nothing is
//! re-concatenated per step. Grouped-query heads are never repeated in memory.
//!
//! A cache can instead live in host memory ([`KvCache::new_host`]): the llama model's CPU
//! engine (`Llama::enable_host_kernels`) reads and writes it directly, with no tensor per
//! layer and no transfer per step. The API is the same for both kinds.

use burn::prelude::*;
use half::f16;
use half::slice::HalfFloatSliceExt;

#[derive(Debug, Clone)]
struct LayerKv<B: Backend> {
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
}

/// How a host KV cache ([`KvCache::new_host`], what the host engine decodes with) holds keys
/// and values ([`crate::LoadOptions::kv_dtype`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    /// 32-bit floats: keys and values exactly as computed.
    #[default]
    F32,
    /// IEEE half: half the cache's memory (an 8B Llama at 8192 positions: 1.1 GB instead of
    /// 2.1 GB) and half the bytes attention reads a step, as llama.cpp's default cache holds
    /// them. Each key and value is rounded to f16 once, when it is stored; on SmolLM2 that moves
    /// the logits up to 2.3e-2 from a float64 forward (f32: 5e-3 with the default products).
    /// Every decoder stays bit for bit equal to greedy on the same cache type.
    F16,
}

impl std::fmt::Display for KvDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        })
    }
}

impl std::str::FromStr for KvDtype {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(crate::Error::InvalidArgument(format!(
                "KV cache dtype `{other}`: use f32 or f16"
            ))),
        }
    }
}

/// Keys and values of every layer in host memory, each `[batch, kv_heads, capacity, head_dim]`
/// row-major.
#[derive(Debug, Clone)]
pub(crate) struct HostKv {
    pub(crate) k: Vec<KvRows>,
    pub(crate) v: Vec<KvRows>,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
}

/// One layer's keys or values in host memory: f32, or f16 (half the memory, and half the bytes
/// attention reads per step).
#[derive(Debug, Clone)]
pub(crate) enum KvRows {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl KvRows {
    /// `n` zeros in f16 where `half`, else f32.
    pub(crate) fn zeros(n: usize, half: bool) -> Self {
        if half {
            Self::F16(vec![f16::ZERO; n])
        } else {
            Self::F32(vec![0.0; n])
        }
    }

    /// Stores `src` at `at` (f16: rounded to the nearest, ties to even).
    pub(crate) fn put(&mut self, at: usize, src: &[f32]) {
        match self {
            Self::F32(b) => b[at..at + src.len()].copy_from_slice(src),
            Self::F16(b) => b[at..at + src.len()].convert_from_f32_slice(src),
        }
    }

    /// Reads `out.len()` values from `at` (f16 widens exactly).
    pub(crate) fn get(&self, at: usize, out: &mut [f32]) {
        match self {
            Self::F32(b) => out.copy_from_slice(&b[at..at + out.len()]),
            Self::F16(b) => b[at..at + out.len()].convert_to_f32_slice(out),
        }
    }

    /// Copies `n` values from `src` at `from` to `at` (both of one precision).
    fn copy_from(&mut self, at: usize, src: &KvRows, from: usize, n: usize) {
        match (self, src) {
            (Self::F32(d), Self::F32(s)) => d[at..at + n].copy_from_slice(&s[from..from + n]),
            (Self::F16(d), Self::F16(s)) => d[at..at + n].copy_from_slice(&s[from..from + n]),
            _ => panic!("KV caches of different precisions"),
        }
    }

    /// Rows `j` of `keys` (`hd` values each from `base + j * hd`) to `base + i * hd`, `i` their
    /// index in `keys`, through a scratch copy (so any order is safe).
    fn gather(&mut self, base: usize, keys: &[usize], hd: usize) {
        fn go<T: Copy>(b: &mut [T], base: usize, keys: &[usize], hd: usize) {
            let scratch: Vec<T> = keys
                .iter()
                .flat_map(|&j| b[base + j * hd..base + (j + 1) * hd].iter().copied())
                .collect();
            b[base..base + scratch.len()].copy_from_slice(&scratch);
        }
        match self {
            Self::F32(b) => go(b, base, keys, hd),
            Self::F16(b) => go(b, base, keys, hd),
        }
    }
}

impl HostKv {
    /// Offset of `(row, head, position)` in a layer's buffer.
    pub(crate) fn at(&self, capacity: usize, row: usize, head: usize, pos: usize) -> usize {
        ((row * self.kv_heads + head) * capacity + pos) * self.head_dim
    }
}

#[derive(Debug, Clone)]
enum Store<B: Backend> {
    Tensors(Vec<Option<LayerKv<B>>>),
    Host(HostKv),
}

/// The KV cache of all layers of one model, for `batch` sequences sharing one length.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    store: Store<B>,
    len: usize,
    capacity: usize,
    batch: usize,
    device: B::Device,
    /// The weights whose keys and values these are, where the model says (the host engine's
    /// weights' id): what lets a [`crate::PromptCache`] hand a cache only to the model that
    /// filled it.
    owner: Option<u64>,
}

impl<B: Backend> KvCache<B> {
    /// Allocates a cache of `layers` layers, each `[batch, kv_heads, capacity, head_dim]`.
    pub fn new(
        layers: usize,
        batch: usize,
        kv_heads: usize,
        capacity: usize,
        head_dim: usize,
        device: &B::Device,
    ) -> Self {
        let shape = [batch, kv_heads, capacity, head_dim];
        let layers = (0..layers)
            .map(|_| {
                Some(LayerKv {
                    k: Tensor::zeros(shape, device),
                    v: Tensor::zeros(shape, device),
                })
            })
            .collect();
        Self {
            store: Store::Tensors(layers),
            len: 0,
            capacity,
            batch,
            device: device.clone(),
            owner: None,
        }
    }

    /// Allocates a cache of the same shape in host memory (f32), for models that run their
    /// decoding steps on the host (the llama model with host kernels on a CPU backend).
    /// [`KvCache::append`] still works on it (through host copies), so any model can use it.
    pub fn new_host(
        layers: usize,
        batch: usize,
        kv_heads: usize,
        capacity: usize,
        head_dim: usize,
        device: &B::Device,
    ) -> Self {
        Self::new_host_as(
            layers,
            [batch, kv_heads, capacity, head_dim],
            KvDtype::F32,
            device,
        )
    }

    /// [`KvCache::new_host`] of `[batch, kv_heads, capacity, head_dim]` per layer, holding its
    /// keys and values as `dtype` says.
    pub(crate) fn new_host_as(
        layers: usize,
        [batch, kv_heads, capacity, head_dim]: [usize; 4],
        dtype: KvDtype,
        device: &B::Device,
    ) -> Self {
        let n = batch * kv_heads * capacity * head_dim;
        let half = dtype == KvDtype::F16;
        Self {
            store: Store::Host(HostKv {
                k: (0..layers).map(|_| KvRows::zeros(n, half)).collect(),
                v: (0..layers).map(|_| KvRows::zeros(n, half)).collect(),
                kv_heads,
                head_dim,
            }),
            len: 0,
            capacity,
            batch,
            device: device.clone(),
            owner: None,
        }
    }

    /// Marks a host cache as filled by the weights `id` (see [`KvCache::owner`]); only host
    /// caches carry an owner, which is what lets a [`crate::PromptCache`] reuse one.
    pub(crate) fn with_owner(mut self, id: u64) -> Self {
        assert!(self.is_host(), "only host caches have an owner");
        self.owner = Some(id);
        self
    }

    /// The id of the weights that fill this cache, where the model set one: a cache from one
    /// owner holds, at each position, exactly the keys and values that owner computes for that
    /// position's prefix, however the tokens were grouped into forward passes.
    pub(crate) fn owner(&self) -> Option<u64> {
        self.owner
    }

    /// Copies positions `0..n` of every layer from `src`, a host cache of the same shape and
    /// owner (any capacity), and sets the length to `n`.
    ///
    /// # Panics
    /// When either cache is not in host memory, the shapes differ, or `n` exceeds `src.len()`
    /// or this cache's capacity.
    pub(crate) fn copy_prefix_from(&mut self, src: &KvCache<B>, n: usize) {
        assert!(
            n <= src.len && n <= self.capacity,
            "copy_prefix_from: {n} positions"
        );
        assert_eq!(self.batch, src.batch, "copy_prefix_from: batch");
        let (cap_d, cap_s) = (self.capacity, src.capacity);
        let (Store::Host(d), Store::Host(s)) = (&mut self.store, &src.store) else {
            panic!("copy_prefix_from: host caches only");
        };
        assert_eq!(
            (d.k.len(), d.kv_heads, d.head_dim),
            (s.k.len(), s.kv_heads, s.head_dim),
            "copy_prefix_from: shapes"
        );
        let (heads, hd) = (d.kv_heads, d.head_dim);
        let w = n * hd;
        for (dst, from) in d.k.iter_mut().zip(&s.k).chain(d.v.iter_mut().zip(&s.v)) {
            for rg in 0..self.batch * heads {
                dst.copy_from(rg * cap_d * hd, from, rg * cap_s * hd, w);
            }
        }
        self.len = n;
        self.owner = src.owner;
    }

    /// True for a cache in host memory ([`KvCache::new_host`]).
    pub fn is_host(&self) -> bool {
        matches!(self.store, Store::Host(_))
    }

    /// The host buffers, for the host engine.
    pub(crate) fn host_mut(&mut self) -> Option<&mut HostKv> {
        match &mut self.store {
            Store::Host(h) => Some(h),
            Store::Tensors(_) => None,
        }
    }

    /// Committed entries (positions) per sequence.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Room left.
    pub fn remaining(&self) -> usize {
        self.capacity - self.len
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Drops every entry at or after `len` (no-op when `len >= self.len()`).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Keeps, among the entries at or after `start`, only those at relative indices `keep`
    /// (in that order), compacted to `start .. start + keep.len()`; everything after is dropped.
    /// This is how tree verification keeps the accepted branch.
    ///
    /// # Panics
    /// When `start > len` or an index points at or past `len`.
    pub fn keep(&mut self, start: usize, keep: &[usize]) {
        assert!(
            start <= self.len,
            "keep: start {start} past len {}",
            self.len
        );
        assert!(
            keep.iter().all(|&i| start + i < self.len),
            "keep: index out of the cached range"
        );
        // Indices that are already in place need no copy (the common accepted-prefix case).
        let identity = keep.iter().enumerate().all(|(i, &k)| i == k);
        if !identity && !keep.is_empty() {
            if let Store::Host(h) = &mut self.store {
                let rows: Vec<Vec<usize>> = vec![keep.to_vec(); self.batch];
                host_keep(h, self.capacity, start, &rows);
                self.len = start + keep.len();
                return;
            }
            let device = self.device();
            let idx: Vec<i64> = keep.iter().map(|&i| (start + i) as i64).collect();
            let n = idx.len();
            let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [n]), &device);
            for layer in self.tensor_layers() {
                let l = layer.take().expect("cache layer present");
                let [b, h, _, d] = l.k.dims();
                let k_sel = l.k.clone().select(2, idx.clone());
                let v_sel = l.v.clone().select(2, idx.clone());
                let range = [0..b, 0..h, start..start + n, 0..d];
                *layer = Some(LayerKv {
                    k: l.k.slice_assign(range.clone(), k_sel),
                    v: l.v.slice_assign(range, v_sel),
                });
            }
        }
        self.len = start + keep.len();
    }

    /// [`KvCache::keep`] with a different selection per sequence of the batch: row `b` keeps
    /// its entries at relative indices `keep[b]`. Every row keeps the same number of entries
    /// (pad short selections with any index and mask those slots out of later attention): the
    /// slots stay aligned across the batch while each sequence keeps its own branch.
    ///
    /// # Panics
    /// When `keep` does not have one selection per row, the selections differ in length,
    /// `start > len`, or an index points at or past `len`.
    pub fn keep_rows(&mut self, start: usize, keep: &[Vec<usize>]) {
        assert_eq!(keep.len(), self.batch, "keep_rows: one selection per row");
        let n = keep.first().map_or(0, Vec::len);
        assert!(
            keep.iter().all(|k| k.len() == n),
            "keep_rows: selections of one length"
        );
        assert!(
            start <= self.len,
            "keep_rows: start {start} past len {}",
            self.len
        );
        assert!(
            keep.iter().flatten().all(|&i| start + i < self.len),
            "keep_rows: index out of the cached range"
        );
        let identity = keep
            .iter()
            .all(|k| k.iter().enumerate().all(|(i, &x)| i == x));
        if !identity && n > 0 {
            if let Store::Host(h) = &mut self.store {
                host_keep(h, self.capacity, start, keep);
                self.len = start + n;
                return;
            }
            let device = self.device();
            let b = self.batch;
            let idx: Vec<i64> = keep
                .iter()
                .flat_map(|k| k.iter().map(|&i| (start + i) as i64))
                .collect();
            let idx = Tensor::<B, 4, Int>::from_data(TensorData::new(idx, [b, 1, n, 1]), &device);
            for layer in self.tensor_layers() {
                let l = layer.take().expect("cache layer present");
                let [b, h, _, d] = l.k.dims();
                let idx = idx.clone().expand([b, h, n, d]);
                let k_sel = l.k.clone().gather(2, idx.clone());
                let v_sel = l.v.clone().gather(2, idx);
                let range = [0..b, 0..h, start..start + n, 0..d];
                *layer = Some(LayerKv {
                    k: l.k.slice_assign(range.clone(), k_sel),
                    v: l.v.slice_assign(range, v_sel),
                });
            }
        }
        self.len = start + n;
    }

    /// The device the cache lives on.
    pub fn device(&self) -> B::Device {
        self.device.clone()
    }

    fn tensor_layers(&mut self) -> &mut [Option<LayerKv<B>>] {
        match &mut self.store {
            Store::Tensors(l) => l,
            Store::Host(_) => &mut [],
        }
    }

    /// Writes `k`, `v` (`[batch, kv_heads, t, head_dim]`) of layer `layer` at `len .. len + t` and
    /// returns the keys and values of positions `0 .. len + t`. Call for every layer, then
    /// [`KvCache::advance`] by `t`.
    ///
    /// # Panics
    /// When the cache has fewer than `t` free slots.
    pub fn append(
        &mut self,
        layer: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, t, d] = k.dims();
        let end = self.len + t;
        assert!(
            end <= self.capacity,
            "KV cache overflow: {end} > capacity {}",
            self.capacity
        );
        let (len, capacity) = (self.len, self.capacity);
        match &mut self.store {
            Store::Tensors(layers) => {
                let l = layers[layer].take().expect("cache layer present");
                if len == 0 && l.k.dims() == [b, h, t, d] {
                    // The whole cache in one write (training, one-shot scoring): the new keys
                    // and values are the cache, with no copy into it (nor, under autodiff, a
                    // slice of every gradient back out of it).
                    layers[layer] = Some(LayerKv {
                        k: k.clone(),
                        v: v.clone(),
                    });
                    return (k, v);
                }
                let range = [0..b, 0..h, len..end, 0..d];
                let k_all = l.k.slice_assign(range.clone(), k);
                let v_all = l.v.slice_assign(range, v);
                let view = [0..b, 0..h, 0..end, 0..d];
                let out = (k_all.clone().slice(view.clone()), v_all.clone().slice(view));
                layers[layer] = Some(LayerKv { k: k_all, v: v_all });
                out
            }
            Store::Host(hk) => {
                let device = k.device();
                let put = |buf: &mut KvRows, x: Tensor<B, 4>| -> Tensor<B, 4> {
                    let x: Vec<f32> = x.into_data().convert::<f32>().into_vec().expect("f32");
                    let mut all = vec![0f32; b * h * end * d];
                    for (rg, out) in all.chunks_exact_mut(end * d).enumerate() {
                        let base = rg * capacity * d;
                        buf.put(base + len * d, &x[rg * t * d..(rg + 1) * t * d]);
                        buf.get(base, out);
                    }
                    Tensor::from_data(TensorData::new(all, [b, h, end, d]), &device)
                };
                let k_all = put(&mut hk.k[layer], k);
                let v_all = put(&mut hk.v[layer], v);
                (k_all, v_all)
            }
        }
    }

    /// Commits `t` appended positions (after every layer's [`KvCache::append`]).
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }
}

/// Host version of [`KvCache::keep_rows`]: row `r` keeps relative entries `keep[r]` at
/// `start..`. Gathered through a scratch copy, so any order of indices is safe.
fn host_keep(h: &mut HostKv, capacity: usize, start: usize, keep: &[Vec<usize>]) {
    let (d, kv_heads) = (h.head_dim, h.kv_heads);
    for buf in h.k.iter_mut().chain(h.v.iter_mut()) {
        for (r, sel) in keep.iter().enumerate() {
            for g in 0..kv_heads {
                buf.gather(((r * kv_heads + g) * capacity + start) * d, sel, d);
            }
        }
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use super::*;
    type B = burn::backend::NdArray;

    /// Distinct values per (row, head, position, dim), so any misplaced entry shows.
    fn kv(b: usize, h: usize, t: usize, d: usize, offset: f32) -> Tensor<B, 4> {
        let v: Vec<f32> = (0..b * h * t * d).map(|i| offset + i as f32).collect();
        Tensor::from_data(TensorData::new(v, [b, h, t, d]), &Default::default())
    }

    fn contents(c: &mut KvCache<B>) -> Vec<f32> {
        // Appending nothing returns the cached prefix of layer 0.
        let (k, v) = c.append(0, kv(2, 3, 0, 4, 0.0), kv(2, 3, 0, 4, 0.0));
        let mut out: Vec<f32> = k.into_data().into_vec().unwrap();
        out.extend(v.into_data().into_vec::<f32>().unwrap());
        out
    }

    /// Both cache kinds, fed the same entries, end with the same contents after keep_rows
    /// (per-row branches, unsorted indices), keep and truncate, and those contents are the
    /// selected entries (checked against the appended values directly).
    #[test]
    fn keep_rows_keep_and_truncate_agree_across_kinds_and_select_the_right_entries() {
        let d = Default::default();
        let mut caches = [
            KvCache::<B>::new(1, 2, 3, 16, 4, &d),
            KvCache::<B>::new_host(1, 2, 3, 16, 4, &d),
            KvCache::<B>::new_host_as(1, [2, 3, 16, 4], KvDtype::F16, &d),
        ];
        let mut results = Vec::new();
        for c in caches.iter_mut() {
            c.append(0, kv(2, 3, 3, 4, 0.0), kv(2, 3, 3, 4, 1000.0));
            c.advance(3);
            c.append(0, kv(2, 3, 5, 4, 100.0), kv(2, 3, 5, 4, 2000.0));
            c.advance(5);
            c.keep_rows(3, &[vec![4, 1, 2], vec![0, 3, 3]]);
            assert_eq!(c.len(), 6);
            let after_rows = contents(c);
            c.keep(3, &[2, 0]);
            c.truncate(4);
            results.push((after_rows, contents(c)));
        }
        assert_eq!(results[0], results[1]);
        // The f16 cache holds the same entries, each rounded to f16 (independent: the scalar
        // conversion; values above 2048 are where f16 drops the last bit of an integer).
        let round =
            |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| f16::from_f32(x).to_f32()).collect() };
        let (rows, kept) = &results[0];
        assert_eq!((round(rows), round(kept)), results[2]);
        assert!(rows.iter().any(|&x| f16::from_f32(x).to_f32() != x));
        // Row 0, head 1, slot 3 holds appended entry 4 of row 0, head 1 (second append).
        let (after_rows, _) = &results[0];
        let at = |r: usize, g: usize, p: usize| ((r * 3 + g) * 6 + p) * 4;
        let appended = |r: usize, g: usize, j: usize| 100.0 + (((r * 3 + g) * 5 + j) * 4) as f32;
        assert_eq!(after_rows[at(0, 1, 3)], appended(0, 1, 4));
        assert_eq!(after_rows[at(1, 2, 5)], appended(1, 2, 3));
        // Committed entries are untouched: row 1, head 0, position 2 from the first append.
        assert_eq!(after_rows[at(1, 0, 2)], ((3 * 3 + 2) * 4) as f32);
    }
}
