//! Hugging Face checkpoint directories: `config.json`, `model.safetensors` or sharded
//! `model.safetensors.index.json`, and writing the same layout back (export).

use crate::error::{Error, Result};
use crate::model::config::{LlamaConfig, RopeScaling, token_ids};
use crate::model::llama::{Block, Llama};
use crate::model::mapped;
use crate::model::multimodal::{self, Layout};
use crate::model::weights::{
    FusedPart, TensorSource, fused_part, part_shape, take_rows, transpose,
};
use crate::util::write_atomic;
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The safetensors files of one checkpoint, memory-mapped.
pub struct SafetensorsDir {
    dir: PathBuf,
    files: Vec<(PathBuf, memmap2::Mmap)>,
    /// Tensor name (as stored) to index into `files`.
    index: HashMap<String, usize>,
    /// Where the causal LM's tensors are (a multimodal checkpoint prefixes them).
    layout: Layout,
    /// The config of the model read ([`SafetensorsDir::with_config`]): where its checkpoints
    /// fuse projections (Phi-3), and whether they store norm gains as `w` for `1 + w` (Gemma).
    config: Option<LlamaConfig>,
}

impl std::fmt::Debug for SafetensorsDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsDir")
            .field("dir", &self.dir)
            .field("tensors", &self.index.len())
            .finish()
    }
}

impl SafetensorsDir {
    /// Opens `dir/model.safetensors`, or the shards listed in `dir/model.safetensors.index.json`.
    ///
    /// # Errors
    /// [`Error::InvalidCheckpoint`] when neither exists or a file is not valid safetensors.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let names: Vec<String> = if single.exists() {
            vec!["model.safetensors".into()]
        } else if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::checkpoint(&index_path, format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::checkpoint(&index_path, "no `weight_map` object"))?;
            let mut files: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            files.sort();
            files.dedup();
            if files
                .iter()
                .any(|f| f.contains('/') || f.contains('\\') || f.contains(".."))
            {
                return Err(Error::checkpoint(
                    &index_path,
                    "shard names must be plain file names",
                ));
            }
            files
        } else {
            return Err(Error::checkpoint(
                &dir,
                "no model.safetensors or model.safetensors.index.json (PyTorch .bin checkpoints are not supported: convert them to safetensors)",
            ));
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for name in names {
            let path = dir.join(&name);
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: read-only map shared with the file; every access goes through
            // safetensors' bounds checks. A concurrent writer changes the values later reads
            // see; truncating the file makes a later read of the cut pages raise SIGBUS. With the
            // host engine on, the burn tensors are lazy and read the map when built, so the
            // files must stay unchanged while a model loaded from them lives.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let st = SafeTensors::deserialize(&mmap)
                .map_err(|e| Error::checkpoint(&path, format!("not valid safetensors: {e}")))?;
            for n in st.names() {
                index.insert(n.to_string(), files.len());
            }
            files.push((path, mmap));
        }
        Ok(Self {
            dir,
            layout: Layout::of(index.keys()),
            files,
            index,
            config: None,
        })
    }
}

impl SafetensorsDir {
    /// The checkpoint of a model shaped by `config`: where it fuses projections (Phi-3's
    /// `qkv_proj`, `gate_up_proj`), each projection a stored tensor lacks is read from its rows
    /// of the fused one; Gemma's norm gains are read as the `1 + w` they apply.
    pub(crate) fn with_config(mut self, config: &LlamaConfig) -> Self {
        self.config = Some(config.clone());
        self
    }

    /// The fused matrix holding `name`, when the checkpoint stores it fused.
    fn part(&self, name: &str) -> Option<FusedPart> {
        if self.index.contains_key(&self.layout.stored(name)) {
            return None;
        }
        fused_part(self.config.as_ref()?, name)
    }

