//! File-format internals that the integration tests and the fuzz target check against
//! independent references (llama.cpp's `gguf` package, hostile inputs). Not part of the API:
//! hidden from the documentation and free to change in any release.

pub use crate::model::gguf::{GgufHeader, MetaValue, write_gguf};
pub use crate::model::hf::{named_tensors, read_config};
pub use crate::model::quant::{GgmlType, dequantize};

/// The text of `ids` as the decoders build it (incrementally, one token at a time) and as they
/// stream it, for checking against decoding all ids at once.
///
/// # Errors
/// [`crate::Error::Tokenizer`].
pub fn stream_text(tokenizer: &crate::Tokenizer, ids: &[u32]) -> crate::Result<(String, String)> {
    crate::decode::stream_text(tokenizer, ids)
}

pub use crate::model::host::HostMatrix;

/// The host engine's matrices of layer 0 (q, k, v, o, gate, up, down) and the LM head, for
/// kernel benchmarks; `None` when the host engine is off.
pub fn host_matrices<B: burn::prelude::Backend>(
    model: &crate::Llama<B>,
) -> Option<([&HostMatrix; 7], &HostMatrix)> {
    let h = model.host_weights()?;
    let b = &h.blocks[0];
    Some(([&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down], &h.head))
}
