//! The shared reconnect budget as a policy, on a clock the test moves: however many
//! policies share it, retries leave no faster than its rate (after the burst), and
//! never earlier than each policy asks. (Through services: `tests/driver/budget.rs`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use redial::{Backoff, Budget, Jitter, PolicyError, RetryPolicy};

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

// ----- the rule, and the earliest slot: checked against a brute force ---------------

/// The rule of the module docs, by its definition: for the slots sorted,
/// `s[j] - s[i] >= (j - i)·T - τ` for every `i < j` (nanoseconds).
fn keeps_the_rule(slots: &[u64], interval: u64, tolerance: u64) -> Result<(), String> {
    let mut s = slots.to_vec();
    s.sort_unstable();
    for i in 0..s.len() {
        for j in i + 1..s.len() {
            let gap = i128::from(s[j] - s[i]) + i128::from(tolerance);
            if gap < (j - i) as i128 * i128::from(interval) {
                return Err(format!(
                    "slots #{i} at {} ns and #{j} at {} ns are too close ({} between)",
                    s[i],
                    s[j],
                    j - i
                ));
            }
        }
    }
    Ok(())
}

/// The same rule checked the other way (the cell-rate algorithm run over the sorted
/// slots from a fresh start): fast enough to try many candidates.
fn conforms(slots: &[u64], extra: u64, interval: u64, tolerance: u64) -> bool {
    let mut s = slots.to_vec();
    s.push(extra);
    s.sort_unstable();
    let mut tat = 0u64;
    for t in s {
        if t + tolerance < tat {
            return false;
        }
        tat = tat.max(t) + interval;
    }
    true
}

/// A budget, its clock, and what a test reserves on it.
struct Probe {
    now: Arc<AtomicU64>,
    budget: Budget,
    interval: u64,
    tolerance: u64,
    /// Every slot granted so far (nanoseconds since the clock's origin).
    granted: Vec<u64>,
}

impl Probe {
    fn new(rate: f64, burst: u32) -> Probe {
        let (now, clock) = manual_clock();
        let budget = Budget::with_clock(rate, burst, clock).unwrap();
        let interval = budget.interval().as_nanos() as u64;
        let tolerance = interval * u64::from(budget.burst() - 1);
        Probe {
            now,
            budget,
            interval,
            tolerance,
            granted: Vec::new(),
        }
    }

    fn at(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }

    /// Reserves `wanted` from now and checks the grant against a brute force: it is
    /// at or after the wanted time, it keeps the rule, and no earlier time at or
    /// after the wanted one would (every time where an earlier slot could start —
    /// the wanted time, a granted slot, `slot + c·T − τ` — is tried, and every
    /// millisecond up to two seconds after the wanted time as well).
    fn reserve(&mut self, wanted: Duration) -> Result<Duration, TestCaseError> {
        let now = self.at();
        let delay = self.budget.reserve(wanted);
        prop_assert!(delay >= wanted, "{delay:?} < {wanted:?}");
        let want = now + wanted.as_nanos() as u64;
        let slot = now + delay.as_nanos() as u64;
        let (t, tau) = (self.interval, self.tolerance);
        prop_assert!(
            conforms(&self.granted, slot, t, tau),
            "the grant at {slot} breaks the rule"
        );
        let n = self.granted.len() as u64 + 2;
        let mut candidates = vec![want];
        for &p in &self.granted {
            candidates.push(p);
            for c in 0..=n {
                candidates.push((p + c * t).saturating_sub(tau));
                candidates.push(p + c * t);
            }
        }
        candidates.extend((0..2_000u64).map(|m| want + m * 1_000_000));
        for c in candidates {
            if c >= want && c < slot {
                prop_assert!(
                    !conforms(&self.granted, c, t, tau),
                    "wanted {want}, granted {slot}, but {c} keeps the rule"
                );
            }
        }
        self.granted.push(slot);
        Ok(delay)
    }
}

/// A wanted delay: mostly short, some long (a service deep in its backoff).
fn wanted_delay() -> impl Strategy<Value = Duration> {
    prop_oneof![
        4 => (0u64..300).prop_map(Duration::from_millis),
        2 => (300u64..3_000).prop_map(Duration::from_millis),
        1 => (10u64..61).prop_map(Duration::from_secs),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]
    /// Random sequences of (time of the call, wanted delay), in any order and mix:
    /// every grant is the earliest at or after its wanted time that keeps the rule,
    /// and all grants together keep it.
    #[test]
    fn every_grant_is_the_earliest_that_keeps_the_rule(
        interval_ms in 1u64..200,
        burst in 1u32..6,
        requests in proptest::collection::vec((0u64..400, wanted_delay()), 1..28),
    ) {
        let mut probe = Probe::new(1000.0 / interval_ms as f64, burst);
        let mut t = 0u64;
        for (advance_ms, wanted) in requests {
            t += advance_ms * 1_000_000;
            probe.now.store(t, Ordering::SeqCst);
            probe.reserve(wanted)?;
        }
        if let Err(why) = keeps_the_rule(&probe.granted, probe.interval, probe.tolerance) {
            return Err(TestCaseError::fail(why));
        }
        // Memory: the slots still ahead, one entry each at most.
        let ahead = probe.granted.iter().filter(|&&s| s >= t).count();
        prop_assert_eq!(probe.budget.outstanding(), ahead);
    }

    /// Many calls at the same instants, with rates that do not divide a second
    /// evenly: the same checks.
    #[test]
    fn crowded_instants_and_odd_rates(
        rate in 0.5f64..300.0,
        burst in 1u32..8,
        requests in proptest::collection::vec((0u64..3, 0u64..2_000), 1..28),
    ) {
        let mut probe = Probe::new(rate, burst);
        let mut t = 0u64;
        for (advance_ms, wanted_ms) in requests {
            t += advance_ms * 1_000_000;
            probe.now.store(t, Ordering::SeqCst);
            probe.reserve(Duration::from_millis(wanted_ms))?;
        }
        if let Err(why) = keeps_the_rule(&probe.granted, probe.interval, probe.tolerance) {
            return Err(TestCaseError::fail(why));
        }
    }
}

#[test]
fn a_short_retry_is_not_held_behind_a_long_one_on_the_budget() {
    let mut probe = Probe::new(10.0, 3);
    // One service reserves its retry 60 s ahead; another then retries every 100 ms
    // for ten seconds.
    probe.reserve(Duration::from_secs(60)).unwrap();
    let mut longest = Duration::ZERO;
    for step in 0..100u64 {
        probe.now.store(step * 100_000_000, Ordering::SeqCst);
        longest = longest.max(probe.reserve(Duration::from_millis(100)).unwrap());
    }
    println!(
        "figure 1 (budget 10/s, burst 3): the longest delay of a 100 ms retry after another \
         reserved 60 s ahead: {longest:?} (before: 59.9 s)"
    );
    assert_eq!(longest, Duration::from_millis(100));
}

#[test]
fn a_budget_shows_its_rate_burst_and_outstanding_slots() {
    let (_now, clock) = manual_clock();
    let budget = Budget::with_clock(10.0, 3, clock).unwrap();
    assert_eq!(
        budget.reserve(Duration::from_secs(1)),
        Duration::from_secs(1)
    );
    assert_eq!(
        format!("{budget:?}"),
        "Budget { interval: 100ms, burst: 3, outstanding: 1, .. }"
    );
}
