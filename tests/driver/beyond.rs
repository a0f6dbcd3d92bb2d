//! Beyond every peer, on the deterministic harness (virtual time, scripted
//! connections): reconnect now, fatal failures, liveness probes.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redial::driver::{ClientService, Error, Event, Loss};
use redial::testing::{poll_once, ConnectOutcome, ManualRuntime, Net, NetError, NetHandle};
use redial::{Backoff, Failure, Jitter, State};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn fail(msg: &str) -> ConnectOutcome {
    ConnectOutcome::Fail(msg.into())
}

/// 10 s, then 20 s, 40 s, … (no jitter), resetting on connect.
fn slow_backoff(
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

#[test]
fn reconnect_now_skips_the_wait_and_may_reset_the_backoff() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([
        fail("refused"),
        fail("refused"),
        fail("refused"),
        ConnectOutcome::Succeed,
    ]);
    let service = slow_backoff(&rt, &net).start().unwrap();
    rt.run_until_idle();
    assert_eq!((net.attempts(), service.state()), (1, State::Waiting));
    assert_eq!(rt.next_timer(), Some(secs(10)));

    // Now, without a reset: the next failure is the second in a row (20 s).
    service.reconnect_now(false);
    rt.run_until_idle();
    assert_eq!((net.attempts(), rt.now()), (2, Duration::ZERO));
    assert_eq!(service.consecutive_failures(), 2);
    assert_eq!(rt.next_timer(), Some(secs(20)));

    // Now, with a reset: the count starts again (10 s after this failure).
    service.reconnect_now(true);
    rt.run_until_idle();
    assert_eq!((net.attempts(), service.consecutive_failures()), (3, 1));
    assert_eq!(rt.next_timer(), Some(secs(10)));

    // Connected: nothing happens (to replace a live connection, disconnect it).
    rt.advance(secs(10));
    assert_eq!(service.state(), State::Connected);
    service.reconnect_now(true);
    rt.run_until_idle();
    assert_eq!((net.attempts(), service.state()), (4, State::Connected));

    // Stopped: it never starts the service.
    assert_eq!(rt.run(service.stop()), Some(()));
    service.reconnect_now(false);
    rt.run_until_idle();
    assert_eq!((net.attempts(), service.state()), (4, State::Stopped));
}

fn wrong_password() -> impl FnMut(&NetError) -> bool + Send + 'static {
    |e: &NetError| e.message().contains("password")
}

#[test]
fn a_fatal_failure_gives_up_at_once_and_says_why() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([fail("wrong password"), ConnectOutcome::Succeed]);
    let service = slow_backoff(&rt, &net)
        .fatal_if(wrong_password())
        .build()
        .unwrap();
    let mut events = service.events();
    let waiter = service.when_connected();
    service.start();
    match rt.run(waiter) {
        Some(Err(Error::GaveUp {
            consecutive_failures: 1,
            last,
            fatal: true,
        })) => assert!(matches!(&*last, Failure::Connect(e) if e.message() == "wrong password")),
        other => panic!("expected a fatal give-up, got {other:?}"),
    }
    // One attempt, no retry, no backoff waited out.
    assert_eq!(
        (net.attempts(), rt.now(), service.state()),
        (1, Duration::ZERO, State::Stopped)
    );
    // A waiter that comes after the give-up learns why no connection is coming:
    // the same give-up and its failure, not a bare "stopped".
    match rt.run(service.when_connected()).unwrap() {
        Err(Error::GaveUp {
            consecutive_failures: 1,
            last,
            fatal: true,
        }) => assert!(matches!(&*last, Failure::Connect(e) if e.message() == "wrong password")),
        other => panic!("expected the give-up again, got {other:?}"),
    }
    let mut gave_up = None;
    while let Some(Some(event)) = rt.run_for(Duration::ZERO, events.next()) {
        if let Event::GaveUp {
            fatal,
            consecutive_failures,
            ..
        } = event
        {
            gave_up = Some((fatal, consecutive_failures));
            break;
        }
    }
    assert_eq!(gave_up, Some((true, 1)));
    // The message says it, and the chain leads to the error.
    let failed = Error::<NetError>::GaveUp {
        consecutive_failures: 1,
        last: Arc::new(Failure::Connect(NetError::new("wrong password"))),
        fatal: true,
    };
    assert_eq!(
        format!("{failed}"),
        "gave up on a failure that retrying will not fix (1 consecutive failure): connection attempt failed: wrong password"
    );
    // A start begins again (the operator fixed the password).
    service.start();
    assert!(rt.run(service.when_connected()).unwrap().is_ok());
}

#[test]
fn fatal_failures_can_be_given_a_few_tries_and_other_failures_reset_the_count() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([
        fail("wrong password"),
        fail("refused"), // not fatal: the count of fatal ones starts again
        fail("wrong password"),
        fail("wrong password"),
        fail("wrong password"),
    ]);
    let service = slow_backoff(&rt, &net)
        .fatal_if(wrong_password())
        .give_up_after_fatal(NonZeroU32::new(3).unwrap())
        .start()
        .unwrap();
    let waiter = service.when_connected();
    match rt.run(waiter) {
        Some(Err(Error::GaveUp {
            consecutive_failures: 5,
            fatal: true,
            ..
        })) => {}
        other => panic!("expected a fatal give-up after 5, got {other:?}"),
    }
    assert_eq!(net.attempts(), 5);
}

