//! Retry policies: how long to wait before the next attempt, or whether to give up.
//!
//! The machine keeps a counter of consecutive failures (`consecutive_failures`, see the
//! [behaviour contract](crate::contract#failed-attempts)). Every time it enters Waiting it asks its
//! [`RetryPolicy`] for the delay before the next attempt, passing that counter
//! (so the first retry asks for `1`, never `0`). The policy answers with
//! `Some(delay)`, or with `None` to give up.
//!
//! Three kinds of policy are provided:
//!
//! * any closure `FnMut(u32) -> Duration` is a policy that never gives up;
//! * [`from_fn`] wraps a closure `FnMut(u32) -> Option<Duration>` that may give up;
//! * [`Backoff`] is exponential backoff with a cap and a choice of [`Jitter`]:
//!   the first delay is the `initial` delay you give it, and each failure after
//!   that multiplies it by `factor`, up to `max`. Its default
//!   ([`Backoff::twisted`], and `Backoff::default` with `std`) is Twisted's `backoffPolicy`:
//!   `min(1 s · 1.5ⁿ, 60 s) + U[0 s, 1 s)`, i.e. `initial` 1.5 s.
//!
//! Any policy can be told to give up after a number of failures with
//! [`RetryPolicy::give_up_after`].
//!
//! # Jitter modes
//!
//! For [`Backoff`], `base(n) = min(initial · factorⁿ⁻¹, max)` is the delay without
//! jitter ([`Backoff::base_delay`]); `n` is `consecutive_failures` (at least 1, so
//! `base(1) = initial`: the first retry waits `initial`). `U[a, b)` is a
//! uniformly random whole number of nanoseconds `x` with `a ≤ x < b`, and `U[a, b]`
//! one with `a ≤ x ≤ b`.
//!
//! | mode | delay | where the cap (`max`) applies | bounds |
//! |---|---|---|---|
//! | [`Jitter::None`] | `base(n)` | inside `base` | `= base(n) ≤ max` |
//! | [`Jitter::Additive`] `{ max: j }` (Twisted) | `base(n) + U[0, j)` | before the jitter is added | `base(n) ≤ d < base(n) + j`, so up to `j` above `max` |
//! | [`Jitter::Full`] | `U[0, base(n)]` | before the jitter | `0 ≤ d ≤ base(n) ≤ max` |
//! | [`Jitter::Equal`] | `⌊base(n)/2⌋ + U[0, base(n) − ⌊base(n)/2⌋)` | before the jitter | `⌊base(n)/2⌋ ≤ d < base(n) ≤ max` |
//! | [`Jitter::Decorrelated`] | `min(max, U[initial, 3 · prev))`, then `prev = d` | after the jitter | `initial ≤ d ≤ max` |
//!
//! Degenerate intervals never panic: an empty interval `U[a, a)` yields `a`
//! (so `Additive { max: 0 }` is `None`, `Equal` with `base(n) = 0` gives 0, and
//! `Decorrelated` with `initial = 0` gives 0 every time). A sum that would exceed
//! [`Duration::MAX`] saturates at [`Duration::MAX`].
//!
//! # Examples
//!
//! A closure is a policy (this one never gives up):
//!
//! ```
//! use core::time::Duration;
//! use redial::policy::RetryPolicy;
//!
//! let mut policy = |consecutive_failures: u32| Duration::from_millis(100) * consecutive_failures.min(10);
//! assert_eq!(policy.next_delay(1), Some(Duration::from_millis(100)));
//! assert_eq!(policy.next_delay(50), Some(Duration::from_secs(1)));
//! ```
//!
//! A closure that may give up, through [`from_fn`]:
//!
//! ```
//! use core::time::Duration;
//! use redial::policy::{from_fn, RetryPolicy};
//!
//! let mut policy = from_fn(|n| (n < 4).then(|| Duration::from_secs(2)));
//! assert_eq!(policy.next_delay(3), Some(Duration::from_secs(2)));
//! assert_eq!(policy.next_delay(4), None);
//! ```
//!
//! Twisted's policy with a fixed seed, giving up at the fifth consecutive failure:
//!
//! ```
//! use core::time::Duration;
//! use redial::policy::{Backoff, RetryPolicy};
//!
//! let mut policy = Backoff::twisted(42).give_up_after(5);
//! for n in 1..5 {
//!     let delay = policy.next_delay(n).unwrap();
//!     let base = policy.inner().base_delay(n);
//!     assert!(base <= delay && delay < base + Duration::from_secs(1));
//! }
//! assert_eq!(policy.next_delay(5), None);
//! ```
//!
//! Building a policy of your own:
//!
//! ```
//! use core::time::Duration;
//! use redial::policy::{Backoff, Jitter, RetryPolicy};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // From 100 ms, doubling: 100 ms, 200 ms, 400 ms, … up to 30 s.
//! let mut policy = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(30))?
//!     .with_jitter(Jitter::Full)
//!     .with_seed(7);
//! assert_eq!(policy.base_delay(1), Duration::from_millis(100));
//! assert_eq!(policy.base_delay(3), Duration::from_millis(400));
//! let delay = policy.next_delay(3).unwrap();
//! assert!(delay <= Duration::from_millis(400));
//! assert!(policy.next_delay(u32::MAX).unwrap() <= Duration::from_secs(30));
//! # Ok(())
//! # }
//! ```

