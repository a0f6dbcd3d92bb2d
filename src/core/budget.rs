//! A reconnect budget shared by services: at most R attempts a second leave the
//! process, whatever each service's own backoff says (feature `std`).
//!
//! When one server restarts, every service of every process that talks to it
//! reconnects at once. Jitter spreads the herd; a budget caps it. Give the same
//! [`Budget`] to every service (`redial::driver::Builder::budget` with the async
//! driver) and the attempts of all of them together never leave faster than the
//! budget's rate (after an allowed burst), while each service still waits at
//! least what its own policy says.
//!
//! ```
//! use std::time::Duration;
//! use redial::{Backoff, Budget, RetryPolicy};
//!
//! // 100 retries a second for the whole process, 10 at once at most.
//! let budget = Budget::new(100.0, 10).unwrap();
//! let mut policies: Vec<_> = (0..1000)
//!     .map(|seed| budget.limit(Backoff::twisted(seed)))
//!     .collect();
//! // A thousand services lose their connection at the same moment: their retries
//! // are spread over about ten seconds instead of about one.
//! let delays: Vec<Duration> = policies
//!     .iter_mut()
//!     .map(|p| p.next_delay(1).unwrap())
//!     .collect();
//! let last = delays.iter().max().unwrap();
//! assert!(*last >= Duration::from_secs(9), "{last:?}");
//! ```
//!
//! # The rule
//!
//! With `T = 1 / rate` (the [`interval`](Budget::interval)) and `b` the
//! [`burst`](Budget::burst), the budget grants slots (instants at which an attempt
//! may leave) such that the multiset of every slot it has granted and not taken
//! back conforms to the generic cell-rate algorithm GCRA(`T`, `τ = (b − 1)·T`),
//! the virtual-scheduling form of a token bucket of `b` tokens refilled at `rate`.
//! Written without the algorithm: **in every closed interval of time of length
//! `d`, at most `b + d / T` slots**, i.e. for the slots sorted `s₁ ≤ s₂ ≤ …`,
//! `s_j − s_i ≥ (j − i)·T − τ` for every `i < j`. So `b` at the same instant after
//! a quiet spell, then one every `T`; in any window `[x, x + 1 s)`, fewer than
//! `rate + b`.
//!
//! Each reservation gets **the earliest slot at or after the time it asks for
//! that keeps the rule**, whatever was reserved before it, in whatever order and
//! with whatever delays: a slot wanted in 100 ms is not held back by one reserved
//! for 60 s from now (only slots that would crowd its own neighbourhood can delay
//! it). This is a property of the set of slots, not of the order of the calls.
//!
//! How: the budget keeps the slots not yet passed in a sorted list, and folds the
//! ones that have passed into one number, the algorithm's state at the present
//! (its "theoretical arrival time"). A reservation wanted after every kept slot is
//! the classic algorithm; one wanted before some of them scans the kept slots
//! once (`O(n)`): for each gap between two kept slots after it, the state before
//! it and the latest state the slots after it can bear bound where a new slot may
//! go. The budget also remembers the longest span found full (a grant later than
//! wanted means no slot fits in between, and more slots never make room), so a
//! herd admitted at once costs `O(log n)` a reservation, not `O(n)`; giving a slot
//! back (the driver does, below) forgets it and costs `O(n)`. **Memory: one
//! `u64` per outstanding reservation** (a reservation whose slot has not passed;
//! [`outstanding`](Budget::outstanding)), plus a few words (the list's spare
//! capacity is given back as reservations pass); a scan allocates two words per
//! kept slot for the call's duration.
//!
//! A slot reserved for an attempt that never happens stays counted, unless the
//! driver gives it back (below: an attempt cancelled while it waits, a retry cut
//! short by `reconnect_now` or by the service's end): the budget errs on the safe
//! side. (A service stopped while it waits to retry keeps its retry's slot until
//! it starts again or ends.)
//!
//! # What it covers
//!
//! With the async driver (`redial::driver::Builder::budget`), **every attempt
//! that leaves the process counts**: the first after `start`, every retry, one
//! made by `reconnect_now`, the first after a stop and a start. The builder wraps
//! both the service's retry policy and its connector, sharing one slot per
//! attempt:
//!
//! * a retry reserves its slot when the policy is asked: the delay the machine
//!   arms (and `Event::RetryScheduled` reports) is the time until that slot, so
//!   it is the real wait. Its attempt then finds its slot due and leaves at once
//!   (as late as the runtime's timer fires): one slot, not two;
//! * any other attempt (first, `reconnect_now`, after a restart) takes an
//!   admission ([`Budget::admit`]) when it starts, and waits for it, on the
//!   service's runtime, before the user's connector is called. `reconnect_now`
//!   during a retry wait gives the retry's (later) slot back first. An attempt
//!   cancelled while it waits (stopped, timed out) gives its slot back;
//! * an attempt that starts much later than its retry's slot (more than one
//!   interval and at least 100 ms: the service was stopped and started again)
//!   does not use that old slot, it takes a fresh admission.
//!
//! Two things to know when an attempt waits for admission:
//! `Event::AttemptStarted` is told when the wait begins (the connector is called
//! when it ends), and a `connect_timeout` counts the wait: with a herd of `n`
//! services starting together, the last waits about `(n − b) / rate`; a connect
//! timeout shorter than that fails the late ones with
//! [`Failure::ConnectTimeout`](crate::Failure::ConnectTimeout) (their slots are
//! given back before their retries are reserved, and those are budgeted as any).
//! A retry's attempt does not wait in the connector (its wait was the retry
//! delay), so its timeout is untouched.
//!
//! Without the driver (a [`Machine`](crate::Machine) under your own loop),
//! [`Budget::limit`] wraps the retry policy, which covers retries only: call
//! [`Budget::admit`] yourself and wait what it says before an attempt the policy
//! did not schedule (the first, one after a stop and a start).
//!
//! ```
//! use std::time::Duration;
//! use redial::{Backoff, Budget, Machine};
//!
//! let budget = Budget::new(20.0, 5).unwrap();
//! let mut machine: Machine<std::io::Error, _> = Machine::new(budget.limit(Backoff::default()));
//! // Before the first attempt (the machine's `Connect` after `start`): wait this.
//! let wait: Duration = budget.admit();
//! assert_eq!(wait, Duration::ZERO); // a quiet budget lets it through at once
//! # let _ = machine.start();
//! ```
//!
//! # What it does not cover
//!
//! * Other processes: a budget is shared by the services of one process (clone
//!   it, or keep it in a `static`). Ten processes with a budget of 100/s each make
//!   up to 1,000 attempts a second together.
//! * `budget.limit(policy)` given to `Builder::policy` on its own counts retries
//!   only, as it always did. Do not combine it with `Builder::budget(budget)` on
//!   one service: its retries would count twice.
//! * What an attempt does after it leaves (a prepare step, a probe) is not
//!   counted: one attempt, one slot.
//!
//! Time comes from [`std::time::Instant`], or from any clock you give
//! ([`Budget::with_clock`]), such as a test harness's virtual time. With
//! `Builder::budget`, the budget's clock should be the one the runtime's timers
//! follow: `Instant` is, for Tokio, smol and async-std; under Tokio's paused test
//! time, give `with_clock` Tokio's `Instant`; on the test harness's
//! `ManualRuntime`, its `now`.

