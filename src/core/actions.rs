//! What the machine asks its driver to do: the one narrow door every effect leaves by.
//!
//! Every input returns an [`Actions`] list. The driver performs the actions in order,
//! then feeds what happened back as new inputs, naming the ids it was given.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;
use core::ops::Deref;
use core::time::Duration;

use smallvec::SmallVec;

use crate::ids::{AttemptId, StopId, TimerId};

#[path = "actions/waiter_list.rs"]
mod waiter_list;

pub(crate) use waiter_list::Builder as WaiterListBuilder;
pub use waiter_list::{WaiterList, WaiterListIntoIter, INLINE_WAITERS};

/// The stop requests one action finishes, in call order.
pub type StopList = SmallVec<[StopId; 2]>;

/// What a timer is for. Carried by [`Action::ScheduleTimer`] so the driver can log it;
/// the driver reports every timer the same way, with [`Input::TimerFired`](crate::Input::TimerFired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// The retry timer: when it fires, the machine starts a new attempt
    /// (Twisted's `reconnect`).
    Retry,
    /// The opt-in connect timeout: when it fires, the attempt is cancelled and counts
    /// as a failed attempt ([`Failure::ConnectTimeout`]).
    ConnectTimeout,
    /// The opt-in prepare timeout: when it fires, the connection is closed and the
    /// attempt counts as failed ([`Failure::PrepareTimeout`]).
    PrepareTimeout,
    /// The opt-in healthy timer: when it fires, the connection has stayed up long
    /// enough for the failure counter to be reset.
    Healthy,
    /// The opt-in probe interval ([`Config::probe`](crate::Config::probe)): when
    /// it fires, the machine asks for a probe of the connection
    /// ([`Action::Probe`]).
    ProbeInterval,
    /// The opt-in probe timeout: when it fires before the probe is answered, the
    /// connection is dead (closed, and counted as lost).
    ProbeTimeout,
}

/// Where user code panicked; see [`Panic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PanicSite {
    /// The connector: the closure that starts an attempt, or the future it returns.
    Connector,
    /// The prepare step: the closure, or the future it returns.
    Prepare,
    /// A connection's driver future (it runs the connection).
    Connection,
    /// A connection's handle: its `Clone`, when the driver hands a copy to a waiter.
    Handle,
    /// A liveness probe: the closure, or the future it returns.
    Probe,
}

/// User code panicked while a driver ran it on behalf of an attempt or a connection.
///
/// A driver that contains panics (as `redial::driver` does) reports one with
/// [`Machine::panicked`](crate::Machine::panicked); the machine counts it as a
/// failed attempt and delivers it as [`Failure::Panicked`].
///
/// One pointer wide (its site and message are boxed), so that carrying one does
/// not make every [`Failure`] and [`Action`] wider: panics are rare, actions are not.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Panic(Box<PanicInner>);

#[derive(Clone, PartialEq, Eq, Hash)]
struct PanicInner {
    site: PanicSite,
    message: String,
}

const _: () = assert!(core::mem::size_of::<Panic>() == core::mem::size_of::<usize>());

impl Panic {
    /// A panic at `site` with this message (the panic payload, when it is a string).
    pub fn new(site: PanicSite, message: impl Into<String>) -> Panic {
        Panic(Box::new(PanicInner {
            site,
            message: message.into(),
        }))
    }

    /// Where it panicked.
    pub fn site(&self) -> PanicSite {
        self.0.site
    }

    /// The panic message.
    pub fn message(&self) -> &str {
        &self.0.message
    }
}

impl fmt::Debug for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Panic")
            .field("site", &self.0.site)
            .field("message", &self.0.message)
            .finish()
    }
}

impl fmt::Display for Panic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.0.site {
            PanicSite::Connector => "the connector",
            PanicSite::Prepare => "the prepare step",
            PanicSite::Connection => "the connection's driver",
            PanicSite::Handle => "the connection's handle",
            PanicSite::Probe => "the liveness probe",
        };
        write!(f, "{what} panicked: {}", self.0.message)
    }
}

impl core::error::Error for Panic {}

/// Why an attempt failed, as reported by [`Action::AttemptFailed`] (and delivered
/// to waiters by the [`Action::DeliverFailure`] that may follow it).
///
/// `E` is the error type the driver reports; the machine moves it through and never
/// clones it. The other variants are failures the machine itself detects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// The attempt failed with this error (`connection_failed`).
    Connect(E),
    /// The prepare step rejected the connection with this error (`prepare_failed`).
    Prepare(E),
    /// The connect timeout expired before the attempt finished.
    ConnectTimeout,
    /// The prepare timeout expired before the prepare step finished.
    PrepareTimeout,
    /// The connection was lost while it was being prepared
    /// ([D3](crate::contract#d3-a-connection-lost-while-preparing-is-a-failed-attempt)).
    LostWhilePreparing,
    /// User code panicked while the attempt or its prepare step ran
    /// ([`Machine::panicked`](crate::Machine::panicked)).
    Panicked(Panic),
}

