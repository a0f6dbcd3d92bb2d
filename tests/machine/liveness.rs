//! Inbound activity as liveness, in the machine alone (`connection_active`, issue
//! 18): a probe runs only `interval` after the last thing received (the machine
//! arms the rest of an interval from it, told how long ago it was), anything
//! received answers an outstanding probe, and without probes the input changes
//! nothing.

use core::time::Duration;

use redial::{
    Action, AttemptId, Backoff, Config, Machine, ProbeConfig, Rejection, State, TimerKind,
};

type M = Machine<&'static str, fn(u32) -> Duration>;

fn one_second(_: u32) -> Duration {
    Duration::from_secs(1)
}

const INTERVAL: Duration = Duration::from_secs(10);
const TIMEOUT: Duration = Duration::from_secs(2);

fn machine(config: Config) -> M {
    Machine::with_config(one_second as fn(u32) -> Duration, config).unwrap()
}

fn probing() -> Config {
    Config::new().with_probe(Some(ProbeConfig::new(INTERVAL, TIMEOUT)))
}

/// Started and connected; the connection's attempt.
fn connected(m: &mut M) -> AttemptId {
    let _ = m.start();
    let a = m.current_attempt().unwrap();
    let _ = m.connection_made(a).unwrap();
    assert_eq!(m.state(), State::Connected);
    a
}

/// Connected, its first interval fired: the probe is out. The connection's
/// attempt and the probe's timeout timer.
fn probe_outstanding(m: &mut M) -> (AttemptId, redial::TimerId) {
    let a = connected(m);
    let (interval, _) = armed(m);
    assert!(is_probe(&m.timer_fired(interval).unwrap()));
    let (timeout, kind) = armed(m);
    assert_eq!(kind, TimerKind::ProbeTimeout);
    (a, timeout)
}

fn armed(m: &M) -> (redial::TimerId, TimerKind) {
    m.armed_timer().expect("a timer is armed")
}

fn is_probe(actions: &[Action<&str>]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Probe { .. }))
}

#[test]
fn an_interval_with_something_received_re_arms_without_probing() {
    let mut m = machine(probing());
    let a = connected(&mut m);
    let (interval, kind) = armed(&m);
    assert_eq!(kind, TimerKind::ProbeInterval);
    // Reported as often as the driver likes: noted, nothing to do.
    assert!(m.connection_active(a, Duration::ZERO).unwrap().is_empty());
    assert!(m.connection_active(a, Duration::ZERO).unwrap().is_empty());
    assert_eq!(armed(&m), (interval, TimerKind::ProbeInterval));
    let actions = m.timer_fired(interval).unwrap();
    assert!(!is_probe(&actions), "{actions:?}");
    let [Action::ScheduleTimer {
        timer: next,
        kind: TimerKind::ProbeInterval,
        delay,
    }] = actions[..]
    else {
        panic!("expected the next interval, got {actions:?}");
    };
    assert_eq!(delay, INTERVAL);
    // The next interval with nothing received: the probe.
    let actions = m.timer_fired(next).unwrap();
    assert!(is_probe(&actions), "{actions:?}");
    assert_eq!(armed(&m).1, TimerKind::ProbeTimeout);
    assert_eq!(m.counters().losses, 0);
}

#[test]
fn anything_received_answers_an_outstanding_probe() {
    let mut m = machine(probing());
    let (a, timeout) = probe_outstanding(&mut m);
    let actions = m.connection_active(a, Duration::ZERO).unwrap();
    assert!(
        matches!(
            actions[..],
            [
                Action::CancelTimer { timer },
                Action::ScheduleTimer { kind: TimerKind::ProbeInterval, delay, .. },
            ] if timer == timeout && delay == INTERVAL
        ),
        "{actions:?}"
    );
    // The timeout fired meanwhile (its report was queued): stale.
    assert!(m.timer_fired(timeout).unwrap().is_empty());
    // The probe's own answer, late: no probe is outstanding, stale news.
    let before = m.clone();
    assert!(m.probe_succeeded(a).unwrap().is_empty());
    assert_eq!(m, before);
    assert_eq!(m.state(), State::Connected);
    assert_eq!(m.counters().losses, 0);
}

#[test]
fn a_probe_not_answered_by_anything_still_times_out() {
    let mut m = machine(probing());
    let (_, timeout) = probe_outstanding(&mut m);
    let actions = m.timer_fired(timeout).unwrap();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Lost {
            kind: redial::LossKind::ProbeTimedOut,
            ..
        }
    )));
    assert_eq!(m.state(), State::Waiting);
}

