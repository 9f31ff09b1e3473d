//! LoRA adapter files in PEFT's layout, so that an adapter trained here loads in PEFT and one
//! from PEFT loads here: `adapter_config.json` (`r`, `lora_alpha`, `target_modules`) and
//! `adapter_model.safetensors` with, per adapted projection,
//! `base_model.model.model.layers.{i}.{self_attn|mlp}.{name}.lora_A.weight` `[r, in]` and
//! `...lora_B.weight` `[out, r]` (f32).

use crate::error::{Error, Result};
use crate::model::hf::write_safetensors;
use crate::model::lora::{Lora, LoraConfig, LoraTarget};
use crate::model::weights::transpose;
use crate::model::{CausalLm, Llama};
use crate::util::write_atomic;
use burn::prelude::*;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

fn key(layer: usize, t: LoraTarget, factor: &str) -> String {
    let part = match t {
        LoraTarget::Q | LoraTarget::K | LoraTarget::V | LoraTarget::O => "self_attn",
        _ => "mlp",
    };
    format!("base_model.model.model.layers.{layer}.{part}.{t}.lora_{factor}.weight")
}

fn host(t: Tensor<impl Backend, 2>) -> (Vec<f32>, [usize; 2]) {
    let dims = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("f32");
    (v, dims)
}

/// Writes the adapters of `model` (trained with `config`) to `dir` in PEFT's layout.
pub(crate) fn save_adapter<B: Backend>(
    model: &Llama<B>,
    config: &LoraConfig,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, (t, l)) in model.adapters() {
        // PEFT stores `A` as `[r, in]` and `B` as `[out, r]`: ours transposed.
        let ((a, [inp, r]), (b, [_, out])) = (host(l.a.val()), host(l.b.val()));
        let bytes = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        tensors.push((key(i, t, "A"), vec![r, inp], bytes(transpose(&a, inp, r))));
        tensors.push((key(i, t, "B"), vec![out, r], bytes(transpose(&b, r, out))));
    }
    write_safetensors(&dir.join("adapter_model.safetensors"), Dtype::F32, &tensors)?;
    let names: Vec<&str> = config.targets.iter().map(|t| t.name()).collect();
    let json = serde_json::json!({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": config.rank,
        "lora_alpha": config.alpha, "target_modules": names, "bias": "none"});
    let json = serde_json::to_vec_pretty(&json).expect("json");
    write_atomic(&dir.join("adapter_config.json"), &json)
}

/// Reads `dir/adapter_config.json`: rank, alpha, targets.
fn read_config(dir: &Path) -> Result<LoraConfig> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let bad = |m: String| Error::checkpoint(&path, m);
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let rank = v["r"]
        .as_u64()
        .ok_or_else(|| bad("no integer `r`".into()))? as usize;
    let alpha = v["lora_alpha"]
        .as_f64()
        .ok_or_else(|| bad("no `lora_alpha`".into()))?;
    let targets = v["target_modules"]
        .as_array()
        .ok_or_else(|| bad("no `target_modules` list".into()))?
        .iter()
        .map(|t| t.as_str().unwrap_or("").parse::<LoraTarget>())
        .collect::<Result<Vec<_>>>()?;
    let config = LoraConfig {
        rank,
        alpha,
        targets,
    };
    config.check().map_err(|e| bad(e.to_string()))?;
    Ok(config)
}

