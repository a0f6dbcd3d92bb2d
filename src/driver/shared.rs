//! What the handles and the task share: a mailbox of requests, the service's
//! published status, and the news that the task has ended.
//!
//! Handles never touch the machine: they push a [`Command`] and wake the task. The
//! task owns the machine, performs the commands in order, and publishes a
//! [`Status`] after every step. The mailbox's lock is held only to push, take or
//! read plain data: no user code (connector, prepare, connection futures, the
//! retry policy, a handle's `Clone` or `Drop`) ever runs under it, so user code that
//! calls back into the service cannot deadlock it.

use core::future::Future;
use core::num::NonZeroU32;
use core::pin::Pin;
use core::task::Waker;
use core::time::Duration;
use std::boxed::Box;
use std::collections::VecDeque;
use std::string::String;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_channel::oneshot;

use super::error::{Ended, Error};
use super::events::{EventSink, Events, Loss};
use super::watch::Watch;
use crate::actions::Failure;
use crate::ids::AttemptId;
use crate::machine::{Counters, State};

/// A waiter's answer: the connection (its attempt id and a clone of its handle), or
/// why there is none.
pub(crate) type Answer<H, E> = Result<(AttemptId, H), Error<E>>;
pub(crate) type WaiterTx<H, E> = oneshot::Sender<Answer<H, E>>;
pub(crate) type StopTx = oneshot::Sender<()>;

/// A request from a handle to the task, performed in the order pushed.
pub(crate) enum Command<H, E> {
    /// `ClientService::start`.
    Start,
    /// `ClientService::stop`: the sender is answered when the stop finishes.
    Stop(StopTx),
    /// `ClientService::when_connected`: `ticket` names it for a later withdrawal.
    WhenConnected {
        ticket: u64,
        fail_after: Option<NonZeroU32>,
        tx: WaiterTx<H, E>,
    },
    /// A `WhenConnected` future was dropped unanswered.
    Withdraw { ticket: u64 },
    /// `ClientService::disconnect`.
    Disconnect(AttemptId),
    /// `ClientService::reconnect_now`.
    ReconnectNow { reset_backoff: bool },
    /// The last `ClientService` handle was dropped: stop, then end the task.
    Shutdown,
}

/// What the service looks like after the task's last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) state: State,
    pub(crate) counters: Counters,
    pub(crate) consecutive_failures: u32,
    pub(crate) pending_waiters: usize,
    /// The current connection (reported made: being prepared, or connected).
    pub(crate) connection: Option<AttemptId>,
}

impl Status {
    pub(crate) const NEW: Status = Status {
        state: State::Init,
        counters: Counters::new(),
        consecutive_failures: 0,
        pending_waiters: 0,
        connection: None,
    };
}

pub(crate) struct Mailbox<H, E> {
    pub(crate) commands: VecDeque<Command<H, E>>,
    /// The task's waker, once it has been polled.
    pub(crate) task: Option<Waker>,
    pub(crate) status: Status,
    /// Set once, when the task ends; nothing is pushed after.
    pub(crate) ended: Option<Ended>,
    /// The next `WhenConnected` ticket.
    pub(crate) next_ticket: u64,
    /// Made by the first `watch()`: until then nothing for it is on the heap.
    pub(crate) watch: Option<Arc<Watch>>,
    /// The failure of the last failed attempt.
    pub(crate) last_failure: Option<Arc<Failure<E>>>,
    /// Why the last established connection was lost.
    pub(crate) last_loss: Option<Loss>,
}

/// Sleeps on the service's runtime: what a handle needs for a waiter's time limit
/// ([`WhenConnected::within`](super::WhenConnected::within)), kept once per service.
pub(crate) type SleepFn =
    Box<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

pub(crate) struct Shared<H, E> {
    mailbox: Mutex<Mailbox<H, E>>,
    /// Sleeps on the service's runtime.
    sleep: SleepFn,
    /// The service's name, for `tracing` and `Debug`.
    name: Option<String>,
    /// The events: kept for the first subscriber, then broadcast.
    events: EventSink<E>,
}

impl<H, E> Shared<H, E> {
    pub(crate) fn new(
        name: Option<String>,
        events_capacity: usize,
        sleep: SleepFn,
    ) -> Shared<H, E> {
        Shared {
            name,
            sleep,
            events: EventSink::new(events_capacity),
            mailbox: Mutex::new(Mailbox {
                commands: VecDeque::new(),
                task: None,
                status: Status::NEW,
                ended: None,
                next_ticket: 0,
                watch: None,
                last_failure: None,
                last_loss: None,
            }),
        }
    }

    /// The mailbox. Nothing that runs user code is ever done while it is held.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Mailbox<H, E>> {
        // Only plain data is changed under this lock, so a poisoned lock (a panic
        // elsewhere in the same thread while it was held) is still consistent.
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes a command and wakes the task; gives it back if the task has ended.
    pub(crate) fn send(&self, command: Command<H, E>) -> Result<(), (Command<H, E>, Ended)> {
        let mut mailbox = self.lock();
        if let Some(ended) = &mailbox.ended {
            let ended = ended.clone();
            drop(mailbox);
            return Err((command, ended));
        }
        mailbox.commands.push_back(command);
        let task = mailbox.task.clone();
        drop(mailbox);
        if let Some(task) = task {
            task.wake();
        }
        Ok(())
    }

    /// A future that completes after `delay` (not zero), on the service's runtime.
    pub(crate) fn sleep(&self, delay: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        (self.sleep)(delay)
    }

    /// The service's name, if it was given one.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Where the task sends its events (always there: before the first
    /// subscription, it keeps them for it).
    pub(crate) fn events(&self) -> Option<&EventSink<E>> {
        Some(&self.events)
    }

    /// A new subscription (the first one gets the events kept so far).
    pub(crate) fn subscribe(&self) -> Events<E> {
        self.events.subscribe()
    }

    /// Why the task ended, if it has.
    pub(crate) fn ended(&self) -> Option<Ended> {
        self.lock().ended.clone()
    }
}
