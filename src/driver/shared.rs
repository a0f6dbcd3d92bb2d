//! What the handles and the task share: a mailbox of requests, the service's
//! published status, and the news that the task has ended.
//!
//! Handles never touch the machine: they push a [`Command`] and wake the task. The
//! task owns the machine, performs the commands in order, and publishes a
//! [`Status`] after every step.
//!
//! The mailbox is bounded: requests that repeat coalesce where they are queued
//! (see [`Queue`]), so a handle called in a tight loop keeps a few entries queued,
//! not one per call. Only `when_connected` registrations grow with the number of
//! calls, and each of them is a caller's live future: a dropped one is taken out of
//! the queue again, or (once the task has taken it) noted once for withdrawal. The mailbox's lock is held only to push, take or
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
use std::sync::atomic::AtomicUsize;
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
/// What a `stop()` future waits on: shared by the stops coalesced into one request.
pub(crate) type StopRx = futures_util::future::Shared<oneshot::Receiver<()>>;

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
    /// A `WhenConnected` future was dropped unanswered (or timed out) after the task
    /// took its registration.
    Withdraw { ticket: u64 },
    /// `ClientService::disconnect`.
    Disconnect(AttemptId),
    /// `ClientService::reconnect_now`.
    ReconnectNow { reset_backoff: bool },
    /// The last `ClientService` handle was dropped: stop, then end the task.
    Shutdown,
}

/// What the service looks like after the task's last step: 64 bytes, kept
/// compact (the connection as a plain id and a flag beside the state, the
/// pending waiters as 32 bits) since every service holds one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) state: State,
    /// `connection` names the current connection.
    connected: bool,
    pub(crate) consecutive_failures: u32,
    /// Saturated at `u32::MAX` (each waiter is a live future: never reached).
    pending_waiters: u32,
    pub(crate) counters: Counters,
    /// The current connection (reported made: being prepared, or connected), if
    /// `connected`; 0 otherwise, so that equal statuses compare equal.
    connection: u64,
}

impl Status {
    pub(crate) const NEW: Status = Status {
        state: State::Init,
        connected: false,
        consecutive_failures: 0,
        pending_waiters: 0,
        counters: Counters::new(),
        connection: 0,
    };

    /// A status of the machine as it is.
    pub(crate) fn new(
        state: State,
        counters: Counters,
        consecutive_failures: u32,
        pending_waiters: usize,
        connection: Option<AttemptId>,
    ) -> Status {
        let mut status = Status {
            state,
            counters,
            consecutive_failures,
            ..Status::NEW
        };
        status.set_pending_waiters(pending_waiters);
        status.set_connection(connection);
        status
    }

    /// The current connection (reported made: being prepared, or connected).
    pub(crate) fn connection(&self) -> Option<AttemptId> {
        self.connected.then(|| AttemptId::from_raw(self.connection))
    }

    pub(crate) fn set_connection(&mut self, connection: Option<AttemptId>) {
        self.connected = connection.is_some();
        self.connection = connection.map_or(0, AttemptId::raw);
    }

    /// Waiters the machine holds.
    pub(crate) fn pending_waiters(&self) -> usize {
        self.pending_waiters as usize
    }

    pub(crate) fn set_pending_waiters(&mut self, waiters: usize) {
        self.pending_waiters = u32::try_from(waiters).unwrap_or(u32::MAX);
    }
}

/// A queued command, or the hole a withdrawn `WhenConnected` left.
pub(crate) struct Entry<H, E> {
    /// The ticket of the next waiter when it was pushed (its own, for a waiter):
    /// entries are sorted by it, so a waiter is found by binary search.
    key: u64,
    pub(crate) command: Option<Command<H, E>>,
}

/// Holes tolerated in the queue before compacting it, whatever its length.
const SLACK: usize = 32;

const STATES: [State; 7] = [
    State::Init,
    State::Connecting,
    State::Waiting,
    State::Connected,
    State::Disconnecting,
    State::Restarting,
    State::Stopped,
];