use core::fmt;
use core::time::Duration;
use std::boxed::Box;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

#[cfg(feature = "driver")]
use core::future::Future;
#[cfg(feature = "driver")]
use core::pin::Pin;

#[cfg(feature = "driver")]
use crate::driver::{ConnectContext, Runtime};

use crate::error::PolicyError;
use crate::policy::RetryPolicy;

/// A reconnect budget shared by any number of services (clones share it); see the
/// [module docs](self).
#[derive(Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

struct Shared {
    /// Time between two slots: `1 / rate`, in nanoseconds.
    interval: u64,
    /// How far ahead of the schedule a slot may be taken: `(burst - 1) × interval`.
    tolerance: u64,
    burst: u32,
    schedule: Mutex<Schedule>,
    clock: Box<dyn Fn() -> Duration + Send + Sync>,
}

/// The slots granted so far. Times are nanoseconds since the clock's origin.
#[derive(Debug, Default)]
struct Schedule {
    /// The latest clock reading seen (a clock read on several threads may be seen
    /// going backwards by a hair; the schedule never does).
    now: u64,
    /// The algorithm's state (theoretical arrival time) after every slot before
    /// `now`: those slots are folded into it and forgotten.
    folded: u64,
    /// The slots at or after `now`, sorted (one entry per reservation).
    slots: VecDeque<u64>,
    /// The algorithm's state after every slot, folded and kept.
    tat: u64,
    /// A span `[from, until)` where no slot fits: a reservation wanted in it
    /// starts looking at `until`. Learnt from the grants (a grant `t` for a wanted
    /// time `w` means nothing fits in `[w, t)`, and more slots never make room);
    /// forgotten when a slot is given back.
    full: (u64, u64),
}

