//! All or nothing: a retry policy that panics leaves the machine exactly as it was
//! before the input, appends nothing to the caller's action buffer, and the panic
//! reaches the caller. The machine keeps working afterwards.
//!
//! Every transition that consults the policy is covered on its own (a failed
//! attempt, a prepare step that fails, a connection lost while preparing, a panic
//! while attempting and while preparing, a fatal failure below the threshold while
//! attempting and while preparing, the connect and prepare timeouts, the loss of an
//! established connection, a failed probe and the probe timeout), and a property test makes the policy panic at a
//! random call in random runs, checking the same thing at that step and comparing
//! every later step with the reference model.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::panic::{self, catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Once;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{TestCaseError, TestRunner};
use redial::testing::{strategy, Invariants, Op, SimPolicy, World};
use redial::{
    Action, Actions, AttemptId, Config, Input, Issued, Machine, Panic, PanicSite, RetryPolicy,
    State, Step, TimerKind,
};
use redial_devkit::model::{compare, Model};

/// What std's `Duration * u32` panics with when it overflows.
const OVERFLOW: &str = "overflow when multiplying duration by scalar";

/// Keeps the expected panics of these tests off stderr; any other panic (a failed
/// assertion) is printed as usual.
fn quiet_policy_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if message(info.payload()) != Some(OVERFLOW) {
                default(info);
            }
        }));
    });
}

/// The message of a caught panic.
fn message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

/// A buggy policy: `n` seconds after `n` failures, or, while armed, an overflowing
/// `Duration * n`. The switch is shared by clones, so a machine and a clone of it
/// taken before an input compare equal whatever the switch says.
#[derive(Debug, Clone, PartialEq)]
struct Bomb {
    armed: Rc<Cell<bool>>,
}

impl RetryPolicy for Bomb {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        if self.armed.get() {
            // n >= 1, so this is at least Duration::MAX * 2.
            Some(Duration::MAX * consecutive_failures.saturating_add(1))
        } else {
            Some(Duration::from_secs(consecutive_failures.into()))
        }
    }
}

type M = Machine<String, Bomb>;

fn a(n: u64) -> AttemptId {
    AttemptId::from_raw(n)
}

fn boom(site: PanicSite) -> Panic {
    Panic::new(site, "user code panicked")
}

/// Every opt-in on, so that each transition has a timer to cancel, and two
/// waiters, one of which a failure would answer: a transition that ran halfway
/// would leave a trace.
fn config() -> Config {
    Config::new()
        .with_prepare(true)
        .with_connect_timeout(Some(Duration::from_secs(5)))
        .with_prepare_timeout(Some(Duration::from_secs(2)))
        .with_reset_backoff_after(Some(Duration::from_secs(30)))
        // A first fatal failure asks the policy (the second would not).
        .with_give_up_after_fatal(std::num::NonZeroU32::new(2).unwrap())
}

/// A machine with its current attempt in flight, with two waiters.
fn attempting() -> M {
    let policy = Bomb {
        armed: Rc::new(Cell::new(false)),
    };
    let mut m = Machine::with_config(policy, config()).unwrap();
    let _ = m.start();
    let _ = m.when_connected(None);
    let _ = m.when_connected(std::num::NonZeroU32::new(1));
    assert_eq!(
        m.armed_timer().map(|(_, k)| k),
        Some(TimerKind::ConnectTimeout)
    );
    m
}

/// Its connection made and being prepared.
fn preparing() -> M {
    let mut m = attempting();
    let _ = m.connection_made(a(0)).unwrap();
    assert_eq!(
        m.armed_timer().map(|(_, k)| k),
        Some(TimerKind::PrepareTimeout)
    );
    m
}

/// Its connection established.
fn connected() -> M {
    let mut m = preparing();
    let _ = m.prepare_succeeded(a(0)).unwrap();
    assert_eq!(m.state(), State::Connected);
    assert_eq!(m.armed_timer().map(|(_, k)| k), Some(TimerKind::Healthy));
    m
}