fn index(state: State) -> usize {
    match state {
        State::Init => 0,
        State::Connecting => 1,
        State::Waiting => 2,
        State::Connected => 3,
        State::Disconnecting => 4,
        State::Restarting => 5,
        State::Stopped => 6,
    }
}

/// What the queued starts and stops make of the service's state, as far as the
/// handles can tell: a table from the state before them to the state after them,
/// kept as they are pushed, so that `reconnect_now` reads it in O(1) however many
/// waiters are queued.
#[derive(Clone, Copy)]
struct Predict([State; 7]);

impl Predict {
    const IDENTITY: Predict = Predict(STATES);

    fn then(mut self, command: &Command<impl Sized, impl Sized>) -> Predict {
        for state in &mut self.0 {
            *state = match (command, *state) {
                (Command::Start, State::Init | State::Stopped) => State::Connecting,
                (Command::Start, State::Disconnecting) => State::Restarting,
                (Command::Stop(_) | Command::Shutdown, State::Init | State::Stopped) => {
                    State::Stopped
                }
                (Command::Stop(_) | Command::Shutdown, _) => State::Disconnecting,
                (_, state) => state,
            };
        }
        self
    }
}

/// The queued requests, coalesced as they are pushed, so that what is queued stays
/// bounded whatever a caller does in a loop:
///
/// * `reconnect_now` joins a `ReconnectNow` queued since the last start, stop or
///   disconnect request (keeping the strongest `reset_backoff`): nothing between
///   them changes what it does;
/// * `start` after a queued `Start` (with only waiters or reconnects since) is
///   dropped: a second start does nothing;
/// * `stop` drops a `Start` queued just before it (starting and stopping at once
///   is stopping), and joins a `Stop` that is then the last start or stop request
///   queued: both callers' futures wait on the same answer, which comes when the
///   service has stopped. The order of starts and stops is kept;
/// * a `WhenConnected` dropped while still queued is taken out (a hole, dropped at
///   once at the end, compacted away in the middle); one the task has taken is
///   noted in `withdrawn`, at most once per waiter the task holds;
/// * `disconnect` is pushed at most once per connection (the handle checks the
///   published connection and clears it).
pub(crate) struct Queue<H, E> {
    entries: VecDeque<Entry<H, E>>,
    holes: usize,
    /// Where the `ReconnectNow` that a new one joins is, if any.
    reconnect: Option<usize>,
    /// Where the last `Start`, `Stop` or `Shutdown` is, if any.
    control: Option<usize>,
    /// What the futures of the last queued `Stop` wait on, while it can be joined.
    stop: Option<StopRx>,
    /// `control` and `stop` as they were before the last `Start` was pushed: what
    /// they are again if a `stop` takes that `Start` back.
    before_start: Option<(Option<usize>, Option<StopRx>, Predict)>,
    predict: Predict,
    /// Tickets of waiters the task has taken and their callers dropped since.
    withdrawn: std::vec::Vec<u64>,
}

impl<H, E> Queue<H, E> {
    pub(crate) fn new() -> Self {
        Queue {
            entries: VecDeque::new(),
            holes: 0,
            reconnect: None,
            control: None,
            stop: None,
            before_start: None,
            predict: Predict::IDENTITY,
            withdrawn: std::vec::Vec::new(),
        }
    }

