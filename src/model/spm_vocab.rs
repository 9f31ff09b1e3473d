//! A SentencePiece vocabulary stated in GGUF metadata (`tokenizer.ggml.model = llama`: Llama 2,
//! Mistral, TinyLlama, Phi-3, Gemma) as a `tokenizers` BPE, the way transformers' own converter
//! builds `LlamaTokenizerFast`: pieces merge in the order of the merged piece's score, spaces
//! become `▁` (one prepended unless the file says not to), and text no piece covers falls back
//! to byte pieces `<0xNN>`.

use crate::error::{Error, Result};
use crate::model::gguf::{GgufHeader, MetaValue};
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{DecoderWrapper, NormalizerWrapper};

/// GGUF token type of a normal piece (the others: unknown 2, control 3, user-defined 4,
/// unused 5, byte 6).
const NORMAL: u64 = 1;

/// The tokenizer of a SentencePiece vocabulary: `tokens` with their `types`, scores from
/// `tokenizer.ggml.scores`.
///
/// # Errors
/// [`Error::Tokenizer`] when the scores are missing or do not match the tokens.
pub(crate) fn spm_tokenizer(
    h: &GgufHeader,
    tokens: &[String],
    types: &[u64],
) -> Result<tokenizers::Tokenizer> {
    let scores: Vec<f64> = h
        .get("tokenizer.ggml.scores")
        .and_then(MetaValue::as_array)
        .ok_or_else(|| Error::Tokenizer("GGUF has no `tokenizer.ggml.scores` array".into()))?
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NEG_INFINITY))
        .collect();
    if scores.len() != tokens.len() {
        return Err(Error::Tokenizer(format!(
            "GGUF states {} scores for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    let vocab: HashMap<String, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = merges(tokens, types, &scores, &vocab);
    let vocab: tokenizers::models::bpe::Vocab = vocab.into_iter().collect();
    let unk = types
        .iter()
        .position(|&t| t == 2)
        .map(|i| tokens[i].clone());
    let mut bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        bpe = bpe.unk_token(unk);
    }
    let mut inner = tokenizers::Tokenizer::new(bpe.build().map_err(Error::tokenizer)?);
    let prefix = h
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(MetaValue::as_bool)
        .unwrap_or(true);
    let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
    if prefix {
        normalizers.push(Prepend::new("▁".into()).into());
    }
    normalizers.push(Replace::new(" ", "▁").map_err(Error::tokenizer)?.into());
    inner.with_normalizer(Some(NormalizerSequence::new(normalizers)));
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ").map_err(Error::tokenizer)?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

/// Every split of a normal piece into two pieces of the vocabulary, as a merge, ordered by the
/// merged piece's score (highest first; ties by the merged piece's id, then the parts' ids):
/// SentencePiece's BPE joins the adjacent pair whose join scores highest.
fn merges(
    tokens: &[String],
    types: &[u64],
    scores: &[f64],
    vocab: &HashMap<String, u32>,
) -> Vec<(String, String)> {
    let mut found: Vec<(f64, u32, u32, u32)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types.get(id).copied().unwrap_or(NORMAL) != NORMAL {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(&a), Some(&b)) = (vocab.get(l), vocab.get(r)) {
                found.push((scores[id], id as u32, a, b));
            }
        }
    }
    found.sort_by(|x, y| {
        y.0.total_cmp(&x.0)
            .then(x.1.cmp(&y.1))
            .then(x.2.cmp(&y.2))
            .then(x.3.cmp(&y.3))
    });
    found
        .into_iter()
        .map(|(_, _, a, b)| (tokens[a as usize].clone(), tokens[b as usize].clone()))
        .collect()
}
