//! The mailbox between the handles and the service's task is bounded: requests
//! that repeat coalesce where they are queued, dropped waiters leave nothing
//! behind, and the task polls what it holds before every batch of requests, so a
//! flood of requests neither grows the heap nor delays a connection.
//!
//! All on the deterministic harness (`redial::testing`): no sockets, no sleeps.
//! `tests/driver/mailbox_tokio.rs` measures the same on a real runtime.

use std::num::NonZeroU32;
use std::task::Poll;

use redial::driver::{ClientService, Error};
use redial::testing::{poll_once, ConnectOutcome, ManualRuntime, Net, NetError, NetHandle};
use redial::{Backoff, Jitter, State};

type Service = ClientService<NetHandle, NetError>;

const FLOOD: usize = 1_000_000;

fn service(rt: &ManualRuntime, net: &Net) -> Service {
    let policy = Backoff::new(
        std::time::Duration::from_secs(1),
        2.0,
        std::time::Duration::from_secs(60),
    )
    .unwrap()
    .with_jitter(Jitter::None);
    ClientService::builder(rt.clone(), net.connector())
        .policy(policy)
        .reset_backoff_after(None)
        .start()
        .unwrap()
}

/// A service waiting out its retry delay after `failures` failed attempts.
fn waiting(failures: usize) -> (ManualRuntime, Net, Service) {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let service = service(&rt, &net);
    for n in 0..failures {
        rt.run_until_idle();
        if n > 0 {
            rt.advance_to_next_timer();
        }
        assert!(net.fail(n, "refused"));
    }
    rt.run_until_idle();
    assert_eq!(service.state(), State::Waiting);
    assert_eq!(service.consecutive_failures(), failures as u32);
    (rt, net, service)
}

#[test]
fn a_million_reconnect_now_calls_are_one_queued_request() {
    let (rt, net, service) = waiting(3);
    let mut max = 0;
    for i in 0..FLOOD {
        // The strongest `reset_backoff` is kept, wherever it came in the flood.
        assert!(service.reconnect_now(i == FLOOD / 2));
        max = max.max(service.queued_requests());
    }
    println!("{FLOOD} reconnect_now calls: at most {max} request(s) queued");
    assert_eq!(max, 1);
    rt.run_until_idle();
    assert_eq!(service.queued_requests(), 0);
    assert_eq!(
        net.attempts(),
        4,
        "one attempt, at once, for the whole flood"
    );
    assert_eq!(service.state(), State::Connecting);
    assert_eq!(service.consecutive_failures(), 0, "the reset was kept");
    assert!(rt.panics().is_empty());
}

#[test]
fn a_reconnect_now_after_a_disconnect_is_not_merged_into_one_before_it() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Succeed);
    let service = service(&rt, &net);
    let (id, _conn) = rt.run(service.when_connected().with_id()).unwrap().unwrap();
    assert!(service.reconnect_now(true));
    assert!(service.disconnect(id));
    // Waiting for the retry (a disconnect counts as a loss): this one reconnects now.
    assert!(service.reconnect_now(true));
    assert_eq!(service.queued_requests(), 3);
    rt.run_until_idle();
    assert_eq!(net.closed(), [0]);
    assert_eq!(
        net.attempts(),
        2,
        "the second reconnect_now started an attempt"
    );
    assert_eq!(service.state(), State::Connecting);
}

#[test]
fn a_million_start_stop_pairs_stay_bounded_and_every_stop_is_answered() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Succeed);
    let service = service(&rt, &net);
    rt.run(service.when_connected()).unwrap().unwrap();

    let mut stops = Vec::with_capacity(FLOOD);
    let mut max = 0;
    for _ in 0..FLOOD {
        service.start();
        stops.push(service.stop());
        max = max.max(service.queued_requests());
    }
    println!("{FLOOD} start/stop pairs: at most {max} requests queued");
    assert!(max <= 2, "{max}");
    assert!(poll_once(&mut stops[0]).is_pending());
    let polls = rt.run_until_idle();
    assert!(polls <= 4, "{polls} polls");
    assert_eq!(service.state(), State::Stopped);
    assert_eq!(net.closed(), [0]);
    assert_eq!(
        net.attempts(),
        1,
        "no attempt started and cancelled per pair"
    );
    for stop in &mut stops {
        assert_eq!(poll_once(stop), Poll::Ready(()));
    }

    // Stop/start pairs: the last request (a start) wins; every stop is answered.
    let mut stops = Vec::with_capacity(FLOOD);
    net.push_connect(ConnectOutcome::Succeed);
    for _ in 0..FLOOD {
        stops.push(service.stop());
        service.start();
        max = max.max(service.queued_requests());
    }
    assert!(max <= 2, "{max}");
    rt.run_until_idle();
    for stop in &mut stops {
        assert_eq!(poll_once(stop), Poll::Ready(()));
    }
    assert_eq!(service.state(), State::Connected);
    assert_eq!(net.open(), [1]);
}

