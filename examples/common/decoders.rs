//! Decoder options shared by the examples: `--decoder greedy|jacobi|pld|lookahead|tr-jacobi|suffix`
//! and their
//! parameters.
#![allow(dead_code)]

use burn::prelude::*;
use msn::{
    AnyDecoder, CANDIDATE_NAMES, Candidates, CausalLm, DECODER_NAMES, DraftMemory, Jacobi,
    JacobiConfig, LatencyCurve, Lookahead, LookaheadConfig, PldConfig, PromptLookup, SuffixDecoder,
    TrJacobi, TrJacobiConfig, TreeTemplate,
};

/// Decoder choice and parameters.
#[derive(clap::Args, Debug, Clone)]
pub struct DecoderArgs {
    /// Decoding method; every one gives greedy's output token for token.
    #[arg(long, default_value = "greedy", value_parser = DECODER_NAMES)]
    pub decoder: String,
    /// Jacobi: draft window W.
    #[arg(long, default_value_t = 5)]
    pub window: usize,
    /// Lookahead: window W (columns of the 2-D Jacobi window).
    #[arg(long, default_value_t = 7)]
    pub la_window: usize,
    /// Lookahead: n-gram size N (the window has N - 1 levels).
    #[arg(long, default_value_t = 5)]
    pub la_ngram: usize,
    /// Lookahead: most n-grams verified per step (G).
    #[arg(long, default_value_t = 7)]
    pub la_guesses: usize,
    /// PLD: most draft tokens per step.
    #[arg(long, default_value_t = 10)]
    pub max_draft: usize,
    /// PLD: longest n-gram matched for retrieval (TR-Jacobi and suffix match the longest earlier
    /// occurrence, up to 32 tokens).
    #[arg(long, default_value_t = 3)]
    pub max_ngram: usize,
    /// TR-Jacobi: candidates per depth (K).
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// TR-Jacobi: tree template as rank paths ("[0] [0,0] [1] ..."); default the paper's 63 paths.
    #[arg(long)]
    pub template: Option<String>,
    /// TR-Jacobi: use only the first N template paths.
    #[arg(long)]
    pub tree_nodes: Option<usize>,
    /// TR-Jacobi: where tree candidates come from: the previous step's Jacobi logits per depth
    /// (the paper), the model's last predictions after each parent token (recycled), or both.
    #[arg(long, default_value = "recycled", value_parser = CANDIDATE_NAMES)]
    pub candidates: String,
    /// TR-Jacobi: tokens per retrieval chain (0 = no retrieval).
    #[arg(long, default_value_t = 10)]
    pub retrieval_len: usize,
    /// TR-Jacobi: retrieval chains per step.
    #[arg(long, default_value_t = 2)]
    pub retrieval_chains: usize,
    /// PLD / TR-Jacobi: measure the latency curve their budgets plan with at start-up (a few
    /// seconds on a CPU, over a 256-token context) rather than, more briefly, at the first
    /// generation.
    #[arg(long)]
    pub auto_budget: bool,
    /// PLD / TR-Jacobi: no budget: verify every draft whole (TR-Jacobi: the whole configured tree,
    /// the paper's decoder, without a draft memory; on a CPU much slower than greedy).
    #[arg(long)]
    pub fixed_tree: bool,
    /// TR-Jacobi / suffix: the draft memory file (earlier prompts and outputs): read when it
    /// exists, written back after every prompt by `generate`.
    #[arg(long, value_name = "FILE")]
    pub memory: Option<std::path::PathBuf>,
    /// With --auto-budget: keep the measured latency curve in DIR/<decoder>.json and reuse it on
    /// later runs (one directory per model, dtype, backend and machine).
    #[arg(long, value_name = "DIR")]
    pub latency_cache: Option<std::path::PathBuf>,
}

impl DecoderArgs {
    /// The TR-Jacobi configuration these options describe.
    pub fn tr_config(&self) -> msn::Result<TrJacobiConfig> {
        let mut template = match &self.template {
            Some(s) => TreeTemplate::parse(s)?,
            None => TreeTemplate::msn(),
        };
        if let Some(n) = self.tree_nodes {
            template = TreeTemplate::new(template.paths().iter().take(n).cloned().collect())?;
        }
        Ok(TrJacobiConfig {
            template,
            top_k: self.top_k,
            retrieval_len: self.retrieval_len,
            retrieval_chains: self.retrieval_chains,
            seed: 0,
            candidates: self.candidates.parse::<Candidates>()?,
        })
    }

