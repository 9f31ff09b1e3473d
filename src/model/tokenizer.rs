//! Tokenizer (the `tokenizers` crate) built from `tokenizer.json` or from GGUF metadata, and the
//! checkpoint's own chat template rendered with `minijinja`.

use crate::error::{Error, Result};
use crate::model::gguf::{GgufHeader, MetaValue};
use crate::model::spm_vocab::spm_tokenizer;
use serde::Serialize;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A text tokenizer plus the special tokens and chat template of its checkpoint.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Token ids that end generation.
    pub eos_ids: Vec<u32>,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_id: Option<u32>,
    /// Whether encoding a prompt starts with BOS.
    pub add_bos: bool,
    /// Jinja chat template of the checkpoint.
    pub chat_template: Option<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("eos_ids", &self.eos_ids)
            .field("bos_id", &self.bos_id)
            .finish()
    }
}

/// The pre-tokenizer regex of llama.cpp's named `tokenizer.ggml.pre` values (byte-level BPE).
fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerWrapper> {
    const GPT2: &str =
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(Error::tokenizer)?
        .into())
    };
    let byte_level = |regex: bool| PreTokenizerWrapper::from(ByteLevel::new(false, true, regex));
    Ok(match pre {
        // SmolLM / StarCoder: every digit alone, then GPT-2's byte-level split.
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level(true)]).into()
        }
        "default" | "gpt2" | "gpt-2" => byte_level(true),
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" => {
            Sequence::new(vec![split(LLAMA3)?, byte_level(false)]).into()
        }
        "qwen2" | "deepseek-r1-qwen" => {
            Sequence::new(vec![split(QWEN2)?, byte_level(false)]).into()
        }
        _ if pre.is_empty() => Sequence::new(vec![split(GPT2)?, byte_level(false)]).into(),
        other => {
            return Err(Error::Tokenizer(format!(
                "GGUF pre-tokenizer `{other}` is not supported (supported: smollm, gpt2, llama-bpe, qwen2); load the model's Hugging Face directory with its tokenizer.json instead"
            )));
        }
    })
}

fn strings(h: &GgufHeader, key: &str) -> Result<Vec<String>> {
    let arr = h
        .get(key)
        .and_then(MetaValue::as_array)
        .ok_or_else(|| Error::Tokenizer(format!("GGUF has no `{key}` array")))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::Tokenizer(format!("`{key}` holds a non-string")))
        })
        .collect()
}

/// A byte-level BPE vocabulary (`tokenizer.ggml.model = gpt2`) with its pre-tokenizer, and
/// whether llama.cpp adds BOS when the file does not say (the Llama 3 group does).
fn byte_level_bpe(h: &GgufHeader, tokens: &[String]) -> Result<(tokenizers::Tokenizer, bool)> {
    let merges = strings(h, "tokenizer.ggml.merges")?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Tokenizer(format!("malformed merge `{m}`")))
        })
        .collect::<Result<Vec<_>>>()?;
    let pre = h
        .get("tokenizer.ggml.pre")
        .and_then(MetaValue::as_str)
        .unwrap_or("");
    // llama.cpp's Llama 3 group: a word already in the vocabulary is one token, whatever
    // the merges say, and BOS is added unless the file says otherwise.
    let llama3 = matches!(pre, "llama-bpe" | "llama3" | "llama-v3");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(llama3)
        .build()
        .map_err(Error::tokenizer)?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre_tokenizer_for(pre)?));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok((inner, llama3))
}

impl Tokenizer {
    /// Builds the tokenizer described by GGUF metadata (`tokenizer.ggml.*`).
    ///
    /// Supports byte-level BPE (`tokenizer.ggml.model = gpt2`) with the `smollm`, `gpt2`,
    /// `llama-bpe` and `qwen2` pre-tokenizers. Control and user-defined tokens become special
    /// tokens that are matched in the input text, as llama.cpp does with special parsing on.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] for another tokenizer model or missing metadata.
    pub fn from_gguf(h: &GgufHeader) -> Result<Self> {
        let model = h
            .get("tokenizer.ggml.model")
            .and_then(MetaValue::as_str)
            .unwrap_or("");
        let tokens = strings(h, "tokenizer.ggml.tokens")?;
        let types: Vec<u64> = h
            .get("tokenizer.ggml.token_type")
            .and_then(MetaValue::as_array)
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_default();
        // What llama.cpp does when the file does not say whether to add BOS.
        let (mut inner, add_bos_default) = match model {
            "gpt2" => byte_level_bpe(h, &tokens)?,
            "llama" => (spm_tokenizer(h, &tokens, &types)?, true),
            other => {
                return Err(Error::Tokenizer(format!(
                    "GGUF tokenizer model `{other}` is not supported (byte-level BPE `gpt2` and SentencePiece `llama` are); load the Hugging Face directory with its tokenizer.json instead"
                )));
            }
        };
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(types.iter().chain(std::iter::repeat(&1)))
            .filter(|(_, t)| **t == 3 || **t == 4)
            .map(|(tok, _)| AddedToken::from(tok.clone(), true))
            .collect();
        inner.add_special_tokens(&special);
        let id = |k: &str| h.get(k).and_then(MetaValue::as_u64).map(|v| v as u32);
        let mut eos_ids: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        if let Some(eot) = id("tokenizer.ggml.eot_token_id").filter(|e| !eos_ids.contains(e)) {
            eos_ids.push(eot);
        }
        Ok(Self {
            inner,
            eos_ids,
            bos_id: id("tokenizer.ggml.bos_token_id"),
            add_bos: h
                .get("tokenizer.ggml.add_bos_token")
                .and_then(MetaValue::as_bool)
                .unwrap_or(add_bos_default),
            chat_template: h
                .get("tokenizer.chat_template")
                .and_then(MetaValue::as_str)
                .map(str::to_string),
        })
    }