use core::fmt;
use core::time::Duration;

use crate::error::PolicyError;

/// Decides, after a failure, how long to wait before the next attempt — or to give up.
///
/// `consecutive_failures` is the number of consecutive failures so far, including the one
/// that just happened, so the machine always passes a value of at least 1 (it is
/// reset to 0 only when a connection is established). `Some(delay)` means "try again
/// after `delay`"; `None` means "give up".
///
/// Every closure `FnMut(u32) -> Duration` is a policy that never gives up; use
/// [`from_fn`] for a closure that may give up, and [`Backoff`] for exponential
/// backoff with jitter.
///
/// # Panics
///
/// A policy should not panic (the provided ones never do). If one does, it is all
/// or nothing: a policy that panics leaves the machine as it was before the input
/// (the machine asks it before a transition changes anything, and appends no
/// action; only what the policy itself changed before panicking stays changed),
/// and the panic propagates to the caller of [`Machine::handle`](crate::Machine::handle)
/// or of the input method that asked.
pub trait RetryPolicy {
    /// The delay before the next attempt after `consecutive_failures` consecutive
    /// failures (at least 1), or `None` to stop retrying.
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration>;

    /// Wraps `self` so that it gives up (returns `None`) once `consecutive_failures`
    /// reaches `max_failures`, and asks `self` otherwise.
    ///
    /// With `give_up_after(3)` the first and second failures are retried and the
    /// third gives up. `0` and `1` both mean: give up at the first failure.
    ///
    /// ```
    /// use core::time::Duration;
    /// use redial::policy::RetryPolicy;
    ///
    /// let mut policy = (|_| Duration::from_secs(1)).give_up_after(3);
    /// assert_eq!(policy.next_delay(2), Some(Duration::from_secs(1)));
    /// assert_eq!(policy.next_delay(3), None);
    /// ```
    #[must_use]
    fn give_up_after(self, max_failures: u32) -> GiveUpAfter<Self>
    where
        Self: Sized,
    {
        GiveUpAfter {
            inner: self,
            max_failures,
        }
    }
}

/// Any closure from `consecutive_failures` to a delay is a policy that never gives up.
impl<F: FnMut(u32) -> Duration> RetryPolicy for F {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        Some(self(consecutive_failures))
    }
}

/// A policy made from a closure that may give up; built by [`from_fn`].
#[derive(Clone)]
pub struct FromFn<F>(F);