/// `Display` says what failed; the cause (the error your connector or prepare step
/// returned) is its [`source`](core::error::Error::source), as the error-handling
/// guidelines ask, so a reporter that walks the chain prints each part once. The
/// alternate form (`{:#}`) prints the whole chain on one line.
impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => {
                f.write_str("connection attempt failed")?;
                if f.alternate() {
                    write!(f, ": {e:#}")?;
                }
                Ok(())
            }
            Failure::Prepare(e) => {
                f.write_str("prepare step failed")?;
                if f.alternate() {
                    write!(f, ": {e:#}")?;
                }
                Ok(())
            }
            Failure::ConnectTimeout => f.write_str("connection attempt timed out"),
            Failure::PrepareTimeout => f.write_str("prepare step timed out"),
            Failure::LostWhilePreparing => f.write_str("connection lost while preparing"),
            Failure::Panicked(panic) => fmt::Display::fmt(panic, f),
        }
    }
}

/// The source of `Connect` and `Prepare` is your error, so that, for example, an
/// `io::ErrorKind::ConnectionRefused` can be found by walking the chain.
impl<E: core::error::Error + 'static> core::error::Error for Failure<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Failure::Connect(e) | Failure::Prepare(e) => Some(e),
            // What panicked and its message are this failure's own text.
            Failure::Panicked(_)
            | Failure::ConnectTimeout
            | Failure::PrepareTimeout
            | Failure::LostWhilePreparing => None,
        }
    }
}

/// How an established connection was lost, as far as the machine knows: carried by
/// [`Action::Lost`]. What only the driver knows (the error or the panic behind a
/// closed connection) stays with the driver: it rides on the input that reported
/// the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LossKind {
    /// The driver reported the connection closed
    /// ([`Machine::connection_closed`](crate::Machine::connection_closed)).
    Closed,
    /// The liveness probe failed
    /// ([`Machine::probe_failed`](crate::Machine::probe_failed)); the machine
    /// closes the connection.
    ProbeFailed,
    /// The liveness probe did not answer within its timeout; the machine closes
    /// the connection.
    ProbeTimedOut,
}

/// How the machine gave up: carried by [`Action::DeliverFailure`] when the
/// failure it delivers is the last one, and mirrored by [`Action::GaveUp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GiveUp {
    /// Consecutive failures when it gave up.
    pub consecutive_failures: u32,
    /// `true`: on fatal failures, without asking the retry policy; `false`: the
    /// retry policy gave up.
    pub fatal: bool,
}

