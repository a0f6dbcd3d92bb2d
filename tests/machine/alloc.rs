//! The machine allocates nothing in steady state.
//!
//! A counting global allocator counts the heap allocations made on the test's own
//! thread. After a warm-up (the waiter list reaches its working capacity), 10,000
//! reconnect cycles with at most `INLINE_WAITERS` (1) waiters each must make none:
//! not for action lists, not for waiter lists, not for timers, ids or the policy.
//! A list of two or more waiters is one allocation (a boxed slice).
//!
//! `cargo test --test machine_alloc -- --nocapture` also prints the sizes quoted in
//! BENCHMARKS.md.
#![allow(unsafe_code)] // the counting allocator; the library itself forbids unsafe

use std::io::ErrorKind;
use std::mem::size_of;
use std::num::NonZeroU32;
use std::time::Duration;

use redial::actions::{INLINE_ACTIONS, INLINE_WAITERS};
use redial::{
    Action, Actions, AttemptId, Backoff, Config, Input, Machine, ProbeConfig, RetryPolicy, State,
    Step, TimerId, TimerKind, WaiterList,
};

use redial_devkit::cycle::{zero_delay, Error, RedialCycle, ZeroDelay};

#[path = "../support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations_in;

const CYCLES: usize = 10_000;
const WARM_UP: usize = 10;

#[test]
fn the_counter_counts() {
    let n = allocations_in(|| drop(std::hint::black_box(vec![1u8; 3])));
    assert_eq!(n, 1);
}

fn steady_cycles<P: RetryPolicy>(policy: P) {
    let mut c = RedialCycle::new(policy);
    for _ in 0..WARM_UP {
        assert_eq!(c.cycle(INLINE_WAITERS), INLINE_WAITERS);
    }
    let n = allocations_in(|| {
        for i in 0..CYCLES {
            // 0 ..= INLINE_WAITERS waiters, every count in turn
            let waiters = i % (INLINE_WAITERS + 1);
            assert_eq!(c.cycle(waiters), waiters);
        }
    });
    assert_eq!(n, 0, "{n} heap allocations in {CYCLES} steady cycles");
    assert_eq!(
        c.machine.counters().connections,
        (WARM_UP + CYCLES + 1) as u64
    );
}

#[test]
fn steady_reconnect_cycles_do_not_allocate() {
    steady_cycles(zero_delay as ZeroDelay);
}

#[test]
fn steady_cycles_with_twisted_backoff_do_not_allocate() {
    steady_cycles(Backoff::twisted(7));
}

/// Options cost nothing when they are off, from the first step: a machine
/// without options, started, connected, lost and reconnected with no waiter,
/// makes no heap allocation at all (no options block, no out-of-line state).
#[test]
fn a_machine_without_options_allocates_nothing_from_its_first_step() {
    let n = allocations_in(|| {
        let mut c = RedialCycle::new(zero_delay as ZeroDelay);
        for _ in 0..3 {
            assert_eq!(c.cycle(0), 0);
        }
        assert_eq!(c.machine.counters().connections, 4);
        drop(std::hint::black_box(c));
    });
    assert_eq!(n, 0, "{n} heap allocations by a machine without options");
}

/// A probe costs its options block and nothing more while health is not
/// counted: a probing machine without a healthy delay, once made, runs probe
/// cycles (interval, probe, answer), a loss and a reconnection with no heap
/// allocation (no out-of-line state for interval lengths it has no use for).
#[test]
fn probe_cycles_without_a_healthy_delay_allocate_nothing() {
    let probe = ProbeConfig::new(Duration::from_secs(10), Duration::from_secs(2));
    let mut m: Machine<Error, ZeroDelay> = Machine::with_config(
        zero_delay as ZeroDelay,
        Config::new().with_probe(Some(probe)),
    )
    .unwrap();
    let n = allocations_in(|| {
        let _ = m.start();
        for _ in 0..3 {
            let attempt = m.current_attempt().unwrap();
            let _ = m.connection_made(attempt).unwrap();
            assert_eq!(m.state(), State::Connected);
            for _ in 0..3 {
                let (interval, kind) = m.armed_timer().unwrap();
                assert_eq!(kind, TimerKind::ProbeInterval);
                let actions = m.timer_fired(interval).unwrap();
                assert!(actions.iter().any(|a| matches!(a, Action::Probe { .. })));
                let _ = m.probe_succeeded(attempt).unwrap();
            }
            let _ = m.connection_closed(attempt).unwrap();
            let (retry, _) = m.armed_timer().unwrap();
            let _ = m.timer_fired(retry).unwrap();
        }
    });
    assert_eq!(n, 0, "{n} heap allocations by probe cycles");
    assert_eq!(m.counters().connections, 3);
}

