//! A fixed workload for `valgrind --tool=callgrind`: exact, repeatable instruction
//! counts per reconnect cycle, so a regression is a diff in BENCHMARKS.md, not a guess.
//!
//! ```text
//! cargo build --release --example callgrind_cycle
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!     --toggle-collect='callgrind_cycle::run_*' \
//!     target/release/examples/callgrind_cycle redial 10000
//! callgrind_annotate --inclusive=yes /tmp/cg.out | grep -E 'run_|input_'
//! ```
//!
//! `benches/callgrind.sh` does all of this for every workload and prints
//! instructions per cycle and per input.
//!
//! Workloads (`<workload> <cycles> [--time]`; with `--time` it prints the wall time
//! per cycle instead, which `benches/twisted_cycle.py` uses):
//!
//! * `redial`: the cycle of `redial_devkit::cycle` (devkit/src/cycle.rs) (when_connected, retry timer
//!   fired, connection made → NotifyWaiters, lost → ScheduleTimer(0 s)) with a
//!   zero-delay closure policy;
//! * `redial_into`: the same cycle through `Machine::handle_into` and one reused
//!   action buffer (the driver's hot path; `input_into` is its per-input wrapper);
//! * `redial_backoff`: the same with Twisted's jittered backoff (`Backoff::twisted`);
//! * `floor`: the hand-written floor doing the same cycle.
//!
//! Each input goes through an `#[inline(never)]` function named `input_*`, so
//! `callgrind_annotate --inclusive=yes` gives the instructions of each input
//! (including the driver's `match` over its actions) on its own line; `run_*`
//! is the whole loop, and the only code collected with `--toggle-collect`.

use std::hint::black_box;
use std::time::Instant;

use redial::{Actions, Backoff, Input, Machine, RetryPolicy};

use redial_devkit::cycle::{
    perform, perform_into, zero_delay, Error, Floor, FloorAction, RedialCycle, Seen, ZeroDelay,
};

#[inline(never)]
fn input_when_connected<P: RetryPolicy>(m: &mut Machine<Error, P>, seen: &mut Seen) {
    let (waiter, actions) = m.when_connected(None);
    black_box(waiter);
    perform(actions, seen);
}

#[inline(never)]
fn input_timer_fired<P: RetryPolicy>(m: &mut Machine<Error, P>, seen: &mut Seen) {
    let timer = seen.timer.take().expect("retry timer armed");
    perform(m.timer_fired(timer).unwrap(), seen);
}

#[inline(never)]
fn input_connection_made<P: RetryPolicy>(m: &mut Machine<Error, P>, seen: &mut Seen) {
    let attempt = seen.attempt.expect("attempt started");
    perform(m.connection_made(attempt).unwrap(), seen);
}

#[inline(never)]
fn input_client_disconnected<P: RetryPolicy>(m: &mut Machine<Error, P>, seen: &mut Seen) {
    let attempt = seen.attempt.expect("attempt started");
    perform(m.connection_closed(attempt).unwrap(), seen);
}

fn run_redial_cycles<P: RetryPolicy>(c: &mut RedialCycle<P>, cycles: u64) -> usize {
    for _ in 0..cycles {
        let m = black_box(&mut c.machine);
        input_when_connected(m, &mut c.seen);
        input_timer_fired(m, &mut c.seen);
        input_connection_made(m, &mut c.seen);
        input_client_disconnected(m, &mut c.seen);
    }
    c.seen.notified
}

#[inline(never)]
fn run_redial(cycles: u64) -> usize {
    let mut c = RedialCycle::new(zero_delay as ZeroDelay);
    run_redial_cycles(&mut c, cycles)
}

#[inline(never)]
fn input_into<P: RetryPolicy>(
    m: &mut Machine<Error, P>,
    input: Input<Error>,
    out: &mut Actions<Error>,
    seen: &mut Seen,
) {
    black_box(m.handle_into(input, out).unwrap());
    perform_into(out, seen);
}

#[inline(never)]
fn run_redial_into(cycles: u64) -> usize {
    let mut c = RedialCycle::new(zero_delay as ZeroDelay);
    let mut out = Actions::new();
    for _ in 0..cycles {
        let m = black_box(&mut c.machine);
        let when_connected = Input::WhenConnected {
            fail_after_failures: None,
        };
        input_into(m, when_connected, &mut out, &mut c.seen);
        let timer = c.seen.timer.take().expect("retry timer armed");
        input_into(m, Input::TimerFired { timer }, &mut out, &mut c.seen);
        let attempt = c.seen.attempt.expect("attempt started");
        input_into(m, Input::ConnectionMade { attempt }, &mut out, &mut c.seen);
        input_into(
            m,
            Input::ConnectionClosed { attempt },
            &mut out,
            &mut c.seen,
        );
    }
    c.seen.notified
}

#[inline(never)]
fn run_redial_backoff(cycles: u64) -> usize {
    let mut c = RedialCycle::new(Backoff::twisted(7));
    run_redial_cycles(&mut c, cycles)
}

#[inline(never)]
fn floor_input(floor: &mut Floor, input: fn(&mut Floor) -> FloorAction, counts: &mut [usize; 4]) {
    match input(floor) {
        FloorAction::Nothing => {}
        FloorAction::Connect => counts[0] += 1,
        FloorAction::Notify { waiters } => counts[1] += waiters as usize,
        FloorAction::ScheduleRetry { delay } => {
            black_box(delay);
            counts[2] += 1;
        }
    }
}

#[inline(never)]
fn run_floor(cycles: u64) -> usize {
    let mut floor = Floor::new();
    let mut counts = [0usize; 4];
    for _ in 0..cycles {
        let f = black_box(&mut floor);
        floor_input(f, Floor::when_connected, &mut counts);
        floor_input(f, Floor::timer_fired, &mut counts);
        floor_input(f, Floor::connection_made, &mut counts);
        floor_input(f, Floor::lost, &mut counts);
    }
    counts[1]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let workload = args.next().unwrap_or_else(|| "redial".into());
    let cycles: u64 = args.next().map_or(10_000, |n| n.parse().expect("cycles"));
    let timed = args.next().as_deref() == Some("--time");
    let start = Instant::now();
    let notified = match workload.as_str() {
        "redial" => run_redial(cycles),
        "redial_into" => run_redial_into(cycles),
        "redial_backoff" => run_redial_backoff(cycles),
        "floor" => run_floor(cycles),
        other => panic!("unknown workload {other}: redial, redial_into, redial_backoff or floor"),
    };
    let elapsed = start.elapsed();
    assert_eq!(notified as u64, cycles, "one waiter notified per cycle");
    if timed {
        // Machine-readable, for benches/twisted_cycle.py.
        let ns = elapsed.as_nanos() as f64 / cycles as f64;
        println!("ns_per_cycle {ns:.2}");
    } else {
        println!("{workload}: {cycles} cycles, {notified} waiters notified");
    }
}
