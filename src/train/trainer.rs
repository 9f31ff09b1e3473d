use crate::error::{Error, Result};
use crate::model::{CausalLm, ForwardInput, Llama, LoraConfig};
use crate::noise::NoiseAugmenter;
use crate::rng::Rng;
use crate::train::TrainSample;
use crate::train::checkpoint::{self, TrainerState};
use crate::train::data_parallel;
use crate::train::world::World;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Hyper-parameters and bookkeeping of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate as a fraction of the peak (cosine floor).
    pub min_lr_ratio: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Optimizer steps in total.
    pub steps: usize,
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// Clip each parameter's gradient to this L2 norm (burn's per-tensor clipping).
    pub grad_clip: Option<f32>,
    /// Seed of the data order and the noise.
    pub seed: u64,
    /// Batch samples of similar length (sorted within runs of 32 batches of each epoch's seeded
    /// permutation, batches then in a seeded order), so that less of each batch is padding.
    pub group_by_length: bool,
    /// Evaluate on the clean held-out set every this many steps (0: only at the end).
    pub eval_every: usize,
    /// Checkpoint every this many steps (0: only at the end); needs `out_dir`.
    pub checkpoint_every: usize,
    /// Checkpoints (`step-NNNNNN/`, `latest`) and `metrics.jsonl`; resumes from `latest` here.
    pub out_dir: Option<PathBuf>,
    /// Print a progress line (loss, tokens/s, ETA) to stderr.
    pub progress: bool,
    /// Stop (after checkpointing) once this many steps are done in total, as if killed; for
    /// tests and time-sliced jobs. `None`: run to `steps`.
    pub stop_at: Option<usize>,
    /// Train LoRA adapters (seeded by `seed`) instead of every weight: the rest of the model is
    /// frozen, only the adapters get gradients and AdamW state, checkpoints carry them, the
    /// returned model has them merged into its weights, and with `out_dir` they are also written
    /// to `out_dir/adapter` in PEFT's layout ([`Llama::apply_lora_adapter`] reads it back).
    /// `None`: full fine-tuning.
    pub lora: Option<LoraConfig>,
    /// This process's place in a data-parallel run ([`World`]); the default, one worker, is a
    /// plain run. [`train_data_parallel`](crate::train::train_data_parallel) sets it for each
    /// worker it starts.
    pub world: World,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 3e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 10,
            steps: 100,
            batch_size: 4,
            grad_accum: 1,
            weight_decay: 0.01,
            grad_clip: Some(1.0),
            seed: 0,
            group_by_length: false,
            eval_every: 0,
            checkpoint_every: 0,
            out_dir: None,
            progress: false,
            stop_at: None,
            lora: None,
            world: World::default(),
        }
    }
}

