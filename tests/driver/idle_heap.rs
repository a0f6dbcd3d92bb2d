//! An idle service keeps nothing it does not need: after a burst of requests has
//! been answered, the service's live heap is back where it was before the burst
//! (the task's queues, its waiters' answer channels, the mailbox's queue and the
//! machine's lists are given back when the task goes idle), an idle service
//! keeps no more than it needs, and a dropped one leaves nothing behind.
//!
//! A binary of its own: it installs the counting allocator, and runs one test so
//! that no other test allocates while it measures.
#![allow(unsafe_code)] // the counting allocator; the library itself forbids unsafe

#[path = "../support/counting_alloc.rs"]
mod counting_alloc;

use std::time::Duration;

use redial::driver::ClientService;
use redial::testing::{ConnectOutcome, ManualRuntime, Net, NetError, NetHandle};
use redial::{Backoff, Jitter};

/// The heap one idle connected service keeps on the harness (592 B with Rust
/// 1.95 on x86-64), with room for small layout changes.
const IDLE_SERVICE_HEAP: isize = 640;

/// Live heap bytes of this thread, where the service and its runtime run (the
/// test harness's own threads allocate meanwhile too).
fn live() -> isize {
    counting_alloc::thread_live()
}

#[test]
fn a_burst_of_requests_leaves_nothing_behind_once_answered() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Succeed);
    let policy = Backoff::new(Duration::from_millis(1500), 1.5, Duration::from_secs(60))
        .unwrap()
        .with_jitter(Jitter::None);
    let service: ClientService<NetHandle, NetError> =
        ClientService::builder(rt.clone(), net.connector())
            .policy(policy.clone())
            .reset_backoff_after(None)
            .start()
            .unwrap();
    drop(rt.run(service.when_connected()).unwrap().unwrap());
    rt.run_until_idle();

    // More services like it, one at a time, connected and idle: what one idle
    // service keeps; dropped, it closes its connection and its task ends, and
    // every byte is back. (Printed after measuring: the test harness keeps what
    // a test prints on the heap of this thread.)
    for extra in 0..3 {
        let before = live();
        net.push_connect(ConnectOutcome::Succeed);
        let other: ClientService<NetHandle, NetError> =
            ClientService::builder(rt.clone(), net.connector())
                .policy(policy.clone())
                .reset_backoff_after(None)
                .start()
                .unwrap();
        drop(rt.run(other.when_connected()).unwrap().unwrap());
        rt.run_until_idle();
        let one = live() - before;
        drop(other);
        rt.run_until_idle();
        let after = live();
        println!(
            "service {extra}: {one} B while idle, {} B left once dropped",
            after - before
        );
        // Its task keeps no out-of-line block while idle (88 B more if it did):
        // the bound leaves room for layout changes smaller than that.
        assert!(
            one <= IDLE_SERVICE_HEAP,
            "an idle service keeps {one} B (at most {IDLE_SERVICE_HEAP} B)"
        );
        assert_eq!(after, before, "a dropped service leaves nothing behind");
    }
    let idle = live();

    for round in 0..3 {
        // 500 waiters, some withdrawn before the task takes them, and repeated
        // reconnect requests (coalesced; connected, they do nothing).
        let mut waiters: Vec<_> = (0..500).map(|_| service.when_connected()).collect();
        waiters.truncate(400);
        for _ in 0..100 {
            service.reconnect_now(false);
        }
        let busy = live();
        assert!(
            busy > idle,
            "round {round}: the burst is queued ({busy} B vs {idle} B)"
        );
        rt.run_until_idle();
        let answered: Vec<_> = waiters
            .into_iter()
            .map(|w| rt.run(w).unwrap().unwrap())
            .collect();
        assert_eq!(answered.len(), 400);
        drop(answered);
        rt.run_until_idle();
        let after = live();
        assert_eq!(
            after, idle,
            "round {round}: {after} B live once idle again, {idle} B before the burst"
        );
    }
    assert_eq!(service.counters().connections, 1);

    // Waiting for a retry: waiters wait in the machine's own list, until they are
    // withdrawn (dropped).
    assert!(net.lose(0));
    rt.run_until_idle();
    assert_eq!(rt.timers(), 1, "the retry timer");
    let idle = live();
    for round in 0..3 {
        let waiters: Vec<_> = (0..500).map(|_| service.when_connected()).collect();
        rt.run_until_idle();
        let busy = live();
        assert!(
            busy > idle,
            "round {round}: the waiters wait ({busy} B vs {idle} B)"
        );
        drop(waiters);
        rt.run_until_idle();
        let after = live();
        assert_eq!(
            after, idle,
            "round {round} while waiting: {after} B live once idle again, {idle} B before"
        );
    }
    assert_eq!(service.counters().losses, 1);
}
