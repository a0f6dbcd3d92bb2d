//! What new users stumbled on (issue 20, part 2), on the deterministic harness
//! (virtual time, scripted connections): a time limit on waiting, errors that
//! print their cause, `reconnect_now` saying whether it did anything, and events
//! from the very first attempt.

use std::error::Error as StdError;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use redial::driver::{ClientService, Ended, Error, Event};
use redial::testing::{poll_once, ConnectOutcome, ManualRuntime, Net, NetError, NetHandle};
use redial::{Backoff, Failure, Jitter, RetryPolicy as _, State};

use crate::support::PanicsOnDrop;

type Service = ClientService<NetHandle, NetError>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn fail(msg: &str) -> ConnectOutcome {
    ConnectOutcome::Fail(msg.into())
}

/// 10 s, then 20 s, 40 s, … (no jitter), resetting on connect.
fn builder(
    rt: &ManualRuntime,
    net: &Net,
) -> redial::driver::Builder<ManualRuntime, NetHandle, NetError> {
    ClientService::builder(rt.clone(), net.connector())
        .policy(
            Backoff::new(secs(10), 2.0, secs(600))
                .unwrap()
                .with_jitter(Jitter::None),
        )
        .reset_backoff_after(None)
}

fn started(rt: &ManualRuntime, net: &Net) -> Service {
    builder(rt, net).start().unwrap()
}

// ----- 1. a time limit on waiting ----------------------------------------------

#[test]
fn a_waiter_answered_in_time_gets_the_connection() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Hang);
    let service = started(&rt, &net);
    let mut waiter = Box::pin(service.when_connected().within(secs(5)));
    assert!(poll_once(&mut waiter).is_pending());
    rt.run_until_idle();
    assert_eq!(
        (service.pending_waiters(), net.pending_attempts()),
        (1, vec![0])
    );
    // The limit's timer is the only one.
    assert_eq!(rt.next_timer(), Some(secs(5)));

    rt.advance(secs(4));
    assert!(poll_once(&mut waiter).is_pending());
    assert!(net.succeed(0));
    let conn = rt.run(&mut waiter).unwrap().unwrap();
    assert_eq!((conn.conn(), rt.now()), (0, secs(4)));
    assert_eq!(service.pending_waiters(), 0);
    // Answered: its timer is gone, nothing is left to fire at 5 s.
    drop(waiter);
    assert_eq!(rt.next_timer(), None);
    rt.advance(secs(10));
    assert_eq!(service.state(), State::Connected);
}

#[test]
fn a_waiter_out_of_time_gets_a_typed_error_and_is_withdrawn() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Hang);
    let service = started(&rt, &net);
    let mut waiter = Box::pin(service.when_connected().within(secs(5)).with_id());
    let patient = service.when_connected();
    rt.run_until_idle();
    assert_eq!(service.pending_waiters(), 2);

    // Time advanced by hand: pending until the limit, answered at it.
    assert!(poll_once(&mut waiter).is_pending());
    rt.advance(Duration::from_millis(4999));
    assert!(poll_once(&mut waiter).is_pending());
    assert_eq!(service.pending_waiters(), 2);
    rt.advance(Duration::from_millis(1));
    let Poll::Ready(Err(error)) = poll_once(&mut waiter) else {
        panic!("not answered at the limit");
    };
    assert_eq!(rt.now(), secs(5));
    match &error {
        // The attempt was still in flight: no failure to blame.
        Error::TimedOut { after, last } => assert_eq!((*after, last.is_none()), (secs(5), true)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert_eq!(error.to_string(), "no connection within 5s");
    rt.run_until_idle();
    assert_eq!(
        service.pending_waiters(),
        1,
        "withdrawn; the patient one stays"
    );
    drop(patient);
    rt.run_until_idle();
    assert_eq!(service.pending_waiters(), 0);
    // The service kept its attempt going.
    assert_eq!(net.pending_attempts(), [0]);
    assert_eq!(service.state(), State::Connecting);
}

#[test]
fn a_connection_made_after_the_limit_is_not_handed_to_the_withdrawn_waiter() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Hang);
    let service = started(&rt, &net);
    let mut waiter = Box::pin(service.when_connected().within(secs(2)));
    rt.run_until_idle();
    assert!(matches!(
        rt.run(&mut waiter).unwrap(),
        Err(Error::TimedOut { after, .. }) if after == secs(2)
    ));
    // The connection arrives after the limit, before the service took the
    // withdrawal: it is not handed to the waiter.
    assert!(net.succeed(0));
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    assert_eq!(service.pending_waiters(), 0);
    assert_eq!(net.clones(0), 0, "no waiter was handed the connection");
    // The resolved future stays resolved; a new waiter gets the connection at once.
    drop(waiter);
    let conn = rt.run(service.when_connected()).unwrap().unwrap();
    assert_eq!((conn.conn(), net.clones(0)), (0, 1));
}

