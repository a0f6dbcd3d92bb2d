//! One scenario per row of the transition tables of the behaviour contract
//! (docs/contract.md), per difference from Twisted (D1–D8) and per feature beyond
//! Twisted, written as tables: input → the exact actions expected, in order.
//!
//! Ids are issued 0, 1, 2, … per kind, so a table can name them in advance:
//! `a(0)` is the first attempt, `t(0)` the first timer, `w(0)` the first waiter,
//! `s(0)` the first stop request.

use std::num::NonZeroU32;
use std::time::Duration;

use redial::{
    Action, AttemptId, Config, Failure, GiveUp, Input, InputError, InputKind, LossKind, Machine,
    Panic, PanicSite, ProbeConfig, Rejection, RetryPolicy, State, StopId, TimerId, TimerKind,
    WaiterId,
};

type E = &'static str;
/// Retry delay n seconds after n failures: predictable, so tables can name delays.
type Linear = fn(u32) -> Duration;
type M = Machine<E, Linear>;

fn linear(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

fn machine() -> M {
    Machine::new(linear as Linear)
}

fn with(config: Config) -> M {
    Machine::with_config(linear as Linear, config).unwrap()
}

fn with_policy<P: RetryPolicy>(policy: P, config: Config) -> Machine<E, P> {
    Machine::with_config(policy, config).unwrap()
}

fn a(n: u64) -> AttemptId {
    AttemptId::from_raw(n)
}
fn t(n: u64) -> TimerId {
    TimerId::from_raw(n)
}
fn w(n: u64) -> WaiterId {
    WaiterId::from_raw(n)
}
fn s(n: u64) -> StopId {
    StopId::from_raw(n)
}
fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// Inputs, named as the methods that feed them.
fn start() -> Input<E> {
    Input::Start
}
fn stop() -> Input<E> {
    Input::Stop
}
fn when_connected() -> Input<E> {
    Input::WhenConnected {
        fail_after_failures: None,
    }
}
fn when_connected_fail_after(n: u32) -> Input<E> {
    Input::WhenConnected {
        fail_after_failures: NonZeroU32::new(n),
    }
}
fn cancel_waiter(waiter: WaiterId) -> Input<E> {
    Input::CancelWaiter { waiter }
}
fn reconnect_now(reset_backoff: bool) -> Input<E> {
    Input::ReconnectNow { reset_backoff }
}
fn made(attempt: AttemptId) -> Input<E> {
    Input::ConnectionMade { attempt }
}
fn failed(attempt: AttemptId, error: E) -> Input<E> {
    Input::ConnectionFailed { attempt, error }
}
fn cancelled(attempt: AttemptId) -> Input<E> {
    Input::ConnectCancelled { attempt }
}
fn prepared(attempt: AttemptId) -> Input<E> {
    Input::PrepareSucceeded { attempt }
}
fn prepare_failed(attempt: AttemptId, error: E) -> Input<E> {
    Input::PrepareFailed { attempt, error }
}
fn attempt_failed_fatally(attempt: AttemptId, error: E) -> Input<E> {
    Input::AttemptFailedFatally { attempt, error }
}
fn lost(attempt: AttemptId) -> Input<E> {
    Input::ConnectionClosed { attempt }
}
fn fired(timer: TimerId) -> Input<E> {
    Input::TimerFired { timer }
}
fn boom(site: PanicSite) -> Panic {
    Panic::new(site, "boom")
}
fn panicked(attempt: AttemptId, site: PanicSite) -> Input<E> {
    Input::Panicked {
        attempt,
        panic: boom(site),
    }
}

// Actions.
fn connect(attempt: AttemptId) -> Action<E> {
    Action::Connect { attempt }
}
fn cancel_connect(attempt: AttemptId) -> Action<E> {
    Action::CancelConnect { attempt }
}
fn prepare(attempt: AttemptId) -> Action<E> {
    Action::Prepare { attempt }
}
fn disconnect(attempt: AttemptId) -> Action<E> {
    Action::Disconnect { attempt }
}
fn retry_in(timer: TimerId, delay: Duration) -> Action<E> {
    Action::ScheduleTimer {
        timer,
        kind: TimerKind::Retry,
        delay,
    }
}
fn timer(timer: TimerId, kind: TimerKind, delay: Duration) -> Action<E> {
    Action::ScheduleTimer { timer, kind, delay }
}
fn cancel_timer(timer: TimerId) -> Action<E> {
    Action::CancelTimer { timer }
}
fn notify(attempt: AttemptId, waiters: &[WaiterId]) -> Action<E> {
    Action::NotifyWaiters {
        attempt,
        waiters: waiters.iter().copied().collect(),
    }
}
fn attempt_failed(attempt: AttemptId, failure: Failure<E>, consecutive_failures: u32) -> Action<E> {
    Action::AttemptFailed {
        attempt,
        failure,
        consecutive_failures,
    }
}
fn deliver(waiters: &[WaiterId]) -> Action<E> {
    Action::DeliverFailure {
        waiters: waiters.iter().copied().collect(),
        gave_up: None,
    }
}
fn deliver_gave_up(waiters: &[WaiterId], consecutive_failures: u32, fatal: bool) -> Action<E> {
    Action::DeliverFailure {
        waiters: waiters.iter().copied().collect(),
        gave_up: Some(GiveUp {
            consecutive_failures,
            fatal,
        }),
    }
}
// Facts.
fn told_connected(attempt: AttemptId, generation: u64) -> Action<E> {
    Action::Connected {
        attempt,
        generation,
    }
}
fn told_lost(attempt: AttemptId, kind: LossKind, flap: bool) -> Action<E> {
    Action::Lost {
        attempt,
        kind,
        flap,
    }
}
fn retry_scheduled(delay: Duration, consecutive_failures: u32) -> Action<E> {
    Action::RetryScheduled {
        delay,
        consecutive_failures,
    }
}
fn gave_up(consecutive_failures: u32, fatal: bool) -> Action<E> {
    Action::GaveUp {
        consecutive_failures,
        fatal,
    }
}

fn cancel_waiters(waiters: &[WaiterId]) -> Action<E> {
    Action::CancelWaiters {
        waiters: waiters.iter().copied().collect(),
        gave_up: None,
    }
}
fn finish(stops: &[StopId]) -> Action<E> {
    Action::FinishStopping {
        stops: stops.iter().copied().collect(),
    }
}

/// Feeds each input and checks its actions exactly; returns the machine.
fn run<P: RetryPolicy + Clone + PartialEq + std::fmt::Debug>(
    mut m: Machine<E, P>,
    table: &[(Input<E>, Vec<Action<E>>)],
) -> Machine<E, P> {
    for (row, (input, expected)) in table.iter().enumerate() {
        let step = m
            .handle(input.clone())
            .unwrap_or_else(|e| panic!("row {row}: {input:?} rejected: {e}"));
        assert_eq!(
            step.actions.as_slice(),
            expected.as_slice(),
            "row {row}: {input:?} (now {:?})",
            m.state()
        );
    }
    m
}

/// Drives a fresh machine into `Connected` with attempt 0 (no waiters).
fn connected() -> M {
    run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![told_connected(a(0), 1)]),
        ],
    )
}

