//! Reading prompt files: one JSON object per line, `{"id": ..., "prompt": "..."}`, and the
//! Spec-Bench question file (`{"question_id", "category", "turns"}`).

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

/// One Spec-Bench question: one or more user turns (later turns see the earlier answers).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpecBenchQuestion {
    /// Spec-Bench's id.
    pub question_id: serde_json::Value,
    /// Category (`writing`, `translation`, `math_reasoning`, ...).
    pub category: String,
    /// User turns.
    pub turns: Vec<String>,
}

/// Reads Spec-Bench's `question.jsonl`. Blank lines are skipped.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::MalformedInput`] naming the file and line
/// of the first malformed line (including a question without turns).
pub fn read_spec_bench(path: &Path) -> Result<Vec<SpecBenchQuestion>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| Error::MalformedInput {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let q: SpecBenchQuestion = serde_json::from_str(line).map_err(|e| {
            bad(format!(
                "expected {{\"question_id\": .., \"category\": \"..\", \"turns\": [\"..\"]}}: {e}"
            ))
        })?;
        if q.turns.is_empty() {
            return Err(bad("a question needs at least one turn".into()));
        }
        out.push(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_bench_lines_parse_and_bad_lines_name_their_line() {
        let dir = std::env::temp_dir().join(format!("msn-sb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("q.jsonl");
        std::fs::write(
            &f,
            "{\"question_id\": 1, \"category\": \"qa\", \"turns\": [\"a\", \"b\"]}\n\n{\"question_id\": 2}\n",
        )
        .unwrap();
        match read_spec_bench(&f) {
            Err(Error::MalformedInput { line, .. }) => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
        std::fs::write(
            &f,
            "{\"question_id\": 1, \"category\": \"qa\", \"turns\": [\"a\"]}\n",
        )
        .unwrap();
        assert_eq!(read_spec_bench(&f).unwrap()[0].turns, vec!["a"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
