//! Checking that a backend's device (and a float type on it) actually works before using it.

use crate::error::{Error, Result};
use burn::prelude::*;
use burn::tensor::FloatDType;

/// Runs `f`, turning a panic into `Err(message)` without printing the panic.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown error".into())
    })
}

/// Checks that `device` works by running a one-element computation on it, turning a backend
/// panic (CUDA without a GPU, no Vulkan/Metal adapter for wgpu) into an error. `what` names the
/// backend in the message.
///
/// # Errors
/// [`Error::DeviceUnavailable`] naming `what` and the backend's message.
///
/// # Examples
/// ```
/// msn::check_device::<burn::backend::Flex>("flex", &Default::default()).unwrap();
/// ```
pub fn check_device<B: Backend>(what: &str, device: &B::Device) -> Result<()> {
    let device = device.clone();
    match catch(move || {
        Tensor::<B, 1>::ones([2], &device)
            .sum()
            .into_scalar()
            .elem::<f32>()
    }) {
        Ok(v) if (v - 2.0).abs() < 1e-6 => Ok(()),
        Ok(v) => Err(Error::DeviceUnavailable(format!(
            "backend `{what}` computed 1 + 1 = {v}; its device is not usable"
        ))),
        Err(msg) => Err(Error::DeviceUnavailable(format!(
            "backend `{what}` is compiled in but its device does not work on this machine ({msg}); use --device flex or --device ndarray on a CPU"
        ))),
    }
}

/// Whether `device` is one of burn's CPU backends (flex, ndarray) without autodiff, by the name
/// the backend gives itself: there [`crate::HostKernels::Auto`] runs the model on the host
/// engine. Under autodiff the trainer needs burn's own operations (the host engine has no
/// gradients); turn the host engine on explicitly for evaluation there.
pub(crate) fn is_host_backend<B: Backend>(device: &B::Device) -> bool {
    matches!(B::name(device).as_str(), "flex" | "ndarray") && !B::ad_enabled(device)
}

/// Whether the backend can store `dtype` tensors and multiply them on `device`.
pub(crate) fn supports_dtype<B: Backend>(device: &B::Device, dtype: FloatDType) -> bool {
    let device = device.clone();
    catch(move || {
        let a = Tensor::<B, 2>::ones([2, 2], &device).cast(dtype);
        a.clone()
            .matmul(a)
            .cast(FloatDType::F32)
            .sum()
            .into_scalar()
            .elem::<f32>()
    })
    .is_ok_and(|v| (v - 8.0).abs() < 1e-3)
}
