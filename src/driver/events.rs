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
//! makes it hold more than the ring.
//!
//! Subscribing does not depend on the order of `build()`, `start()` and
//! `events()`: until the service is first subscribed to, it keeps its events in a
//! ring of the same size, and the first subscription gets them (preceded by
//! [`Event::Missed`] if the ring dropped some), so `start()` then `events()` sees
//! the first `AttemptStarted`. From then on nothing is kept for later
//! subscribers: they see the events after they subscribed.

use core::fmt;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::boxed::Box;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use once_cell::race::OnceBox;

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
/// `Result<T, E>` whose `E` is an error (tokio-postgres's connection returns
/// one; [`StreamDriver`](super::StreamDriver) returns `io::Result<()>`).
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
        /// For a service built with
        /// [`builder_with_endpoints`](super::ClientService::builder_with_endpoints):
        /// the index of the endpoint it goes to (see
        /// [`Endpoints::get`](super::Endpoints::get)); `None` for other services.
        endpoint: Option<usize>,
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
        consecutive_failures: u32,
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
        consecutive_failures: u32,
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
            Event::AttemptStarted { attempt, endpoint } => Event::AttemptStarted {
                attempt: *attempt,
                endpoint: *endpoint,
            },
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
                consecutive_failures,
            } => Event::RetryScheduled {
                delay: *delay,
                consecutive_failures: *consecutive_failures,
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
                consecutive_failures,
                last,
                fatal,
            } => Event::GaveUp {
                consecutive_failures: *consecutive_failures,
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
            Event::AttemptStarted { attempt, endpoint } => f
                .debug_struct("AttemptStarted")
                .field("attempt", attempt)
                .field("endpoint", endpoint)
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
                consecutive_failures,
            } => f
                .debug_struct("RetryScheduled")
                .field("delay", delay)
                .field("consecutive_failures", consecutive_failures)
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
                consecutive_failures,
                last,
                fatal,
            } => f
                .debug_struct("GaveUp")
                .field("consecutive_failures", consecutive_failures)
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
            Event::AttemptStarted {
                attempt,
                endpoint: None,
            } => write!(f, "{attempt} started"),
            Event::AttemptStarted {
                attempt,
                endpoint: Some(endpoint),
            } => write!(f, "{attempt} started (endpoint {endpoint})"),
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
                consecutive_failures,
            } => write!(
                f,
                "retry in {delay:?} after {consecutive_failures} consecutive failure{}",
                if *consecutive_failures == 1 { "" } else { "s" }
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
                consecutive_failures,
                last,
                fatal,
            } => {
                let who = if *fatal {
                    "gave up on a failure retrying will not fix"
                } else {
                    "the retry policy gave up"
                };
                write!(f, "{who} after {consecutive_failures} consecutive failures")?;
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

/// The service's side of its events: the events of a service that has never been
/// subscribed to are kept in a ring (at most the events capacity; the oldest are
/// dropped and counted), and handed to the first subscriber, so that subscribing
/// right after `start()` misses nothing; from the first subscription on, events go
/// through the broadcast [`Publisher`] only, and nothing more is kept for later
/// subscribers.
pub(crate) struct EventSink<E> {
    /// Made by the first subscription (out of line: a service never subscribed to
    /// keeps only a null pointer for it).
    /// (`OnceBox`: one pointer, where a `OnceLock` of a box takes two words; it
    /// is set only under `early`'s lock, so no two threads race to make it.)
    publisher: OnceBox<Publisher<E>>,
    /// The events before the first subscription. Also taken by a publish that
    /// finds no publisher, so that the first subscriber's backlog and the live
    /// events after it cannot be reordered.
    early: Mutex<Early<E>>,
}

struct Early<E> {
    /// The events after the head, oldest first.
    events: VecDeque<Event<E>>,
    /// Dropped from the front of a full ring.
    missed: u64,
    /// The first events, while they are the two every service begins with: its
    /// attempt started (no endpoint), then connected. They are kept here, as plain
    /// numbers, so that an idle service never subscribed to holds no block for
    /// them; the ring holds what comes after (the head stops growing once the
    /// ring is not empty, so the order is head, then ring).
    head: Head,
    /// How many events the head holds (0 to 2).
    head_len: u8,
    /// The service ended before anyone subscribed: no more events.
    closed: bool,
    /// The events capacity (kept here, where it fits in the padding).
    capacity: u32,
}

/// [`Early::head`]'s events: `AttemptStarted { attempt, endpoint: None }`, then
/// `Connected { attempt, generation }` ([`Early::head_len`] of them).
#[derive(Clone, Copy)]
struct Head {
    attempt: AttemptId,
    generation: u64,
}

impl<E> Early<E> {
    /// Takes `event` into the head if the ring is empty and it is the head's next
    /// one; gives it back otherwise.
    fn take_in(&mut self, event: Event<E>) -> Option<Event<E>> {
        if !self.events.is_empty() {
            return Some(event);
        }
        match (self.head_len, &event) {
            (
                0,
                Event::AttemptStarted {
                    attempt,
                    endpoint: None,
                },
            ) => {
                self.head.attempt = *attempt;
                self.head_len = 1;
                None
            }
            (
                1,
                Event::Connected {
                    attempt,
                    generation,
                },
            ) if *attempt == self.head.attempt => {
                self.head.generation = *generation;
                self.head_len = 2;
                None
            }
            _ => Some(event),
        }
    }

    /// Moves the head's events to the front of the ring, in order.
    fn spill(&mut self) {
        let Head {
            attempt,
            generation,
        } = self.head;
        if self.head_len >= 2 {
            self.events.push_front(Event::Connected {
                attempt,
                generation,
            });
        }
        if self.head_len >= 1 {
            self.events.push_front(Event::AttemptStarted {
                attempt,
                endpoint: None,
            });
        }
        self.head_len = 0;
    }
}

impl<E> EventSink<E> {
    pub(crate) fn new(capacity: usize) -> EventSink<E> {
        EventSink {
            publisher: OnceBox::new(),
            early: Mutex::new(Early {
                events: VecDeque::new(),
                missed: 0,
                head: Head {
                    attempt: AttemptId::from_raw(0),
                    generation: 0,
                },
                head_len: 0,
                closed: false,
                // A ring of more than 4 billion events is capped there.
                capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            }),
        }
    }

    fn early(&self) -> MutexGuard<'_, Early<E>> {
        // Only plain data is changed under this lock (events are dropped outside it).
        self.early.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends an event to every subscriber, or keeps it for the first one; never
    /// waits for a subscriber.
    pub(crate) fn publish(&self, event: Event<E>) {
        if let Some(publisher) = self.publisher.get() {
            return publisher.publish(event);
        }
        let mut early = self.early();
        if let Some(publisher) = self.publisher.get() {
            drop(early);
            return publisher.publish(event);
        }
        if early.closed {
            drop(early);
            contain_drop(event);
            return;
        }
        let ring = &mut *early;
        let kept = usize::from(ring.head_len) + ring.events.len();
        let dropped = if kept >= ring.capacity as usize {
            // Full: the oldest goes (from the head, if it has any).
            ring.spill();
            ring.missed += 1;
            ring.events.pop_front()
        } else {
            None
        };
        if let Some(event) = ring.take_in(event) {
            ring.events.push_back(event);
        }
        drop(early);
        // What the dropped event held (your error, in a failure) is dropped
        // outside the lock, and a panic in its `Drop` is contained.
        contain_drop(dropped);
    }

    /// Gives back the spare room of the ring kept for the first subscriber (an
    /// idle service keeps its few events in a block of their size).
    pub(crate) fn shrink(&self) {
        if self.publisher.get().is_some() {
            return;
        }
        let mut early = self.early();
        if early.events.capacity() > early.events.len() {
            early.events.shrink_to_fit();
        }
    }

    /// No more events: subscribers see the end of the stream (after what is
    /// queued for them).
    pub(crate) fn close(&self) {
        if let Some(publisher) = self.publisher.get() {
            return publisher.close();
        }
        let mut early = self.early();
        match self.publisher.get() {
            Some(publisher) => publisher.close(),
            None => early.closed = true,
        }
    }

    /// A new subscription. The first one gets the events kept so far (preceded by
    /// [`Event::Missed`] if the ring dropped some), then the live ones.
    pub(crate) fn subscribe(&self) -> Events<E> {
        if let Some(publisher) = self.publisher.get() {
            return publisher.subscribe();
        }
        let mut early = self.early();
        if let Some(publisher) = self.publisher.get() {
            drop(early);
            return publisher.subscribe();
        }
        // The first subscription. The publisher is made visible only once the
        // backlog is in its channel, so a live event cannot overtake it (a publish
        // meanwhile waits for the lock, then finds the publisher).
        let capacity = early.capacity as usize;
        let publisher = Publisher::new(capacity);
        let events = publisher.subscribe();
        early.spill();
        let mut backlog = core::mem::take(&mut early.events);
        let mut missed = early.missed;
        let mut dropped = None;
        if missed > 0 && backlog.len() >= capacity {
            // Room for the `Missed` notice.
            dropped = backlog.pop_front();
            missed += 1;
        }
        if missed > 0 {
            publisher.publish(Event::Missed { events: missed });
        }
        for event in backlog.drain(..) {
            publisher.publish(event);
        }
        if early.closed {
            publisher.close();
        }
        // The publisher is set only here, under the lock.
        let _ = self.publisher.set(Box::new(publisher));
        drop(early);
        contain_drop(dropped);
        drop(backlog); // empty: frees the ring
        events
    }
}

/// Drops a value that may hold your error (an event's failure) and ignores a
/// panic in its `Drop`, as the service does for every user value it drops.
fn contain_drop<T>(value: T) {
    if let Err(_payload) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(value)))
    {
        super::log::event!(
            error,
            panic = %super::error::panic_message(&*_payload),
            "a user value panicked when dropped"
        );
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
/// more than the ring.
///
/// The first subscription also gets the events from before it (the service keeps
/// them, at most a ring's worth, until it is first subscribed to), so it does not
/// matter whether `events()` is called before or after `start()`. Later
/// subscriptions see the events after they subscribed.
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
