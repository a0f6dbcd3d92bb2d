//! What a service does, as typed [`Event`]s, and why a connection was lost
//! ([`Loss`]).
//!
//! [`ClientService::events`](super::ClientService::events) subscribes. Every
//! subscriber that keeps up sees every event, in order: a quick
//! `Connected → Lost → Connected` flip is three events, never coalesced (use
//! [`StateWatch`](super::StateWatch) for the latest state instead). The events
//! wait in a ring of fixed size ([`Builder::events_capacity`](super::Builder::events_capacity),
//! 64 by default): a subscriber that falls further behind loses the oldest and
//! is told how many with [`Event::Missed`]; it never blocks the service and never
//! makes it hold more than the ring. While nobody subscribes, nothing is kept.

use core::fmt;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::sync::Arc;

use futures_util::Stream;

use super::error::Ended;
use crate::actions::{Failure, Panic};
use crate::ids::AttemptId;

/// Why an established connection was lost: from [`Event::Lost`] and
/// [`ClientService::last_loss`](super::ClientService::last_loss).
#[derive(Clone)]
#[non_exhaustive]
pub enum Loss {
    /// The connection's driver future ended without an error: for a
    /// [`stream`](super::stream), the peer closed it (EOF).
    Closed,
    /// The connection's driver future ended with this error (a `Result` driver
    /// such as tokio-postgres's returned `Err`; a stream was reset).
    Error(Arc<dyn std::error::Error + Send + Sync>),
    /// The connection's driver future, or its handle's `Clone`, panicked.
    Panicked(Panic),
    /// [`ClientService::disconnect`](super::ClientService::disconnect) closed it.
    Disconnected,
    /// A liveness probe failed with this error (its `Display`, whole chain).
    ProbeFailed(Arc<str>),
    /// A liveness probe did not answer in time.
    ProbeTimedOut,
}

impl fmt::Debug for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::Closed => f.write_str("Closed"),
            Loss::Error(error) => f.debug_tuple("Error").field(error).finish(),
            Loss::Panicked(panic) => f.debug_tuple("Panicked").field(panic).finish(),
            Loss::Disconnected => f.write_str("Disconnected"),
            Loss::ProbeFailed(error) => f.debug_tuple("ProbeFailed").field(error).finish(),
            Loss::ProbeTimedOut => f.write_str("ProbeTimedOut"),
        }
    }
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::Closed => f.write_str("the connection was closed by the peer"),
            Loss::Error(error) => {
                f.write_str("the connection failed")?;
                if f.alternate() {
                    write!(f, ": {error:#}")?;
                }
                Ok(())
            }
            Loss::Panicked(panic) => fmt::Display::fmt(panic, f),
            Loss::Disconnected => f.write_str("the connection was closed by `disconnect`"),
            Loss::ProbeFailed(error) => write!(f, "the liveness probe failed: {error}"),
            Loss::ProbeTimedOut => f.write_str("the liveness probe timed out"),
        }
    }
}

impl std::error::Error for Loss {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Loss::Error(error) => Some(&**error),
            Loss::Closed
            | Loss::Panicked(_)
            | Loss::Disconnected
            | Loss::ProbeFailed(_)
            | Loss::ProbeTimedOut => None,
        }
    }
}

/// What a connection's driver future may return: nothing (`()`), or a `Result`
/// whose error becomes the [`Loss`] reason. Implemented for `()` and for every
/// `Result<T, E>` whose `E` is an error (tokio-postgres's, hyper's and h2's
/// connections return one; [`StreamDriver`](super::StreamDriver) returns
/// `io::Result<()>`).
#[diagnostic::on_unimplemented(
    message = "a connection's driver future must return `()` or a `Result<_, impl Error>`",
    label = "this driver future's output is `{Self}`"
)]
pub trait DriverOutput {
    /// The loss this output means.
    fn into_loss(self) -> Loss;
}

impl DriverOutput for () {
    fn into_loss(self) -> Loss {
        Loss::Closed
    }
}

impl<T, E: std::error::Error + Send + Sync + 'static> DriverOutput for Result<T, E> {
    fn into_loss(self) -> Loss {
        match self {
            Ok(_) => Loss::Closed,
            Err(error) => Loss::Error(Arc::new(error)),
        }
    }
}

