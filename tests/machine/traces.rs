//! Trace scenarios: every `tests/machine/traces/*.trace` file is replayed against a fresh
//! machine (see `redial::testing::trace` for the format), and the format itself
//! is checked to read back what it prints.
//!
//! To add a scenario, write the inputs you care about and run this test: the
//! failure shows what the machine did, in the same format, ready to paste after
//! checking it against the behaviour contract (docs/contract.md).

use std::fs;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use redial::testing::trace::{
    parse_action, parse_input, parse_rejection, DisplayAction, DisplayInput, DisplayRejection,
};
use redial::testing::{run_ops, strategy, SimPolicy, Trace};
use redial::{
    Action, AttemptId, Failure, GiveUp, Input, LossKind, Machine, Panic, PanicSite, Rejection,
    WaiterId,
};

#[test]
fn every_trace_file_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/machine/traces");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("tests/machine/traces exists")
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

/// Messages that need escaping or could confuse the parser: quotes, backslashes,
/// parentheses, spaces, newlines, and the empty message.
const MESSAGES: [&str; 7] = [
    "boom",
    "index out of bounds: the len is 0 but the index is 0",
    "said \"no\"",
    "back\\slash",
    "(parens) and ) alone",
    "two\nlines",
    "",
];

const SITES: [(PanicSite, &str); 3] = [
    (PanicSite::Connector, "connector"),
    (PanicSite::Prepare, "prepare"),
    (PanicSite::Connection, "connection"),
];

#[test]
fn panicked_inputs_print_and_parse_back() {
    let line = "panicked attempt#3 connector \"msg\"";
    let input = parse_input(line).unwrap();
    assert_eq!(
        input,
        Input::Panicked {
            attempt: AttemptId::from_raw(3),
            panic: Panic::new(PanicSite::Connector, "msg"),
        }
    );
    assert_eq!(DisplayInput(&input).to_string(), line);
    for (site, name) in SITES {
        for message in MESSAGES {
            let input: Input<String> = Input::Panicked {
                attempt: AttemptId::from_raw(7),
                panic: Panic::new(site, message),
            };
            let text = DisplayInput(&input).to_string();
            assert!(
                text.starts_with(&format!("panicked attempt#7 {name} \"")),
                "{text}"
            );
            assert_eq!(parse_input(&text).as_ref(), Ok(&input), "{text}");
        }
    }
}

#[test]
fn panicked_failures_print_and_parse_back() {
    let line = "attempt_failed attempt#3 panicked(connector \"msg\") failures=2";
    let action = parse_action(line).unwrap();
    assert_eq!(
        action,
        Action::AttemptFailed {
            attempt: AttemptId::from_raw(3),
            failure: Failure::Panicked(Panic::new(PanicSite::Connector, "msg")),
            consecutive_failures: 2,
        }
    );
    assert_eq!(DisplayAction(&action).to_string(), line);
    for (site, name) in SITES {
        for message in MESSAGES {
            let action: Action<String> = Action::AttemptFailed {
                attempt: AttemptId::from_raw(4),
                failure: Failure::Panicked(Panic::new(site, message)),
                consecutive_failures: 1,
            };
            let text = DisplayAction(&action).to_string();
            assert!(
                text.starts_with(&format!("attempt_failed attempt#4 panicked({name} \"")),
                "{text}"
            );
            assert_eq!(parse_action(&text).as_ref(), Ok(&action), "{text}");
        }
    }
}

#[test]
fn every_failure_prints_and_parses_back() {
    let failures: [(Failure<String>, &str); 6] = [
        (Failure::Connect("refused".into()), "connect(\"refused\")"),
        (
            Failure::Prepare("said \"no\"".into()),
            "prepare(\"said \\\"no\\\"\")",
        ),
        (Failure::ConnectTimeout, "connect_timeout"),
        (Failure::PrepareTimeout, "prepare_timeout"),
        (Failure::LostWhilePreparing, "lost_while_preparing"),
        (
            Failure::Panicked(Panic::new(PanicSite::Handle, "x")),
            "panicked(handle \"x\")",
        ),
    ];
    for (failure, text) in failures {
        let action: Action<String> = Action::AttemptFailed {
            attempt: AttemptId::from_raw(9),
            failure,
            consecutive_failures: 7,
        };
        let line = format!("attempt_failed attempt#9 {text} failures=7");
        assert_eq!(DisplayAction(&action).to_string(), line);
        assert_eq!(parse_action(&line), Ok(action), "{line}");
    }
}

