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

#[allow(dead_code)] // the tokenizer and header targets run no model
/// One forward pass of (at most) two tokens on a fresh cache; errors are fine, panics are not.
pub fn forward_two(m: &msn::Llama<burn::backend::NdArray>) {
    use msn::{CausalLm, ForwardInput};
    let device = Default::default();
    let vocab = m.config().vocab_size as u32;
    let n = m.config().max_position_embeddings.min(2);
    let ids = [1 % vocab, 2 % vocab];
    let mut cache = m.new_cache(1, n);
    let _ = m.forward(ForwardInput::causal(&ids[..n], 0, &device), &mut cache);
}
