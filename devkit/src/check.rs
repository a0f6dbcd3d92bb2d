//! What the fuzz targets check, as plain functions of the input bytes. They panic
//! on a violation (which libFuzzer reports as a crash, with the trace).
//!
//! Used by `fuzz/fuzz_targets/*.rs` and by `tests/machine/model/fuzz_corpus.rs`, which replays
//! the committed corpus under `cargo test`.

use core::num::NonZeroU32;
use core::time::Duration;

use arbitrary::{Result, Unstructured};
use redial::policy::{Backoff, Jitter, RetryPolicy};
use redial::testing::{minimize, Op, ReportKind, SimPolicy};
use redial::{Config, PolicyError, ProbeConfig};

use crate::model::run_with_model;

/// Decodes a config, a deterministic policy and up to 512 ops from `data`.
pub fn decode_machine(data: &[u8]) -> Result<(Config, SimPolicy, Vec<Op>)> {
    let mut u = Unstructured::new(data);
    let flags: u8 = u.arbitrary()?;
    let secs = |u: &mut Unstructured, on: bool| -> Result<Option<Duration>> {
        Ok(on.then_some(Duration::from_secs(u64::from(u.int_in_range(1u8..=10)?))))
    };
    let prepare = flags & 1 != 0;
    let config = Config::new()
        .with_prepare(prepare)
        .with_connect_timeout(secs(&mut u, flags & 2 != 0)?)
        .with_prepare_timeout(secs(&mut u, prepare && flags & 4 != 0)?)
        .with_reset_backoff_after(secs(&mut u, flags & 8 != 0)?);
    // Flag 32: give up after 2 or 3 fatal failures in a row (else 1, the default).
    let config = if flags & 32 != 0 {
        let n = u32::from(u.int_in_range(2u8..=3)?);
        config.with_give_up_after_fatal(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN))
    } else {
        config
    };
    // Flag 64: liveness probes, every 1 to 10 s, 1 to 5 s to answer.
    let config = if flags & 64 != 0 {
        let interval = Duration::from_secs(u64::from(u.int_in_range(1u8..=10)?));
        let timeout = Duration::from_secs(u64::from(u.int_in_range(1u8..=5)?));
        config.with_probe(Some(ProbeConfig::new(interval, timeout)))
    } else {
        config
    };
    let policy = SimPolicy {
        step: Duration::from_millis(u64::from(u.int_in_range(0u16..=1000)?)),
        give_up_after: if flags & 16 != 0 {
            Some(u32::from(u.int_in_range(0u8..=6)?))
        } else {
            None
        },
    };
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < 512 {
        ops.push(decode_op(&mut u)?);
    }
    Ok((config, policy, ops))
}

fn decode_op(u: &mut Unstructured) -> Result<Op> {
    let tag: u8 = u.arbitrary()?;
    Ok(match tag % 20 {
        0 | 1 => Op::Start,
        2 => Op::Stop,
        3 | 4 => Op::WhenConnected {
            fail_after_failures: NonZeroU32::new(u32::from(u.int_in_range(0u8..=4)?)),
        },
        5 => Op::Withdraw {
            pick: u.arbitrary()?,
        },
        6..=12 => Op::Happen {
            pick: u.arbitrary::<u8>()?.into(),
            choice: u.arbitrary()?,
        },
        13 | 14 => Op::Stale {
            kind: *u.choose(&ReportKind::ALL)?,
            pick: u.arbitrary::<u8>()?.into(),
        },
        15 => Op::Unknown {
            kind: *u.choose(&ReportKind::ALL)?,
            offset: u.int_in_range(0u16..=3)?,
        },
        16 | 17 => Op::ReconnectNow {
            reset_backoff: tag % 20 == 17,
        },
        _ => Op::Happen {
            pick: u.arbitrary::<u8>()?.into(),
            choice: u.arbitrary()?,
        },
    })
}

/// The `machine` target: the machine matches the reference model step for step
/// and keeps the invariants; on a mismatch, panics with the shortest trace.
pub fn machine(data: &[u8]) {
    let Ok((config, policy, ops)) = decode_machine(data) else {
        return;
    };
    if run_with_model(config, policy, &ops).is_err() {
        let shortest = minimize(&ops, |ops| run_with_model(config, policy, ops).is_err());
        let violation = run_with_model(config, policy, &shortest).unwrap_err();
        panic!("{violation}\n# ({} ops: {shortest:?})", shortest.len());
    }
}

/// The `policy` target: any parameters, any attempt numbers. Building either
/// fails with the right error or succeeds; asking never panics and every delay is
/// within the bounds the policy module documents.
pub fn policy(data: &[u8]) {
    let _ = check_policy(&mut Unstructured::new(data));
}

