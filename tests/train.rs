//! MSN training: exact resume after a stop, typed errors for bad data and bad checkpoints, and
//! the loss going down on a learnable task.

mod common;
use burn::module::AutodiffModule;
use common::training::{AB, model, samples, weights};
use common::{B, smollm2};
use msn::noise::{AheadNoise, NoNoise};
use msn::train::{LoraConfig, LoraTarget, MsnTrainer, TrainConfig, Trainer, load_jsonl};
use msn::{Decoder, Llama, LlamaConfig};

fn config(dir: &std::path::Path) -> TrainConfig {
    TrainConfig {
        lr: 3e-3,
        warmup_steps: 2,
        steps: 8,
        batch_size: 4,
        grad_accum: 2,
        checkpoint_every: 2,
        eval_every: 4,
        out_dir: Some(dir.to_path_buf()),
        seed: 5,
        ..Default::default()
    }
}

#[test]
fn a_stopped_run_resumes_bit_for_bit() {
    let (train, eval) = (samples(24, 0), samples(8, 99));
    let init = model(1);
    let straight = tempfile::tempdir().unwrap();
    let mut t = Trainer {
        config: config(straight.path()),
        noise: AheadNoise::default(),
    };
    let (m_a, r_a) = t.train(init.clone(), &train, &eval).unwrap();
    assert_eq!(r_a.losses.len(), 8);

    let stopped = tempfile::tempdir().unwrap();
    let mut c = config(stopped.path());
    c.stop_at = Some(5); // stops after step 5; the checkpoint at step 4 and one at 5 exist
    let mut t = Trainer {
        config: c,
        noise: AheadNoise::default(),
    };
    let (_, r_stop) = t.train(init.clone(), &train, &eval).unwrap();
    assert_eq!(r_stop.losses, r_a.losses[..5]);
    // A torn checkpoint (killed while writing) is ignored: `latest` still names step 5.
    std::fs::create_dir_all(stopped.path().join("step-000006.tmp")).unwrap();
    std::fs::write(stopped.path().join("step-000006.tmp/model.bin"), b"torn").unwrap();
    let mut t = Trainer {
        config: config(stopped.path()),
        noise: AheadNoise::default(),
    };
    // A different initialisation proves the weights come from the checkpoint.
    let (m_b, r_b) = t.train(model(2), &train, &eval).unwrap();
    assert_eq!(r_b.resumed_from, Some(5));
    assert_eq!(r_b.losses, r_a.losses, "losses after resume");
    assert_eq!(r_b.eval, r_a.eval);
    assert_eq!(weights(&m_b), weights(&m_a), "final weights");
    // The checkpoint is also a Hugging Face directory this crate loads.
    assert_eq!(latest_checkpoint_weights(stopped.path()), weights(&m_b));
    // metrics.jsonl has one line per step, no duplicates from the stopped run.
    let lines = std::fs::read_to_string(stopped.path().join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 8);
}

/// Every weight of the Hugging Face copy of the latest checkpoint in `dir`, as this crate loads it.
fn latest_checkpoint_weights(dir: &std::path::Path) -> Vec<f32> {
    let latest = std::fs::read_to_string(dir.join("latest")).unwrap();
    let back = msn::load_weights::<B>(
        &dir.join(latest.trim()),
        &Default::default(),
        msn::WeightDtype::F32,
    )
    .unwrap();
    msn::__internal::named_tensors(&back)
        .into_iter()
        .flat_map(|(_, _, v)| v)
        .collect()
}

/// Names and values of every tensor of a model, as its Hugging Face export holds them.
fn named(m: &Llama<AB>) -> Vec<(String, Vec<f32>)> {
    msn::__internal::named_tensors(m)
        .into_iter()
        .map(|(n, _, v)| (n, v))
        .collect()
}