/// The algorithm's state after a slot at `slot` taken in state `tat`.
fn step(tat: u64, slot: u64, interval: u64) -> u64 {
    tat.max(slot).saturating_add(interval)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Schedule {
    /// Moves the present to `now`: the slots before it are folded.
    fn advance(&mut self, now: u64, interval: u64) {
        self.now = self.now.max(now);
        while let Some(&slot) = self.slots.front() {
            if slot >= self.now {
                break;
            }
            self.slots.pop_front();
            self.folded = step(self.folded, slot, interval);
        }
        // Memory follows the outstanding reservations down after a herd.
        if self.slots.capacity() > 64 && self.slots.capacity() > 4 * self.slots.len() {
            self.slots.shrink_to(2 * self.slots.len());
        }
    }

    /// The state after every slot, computed again.
    fn recompute(&mut self, interval: u64) {
        self.tat = self
            .slots
            .iter()
            .fold(self.folded, |tat, &slot| step(tat, slot, interval));
    }

    /// Grants the earliest slot at or after `want` (itself at or after `now`) that
    /// keeps the rule (see the module docs), and returns it.
    fn reserve(&mut self, want: u64, interval: u64, tolerance: u64) -> u64 {
        let want = want.max(self.now);
        let (from, until) = self.full;
        let start = if from <= want && want < until {
            until
        } else {
            want
        };
        let after_all = self.slots.back().is_none_or(|&last| start >= last);
        let slot = if after_all {
            // The classic algorithm: conform to the state after every slot.
            start.max(self.tat.saturating_sub(tolerance))
        } else {
            self.search(start, interval, tolerance)
        };
        let at = self.slots.partition_point(|&p| p <= slot);
        self.slots.insert(at, slot);
        if after_all {
            self.tat = step(self.tat, slot, interval);
        } else {
            self.recompute(interval);
        }
        if slot > want {
            // Nothing fits in [want, slot): keep the longer of the two spans, or
            // both joined if they touch.
            self.full = if from <= slot && want <= until {
                (from.min(want), until.max(slot))
            } else if slot - want > until.saturating_sub(from) {
                (want, slot)
            } else {
                (from, until)
            };
        }
        slot
    }

    /// [`reserve`](Schedule::reserve) for a wanted time before some kept slots.
    ///
    /// With the kept slots sorted `p[0] ≤ … ≤ p[n-1]`, a new slot `t` goes in a gap
    /// `k` (after `p[k-1]`, before `p[k]`). Let `before[k]` be the algorithm's state
    /// after the folded slots and `p[..k]`, and `need[k]` the latest state in which
    /// `p[k..]` still conform (`need[n] = ∞`). `t` conforms there iff
    /// `t ≥ before[k] − τ`, and the slots after it still do iff
    /// `max(before[k], t) + T ≤ need[k]`. The first gap at or after `want` where
    /// this leaves room gives the earliest slot; the last gap always has room.
    ///
    /// In closed form, with `m[i] = p[i] − i·T`:
    /// `before[k] = k·T + max(folded, max m[..k])` and
    /// `need[k] = k·T + τ + min m[k..]`.
    fn search(&mut self, want: u64, interval: u64, tolerance: u64) -> u64 {
        const INFINITY: i128 = i128::MAX / 4;
        let (t, tau) = (i128::from(interval), i128::from(tolerance));
        let points = &*self.slots.make_contiguous();
        let n = points.len();
        let m = |i: usize| i128::from(points[i]) - i as i128 * t;
        let first = points.partition_point(|&p| p < want);
        // suffix[k - first] = min m[k..]
        let mut suffix = std::vec![INFINITY; n - first + 1];
        for k in (first..n).rev() {
            suffix[k - first] = suffix[k + 1 - first].min(m(k));
        }
        let mut prefix = (0..first).fold(i128::from(self.folded), |acc, i| acc.max(m(i)));
        let want = i128::from(want);
        for k in first..n {
            let kt = k as i128 * t;
            let before = kt + prefix;
            let need = kt + tau + suffix[k - first];
            if before + t <= need {
                let low =
                    want.max(before - tau)
                        .max(if k > 0 { i128::from(points[k - 1]) } else { 0 });
                let high = (need - t).min(i128::from(points[k]));
                if low <= high {
                    return u64::try_from(low).unwrap_or(u64::MAX);
                }
            }
            prefix = prefix.max(m(k));
        }
        // The last gap, after every kept slot (`need[n] = ∞`), always has room.
        let before = n as i128 * t + prefix;
        let last = points.last().map_or(0, |&p| i128::from(p));
        u64::try_from(want.max(before - tau).max(last)).unwrap_or(u64::MAX)
    }

    /// Takes back a kept slot (one not yet passed); `false` if there is none at
    /// `slot` (it has passed, or was never granted). Only the driver's
    /// reservations give slots back.
    #[cfg_attr(not(feature = "driver"), allow(dead_code))]
    fn release(&mut self, slot: u64, interval: u64) -> bool {
        let at = self.slots.partition_point(|&p| p < slot);
        if self.slots.get(at) != Some(&slot) {
            return false;
        }
        self.slots.remove(at);
        self.full = (0, 0);
        self.recompute(interval);
        true
    }
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("interval", &self.interval())
            .field("burst", &self.shared.burst)
            .field("outstanding", &self.outstanding())
            .finish_non_exhaustive()
    }
}

impl Budget {
    /// A budget of `per_second` attempts a second (a finite number above zero),
    /// `burst` of which (at least 1) may leave at the same instant after a quiet
    /// spell, timed by the system's monotonic clock.
    pub fn new(per_second: f64, burst: u32) -> Result<Budget, PolicyError> {
        let start = Instant::now();
        Budget::with_clock(per_second, burst, move || start.elapsed())
    }

