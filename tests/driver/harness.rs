//! The deterministic harness for the async driver (`redial::testing::{ManualRuntime, Net}`):
//! unit tests of the runtime and of the scripted network, and end-to-end tests of a
//! real `ClientService` on them: no sockets, no sleeps, exact virtual instants.

use std::future::{pending, Future};
use std::num::NonZeroU32;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use redial::driver::{BuildError, ClientService, Ended, Error, Runtime};
use redial::testing::{
    poll_once, AttemptStatus, ConnStatus, ConnectOutcome, ManualRuntime, Net, NetError, NetHandle,
    PrepareOutcome, PrepareStatus,
};
use redial::{Backoff, Failure, Jitter, State};

type Service = ClientService<NetHandle, NetError>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// Twisted's backoff without jitter: 1.5 s, 2.25 s, 3.375 s, … after 1, 2, 3, … failures.
fn backoff() -> Backoff {
    Backoff::new(ms(1500), 1.5, secs(60))
        .unwrap()
        .with_jitter(Jitter::None)
}

fn fail(msg: &str) -> ConnectOutcome {
    ConnectOutcome::Fail(msg.into())
}

/// A future that records the virtual instant it was woken at, after sleeping `d`.
fn sleeper(
    rt: &ManualRuntime,
    d: Duration,
    label: &'static str,
    log: &Arc<Mutex<Vec<(&'static str, Duration)>>>,
) -> impl Future<Output = ()> + Send + 'static {
    let (rt, log) = (rt.clone(), Arc::clone(log));
    async move {
        rt.sleep(d).await;
        log.lock().unwrap().push((label, rt.now()));
    }
}

/// Sets a flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Yields once, then completes.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

// ----- the runtime ---------------------------------------------------------------

#[test]
fn timers_fire_in_order_at_exact_virtual_instants() {
    let rt = ManualRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    rt.spawn(sleeper(&rt, secs(3), "3s", &log)).unwrap();
    rt.spawn(sleeper(&rt, secs(1), "1s-a", &log)).unwrap();
    rt.spawn(sleeper(&rt, ms(2500), "2.5s", &log)).unwrap();
    rt.spawn(sleeper(&rt, secs(1), "1s-b", &log)).unwrap();
    // Nothing runs, and no timer exists, until the runtime is driven.
    assert_eq!(rt.timers(), 0);
    assert_eq!(rt.run_until_idle(), 4);
    assert_eq!(rt.timers(), 4);
    assert_eq!(rt.next_timer(), Some(secs(1)));
    assert_eq!(rt.now(), Duration::ZERO);

    rt.advance(ms(1500));
    assert_eq!(rt.now(), ms(1500));
    assert_eq!(
        *log.lock().unwrap(),
        [("1s-a", secs(1)), ("1s-b", secs(1))],
        "ties fire in creation order, at their deadline"
    );
    assert_eq!(rt.next_timer(), Some(ms(2500)));

    assert_eq!(rt.advance_to_next_timer(), Some(ms(2500)));
    assert_eq!(rt.now(), ms(2500));
    rt.advance(secs(10));
    assert_eq!(rt.now(), ms(12_500));
    assert_eq!(
        *log.lock().unwrap(),
        [
            ("1s-a", secs(1)),
            ("1s-b", secs(1)),
            ("2.5s", ms(2500)),
            ("3s", secs(3))
        ]
    );
    assert_eq!(rt.tasks(), 0);
    assert_eq!(rt.timers(), 0);
    assert_eq!(rt.next_timer(), None);
    assert_eq!(rt.advance_to_next_timer(), None);
}

#[test]
fn timers_armed_during_an_advance_fire_in_it_if_due() {
    let rt = ManualRuntime::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (rt2, log2) = (rt.clone(), Arc::clone(&log));
    rt.spawn(async move {
        for _ in 0..3 {
            rt2.sleep(secs(2)).await;
            log2.lock().unwrap().push(("tick", rt2.now()));
        }
    })
    .unwrap();
    rt.advance(secs(5));
    assert_eq!(*log.lock().unwrap(), [("tick", secs(2)), ("tick", secs(4))]);
    assert_eq!(rt.next_timer(), Some(secs(6)));
    rt.advance(secs(1));
    assert_eq!(log.lock().unwrap().len(), 3);
}

#[test]
fn dropping_a_sleep_deregisters_its_timer() {
    let rt = ManualRuntime::new();
    let sleep = rt.sleep(secs(5));
    let later = rt.sleep(secs(7));
    assert_eq!(sleep.deadline(), secs(5));
    assert_eq!(rt.timers(), 2);
    assert_eq!(rt.next_timer(), Some(secs(5)));
    drop(sleep);
    assert_eq!(rt.timers(), 1);
    assert_eq!(rt.next_timer(), Some(secs(7)));
    drop(later);
    assert_eq!(rt.next_timer(), None);
    // Nothing to wait for: time does not move.
    assert_eq!(rt.advance_to_next_timer(), None);
    assert_eq!(rt.now(), Duration::ZERO);

    // A task that drops its sleep early (a race lost) leaves no timer behind.
    let rt2 = rt.clone();
    rt.spawn(async move {
        let mut sleep = Box::pin(rt2.sleep(secs(9)));
        assert!(poll_once(&mut sleep).is_pending());
        YieldOnce(false).await;
        drop(sleep);
    })
    .unwrap();
    rt.run_until_idle();
    assert_eq!(rt.timers(), 0);
    assert_eq!(rt.tasks(), 0);
}