#[test]
fn the_order_of_starts_and_stops_is_kept() {
    let rt = ManualRuntime::new();
    let net = Net::new(); // attempts hang
    let service = ClientService::builder(rt.clone(), net.connector())
        .build()
        .unwrap();
    // A waiter between a start and a stop is told of the stop.
    service.start();
    let waiter = service.when_connected();
    let mut stop = service.stop();
    service.start();
    rt.run_until_idle();
    assert_eq!(poll_once(&mut stop), Poll::Ready(()));
    assert!(matches!(rt.run(waiter), Some(Err(Error::Stopped))));
    assert_eq!(service.state(), State::Connecting, "the last start won");
    assert_eq!(net.pending_attempts(), [1]);
    assert_eq!(net.cancelled_attempts(), [0]);
}

#[test]
fn waiters_dropped_in_a_loop_leave_nothing_queued() {
    let (rt, _net, service) = waiting(1);
    let mut max = 0;
    for _ in 0..FLOOD {
        drop(service.when_connected());
        max = max.max(service.queued_requests());
    }
    println!("{FLOOD} waiters dropped while queued: at most {max} entries queued");
    assert!(max <= 1, "{max}");

    // Waiters dropped in the middle of the queue are compacted away.
    let mut kept = Vec::new();
    for i in 0..10_000u32 {
        let waiter = service.when_connected();
        if i.is_multiple_of(100) {
            kept.push(waiter);
        }
        max = max.max(service.queued_requests());
    }
    assert!(max <= 2 * kept.len() + 64, "{max}");

    // Waiters the task took, then dropped: one withdrawal each, then nothing.
    rt.run_until_idle();
    assert_eq!(service.pending_waiters(), kept.len());
    drop(kept);
    assert!(service.queued_requests() <= 100);
    rt.run_until_idle();
    assert_eq!(service.queued_requests(), 0);
    assert_eq!(service.pending_waiters(), 0);
}

#[test]
fn a_timed_out_waiter_is_withdrawn_once_taken() {
    let (rt, _net, service) = waiting(1);
    let answer = rt.run(
        service
            .when_connected_fail_after(NonZeroU32::new(100).unwrap())
            .within(std::time::Duration::from_millis(10)),
    );
    assert!(
        matches!(answer, Some(Err(Error::TimedOut { .. }))),
        "{answer:?}"
    );
    rt.run_until_idle();
    assert_eq!(service.pending_waiters(), 0);
    assert_eq!(service.queued_requests(), 0);
}

/// A connection made while thousands of requests are queued is noticed in the
/// task's very next poll: the task polls its attempt before each batch of requests.
#[test]
fn a_connection_made_during_a_flood_is_noticed_in_the_next_poll() {
    let rt = ManualRuntime::new();
    let net = Net::new(); // the attempt hangs until told
    let service = service(&rt, &net);
    rt.run_until_idle();
    assert_eq!(net.pending_attempts(), [0]);

    let waiters: Vec<_> = (0..10_000).map(|_| service.when_connected()).collect();
    for _ in 0..FLOOD {
        service.reconnect_now(true);
    }
    assert!(service.queued_requests() <= 10_001);
    assert!(net.succeed(0));
    rt.set_poll_limit(1);
    assert!(
        rt.try_run_until_idle().is_err(),
        "still busy with the requests"
    );
    assert_eq!(
        service.state(),
        State::Connected,
        "reported in the first poll after the connection was ready"
    );
    rt.set_poll_limit(100_000);
    let polls = rt.run_until_idle();
    println!("10,000 waiters and {FLOOD} reconnect_now calls: taken in {polls} more polls");
    for waiter in waiters {
        assert!(matches!(rt.run(waiter), Some(Ok(h)) if h.conn() == 0));
    }
    assert_eq!(service.queued_requests(), 0);
}

/// Handles called from another thread in a tight loop while the task runs: nothing
/// blocks, the queue stays bounded, every stop resolves.
#[test]
fn handles_hammered_from_other_threads_while_the_task_runs() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connects((0..1000).map(|_| ConnectOutcome::Succeed));
    let service = service(&rt, &net);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (service, done) = (service.clone(), std::sync::Arc::clone(&done));
            std::thread::spawn(move || {
                let mut stops = Vec::new();
                let mut max = 0;
                let mut n = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    match (t, n % 3) {
                        (0, _) => {
                            service.reconnect_now(n.is_multiple_of(7));
                        }
                        (1, 0) => service.start(),
                        (1, 1) => stops.push(service.stop()),
                        (1, _) => drop(service.when_connected()),
                        _ => drop(service.when_connected()),
                    }
                    n += 1;
                    max = max.max(service.queued_requests());
                }
                (max, stops)
            })
        })
        .collect();
    for _ in 0..200 {
        rt.set_poll_limit(50);
        let _ = rt.try_run_until_idle();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.set_poll_limit(100_000);
    for thread in threads {
        let (max, stops) = thread.join().unwrap();
        println!("a hammering thread saw at most {max} requests queued");
        assert!(max <= 16, "{max}");
        rt.run_until_idle();
        for mut stop in stops {
            assert_eq!(poll_once(&mut stop), Poll::Ready(()));
        }
    }
    rt.run_until_idle();
    assert_eq!(service.queued_requests(), 0);
    assert_eq!(service.pending_waiters(), 0);
    assert!(rt.panics().is_empty());
}