    /// As [`Budget::new`], timed by `clock`: the time elapsed since any fixed
    /// origin, never going backwards (e.g. a test harness's virtual time).
    pub fn with_clock(
        per_second: f64,
        burst: u32,
        clock: impl Fn() -> Duration + Send + Sync + 'static,
    ) -> Result<Budget, PolicyError> {
        let invalid = PolicyError::InvalidSeconds {
            which: "budget rate (retries per second)",
            value: per_second,
        };
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(invalid);
        }
        let interval = Duration::try_from_secs_f64(1.0 / per_second).map_err(|_| invalid)?;
        let interval = nanos(interval);
        let burst = burst.max(1);
        Ok(Budget {
            shared: Arc::new(Shared {
                interval,
                tolerance: interval.saturating_mul(u64::from(burst - 1)),
                burst,
                schedule: Mutex::new(Schedule::default()),
                clock: Box::new(clock),
            }),
        })
    }

    /// Wraps `policy` so that its retries count against this budget.
    ///
    /// This covers retries only; with the async driver, prefer
    /// `Builder::budget` (the async driver's), which counts every
    /// attempt (see the [module docs](self)).
    pub fn limit<P: RetryPolicy>(&self, policy: P) -> Budgeted<P> {
        Budgeted {
            policy,
            budget: self.clone(),
        }
    }

    /// Reserves the earliest slot at or after `wanted` from now that keeps the
    /// budget's rule (see the [module docs](self)); returns the time from now
    /// until that slot.
    pub fn reserve(&self, wanted: Duration) -> Duration {
        let shared = &*self.shared;
        let now = nanos((shared.clock)());
        let mut schedule = self.lock();
        schedule.advance(now, shared.interval);
        let want = schedule.now.saturating_add(nanos(wanted));
        let slot = schedule.reserve(want, shared.interval, shared.tolerance);
        Duration::from_nanos(slot.saturating_sub(now))
    }

    /// The wait before an attempt may leave now: reserves the earliest slot from
    /// now on, as [`reserve`](Budget::reserve)`(Duration::ZERO)`. For an attempt
    /// no [`limit`](Budget::limit)ed policy scheduled (a first attempt, one after
    /// a stop and a start) when you drive a [`Machine`](crate::Machine) yourself;
    /// the driver's `Builder::budget` calls it
    /// for you.
    pub fn admit(&self) -> Duration {
        self.reserve(Duration::ZERO)
    }

    /// Time between two slots: `1 / rate` (to the nanosecond).
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.shared.interval)
    }

    /// How many slots may share one instant after a quiet spell (at least 1).
    pub fn burst(&self) -> u32 {
        self.shared.burst
    }

    /// How many reserved slots have not passed yet (at or after now): the
    /// entries the budget keeps (its memory grows with this and nothing else).
    pub fn outstanding(&self) -> usize {
        let now = nanos((self.shared.clock)());
        let mut schedule = self.lock();
        schedule.advance(now, self.shared.interval);
        schedule.slots.len()
    }

    fn lock(&self) -> MutexGuard<'_, Schedule> {
        // Plain data, consistent between calls: a panic elsewhere (in a clock)
        // cannot leave it half-changed.
        self.shared
            .schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A retry policy whose retries count against a [`Budget`]; from [`Budget::limit`].
/// Its delay is its inner policy's, or longer when the budget is spent; it gives
/// up when the inner policy does.
#[derive(Debug, Clone)]
pub struct Budgeted<P> {
    policy: P,
    budget: Budget,
}

impl<P> Budgeted<P> {
    /// The wrapped policy.
    pub fn inner(&self) -> &P {
        &self.policy
    }

    /// The budget it counts against.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }
}

impl<P: RetryPolicy> RetryPolicy for Budgeted<P> {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        let wanted = self.policy.next_delay(consecutive_failures)?;
        Some(self.budget.reserve(wanted))
    }
}

// ----- the driver's side: one service's policy and connector sharing a budget, one
// slot per attempt (see "What it covers" in the module docs) -------------------------

/// An attempt's slot may be used this long after it (a runtime's timer fires
/// a little late), or one interval if that is longer.
#[cfg(feature = "driver")]
const LATE: Duration = Duration::from_millis(100);

/// The connector as the driver keeps it (its output left open).
#[cfg(feature = "driver")]
pub(crate) type BoxConnect<T> =
    Box<dyn FnMut(ConnectContext) -> Pin<Box<dyn Future<Output = T> + Send>> + Send>;

/// One service's tie to a [`Budget`].
#[cfg(feature = "driver")]
#[derive(Clone)]
pub(crate) struct Gate {
    budget: Budget,
    slots: Arc<Mutex<Slots>>,
}

/// The slots one service holds.
#[cfg(feature = "driver")]
#[derive(Default)]
struct Slots {
    /// The slot reserved for the retry the policy scheduled last, until the
    /// next attempt takes it.
    retry: Option<u64>,
    /// The slot an attempt waits for (its number, the slot), until it leaves.
    waiting: Option<(u64, u64)>,
    /// Attempts admitted with a wait so far (numbers the waiting ones).
    admitted: u64,
}

