//! Tests of the retry policies (`redial::policy`): Twisted's backoff, jitter bounds,
//! determinism, parameter validation, give-up wrappers and closure policies.

use std::collections::HashSet;
use std::time::Duration;

use redial::policy::*;
use redial::PolicyError;

const SEC: Duration = Duration::from_secs(1);

fn no_jitter_twisted() -> Backoff {
    Backoff::twisted(0).with_jitter(Jitter::None)
}

fn nanos(d: Duration) -> u128 {
    d.as_nanos()
}

/// Checks `d` against the documented bounds of `b`'s jitter mode for `n` failures.
/// `prev` is the previous decorrelated delay (tracked by the caller).
fn assert_within_bounds(b: &Backoff, n: u32, d: Duration, prev: &mut Duration) {
    let base = b.base_delay(n);
    assert!(base <= b.max(), "base {base:?} above max {:?}", b.max());
    match b.jitter() {
        Jitter::None => assert_eq!(d, base),
        Jitter::Additive { max: j } => {
            assert!(d >= base, "additive {d:?} below base {base:?}");
            if j.is_zero() {
                assert_eq!(d, base);
            } else {
                assert!(
                    nanos(d) < nanos(base) + nanos(j) || d == Duration::MAX,
                    "additive {d:?} not below {base:?} + {j:?}"
                );
            }
        }
        Jitter::Full => assert!(d <= base, "full {d:?} above base {base:?}"),
        Jitter::Equal => {
            let half = nanos(base) / 2;
            if base.is_zero() {
                assert_eq!(d, Duration::ZERO);
            } else {
                assert!(
                    nanos(d) >= half && d < base,
                    "equal {d:?} not in [{half}ns, {base:?})"
                );
            }
        }
        Jitter::Decorrelated => {
            if n <= 1 {
                *prev = b.initial();
            }
            if b.initial().is_zero() {
                assert_eq!(d, Duration::ZERO);
            } else {
                assert!(
                    d >= b.initial() && d <= b.max(),
                    "decorrelated {d:?} out of range"
                );
                assert!(
                    nanos(d) < nanos(*prev) * 3,
                    "decorrelated {d:?} not below 3 * {prev:?}"
                );
            }
            *prev = d;
        }
    }
}

const ALL_JITTERS: [Jitter; 6] = [
    Jitter::None,
    Jitter::Additive { max: SEC },
    Jitter::Additive {
        max: Duration::ZERO,
    },
    Jitter::Full,
    Jitter::Equal,
    Jitter::Decorrelated,
];

// ---------------------------------------------------------------- base delays

#[test]
fn twisted_base_delays_are_exact() {
    let mut b = no_jitter_twisted();
    assert_eq!(b.next_delay(1), Some(Duration::from_millis(1500)));
    assert_eq!(b.next_delay(2), Some(Duration::from_millis(2250)));
    assert_eq!(b.next_delay(3), Some(Duration::from_millis(3375)));
    assert_eq!(b.base_delay(1), Duration::from_millis(1500));
    assert_eq!(b.base_delay(2), Duration::from_millis(2250));
    assert_eq!(b.base_delay(3), Duration::from_millis(3375));
    // 0 failures (the machine never asks for it) is treated as 1.
    assert_eq!(b.base_delay(0), Duration::from_millis(1500));
    // 1.5^10 = 57.6650390625 s, rounded to the nearest nanosecond (half up).
    assert_eq!(b.base_delay(10), Duration::new(57, 665_039_063));
}

#[test]
fn twisted_parameters_from_every_constructor() {
    // Twisted's 1 s · 1.5ⁿ is a first delay of 1.5 s.
    let a = Backoff::new(Duration::from_millis(1500), 1.5, Duration::from_secs(60)).unwrap();
    let f = Backoff::from_secs_f64(1.5, 1.5, 60.0).unwrap();
    let t = Backoff::twisted(9);
    let d = Backoff::default();
    for b in [&a, &f, &t, &d] {
        assert_eq!(b.initial(), Duration::from_millis(1500));
        assert_eq!(b.factor(), 1.5);
        assert_eq!(b.max(), Duration::from_secs(60));
        for (n, ms) in [(1, 1500), (2, 2250), (3, 3375)] {
            assert_eq!(b.base_delay(n), Duration::from_millis(ms));
        }
    }
    assert_eq!(a.jitter(), Jitter::None);
    assert_eq!(f.jitter(), Jitter::None);
    assert_eq!(t.jitter(), Jitter::Additive { max: SEC });
    assert_eq!(d.jitter(), Jitter::Additive { max: SEC });
    assert_eq!(a, f);
}

