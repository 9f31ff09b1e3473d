//! The llama-family decoder: RMSNorm, RoPE by position id, grouped-query attention over a
//! [`KvCache`], SwiGLU, tied or separate LM head. Reads top to bottom like the paper.

use crate::error::{Error, Result};
use crate::model::cache::{KvCache, KvDtype};
use crate::model::config::{LlamaConfig, RopeScaling};
use crate::model::engine;
use crate::model::family_ops::{gate_act, softcap, window_mask};
use crate::model::host::{
    HostBlock, HostConsts, HostEmbed, HostMatrix, HostWeights, LayerExtra, next_weights_id,
};
use crate::model::lora::{Lora, LoraConfig, LoraTarget};
use crate::model::rope::{Rope, inv_frequencies};
use crate::model::weights::{ParamSource, RandomInit, transpose};
use crate::model::{CausalLm, ForwardInput, ModelInfo};
use crate::rng::Rng;
use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::FloatDType;
use burn::tensor::activation::softmax;
use std::sync::Arc;

/// Attention with grouped key/value heads.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection, `[hidden, heads * head_dim]`.
    pub q_proj: Linear<B>,
    /// Key projection, `[hidden, kv_heads * head_dim]`.
    pub k_proj: Linear<B>,
    /// Value projection, `[hidden, kv_heads * head_dim]`.
    pub v_proj: Linear<B>,
    /// Output projection, `[heads * head_dim, hidden]`.
    pub o_proj: Linear<B>,
    /// RMSNorm of each query head before RoPE (Qwen 3, Gemma 3), over `head_dim` values.
    pub q_norm: Option<RmsNorm<B>>,
    /// RMSNorm of each key head before RoPE (Qwen 3, Gemma 3).
    pub k_norm: Option<RmsNorm<B>>,
    /// Adapters of q, k, v, o in that order (empty without LoRA).
    pub(crate) lora: Vec<Option<Lora<B>>>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

/// SwiGLU feed-forward.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection.
    pub gate_proj: Linear<B>,
    /// Up projection.
    pub up_proj: Linear<B>,
    /// Down projection.
    pub down_proj: Linear<B>,
    /// Adapters of gate, up, down in that order (empty without LoRA).
    pub(crate) lora: Vec<Option<Lora<B>>>,
}

/// One transformer block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Attention.
    pub self_attn: Attention<B>,
    /// Norm before the MLP (Gemma 2 / 3: `pre_feedforward_layernorm`).
    pub post_attention_layernorm: RmsNorm<B>,
    /// Feed-forward.
    pub mlp: Mlp<B>,
    /// Gemma 2 / 3: norm of the attention's output before the residual add (their
    /// `post_attention_layernorm`).
    pub attn_out_norm: Option<RmsNorm<B>>,
    /// Gemma 2 / 3: norm of the MLP's output before the residual add.
    pub mlp_out_norm: Option<RmsNorm<B>>,
}

/// Where [`Llama::enable_host_kernels_from`] takes the host engine's matrices from instead of
/// converting the burn tensors (a checkpoint's own blocks). Names are Hugging Face names
/// (`model.layers.3.mlp.up_proj.weight`, `lm_head.weight`, or `model.embed_tokens.weight` for a
/// tied head); a returned matrix is `[out, in]` in the model's row order.
pub(crate) trait NativeMatrices: Sync {
    /// Matrix `name` for products, or `None` to convert the burn tensor.
    ///
    /// # Errors
    /// A malformed checkpoint.
    fn product(&self, name: &str, out: usize, inp: usize) -> Result<Option<HostMatrix>>;
    /// The token embedding `[vocab, hidden]` for row look-ups, when the head does not hold it;
    /// `None` to look rows up in the burn tensor.
    ///
    /// # Errors
    /// A malformed checkpoint.
    fn lookup(&self, vocab: usize, hidden: usize) -> Result<Option<HostMatrix>>;
    /// Whether burn's embedding tensor is stored as f16 (looked-up rows are rounded alike).
    fn embedding_f16(&self) -> bool;
}

/// Every host matrix converted from the burn tensors.
struct ConvertTensors;

impl NativeMatrices for ConvertTensors {
    fn product(&self, _: &str, _: usize, _: usize) -> Result<Option<HostMatrix>> {
        Ok(None)
    }
    fn lookup(&self, _: usize, _: usize) -> Result<Option<HostMatrix>> {
        Ok(None)
    }
    fn embedding_f16(&self) -> bool {
        false
    }
}

/// A llama-family causal LM.
///
/// Loaded from a GGUF file onto a CPU backend ([`crate::load`]), its matrices live in the host
/// engine only, and the burn tensors of the public fields below are lazy: reading one (for
/// example `model.layers[0].mlp.up_proj.weight.val()`) builds it from the file then.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    /// Token embedding, `[vocab, hidden]`.
    pub embed_tokens: Embedding<B>,
    /// Transformer blocks.
    pub layers: Vec<Block<B>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
    /// Separate LM head `[hidden, vocab]`; `None` when tied to `embed_tokens`.
    pub lm_head: Option<Linear<B>>,
    rope: Rope<B>,
    /// Gemma 3: the tables of the sliding layers (their own RoPE base).
    rope_local: Option<Rope<B>>,
    #[module(skip)]
    config: LlamaConfig,
    /// Host copies of the matrices for few-row products on CPU backends.
    #[module(skip)]
    host: Option<Arc<HostWeights>>,
    /// How the host engine's caches hold keys and values.
    #[module(skip)]
    kv_dtype: KvDtype,
}

