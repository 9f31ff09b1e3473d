//! Where parameters come from: random initialisation, GGUF files, Hugging Face safetensors.
//!
//! [`ParamSource`] hands the model builder each parameter by its **Hugging Face name**
//! (`model.layers.3.self_attn.q_proj.weight`) and row-major shape. Loaders only translate names
//! and layouts; the GGUF-to-HF RoPE layout conversion happens here, in one place
//! ([`unpermute_rope_rows`]).

use crate::error::{Error, Result};
use crate::model::config::LlamaConfig;
use crate::model::gguf::GgufFile;
use crate::model::host::{HostMatrix, Products};
use crate::model::quant::GgmlType;
use burn::module::{Param, ParamId};
use burn::prelude::*;
use burn::tensor::{Distribution, FloatDType};
use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

/// Supplies parameters by Hugging Face name.
pub(crate) trait ParamSource<B: Backend> {
    fn device(&self) -> B::Device;
    /// A linear weight stored `[out, in]` in the checkpoint, returned as burn's `[in, out]`.
    fn matrix(&mut self, name: &str, out: usize, inp: usize) -> Result<Param<Tensor<B, 2>>>;
    /// A norm's gain vector.
    fn vector(&mut self, name: &str, len: usize) -> Result<Tensor<B, 1>>;
    /// A linear layer's bias, `[out]`, for a layer of `inp` inputs.
    fn bias(&mut self, name: &str, out: usize, inp: usize) -> Result<Tensor<B, 1>> {
        let _ = inp;
        self.vector(name, out)
    }
    /// The token embedding, `[vocab, hidden]`.
    fn embedding(&mut self, name: &str, vocab: usize, hidden: usize)
    -> Result<Param<Tensor<B, 2>>>;
}

/// Random initialisation: uniform `±1/sqrt(in)` linears, unit norms, `N(0, 0.02)` embeddings.
pub(crate) struct RandomInit<B: Backend> {
    device: B::Device,
}

impl<B: Backend> RandomInit<B> {
    pub(crate) fn new(device: &B::Device) -> Self {
        Self {
            device: device.clone(),
        }
    }
}

impl<B: Backend> ParamSource<B> for RandomInit<B> {
    fn device(&self) -> B::Device {
        self.device.clone()
    }
    fn matrix(&mut self, _: &str, out: usize, inp: usize) -> Result<Param<Tensor<B, 2>>> {
        let k = 1.0 / (inp as f64).sqrt();
        Ok(Param::from_tensor(Tensor::random(
            [inp, out],
            Distribution::Uniform(-k, k),
            &self.device,
        )))
    }
    fn vector(&mut self, _: &str, len: usize) -> Result<Tensor<B, 1>> {
        Ok(Tensor::ones([len], &self.device))
    }
    /// Uniform `±1/sqrt(in)`, as PyTorch initialises a linear layer's bias.
    fn bias(&mut self, _: &str, out: usize, inp: usize) -> Result<Tensor<B, 1>> {
        let k = 1.0 / (inp as f64).sqrt();
        Ok(Tensor::random(
            [out],
            Distribution::Uniform(-k, k),
            &self.device,
        ))
    }
    fn embedding(&mut self, _: &str, vocab: usize, hidden: usize) -> Result<Param<Tensor<B, 2>>> {
        Ok(Param::from_tensor(Tensor::random(
            [vocab, hidden],
            Distribution::Normal(0.0, 0.02),
            &self.device,
        )))
    }
}