#[test]
fn run_drives_time_and_returns_none_for_what_can_never_complete() {
    let rt = ManualRuntime::new();
    // Completes by itself.
    assert_eq!(rt.run(async { 7 }), Some(7));
    // Completes once virtual time reaches the sleep: `run` jumps there.
    let sleep = rt.sleep(secs(30));
    assert_eq!(rt.run(sleep), Some(()));
    assert_eq!(rt.now(), secs(30));
    // Never completes: nothing runnable, no timer.
    assert_eq!(rt.run(pending::<()>()), None);
    assert_eq!(rt.now(), secs(30));
    // A waiter for a task that finishes without answering.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let rt2 = rt.clone();
    rt.spawn(async move {
        rt2.sleep(secs(1)).await;
        drop(tx);
    })
    .unwrap();
    let never = async {
        pending::<()>().await;
        rx.recv().ok()
    };
    assert_eq!(rt.run(never), None);
    assert_eq!(rt.now(), secs(31), "the task's timer was run first");

    // `run_for` stops at its limit.
    let sleep = rt.sleep(secs(10));
    assert_eq!(rt.run_for(secs(4), sleep), None);
    assert_eq!(rt.now(), secs(35));
    let sleep = rt.sleep(secs(2));
    assert_eq!(rt.run_for(secs(2), sleep), Some(()));
    assert_eq!(rt.now(), secs(37));
}

#[test]
fn run_sees_wakes_from_tasks() {
    let rt = ManualRuntime::new();
    let done = Arc::new(AtomicBool::new(false));
    let (rt2, done2) = (rt.clone(), Arc::clone(&done));
    let net = Net::new();
    let attempt = net.connector()();
    rt.spawn(async move {
        let result = attempt.await;
        assert!(result.is_ok());
        rt2.sleep(ms(10)).await;
        done2.store(true, Ordering::SeqCst);
    })
    .unwrap();
    rt.run_until_idle();
    assert_eq!(net.pending_attempts(), [0]);
    // The test decides live; the task is woken and runs on the next drive.
    assert!(net.succeed(0));
    assert_eq!(rt.runnable(), 1);
    let flag = Arc::clone(&done);
    let wait = std::future::poll_fn(move |cx| {
        if flag.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            // Polled again after each step (a sloppy future registers nothing).
            let _ = cx;
            Poll::Pending
        }
    });
    assert_eq!(rt.run(wait), Some(()));
    assert!(done.load(Ordering::SeqCst));
    assert_eq!(rt.now(), ms(10));
}

#[test]
fn shutdown_drops_tasks_and_makes_spawn_fail() {
    let rt = ManualRuntime::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let rt2 = rt.clone();
    rt.spawn(async move {
        let _flag = flag;
        rt2.sleep(secs(100)).await;
    })
    .unwrap();
    rt.run_until_idle();
    assert_eq!((rt.tasks(), rt.timers()), (1, 1));
    rt.shutdown();
    assert!(rt.is_shut_down());
    assert!(
        dropped.load(Ordering::SeqCst),
        "the task was dropped unfinished"
    );
    assert_eq!((rt.tasks(), rt.timers()), (0, 0));
    assert!(rt.spawn(async {}).is_err());
    // A service cannot be built on it.
    let net = Net::new();
    let built = ClientService::builder(rt.clone(), net.connector()).build();
    assert!(matches!(built, Err(BuildError::Spawn(_))), "{built:?}");
    assert!(rt.panics().is_empty());
}