/// One thing the driver must do, or one thing that happened.
///
/// Two kinds share this one list, so that their order is the order things
/// happened in:
///
/// * **commands**, the effects the driver performs: [`Connect`](Action::Connect),
///   [`CancelConnect`](Action::CancelConnect), [`Prepare`](Action::Prepare),
///   [`Disconnect`](Action::Disconnect), [`Probe`](Action::Probe),
///   [`ScheduleTimer`](Action::ScheduleTimer), [`CancelTimer`](Action::CancelTimer),
///   and the answers to waiters and stops ([`NotifyWaiters`](Action::NotifyWaiters),
///   [`DeliverFailure`](Action::DeliverFailure), [`CancelWaiters`](Action::CancelWaiters),
///   [`FinishStopping`](Action::FinishStopping));
/// * **facts**, what happened, for the driver to log, count or publish and never
///   to infer from the machine's state or counters:
///   [`AttemptFailed`](Action::AttemptFailed), [`Connected`](Action::Connected),
///   [`Lost`](Action::Lost), [`RetryScheduled`](Action::RetryScheduled) and
///   [`GaveUp`](Action::GaveUp). A driver that only performs may skip them;
///   [`Action::is_fact`] tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<E> {
    /// Start a new attempt to open the connection. Report its outcome with
    /// `connection_made(attempt)` or `connection_failed(attempt, error)`.
    Connect {
        /// The new attempt.
        attempt: AttemptId,
    },
    /// Abandon this attempt (drop its future, cancel its socket). Then report
    /// `connect_cancelled(attempt)`; if it had already produced a connection, report
    /// `connection_made(attempt)` instead and the machine will ask to close it.
    CancelConnect {
        /// The attempt to cancel.
        attempt: AttemptId,
    },
    /// Run the prepare step on this new connection. Report
    /// `prepare_succeeded(attempt)` or `prepare_failed(attempt, error)`.
    Prepare {
        /// The connection to prepare.
        attempt: AttemptId,
    },
    /// Close this connection (and abandon its prepare step, if running). Report
    /// `connection_closed(attempt)` once it is closed.
    Disconnect {
        /// The connection to close.
        attempt: AttemptId,
    },
    /// Probe this established connection (a ping, a no-op request): is the peer
    /// still there? Report `probe_succeeded(attempt)` or `probe_failed(attempt)`.
    /// The machine arms a probe timeout with it: if neither comes first, the
    /// connection is dead. Only with [`Config::probe`](crate::Config::probe).
    Probe {
        /// The connection to probe.
        attempt: AttemptId,
    },
    /// Arm a timer. Report `timer_fired(timer)` when it expires, unless it is cancelled first.
    ScheduleTimer {
        /// The new timer.
        timer: TimerId,
        /// What it is for.
        kind: TimerKind,
        /// How long from now.
        delay: Duration,
    },
    /// Disarm this timer. (If it fires anyway, the report is stale and harmless.)
    CancelTimer {
        /// The timer to disarm.
        timer: TimerId,
    },
    /// Hand the connection to these waiters; they are answered.
    NotifyWaiters {
        /// The connection (named by the attempt that made it).
        attempt: AttemptId,
        /// The waiters, in registration order.
        waiters: WaiterList,
    },
    /// Fact: this attempt failed, and the failure counts (toward the retry policy and the
    /// waiters' thresholds): the connect attempt failed or timed out, its prepare
    /// step failed or timed out, its connection was lost while being prepared, or
    /// user code run for it panicked.
    ///
    /// Emitted exactly once for **every** failed attempt, whether or not anyone is
    /// waiting, so a driver can log it, keep it as "the last failure" or publish
    /// it. It comes after the input's cleanup (`CancelTimer`, `CancelConnect` or
    /// `Disconnect` of a rejected connection) and after the retry's
    /// `ScheduleTimer`; a [`DeliverFailure`](Action::DeliverFailure) for the waiters
    /// it fails may follow, then [`RetryScheduled`](Action::RetryScheduled) or, if
    /// the machine gave up, [`GaveUp`](Action::GaveUp). A report that is not counted (a cancelled
    /// attempt reporting its failure late, the loss of an established connection)
    /// emits none.
    ///
    /// The machine moves the failure here and never clones it: keep it (e.g.
    /// behind an `Arc`) if a `DeliverFailure` follows.
    AttemptFailed {
        /// The attempt that failed (for a connection, the attempt that made it).
        attempt: AttemptId,
        /// Why.
        failure: Failure<E>,
        /// Consecutive failures, this one included (what the retry policy was
        /// asked about; a loss before the connection was healthy counts too).
        consecutive_failures: u32,
    },
    /// Fail these waiters with the failure of the
    /// [`AttemptFailed`](Action::AttemptFailed) just before this action in the same
    /// list; they are answered. All of them receive that same failure.
    ///
    /// Emitted only when some waiters are due: their `fail_after_failures`
    /// threshold is reached, or the policy gave up (then every pending waiter, and
    /// a [`GaveUp`](Action::GaveUp) follows).
    DeliverFailure {
        /// The waiters, in registration order.
        waiters: WaiterList,
        /// `Some` when the failure is delivered because the machine gave up (a
        /// [`GaveUp`](Action::GaveUp) with the same figures follows); `None` when
        /// the waiters' own `fail_after_failures` thresholds were reached.
        gave_up: Option<GiveUp>,
    },
    /// Fail these waiters as cancelled: the service is stopped, or stopping; they
    /// are answered.
    CancelWaiters {
        /// The waiters, in registration order.
        waiters: WaiterList,
        /// `Some` while the machine is stopped because it gave up (and not started
        /// since): the waiters learn why no connection is coming, with the figures
        /// of that [`GaveUp`](Action::GaveUp). `None` after an ordinary stop.
        gave_up: Option<GiveUp>,
    },
    /// These stop requests are done: nothing is left open
    /// ([D7](crate::contract#d7-a-finished-stop-means-nothing-is-left)).
    FinishStopping {
        /// The stop requests, in call order.
        stops: StopList,
    },
    /// Fact: the machine gave up: the retry policy did, or
    /// [`Config::give_up_after_fatal`](crate::Config::give_up_after_fatal)
    /// consecutive failures were fatal
    /// ([`attempt_failed_fatally`](crate::Machine::attempt_failed_fatally)). It is now `Stopped`
    /// until started again.
    GaveUp {
        /// Consecutive failures when it gave up.
        consecutive_failures: u32,
        /// `true`: it gave up on fatal failures, without asking the policy;
        /// `false`: the retry policy gave up.
        fatal: bool,
    },
    /// Fact: the machine is `Connected` with this connection (after its prepare
    /// step, if configured). Comes after the timers the connection arms and
    /// before the [`NotifyWaiters`](Action::NotifyWaiters) that hands it out.
    Connected {
        /// The connection (named by the attempt that made it).
        attempt: AttemptId,
        /// How many connections the machine has made, this one included (1 for
        /// the first): tells one connection from the next.
        generation: u64,
    },
    /// Fact: the established connection was lost. Comes after its cleanup (the
    /// `CancelTimer` of its healthy or probe timer, the `Disconnect` of a
    /// connection a probe found dead) and after the retry's `ScheduleTimer`; a
    /// [`RetryScheduled`](Action::RetryScheduled) or a [`GaveUp`](Action::GaveUp)
    /// follows. A connection closed because the machine asked (a stop) is not
    /// lost.
    Lost {
        /// The connection (named by the attempt that made it).
        attempt: AttemptId,
        /// How, as far as the machine knows.
        kind: LossKind,
        /// It was lost before it became healthy
        /// ([`Config::reset_backoff_after`](crate::Config::reset_backoff_after)):
        /// it counts toward the backoff instead of resetting it.
        flap: bool,
    },
    /// Fact: the next attempt starts when the retry timer armed by this input's
    /// `ScheduleTimer` fires. The last action of a failed attempt or a loss that
    /// the machine retries.
    RetryScheduled {
        /// How long from now (what the retry policy said).
        delay: Duration,
        /// Consecutive failures so far (what the retry policy was asked about).
        consecutive_failures: u32,
    },
}