#[cfg(feature = "driver")]
impl Gate {
    pub(crate) fn new(budget: Budget) -> Gate {
        Gate {
            budget,
            slots: Arc::default(),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wraps the service's policy: each retry reserves its slot, remembered
    /// for the attempt that follows.
    pub(crate) fn policy<P: RetryPolicy>(&self, policy: P) -> GatedPolicy<P> {
        GatedPolicy {
            policy,
            gate: self.clone(),
        }
    }

    /// Gives back a slot not used (if it is still ahead).
    fn give_back(&self, slot: u64) {
        let shared = &*self.budget.shared;
        let now = nanos((shared.clock)());
        let mut schedule = self.budget.lock();
        schedule.advance(now, shared.interval);
        schedule.release(slot, shared.interval);
    }

    /// Admits an attempt about to leave: the wait before it may, and the number
    /// of its slot to give back if it never leaves (`None`: no wait).
    fn admit(&self) -> (Duration, Option<u64>) {
        let shared = &*self.budget.shared;
        let mut slots = self.slots();
        let retry = slots.retry.take();
        // An earlier attempt still waiting is gone (one attempt at a time).
        let stale = slots.waiting.take().map(|(_, slot)| slot);
        let now = nanos((shared.clock)());
        let mut schedule = self.budget.lock();
        schedule.advance(now, shared.interval);
        if let Some(slot) = stale {
            schedule.release(slot, shared.interval);
        }
        if let Some(slot) = retry {
            let late = nanos(LATE).max(shared.interval);
            if slot <= schedule.now && schedule.now - slot <= late {
                return (Duration::ZERO, None);
            }
            // A later slot (reconnect_now cut the wait short) is given back; a
            // long past one was folded already.
            schedule.release(slot, shared.interval);
        }
        let want = schedule.now;
        let slot = schedule.reserve(want, shared.interval, shared.tolerance);
        let wait = Duration::from_nanos(slot.saturating_sub(now));
        if wait.is_zero() {
            return (wait, None);
        }
        slots.admitted += 1;
        slots.waiting = Some((slots.admitted, slot));
        (wait, Some(slots.admitted))
    }

    /// The attempt numbered `number` leaves (`used`) or is dropped before it
    /// does: its slot is no longer waited for; if unused, it is given back.
    fn done_waiting(&self, number: u64, used: bool) {
        let mut slots = self.slots();
        let Some((waiting, slot)) = slots.waiting else {
            return;
        };
        if waiting != number {
            return;
        }
        slots.waiting = None;
        drop(slots);
        if !used {
            self.give_back(slot);
        }
    }

    /// Wraps the service's connector: every attempt is admitted first, and
    /// waits on `runtime` for its slot before `connect` is called.
    pub(crate) fn connector<R, T>(self, runtime: R, connect: BoxConnect<T>) -> BoxConnect<T>
    where
        R: Runtime,
        T: Send + 'static,
    {
        let connect = Arc::new(Mutex::new(connect));
        Box::new(move |context| {
            let (wait, number) = self.admit();
            let Some(number) = number else {
                let mut connect = connect.lock().unwrap_or_else(PoisonError::into_inner);
                return connect(context);
            };
            let sleep = runtime.sleep(wait);
            let mut waiting = Waiting {
                gate: self.clone(),
                number: Some(number),
            };
            let connect = Arc::clone(&connect);
            Box::pin(async move {
                sleep.await;
                waiting.leave();
                let attempt = {
                    let mut connect = connect.lock().unwrap_or_else(PoisonError::into_inner);
                    connect(context)
                };
                attempt.await
            })
        })
    }
}

/// An attempt waiting for its slot: gives it back if dropped before it leaves.
#[cfg(feature = "driver")]
struct Waiting {
    gate: Gate,
    number: Option<u64>,
}

#[cfg(feature = "driver")]
impl Waiting {
    fn leave(&mut self) {
        if let Some(number) = self.number.take() {
            self.gate.done_waiting(number, true);
        }
    }
}

#[cfg(feature = "driver")]
impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(number) = self.number.take() {
            self.gate.done_waiting(number, false);
        }
    }
}

/// The service's policy under a [`Gate`].
#[cfg(feature = "driver")]
pub(crate) struct GatedPolicy<P> {
    policy: P,
    gate: Gate,
}

#[cfg(feature = "driver")]
impl<P: RetryPolicy> RetryPolicy for GatedPolicy<P> {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        let wanted = self.policy.next_delay(consecutive_failures)?;
        let mut slots = self.gate.slots();
        // The policy is asked once the attempt is over: a slot it still waited
        // for (it timed out) will not be used, nor will an older retry's.
        let waited = slots.waiting.take().map(|(_, slot)| slot);
        let previous = slots.retry.take();
        let shared = &*self.gate.budget.shared;
        let now = nanos((shared.clock)());
        let mut schedule = self.gate.budget.lock();
        schedule.advance(now, shared.interval);
        for slot in waited.into_iter().chain(previous) {
            schedule.release(slot, shared.interval);
        }
        let want = schedule.now.saturating_add(nanos(wanted));
        let slot = schedule.reserve(want, shared.interval, shared.tolerance);
        slots.retry = Some(slot);
        Some(Duration::from_nanos(slot.saturating_sub(now)))
    }
}