/// One factor from the adapter file, checked against its expected shape, as `[rows, cols]`
/// row-major values.
fn factor(st: &SafeTensors<'_>, path: &Path, name: &str, shape: [usize; 2]) -> Result<Vec<f32>> {
    let view = st
        .tensor(name)
        .map_err(|e| Error::checkpoint(path, format!("{name}: {e}")))?;
    if view.shape() != shape || view.dtype() != Dtype::F32 {
        return Err(Error::checkpoint(
            path,
            format!(
                "{name} is {:?} {:?}; this model needs f32 {shape:?}",
                view.dtype(),
                view.shape()
            ),
        ));
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

impl<B: Backend> Llama<B> {
    /// The model with the LoRA adapter in `dir` (PEFT's layout: `adapter_config.json` and
    /// `adapter_model.safetensors`, f32) merged into its weights. Host kernels, if on, are rebuilt
    /// from the merged weights: quantized to Q8_0 again when they were
    /// ([`Llama::quantize_host_kernels`], [`crate::HostKernels::Q8`]), else as f16/f32 copies (a
    /// quantized file's own blocks no longer match; `quantize_host_kernels` then quantizes
    /// them).
    ///
    /// # Errors
    /// [`Error::Io`] for a missing file; [`Error::InvalidCheckpoint`] for a malformed config, a
    /// missing, extra or misshapen tensor; [`Error::InvalidArgument`] for an unknown target.
    pub fn apply_lora_adapter(self, dir: &Path) -> Result<Self> {
        let config = read_config(dir)?;
        let path = dir.join("adapter_model.safetensors");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::checkpoint(&path, format!("not valid safetensors: {e}")))?;
        let host = self.host_weights().map(|h| (h.max_rows, h.q8));
        let device = self.device();
        let scale = config.alpha / config.rank as f64;
        let r = config.rank;
        let mut used = 0;
        let mut model = self.with_lora_factors(&config, |layer, t, [inp, out]| {
            let a = factor(&st, &path, &key(layer, t, "A"), [r, inp])?;
            let b = factor(&st, &path, &key(layer, t, "B"), [out, r])?;
            used += 2;
            let a = TensorData::new(transpose(&a, r, inp), [inp, r]);
            let b = TensorData::new(transpose(&b, out, r), [r, out]);
            Ok(Lora::from_factors(
                Tensor::from_data(a, &device),
                Tensor::from_data(b, &device),
                scale,
            ))
        })?;
        if used != st.len() {
            return Err(Error::checkpoint(
                &path,
                format!(
                    "{} tensors, of which {used} match the targets {:?} of this model's {} layers",
                    st.len(),
                    config.targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
                    model.layers.len()
                ),
            ));
        }
        model = model.merge_lora();
        if let Some((rows, q8)) = host {
            model.enable_host_kernels(rows);
            if q8 {
                model.quantize_host_kernels();
            }
        }
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::__internal::named_tensors;
    use crate::model::LlamaConfig;
    use crate::rng::Rng;
    use burn::backend::Flex;

    type B = Flex;

    fn base() -> Llama<B> {
        let d = Default::default();
        Llama::init_seeded(&LlamaConfig::tiny(64), 21, &d)
    }

    /// A model with adapters on q, o and gate whose `B` is random (as after training).
    fn trained(config: &LoraConfig) -> Llama<B> {
        let mut rng = Rng::new(3);
        let d = Default::default();
        base()
            .with_lora_factors(config, |_, _, [i, o]| {
                let mut v =
                    |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.unit() - 0.5) as f32).collect() };
                let a = TensorData::new(v(i * config.rank), [i, config.rank]);
                let b = TensorData::new(v(config.rank * o), [config.rank, o]);
                Ok(Lora::from_factors(
                    Tensor::from_data(a, &d),
                    Tensor::from_data(b, &d),
                    config.alpha / config.rank as f64,
                ))
            })
            .unwrap()
    }

    fn config() -> LoraConfig {
        LoraConfig {
            rank: 2,
            alpha: 5.0,
            targets: vec![LoraTarget::Q, LoraTarget::O, LoraTarget::Gate],
        }
    }

    #[test]
    fn a_saved_adapter_applied_to_the_base_equals_the_merged_model() {
        let dir = tempfile::tempdir().unwrap();
        let adapted = trained(&config());
        save_adapter(&adapted, &config(), dir.path()).unwrap();
        let want = named_tensors(&adapted.merge_lora());
        let got = named_tensors(&base().apply_lora_adapter(dir.path()).unwrap());
        assert_eq!(got, want);
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["r"], 2);
        assert_eq!(cfg["target_modules"][2], "gate_proj");
    }

    #[test]
    fn an_adapter_keeps_the_host_engine_quantized() {
        let dir = tempfile::tempdir().unwrap();
        save_adapter(&trained(&config()), &config(), dir.path()).unwrap();
        let (mut dense, mut q8) = (base(), base());
        dense.enable_host_kernels(8);
        q8.enable_host_kernels(8);
        q8.quantize_host_kernels();
        let dense = dense.apply_lora_adapter(dir.path()).unwrap();
        let q8 = q8.apply_lora_adapter(dir.path()).unwrap();
        assert_eq!(dense.host_storage().as_deref(), Some("f32"));
        assert_eq!(q8.host_storage().as_deref(), Some("Q8_0 x Q16"));
        // The quantized copies are the merged weights' (not the base's) quantized.
        let mut want = dense.clone();
        want.quantize_host_kernels();
        let ids: Vec<i64> = vec![3, 17, 5, 60];
        let d = Default::default();
        let logits = |m: &Llama<B>| {
            let mut cache = m.new_cache(1, ids.len());
            let input = crate::model::ForwardInput {
                tokens: Tensor::from_data(TensorData::new(ids.clone(), [1, 4]), &d),
                positions: Tensor::from_data(TensorData::new(vec![0i64, 1, 2, 3], [1, 4]), &d),
                mask: None,
            };
            m.forward(input, &mut cache)
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(logits(&q8), logits(&want));
        assert_ne!(logits(&q8), logits(&dense));
    }

    #[test]
    fn a_broken_adapter_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        save_adapter(&trained(&config()), &config(), dir.path()).unwrap();
        let cfg_path = dir.path().join("adapter_config.json");
        let good = std::fs::read_to_string(&cfg_path).unwrap();
        // A target the file has no tensors for.
        std::fs::write(&cfg_path, good.replace("gate_proj", "up_proj")).unwrap();
        let e = base().apply_lora_adapter(dir.path()).unwrap_err();
        assert!(matches!(e, Error::InvalidCheckpoint { .. }), "{e}");
        // An unknown target name.
        std::fs::write(&cfg_path, good.replace("gate_proj", "qkv_proj")).unwrap();
        let e = base().apply_lora_adapter(dir.path()).unwrap_err();
        assert!(e.to_string().contains("qkv_proj"), "{e}");
        // A rank that does not match the tensors.
        std::fs::write(&cfg_path, good.replace("\"r\": 2", "\"r\": 3")).unwrap();
        let e = base().apply_lora_adapter(dir.path()).unwrap_err();
        assert!(matches!(e, Error::InvalidCheckpoint { .. }), "{e}");
        // Fewer targets than the file holds: the extra tensors are reported.
        std::fs::write(
            &cfg_path,
            good.replace(", \"gate_proj\"", "")
                .replace(",\n    \"gate_proj\"", ""),
        )
        .unwrap();
        let e = base().apply_lora_adapter(dir.path()).unwrap_err();
        assert!(e.to_string().contains("match the targets"), "{e}");
        // Garbage weights.
        std::fs::write(&cfg_path, &good).unwrap();
        std::fs::write(dir.path().join("adapter_model.safetensors"), b"junk").unwrap();
        assert!(base().apply_lora_adapter(dir.path()).is_err());
    }
}