#[test]
fn a_timed_out_waiter_says_why_attempts_were_failing() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([fail("refused"), fail("refused")]);
    let service = started(&rt, &net);
    // Failures at 0 s and 10 s; the limit runs out at 15 s, in the 20 s wait.
    let waiter = service
        .when_connected_fail_after(NonZeroU32::new(5).unwrap())
        .within(secs(15));
    let error = rt.run(waiter).unwrap().unwrap_err();
    assert_eq!((rt.now(), net.attempts()), (secs(15), 2));
    let Error::TimedOut { after, last } = &error else {
        panic!("expected TimedOut, got {error:?}");
    };
    assert_eq!(*after, secs(15));
    assert!(matches!(last.as_deref(), Some(Failure::Connect(e)) if e.message() == "refused"));
    println!("{error}");
    assert_eq!(
        error.to_string(),
        "no connection within 15s: connection attempt failed: refused"
    );
    assert_eq!(format!("{error:#}"), "no connection within 15s");
    assert!(error.source().is_some());
    rt.run_until_idle();
    assert_eq!(service.pending_waiters(), 0);
}

#[test]
fn the_attempt_limit_can_come_first_and_a_zero_limit_times_out_at_the_first_poll() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([fail("refused"), ConnectOutcome::Hang]);
    let service = started(&rt, &net);
    let waiter = service
        .when_connected_fail_after(NonZeroU32::MIN)
        .within(secs(60));
    assert!(matches!(rt.run(waiter).unwrap(), Err(Error::Failed(_))));
    assert_eq!(rt.now(), Duration::ZERO);
    rt.run_until_idle();
    assert_eq!(
        rt.next_timer(),
        Some(secs(10)),
        "only the retry: the limit's timer is gone"
    );

    let mut zero = service.when_connected().within(Duration::ZERO);
    assert!(matches!(
        poll_once(&mut zero),
        Poll::Ready(Err(Error::TimedOut {
            after: Duration::ZERO,
            last: Some(_)
        }))
    ));
    rt.run_until_idle();
    assert_eq!(service.pending_waiters(), 0);

    // A connection that is there: answered, whatever the limit.
    rt.advance(secs(10));
    assert!(net.succeed(1));
    rt.run_until_idle();
    let conn = rt.run(service.when_connected().within(secs(1))).unwrap();
    assert_eq!(conn.unwrap().conn(), 1, "the second attempt's connection");
}

#[test]
fn a_limit_on_an_ended_service_answers_at_once() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let service = started(&rt, &net);
    rt.shutdown();
    let waiter = service.when_connected().within(secs(1));
    let mut waiter = Box::pin(waiter);
    assert!(matches!(
        poll_once(&mut waiter),
        Poll::Ready(Err(Error::Ended(Ended::RuntimeGone)))
    ));
}

// ----- 2. errors that print their cause ------------------------------------------