    /// How many entries are queued (holes and withdrawals included): what the
    /// mailbox holds, for tests.
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.entries.len() + self.withdrawn.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.withdrawn.is_empty()
    }

    /// The state the service will be in once it has taken the queued starts and
    /// stops, if it is in `state` now.
    pub(crate) fn predict(&self, state: State) -> State {
        self.predict.0[index(state)]
    }

    fn recompute_predict(&mut self) {
        self.predict = self
            .entries
            .iter()
            .filter_map(|e| e.command.as_ref())
            .fold(Predict::IDENTITY, Predict::then);
    }

    fn push(&mut self, key: u64, command: Command<H, E>) -> usize {
        self.entries.push_back(Entry {
            key,
            command: Some(command),
        });
        self.entries.len() - 1
    }

    fn control_command(&self) -> Option<&Command<H, E>> {
        self.control
            .and_then(|at| self.entries.get(at))
            .and_then(|e| e.command.as_ref())
    }

    pub(crate) fn push_start(&mut self, key: u64) {
        if matches!(self.control_command(), Some(Command::Start)) {
            return;
        }
        let at = self.push(key, Command::Start);
        let predict = self.predict;
        self.predict = predict.then(&Command::<H, E>::Start);
        self.before_start = Some((self.control.replace(at), self.stop.take(), predict));
        self.reconnect = None;
    }

    /// Queues a stop; returns what its future waits on.
    pub(crate) fn push_stop(&mut self, key: u64) -> StopRx {
        if self.control.is_some() && self.control == self.entries.len().checked_sub(1) {
            if let Some(Entry {
                command: Some(Command::Start),
                ..
            }) = self.entries.back()
            {
                // Starting and stopping at once is stopping.
                self.entries.pop_back();
                match self.before_start.take() {
                    Some((control, stop, predict)) => {
                        (self.control, self.stop, self.predict) = (control, stop, predict)
                    }
                    None => {
                        (self.control, self.stop) = (self.find_control(), None);
                        self.recompute_predict();
                    }
                }
            }
        }
        if matches!(self.control_command(), Some(Command::Stop(_))) {
            if let Some(stop) = &self.stop {
                return stop.clone();
            }
        }
        let (tx, rx) = oneshot::channel();
        let rx = futures_util::FutureExt::shared(rx);
        self.control = Some(self.push(key, Command::Stop(tx)));
        self.predict = self.predict.then(&Command::<H, E>::Shutdown);
        self.reconnect = None;
        self.stop = Some(rx.clone());
        self.before_start = None;
        rx
    }

    pub(crate) fn push_shutdown(&mut self, key: u64) {
        self.control = Some(self.push(key, Command::Shutdown));
        self.predict = self.predict.then(&Command::<H, E>::Shutdown);
        self.reconnect = None;
        self.stop = None;
        self.before_start = None;
    }

    pub(crate) fn push_reconnect(&mut self, key: u64, reset_backoff: bool) {
        if let Some(Entry {
            command: Some(Command::ReconnectNow { reset_backoff: r }),
            ..
        }) = self.reconnect.and_then(|at| self.entries.get_mut(at))
        {
            *r |= reset_backoff;
            return;
        }
        self.reconnect = Some(self.push(key, Command::ReconnectNow { reset_backoff }));
    }

    pub(crate) fn push_disconnect(&mut self, key: u64, attempt: AttemptId) {
        self.push(key, Command::Disconnect(attempt));
        self.reconnect = None;
    }

    pub(crate) fn push_waiter(&mut self, command: Command<H, E>) {
        let Command::WhenConnected { ticket, .. } = &command else {
            return;
        };
        let key = *ticket;
        self.push(key, command);
    }

    /// A waiter's future was dropped (or timed out) unanswered. Returns what it
    /// registered, if it was still queued, to be dropped outside the lock.
    pub(crate) fn withdraw(&mut self, ticket: u64) -> Option<Command<H, E>> {
        let from = self.entries.partition_point(|e| e.key < ticket);
        let at = (from..self.entries.len())
            .take_while(|at| self.entries[*at].key == ticket)
            .find(|at| {
                matches!(
                    &self.entries[*at].command,
                    Some(Command::WhenConnected { ticket: t, .. }) if *t == ticket
                )
            });
        let Some(at) = at else {
            // The task has it: it withdraws it after it has registered it.
            self.withdrawn.push(ticket);
            return None;
        };
        let taken = self.entries[at].command.take();
        self.holes += 1;
        while self.entries.back().is_some_and(|e| e.command.is_none()) {
            self.entries.pop_back();
            self.holes -= 1;
        }
        if self.holes > SLACK && self.holes > self.entries.len() / 2 {
            self.entries.retain(|e| e.command.is_some());
            self.holes = 0;
            self.control = self.find_control();
            self.reconnect = self.find_reconnect();
            self.before_start = None;
            self.recompute_predict();
        }
        taken
    }

    fn find_control(&self) -> Option<usize> {
        self.entries.iter().rposition(|e| {
            matches!(
                e.command,
                Some(Command::Start | Command::Stop(_) | Command::Shutdown)
            )
        })
    }

    fn find_reconnect(&self) -> Option<usize> {
        let at = self.entries.iter().rposition(|e| {
            matches!(
                e.command,
                Some(
                    Command::Start
                        | Command::Stop(_)
                        | Command::Shutdown
                        | Command::Disconnect(_)
                        | Command::ReconnectNow { .. }
                )
            )
        })?;
        matches!(self.entries[at].command, Some(Command::ReconnectNow { .. })).then_some(at)
    }

    /// Takes everything queued, in order: first the withdrawals of waiters the task
    /// took before, then the commands. The stops' shared answers are let go of here.
    pub(crate) fn take(&mut self) -> (std::vec::Vec<u64>, VecDeque<Entry<H, E>>) {
        self.holes = 0;
        self.reconnect = None;
        self.control = None;
        self.stop = None;
        self.before_start = None;
        self.predict = Predict::IDENTITY;
        (
            core::mem::take(&mut self.withdrawn),
            core::mem::take(&mut self.entries),
        )
    }
}

