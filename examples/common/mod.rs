//! What the examples share: backend selection (`--device flex|ndarray|cuda|wgpu`), the
//! decoder options and tallies (`decoders`), SVG charts (`plot`), peak memory.
#![allow(dead_code, unused_macros)]

pub mod cold_start;
pub mod decoders;
pub mod demo_model;
pub mod distilled;
pub mod llama_cpp;
pub mod plot;
pub mod vs_greedy;

/// This process's peak resident memory (VmHWM) in MiB; NaN where /proc is not available.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// `msn::load_with(model, device, options)`, then the LoRA adapter in `lora` merged into it
/// when one is given (`--lora DIR`).
pub fn load_with_adapter<B: burn::prelude::Backend>(
    model: &str,
    device: &B::Device,
    options: msn::LoadOptions,
    lora: Option<&std::path::Path>,
) -> msn::Result<msn::LoadedModel<B>> {
    demo_model::resolve(model)?;
    let mut m = msn::load_with::<B>(model, device, options)?;
    if let Some(dir) = lora {
        m.model = m.model.apply_lora_adapter(dir)?;
    }
    Ok(m)
}

/// The backends compiled into this build.
pub fn available() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "ndarray") {
        v.push("ndarray");
    }
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v
}

/// Calls `$f::<Backend>(device, args...)` for the backend named by `$name`, after checking that
/// its device works. Evaluates to `msn::Result<_>`.
macro_rules! with_backend {
    ($name:expr, $f:ident ( $($arg:expr),* )) => {{
        let name: &str = $name;
        match name {
            #[cfg(feature = "flex")]
            "flex" => $f::<burn::backend::Flex>(Default::default() $(, $arg)*),
            #[cfg(feature = "ndarray")]
            "ndarray" => $f::<burn::backend::NdArray>(Default::default() $(, $arg)*),
            #[cfg(feature = "cuda")]
            "cuda" => {
                let d = Default::default();
                msn::check_device::<burn::backend::Cuda>("cuda", &d)
                    .and_then(|()| $f::<burn::backend::Cuda>(d $(, $arg)*))
            }
            #[cfg(feature = "wgpu")]
            "wgpu" => {
                let d = Default::default();
                msn::check_device::<burn::backend::Wgpu>("wgpu", &d)
                    .and_then(|()| $f::<burn::backend::Wgpu>(d $(, $arg)*))
            }
            other => Err(msn::Error::DeviceUnavailable(format!(
                "backend `{other}` is not compiled into this build (available: {}); rebuild with `--features {other}`",
                common::available().join(", ")
            ))),
        }
    }};
}
#[allow(unused_imports)]
pub(crate) use with_backend;