#[test]
fn lora_trains_only_the_adapted_projections_and_resumes_bit_for_bit() {
    let (train, eval) = (samples(24, 0), samples(8, 99));
    let init = model(4);
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: vec![LoraTarget::Q, LoraTarget::V, LoraTarget::Up],
    };
    let with_lora = |dir: &std::path::Path| TrainConfig {
        lr: 1e-2,
        lora: Some(lora.clone()),
        group_by_length: true,
        ..config(dir)
    };
    let straight = tempfile::tempdir().unwrap();
    let mut t = Trainer {
        config: with_lora(straight.path()),
        noise: AheadNoise::default(),
    };
    let before = msn::train::eval_loss(&init.valid(), &eval, 4);
    let (m_a, r_a) = t.train(init.clone(), &train, &eval).unwrap();
    let after = msn::train::eval_loss(&m_a.valid(), &eval, 4);
    assert!(after < before, "clean eval loss {before} -> {after}");
    // Only the targeted projections moved (merged into their weights); the rest is bit for bit
    // the initial model.
    let targeted = ["self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj"];
    for ((name, a), (_, b)) in named(&init).into_iter().zip(named(&m_a)) {
        if targeted.iter().any(|t| name.contains(t)) {
            assert_ne!(a, b, "{name} should have moved");
        } else {
            assert_eq!(a, b, "{name} should be frozen");
        }
    }
    // Stopped after step 3, resumed (from a different initialisation, which the checkpoint
    // overrides): the same losses and the same merged weights.
    let stopped = tempfile::tempdir().unwrap();
    let mut c = with_lora(stopped.path());
    c.stop_at = Some(3);
    let mut t = Trainer {
        config: c,
        noise: AheadNoise::default(),
    };
    t.train(init.clone(), &train, &eval).unwrap();
    let mut t = Trainer {
        config: with_lora(stopped.path()),
        noise: AheadNoise::default(),
    };
    let (m_b, r_b) = t.train(model(5), &train, &eval).unwrap();
    assert_eq!(r_b.resumed_from, Some(3));
    assert_eq!(r_b.losses, r_a.losses);
    assert_eq!(weights(&m_b), weights(&m_a));
    // The checkpoint's Hugging Face copy is the merged model.
    assert_eq!(latest_checkpoint_weights(stopped.path()), weights(&m_b));
}

#[test]
fn a_corrupt_checkpoint_is_a_typed_error() {
    let (train, eval) = (samples(8, 0), samples(4, 9));
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.stop_at = Some(2);
    let mut t = Trainer {
        config: c,
        noise: NoNoise,
    };
    t.train(model(1), &train, &eval).unwrap();
    std::fs::write(dir.path().join("step-000002/optimizer.bin"), b"garbage").unwrap();
    let mut t = Trainer {
        config: config(dir.path()),
        noise: NoNoise,
    };
    match t.train(model(1), &train, &eval) {
        Err(msn::Error::InvalidCheckpoint { .. }) => {}
        other => panic!("expected InvalidCheckpoint, got {:?}", other.map(|r| r.1)),
    }
}

#[test]
fn training_lowers_the_clean_loss() {
    let (train, eval) = (samples(48, 0), samples(12, 77));
    let mut c = TrainConfig {
        lr: 3e-3,
        warmup_steps: 3,
        steps: 40,
        batch_size: 8,
        ..Default::default()
    };
    c.eval_every = 40;
    let init = model(3);
    let before = msn::train::eval_loss(&init.valid(), &eval, 8);
    let mut t = Trainer {
        config: c,
        noise: AheadNoise::default(),
    };
    let (m, r) = t.train(init, &train, &eval).unwrap();
    let after = msn::train::eval_loss(&m.valid(), &eval, 8);
    assert_eq!(r.eval.last().unwrap().1, after);
    assert!(after < before * 0.7, "clean eval loss {before} -> {after}");
}

#[test]
fn jsonl_data_masks_prompts_and_names_bad_lines() {
    let m = smollm2();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("d.jsonl");
    std::fs::write(
        &f,
        concat!(
            "{\"prompt\": \"Say hi\", \"response\": \"Hi!\"}\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n",
            "not json\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"no answer\"}]}\n",
        ),
    )
    .unwrap();
    match load_jsonl(&f, &m.tokenizer, 256, false) {
        Err(msn::Error::MalformedInput { line, .. }) => assert_eq!(line, 3),
        other => panic!("{other:?}"),
    }
    let ds = load_jsonl(&f, &m.tokenizer, 256, true).unwrap();
    assert_eq!(ds.samples.len(), 2);
    assert_eq!(
        ds.skipped.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![3, 4]
    );
    let s = &ds.samples[0];
    // The prompt part is exactly the chat template's generation prompt.
    let prompt = m
        .tokenizer
        .apply_chat_template(&[msn::Message::new("user", "Say hi")], true)
        .unwrap();
    assert_eq!(
        s.tokens[..s.response.start],
        m.tokenizer.encode(&prompt).unwrap()[..]
    );
    let answer = m.tokenizer.decode(&s.tokens[s.response.clone()]).unwrap();
    assert!(answer.starts_with("Hi!"), "{answer:?}");
}

