//! Bad input in every state: a typed error naming the state and the input, and the
//! whole machine (state, counters, pending waiters and stops, ids, policy) exactly as
//! it was.

use std::time::Duration;

use redial::{
    Action, Actions, AttemptId, Backoff, Config, Input, InputError, InputKind, Jitter, Machine,
    Panic, PanicSite, Rejection, State, TimerId, WaiterId,
};

type E = &'static str;
type M = Machine<E, Backoff>;

fn a(n: u64) -> AttemptId {
    AttemptId::from_raw(n)
}

const NEVER: u64 = 1_000_000;

fn fresh() -> M {
    let config = Config::new()
        .with_prepare(true)
        .with_connect_timeout(Some(Duration::from_secs(5)));
    let policy = Backoff::twisted(1).with_jitter(Jitter::Full);
    Machine::with_config(policy, config).unwrap()
}

/// A machine in each of the seven states (Connecting twice: attempting and preparing),
/// with waiters and stops pending where the state allows.
fn machines() -> Vec<(&'static str, M)> {
    let mut out = Vec::new();
    let mut m = fresh();
    let _ = m.when_connected(None);
    out.push(("init", m.clone()));

    let _ = m.start();
    out.push(("attempting", m.clone()));

    let _ = m.connection_made(a(0)).unwrap();
    out.push(("preparing", m.clone()));

    let _ = m.prepare_succeeded(a(0)).unwrap();
    out.push(("connected", m.clone()));

    let _ = m.connection_closed(a(0)).unwrap();
    let _ = m.when_connected(None);
    out.push(("waiting", m.clone()));

    let (timer, _) = m.armed_timer().unwrap();
    let _ = m.timer_fired(timer).unwrap();
    let _ = m.stop();
    out.push(("disconnecting", m.clone()));

    let _ = m.start();
    out.push(("restarting", m.clone()));

    let _ = m.stop();
    let _ = m.connect_cancelled(a(1)).unwrap();
    out.push(("stopped", m));
    out
}

fn assert_rejected(name: &str, m: &M, input: Input<E>, reason: Rejection) {
    let mut after = m.clone();
    let kind = input.kind();
    let err = after
        .handle(input.clone())
        .expect_err(&format!("{name}: {input:?} should be rejected"));
    assert_eq!(
        err,
        InputError {
            state: m.state(),
            input: kind,
            reason
        },
        "{name}: {input:?}"
    );
    assert_eq!(&after, m, "{name}: {input:?} changed the machine");
    // Through handle_into: the caller's buffer is left as it was, too.
    let mut after = m.clone();
    let sentinel: Action<E> = Action::GaveUp {
        consecutive_failures: 77,
        fatal: false,
    };
    let mut out: Actions<E> = [sentinel.clone()].into_iter().collect();
    let again = after
        .handle_into(input.clone(), &mut out)
        .expect_err(&format!(
            "{name}: {input:?} should be rejected by handle_into"
        ));
    assert_eq!(again, err);
    assert_eq!(
        out.as_slice(),
        &[sentinel],
        "{name}: {input:?} appended actions"
    );
    assert_eq!(
        &after, m,
        "{name}: {input:?} changed the machine (handle_into)"
    );
    // The message names the state and the input.
    let text = err.to_string();
    assert!(text.contains(&m.state().to_string()), "{text}");
    assert!(text.contains(kind.name()), "{text}");
}

#[test]
fn ids_never_issued_are_rejected_in_every_state() {
    let machines = machines();
    assert_eq!(machines.len(), 8);
    for (name, m) in &machines {
        let unknown = a(NEVER);
        for input in [
            Input::ConnectionMade { attempt: unknown },
            Input::ConnectionFailed {
                attempt: unknown,
                error: "x",
            },
            Input::ConnectCancelled { attempt: unknown },
            Input::PrepareSucceeded { attempt: unknown },
            Input::PrepareFailed {
                attempt: unknown,
                error: "x",
            },
            Input::ConnectionClosed { attempt: unknown },
            Input::Panicked {
                attempt: unknown,
                panic: Panic::new(PanicSite::Connector, "x"),
            },
        ] {
            assert_rejected(name, m, input, Rejection::UnknownAttempt(unknown));
        }
        let timer = TimerId::from_raw(NEVER);
        assert_rejected(
            name,
            m,
            Input::TimerFired { timer },
            Rejection::UnknownTimer(timer),
        );
        let waiter = WaiterId::from_raw(NEVER);
        assert_rejected(
            name,
            m,
            Input::CancelWaiter { waiter },
            Rejection::UnknownWaiter(waiter),
        );
    }
}

#[test]
fn a_connection_reported_made_in_init_is_rejected() {
    let (name, init) = &machines()[0];
    assert_eq!(init.state(), State::Init);
    assert_rejected(
        name,
        init,
        Input::ConnectionMade { attempt: a(0) },
        Rejection::UnknownAttempt(a(0)),
    );
}