/// What the scripted peer does when probed.
const ANSWER: u8 = 0;
const REFUSE: u8 = 1;
const IGNORE: u8 = 2;

fn probe_by(
    mode: &Arc<AtomicU8>,
) -> impl FnMut(NetHandle) -> Pin<Box<dyn Future<Output = Result<(), NetError>> + Send>> + Send + 'static
{
    let mode = mode.clone();
    move |_conn: NetHandle| match mode.load(Ordering::SeqCst) {
        ANSWER => Box::pin(async { Ok(()) }),
        REFUSE => Box::pin(async { Err(NetError::new("no pong")) }),
        _ => Box::pin(std::future::pending()),
    }
}

#[test]
fn a_silent_peer_is_found_within_interval_plus_timeout() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects((0..3).map(|_| ConnectOutcome::Succeed));
    let mode = Arc::new(AtomicU8::new(ANSWER));
    let service = slow_backoff(&rt, &net)
        .probe(secs(10), secs(2), probe_by(&mode))
        .start()
        .unwrap();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    // Answered probes keep it: a minute later, still connection 0.
    rt.advance(secs(60));
    assert_eq!((net.open(), service.state()), (vec![0], State::Connected));

    // The peer goes silent (its driver future never ends: no reset comes).
    mode.store(IGNORE, Ordering::SeqCst);
    let silent_at = rt.now();
    while service.counters().losses == 0 {
        assert!(rt.advance_to_next_timer().is_some());
    }
    let found = rt.now() - silent_at;
    assert!(
        found <= secs(12),
        "found after {found:?}: interval + timeout is 12 s"
    );
    assert!(matches!(service.last_loss(), Some(Loss::ProbeTimedOut)));
    assert_eq!(net.closed(), [0], "the dead connection was closed");
    // Reconnects (after the policy's first delay), and probes the new one.
    mode.store(ANSWER, Ordering::SeqCst);
    let conn = rt.run(service.when_connected()).unwrap().unwrap();
    assert_eq!(conn.conn(), 1);

    // A probe that fails outright: the same, with its error as the reason.
    mode.store(REFUSE, Ordering::SeqCst);
    rt.advance(secs(10));
    assert_eq!(service.counters().losses, 2);
    match service.last_loss() {
        Some(Loss::ProbeFailed(reason)) => assert_eq!(&*reason, "no pong"),
        other => panic!("expected ProbeFailed, got {other:?}"),
    }
    assert_eq!(net.closed(), [0, 1]);
    drop(service);
    rt.run_until_idle();
    assert_eq!(rt.tasks(), 0);
    assert!(rt.panics().is_empty());
}

#[test]
fn a_probe_out_when_the_connection_is_lost_is_stale() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects((0..2).map(|_| ConnectOutcome::Succeed));
    let mode = Arc::new(AtomicU8::new(ANSWER)); // the first check, before it is handed out
    let service = slow_backoff(&rt, &net)
        .probe(secs(10), secs(5), probe_by(&mode))
        .start()
        .unwrap();
    rt.run_until_idle();
    mode.store(IGNORE, Ordering::SeqCst);
    rt.advance(secs(10)); // the probe is out, unanswered
    assert!(net.lose(0)); // the connection is lost meanwhile
    rt.run_until_idle();
    assert_eq!(service.counters().losses, 1);
    assert!(matches!(service.last_loss(), Some(Loss::Closed)));
    // Its timeout never fires for the next connection.
    mode.store(ANSWER, Ordering::SeqCst);
    let mut waiter = Box::pin(service.when_connected());
    rt.advance(secs(10));
    assert!(poll_once(&mut waiter).is_ready());
    rt.advance(secs(30));
    assert_eq!(service.counters().losses, 1);
    assert_eq!(service.state(), State::Connected);
}

/// Every event a service tells, as it prints: one line, the cause included.
#[test]
fn events_print_as_one_line_with_their_cause() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([fail("refused"), ConnectOutcome::Succeed]);
    let service = slow_backoff(&rt, &net).build().unwrap();
    let mut events = service.events();
    service.start();
    rt.advance(secs(10));
    let (id, _conn) = rt.run(service.when_connected().with_id()).unwrap().unwrap();
    assert!(service.disconnect(id));
    rt.run(service.stop()).unwrap();
    let mut lines = Vec::new();
    while let Some(Some(event)) = rt.run_for(Duration::ZERO, events.next()) {
        lines.push(event.to_string());
    }
    assert_eq!(
        lines,
        [
            "attempt#0 started",
            "attempt#0 failed (1 in a row): connection attempt failed: refused",
            "retry in 10s after 1 consecutive failure",
            "attempt#1 started",
            "attempt#1 connected (connection #1)",
            "attempt#1 lost: the connection was closed by `disconnect`",
            "retry in 10s after 1 consecutive failure",
            "stopped",
        ]
    );
    let fatal: Event<NetError> = Event::GaveUp {
        consecutive_failures: 1,
        last: Some(Arc::new(Failure::Connect(NetError::new("bad password")))),
        fatal: true,
    };
    assert_eq!(
        fatal.to_string(),
        "gave up on a failure retrying will not fix after 1 consecutive failures: \
         connection attempt failed: bad password"
    );
}
