//! Benchmark support, kept apart from the decoding API: the prompt files and data sets the
//! examples and benchmarks read (JSONL prompts, Spec-Bench questions, HumanEval problems),
//! HumanEval scoring by running the generated code, atomic result files, and the CPU a figure
//! was measured on.

mod cpu;
mod humaneval;
mod prompts;

pub use crate::util::write_atomic;
pub use cpu::{cpu_description, simd_features};
pub use humaneval::{
    HumanEvalProblem, Outcome, as_two_turns, chat_prompt, extract_code, program, read_humaneval,
    revise_prompt, run_python,
};
pub use prompts::{PromptLine, SpecBenchQuestion, read_prompt_lines, read_spec_bench};
