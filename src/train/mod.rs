//! MSN training: causal-LM fine-tuning where the input carries a noised response segment
//! ([`crate::noise`]) and the labels stay clean. With [`crate::noise::NoNoise`] it is plain SFT.
//!
//! [`Trainer`] implements [`MsnTrainer`] on any burn autodiff backend: AdamW, linear warm-up then
//! cosine decay, gradient clipping, gradient accumulation, right-padded batches with the loss on
//! response positions only, evaluation on clean inputs, a progress line, metrics as JSONL, and
//! atomic checkpoints that resume bit for bit. With [`TrainConfig::lora`] only low-rank adapters
//! are trained (the rest frozen) and merged into the weights at the end.

mod checkpoint;
mod data;
mod data_parallel;
mod distill;
mod memory;
mod trainer;

pub use crate::model::{LoraConfig, LoraTarget};
pub use data::{Dataset, TrainSample, load_jsonl, sample_from_messages, windows};
pub use data_parallel::{World, train_data_parallel};
pub use distill::{DistillRun, Distilled, self_distill};
pub use memory::reuse_freed_memory;
pub use trainer::{
    DenoiseAccuracy, MsnTrainer, TrainConfig, TrainReport, Trainer, denoise_accuracy, eval_loss,
};