#[test]
fn capped_at_sixty_seconds_for_large_n() {
    let mut b = no_jitter_twisted();
    assert!(b.base_delay(10) < Duration::from_secs(60));
    for n in (11..=20).chain([100, 1751, 1_000_000, u32::MAX - 1, u32::MAX]) {
        assert_eq!(b.base_delay(n), Duration::from_secs(60), "n = {n}");
        assert_eq!(b.next_delay(n), Some(Duration::from_secs(60)), "n = {n}");
    }
}

#[test]
fn base_delay_is_monotonic_for_twisted() {
    let b = no_jitter_twisted();
    let mut last = Duration::ZERO;
    for n in 0..200 {
        let d = b.base_delay(n);
        assert!(d >= last, "n = {n}");
        last = d;
    }
}

#[test]
fn factor_one_is_constant_and_zero_initial_is_zero() {
    let mut constant = Backoff::new(Duration::from_millis(250), 1.0, SEC).unwrap();
    for n in [0, 1, 2, 10, 1000, u32::MAX] {
        assert_eq!(constant.next_delay(n), Some(Duration::from_millis(250)));
    }
    let mut zero = Backoff::new(Duration::ZERO, 2.0, SEC).unwrap();
    for n in [0, 1, 2, 10, 1000, u32::MAX] {
        assert_eq!(zero.next_delay(n), Some(Duration::ZERO));
    }
    let mut all_zero = Backoff::from_secs_f64(0.0, 1.0, 0.0).unwrap();
    assert_eq!(all_zero.next_delay(u32::MAX), Some(Duration::ZERO));
}

#[test]
fn the_first_delay_is_the_initial_delay() {
    // What a user who passes 50 ms expects: 50 ms, then 100 ms, 200 ms, …
    let mut b = Backoff::new(Duration::from_millis(50), 2.0, Duration::from_secs(5)).unwrap();
    let delays: Vec<_> = (1..=9)
        .map(|n| b.next_delay(n).unwrap().as_millis())
        .collect();
    assert_eq!(delays, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    assert_eq!(b.initial(), Duration::from_millis(50));
    assert_eq!(b.base_delay(1), b.initial());
    // Whatever the factor and the cap (at least `initial`), and with any jitter
    // that stays within `base`, the first retry waits at most `initial`.
    for factor in [1.0, 1.5, 2.0, 1e300] {
        for max in [Duration::from_millis(50), SEC, Duration::MAX] {
            let b = Backoff::new(Duration::from_millis(50), factor, max).unwrap();
            assert_eq!(
                b.base_delay(1),
                Duration::from_millis(50),
                "{factor} {max:?}"
            );
            assert_eq!(
                b.base_delay(0),
                Duration::from_millis(50),
                "{factor} {max:?}"
            );
        }
    }
}

#[test]
fn sub_second_parameters_round_to_the_nanosecond() {
    let b = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(30)).unwrap();
    assert_eq!(b.base_delay(1), Duration::from_millis(100));
    assert_eq!(b.base_delay(2), Duration::from_millis(200));
    assert_eq!(b.base_delay(4), Duration::from_millis(800));
    assert_eq!(b.base_delay(9), Duration::from_millis(25_600));
    assert_eq!(b.base_delay(10), Duration::from_secs(30));
    let f = Backoff::from_secs_f64(0.1, 2.0, 30.0).unwrap();
    assert_eq!(f.initial(), Duration::from_millis(100));
    assert_eq!(f.base_delay(4), Duration::from_millis(800));
    // 0.1 s · 1.1 is not exact in binary: rounded to the nearest nanosecond.
    let g = Backoff::from_secs_f64(0.1, 1.1, 30.0).unwrap();
    assert_eq!(g.base_delay(2), Duration::from_millis(110));
}

