//! msn as a downstream crate meets it: only the public API, a drafter of our own (a suffix
//! match over everything seen so far, drafted as one chain) run by msn's tree engine on
//! SmolLM2-135M-Instruct, each output checked equal to greedy decoding's.
//!
//! ```text
//! cargo run --release -p msn-downstream
//! ```

use msn::{Decoder, Draft, DraftDecoder, Drafter, GenerateConfig, Greedy, Message, Verified};

/// Drafts what followed the last earlier occurrence of the newest two tokens.
#[derive(Default)]
struct SuffixMatch {
    /// The prompt and the output so far, up to this step's root.
    seen: Vec<u32>,
}

impl Drafter for SuffixMatch {
    fn max_nodes(&self) -> usize {
        9
    }

    fn start(&mut self, prompt: &[u32]) {
        self.seen = prompt.to_vec();
    }

    fn draft(&mut self, root: u32, room: usize, depth: usize) -> Draft {
        self.seen.push(root);
        let n = self.seen.len();
        let follow = (n >= 2)
            .then(|| {
                let key = &self.seen[n - 2..];
                (0..n - 2).rev().find(|&i| &self.seen[i..i + 2] == key)
            })
            .flatten()
            .map_or(&[][..], |i| {
                &self.seen[i + 2..n.min(i + 2 + room.min(depth))]
            });
        let draft = Draft::chain(root, follow);
        self.seen.pop();
        draft
    }

    fn observe(&mut self, draft: &Draft, _: &[u32], verified: &Verified, _: &[Vec<u32>]) {
        // The root, then the committed tokens but the last (the next step's root).
        self.seen.push(draft.tokens[0]);
        let t = &verified.tokens;
        self.seen.extend(&t[..t.len() - 1]);
    }
}

fn main() -> msn::Result<()> {
    let m = msn::load::<burn::backend::Flex>("smollm2", &Default::default())?;
    let config = GenerateConfig::new(64, &m.tokenizer);
    let mut ours = DraftDecoder::new("suffix-match", SuffixMatch::default());
    for question in [
        "Repeat this sentence twice: the quick brown fox jumps over the lazy dog.",
        "Write a Python function that returns the sum of a list, then the same for a product.",
    ] {
        let text = m
            .tokenizer
            .apply_chat_template(&[Message::new("user", question)], true)?;
        let prompt = m.tokenizer.encode(&text)?;
        let greedy = Greedy.generate(&m.model, Some(&m.tokenizer), &prompt, &config)?;
        let drafted = ours.generate(&m.model, Some(&m.tokenizer), &prompt, &config)?;
        if drafted.tokens != greedy.tokens {
            return Err(msn::Error::InvalidArgument(format!(
                "{question:?}: the drafter's output differs from greedy's"
            )));
        }
        println!(
            "{} tokens, {:.2} per forward pass ({} passes; greedy {}), equal to greedy: {:?}",
            drafted.tokens.len(),
            drafted.accepted_tokens_per_step(),
            drafted.steps,
            greedy.steps,
            drafted.text.chars().take(60).collect::<String>()
        );
    }
    Ok(())
}