/// A service that ends (its policy dropped with its task) gives back the slot of
/// a retry it will never make.
#[cfg(feature = "driver")]
impl<P> Drop for GatedPolicy<P> {
    fn drop(&mut self) {
        let retry = self.gate.slots().retry.take();
        if let Some(slot) = retry {
            self.gate.give_back(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const MS: u64 = 1_000_000;

    fn budget(rate: f64, burst: u32) -> (Arc<AtomicU64>, Budget) {
        let now = Arc::new(AtomicU64::new(0));
        let read = Arc::clone(&now);
        let budget = Budget::with_clock(rate, burst, move || {
            Duration::from_nanos(read.load(Ordering::SeqCst))
        })
        .unwrap();
        (now, budget)
    }

    #[test]
    fn a_slot_given_back_makes_room_for_an_earlier_one() {
        // One a second, no burst: slots at 0, 1 s, 2 s.
        let mut schedule = Schedule::default();
        let (t, tau) = (1_000 * MS, 0);
        for want in [0, 1_000 * MS, 2_000 * MS] {
            assert_eq!(schedule.reserve(want, t, tau), want);
        }
        // 500 ms is too close to both neighbours; after 2 s is the first room.
        let mut probe = Schedule {
            slots: schedule.slots.clone(),
            ..Schedule::default()
        };
        probe.recompute(t);
        assert_eq!(probe.reserve(500 * MS, t, tau), 3_000 * MS);
        // Without the slot at 1 s, 1 s is the earliest at or after 500 ms.
        assert!(schedule.release(1_000 * MS, t));
        assert!(!schedule.release(1_000 * MS, t), "given back once");
        assert_eq!(schedule.reserve(500 * MS, t, tau), 1_000 * MS);
        assert_eq!(schedule.slots.len(), 3);
    }

    #[test]
    fn passed_slots_are_folded_and_still_count() {
        // 10 a second, burst 2: two at 0 take the burst, so the next is at 100 ms
        // even once those two have been folded away.
        let (now, budget) = budget(10.0, 2);
        assert_eq!(budget.reserve(Duration::ZERO), Duration::ZERO);
        assert_eq!(budget.reserve(Duration::ZERO), Duration::ZERO);
        now.store(50 * MS, Ordering::SeqCst);
        assert_eq!(budget.outstanding(), 0);
        assert_eq!(budget.admit(), Duration::from_millis(50));
        assert_eq!(budget.outstanding(), 1);
    }

    #[cfg(feature = "driver")]
    #[test]
    fn a_retry_uses_its_own_slot_once_and_a_stale_one_never() {
        // One a second, no burst.
        let (now, budget) = budget(1.0, 1);
        let gate = Gate::new(budget.clone());
        let mut policy = gate.policy(|_| Duration::from_millis(100));
        assert_eq!(policy.next_delay(1), Some(Duration::from_millis(100)));
        // The retry's timer fires at its slot: the attempt leaves at once, on
        // that slot (no second one taken).
        now.store(100 * MS, Ordering::SeqCst);
        assert_eq!(gate.admit(), (Duration::ZERO, None));
        assert_eq!(budget.outstanding(), 1);
        // Another retry, then a stop and a start long after its slot: the old
        // slot is not used; the attempt takes a fresh one (the next free, 1 s
        // after someone else's).
        assert_eq!(policy.next_delay(2), Some(Duration::from_secs(1)));
        now.store(5_000 * MS, Ordering::SeqCst);
        assert_eq!(budget.admit(), Duration::ZERO);
        let (wait, number) = gate.admit();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(number.is_some());
        // Given back when dropped before leaving.
        gate.done_waiting(number.unwrap(), false);
        assert_eq!(budget.outstanding(), 1);
    }

    /// Reserves as [`Budget::reserve`] does: the present moved to `now` first.
    fn reserve_at(schedule: &mut Schedule, now: u64, want: u64, interval: u64) -> u64 {
        schedule.advance(now, interval);
        schedule.reserve(want.max(now), interval, 0)
    }

    #[test]
    fn a_small_list_keeps_its_room_when_its_slots_pass() {
        // Up to 64 entries, the list keeps its room: slots that come and go in
        // small numbers cost no allocation once it has grown.
        let t = MS;
        let mut schedule = Schedule {
            slots: VecDeque::with_capacity(64),
            ..Schedule::default()
        };
        assert_eq!(schedule.slots.capacity(), 64, "the premise");
        for round in 0..3u64 {
            let start = round * 100 * t;
            for i in 0..64 {
                assert_eq!(reserve_at(&mut schedule, start, start, t), start + i * t);
            }
            // Every slot passes: nothing outstanding, the room is kept.
            schedule.advance(start + 100 * t, t);
            assert!(schedule.slots.is_empty());
            assert_eq!(schedule.slots.capacity(), 64, "round {round}");
        }
    }

    #[test]
    fn a_drained_herd_gives_its_room_back_with_room_to_spare() {
        // A herd of 1,000 at once: slots 0, 1 ms, … 999 ms.
        let t = MS;
        let mut schedule = Schedule::default();
        for i in 0..1_000 {
            assert_eq!(reserve_at(&mut schedule, 0, 0, t), i * t);
        }
        let herd = schedule.slots.capacity();
        assert!(herd >= 1_000, "{herd}");
        // The slots pass one by one. While at least a quarter of the room is used,
        // the list keeps it (no reallocation at every step); below a quarter, it
        // is shrunk to half full (room for as many again); and so on down.
        let mut room = herd;
        let mut shrunk = 0;
        let mut now = 0;
        while !schedule.slots.is_empty() {
            now += t;
            schedule.advance(now, t);
            let (len, capacity) = (schedule.slots.len(), schedule.slots.capacity());
            if room <= 64 || 4 * len >= room {
                assert_eq!(capacity, room, "{len} slots left");
            } else {
                assert!(
                    capacity >= 2 * len && capacity < room,
                    "{len} slots left: room {capacity} (was {room})"
                );
                room = capacity;
                shrunk += 1;
            }
        }
        // Memory followed the outstanding reservations down, in a few steps.
        assert!(
            schedule.slots.capacity() <= 64,
            "{}",
            schedule.slots.capacity()
        );
        assert!((3..=6).contains(&shrunk), "{shrunk} reallocations");
    }

    #[test]
    fn the_longest_span_found_full_is_remembered() {
        // One a second, no burst.
        let (t, tau) = (1_000 * MS, 0);
        let s = 1_000 * MS;
        let mut schedule = Schedule::default();
        // A herd at 0: slots 0, 1 s, 2 s; nothing fits in [0, 2 s) any more.
        for i in 0..3 {
            assert_eq!(schedule.reserve(0, t, tau), i * s);
        }
        assert_eq!(schedule.full, (0, 2 * s));
        // A reservation wanted in that span starts looking at its end.
        let mut probe = Schedule {
            slots: schedule.slots.clone(),
            full: schedule.full,
            ..Schedule::default()
        };
        probe.recompute(t);
        assert_eq!(probe.reserve(s / 2, t, tau), 3 * s);
        assert_eq!(probe.full, (0, 3 * s), "spans that touch are joined");
        // Slots wanted at 10 s, 11 s and 12 s are granted as wanted (nothing is
        // learnt); one more wanted at 10 s is granted at 13 s: a span of 3 s found
        // full, longer than [0, 2 s), is kept instead.
        for i in 10..13 {
            assert_eq!(schedule.reserve(i * s, t, tau), i * s);
        }
        assert_eq!(schedule.full, (0, 2 * s));
        assert_eq!(schedule.reserve(10 * s, t, tau), 13 * s);
        assert_eq!(
            schedule.full,
            (10 * s, 13 * s),
            "a longer span replaces a shorter one"
        );
        // Wanted at 20 s: 20 s, then 21 s (a span of 1 s, shorter: the longer one
        // is kept).
        assert_eq!(schedule.reserve(20 * s, t, tau), 20 * s);
        assert_eq!(schedule.reserve(20 * s, t, tau), 21 * s);
        assert_eq!(
            schedule.full,
            (10 * s, 13 * s),
            "a shorter span does not replace a longer one"
        );
        // Giving a slot back forgets it (the span may have room again).
        assert!(schedule.release(11 * s, t));
        assert_eq!(schedule.full, (0, 0));
        assert_eq!(schedule.reserve(10 * s, t, tau), 11 * s);
    }

    #[cfg(feature = "driver")]
    #[test]
    fn a_retry_a_little_late_uses_its_slot_and_an_early_one_gives_it_back() {
        // One a second, no burst.
        let (now, budget) = budget(1.0, 1);
        let gate = Gate::new(budget.clone());
        let mut policy = gate.policy(|_| Duration::from_secs(2));
        assert_eq!(policy.next_delay(1), Some(Duration::from_secs(2)));
        // The timer fires 50 ms late: the attempt uses its slot (passed, folded),
        // takes no other, and the next free slot is one interval after it.
        now.store(2_050 * MS, Ordering::SeqCst);
        assert_eq!(gate.admit(), (Duration::ZERO, None));
        assert_eq!(budget.outstanding(), 0);
        assert_eq!(budget.admit(), Duration::from_millis(950));
        // A retry 2 s ahead (its slot at 4.05 s) cut short by `reconnect_now` at
        // 3.05 s: its slot is given back and the attempt takes the earliest (4 s,
        // one interval after the admission's slot at 3 s).
        assert_eq!(policy.next_delay(2), Some(Duration::from_secs(2)));
        assert_eq!(budget.outstanding(), 2);
        now.store(3_050 * MS, Ordering::SeqCst);
        let (wait, number) = gate.admit();
        assert_eq!(wait, Duration::from_millis(950));
        assert!(number.is_some());
        assert_eq!(
            budget.outstanding(),
            1,
            "the retry's slot at 4.05 s is given back"
        );
    }

    #[cfg(feature = "driver")]
    #[test]
    fn a_waiting_attempt_keeps_its_slot_when_it_leaves_and_gives_it_back_when_dropped() {
        // One a second, no burst: a first attempt at 0 leaves at once, the next
        // ones wait.
        let (_now, budget) = budget(1.0, 1);
        let gate = Gate::new(budget.clone());
        assert_eq!(gate.admit(), (Duration::ZERO, None));
        // An attempt waits 1 s, then leaves: its slot stays taken.
        let (wait, number) = gate.admit();
        assert_eq!(wait, Duration::from_secs(1));
        let mut waiting = Waiting {
            gate: gate.clone(),
            number,
        };
        waiting.leave();
        drop(waiting);
        assert_eq!(budget.outstanding(), 2);
        // Another waits 2 s and is dropped before it leaves (stopped, timed
        // out): its slot is given back.
        let (wait, number) = gate.admit();
        assert_eq!(wait, Duration::from_secs(2));
        assert_eq!(budget.outstanding(), 3);
        drop(Waiting {
            gate: gate.clone(),
            number,
        });
        assert_eq!(budget.outstanding(), 2);
        // An attempt that waits is numbered: one dropped late (after the next one
        // began to wait) gives back nothing of the next one's.
        let (_, first) = gate.admit();
        let (_, second) = gate.admit();
        assert_ne!(first, second);
        assert_eq!(
            budget.outstanding(),
            3,
            "the first one's slot went when the second came"
        );
        drop(Waiting {
            gate: gate.clone(),
            number: first,
        });
        assert_eq!(
            budget.outstanding(),
            3,
            "the second one still holds its slot"
        );
        drop(Waiting {
            gate: gate.clone(),
            number: second,
        });
        assert_eq!(budget.outstanding(), 2);
    }

    #[cfg(feature = "driver")]
    #[test]
    fn a_service_that_ends_gives_its_retrys_slot_back() {
        let (_now, budget) = budget(1.0, 1);
        let gate = Gate::new(budget.clone());
        let mut policy = gate.policy(|_| Duration::from_millis(100));
        assert_eq!(policy.next_delay(1), Some(Duration::from_millis(100)));
        assert_eq!(budget.outstanding(), 1);
        drop(policy);
        assert_eq!(budget.outstanding(), 0);
        assert_eq!(
            budget.reserve(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }

    /// The rule checked the plain way: the cell-rate algorithm run over every
    /// slot still granted (folded or kept), sorted, from a fresh start.
    fn conforms(slots: &[u64], interval: u64, tolerance: u64) -> bool {
        let mut sorted = slots.to_vec();
        sorted.sort_unstable();
        let mut tat = 0u64;
        sorted.into_iter().all(|t| {
            let ok = t + tolerance >= tat;
            tat = tat.max(t) + interval;
            ok
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Reservations and slots given back, in any mix: every grant keeps the
        /// rule with every slot still granted, and is the earliest that does at or
        /// after its wanted time (every candidate time before it is refused).
        #[test]
        fn grants_stay_earliest_when_slots_are_given_back(
            interval_ms in 1u64..100,
            burst in 1u32..5,
            ops in proptest::collection::vec((0u64..200, 0u64..1_500, 0u8..4, 0usize..64), 1..40),
        ) {
            let (t, tau) = (interval_ms * MS, (u64::from(burst) - 1) * interval_ms * MS);
            let mut schedule = Schedule::default();
            // Every slot granted and not given back.
            let mut granted: std::vec::Vec<u64> = std::vec::Vec::new();
            let mut now = 0u64;
            for (advance_ms, wanted_ms, kind, pick) in ops {
                now += advance_ms * MS;
                schedule.advance(now, t);
                let kept: std::vec::Vec<u64> = schedule.slots.iter().copied().collect();
                if kind == 0 && !kept.is_empty() {
                    let slot = kept[pick % kept.len()];
                    proptest::prop_assert!(schedule.release(slot, t));
                    let at = granted.iter().position(|&g| g == slot).unwrap();
                    granted.swap_remove(at);
                    continue;
                }
                let want = now + wanted_ms * MS;
                let slot = schedule.reserve(want, t, tau);
                proptest::prop_assert!(slot >= want);
                granted.push(slot);
                proptest::prop_assert!(conforms(&granted, t, tau), "{slot} breaks the rule");
                granted.pop();
                let n = granted.len() as u64 + 2;
                let mut candidates = std::vec![want];
                for &p in &granted {
                    for c in 0..=n {
                        candidates.push((p + c * t).saturating_sub(tau));
                        candidates.push(p + c * t);
                    }
                }
                for c in candidates.into_iter().filter(|&c| c >= want && c < slot) {
                    granted.push(c);
                    proptest::prop_assert!(!conforms(&granted, t, tau), "wanted {want}, got {slot}, {c} fits");
                    granted.pop();
                }
                granted.push(slot);
                proptest::prop_assert_eq!(
                    schedule.slots.len(),
                    granted.iter().filter(|&&g| g >= schedule.now).count()
                );
            }
        }
    }
}
