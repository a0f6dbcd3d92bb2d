//! The async driver's waiter bookkeeping, on the deterministic harness
//! (`redial::testing::ManualRuntime`: no threads, no sockets, no timers), so the
//! figures are the driver's own work: the handle pushing a request, the task
//! performing it, the machine.
//!
//! ```text
//! cargo bench --features testing --bench driver              # full run
//! cargo bench --features testing --bench driver -- --quick   # smoke run
//! ```
//!
//! Groups (throughput is per waiter, N = 10,000 and 100,000):
//!
//! * `driver_waiters/register/N`: N `when_connected` futures made and taken by the
//!   service's task (the service is connecting: they stay pending);
//! * `driver_waiters/notify_all/N`: the connection comes up with N waiters pending;
//!   each gets a clone of the handle;
//! * `driver_waiters/withdraw_{oldest,newest}_first/N`, `withdraw_random/N`: N
//!   pending waiters' futures dropped in that order, and the withdrawals performed.
//!
//! Linear means the per-waiter time does not grow with N.
#![allow(missing_docs)] // criterion's macros and this bench's helpers are not API

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use redial::driver::{ClientService, WhenConnected};
use redial::testing::{ManualRuntime, Net, NetError, NetHandle};

type Service = ClientService<NetHandle, NetError>;
type Waiter = WhenConnected<NetHandle, NetError>;

/// A started service whose first attempt hangs (live-controlled by `net`), with
/// `n` waiters taken by its task.
fn connecting_with(n: usize) -> (ManualRuntime, Net, Service, Vec<Waiter>) {
    let rt = ManualRuntime::new();
    // Large enough for N requests taken in one go (the task yields every few dozen).
    rt.set_poll_limit(usize::MAX);
    let net = Net::new();
    let service = ClientService::builder(rt.clone(), net.connector())
        .policy(|_| Duration::from_secs(1))
        .start()
        .expect("the harness spawns");
    let waiters: Vec<Waiter> = (0..n).map(|_| service.when_connected()).collect();
    rt.run_until_idle();
    assert_eq!(service.pending_waiters(), n);
    (rt, net, service, waiters)
}

/// Deterministic shuffle (xorshift), so every run withdraws in the same order.
fn shuffle<T>(items: &mut [T]) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        items.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

fn bench_waiters(c: &mut Criterion) {
    let mut g = c.benchmark_group("driver_waiters");
    g.sample_size(10);
    for n in [10_000usize, 100_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("register", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let (rt, net, service, _) = connecting_with(0);
                    (rt, net, service)
                },
                |(rt, net, service)| {
                    let waiters: Vec<Waiter> = (0..n).map(|_| service.when_connected()).collect();
                    rt.run_until_idle();
                    black_box(&waiters);
                    (rt, net, service, waiters)
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_with_input(BenchmarkId::new("notify_all", n), &n, |b, &n| {
            b.iter_batched(
                || connecting_with(n),
                |(rt, net, service, waiters)| {
                    net.succeed(0);
                    rt.run_until_idle();
                    assert_eq!(service.pending_waiters(), 0);
                    (rt, net, service, waiters)
                },
                BatchSize::PerIteration,
            )
        });
        for order in ["oldest_first", "newest_first", "random"] {
            let name = match order {
                "random" => "withdraw_random".to_string(),
                _ => format!("withdraw_{order}"),
            };
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.iter_batched(
                    || {
                        let (rt, net, service, mut waiters) = connecting_with(n);
                        match order {
                            "newest_first" => waiters.reverse(),
                            "random" => shuffle(&mut waiters),
                            _ => {}
                        }
                        (rt, net, service, waiters)
                    },
                    |(rt, net, service, waiters)| {
                        // Dropped one by one, in order (a drain keeps the order).
                        for waiter in waiters {
                            drop(waiter);
                        }
                        rt.run_until_idle();
                        assert_eq!(service.pending_waiters(), 0);
                        (rt, net, service)
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_waiters(&mut c);
    c.final_summary();
}