    /// `f(view)` of tensor `name` in its file, or `Ok(None)` when there is none.
    fn view<T>(
        &self,
        name: &str,
        f: impl FnOnce(safetensors::tensor::TensorView<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let stored = self.layout.stored(name);
        let Some(&i) = self.index.get(&stored) else {
            return Ok(None);
        };
        let (path, mmap) = &self.files[i];
        let st = SafeTensors::deserialize(mmap)
            .map_err(|e| Error::checkpoint(path, format!("not valid safetensors: {e}")))?;
        let view = st
            .tensor(&stored)
            .map_err(|e| Error::checkpoint(path, format!("{name}: {e}")))?;
        f(view).map(Some)
    }

    /// Whether stored tensor `name` belongs to another modality of a multimodal checkpoint (a
    /// vision tower), which the text model does not read.
    pub(crate) fn other_modality(&self, name: &str) -> bool {
        self.layout.other_modality(name)
    }

    /// Drops every file's pages from this process's resident memory ([`mapped::release`]).
    pub(crate) fn release_pages(&self) {
        for (_, map) in &self.files {
            mapped::release(map, 0..map.len());
        }
    }
}

impl TensorSource for SafetensorsDir {
    fn stored_names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }
    fn stored_name(&self, hf: &str) -> Option<String> {
        let name = self.part(hf).map_or_else(|| hf.to_string(), |p| p.fused);
        Some(self.layout.stored(&name))
    }
    fn shape(&self, name: &str) -> Result<Option<Vec<usize>>> {
        if let Some(part) = self.part(name) {
            let shape = self.view(&part.fused, |view| Ok(view.shape().to_vec()))?;
            return Ok(shape.map(|s| part_shape(&part, &s)));
        }
        self.view(name, |view| Ok(view.shape().to_vec()))
    }
    fn tensor(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        if let Some(part) = self.part(name) {
            return Ok(self
                .tensor(&part.fused)?
                .and_then(|t| take_rows(t, &part.rows)));
        }
        let shift =
            self.config.as_ref().is_some_and(LlamaConfig::gemma) && name.ends_with("norm.weight");
        self.view(name, |view| {
            let mut v = f32_values(name, &view)?;
            if shift {
                v.iter_mut().for_each(|x| *x += 1.0);
            }
            Ok((view.shape().to_vec(), v))
        })
    }
}

/// A safetensors tensor's values as f32 (f32, f16 and bf16 storage).
fn f32_values(name: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f32>> {
    let bytes = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::UnsupportedDtype {
                tensor: name.to_string(),
                dtype: format!("{other:?} (safetensors)"),
            });
        }
    };
    Ok(values)
}

/// Reads `dir/config.json` as a llama config.
///
/// Llama, Mistral, Qwen 2 / 2.5, Qwen 3, Phi-3 and Gemma 1 / 2 / 3 (text) configs read (see
/// [`LlamaConfig::MODEL_TYPES`]). A
/// config that states what this crate does not compute is an error, never a silent
/// approximation: an activation other than SiLU, MLP biases, a RoPE scaling type
/// other than linear and llama3. A sliding attention window (Mistral 7B v0.1) limits the context
/// to the window, within which sliding and full attention are the same.
///
/// # Errors
/// [`Error::InvalidCheckpoint`] when missing or not a llama config;
/// [`Error::UnsupportedArchitecture`] for another architecture or an unimplemented feature;
/// [`Error::InvalidConfig`] for inconsistent hyper-parameters or an unimplemented RoPE scaling.
pub fn read_config(dir: &Path) -> Result<LlamaConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::checkpoint(&path, format!("not valid JSON: {e}")))?;
    if !json.is_object() {
        return Err(Error::checkpoint(&path, "not a JSON object"));
    }
    multimodal::text_half(&mut json);
    if let Some(config) = json.as_object_mut() {
        multimodal::fill_defaults(config);
    }
    normalize_rope(&mut json)?;
    let mut config: LlamaConfig = serde_json::from_value(json.clone())
        .map_err(|e| Error::checkpoint(&path, format!("not a llama config.json: {e}")))?;
    let arch_ok = LlamaConfig::MODEL_TYPES.contains(&config.model_type.as_str())
        || config.architectures.iter().any(|a| a == "LlamaForCausalLM");
    if !arch_ok {
        return Err(Error::UnsupportedArchitecture(config.model_type.clone()));
    }
    check_llama_features(&json, &config.model_type)?;
    // Qwen 2 and 3 state a window they use only with `use_sliding_window: true`; Gemma 2 and 3
    // slide some layers only, which the model does itself (`LlamaConfig::layer_window`).
    let window_used =
        json["use_sliding_window"].as_bool() != Some(false) && !config.sandwich_norms();
    if let Some(window) = json["sliding_window"].as_u64().filter(|_| window_used) {
        let window = usize::try_from(window).unwrap_or(usize::MAX);
        config.max_position_embeddings = config.max_position_embeddings.min(window);
    }
    config.validate()?;
    Ok(config)
}