// ---------------------------------------------------------------- jitter

#[test]
fn twisted_additive_jitter_stays_in_base_plus_one_second() {
    for (seed, n) in [
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 10),
        (5, 11),
        (6, 1_000_000),
        (7, u32::MAX),
    ] {
        let mut b = Backoff::twisted(seed);
        let base = b.base_delay(n);
        let mut seen = HashSet::new();
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for _ in 0..10_000 {
            let d = b.next_delay(n).unwrap();
            assert!(
                d >= base && d < base + SEC,
                "n = {n}: {d:?} not in [{base:?}, +1s)"
            );
            lo = lo.min(d);
            hi = hi.max(d);
            seen.insert(d);
        }
        assert!(
            seen.len() > 9_000,
            "n = {n}: only {} distinct delays",
            seen.len()
        );
        // Spread over the whole second.
        assert!(
            lo < base + Duration::from_millis(10),
            "n = {n}: lowest {lo:?}"
        );
        assert!(
            hi > base + Duration::from_millis(990),
            "n = {n}: highest {hi:?}"
        );
    }
}

#[test]
fn default_delays_stay_below_sixty_one_seconds() {
    let mut b = Backoff::default();
    for n in 1..100 {
        let d = b.next_delay(n).unwrap();
        assert!(d >= b.base_delay(n) && d < Duration::from_secs(61));
    }
}

#[test]
fn every_jitter_mode_stays_within_bounds() {
    let params = [
        (SEC, 1.5, Duration::from_secs(60)),
        (Duration::from_millis(10), 2.0, Duration::from_secs(5)),
        (Duration::from_nanos(1), 3.0, Duration::from_nanos(100)),
        (Duration::from_secs(3), 1.0, Duration::from_secs(3)),
    ];
    let ns = [1, 2, 3, 4, 7, 11, 20, 50, 1000, u32::MAX, 1, 2, 3];
    for (initial, factor, max) in params {
        for jitter in ALL_JITTERS {
            for seed in 0..200 {
                let mut b = Backoff::new(initial, factor, max)
                    .unwrap()
                    .with_jitter(jitter)
                    .with_seed(seed);
                let mut prev = initial;
                for &n in &ns {
                    let d = b.next_delay(n).unwrap();
                    assert_within_bounds(&b, n, d, &mut prev);
                }
            }
        }
    }
}

#[test]
fn full_jitter_covers_the_closed_interval() {
    // base(3) = 1 ns · 2² = 4 ns: Full draws from {0, 1, 2, 3, 4}.
    let mut b = Backoff::new(Duration::from_nanos(1), 2.0, SEC)
        .unwrap()
        .with_jitter(Jitter::Full)
        .with_seed(3);
    let seen: HashSet<_> = (0..1000).map(|_| b.next_delay(3).unwrap()).collect();
    let expected: HashSet<_> = (0..=4).map(Duration::from_nanos).collect();
    assert_eq!(seen, expected);
}

#[test]
fn equal_jitter_covers_half_open_interval() {
    // base(3) = 4 ns: Equal draws from {2, 3}; base(1) = 1 ns: from {0}.
    let mut b = Backoff::new(Duration::from_nanos(1), 2.0, SEC)
        .unwrap()
        .with_jitter(Jitter::Equal)
        .with_seed(3);
    let seen: HashSet<_> = (0..1000).map(|_| b.next_delay(3).unwrap()).collect();
    let expected: HashSet<_> = (2..4).map(Duration::from_nanos).collect();
    assert_eq!(seen, expected);
    assert_eq!(b.next_delay(1), Some(Duration::ZERO));
    // A zero base gives zero, not a panic.
    let mut z = Backoff::new(Duration::ZERO, 2.0, SEC)
        .unwrap()
        .with_jitter(Jitter::Equal);
    assert_eq!(z.next_delay(5), Some(Duration::ZERO));
}