#[test]
fn a_panicking_task_is_recorded_and_dropped() {
    let rt = ManualRuntime::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(Arc::clone(&dropped));
    let rt2 = rt.clone();
    rt.spawn(async move {
        let _flag = flag;
        rt2.sleep(secs(1)).await;
        panic!("boom at {:?}", rt2.now());
    })
    .unwrap();
    let survivor = Arc::new(AtomicUsize::new(0));
    let (rt3, survivor2) = (rt.clone(), Arc::clone(&survivor));
    rt.spawn(async move {
        rt3.sleep(secs(2)).await;
        survivor2.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    rt.advance(secs(5));
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(rt.panics(), ["task 0 panicked: boom at 1s"]);
    assert_eq!(survivor.load(Ordering::SeqCst), 1, "the other task ran on");
    assert_eq!(rt.tasks(), 0);
}

#[test]
fn a_livelock_is_reported_not_hung() {
    let rt = ManualRuntime::new();
    rt.set_poll_limit(1000);
    rt.spawn(std::future::poll_fn(|cx| {
        cx.waker().wake_by_ref();
        Poll::<()>::Pending
    }))
    .unwrap();
    let livelock = rt.try_run_until_idle().unwrap_err();
    assert_eq!(livelock.polls, 1000);
    assert_eq!(livelock.runnable, 1);
    assert!(livelock.to_string().contains("livelock"));
    let panicked = catch_unwind(AssertUnwindSafe(|| rt.run_until_idle()));
    assert!(panicked.is_err());
    rt.shutdown();
    assert_eq!(rt.run_until_idle(), 0);
}

#[test]
fn driving_from_inside_a_task_is_refused() {
    let rt = ManualRuntime::new();
    let rt2 = rt.clone();
    rt.spawn(async move {
        rt2.run_until_idle();
    })
    .unwrap();
    rt.run_until_idle();
    let panics = rt.panics();
    assert_eq!(panics.len(), 1);
    assert!(
        panics[0].contains("from inside one of its own tasks"),
        "{panics:?}"
    );
}

#[test]
fn poll_once_drives_nothing() {
    let rt = ManualRuntime::new();
    let mut sleep = rt.sleep(secs(1));
    assert!(poll_once(&mut sleep).is_pending());
    assert!(poll_once(&mut sleep).is_pending());
    assert_eq!(rt.now(), Duration::ZERO);
    rt.advance(secs(1));
    assert_eq!(poll_once(&mut sleep), Poll::Ready(()));
    assert_eq!(rt.timers(), 0);
}

// ----- the scripted network ------------------------------------------------------

#[test]
fn net_attempts_follow_the_script_then_hang() {
    let net = Net::new();
    net.push_connects([fail("refused"), ConnectOutcome::Succeed]);
    let mut connect = net.connector();
    let (mut a0, mut a1, mut a2) = (connect(), connect(), connect());
    assert_eq!(net.attempts(), 3);
    assert_eq!(net.attempt(0), Some(AttemptStatus::Resolving));
    assert_eq!(net.pending_attempts(), [2]);
    assert!(!net.succeed(0), "already decided");
    match poll_once(&mut a0) {
        Poll::Ready(Err(e)) => assert_eq!(e.message(), "refused"),
        other => panic!("{other:?}"),
    }
    let Poll::Ready(Ok((handle, mut driver))) = poll_once(&mut a1) else {
        panic!("attempt 1 connects")
    };
    assert_eq!(handle.conn(), 1);
    assert!(handle.is_open());
    assert_eq!(net.connections(), 1);
    assert!(poll_once(&mut a2).is_pending());
    assert!(net.fail(2, "reset"));
    assert!(matches!(poll_once(&mut a2), Poll::Ready(Err(e)) if e.to_string() == "reset"));
    assert_eq!(net.attempt(2), Some(AttemptStatus::Failed));

    // The connection: open until lost.
    assert!(poll_once(&mut driver).is_pending());
    assert_eq!(net.open(), [1]);
    assert!(net.lose(1));
    assert!(!net.lose(1));
    assert_eq!(net.open(), [1], "until its driver sees it");
    assert_eq!(poll_once(&mut driver), Poll::Ready(()));
    drop(driver);
    assert_eq!((net.lost(), net.closed()), (vec![1], vec![]));
    assert!(!handle.is_open());
    let copy = handle.clone();
    assert_eq!(copy, handle);
    assert_eq!(net.clones(1), 1);
}

#[test]
fn net_records_what_the_service_drops_and_scripted_panics() {
    let net = Net::new();
    net.push_connects([
        ConnectOutcome::Hang,
        ConnectOutcome::Succeed,
        ConnectOutcome::Panic,
        ConnectOutcome::PanicInConnector,
        ConnectOutcome::Succeed,
    ]);
    let mut connect = net.connector();
    drop(connect());
    assert_eq!(net.cancelled_attempts(), [0]);
    let mut a1 = connect();
    let Poll::Ready(Ok((h1, d1))) = poll_once(&mut a1) else {
        panic!()
    };
    drop(d1);
    assert_eq!(net.closed(), [1]);
    let mut a2 = connect();
    assert!(catch_unwind(AssertUnwindSafe(|| poll_once(&mut a2))).is_err());
    assert_eq!(net.attempt(2), Some(AttemptStatus::Panicked));
    drop(a2);
    assert_eq!(
        net.attempt(2),
        Some(AttemptStatus::Panicked),
        "not cancelled"
    );
    assert!(catch_unwind(AssertUnwindSafe(&mut connect)).is_err());
    assert_eq!(net.attempt(3), Some(AttemptStatus::ConnectorPanicked));
    // Crash, and a handle that panics when cloned.
    net.set_panic_on_clone(4, true);
    let mut a4 = connect();
    let Poll::Ready(Ok((h4, mut d4))) = poll_once(&mut a4) else {
        panic!()
    };
    assert!(catch_unwind(AssertUnwindSafe(|| h4.clone())).is_err());
    net.set_panic_on_clone(4, false);
    let _ = h4.clone();
    assert_eq!(net.clones(4), 2);
    assert!(net.crash(4));
    assert!(catch_unwind(AssertUnwindSafe(|| poll_once(&mut d4))).is_err());
    drop(d4);
    assert_eq!(net.crashed(), [4]);
    assert_eq!(net.connection(4), Some(ConnStatus::Crashed));

    // Prepare steps, by connection.
    net.push_prepares([
        PrepareOutcome::Fail("nope".into()),
        PrepareOutcome::PanicInHook,
    ]);
    let mut prepare = net.prepare_hook();
    let mut p4 = prepare(h4.clone());
    assert!(matches!(poll_once(&mut p4), Poll::Ready(Err(e)) if e.message() == "nope"));
    assert_eq!(net.prepare_status(4), Some(PrepareStatus::Failed));
    assert!(catch_unwind(AssertUnwindSafe(|| drop(prepare(h1.clone())))).is_err());
    assert_eq!(net.prepare_status(1), Some(PrepareStatus::HookPanicked));
    let mut p = prepare(h1.clone());
    assert_eq!(net.pending_prepares(), [1]);
    assert!(poll_once(&mut p).is_pending());
    assert!(net.prepare_panic(1));
    assert!(catch_unwind(AssertUnwindSafe(|| poll_once(&mut p))).is_err());
    assert_eq!(net.prepare_status(1), Some(PrepareStatus::Panicked));
    drop(prepare(h1.clone()));
    assert_eq!(net.prepare_status(1), Some(PrepareStatus::Cancelled));
    assert_eq!(net.prepares(), 4);
}

#[test]
fn scripted_panics_in_a_task_are_contained_by_the_runtime() {
    // What a panic in user code looks like on the harness: recorded, the task dropped.
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Panic);
    let attempt = net.connector()();
    rt.spawn(async move {
        let _ = attempt.await;
    })
    .unwrap();
    rt.run_until_idle();
    assert_eq!(
        rt.panics(),
        ["task 0 panicked: redial::testing::Net: attempt 0 panics (scripted)"]
    );
    assert_eq!(net.attempt(0), Some(AttemptStatus::Panicked));
    assert_eq!(rt.tasks(), 0);
}

// ----- a real ClientService on the harness ---------------------------------------

/// A service on `net`, with Twisted's reset of the backoff on every connection
/// (not the builder's default), so the delays below are the policy's own.
fn service(rt: &ManualRuntime, net: &Net) -> Service {
    ClientService::builder(rt.clone(), net.connector())
        .policy(backoff())
        .reset_backoff_after(None)
        .start()
        .unwrap()
}

#[test]
fn three_failures_then_a_connection_at_the_exact_instant() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([
        fail("refused"),
        fail("refused"),
        fail("refused"),
        ConnectOutcome::Succeed,
    ]);
    let service = service(&rt, &net);
    rt.run_until_idle();
    assert_eq!(net.attempts(), 1);
    assert_eq!(service.state(), State::Waiting);
    assert_eq!(rt.next_timer(), Some(ms(1500)));

    let mut waiter = Box::pin(service.when_connected().with_id());
    rt.advance(ms(1499));
    assert_eq!(net.attempts(), 1);
    rt.advance(ms(1));
    assert_eq!(net.attempts(), 2, "the retry, at exactly 1.5 s");
    assert_eq!(rt.next_timer(), Some(ms(1500 + 2250)));
    assert!(poll_once(&mut waiter).is_pending());

    let (id, conn) = rt.run(waiter).unwrap().unwrap();
    assert_eq!(rt.now(), ms(1500 + 2250 + 3375));
    assert_eq!((id.raw(), conn.conn()), (3, 3));
    assert_eq!(service.state(), State::Connected);
    assert_eq!(service.counters().attempts, 4);
    assert_eq!(service.counters().failures, 3);
    assert_eq!(net.open(), [3]);
    assert_eq!(rt.timers(), 0, "no timer armed while connected");
    assert!(rt.panics().is_empty());
}

