//! Typed errors: bad input to the machine, bad configuration, bad policy parameters.
//!
//! None of these is ever a panic, and returning one never changes anything: the
//! machine (or the policy builder) is exactly as it was before the call.

use core::time::Duration;

use crate::ids::{AttemptId, TimerId, WaiterId};
use crate::state::State;

// `InputKind` lives with `Input`; `redial::error::InputKind` stays a path to it.
pub use crate::input::InputKind;

/// An input the machine cannot accept in its current state.
///
/// The machine returns this instead of acting, and changes nothing: its state,
/// counters and pending waiters and stops are exactly as before the call.
/// `Display` names the state, the input and the reason, e.g.
/// `connection_made rejected in state Init: attempt#7 was never issued by this machine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{input} rejected in state {state}: {reason}")]
pub struct InputError {
    /// The state the machine was (and still is) in.
    pub state: State,
    /// Which input was rejected.
    pub input: InputKind,
    /// Why it was rejected.
    pub reason: Rejection,
}

/// Why an input was rejected. See [`InputError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The report names an attempt this machine never started (a forged id or
    /// one from another machine).
    #[error("{0} was never issued by this machine")]
    UnknownAttempt(AttemptId),
    /// The report names a timer this machine never scheduled.
    #[error("{0} was never issued by this machine")]
    UnknownTimer(TimerId),
    /// The request names a waiter this machine never registered.
    #[error("{0} was never issued by this machine")]
    UnknownWaiter(WaiterId),
    /// `connection_made` for the current attempt, which has already been reported made.
    #[error("{0} was already reported made")]
    AlreadyMade(AttemptId),
    /// A report that needs a connection (`prepare_*`, `connection_closed`) names the
    /// current attempt, which has not been reported made yet.
    #[error("{0} has not been reported made")]
    NotMade(AttemptId),
    /// A failure report for the current attempt, which already produced a
    /// connection that the report cannot fail: `connection_failed` once the
    /// connection is made, `attempt_failed_fatally` or `panicked` once it is
    /// established. Its loss is reported with `connection_closed`.
    #[error("{0} already produced a connection: report its loss with connection_closed")]
    AlreadyConnected(AttemptId),
    /// `prepare_succeeded` / `prepare_failed` for the current connection, which is not
    /// being prepared (no prepare step is configured, or it already finished).
    #[error("{0} is not being prepared")]
    NotPreparing(AttemptId),
    /// `connect_cancelled` for the current attempt, which the machine never asked to cancel.
    #[error("{0} was never asked to be cancelled")]
    NotCancelled(AttemptId),
    /// `probe_succeeded` / `probe_failed` for the current attempt, not yet
    /// established, or for the connection of a machine without probes
    /// ([`Config::probe`](crate::Config::probe) not set). (With probes, between two
    /// probes, a success is stale news and a failure a loss: traffic may have
    /// answered a probe before its own answer came.)
    #[error("{0} has no probe outstanding")]
    NotProbing(AttemptId),
}

/// A [`Config`](crate::Config) the machine refuses to run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A timeout of zero would expire before any I/O could happen.
    #[error("the {which} must be longer than zero")]
    ZeroTimeout {
        /// `"connect timeout"`, `"prepare timeout"`, `"healthy-after delay"`,
        /// `"probe interval"` or `"probe timeout"`.
        which: &'static str,
    },
    /// A prepare timeout was set but no prepare step is configured.
    #[error("a prepare timeout was set but `prepare` is off")]
    PrepareTimeoutWithoutPrepare,
}

/// Retry-policy parameters that make no sense, rejected when the policy is built.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The growth factor is NaN or infinite.
    #[error("backoff factor must be a finite number, got {0}")]
    FactorNotFinite(f64),
    /// The growth factor is below 1, so delays would shrink.
    #[error("backoff factor must be at least 1, got {0}")]
    FactorBelowOne(f64),
    /// The cap is below the first delay.
    #[error("maximum delay {max:?} is below the initial delay {initial:?}")]
    MaxBelowInitial {
        /// The initial delay.
        initial: Duration,
        /// The maximum delay.
        max: Duration,
    },
    /// A delay given in seconds is negative, NaN or too large for a `Duration`.
    #[error("{which} must be a finite, non-negative number of seconds, got {value}")]
    InvalidSeconds {
        /// Which parameter.
        which: &'static str,
        /// The value given.
        value: f64,
    },
}