/// Makes a policy from a closure `consecutive_failures -> Option<delay>`, where `None`
/// means give up.
///
/// ```
/// use core::time::Duration;
/// use redial::policy::{from_fn, RetryPolicy};
///
/// // Retry at once twice, then every 5 s, and give up at the tenth failure.
/// let mut policy = from_fn(|n| match n {
///     1..=2 => Some(Duration::ZERO),
///     3..=9 => Some(Duration::from_secs(5)),
///     _ => None,
/// });
/// assert_eq!(policy.next_delay(1), Some(Duration::ZERO));
/// assert_eq!(policy.next_delay(10), None);
/// ```
#[must_use]
pub fn from_fn<F: FnMut(u32) -> Option<Duration>>(f: F) -> FromFn<F> {
    FromFn(f)
}

impl<F: FnMut(u32) -> Option<Duration>> RetryPolicy for FromFn<F> {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        (self.0)(consecutive_failures)
    }
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

/// A policy that gives up once `consecutive_failures` reaches a limit; built by
/// [`RetryPolicy::give_up_after`].
///
/// Below the limit it returns whatever the inner policy returns (which may itself
/// be `None`). At or above the limit it returns `None` without asking the inner
/// policy.
#[derive(Debug, Clone, PartialEq)]
pub struct GiveUpAfter<P> {
    inner: P,
    max_failures: u32,
}

impl<P> GiveUpAfter<P> {
    /// The number of consecutive failures at which this policy gives up (`0` acts
    /// as `1`: give up at the first failure).
    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// The wrapped policy.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: RetryPolicy> RetryPolicy for GiveUpAfter<P> {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        if consecutive_failures >= self.max_failures.max(1) {
            None
        } else {
            self.inner.next_delay(consecutive_failures)
        }
    }
}

/// How [`Backoff`] randomizes its delays, so that many clients that lost the same
/// server do not all come back at the same instant.
///
/// Below, `base(n) = min(initial · factorⁿ⁻¹, max)` ([`Backoff::base_delay`]), and the
/// random parts are whole numbers of nanoseconds. See the [module docs](self) for a
/// table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// No randomness: the delay is `base(n)`, so never more than `max`.
    None,
    /// Twisted's jitter: `base(n) + U[0, max)` — at least `base(n)` and strictly
    /// less than `base(n) + max`.
    ///
    /// The jitter is added **after** the cap, so the delay can exceed the backoff's
    /// `max` by up to (but not including) this jitter `max`. A jitter `max` of zero
    /// adds nothing. The sum saturates at [`Duration::MAX`].
    Additive {
        /// Upper bound (exclusive) of the random amount added to the delay.
        max: Duration,
    },
    /// "Full jitter": uniform in the **closed** interval `[0, base(n)]`.
    ///
    /// The cap applies before the jitter, so the delay never exceeds `max`. Can be
    /// zero (an immediate retry).
    Full,
    /// "Equal jitter": half of `base(n)` plus a random amount up to the other half:
    /// `⌊base(n)/2⌋ + U[0, base(n) − ⌊base(n)/2⌋)`, i.e. at least `⌊base(n)/2⌋` and
    /// strictly less than `base(n)` (exactly 0 when `base(n)` is 0).
    ///
    /// The cap applies before the jitter, so the delay is always below
    /// `base(n) ≤ max` (or exactly 0 when `base(n)` is 0).
    Equal,
    /// AWS "decorrelated jitter": `d = min(max, U[initial, 3 · prev))`, then
    /// `prev = d`; `prev` starts at, and is reset to, `initial` whenever
    /// `consecutive_failures` is 1 (or 0).
    ///
    /// The growth comes from the previous delay, not from `factor`, which this mode
    /// ignores. The cap applies after the jitter: `initial ≤ d ≤ max`. If `initial`
    /// is zero the interval `[0, 0)` is empty and every delay is zero; use a
    /// non-zero `initial` with this mode.
    Decorrelated,
}