#[test]
fn without_probes_activity_changes_nothing() {
    for config in [
        Config::new(),
        Config::new().with_reset_backoff_after(Some(Duration::from_secs(5))),
    ] {
        let mut m = machine(config);
        let a = connected(&mut m);
        let before = m.clone();
        assert!(m.connection_active(a, Duration::ZERO).unwrap().is_empty());
        assert_eq!(m, before);
    }
}

#[test]
fn activity_about_an_attempt_or_a_connection_being_prepared_or_gone() {
    // An attempt not yet made: bad input, nothing changes.
    let mut m = machine(probing());
    let _ = m.start();
    let a = m.current_attempt().unwrap();
    let before = m.clone();
    let error = m.connection_active(a, Duration::ZERO).unwrap_err();
    assert!(matches!(error.reason, Rejection::NotMade(_)), "{error}");
    assert_eq!(m, before);
    // Being prepared: its prepare step answers for it; stale.
    let mut m = machine(probing().with_prepare(true));
    let _ = m.start();
    let a = m.current_attempt().unwrap();
    let _ = m.connection_made(a).unwrap();
    let before = m.clone();
    assert!(m.connection_active(a, Duration::ZERO).unwrap().is_empty());
    assert_eq!(m, before);
    // Closing, then gone: stale.
    let mut m = machine(probing());
    let a = connected(&mut m);
    let _ = m.stop();
    assert!(m.connection_active(a, Duration::ZERO).unwrap().is_empty());
    let _ = m.connection_closed(a).unwrap();
    assert!(m.connection_active(a, Duration::ZERO).unwrap().is_empty());
    assert_eq!(m.state(), State::Stopped);
    // An id never issued: bad input.
    let mut m = machine(probing());
    let _ = connected(&mut m);
    assert!(matches!(
        m.connection_active(AttemptId::from_raw(99), Duration::ZERO)
            .unwrap_err()
            .reason,
        Rejection::UnknownAttempt(_)
    ));
}

/// With `config`: one attempt refused, the retry connected (one consecutive
/// failure, for the healthy delay to reset). The machine and its connection.
fn connected_after_a_failure(config: Config) -> (Machine<&'static str>, AttemptId) {
    let mut m: Machine<&str> = Machine::with_config(Backoff::twisted(1), config).unwrap();
    let _ = m.start();
    let a = m.current_attempt().unwrap();
    let _ = m.connection_failed(a, "refused").unwrap();
    let (retry, _) = m.armed_timer().unwrap();
    let _ = m.timer_fired(retry).unwrap();
    let a = m.current_attempt().unwrap();
    let _ = m.connection_made(a).unwrap();
    assert_eq!(m.consecutive_failures(), 1);
    (m, a)
}

/// With `reset_backoff_after`, an interval that re-arms because of activity still
/// counts toward health, as one that probed.
#[test]
fn an_active_interval_counts_toward_health() {
    let config = probing().with_reset_backoff_after(Some(INTERVAL * 2));
    let (mut m, a) = connected_after_a_failure(config);
    assert_eq!(m.consecutive_failures(), 1);
    for _ in 0..2 {
        let _ = m.connection_active(a, Duration::ZERO).unwrap();
        let (interval, _) = m.armed_timer().unwrap();
        assert!(!is_probe(&m.timer_fired(interval).unwrap()));
    }
    // Two intervals: 20 s, the healthy delay.
    assert_eq!(m.consecutive_failures(), 0);
}

/// The interval that is armed after `actions`, if they arm one.
fn interval_armed(actions: &[Action<&str>]) -> Option<Duration> {
    actions.iter().find_map(|a| match a {
        Action::ScheduleTimer {
            kind: TimerKind::ProbeInterval,
            delay,
            ..
        } => Some(*delay),
        _ => None,
    })
}

