//! The language model inside a multimodal checkpoint (Gemma 3 4B, 12B and 27B:
//! `Gemma3ForConditionalGeneration`): its config is `text_config` (sparse, with Gemma 3's own
//! defaults for what it leaves out) and its tensors carry a prefix; the vision tower and its
//! projector are not read (text in, text out).

use serde_json::{Map, Value, json};

/// Multimodal model types whose `text_config` this crate runs, with the type of that config.
const TEXT_HALVES: [(&str, &str); 1] = [("gemma3", "gemma3_text")];

/// transformers' `Gemma3TextConfig` defaults, for the keys a saved `text_config` leaves out
/// (checkpoints saved by transformers 4.5x store only the values that differ).
fn gemma3_text_defaults() -> Value {
    json!({
        "vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0, "attention_bias": false, "query_pre_attn_scalar": 256,
        "sliding_window": 4096, "sliding_window_pattern": 6, "tie_word_embeddings": true,
        "bos_token_id": 2, "eos_token_id": 1,
    })
}

/// Replaces a multimodal config by its language model's: `text_config`, then the top level's
/// other keys it lacks (`eos_token_id`), then the family's defaults. Other configs are left
/// as they are; a `text_config` of a type not listed stays an unsupported architecture.
pub(crate) fn text_half(json: &mut Value) {
    let outer = json["model_type"].as_str().unwrap_or_default();
    let Some(&(_, inner)) = TEXT_HALVES.iter().find(|(m, _)| *m == outer) else {
        return;
    };
    let Some(mut text) = json["text_config"].as_object().cloned() else {
        return;
    };
    if text.get("model_type").is_some_and(|t| t != inner) {
        return;
    }
    let top = json.as_object().cloned().unwrap_or_default();
    let skip = [
        "text_config",
        "vision_config",
        "model_type",
        "architectures",
    ];
    for (k, v) in top.into_iter().filter(|(k, _)| !skip.contains(&k.as_str())) {
        text.entry(k).or_insert(v);
    }
    text.insert("model_type".into(), inner.into());
    text.insert("architectures".into(), json!(["Gemma3ForCausalLM"]));
    fill_defaults(&mut text);
    log::info!("multimodal {outer} checkpoint: running its {inner} language model, text only");
    *json = Value::Object(text);
}

/// Fills the keys a Gemma 3 text config leaves out with transformers' defaults (a config with
/// `rope_parameters` states its bases there).
pub(crate) fn fill_defaults(text: &mut Map<String, Value>) {
    if text.get("model_type").and_then(Value::as_str) != Some("gemma3_text") {
        return;
    }
    let per_layer_rope = text.contains_key("rope_parameters");
    if let Value::Object(defaults) = gemma3_text_defaults() {
        for (k, v) in defaults {
            let rope = matches!(k.as_str(), "rope_theta" | "rope_local_base_freq");
            let pattern = k == "sliding_window_pattern"
                && (text.contains_key("layer_types")
                    || text.contains_key("_sliding_window_pattern"));
            let stated_elsewhere = (rope && per_layer_rope) || pattern;
            if !stated_elsewhere {
                text.entry(k).or_insert(v);
            }
        }
    }
}

/// Where a multimodal checkpoint keeps its language model's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `model.*`, `lm_head.weight`: a plain causal LM.
    Plain,
    /// `language_model.model.*`, `language_model.lm_head.weight` (transformers 4.5x).
    LanguageModel,
    /// `model.language_model.*`, `lm_head.weight` (transformers 5's own names).
    Nested,
}

impl Layout {
    /// The layout of a checkpoint holding tensors `names`.
    pub(crate) fn of<'a>(mut names: impl Iterator<Item = &'a String>) -> Self {
        let mut layout = Self::Plain;
        for n in names.by_ref() {
            if n.starts_with("language_model.model.") {
                layout = Self::LanguageModel;
                break;
            }
            if n.starts_with("model.language_model.") {
                layout = Self::Nested;
                break;
            }
        }
        layout
    }

    /// The stored name of the causal LM's tensor `hf` (`model.layers.0...`, `lm_head.weight`).
    pub(crate) fn stored(self, hf: &str) -> String {
        match self {
            Self::Plain => hf.to_string(),
            Self::LanguageModel => format!("language_model.{hf}"),
            Self::Nested => match hf.strip_prefix("model.") {
                Some(rest) => format!("model.language_model.{rest}"),
                None => hf.to_string(),
            },
        }
    }

    /// Whether stored tensor `name` belongs to another modality (the vision tower, its
    /// projector), which a text model does not read.
    pub(crate) fn other_modality(self, name: &str) -> bool {
        let under = |p: &str| {
            ["vision_tower.", "multi_modal_projector."]
                .iter()
                .any(|m| name.starts_with(&format!("{p}{m}")))
        };
        match self {
            Self::Plain => false,
            Self::LanguageModel => under(""),
            Self::Nested => under("model."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers 5's own names for Gemma3ForConditionalGeneration's tensors (4.5x's are the
    /// `language_model.` layout, which the Gemma 3 fixture checkpoint uses).
    #[test]
    fn nested_layout_names() {
        let names: Vec<String> = [
            "model.language_model.layers.0.self_attn.q_proj.weight",
            "model.vision_tower.encoder.layers.0.mlp.fc1.bias",
            "model.multi_modal_projector.mm_soft_emb_norm.weight",
            "lm_head.weight",
        ]
        .map(String::from)
        .to_vec();
        let layout = Layout::of(names.iter());
        assert_eq!(layout, Layout::Nested);
        assert_eq!(
            layout.stored("model.layers.0.self_attn.q_proj.weight"),
            names[0]
        );
        assert_eq!(layout.stored("lm_head.weight"), "lm_head.weight");
        let other: Vec<bool> = names.iter().map(|n| layout.other_modality(n)).collect();
        assert_eq!(other, [false, true, true, false]);
        assert_eq!(
            Layout::of([String::from("model.norm.weight")].iter()),
            Layout::Plain
        );
    }
}
