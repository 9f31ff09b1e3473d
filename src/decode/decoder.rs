//! One interface over every decoder, so applications and benchmarks switch decoders without
//! changing code, and [`AnyDecoder`] to choose one by name at run time.

use crate::decode::stream::{OnText, StreamControl};
use crate::decode::{Greedy, Jacobi, Lookahead, PromptLookup, SuffixDecoder, TrJacobi};
use crate::error::{Error, Result};
use crate::generation::{GenerateConfig, Generation};
use crate::model::{CausalLm, Tokenizer};
use burn::prelude::*;

/// A lossless decoder: whatever it drafts, it returns exactly greedy decoding's tokens (with
/// [`GenerateConfig::sampling`], a draw from the model's own distribution).
///
/// A decoder keeps what it learns across calls (TR-Jacobi's token graph, a budget's step
/// costs); build a new one to start fresh.
///
/// # Examples
/// ```no_run
/// use msn::{Decoder, TrJacobi};
/// # fn f<B: burn::prelude::Backend>(m: &msn::LoadedModel<B>) -> msn::Result<()> {
/// let mut decoder = TrJacobi::default();
/// let prompt = m.tokenizer.encode("def fib(n):")?;
/// let config = m.generate_config(64);
/// let g = decoder.stream(&m.model, &m.tokenizer, &prompt, &config, |text| print!("{text}"))?;
/// println!("\n{:.2} tokens per forward pass", g.accepted_tokens_per_step());
/// # Ok(()) }
/// ```
pub trait Decoder {
    /// Short name (`greedy`, `jacobi`, `pld`, `lookahead`, `tr-jacobi`, `suffix`).
    fn name(&self) -> &'static str;

    /// Generates from `prompt`, sending the text to `on_text` (in order, once, as it becomes
    /// stable) when given. The one method an implementation provides; callers use
    /// [`Decoder::generate`] or [`Decoder::stream`].
    ///
    /// # Errors
    /// [`Error::EmptyPrompt`], [`Error::ContextOverflow`], [`Error::TokenOutOfRange`] for a
    /// prompt the model cannot take; [`Error::InvalidArgument`] for sampling parameters
    /// [`crate::Sampling::validate`] rejects; [`Error::Tokenizer`]; the callback's own error.
    fn decode<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut OnText<'_>>,
    ) -> Result<Generation>;

    /// Generates from `prompt`. Without a tokenizer the output has tokens but no text, and stop
    /// strings are not checked.
    ///
    /// # Errors
    /// See [`Decoder::decode`].
    fn generate<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
    ) -> Result<Generation> {
        self.decode(model, tokenizer, prompt, config, None)
    }

    /// Generates from `prompt`, calling `on_text` with each piece of text as soon as it can no
    /// longer change. `on_text` returns `()`, a [`std::ops::ControlFlow`] (`Break` stops early,
    /// [`crate::StopReason::Cancelled`]) or a `Result` (an error stops and is returned): see
    /// [`StreamControl`].
    ///
    /// # Errors
    /// See [`Decoder::decode`].
    fn stream<B: Backend, M: CausalLm<B>, R: StreamControl>(
        &mut self,
        model: &M,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        config: &GenerateConfig,
        mut on_text: impl FnMut(&str) -> R,
    ) -> Result<Generation> {
        let mut sink = |s: &str| on_text(s).into_flow();
        self.decode(model, Some(tokenizer), prompt, config, Some(&mut sink))
    }
}

/// The decoders' names, as [`std::str::FromStr`] for [`AnyDecoder`] accepts them.
pub const DECODER_NAMES: [&str; 6] = [
    "greedy",
    "jacobi",
    "pld",
    "lookahead",
    "tr-jacobi",
    "suffix",
];

/// Any of this crate's decoders, chosen at run time (command lines, benchmark tables).
///
/// # Examples
/// ```
/// use msn::{AnyDecoder, Decoder};
///
/// let d: AnyDecoder = "tr-jacobi".parse().unwrap();
/// assert_eq!(d.name(), "tr-jacobi");
/// let err = "tr_jacobi".parse::<AnyDecoder>().unwrap_err();
/// assert!(err.to_string().contains("greedy, jacobi, pld, lookahead, tr-jacobi, suffix"));
/// ```
#[derive(Debug, Clone)]
pub enum AnyDecoder {
    /// [`Greedy`].
    Greedy(Greedy),
    /// [`Jacobi`].
    Jacobi(Jacobi),
    /// [`PromptLookup`].
    PromptLookup(PromptLookup),
    /// [`Lookahead`].
    Lookahead(Lookahead),
    /// [`TrJacobi`].
    TrJacobi(TrJacobi),
    /// [`SuffixDecoder`].
    Suffix(SuffixDecoder),
}

