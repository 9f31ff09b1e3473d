//! Training data: JSONL of chat messages (`{"messages": [{"role", "content"}, ..]}`) or
//! `{"prompt", "response"}`, rendered with the model's own chat template; the prompt is masked
//! from the loss, the final assistant message is the response.

use crate::error::{Error, Result};
use crate::model::tokenizer::{Message, Tokenizer};
use std::ops::Range;
use std::path::Path;

/// One tokenized training sample: `prompt ++ response`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrainSample {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Response positions (the ones the loss predicts).
    pub response: Range<usize>,
}

/// A loaded dataset and what was skipped.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Usable samples.
    pub samples: Vec<TrainSample>,
    /// `(line, reason)` of skipped lines (only with `skip_malformed`).
    pub skipped: Vec<(usize, String)>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Line {
    Chat { messages: Vec<MessageLine> },
    Pair { prompt: String, response: String },
}

#[derive(serde::Deserialize)]
struct MessageLine {
    role: String,
    content: String,
}

/// Renders `messages` (ending with the assistant's answer) with the chat template; the answer's
/// tokens are the response. Truncated to `max_len` tokens.
///
/// # Errors
/// [`Error::MalformedInput`]-style reasons as [`Error::InvalidArgument`] when the last message is
/// not from the assistant, the template does not render the answer after the prompt, or nothing
/// of the answer fits in `max_len`; tokenizer and template errors.
pub fn sample_from_messages(
    tokenizer: &Tokenizer,
    messages: &[Message],
    max_len: usize,
) -> Result<TrainSample> {
    let Some((last, context)) = messages.split_last() else {
        return Err(Error::InvalidArgument("a sample needs messages".into()));
    };
    if last.role != "assistant" {
        return Err(Error::InvalidArgument(format!(
            "the last message must be the assistant's answer, not `{}`",
            last.role
        )));
    }
    let prompt = tokenizer.apply_chat_template(context, true)?;
    let full = tokenizer.apply_chat_template(messages, false)?;
    let Some(answer) = full.strip_prefix(&prompt) else {
        return Err(Error::InvalidArgument(
            "the chat template does not render the answer after the generation prompt".into(),
        ));
    };
    let mut tokens = tokenizer.encode(&prompt)?;
    let start = tokens.len();
    tokens.extend(tokenizer.encode(answer)?);
    tokens.truncate(max_len);
    if tokens.len() <= start {
        return Err(Error::InvalidArgument(format!(
            "the prompt alone has {start} tokens, max_len is {max_len}: nothing to train on"
        )));
    }
    let end = tokens.len();
    Ok(TrainSample {
        tokens,
        response: start..end,
    })
}

/// Reads a JSONL training file. A malformed line is an [`Error::MalformedInput`] naming the file
/// and line, or, with `skip_malformed`, skipped and reported in [`Dataset::skipped`].
///
/// # Errors
/// [`Error::Io`]; [`Error::MalformedInput`] unless `skip_malformed`.
pub fn load_jsonl(
    path: &Path,
    tokenizer: &Tokenizer,
    max_len: usize,
    skip_malformed: bool,
) -> Result<Dataset> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut ds = Dataset::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Line>(line)
            .map_err(|e| {
                format!(
                    "expected {{\"messages\": [{{\"role\", \"content\"}}, ..]}} or {{\"prompt\", \"response\"}}: {e}"
                )
            })
            .and_then(|l| {
                let messages: Vec<Message> = match l {
                    Line::Chat { messages } => messages
                        .into_iter()
                        .map(|m| Message::new(&m.role, &m.content))
                        .collect(),
                    Line::Pair { prompt, response } => vec![
                        Message::new("user", &prompt),
                        Message::new("assistant", &response),
                    ],
                };
                sample_from_messages(tokenizer, &messages, max_len).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(s) => ds.samples.push(s),
            Err(reason) if skip_malformed => ds.skipped.push((i + 1, reason)),
            Err(reason) => {
                return Err(Error::MalformedInput {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: format!("{reason} (or skip such lines with skip_malformed)"),
                });
            }
        }
    }
    Ok(ds)
}

/// Cuts a token stream (a plain-text corpus) into samples of `len` tokens whose every position
/// after the first is trained (pre-training style: the "response" is the whole window).
pub fn windows(tokens: &[u32], len: usize) -> Vec<TrainSample> {
    tokens
        .chunks_exact(len.max(2))
        .map(|w| TrainSample {
            tokens: w.to_vec(),
            response: 1..w.len(),
        })
        .collect()
}