fn linear_param<B: Backend>(weight: Param<Tensor<B, 2>>) -> Linear<B> {
    Linear { weight, bias: None }
}

/// `linear.forward(x)` computed in the weight's storage type (f16 weights stay f16 in memory and
/// in the product); the result comes back in `x`'s type.
fn project<B: Backend>(
    linear: &Linear<B>,
    x: Tensor<B, 3>,
    host: Option<&HostMatrix>,
) -> Tensor<B, 3> {
    let y = product(linear, x, host);
    match &linear.bias {
        Some(bias) => {
            let bias = bias.val().cast(y.dtype());
            let o = bias.dims()[0];
            y + bias.reshape([1, 1, o])
        }
        None => y,
    }
}

/// [`project`] without the bias.
fn product<B: Backend>(
    linear: &Linear<B>,
    x: Tensor<B, 3>,
    host: Option<&HostMatrix>,
) -> Tensor<B, 3> {
    if let Some(h) = host {
        return host_project(h, x);
    }
    let [b, t, d] = x.dims();
    let w = linear.weight.val();
    let (xd, wd) = (x.dtype(), w.dtype());
    let o = w.dims()[1];
    // 2-D product: the weight may be a transposed view (`[out, in]` storage), which the
    // backends read strided in 2-D but would copy when broadcast in 3-D.
    let x = x.reshape([b * t, d]);
    let y = if xd == wd {
        x.matmul(w)
    } else {
        x.cast(wd).matmul(w).cast(xd)
    };
    y.reshape([b, t, o])
}

/// [`project`] plus the adapter's update, if the projection has one (no host copy then: adapted
/// models have their host kernels off).
fn project_adapted<B: Backend>(
    linear: &Linear<B>,
    lora: &[Option<Lora<B>>],
    which: usize,
    x: Tensor<B, 3>,
    host: Option<&HostMatrix>,
) -> Tensor<B, 3> {
    match lora.get(which).and_then(Option::as_ref) {
        Some(l) => project(linear, x.clone(), None) + l.delta(x),
        None => project(linear, x, host),
    }
}

/// `W + s A B` in `W`'s storage type, outside any autodiff graph.
fn merged<B: Backend>(linear: &Linear<B>, lora: &Lora<B>) -> Linear<B> {
    let w = linear.weight.val();
    let dtype = w.dtype();
    let m = (w.cast(FloatDType::F32) + lora.product()).cast(dtype);
    Linear {
        weight: Param::from_tensor(m.detach()),
        bias: linear.bias.clone(),
    }
}

/// The projections of [`Attention`] and [`Mlp`] in the order of their `lora` vectors.
const ATTENTION: [LoraTarget; 4] = [LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O];
const MLP: [LoraTarget; 3] = [LoraTarget::Gate, LoraTarget::Up, LoraTarget::Down];

/// Adapters for the `wanted` ones of the projections `kinds` names (in order), each from
/// `make(target, [in, out])`.
fn adapters_for<B: Backend>(
    kinds: &[LoraTarget],
    linears: &[&Linear<B>],
    wanted: &[LoraTarget],
    make: &mut dyn FnMut(LoraTarget, [usize; 2]) -> Result<Lora<B>>,
) -> Result<Vec<Option<Lora<B>>>> {
    kinds
        .iter()
        .zip(linears)
        .map(|(&t, lin)| {
            wanted
                .contains(&t)
                .then(|| make(t, lin.weight.dims()))
                .transpose()
        })
        .collect()
}

/// Merges each adapter of `lora` into the projection beside it.
fn merge_into<'a, B: Backend>(
    linears: impl IntoIterator<Item = &'a mut Linear<B>>,
    lora: Vec<Option<Lora<B>>>,
) {
    for (lin, l) in linears.into_iter().zip(lora) {
        if let Some(l) = l {
            *lin = merged(lin, &l);
        }
    }
}

/// `x @ W^T` with the host copy of `W` (`x` is f32 activations).
fn host_project<B: Backend>(w: &HostMatrix, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, t, _] = x.dims();
    let device = x.device();
    let data = x.into_data().convert::<f32>();
    let xs = data.as_slice::<f32>().expect("f32 activations");
    let y = w.matmul(xs, b * t);
    Tensor::from_data(TensorData::new(y, [b, t, w.out_features()]), &device)
}

/// A host copy of a weight: `in_out` for burn's `[in, out]` linear layout, not for the
/// `[vocab, hidden]` embedding; f16 stays f16, anything else becomes f32.
fn host_matrix<B: Backend>(w: Tensor<B, 2>, in_out: bool) -> HostMatrix {
    let [r, c] = w.dims();
    let (out, inp) = if in_out { (c, r) } else { (r, c) };
    let data = w.into_data();
    if data.dtype == burn::tensor::DType::F16 {
        let v = data.to_vec::<half::f16>().expect("f16 weights");
        let v = if in_out { transpose(&v, r, c) } else { v };
        HostMatrix::from_f16(out, inp, v)
    } else {
        let v = data.convert::<f32>().to_vec::<f32>().expect("f32 weights");
        let v = if in_out { transpose(&v, r, c) } else { v };
        HostMatrix::from_f32(out, inp, v)
    }
}