/// The end-of-sequence ids in `dir/generation_config.json` (none when the file is absent):
/// transformers' `generate` stops at these, which may be more than `config.json` names (Llama 3
/// Instruct, Qwen 2.5 Instruct).
///
/// # Errors
/// [`Error::InvalidCheckpoint`] when the file is not valid JSON.
pub(crate) fn generation_eos_ids(dir: &Path) -> Result<Vec<u32>> {
    let path = dir.join("generation_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::checkpoint(&path, format!("not valid JSON: {e}")))?;
    Ok(token_ids(json.get("eos_token_id")))
}

/// Brings the RoPE keys to the layout [`LlamaConfig`] reads. transformers 5 writes
/// `rope_parameters: {"rope_theta": .., "rope_type": .., "factor": .., ..}` where version 4 wrote
/// a top-level `rope_theta` and `rope_scaling`; both layouts read the same, and a config stating
/// both must agree. A `rope_type` of `"default"` means no scaling.
fn normalize_rope(json: &mut serde_json::Value) -> Result<()> {
    // Gemma 3 in transformers 5: one set per layer type; the global layers' is the model's,
    // the sliding layers' base is `rope_local_base_freq` (their scaling must be none).
    if let Some(by_type) = json["rope_parameters"]
        .as_object()
        .filter(|o| o.contains_key("full_attention"))
        .cloned()
    {
        if let Some(local) = by_type.get("sliding_attention") {
            if rope_type(local).is_some_and(|t| t != "default") {
                return Err(Error::InvalidConfig(format!(
                    "RoPE scaling on sliding layers is not implemented: {local}"
                )));
            }
            json["rope_local_base_freq"] = local["rope_theta"].clone();
        }
        json["rope_parameters"] = by_type["full_attention"].clone();
    }
    let params = json["rope_parameters"].take();
    if !params.is_null() {
        let Some(obj) = params.as_object().filter(|o| o.contains_key("rope_type")) else {
            return Err(Error::InvalidConfig(format!(
                "`rope_parameters` must be one object with a `rope_type` (per-layer RoPE is not a llama's): {params}"
            )));
        };
        let mut scaling = obj.clone();
        if let Some(theta) = scaling.remove("rope_theta") {
            agree(json, "rope_theta", theta)?;
        }
        let old = &json["rope_scaling"];
        let same = rope_type(old) == obj["rope_type"].as_str()
            && old["factor"].as_f64() == obj.get("factor").and_then(|f| f.as_f64());
        if !old.is_null() && !same {
            return Err(Error::InvalidConfig(format!(
                "config.json states RoPE scaling twice, differently: `rope_scaling` {old} and `rope_parameters` {params}"
            )));
        }
        json["rope_scaling"] = serde_json::Value::Object(scaling);
    }
    if rope_type(&json["rope_scaling"]) == Some("default") {
        json["rope_scaling"] = serde_json::Value::Null;
    }
    complete_longrope(json);
    Ok(())
}

/// Phi-3's long-context RoPE as transformers reads it: older checkpoints call it `su` (or
/// `yarn`), the pre-training context is a top-level key, and a missing `factor` is the context
/// extension `max_position_embeddings / original_max_position_embeddings` (which sets the
/// default attention factor, so it is fixed here, before a load serves fewer positions).
fn complete_longrope(json: &mut serde_json::Value) {
    let phi3 = json["model_type"].as_str() == Some("phi3");
    let ty = rope_type(&json["rope_scaling"]).map(str::to_owned);
    let longrope = match ty.as_deref() {
        Some("longrope") => true,
        Some("su" | "yarn") => phi3,
        _ => false,
    };
    if !longrope {
        return;
    }
    let original = json["original_max_position_embeddings"].clone();
    let max = json["max_position_embeddings"].as_f64();
    let scaling = &mut json["rope_scaling"];
    scaling["rope_type"] = "longrope".into();
    if let Some(o) = scaling.as_object_mut() {
        o.remove("type");
    }
    if scaling["original_max_position_embeddings"].is_null() {
        scaling["original_max_position_embeddings"] = original;
    }
    let original = scaling["original_max_position_embeddings"].as_f64();
    if scaling["factor"].is_null() {
        // Without a pre-training context validation names the missing key.
        let factor = max.map_or(1.0, |max| RopeScaling::longrope_factor(max, original));
        scaling["factor"] = factor.into();
    }
}

/// The type of a `rope_scaling` object (older configs call the key `type`).
fn rope_type(scaling: &serde_json::Value) -> Option<&str> {
    [&scaling["rope_type"], &scaling["type"]]
        .into_iter()
        .find_map(|t| t.as_str())
}

/// Sets `json[key]` to `value`, or checks that an existing value equals it.
fn agree(json: &mut serde_json::Value, key: &str, value: serde_json::Value) -> Result<()> {
    let old = &json[key];
    if !old.is_null() && old.as_f64() != value.as_f64() {
        return Err(Error::InvalidConfig(format!(
            "config.json states `{key}` twice, differently: {old} and {value} (in `rope_parameters`)"
        )));
    }
    json[key] = value;
    Ok(())
}

/// Rejects config keys that change what a llama computes in ways this crate does not implement.
fn check_llama_features(json: &serde_json::Value, model_type: &str) -> Result<()> {
    let unsupported = |what: String| {
        Err(Error::UnsupportedArchitecture(format!(
            "{model_type} with {what}"
        )))
    };
    let gemma = model_type.starts_with("gemma");
    for key in ["hidden_act", "hidden_activation"] {
        let Some(act) = json[key].as_str() else {
            continue;
        };
        // Gemma's gate is GELU with the tanh approximation (transformers uses it for Gemma
        // whatever `hidden_act` says).
        let ok = match gemma {
            true => act.starts_with("gelu"),
            false => act == "silu",
        };
        if !ok {
            return unsupported(format!(
                "{key} `{act}` (implemented: silu; gelu_pytorch_tanh for Gemma)"
            ));
        }
    }
    let partial = [
        &json["partial_rotary_factor"],
        &json["rope_scaling"]["partial_rotary_factor"],
    ];
    if let Some(f) = partial
        .into_iter()
        .find_map(|f| f.as_f64().filter(|&f| f != 1.0))
    {
        return unsupported(format!(
            "`partial_rotary_factor: {f}` (RoPE over part of each head is not implemented)"
        ));
    }
    if json["mlp_bias"].as_bool() == Some(true) {
        return unsupported("`mlp_bias: true` (MLP biases are not implemented)".into());
    }
    Ok(())
}

/// Storage type for exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportDtype {
    /// 32-bit floats: bit-exact round trip.
    #[default]
    F32,
    /// bfloat16: half the size, what most published checkpoints use.
    Bf16,
}