    /// Loads `dir/tokenizer.json` and, when present, `dir/tokenizer_config.json` (chat template,
    /// BOS/EOS, `add_bos_token`). `config_eos` adds EOS ids named by `config.json`.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Tokenizer`] when the files are missing or invalid.
    pub fn from_hf_dir(dir: &Path, config_eos: &[u32]) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let inner = guarded(|| tokenizers::Tokenizer::from_file(&path))?
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => serde_json::from_str(&t)
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", cfg_path.display())))?,
            Err(_) => serde_json::Value::Null,
        };
        let token_id = |key: &str| -> Option<u32> {
            let v = cfg.get(key)?;
            let s = v
                .as_str()
                .or_else(|| v.get("content").and_then(|c| c.as_str()))?;
            inner.token_to_id(s)
        };
        let mut eos_ids: Vec<u32> = config_eos.to_vec();
        if let Some(e) = token_id("eos_token").filter(|e| !eos_ids.contains(e)) {
            eos_ids.push(e);
        }
        let bos_id = token_id("bos_token");
        let add_bos = match cfg.get("add_bos_token").and_then(|v| v.as_bool()) {
            Some(add) => add,
            None => post_processor_adds(&inner, bos_id)?,
        };
        Ok(Self {
            bos_id,
            add_bos,
            chat_template: hf_chat_template(dir, &cfg)?,
            eos_ids,
            inner,
        })
    }

    /// Writes `dir/tokenizer.json` and `dir/tokenizer_config.json`.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Tokenizer`].
    pub fn save_hf_dir(&self, dir: &Path) -> Result<()> {
        let json = self.inner.to_string(true).map_err(Error::tokenizer)?;
        crate::util::write_atomic(&dir.join("tokenizer.json"), json.as_bytes())?;
        let name = |id: Option<u32>| id.and_then(|i| self.inner.id_to_token(i));
        let cfg = serde_json::json!({
            "add_bos_token": self.add_bos,
            "bos_token": name(self.bos_id),
            "eos_token": name(self.eos_ids.first().copied()),
            "chat_template": self.chat_template,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        let bytes = serde_json::to_vec_pretty(&cfg).expect("json serialises");
        crate::util::write_atomic(&dir.join("tokenizer_config.json"), &bytes)
    }

    /// Token ids of `text`. Special tokens written in the text (`<|im_start|>`) are parsed;
    /// BOS is prepended when the checkpoint asks for it and the text does not already start
    /// with it (a chat template that writes `bos_token` gets one BOS, as in transformers).
    ///
    /// # Errors
    /// [`Error::Tokenizer`].
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = guarded(|| self.inner.encode(text, false))?.map_err(Error::tokenizer)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos && enc.get_ids().first() != self.bos_id.as_ref() {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`, special tokens included.
    ///
    /// # Errors
    /// [`Error::Tokenizer`].
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        guarded(|| self.inner.decode(ids, false))?.map_err(Error::tokenizer)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The string of one token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// `user` as one user message in the chat template, with the assistant turn opened, as
    /// token ids: a prompt ready to decode.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] when the checkpoint has no template; [`Error::Tokenizer`].
    pub fn chat_prompt(&self, user: &str) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(&[Message::new("user", user)], true)?;
        self.encode(&text)
    }

    /// Renders `messages` with the checkpoint's chat template.
    ///
    /// # Errors
    /// [`Error::ChatTemplate`] when the checkpoint has no template or rendering fails.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::ChatTemplate("the checkpoint has no chat template".into()))?;
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", template)
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        let name = |id: Option<u32>| {
            id.and_then(|i| self.inner.id_to_token(i))
                .unwrap_or_default()
        };
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => name(self.bos_id),
                    eos_token => name(self.eos_ids.first().copied()),
                })
            })
            .map_err(|e| Error::ChatTemplate(e.to_string()))
    }
}

/// Whether `tokenizer.json`'s post-processor puts `bos` first (how transformers 5 and Llama 3
/// checkpoints ask for BOS, with no `add_bos_token` in `tokenizer_config.json`).
fn post_processor_adds(inner: &tokenizers::Tokenizer, bos: Option<u32>) -> Result<bool> {
    let Some(bos) = bos else {
        return Ok(false);
    };
    let with = guarded(|| inner.encode("", true))?.map_err(Error::tokenizer)?;
    let without = guarded(|| inner.encode("", false))?.map_err(Error::tokenizer)?;
    Ok(with.get_ids().first() == Some(&bos) && without.get_ids().first() != Some(&bos))
}

/// The chat template as transformers reads it: `chat_template.jinja` when present (what
/// transformers 5 writes), else `tokenizer_config.json`'s `chat_template`, a string or a list of
/// named templates (the one named `default`).
fn hf_chat_template(dir: &Path, cfg: &serde_json::Value) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|e| Error::io(&jinja, e));
    }
    Ok(match cfg.get("chat_template") {
        Some(serde_json::Value::String(t)) => Some(t.clone()),
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t["name"].as_str() == Some("default"))
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    })
}

/// Runs a call into the `tokenizers` crate, which panics on some malformed `tokenizer.json`
/// files (an `expect` in its decoder deserializer, found by fuzzing): a panic becomes
/// [`Error::Tokenizer`].
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        Error::Tokenizer(format!(
            "the tokenizer files are malformed (the tokenizers crate failed: {what}); use the checkpoint's original tokenizer.json"
        ))
    })
}