/// Every failed attempt reaches the driver (the machine's `AttemptFailed`), so it is
/// published and kept as the last failure even when no one waits for a connection.
#[test]
fn every_failed_attempt_is_published_with_no_one_waiting() {
    use futures_util::StreamExt;
    use redial::driver::Event;

    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([fail("refused"), fail("reset"), ConnectOutcome::Succeed]);
    let service = service(&rt, &net);
    let mut events = service.events();
    rt.advance(ms(1500 + 2250));
    assert_eq!(service.state(), State::Connected);
    assert_eq!(service.counters().failures, 2);
    let last = service.last_failure().expect("the last failure is kept");
    assert!(matches!(&*last, Failure::Connect(e) if e.to_string() == "reset"));
    let mut failed = Vec::new();
    while let std::task::Poll::Ready(Some(event)) = poll_once(&mut events.next()) {
        if let Event::AttemptFailed {
            attempt,
            failure,
            consecutive_failures,
        } = event
        {
            failed.push((attempt.raw(), failure.to_string(), consecutive_failures));
        }
    }
    let refused = String::from("connection attempt failed");
    assert_eq!(failed, [(0, refused.clone(), 1), (1, refused, 2)]);
}

#[test]
fn a_lost_connection_is_replaced_after_the_retry_delay() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([ConnectOutcome::Succeed, ConnectOutcome::Succeed]);
    let service = service(&rt, &net);
    let first = rt.run(service.when_connected()).unwrap().unwrap();
    assert_eq!((first.conn(), rt.now()), (0, Duration::ZERO));

    rt.advance(secs(10));
    assert!(net.lose(0));
    rt.run_until_idle();
    assert_eq!(net.lost(), [0]);
    assert_eq!(service.state(), State::Waiting);
    assert_eq!(service.counters().losses, 1);
    assert_eq!(rt.next_timer(), Some(ms(11_500)), "one failure: 1.5 s");

    let second = rt.run(service.when_connected()).unwrap().unwrap();
    assert_eq!((second.conn(), rt.now()), (1, ms(11_500)));
    assert_eq!(net.open(), [1]);
    assert!(!first.is_open() && second.is_open());
}

#[test]
fn stop_resolves_only_once_the_connection_is_closed() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Succeed);
    let service = service(&rt, &net);
    rt.run(service.when_connected()).unwrap().unwrap();

    let mut waiter_after = service.when_connected();
    let mut stopping = service.stop();
    assert!(poll_once(&mut stopping).is_pending());
    assert_eq!(net.open(), [0], "the driver is still alive");
    rt.run_until_idle();
    assert_eq!(net.closed(), [0]);
    assert_eq!(poll_once(&mut stopping), Poll::Ready(()));
    assert_eq!(service.state(), State::Stopped);
    // The waiter registered before the stop was already answered with the handle.
    assert!(matches!(poll_once(&mut waiter_after), Poll::Ready(Ok(h)) if h.conn() == 0));
    // A waiter while stopped is told so.
    let answer = rt.run(service.when_connected()).unwrap();
    assert!(matches!(answer, Err(Error::Stopped)), "{answer:?}");
    assert_eq!((rt.timers(), net.pending_attempts()), (0, vec![]));
}

/// Polls a stop from inside the close it waits for: the connection driver's drop.
struct PollStopOnDrop {
    stopping: Arc<Mutex<Option<redial::driver::Stopping>>>,
    ready_at_drop: Arc<Mutex<Vec<bool>>>,
}

impl Drop for PollStopOnDrop {
    fn drop(&mut self) {
        if let Some(stopping) = self.stopping.lock().unwrap().as_mut() {
            let ready = poll_once(stopping).is_ready();
            self.ready_at_drop.lock().unwrap().push(ready);
        }
    }
}