    /// Builds the decoder (measuring the latency curve on `model` when `--auto-budget`).
    pub fn build<B: Backend, M: CausalLm<B>>(&self, model: &M) -> msn::Result<AnyDecoder> {
        let decoder: AnyDecoder = self.decoder.parse()?;
        let cached = |name: &str| self.latency_cache.as_ref().map(|d| d.join(name));
        let d = match decoder {
            AnyDecoder::Jacobi(_) => Jacobi::new(JacobiConfig {
                window: self.window,
                seed: 0,
            })
            .into(),
            AnyDecoder::Lookahead(_) => Lookahead::new(LookaheadConfig {
                window: self.la_window,
                ngram: self.la_ngram,
                guesses: self.la_guesses,
                seed: 0,
            })?
            .into(),
            AnyDecoder::PromptLookup(_) => {
                let pld = PldConfig {
                    max_ngram: self.max_ngram,
                    max_draft: self.max_draft,
                };
                match (self.fixed_tree, self.auto_budget, cached("pld.json")) {
                    (true, _, _) => PromptLookup::fixed(pld),
                    (false, _, Some(file)) => PromptLookup::auto_cached(model, pld, &file)?,
                    (false, true, None) => PromptLookup::auto(model, pld),
                    (false, false, None) => PromptLookup::new(pld),
                }
                .into()
            }
            AnyDecoder::TrJacobi(_) => {
                let tc = self.tr_config()?;
                match (self.fixed_tree, self.auto_budget, cached("tr-jacobi.json")) {
                    (true, _, _) => TrJacobi::fixed(tc)?,
                    (false, _, Some(file)) => TrJacobi::auto_cached(model, tc, &file)?,
                    (false, true, None) => TrJacobi::auto(model, tc)?,
                    (false, false, None) => TrJacobi::new(tc)?,
                }
                .into()
            }
            AnyDecoder::Suffix(_) => SuffixDecoder::new().into(),
            greedy => greedy,
        };
        let d = match (&self.memory, d) {
            (Some(file), AnyDecoder::TrJacobi(t)) => t.with_memory(self.load_memory(file)?).into(),
            (Some(file), AnyDecoder::Suffix(s)) => s.with_memory(self.load_memory(file)?).into(),
            (_, d) => d,
        };
        if let Some(curve) = latency_curve(&d) {
            print_curve(curve);
        }
        Ok(d)
    }
}

impl DecoderArgs {
    /// The memory in `file`, or a new one where there is no file yet.
    fn load_memory(&self, file: &std::path::Path) -> msn::Result<DraftMemory> {
        if !file.exists() {
            eprintln!("[draft memory: {} is new]", file.display());
            return Ok(DraftMemory::default());
        }
        let m = DraftMemory::load(file)?;
        eprintln!(
            "[draft memory: {} documents, {} tokens from {}]",
            m.documents(),
            m.tokens(),
            file.display()
        );
        Ok(m)
    }

    /// Writes `decoder`'s memory back to `--memory` (nothing without one).
    pub fn save_memory(&self, decoder: &AnyDecoder) -> msn::Result<()> {
        let memory = match decoder {
            AnyDecoder::TrJacobi(t) => t.memory(),
            AnyDecoder::Suffix(s) => Some(s.memory()),
            _ => None,
        };
        match (&self.memory, memory) {
            (Some(file), Some(m)) => m.save(file),
            _ => Ok(()),
        }
    }
}

/// The latency curve a budgeted decoder plans with.
pub fn latency_curve(d: &AnyDecoder) -> Option<&LatencyCurve> {
    match d {
        AnyDecoder::PromptLookup(d) => d.latency_curve(),
        AnyDecoder::TrJacobi(d) => msn::TrJacobiDecoder::latency_curve(d),
        _ => None,
    }
}

fn print_curve(curve: &LatencyCurve) {
    eprintln!(
        "[latency curve: {}]",
        curve
            .points()
            .iter()
            .map(|(t, s)| format!("T={t} {:.0} ms", s * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