fn norm<B: Backend>(gamma: Tensor<B, 1>, epsilon: f64) -> RmsNorm<B> {
    RmsNorm {
        gamma: Param::from_tensor(gamma),
        epsilon,
    }
}

impl<B: Backend> Block<B> {
    /// The block whose Hugging Face names start with `p` (`model.layers.3.`).
    fn build(config: &LlamaConfig, p: &str, params: &mut dyn ParamSource<B>) -> Result<Self> {
        let (d, ff, eps) = (
            config.hidden_size,
            config.intermediate_size,
            config.rms_norm_eps,
        );
        let mut norm_of = |name: &str| -> Result<RmsNorm<B>> {
            Ok(norm(params.vector(&format!("{p}{name}.weight"), d)?, eps))
        };
        let sandwich = config.sandwich_norms();
        let input_layernorm = norm_of("input_layernorm")?;
        // Gemma 2 / 3 call the norm after attention `post_attention_layernorm` and the one
        // before the MLP `pre_feedforward_layernorm`; llama's `post_attention_layernorm` is
        // the one before the MLP.
        let (attn_out_norm, pre_mlp, mlp_out_norm) = match sandwich {
            true => (
                Some(norm_of("post_attention_layernorm")?),
                norm_of("pre_feedforward_layernorm")?,
                Some(norm_of("post_feedforward_layernorm")?),
            ),
            false => (None, norm_of("post_attention_layernorm")?, None),
        };
        let mut proj = |name: &str, out: usize, inp: usize| -> Result<Linear<B>> {
            Ok(linear_param(params.matrix(
                &format!("{p}mlp.{name}.weight"),
                out,
                inp,
            )?))
        };
        let mlp = Mlp {
            gate_proj: proj("gate_proj", ff, d)?,
            up_proj: proj("up_proj", ff, d)?,
            down_proj: proj("down_proj", d, ff)?,
            lora: Vec::new(),
        };
        Ok(Self {
            input_layernorm,
            self_attn: Attention::build(config, p, params)?,
            post_attention_layernorm: pre_mlp,
            mlp,
            attn_out_norm,
            mlp_out_norm,
        })
    }
}

impl<B: Backend> Attention<B> {
    /// The attention of the block whose Hugging Face names start with `p`
    /// (`model.layers.3.`), with the biases and norms `config`'s family has.
    fn build(config: &LlamaConfig, p: &str, params: &mut dyn ParamSource<B>) -> Result<Self> {
        let (d, hd) = (config.hidden_size, config.head_dim());
        let (h, kv) = (config.num_attention_heads, config.kv_heads());
        let mut proj = |name: &str, out: usize, inp: usize, bias: bool| -> Result<Linear<B>> {
            let weight = params.matrix(&format!("{p}self_attn.{name}.weight"), out, inp)?;
            let bias = match bias {
                true => Some(Param::from_tensor(params.bias(
                    &format!("{p}self_attn.{name}.bias"),
                    out,
                    inp,
                )?)),
                false => None,
            };
            Ok(Linear { weight, bias })
        };
        let qkv_bias = config.qkv_bias();
        let q_proj = proj("q_proj", h * hd, d, qkv_bias)?;
        let k_proj = proj("k_proj", kv * hd, d, qkv_bias)?;
        let v_proj = proj("v_proj", kv * hd, d, qkv_bias)?;
        let o_proj = proj("o_proj", d, h * hd, config.o_bias())?;
        let mut head_norm = |name: &str| -> Result<Option<RmsNorm<B>>> {
            config
                .qk_norm()
                .then(|| {
                    let gamma = params.vector(&format!("{p}self_attn.{name}.weight"), hd)?;
                    Ok(norm(gamma, config.rms_norm_eps))
                })
                .transpose()
        };
        Ok(Self {
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            q_norm: head_norm("q_norm")?,
            k_norm: head_norm("k_norm")?,
            lora: Vec::new(),
            n_heads: h,
            n_kv_heads: kv,
            head_dim: hd,
        })
    }
}

impl<B: Backend> Llama<B> {
    /// A randomly initialised model (for training from scratch and tests).
    ///
    /// # Panics
    /// When `config` is inconsistent; call [`LlamaConfig::validate`] first for user input.
    pub fn init(config: &LlamaConfig, device: &B::Device) -> Self {
        Self::build(config, None, &mut RandomInit::new(device)).expect("valid llama config")
    }

    /// [`Llama::init`] from the backend's generator seeded with `seed`. The generator is
    /// process-wide and tests run in parallel: seeding and drawing under one lock gives every
    /// test the weights its seed names, whatever runs beside it.
    #[cfg(test)]
    pub(crate) fn init_seeded(config: &LlamaConfig, seed: u64, device: &B::Device) -> Self {
        static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(device, seed);
        Self::init(config, device)
    }

