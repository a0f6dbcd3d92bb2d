//! Trace scenarios: every `tests/traces/*.trace` file is replayed against a fresh
//! machine (see `redial::testing::trace` for the format), and the format itself
//! is checked to read back what it prints.
//!
//! To add a scenario, write the inputs you care about and run this test: the
//! failure shows what the machine did, in the same format, ready to paste after
//! checking it against SPEC.md.

use std::fs;
use std::path::Path;

use proptest::prelude::*;
use redial::testing::{run_ops, strategy, Trace};
use redial::Machine;

#[test]
fn every_trace_file_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("tests/traces exists")
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.extension().is_some_and(|e| e == "trace"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "expected the scenario files in {dir:?}");
    let mut failures = Vec::new();
    for path in &files {
        let text = fs::read_to_string(path).expect("readable");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match text.parse::<Trace>() {
            Err(e) => failures.push(format!("{name}: {e}")),
            Ok(trace) => {
                if trace.steps.is_empty() {
                    failures.push(format!("{name}: no inputs"));
                }
                if let Err(report) = trace.replay() {
                    failures.push(format!("{name}:\n{report}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn a_wrong_expectation_is_reported_with_the_trace() {
    let trace: Trace = "start\n  connect attempt#1\n".parse().unwrap();
    let report = trace.replay().unwrap_err();
    assert!(
        report.contains("# expected:\nstart\n  connect attempt#1"),
        "{report}"
    );
    assert!(
        report.contains("# actual:\nstart\n  connect attempt#0"),
        "{report}"
    );
}

#[test]
fn parse_errors_name_the_line() {
    for (text, line) in [
        ("start\nfly_away\n", 2),
        ("  connect attempt#0\n", 1),
        ("start\n  connect attempt#x\n", 2),
        ("start\npolicy linear 1s\n", 2),
        ("connection_failed attempt#0 \"open\n", 1),
        ("config turbo\n", 1),
        ("start\n  schedule timer#0 retry 5 s\n", 2),
    ] {
        let e = text.parse::<Trace>().unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a run records, the printed trace reads back as the same trace and
    /// replays against a fresh machine.
    #[test]
    fn printed_traces_read_back_and_replay(
        config in strategy::config(),
        policy in strategy::sim_policy(),
        ops in strategy::ops(0..100),
    ) {
        let mut machine = Machine::with_config(policy, config).unwrap();
        let mut trace = run_ops(&mut machine, &ops, |_, _, _| Ok(()))
            .map_err(|v| TestCaseError::fail(v.to_string()))?;
        trace.policy = policy;
        let text = trace.to_string();
        let parsed: Trace = text.parse().map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&parsed, &trace, "{}", text);
        prop_assert!(parsed.replay().is_ok(), "{}", text);
    }
}
