//! Everything that can happen to the machine, as one enum.
//!
//! Drivers usually call the machine's methods ([`Machine::start`](crate::Machine::start),
//! [`Machine::connection_made`](crate::Machine::connection_made), …); the `Input` enum
//! is the same set as data, for property tests, fuzzers and trace recorders, fed with
//! [`Machine::handle`](crate::Machine::handle).

use core::num::NonZeroU32;
use core::time::Duration;

use crate::actions::Panic;
use crate::ids::{AttemptId, TimerId, WaiterId};

/// One input to the [`Machine`](crate::Machine).
///
/// Reports (everything but the first five, the commands) name the attempt,
/// connection or timer they are about, so the machine can tell a current report from a stale one
/// ([D1](crate::contract#d1-identity)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<E> {
    /// Start (or restart) the service.
    Start,
    /// Stop the service. Gets a [`StopId`](crate::StopId), finished by
    /// [`Action::FinishStopping`](crate::Action::FinishStopping) once nothing is left open.
    Stop,
    /// Ask for the connection. Gets a [`WaiterId`], later answered by
    /// `NotifyWaiters`, `DeliverFailure` or `CancelWaiters`.
    WhenConnected {
        /// Fail this waiter when this many failed attempts have happened since it
        /// registered (the attempt in flight included). `None`: never fail on failures.
        fail_after_failures: Option<NonZeroU32>,
    },
    /// Withdraw a waiter (its future was dropped). It is forgotten, never answered.
    CancelWaiter {
        /// The waiter.
        waiter: WaiterId,
    },
    /// Connect now instead of waiting out the retry delay (a network change, an
    /// operator's command). Only `Waiting` connects; see
    /// [`Machine::reconnect_now`](crate::Machine::reconnect_now) for every state.
    ReconnectNow {
        /// Also reset the count of consecutive failures to 0 (in `Waiting`,
        /// `Connecting` and `Connected`), so the backoff starts over.
        reset_backoff: bool,
    },
    /// The attempt produced a connection.
    ConnectionMade {
        /// The attempt.
        attempt: AttemptId,
    },
    /// The attempt failed.
    ConnectionFailed {
        /// The attempt.
        attempt: AttemptId,
        /// Why; moved into the `AttemptFailed` action that reports it.
        error: E,
    },
    /// The attempt the machine asked to cancel (`CancelConnect`) is gone without a
    /// connection.
    ConnectCancelled {
        /// The attempt.
        attempt: AttemptId,
    },
    /// The prepare step accepted the connection.
    PrepareSucceeded {
        /// The connection (named by its attempt).
        attempt: AttemptId,
    },
    /// The prepare step rejected the connection. The machine will ask to close it
    /// ([D2](crate::contract#d2-a-connection-rejected-by-prepare-is-closed)).
    PrepareFailed {
        /// The connection (named by its attempt).
        attempt: AttemptId,
        /// Why; moved into the `AttemptFailed` action that reports it.
        error: E,
    },
    /// The current attempt, or the prepare step of its connection, failed with an
    /// error that retrying will not fix (a wrong password, a name that does not
    /// resolve, a certificate the client rejects): the driver classifies, the
    /// machine acts. Like `ConnectionFailed` ([`Failure::Connect`](crate::Failure::Connect))
    /// for an attempt in flight, like `PrepareFailed`
    /// ([`Failure::Prepare`](crate::Failure::Prepare), the connection is closed)
    /// for a connection being prepared; once
    /// [`Config::give_up_after_fatal`](crate::Config::give_up_after_fatal)
    /// consecutive failures were fatal, the machine gives up without asking the
    /// retry policy. See [`Machine::attempt_failed_fatally`](crate::Machine::attempt_failed_fatally).
    AttemptFailedFatally {
        /// The attempt (or the connection being prepared, named by its attempt).
        attempt: AttemptId,
        /// Why; moved into the `AttemptFailed` action that reports it.
        error: E,
    },
    /// User code run for the current attempt (its connector) or connection (its
    /// prepare step or driver, while it is being prepared) panicked, and what it ran
    /// is gone. A failed attempt ([`Failure::Panicked`](crate::Failure::Panicked));
    /// a connection that was being prepared is closed (`Disconnect`) as when its
    /// prepare step fails. An established connection's loss is reported with
    /// `ConnectionClosed` instead.
    Panicked {
        /// The attempt (or the connection, named by its attempt).
        attempt: AttemptId,
        /// What panicked, and its message.
        panic: Panic,
    },
    /// The probe the machine asked for ([`Action::Probe`](crate::Action::Probe))
    /// got its answer: the connection is alive.
    ProbeSucceeded {
        /// The connection (named by its attempt).
        attempt: AttemptId,
    },
    /// The probe the machine asked for failed: the connection is dead. The
    /// machine closes it (`Disconnect`) and counts a loss.
    ProbeFailed {
        /// The connection (named by its attempt).
        attempt: AttemptId,
    },
    /// The established connection received something (a byte, a message) since
    /// this was last reported, the last of it `quiet_for` ago: it is alive and
    /// not idle. With probes, the next probe is due `interval` after that last
    /// inbound activity: when the armed interval fires, only the rest of an
    /// interval (`interval - quiet_for`) is armed, or the probe runs at once if
    /// nothing is left; an outstanding probe is answered the same way. Without
    /// probes, nothing. See
    /// [`Machine::connection_active`](crate::Machine::connection_active).
    ConnectionActive {
        /// The connection (named by its attempt).
        attempt: AttemptId,
        /// How long ago, as of this report, the connection last received
        /// something (zero: just now). The machine reads no clock: the driver
        /// measures it.
        quiet_for: Duration,
    },
    /// The connection is closed: lost, or closed because the machine asked (`Disconnect`).
    ConnectionClosed {
        /// The connection (named by its attempt).
        attempt: AttemptId,
    },
    /// A timer expired. For the retry timer this is Twisted's `reconnect`.
    TimerFired {
        /// The timer.
        timer: TimerId,
    },
}