/// Connected with liveness probes, a probe outstanding (its timeout armed).
fn probing() -> M {
    let policy = Bomb {
        armed: Rc::new(Cell::new(false)),
    };
    let probe = redial::ProbeConfig::new(Duration::from_secs(10), Duration::from_secs(2));
    let config = Config::new()
        .with_reset_backoff_after(Some(Duration::from_secs(30)))
        .with_probe(Some(probe));
    let mut m = Machine::with_config(policy, config).unwrap();
    let _ = m.start();
    let _ = m.connection_made(a(0)).unwrap();
    let _ = m.timer_fired(m.armed_timer().unwrap().0).unwrap();
    assert_eq!(
        m.armed_timer().map(|(_, k)| k),
        Some(TimerKind::ProbeTimeout)
    );
    m
}

fn timer_fired(m: &M) -> Input<String> {
    Input::TimerFired {
        timer: m.armed_timer().expect("a timer armed").0,
    }
}

/// Every transition that consults the policy: its name, the machine before it
/// (policy disarmed) and the input.
fn transitions() -> Vec<(&'static str, M, Input<String>)> {
    let attempting = attempting();
    let preparing = preparing();
    let connected = connected();
    vec![
        (
            "connection failed",
            attempting.clone(),
            Input::ConnectionFailed {
                attempt: a(0),
                error: "refused".into(),
            },
        ),
        (
            "prepare failed",
            preparing.clone(),
            Input::PrepareFailed {
                attempt: a(0),
                error: "auth".into(),
            },
        ),
        (
            "lost while preparing",
            preparing.clone(),
            Input::ConnectionClosed { attempt: a(0) },
        ),
        (
            "failed fatally while attempting",
            attempting.clone(),
            Input::AttemptFailedFatally {
                attempt: a(0),
                error: "bad password".into(),
            },
        ),
        (
            "failed fatally while preparing",
            preparing.clone(),
            Input::AttemptFailedFatally {
                attempt: a(0),
                error: "bad password".into(),
            },
        ),
        (
            "panicked while attempting",
            attempting.clone(),
            Input::Panicked {
                attempt: a(0),
                panic: boom(PanicSite::Connector),
            },
        ),
        (
            "panicked while preparing",
            preparing.clone(),
            Input::Panicked {
                attempt: a(0),
                panic: boom(PanicSite::Prepare),
            },
        ),
        (
            "connect timeout",
            attempting.clone(),
            timer_fired(&attempting),
        ),
        (
            "prepare timeout",
            preparing.clone(),
            timer_fired(&preparing),
        ),
        (
            "lost after being established",
            connected,
            Input::ConnectionClosed { attempt: a(0) },
        ),
        (
            "probe failed",
            probing(),
            Input::ProbeFailed { attempt: a(0) },
        ),
        ("probe timeout", probing(), timer_fired(&probing())),
    ]
}

#[test]
fn a_panicking_policy_changes_nothing_in_every_transition_that_asks_it() {
    quiet_policy_panics();
    let subjects = transitions();
    assert_eq!(subjects.len(), 12);
    // The same machines again, with switches of their own that stay off.
    let references = transitions();
    for ((name, mut m, input), (_, mut fresh, _)) in subjects.into_iter().zip(references) {
        // What the transition does with a policy that answers.
        let expected = fresh.handle(input.clone()).unwrap();
        assert!(
            expected.actions.iter().any(|action| matches!(
                action,
                Action::ScheduleTimer {
                    kind: TimerKind::Retry,
                    ..
                }
            )),
            "{name}: the transition does not ask the policy? {expected:?}"
        );

        let switch = m.policy().armed.clone();
        switch.set(true);
        let before = m.clone();

        // handle_into: the panic propagates; the machine and the buffer are untouched.
        let sentinel: Action<String> = Action::GaveUp {
            consecutive_failures: 99,
            fatal: false,
        };
        let mut out: Actions<String> = [sentinel.clone()].into_iter().collect();
        let caught = catch_unwind(AssertUnwindSafe(|| m.handle_into(input.clone(), &mut out)));
        let payload = caught.expect_err(name);
        assert_eq!(message(&*payload), Some(OVERFLOW), "{name}");
        assert_eq!(m, before, "{name}: the machine changed");
        assert_eq!(
            out.as_slice(),
            std::slice::from_ref(&sentinel),
            "{name}: actions were appended"
        );

        // The by-value path (and the method) too.
        assert!(catch_unwind(AssertUnwindSafe(|| m.handle(input.clone()))).is_err());
        assert_eq!(m, before, "{name}: handle changed the machine");

        // Disarmed, the same input does what it does on a machine whose policy
        // never panicked.
        switch.set(false);
        let step = m.handle(input.clone()).unwrap();
        assert_eq!(step, expected, "{name}");
        assert_eq!(m, fresh, "{name}: the machine differs after the retry");
    }
}