impl TrainConfig {
    /// Learning rate at optimizer step `step` (0-based): linear warm-up, then cosine decay to
    /// `lr * min_lr_ratio` at the last step.
    pub fn lr_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let p = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }

    fn check(&self, n_train: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch_size and grad_accum must be at least 1".into());
        }
        if n_train < self.batch_size {
            return bad(format!(
                "{n_train} training samples for batches of {}; give more data or a smaller batch",
                self.batch_size
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("learning rate {} must be positive", self.lr));
        }
        if let Some(l) = &self.lora {
            l.check()?;
        }
        self.world.check(self.grad_accum)
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainReport {
    /// Optimizer steps completed (in total, across resumes).
    pub steps: usize,
    /// Training loss of every optimizer step (mean over its micro-batches), from step 1.
    pub losses: Vec<f32>,
    /// `(step, clean held-out loss)`.
    pub eval: Vec<(usize, f32)>,
    /// Training tokens per second in this process.
    pub tokens_per_s: f64,
    /// Training tokens read in total (noised inputs, padding excluded), across resumes.
    #[serde(default)]
    pub tokens: usize,
    /// The step a checkpoint was resumed from, if any.
    pub resumed_from: Option<usize>,
    /// Data-parallel runs: seconds this worker spent in the all-reduce of gradients (including
    /// waiting for the slowest worker), in this process.
    #[serde(default)]
    pub all_reduce_s: f64,
    /// Data-parallel runs: bytes of gradients each worker contributes to the all-reduce per
    /// step (f32; with LoRA only the adapters').
    #[serde(default)]
    pub all_reduce_bytes: usize,
}

/// Trains a model with noise-augmented inputs and clean labels.
pub trait MsnTrainer<B: AutodiffBackend> {
    /// Trains `model` on `train`, evaluating on clean `eval`; returns the trained model.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unusable configuration; [`Error::Io`] and
    /// [`Error::InvalidCheckpoint`] for checkpoint trouble.
    fn train(
        &mut self,
        model: Llama<B>,
        train: &[TrainSample],
        eval: &[TrainSample],
    ) -> Result<(Llama<B>, TrainReport)>;
}

/// The trainer: a [`TrainConfig`] and a noise scheme.
#[derive(Debug, Clone)]
pub struct Trainer<N> {
    /// Hyper-parameters.
    pub config: TrainConfig,
    /// Noise applied to each sample's input.
    pub noise: N,
}

/// A padded batch: inputs, the flat positions (`row * t + i`) whose next token is trained, those
/// tokens, and the real tokens read.
struct Batch<B: Backend> {
    input: Tensor<B, 2, Int>,
    /// `[n]` indices into the `[b * t]` positions of `input`.
    trained: Tensor<B, 1, Int>,
    /// `[1, n, 1]` clean next tokens of the trained positions.
    targets: Tensor<B, 3, Int>,
    /// `n`.
    positions: usize,
    tokens: usize,
}

fn make_batch<B: Backend>(
    inputs: &[Vec<u32>],
    samples: &[&TrainSample],
    device: &B::Device,
) -> Batch<B> {
    let t = inputs.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let (mut at, mut tg) = (Vec::new(), Vec::new());
    let tokens = inputs.iter().map(Vec::len).sum();
    for (r, s) in samples.iter().enumerate() {
        // Position i predicts clean token i + 1; only response tokens are trained.
        for i in 0..s.tokens.len().saturating_sub(1) {
            if s.response.contains(&(i + 1)) {
                at.push((r * t + i) as i64);
                tg.push(i64::from(s.tokens[i + 1]));
            }
        }
    }
    let n = at.len();
    Batch {
        input: padded_ids(inputs, device),
        trained: Tensor::from_data(TensorData::new(at, [n]), device),
        targets: Tensor::<B, 1, Int>::from_data(TensorData::new(tg, [n]), device)
            .reshape([1, n, 1]),
        positions: n,
        tokens,
    }
}

/// Right-padded token ids `[b, t]` (padding id 0; `t` the longest input).
fn padded_ids<B: Backend>(inputs: &[Vec<u32>], device: &B::Device) -> Tensor<B, 2, Int> {
    let t = inputs.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut ids = vec![0i64; inputs.len() * t];
    for (r, inp) in inputs.iter().enumerate() {
        for (i, &x) in inp.iter().enumerate() {
            ids[r * t + i] = i64::from(x);
        }
    }
    Tensor::from_data(TensorData::new(ids, [inputs.len(), t]), device)
}

/// Hidden states at every position of a right-padded batch, from a fresh cache (causal
/// attention; right padding needs no mask beyond that).
fn hidden_all<B: Backend>(model: &Llama<B>, input: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    let [b, t] = input.dims();
    let device = input.device();
    let pos: Vec<i64> = (0..b).flat_map(|_| 0..t as i64).collect();
    let mut cache = model.new_cache(b, t);
    model.hidden(
        ForwardInput {
            tokens: input,
            positions: Tensor::from_data(TensorData::new(pos, [b, t]), &device),
            mask: None,
        },
        &mut cache,
    )
}

/// Logits at every position of a right-padded batch.
fn forward_all<B: Backend>(model: &Llama<B>, input: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    model.logits(hidden_all(model, input))
}

/// Mean cross-entropy over the trained positions. Only their hidden rows go through the output
/// head and the softmax (the response: about half of a chat sample's positions).
fn batch_loss<B: Backend>(model: &Llama<B>, batch: Batch<B>) -> Tensor<B, 1> {
    let hidden = hidden_all(model, batch.input);
    if batch.positions == 0 {
        // Nothing trained: a zero that still belongs to the graph.
        return hidden.sum() * 0.0;
    }
    let [b, t, d] = hidden.dims();
    let rows = hidden
        .reshape([b * t, d])
        .select(0, batch.trained)
        .unsqueeze_dim::<3>(0);
    let logp = log_softmax(model.logits(rows), 2).gather(2, batch.targets);
    logp.sum().neg() / batch.positions as f64
}

/// Mean clean cross-entropy of `model` over the response tokens of `samples` (no noise, no
/// gradients), in batches of `batch_size`.
pub fn eval_loss<B: Backend>(model: &Llama<B>, samples: &[TrainSample], batch_size: usize) -> f32 {
    let device = model.device();
    let (mut total, mut count) = (0f64, 0f64);
    for chunk in samples.chunks(batch_size.max(1)) {
        let refs: Vec<&TrainSample> = chunk.iter().collect();
        let inputs: Vec<Vec<u32>> = chunk.iter().map(|s| s.tokens.clone()).collect();
        let batch = make_batch::<B>(&inputs, &refs, &device);
        let n = batch.positions as f64;
        let l: f32 = batch_loss(model, batch).into_scalar().elem();
        total += f64::from(l) * n;
        count += n;
    }
    (total / count.max(1.0)) as f32
}

/// How well a model reads through noise: top-1 accuracy of the clean next token at the positions
/// a [`NoiseAugmenter`] replaces, once reading the noisy input and once reading the clean one.
/// MSN training should raise `noised` (that is the denoising Jacobi decoding relies on) while
/// leaving `clean` where plain SFT has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DenoiseAccuracy {
    /// Top-1 accuracy of the clean next token at noised positions, reading the noise.
    pub noised: f64,
    /// Top-1 accuracy at the same positions, reading the clean sequence.
    pub clean: f64,
    /// Noised positions counted.
    pub positions: usize,
}