#[test]
fn full_and_equal_jitter_spread_out() {
    for jitter in [Jitter::Full, Jitter::Equal] {
        let mut b = Backoff::twisted(11).with_jitter(jitter);
        let samples: Vec<_> = (0..10_000).map(|_| b.next_delay(20).unwrap()).collect();
        let lo = *samples.iter().min().unwrap();
        let hi = *samples.iter().max().unwrap();
        let floor = if jitter == Jitter::Full { 0 } else { 30 };
        assert!(
            lo < Duration::from_millis(floor * 1000 + 100),
            "{jitter:?}: {lo:?}"
        );
        assert!(hi > Duration::from_millis(59_900), "{jitter:?}: {hi:?}");
        assert!(hi <= Duration::from_secs(60));
    }
}

#[test]
fn additive_jitter_of_zero_adds_nothing() {
    let mut b = Backoff::twisted(1).with_jitter(Jitter::Additive {
        max: Duration::ZERO,
    });
    for n in 1..30 {
        assert_eq!(b.next_delay(n), Some(b.base_delay(n)));
    }
}

#[test]
fn additive_jitter_saturates_at_duration_max() {
    let mut b = Backoff::new(Duration::MAX, 2.0, Duration::MAX)
        .unwrap()
        .with_jitter(Jitter::Additive { max: Duration::MAX });
    for n in [1, 2, u32::MAX] {
        assert_eq!(b.next_delay(n), Some(Duration::MAX));
    }
}

#[test]
fn decorrelated_grows_is_capped_and_resets_at_one() {
    let initial = Duration::from_millis(100);
    let max = Duration::from_secs(100);
    let mut b = Backoff::new(initial, 2.0, max)
        .unwrap()
        .with_jitter(Jitter::Decorrelated)
        .with_seed(5);
    let mut prev = initial;
    let mut grown = Duration::ZERO;
    for n in 1..=60 {
        let d = b.next_delay(n).unwrap();
        assert!(d >= initial && d <= max);
        assert!(nanos(d) < nanos(prev) * 3);
        prev = d;
        grown = grown.max(d);
    }
    assert!(grown > Duration::from_secs(10), "never grew: {grown:?}");
    // consecutive_failures == 1 forgets the history: back to [initial, 3 * initial).
    for _ in 0..1000 {
        for n in 1..=30 {
            b.next_delay(n);
        }
        let d = b.next_delay(1).unwrap();
        assert!(d >= initial && d < initial * 3, "{d:?} after reset");
    }
}

#[test]
fn decorrelated_after_reset_does_not_depend_on_history() {
    let mk = || Backoff::twisted(77).with_jitter(Jitter::Decorrelated);
    let (mut a, mut b) = (mk(), mk());
    // Same number of draws, different histories.
    for n in 1..=20 {
        a.next_delay(n);
        b.next_delay(1);
    }
    for n in 1..=20 {
        assert_eq!(a.next_delay(n), b.next_delay(n), "n = {n}");
    }
}

#[test]
fn decorrelated_with_zero_initial_is_always_zero() {
    let mut b = Backoff::new(Duration::ZERO, 2.0, SEC)
        .unwrap()
        .with_jitter(Jitter::Decorrelated);
    for n in [1, 2, 3, 100, u32::MAX] {
        assert_eq!(b.next_delay(n), Some(Duration::ZERO));
    }
}

#[test]
fn decorrelated_ignores_factor() {
    let mk = |factor| {
        Backoff::new(SEC, factor, Duration::from_secs(60))
            .unwrap()
            .with_jitter(Jitter::Decorrelated)
            .with_seed(4)
    };
    let (mut a, mut b) = (mk(1.0), mk(10.0));
    for n in 1..50 {
        assert_eq!(a.next_delay(n), b.next_delay(n));
    }
}

// ---------------------------------------------------------------- determinism

fn sequence(b: &mut Backoff) -> Vec<Duration> {
    (1..=40).map(|n| b.next_delay(n).unwrap()).collect()
}