/// A client error whose message leaves the reason to its source, as
/// tokio-postgres's does ("db error", source: the server's message).
#[derive(Debug)]
struct ClientError {
    server: ServerError,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("db error")
    }
}

impl StdError for ClientError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.server)
    }
}

#[derive(Debug)]
struct ServerError(&'static str);

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for ServerError {}

/// An error that prints its source in its own message too.
#[derive(Debug)]
struct Verbose(ServerError);

impl fmt::Display for Verbose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handshake failed: {}", self.0)
    }
}

impl StdError for Verbose {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

fn gave_up<E>(error: E) -> Error<E> {
    Error::GaveUp {
        consecutive_failures: 3,
        last: Arc::new(Failure::Connect(error)),
        fatal: false,
    }
}

#[test]
fn display_prints_the_whole_chain_on_one_line_and_alternate_only_the_top() {
    let error = gave_up(ClientError {
        server: ServerError("FATAL: database \"nope\" does not exist"),
    });
    println!("{error}");
    assert_eq!(
        error.to_string(),
        "the retry policy gave up after 3 consecutive failures: connection attempt failed: \
         db error: FATAL: database \"nope\" does not exist"
    );
    assert_eq!(
        format!("{error:#}"),
        "the retry policy gave up after 3 consecutive failures"
    );
    // The chain is intact, and a reporter that walks it (the top with `{:#}`, the
    // sources with `{}`) prints each part once: the same line.
    let mut parts = vec![format!("{error:#}")];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    assert_eq!(parts.len(), 4, "{parts:?}");
    assert!(error
        .source()
        .and_then(|f| f.source())
        .and_then(|c| c.downcast_ref::<ClientError>())
        .is_some());
    assert_eq!(parts.join(": "), error.to_string());

    // Every variant: `{:#}` is a prefix of `{}`, and the reason is in `{}`.
    let failed = Error::Failed(Arc::new(Failure::Prepare(ServerError("wrong password"))));
    assert_eq!(
        failed.to_string(),
        "this waiter's limit of failed attempts was reached: prepare step failed: wrong password"
    );
    let fatal = Error::GaveUp {
        consecutive_failures: 1,
        last: Arc::new(Failure::<ServerError>::ConnectTimeout),
        fatal: true,
    };
    assert_eq!(
        fatal.to_string(),
        "gave up on a failure that retrying will not fix (1 consecutive failure): \
         connection attempt timed out"
    );
    assert_eq!(
        Error::<ServerError>::Stopped.to_string(),
        "the service was stopped before a connection was handed out"
    );
    assert_eq!(
        Error::<ServerError>::Ended(Ended::Dropped).to_string(),
        "the service has ended: the service was dropped"
    );
}

#[test]
fn a_part_already_printed_is_not_repeated_and_lines_are_joined() {
    // The error's message includes its source: the source is not printed again.
    let error = gave_up(Verbose(ServerError("bad certificate")));
    assert_eq!(
        error.to_string(),
        "the retry policy gave up after 3 consecutive failures: connection attempt failed: \
         handshake failed: bad certificate"
    );
    // A message of several lines (PostgreSQL's DETAIL and HINT) stays on one line.
    let error = gave_up(ServerError("FATAL: no\nDETAIL: really\n  HINT: try again"));
    assert_eq!(
        error.to_string(),
        "the retry policy gave up after 3 consecutive failures: connection attempt failed: \
         FATAL: no DETAIL: really HINT: try again"
    );
}

#[test]
fn an_error_type_that_is_only_display_prints_with_display() {
    let error: Error<String> = gave_up(String::from("refused"));
    assert_eq!(
        error.display().to_string(),
        "the retry policy gave up after 3 consecutive failures: connection attempt failed: refused"
    );
    assert_eq!(
        Error::<String>::TimedOut {
            after: secs(2),
            last: None
        }
        .display()
        .to_string(),
        "no connection within 2s"
    );
}

#[test]
fn a_real_service_error_prints_its_cause() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([fail("refused"), fail("refused"), fail("reset by peer")]);
    let service = builder(&rt, &net)
        .policy(
            Backoff::new(secs(1), 2.0, secs(10))
                .unwrap()
                .with_jitter(Jitter::None)
                .give_up_after(3),
        )
        .start()
        .unwrap();
    let error = rt.run(service.when_connected()).unwrap().unwrap_err();
    println!("{error}");
    assert_eq!(
        error.to_string(),
        "the retry policy gave up after 3 consecutive failures: connection attempt failed: reset by peer"
    );
}