/// One thing a service did; from [`ClientService::events`](super::ClientService::events).
#[non_exhaustive]
pub enum Event<E> {
    /// An attempt to connect started.
    AttemptStarted {
        /// The attempt (it names the connection, if it makes one).
        attempt: AttemptId,
    },
    /// An attempt failed (its connect, its prepare step, a timeout, a panic).
    AttemptFailed {
        /// The attempt.
        attempt: AttemptId,
        /// Why.
        failure: Arc<Failure<E>>,
        /// Consecutive failures so far, this one included.
        consecutive_failures: u32,
    },
    /// The next attempt starts after `delay`.
    RetryScheduled {
        /// How long from now.
        delay: Duration,
        /// Consecutive failures so far (what the retry policy was asked about).
        failed_attempts: u32,
    },
    /// A connection is up (and prepared): waiters get it from now on.
    Connected {
        /// The connection (named by its attempt).
        attempt: AttemptId,
        /// 1 for the service's first connection, 2 for the next, … : a request
        /// tagged with the generation it was sent on can tell whether the
        /// connection it went out on is still the current one.
        generation: u64,
    },
    /// The connection was lost (not closed by a stop).
    Lost {
        /// The connection.
        attempt: AttemptId,
        /// Why.
        reason: Loss,
        /// It was lost before it became healthy
        /// ([`Builder::reset_backoff_after`](super::Builder::reset_backoff_after)):
        /// a flap, counted toward the backoff (in `consecutive_failures`) instead
        /// of resetting it.
        flap: bool,
    },
    /// The service gave up: the retry policy did, or (`fatal`) failures that
    /// retrying will not fix did ([`Builder::fatal_if`](super::Builder::fatal_if)).
    /// The service is stopped until started again.
    GaveUp {
        /// Consecutive failures when it gave up.
        failed_attempts: u32,
        /// The last failure (none if it gave up after losing a connection).
        last: Option<Arc<Failure<E>>>,
        /// It gave up on fatal failures, without asking the retry policy.
        fatal: bool,
    },
    /// A stop finished: nothing is left open.
    Stopped,
    /// The service's task ended for good; this is the last event.
    Ended(Ended),
    /// This subscriber fell behind and missed this many events (the oldest ones).
    Missed {
        /// How many.
        events: u64,
    },
}

impl<E> Clone for Event<E> {
    fn clone(&self) -> Self {
        match self {
            Event::AttemptStarted { attempt } => Event::AttemptStarted { attempt: *attempt },
            Event::AttemptFailed {
                attempt,
                failure,
                consecutive_failures,
            } => Event::AttemptFailed {
                attempt: *attempt,
                failure: Arc::clone(failure),
                consecutive_failures: *consecutive_failures,
            },
            Event::RetryScheduled {
                delay,
                failed_attempts,
            } => Event::RetryScheduled {
                delay: *delay,
                failed_attempts: *failed_attempts,
            },
            Event::Connected {
                attempt,
                generation,
            } => Event::Connected {
                attempt: *attempt,
                generation: *generation,
            },
            Event::Lost {
                attempt,
                reason,
                flap,
            } => Event::Lost {
                attempt: *attempt,
                reason: reason.clone(),
                flap: *flap,
            },
            Event::GaveUp {
                failed_attempts,
                last,
                fatal,
            } => Event::GaveUp {
                failed_attempts: *failed_attempts,
                last: last.clone(),
                fatal: *fatal,
            },
            Event::Stopped => Event::Stopped,
            Event::Ended(ended) => Event::Ended(ended.clone()),
            Event::Missed { events } => Event::Missed { events: *events },
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for Event<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::AttemptStarted { attempt } => f
                .debug_struct("AttemptStarted")
                .field("attempt", attempt)
                .finish(),
            Event::AttemptFailed {
                attempt,
                failure,
                consecutive_failures,
            } => f
                .debug_struct("AttemptFailed")
                .field("attempt", attempt)
                .field("failure", failure)
                .field("consecutive_failures", consecutive_failures)
                .finish(),
            Event::RetryScheduled {
                delay,
                failed_attempts,
            } => f
                .debug_struct("RetryScheduled")
                .field("delay", delay)
                .field("failed_attempts", failed_attempts)
                .finish(),
            Event::Connected {
                attempt,
                generation,
            } => f
                .debug_struct("Connected")
                .field("attempt", attempt)
                .field("generation", generation)
                .finish(),
            Event::Lost {
                attempt,
                reason,
                flap,
            } => f
                .debug_struct("Lost")
                .field("attempt", attempt)
                .field("reason", reason)
                .field("flap", flap)
                .finish(),
            Event::GaveUp {
                failed_attempts,
                last,
                fatal,
            } => f
                .debug_struct("GaveUp")
                .field("failed_attempts", failed_attempts)
                .field("last", last)
                .field("fatal", fatal)
                .finish(),
            Event::Stopped => f.write_str("Stopped"),
            Event::Ended(ended) => f.debug_tuple("Ended").field(ended).finish(),
            Event::Missed { events } => f.debug_struct("Missed").field("events", events).finish(),
        }
    }
}

