//! Llama-family hyper-parameters, in the field names of Hugging Face `config.json`, with the
//! families that differ from llama only in data: Qwen 2 / 2.5 (biases on q, k and v) and Qwen 3
//! (a per-head RMSNorm of q and k), and Phi-3 (fused projections, split at load time).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// RoPE frequency scaling (Hugging Face `rope_scaling`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `"linear"`, `"llama3"` or `"longrope"` (older configs call the key `type`); other types
    /// are errors ([`LlamaConfig::validate`]).
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Scaling factor (longrope: the context extension, `max_position_embeddings /
    /// original_max_position_embeddings` where the checkpoint does not state it).
    pub factor: f64,
    /// llama3: low-frequency factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    /// llama3: high-frequency factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    /// llama3 and longrope: the context the model was pre-trained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
    /// longrope (Phi-3 / 3.5 long-context): per-frequency divisors used while the model serves
    /// at most `original_max_position_embeddings` positions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_factor: Option<Vec<f64>>,
    /// longrope: the divisors used when the model serves more positions than that (every
    /// position then uses them, as llama.cpp does for a context that long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_factor: Option<Vec<f64>>,
    /// longrope: the factor cosines and sines are multiplied by; by default
    /// `sqrt(1 + ln(factor) / ln(original_max_position_embeddings))` (1 for a factor up to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_factor: Option<f64>,
}

impl RopeScaling {
    /// Plain scaling of type `rope_type` by `factor`, without the optional parameters.
    pub fn new(rope_type: impl Into<String>, factor: f64) -> Self {
        Self {
            rope_type: rope_type.into(),
            factor,
            low_freq_factor: None,
            high_freq_factor: None,
            original_max_position_embeddings: None,
            short_factor: None,
            long_factor: None,
            attention_factor: None,
        }
    }

    /// longrope's `factor` where a checkpoint leaves it out: the context extension over
    /// pre-training, `max_positions / original` (1 without a positive pre-training context).
    pub(crate) fn longrope_factor(max_positions: f64, original: Option<f64>) -> f64 {
        match original.filter(|&o| o > 0.0) {
            Some(original) => max_positions / original,
            None => 1.0,
        }
    }

    /// longrope: the factor cosines and sines are multiplied by (1 for other types).
    pub fn attention_scaling(&self) -> f64 {
        if self.rope_type != "longrope" {
            return 1.0;
        }
        self.attention_factor.unwrap_or_else(|| {
            let original = self.original_max_position_embeddings.unwrap_or(1) as f64;
            match self.factor > 1.0 && original > 1.0 {
                true => (1.0 + self.factor.ln() / original.ln()).sqrt(),
                false => 1.0,
            }
        })
    }

    /// Checks a longrope scaling for a head of `head_dim` values.
    fn validate_longrope(&self, head_dim: usize) -> std::result::Result<(), String> {
        if self.original_max_position_embeddings.is_none_or(|o| o == 0) {
            return Err(
                "longrope RoPE scaling needs a positive `original_max_position_embeddings`".into(),
            );
        }
        for (key, factors) in [
            ("short_factor", &self.short_factor),
            ("long_factor", &self.long_factor),
        ] {
            let Some(f) = factors else {
                return Err(format!("longrope RoPE scaling needs `{key}`"));
            };
            if f.len() != head_dim / 2 || f.iter().any(|x| !x.is_finite() || *x <= 0.0) {
                return Err(format!(
                    "longrope `{key}` must hold {} positive numbers (half the head width), not {:?}",
                    head_dim / 2,
                    f
                ));
            }
        }
        match self.attention_factor {
            Some(a) if !a.is_finite() || a <= 0.0 => Err(format!(
                "longrope `attention_factor` must be positive, not {a}"
            )),
            _ => Ok(()),
        }
    }
}

/// The longest context a configuration may state (2^24 positions; the longest models state
/// 10M). The RoPE tables hold every position a model serves ([`crate::LoadOptions::context`]).
pub(crate) const MAX_POSITIONS: usize = 1 << 24;

fn default_theta() -> f64 {
    10_000.0
}
/// transformers' `LlamaConfig` default.
fn default_eps() -> f64 {
    1e-6
}
fn default_arch() -> Vec<String> {
    vec!["LlamaForCausalLM".into()]
}
fn default_model_type() -> String {
    "llama".into()
}

/// Hyper-parameters of a llama-family decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); equal to `num_attention_heads` for MHA.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    /// RoPE scaling, if any.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Longest supported sequence.
    pub max_position_embeddings: usize,
    /// Whether the LM head shares the token embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// BOS token id.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// EOS token id.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// Hugging Face architecture name.
    #[serde(default = "default_arch")]
    pub architectures: Vec<String>,
    /// Hugging Face model type: `llama` (and llama-shaped: `mistral`), `qwen2`, `qwen3`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Biases on the q, k, v and output projections (Hugging Face `attention_bias`; Qwen 2 has
    /// q, k and v biases without saying so, see [`LlamaConfig::qkv_bias`]).
    #[serde(default)]
    pub attention_bias: bool,
    /// Gemma 2 / 3: attention scores are scaled by `query_pre_attn_scalar^-1/2` instead of
    /// `head_dim^-1/2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 2: attention scores pass through `cap * tanh(score / cap)` before the softmax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 2: logits pass through `cap * tanh(logit / cap)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_logit_softcapping: Option<f64>,
    /// Gemma 2 / 3: the attention window of the sliding layers ([`LlamaConfig::layer_window`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Per layer, `sliding_attention` or `full_attention` (transformers 5; Gemma 2 and 3 without
    /// it: every other layer, and five of each six, slide).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// Gemma 3: one layer in this many attends globally (transformers 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window_pattern: Option<usize>,
    /// Gemma 3: the RoPE base of the sliding layers (the global ones use `rope_theta` and
    /// `rope_scaling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_local_base_freq: Option<f64>,
}