/// Exponential backoff with a cap and optional [`Jitter`]: a [`RetryPolicy`] that
/// never gives up (wrap it with [`RetryPolicy::give_up_after`] for that).
///
/// The delay without jitter after `n` consecutive failures is
/// `base(n) = min(initial · factorⁿ⁻¹, max)` ([`Backoff::base_delay`]): the first
/// retry waits `initial`, the second `initial · factor`, and so on up to `max`,
/// computed without overflow for every `n` up to [`u32::MAX`]. [`Jitter`] then
/// randomizes it using a seeded [`SplitMix64`], so a given seed always gives the
/// same delays.
///
/// ```
/// use core::time::Duration;
/// use redial::policy::Backoff;
///
/// // From 50 ms, doubling, at most 1 s: 50, 100, 200, 400, 800, 1000, 1000, … ms.
/// let b = Backoff::new(Duration::from_millis(50), 2.0, Duration::from_secs(1))?;
/// let delays: Vec<u128> = (1..=7).map(|n| b.base_delay(n).as_millis()).collect();
/// assert_eq!(delays, [50, 100, 200, 400, 800, 1000, 1000]);
/// # Ok::<(), redial::PolicyError>(())
/// ```
///
/// [`Backoff::twisted`] and `Backoff::default` use Twisted's parameters: initial
/// 1.5 s, factor 1.5, max 60 s, [`Jitter::Additive`] up to 1 s — so without jitter
/// `n = 1, 2, 3` give exactly 1.5 s, 2.25 s, 3.375 s (Twisted's `1 s · 1.5ⁿ`) and
/// `n ≥ 11` gives 60 s.
///
/// # Seeding, and `no_std`
///
/// Jitter exists so that many clients that lost the same server do not all come
/// back at the same instant; that only works if they do not share a seed. With
/// the `std` feature, `Backoff::default()` is seeded at random. Without `std`
/// there is no `Default` (the crate has no source of randomness, and a fixed seed
/// would put every device of a fleet in lockstep): give each device its own seed,
/// from a hardware random number generator or a unique id (a serial number, a MAC
/// address, a chip id), to [`Backoff::twisted`] or [`Backoff::with_seed`].
/// [`Backoff::new`] starts with seed 0 and no jitter: reseed it when you add
/// jitter.
///
/// ```
/// use redial::policy::{Backoff, Jitter};
///
/// # fn hardware_rng() -> u64 { 0x5eed }
/// // A device's unique id (here, a made-up serial number) or a hardware RNG.
/// let device_seed: u64 = 0x0042_1337_0000_0007 ^ hardware_rng();
/// let policy = Backoff::twisted(device_seed);
/// assert_eq!(policy.jitter(), Jitter::Additive { max: core::time::Duration::from_secs(1) });
/// ```
#[derive(Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    factor: f64,
    max: Duration,
    /// The jitter mode, with what it alone needs: 16 bytes for every mode.
    mode: Mode,
    rng: SplitMix64,
}

/// [`Jitter`] as a [`Backoff`] stores it, in 16 bytes: the mode, and the one
/// duration a mode needs ([`Jitter::Additive`]'s `max`, [`Jitter::Decorrelated`]'s
/// previous delay; zero for the others) as seconds and nanoseconds, so that the
/// mode fits beside them (a `Backoff` is 64 bytes, not 80).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mode {
    secs: u64,
    nanos: u32,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    None,
    Additive,
    Full,
    Equal,
    Decorrelated,
}

impl Mode {
    fn new(jitter: Jitter, initial: Duration) -> Mode {
        let (kind, param) = match jitter {
            Jitter::None => (Kind::None, Duration::ZERO),
            Jitter::Additive { max } => (Kind::Additive, max),
            Jitter::Full => (Kind::Full, Duration::ZERO),
            Jitter::Equal => (Kind::Equal, Duration::ZERO),
            Jitter::Decorrelated => (Kind::Decorrelated, initial),
        };
        Mode::with(kind, param)
    }

    fn with(kind: Kind, param: Duration) -> Mode {
        Mode {
            secs: param.as_secs(),
            nanos: param.subsec_nanos(),
            kind,
        }
    }

