//! # msn: Make Some Noise
//!
//! Lossless multi-token decoding (Jacobi, TR-Jacobi) and MSN noisy fine-tuning for llama-family
//! models on [burn](https://burn.dev), after "Make Some Noise" (Wang, Luo et al., EMNLP 2024).
#![deny(missing_docs)]

pub mod device;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod load;
pub mod model;
pub mod prompts;
pub mod util;

pub use error::{Error, Result};
pub use generate::{GenerateConfig, Generation, StopReason, greedy};
pub use load::{LoadedModel, WeightDtype, load, load_with};
pub use model::tokenizer::{Message, Tokenizer};
pub use model::{CausalLm, ForwardInput, KvCache, Llama, LlamaConfig, ModelInfo};
