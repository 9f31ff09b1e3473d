//! Fuzzes the GGUF header parser: any byte string must parse or return an error, never panic,
//! hang or allocate without bound. Run: `cargo +nightly fuzz run gguf_header` (from the repo root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = msn::__internal::GgufHeader::parse(data) {
        // Every tensor range the parser accepted lies inside the input.
        for t in &h.tensors {
            assert!(t.range.end <= data.len());
        }
    }
});