/// Every parameter of `model` by Hugging Face name, row-major `[out, in]` for linears.
pub fn named_tensors<B: Backend>(model: &Llama<B>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    let emb = model.embed_tokens.weight.val();
    out.push((
        "model.embed_tokens.weight".to_string(),
        emb.dims().to_vec(),
        values(emb),
    ));
    for (i, b) in model.layers.iter().enumerate() {
        block_tensors(&format!("model.layers.{i}."), b, &mut out);
    }
    let v = values(model.norm.gamma.val());
    out.push(("model.norm.weight".into(), vec![v.len()], v));
    if let Some(head) = &model.lm_head {
        let (shape, v) = mat(head.weight.val());
        out.push(("lm_head.weight".into(), shape, v));
    }
    if model.config().gemma() {
        // Gemma checkpoints store a norm's gain `g` as `g - 1` (applied as `1 + w`).
        for (name, _, v) in &mut out {
            if name.ends_with("norm.weight") {
                v.iter_mut().for_each(|x| *x -= 1.0);
            }
        }
    }
    out
}

/// A tensor's values, row-major, as f32.
fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32 data")
}

/// A linear weight as checkpoints store it: `[out, in]` (burn stores `[in, out]`).
fn mat<B: Backend>(t: Tensor<B, 2>) -> (Vec<usize>, Vec<f32>) {
    let [i, o] = t.dims();
    (vec![o, i], transpose(&values(t), i, o))
}