#[test]
fn same_seed_same_sequence_different_seed_different() {
    for jitter in [
        Jitter::Additive { max: SEC },
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let mk = |seed| Backoff::twisted(0).with_jitter(jitter).with_seed(seed);
        assert_eq!(sequence(&mut mk(42)), sequence(&mut mk(42)), "{jitter:?}");
        assert_ne!(sequence(&mut mk(42)), sequence(&mut mk(43)), "{jitter:?}");
        let mut all = HashSet::new();
        for seed in 0..100 {
            all.insert(sequence(&mut mk(seed)));
        }
        assert_eq!(all.len(), 100, "{jitter:?}");
    }
    assert_eq!(
        sequence(&mut Backoff::twisted(5)),
        sequence(&mut Backoff::twisted(5))
    );
    assert_ne!(
        sequence(&mut Backoff::twisted(5)),
        sequence(&mut Backoff::twisted(6))
    );
}

#[test]
fn with_seed_restarts_the_sequence() {
    let mut b = Backoff::twisted(8).with_jitter(Jitter::Decorrelated);
    let first = sequence(&mut b);
    let mut b = b.with_seed(8);
    assert_eq!(sequence(&mut b), first);
    let c = b.clone();
    assert_eq!(c, b);
}

#[test]
fn default_seeds_differ_between_instances() {
    // With `std`, each default is seeded from a fresh RandomState.
    let a = sequence(&mut Backoff::default());
    let b = sequence(&mut Backoff::default());
    assert_ne!(a, b);
}

#[test]
fn splitmix64_matches_the_reference_and_is_deterministic() {
    // Reference outputs of SplitMix64 seeded with 0.
    let mut r = SplitMix64::new(0);
    assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    const R: SplitMix64 = SplitMix64::new(123);
    let (mut a, mut b) = (R, R.clone());
    assert_eq!(a, b);
    for _ in 0..100 {
        assert_eq!(a.next_u64(), b.next_u64());
    }
    let mut c = SplitMix64::new(124);
    assert_ne!(SplitMix64::new(123).next_u64(), c.next_u64());
}

#[test]
fn splitmix64_next_f64_is_in_unit_interval() {
    let mut r = SplitMix64::new(99);
    let mut sum = 0.0;
    for _ in 0..100_000 {
        let x = r.next_f64();
        assert!((0.0..1.0).contains(&x), "{x}");
        sum += x;
    }
    let mean = sum / 100_000.0;
    assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
}

// ---------------------------------------------------------------- errors

#[test]
fn factor_not_finite() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let e = Backoff::new(SEC, bad, Duration::from_secs(60)).unwrap_err();
        match e {
            PolicyError::FactorNotFinite(f) => assert!(f.is_nan() || f == bad),
            other => panic!("{other:?}"),
        }
        let e2 = Backoff::from_secs_f64(1.0, bad, 60.0).unwrap_err();
        assert!(matches!(e2, PolicyError::FactorNotFinite(_)));
    }
    let e = Backoff::new(SEC, f64::INFINITY, SEC).unwrap_err();
    assert_eq!(
        e.to_string(),
        "backoff factor must be a finite number, got inf"
    );
    let e = Backoff::new(SEC, f64::NAN, SEC).unwrap_err();
    assert_eq!(
        e.to_string(),
        "backoff factor must be a finite number, got NaN"
    );
}

#[test]
fn factor_below_one() {
    for bad in [0.999_999, 0.5, 0.0, -0.0, -1.5, f64::MIN] {
        let e = Backoff::new(SEC, bad, Duration::from_secs(60)).unwrap_err();
        assert_eq!(e, PolicyError::FactorBelowOne(bad));
    }
    let e = Backoff::from_secs_f64(1.0, 0.5, 60.0).unwrap_err();
    assert_eq!(e, PolicyError::FactorBelowOne(0.5));
    assert_eq!(e.to_string(), "backoff factor must be at least 1, got 0.5");
}