impl LlamaConfig {
    /// A small config for tests and from-scratch experiments.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: None,
            max_position_embeddings: 512,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_id: None,
            architectures: default_arch(),
            model_type: default_model_type(),
            attention_bias: false,
            query_pre_attn_scalar: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            sliding_window: None,
            layer_types: None,
            sliding_window_pattern: None,
            rope_local_base_freq: None,
        }
    }

    /// Whether the q, k and v projections have biases: `attention_bias`, or a Qwen 2 model
    /// (whose q, k, v always have them, and whose output projection never does).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == "qwen2"
    }

    /// Whether the output projection has a bias (`attention_bias`).
    pub fn o_bias(&self) -> bool {
        self.attention_bias
    }

    /// Whether q and k pass through an RMSNorm over each head (of `head_dim` values, one gain
    /// vector shared by the heads) before RoPE: Qwen 3, Gemma 3.
    pub fn qk_norm(&self) -> bool {
        matches!(self.model_type.as_str(), "qwen3" | "gemma3_text")
    }

    /// Whether the checkpoint stores q, k, v as one `qkv_proj` and gate, up as one
    /// `gate_up_proj` (rows stacked in that order): Phi-3. The loaders split them.
    pub fn fused_projections(&self) -> bool {
        self.model_type == "phi3"
    }

    /// Gemma 1 / 2 / 3: RMSNorm gains stored as `w` and applied as `1 + w` in Hugging Face
    /// checkpoints (llama.cpp's converter stores `1 + w`), the embedding scaled by
    /// `sqrt(hidden_size)`, and a GELU (tanh) gate instead of SiLU.
    pub fn gemma(&self) -> bool {
        matches!(self.model_type.as_str(), "gemma" | "gemma2" | "gemma3_text")
    }

    /// Gemma 2 / 3: RMSNorms also after attention and after the MLP, before each residual add.
    pub fn sandwich_norms(&self) -> bool {
        matches!(self.model_type.as_str(), "gemma2" | "gemma3_text")
    }

    /// The factor on each attention score: `query_pre_attn_scalar^-1/2`, else `head_dim^-1/2`.
    pub fn attn_scale(&self) -> f64 {
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim() as f64)
            .sqrt()
    }

    /// The attention window of layer `layer` (a query sees the keys of the last `window`
    /// positions, itself included), or `None` for global attention.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let window = self.sliding_window.filter(|_| self.sandwich_norms())?;
        let sliding = match &self.layer_types {
            Some(types) => types.get(layer).is_some_and(|t| t == "sliding_attention"),
            None if self.model_type == "gemma2" => layer.is_multiple_of(2),
            None => !(layer + 1).is_multiple_of(self.sliding_window_pattern.unwrap_or(6).max(1)),
        };
        sliding.then_some(window)
    }

    /// The model types this crate builds: llama and the families that differ from it only in
    /// the data above.
    pub const MODEL_TYPES: [&'static str; 8] = [
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "phi3",
        "gemma",
        "gemma2",
        "gemma3_text",
    ];

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Checks the hyper-parameters are consistent.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.vocab_size == 0
            || self.hidden_size == 0
            || self.intermediate_size == 0
            || self.num_hidden_layers == 0
            || self.num_attention_heads == 0
            || self.max_position_embeddings == 0
        {
            return bad("sizes must be positive".into());
        }
        if self.max_position_embeddings > MAX_POSITIONS {
            return bad(format!(
                "a context of {} positions is beyond any model's ({MAX_POSITIONS} at most): the file is damaged",
                self.max_position_embeddings
            ));
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return bad(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({kv})",
                self.num_attention_heads
            ));
        }
        if self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even and positive",
                self.head_dim()
            ));
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(self.rope_theta) || !positive(self.rms_norm_eps) {
            return bad("rope_theta and rms_norm_eps must be positive".into());
        }
        if let Some(s) = &self.rope_scaling {
            if !matches!(s.rope_type.as_str(), "linear" | "llama3" | "longrope") {
                return bad(format!(
                    "rope_scaling type `{}` is not implemented: use `linear`, `llama3` or `longrope`, or no rope_scaling (positions would be encoded wrongly otherwise)",
                    s.rope_type
                ));
            }
            if !positive(s.factor) {
                return bad(format!(
                    "rope_scaling factor must be positive, not {}",
                    s.factor
                ));
            }
            if s.rope_type == "longrope" {
                s.validate_longrope(self.head_dim()).or_else(bad)?;
            }
        }
        Ok(())
    }

    /// The end-of-sequence ids named by the config.
    pub fn eos_ids(&self) -> Vec<u32> {
        token_ids(self.eos_token_id.as_ref())
    }
}

/// Token ids stated as one number or an array of them (`eos_token_id` in Hugging Face configs).
pub(crate) fn token_ids(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| v as u32).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => Vec::new(),
    }
}