/// Greedy next-token ids `[b, t]` of a right-padded batch, row-major.
fn argmax_ids<B: Backend>(model: &Llama<B>, inputs: &[Vec<u32>]) -> Vec<u32> {
    crate::logits::argmax(forward_all(model, padded_ids(inputs, &model.device())))
}

/// [`DenoiseAccuracy`] of `model` over `samples`, each noised once by `noise` with a generator
/// seeded by `seed` (reproducible), in batches of `batch_size`.
pub fn denoise_accuracy<B: Backend, N: NoiseAugmenter>(
    model: &Llama<B>,
    samples: &[TrainSample],
    noise: &N,
    seed: u64,
    batch_size: usize,
) -> DenoiseAccuracy {
    let mut rng = Rng::new(seed);
    let (mut hit_noised, mut hit_clean, mut n) = (0usize, 0usize, 0usize);
    for chunk in samples.chunks(batch_size.max(1)) {
        let noised: Vec<_> = chunk
            .iter()
            .map(|s| noise.augment(&s.tokens, s.response.clone(), &mut rng))
            .collect();
        let inputs: Vec<Vec<u32>> = noised.iter().map(|x| x.input.clone()).collect();
        let clean: Vec<Vec<u32>> = chunk.iter().map(|s| s.tokens.clone()).collect();
        let (pn, pc) = (argmax_ids(model, &inputs), argmax_ids(model, &clean));
        // Row length of the padded batch.
        let t = pn.len() / chunk.len();
        for (r, x) in noised.iter().enumerate() {
            for i in x.segment.clone().unwrap_or(0..0) {
                // Position i predicts token i + 1; the segment never covers the last token.
                let Some(&want) = x.labels.get(i + 1) else {
                    continue;
                };
                n += 1;
                hit_noised += usize::from(pn[r * t + i] == want);
                hit_clean += usize::from(pc[r * t + i] == want);
            }
        }
    }
    let frac = |h: usize| h as f64 / n.max(1) as f64;
    DenoiseAccuracy {
        noised: frac(hit_noised),
        clean: frac(hit_clean),
        positions: n,
    }
}

