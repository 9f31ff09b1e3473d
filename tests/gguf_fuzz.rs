//! Stable-toolchain companion of `fuzz/fuzz_targets/gguf_header.rs`: random mutations of a valid
//! GGUF header (byte flips, truncations, spliced garbage) must parse or fail with an error, never
//! panic, and every accepted tensor must lie inside the input.

mod common;
use msn::__internal::GgufHeader;
use proptest::prelude::*;

fn check(bytes: &[u8]) {
    if let Ok(h) = GgufHeader::parse(bytes) {
        for t in &h.tensors {
            assert!(t.range.end <= bytes.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_headers_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = common::tiny_gguf(&[], vec![]);
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        check(&bytes);
    }

    #[test]
    fn random_bytes_after_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = b"GGUF\x03\x00\x00\x00".to_vec();
        bytes.extend(tail);
        check(&bytes);
    }
}