    /// Builds the model, taking every parameter from `params` by its Hugging Face name.
    pub(crate) fn build(
        config: &LlamaConfig,
        rope_factors: Option<&[f32]>,
        params: &mut dyn ParamSource<B>,
    ) -> Result<Self> {
        config.validate()?;
        let device = params.device();
        let (d, eps) = (config.hidden_size, config.rms_norm_eps);
        // The layer count comes from the file: no allocation by it before the layers exist.
        let mut layers = Vec::new();
        for i in 0..config.num_hidden_layers {
            layers.push(Block::build(config, &format!("model.layers.{i}."), params)?);
        }
        let embed_tokens = Embedding {
            weight: params.embedding("model.embed_tokens.weight", config.vocab_size, d)?,
        };
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(linear_param(params.matrix(
                "lm_head.weight",
                config.vocab_size,
                d,
            )?))
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm: norm(params.vector("model.norm.weight", d)?, eps),
            lm_head,
            rope: Rope::new(
                &inv_frequencies(config, rope_factors),
                config.max_position_embeddings,
                config
                    .rope_scaling
                    .as_ref()
                    .map_or(1.0, RopeScaling::attention_scaling),
                &device,
            ),
            rope_local: config.rope_local_base_freq.map(|theta| {
                let local = LlamaConfig {
                    rope_theta: theta,
                    rope_scaling: None,
                    ..config.clone()
                };
                Rope::new(
                    &inv_frequencies(&local, None),
                    config.max_position_embeddings,
                    1.0,
                    &device,
                )
            }),
            config: config.clone(),
            host: None,
            kv_dtype: KvDtype::F32,
        })
    }

    /// Has the host engine's caches ([`CausalLm::new_cache`] with host kernels on) hold keys
    /// and values as `dtype` says (see [`KvDtype`]); [`crate::LoadOptions::kv_dtype`] sets it
    /// at load time. Caches made before keep theirs.
    pub fn set_kv_dtype(&mut self, dtype: KvDtype) {
        self.kv_dtype = dtype;
    }

    /// Keeps host-memory copies of every matrix and multiplies inputs of at most `max_rows`
    /// tokens with them (the host engine): on CPU backends this makes a forward pass of a
    /// few tokens cost little more than one of a single token, which tree decoding depends on.
    /// It also turns on the host engine: [`CausalLm::new_cache`] then returns a host cache
    /// ([`KvCache::new_host`]) and forwards with it run entirely in host memory (causal inputs
    /// longer than `max_rows` in chunks of `max_rows`), with each token's result independent of
    /// the rest of the call. Costs a second copy of the matrices in memory. Do not use it for
    /// training (the host path has no gradients). The copies are converted from the burn
    /// tensors (f16 stays f16, anything else becomes f32); the loaders instead keep a GGUF's
    /// quantized blocks and build no dense tensors at all ([`crate::HostKernels::Native`]).
    pub fn enable_host_kernels(&mut self, max_rows: usize) {
        self.enable_host_kernels_from(max_rows, &ConvertTensors)
            .expect("conversion from tensors cannot fail");
    }

    /// [`Llama::enable_host_kernels`], taking each matrix from `native` where it has one (for
    /// example a GGUF tensor's own Q4_1 blocks, 4x smaller than f16), else converting the burn
    /// tensor. Matrices taken from `native` never read their burn tensors, so lazily loaded
    /// weights stay unbuilt. The native matrices are built in parallel.
    ///
    /// # Errors
    /// What `native` returns, and [`Error::ShapeMismatch`] for a matrix of the wrong shape.
    pub(crate) fn enable_host_kernels_from(
        &mut self,
        max_rows: usize,
        native: &dyn NativeMatrices,
    ) -> Result<()> {
        use rayon::prelude::*;
        // (name, weight, stored [in, out] as burn's linears are)
        let mut jobs: Vec<(String, &Param<Tensor<B, 2>>, bool)> = Vec::new();
        for (i, b) in self.layers.iter().enumerate() {
            let p = |s: &str| format!("model.layers.{i}.{s}.weight");
            let a = &b.self_attn;
            let m = &b.mlp;
            jobs.extend([
                (p("self_attn.q_proj"), &a.q_proj.weight, true),
                (p("self_attn.k_proj"), &a.k_proj.weight, true),
                (p("self_attn.v_proj"), &a.v_proj.weight, true),
                (p("self_attn.o_proj"), &a.o_proj.weight, true),
                (p("mlp.gate_proj"), &m.gate_proj.weight, true),
                (p("mlp.up_proj"), &m.up_proj.weight, true),
                (p("mlp.down_proj"), &m.down_proj.weight, true),
            ]);
        }
        jobs.push(match &self.lm_head {
            Some(l) => ("lm_head.weight".into(), &l.weight, true),
            None => (
                "model.embed_tokens.weight".into(),
                &self.embed_tokens.weight,
                false,
            ),
        });
        let out_in = |w: &Param<Tensor<B, 2>>, transposed: bool| {
            let [r, c] = w.lazy_shape().dims();
            if transposed { (c, r) } else { (r, c) }
        };
        let shapes: Vec<(usize, usize)> = jobs.iter().map(|(_, w, t)| out_in(w, *t)).collect();
        let natives: Vec<Option<HostMatrix>> = jobs
            .par_iter()
            .zip(&shapes)
            .map(|((name, _, _), &(out, inp))| native.product(name, out, inp))
            .collect::<Result<_>>()?;
        let head_native = natives.last().is_some_and(Option::is_some);
        let mut mats = Vec::with_capacity(jobs.len());
        for (((name, w, transposed), (out, inp)), n) in jobs.into_iter().zip(shapes).zip(natives) {
            mats.push(match n {
                Some(h) if h.out_features() == out && h.in_features() == inp => h,
                Some(h) => {
                    return Err(Error::ShapeMismatch {
                        tensor: name,
                        expected: vec![out, inp],
                        found: vec![h.out_features(), h.in_features()],
                    });
                }
                None => host_matrix(w.val(), transposed),
            });
        }
        let head = mats.pop().expect("the head is the last matrix");
        let mut mats = mats.into_iter();
        let mut next = || mats.next().expect("seven matrices per block");
        let blocks = (0..self.layers.len())
            .map(|_| HostBlock {
                q: next(),
                k: next(),
                v: next(),
                o: next(),
                gate: next(),
                up: next(),
                down: next(),
            })
            .collect();
        let embed = if self.lm_head.is_none() && head_native {
            HostEmbed::Head
        } else {
            let [vocab, hidden] = self.embed_tokens.weight.lazy_shape().dims();
            match native.lookup(vocab, hidden)? {
                Some(m) => HostEmbed::Own(m),
                None => HostEmbed::Tensor,
            }
        };
        self.host = Some(Arc::new(HostWeights {
            blocks,
            head,
            max_rows,
            engine: self.host_consts(),
            q8: false,
            embed,
            embed_f16: native.embedding_f16(),
            id: next_weights_id(),
        }));
        Ok(())
    }

    /// Norm gains, RoPE tables and shapes for the host engine.
    fn host_consts(&self) -> HostConsts {
        let values = |t: Tensor<B, 1>| -> Vec<f32> {
            t.into_data()
                .convert::<f32>()
                .into_vec()
                .expect("f32 vector")
        };
        let gamma = |n: &RmsNorm<B>| values(n.gamma.val());
        let bias = |l: &Linear<B>| l.bias.as_ref().map(|b| values(b.val()));
        let c = &self.config;
        HostConsts {
            extra: self
                .layers
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let a = &b.self_attn;
                    LayerExtra {
                        attn_out_norm: b.attn_out_norm.as_ref().map(gamma),
                        mlp_out_norm: b.mlp_out_norm.as_ref().map(gamma),
                        window: c.layer_window(i),
                        q_bias: bias(&a.q_proj),
                        k_bias: bias(&a.k_proj),
                        v_bias: bias(&a.v_proj),
                        o_bias: bias(&a.o_proj),
                        q_norm: a.q_norm.as_ref().map(gamma),
                        k_norm: a.k_norm.as_ref().map(gamma),
                    }
                })
                .collect(),
            attn_norm: self
                .layers
                .iter()
                .map(|b| gamma(&b.input_layernorm))
                .collect(),
            mlp_norm: self
                .layers
                .iter()
                .map(|b| gamma(&b.post_attention_layernorm))
                .collect(),
            final_norm: gamma(&self.norm),
            embed_scale: c.gemma().then(|| (c.hidden_size as f32).sqrt()),
            attn_scale: c.attn_scale() as f32,
            softcap: c.attn_logit_softcapping.map(|x| x as f32),
            gelu: c.gemma(),
            local_rope: self.rope_local.as_ref().map(Rope::host),
            eps: self.norm.epsilon,
            rope: self.rope.host(),
            heads: c.num_attention_heads,
            kv_heads: c.kv_heads(),
            head_dim: c.head_dim(),
            hidden: c.hidden_size,
        }
    }

    /// The model with fresh LoRA adapters on `config.targets` of every block (drawn from a
    /// generator seeded by `seed`; each starts as a zero update) and every other parameter
    /// frozen: only the adapters get gradients. Host kernels are turned off.
    pub(crate) fn with_lora(self, config: &LoraConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let device = self.device();
        self.with_lora_factors(config, |_, _, [i, o]| {
            Ok(Lora::new(i, o, config, &mut rng, &device))
        })
        .expect("fresh adapters cannot fail")
    }

    /// [`Llama::with_lora`] with each adapter from `make(layer, target, [in, out])`.
    pub(crate) fn with_lora_factors(
        mut self,
        config: &LoraConfig,
        mut make: impl FnMut(usize, LoraTarget, [usize; 2]) -> Result<Lora<B>>,
    ) -> Result<Self> {
        self.host = None;
        let mut model = self.no_grad();
        for (i, block) in model.layers.iter_mut().enumerate() {
            let mut make = |t, dims| make(i, t, dims);
            let (a, m) = (&mut block.self_attn, &mut block.mlp);
            a.lora = adapters_for(&ATTENTION, &a.projections(), &config.targets, &mut make)?;
            m.lora = adapters_for(&MLP, &m.projections(), &config.targets, &mut make)?;
        }
        Ok(model)
    }

    /// Every adapter with its layer and target, in block order.
    pub(crate) fn adapters(&self) -> Vec<(usize, (LoraTarget, &Lora<B>))> {
        let mut out = Vec::new();
        for (i, b) in self.layers.iter().enumerate() {
            let named = ATTENTION
                .iter()
                .zip(&b.self_attn.lora)
                .chain(MLP.iter().zip(&b.mlp.lora));
            out.extend(named.filter_map(|(&t, l)| Some((i, (t, l.as_ref()?)))));
        }
        out
    }

    /// Whether any block carries LoRA adapters.
    pub(crate) fn has_lora(&self) -> bool {
        self.layers
            .iter()
            .any(|b| !b.self_attn.lora.is_empty() || !b.mlp.lora.is_empty())
    }

    /// The model with every adapter merged into its weight (`W + s A B`) and removed: a plain
    /// model again, whose logits equal the adapted model's up to float rounding.
    pub(crate) fn merge_lora(mut self) -> Self {
        for block in &mut self.layers {
            let lora = std::mem::take(&mut block.self_attn.lora);
            merge_into(block.self_attn.projections_mut(), lora);
            let lora = std::mem::take(&mut block.mlp.lora);
            merge_into(block.mlp.projections_mut(), lora);
        }
        self
    }

    /// Quantizes the host engine's dense matrices (the f32 or f16 copies of a Hugging Face
    /// checkpoint or of a model with a merged LoRA adapter) to Q8_0 blocks, 8.5 bits per weight,
    /// multiplied by the integer products of [`crate::HostKernels::Native`]: several times less
    /// memory to stream per token than f32 copies. Matrices already held as a checkpoint's own
    /// blocks are kept; nothing happens while the host engine is off. This is what
    /// [`crate::HostKernels::Q8`] does at load; an adapter applied afterwards
    /// ([`Llama::apply_lora_adapter`]) is quantized with the weights it merges into.
    ///
    /// ```no_run
    /// # fn main() -> msn::Result<()> {
    /// use burn::backend::Flex;
    /// let mut m = msn::load::<Flex>("smollm2", &Default::default())?.model;
    /// m = m.apply_lora_adapter(std::path::Path::new("my_adapter"))?; // dense f32 copies
    /// m.quantize_host_kernels(); // Q8_0 blocks, integer products
    /// assert_eq!(m.host_storage().as_deref(), Some("Q8_0 x Q16"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn quantize_host_kernels(&mut self) {
        let Some(host) = self.host.take() else {
            return;
        };
        let mut h = Arc::try_unwrap(host).unwrap_or_else(|shared| (*shared).clone());
        h.quantize_q8_0();
        self.host = Some(Arc::new(h));
    }

    /// Drops the host copies ([`Llama::enable_host_kernels`]); every product runs on the backend.
    pub fn disable_host_kernels(&mut self) {
        self.host = None;
    }

    /// How the host engine stores the matrices (`"Q4_1"`, `"f16"`, `"f32"`, ... of the first
    /// layer's query projection), or `None` when it is off.
    pub fn host_storage(&self) -> Option<String> {
        self.host.as_deref().map(|h| h.blocks[0].q.storage())
    }

    /// The host engine's weights, when it is on.
    pub(crate) fn host_weights(&self) -> Option<&HostWeights> {
        self.host.as_deref()
    }

    /// The hyper-parameters the model was built with.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Hidden states after the final norm, `[batch, new, hidden]`.
    pub fn hidden(&self, input: ForwardInput<B>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let ForwardInput {
            tokens,
            positions,
            mask,
        } = input;
        let [b, t] = tokens.dims();
        if let Some(w) = self.host.as_deref()
            && cache.is_host()
        {
            return self.hidden_host(w, tokens, positions, mask, cache);
        }
        let past = cache.len();
        let (global, sliding) = self.layer_shared(b, t, past, positions, mask);
        let host = self.host.as_deref().filter(|h| b * t <= h.max_rows);
        let mut x = self.embed_tokens.forward(tokens).cast(FloatDType::F32);
        if self.config.gemma() {
            x = x * (self.config.hidden_size as f32).sqrt();
        }
        let gelu = self.config.gemma();
        for (i, block) in self.layers.iter().enumerate() {
            let hb = host.map(|h| &h.blocks[i]);
            let (rope, shared) = match (self.config.layer_window(i), &sliding) {
                (Some(_), Some(s)) => (self.rope_local.as_ref().unwrap_or(&self.rope), s),
                _ => (&self.rope, &global),
            };
            let h = block.input_layernorm.forward(x.clone());
            let a = block.self_attn.forward(h, rope, shared, cache, i, hb);
            x = x + out_norm(&block.attn_out_norm, a);
            let h = block.post_attention_layernorm.forward(x.clone());
            x = x + out_norm(&block.mlp_out_norm, block.mlp.forward(h, hb, gelu));
        }
        cache.advance(t);
        self.norm.forward(x)
    }

    /// What the layers of one forward share: for the global layers, and for the sliding ones
    /// where the model has them (their own RoPE tables and the window in the mask).
    fn layer_shared(
        &self,
        b: usize,
        t: usize,
        past: usize,
        positions: Tensor<B, 2, Int>,
        mask: Option<Tensor<B, 3, Bool>>,
    ) -> (LayerShared<B>, Option<LayerShared<B>>) {
        let device = positions.device();
        let c = &self.config;
        let (h, kv) = (c.num_attention_heads, c.kv_heads());
        let window = (0..c.num_hidden_layers).find_map(|l| c.layer_window(l));
        let mask = mask.or_else(|| (t > 1).then(|| causal_mask::<B>(b, t, past, &device)));
        let shared = |rope: &Rope<B>, mask: Option<Tensor<B, 3, Bool>>| LayerShared {
            rope_q: rope.angles(positions.clone(), h),
            rope_k: rope.angles(positions.clone(), kv),
            bias: mask.map(|m| attention_bias(m, kv, h / kv)),
            scale: c.attn_scale(),
            softcap: c.attn_logit_softcapping,
        };
        let sliding = window.map(|w| {
            let pos: Vec<usize> = positions
                .clone()
                .into_data()
                .iter::<i64>()
                .map(|p| p.max(0) as usize)
                .collect();
            let rows: Vec<Vec<usize>> = pos.chunks(t.max(1)).map(<[usize]>::to_vec).collect();
            let mask = mask
                .clone()
                .unwrap_or_else(|| causal_mask::<B>(b, t, past, &device));
            let m = window_mask(mask, &rows, past, w, &device);
            shared(self.rope_local.as_ref().unwrap_or(&self.rope), Some(m))
        });
        (shared(&self.rope, mask), sliding)
    }

    /// [`Llama::hidden`] on the host engine (host kernels and a host cache): one transfer in
    /// (embeddings, positions, mask), one out. Causal inputs longer than `max_rows` run in
    /// chunks of `max_rows` tokens.
    fn hidden_host(
        &self,
        w: &HostWeights,
        tokens: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        mask: Option<Tensor<B, 3, Bool>>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let [b, t] = tokens.dims();
        let d = w.engine.hidden;
        let device = tokens.device();
        let ids: Vec<usize> = tokens
            .to_data()
            .iter::<i64>()
            .map(|id| usize::try_from(id).unwrap_or(usize::MAX))
            .collect();
        let x: Vec<f32> = match w.embed(&ids) {
            Some(x) => x,
            None => self
                .embed_tokens
                .forward(tokens)
                .cast(FloatDType::F32)
                .into_data()
                .convert::<f32>()
                .into_vec()
                .expect("f32 embeddings"),
        };
        let pos: Vec<usize> = positions
            .into_data()
            .iter::<i64>()
            .map(|p| p.max(0) as usize)
            .collect();
        let mask: Option<Vec<bool>> = mask.map(|m| m.into_data().iter::<bool>().collect());
        let chunk = if mask.is_some() {
            t.max(1)
        } else {
            w.max_rows.max(1)
        };
        let mut run = |x: Vec<f32>, positions: &[usize], n: usize| -> Vec<f32> {
            let (past, capacity) = (cache.len(), cache.capacity());
            let kv = cache.host_mut().expect("host cache");
            let step = engine::Step {
                x,
                positions,
                mask: mask.as_deref(),
                batch: b,
                t: n,
            };
            let h = engine::forward(w, step, kv, past, capacity);
            cache.advance(n);
            h
        };
        if t <= chunk {
            // One pass (every decoding step): no gathering or scattering of rows.
            let h = run(x, &pos, t);
            return Tensor::from_data(TensorData::new(h, [b, t, d]), &device);
        }
        let mut out = vec![0f32; b * t * d];
        for c0 in (0..t).step_by(chunk) {
            let c1 = (c0 + chunk).min(t);
            let n = c1 - c0;
            let rows = |r: usize| (r * t + c0)..(r * t + c1);
            let xs: Vec<f32> = (0..b)
                .flat_map(|r| x[rows(r).start * d..rows(r).end * d].to_vec())
                .collect();
            let ps: Vec<usize> = (0..b).flat_map(|r| pos[rows(r)].to_vec()).collect();
            let h = run(xs, &ps, n);
            for r in 0..b {
                out[rows(r).start * d..rows(r).end * d]
                    .copy_from_slice(&h[r * n * d..(r + 1) * n * d]);
            }
        }
        Tensor::from_data(TensorData::new(out, [b, t, d]), &device)
    }

    /// Logits from hidden states, `[batch, t, vocab]`.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        softcap(
            self.logits_uncapped(hidden),
            self.config.final_logit_softcapping,
        )
    }

    /// [`Llama::logits`] before Gemma 2's final soft cap.
    fn logits_uncapped(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        // With host kernels on, the head always runs on the host (long inputs in passes of
        // `host::ROWS_PER_PASS` rows): a token's logits must not depend on how many rows share
        // the call.
        if let Some(h) = self.host.as_deref() {
            return host_project(&h.head, hidden);
        }
        match &self.lm_head {
            Some(head) => project(head, hidden, None),
            None => {
                // A 2-D product with the transposed view: the backends read it strided, whereas
                // a 3-D broadcast of a transposed matrix would be copied contiguous every call.
                let [b, t, d] = hidden.dims();
                let w = self.embed_tokens.weight.val().transpose();
                let v = w.dims()[1];
                let dtype = hidden.dtype();
                let h = hidden.reshape([b * t, d]).cast(w.dtype());
                h.matmul(w).cast(dtype).reshape([b, t, v])
            }
        }
    }
}