// ----- random runs, the policy panicking at a random call -------------------------------

/// [`SimPolicy`] (the model's policy) with a fuse: the call after `calls` more
/// calls panics (an overflowing `Duration * n`) and blows the fuse, so the policy
/// answers as `SimPolicy` ever after. The fuse is shared by clones.
#[derive(Debug, Clone, PartialEq)]
struct Fused {
    inner: SimPolicy,
    fuse: Rc<Cell<Option<u32>>>,
}

impl RetryPolicy for Fused {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        match self.fuse.get() {
            Some(0) => {
                self.fuse.set(None);
                Some(Duration::MAX * consecutive_failures.saturating_add(1))
            }
            Some(calls) => {
                self.fuse.set(Some(calls - 1));
                self.inner.next_delay(consecutive_failures)
            }
            None => self.inner.next_delay(consecutive_failures),
        }
    }
}

/// Which transition an input makes, named as in [`transitions`], judged from a
/// machine that has not seen it yet (and whose policy answers).
fn transition_name(before: &Machine<String, Fused>, input: &Input<String>) -> &'static str {
    let mut m = before.clone();
    let timer = m.armed_timer();
    let step = m.handle(input.clone()).expect("it reached the policy");
    let closes = step
        .actions
        .iter()
        .any(|a| matches!(a, Action::Disconnect { .. }));
    match input {
        Input::ConnectionFailed { .. } => "connection failed",
        Input::PrepareFailed { .. } => "prepare failed",
        Input::ConnectionClosed { .. } if before.state() == State::Connected => {
            "lost after being established"
        }
        Input::ConnectionClosed { .. } => "lost while preparing",
        Input::ProbeFailed { .. } => "probe failed",
        Input::AttemptFailedFatally { .. } if closes => "failed fatally while preparing",
        Input::AttemptFailedFatally { .. } => "failed fatally while attempting",
        Input::Panicked { .. } if closes => "panicked while preparing",
        Input::Panicked { .. } => "panicked while attempting",
        Input::TimerFired { .. } => match timer.map(|(_, kind)| kind) {
            Some(TimerKind::ConnectTimeout) => "connect timeout",
            Some(TimerKind::PrepareTimeout) => "prepare timeout",
            Some(TimerKind::ProbeTimeout) => "probe timeout",
            other => panic!("{other:?} fired and asked the policy"),
        },
        other => panic!("{other:?} asked the policy"),
    }
}