#[test]
fn max_below_initial() {
    let e = Backoff::new(Duration::from_secs(2), 1.5, SEC).unwrap_err();
    assert_eq!(
        e,
        PolicyError::MaxBelowInitial {
            initial: Duration::from_secs(2),
            max: SEC
        }
    );
    assert_eq!(
        e.to_string(),
        "maximum delay 1s is below the initial delay 2s"
    );
    let e = Backoff::from_secs_f64(1.5, 2.0, 0.5).unwrap_err();
    assert_eq!(
        e,
        PolicyError::MaxBelowInitial {
            initial: Duration::from_millis(1500),
            max: Duration::from_millis(500)
        }
    );
    // Equal is fine.
    assert!(Backoff::new(SEC, 1.5, SEC).is_ok());
}

#[test]
fn invalid_seconds() {
    let e = Backoff::from_secs_f64(-1.0, 1.5, 60.0).unwrap_err();
    assert_eq!(
        e,
        PolicyError::InvalidSeconds {
            which: "initial delay",
            value: -1.0
        }
    );
    assert_eq!(
        e.to_string(),
        "initial delay must be a finite, non-negative number of seconds, got -1"
    );
    let e = Backoff::from_secs_f64(1.0, 1.5, f64::INFINITY).unwrap_err();
    assert_eq!(
        e,
        PolicyError::InvalidSeconds {
            which: "maximum delay",
            value: f64::INFINITY
        }
    );
    assert_eq!(
        e.to_string(),
        "maximum delay must be a finite, non-negative number of seconds, got inf"
    );
    match Backoff::from_secs_f64(f64::NAN, 1.5, 60.0).unwrap_err() {
        PolicyError::InvalidSeconds { which, value } => {
            assert_eq!(which, "initial delay");
            assert!(value.is_nan());
        }
        other => panic!("{other:?}"),
    }
    // Too large for a Duration.
    let e = Backoff::from_secs_f64(1.0, 1.5, 1e30).unwrap_err();
    assert_eq!(
        e,
        PolicyError::InvalidSeconds {
            which: "maximum delay",
            value: 1e30
        }
    );
    assert!(matches!(
        Backoff::from_secs_f64(1.0, 1.5, -0.001),
        Err(PolicyError::InvalidSeconds {
            which: "maximum delay",
            ..
        })
    ));
    // Seconds are checked before the factor.
    assert!(matches!(
        Backoff::from_secs_f64(-1.0, f64::NAN, 60.0),
        Err(PolicyError::InvalidSeconds { .. })
    ));
}

#[test]
fn edge_parameters_are_accepted() {
    assert!(Backoff::new(Duration::ZERO, 1.0, Duration::ZERO).is_ok());
    assert!(Backoff::new(Duration::MAX, 1e300, Duration::MAX).is_ok());
    assert!(Backoff::from_secs_f64(0.0, 1.0, 0.0).is_ok());
    assert!(Backoff::from_secs_f64(-0.0, 1.0, 0.0).is_ok());
    let b = Backoff::from_secs_f64(1e-12, 1.0, 1.0).unwrap();
    assert_eq!(b.initial(), Duration::ZERO);
}

// ---------------------------------------------------------------- give up, closures

#[test]
fn give_up_after_three() {
    let mut p = Backoff::twisted(1).give_up_after(3);
    assert_eq!(p.max_failures(), 3);
    assert_eq!(p.inner().max(), Duration::from_secs(60));
    assert!(p.next_delay(1).is_some());
    assert!(p.next_delay(2).is_some());
    assert_eq!(p.next_delay(3), None);
    assert_eq!(p.next_delay(4), None);
    assert_eq!(p.next_delay(u32::MAX), None);
    // Resets with the counter.
    assert!(p.next_delay(1).is_some());
}

#[test]
fn give_up_after_zero_or_one_gives_up_at_first_failure() {
    for limit in [0, 1] {
        let mut p = no_jitter_twisted().give_up_after(limit);
        assert_eq!(p.max_failures(), limit);
        assert_eq!(p.next_delay(1), None, "limit {limit}");
        assert_eq!(p.next_delay(2), None, "limit {limit}");
    }
}