/// `[b, t, past + t]` causal mask, true = masked.
fn causal_mask<B: Backend>(
    b: usize,
    t: usize,
    past: usize,
    device: &B::Device,
) -> Tensor<B, 3, Bool> {
    let s = past + t;
    let data: Vec<bool> = (0..t)
        .flat_map(|i| (0..s).map(move |j| j > past + i))
        .collect();
    Tensor::<B, 2, Bool>::from_data(TensorData::new(data, [t, s]), device)
        .unsqueeze::<3>()
        .expand([b, t, s])
}

/// What every layer of one forward shares: the rotary angles laid out for the query and the
/// key heads, the attention mask as an additive bias, the scores' scale and soft cap.
struct LayerShared<B: Backend> {
    rope_q: (Tensor<B, 4>, Tensor<B, 4>),
    rope_k: (Tensor<B, 4>, Tensor<B, 4>),
    /// `[b, kv, rep * t, s]`, contiguous: 0 where a query may attend, -1e30 where masked.
    bias: Option<Tensor<B, 4>>,
    scale: f64,
    softcap: Option<f64>,
}

/// `x` through `norm` when there is one (Gemma 2 / 3's norms of a sublayer's output).
fn out_norm<B: Backend>(norm: &Option<RmsNorm<B>>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    match norm {
        Some(n) => n.forward(x),
        None => x,
    }
}