impl<E> Input<E> {
    /// The input's kind (its name without its data).
    pub fn kind(&self) -> InputKind {
        match self {
            Input::Start => InputKind::Start,
            Input::Stop => InputKind::Stop,
            Input::WhenConnected { .. } => InputKind::WhenConnected,
            Input::CancelWaiter { .. } => InputKind::CancelWaiter,
            Input::ReconnectNow { .. } => InputKind::ReconnectNow,
            Input::ConnectionMade { .. } => InputKind::ConnectionMade,
            Input::ConnectionFailed { .. } => InputKind::ConnectionFailed,
            Input::ConnectCancelled { .. } => InputKind::ConnectCancelled,
            Input::PrepareSucceeded { .. } => InputKind::PrepareSucceeded,
            Input::PrepareFailed { .. } => InputKind::PrepareFailed,
            Input::AttemptFailedFatally { .. } => InputKind::AttemptFailedFatally,
            Input::Panicked { .. } => InputKind::Panicked,
            Input::ProbeSucceeded { .. } => InputKind::ProbeSucceeded,
            Input::ProbeFailed { .. } => InputKind::ProbeFailed,
            Input::ConnectionActive { .. } => InputKind::ConnectionActive,
            Input::ConnectionClosed { .. } => InputKind::ConnectionClosed,
            Input::TimerFired { .. } => InputKind::TimerFired,
        }
    }
}

/// The kind of an [`Input`], for error messages and traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InputKind {
    /// [`Input::Start`].
    Start,
    /// [`Input::Stop`].
    Stop,
    /// [`Input::WhenConnected`].
    WhenConnected,
    /// [`Input::CancelWaiter`].
    CancelWaiter,
    /// [`Input::ReconnectNow`].
    ReconnectNow,
    /// [`Input::ConnectionMade`].
    ConnectionMade,
    /// [`Input::ConnectionFailed`].
    ConnectionFailed,
    /// [`Input::ConnectCancelled`].
    ConnectCancelled,
    /// [`Input::PrepareSucceeded`].
    PrepareSucceeded,
    /// [`Input::PrepareFailed`].
    PrepareFailed,
    /// [`Input::AttemptFailedFatally`].
    AttemptFailedFatally,
    /// [`Input::Panicked`].
    Panicked,
    /// [`Input::ProbeSucceeded`].
    ProbeSucceeded,
    /// [`Input::ProbeFailed`].
    ProbeFailed,
    /// [`Input::ConnectionActive`].
    ConnectionActive,
    /// [`Input::ConnectionClosed`].
    ConnectionClosed,
    /// [`Input::TimerFired`].
    TimerFired,
}

impl InputKind {
    /// The input's name as the method that feeds it (`"connection_made"`, …).
    pub const fn name(self) -> &'static str {
        match self {
            InputKind::Start => "start",
            InputKind::Stop => "stop",
            InputKind::WhenConnected => "when_connected",
            InputKind::CancelWaiter => "cancel_waiter",
            InputKind::ReconnectNow => "reconnect_now",
            InputKind::ConnectionMade => "connection_made",
            InputKind::ConnectionFailed => "connection_failed",
            InputKind::ConnectCancelled => "connect_cancelled",
            InputKind::PrepareSucceeded => "prepare_succeeded",
            InputKind::PrepareFailed => "prepare_failed",
            InputKind::AttemptFailedFatally => "attempt_failed_fatally",
            InputKind::Panicked => "panicked",
            InputKind::ProbeSucceeded => "probe_succeeded",
            InputKind::ProbeFailed => "probe_failed",
            InputKind::ConnectionActive => "connection_active",
            InputKind::ConnectionClosed => "connection_closed",
            InputKind::TimerFired => "timer_fired",
        }
    }
}

impl core::fmt::Display for InputKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}
