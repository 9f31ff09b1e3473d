//! Files for one fuzz input: a per-process directory in the temporary directory (a tmpfs such
//! as /dev/shm is fastest: `TMPDIR=/dev/shm`).

use std::path::PathBuf;

/// An empty scratch directory named after `target` and this process.
pub fn dir(target: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("msn-fuzz-{target}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch directory");
    d
}

#[allow(dead_code)] // gguf_model reads whole files
/// `data` cut at its first NUL byte (JSON holds none): the text before, the bytes after.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