/// Sample indices of micro-batch `g`: epochs are seeded permutations of the samples (the last
/// partial batch of an epoch is dropped), so any micro-batch is found from its index alone. With
/// `lengths`, each run of [`GROUP`] batches of the permutation is sorted by length before it is
/// cut into batches, and the epoch's batches are then put in a seeded order: batches of similar
/// lengths, little padding, still a random order.
fn micro_batch(g: usize, n: usize, bs: usize, seed: u64, lengths: Option<&[usize]>) -> Vec<usize> {
    let per_epoch = n / bs;
    let (epoch, k) = (g / per_epoch, g % per_epoch);
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    for i in (1..n).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let Some(len) = lengths else {
        return order[k * bs..(k + 1) * bs].to_vec();
    };
    order.truncate(per_epoch * bs);
    for run in order.chunks_mut(GROUP * bs) {
        run.sort_by_key(|&i| std::cmp::Reverse(len[i]));
    }
    let mut batches: Vec<usize> = (0..per_epoch).collect();
    for i in (1..per_epoch).rev() {
        batches.swap(i, rng.below(i + 1));
    }
    let b = batches[k];
    order[b * bs..(b + 1) * bs].to_vec()
}

/// Batches per length-sorted run in [`micro_batch`].
const GROUP: usize = 32;

impl<N: NoiseAugmenter> Trainer<N> {
    /// The gradients of optimizer step `step` (its `grad_accum` micro-batches, noised by
    /// `noise_rng`; `lengths` of the samples when batches are grouped by length), the step's
    /// loss and the tokens it read.
    fn step_gradients<B: AutodiffBackend>(
        &self,
        model: &Llama<B>,
        train: &[TrainSample],
        lengths: Option<&[usize]>,
        step: usize,
        noise_rng: &mut Rng,
    ) -> (GradientsParams, f32, usize) {
        let c = &self.config;
        let device = model.device();
        let mut acc = GradientsAccumulator::<Llama<B>>::new();
        let (mut step_loss, mut tokens) = (0f32, 0usize);
        for a in 0..c.grad_accum {
            let g = step * c.grad_accum + a;
            let idx = micro_batch(g, train.len(), c.batch_size, c.seed, lengths);
            let samples: Vec<&TrainSample> = idx.iter().map(|&i| &train[i]).collect();
            // Every worker draws the noise of every micro-batch, so that each sample gets the
            // noise a single worker would give it; each computes its own share of the batches.
            let inputs: Vec<Vec<u32>> = samples
                .iter()
                .map(|s| {
                    self.noise
                        .augment(&s.tokens, s.response.clone(), noise_rng)
                        .input
                })
                .collect();
            if !c.world.computes(a) {
                continue;
            }
            let batch = make_batch::<B>(&inputs, &samples, &device);
            tokens += batch.tokens;
            let loss = batch_loss(model, batch) / c.grad_accum as f64;
            step_loss += loss.clone().into_scalar().elem::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), model);
            acc.accumulate(model, grads);
        }
        (acc.grads(), step_loss, tokens)
    }
}