#[test]
fn reports_that_contradict_the_current_attempt_are_rejected() {
    let machines = machines();
    let find = |wanted: &str| machines.iter().find(|(n, _)| *n == wanted).unwrap();

    // Attempting: not made yet, not cancelled.
    let (name, m) = find("attempting");
    assert_rejected(
        name,
        m,
        Input::PrepareSucceeded { attempt: a(0) },
        Rejection::NotMade(a(0)),
    );
    assert_rejected(
        name,
        m,
        Input::PrepareFailed {
            attempt: a(0),
            error: "x",
        },
        Rejection::NotMade(a(0)),
    );
    assert_rejected(
        name,
        m,
        Input::ConnectionClosed { attempt: a(0) },
        Rejection::NotMade(a(0)),
    );
    assert_rejected(
        name,
        m,
        Input::ConnectCancelled { attempt: a(0) },
        Rejection::NotCancelled(a(0)),
    );

    // Preparing: already made.
    let (name, m) = find("preparing");
    assert_rejected(
        name,
        m,
        Input::ConnectionMade { attempt: a(0) },
        Rejection::AlreadyMade(a(0)),
    );
    assert_rejected(
        name,
        m,
        Input::ConnectionFailed {
            attempt: a(0),
            error: "x",
        },
        Rejection::AlreadyConnected(a(0)),
    );

    // Connected: made, prepared, not cancellable.
    let (name, m) = find("connected");
    assert_rejected(
        name,
        m,
        Input::ConnectionMade { attempt: a(0) },
        Rejection::AlreadyMade(a(0)),
    );
    assert_rejected(
        name,
        m,
        Input::PrepareSucceeded { attempt: a(0) },
        Rejection::NotPreparing(a(0)),
    );
    assert_rejected(
        name,
        m,
        Input::PrepareFailed {
            attempt: a(0),
            error: "x",
        },
        Rejection::NotPreparing(a(0)),
    );
    assert_rejected(
        name,
        m,
        Input::ConnectCancelled { attempt: a(0) },
        Rejection::NotCancelled(a(0)),
    );
}

/// `panicked` for the established connection is rejected (its loss is reported with
/// `connection_closed`), whatever the site, and changes nothing.
#[test]
fn panicked_for_an_established_connection_is_rejected_and_changes_nothing() {
    let machines = machines();
    let (name, m) = machines.iter().find(|(n, _)| *n == "connected").unwrap();
    assert_eq!(m.connection(), Some(a(0)));
    for site in [
        PanicSite::Connector,
        PanicSite::Prepare,
        PanicSite::Connection,
    ] {
        assert_rejected(
            name,
            m,
            Input::Panicked {
                attempt: a(0),
                panic: Panic::new(site, "boom"),
            },
            Rejection::AlreadyConnected(a(0)),
        );
    }
    // Every other state accepts a `panicked` naming an issued attempt (as a failure,
    // as gone, or as stale).
    for (name, m) in &machines {
        if *name == "connected" || m.state() == State::Init {
            continue;
        }
        let mut after = m.clone();
        let panic = Panic::new(PanicSite::Connector, "boom");
        assert!(after.panicked(a(0), panic).is_ok(), "{name}");
    }
}

#[test]
fn rejection_messages_read_well() {
    let mut m: Machine<E> = Machine::new(Backoff::twisted(0));
    let err = m.connection_made(a(7)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "connection_made rejected in state Init: attempt#7 was never issued by this machine"
    );
    assert_eq!(err.input, InputKind::ConnectionMade);
}

#[test]
fn stale_input_changes_nothing_in_every_state() {
    // Ids that were issued but are no longer tracked: a withdrawn-and-answered waiter,
    // a consumed timer, an attempt whose connection is long closed.
    for (name, m) in machines() {
        if m.state() == State::Init {
            continue; // nothing issued yet
        }
        let mut after = m.clone();
        let stale_timer = TimerId::from_raw(0); // the first connect timeout, long consumed
        if after.armed_timer().map(|(t, _)| t) != Some(stale_timer) {
            let actions = after.timer_fired(stale_timer).unwrap();
            assert!(actions.is_empty(), "{name}");
            assert_eq!(after, m, "{name}: stale timer changed the machine");
        }
    }
}