#[test]
fn the_rest_of_an_interval_from_the_last_thing_received_is_armed() {
    for (quiet_for, rest) in [
        (Duration::ZERO, Some(INTERVAL)),
        (
            Duration::from_millis(1),
            Some(INTERVAL - Duration::from_millis(1)),
        ),
        (Duration::from_secs(4), Some(Duration::from_secs(6))),
        (
            INTERVAL - Duration::from_nanos(1),
            Some(Duration::from_nanos(1)),
        ),
        // Quiet for a whole interval or more: nothing left, the probe now.
        (INTERVAL, None),
        (INTERVAL * 3, None),
        (Duration::MAX, None),
    ] {
        let mut m = machine(probing());
        let a = connected(&mut m);
        let (interval, _) = armed(&m);
        assert!(m.connection_active(a, quiet_for).unwrap().is_empty());
        let actions = m.timer_fired(interval).unwrap();
        assert_eq!(interval_armed(&actions), rest, "{quiet_for:?}: {actions:?}");
        assert_eq!(
            is_probe(&actions),
            rest.is_none(),
            "{quiet_for:?}: {actions:?}"
        );
        match rest {
            Some(rest) => {
                let (next, kind) = armed(&m);
                assert_eq!(kind, TimerKind::ProbeInterval);
                // Nothing received since: the probe when the rest fires.
                let actions = m.timer_fired(next).unwrap();
                assert!(is_probe(&actions), "{quiet_for:?}: {actions:?}");
                assert!(rest <= INTERVAL);
            }
            None => assert_eq!(armed(&m).1, TimerKind::ProbeTimeout),
        }
    }
}

#[test]
fn the_latest_report_before_the_interval_fires_counts() {
    let mut m = machine(probing());
    let a = connected(&mut m);
    let (interval, _) = armed(&m);
    assert!(m
        .connection_active(a, Duration::from_secs(9))
        .unwrap()
        .is_empty());
    assert!(m
        .connection_active(a, Duration::from_secs(2))
        .unwrap()
        .is_empty());
    let actions = m.timer_fired(interval).unwrap();
    assert_eq!(interval_armed(&actions), Some(Duration::from_secs(8)));
}

#[test]
fn an_outstanding_probe_answered_by_activity_arms_the_rest_or_probes_again() {
    // Received something 3 s ago: answered, the next probe 7 s from now.
    let mut m = machine(probing());
    let (a, timeout) = probe_outstanding(&mut m);
    let actions = m.connection_active(a, Duration::from_secs(3)).unwrap();
    assert!(
        matches!(
            actions[..],
            [
                Action::CancelTimer { timer },
                Action::ScheduleTimer { kind: TimerKind::ProbeInterval, delay, .. },
            ] if timer == timeout && delay == Duration::from_secs(7)
        ),
        "{actions:?}"
    );
    // Quiet for a whole interval or more: a new probe now, its timeout re-armed.
    let (interval, _) = armed(&m);
    assert!(is_probe(&m.timer_fired(interval).unwrap()));
    let (timeout, _) = armed(&m);
    let actions = m.connection_active(a, INTERVAL + TIMEOUT).unwrap();
    assert!(
        matches!(
            actions[..],
            [
                Action::CancelTimer { timer },
                Action::Probe { attempt },
                Action::ScheduleTimer { kind: TimerKind::ProbeTimeout, delay, .. },
            ] if timer == timeout && attempt == a && delay == TIMEOUT
        ),
        "{actions:?}"
    );
    // And that probe times out like any other.
    let (timeout, _) = armed(&m);
    let actions = m.timer_fired(timeout).unwrap();
    assert!(
        actions.iter().any(|a| matches!(a, Action::Lost { .. })),
        "{actions:?}"
    );
}

/// With `reset_backoff_after`, a rest of an interval counts toward health for
/// what it was armed for, not as a whole interval.
#[test]
fn a_rest_of_an_interval_counts_toward_health_for_its_length() {
    let config = probing().with_reset_backoff_after(Some(INTERVAL + Duration::from_secs(5)));
    let (mut m, a) = connected_after_a_failure(config);
    // 10 s: quiet for 8 of them, the rest is 2 s.
    let _ = m.connection_active(a, Duration::from_secs(8)).unwrap();
    let (interval, _) = m.armed_timer().unwrap();
    let actions = m.timer_fired(interval).unwrap();
    assert_eq!(interval_armed(&actions), Some(Duration::from_secs(2)));
    assert_eq!(m.consecutive_failures(), 1, "10 s of 15");
    // 12 s: still not 15 (a whole interval would have made it 20).
    let _ = m.connection_active(a, Duration::from_secs(1)).unwrap();
    let (rest, _) = m.armed_timer().unwrap();
    let actions = m.timer_fired(rest).unwrap();
    assert_eq!(interval_armed(&actions), Some(Duration::from_secs(9)));
    assert_eq!(m.consecutive_failures(), 1, "12 s of 15");
    // 21 s: healthy.
    let (rest, _) = m.armed_timer().unwrap();
    let actions = m.timer_fired(rest).unwrap();
    assert!(is_probe(&actions), "{actions:?}");
    assert_eq!(m.consecutive_failures(), 0);
}