impl<B: AutodiffBackend, N: NoiseAugmenter> MsnTrainer<B> for Trainer<N> {
    fn train(
        &mut self,
        mut model: Llama<B>,
        train: &[TrainSample],
        eval: &[TrainSample],
    ) -> Result<(Llama<B>, TrainReport)> {
        let c = self.config.clone();
        c.check(train.len())?;
        if let Some(l) = &c.lora {
            model = model.with_lora(l, c.seed.wrapping_add(2));
        }
        let mut adam = AdamWConfig::new().with_weight_decay(c.weight_decay);
        if let Some(g) = c.grad_clip {
            adam = adam.with_grad_clipping(Some(GradientClippingConfig::Norm(g)));
        }
        let (mut model, mut optim, mut state) = resume(&c, model, adam.init::<B, Llama<B>>())?;
        let _member = data_parallel::join::<B>(&c.world, &model)?;
        let mut metrics = match c.world.leads() {
            true => open_metrics(c.out_dir.as_deref())?,
            false => None,
        };
        let started = Instant::now();
        let first_step = state.step;
        let mut tokens_seen = 0usize;
        let last = c.stop_at.unwrap_or(c.steps).min(c.steps);
        let lengths: Option<Vec<usize>> = c
            .group_by_length
            .then(|| train.iter().map(|s| s.tokens.len()).collect());
        while state.step < last {
            let step = state.step;
            let lr = c.lr_at(step);
            let local = self.step_gradients(
                &model,
                train,
                lengths.as_deref(),
                step,
                &mut state.noise_rng,
            );
            // The workers' shares summed: every worker then takes the same optimizer step.
            let (grads, step_loss, tokens) =
                data_parallel::all_reduce(&model, local, &c.world, &mut state.report)?;
            tokens_seen += tokens;
            state.report.tokens += tokens;
            model = optim.step(lr, model, grads);
            state.step += 1;
            state.report.losses.push(step_loss);
            let mut eval_now = None;
            if c.world.leads()
                && !eval.is_empty()
                && ((c.eval_every > 0 && state.step.is_multiple_of(c.eval_every))
                    || state.step == c.steps)
            {
                let l = eval_loss(&model.valid(), eval, c.batch_size);
                state.report.eval.push((state.step, l));
                eval_now = Some(l);
            }
            let secs = started.elapsed().as_secs_f64();
            let rate = tokens_seen as f64 / secs.max(1e-9);
            if let Some(f) = metrics.as_mut() {
                let line = serde_json::json!({"step": state.step, "lr": lr, "loss": step_loss,
                    "tokens_per_s": rate, "eval_loss": eval_now});
                writeln!(f, "{line}").map_err(|e| Error::io("metrics.jsonl", e))?;
            }
            if c.progress && c.world.leads() {
                let eta = secs / (state.step - first_step) as f64 * (last - state.step) as f64;
                progress(state.step, c.steps, step_loss, eval_now, rate, eta);
            }
            let due = (c.checkpoint_every > 0 && state.step.is_multiple_of(c.checkpoint_every))
                || state.step == last;
            if let (Some(dir), true, true) = (&c.out_dir, due, c.world.leads()) {
                checkpoint::save(dir, &model, &optim, &state)?;
            }
        }
        if c.progress && c.world.leads() {
            eprintln!();
        }
        state.report.steps = state.step;
        state.report.tokens_per_s = tokens_seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
        Ok((finish_lora(model, &c)?, state.report))
    }
}

/// `model`, `optim` and the trainer's state at the start: fresh, or as the latest checkpoint in
/// `c.out_dir` left them (then `metrics.jsonl` is cut back to that step).
fn resume<B: AutodiffBackend, O: Optimizer<Llama<B>, B> + Clone>(
    c: &TrainConfig,
    model: Llama<B>,
    optim: O,
) -> Result<(Llama<B>, O, TrainerState)> {
    let fresh = TrainerState {
        step: 0,
        noise_rng: Rng::new(c.seed.wrapping_add(1)),
        report: TrainReport::default(),
    };
    let Some(dir) = &c.out_dir else {
        return Ok((model, optim, fresh));
    };
    let device = model.device();
    match checkpoint::load_latest(dir, model.clone(), optim.clone(), &device)? {
        Some((model, optim, mut state)) => {
            state.report.resumed_from = Some(state.step);
            if c.world.leads() {
                checkpoint::trim_metrics(dir, state.step)?;
            }
            Ok((model, optim, state))
        }
        None => Ok((model, optim, fresh)),
    }
}