/// After the policy gave up, bad and stale input change nothing either: not the
/// counters (a flap included), and not the fact that the next start begins a
/// fresh schedule.
#[test]
fn bad_input_after_giving_up_keeps_the_counters_and_the_fresh_start() {
    use redial::RetryPolicy;

    let config = Config::new().with_reset_backoff_after(Some(Duration::from_secs(30)));
    let policy = Backoff::twisted(1).give_up_after(2);
    let mut m = Machine::<E, _>::with_config(policy, config).unwrap();
    let _ = m.start();
    let _ = m.connection_made(a(0)).unwrap(); // the healthy timer is armed
    let _ = m.connection_closed(a(0)).unwrap(); // a flap: lost before it was healthy
    let (retry, _) = m.armed_timer().unwrap();
    let _ = m.timer_fired(retry).unwrap();
    let actions = m.connection_failed(a(1), "refused").unwrap();
    assert!(matches!(
        actions.last(),
        Some(Action::GaveUp {
            consecutive_failures: 2,
            fatal: false
        })
    ));
    let counters = m.counters();
    assert_eq!(
        (counters.losses, counters.flaps, counters.failures),
        (1, 1, 1)
    );

    let before = m.clone();
    for input in [
        Input::ConnectionMade { attempt: a(NEVER) },
        Input::ConnectionFailed {
            attempt: a(NEVER),
            error: "x",
        },
        Input::ConnectionClosed { attempt: a(NEVER) },
        Input::TimerFired {
            timer: TimerId::from_raw(NEVER),
        },
        Input::CancelWaiter {
            waiter: WaiterId::from_raw(NEVER),
        },
    ] {
        assert!(m.handle(input.clone()).is_err(), "{input:?}");
        assert_eq!(m, before, "{input:?} changed the machine");
    }
    // Stale: the old connection's loss again, the consumed retry timer.
    assert!(m.connection_closed(a(0)).unwrap().is_empty());
    assert!(m.timer_fired(retry).unwrap().is_empty());
    assert_eq!(m, before);

    let _ = m.start();
    assert_eq!(
        m.consecutive_failures(),
        0,
        "the start after a give-up is fresh"
    );
    assert_eq!(m.counters().flaps, 1);
}

/// `reconnect_now` is a command: never rejected, whatever the state. Where it does
/// nothing (every state but Waiting without a reset; Init, Disconnecting,
/// Restarting and Stopped even with one) it changes nothing at all.
#[test]
fn reconnect_now_is_never_rejected_and_changes_nothing_where_it_does_nothing() {
    for (name, m) in machines() {
        for reset_backoff in [false, true] {
            let mut after = m.clone();
            let step = after
                .handle(Input::ReconnectNow { reset_backoff })
                .unwrap_or_else(|e| panic!("{name}: rejected: {e}"));
            assert_eq!((step.waiter, step.stop), (None, None), "{name}");
            let acts = match m.state() {
                State::Waiting => true,
                State::Connecting | State::Connected => false,
                _ => false,
            };
            let resets = reset_backoff
                && matches!(
                    m.state(),
                    State::Waiting | State::Connecting | State::Connected
                )
                && m.consecutive_failures() != 0;
            if acts {
                assert_eq!(after.state(), State::Connecting, "{name}");
            } else {
                assert!(step.actions.is_empty(), "{name}: {:?}", step.actions);
                if !resets {
                    assert_eq!(after, m, "{name}: reconnect_now changed the machine");
                }
            }
        }
    }
}

/// `attempt_failed_fatally` for the established connection is rejected as
/// `connection_failed` is (`AlreadyConnected`: its loss is reported with
/// `connection_closed`); an id never issued is unknown, in every state. Neither
/// changes anything.
#[test]
fn failed_fatally_for_an_established_connection_or_an_unknown_attempt_is_rejected() {
    let machines = machines();
    let (name, m) = machines.iter().find(|(n, _)| *n == "connected").unwrap();
    assert_rejected(
        name,
        m,
        Input::AttemptFailedFatally {
            attempt: a(0),
            error: "bad password",
        },
        Rejection::AlreadyConnected(a(0)),
    );
    for (name, m) in &machines {
        assert_rejected(
            name,
            m,
            Input::AttemptFailedFatally {
                attempt: a(NEVER),
                error: "bad password",
            },
            Rejection::UnknownAttempt(a(NEVER)),
        );
    }
}

/// Probe reports naming an attempt never issued are unknown in every state; about
/// the current attempt or connection with no probe outstanding they are rejected
/// with `NotProbing` (these machines have no probes configured). Neither changes
/// anything.
#[test]
fn probe_reports_without_a_probe_are_rejected_in_every_state() {
    for (name, m) in &machines() {
        for input in [
            Input::ProbeSucceeded { attempt: a(NEVER) },
            Input::ProbeFailed { attempt: a(NEVER) },
        ] {
            assert_rejected(name, m, input, Rejection::UnknownAttempt(a(NEVER)));
        }
        if let Some(current) = m.current_attempt() {
            for input in [
                Input::ProbeSucceeded { attempt: current },
                Input::ProbeFailed { attempt: current },
            ] {
                assert_rejected(name, m, input, Rejection::NotProbing(current));
            }
        }
    }
}