// ----- 3. reconnect_now says whether it did anything ----------------------------

#[test]
fn reconnect_now_returns_whether_it_does_anything() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([fail("refused"), ConnectOutcome::Hang]);
    let service = builder(&rt, &net).build().unwrap();
    rt.run_until_idle();

    // New: ignored, never starts it.
    assert!(!service.reconnect_now(true));
    assert!(!service.reconnect_now(false));
    rt.run_until_idle();
    assert_eq!((service.state(), net.attempts()), (State::Init, 0));

    // A start requested just before: connecting, so only a reset does something.
    service.start();
    assert!(!service.reconnect_now(false));
    assert!(service.reconnect_now(true));
    rt.run_until_idle();
    // The first attempt failed: waiting 10 s for a retry.
    assert_eq!((service.state(), net.attempts()), (State::Waiting, 1));

    // Waiting: an attempt starts now.
    assert!(service.reconnect_now(false));
    rt.run_until_idle();
    assert_eq!(
        (service.state(), net.attempts(), rt.now()),
        (State::Connecting, 2, Duration::ZERO)
    );

    // Connecting: only a reset.
    assert!(!service.reconnect_now(false));
    assert!(service.reconnect_now(true));
    rt.run_until_idle();
    assert_eq!((service.consecutive_failures(), net.attempts()), (0, 2));
    assert!(net.succeed(1));
    rt.run_until_idle();

    // Connected: only a reset; the connection is left alone.
    assert_eq!(service.state(), State::Connected);
    assert!(!service.reconnect_now(false));
    assert!(service.reconnect_now(true));
    rt.run_until_idle();
    assert_eq!((service.state(), net.open()), (State::Connected, vec![1]));

    // A stop requested just before, stopping, stopped: ignored.
    let stopping = service.stop();
    assert!(!service.reconnect_now(true));
    rt.run(stopping).unwrap();
    assert_eq!(service.state(), State::Stopped);
    assert!(!service.reconnect_now(true));
    assert!(!service.reconnect_now(false));
    rt.run_until_idle();
    assert_eq!((service.state(), net.attempts()), (State::Stopped, 2));

    // Started again (a retry is waiting after a failure): it does something again.
    net.push_connects([fail("refused")]);
    service.start();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Waiting);
    assert!(service.reconnect_now(false));

    // Ended: ignored.
    rt.shutdown();
    assert!(service.ended().is_some());
    assert!(!service.reconnect_now(true));
}

#[test]
fn reconnect_now_after_a_stop_request_is_ignored() {
    // A retry is waiting as of the last step, but a stop was requested since: the
    // handle counts it, and the retry is not hurried.
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([fail("refused")]);
    let service = builder(&rt, &net).start().unwrap();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Waiting);
    let stopping = service.stop();
    assert!(!service.reconnect_now(false), "a stop was requested before");
    rt.run(stopping).unwrap();
    rt.run_until_idle();
    assert_eq!((service.state(), net.attempts()), (State::Stopped, 1));
}

// ----- 4. events from the very first attempt ------------------------------------