/// The driver side for the tests below: records every id it is handed.
#[derive(Default)]
struct Driver {
    attempt: Option<AttemptId>,
    timer: Option<TimerId>,
    to_disconnect: Option<AttemptId>,
    notified: usize,
    attempts_failed: usize,
    failed: usize,
    cancelled: usize,
    stops_finished: usize,
}

impl Driver {
    fn perform(&mut self, actions: Actions<Error>) {
        for action in actions {
            match action {
                Action::Connect { attempt } => self.attempt = Some(attempt),
                Action::ScheduleTimer { timer, .. } => self.timer = Some(timer),
                Action::CancelTimer { timer } => {
                    assert_eq!(self.timer.take(), Some(timer));
                }
                Action::Prepare { .. } => {}
                Action::Disconnect { attempt } => self.to_disconnect = Some(attempt),
                Action::NotifyWaiters { waiters, .. } => self.notified += waiters.len(),
                Action::AttemptFailed { .. } => self.attempts_failed += 1,
                Action::DeliverFailure { waiters, .. } => self.failed += waiters.len(),
                Action::CancelWaiters { waiters, .. } => self.cancelled += waiters.len(),
                Action::FinishStopping { stops } => self.stops_finished += stops.len(),
                // Facts the machine tells; this driver only counts answers.
                Action::Connected { .. } | Action::Lost { .. } | Action::RetryScheduled { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn fire(&mut self, m: &mut Machine<Error, ZeroDelay>) {
        let timer = self.timer.take().expect("a timer is armed");
        self.perform(m.timer_fired(timer).unwrap());
    }
}

/// Failed attempts whose waiters have a failure threshold: every attempt is refused
/// (`AttemptFailed`, with its `io::Error`), and each one fails the
/// `INLINE_WAITERS` waiters that registered before it (`DeliverFailure`).
#[test]
fn failing_attempts_and_failure_delivery_do_not_allocate() {
    let mut m: Machine<Error, ZeroDelay> = Machine::new(zero_delay as ZeroDelay);
    let mut d = Driver::default();
    let one = NonZeroU32::new(1);
    let cycle = |m: &mut Machine<Error, ZeroDelay>, d: &mut Driver| {
        for _ in 0..INLINE_WAITERS {
            let (_, actions) = m.when_connected(one);
            d.perform(actions);
        }
        let attempt = d.attempt.unwrap();
        let refused = std::io::Error::from(ErrorKind::ConnectionRefused);
        d.perform(m.connection_failed(attempt, refused).unwrap());
        assert_eq!(m.state(), State::Waiting);
        d.fire(m);
    };
    d.perform(m.start());
    for _ in 0..WARM_UP {
        cycle(&mut m, &mut d);
    }
    let n = allocations_in(|| {
        for _ in 0..CYCLES {
            cycle(&mut m, &mut d);
        }
    });
    assert_eq!(n, 0, "{n} heap allocations in {CYCLES} failing cycles");
    assert_eq!(d.failed, (WARM_UP + CYCLES) * INLINE_WAITERS);
    assert_eq!(d.attempts_failed, WARM_UP + CYCLES);
}

/// Every opt-in at once (prepare step, connect / prepare timeouts, healthy timer),
/// plus a stop and a restart every tenth cycle: every action kind but `GaveUp`.
#[test]
fn opt_in_cycles_with_stop_and_restart_do_not_allocate() {
    let config = Config::new()
        .with_prepare(true)
        .with_connect_timeout(Some(Duration::from_secs(5)))
        .with_prepare_timeout(Some(Duration::from_secs(5)))
        .with_reset_backoff_after(Some(Duration::from_secs(30)));
    let mut m: Machine<Error, ZeroDelay> =
        Machine::with_config(zero_delay as ZeroDelay, config).unwrap();
    let mut d = Driver::default();
    let cycle = |i: usize, m: &mut Machine<Error, ZeroDelay>, d: &mut Driver| {
        for _ in 0..INLINE_WAITERS {
            let (_, actions) = m.when_connected(None);
            d.perform(actions);
        }
        let attempt = d.attempt.unwrap();
        d.perform(m.connection_made(attempt).unwrap()); // cancel connect timeout, prepare
        d.perform(m.prepare_succeeded(attempt).unwrap()); // healthy timer, notify
        assert_eq!(m.state(), State::Connected);
        d.fire(m); // healthy
        if i.is_multiple_of(10) {
            let (_, actions) = m.stop(); // Disconnect
            d.perform(actions);
            let closing = d.to_disconnect.take().unwrap();
            d.perform(m.connection_closed(closing).unwrap()); // finish stopping
            assert_eq!(m.state(), State::Stopped);
            d.perform(m.start()); // Connect, connect timeout
        } else {
            d.perform(m.connection_closed(attempt).unwrap()); // retry timer
            d.fire(m); // Connect, connect timeout
        }
        assert_eq!(m.state(), State::Connecting);
    };
    d.perform(m.start());
    for i in 0..WARM_UP {
        cycle(i, &mut m, &mut d);
    }
    let n = allocations_in(|| {
        for i in 0..CYCLES {
            cycle(i, &mut m, &mut d);
        }
    });
    assert_eq!(n, 0, "{n} heap allocations in {CYCLES} opt-in cycles");
    assert_eq!(d.notified, (WARM_UP + CYCLES) * INLINE_WAITERS);
    assert_eq!(d.stops_finished, (WARM_UP + CYCLES) / 10);
}

/// More waiters than fit inline do allocate (the waiter list spills): the bound the
/// steady-state tests stay within is real.
#[test]
fn more_than_inline_waiters_spill_to_the_heap() {
    let mut c = RedialCycle::new(zero_delay as ZeroDelay);
    for _ in 0..WARM_UP {
        c.cycle(INLINE_WAITERS + 1);
    }
    let n = allocations_in(|| {
        c.cycle(INLINE_WAITERS + 1);
    });
    assert_eq!(n, 1, "the spilled NotifyWaiters list");
}

/// Every action fits in 32 bytes (4 words) for the error type of a real socket
/// driver: what every action list the driver moves is made of.
#[test]
fn an_action_is_at_most_32_bytes() {
    assert!(
        size_of::<Action<Error>>() <= 32,
        "{}",
        size_of::<Action<Error>>()
    );
    assert!(size_of::<Action<()>>() <= 32, "{}", size_of::<Action<()>>());
    assert_eq!(size_of::<WaiterList>(), 16);
    assert_eq!(size_of::<redial::Panic>(), size_of::<usize>());
}

#[test]
fn sizes() {
    println!(
        "size_of::<Machine<io::Error>>()               = {}",
        size_of::<Machine<Error>>()
    );
    println!(
        "size_of::<Machine<io::Error, fn(u32)->Dur>>() = {}",
        size_of::<Machine<Error, ZeroDelay>>()
    );
    println!(
        "size_of::<Action<io::Error>>()                = {}",
        size_of::<Action<Error>>()
    );
    println!(
        "size_of::<Actions<io::Error>>() ({INLINE_ACTIONS} inline)    = {}",
        size_of::<Actions<Error>>()
    );
    println!(
        "size_of::<Step<io::Error>>()                  = {}",
        size_of::<Step<Error>>()
    );
    println!(
        "size_of::<Input<io::Error>>()                 = {}",
        size_of::<Input<Error>>()
    );
    println!(
        "size_of::<WaiterList>() ({INLINE_WAITERS} inline)           = {}",
        size_of::<WaiterList>()
    );
    println!(
        "size_of::<Failure<io::Error>>()               = {}",
        size_of::<redial::Failure<Error>>()
    );
    println!(
        "size_of::<Panic>()                            = {}",
        size_of::<redial::Panic>()
    );
    println!(
        "size_of::<Backoff>()                          = {}",
        size_of::<Backoff>()
    );
    println!(
        "size_of::<Action<()>>()                       = {}",
        size_of::<Action<()>>()
    );
    println!(
        "size_of::<Actions<()>>()                      = {}",
        size_of::<Actions<()>>()
    );
}

/// A herd admitted at once by a shared budget costs allocations only as the
/// budget's list of slots grows (about log₂ n), not one per reservation: each
/// reservation after the burst starts at the end of the span the budget found
/// full, after every kept slot, and takes the classic path (no scan).
#[test]
fn a_herd_admitted_at_once_allocates_only_as_the_budget_grows() {
    let budget = redial::Budget::with_clock(100.0, 10, || Duration::ZERO).unwrap();
    let mut last = Duration::ZERO;
    let n = allocations_in(|| {
        for _ in 0..1_000 {
            last = std::hint::black_box(budget.admit());
        }
    });
    // 10 at once, then one every 10 ms.
    assert_eq!(last, Duration::from_millis(9_900));
    assert_eq!(budget.outstanding(), 1_000);
    assert!(n <= 16, "{n} allocations for a herd of 1,000");
}
