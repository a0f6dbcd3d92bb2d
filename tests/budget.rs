//! The shared reconnect budget: however many policies share it, retries leave no
//! faster than its rate (after the burst), and never earlier than each policy asks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use redial::driver::ClientService;
use redial::testing::{ConnectOutcome, ManualRuntime, Net};
use redial::{Backoff, Budget, Jitter, PolicyError, RetryPolicy, State};

/// A clock the test moves by hand (nanoseconds).
fn manual_clock() -> (
    Arc<AtomicU64>,
    impl Fn() -> Duration + Send + Sync + 'static,
) {
    let now = Arc::new(AtomicU64::new(0));
    let read = now.clone();
    (now, move || {
        Duration::from_nanos(read.load(Ordering::SeqCst))
    })
}

/// The most slots that fall in any window `[t, t + width)`.
fn busiest_window(mut slots: Vec<Duration>, width: Duration) -> usize {
    slots.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..slots.len() {
        while slots[end] - slots[start] >= width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[test]
fn a_herd_is_spread_at_the_rate() {
    let (_now, clock) = manual_clock();
    let budget = Budget::with_clock(50.0, 5, clock).unwrap();
    // 500 services lose their connection at once; each policy alone says 100 ms.
    let delays: Vec<Duration> = (0..500)
        .map(|_| {
            budget
                .limit(|_| Duration::from_millis(100))
                .next_delay(1)
                .unwrap()
        })
        .collect();
    assert!(delays.iter().all(|d| *d >= Duration::from_millis(100)));
    // 50 a second, 5 at once: at most 5 + 50 in any second.
    assert!(busiest_window(delays.clone(), Duration::from_secs(1)) <= 55);
    // The last leaves after about (500 - 5) / 50 s.
    let last = *delays.iter().max().unwrap();
    assert!(
        last >= Duration::from_millis(9_900) && last <= Duration::from_millis(10_100),
        "{last:?}"
    );
}

#[test]
fn a_quiet_budget_lets_a_burst_through_and_gets_out_of_the_way() {
    let (now, clock) = manual_clock();
    let budget = Budget::with_clock(10.0, 3, clock).unwrap();
    let mut policy = budget.limit(|_| Duration::from_secs(1));
    // Three at once are let through at their own delay; the fourth waits its slot.
    let first: Vec<_> = (0..4).map(|_| policy.next_delay(1).unwrap()).collect();
    assert_eq!(&first[..3], &[Duration::from_secs(1); 3]);
    assert_eq!(first[3], Duration::from_millis(1100));
    // Much later, the budget has refilled: the policy's own delay again.
    now.store(Duration::from_secs(60).as_nanos() as u64, Ordering::SeqCst);
    assert_eq!(policy.next_delay(1), Some(Duration::from_secs(1)));
}

#[test]
fn giving_up_is_the_inner_policys_call() {
    let budget = Budget::new(1.0, 1).unwrap();
    let mut policy = budget.limit(
        Backoff::twisted(1)
            .with_jitter(Jitter::None)
            .give_up_after(2),
    );
    assert!(policy.next_delay(1).is_some());
    assert_eq!(policy.next_delay(2), None);
}

#[test]
fn nonsense_rates_are_refused() {
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-300] {
        assert!(
            matches!(
                Budget::new(rate, 1),
                Err(PolicyError::InvalidSeconds { .. })
            ),
            "{rate}"
        );
    }
    // A burst of 0 is taken as 1.
    assert!(Budget::new(1.0, 0).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Whatever the policies ask and whenever, the reserved slots respect the
    /// budget and each policy's own delay.
    #[test]
    fn slots_never_exceed_the_budget(
        rate in 1.0f64..200.0,
        burst in 1u32..20,
        requests in proptest::collection::vec((0u64..2_000, 0u64..5_000), 1..400),
    ) {
        let (now, clock) = manual_clock();
        let budget = Budget::with_clock(rate, burst, clock).unwrap();
        let mut slots = Vec::new();
        let mut t = 0u64;
        for (advance_ms, wanted_ms) in requests {
            t += advance_ms;
            now.store(t * 1_000_000, Ordering::SeqCst);
            let wanted = Duration::from_millis(wanted_ms);
            let mut policy = budget.limit(move |_| wanted);
            let delay = policy.next_delay(1).unwrap();
            prop_assert!(delay >= wanted);
            slots.push(Duration::from_millis(t) + delay);
        }
        // In any window of one second: at most burst + rate slots (+1 for the
        // window's edges).
        let most = busiest_window(slots, Duration::from_secs(1));
        prop_assert!(most as f64 <= burst as f64 + rate + 1.0, "{most} > {burst} + {rate}");
    }
}

/// End to end on the deterministic harness: 200 services lose their connection at
/// the same instant; with a budget of 20 retries a second, the attempts reach the
/// "server" no faster, and everyone is back.
#[test]
fn services_sharing_a_budget_reconnect_no_faster_than_it() {
    let rt = ManualRuntime::new();
    let clock_rt = rt.clone();
    let budget = Budget::with_clock(20.0, 1, move || clock_rt.now()).unwrap();
    let services: Vec<(Net, ClientService<_, _>)> = (0..200)
        .map(|seed| {
            let net = Net::new();
            net.push_connects((0..4).map(|_| ConnectOutcome::Succeed));
            let service = ClientService::builder(rt.clone(), net.connector())
                .policy(budget.limit(Backoff::twisted(seed).with_jitter(Jitter::None)))
                .start()
                .unwrap();
            (net, service)
        })
        .collect();
    rt.run_until_idle();
    assert!(services.iter().all(|(_, s)| s.state() == State::Connected));
    // The server restarts: every connection is lost at once.
    let lost_at = rt.now();
    for (net, _) in &services {
        for conn in net.open() {
            net.lose(conn);
        }
    }
    rt.run_until_idle();
    // Attempts per virtual second, until everyone is back.
    let mut per_second = Vec::new();
    let attempts = |services: &[(Net, ClientService<_, _>)]| -> usize {
        services.iter().map(|(net, _)| net.attempts()).sum()
    };
    let mut seen = attempts(&services);
    while services.iter().any(|(_, s)| s.state() != State::Connected) {
        rt.advance(Duration::from_secs(1));
        let now = attempts(&services);
        per_second.push(now - seen);
        seen = now;
        assert!(
            per_second.len() < 60,
            "not everyone came back: {per_second:?}"
        );
    }
    println!(
        "budget 20/s, 200 services: attempts per second {per_second:?}, all back after {:?}",
        rt.now() - lost_at
    );
    assert!(per_second.iter().all(|n| *n <= 21), "{per_second:?}");
    // Twisted's first delay is 1.5 s; then ten seconds for 200 at 20 a second.
    assert!(rt.now() - lost_at <= Duration::from_secs(12));
    drop(services);
    rt.run_until_idle();
    assert_eq!(rt.tasks(), 0);
}
