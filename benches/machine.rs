//! The machine alone, against a hand-written floor, and its waiter lists.
//!
//! ```text
//! cargo bench --bench machine                 # full run, about 2 minutes on 2 cores
//! cargo bench --bench machine -- --quick      # smoke run
//! cargo bench --bench machine -- cycle        # only the cycle group (and the ratio)
//! ```
//!
//! Groups:
//!
//! * `cycle/*`: one reconnect cycle (when_connected → retry timer fires → Connect →
//!   connection made → NotifyWaiters → connection lost → ScheduleTimer(0 s)), for
//!   redial with a zero-delay closure policy, redial with Twisted's jittered
//!   backoff, and the hand-written floor (`redial_devkit::cycle`, devkit/src/cycle.rs); `*_no_waiter`
//!   drops the `when_connected` input. Per input = cycle / 4 (or / 3).
//! * `waiters/notify/N`: `connection_made` with N pending waiters (throughput is per
//!   waiter); `waiters/register/N`: N `when_connected` calls; `waiters/cancel_each/N`:
//!   withdrawing N pending waiters oldest first (`cancel_waiter`);
//!   `waiters/withdraw_{oldest,newest,random}/N`: N pending waiters withdrawn
//!   oldest first, newest first, or in a random (seeded) order: each should be
//!   linear overall, so the per-waiter figure should not grow with N.
//!
//! ```text
//! cargo bench --bench machine -- waiters/withdraw    # only the withdrawal orders
//! ```
//!
//! After criterion's groups, the `cycle` part prints the redial / floor ratio from
//! interleaved rounds in this same process (`ratio:` lines), which is the figure
//! BENCHMARKS.md quotes: both sides see the same machine noise.
#![allow(missing_docs)] // criterion's macros and this bench's helpers are not API

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use redial::{Actions, Backoff, Machine, SplitMix64, WaiterId};

use redial_devkit::cycle::{perform, zero_delay, Error, FloorCycle, RedialCycle, Seen, ZeroDelay};

fn bench_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("cycle");
    g.throughput(Throughput::Elements(1));

    let mut redial = RedialCycle::new(zero_delay as ZeroDelay);
    g.bench_function("redial", |b| b.iter(|| redial.cycle(1)));
    let mut into = RedialCycle::new(zero_delay as ZeroDelay);
    let mut out = Actions::new();
    g.bench_function("redial_into", |b| b.iter(|| into.cycle_into(1, &mut out)));
    let mut backoff = RedialCycle::new(Backoff::twisted(7));
    g.bench_function("redial_twisted_backoff", |b| b.iter(|| backoff.cycle(1)));
    let mut floor = FloorCycle::default();
    g.bench_function("floor", |b| b.iter(|| floor.cycle(1)));

    let mut redial = RedialCycle::new(zero_delay as ZeroDelay);
    g.bench_function("redial_no_waiter", |b| b.iter(|| redial.cycle(0)));
    let mut floor = FloorCycle::default();
    g.bench_function("floor_no_waiter", |b| b.iter(|| floor.cycle(0)));
    g.finish();
}

/// A machine that is `Connecting`, with `n` waiters pending, and its attempt.
fn connecting_with_waiters(n: usize) -> (Machine<Error, ZeroDelay>, Vec<WaiterId>, Seen) {
    let mut machine = Machine::new(zero_delay as ZeroDelay);
    let mut seen = Seen::default();
    perform(machine.start(), &mut seen);
    let waiters = (0..n)
        .map(|_| {
            let (w, actions) = machine.when_connected(None);
            perform(actions, &mut seen);
            w
        })
        .collect();
    (machine, waiters, seen)
}

const WAITER_COUNTS: [usize; 4] = [1, 16, 1_000, 100_000];
/// Withdrawing oldest first, as it always was benched (up to 10,000: it used to be
/// quadratic).
const CANCEL_COUNTS: [usize; 4] = [1, 16, 1_000, 10_000];
/// Withdrawing in each order: per-waiter figures that stay flat mean linear.
const WITHDRAW_COUNTS: [usize; 3] = [1_000, 10_000, 100_000];

/// The order in which `waiters` are withdrawn.
#[derive(Debug, Clone, Copy)]
enum Order {
    Oldest,
    Newest,
    Random,
}

impl Order {
    fn name(self) -> &'static str {
        match self {
            Order::Oldest => "withdraw_oldest",
            Order::Newest => "withdraw_newest",
            Order::Random => "withdraw_random",
        }
    }

    /// The indices of `n` waiters in this order (random: a seeded Fisher–Yates shuffle).
    fn indices(self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        match self {
            Order::Oldest => {}
            Order::Newest => order.reverse(),
            Order::Random => {
                let mut rng = SplitMix64::new(0x5eed);
                for i in (1..n).rev() {
                    let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                    order.swap(i, j);
                }
            }
        }
        order
    }
}

fn batch_size(n: usize) -> BatchSize {
    if n <= 16 {
        BatchSize::SmallInput
    } else {
        BatchSize::PerIteration
    }
}