#[test]
fn self_distillation_trains_on_the_models_own_greedy_answers() {
    let m = smollm2();
    let prompts = vec![
        "Name three colors.".to_string(),
        "What is 2+2? Answer in one sentence.".to_string(),
    ];
    let mut dec = msn::PromptLookup::default();
    let mut calls = 0;
    let d = msn::train::self_distill(
        &m.model,
        &m.tokenizer,
        &mut dec,
        &prompts,
        24,
        256,
        |_, _| calls += 1,
    )
    .unwrap();
    assert_eq!(calls, 2);
    assert_eq!(d.samples.len(), 2, "{:?}", d.skipped);
    for (s, p) in d.samples.iter().zip(&prompts) {
        let ids = m.chat_prompt(p).unwrap();
        let g = msn::Greedy
            .generate(
                &m.model,
                Some(&m.tokenizer),
                &ids,
                &msn::GenerateConfig::new(24, &m.tokenizer),
            )
            .unwrap();
        assert_eq!(s.tokens[..s.response.start], ids[..]);
        let answer = m.tokenizer.decode(&s.tokens[s.response.clone()]).unwrap();
        assert!(answer.starts_with(&g.text), "{answer:?} vs {:?}", g.text);
    }
}

#[test]
fn batched_distillation_equals_greedy_and_resumes_without_generating_twice() {
    let m = smollm2();
    let prompts: Vec<String> = [
        "Name three colors.",
        "What is 2+2? Answer in one sentence.",
        "Say hello in French.",
        "Name a fruit that is yellow.",
        "Count from one to five.",
    ]
    .map(String::from)
    .to_vec();
    let dir = tempfile::tempdir().unwrap();
    let run = |journal: &str| msn::train::DistillRun {
        batch_size: 2,
        max_new_tokens: 16,
        max_len: 256,
        journal: Some(dir.path().join(journal)),
    };
    let straight = run("a.jsonl")
        .run(&m.model, &m.tokenizer, &prompts, |_, _| {})
        .unwrap();
    assert_eq!(straight.samples.len(), 5, "{:?}", straight.skipped);
    // Each answer is the prompt's greedy answer decoded alone.
    let config = msn::GenerateConfig::new(16, &m.tokenizer);
    let mut alone_tokens = Vec::new();
    for (s, p) in straight.samples.iter().zip(&prompts) {
        let ids = m.chat_prompt(p).unwrap();
        let g = msn::Greedy
            .generate(&m.model, Some(&m.tokenizer), &ids, &config)
            .unwrap();
        assert_eq!(s.tokens[..s.response.start], ids[..]);
        let answer = m.tokenizer.decode(&s.tokens[s.response.clone()]).unwrap();
        assert!(answer.starts_with(&g.text), "{answer:?} vs {:?}", g.text);
        alone_tokens.push(g.tokens.len());
    }
    assert_eq!(straight.new_tokens, alone_tokens.iter().sum::<usize>());
    // Killed after three prompts, mid-way through writing the fourth's line: the rerun
    // generates only the last two and returns what the straight run did.
    run("b.jsonl")
        .run(&m.model, &m.tokenizer, &prompts[..3], |_, _| {})
        .unwrap();
    let journal = dir.path().join("b.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"i\":3,\"ha").unwrap();
    let mut progress = Vec::new();
    let resumed = run("b.jsonl")
        .run(&m.model, &m.tokenizer, &prompts, |d, n| {
            progress.push((d, n))
        })
        .unwrap();
    assert_eq!(progress, [(5, 5)], "one batch of the two missing prompts");
    assert_eq!(resumed.new_tokens, alone_tokens[3] + alone_tokens[4]);
    assert_eq!(resumed.samples, straight.samples);
    let lines = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(lines.lines().count(), 5, "the torn line is gone");
    // A journal written for other prompts is refused, naming the file and line.
    let mut other = prompts.clone();
    other.swap(0, 1);
    match run("a.jsonl").run(&m.model, &m.tokenizer, &other, |_, _| {}) {
        Err(msn::Error::MalformedInput { line: 1, .. }) => {}
        other => panic!(
            "expected MalformedInput at line 1, got {:?}",
            other.map(|d| d.samples.len())
        ),
    }
}

