//! The decoders on burn's wgpu backend, the tensor path every GPU runs (`cargo test --release
//! --features wgpu --test wgpu`). Any Vulkan, Metal or DX12 adapter will do; without a GPU,
//! Mesa's software Vulkan device (`llvmpipe`, Debian's `mesa-vulkan-drivers`) runs them, slowly.
//! Where no adapter is found the tests fail in CI (`CI` set) and elsewhere print why they did
//! not run.
#![cfg(feature = "wgpu")]

mod common;
use burn::backend::Wgpu as W;
use msn::{AnyDecoder, CausalLm, Decoder, ForwardInput, GenerateConfig, Greedy};

/// The wgpu device, if an adapter works here.
fn device() -> Option<burn::backend::wgpu::WgpuDevice> {
    let d = burn::backend::wgpu::WgpuDevice::default();
    match msn::check_device::<W>("wgpu", &d) {
        Ok(()) => Some(d),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI runs the wgpu tests: install a Vulkan driver (mesa-vulkan-drivers): {e}")
        }
        Err(e) => {
            eprintln!("wgpu tests not run: no working adapter ({e})");
            None
        }
    }
}

fn config(max_new_tokens: usize) -> GenerateConfig {
    common::plain_config(max_new_tokens)
}

#[test]
fn every_decoder_equals_greedy_on_a_tiny_llama() {
    let Some(d) = device() else { return };
    let m = common::random_llama_on::<W>(64, 2, 3, 4.0, &d);
    let prompt = [3, 9, 4, 3, 9, 4, 3, 9, 4, 7];
    let cfg = config(24);
    let greedy = Greedy.generate(&m, None, &prompt, &cfg).unwrap();
    for name in ["jacobi", "pld", "lookahead", "tr-jacobi"] {
        let mut dec: AnyDecoder = name.parse().unwrap();
        let g = dec.generate(&m, None, &prompt, &cfg).unwrap();
        assert_eq!(g.tokens, greedy.tokens, "{name}");
        // On a device only ids cross: TR-Jacobi's full tree reads at most 2 small arrays.
        let reads = g.host_reads.iter().max().copied().unwrap_or(0);
        let bytes = g.host_read_bytes.iter().max().copied().unwrap_or(0);
        assert!(
            reads <= 2 && bytes <= 64 * 1024,
            "{name}: {reads} reads, {bytes} bytes"
        );
        eprintln!(
            "{name}: equal to greedy, MAT {:.2}",
            g.accepted_tokens_per_step()
        );
    }
    // TR-Jacobi's other candidate sources and its budget from this device's latency curve.
    for candidates in [msn::Candidates::Jacobi, msn::Candidates::Mixed] {
        let c = msn::TrJacobiConfig {
            candidates,
            ..Default::default()
        };
        let g = msn::TrJacobi::fixed(c.clone())
            .unwrap()
            .generate(&m, None, &prompt, &cfg)
            .unwrap();
        assert_eq!(g.tokens, greedy.tokens, "{candidates}");
        let mut auto = msn::TrJacobi::auto(&m, c).unwrap();
        let g = auto.generate(&m, None, &prompt, &cfg).unwrap();
        assert_eq!(g.tokens, greedy.tokens, "{candidates}, auto budget");
    }
    // Sampling with a seed: each committed token takes one uniform number in order, so the
    // tree draws what plain sampling draws, but where rounding moves a draw across a boundary.
    let mut same = 0;
    for seed in 0..6 {
        let mut sampled = config(16);
        sampled.sampling = Some(msn::Sampling {
            temperature: 1.5,
            seed,
            ..Default::default()
        });
        let plain = Greedy.generate(&m, None, &prompt, &sampled).unwrap();
        let mut tr: AnyDecoder = "tr-jacobi".parse().unwrap();
        let t = tr.generate(&m, None, &prompt, &sampled).unwrap();
        same += usize::from(t.tokens == plain.tokens);
    }
    assert!(
        same >= 5,
        "sampled TR-Jacobi drew plain sampling's tokens for {same} of 6 seeds"
    );
    // A batch of two prompts through TR-Jacobi: each row as greedy gives it alone.
    let other = [5, 6, 5, 6, 5, 6];
    let mut tr = msn::TrJacobi::fixed(Default::default()).unwrap();
    let batch = tr
        .generate_batch(&m, None, &[prompt.to_vec(), other.to_vec()], &cfg)
        .unwrap();
    let alone = Greedy.generate(&m, None, &other, &cfg).unwrap();
    assert_eq!(batch[0].tokens, greedy.tokens);
    assert_eq!(batch[1].tokens, alone.tokens);
}

/// The first reference prompt's ids and the largest difference of `m`'s logits there to the
/// float64 reference's top-5.
fn against_reference(
    m: &msn::LoadedModel<W>,
    d: &burn::backend::wgpu::WgpuDevice,
    case: &serde_json::Value,
) -> (Vec<u32>, f64) {
    let prompt = common::ids(&case["ids"]);
    let mut cache = m.model.new_cache(1, prompt.len());
    let logits = m
        .model
        .forward(ForwardInput::<W>::causal(&prompt, 0, d), &mut cache);
    let v = logits.dims()[2];
    let data: Vec<f32> = logits.into_data().convert::<f32>().into_vec().unwrap();
    let worst = common::worst_top5_difference(&data, v, case);
    (prompt, worst)
}

#[test]
fn smollm2_on_wgpu_matches_the_float64_reference_and_decodes_as_greedy() {
    let Some(d) = device() else { return };
    let m = msn::load_with::<W>(common::demo(), &d, msn::WeightDtype::F32).unwrap();
    let refs = common::fixture("reference_logits.json");
    let case = &refs["cases"][0];
    let (prompt, worst) = against_reference(&m, &d, case);
    eprintln!("largest |logit - float64 reference| on wgpu: {worst:.2e}");
    assert!(worst < 1e-2, "{worst}");
    // Greedy continues the chat prompt as the reference does; TR-Jacobi gives greedy's tokens.
    let want = common::ids(&case["greedy_continuation"]);
    let g = Greedy
        .generate(&m.model, None, &prompt, &config(want.len()))
        .unwrap();
    assert_eq!(g.tokens, want);
    let mut tr: AnyDecoder = "tr-jacobi".parse().unwrap();
    let t = tr
        .generate(&m.model, None, &prompt, &config(want.len()))
        .unwrap();
    assert_eq!(t.tokens, want);
}

/// f16 weights and activations where the adapter has 16-bit floats in shaders; where it does
/// not, loading says so and the test prints it.
#[test]
fn smollm2_in_f16_on_wgpu_stays_near_the_reference_where_the_adapter_has_f16() {
    let Some(d) = device() else { return };
    let m = match msn::load_with::<W>(common::demo(), &d, msn::WeightDtype::F16) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("f16 not run on this adapter: {e}");
            assert!(matches!(e, msn::Error::InvalidArgument(_)), "{e}");
            return;
        }
    };
    let refs = common::fixture("reference_logits.json");
    let case = &refs["cases"][0];
    let (_, worst) = against_reference(&m, &d, case);
    eprintln!("f16 on wgpu: largest |logit - float64 reference| {worst:.3}");
    assert!(worst < F16_TOLERANCE, "{worst}");
}

/// f16 keeps ~3 significant digits and the logits of this model reach ~45 (measured on Mesa's
/// llvmpipe: 0.060).
const F16_TOLERANCE: f64 = 0.2;