/// Drives a fresh machine into `Waiting` after one failed attempt; retry timer t(0).
fn waiting() -> M {
    run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (
                failed(a(0), "refused"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("refused"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
        ],
    )
}

// ----- docs/contract.md, Transitions: row by row ----------------------------------------

#[test]
fn init_start_connects() {
    let m = run(machine(), &[(start(), vec![connect(a(0))])]);
    assert_eq!(m.state(), State::Connecting);
    assert_eq!(m.counters().attempts, 1);
}

#[test]
fn init_stop_cancels_waiters_and_finishes_at_once_d5() {
    let m = run(
        machine(),
        &[
            (when_connected(), vec![]),
            (when_connected_fail_after(1), vec![]),
            (stop(), vec![cancel_waiters(&[w(0), w(1)]), finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
}

#[test]
fn when_connected_queues_in_every_state_but_connected_and_stopped() {
    // Init, Connecting, Waiting, Disconnecting, Restarting: queued, answered later.
    let m = run(
        machine(),
        &[
            (when_connected(), vec![]), // Init
            (start(), vec![connect(a(0))]),
            (when_connected(), vec![]), // Connecting
            (
                failed(a(0), "refused"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("refused"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (when_connected(), vec![]), // Waiting
            (fired(t(0)), vec![connect(a(1))]),
            (stop(), vec![cancel_connect(a(1))]),
            (when_connected(), vec![]), // Disconnecting
            (start(), vec![]),
            (when_connected(), vec![]), // Restarting
        ],
    );
    assert_eq!(m.state(), State::Restarting);
    assert_eq!(
        m.pending_waiters().collect::<Vec<_>>(),
        [w(0), w(1), w(2), w(3), w(4)]
    );
}

#[test]
fn connecting_start_does_nothing() {
    run(
        machine(),
        &[(start(), vec![connect(a(0))]), (start(), vec![])],
    );
}

#[test]
fn connecting_stop_cancels_the_attempt_and_finishes_when_it_is_gone() {
    let m = run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (when_connected(), vec![]),
            (stop(), vec![cancel_connect(a(0))]),
            (
                cancelled(a(0)),
                vec![cancel_waiters(&[w(0)]), finish(&[s(0)])],
            ),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
}

#[test]
fn connecting_stop_also_finishes_when_the_cancelled_attempt_reports_failure() {
    run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (stop(), vec![cancel_connect(a(0))]),
            (failed(a(0), "cancelled"), vec![finish(&[s(0)])]),
        ],
    );
}

#[test]
fn connecting_connection_made_notifies_every_waiter_in_order() {
    let m = run(
        machine(),
        &[
            (when_connected(), vec![]),
            (start(), vec![connect(a(0))]),
            (when_connected_fail_after(3), vec![]),
            (
                made(a(0)),
                vec![told_connected(a(0), 1), notify(a(0), &[w(0), w(1)])],
            ),
        ],
    );
    assert_eq!(m.state(), State::Connected);
    assert_eq!(m.connection(), Some(a(0)));
    assert_eq!(m.counters().connections, 1);
}

#[test]
fn connecting_connection_made_resets_failed_attempts() {
    let m = run(
        waiting(),
        &[
            (fired(t(0)), vec![connect(a(1))]),
            (
                failed(a(1), "refused"),
                vec![
                    retry_in(t(1), secs(2)),
                    attempt_failed(a(1), Failure::Connect("refused"), 2),
                    retry_scheduled(secs(2), 2),
                ],
            ),
            (fired(t(1)), vec![connect(a(2))]),
        ],
    );
    assert_eq!(m.consecutive_failures(), 2);
    let m = run(m, &[(made(a(2)), vec![told_connected(a(2), 1)])]);
    assert_eq!(m.consecutive_failures(), 0);
}

#[test]
fn connecting_with_prepare_prepares_before_anyone_is_told() {
    let config = Config::new().with_prepare(true);
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (when_connected(), vec![]),
            (made(a(0)), vec![prepare(a(0))]),
            (when_connected(), vec![]),
            (
                prepared(a(0)),
                vec![told_connected(a(0), 1), notify(a(0), &[w(0), w(1)])],
            ),
        ],
    );
    assert_eq!(m.state(), State::Connected);
}

#[test]
fn connecting_failure_schedules_then_delivers_to_waiters_at_their_threshold() {
    let m = run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (when_connected(), vec![]),
            (when_connected_fail_after(1), vec![]),
            (when_connected_fail_after(2), vec![]),
            (
                failed(a(0), "refused"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("refused"), 1),
                    deliver(&[w(1)]),
                    retry_scheduled(secs(1), 1),
                ],
            ),
        ],
    );
    assert_eq!(m.state(), State::Waiting);
    assert_eq!(m.consecutive_failures(), 1);
    assert_eq!(m.pending_waiters().collect::<Vec<_>>(), [w(0), w(2)]);
}

#[test]
fn prepare_failure_closes_the_rejected_connection_and_retries_d2() {
    let config = Config::new().with_prepare(true);
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (when_connected_fail_after(1), vec![]),
            (made(a(0)), vec![prepare(a(0))]),
            (
                prepare_failed(a(0), "bad password"),
                vec![
                    disconnect(a(0)),
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Prepare("bad password"), 1),
                    deliver(&[w(0)]),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (lost(a(0)), vec![]),
        ],
    );
    assert_eq!(m.state(), State::Waiting);
    assert_eq!(m.outstanding().count(), 0);
    assert_eq!(m.counters().failures, 1);
}

#[test]
fn waiting_start_does_nothing() {
    run(waiting(), &[(start(), vec![])]);
}

#[test]
fn waiting_retry_timer_reconnects() {
    let m = run(waiting(), &[(fired(t(0)), vec![connect(a(1))])]);
    assert_eq!(m.state(), State::Connecting);
}

