//! msn's pre-tokenized training samples (`{"tokens": [...], "response": {"start", "end"}}` a
//! line), as `msn_finetune` writes its self-distilled answers.

use msn::train::TrainSample;
use std::path::Path;

/// Reads `distilled.jsonl`; a malformed line is an error naming the file and line.
/// Written by `msn_finetune` (TrainSample's own serde form): self-distilled answers.
pub fn read(path: &Path, vocab: usize) -> msn::Result<Vec<TrainSample>> {
    let text = std::fs::read_to_string(path).map_err(|e| msn::Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let s: TrainSample = serde_json::from_str(line).map_err(|e| {
            msn::Error::InvalidArgument(format!(
                "{}:{}: not a distilled sample ({e}); delete the file to distil again",
                path.display(),
                i + 1
            ))
        })?;
        let bad_range = s.response.start >= s.response.end || s.response.end > s.tokens.len();
        if bad_range || s.tokens.iter().any(|&t| t as usize >= vocab) {
            return Err(msn::Error::InvalidArgument(format!(
                "{}:{}: response range outside the tokens, or a token outside the vocabulary \
                 (written for another model?)",
                path.display(),
                i + 1
            )));
        }
        out.push(s);
    }
    Ok(out)
}