    /// The mode's duration (`nanos` is below 10⁹, so this never carries).
    fn param(self) -> Duration {
        Duration::new(self.secs, self.nanos)
    }
}

impl core::fmt::Debug for Backoff {
    /// The parameters, the generator and the previous delay (`initial` except
    /// under [`Jitter::Decorrelated`]), as the fields they used to be.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let prev = match self.mode.kind {
            Kind::Decorrelated => self.mode.param(),
            _ => self.initial,
        };
        f.debug_struct("Backoff")
            .field("initial", &self.initial)
            .field("factor", &self.factor)
            .field("max", &self.max)
            .field("jitter", &self.jitter())
            .field("rng", &self.rng)
            .field("prev", &prev)
            .finish()
    }
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl Backoff {
    /// Twisted's `backoffPolicy` with a given jitter seed: `1 s · 1.5ⁿ` capped at
    /// 60 s (so initial 1.5 s, factor 1.5, max 60 s: 1.5 s, 2.25 s, 3.375 s, …),
    /// and [`Jitter::Additive`] with `max` 1 s (added after the cap, so the delays
    /// lie in `[base(n), base(n) + 1 s)`, at most just under 61 s).
    ///
    /// Use this in tests: the same seed gives the same delays.
    pub fn twisted(seed: u64) -> Backoff {
        const INITIAL: Duration = Duration::from_millis(1500);
        Backoff {
            initial: INITIAL,
            factor: 1.5,
            max: Duration::from_secs(60),
            mode: Mode::with(Kind::Additive, Duration::from_secs(1)),
            rng: SplitMix64::new(seed),
        }
    }

    /// Exponential backoff with no jitter (seed 0: add jitter with
    /// [`with_jitter`](Backoff::with_jitter) and a seed of this client's own with
    /// [`with_seed`](Backoff::with_seed)): the first retry waits `initial`, each one
    /// after it `factor` times longer, never more than `max`
    /// (`min(initial · factorⁿ⁻¹, max)` after `n` failures).
    ///
    /// `initial` may be zero (every retry is immediate) and `factor` may be 1 (a
    /// constant delay `initial`).
    ///
    /// # Errors
    ///
    /// * [`PolicyError::FactorNotFinite`] if `factor` is NaN or infinite;
    /// * [`PolicyError::FactorBelowOne`] if `factor < 1`;
    /// * [`PolicyError::MaxBelowInitial`] if `max < initial`.
    pub fn new(initial: Duration, factor: f64, max: Duration) -> Result<Backoff, PolicyError> {
        if !factor.is_finite() {
            return Err(PolicyError::FactorNotFinite(factor));
        }
        if factor < 1.0 {
            return Err(PolicyError::FactorBelowOne(factor));
        }
        if max < initial {
            return Err(PolicyError::MaxBelowInitial { initial, max });
        }
        Ok(Backoff {
            initial,
            factor,
            max,
            mode: Mode::with(Kind::None, Duration::ZERO),
            rng: SplitMix64::new(0),
        })
    }

    /// Like [`Backoff::new`], with the delays given as seconds in `f64`, as Twisted
    /// takes them (`initial` and `max` are rounded to the nearest nanosecond).
    ///
    /// # Errors
    ///
    /// * [`PolicyError::InvalidSeconds`] if `initial` (`which = "initial delay"`) or
    ///   `max` (`which = "maximum delay"`) is negative, NaN, infinite or too large
    ///   for a [`Duration`];
    /// * otherwise the errors of [`Backoff::new`].
    pub fn from_secs_f64(initial: f64, factor: f64, max: f64) -> Result<Backoff, PolicyError> {
        let initial = secs_to_duration("initial delay", initial)?;
        let max = secs_to_duration("maximum delay", max)?;
        Backoff::new(initial, factor, max)
    }

    /// Sets the jitter mode (and restarts [`Jitter::Decorrelated`]'s memory of the
    /// previous delay).
    #[must_use]
    pub fn with_jitter(self, jitter: Jitter) -> Backoff {
        Backoff {
            mode: Mode::new(jitter, self.initial),
            ..self
        }
    }

    /// Reseeds the random generator used for jitter (and restarts
    /// [`Jitter::Decorrelated`]'s memory of the previous delay). The same seed gives
    /// the same sequence of delays.
    #[must_use]
    pub fn with_seed(self, seed: u64) -> Backoff {
        Backoff {
            rng: SplitMix64::new(seed),
            mode: Mode::new(self.jitter(), self.initial),
            ..self
        }
    }

    /// The first delay (`base(1)`), before any growth.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The growth factor per failure (finite, at least 1).
    pub fn factor(&self) -> f64 {
        self.factor
    }

    /// The cap on `initial · factorⁿ⁻¹`. Jitter is applied after the cap for
    /// [`Jitter::Additive`] (so delays may exceed it) and within it for every other
    /// mode.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        match self.mode.kind {
            Kind::None => Jitter::None,
            Kind::Additive => Jitter::Additive {
                max: self.mode.param(),
            },
            Kind::Full => Jitter::Full,
            Kind::Equal => Jitter::Equal,
            Kind::Decorrelated => Jitter::Decorrelated,
        }
    }

    /// The delay without jitter after `consecutive_failures` failures:
    /// `min(initial · factor^(consecutive_failures − 1), max)`, rounded to the nearest
    /// nanosecond. `base_delay(1)` is `initial`; `base_delay(0)` (which the machine
    /// never asks for) is `initial` too.
    ///
    /// It is computed in `f64` over nanoseconds, so it is exact whenever the exact
    /// result is representable (as with Twisted's parameters: 1.5 s, 2.25 s,
    /// 3.375 s, …) and otherwise within `f64` rounding (about one part in 2⁵³); it
    /// is always within `[initial, max]`. With `factor == 1` it is exactly `initial`.
    ///
    /// Never panics and never overflows, for any `consecutive_failures` up to
    /// [`u32::MAX`]: a power too large for `f64` is simply capped at `max`. When
    /// `initial` is zero it is zero for every `consecutive_failures`.
    ///
    /// ```
    /// use core::time::Duration;
    /// use redial::policy::Backoff;
    ///
    /// let b = Backoff::twisted(0);
    /// assert_eq!(b.base_delay(1), Duration::from_millis(1500));
    /// assert_eq!(b.base_delay(3), Duration::from_millis(3375));
    /// assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(60));
    /// ```
    pub fn base_delay(&self, consecutive_failures: u32) -> Duration {
        nanos_to_duration(self.base_nanos(consecutive_failures))
    }

    fn base_nanos(&self, n: u32) -> u128 {
        let initial = self.initial.as_nanos();
        let max = self.max.as_nanos();
        // The first failure waits `initial`: the growth is factor^(n − 1).
        let growth = n.saturating_sub(1);
        if initial == 0 || growth == 0 || self.factor == 1.0 {
            return initial;
        }
        // Exact for exact inputs (e.g. 1.5e9 · 1.5²), correctly capped otherwise: an
        // infinite power gives an infinite product, which is above `max`. `<=`, not
        // `<`: a cap above 2^53 ns may round to the product itself, and then the
        // rounded product (clamped to `max`) is right, `max` is not.
        let product = initial as f64 * powu(self.factor, growth);
        if product <= max as f64 {
            // Round to the nearest nanosecond (`as` saturates, `product > 0`), and
            // keep f64 rounding of huge values inside `[initial, max]`.
            ((product + 0.5) as u128).clamp(initial, max)
        } else {
            max
        }
    }
}