/// The queue, out of line: an idle service (nothing queued) keeps only a null
/// pointer. An empty queue is a new one (taking the commands resets it), so
/// freeing it when the task takes them changes nothing.
pub(crate) struct Commands<H, E>(Option<Box<Queue<H, E>>>);

impl<H, E> Commands<H, E> {
    /// The queue, made if there is none.
    pub(crate) fn get(&mut self) -> &mut Queue<H, E> {
        self.0.get_or_insert_with(|| Box::new(Queue::new()))
    }

    /// How many entries are queued (holes and withdrawals included).
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|q| q.is_empty())
    }

    /// Whether it holds storage (a queue, even an empty one).
    pub(crate) fn holds_storage(&self) -> bool {
        self.0.is_some()
    }

    /// See [`Queue::predict`].
    pub(crate) fn predict(&self, state: State) -> State {
        self.0.as_ref().map_or(state, |q| q.predict(state))
    }

    /// Whether a request to disconnect `attempt` is queued.
    pub(crate) fn disconnects(&self, attempt: AttemptId) -> bool {
        self.0
            .as_ref()
            .is_some_and(|q| disconnects(&q.entries, attempt))
    }

    /// See [`Queue::take`]; lets go of the queue's storage.
    pub(crate) fn take(&mut self) -> (std::vec::Vec<u64>, VecDeque<Entry<H, E>>) {
        match self.0.take() {
            Some(mut queue) => queue.take(),
            None => Default::default(),
        }
    }
}

/// Whether `entries` hold a request to disconnect `attempt`.
pub(crate) fn disconnects<H, E>(entries: &VecDeque<Entry<H, E>>, attempt: AttemptId) -> bool {
    entries
        .iter()
        .any(|e| matches!(e.command, Some(Command::Disconnect(a)) if a == attempt))
}

pub(crate) struct Mailbox<H, E> {
    pub(crate) commands: Commands<H, E>,
    /// The task's waker, once it has been polled.
    pub(crate) task: Option<Waker>,
    pub(crate) status: Status,
    /// The next `WhenConnected` ticket.
    pub(crate) next_ticket: u64,
    /// What only a service that has watched, failed or lost keeps: out of line,
    /// made by the first of them.
    later: Option<Box<Later<E>>>,
}

/// [`Mailbox::later`].
pub(crate) struct Later<E> {
    /// Made by the first `watch()`.
    pub(crate) watch: Option<Arc<Watch>>,
    /// The failure of the last failed attempt.
    pub(crate) last_failure: Option<Arc<Failure<E>>>,
    /// Why the last established connection was lost.
    pub(crate) last_loss: Option<Loss>,
    /// Set once, when the task ends; nothing is pushed after.
    pub(crate) ended: Option<Ended>,
}