impl<E> Action<E> {
    /// Whether this action is a fact (something that happened: `AttemptFailed`,
    /// `Connected`, `Lost`, `RetryScheduled`, `GaveUp`) rather than a command to
    /// perform. See [`Action`].
    pub fn is_fact(&self) -> bool {
        match self {
            Action::AttemptFailed { .. }
            | Action::Connected { .. }
            | Action::Lost { .. }
            | Action::RetryScheduled { .. }
            | Action::GaveUp { .. } => true,
            Action::Connect { .. }
            | Action::CancelConnect { .. }
            | Action::Prepare { .. }
            | Action::Disconnect { .. }
            | Action::Probe { .. }
            | Action::ScheduleTimer { .. }
            | Action::CancelTimer { .. }
            | Action::NotifyWaiters { .. }
            | Action::DeliverFailure { .. }
            | Action::CancelWaiters { .. }
            | Action::FinishStopping { .. } => false,
        }
    }
}

/// Actions inline before an [`Actions`] list spills to the heap. No input makes
/// the machine emit more than this many (a prepare step that fails: `CancelTimer`,
/// `Disconnect`, `ScheduleTimer`, `AttemptFailed`, `DeliverFailure`, and
/// `RetryScheduled`, or no `ScheduleTimer` and `GaveUp` instead), so action lists
/// never allocate.
pub const INLINE_ACTIONS: usize = 6;

/// The ordered list of actions one input produces.
///
/// Perform them in order. It derefs to a slice and can be iterated by value.
#[must_use = "the driver must perform every action, in order"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actions<E>(SmallVec<[Action<E>; INLINE_ACTIONS]>);

impl<E> Actions<E> {
    /// An empty list.
    pub fn new() -> Self {
        Actions(SmallVec::new())
    }

    pub(crate) fn push(&mut self, action: Action<E>) {
        self.0.push(action);
    }

    /// The actions as a slice.
    pub fn as_slice(&self) -> &[Action<E>] {
        &self.0
    }

    /// Takes the actions out in order, leaving the list empty and its storage in
    /// place for the next input (see [`Machine::handle_into`](crate::Machine::handle_into)).
    pub fn drain(&mut self) -> smallvec::Drain<'_, [Action<E>; INLINE_ACTIONS]> {
        self.0.drain(..)
    }

    /// Removes every action, keeping the storage.
    pub fn clear(&mut self) {
        self.0.clear();
    }
}

impl<E> Default for Actions<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Deref for Actions<E> {
    type Target = [Action<E>];
    fn deref(&self) -> &[Action<E>] {
        &self.0
    }
}

impl<E> IntoIterator for Actions<E> {
    type Item = Action<E>;
    type IntoIter = smallvec::IntoIter<[Action<E>; INLINE_ACTIONS]>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, E> IntoIterator for &'a Actions<E> {
    type Item = &'a Action<E>;
    type IntoIter = core::slice::Iter<'a, Action<E>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<E> FromIterator<Action<E>> for Actions<E> {
    fn from_iter<I: IntoIterator<Item = Action<E>>>(iter: I) -> Self {
        Actions(iter.into_iter().collect())
    }
}
