//! MSN training: causal-LM fine-tuning where the input carries a noised response segment
//! ([`crate::noise`]) and the labels stay clean. With [`crate::noise::NoNoise`] it is plain SFT.
//!
//! [`Trainer`] implements [`MsnTrainer`] on any burn autodiff backend: AdamW, linear warm-up then
//! cosine decay, gradient clipping, gradient accumulation, right-padded batches with the loss on
//! response positions only, evaluation on clean inputs, a progress line, metrics as JSONL, and
//! atomic checkpoints that resume bit for bit. With [`TrainConfig::lora`] only low-rank adapters
//! are trained (the rest frozen) and merged into the weights at the end.
//!
//! Data parallel (feature `collective`): [`train_data_parallel`] runs one worker per device as
//! threads of this process; with [`World::network`] each worker is a process of its own, on this
//! machine or others, joined through burn's orchestrator ([`run_orchestrator`]). Either way
//! every step's gradients are summed by burn's collective all-reduce, every worker takes the
//! same AdamW step, and worker 0 writes the checkpoints (a run resumes on any worker count).
//!
//! A worker process (rank 1 of 2; the orchestrator runs `run_orchestrator(3000)` on `host0`):
//! ```no_run
//! use msn::noise::AheadNoise;
//! use msn::train::{MsnTrainer, Network, TrainConfig, Trainer, World};
//! # fn run(model: msn::Llama<burn::backend::Autodiff<burn::backend::NdArray>>,
//! #        samples: Vec<msn::train::TrainSample>) -> msn::Result<()> {
//! let mut trainer = Trainer {
//!     config: TrainConfig {
//!         grad_accum: 2, // micro-batches a step, over all workers
//!         out_dir: Some("runs/dp".into()),
//!         world: World {
//!             workers: 2,
//!             rank: 1,
//!             network: Some(Network::new("ws://host0:3000", "host1", 3001)),
//!         },
//!         ..Default::default()
//!     },
//!     noise: AheadNoise::default(),
//! };
//! let (_model, _report) = trainer.train(model, &samples, &[])?;
//! # Ok(()) }
//! ```

mod checkpoint;
#[cfg(feature = "collective")]
mod collective;
mod data;
mod data_parallel;
mod distill;
mod memory;
mod orchestrator;
mod trainer;
mod world;

pub use crate::model::{LoraConfig, LoraTarget};
pub use data::{Dataset, TrainSample, load_jsonl, sample_from_messages, windows};
pub use data_parallel::train_data_parallel;
pub use distill::{DistillRun, Distilled, self_distill};
pub use memory::reuse_freed_memory;
pub use orchestrator::run_orchestrator;
pub use trainer::{
    DenoiseAccuracy, MsnTrainer, TrainConfig, TrainReport, Trainer, denoise_accuracy, eval_loss,
};
pub use world::{Network, World};
