//! The real model against independent references: llama.cpp's token ids and a float64 numpy
//! forward pass of the same GGUF (`tests/fixtures/*.json`, copied from `shared/reference`).

mod common;
use common::{B, fixture, smollm2};
use msn::{CausalLm, Decoder, ForwardInput, GenerateConfig, Greedy};

#[test]
fn tokenizer_matches_llama_cpp() {
    let m = smollm2();
    let cases = fixture("tokenize_llamacpp.json");
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = common::ids(&case["ids"]);
        let got = m.tokenizer.encode(text).unwrap();
        assert_eq!(got, want, "token ids of {text:?}");
        // Byte-level BPE round-trips the text exactly.
        assert_eq!(m.tokenizer.decode(&got).unwrap(), text);
    }
}

/// Every way the CPU backends can hold the matrices for short inputs: the GGUF's own Q4_1/Q8_0
/// blocks (the default), converted f32 copies, and burn's own GEMM.
#[test]
fn logits_match_float64_reference() {
    for host in [
        msn::HostKernels::Native,
        msn::HostKernels::Converted,
        msn::HostKernels::Off,
    ] {
        let options = msn::LoadOptions {
            host,
            ..Default::default()
        };
        let m = msn::load_with::<B>("smollm2", &Default::default(), options).unwrap();
        let storage = m.model.host_storage();
        let want = match host {
            msn::HostKernels::Native => Some("Q4_1".to_string()),
            msn::HostKernels::Converted => Some("f32".to_string()),
            _ => None,
        };
        assert_eq!(storage, want, "{host:?}");
        eprintln!("host kernels {host:?}:");
        logits_match(&m);
    }
}

fn logits_match(m: &msn::LoadedModel<B>) {
    let refs = fixture("reference_logits.json");
    let device = Default::default();
    for case in refs["cases"].as_array().unwrap() {
        let prompt = common::ids(&case["ids"]);
        let mut cache = m.model.new_cache(1, prompt.len());
        let logits = m
            .model
            .forward(ForwardInput::<B>::causal(&prompt, 0, &device), &mut cache);
        let [_, t, v] = logits.dims();
        assert_eq!(t, prompt.len());
        let data: Vec<f32> = logits.into_data().convert::<f32>().into_vec().unwrap();
        let mut worst = 0f64;
        for (pos, top) in case["top5_per_position"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let row = &data[pos * v..(pos + 1) * v];
            for (rank, pair) in top.as_array().unwrap().iter().enumerate() {
                let id = pair[0].as_u64().unwrap() as usize;
                let want = pair[1].as_f64().unwrap();
                let diff = (row[id] as f64 - want).abs();
                worst = worst.max(diff);
                if rank == 0 {
                    let best = row.iter().cloned().fold(f32::MIN, f32::max);
                    assert!(
                        (best - row[id]).abs() < 1e-2,
                        "position {pos}: reference argmax {id} is not our argmax"
                    );
                }
            }
        }
        let last = &data[(t - 1) * v..t * v];
        for (i, want) in case["last_logits_first_16"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            worst = worst.max((last[i] as f64 - want.as_f64().unwrap()).abs());
        }
        eprintln!("largest |logit - reference| = {worst:.2e}");
        assert!(
            worst < 1e-3,
            "logits differ from the float64 reference by {worst}"
        );
    }
}

#[test]
fn greedy_continuation_matches_reference() {
    let m = smollm2();
    let refs = fixture("reference_logits.json");
    for case in refs["cases"].as_array().unwrap() {
        let prompt = common::ids(&case["ids"]);
        let want = common::ids(&case["greedy_continuation"]);
        // No EOS stop: the reference continuation runs for a fixed number of tokens.
        let cfg = GenerateConfig {
            max_new_tokens: want.len(),
            eos_ids: vec![],
            stop_strings: vec![],
            sampling: None,
        };
        let g = Greedy
            .generate(&m.model, Some(&m.tokenizer), &prompt, &cfg)
            .unwrap();
        assert_eq!(g.tokens, want);
        assert_eq!(g.steps, want.len());
    }
}
