//! Checking that a backend's device actually works before using it.

use crate::error::{Error, Result};
use burn::prelude::*;

/// Runs a one-element computation on `device`, turning a backend panic (CUDA without a GPU,
/// no Vulkan/Metal adapter for wgpu) into [`Error::DeviceUnavailable`].
///
/// # Errors
/// [`Error::DeviceUnavailable`] naming `what` and the backend's message.
pub fn probe<B: Backend>(what: &str, device: &B::Device) -> Result<()> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let device = device.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let t = Tensor::<B, 1>::ones([2], &device);
        t.sum().into_scalar().elem::<f32>()
    }));
    std::panic::set_hook(hook);
    match result {
        Ok(v) if (v - 2.0).abs() < 1e-6 => Ok(()),
        Ok(v) => Err(Error::DeviceUnavailable(format!(
            "backend `{what}` computed 1 + 1 = {v}; its device is not usable"
        ))),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into());
            Err(Error::DeviceUnavailable(format!(
                "backend `{what}` is compiled in but its device does not work on this machine ({msg}); use --device flex or --device ndarray on a CPU"
            )))
        }
    }
}
