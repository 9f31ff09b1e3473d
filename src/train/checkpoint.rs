//! Training checkpoints: `dir/step-NNNNNN/` holds the weights in the Hugging Face layout
//! (`config.json`, `model.safetensors`, f32) for other tools, plus burn records of the model and
//! the optimizer (exact, with parameter ids) and `state.json` (step, noise generator, report).
//! A checkpoint is written into `step-NNNNNN.tmp/` and renamed into place, then `latest` is
//! replaced atomically: a run killed at any moment leaves the previous checkpoint intact.

use crate::error::{Error, Result};
use crate::model::Llama;
use crate::model::hf::{ExportDtype, save_weights};
use crate::rng::Rng;
use crate::train::TrainReport;
use crate::util::write_atomic;
use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use std::path::Path;

/// Trainer bookkeeping saved with each checkpoint.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    /// The noise generator, as it is after `step` steps.
    pub noise_rng: Rng,
    /// Losses and evaluations so far.
    pub report: TrainReport,
}

type Rec = BinBytesRecorder<FullPrecisionSettings>;

/// Writes a checkpoint of `step` into `dir` and points `dir/latest` at it; keeps the two newest.
///
/// # Errors
/// [`Error::Io`] when `dir` cannot be written.
pub fn save<B: AutodiffBackend, O: Optimizer<Llama<B>, B>>(
    dir: &Path,
    model: &Llama<B>,
    optim: &O,
    state: &TrainerState,
) -> Result<()> {
    let name = format!("step-{:06}", state.step);
    let tmp = dir.join(format!("{name}.tmp"));
    let fin = dir.join(&name);
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    // The Hugging Face copy is the model as it decodes: with LoRA, adapters merged.
    if model.has_lora() {
        save_weights(&model.clone().merge_lora(), &tmp, ExportDtype::F32)?;
    } else {
        save_weights(model, &tmp, ExportDtype::F32)?;
    }
    let rec = Rec::default();
    let m = Recorder::<B>::record(&rec, model.clone().into_record(), ())
        .map_err(|e| Error::checkpoint(&tmp, format!("encoding the model: {e}")))?;
    write_atomic(&tmp.join("model.bin"), &m)?;
    let o = Recorder::<B>::record(&rec, optim.to_record(), ())
        .map_err(|e| Error::checkpoint(&tmp, format!("encoding the optimizer: {e}")))?;
    write_atomic(&tmp.join("optimizer.bin"), &o)?;
    let s = serde_json::to_vec_pretty(state).expect("state serialises");
    write_atomic(&tmp.join("state.json"), &s)?;
    let _ = std::fs::remove_dir_all(&fin);
    std::fs::rename(&tmp, &fin).map_err(|e| Error::io(&fin, e))?;
    write_atomic(&dir.join("latest"), name.as_bytes())?;
    // Keep the two newest complete checkpoints.
    let mut steps: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("step-") && !n.ends_with(".tmp"))
        .collect();
    steps.sort();
    for old in steps.iter().rev().skip(2) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// Loads the checkpoint `dir/latest` names into `model` and `optim` (which give the structure),
/// or `None` when there is none.
///
/// # Errors
/// [`Error::InvalidCheckpoint`] when a file is missing or does not decode (say which and why).
#[allow(clippy::type_complexity)]
pub fn load_latest<B: AutodiffBackend, O: Optimizer<Llama<B>, B>>(
    dir: &Path,
    model: Llama<B>,
    optim: O,
    device: &B::Device,
) -> Result<Option<(Llama<B>, O, TrainerState)>> {
    let latest = dir.join("latest");
    let Ok(name) = std::fs::read_to_string(&latest) else {
        return Ok(None);
    };
    let ck = dir.join(name.trim());
    let read = |f: &str| {
        let p = ck.join(f);
        std::fs::read(&p).map_err(|e| {
            Error::checkpoint(
                &p,
                format!("cannot read it ({e}); delete {latest:?} to start over"),
            )
        })
    };
    let state: TrainerState = serde_json::from_slice(&read("state.json")?)
        .map_err(|e| Error::checkpoint(ck.join("state.json"), e.to_string()))?;
    let (mb, ob) = (read("model.bin")?, read("optimizer.bin")?);
    let rec = Rec::default();
    let dev = device.clone();
    // burn's bincode recorder panics on bytes it cannot decode: turn that into an error.
    let decoded = crate::device::catch(move || {
        let m = Recorder::<B>::load(&rec, mb, &dev);
        let o = Recorder::<B>::load(&rec, ob, &dev);
        (m, o)
    })
    .map_err(|e| Error::checkpoint(&ck, format!("corrupt model or optimizer record: {e}")))?;
    let m = decoded
        .0
        .map_err(|e| Error::checkpoint(ck.join("model.bin"), e.to_string()))?;
    let o = decoded
        .1
        .map_err(|e| Error::checkpoint(ck.join("optimizer.bin"), e.to_string()))?;
    Ok(Some((model.load_record(m), optim.load_record(o), state)))
}

/// Drops `metrics.jsonl` lines past `step` (written after the checkpoint a run resumes from).
///
/// # Errors
/// [`Error::Io`].
pub fn trim_metrics(dir: &Path, step: usize) -> Result<()> {
    let p = dir.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(&p, kept.as_bytes())
}