#[test]
fn a_stop_is_not_finished_while_its_connection_is_being_closed() {
    // The stop's answer is kept until the machine finishes the stop, after the
    // close: polled from the connection driver's drop (the close itself), the
    // stop is still pending; once the task is idle, it is finished.
    let rt = ManualRuntime::new();
    let stopping = Arc::new(Mutex::new(None));
    let ready_at_drop = Arc::new(Mutex::new(Vec::new()));
    let (s, r) = (Arc::clone(&stopping), Arc::clone(&ready_at_drop));
    let service: ClientService<(), NetError> = ClientService::builder(rt.clone(), move || {
        let guard = PollStopOnDrop {
            stopping: Arc::clone(&s),
            ready_at_drop: Arc::clone(&r),
        };
        async move {
            let driver = async move {
                let _guard = guard;
                pending::<()>().await
            };
            Ok::<_, NetError>(((), driver))
        }
    })
    .start()
    .unwrap();
    rt.run(service.when_connected()).unwrap().unwrap();
    *stopping.lock().unwrap() = Some(service.stop());
    rt.run_until_idle();
    assert_eq!(
        *ready_at_drop.lock().unwrap(),
        [false],
        "pending during the close"
    );
    let mut finished = stopping.lock().unwrap().take().unwrap();
    assert_eq!(poll_once(&mut finished), Poll::Ready(()));
    assert_eq!(service.state(), State::Stopped);
}

#[test]
fn a_driver_panic_during_the_prepare_step_is_a_failed_attempt_that_names_the_panic() {
    // The connection is not established yet (its prepare step is pending): its
    // driver's panic fails the attempt (no loss), and the waiter's error names it.
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Succeed);
    net.push_prepare(PrepareOutcome::Hang);
    let service = ClientService::builder(rt.clone(), net.connector())
        .policy(backoff())
        .prepare(net.prepare_hook())
        .start()
        .unwrap();
    let mut waiter = service.when_connected_fail_after(NonZeroU32::new(1).unwrap());
    rt.run_until_idle();
    assert_eq!(net.pending_prepares(), [0]);
    assert!(net.crash(0));
    rt.run_until_idle();
    let answer = poll_once(&mut waiter);
    let counters = service.counters();
    assert_eq!(
        (counters.failures, counters.connections, counters.losses),
        (1, 0, 0)
    );
    assert!(
        matches!(&answer, Poll::Ready(Err(Error::Failed(failure))) if matches!(**failure, Failure::Panicked(_))),
        "{answer:?}"
    );
}

#[test]
fn a_request_made_from_inside_the_task_is_performed_even_when_the_task_goes_idle() {
    // The connection's own driver future asks to disconnect it on its first poll:
    // a request made while the task is polling, just before the task finds
    // nothing else to do. The request is kept (the task is woken for it), not
    // thrown away with the idle task's spare storage.
    type Svc = ClientService<(), NetError>;
    let rt = ManualRuntime::new();
    let slot: Arc<Mutex<Option<Svc>>> = Arc::new(Mutex::new(None));
    let in_connector = Arc::clone(&slot);
    let service: Svc = ClientService::builder_with_context(
        rt.clone(),
        move |ctx: redial::driver::ConnectContext| {
            let slot = Arc::clone(&in_connector);
            let attempt = ctx.attempt;
            async move {
                let mut asked = false;
                let driver = std::future::poll_fn(move |_| {
                    if !asked {
                        asked = true;
                        let service = slot.lock().unwrap().take();
                        if let Some(service) = service {
                            assert!(service.disconnect(attempt), "it is the current one");
                        }
                    }
                    Poll::<()>::Pending
                });
                Ok::<_, NetError>(((), driver))
            }
        },
    )
    .policy(backoff())
    .reset_backoff_after(None)
    .start()
    .unwrap();
    *slot.lock().unwrap() = Some(service.clone());
    rt.run_until_idle();
    assert_eq!(service.counters().losses, 1, "the disconnect was performed");
    assert!(slot.lock().unwrap().is_none());
}

#[test]
fn requests_left_over_when_the_budget_runs_out_are_all_performed() {
    // More waiters than one poll's budget: the task takes them all from the
    // mailbox, answers as many as its budget allows, and yields. A waiter queued
    // before its next poll does not push the ones it still holds out.
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Succeed);
    let service = service(&rt, &net);
    rt.run(service.when_connected()).unwrap().unwrap();
    let first: Vec<_> = (0..200).map(|_| service.when_connected()).collect();
    rt.set_poll_limit(1);
    assert!(
        rt.try_run_until_idle().is_err(),
        "one poll does not answer 200"
    );
    let mut late = service.when_connected();
    rt.set_poll_limit(100_000);
    rt.run_until_idle();
    for (i, mut waiter) in first.into_iter().enumerate() {
        assert!(
            matches!(poll_once(&mut waiter), Poll::Ready(Ok(h)) if h.conn() == 0),
            "waiter {i} was not answered with the connection"
        );
    }
    assert!(matches!(poll_once(&mut late), Poll::Ready(Ok(_))));
}

#[test]
fn a_disconnected_connection_stays_not_current_while_the_task_holds_the_request() {
    // The task takes the disconnect with a flood of waiters and yields before it
    // gets to it (its budget): what it publishes meanwhile must not make the
    // connection current again, so a second `disconnect` is still late.
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Succeed);
    let service = service(&rt, &net);
    let (first, _) = rt.run(service.when_connected().with_id()).unwrap().unwrap();
    let waiters: Vec<_> = (0..200).map(|_| service.when_connected()).collect();
    assert!(service.disconnect(first));
    rt.set_poll_limit(1);
    assert!(
        rt.try_run_until_idle().is_err(),
        "one poll does not get to it"
    );
    assert!(!service.disconnect(first), "a second report is late");
    rt.set_poll_limit(100_000);
    rt.run_until_idle();
    assert_eq!(service.counters().losses, 1);
    drop(waiters);
}

