//! Model-based property tests: random sequences of valid, stale and invalid inputs
//! are fed to the `Machine` and to the reference model in devkit/src/model.rs; the action
//! lists must be equal and the invariants of the behaviour contract (docs/contract.md,
//! Invariants) must hold after every step.
//!
//! A failure shrinks to a short sequence and prints it as a trace (the format of
//! tests/machine/traces/*.trace), ending with `# violated: …`.
//!
//! Cases: `REDIAL_PROPTEST_CASES` (default 10 000) for the main property, a tenth
//! of that for each of the others. Soak locally with e.g.
//! `REDIAL_PROPTEST_CASES=1000000 cargo test --release --test machine_model proptest_machine`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use redial::testing::{minimize, run_ops, strategy, Op, SimPolicy};
use redial::{Action, Config, Input, Machine, RetryPolicy};
use redial_devkit::model::run_with_model;

fn cases() -> u32 {
    std::env::var("REDIAL_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 100_000,
        // Failure persistence files would land in the source tree; the seeds are
        // printed on failure instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `ops` through the machine and the model; on failure, the shortest trace
/// [`minimize`] finds.
fn check_run(config: Config, policy: SimPolicy, ops: &[Op]) -> Result<(), TestCaseError> {
    match run_with_model(config, policy, ops) {
        Ok(()) => Ok(()),
        Err(_) => {
            let shortest = minimize(ops, |ops| run_with_model(config, policy, ops).is_err());
            let violation = run_with_model(config, policy, &shortest).unwrap_err();
            Err(TestCaseError::fail(format!(
                "{violation}\n# ({} ops; the ops: {shortest:?})",
                shortest.len()
            )))
        }
    }
}

proptest! {
    #![proptest_config(proptest_config(cases()))]

    /// Any configuration, any deterministic policy (a third give up), any mix of
    /// valid, stale and invalid inputs.
    #[test]
    fn machine_matches_model(
        config in strategy::config(),
        policy in strategy::sim_policy(),
        ops in strategy::ops(0..200),
    ) {
        check_run(config, policy, &ops)?;
    }
}

proptest! {
    #![proptest_config(proptest_config(cases() / 10))]

    /// Twisted's defaults: no opt-ins, a policy that never gives up.
    #[test]
    fn default_config_matches_model(ops in strategy::ops(0..200)) {
        check_run(Config::default(), SimPolicy::linear(Duration::from_secs(1)), &ops)?;
    }

    /// A prepare step with a timeout, and a connect timeout.
    #[test]
    fn prepare_and_timeouts_match_model(ops in strategy::ops(0..200)) {
        let config = Config::new()
            .with_prepare(true)
            .with_connect_timeout(Some(Duration::from_secs(5)))
            .with_prepare_timeout(Some(Duration::from_secs(2)));
        check_run(config, SimPolicy::linear(Duration::from_millis(1)), &ops)?;
    }

    /// Backoff reset only after the connection stayed up, with prepare.
    #[test]
    fn reset_backoff_after_matches_model(ops in strategy::ops(0..200)) {
        let config = Config::new()
            .with_prepare(true)
            .with_reset_backoff_after(Some(Duration::from_secs(10)));
        check_run(config, SimPolicy::linear(Duration::from_millis(1)), &ops)?;
    }

    /// A policy that gives up after three failures.
    #[test]
    fn give_up_matches_model(config in strategy::config(), ops in strategy::ops(0..200)) {
        check_run(config, SimPolicy::linear(Duration::from_millis(1)).give_up_after(3), &ops)?;
    }

    /// Many waiters, most of them withdrawn in any order (the queue's tombstones
    /// and their compaction), among realistic happenings.
    #[test]
    fn many_withdrawn_waiters_match_model(
        config in strategy::config(),
        policy in strategy::sim_policy(),
        ops in proptest::collection::vec(
            prop_oneof![
                4 => strategy::fail_after()
                    .prop_map(|fail_after_failures| Op::WhenConnected { fail_after_failures }),
                3 => any::<u16>().prop_map(|pick| Op::Withdraw { pick }),
                1 => strategy::valid_op(),
                1 => strategy::stale_op(),
            ],
            0..600,
        ),
    ) {
        check_run(config, policy, &ops)?;
    }

    /// Only what a correct driver and user do: long, realistic runs.
    #[test]
    fn valid_runs_match_model(
        config in strategy::config(),
        policy in strategy::sim_policy(),
        ops in proptest::collection::vec(strategy::valid_op(), 0..400),
    ) {
        check_run(config, policy, &ops)?;
    }
}

/// Feeds `input` through the machine's method for it (not `handle`).
fn call_method(
    m: &mut Machine<String, SimPolicy>,
    input: redial::Input<String>,
) -> Result<redial::Step<String>, redial::InputError> {
    use redial::Input::*;
    let step = |actions| redial::Step {
        actions,
        waiter: None,
        stop: None,
    };
    Ok(match input {
        Start => step(m.start()),
        Stop => {
            let (stop, actions) = m.stop();
            redial::Step {
                stop: Some(stop),
                ..step(actions)
            }
        }
        WhenConnected {
            fail_after_failures,
        } => {
            let (waiter, actions) = m.when_connected(fail_after_failures);
            redial::Step {
                waiter: Some(waiter),
                ..step(actions)
            }
        }
        CancelWaiter { waiter } => step(m.cancel_waiter(waiter)?),
        ReconnectNow { reset_backoff } => step(m.reconnect_now(reset_backoff)),
        ConnectionMade { attempt } => step(m.connection_made(attempt)?),
        ConnectionFailed { attempt, error } => step(m.connection_failed(attempt, error)?),
        ConnectCancelled { attempt } => step(m.connect_cancelled(attempt)?),
        PrepareSucceeded { attempt } => step(m.prepare_succeeded(attempt)?),
        PrepareFailed { attempt, error } => step(m.prepare_failed(attempt, error)?),
        AttemptFailedFatally { attempt, error } => step(m.attempt_failed_fatally(attempt, error)?),
        ProbeSucceeded { attempt } => step(m.probe_succeeded(attempt)?),
        ConnectionActive { attempt, quiet_for } => step(m.connection_active(attempt, quiet_for)?),
        ProbeFailed { attempt } => step(m.probe_failed(attempt)?),
        ConnectionClosed { attempt } => step(m.connection_closed(attempt)?),
        Panicked { attempt, panic } => step(m.panicked(attempt, panic)?),
        TimerFired { timer } => step(m.timer_fired(timer)?),
    })
}

proptest! {
    #![proptest_config(proptest_config(cases() / 10))]

    /// Every input method (`start`, `connection_made`, …) does exactly what
    /// `handle` does with the same input: same actions, ids and errors, same machine after.
    #[test]
    fn methods_match_handle(
        config in strategy::config(),
        policy in strategy::sim_policy(),
        ops in strategy::ops(0..150),
    ) {
        let mut by_handle = Machine::with_config(policy, config).unwrap();
        let mut by_method = by_handle.clone();
        let mut world = redial::testing::World::new();
        for op in &ops {
            let Some(input) = world.resolve(op) else { continue };
            let expected = by_handle.handle(input.clone());
            let actual = call_method(&mut by_method, input.clone());
            prop_assert_eq!(&actual, &expected, "{:?}", input);
            prop_assert!(by_method == by_handle, "machines differ after {:?}", input);
            // The reading methods agree with the model's view of the same machine.
            prop_assert_eq!(by_method.config(), &config);
            prop_assert_eq!(by_method.policy(), &policy);
            prop_assert_eq!(
                by_method.outstanding().count(),
                by_handle.outstanding().count()
            );
            world.observe(&input, &expected);
        }
    }
}

/// A [`SimPolicy`] that records every `consecutive_failures` it is asked about.
#[derive(Debug, Clone)]
struct Recorded {
    inner: SimPolicy,
    asked: Rc<RefCell<Vec<u32>>>,
}

/// Compares the policies, not the records (the machine is compared before and
/// after each input, and the record is shared).
impl PartialEq for Recorded {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl RetryPolicy for Recorded {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        self.asked.borrow_mut().push(consecutive_failures);
        self.inner.next_delay(consecutive_failures)
    }
}

proptest! {
    #![proptest_config(proptest_config(cases() / 10))]

    /// The first start after the policy gave up begins a fresh schedule (the
    /// count is 0, and the next failure asks the policy for 1); any other start
    /// leaves the count as it was (Twisted's carry-over across stop and start).
    #[test]
    fn a_start_after_giving_up_asks_the_policy_for_one_first(
        config in strategy::config(),
        give_up_after in 1u32..=4,
        ops in strategy::ops(0..300),
    ) {
        let asked = Rc::new(RefCell::new(Vec::new()));
        let policy = Recorded {
            inner: SimPolicy::linear(Duration::from_millis(1)).give_up_after(give_up_after),
            asked: Rc::clone(&asked),
        };
        let mut machine = Machine::with_config(policy, config).unwrap();
        let (mut gave_up, mut fresh, mut seen) = (false, false, 0);
        let mut count = 0;
        run_ops(&mut machine, &ops, |input, result, machine| {
            let asks = asked.borrow();
            if let (true, Some(&first)) = (fresh, asks.get(seen)) {
                if first != 1 {
                    return Err(format!("the first ask after a fresh start was {first}"));
                }
                fresh = false;
            }
            seen = asks.len();
            let Ok(step) = result else { return Ok(()) };
            if matches!(input, Input::Start) {
                let expected = if gave_up { 0 } else { count };
                if machine.consecutive_failures() != expected {
                    return Err(format!(
                        "start (after a give-up: {gave_up}) left the count at {}, not {expected}",
                        machine.consecutive_failures()
                    ));
                }
                fresh |= gave_up;
                gave_up = false;
            }
            if step.actions.iter().any(|a| matches!(a, Action::GaveUp { .. })) {
                gave_up = true;
            }
            count = machine.consecutive_failures();
            Ok(())
        })
        .map_err(|violation| TestCaseError::fail(violation.to_string()))?;
    }
}

// ----- the retry policies: gaps found by mutation testing ---------------------------

mod policies {
    use std::time::Duration;

    use redial::policy::{Backoff, Jitter, RetryPolicy};

    fn decorrelated() -> Backoff {
        Backoff::new(Duration::from_millis(10), 2.0, Duration::from_secs(100))
            .unwrap()
            .with_jitter(Jitter::Decorrelated)
    }

    fn draws(mut b: Backoff, from: u32) -> Vec<Option<Duration>> {
        (from..from + 8).map(|n| b.next_delay(n)).collect()
    }

    /// `with_seed` and `with_jitter` restart Decorrelated's memory of the previous
    /// delay: a used policy reseeded behaves exactly like a fresh one.
    #[test]
    fn reseeding_restarts_the_decorrelated_memory() {
        let mut used = decorrelated().with_seed(1);
        for n in 1..20 {
            used.next_delay(n);
        }
        let fresh = decorrelated().with_seed(9);
        assert_eq!(draws(used.clone().with_seed(9), 5), draws(fresh.clone(), 5));
        // …and after with_jitter the first draw at n > 1 is below 3 · initial again.
        let mut used = decorrelated().with_seed(3);
        for n in 1..30 {
            used.next_delay(n);
        }
        let mut reset = used.with_jitter(Jitter::Decorrelated);
        let d = reset.next_delay(7).unwrap();
        assert!(d < Duration::from_millis(30), "{d:?}: prev was not reset");
        let mut used = decorrelated().with_seed(3);
        for n in 1..30 {
            used.next_delay(n);
        }
        let mut reseeded = used.with_seed(4);
        let d = reseeded.next_delay(7).unwrap();
        assert!(d < Duration::from_millis(30), "{d:?}: prev was not reset");
    }

    /// Two default policies draw different jitter (their seeds differ).
    #[test]
    fn default_policies_are_seeded_differently() {
        let a = draws(Backoff::default(), 1);
        let b = draws(Backoff::default(), 1);
        assert_ne!(a, b, "two Backoff::default() drew the same jitter");
    }

    /// The jitter is spread over its whole interval, not stuck at one end: 64
    /// draws land in both halves (each draw misses a half with probability 1/2).
    #[test]
    fn jitter_is_spread_over_its_interval() {
        let base = Duration::from_secs(1);
        // 2^40 s is beyond u64 nanoseconds: the draw takes the f64 path.
        let huge = Duration::from_secs(1 << 40);
        let modes = [
            Jitter::Full,
            Jitter::Equal,
            Jitter::Additive {
                max: Duration::from_secs(1),
            },
            Jitter::Additive { max: huge },
        ];
        for (i, jitter) in modes.into_iter().enumerate() {
            let mut b = Backoff::new(base, 1.0, base)
                .unwrap()
                .with_jitter(jitter)
                .with_seed(i as u64);
            let (low, high) = match jitter {
                Jitter::Full => (Duration::ZERO, base),
                Jitter::Equal => (base / 2, base),
                Jitter::Additive { max } => (base, base + max),
                _ => unreachable!(),
            };
            let middle = low + (high - low) / 2;
            let draws: Vec<Duration> = (0..64).map(|_| b.next_delay(3).unwrap()).collect();
            assert!(
                draws.iter().any(|d| *d < middle),
                "{jitter:?}: none below {middle:?}: {draws:?}"
            );
            assert!(
                draws.iter().any(|d| *d > middle),
                "{jitter:?}: none above {middle:?}: {draws:?}"
            );
        }
    }
}

/// The generators make `panicked` reports for every row of its rule: the current
/// attempt while attempting and while preparing, the established connection
/// (rejected), an attempt asked to cancel (gone), a connection asked to close and
/// an old attempt (stale), and ids never issued (rejected).
#[test]
fn generated_panics_cover_every_row_of_their_rule() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use redial::{Action, Input, Rejection};
    use std::collections::BTreeSet;

    let mut runner = TestRunner::deterministic();
    let cases = (
        strategy::config(),
        strategy::sim_policy(),
        strategy::ops(0..200),
    );
    let mut seen = BTreeSet::new();
    for _ in 0..300 {
        let (config, policy, ops) = cases.new_tree(&mut runner).unwrap().current();
        let mut machine = Machine::with_config(policy, config).unwrap();
        let mut world = redial::testing::World::new();
        for op in &ops {
            let Some(input) = world.resolve(op) else {
                continue;
            };
            let Input::Panicked { attempt, .. } = &input else {
                let result = machine.handle(input.clone());
                world.observe(&input, &result);
                continue;
            };
            let current = machine.current_attempt() == Some(*attempt);
            let outstanding = machine.outstanding().any(|a| a == *attempt);
            let result = machine.handle(input.clone());
            let still_outstanding = machine.outstanding().any(|a| a == *attempt);
            seen.insert(match &result {
                Err(e) if e.reason == Rejection::AlreadyConnected(*attempt) => "already connected",
                Err(e) if e.reason == Rejection::UnknownAttempt(*attempt) => "unknown",
                Err(e) => panic!("unexpected rejection {e}"),
                Ok(step) if current => {
                    let closes = step
                        .actions
                        .iter()
                        .any(|a| *a == Action::Disconnect { attempt: *attempt });
                    if closes {
                        "preparing"
                    } else {
                        "attempting"
                    }
                }
                Ok(_) if outstanding && still_outstanding => "closing",
                Ok(_) if outstanding => "cancelled",
                Ok(_) => "old",
            });
            world.observe(&input, &result);
        }
    }
    let all: BTreeSet<&str> = [
        "already connected",
        "attempting",
        "cancelled",
        "closing",
        "old",
        "preparing",
        "unknown",
    ]
    .into();
    assert_eq!(seen, all);
}