/// A checkpoint that yields `f32` tensors by Hugging Face name, in row-major shape.
pub(crate) trait TensorSource {
    /// `(shape, values)` of `name`, or `Ok(None)` when the checkpoint has no such tensor.
    fn tensor(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>>;
    /// The row-major shape of `name` without reading its values, or `Ok(None)` when the
    /// checkpoint has no such tensor.
    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>>;
    /// Every tensor the checkpoint holds, by its name in the file.
    fn stored_names(&self) -> Vec<String>;
    /// The name in the file of Hugging Face tensor `hf` (`None`: the file cannot hold it).
    fn stored_name(&self, hf: &str) -> Option<String>;
}

/// A checkpoint the model's lazily built tensors can read from for as long as they live.
pub(crate) type SharedSource = Arc<dyn TensorSource + Send + Sync>;

/// Adapts a [`TensorSource`] to the builder, checking every shape and recording what it read.
///
/// Built [`Loaded::deferred`], matrices and the embedding are not read at all: each becomes a
/// lazy parameter that reads and converts its tensor on first use ([`Param::val`]). The host
/// engine multiplies the checkpoint's own blocks, so on CPU backends those dense copies are
/// never built unless something needs them (training, merging an adapter, exporting, burn's own
/// products).
pub(crate) struct Loaded<B: Backend> {
    source: SharedSource,
    device: B::Device,
    /// Storage type of matrices and the embedding (norm gains stay `f32`).
    dtype: FloatDType,
    /// Matrices and the embedding as lazy parameters.
    deferred: bool,
    /// The names in the file of the tensors read so far.
    read: HashSet<String>,
}

impl<B: Backend> Loaded<B> {
    /// Every tensor read and converted now.
    pub(crate) fn new(source: SharedSource, device: &B::Device, dtype: FloatDType) -> Self {
        Self {
            source,
            device: device.clone(),
            dtype,
            deferred: false,
            read: HashSet::new(),
        }
    }

    /// Matrices and the embedding read on first use (their shapes are checked now).
    pub(crate) fn deferred(source: SharedSource, device: &B::Device, dtype: FloatDType) -> Self {
        Self {
            deferred: true,
            ..Self::new(source, device, dtype)
        }
    }

    /// Checks that the model read every tensor of the checkpoint except those `ignored` names
    /// (names in the file): a tensor left over is a part of the network the model lacks, such
    /// as a bias, and outputs without it would be wrong.
    ///
    /// # Errors
    /// [`Error::UnusedTensors`] listing what was not read.
    pub(crate) fn check_all_read(&self, ignored: impl Fn(&str) -> bool) -> Result<()> {
        let mut names: Vec<String> = self
            .source
            .stored_names()
            .into_iter()
            .filter(|n| !self.read.contains(n) && !ignored(n))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        names.sort();
        Err(Error::UnusedTensors { names })
    }

    /// Records `name` as read and checks its shape.
    fn check_shape(
        &mut self,
        name: &str,
        shape: Option<Vec<usize>>,
        expected: &[usize],
    ) -> Result<()> {
        let shape = shape.ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        self.read.extend(self.source.stored_name(name));
        if shape != expected {
            return Err(Error::ShapeMismatch {
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: shape,
            });
        }
        Ok(())
    }

    fn fetch(&mut self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let (shape, data) = self.source.tensor(name)?.unzip();
        // A part of a fused matrix that cannot hold it reads as nothing: report its shape.
        let shape = match shape {
            None => self.source.shape(name)?,
            found => found,
        };
        self.check_shape(name, shape, expected)?;
        Ok(data.expect("a tensor whose shape was checked"))
    }

    /// `name` (`[rows, cols]` in the checkpoint) as a parameter of shape `[rows, cols]`, or
    /// `[cols, rows]` when `transposed`, in the storage type: read now, or on first use.
    fn param2(
        &mut self,
        name: &str,
        [rows, cols]: [usize; 2],
        transposed: bool,
    ) -> Result<Param<Tensor<B, 2>>> {
        let dims = if transposed {
            [cols, rows]
        } else {
            [rows, cols]
        };
        let dtype = self.dtype;
        let make = move |data: Vec<f32>, device: &B::Device| -> Tensor<B, 2> {
            let data = if transposed {
                transpose(&data, rows, cols)
            } else {
                data
            };
            Tensor::<B, 2>::from_data(TensorData::new(data, dims), device).cast(dtype)
        };
        if !self.deferred {
            let data = self.fetch(name, &[rows, cols])?;
            return Ok(Param::from_tensor(make(data, &self.device)));
        }
        let shape = self.source.shape(name)?;
        self.check_shape(name, shape, &[rows, cols])?;
        let (source, name) = (self.source.clone(), name.to_string());
        let init = move |device: &B::Device, require_grad: bool| {
            // The shape was checked at load and every stored type converts to f32, so the
            // read cannot fail unless the file changed underneath the map (see `GgufFile`).
            let (_, data) = source
                .tensor(&name)
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("{name}: checked at load, unreadable now"));
            let t = make(data, device);
            if require_grad { t.require_grad() } else { t }
        };
        Ok(Param::uninitialized(
            ParamId::new(),
            init,
            self.device.clone(),
            true,
            burn::tensor::Shape::new(dims),
        ))
    }
}