#[test]
fn one_poll_performs_what_fits_in_its_budget() {
    // 40 requests fit in one poll's budget: the task does not yield between its
    // batches of requests while it has budget left.
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Succeed);
    let service = service(&rt, &net);
    rt.run(service.when_connected()).unwrap().unwrap();
    let waiters: Vec<_> = (0..40).map(|_| service.when_connected()).collect();
    let polls = rt.run_until_idle();
    assert!(polls <= 2, "{polls} polls for 40 requests");
    drop(waiters);
}

#[test]
fn a_connection_driver_that_panics_when_dropped_does_not_take_the_service_down() {
    let rt = ManualRuntime::new();
    let service: ClientService<(), NetError> = ClientService::builder(rt.clone(), || async {
        let guard = crate::support::PanicsOnDrop;
        let driver = async move {
            let _guard = guard;
            pending::<()>().await
        };
        Ok::<_, NetError>(((), driver))
    })
    .policy(backoff())
    .reset_backoff_after(None)
    .start()
    .unwrap();
    let (first, ()) = rt.run(service.when_connected().with_id()).unwrap().unwrap();
    // Closed on request: the drop's panic is contained, the loss counted, and the
    // service reconnects.
    assert!(service.disconnect(first));
    rt.run_until_idle();
    assert_eq!(service.ended(), None, "the service lives on");
    assert_eq!(service.counters().losses, 1);
    let (second, ()) = rt.run(service.when_connected().with_id()).unwrap().unwrap();
    assert_ne!(second, first);
    // And a stop closes the second the same way.
    rt.run(service.stop()).unwrap();
    assert_eq!(service.state(), State::Stopped);
    assert_eq!(service.ended(), None);
}

#[test]
fn stop_cancels_a_hanging_attempt_and_waits_for_it() {
    let rt = ManualRuntime::new();
    let net = Net::new(); // nothing scripted: attempts hang
    let service = service(&rt, &net);
    let waiter = service.when_connected();
    rt.run_until_idle();
    assert_eq!(net.pending_attempts(), [0]);
    let mut stopping = service.stop();
    assert_eq!(rt.run(&mut stopping), Some(()));
    assert_eq!(net.cancelled_attempts(), [0]);
    assert!(matches!(rt.run(waiter), Some(Err(Error::Stopped))));
    // Restarting connects again at once.
    net.push_connect(ConnectOutcome::Succeed);
    service.start();
    let conn = rt.run(service.when_connected()).unwrap().unwrap();
    assert_eq!((conn.conn(), rt.now()), (1, Duration::ZERO));
}

#[test]
fn waiters_get_their_answers() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([fail("a"), fail("b"), ConnectOutcome::Succeed]);
    let service = ClientService::builder(rt.clone(), net.connector())
        .policy(backoff())
        .build()
        .unwrap();
    let mut patient = Box::pin(service.when_connected().with_id());
    let mut hasty = service.when_connected_fail_after(NonZeroU32::new(2).unwrap());
    let withdrawn = service.when_connected();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Init);
    assert_eq!(net.attempts(), 0, "built, not started");
    drop(withdrawn);
    service.start();

    // The second failure (the retry at 1.5 s) answers `hasty`.
    match rt.run(&mut hasty).unwrap() {
        Err(Error::Failed(failure)) => {
            assert!(matches!(&*failure, Failure::Connect(e) if e.message() == "b"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rt.now(), ms(1500));
    assert!(poll_once(&mut patient).is_pending());
    let (id, conn) = rt.run(&mut patient).unwrap().unwrap();
    assert_eq!((id.raw(), conn.conn(), rt.now()), (2, 2, ms(1500 + 2250)));
    assert_eq!(service.pending_waiters(), 0);
    // Connected: a new waiter is answered at once.
    let mut now = service.when_connected();
    rt.run_until_idle();
    assert!(matches!(poll_once(&mut now), Poll::Ready(Ok(h)) if h == conn));
}

#[test]
fn a_connect_timeout_cancels_the_attempt_at_the_exact_instant() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let service = ClientService::builder(rt.clone(), net.connector())
        .policy(backoff())
        .connect_timeout(Some(secs(5)))
        .start()
        .unwrap();
    let waiter = service.when_connected_fail_after(NonZeroU32::new(1).unwrap());
    rt.advance(ms(4999));
    assert_eq!(net.pending_attempts(), [0]);
    rt.advance(ms(1));
    assert_eq!(net.cancelled_attempts(), [0]);
    assert!(matches!(
        rt.run(waiter),
        Some(Err(Error::Failed(f))) if matches!(*f, Failure::ConnectTimeout)
    ));
    assert_eq!(rt.now(), secs(5));
    assert_eq!(rt.next_timer(), Some(ms(6500)));
    rt.advance(ms(1500));
    assert_eq!(net.pending_attempts(), [1], "the retry, 1.5 s later");
    // Decided live: it connects.
    assert!(net.succeed(1));
    let conn = rt.run(service.when_connected()).unwrap().unwrap();
    assert_eq!((conn.conn(), rt.now()), (1, ms(6500)));
}

#[test]
fn prepare_steps_decide_the_connection() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([ConnectOutcome::Succeed, ConnectOutcome::Succeed]);
    net.push_prepare(PrepareOutcome::Fail("bad hello".into()));
    let service = ClientService::builder(rt.clone(), net.connector())
        .prepare(net.prepare_hook())
        .prepare_timeout(Some(secs(3)))
        .policy(backoff())
        .reset_backoff_after(None)
        .start()
        .unwrap();
    rt.run_until_idle();
    // D2: the rejected connection is closed.
    assert_eq!(net.prepare_status(0), Some(PrepareStatus::Failed));
    assert_eq!(net.closed(), [0]);
    assert_eq!(service.state(), State::Waiting);
    rt.advance(ms(1500));
    // The second prepare step is decided live.
    assert_eq!(net.pending_prepares(), [1]);
    assert_eq!(service.state(), State::Connecting);
    assert!(net.prepare_succeed(1));
    let conn = rt.run(service.when_connected()).unwrap().unwrap();
    assert_eq!((conn.conn(), rt.now()), (1, ms(1500)));
    assert_eq!(service.state(), State::Connected);

    // A prepare step that hangs past the timeout is dropped, its connection closed.
    net.lose(1);
    net.push_connect(ConnectOutcome::Succeed);
    rt.run_until_idle();
    let lost_at = rt.now();
    rt.advance(ms(1500));
    assert_eq!(net.pending_prepares(), [2]);
    rt.advance(secs(3));
    assert_eq!(net.prepare_status(2), Some(PrepareStatus::Cancelled));
    assert_eq!(net.closed(), [0, 2]);
    assert_eq!(rt.now(), lost_at + ms(4500));
    assert_eq!(service.counters().failures, 2);
}