#[test]
fn deliver_failure_names_only_waiters_and_the_give_up() {
    let give_ups = [
        (None, String::new()),
        (
            Some(GiveUp {
                consecutive_failures: 3,
                fatal: false,
            }),
            String::from(" gave_up=3"),
        ),
        (
            Some(GiveUp {
                consecutive_failures: 1,
                fatal: true,
            }),
            String::from(" gave_up=1 fatal"),
        ),
    ];
    for ids in [&[][..], &[0][..], &[0, 1][..], &[2, 5, 7][..]] {
        for (gave_up, suffix) in &give_ups {
            let action: Action<String> = Action::DeliverFailure {
                waiters: ids.iter().copied().map(WaiterId::from_raw).collect(),
                gave_up: *gave_up,
            };
            let line = DisplayAction(&action).to_string();
            let expected: String = ids.iter().map(|n| format!(" waiter#{n}")).collect();
            assert_eq!(line, format!("deliver_failure{expected}{suffix}"));
            assert_eq!(parse_action(&line), Ok(action), "{line}");
        }
    }
    assert!(parse_action("deliver_failure waiter#0 gave_up=2 fatal extra").is_err());
    // The old form, with the failure on the deliver_failure line, is not read.
    assert!(parse_action("deliver_failure connect(\"refused\") waiter#0").is_err());
}