/// A LoRA run's model with its adapters written to `out_dir/adapter` (when there is an
/// `out_dir`) and merged; any other model as it is.
fn finish_lora<B: Backend>(model: Llama<B>, c: &TrainConfig) -> Result<Llama<B>> {
    let Some(l) = c.lora.as_ref().filter(|_| model.has_lora()) else {
        return Ok(model);
    };
    if let (Some(dir), true) = (&c.out_dir, c.world.leads()) {
        crate::model::adapter::save_adapter(&model, l, &dir.join("adapter"))?;
    }
    Ok(model.merge_lora())
}

/// The metrics file in `out_dir` (created, appended to), or `None` without one.
fn open_metrics(out_dir: Option<&std::path::Path>) -> Result<Option<std::fs::File>> {
    let Some(dir) = out_dir else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let p = dir.join("metrics.jsonl");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    Ok(Some(f))
}

/// The progress line after optimizer step `step` of `steps`.
fn progress(step: usize, steps: usize, loss: f32, eval: Option<f32>, rate: f64, eta: f64) {
    let eval = eval.map_or(String::new(), |l| format!("  eval {l:.4}"));
    eprint!(
        "\r[{step:>5}/{steps}] {} loss {loss:.4}{eval}  {rate:.0} tok/s  ETA {eta:.0}s   ",
        bar(step, steps)
    );
}

fn bar(done: usize, total: usize) -> String {
    let w = 24;
    let f = (done * w) / total.max(1);
    format!("[{}{}]", "#".repeat(f), "-".repeat(w - f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = TrainConfig {
            lr: 1.0,
            warmup_steps: 4,
            steps: 14,
            min_lr_ratio: 0.1,
            ..Default::default()
        };
        assert!((c.lr_at(0) - 0.25).abs() < 1e-12);
        assert!((c.lr_at(3) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(4) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(9) - 0.55).abs() < 1e-12);
        assert!((c.lr_at(14) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn micro_batches_cover_each_epoch_once() {
        let mut seen: Vec<usize> = (0..5)
            .flat_map(|g| micro_batch(g, 10, 2, 7, None))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_ne!(
            micro_batch(5, 10, 2, 7, None),
            micro_batch(0, 10, 2, 7, None)
        );
    }

    #[test]
    fn grouped_batches_cover_each_epoch_once_with_little_padding() {
        let mut rng = Rng::new(3);
        let (n, bs) = (1000, 8);
        let len: Vec<usize> = (0..n).map(|_| 20 + rng.below(300)).collect();
        let padded = |grouped: bool| -> usize {
            let mut seen = Vec::new();
            let mut total = 0;
            for g in 0..n / bs {
                let b = micro_batch(g, n, bs, 7, grouped.then_some(&len[..]));
                total += bs * b.iter().map(|&i| len[i]).max().unwrap();
                seen.extend(b);
            }
            seen.sort_unstable();
            assert_eq!(
                seen,
                (0..n).collect::<Vec<_>>(),
                "each sample once an epoch"
            );
            total
        };
        let (plain, grouped) = (padded(false), padded(true));
        let real: usize = len.iter().sum();
        // Sorted runs of 256 samples leave little padding; random batches of 8 leave a lot.
        assert!(grouped < real * 21 / 20, "grouped {grouped} vs real {real}");
        assert!(plain > real * 3 / 2, "plain {plain} vs real {real}");
        // The order of batches is still shuffled: the first batches are not the longest.
        let first = micro_batch(0, n, bs, 7, Some(&len));
        let second_epoch = micro_batch(n / bs, n, bs, 7, Some(&len));
        assert_ne!(first, second_epoch);
    }
}
