//! A reconnect budget shared by services: at most R attempts a second leave the
//! process, whatever each service's own backoff says (feature `std`).
//!
//! When one server restarts, every service of every process that talks to it
//! reconnects at once. Jitter spreads the herd; a budget caps it: wrap each
//! service's retry policy with the same [`Budget`] ([`Budget::limit`]) and the
//! retries of all of them together never leave faster than the budget's rate
//! (after an allowed burst), while each service still waits at least what its own
//! policy says.
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
//! How it works: a generic cell-rate algorithm (the virtual-scheduling form of a
//! token bucket). Each retry the policies schedule reserves the earliest slot at
//! or after the time its own policy asked for, slots being `1/rate` apart with up
//! to `burst` of them at the same instant; the delay returned is the time until
//! that slot. A slot reserved for a retry that never happens (the service was
//! stopped meanwhile) is simply not used: the budget errs on the safe side.
//!
//! What it does not cover: a service's very first attempt after `start` and an
//! attempt made at once after a stop and start do not go through the retry
//! policy, so the budget does not delay them; bound those yourself if thousands
//! of services start at the same moment.
//!
//! Time comes from [`std::time::Instant`], or from any clock you give
//! ([`Budget::with_clock`]), such as a test harness's virtual time.

use core::fmt;
use core::time::Duration;
use std::boxed::Box;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::error::PolicyError;
use crate::policy::RetryPolicy;

/// A reconnect budget shared by any number of services (clones share it); see the
/// [module docs](self).
#[derive(Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

struct Shared {
    /// Time between two slots: `1 / rate`.
    interval: Duration,
    /// How far ahead of the schedule a slot may be taken: `(burst - 1) × interval`.
    tolerance: Duration,
    /// The theoretical arrival time of the next slot, as time since the clock's
    /// origin. Never read or written without the lock.
    next: Mutex<Duration>,
    clock: Box<dyn Fn() -> Duration + Send + Sync>,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("interval", &self.shared.interval)
            .field("tolerance", &self.shared.tolerance)
            .finish_non_exhaustive()
    }
}

impl Budget {
    /// A budget of `per_second` retries a second (a finite number above zero),
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
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(PolicyError::InvalidSeconds {
                which: "budget rate (retries per second)",
                value: per_second,
            });
        }
        let interval = Duration::try_from_secs_f64(1.0 / per_second).map_err(|_| {
            PolicyError::InvalidSeconds {
                which: "budget rate (retries per second)",
                value: per_second,
            }
        })?;
        let burst = burst.max(1);
        Ok(Budget {
            shared: Arc::new(Shared {
                interval,
                tolerance: interval.saturating_mul(burst - 1),
                next: Mutex::new(Duration::ZERO),
                clock: Box::new(clock),
            }),
        })
    }

    /// Wraps `policy` so that its retries count against this budget.
    pub fn limit<P: RetryPolicy>(&self, policy: P) -> Budgeted<P> {
        Budgeted {
            policy,
            budget: self.clone(),
        }
    }

    /// Reserves the earliest slot at or after `wanted` from now; returns the time
    /// from now until that slot.
    pub fn reserve(&self, wanted: Duration) -> Duration {
        let shared = &*self.shared;
        let now = (shared.clock)();
        let want = now.saturating_add(wanted);
        // Plain data: a poisoned lock (a panicking clock elsewhere) is consistent.
        let mut next = shared.next.lock().unwrap_or_else(|e| e.into_inner());
        let slot = want.max(next.saturating_sub(shared.tolerance));
        *next = (*next).max(slot).saturating_add(shared.interval);
        slot - now
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
    fn next_delay(&mut self, failed_attempts: u32) -> Option<Duration> {
        let wanted = self.policy.next_delay(failed_attempts)?;
        Some(self.budget.reserve(wanted))
    }
}
