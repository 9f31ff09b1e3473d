//! Shared test helpers: the backend under test and the demo model, loaded once per test binary.
#![allow(dead_code)]

use std::sync::OnceLock;

/// The CPU backend the tests run on.
pub type B = burn::backend::Flex;

/// SmolLM2-135M-Instruct, fetched (and sha256-verified) on first use, loaded once.
pub fn smollm2() -> &'static msn::LoadedModel<B> {
    static MODEL: OnceLock<msn::LoadedModel<B>> = OnceLock::new();
    MODEL.get_or_init(|| msn::load::<B>("smollm2", &Default::default()).expect("load SmolLM2"))
}

/// A JSON fixture from `tests/fixtures`.
pub fn fixture(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture JSON")
}