/// The sending side, kept by the service; made by the first subscription.
pub(crate) struct Publisher<E> {
    tx: async_broadcast::Sender<Event<E>>,
    /// Keeps the channel open while nobody subscribes (nothing is queued then).
    _inactive: async_broadcast::InactiveReceiver<Event<E>>,
}

/// One line a person can read, e.g. `attempt#3 failed (2 in a row): connection
/// attempt failed: connection refused` or `attempt#4 lost (a flap): the
/// connection was closed by the peer`. Causes are printed whole (`{:#}`), so a
/// log line says why without walking `source()`.
impl<E: fmt::Display> fmt::Display for Event<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::AttemptStarted { attempt } => write!(f, "{attempt} started"),
            Event::AttemptFailed {
                attempt,
                failure,
                consecutive_failures,
            } => write!(
                f,
                "{attempt} failed ({consecutive_failures} in a row): {failure:#}"
            ),
            Event::RetryScheduled {
                delay,
                failed_attempts,
            } => write!(
                f,
                "retry in {delay:?} after {failed_attempts} consecutive failure{}",
                if *failed_attempts == 1 { "" } else { "s" }
            ),
            Event::Connected {
                attempt,
                generation,
            } => write!(f, "{attempt} connected (connection #{generation})"),
            Event::Lost {
                attempt,
                reason,
                flap,
            } => {
                write!(f, "{attempt} lost")?;
                if *flap {
                    f.write_str(" (a flap)")?;
                }
                write!(f, ": {reason:#}")
            }
            Event::GaveUp {
                failed_attempts,
                last,
                fatal,
            } => {
                let who = if *fatal {
                    "gave up on a failure retrying will not fix"
                } else {
                    "the retry policy gave up"
                };
                write!(f, "{who} after {failed_attempts} consecutive failures")?;
                match last {
                    Some(last) => write!(f, ": {last:#}"),
                    None => Ok(()),
                }
            }
            Event::Stopped => f.write_str("stopped"),
            Event::Ended(ended) => write!(f, "the service ended: {ended}"),
            Event::Missed { events } => {
                write!(f, "{events} events missed (the subscriber fell behind)")
            }
        }
    }
}

impl<E> Publisher<E> {
    pub(crate) fn new(capacity: usize) -> Publisher<E> {
        let (mut tx, rx) = async_broadcast::broadcast(capacity.max(1));
        // A subscriber that falls behind loses the oldest events, never blocks us.
        tx.set_overflow(true);
        tx.set_await_active(false);
        Publisher {
            tx,
            _inactive: rx.deactivate(),
        }
    }

    pub(crate) fn subscribe(&self) -> Events<E> {
        Events {
            rx: self.tx.new_receiver(),
        }
    }

    /// Sends an event to every subscriber; never waits.
    pub(crate) fn publish(&self, event: Event<E>) {
        // Full: the oldest event was dropped for laggards (they get `Missed`).
        // Inactive or closed: nobody listens.
        let _ = self.tx.try_broadcast(event);
    }

    /// No more events: subscribers see the end of the stream.
    pub(crate) fn close(&self) {
        self.tx.close();
    }
}

/// A subscription to a service's events: a [`Stream`] of [`Event`]s, from
/// [`ClientService::events`](super::ClientService::events). It ends after
/// [`Event::Ended`].
///
/// A subscriber that keeps up sees every event, in order: a quick
/// `Connected → Lost → Connected` flip is three events, never coalesced (use
/// [`StateWatch`](super::StateWatch) for the latest state instead). Events wait
/// in a ring of fixed size
/// ([`Builder::events_capacity`](super::Builder::events_capacity), 64 by default):
/// a subscriber that falls further behind loses the oldest and is told how many
/// with [`Event::Missed`]; it never blocks the service and never makes it hold
/// more than the ring. While nobody subscribes, nothing is kept.
#[must_use = "streams do nothing unless polled"]
pub struct Events<E> {
    rx: async_broadcast::Receiver<Event<E>>,
}

impl<E> fmt::Debug for Events<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("queued", &self.rx.len())
            .finish()
    }
}

impl<E> Stream for Events<E> {
    type Item = Event<E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event<E>>> {
        use async_broadcast::RecvError;
        // `poll_recv` reports an overflow (the receiver's `Stream` impl skips it).
        Poll::Ready(
            match core::task::ready!(Pin::new(&mut self.rx).poll_recv(cx)) {
                Some(Ok(event)) => Some(event),
                Some(Err(RecvError::Overflowed(events))) => Some(Event::Missed { events }),
                Some(Err(RecvError::Closed)) | None => None,
            },
        )
    }
}