impl RetryPolicy for Backoff {
    /// The jittered delay; never `None`.
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        let nanos = match self.mode.kind {
            Kind::None => self.base_nanos(consecutive_failures),
            Kind::Additive => {
                let max = self.mode.param();
                let base = self.base_nanos(consecutive_failures);
                base + uniform_below(&mut self.rng, max.as_nanos())
            }
            Kind::Full => {
                let base = self.base_nanos(consecutive_failures);
                uniform_below(&mut self.rng, base + 1)
            }
            Kind::Equal => {
                let base = self.base_nanos(consecutive_failures);
                let half = base / 2;
                half + uniform_below(&mut self.rng, base - half)
            }
            Kind::Decorrelated => {
                let prev = if consecutive_failures <= 1 {
                    self.initial
                } else {
                    self.mode.param()
                };
                let low = self.initial.as_nanos();
                let high = prev.as_nanos().saturating_mul(3);
                let drawn = low + uniform_below(&mut self.rng, high.saturating_sub(low));
                let d = drawn.min(self.max.as_nanos());
                self.mode = Mode::with(Kind::Decorrelated, nanos_to_duration(d));
                d
            }
        };
        Some(nanos_to_duration(nanos))
    }
}

/// Only with the `std` feature: without it there is no source of randomness, and a
/// fixed seed would make a fleet of devices retry in lockstep. Use
/// [`Backoff::twisted`] with a per-device seed instead (see [`Backoff`]).
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
impl Default for Backoff {
    /// Twisted's parameters (see [`Backoff::twisted`]) with a seed that differs from
    /// instance to instance and process to process: it comes from
    /// [`std::collections::hash_map::RandomState`], so thousands of clients started
    /// together do not share one jitter sequence. Tests should use
    /// [`Backoff::twisted`] with a fixed seed instead.
    fn default() -> Backoff {
        Backoff::twisted(random_seed())
    }
}