/// A `[b, t, s]` mask (true = masked) as the additive bias of [`LayerShared::bias`], laid out
/// like the grouped score rows (the `rep` query heads of a KV group stacked along the rows).
/// Built once per forward, it is added in place to each layer's scores, and adding a constant
/// costs nothing backward (a masked fill would run again on the gradient of every layer).
fn attention_bias<B: Backend>(mask: Tensor<B, 3, Bool>, kv: usize, rep: usize) -> Tensor<B, 4> {
    let [b, t, s] = mask.dims();
    let device = mask.device();
    Tensor::<B, 3>::zeros([b, t, s], &device)
        .cast(FloatDType::F32)
        .mask_fill(mask, -1e30)
        .reshape([b, 1, 1, t, s])
        .expand([b, kv, rep, t, s])
        // Reshaping the stride-0 view materializes it.
        .reshape([b, kv, rep * t, s])
}

impl<B: Backend> Attention<B> {
    /// q, k, v, o: the order of [`ATTENTION`] and of `lora`.
    fn projections(&self) -> [&Linear<B>; 4] {
        [&self.q_proj, &self.k_proj, &self.v_proj, &self.o_proj]
    }

    fn projections_mut(&mut self) -> [&mut Linear<B>; 4] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
        ]
    }

    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        shared: &LayerShared<B>,
        cache: &mut KvCache<B>,
        layer: usize,
        host: Option<&HostBlock>,
    ) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (h, kv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let rep = h / kv;
        let l = &self.lora;
        let q = project_adapted(&self.q_proj, l, 0, x.clone(), host.map(|h| &h.q));
        let k = project_adapted(&self.k_proj, l, 1, x.clone(), host.map(|h| &h.k));
        let mut q = q.reshape([b, t, h, hd]);
        let mut k = k.reshape([b, t, kv, hd]);
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(q);
            k = kn.forward(k);
        }
        let v = project_adapted(&self.v_proj, l, 2, x, host.map(|h| &h.v))
            .reshape([b, t, kv, hd])
            .swap_dims(1, 2);
        let q = rope
            .apply(q, &shared.rope_q.0, &shared.rope_q.1)
            .swap_dims(1, 2);
        let k = rope
            .apply(k, &shared.rope_k.0, &shared.rope_k.1)
            .swap_dims(1, 2);
        let (k, v) = cache.append(layer, k, v);
        // Query heads of one KV group are stacked along the row axis, so each KV head is read
        // once for `rep * t` query rows: no repeated K/V in memory.
        let q = q.reshape([b, kv, rep * t, hd]);
        let scores = softcap(q.matmul(k.swap_dims(2, 3)) * shared.scale, shared.softcap);
        let scores = match &shared.bias {
            Some(bias) => scores + bias.clone(),
            None => scores,
        };
        let out = softmax(scores, 3).matmul(v);
        let out = out
            .reshape([b, h, t, hd])
            .swap_dims(1, 2)
            .reshape([b, t, h * hd]);
        project_adapted(&self.o_proj, l, 3, out, host.map(|h| &h.o))
    }
}

