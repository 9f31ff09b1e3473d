//! What the training tests share: a learnable toy task, a seeded tiny model, its weights.

use burn::backend::Autodiff;
use msn::train::TrainSample;
use msn::{Llama, LlamaConfig};

/// The autodiff backend the training tests run on.
pub type AB = Autodiff<super::B>;

/// Samples of a learnable pattern: a random "prompt" then a response that counts upward.
pub fn samples(n: usize, seed: u32) -> Vec<TrainSample> {
    (0..n as u32)
        .map(|i| {
            let p = 3 + (i * 7 + seed) % 5;
            let mut tokens: Vec<u32> = (0..p).map(|j| (i * 13 + j * 5 + seed) % 32).collect();
            let start = (i + seed) % 20;
            tokens.extend((0..12).map(|k| 32 + (start + k) % 30));
            TrainSample {
                response: p as usize..tokens.len(),
                tokens,
            }
        })
        .collect()
}

/// A random tiny model. The backend's generator is process-wide and tests run in parallel:
/// seeding and drawing happen under one lock, and runs that must start from the same weights
/// clone one model all the same.
pub fn model(seed: u64) -> Llama<AB> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    let d = Default::default();
    <AB as burn::tensor::backend::Backend>::seed(&d, seed);
    Llama::init(&LlamaConfig::tiny(64), &d)
}

pub fn weights(m: &Llama<AB>) -> Vec<f32> {
    msn::__internal::named_tensors(m)
        .into_iter()
        .flat_map(|(_, _, v)| v)
        .collect()
}