#[test]
fn facts_print_and_parse_back() {
    let facts: [(Action<String>, &str); 6] = [
        (
            Action::Connected {
                attempt: AttemptId::from_raw(2),
                generation: 1,
            },
            "connected attempt#2 generation=1",
        ),
        (
            Action::Lost {
                attempt: AttemptId::from_raw(2),
                kind: LossKind::Closed,
                flap: false,
            },
            "lost attempt#2 closed",
        ),
        (
            Action::Lost {
                attempt: AttemptId::from_raw(3),
                kind: LossKind::ProbeFailed,
                flap: true,
            },
            "lost attempt#3 probe_failed flap",
        ),
        (
            Action::Lost {
                attempt: AttemptId::from_raw(4),
                kind: LossKind::ProbeTimedOut,
                flap: false,
            },
            "lost attempt#4 probe_timed_out",
        ),
        (
            Action::RetryScheduled {
                delay: Duration::from_millis(1500),
                consecutive_failures: 2,
            },
            "retry_scheduled 1500ms failures=2",
        ),
        (
            Action::GaveUp {
                consecutive_failures: 6,
                fatal: true,
            },
            "gave_up 6 fatal",
        ),
    ];
    for (action, line) in facts {
        assert!(action.is_fact(), "{action:?}");
        assert_eq!(DisplayAction(&action).to_string(), line);
        assert_eq!(parse_action(line), Ok(action), "{line}");
    }
    for bad in [
        "connected attempt#2",
        "connected attempt#2 generation=x",
        "lost attempt#2 vanished",
        "lost attempt#2 closed sometimes",
        "retry_scheduled 1s",
        "retry_scheduled 1s fails=1",
    ] {
        assert!(parse_action(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_already_connected_rejection_prints_and_parses_back() {
    let rejection = Rejection::AlreadyConnected(AttemptId::from_raw(2));
    assert_eq!(
        DisplayRejection(rejection).to_string(),
        "already_connected attempt#2"
    );
    assert_eq!(
        parse_rejection("already_connected attempt#2"),
        Ok(rejection)
    );
    // The rejection it replaces is gone from the format.
    assert!(parse_rejection("established attempt#2").is_err());
}

#[test]
fn malformed_panics_are_parse_errors() {
    for line in [
        "panicked attempt#0 \"no site\"",
        "panicked attempt#0 keyboard \"boom\"",
        "panicked attempt#0 connector boom",
        "panicked attempt#0 connector",
        "panicked waiter#0 connector \"boom\"",
    ] {
        assert!(parse_input(line).is_err(), "{line}");
    }
    for line in [
        "attempt_failed attempt#0 panicked(connector",
        "attempt_failed attempt#0 panicked(keyboard \"boom\")",
        "attempt_failed attempt#0 panicked(connector \"boom\"",
        "attempt_failed attempt#0 panicked(connector)",
        "attempt_failed attempt#0 panicked connector \"boom\"",
        "attempt_failed panicked(connector \"boom\")",
        "attempt_failed attempt#0 panicked(connector \"boom\") waiter#0",
    ] {
        assert!(parse_action(line).is_err(), "{line}");
    }
}

#[test]
fn the_panicked_trace_reads_back_as_it_prints() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/machine/traces/panicked.trace");
    let trace: Trace = fs::read_to_string(path).unwrap().parse().unwrap();
    let printed = trace.to_string();
    assert_eq!(printed.parse::<Trace>().unwrap(), trace, "{printed}");
    let panics = trace
        .steps
        .iter()
        .filter(|s| matches!(s.input, Input::Panicked { .. }))
        .count();
    assert_eq!(panics, 6, "{printed}");
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

// ----- comments, times and the recorded policy -------------------------------------

/// A trace with comments (above the header, between steps, indented, at the end),
/// times and `policy recorded` reads back, prints in its canonical form (comments
/// before the first input after the header, `# ` before each), and that form
/// reads back as the same trace and prints again the same.
#[test]
fn comments_and_times_read_back_as_they_print() {
    let text = "\
# a prologue
#
#tight
config connect_timeout=5s
policy recorded
start
  connect attempt#0
  schedule timer#0 connect_timeout 5s
# the connector fails after 10 ms
@10ms connection_failed attempt#0 \"refused\"
  cancel_timer timer#0
  # an indented comment
  schedule timer#1 retry 1500ms
  attempt_failed attempt#0 connect(\"refused\") failures=1
  retry_scheduled 1500ms failures=1
@1510ms timer_fired timer#1
  connect attempt#1
  schedule timer#2 connect_timeout 5s
when_connected
  = waiter#0
@1520ms connection_made attempt#1
  cancel_timer timer#2
  connected attempt#1 generation=1
  notify attempt#1 waiter#0
# the end
";
    let trace: Trace = text.parse().unwrap();
    assert!(trace.policy_recorded);
    assert_eq!(trace.steps.len(), 5);
    assert_eq!(trace.time_of(0), None);
    assert_eq!(trace.time_of(1), Some(Duration::from_millis(10)));
    assert_eq!(trace.time_of(3), Some(Duration::from_millis(1510)));
    assert_eq!(trace.time_of(4), Some(Duration::from_millis(1520)));
    let texts: Vec<(usize, &str)> = trace
        .comments
        .iter()
        .map(|c| (c.before, c.text.as_str()))
        .collect();
    assert_eq!(
        texts,
        [
            (0, "a prologue"),
            (0, ""),
            (0, "tight"),
            (1, "the connector fails after 10 ms"),
            (2, "an indented comment"),
            (5, "the end"),
        ]
    );
    let printed = trace.to_string();
    let expected = "\
config connect_timeout=5s
policy recorded
# a prologue
#
# tight
start
  connect attempt#0
  schedule timer#0 connect_timeout 5s
# the connector fails after 10 ms
@10ms connection_failed attempt#0 \"refused\"
  cancel_timer timer#0
  schedule timer#1 retry 1500ms
  attempt_failed attempt#0 connect(\"refused\") failures=1
  retry_scheduled 1500ms failures=1
# an indented comment
@1510ms timer_fired timer#1
  connect attempt#1
  schedule timer#2 connect_timeout 5s
when_connected
  = waiter#0
@1520ms connection_made attempt#1
  cancel_timer timer#2
  connected attempt#1 generation=1
  notify attempt#1 waiter#0
# the end
";
    assert_eq!(printed, expected);
    let again: Trace = printed.parse().unwrap();
    assert_eq!(again, trace);
    assert_eq!(again.to_string(), printed);
    // 1.5 s is not what `policy linear 1ms` would say: the recorded answer replays.
    trace.replay().unwrap();
    let linear: Trace = printed
        .replace("policy recorded", "policy linear 1ms")
        .parse()
        .unwrap();
    assert!(linear.replay().unwrap_err().contains("step 2 differs"));
}

#[test]
fn times_must_not_go_back_and_must_precede_an_input() {
    for (text, line) in [
        ("@5ms start\n@4ms stop\n", 2),
        ("start\n@1s\n", 2),
        ("@1s policy linear 1ms\n", 1),
        ("@soon start\n", 1),
        ("start\n  @1s connect attempt#0\n", 2),
    ] {
        let e = text.parse::<Trace>().unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
    }
    // The same time twice, and a time after untimed steps, are fine.
    let trace: Trace = "start\n@0s stop\n@0s start\n".parse().unwrap();
    assert_eq!(trace.time_of(0), None);
    assert_eq!(trace.time_of(2), Some(Duration::ZERO));
}

/// With times, a replay checks that no timer fired before it was due.
#[test]
fn a_timer_that_fires_early_does_not_replay() {
    let text = "\
policy linear 1s
@0s start
  connect attempt#0
@10ms connection_failed attempt#0 \"refused\"
  schedule timer#0 retry 1s
  attempt_failed attempt#0 connect(\"refused\") failures=1
  retry_scheduled 1s failures=1
@WHEN timer_fired timer#0
  connect attempt#1
";
    let on_time: Trace = text.replace("WHEN", "1010ms").parse().unwrap();
    on_time.replay().unwrap();
    let late: Trace = text.replace("WHEN", "2s").parse().unwrap();
    late.replay().unwrap();
    let early: Trace = text.replace("WHEN", "1009ms").parse().unwrap();
    let report = early.replay().unwrap_err();
    assert!(report.contains("step 3: timer#0 fired at"), "{report}");
}

/// Every scenario file prints in a form that reads back as the same trace
/// (comments included) and prints again the same.
#[test]
fn every_trace_file_prints_back() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/machine/traces");
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "trace") {
            continue;
        }
        let trace: Trace = fs::read_to_string(&path).unwrap().parse().unwrap();
        assert!(!trace.comments.is_empty(), "{path:?} has comments");
        let printed = trace.to_string();
        let again: Trace = printed.parse().unwrap();
        assert_eq!(again, trace, "{path:?}");
        assert_eq!(again.to_string(), printed, "{path:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// A run's trace with comments and times added anywhere (times never going
    /// back) prints, reads back as the same trace, prints again the same, and
    /// replays (unless the times added make a timer fire early, which the replay
    /// reports).
    #[test]
    fn traces_with_comments_and_times_read_back_and_replay(
        config in strategy::config(),
        policy in strategy::sim_policy(),
        ops in strategy::ops(0..60),
        comments in proptest::collection::vec((any::<prop::sample::Index>(), "[ -~]{0,20}"), 0..6),
        times in proptest::collection::vec((any::<prop::sample::Index>(), 0u64..5000), 0..6),
        recorded in any::<bool>(),
    ) {
        let mut machine = Machine::with_config(policy, config).unwrap();
        let mut trace = run_ops(&mut machine, &ops, |_, _, _| Ok(()))
            .map_err(|v| TestCaseError::fail(v.to_string()))?;
        // A recorded trace names no policy: it reads back with the default one.
        trace.policy = if recorded { SimPolicy::default() } else { policy };
        trace.policy_recorded = recorded;
        let steps = trace.steps.len();
        for (at, text) in comments {
            trace.comments.push(redial::testing::trace::Comment {
                before: at.index(steps + 1),
                text: text.trim_end().to_string(),
            });
        }
        trace.comments.sort_by_key(|c| c.before);
        if steps > 0 {
            let mut marks: Vec<(usize, u64)> =
                times.iter().map(|(i, ms)| (i.index(steps), *ms)).collect();
            marks.sort_unstable();
            marks.dedup_by_key(|(i, _)| *i);
            let mut now = Duration::ZERO;
            for (i, ms) in marks {
                now += Duration::from_millis(ms);
                trace.times.insert(i, now);
            }
        }
        let text = trace.to_string();
        let parsed: Trace = text.parse().map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&parsed, &trace, "{}", text);
        prop_assert_eq!(&parsed.to_string(), &text);
        if let Err(report) = parsed.replay() {
            prop_assert!(report.contains("before it was due"), "{}\n{}", text, report);
            trace.times.clear();
            prop_assert!(trace.replay().is_ok(), "{}", trace);
        }
    }
}