impl<B: Backend> ParamSource<B> for Loaded<B> {
    fn device(&self) -> B::Device {
        self.device.clone()
    }
    fn matrix(&mut self, name: &str, out: usize, inp: usize) -> Result<Param<Tensor<B, 2>>> {
        self.param2(name, [out, inp], true)
    }
    fn vector(&mut self, name: &str, len: usize) -> Result<Tensor<B, 1>> {
        let data = self.fetch(name, &[len])?;
        Ok(Tensor::from_data(
            TensorData::new(data, [len]),
            &self.device,
        ))
    }
    fn embedding(
        &mut self,
        name: &str,
        vocab: usize,
        hidden: usize,
    ) -> Result<Param<Tensor<B, 2>>> {
        self.param2(name, [vocab, hidden], false)
    }
}

/// Row-major `[rows, cols]` to `[cols, rows]`.
pub(crate) fn transpose<T: Copy + Default>(data: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); data.len()];
    const T: usize = 32;
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    out[c * rows + r] = data[r * cols + c];
                }
            }
        }
    }
    out
}

/// Converts the rows of a GGUF llama Q or K weight (`[heads * head_dim, in]`) from the
/// interleaved-pair RoPE layout (rotation pairs `(2i, 2i+1)`) to the Hugging Face half-split
/// layout (pairs `(i, i + head_dim/2)`), which the model uses.
///
/// llama.cpp's converter maps HF row `h*hd + j*hd/2 + i` to GGUF row `h*hd + 2i + j`; this is the
/// inverse.
pub fn unpermute_rope_rows(data: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    move_rope_rows(data, heads, head_dim, cols, true)
}

/// [`unpermute_rope_rows`] for rows of raw storage (`row_bytes` bytes each, e.g. quantized
/// blocks): the same row order, the bytes untouched.
pub fn unpermute_rope_row_bytes(
    data: &[u8],
    heads: usize,
    head_dim: usize,
    row_bytes: usize,
) -> Vec<u8> {
    move_rope_rows(data, heads, head_dim, row_bytes, true)
}

/// The inverse of [`unpermute_rope_rows`] (HF layout to GGUF layout).
#[cfg(test)]
fn permute_rope_rows(data: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    move_rope_rows(data, heads, head_dim, cols, false)
}

fn move_rope_rows<T: Copy + Default>(
    data: &[T],
    heads: usize,
    head_dim: usize,
    cols: usize,
    to_hf: bool,
) -> Vec<T> {
    let half = head_dim / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let gguf = (h * head_dim + 2 * i + j) * cols;
                let hf = (h * head_dim + j * half + i) * cols;
                let (src, dst) = if to_hf { (gguf, hf) } else { (hf, gguf) };
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    out
}

/// A GGUF file seen through Hugging Face names.
pub(crate) struct GgufSource {
    pub(crate) file: Arc<GgufFile>,
    pub(crate) config: LlamaConfig,
}

/// Where a projection lives inside a fused matrix (Phi-3's `qkv_proj` and `gate_up_proj`): the
/// fused matrix's Hugging Face name and the projection's rows in it.
pub(crate) struct FusedPart {
    pub(crate) fused: String,
    pub(crate) rows: Range<usize>,
}

