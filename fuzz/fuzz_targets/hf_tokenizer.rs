//! Fuzzes a Hugging Face tokenizer: the input is `tokenizer.json`, a NUL byte, then
//! `tokenizer_config.json` (with its chat template). Any input must load or return an error,
//! never panic or hang; a tokenizer that loads encodes and decodes text (unicode, code) and
//! renders a chat prompt, and each of those may fail only with an error. Seeds:
//! `fuzz/make_seeds.py`.
#![no_main]

#[path = "scratch.rs"]
mod scratch;

use libfuzzer_sys::fuzz_target;
use msn::{Message, Tokenizer};

fuzz_target!(|data: &[u8]| {
    // The default panic hook: libFuzzer's aborts on every panic, even one the crate catches
    // (it turns the tokenizers crate's panics on malformed files into errors); a panic that
    // escapes still aborts the input, through libfuzzer-sys.
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| drop(std::panic::take_hook()));
    let (tokenizer, config) = scratch::split(data);
    let dir = scratch::dir("tok");
    std::fs::write(dir.join("tokenizer.json"), tokenizer).unwrap();
    if !config.is_empty() {
        std::fs::write(dir.join("tokenizer_config.json"), config).unwrap();
    }
    let Ok(t) = Tokenizer::from_hf_dir(&dir, &[0]) else {
        return;
    };
    for text in ["Hello world! naïve café 日本語 🦀", "def f(x):\n\treturn x ** 2  # sq\n"] {
        if let Ok(ids) = t.encode(text) {
            let _ = t.decode(&ids);
        }
    }
    let chat = [Message::new("system", "Be brief."), Message::new("user", "Hi 🦀")];
    let _ = t.apply_chat_template(&chat, true);
    let _ = t.chat_prompt("What is 2 + 2?");
});