/// Runs `ops`; the policy panics at its call number `calls_before_panic` (from 0).
/// At that step the machine and the buffer must be untouched; every step, before
/// and after, must match the reference model (which never sees the input that
/// panicked) and keep the invariants. Returns the transition that panicked, if any.
fn run_with_a_panic(
    config: Config,
    policy: SimPolicy,
    ops: &[Op],
    calls_before_panic: u32,
) -> Result<Option<&'static str>, TestCaseError> {
    let fuse = Rc::new(Cell::new(Some(calls_before_panic)));
    let fused = Fused {
        inner: policy,
        fuse: fuse.clone(),
    };
    let mut machine = Machine::with_config(fused, config).unwrap();
    let mut model = Model::new(config, policy);
    let mut world = World::new();
    let mut invariants = Invariants::new();
    let sentinel: Action<String> = Action::GaveUp {
        consecutive_failures: 99,
        fatal: false,
    };
    let mut panicked = None;
    for op in ops {
        let Some(input) = world.resolve(op) else {
            continue;
        };
        let before = machine.clone();
        let mut out: Actions<String> = [sentinel.clone()].into_iter().collect();
        let caught = catch_unwind(AssertUnwindSafe(|| {
            machine.handle_into(input.clone(), &mut out)
        }));
        let issued = match caught {
            Err(payload) => {
                prop_assert_eq!(message(&*payload), Some(OVERFLOW));
                prop_assert!(panicked.is_none(), "the policy panicked twice");
                prop_assert!(machine == before, "{:?} changed the machine", input);
                prop_assert_eq!(
                    out.as_slice(),
                    std::slice::from_ref(&sentinel),
                    "{:?}",
                    input
                );
                // As if the input never happened: the model, the world and the
                // ledger do not see it.
                panicked = Some(transition_name(&before, &input));
                continue;
            }
            Ok(issued) => issued,
        };
        prop_assert_eq!(&out[..1], std::slice::from_ref(&sentinel), "{:?}", input);
        let result = issued.map(|issued| Step {
            actions: out.drain().skip(1).collect(),
            waiter: match issued {
                Some(Issued::Waiter(w)) => Some(w),
                _ => None,
            },
            stop: match issued {
                Some(Issued::Stop(s)) => Some(s),
                _ => None,
            },
        });
        invariants
            .check(&input, &result, &machine)
            .map_err(|e| TestCaseError::fail(format!("{input:?}: {e}")))?;
        let stale = compare(&mut model, &input, &result, &machine, before.state())
            .map_err(|e| TestCaseError::fail(format!("{input:?}: {e}")))?;
        if stale || result.is_err() {
            prop_assert!(machine == before, "{:?} changed the machine", input);
        }
        world.observe(&input, &result);
    }
    prop_assert_eq!(fuse.get().is_none(), panicked.is_some());
    Ok(panicked)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// The policy panics at a random call of a random run: nothing changes at that
    /// step, and the machine goes on matching the model with a policy that answers.
    #[test]
    fn a_policy_panicking_at_a_random_call_changes_nothing(
        config in strategy::config(),
        policy in strategy::sim_policy(),
        ops in strategy::ops(0..150),
        calls_before_panic in 0u32..6,
    ) {
        quiet_policy_panics();
        run_with_a_panic(config, policy, &ops, calls_before_panic)?;
    }
}

/// The random runs above reach every transition that asks the policy.
#[test]
fn random_runs_make_the_policy_panic_in_every_transition_that_asks_it() {
    quiet_policy_panics();
    let mut runner = TestRunner::deterministic();
    let cases = (
        strategy::config(),
        strategy::sim_policy(),
        strategy::ops(0..150),
        0u32..6,
    );
    let mut seen = BTreeSet::new();
    for _ in 0..1_000 {
        let (config, policy, ops, calls) = cases.new_tree(&mut runner).unwrap().current();
        if let Some(name) = run_with_a_panic(config, policy, &ops, calls).unwrap() {
            seen.insert(name);
        }
    }
    let all: BTreeSet<&str> = transitions().into_iter().map(|(name, _, _)| name).collect();
    assert_eq!(seen, all);
}

/// A fatal failure that reaches `Config::give_up_after_fatal` gives up without
/// asking the policy: a policy that would panic is never called.
#[test]
fn a_fatal_give_up_never_asks_the_policy() {
    quiet_policy_panics();
    for (name, mut m) in [("attempting", attempting()), ("preparing", preparing())] {
        // The first fatal failure asks the policy (below the threshold of 2) ...
        let _ = m
            .attempt_failed_fatally(a(0), "bad password".into())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (retry, _) = m.armed_timer().unwrap();
        let _ = m.timer_fired(retry).unwrap();
        // ... the second gives up, with the policy armed to panic if asked.
        m.policy().armed.set(true);
        let actions = m
            .attempt_failed_fatally(a(1), "bad password".into())
            .unwrap();
        assert!(
            matches!(
                actions.last(),
                Some(Action::GaveUp {
                    consecutive_failures: 2,
                    fatal: true
                })
            ),
            "{name}: {actions:?}"
        );
        assert_eq!(m.state(), State::Stopped, "{name}");
    }
}