#[cfg(feature = "std")]
fn random_seed() -> u64 {
    use core::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x7265_6469_616c_u64)
}

/// A small, fast, seedable pseudo-random generator (SplitMix64, by Sebastiano Vigna),
/// used for [`Backoff`]'s jitter. Public so that users and tests can reuse it.
///
/// Not cryptographically secure. Every seed, including 0, gives a full-period
/// sequence of 2⁶⁴ values.
///
/// ```
/// use redial::policy::SplitMix64;
///
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let x = a.next_f64();
/// assert!((0.0..1.0).contains(&x));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is determined by `seed`.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number uniform in `[0, 1)` (0 included, 1 excluded), made from the top 53
    /// bits of [`next_u64`](Self::next_u64), so every value is a multiple of 2⁻⁵³.
    pub fn next_f64(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }
}

/// `base^exp` by exponentiation by squaring: at most 64 multiplications. For
/// `base >= 1` the result is `>= 1` or `+inf` (never NaN).
fn powu(mut base: f64, mut exp: u32) -> f64 {
    let mut acc = 1.0;
    while exp > 0 {
        if exp & 1 == 1 {
            acc *= base;
            if acc == f64::INFINITY {
                break;
            }
        }
        exp >>= 1;
        if exp > 0 {
            base *= base;
        }
    }
    acc
}

/// A uniformly random integer in `[0, bound)`, or 0 when `bound` is 0 (empty range).
fn uniform_below(rng: &mut SplitMix64, bound: u128) -> u128 {
    if bound == 0 {
        0
    } else if let Ok(bound64) = u64::try_from(bound) {
        // Multiply-shift: always < bound; bias at most bound / 2^64.
        (u128::from(rng.next_u64()) * u128::from(bound64)) >> 64
    } else {
        // Beyond ~584 years of nanoseconds: 53 random bits are as good as it gets.
        let x = (rng.next_f64() * bound as f64) as u128;
        x.min(bound - 1)
    }
}

/// Nanoseconds to a `Duration`, saturating at `Duration::MAX`.
fn nanos_to_duration(nanos: u128) -> Duration {
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 1e9, so it fits a u32 and `Duration::new` cannot panic.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

/// Seconds as `f64` to a `Duration` (rounded to the nearest nanosecond), rejecting
/// negative, NaN, infinite and too large values.
fn secs_to_duration(which: &'static str, value: f64) -> Result<Duration, PolicyError> {
    Duration::try_from_secs_f64(value).map_err(|_| PolicyError::InvalidSeconds { which, value })
}