/// The part of a fused matrix that Hugging Face tensor `hf` is, for a config whose checkpoints
/// fuse projections ([`LlamaConfig::fused_projections`]); `None` otherwise.
pub(crate) fn fused_part(config: &LlamaConfig, hf: &str) -> Option<FusedPart> {
    if !config.fused_projections() {
        return None;
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (i, rest) = rest.split_once('.')?;
    let (q, kv) = (
        config.num_attention_heads * config.head_dim(),
        config.kv_heads() * config.head_dim(),
    );
    let ff = config.intermediate_size;
    let (fused, rows) = match rest {
        "self_attn.q_proj.weight" => ("self_attn.qkv_proj.weight", 0..q),
        "self_attn.k_proj.weight" => ("self_attn.qkv_proj.weight", q..q + kv),
        "self_attn.v_proj.weight" => ("self_attn.qkv_proj.weight", q + kv..q + 2 * kv),
        "mlp.gate_proj.weight" => ("mlp.gate_up_proj.weight", 0..ff),
        "mlp.up_proj.weight" => ("mlp.gate_up_proj.weight", ff..2 * ff),
        _ => return None,
    };
    Some(FusedPart {
        fused: format!("model.layers.{i}.{fused}"),
        rows,
    })
}

/// Rows `rows` of a row-major `[rows, cols]` tensor; `None` when it has fewer rows or another
/// rank.
/// The shape of `part` inside a fused tensor of shape `fused`: its rows, or none when the fused
/// tensor is too short to hold them (the caller's shape check then names the tensor, instead of
/// a later read failing).
pub(crate) fn part_shape(part: &FusedPart, fused: &[usize]) -> Vec<usize> {
    match *fused {
        [n, cols] if n >= part.rows.end => vec![part.rows.len(), cols],
        [_, cols] => vec![0, cols],
        _ => fused.to_vec(),
    }
}

pub(crate) fn take_rows(
    (shape, data): (Vec<usize>, Vec<f32>),
    rows: &Range<usize>,
) -> Option<(Vec<usize>, Vec<f32>)> {
    let [n, cols] = shape[..] else {
        return None;
    };
    (rows.end <= n).then(|| {
        let part = data[rows.start * cols..rows.end * cols].to_vec();
        (vec![rows.len(), cols], part)
    })
}

/// The GGUF name of a Hugging Face llama tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    Some(match hf {
        "model.embed_tokens.weight" => "token_embd.weight".into(),
        "model.norm.weight" => "output_norm.weight".into(),
        "lm_head.weight" => "output.weight".into(),
        _ => {
            let rest = hf.strip_prefix("model.layers.")?;
            let (i, rest) = rest.split_once('.')?;
            let short = match rest {
                "input_layernorm.weight" => "attn_norm.weight",
                "self_attn.q_proj.weight" => "attn_q.weight",
                "self_attn.k_proj.weight" => "attn_k.weight",
                "self_attn.v_proj.weight" => "attn_v.weight",
                "self_attn.o_proj.weight" => "attn_output.weight",
                "self_attn.q_proj.bias" => "attn_q.bias",
                "self_attn.k_proj.bias" => "attn_k.bias",
                "self_attn.v_proj.bias" => "attn_v.bias",
                "self_attn.o_proj.bias" => "attn_output.bias",
                "self_attn.q_norm.weight" => "attn_q_norm.weight",
                "self_attn.qkv_proj.weight" => "attn_qkv.weight",
                "mlp.gate_up_proj.weight" => "ffn_up.weight",
                "self_attn.k_norm.weight" => "attn_k_norm.weight",
                "post_attention_layernorm.weight" => "ffn_norm.weight",
                "pre_feedforward_layernorm.weight" => "ffn_norm.weight",
                "post_feedforward_layernorm.weight" => "post_ffw_norm.weight",
                "mlp.gate_proj.weight" => "ffn_gate.weight",
                "mlp.up_proj.weight" => "ffn_up.weight",
                "mlp.down_proj.weight" => "ffn_down.weight",
                _ => return None,
            };
            format!("blk.{i}.{short}")
        }
    })
}

impl GgufSource {
    /// The heads whose rows GGUF stores in the interleaved-pair RoPE layout, when Hugging Face
    /// matrix `name` with `rows` rows is a Q or K projection of the expected size.
    /// Only llama.cpp's `llama` architecture is stored so: its converter leaves the rows of
    /// architectures with rotate-half RoPE (Qwen 2, Qwen 3) as Hugging Face has them.
    fn rope_heads(&self, name: &str, rows: usize) -> Option<usize> {
        if self.config.model_type != "llama" {
            return None;
        }
        let heads = if name.ends_with("q_proj.weight") {
            self.config.num_attention_heads
        } else if name.ends_with("k_proj.weight") {
            self.config.kv_heads()
        } else {
            return None;
        };
        (rows == heads * self.config.head_dim()).then_some(heads)
    }