impl AnyDecoder {
    /// The same decoder with its draft or tree size budgeted by `model`'s latency curve, measured
    /// now ([`PromptLookup::auto`], [`TrJacobi::auto`]); the other decoders have no budget and
    /// are returned as they are.
    ///
    /// # Errors
    /// As [`TrJacobi::new`].
    pub fn auto<B: Backend, M: CausalLm<B>>(self, model: &M) -> Result<Self> {
        Ok(match self {
            Self::PromptLookup(d) => Self::PromptLookup(PromptLookup::auto(model, *d.config())),
            Self::TrJacobi(d) => {
                let auto = TrJacobi::auto(model, d.config().clone())?;
                Self::TrJacobi(match d.memory() {
                    Some(m) => auto.with_memory(m.clone()),
                    None => auto.without_memory(),
                })
            }
            other => other,
        })
    }
}

impl std::str::FromStr for AnyDecoder {
    type Err = Error;

    /// A decoder with its default parameters from its [`Decoder::name`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] listing the valid names.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "greedy" => Self::Greedy(Greedy),
            "jacobi" => Self::Jacobi(Jacobi::default()),
            "pld" => Self::PromptLookup(PromptLookup::default()),
            "lookahead" => Self::Lookahead(Lookahead::default()),
            "tr-jacobi" => Self::TrJacobi(TrJacobi::default()),
            "suffix" => Self::Suffix(SuffixDecoder::default()),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown decoder `{other}`; use one of {}",
                    DECODER_NAMES.join(", ")
                )));
            }
        })
    }
}

impl std::fmt::Display for AnyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Greedy> for AnyDecoder {
    fn from(d: Greedy) -> Self {
        Self::Greedy(d)
    }
}

impl From<Jacobi> for AnyDecoder {
    fn from(d: Jacobi) -> Self {
        Self::Jacobi(d)
    }
}

impl From<PromptLookup> for AnyDecoder {
    fn from(d: PromptLookup) -> Self {
        Self::PromptLookup(d)
    }
}

impl From<Lookahead> for AnyDecoder {
    fn from(d: Lookahead) -> Self {
        Self::Lookahead(d)
    }
}

impl From<SuffixDecoder> for AnyDecoder {
    fn from(d: SuffixDecoder) -> Self {
        Self::Suffix(d)
    }
}

impl From<TrJacobi> for AnyDecoder {
    fn from(d: TrJacobi) -> Self {
        Self::TrJacobi(d)
    }
}

impl Decoder for AnyDecoder {
    fn name(&self) -> &'static str {
        match self {
            Self::Greedy(d) => d.name(),
            Self::Jacobi(d) => d.name(),
            Self::PromptLookup(d) => d.name(),
            Self::Lookahead(d) => d.name(),
            Self::TrJacobi(d) => d.name(),
            Self::Suffix(d) => d.name(),
        }
    }

    fn decode<B: Backend, M: CausalLm<B>>(
        &mut self,
        model: &M,
        tokenizer: Option<&Tokenizer>,
        prompt: &[u32],
        config: &GenerateConfig,
        on_text: Option<&mut OnText<'_>>,
    ) -> Result<Generation> {
        match self {
            Self::Greedy(d) => d.decode(model, tokenizer, prompt, config, on_text),
            Self::Jacobi(d) => d.decode(model, tokenizer, prompt, config, on_text),
            Self::PromptLookup(d) => d.decode(model, tokenizer, prompt, config, on_text),
            Self::Lookahead(d) => d.decode(model, tokenizer, prompt, config, on_text),
            Self::TrJacobi(d) => d.decode(model, tokenizer, prompt, config, on_text),
            Self::Suffix(d) => d.decode(model, tokenizer, prompt, config, on_text),
        }
    }
}