/// The kill test's worker: trains `model(1)` for `KILL_STEPS` steps with a checkpoint after every
/// step in `$MSN_KILL_DIR` (resuming from it if one is there) and writes the run's losses to
/// `losses.json` there. Does nothing unless started by `a_killed_run_resumes_bit_for_bit`.
#[test]
#[ignore = "worker process of a_killed_run_resumes_bit_for_bit, which starts it"]
fn kill_worker() {
    let Some(dir) = std::env::var_os("MSN_KILL_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let (train, eval) = (samples(24, 0), samples(8, 99));
    let mut c = config(&dir);
    c.steps = KILL_STEPS;
    c.checkpoint_every = 1;
    c.eval_every = 10;
    let mut t = Trainer {
        config: c,
        noise: AheadNoise::default(),
    };
    let (_, report) = t.train(model(1), &train, &eval).unwrap();
    std::fs::write(
        dir.join("losses.json"),
        serde_json::to_string(&(report.losses, report.eval, report.resumed_from)).unwrap(),
    )
    .unwrap();
}

const KILL_STEPS: usize = 60;

type Outcome = (Vec<f32>, Vec<(usize, f32)>, Option<usize>);

fn start_worker(dir: &std::path::Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "kill_worker", "--test-threads", "1"])
        .env("MSN_KILL_DIR", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn finished(dir: &std::path::Path) -> (Outcome, Vec<u8>) {
    let outcome: Outcome =
        serde_json::from_str(&std::fs::read_to_string(dir.join("losses.json")).unwrap()).unwrap();
    let last = dir.join(format!("step-{KILL_STEPS:06}/model.safetensors"));
    (outcome, std::fs::read(last).unwrap())
}

/// A training process killed with SIGKILL (at a point that varies, possibly while a checkpoint is
/// being written) resumes from its last complete checkpoint in a new process and ends with the
/// losses and weights of a run never interrupted, bit for bit.
#[test]
fn a_killed_run_resumes_bit_for_bit() {
    let straight = tempfile::tempdir().unwrap();
    assert!(start_worker(straight.path()).wait().unwrap().success());
    let ((losses, eval, resumed), weights) = finished(straight.path());
    assert_eq!((losses.len(), resumed), (KILL_STEPS, None));

    for delay_ms in [0u64, 45, 110] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = start_worker(dir.path());
        // Wait for a few checkpoints, then kill at a varying point.
        let started = std::time::Instant::now();
        loop {
            let latest = std::fs::read_to_string(dir.path().join("latest")).unwrap_or_default();
            if latest.trim() >= "step-000003" {
                break;
            }
            assert!(
                started.elapsed().as_secs() < 120,
                "the worker wrote no checkpoint"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            !dir.path().join("losses.json").exists(),
            "the worker finished before it was killed; raise KILL_STEPS"
        );
        assert!(start_worker(dir.path()).wait().unwrap().success());
        let ((l, e, r), w) = finished(dir.path());
        eprintln!("killed {delay_ms} ms after step 3: resumed from step {r:?}");
        assert!(r.is_some_and(|s| s >= 3), "resumed from {r:?}");
        assert_eq!(l, losses, "losses after a kill {delay_ms} ms after step 3");
        assert_eq!(e, eval);
        assert!(w == weights, "final weights differ after a kill");
        let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(
            metrics.lines().count(),
            KILL_STEPS,
            "one metrics line per step"
        );
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The paper's effect where it must show: on a counting task (each response token is the one
/// before plus one), a model trained with ahead noise predicts the clean next token at noised
/// positions far better than the same model trained as plain SFT, while both still predict clean
/// input; and `denoise_accuracy` counts exactly what one causal pass per noisy prefix predicts.
#[test]
fn msn_training_teaches_the_model_to_read_through_noise() {
    use msn::noise::NoiseAugmenter;
    use msn::train::denoise_accuracy;
    let (train, eval) = (samples(64, 0), samples(24, 77));
    let c = TrainConfig {
        lr: 3e-3,
        warmup_steps: 3,
        steps: 200,
        batch_size: 8,
        seed: 2,
        ..Default::default()
    };
    let init = model(4);
    let noise = AheadNoise { len: 3 };
    let sft = Trainer {
        config: c.clone(),
        noise: NoNoise,
    }
    .train(init.clone(), &train, &[])
    .unwrap()
    .0
    .valid();
    let msn = Trainer { config: c, noise }
        .train(init, &train, &[])
        .unwrap()
        .0
        .valid();
    let (a_sft, a_msn) = (
        denoise_accuracy(&sft, &eval, &noise, 9, 5),
        denoise_accuracy(&msn, &eval, &noise, 9, 5),
    );
    // Independent count: the same noise (same generator, samples in order), one prefix at a time.
    let mut rng = msn::noise::Rng::new(9);
    let (mut hits, mut n) = (0usize, 0usize);
    for s in &eval {
        let x = noise.augment(&s.tokens, s.response.clone(), &mut rng);
        for i in x.segment.clone().unwrap() {
            n += 1;
            hits +=
                usize::from(argmax(&common::last_logits(&msn, &x.input[..=i])) == x.labels[i + 1]);
        }
    }
    assert_eq!((a_msn.positions, a_sft.positions), (n, n));
    assert_eq!(a_msn.noised, hits as f64 / n as f64);
    eprintln!("SFT {a_sft:?}, MSN {a_msn:?}");
    assert!(
        a_sft.clean > 0.8 && a_msn.clean > 0.8,
        "{a_sft:?} {a_msn:?}"
    );
    assert!(
        a_msn.noised > a_sft.noised + 0.3,
        "MSN should read through noise: SFT {a_sft:?}, MSN {a_msn:?}"
    );
}

/// MSN training, full and with LoRA on every attention projection, on the families beside
/// llama: the clean loss goes down, full training moves Qwen 2's biases and Qwen 3's q/k norm
/// gains, and LoRA keeps them as they were (frozen, and kept through the merge).
#[test]
fn every_family_trains_fully_and_with_lora() {
    let (train, eval) = (samples(32, 0), samples(8, 55));
    for family in ["qwen2", "qwen3"] {
        let init = {
            static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
            let d = Default::default();
            <AB as burn::tensor::backend::Backend>::seed(&d, 8);
            let mut c = LlamaConfig::tiny(64);
            c.model_type = family.into();
            Llama::<AB>::init(&c, &d)
        };
        let extras = |m: &Llama<AB>| -> Vec<(String, Vec<f32>)> {
            named(m)
                .into_iter()
                .filter(|(n, _)| {
                    n.ends_with(".bias") || n.contains("_norm.weight") && n.contains("self_attn")
                })
                .collect()
        };
        assert!(
            !extras(&init).is_empty(),
            "{family} has biases or q/k norms"
        );
        let before = msn::train::eval_loss(&init.valid(), &eval, 4);
        for lora in [
            None,
            Some(LoraConfig {
                rank: 4,
                alpha: 8.0,
                targets: vec![LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O],
            }),
        ] {
            let c = TrainConfig {
                lr: 1e-2,
                warmup_steps: 2,
                steps: 16,
                batch_size: 8,
                eval_every: 16,
                lora: lora.clone(),
                ..Default::default()
            };
            let mut t = Trainer {
                config: c,
                noise: AheadNoise::default(),
            };
            let (m, _) = t.train(init.clone(), &train, &eval).unwrap();
            let after = msn::train::eval_loss(&m.valid(), &eval, 4);
            assert!(
                after < before,
                "{family} lora={}: {before} -> {after}",
                lora.is_some()
            );
            for ((n, a), (_, b)) in extras(&init).into_iter().zip(extras(&m)) {
                match lora {
                    None => assert_ne!(a, b, "{family}: {n} should have trained"),
                    Some(_) => assert_eq!(a, b, "{family}: {n} should be frozen under LoRA"),
                }
            }
        }
    }
}
