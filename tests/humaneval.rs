//! HumanEval scoring runs the real tests: every canonical solution passes (as a body
//! continuation and as a fenced whole function, the two shapes model answers take), wrong and
//! empty bodies fail, and a program that never ends is killed at the timeout.

use msn::bench::{Outcome, extract_code, program, read_humaneval, run_python};
use std::time::{Duration, Instant};

fn problems() -> Vec<msn::bench::HumanEvalProblem> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/humaneval/HumanEval.jsonl");
    read_humaneval(&path).unwrap()
}

#[test]
fn canonical_solutions_pass_and_wrong_ones_fail() {
    let all = problems();
    assert_eq!(all.len(), 164);
    let t = Duration::from_secs(20);
    for p in all.iter().step_by(16) {
        let body = run_python("python3", &program(p, &p.canonical_solution), t).unwrap();
        assert_eq!(body, Outcome::Passed, "{} canonical body", p.task_id);
        // A chat answer: the whole function in a fence, with chatter around it.
        let answer = format!(
            "Here you go:\n```python\n{}{}```\nThis works.",
            &p.prompt[p.prompt.find(&format!("def {}(", p.entry_point)).unwrap()..],
            p.canonical_solution
        );
        let fenced = run_python("python3", &program(p, &extract_code(&answer)), t).unwrap();
        assert_eq!(fenced, Outcome::Passed, "{} fenced function", p.task_id);
        let empty = run_python("python3", &program(p, "    pass\n"), t).unwrap();
        assert!(
            matches!(empty, Outcome::Failed(_)),
            "{} empty body: {empty:?}",
            p.task_id
        );
    }
    // A plausible but wrong answer fails with the assertion in the error tail.
    let p = &all[0];
    match run_python("python3", &program(p, "    return False\n"), t).unwrap() {
        Outcome::Failed(tail) => assert!(tail.contains("AssertionError"), "{tail}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_program_that_never_ends_is_killed() {
    let p = &problems()[0];
    let started = Instant::now();
    let o = run_python(
        "python3",
        &program(p, "    while True:\n        pass\n"),
        Duration::from_millis(1500),
    )
    .unwrap();
    assert_eq!(o, Outcome::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_missing_interpreter_and_a_bad_line_are_typed_errors() {
    let e = run_python("no-such-python-3", "print(1)", Duration::from_secs(1)).unwrap_err();
    assert!(matches!(e, msn::Error::Io { .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("he.jsonl");
    std::fs::write(&f, "{\"task_id\": \"x\"}\n").unwrap();
    match read_humaneval(&f) {
        Err(msn::Error::MalformedInput { line, .. }) => assert_eq!(line, 1),
        other => panic!("{other:?}"),
    }
}