#[test]
fn give_up_after_passes_through_the_inner_answer() {
    let mut p = no_jitter_twisted().give_up_after(u32::MAX);
    assert_eq!(p.next_delay(1), Some(Duration::from_millis(1500)));
    assert_eq!(p.next_delay(u32::MAX - 1), Some(Duration::from_secs(60)));
    assert_eq!(p.next_delay(u32::MAX), None);
    // An inner policy that gives up earlier wins.
    let mut q = from_fn(|n| (n < 2).then_some(SEC)).give_up_after(10);
    assert_eq!(q.next_delay(1), Some(SEC));
    assert_eq!(q.next_delay(2), None);
    // Nesting: the smaller limit wins.
    let mut r = no_jitter_twisted().give_up_after(5).give_up_after(8);
    assert!(r.next_delay(4).is_some());
    assert_eq!(r.next_delay(5), None);
    assert_eq!(r.inner().max_failures(), 5);
}

#[test]
fn give_up_after_does_not_consume_randomness_when_giving_up() {
    let mut p = Backoff::twisted(3).give_up_after(2);
    let mut q = Backoff::twisted(3);
    assert_eq!(p.next_delay(2), None);
    assert_eq!(p.next_delay(1), q.next_delay(1));
    let c = p.clone();
    assert_eq!(c, p);
}

fn drive<P: RetryPolicy>(p: &mut P, n: u32) -> Vec<Option<Duration>> {
    (1..=n).map(|i| p.next_delay(i)).collect()
}

#[test]
fn closures_are_policies_that_never_give_up() {
    let mut constant = |_| Duration::from_millis(500);
    assert_eq!(
        drive(&mut constant, 3),
        vec![Some(Duration::from_millis(500)); 3]
    );
    assert_eq!(
        constant.next_delay(u32::MAX),
        Some(Duration::from_millis(500))
    );

    let mut calls = Vec::new();
    let mut linear = |n: u32| {
        calls.push(n);
        Duration::from_secs(u64::from(n))
    };
    assert_eq!(linear.next_delay(7), Some(Duration::from_secs(7)));
    assert_eq!(linear.next_delay(1), Some(SEC));
    assert_eq!(calls, [7, 1]);

    fn plain(n: u32) -> Duration {
        Duration::from_millis(u64::from(n) * 10)
    }
    let mut f = plain;
    assert_eq!(f.next_delay(3), Some(Duration::from_millis(30)));

    let mut limited = (|_| SEC).give_up_after(2);
    assert_eq!(drive(&mut limited, 3), vec![Some(SEC), None, None]);
}

#[test]
fn from_fn_can_give_up() {
    let mut p = from_fn(|n| if n <= 2 { Some(Duration::ZERO) } else { None });
    assert_eq!(
        drive(&mut p, 4),
        vec![Some(Duration::ZERO), Some(Duration::ZERO), None, None]
    );
    assert!(format!("{p:?}").contains("FromFn"));
    let mut stateful = {
        let mut budget = 2;
        from_fn(move |_| {
            if budget == 0 {
                return None;
            }
            budget -= 1;
            Some(SEC)
        })
    };
    assert_eq!(stateful.next_delay(1), Some(SEC));
    assert_eq!(stateful.next_delay(1), Some(SEC));
    assert_eq!(stateful.next_delay(1), None);
}

#[test]
fn policies_work_as_trait_objects() {
    let mut policies: Vec<Box<dyn RetryPolicy>> = vec![
        Box::new(Backoff::twisted(1)),
        Box::new(|_| SEC),
        Box::new(from_fn(|_| None)),
        Box::new(no_jitter_twisted().give_up_after(2)),
    ];
    let answers: Vec<_> = policies
        .iter_mut()
        .map(|p| p.next_delay(1).is_some())
        .collect();
    assert_eq!(answers, [true, true, false, true]);
}

// ---------------------------------------------------------------- no-panic sweep