#[test]
fn start_then_events_sees_the_first_attempt() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([fail("refused"), ConnectOutcome::Succeed]);
    let service = started(&rt, &net);
    // The task runs before anyone subscribes: the first attempt fails unseen...
    rt.run_until_idle();
    assert_eq!(net.attempts(), 1);
    // ...but the first subscription gets what happened so far.
    let mut events = service.events();
    let first = rt.run(events.next()).unwrap().unwrap();
    let Event::AttemptStarted { attempt, .. } = first else {
        panic!("the first event is {first:?}");
    };
    assert!(matches!(
        rt.run(events.next()).unwrap(),
        Some(Event::AttemptFailed { attempt: a, consecutive_failures: 1, .. }) if a == attempt
    ));
    assert!(matches!(
        rt.run(events.next()).unwrap(),
        Some(Event::RetryScheduled { delay, .. }) if delay == secs(10)
    ));
    // Then the live ones, in order.
    assert!(matches!(
        rt.run(events.next()).unwrap(),
        Some(Event::AttemptStarted { attempt: a, .. }) if a != attempt
    ));
    assert!(matches!(
        rt.run(events.next()).unwrap(),
        Some(Event::Connected { generation: 1, .. })
    ));
    assert_eq!(rt.now(), secs(10));

    // A later subscription sees only what happens after it.
    let mut late = service.events();
    assert!(poll_once(&mut late.next()).is_pending());
    let stopping = service.stop();
    rt.run(stopping).unwrap();
    assert!(matches!(rt.run(late.next()).unwrap(), Some(Event::Stopped)));
}

#[test]
fn events_before_the_first_subscription_are_bounded() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects((0..10).map(|_| fail("refused")));
    let service = builder(&rt, &net).events_capacity(4).start().unwrap();
    // 10 failed attempts, 3 events each, nobody subscribed.
    for _ in 0..9 {
        rt.advance_to_next_timer();
    }
    rt.run_until_idle();
    assert_eq!(net.attempts(), 10);
    let mut events = service.events();
    // The oldest were dropped and counted; the ring kept the newest 3 (and the
    // notice).
    match rt.run(events.next()).unwrap() {
        Some(Event::Missed { events }) => assert_eq!(events, 30 - 3),
        other => panic!("expected Missed, got {other:?}"),
    }
    let mut rest = Vec::new();
    while let Poll::Ready(Some(event)) = poll_once(&mut events.next()) {
        rest.push(event);
    }
    assert_eq!(rest.len(), 3, "{rest:?}");
    assert!(matches!(rest[2], Event::RetryScheduled { .. }));
    assert!(matches!(
        rest[1],
        Event::AttemptFailed {
            consecutive_failures: 10,
            ..
        }
    ));
}

/// The first events (attempt started, connected) are kept apart from the ring
/// until something else happens: a late first subscriber still gets what a ring of
/// the given capacity would hold, in order, whatever the capacity.
#[test]
fn a_late_first_subscriber_gets_the_newest_events_in_order_whatever_the_capacity() {
    fn name<E>(event: &Event<E>) -> String {
        match event {
            Event::AttemptStarted { .. } => "started".into(),
            Event::Connected { generation, .. } => format!("connected#{generation}"),
            Event::Lost { .. } => "lost".into(),
            Event::RetryScheduled { .. } => "retry".into(),
            Event::Missed { events } => format!("missed {events}"),
            _ => "other".into(),
        }
    }
    let all = ["started", "connected#1", "lost", "retry"];
    for capacity in 1..=5 {
        for happened in [2, 4] {
            let rt = ManualRuntime::new();
            let net = Net::new();
            net.push_connect(ConnectOutcome::Succeed);
            let service = builder(&rt, &net)
                .events_capacity(capacity)
                .start()
                .unwrap();
            rt.run_until_idle();
            if happened == 4 {
                assert!(net.lose(0));
                rt.run_until_idle();
            }
            let mut events = service.events();
            let mut got = Vec::new();
            while let Poll::Ready(Some(event)) = poll_once(&mut events.next()) {
                got.push(name(&event));
            }
            let mut expected: Vec<String> = Vec::new();
            if happened <= capacity {
                expected.extend(all[..happened].iter().map(|s| s.to_string()));
            } else {
                // The ring keeps the newest `capacity`, one of them making room for
                // the notice.
                let kept = capacity - 1;
                expected.push(format!("missed {}", happened - kept));
                expected.extend(all[happened - kept..happened].iter().map(|s| s.to_string()));
            }
            assert_eq!(got, expected, "capacity {capacity}, {happened} events");
        }
    }
}

