//! Reading prompt files: one JSON object per line, `{"id": ..., "prompt": "..."}`.

use crate::error::{Error, Result};
use std::path::Path;

/// One prompt of a JSONL prompt file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PromptLine {
    /// Caller's identifier (any JSON value); the 1-based line number when absent.
    #[serde(default)]
    pub id: serde_json::Value,
    /// The prompt text.
    pub prompt: String,
}

/// Reads a JSONL prompt file. Blank lines are skipped.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::MalformedInput`] naming the file and line
/// of the first malformed line.
pub fn read_prompt_lines(path: &Path) -> Result<Vec<PromptLine>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut p: PromptLine = serde_json::from_str(line).map_err(|e| Error::MalformedInput {
            path: path.to_path_buf(),
            line: i + 1,
            reason: format!("expected {{\"id\": ..., \"prompt\": \"...\"}}: {e}"),
        })?;
        if p.id.is_null() {
            p.id = serde_json::json!(i + 1);
        }
        out.push(p);
    }
    Ok(out)
}