#[test]
fn no_panic_sweep() {
    let factors = [1.0, 1.000_000_1, 1.5, 2.0, 10.0, 1e300];
    let huge = Duration::from_secs(u64::MAX);
    let limits = [
        (Duration::ZERO, Duration::ZERO),
        (Duration::ZERO, SEC),
        (Duration::ZERO, huge),
        (Duration::ZERO, Duration::MAX),
        (Duration::from_nanos(1), Duration::from_nanos(1)),
        (Duration::from_nanos(1), Duration::from_nanos(7)),
        (SEC, Duration::from_secs(60)),
        (SEC, huge),
        (Duration::from_secs(1 << 40), Duration::MAX),
        (huge, huge),
        (huge, Duration::MAX),
        (Duration::MAX, Duration::MAX),
    ];
    let jitters = [
        Jitter::None,
        Jitter::Additive {
            max: Duration::ZERO,
        },
        Jitter::Additive {
            max: Duration::from_nanos(1),
        },
        Jitter::Additive { max: SEC },
        Jitter::Additive { max: huge },
        Jitter::Additive { max: Duration::MAX },
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ];
    let ns = [1, 2, 10, 64, 1000, u32::MAX, 1, u32::MAX, 2];
    for factor in factors {
        for (initial, max) in limits {
            for jitter in jitters {
                for seed in [0, 1, u64::MAX] {
                    let mut b = Backoff::new(initial, factor, max)
                        .unwrap()
                        .with_jitter(jitter)
                        .with_seed(seed);
                    let mut prev = initial;
                    for n in ns {
                        let base = b.base_delay(n);
                        assert!(base >= initial.min(max) || initial.is_zero());
                        assert!(base <= max);
                        let d = b.next_delay(n).expect("backoff never gives up");
                        assert_within_bounds(&b, n, d, &mut prev);
                    }
                }
            }
        }
    }
}

#[test]
fn from_secs_f64_sweep_never_panics() {
    let values = [
        0.0,
        -0.0,
        1e-300,
        1e-9,
        0.5,
        1.0,
        60.0,
        1e9,
        1.8e19,
        1.9e19,
        1e300,
        f64::MAX,
        f64::MIN_POSITIVE,
        -1e-300,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    for initial in values {
        for max in values {
            for factor in [1.0, 1.5, 0.5, f64::NAN, f64::MAX] {
                if let Ok(mut b) = Backoff::from_secs_f64(initial, factor, max) {
                    assert!(b.initial() <= b.max());
                    for n in [1, 2, 1000, u32::MAX] {
                        assert!(b.next_delay(n).unwrap() <= b.max());
                    }
                }
            }
        }
    }
}

#[test]
fn base_delay_is_exact_when_the_cap_is_not_an_exact_f64() {
    // 2^60 + 1 ns is not representable in f64 (it rounds to 2^60): the product
    // 2^59 · 2 = 2^60 must not be mistaken for the cap.
    let initial = Duration::from_nanos(1 << 59);
    let max = Duration::from_nanos((1 << 60) + 1);
    let backoff = Backoff::new(initial, 2.0, max).unwrap();
    assert_eq!(backoff.base_delay(1), initial);
    assert_eq!(backoff.base_delay(2), Duration::from_nanos(1 << 60));
    assert_eq!(backoff.base_delay(3), max);
}

/// `Debug` shows the parameters, the generator and, under `Decorrelated`, the
/// previous delay (else `initial`), as fields.
#[test]
fn backoff_debug_shows_its_parameters_and_the_previous_delay() {
    let plain = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(10))
        .unwrap()
        .with_jitter(Jitter::None);
    let shown = format!("{plain:?}");
    assert!(
        shown.starts_with("Backoff { initial: 100ms, factor: 2.0, max: 10s, jitter: None, rng: ")
            && shown.ends_with("prev: 100ms }"),
        "{shown}"
    );
    let mut decorrelated = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(10))
        .unwrap()
        .with_jitter(Jitter::Decorrelated)
        .with_seed(5);
    let d1 = decorrelated.next_delay(1).unwrap();
    let d2 = decorrelated.next_delay(2).unwrap();
    assert_ne!(d2, Duration::from_millis(100));
    let shown = format!("{decorrelated:?}");
    assert!(
        shown.contains("jitter: Decorrelated") && shown.ends_with(&format!("prev: {d2:?} }}")),
        "{shown} (delays {d1:?}, {d2:?})"
    );
}