fn bench_waiters(c: &mut Criterion) {
    let mut g = c.benchmark_group("waiters");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.sampling_mode(SamplingMode::Flat);

    for &n in &WAITER_COUNTS {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("notify", n), &n, |b, &n| {
            b.iter_batched(
                || connecting_with_waiters(n),
                |(mut machine, waiters, mut seen)| {
                    let attempt = seen.attempt.unwrap();
                    perform(machine.connection_made(attempt).unwrap(), &mut seen);
                    assert_eq!(seen.notified, n);
                    (machine, waiters)
                },
                batch_size(n),
            )
        });
    }
    for &n in &WAITER_COUNTS {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("register", n), &n, |b, &n| {
            b.iter_batched(
                || connecting_with_waiters(0),
                |(mut machine, _, mut seen)| {
                    for _ in 0..n {
                        let (w, actions) = machine.when_connected(None);
                        black_box(w);
                        perform(actions, &mut seen);
                    }
                    machine
                },
                batch_size(n),
            )
        });
    }
    for &n in &CANCEL_COUNTS {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("cancel_each", n), &n, |b, &n| {
            b.iter_batched(
                || connecting_with_waiters(n),
                |(mut machine, waiters, mut seen)| {
                    for w in &waiters {
                        perform(machine.cancel_waiter(*w).unwrap(), &mut seen);
                    }
                    machine
                },
                batch_size(n),
            )
        });
    }
    for order in [Order::Oldest, Order::Newest, Order::Random] {
        for &n in &WITHDRAW_COUNTS {
            let indices = order.indices(n);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new(order.name(), n), &n, |b, &n| {
                b.iter_batched(
                    || connecting_with_waiters(n),
                    |(mut machine, waiters, mut seen)| {
                        for &i in &indices {
                            perform(machine.cancel_waiter(waiters[i]).unwrap(), &mut seen);
                        }
                        assert_eq!(machine.pending_waiters().len(), 0);
                        machine
                    },
                    batch_size(n),
                )
            });
        }
    }
    g.finish();
}

/// ns per cycle of `k` cycles.
fn time_cycles(k: usize, mut cycle: impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let mut notified = 0;
    for _ in 0..k {
        notified += cycle();
    }
    black_box(notified);
    start.elapsed().as_nanos() as f64 / k as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Interleaved rounds of redial and floor in this process: the same-run ratio.
fn print_ratios(rounds: usize) {
    const K: usize = 100_000;
    for (label, waiters) in [("cycle (1 waiter)", 1), ("cycle (no waiter)", 0)] {
        let mut redial = RedialCycle::new(zero_delay as ZeroDelay);
        let mut into = RedialCycle::new(zero_delay as ZeroDelay);
        let mut out = Actions::new();
        let mut twisted = RedialCycle::new(Backoff::twisted(7));
        let mut floor = FloorCycle::default();
        let (mut r, mut i, mut t, mut f) = (vec![], vec![], vec![], vec![]);
        let (mut ratios, mut into_ratios) = (vec![], vec![]);
        for round in 0..=rounds {
            let nr = time_cycles(K, || redial.cycle(waiters));
            let ni = time_cycles(K, || into.cycle_into(waiters, &mut out));
            let nt = time_cycles(K, || twisted.cycle(waiters));
            let nf = time_cycles(K, || floor.cycle(waiters));
            if round > 0 {
                // round 0 is warm-up
                r.push(nr);
                i.push(ni);
                t.push(nt);
                f.push(nf);
                ratios.push(nr / nf);
                into_ratios.push(ni / nf);
            }
        }
        let (r, i, t, f) = (
            median(&mut r),
            median(&mut i),
            median(&mut t),
            median(&mut f),
        );
        let (ratio, into_ratio) = (median(&mut ratios), median(&mut into_ratios));
        let inputs = if waiters == 1 { 4.0 } else { 3.0 };
        println!(
            "ratio: {label}: redial {r:.1} ns ({:.1} ns/input), redial handle_into {i:.1} ns \
             ({:.1} ns/input), redial+twisted backoff {t:.1} ns, floor {f:.1} ns \
             ({:.1} ns/input); redial/floor = {ratio:.2}x, handle_into/floor = {into_ratio:.2}x \
             (median of {rounds} interleaved rounds of {K} cycles)",
            r / inputs,
            i / inputs,
            f / inputs,
        );
    }
}

/// Criterion's options that take a value, so the filter can be told apart.
const VALUE_FLAGS: &[&str] = &[
    "-s",
    "--save-baseline",
    "-b",
    "--baseline",
    "--baseline-lenient",
    "--load-baseline",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--profile-time",
    "--plotting-backend",
    "--output-format",
    "-c",
    "--color",
    "--format",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let filter = args
        .iter()
        .enumerate()
        .find(|(i, a)| {
            !a.starts_with('-') && (*i == 0 || !VALUE_FLAGS.contains(&args[i - 1].as_str()))
        })
        .map(|(_, a)| a.clone());

    let mut c = Criterion::default().configure_from_args();
    bench_cycle(&mut c);
    bench_waiters(&mut c);
    c.final_summary();

    let wants_ratio = match filter.as_deref() {
        None => true,
        Some(f) => "cycle/ratio".contains(f),
    };
    if benching && wants_ratio {
        print_ratios(if quick { 5 } else { 31 });
    }
}
