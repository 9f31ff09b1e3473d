//! Quality measures: HumanEval pass@1 by executing generated code under a timeout in a Python
//! subprocess.
//!
//! **This runs code a model wrote.** Do it on a machine (or in a container) you do not mind a
//! program misbehaving on; each program gets a fresh temporary directory as its working
//! directory, no stdin, and is killed at the timeout.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One HumanEval problem (`HumanEval.jsonl` fields).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HumanEvalProblem {
    /// `HumanEval/N`.
    pub task_id: String,
    /// Imports, signature and docstring; the completion continues it.
    pub prompt: String,
    /// The function the tests call.
    pub entry_point: String,
    /// The reference body (not used for scoring).
    pub canonical_solution: String,
    /// Defines `check(candidate)`.
    pub test: String,
}

/// Reads `HumanEval.jsonl`. Blank lines are skipped.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::MalformedInput`] naming the line of the
/// first malformed problem.
pub fn read_humaneval(path: &Path) -> Result<Vec<HumanEvalProblem>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p: HumanEvalProblem =
            serde_json::from_str(line).map_err(|e| Error::MalformedInput {
                path: path.to_path_buf(),
                line: i + 1,
                reason: format!(
                    "expected a HumanEval problem {{\"task_id\", \"prompt\", \"entry_point\", \
                     \"canonical_solution\", \"test\"}}: {e}"
                ),
            })?;
        out.push(p);
    }
    Ok(out)
}

/// The user message that asks a chat model to solve `p`.
pub fn chat_prompt(p: &HumanEvalProblem) -> String {
    format!(
        "Complete the following Python function. Reply with the whole function in one ```python \
         code block.\n\n```python\n{}```",
        p.prompt
    )
}

/// The second turn of the revise workload: after answering [`chat_prompt`], the model is shown
/// the tests and asked for the whole function again, corrected where needed (what a coding
/// assistant does on a failing test: the new answer repeats most of the old one).
pub fn revise_prompt(p: &HumanEvalProblem) -> String {
    format!(
        "Here are the tests your function must pass:\n\n```python\n{}```\n\nCheck the function \
         against them and reply with the whole corrected function `{}` in one ```python code \
         block.",
        p.test.trim_start_matches('\n'),
        p.entry_point
    )
}

/// A problem as a two-turn question (the [`chat_prompt`], then the [`revise_prompt`]), category
/// `humaneval`: HumanEval in Spec-Bench's multi-turn format.
pub fn as_two_turns(p: &HumanEvalProblem) -> crate::bench::SpecBenchQuestion {
    crate::bench::SpecBenchQuestion {
        question_id: serde_json::Value::String(p.task_id.clone()),
        category: "humaneval".into(),
        turns: vec![chat_prompt(p), revise_prompt(p)],
    }
}

/// The code in a model's answer: the first fenced block when there is one (an unterminated
/// fence runs to the end), else the whole answer.
pub fn extract_code(answer: &str) -> String {
    let Some(open) = answer.find("```") else {
        return answer.to_string();
    };
    let rest = &answer[open + 3..];
    // Skip the language tag line.
    let body = rest.find('\n').map_or("", |i| &rest[i + 1..]);
    match body.find("```") {
        Some(close) => body[..close].to_string(),
        None => body.to_string(),
    }
}

/// The program to run for `p` and a completion: when the completion defines the entry point
/// itself it replaces the prompt's signature (the prompt's imports and helpers are kept),
/// otherwise it continues the prompt's body. The tests and `check(entry_point)` follow.
pub fn program(p: &HumanEvalProblem, completion: &str) -> String {
    let def = format!("def {}(", p.entry_point);
    let solution = if completion.contains(&def) {
        let header = p.prompt.find(&def).map_or("", |i| &p.prompt[..i]);
        format!("{header}\n{completion}")
    } else {
        format!("{}{completion}", p.prompt)
    };
    format!("{solution}\n\n{}\n\ncheck({})\n", p.test, p.entry_point)
}

/// How one program ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit status 0: every assertion held.
    Passed,
    /// Non-zero exit; the end of its standard error.
    Failed(String),
    /// Killed at the timeout.
    TimedOut,
}

impl Outcome {
    /// True for [`Outcome::Passed`].
    pub fn passed(&self) -> bool {
        matches!(self, Self::Passed)
    }
}

/// Runs `source` with `python` (e.g. `python3`) in a fresh temporary directory, killing it after
/// `timeout` (processes it started itself are not tracked).
///
/// # Errors
/// [`Error::Io`] when the program file cannot be written or the interpreter cannot be started
/// (install Python 3 or pass its path).
pub fn run_python(python: &str, source: &str, timeout: Duration) -> Result<Outcome> {
    let dir = std::env::temp_dir().join(format!(
        "msn-humaneval-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let file = dir.join("program.py");
    std::fs::write(&file, source).map_err(|e| Error::io(&file, e))?;
    let result = run_in(python, &dir, timeout);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn run_in(python: &str, dir: &Path, timeout: Duration) -> Result<Outcome> {
    let mut child = Command::new(python)
        .arg("program.py")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(python, e))?;
    // Drain stderr on a thread so a chatty program cannot block on a full pipe.
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| Error::io(python, e))? {
            Some(status) => break Some(status),
            None if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    // After a timeout, a process the program started may still hold the pipe: do not wait for
    // the reader then.
    let Some(status) = status else {
        return Ok(Outcome::TimedOut);
    };
    let err = reader.join().unwrap_or_default();
    Ok(match status.success() {
        true => Outcome::Passed,
        false => {
            let text = String::from_utf8_lossy(&err);
            let tail: String = text
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            Outcome::Failed(tail)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_is_taken_from_the_first_fence() {
        assert_eq!(
            extract_code("Sure:\n```python\nx = 1\n```\nmore"),
            "x = 1\n"
        );
        assert_eq!(extract_code("```\ny = 2\n"), "y = 2\n");
        assert_eq!(extract_code("    return 3\n"), "    return 3\n");
    }
}