#[test]
fn waiting_stop_cancels_waiters_then_the_timer_then_finishes() {
    let m = run(
        waiting(),
        &[
            (when_connected(), vec![]),
            (
                stop(),
                vec![cancel_waiters(&[w(0)]), cancel_timer(t(0)), finish(&[s(0)])],
            ),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
    assert_eq!(m.armed_timer(), None);
}

#[test]
fn connected_start_does_nothing() {
    run(connected(), &[(start(), vec![])]);
}

#[test]
fn connected_when_connected_notifies_at_once_ignoring_the_threshold() {
    run(
        connected(),
        &[
            (when_connected(), vec![notify(a(0), &[w(0)])]),
            (when_connected_fail_after(1), vec![notify(a(0), &[w(1)])]),
        ],
    );
}

#[test]
fn connected_loss_waits_before_retrying_never_instantly() {
    let m = run(
        connected(),
        &[(
            lost(a(0)),
            vec![
                retry_in(t(0), secs(1)),
                told_lost(a(0), LossKind::Closed, false),
                retry_scheduled(secs(1), 1),
            ],
        )],
    );
    assert_eq!(m.state(), State::Waiting);
    assert_eq!(m.consecutive_failures(), 1);
    assert_eq!(m.counters().losses, 1);
}

#[test]
fn connected_stop_closes_and_finishes_when_the_loss_is_reported() {
    let m = run(
        connected(),
        &[
            (stop(), vec![disconnect(a(0))]),
            (lost(a(0)), vec![finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
}

#[test]
fn disconnecting_stop_is_queued_and_finished_with_the_first() {
    run(
        connected(),
        &[
            (stop(), vec![disconnect(a(0))]),
            (stop(), vec![]),
            (lost(a(0)), vec![finish(&[s(0), s(1)])]),
        ],
    );
}

#[test]
fn disconnecting_start_restarts_once_the_connection_is_gone() {
    let m = run(
        connected(),
        &[
            (stop(), vec![disconnect(a(0))]),
            (start(), vec![]),
            (when_connected(), vec![]),
            (lost(a(0)), vec![connect(a(1)), finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.state(), State::Connecting);
    // Waiters are kept for the new connection.
    let m = run(
        m,
        &[(
            made(a(1)),
            vec![told_connected(a(1), 2), notify(a(1), &[w(0)])],
        )],
    );
    assert_eq!(m.state(), State::Connected);
}

#[test]
fn restarting_stop_abandons_the_restart() {
    let m = run(
        connected(),
        &[
            (stop(), vec![disconnect(a(0))]),
            (start(), vec![]),
            (stop(), vec![]),
            (lost(a(0)), vec![finish(&[s(0), s(1)])]),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
}

#[test]
fn stopped_start_connects_without_resetting_failed_attempts() {
    let m = run(
        waiting(),
        &[
            (stop(), vec![cancel_timer(t(0)), finish(&[s(0)])]),
            (start(), vec![connect(a(1))]),
        ],
    );
    assert_eq!(m.consecutive_failures(), 1);
    // The next failure asks the policy for 2.
    run(
        m,
        &[(
            failed(a(1), "refused"),
            vec![
                retry_in(t(1), secs(2)),
                attempt_failed(a(1), Failure::Connect("refused"), 2),
                retry_scheduled(secs(2), 2),
            ],
        )],
    );
}

#[test]
fn stopped_stop_finishes_at_once() {
    run(
        machine(),
        &[
            (stop(), vec![finish(&[s(0)])]),
            (stop(), vec![finish(&[s(1)])]),
        ],
    );
}

#[test]
fn stopped_when_connected_cancels_at_once() {
    run(
        machine(),
        &[
            (stop(), vec![finish(&[s(0)])]),
            (when_connected(), vec![cancel_waiters(&[w(0)])]),
        ],
    );
}

// ----- docs/contract.md, Counting -------------------------------------------------------

#[test]
fn first_retry_asks_the_policy_for_one_never_zero() {
    let asked = std::cell::RefCell::new(Vec::new());
    let policy = |n: u32| {
        asked.borrow_mut().push(n);
        Duration::from_millis(10)
    };
    let mut m: Machine<E, _> = Machine::new(policy);
    let _ = m.start();
    let _ = m.connection_failed(a(0), "x").unwrap();
    let _ = m.timer_fired(t(0)).unwrap();
    let _ = m.connection_failed(a(1), "x").unwrap();
    drop(m);
    assert_eq!(asked.into_inner(), [1, 2]);
}

#[test]
fn thresholds_count_from_registration_including_the_attempt_in_flight() {
    run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (when_connected_fail_after(2), vec![]), // counts a(0)'s failure
            (
                failed(a(0), "e0"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("e0"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (when_connected_fail_after(1), vec![]), // registered while Waiting
            (fired(t(0)), vec![connect(a(1))]),
            (
                failed(a(1), "e1"),
                vec![
                    retry_in(t(1), secs(2)),
                    attempt_failed(a(1), Failure::Connect("e1"), 2),
                    deliver(&[w(0), w(1)]),
                    retry_scheduled(secs(2), 2),
                ],
            ),
        ],
    );
}

#[test]
fn a_lost_established_connection_does_not_count_toward_thresholds() {
    let m = run(
        connected(),
        &[
            (
                lost(a(0)),
                vec![
                    retry_in(t(0), secs(1)),
                    told_lost(a(0), LossKind::Closed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (when_connected_fail_after(1), vec![]),
            (fired(t(0)), vec![connect(a(1))]),
            (
                failed(a(1), "refused"),
                vec![
                    retry_in(t(1), secs(2)),
                    attempt_failed(a(1), Failure::Connect("refused"), 2),
                    deliver(&[w(0)]),
                    retry_scheduled(secs(2), 2),
                ],
            ),
        ],
    );
    assert_eq!(m.counters().failures, 1);
    assert_eq!(m.counters().losses, 1);
}

// ----- docs/contract.md, Differences from Twisted ---------------------------------------

#[test]
fn d1_a_late_connection_of_a_cancelled_attempt_is_closed_as_an_orphan() {
    let config = Config::new().with_connect_timeout(Some(secs(5)));
    let m = run(
        with(config),
        &[
            (
                start(),
                vec![
                    connect(a(0)),
                    timer(t(0), TimerKind::ConnectTimeout, secs(5)),
                ],
            ),
            (
                fired(t(0)),
                vec![
                    cancel_connect(a(0)),
                    retry_in(t(1), secs(1)),
                    attempt_failed(a(0), Failure::ConnectTimeout, 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (made(a(0)), vec![disconnect(a(0))]), // the orphan is closed
            (
                fired(t(1)),
                vec![
                    connect(a(1)),
                    timer(t(2), TimerKind::ConnectTimeout, secs(5)),
                ],
            ),
            (
                made(a(1)),
                vec![cancel_timer(t(2)), told_connected(a(1), 1)],
            ),
            // The orphan's loss does not knock out the current connection.
            (lost(a(0)), vec![]),
        ],
    );
    assert_eq!(m.state(), State::Connected);
    assert_eq!(m.connection(), Some(a(1)));
}

#[test]
fn d1_the_loss_of_an_old_connection_is_stale() {
    let m = run(
        connected(),
        &[
            (
                lost(a(0)),
                vec![
                    retry_in(t(0), secs(1)),
                    told_lost(a(0), LossKind::Closed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (made(a(1)), vec![told_connected(a(1), 2)]),
            (lost(a(0)), vec![]), // reported twice: stale
            (failed(a(0), "late"), vec![]),
        ],
    );
    assert_eq!(m.connection(), Some(a(1)));
}

#[test]
fn d1_a_cancelled_timer_firing_is_stale() {
    let m = run(
        waiting(),
        &[
            (stop(), vec![cancel_timer(t(0)), finish(&[s(0)])]),
            (start(), vec![connect(a(1))]),
            (fired(t(0)), vec![]),
        ],
    );
    assert_eq!(m.state(), State::Connecting);
}

#[test]
fn d3_a_connection_lost_while_preparing_is_a_failed_attempt() {
    let config = Config::new().with_prepare(true);
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (when_connected_fail_after(1), vec![]),
            (made(a(0)), vec![prepare(a(0))]),
            (
                lost(a(0)),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::LostWhilePreparing, 1),
                    deliver(&[w(0)]),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (prepared(a(0)), vec![]), // the prepare result of the lost connection is stale
        ],
    );
    assert_eq!(m.state(), State::Waiting);
}

#[test]
fn d4_stop_while_preparing_closes_the_connection_and_waits_for_its_loss() {
    let config = Config::new().with_prepare(true);
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![prepare(a(0))]),
            (stop(), vec![disconnect(a(0))]),
            (prepared(a(0)), vec![]),
            (lost(a(0)), vec![finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
}

#[test]
fn d6_restarting_waits_for_a_cancelled_attempt_too() {
    let m = run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (stop(), vec![cancel_connect(a(0))]),
            (start(), vec![]),
            (cancelled(a(0)), vec![connect(a(1)), finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.state(), State::Connecting);
}

#[test]
fn d6_restarting_after_a_cancelled_attempt_that_won_the_race() {
    // The attempt connected before the cancellation landed: the orphan is closed,
    // and the restart waits for its loss.
    run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (stop(), vec![cancel_connect(a(0))]),
            (start(), vec![]),
            (made(a(0)), vec![disconnect(a(0))]),
            (lost(a(0)), vec![connect(a(1)), finish(&[s(0)])]),
        ],
    );
}

#[test]
fn d7_stop_waits_for_a_rejected_connection_still_closing() {
    let config = Config::new().with_prepare(true);
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![prepare(a(0))]),
            (
                prepare_failed(a(0), "no"),
                vec![
                    disconnect(a(0)),
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Prepare("no"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (stop(), vec![cancel_timer(t(0))]),
            (when_connected(), vec![]),
            (lost(a(0)), vec![cancel_waiters(&[w(0)]), finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
    assert_eq!(m.outstanding().count(), 0);
    assert_eq!(m.armed_timer(), None);
}

#[test]
fn d7_stop_waits_for_an_orphan_connection_still_closing() {
    run(
        connected(),
        &[
            (
                lost(a(0)),
                vec![
                    retry_in(t(0), secs(1)),
                    told_lost(a(0), LossKind::Closed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (made(a(0)), vec![disconnect(a(0))]), // a forged/duplicate report: orphan
            (stop(), vec![cancel_timer(t(0))]),
            (lost(a(0)), vec![finish(&[s(0)])]),
        ],
    );
}

#[test]
fn d8_inputs_are_plain_calls_even_while_handling_notifications() {
    // Twisted >= 24.10 raises if stop is called from a whenConnected callback. Here
    // the driver may call stop while it still holds the NotifyWaiters action.
    let mut m = connected();
    let (_, notified) = m.when_connected(None);
    let (stop_id, stopping) = m.stop();
    assert_eq!(notified.as_slice(), &[notify(a(0), &[w(0)])]);
    assert_eq!(stopping.as_slice(), &[disconnect(a(0))]);
    let done = m.connection_closed(a(0)).unwrap();
    assert_eq!(done.as_slice(), &[finish(&[stop_id])]);
}

// ----- docs/contract.md, Beyond Twisted ------------------------------------------------

#[test]
fn connect_timeout_cancels_the_attempt_and_counts_as_a_failure() {
    let config = Config::new().with_connect_timeout(Some(secs(3)));
    let m = run(
        with(config),
        &[
            (
                start(),
                vec![
                    connect(a(0)),
                    timer(t(0), TimerKind::ConnectTimeout, secs(3)),
                ],
            ),
            (when_connected_fail_after(1), vec![]),
            (
                fired(t(0)),
                vec![
                    cancel_connect(a(0)),
                    retry_in(t(1), secs(1)),
                    attempt_failed(a(0), Failure::ConnectTimeout, 1),
                    deliver(&[w(0)]),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (cancelled(a(0)), vec![]),
        ],
    );
    assert_eq!(m.counters().failures, 1);
    assert_eq!(m.outstanding().count(), 0);
}

#[test]
fn connect_timeout_is_cancelled_when_the_attempt_finishes() {
    let config = Config::new().with_connect_timeout(Some(secs(3)));
    run(
        with(config),
        &[
            (
                start(),
                vec![
                    connect(a(0)),
                    timer(t(0), TimerKind::ConnectTimeout, secs(3)),
                ],
            ),
            (
                failed(a(0), "refused"),
                vec![
                    cancel_timer(t(0)),
                    retry_in(t(1), secs(1)),
                    attempt_failed(a(0), Failure::Connect("refused"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![]), // lost the race: stale
        ],
    );
}

#[test]
fn prepare_timeout_closes_the_connection_and_counts_as_a_failure() {
    let config = Config::new()
        .with_prepare(true)
        .with_prepare_timeout(Some(secs(2)));
    run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (when_connected_fail_after(1), vec![]),
            (
                made(a(0)),
                vec![
                    prepare(a(0)),
                    timer(t(0), TimerKind::PrepareTimeout, secs(2)),
                ],
            ),
            (
                fired(t(0)),
                vec![
                    disconnect(a(0)),
                    retry_in(t(1), secs(1)),
                    attempt_failed(a(0), Failure::PrepareTimeout, 1),
                    deliver(&[w(0)]),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (prepared(a(0)), vec![]), // too late: stale
            (lost(a(0)), vec![]),
        ],
    );
}

#[test]
fn give_up_fails_every_waiter_with_the_last_failure_and_stops() {
    let policy = (linear as Linear).give_up_after(2);
    let m = Machine::new(policy);
    let m = run(
        m,
        &[
            (start(), vec![connect(a(0))]),
            (when_connected(), vec![]),
            (when_connected_fail_after(5), vec![]),
            (
                failed(a(0), "e0"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("e0"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (
                failed(a(1), "e1"),
                vec![
                    attempt_failed(a(1), Failure::Connect("e1"), 2),
                    deliver_gave_up(&[w(0), w(1)], 2, false),
                    gave_up(2, false),
                ],
            ),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
    assert_eq!(m.consecutive_failures(), 2);
}

/// Started again after the policy gave up, the machine begins a fresh schedule:
/// the next failure asks the policy for 1, and it allows as many failures as the
/// first time.
/// A waiter that comes while the machine is stopped because it gave up learns it:
/// `CancelWaiters` carries that give-up (fatal or not) until the next start; after
/// an ordinary stop it carries none.
#[test]
fn waiters_after_a_give_up_learn_it_until_the_next_start() {
    let policy = (linear as Linear).give_up_after(1);
    let cancel_gave_up = |waiters: &[WaiterId], n, fatal| Action::CancelWaiters {
        waiters: waiters.iter().copied().collect(),
        gave_up: Some(GiveUp {
            consecutive_failures: n,
            fatal,
        }),
    };
    let m = run(
        Machine::new(policy),
        &[
            (start(), vec![connect(a(0))]),
            (
                failed(a(0), "e0"),
                vec![
                    attempt_failed(a(0), Failure::Connect("e0"), 1),
                    gave_up(1, false),
                ],
            ),
            (when_connected(), vec![cancel_gave_up(&[w(0)], 1, false)]),
            // A stop while stopped after the give-up changes nothing about it.
            (stop(), vec![finish(&[s(0)])]),
            (when_connected(), vec![cancel_gave_up(&[w(1)], 1, false)]),
            (start(), vec![connect(a(1))]),
            (
                attempt_failed_fatally(a(1), "bad password"),
                vec![
                    attempt_failed(a(1), Failure::Connect("bad password"), 1),
                    gave_up(1, true),
                ],
            ),
            (when_connected(), vec![cancel_gave_up(&[w(2)], 1, true)]),
            // Started again and stopped in an ordinary way: a plain cancel.
            (start(), vec![connect(a(2))]),
            (stop(), vec![cancel_connect(a(2))]),
            (cancelled(a(2)), vec![finish(&[s(1)])]),
            (when_connected(), vec![cancel_waiters(&[w(3)])]),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
}

#[test]
fn start_after_giving_up_begins_a_fresh_schedule() {
    let policy = (linear as Linear).give_up_after(2);
    let m = run(
        Machine::new(policy),
        &[
            (start(), vec![connect(a(0))]),
            (
                failed(a(0), "e0"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("e0"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (
                failed(a(1), "e1"),
                vec![
                    attempt_failed(a(1), Failure::Connect("e1"), 2),
                    gave_up(2, false),
                ],
            ),
            // A fresh schedule: 1 s after the first failure, give up at the second.
            (start(), vec![connect(a(2))]),
            (
                failed(a(2), "e2"),
                vec![
                    retry_in(t(1), secs(1)),
                    attempt_failed(a(2), Failure::Connect("e2"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(1)), vec![connect(a(3))]),
            (
                failed(a(3), "e3"),
                vec![
                    attempt_failed(a(3), Failure::Connect("e3"), 2),
                    gave_up(2, false),
                ],
            ),
            // A stop in between changes nothing: the start after a give-up is fresh.
            (stop(), vec![finish(&[s(0)])]),
            (start(), vec![connect(a(4))]),
            (
                failed(a(4), "e4"),
                vec![
                    retry_in(t(2), secs(1)),
                    attempt_failed(a(4), Failure::Connect("e4"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
        ],
    );
    assert_eq!(m.consecutive_failures(), 1);
    assert_eq!(m.counters().failures, 5);
}

/// An ordinary stop and start carries the count over, as in Twisted, even through
/// a restart that waits for a cancelled attempt; only a give-up starts afresh.
#[test]
fn stop_and_start_carry_the_count_over_but_a_give_up_does_not() {
    let policy = (linear as Linear).give_up_after(3);
    let m = run(
        Machine::new(policy),
        &[
            (start(), vec![connect(a(0))]),
            (
                failed(a(0), "e0"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("e0"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (stop(), vec![cancel_connect(a(1))]),
            (start(), vec![]), // Restarting: connects once a(1) is gone
            (cancelled(a(1)), vec![connect(a(2)), finish(&[s(0)])]),
            // Carried over: this is the second failure in a row.
            (
                failed(a(2), "e2"),
                vec![
                    retry_in(t(1), secs(2)),
                    attempt_failed(a(2), Failure::Connect("e2"), 2),
                    retry_scheduled(secs(2), 2),
                ],
            ),
            (stop(), vec![cancel_timer(t(1)), finish(&[s(1)])]),
            (start(), vec![connect(a(3))]),
            // The third: the policy gives up.
            (
                failed(a(3), "e3"),
                vec![
                    attempt_failed(a(3), Failure::Connect("e3"), 3),
                    gave_up(3, false),
                ],
            ),
        ],
    );
    assert_eq!(m.consecutive_failures(), 3);
}

/// A give-up that leaves a rejected connection closing: a stop waits for it, and
/// a start meanwhile (Restarting) still begins a fresh schedule.
#[test]
fn restarting_after_giving_up_begins_a_fresh_schedule() {
    let policy = (linear as Linear).give_up_after(1);
    let m = run(
        with_policy(policy, Config::new().with_prepare(true)),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![prepare(a(0))]),
            (
                prepare_failed(a(0), "no"),
                vec![
                    disconnect(a(0)),
                    attempt_failed(a(0), Failure::Prepare("no"), 1),
                    gave_up(1, false),
                ],
            ),
            (stop(), vec![]),  // Disconnecting: a(0) is still closing
            (start(), vec![]), // Restarting
            (lost(a(0)), vec![connect(a(1)), finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.consecutive_failures(), 0);
    run(
        m,
        &[(
            failed(a(1), "e1"),
            vec![
                attempt_failed(a(1), Failure::Connect("e1"), 1),
                gave_up(1, false),
            ],
        )],
    );
}

#[test]
fn give_up_after_a_lost_connection_stops_the_machine() {
    let policy = (linear as Linear).give_up_after(1);
    let m = run(
        Machine::new(policy),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![told_connected(a(0), 1)]),
            (
                lost(a(0)),
                vec![told_lost(a(0), LossKind::Closed, false), gave_up(1, false)],
            ),
            (stop(), vec![finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
}

#[test]
fn a_withdrawn_waiter_is_forgotten_and_never_answered() {
    let m = run(
        machine(),
        &[
            (when_connected(), vec![]),
            (when_connected_fail_after(1), vec![]),
            (when_connected(), vec![]),
            (cancel_waiter(w(1)), vec![]),
            (cancel_waiter(w(1)), vec![]), // twice: stale
            (start(), vec![connect(a(0))]),
            (
                failed(a(0), "e"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("e"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ), // w(1) would have failed
            (fired(t(0)), vec![connect(a(1))]),
            (
                made(a(1)),
                vec![told_connected(a(1), 1), notify(a(1), &[w(0), w(2)])],
            ),
            (cancel_waiter(w(0)), vec![]), // already answered: stale
        ],
    );
    assert_eq!(m.pending_waiters().count(), 0);
}

#[test]
fn backoff_is_reset_only_after_the_connection_stayed_up() {
    let config = Config::new().with_reset_backoff_after(Some(secs(30)));
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (
                failed(a(0), "e"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("e"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (
                made(a(1)),
                vec![
                    timer(t(1), TimerKind::Healthy, secs(30)),
                    told_connected(a(1), 1),
                ],
            ),
            // dropped at once: the counter kept growing, so the delay grows too
            (
                lost(a(1)),
                vec![
                    cancel_timer(t(1)),
                    retry_in(t(2), secs(2)),
                    told_lost(a(1), LossKind::Closed, true),
                    retry_scheduled(secs(2), 2),
                ],
            ),
            (fired(t(2)), vec![connect(a(2))]),
            (
                made(a(2)),
                vec![
                    timer(t(3), TimerKind::Healthy, secs(30)),
                    told_connected(a(2), 2),
                ],
            ),
            (fired(t(3)), vec![]), // healthy: reset
            (
                lost(a(2)),
                vec![
                    retry_in(t(4), secs(1)),
                    told_lost(a(2), LossKind::Closed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
        ],
    );
    assert_eq!(m.consecutive_failures(), 1);
}

#[test]
fn counters_and_state_are_readable() {
    let config = Config::new().with_prepare(true);
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (
                failed(a(0), "e"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("e"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (made(a(1)), vec![prepare(a(1))]),
            (prepared(a(1)), vec![told_connected(a(1), 1)]),
            (
                lost(a(1)),
                vec![
                    retry_in(t(1), secs(1)),
                    told_lost(a(1), LossKind::Closed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
        ],
    );
    let c = m.counters();
    assert_eq!(
        (c.attempts, c.failures, c.connections, c.losses, c.flaps),
        (2, 1, 1, 1, 0)
    );
    assert_eq!(m.state(), State::Waiting);
    assert_eq!(m.armed_timer(), Some((t(1), TimerKind::Retry)));
}

/// A connection lost while its healthy timer is still armed never became healthy:
/// a flap (and a loss). One lost after the timer fired is only a loss; one closed
/// by a stop is neither.
#[test]
fn a_connection_lost_before_it_was_healthy_is_a_flap() {
    let config = Config::new().with_reset_backoff_after(Some(secs(30)));
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (
                made(a(0)),
                vec![
                    timer(t(0), TimerKind::Healthy, secs(30)),
                    told_connected(a(0), 1),
                ],
            ),
            // lost before 30 s: a flap, and it counts toward the backoff
            (
                lost(a(0)),
                vec![
                    cancel_timer(t(0)),
                    retry_in(t(1), secs(1)),
                    told_lost(a(0), LossKind::Closed, true),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(1)), vec![connect(a(1))]),
            (
                made(a(1)),
                vec![
                    timer(t(2), TimerKind::Healthy, secs(30)),
                    told_connected(a(1), 2),
                ],
            ),
            (
                lost(a(1)),
                vec![
                    cancel_timer(t(2)),
                    retry_in(t(3), secs(2)),
                    told_lost(a(1), LossKind::Closed, true),
                    retry_scheduled(secs(2), 2),
                ],
            ),
            (fired(t(3)), vec![connect(a(2))]),
            (
                made(a(2)),
                vec![
                    timer(t(4), TimerKind::Healthy, secs(30)),
                    told_connected(a(2), 3),
                ],
            ),
            (fired(t(4)), vec![]), // healthy: the backoff is reset
            (
                lost(a(2)),
                vec![
                    retry_in(t(5), secs(1)),
                    told_lost(a(2), LossKind::Closed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ), // a loss, not a flap
            (fired(t(5)), vec![connect(a(3))]),
            (
                made(a(3)),
                vec![
                    timer(t(6), TimerKind::Healthy, secs(30)),
                    told_connected(a(3), 4),
                ],
            ),
            // closed by a stop, healthy or not: neither a loss nor a flap
            (stop(), vec![disconnect(a(3)), cancel_timer(t(6))]),
            (lost(a(3)), vec![finish(&[s(0)])]),
        ],
    );
    let c = m.counters();
    assert_eq!((c.connections, c.losses, c.flaps), (4, 3, 2));
    assert_eq!(c.failures, 0, "a loss is no failed attempt");
}

/// Without `reset_backoff_after` a connection is healthy as soon as it is up:
/// there are no flaps, however quickly connections are lost.
#[test]
fn without_reset_backoff_after_there_are_no_flaps() {
    let m = run(
        connected(),
        &[
            (
                lost(a(0)),
                vec![
                    retry_in(t(0), secs(1)),
                    told_lost(a(0), LossKind::Closed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (made(a(1)), vec![told_connected(a(1), 2)]),
            (
                lost(a(1)),
                vec![
                    retry_in(t(1), secs(1)),
                    told_lost(a(1), LossKind::Closed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
        ],
    );
    let c = m.counters();
    assert_eq!((c.connections, c.losses, c.flaps), (2, 2, 0));
}

#[test]
fn config_is_built_with_chainable_setters() {
    const CONFIG: Config = Config::new()
        .with_prepare(true)
        .with_connect_timeout(Some(Duration::from_secs(5)))
        .with_prepare_timeout(Some(Duration::from_secs(2)))
        .with_reset_backoff_after(Some(Duration::from_secs(30)));
    const { assert!(CONFIG.prepare) };
    assert_eq!(CONFIG.connect_timeout, Some(secs(5)));
    assert_eq!(CONFIG.prepare_timeout, Some(secs(2)));
    assert_eq!(CONFIG.reset_backoff_after, Some(secs(30)));
    assert_eq!(Config::new(), Config::default());
    // A setter replaces, including with `None`.
    let off = CONFIG.with_connect_timeout(None).with_prepare(false);
    assert_eq!(off.connect_timeout, None);
    assert!(!off.prepare);
    assert_eq!(off.prepare_timeout, Some(secs(2)));
    assert_eq!(redial::Counters::new(), redial::Counters::default());
}

#[test]
fn config_that_makes_no_sense_is_rejected() {
    use redial::ConfigError;
    let zero = Config::new().with_connect_timeout(Some(Duration::ZERO));
    let e = Machine::<E, Linear>::with_config(linear, zero).unwrap_err();
    assert_eq!(
        e,
        ConfigError::ZeroTimeout {
            which: "connect timeout"
        }
    );
    assert_eq!(
        e.to_string(),
        "the connect timeout must be longer than zero"
    );
    let orphan_timeout = Config::new().with_prepare_timeout(Some(secs(1)));
    assert_eq!(
        Machine::<E, Linear>::with_config(linear, orphan_timeout).unwrap_err(),
        ConfigError::PrepareTimeoutWithoutPrepare
    );
}

// ----- user code panicked (`panicked`), one table per row of its rule -----------------

/// The current attempt's connector panicked: a failed attempt, as `connection_failed`
/// (its connect timeout cancelled, the retry scheduled, the failure delivered).
#[test]
fn panicked_while_attempting_is_a_failed_attempt() {
    let config = Config::new().with_connect_timeout(Some(secs(5)));
    let m = run(
        with(config),
        &[
            (
                start(),
                vec![
                    connect(a(0)),
                    timer(t(0), TimerKind::ConnectTimeout, secs(5)),
                ],
            ),
            (when_connected_fail_after(1), vec![]),
            (when_connected(), vec![]),
            (
                panicked(a(0), PanicSite::Connector),
                vec![
                    cancel_timer(t(0)),
                    retry_in(t(1), secs(1)),
                    attempt_failed(a(0), Failure::Panicked(boom(PanicSite::Connector)), 1),
                    deliver(&[w(0)]),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            // reported again: the attempt is old now, so it is stale
            (panicked(a(0), PanicSite::Connector), vec![]),
            (
                fired(t(1)),
                vec![
                    connect(a(1)),
                    timer(t(2), TimerKind::ConnectTimeout, secs(5)),
                ],
            ),
        ],
    );
    assert_eq!(m.state(), State::Connecting);
    assert_eq!(m.consecutive_failures(), 1);
    assert_eq!(m.counters().failures, 1);
    assert_eq!(m.outstanding().count(), 0); // nothing to close: the attempt is gone
    assert_eq!(m.pending_waiters().collect::<Vec<_>>(), [w(1)]);
}

/// The prepare step (or the connection's driver while it is being prepared)
/// panicked: a failed attempt, and the connection is closed as a rejected one (D2).
#[test]
fn panicked_while_preparing_is_a_failed_attempt_and_closes_the_connection() {
    let config = Config::new()
        .with_prepare(true)
        .with_prepare_timeout(Some(secs(2)));
    for site in [PanicSite::Prepare, PanicSite::Connection] {
        let m = run(
            with(config),
            &[
                (start(), vec![connect(a(0))]),
                (when_connected_fail_after(1), vec![]),
                (
                    made(a(0)),
                    vec![
                        prepare(a(0)),
                        timer(t(0), TimerKind::PrepareTimeout, secs(2)),
                    ],
                ),
                (
                    panicked(a(0), site),
                    vec![
                        cancel_timer(t(0)),
                        disconnect(a(0)),
                        retry_in(t(1), secs(1)),
                        attempt_failed(a(0), Failure::Panicked(boom(site)), 1),
                        deliver(&[w(0)]),
                        retry_scheduled(secs(1), 1),
                    ],
                ),
            ],
        );
        assert_eq!(m.state(), State::Waiting);
        assert_eq!(m.outstanding().collect::<Vec<_>>(), [a(0)], "{site:?}");
        assert_eq!(m.counters().failures, 1);
        // The closed connection's loss is what the machine waits for.
        let m = run(m, &[(lost(a(0)), vec![])]);
        assert_eq!(m.outstanding().count(), 0);
        assert_eq!(m.state(), State::Waiting);
    }
}

/// An established connection's loss is reported with `connection_closed`:
/// `panicked` for it is rejected, and changes nothing.
#[test]
fn panicked_for_an_established_connection_is_rejected() {
    let mut m = connected();
    let before = m.clone();
    let err = m.handle(panicked(a(0), PanicSite::Connection)).unwrap_err();
    assert_eq!(
        err,
        InputError {
            state: State::Connected,
            input: InputKind::Panicked,
            reason: Rejection::AlreadyConnected(a(0)),
        }
    );
    assert_eq!(
        err.to_string(),
        "panicked rejected in state Connected: attempt#0 already produced a connection: \
         report its loss with connection_closed"
    );
    assert_eq!(m, before);
    // Its loss is reported the ordinary way.
    run(
        m,
        &[(
            lost(a(0)),
            vec![
                retry_in(t(0), secs(1)),
                told_lost(a(0), LossKind::Closed, false),
                retry_scheduled(secs(1), 1),
            ],
        )],
    );
}

/// An attempt the machine asked to cancel panicked: it is gone, as with
/// `connect_cancelled` (a stop waiting for it finishes; a restart connects).
#[test]
fn panicked_for_a_cancelled_attempt_means_it_is_gone() {
    let m = run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (when_connected(), vec![]),
            (stop(), vec![cancel_connect(a(0))]),
            (
                panicked(a(0), PanicSite::Connector),
                vec![cancel_waiters(&[w(0)]), finish(&[s(0)])],
            ),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
    assert_eq!(m.counters().failures, 0); // the machine had already let it go
    let m = run(
        m,
        &[
            (start(), vec![connect(a(1))]),
            (stop(), vec![cancel_connect(a(1))]),
            (start(), vec![]),
            (
                panicked(a(1), PanicSite::Connector),
                vec![connect(a(2)), finish(&[s(1)])],
            ),
        ],
    );
    assert_eq!(m.state(), State::Connecting);
}

/// A connection the machine asked to close, or an attempt it no longer tracks:
/// the report is stale and changes nothing.
#[test]
fn panicked_for_a_closing_or_old_attempt_is_stale() {
    let config = Config::new().with_prepare(true);
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![prepare(a(0))]),
            (stop(), vec![disconnect(a(0))]),
        ],
    );
    // Closing: the prepare step panicked after the machine asked to close.
    let mut closing = m.clone();
    let actions = closing.panicked(a(0), boom(PanicSite::Prepare)).unwrap();
    assert!(actions.is_empty());
    assert_eq!(closing, m);
    // The stop still waits for the connection's loss.
    let m = run(closing, &[(lost(a(0)), vec![finish(&[s(0)])])]);
    // Old: nothing the machine tracks any more.
    let mut old = m.clone();
    let actions = old.panicked(a(0), boom(PanicSite::Connector)).unwrap();
    assert!(actions.is_empty());
    assert_eq!(old, m);
}

/// A panic that makes the policy give up fails every waiter with it.
#[test]
fn panicked_can_be_the_failure_the_policy_gives_up_on() {
    let policy = (linear as Linear).give_up_after(1);
    let m = run(
        Machine::new(policy),
        &[
            (start(), vec![connect(a(0))]),
            (when_connected(), vec![]),
            (
                panicked(a(0), PanicSite::Connector),
                vec![
                    attempt_failed(a(0), Failure::Panicked(boom(PanicSite::Connector)), 1),
                    deliver_gave_up(&[w(0)], 1, false),
                    gave_up(1, false),
                ],
            ),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
}

// ----- reconnect now (`reconnect_now`), one table per row of its rule ------------------

/// Waiting: the retry timer is cancelled and the attempt starts at once; the
/// failure count carries on (the next failure asks the policy for 2).
#[test]
fn waiting_reconnect_now_cancels_the_retry_timer_and_connects_at_once() {
    let m = run(
        waiting(),
        &[(
            reconnect_now(false),
            vec![cancel_timer(t(0)), connect(a(1))],
        )],
    );
    assert_eq!(m.state(), State::Connecting);
    assert_eq!(m.consecutive_failures(), 1);
    assert_eq!(m.counters().attempts, 2);
    run(
        m,
        &[(
            failed(a(1), "refused"),
            vec![
                retry_in(t(1), secs(2)),
                attempt_failed(a(1), Failure::Connect("refused"), 2),
                retry_scheduled(secs(2), 2),
            ],
        )],
    );
}

/// Waiting, with `reset_backoff`: the count starts over, so the next failure asks
/// the policy for 1; a configured connect timeout is armed with the attempt.
#[test]
fn waiting_reconnect_now_resetting_the_backoff_starts_the_schedule_over() {
    let config = Config::new().with_connect_timeout(Some(secs(5)));
    let m = run(
        with(config),
        &[
            (
                start(),
                vec![
                    connect(a(0)),
                    timer(t(0), TimerKind::ConnectTimeout, secs(5)),
                ],
            ),
            (
                failed(a(0), "refused"),
                vec![
                    cancel_timer(t(0)),
                    retry_in(t(1), secs(1)),
                    attempt_failed(a(0), Failure::Connect("refused"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (
                fired(t(1)),
                vec![
                    connect(a(1)),
                    timer(t(2), TimerKind::ConnectTimeout, secs(5)),
                ],
            ),
            (
                failed(a(1), "refused"),
                vec![
                    cancel_timer(t(2)),
                    retry_in(t(3), secs(2)),
                    attempt_failed(a(1), Failure::Connect("refused"), 2),
                    retry_scheduled(secs(2), 2),
                ],
            ),
            (
                reconnect_now(true),
                vec![
                    cancel_timer(t(3)),
                    connect(a(2)),
                    timer(t(4), TimerKind::ConnectTimeout, secs(5)),
                ],
            ),
        ],
    );
    assert_eq!(m.consecutive_failures(), 0);
    run(
        m,
        &[(
            failed(a(2), "refused"),
            vec![
                cancel_timer(t(4)),
                retry_in(t(5), secs(1)),
                attempt_failed(a(2), Failure::Connect("refused"), 1),
                retry_scheduled(secs(1), 1),
            ],
        )],
    );
}

/// Waiting with something outstanding (a rejected connection still closing): it
/// connects all the same, as the retry timer would.
#[test]
fn waiting_reconnect_now_connects_with_a_rejected_connection_still_closing() {
    let m = run(
        with(Config::new().with_prepare(true)),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![prepare(a(0))]),
            (
                prepare_failed(a(0), "auth"),
                vec![
                    disconnect(a(0)),
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Prepare("auth"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (
                reconnect_now(false),
                vec![cancel_timer(t(0)), connect(a(1))],
            ),
        ],
    );
    assert_eq!(m.outstanding().collect::<Vec<_>>(), [a(0)]);
    assert_eq!(m.state(), State::Connecting);
}

/// Connecting (attempting or preparing): the attempt goes on; only the count is
/// reset, if asked.
#[test]
fn connecting_reconnect_now_only_resets_the_count() {
    let mut m = run(
        waiting(),
        &[
            (fired(t(0)), vec![connect(a(1))]),
            (reconnect_now(false), vec![]),
        ],
    );
    assert_eq!(m.consecutive_failures(), 1);
    m = run(m, &[(reconnect_now(true), vec![])]);
    assert_eq!(
        (m.state(), m.consecutive_failures()),
        (State::Connecting, 0)
    );
    assert_eq!(m.current_attempt(), Some(a(1)));

    // While preparing, too.
    let m = run(
        with(Config::new().with_prepare(true)),
        &[
            (start(), vec![connect(a(0))]),
            (
                failed(a(0), "refused"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("refused"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (made(a(1)), vec![prepare(a(1))]),
            (reconnect_now(true), vec![]),
            (prepared(a(1)), vec![told_connected(a(1), 1)]),
        ],
    );
    assert_eq!((m.state(), m.consecutive_failures()), (State::Connected, 0));
}

/// Connected: the connection stays; the count is reset if asked, and an armed
/// healthy timer stays armed (a loss before it fires is still a flap).
#[test]
fn connected_reconnect_now_only_resets_the_count_and_keeps_the_healthy_timer() {
    let m = run(connected(), &[(reconnect_now(false), vec![])]);
    assert_eq!(m.state(), State::Connected);

    let config = Config::new().with_reset_backoff_after(Some(secs(30)));
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (
                failed(a(0), "refused"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("refused"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (
                made(a(1)),
                vec![
                    timer(t(1), TimerKind::Healthy, secs(30)),
                    told_connected(a(1), 1),
                ],
            ),
            (reconnect_now(true), vec![]),
        ],
    );
    assert_eq!(m.consecutive_failures(), 0);
    assert_eq!(m.armed_timer(), Some((t(1), TimerKind::Healthy)));
    let m = run(
        m,
        &[(
            lost(a(1)),
            vec![
                cancel_timer(t(1)),
                retry_in(t(2), secs(1)),
                told_lost(a(1), LossKind::Closed, true),
                retry_scheduled(secs(1), 1),
            ],
        )],
    );
    assert_eq!((m.counters().losses, m.counters().flaps), (1, 1));
}

/// Init, Disconnecting, Restarting, Stopped: nothing at all, not even the reset.
#[test]
fn reconnect_now_never_starts_a_service_or_cuts_a_stop_short() {
    // Init
    let m = run(machine(), &[(reconnect_now(true), vec![])]);
    assert_eq!(m.state(), State::Init);
    // Stopped, with a count carried over from before the stop
    let m = run(
        waiting(),
        &[
            (stop(), vec![cancel_timer(t(0)), finish(&[s(0)])]),
            (reconnect_now(true), vec![]),
        ],
    );
    assert_eq!((m.state(), m.consecutive_failures()), (State::Stopped, 1));
    // Disconnecting, then Restarting
    let m = run(
        waiting(),
        &[
            (fired(t(0)), vec![connect(a(1))]),
            (stop(), vec![cancel_connect(a(1))]),
            (reconnect_now(true), vec![]),
        ],
    );
    assert_eq!(
        (m.state(), m.consecutive_failures()),
        (State::Disconnecting, 1)
    );
    let m = run(m, &[(start(), vec![]), (reconnect_now(true), vec![])]);
    assert_eq!(
        (m.state(), m.consecutive_failures()),
        (State::Restarting, 1)
    );
    run(
        m,
        &[(cancelled(a(1)), vec![connect(a(2)), finish(&[s(0)])])],
    );
}

/// The method does what the input does.
#[test]
fn the_reconnect_now_method_is_the_input() {
    let mut by_method = waiting();
    let mut by_input = by_method.clone();
    let actions = by_method.reconnect_now(true);
    let step = by_input.handle(reconnect_now(true)).unwrap();
    assert_eq!(actions, step.actions);
    assert_eq!((step.waiter, step.stop), (None, None));
    assert_eq!(by_method, by_input);
}

// ----- fatal failures (`attempt_failed_fatally`), one table per row of its rule ----------------

/// A policy that must not be asked: giving up on fatal failures never asks it.
fn never_asked(_: u32) -> Duration {
    panic!("the policy was asked")
}

/// Attempting, at the threshold (1, the default): a failed attempt, and the
/// machine gives up at once without asking the policy; every waiter gets the
/// failure.
#[test]
fn a_fatal_failure_while_attempting_gives_up_at_once_without_asking_the_policy() {
    let config = Config::new().with_connect_timeout(Some(secs(5)));
    let m = run(
        with_policy(never_asked as Linear, config),
        &[
            (when_connected(), vec![]),
            (
                start(),
                vec![
                    connect(a(0)),
                    timer(t(0), TimerKind::ConnectTimeout, secs(5)),
                ],
            ),
            (when_connected_fail_after(3), vec![]),
            (
                attempt_failed_fatally(a(0), "no such host"),
                vec![
                    cancel_timer(t(0)),
                    attempt_failed(a(0), Failure::Connect("no such host"), 1),
                    deliver_gave_up(&[w(0), w(1)], 1, true),
                    gave_up(1, true),
                ],
            ),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
    assert_eq!((m.consecutive_failures(), m.fatal_streak()), (1, 1));
    assert_eq!(m.counters().failures, 1);
}

/// Preparing, at the threshold: the rejected connection is closed (D2), then as
/// above; a stop meanwhile waits for it (D7).
#[test]
fn a_fatal_failure_while_preparing_closes_the_connection_and_gives_up() {
    let config = Config::new().with_prepare(true);
    let m = run(
        with_policy(never_asked as Linear, config),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![prepare(a(0))]),
            (when_connected(), vec![]),
            (
                attempt_failed_fatally(a(0), "bad password"),
                vec![
                    disconnect(a(0)),
                    attempt_failed(a(0), Failure::Prepare("bad password"), 1),
                    deliver_gave_up(&[w(0)], 1, true),
                    gave_up(1, true),
                ],
            ),
            (stop(), vec![]),
            (lost(a(0)), vec![finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
}

/// Below the threshold a fatal failure is an ordinary failed attempt (the policy
/// is asked, the machine retries); the threshold-th fatal failure in a row gives
/// up. Any other failure ends the run of fatal ones, and so does a connection.
#[test]
fn fatal_failures_give_up_at_the_threshold_counted_in_a_row() {
    let config = Config::new().with_give_up_after_fatal(NonZeroU32::new(2).unwrap());
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (
                attempt_failed_fatally(a(0), "bad password"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("bad password"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            // Not fatal: the run is over.
            (
                failed(a(1), "refused"),
                vec![
                    retry_in(t(1), secs(2)),
                    attempt_failed(a(1), Failure::Connect("refused"), 2),
                    retry_scheduled(secs(2), 2),
                ],
            ),
            (fired(t(1)), vec![connect(a(2))]),
            (
                attempt_failed_fatally(a(2), "bad password"),
                vec![
                    retry_in(t(2), secs(3)),
                    attempt_failed(a(2), Failure::Connect("bad password"), 3),
                    retry_scheduled(secs(3), 3),
                ],
            ),
            (fired(t(2)), vec![connect(a(3))]),
            // A connection ends the run too.
            (made(a(3)), vec![told_connected(a(3), 1)]),
            (
                lost(a(3)),
                vec![
                    retry_in(t(3), secs(1)),
                    told_lost(a(3), LossKind::Closed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(3)), vec![connect(a(4))]),
            (
                attempt_failed_fatally(a(4), "bad password"),
                vec![
                    retry_in(t(4), secs(2)),
                    attempt_failed(a(4), Failure::Connect("bad password"), 2),
                    retry_scheduled(secs(2), 2),
                ],
            ),
            (fired(t(4)), vec![connect(a(5))]),
            (
                attempt_failed_fatally(a(5), "bad password"),
                vec![
                    attempt_failed(a(5), Failure::Connect("bad password"), 3),
                    gave_up(3, true),
                ],
            ),
        ],
    );
    assert_eq!((m.state(), m.fatal_streak()), (State::Stopped, 2));
}

/// Below the threshold the policy may still give up: then it is the policy's
/// give-up (`fatal: false`).
#[test]
fn below_the_threshold_the_policy_may_give_up() {
    let config = Config::new().with_give_up_after_fatal(NonZeroU32::new(3).unwrap());
    let policy = (linear as Linear).give_up_after(1);
    let m = run(
        with_policy(policy, config),
        &[
            (start(), vec![connect(a(0))]),
            (
                attempt_failed_fatally(a(0), "bad password"),
                vec![
                    attempt_failed(a(0), Failure::Connect("bad password"), 1),
                    gave_up(1, false),
                ],
            ),
        ],
    );
    assert_eq!((m.state(), m.fatal_streak()), (State::Stopped, 1));
}

/// The first start after a give-up begins a fresh schedule: the failure count and
/// the run of fatal failures start over.
#[test]
fn a_start_after_a_fatal_give_up_starts_the_run_over() {
    let config = Config::new().with_give_up_after_fatal(NonZeroU32::new(2).unwrap());
    let m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (
                attempt_failed_fatally(a(0), "bad password"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("bad password"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (
                attempt_failed_fatally(a(1), "bad password"),
                vec![
                    attempt_failed(a(1), Failure::Connect("bad password"), 2),
                    gave_up(2, true),
                ],
            ),
            (start(), vec![connect(a(2))]),
        ],
    );
    assert_eq!((m.consecutive_failures(), m.fatal_streak()), (0, 0));
    run(
        m,
        &[(
            attempt_failed_fatally(a(2), "bad password"),
            vec![
                retry_in(t(1), secs(1)),
                attempt_failed(a(2), Failure::Connect("bad password"), 1),
                retry_scheduled(secs(1), 1),
            ],
        )],
    );
}

/// An attempt the machine asked to cancel failing fatally is gone (a stop waiting
/// for it finishes); a connection it asked to close, or an old attempt: stale.
#[test]
fn failed_fatally_for_a_cancelled_closing_or_old_attempt() {
    let m = run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (stop(), vec![cancel_connect(a(0))]),
            (
                attempt_failed_fatally(a(0), "bad password"),
                vec![finish(&[s(0)])],
            ),
            (attempt_failed_fatally(a(0), "late"), vec![]),
            (start(), vec![connect(a(1))]),
            (made(a(1)), vec![told_connected(a(1), 1)]),
            (stop(), vec![disconnect(a(1))]),
            (attempt_failed_fatally(a(1), "late"), vec![]),
        ],
    );
    assert_eq!(m.state(), State::Disconnecting);
    assert_eq!(m.counters().failures, 0);
}

// ----- liveness probes (`Config::probe`), one table per row of its rule ----------------

fn probe(attempt: AttemptId) -> Action<E> {
    Action::Probe { attempt }
}
fn probe_ok(attempt: AttemptId) -> Input<E> {
    Input::ProbeSucceeded { attempt }
}
fn probe_failed(attempt: AttemptId) -> Input<E> {
    Input::ProbeFailed { attempt }
}
fn interval(timer: TimerId) -> Action<E> {
    self::timer(timer, TimerKind::ProbeInterval, secs(10))
}
fn probe_timeout(timer: TimerId) -> Action<E> {
    self::timer(timer, TimerKind::ProbeTimeout, secs(2))
}
fn probing_config() -> Config {
    Config::new().with_probe(Some(ProbeConfig::new(secs(10), secs(2))))
}

/// Becoming connected arms the probe interval (before the waiters are notified);
/// the interval firing asks for a probe and arms the probe timeout; a success
/// disarms it and arms the next interval.
#[test]
fn connected_with_probes_probes_every_interval() {
    let m = run(
        with(probing_config()),
        &[
            (start(), vec![connect(a(0))]),
            (when_connected(), vec![]),
            (
                made(a(0)),
                vec![
                    interval(t(0)),
                    told_connected(a(0), 1),
                    notify(a(0), &[w(0)]),
                ],
            ),
            (fired(t(0)), vec![probe(a(0)), probe_timeout(t(1))]),
            (probe_ok(a(0)), vec![cancel_timer(t(1)), interval(t(2))]),
            (fired(t(2)), vec![probe(a(0)), probe_timeout(t(3))]),
        ],
    );
    assert_eq!(m.state(), State::Connected);
    assert_eq!(m.armed_timer(), Some((t(3), TimerKind::ProbeTimeout)));
}

/// A failed probe: the connection is dead. The policy is asked, the connection
/// closed (outstanding until reported closed), a loss counted, and the retry
/// scheduled.
#[test]
fn a_failed_probe_closes_the_connection_and_retries_as_a_loss() {
    let m = run(
        with(probing_config()),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![interval(t(0)), told_connected(a(0), 1)]),
            (fired(t(0)), vec![probe(a(0)), probe_timeout(t(1))]),
            (
                probe_failed(a(0)),
                vec![
                    cancel_timer(t(1)),
                    disconnect(a(0)),
                    retry_in(t(2), secs(1)),
                    told_lost(a(0), LossKind::ProbeFailed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
        ],
    );
    assert_eq!(m.state(), State::Waiting);
    assert_eq!(m.outstanding().collect::<Vec<_>>(), [a(0)]);
    let c = m.counters();
    assert_eq!(
        (c.losses, c.flaps, c.failures, m.consecutive_failures()),
        (1, 0, 0, 1)
    );
    let m = run(m, &[(lost(a(0)), vec![])]);
    assert_eq!(m.outstanding().count(), 0);
}

/// The probe timeout: the same as a failed probe (its timer has fired).
#[test]
fn the_probe_timeout_closes_the_connection_and_retries_as_a_loss() {
    let m = run(
        with(probing_config()),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![interval(t(0)), told_connected(a(0), 1)]),
            (fired(t(0)), vec![probe(a(0)), probe_timeout(t(1))]),
            (
                fired(t(1)),
                vec![
                    disconnect(a(0)),
                    retry_in(t(2), secs(1)),
                    told_lost(a(0), LossKind::ProbeTimedOut, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            // The late answer is stale: the connection is closing.
            (probe_ok(a(0)), vec![]),
        ],
    );
    assert_eq!((m.state(), m.counters().losses), (State::Waiting, 1));
}

/// A dead connection can make the policy give up, as any loss can.
#[test]
fn a_dead_connection_can_make_the_policy_give_up() {
    let m = run(
        with_policy((linear as Linear).give_up_after(1), probing_config()),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![interval(t(0)), told_connected(a(0), 1)]),
            (fired(t(0)), vec![probe(a(0)), probe_timeout(t(1))]),
            (
                probe_failed(a(0)),
                vec![
                    cancel_timer(t(1)),
                    disconnect(a(0)),
                    told_lost(a(0), LossKind::ProbeFailed, false),
                    gave_up(1, false),
                ],
            ),
            (stop(), vec![]),
            (lost(a(0)), vec![finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
}

/// A loss reported while a probe is outstanding: the probe timeout is cancelled,
/// and it is an ordinary loss. A stop while probing closes the connection.
#[test]
fn lost_or_stopped_while_probing() {
    let m = run(
        with(probing_config()),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![interval(t(0)), told_connected(a(0), 1)]),
            (fired(t(0)), vec![probe(a(0)), probe_timeout(t(1))]),
            (
                lost(a(0)),
                vec![
                    cancel_timer(t(1)),
                    retry_in(t(2), secs(1)),
                    told_lost(a(0), LossKind::Closed, false),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(2)), vec![connect(a(1))]),
            (made(a(1)), vec![interval(t(3)), told_connected(a(1), 2)]),
            (fired(t(3)), vec![probe(a(1)), probe_timeout(t(4))]),
            (stop(), vec![disconnect(a(1)), cancel_timer(t(4))]),
            (probe_failed(a(1)), vec![]),
            (lost(a(1)), vec![finish(&[s(0)])]),
        ],
    );
    assert_eq!(m.state(), State::Stopped);
    assert_eq!(m.counters().losses, 1);
}

/// With a healthy delay the connection becomes healthy when the completed probe
/// intervals add up to it: 25 s at 10 s per interval is the third interval. A
/// loss before that is a flap and the count goes on; after it, the count was
/// reset.
#[test]
fn with_probes_health_is_counted_in_probe_intervals() {
    let config = probing_config().with_reset_backoff_after(Some(secs(25)));
    let mut m = run(
        with(config),
        &[
            (start(), vec![connect(a(0))]),
            (
                failed(a(0), "refused"),
                vec![
                    retry_in(t(0), secs(1)),
                    attempt_failed(a(0), Failure::Connect("refused"), 1),
                    retry_scheduled(secs(1), 1),
                ],
            ),
            (fired(t(0)), vec![connect(a(1))]),
            (made(a(1)), vec![interval(t(1)), told_connected(a(1), 1)]),
            (fired(t(1)), vec![probe(a(1)), probe_timeout(t(2))]),
            (probe_ok(a(1)), vec![cancel_timer(t(2)), interval(t(3))]),
            (fired(t(3)), vec![probe(a(1)), probe_timeout(t(4))]),
            (probe_ok(a(1)), vec![cancel_timer(t(4)), interval(t(5))]),
        ],
    );
    // 20 s: not yet healthy.
    assert_eq!(m.consecutive_failures(), 1);
    let flapped = run(
        m.clone(),
        &[(
            lost(a(1)),
            vec![
                cancel_timer(t(5)),
                retry_in(t(6), secs(2)),
                told_lost(a(1), LossKind::Closed, true),
                retry_scheduled(secs(2), 2),
            ],
        )],
    );
    assert_eq!(
        (flapped.counters().flaps, flapped.consecutive_failures()),
        (1, 2)
    );
    // 30 s: healthy, before the probe is asked.
    m = run(m, &[(fired(t(5)), vec![probe(a(1)), probe_timeout(t(6))])]);
    assert_eq!(m.consecutive_failures(), 0);
    let m = run(
        m,
        &[(
            probe_failed(a(1)),
            vec![
                cancel_timer(t(6)),
                disconnect(a(1)),
                retry_in(t(7), secs(1)),
                told_lost(a(1), LossKind::ProbeFailed, false),
                retry_scheduled(secs(1), 1),
            ],
        )],
    );
    assert_eq!((m.counters().losses, m.counters().flaps), (1, 0));
}

/// Probe reports: about a connection not yet established they are bad input;
/// about a closing or old one, stale. Between two probes of the established
/// connection (anything received answered the last one before its own answer
/// came), a success is stale news and changes nothing, and a failure still means
/// the connection is dead.
#[test]
fn probe_reports_between_probes_a_success_is_stale_a_failure_is_a_loss() {
    let mut m = run(
        with(probing_config().with_prepare(true)),
        &[(start(), vec![connect(a(0))])],
    );
    for input in [probe_ok(a(0)), probe_failed(a(0))] {
        let err = m.handle(input.clone()).unwrap_err();
        assert_eq!(err.reason, Rejection::NotProbing(a(0)), "{input:?}");
    }
    m = run(
        m,
        &[
            (made(a(0)), vec![prepare(a(0))]),
            (
                prepared(a(0)),
                vec![interval(t(0)), told_connected(a(0), 1)],
            ),
        ],
    );
    let before = m.clone();
    assert!(m.handle(probe_ok(a(0))).unwrap().actions.is_empty());
    assert_eq!(m, before, "a stale success changes nothing");
    let m = run(
        m,
        &[(
            probe_failed(a(0)),
            vec![
                cancel_timer(t(0)),
                disconnect(a(0)),
                retry_in(t(1), secs(1)),
                told_lost(a(0), LossKind::ProbeFailed, false),
                retry_scheduled(secs(1), 1),
            ],
        )],
    );
    assert_eq!(m.state(), State::Waiting);
    assert_eq!(m.counters().losses, 1);
}

/// Without probes, probe reports about the established connection are bad input.
#[test]
fn probe_reports_without_probes_are_rejected() {
    let mut m = run(
        machine(),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![told_connected(a(0), 1)]),
        ],
    );
    let before = m.clone();
    for input in [probe_ok(a(0)), probe_failed(a(0))] {
        let err = m.handle(input.clone()).unwrap_err();
        assert_eq!(
            (err.state, err.reason),
            (State::Connected, Rejection::NotProbing(a(0)))
        );
        assert_eq!(err.input, input.kind());
        assert_eq!(m, before);
    }
    assert_eq!(
        m.probe_succeeded(a(0)).unwrap_err().to_string(),
        "probe_succeeded rejected in state Connected: attempt#0 has no probe outstanding"
    );
}

/// `reconnect_now` while connected with probes: nothing but the reset; the probe
/// timer stays.
#[test]
fn reconnect_now_leaves_the_probes_alone() {
    let m = run(
        with(probing_config()),
        &[
            (start(), vec![connect(a(0))]),
            (made(a(0)), vec![interval(t(0)), told_connected(a(0), 1)]),
            (reconnect_now(true), vec![]),
            (fired(t(0)), vec![probe(a(0)), probe_timeout(t(1))]),
            (reconnect_now(false), vec![]),
            (probe_ok(a(0)), vec![cancel_timer(t(1)), interval(t(2))]),
        ],
    );
    assert_eq!(m.state(), State::Connected);
}

/// Probe settings of zero are rejected.
#[test]
fn probe_config_that_makes_no_sense_is_rejected() {
    for (probe, which) in [
        (ProbeConfig::new(Duration::ZERO, secs(1)), "probe interval"),
        (ProbeConfig::new(secs(1), Duration::ZERO), "probe timeout"),
    ] {
        let config = Config::new().with_probe(Some(probe));
        assert_eq!(
            Machine::<E, Linear>::with_config(linear as Linear, config).unwrap_err(),
            redial::ConfigError::ZeroTimeout { which }
        );
    }
}