impl<B: Backend> Mlp<B> {
    /// gate, up, down: the order of [`MLP`] and of `lora`.
    fn projections(&self) -> [&Linear<B>; 3] {
        [&self.gate_proj, &self.up_proj, &self.down_proj]
    }

    fn projections_mut(&mut self) -> [&mut Linear<B>; 3] {
        [&mut self.gate_proj, &mut self.up_proj, &mut self.down_proj]
    }

    fn forward(&self, x: Tensor<B, 3>, host: Option<&HostBlock>, gelu: bool) -> Tensor<B, 3> {
        let l = &self.lora;
        let g = gate_act(
            project_adapted(&self.gate_proj, l, 0, x.clone(), host.map(|h| &h.gate)),
            gelu,
        );
        let u = project_adapted(&self.up_proj, l, 1, x, host.map(|h| &h.up));
        project_adapted(&self.down_proj, l, 2, g * u, host.map(|h| &h.down))
    }
}

impl<B: Backend> CausalLm<B> for Llama<B> {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            vocab_size: self.config().vocab_size,
            max_positions: self.config().max_position_embeddings,
        }
    }

    fn device(&self) -> B::Device {
        // Without building a lazily loaded embedding.
        self.embed_tokens.weight.lazy_device()
    }

    fn new_cache(&self, batch: usize, capacity: usize) -> KvCache<B> {
        let c = self.config();
        let (layers, heads, head_dim) = (self.layers.len(), c.kv_heads(), c.head_dim());
        let capacity = capacity.min(c.max_position_embeddings);
        match self.host.as_deref() {
            // The host engine computes each position's keys and values from its prefix alone,
            // bit for bit, however the tokens are grouped: its caches carry the weights' id
            // and their own dtype (a cache reused only where it holds what this one would).
            Some(w) => {
                let shape = [batch, heads, capacity, head_dim];
                let half = u64::from(self.kv_dtype == KvDtype::F16);
                KvCache::new_host_as(layers, shape, self.kv_dtype, &self.device())
                    .with_owner(w.id << 1 | half)
            }
            None => KvCache::new(layers, batch, heads, capacity, head_dim, &self.device()),
        }
    }

    fn forward(&self, input: ForwardInput<B>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let h = self.hidden(input, cache);
        self.logits(h)
    }

    fn forward_last(&self, input: ForwardInput<B>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let h = self.hidden(input, cache);
        let [b, t, d] = h.dims();
        self.logits(h.slice([0..b, t - 1..t, 0..d]))
    }
}