#[test]
fn disconnect_closes_the_connection_and_reconnects() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects([ConnectOutcome::Succeed, ConnectOutcome::Succeed]);
    let service = service(&rt, &net);
    let (id, _conn) = rt.run(service.when_connected().with_id()).unwrap().unwrap();
    assert!(service.disconnect(id));
    rt.run_until_idle();
    assert_eq!(net.closed(), [0]);
    assert!(!service.disconnect(id), "a late call does nothing");
    let (id2, conn2) = rt.run(service.when_connected().with_id()).unwrap().unwrap();
    assert_eq!((id2.raw(), conn2.conn(), rt.now()), (1, 1, ms(1500)));
}

#[test]
fn dropping_the_last_handle_ends_the_task() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Succeed);
    let service = service(&rt, &net);
    let clone = service.clone();
    rt.run(service.when_connected()).unwrap().unwrap();
    assert_eq!(rt.tasks(), 1);
    drop(service);
    rt.run_until_idle();
    assert_eq!((rt.tasks(), net.open()), (1, vec![0]), "a handle is left");
    let mut watch = clone.watch();
    drop(clone);
    rt.run_until_idle();
    assert_eq!(rt.tasks(), 0);
    assert_eq!(net.closed(), [0]);
    assert_eq!(rt.timers(), 0);
    // The watch sees the end.
    let _ = rt.run(watch.changed());
    assert_eq!(rt.run(watch.changed()), Some(None));
}

#[test]
fn a_runtime_shut_down_under_a_service_answers_everything() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(fail("refused"));
    let service = service(&rt, &net);
    let waiter = service.when_connected();
    rt.run_until_idle();
    assert_eq!(rt.timers(), 1);
    rt.shutdown();
    assert_eq!((rt.tasks(), rt.timers()), (0, 0));
    assert!(matches!(
        rt.run(waiter),
        Some(Err(Error::Ended(Ended::RuntimeGone)))
    ));
    assert_eq!(service.ended(), Some(Ended::RuntimeGone));
    assert_eq!(service.state(), State::Stopped);
    assert!(matches!(
        rt.run(service.when_connected()),
        Some(Err(Error::Ended(Ended::RuntimeGone)))
    ));
    assert_eq!(rt.run(service.stop()), Some(()));
    assert!(rt.panics().is_empty());
}

#[test]
fn a_zero_delay_retry_loop_is_reported_as_a_livelock() {
    // Virtual time never passes a zero delay: a connector that fails at once is a
    // livelock the harness must report rather than hang on.
    let rt = ManualRuntime::new();
    rt.set_poll_limit(50);
    let refused = || {
        std::future::ready(Err::<(NetHandle, std::future::Pending<()>), _>(
            NetError::new("refused"),
        ))
    };
    let service = ClientService::builder(rt.clone(), refused)
        .policy(|_| Duration::ZERO)
        .start()
        .unwrap();
    assert!(rt.try_run_until_idle().is_err());
    assert!(service.counters().attempts > 50);
    drop(service);
    rt.shutdown();
}

// ----- property: any world keeps the service sane ---------------------------------

/// One thing that happens to the service or its world.
#[derive(Debug, Clone)]
enum Event {
    Start,
    Stop,
    WhenConnected(Option<u8>),
    /// Withdraw the waiter with this index (modulo), if still held.
    Withdraw(usize),
    Advance(u16),
    /// Resolve the pending attempt with this index (modulo): succeed or fail.
    Resolve(usize, bool),
    /// Lose the open connection.
    Lose,
    /// Report the current connection broken.
    Disconnect,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => Just(Event::Start),
        1 => Just(Event::Stop),
        2 => proptest::option::of(1u8..4).prop_map(Event::WhenConnected),
        1 => any::<usize>().prop_map(Event::Withdraw),
        3 => (0u16..5000).prop_map(Event::Advance),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Event::Resolve(i, ok)),
        1 => Just(Event::Lose),
        1 => Just(Event::Disconnect),
    ]
}

fn outcome() -> impl Strategy<Value = ConnectOutcome> {
    prop_oneof![
        Just(ConnectOutcome::Succeed),
        Just(ConnectOutcome::Fail("refused".into())),
        Just(ConnectOutcome::Hang),
    ]
}