impl<H, E> Mailbox<H, E> {
    /// The state watch, if a `watch()` made one.
    pub(crate) fn watch(&self) -> Option<&Arc<Watch>> {
        self.later.as_ref()?.watch.as_ref()
    }

    /// The failure of the last failed attempt.
    pub(crate) fn last_failure(&self) -> Option<&Arc<Failure<E>>> {
        self.later.as_ref()?.last_failure.as_ref()
    }

    /// Why the last established connection was lost.
    pub(crate) fn last_loss(&self) -> Option<&Loss> {
        self.later.as_ref()?.last_loss.as_ref()
    }

    /// Why the task ended, once it has (nothing is pushed after).
    pub(crate) fn ended(&self) -> Option<&Ended> {
        self.later.as_ref()?.ended.as_ref()
    }

    /// What is kept out of line, made if need be.
    pub(crate) fn later(&mut self) -> &mut Later<E> {
        self.later.get_or_insert_with(|| {
            Box::new(Later {
                watch: None,
                last_failure: None,
                last_loss: None,
                ended: None,
            })
        })
    }
}

/// Sleeps on the service's runtime: what a handle needs for a waiter's time limit
/// ([`WhenConnected::within`](super::WhenConnected::within)), kept once per service.
pub(crate) type SleepFn =
    Box<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

pub(crate) struct Shared<H, E> {
    mailbox: Mutex<Mailbox<H, E>>,
    /// Sleeps on the service's runtime.
    sleep: SleepFn,
    /// The service's name, for `tracing` and `Debug` (behind a thin pointer: a
    /// service without one keeps 8 bytes for it).
    #[allow(
        clippy::box_collection,
        reason = "a thin pointer: 8 bytes per service without a name, not 16"
    )]
    name: Option<Box<String>>,
    /// The events: kept for the first subscriber, then broadcast.
    events: EventSink<E>,
    /// How many `ClientService` handles there are (the last one shuts the
    /// service down when dropped).
    handles: AtomicUsize,
}

impl<H, E> Shared<H, E> {
    pub(crate) fn new(
        name: Option<String>,
        events_capacity: usize,
        sleep: SleepFn,
    ) -> Shared<H, E> {
        Shared {
            name: name.map(Box::new),
            sleep,
            events: EventSink::new(events_capacity),
            handles: AtomicUsize::new(1),
            mailbox: Mutex::new(Mailbox {
                commands: Commands(None),
                task: None,
                status: Status::NEW,
                next_ticket: 0,
                later: None,
            }),
        }
    }

    /// How many `ClientService` handles there are.
    pub(crate) fn handles(&self) -> &AtomicUsize {
        &self.handles
    }

    /// The mailbox. Nothing that runs user code is ever done while it is held.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Mailbox<H, E>> {
        // Only plain data is changed under this lock, so a poisoned lock (a panic
        // elsewhere in the same thread while it was held) is still consistent.
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request with `push` and wakes the task; returns what `push`
    /// returned, or why the task has ended (then nothing was queued). Whatever
    /// `push` gives back in `drop` is dropped after the lock is released.
    pub(crate) fn send<T, D>(
        &self,
        push: impl FnOnce(&mut Queue<H, E>, u64) -> (T, D),
    ) -> Result<T, Ended> {
        let mut mailbox = self.lock();
        if let Some(ended) = mailbox.ended() {
            let ended = Ended::clone(ended);
            drop(mailbox);
            return Err(ended);
        }
        let key = mailbox.next_ticket;
        let (value, dropped) = push(mailbox.commands.get(), key);
        let task = mailbox.task.clone();
        drop(mailbox);
        drop(dropped);
        if let Some(task) = task {
            task.wake();
        }
        Ok(value)
    }

    /// A future that completes after `delay` (not zero), on the service's runtime.
    pub(crate) fn sleep(&self, delay: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        (self.sleep)(delay)
    }

    /// The service's name, if it was given one.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref().map(String::as_str)
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
        self.lock().ended().cloned()
    }
}