#[test]
fn subscribing_after_the_end_gets_what_happened_then_the_end() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(fail("refused"));
    let service = started(&rt, &net);
    rt.run_until_idle();
    rt.shutdown();
    assert_eq!(service.ended(), Some(Ended::RuntimeGone));
    let events: Vec<_> = rt.run(service.events().collect::<Vec<_>>()).unwrap();
    let names: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::AttemptStarted { .. } => "started",
            Event::AttemptFailed { .. } => "failed",
            Event::RetryScheduled { .. } => "retry",
            Event::Ended(_) => "ended",
            _ => "other",
        })
        .collect();
    assert_eq!(names, ["started", "failed", "retry", "ended"]);
}

// ----- 6. how a flap counts (as `counters()` and `consecutive_failures()` document) ----

#[test]
fn a_flap_counts_in_flaps_losses_and_consecutive_failures_not_in_failures() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([
        ConnectOutcome::Succeed,
        ConnectOutcome::Succeed,
        ConnectOutcome::Succeed,
    ]);
    let service = builder(&rt, &net)
        .reset_backoff_after(Some(secs(5)))
        .start()
        .unwrap();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    // Lost at once: a flap.
    assert!(net.lose(0));
    rt.run_until_idle();
    let c = service.counters();
    assert_eq!((c.flaps, c.losses, c.failures), (1, 1, 0));
    assert_eq!(service.consecutive_failures(), 1);
    // The retry's connection flaps too: the count goes on.
    rt.advance(secs(10));
    assert!(net.lose(1));
    rt.run_until_idle();
    let c = service.counters();
    assert_eq!((c.flaps, c.losses, c.failures), (2, 2, 0));
    assert_eq!(service.consecutive_failures(), 2);
    // One that stays up 5 s resets the count; its loss is a plain loss.
    rt.advance(secs(20));
    assert_eq!(service.state(), State::Connected);
    rt.advance(secs(5));
    assert_eq!(service.consecutive_failures(), 0);
    assert!(net.lose(2));
    rt.run_until_idle();
    let c = service.counters();
    assert_eq!((c.flaps, c.losses, c.failures), (2, 3, 0));
    assert_eq!(service.consecutive_failures(), 1);
}

#[test]
fn events_kept_for_the_first_subscriber_may_hold_hostile_errors() {
    let rt = ManualRuntime::new();
    let service: ClientService<u32, PanicsOnDrop> = ClientService::builder(rt.clone(), || async {
        Err::<(u32, std::future::Pending<()>), _>(PanicsOnDrop)
    })
    .policy(|_| secs(1))
    // Room for one attempt's three events: the failure event is the last to hold
    // an error when the next attempt's failure pushes it out.
    .events_capacity(3)
    .start()
    .unwrap();
    // Five failed attempts, nobody subscribed: the kept events (and the errors they
    // hold) are dropped as newer ones come, and their panics are contained.
    for _ in 0..4 {
        rt.advance(secs(1));
    }
    rt.run_until_idle();
    assert_eq!(service.counters().failures, 5);
    assert_eq!(service.ended(), None);
    assert_eq!(service.state(), State::Waiting);
    let mut events = service.events();
    assert!(matches!(
        poll_once(&mut events.next()),
        Poll::Ready(Some(Event::Missed { .. }))
    ));
}