fn check_policy(u: &mut Unstructured) -> Result<()> {
    // Parameters in seconds, as Twisted takes them: any f64 at all.
    let (si, sf, sm): (f64, f64, f64) = (u.arbitrary()?, u.arbitrary()?, u.arbitrary()?);
    let from_secs = Backoff::from_secs_f64(si, sf, sm);
    // Clearly invalid: negative, NaN, infinite, or at least 2^64 s (too large for a
    // Duration). Just below 2^64, rounding decides; either answer is fine there.
    let secs_bad = |s: f64| !(0.0..18_446_744_073_709_551_616.0).contains(&s);
    if secs_bad(si) || secs_bad(sm) {
        assert!(
            matches!(from_secs, Err(PolicyError::InvalidSeconds { .. })),
            "({si}, {sf}, {sm}) gave {from_secs:?}"
        );
    }

    // Parameters as durations: mostly small, sometimes huge.
    let duration = |u: &mut Unstructured| -> Result<Duration> {
        Ok(match u.int_in_range(0u8..=3)? {
            0 => Duration::from_nanos(u.arbitrary::<u16>()?.into()),
            1 => Duration::from_millis(u.arbitrary::<u32>()?.into()),
            2 => Duration::new(u.arbitrary()?, u.int_in_range(0..=999_999_999)?),
            _ => Duration::MAX,
        })
    };
    let initial = duration(u)?;
    let max = duration(u)?;
    let factor: f64 = match u.int_in_range(0u8..=2)? {
        0 => f64::from(u.int_in_range(100u16..=400)?) / 100.0,
        1 => u.arbitrary()?,
        _ => *u.choose(&[1.0, 1.5, 2.0, f64::NAN, f64::INFINITY, 0.5, -1.0, 1e308])?,
    };
    let built = Backoff::new(initial, factor, max);
    let backoff = match built {
        Err(PolicyError::FactorNotFinite(_)) => {
            assert!(!factor.is_finite());
            return Ok(());
        }
        Err(PolicyError::FactorBelowOne(_)) => {
            assert!(factor.is_finite() && factor < 1.0);
            return Ok(());
        }
        Err(PolicyError::MaxBelowInitial { .. }) => {
            assert!(factor.is_finite() && factor >= 1.0 && max < initial);
            return Ok(());
        }
        Err(e) => panic!("unexpected {e:?}"),
        Ok(b) => {
            assert!(factor.is_finite() && factor >= 1.0 && max >= initial);
            b
        }
    };
    let jitter = match u.int_in_range(0u8..=4)? {
        0 => Jitter::None,
        1 => Jitter::Additive { max: duration(u)? },
        2 => Jitter::Full,
        3 => Jitter::Equal,
        _ => Jitter::Decorrelated,
    };
    let mut backoff = backoff.with_jitter(jitter).with_seed(u.arbitrary()?);
    let give_up: Option<u32> = u.arbitrary()?;
    let mut prev: Option<Duration> = None;
    for _ in 0..u.int_in_range(1u8..=32)? {
        let n: u32 = match u.int_in_range(0u8..=2)? {
            0 => u.int_in_range(0..=40)?,
            1 => u.arbitrary()?,
            _ => *u.choose(&[1_000_000, 1751, u32::MAX, u32::MAX - 1])?,
        };
        let base = backoff.base_delay(n);
        // The first delay is the initial delay, whatever the factor and the cap.
        if n <= 1 || factor == 1.0 {
            assert_eq!(base, initial, "base({n}) with factor {factor}");
        }
        if initial.is_zero() {
            assert_eq!(base, Duration::ZERO);
        } else {
            assert!(initial <= base && base <= max, "base({n}) = {base:?}");
        }
        let delay = backoff.next_delay(n).expect("Backoff never gives up");
        match jitter {
            Jitter::None => assert_eq!(delay, base),
            Jitter::Additive { max: j } => {
                assert!(delay >= base, "additive below base");
                if j.is_zero() {
                    assert_eq!(delay, base);
                } else {
                    assert!(
                        delay.as_nanos() < base.as_nanos() + j.as_nanos() || delay == Duration::MAX,
                        "additive {delay:?} not below {base:?} + {j:?}"
                    );
                }
            }
            Jitter::Full => assert!(delay <= base, "full {delay:?} above {base:?}"),
            Jitter::Equal => {
                if base.is_zero() {
                    assert_eq!(delay, Duration::ZERO);
                } else {
                    assert!(delay.as_nanos() >= base.as_nanos() / 2 && delay < base);
                }
            }
            Jitter::Decorrelated => {
                assert!(delay <= max, "decorrelated {delay:?} above max");
                assert!(
                    delay >= initial.min(max),
                    "decorrelated {delay:?} below initial"
                );
                if n > 1 {
                    if let Some(p) = prev {
                        // U[initial, 3·prev) capped: never more than 3·prev (or initial).
                        let bound = p.as_nanos().saturating_mul(3).max(initial.as_nanos());
                        assert!(delay.as_nanos() <= bound.max(initial.as_nanos()));
                    }
                }
                prev = Some(delay);
            }
        }
        // The same policy behind give_up_after.
        if let Some(k) = give_up {
            let mut wrapped = backoff.clone().give_up_after(k);
            let answer = wrapped.next_delay(n);
            assert_eq!(answer.is_none(), n >= k.max(1), "give_up_after({k}) at {n}");
        }
    }
    // Twisted's default never overflows (docs/contract.md, Backoff), whatever the seed, and keeps
    // Twisted's numbers: 1 s · 1.5ⁿ, from 1.5 s.
    let mut twisted = Backoff::twisted(u.arbitrary()?);
    let d = twisted.next_delay(1_000_000).expect("never gives up");
    assert!(Duration::from_secs(60) <= d && d < Duration::from_secs(61));
    for (n, ms) in [(1, 1500), (2, 2250), (3, 3375)] {
        assert_eq!(twisted.base_delay(n), Duration::from_millis(ms));
    }
    Ok(())
}