    /// The GGUF tensor behind Hugging Face matrix `name` (`[out, in]`) as a host matrix (Q/K
    /// rows moved to the model's RoPE layout): quantized blocks as stored, multiplied as
    /// `products` says (`None`: kept as blocks, for row look-ups), f16 as f16, f32 and bf16 as
    /// f32, or rounded to f16 with `f16` (as [`crate::WeightDtype::F16`] stores them). `None`
    /// for a missing tensor or a shape other than `[out, in]`.
    pub(crate) fn host_matrix(
        &self,
        name: &str,
        out: usize,
        inp: usize,
        products: Option<Products>,
        f16: bool,
    ) -> Result<Option<HostMatrix>> {
        let part = fused_part(&self.config, name);
        let Some(info) = self
            .stored_name(name)
            .and_then(|g| self.file.tensor_info(&g))
        else {
            return Ok(None);
        };
        let rows = part.as_ref().map_or(0..out, |p| p.rows.clone());
        let fused_rows = part.as_ref().map_or(out, |_| info.shape()[0]);
        if rows.len() != out || rows.end > fused_rows || info.shape() != [fused_rows, inp] {
            return Ok(None);
        }
        let Some(row_bytes) = info.dtype.bytes_for(inp) else {
            return Ok(None);
        };
        // A fused matrix's rows are whole blocks too: a part is a range of its bytes.
        let stored = &self.file.tensor_bytes(info)[rows.start * row_bytes..rows.end * row_bytes];
        let moved;
        let bytes = match self.rope_heads(name, out) {
            Some(heads) => {
                moved = unpermute_rope_row_bytes(stored, heads, self.config.head_dim(), row_bytes);
                &moved[..]
            }
            None => stored,
        };
        let m = match info.dtype {
            GgmlType::F16 => HostMatrix::from_f16(
                out,
                inp,
                bytes
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            GgmlType::F32 | GgmlType::Bf16 => {
                let mut v = vec![0f32; out * inp];
                crate::model::quant::dequantize(info.dtype, bytes, &mut v)?;
                HostMatrix::from_f32_as(out, inp, v, f16)
            }
            ty => HostMatrix::from_block_slice(ty, out, inp, bytes, products)?,
        };
        self.file.release_tensor(info);
        Ok(Some(m))
    }
}

impl TensorSource for GgufSource {
    fn stored_names(&self) -> Vec<String> {
        self.file
            .header
            .tensors
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }
    fn stored_name(&self, hf: &str) -> Option<String> {
        if let Some(part) = fused_part(&self.config, hf) {
            return gguf_name(&part.fused);
        }
        // Gemma 2 / 3's `post_attention_layernorm` follows attention (llama's precedes the MLP).
        if self.config.sandwich_norms()
            && let Some(block) = hf.strip_suffix(".post_attention_layernorm.weight")
        {
            let i = block.strip_prefix("model.layers.")?;
            return Some(format!("blk.{i}.post_attention_norm.weight"));
        }
        gguf_name(hf)
    }
    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        let shape = self
            .stored_name(name)
            .and_then(|g| self.file.tensor_info(&g))
            .map(|i| i.shape());
        Ok(match fused_part(&self.config, name) {
            Some(part) => shape.map(|s| part_shape(&part, &s)),
            None => shape,
        })
    }
    fn tensor(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        if let Some(part) = fused_part(&self.config, name) {
            let Some(g) = gguf_name(&part.fused) else {
                return Ok(None);
            };
            return Ok(self
                .file
                .dequantize(&g)?
                .and_then(|t| take_rows(t, &part.rows)));
        }
        let Some(g) = self.stored_name(name) else {
            return Ok(None);
        };
        let Some((shape, data)) = self.file.dequantize(&g)? else {
            return Ok(None);
        };
        let heads = match shape[..] {
            [rows, _] => self.rope_heads(name, rows),
            _ => None,
        };
        match heads {
            Some(heads) => {
                let data = unpermute_rope_rows(&data, heads, self.config.head_dim(), shape[1]);
                Ok(Some((shape, data)))
            }
            None => Ok(Some((shape, data))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_inverts_unpermute() {
        let (heads, hd, cols) = (3, 8, 5);
        let data: Vec<f32> = (0..heads * hd * cols).map(|x| x as f32).collect();
        let there = unpermute_rope_rows(&data, heads, hd, cols);
        assert_ne!(there, data);
        assert_eq!(permute_rope_rows(&there, heads, hd, cols), data);
    }

    #[test]
    fn unpermute_moves_pairs_to_halves() {
        // One head, head_dim 4, one column: GGUF rows [a0, b0, a1, b1] (pairs interleaved)
        // become HF rows [a0, a1, b0, b1].
        let out = unpermute_rope_rows(&[10.0, 20.0, 11.0, 21.0], 1, 4, 1);
        assert_eq!(out, vec![10.0, 11.0, 20.0, 21.0]);
    }

    #[test]
    fn transpose_small() {
        assert_eq!(
            transpose(&[1., 2., 3., 4., 5., 6.], 2, 3),
            vec![1., 4., 2., 5., 3., 6.]
        );
    }
}