/// The tensors of block `b`, named with prefix `p` (`model.layers.3.`), appended to `out`.
fn block_tensors<B: Backend>(p: &str, b: &Block<B>, out: &mut Vec<(String, Vec<usize>, Vec<f32>)>) {
    let a = &b.self_attn;
    for (n, l) in [
        ("self_attn.q_proj.weight", &a.q_proj),
        ("self_attn.k_proj.weight", &a.k_proj),
        ("self_attn.v_proj.weight", &a.v_proj),
        ("self_attn.o_proj.weight", &a.o_proj),
        ("mlp.gate_proj.weight", &b.mlp.gate_proj),
        ("mlp.up_proj.weight", &b.mlp.up_proj),
        ("mlp.down_proj.weight", &b.mlp.down_proj),
    ] {
        let (shape, v) = mat(l.weight.val());
        out.push((format!("{p}{n}"), shape, v));
        if let Some(bias) = &l.bias {
            let v = values(bias.val());
            let name = n.replace(".weight", ".bias");
            out.push((format!("{p}{name}"), vec![v.len()], v));
        }
    }
    // Gemma 2 / 3 name the norm before the MLP `pre_feedforward_layernorm`, and the one
    // after attention `post_attention_layernorm`.
    let pre_mlp = match b.attn_out_norm.is_some() {
        true => "pre_feedforward_layernorm.weight",
        false => "post_attention_layernorm.weight",
    };
    let optional = [
        ("self_attn.q_norm.weight", &a.q_norm),
        ("self_attn.k_norm.weight", &a.k_norm),
        ("post_attention_layernorm.weight", &b.attn_out_norm),
        ("post_feedforward_layernorm.weight", &b.mlp_out_norm),
    ];
    let optional = optional
        .into_iter()
        .filter_map(|(n, g)| g.as_ref().map(|g| (n, &g.gamma)));
    for (n, g) in [
        ("input_layernorm.weight", &b.input_layernorm.gamma),
        (pre_mlp, &b.post_attention_layernorm.gamma),
    ]
    .into_iter()
    .chain(optional)
    {
        let v = values(g.val());
        out.push((format!("{p}{n}"), vec![v.len()], v));
    }
}

/// Writes `(name, shape, little-endian bytes)` tensors of one type as a safetensors file.
pub(crate) fn write_safetensors(
    path: &Path,
    dtype: Dtype,
    tensors: &[(String, Vec<usize>, Vec<u8>)],
) -> Result<()> {
    let views: BTreeMap<String, TensorView<'_>> = tensors
        .iter()
        .map(|(n, s, b)| {
            let view = TensorView::new(dtype, s.clone(), b).expect("consistent tensor view");
            (n.clone(), view)
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::checkpoint(path, format!("serialising safetensors: {e}")))?;
    write_atomic(path, &bytes)
}

/// Writes `model` as `dir/config.json` and `dir/model.safetensors` (each atomically).
///
/// # Errors
/// [`Error::Io`] when the directory cannot be written.
pub fn save_weights<B: Backend>(model: &Llama<B>, dir: &Path, dtype: ExportDtype) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tensors = named_tensors(model);
    let encoded: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| {
            let bytes = match dtype {
                ExportDtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ExportDtype::Bf16 => v
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            };
            (n, s, bytes)
        })
        .collect();
    let st_dtype = match dtype {
        ExportDtype::F32 => Dtype::F32,
        ExportDtype::Bf16 => Dtype::BF16,
    };
    write_safetensors(&dir.join("model.safetensors"), st_dtype, &encoded)?;
    let config = serde_json::to_vec_pretty(model.config()).expect("config serialises");
    write_atomic(&dir.join("config.json"), &config)?;
    Ok(())
}
