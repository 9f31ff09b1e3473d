//! The crate's error type: every variant says what went wrong and what to do about it.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when loading, tokenizing, generating or training.
///
/// Variants carry enough context (file, tensor, line) to act on. Programmer errors (wrong tensor
/// ranks passed to a module) are panics, documented under `# Panics`; this type is for input the
/// user controls.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The streaming callback failed (e.g. it wrote to a closed pipe); generation stopped there.
    #[error(
        "the text stream failed: {0}. Generation stopped at that point; check where the text is written."
    )]
    Stream(#[source] std::io::Error),
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}. Check that the path exists and is readable/writable.")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A model named by a Hugging Face id (`Qwen/Qwen2.5-0.5B-Instruct`) is not in the local
    /// Hugging Face cache, and the name is not a file or directory either.
    #[error(
        "model `{id}` is neither a file or directory nor in the Hugging Face cache (looked in {looked}). Download it where there is network (`huggingface-cli download {id}`, into the same cache, or set HF_HUB_CACHE / HF_HOME to where it is), or pass the path of a .gguf file or a model directory."
    )]
    ModelNotFound {
        /// The id as given.
        id: String,
        /// The cache folder searched.
        looked: String,
    },

    /// A GGUF file is malformed (truncated, wrong magic, impossible sizes).
    #[error(
        "malformed GGUF file: {0}. The file is truncated or not a GGUF model; re-download it (for the demo model: delete it from the cache and run an example, which fetches it again) or convert it again with llama.cpp's convert_hf_to_gguf.py."
    )]
    MalformedGguf(String),

    /// A tensor uses a storage type this crate cannot decode.
    #[error(
        "tensor `{tensor}` uses unsupported storage type {dtype}. Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K; re-quantize the model to one of these (llama-quantize) or use the Hugging Face safetensors checkpoint."
    )]
    UnsupportedDtype {
        /// Tensor name.
        tensor: String,
        /// The storage type, as the file names it.
        dtype: String,
    },

    /// A safetensors file or Hugging Face model directory is malformed or incomplete.
    #[error("invalid Hugging Face checkpoint {path}: {reason}")]
    InvalidCheckpoint {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A tensor the architecture needs is missing from the checkpoint.
    #[error(
        "tensor `{0}` is missing from the checkpoint. The file is incomplete or not a llama-family model."
    )]
    MissingTensor(String),

    /// The checkpoint holds tensors the model does not read (attention or MLP biases, parts of
    /// another architecture): decoding without them would give wrong outputs.
    #[error(
        "the checkpoint holds {} tensor(s) a llama model does not use ({}{}): it has parts this crate does not implement (attention or MLP biases, another architecture), so its outputs would be wrong. Use a plain llama checkpoint, or implement `CausalLm` for this model.",
        names.len(),
        names.iter().take(4).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
        if names.len() > 4 { ", ..." } else { "" }
    )]
    UnusedTensors {
        /// Every unused tensor, by its name in the file, sorted.
        names: Vec<String>,
    },

    /// A tensor has a shape the configuration does not allow.
    #[error(
        "tensor `{tensor}` has shape {found:?}, expected {expected:?}: the checkpoint does not match its own configuration"
    )]
    ShapeMismatch {
        /// Tensor name.
        tensor: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },

    /// The model's configuration is unusable (missing or inconsistent hyper-parameters).
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),

    /// The architecture is not a llama-family model.
    #[error(
        "unsupported architecture `{0}`: this crate implements llama-family models (Llama 2 / 3, Mistral, SmolLM, Qwen 2 / 2.5, Qwen 3, Phi-3, Gemma 1 / 2 / 3 text). Implement `CausalLm` for your own model to use the decoders."
    )]
    UnsupportedArchitecture(String),

    /// Building or running the tokenizer failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    /// Rendering the chat template failed.
    #[error(
        "chat template error: {0}. Check the messages (roles `system`, `user`, `assistant`) or pass a raw prompt without `--chat`."
    )]
    ChatTemplate(String),

    /// The prompt is empty.
    #[error("the prompt is empty: give at least one token (or text that tokenizes to one)")]
    EmptyPrompt,

    /// The prompt plus the requested new tokens do not fit the model's context.
    #[error(
        "the prompt ({prompt_tokens} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the context of {context} tokens; shorten the prompt or lower max_new_tokens"
    )]
    ContextOverflow {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Requested new tokens.
        max_new_tokens: usize,
        /// The model's (or cache's) context length.
        context: usize,
    },

    /// A token id is outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfRange {
        /// The token id.
        id: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },

    /// A downloaded or cached file does not have the expected checksum.
    #[error(
        "checksum mismatch for {path}: expected sha256 {expected}, found {found}. The file is corrupt or not the expected release; delete it and fetch again."
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected sha256 (hex).
        expected: String,
        /// Actual sha256 (hex).
        found: String,
    },

    /// The demo model is not on this machine (the library never downloads it), or fetching it
    /// with pip failed (the examples and tests do that).
    #[error("{0}")]
    Fetch(String),

    /// A worker of a data-parallel training run failed (or could not reach the others); the
    /// run stopped. Resume it from its last checkpoint.
    #[error(
        "training worker {worker} of {workers} failed: {reason}. The run stopped; start it again to resume from the last checkpoint."
    )]
    Worker {
        /// The failing worker's rank.
        worker: usize,
        /// Workers in the run.
        workers: usize,
        /// What went wrong.
        reason: String,
    },

    /// A line of a JSONL input file is malformed.
    #[error("{path}:{line}: {reason}")]
    MalformedInput {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },

    /// A draft memory file is malformed (truncated, another format or version, impossible sizes).
    #[error(
        "{path}: not a draft memory file this version reads ({reason}). Delete it (the memory starts empty and refills as it decodes) or save it again with this version."
    )]
    MalformedMemory {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The requested backend or device is not available in this build or on this machine.
    #[error("{0}")]
    DeviceUnavailable(String),

    /// An argument is out of its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// An [`Error::Io`] about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// [`Error::Tokenizer`] from the `tokenizers` crate's (or any) error.
    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Self {
        Error::Tokenizer(e.to_string())
    }

    pub(crate) fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::InvalidCheckpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
