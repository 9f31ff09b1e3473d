//! The CPU a figure was measured on: its model name and the SIMD features detected at run time
//! (what the host kernels dispatch on), for every benchmark table.

/// `"<model name> (<features>)"`, e.g. `"AMD EPYC 7B13 (avx2 fma f16c)"`. The model name comes
/// from `/proc/cpuinfo` where there is one.
pub fn cpu_description() -> String {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{name} ({})", simd_features().join(" "))
}

/// The SIMD features the host kernels care about that this CPU has.
pub fn simd_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) {
                    v.push($f);
                }
            )*};
        }
        probe!(
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vnni",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            v.push("dotprod");
        }
        if std::arch::is_aarch64_feature_detected!("i8mm") {
            v.push("i8mm");
        }
    }
    if v.is_empty() {
        v.push("scalar");
    }
    v
}
