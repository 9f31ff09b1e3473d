//! # msn: Make Some Noise
//!
//! Lossless multi-token decoding (Jacobi, TR-Jacobi) and MSN noisy fine-tuning for llama-family
//! models on [burn](https://burn.dev), after "Make Some Noise" (Wang, Luo et al., EMNLP 2024).
//!
//! This release provides the foundation the decoders and the trainer stand on: the
//! [`CausalLm`] seam (explicit positions, tree masks, a [`KvCache`] that keeps an accepted
//! branch), a llama implementation generic over burn backends, GGUF and Hugging Face loaders,
//! the checkpoint's tokenizer and chat template, and exact greedy generation.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use msn::{GenerateConfig, Message, WeightDtype, greedy, load_with};
//!
//! # fn main() -> msn::Result<()> {
//! // "smollm2" fetches SmolLM2-135M-Instruct (sha256-verified); a .gguf path or HF dir works too.
//! let m = load_with::<Flex>("smollm2", &Default::default(), WeightDtype::F16)?;
//! let text = m.tokenizer.apply_chat_template(&[Message::new("user", "Hi!")], true)?;
//! let prompt = m.tokenizer.encode(&text)?;
//! let config = GenerateConfig::new(128, &m.tokenizer).with_stop_string("\n\n");
//! let mut print = |s: &str| print!("{s}");
//! let out = greedy::<Flex, _>(&m.model, Some(&m.tokenizer), &prompt, &config, Some(&mut print))?;
//! println!("\n{} tokens in {} forward passes", out.tokens.len(), out.steps);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod decode;
pub mod device;
pub mod error;
pub mod eval;
pub mod fetch;
pub mod generate;
pub mod load;
pub mod model;
pub mod noise;
pub mod prompts;
pub mod rng;
pub mod sample;
pub mod train;
pub mod util;

pub use error::{Error, Result};
pub use generate::{GenerateConfig, Generation, StopReason, greedy};
pub use load::{
    HostKernels, LoadOptions, LoadedModel, WeightDtype, load, load_with, load_with_options,
};
pub use model::tokenizer::{Message, Tokenizer};
pub use model::{CausalLm, ForwardInput, KvCache, Llama, LlamaConfig, ModelInfo};
pub use sample::Sampling;