type Waiter = Pin<Box<redial::driver::WhenConnectedWithId<NetHandle, NetError>>>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_world_keeps_the_service_sane(
        script in proptest::collection::vec(outcome(), 0..8),
        events in proptest::collection::vec(event(), 0..40),
        timeout in proptest::option::of(1u64..4000),
    ) {
        let rt = ManualRuntime::new();
        let net = Net::new();
        net.push_connects(script);
        let mut builder = ClientService::builder(rt.clone(), net.connector())
            .policy(Backoff::new(ms(100), 2.0, secs(2)).unwrap().with_jitter(Jitter::None));
        if let Some(t) = timeout {
            builder = builder.connect_timeout(Some(ms(t)));
        }
        let service = builder.build().unwrap();
        let mut waiters: Vec<Option<Waiter>> = Vec::new();
        let mut stops = Vec::new();
        let mut current = None;
        for event in &events {
            match event {
                Event::Start => service.start(),
                Event::Stop => stops.push(service.stop()),
                Event::WhenConnected(n) => {
                    let w = match n.and_then(|n| NonZeroU32::new(n.into())) {
                        Some(n) => service.when_connected_fail_after(n),
                        None => service.when_connected(),
                    };
                    waiters.push(Some(Box::pin(w.with_id())));
                }
                Event::Withdraw(i) => {
                    if !waiters.is_empty() {
                        let n = waiters.len();
                        waiters[i % n] = None;
                    }
                }
                Event::Advance(d) => rt.advance(ms((*d).into())),
                Event::Resolve(i, ok) => {
                    let pending = net.pending_attempts();
                    if !pending.is_empty() {
                        let a = pending[i % pending.len()];
                        if *ok { net.succeed(a); } else { net.fail(a, "reset"); }
                    }
                }
                Event::Lose => {
                    if let Some(&c) = net.open().first() {
                        net.lose(c);
                    }
                }
                Event::Disconnect => {
                    if let Some(id) = current {
                        service.disconnect(id);
                    }
                }
            }
            rt.run_until_idle();
            // At most one attempt in flight and one connection open, and the service
            // counts what the network saw.
            prop_assert!(net.pending_attempts().len() <= 1, "{:?}", net);
            prop_assert!(net.open().len() <= 1, "{:?}", net.open());
            prop_assert_eq!(service.counters().attempts, net.attempts() as u64);
            prop_assert_eq!(service.counters().connections, net.connections() as u64);
            if service.state() == State::Connected {
                prop_assert_eq!(net.open().len(), 1);
            }
            for w in waiters.iter_mut() {
                if let Some(fut) = w {
                    if let Poll::Ready(answer) = poll_once(fut) {
                        if let Ok((id, handle)) = &answer {
                            prop_assert_eq!(id.raw() as usize, handle.conn());
                            prop_assert_eq!(net.attempt(handle.conn()), Some(AttemptStatus::Connected));
                            current = Some(*id);
                        }
                        *w = None;
                    }
                }
            }
        }
        // However the world went, a stop finishes, and then nothing is left: no
        // future pending, nothing open, no timer, no panic.
        let last = service.stop();
        prop_assert_eq!(rt.run(last), Some(()));
        for stop in stops {
            prop_assert_eq!(rt.run(stop), Some(()));
        }
        for fut in waiters.into_iter().flatten() {
            prop_assert!(rt.run(fut).is_some(), "a waiter stays pending");
        }
        prop_assert_eq!(service.state(), State::Stopped);
        prop_assert!(net.open().is_empty(), "{:?}", net.open());
        prop_assert!(net.pending_attempts().is_empty());
        prop_assert_eq!(rt.timers(), 0);
        prop_assert!(rt.panics().is_empty(), "{:?}", rt.panics());
        drop(service);
        rt.run_until_idle();
        prop_assert_eq!(rt.tasks(), 0);
    }
}

/// Connections a peer that accepts and drops at once gets in ten virtual minutes.
fn flaps_in_ten_minutes(reset_backoff_after: Option<Option<Duration>>) -> usize {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let builder = ClientService::builder(rt.clone(), net.connector());
    // The builder's defaults, or the reset asked for.
    let builder = match reset_backoff_after {
        Some(reset) => builder.reset_backoff_after(reset),
        None => builder,
    };
    // Every attempt connects; every connection is dropped at once.
    net.push_connects((0..1000).map(|_| ConnectOutcome::Succeed));
    let service = builder.start().unwrap();
    while rt.now() < secs(600) {
        rt.run_until_idle();
        for conn in net.open() {
            net.lose(conn);
        }
        rt.run_until_idle();
        if rt.advance_to_next_timer().is_none() {
            break;
        }
    }
    let flaps = net.connections();
    drop(service);
    rt.run_until_idle();
    flaps
}

/// The builder's default resets the backoff only after 5 s up: an accept-and-drop
/// peer is backed off like a refusing one, instead of being hit at the first delay
/// for ever. (Run with `--nocapture` for the figures.)
#[test]
fn an_accept_and_drop_peer_is_backed_off_by_default() {
    let by_default = flaps_in_ten_minutes(None);
    let at_once = flaps_in_ten_minutes(Some(None));
    println!(
        "accept-and-drop peer, 600 s of virtual time, default policy: {by_default} connections \
         ({:.3}/s) with the builder's default reset, {at_once} ({:.3}/s) resetting on connect",
        by_default as f64 / 600.0,
        at_once as f64 / 600.0
    );
    // Twisted's backoff (1 s × 1.5ⁿ, capped at 60 s, up to 1 s of jitter): with the
    // default, the delays grow to the cap: 11 to reach it, then one a minute.
    assert!((15..=25).contains(&by_default), "{by_default}");
    // Resetting on connect, every delay is the first one (1.5 s to 2.5 s).
    assert!(at_once >= 240, "{at_once}");
}
