//! Lossless decoders on one engine: a token tree (or chain) is verified in one forward pass and
//! only the accepted branch stays in the KV cache.
//!
//! Every decoder implements [`Decoder`] and returns exactly greedy decoding's tokens:
//! [`Greedy`], [`Jacobi`], [`PromptLookup`] (PLD), [`Lookahead`] and [`TrJacobi`] (the MSN
//! paper's tree-based retrieval-augmented Jacobi). They differ only in their [`Drafter`], the
//! public extension point: [`DraftDecoder`] runs any drafter on the same engine.

mod batch;
mod budget;
mod candidates;
mod decoder;
mod draft_decoder;
mod draft_memory;
mod drafter;
mod greedy;
mod jacobi;
mod lookahead;
mod output;
mod pld;
mod retrieval;
mod step_log;
mod stream;
mod suffix;
mod suffix_index;
mod tr_config;
mod tr_jacobi;
mod tr_state;
mod tree;
mod tree_decode;
mod tree_template;
mod verify;

pub(crate) use output::stream_text;

pub use budget::LatencyCurve;
pub use candidates::{CANDIDATE_NAMES, Candidates};
pub use decoder::{AnyDecoder, DECODER_NAMES, Decoder};
pub use draft_decoder::DraftDecoder;
pub use draft_memory::DraftMemory;
pub use drafter::{Draft, Drafter};
pub use greedy::Greedy;
pub use jacobi::{Jacobi, JacobiConfig};
pub use lookahead::{Lookahead, LookaheadConfig};
pub use pld::{PldConfig, PromptLookup};
pub use stream::{OnText, StreamControl};
pub use suffix::SuffixDecoder;
pub use tr_config::TrJacobiConfig;
pub use tr_jacobi::{TrJacobi, TrJacobiDecoder};
pub use tree::TokenTree;
pub use tree_template::TreeTemplate;
pub use verify::Verified;
