//! The user-facing side: [`ClientService`], its [`Builder`], and the futures it returns.
//!
//! The machine lives in a [`Shared`] state behind a `std` mutex. Handles feed it
//! `start`, `stop`, `when_connected`, `cancel_waiter` and (for
//! [`ClientService::disconnect`]) `client_disconnected` directly; the actions that
//! need no I/O (answer waiters, finish stops) are performed at once, the others are
//! queued, in order, for the service's task (see `task.rs`).

use core::fmt;
use core::future::Future;
use core::num::NonZeroU32;
use core::pin::Pin;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::boxed::Box;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::Event;
use futures_channel::oneshot;
use smallvec::SmallVec;

use super::task::{BoxFuture, ConnectFn, PrepareFn, Task};
use super::{event, BuildError, Connection, Error, Runtime};
use crate::actions::{Action, Actions, Failure, TimerKind, WaiterList};
use crate::error::InputError;
use crate::ids::{AttemptId, StopId, TimerId, WaiterId};
use crate::machine::{Config, Counters, Machine, State};
use crate::policy::{Backoff, RetryPolicy};

/// A boxed retry policy, so the service's type does not name the policy.
pub(crate) struct DynPolicy(Box<dyn RetryPolicy + Send>);

impl RetryPolicy for DynPolicy {
    fn next_delay(&mut self, failed_attempts: u32) -> Option<Duration> {
        self.0.next_delay(failed_attempts)
    }
}

/// One unit of work for the task, in the order the machine emitted it.
pub(crate) enum Work<E> {
    /// An action the machine asked for.
    Act(Action<E>),
    /// A `DeliverFailure`, with the error already built (shared by every waiter).
    Fail(WaiterList, Error<E>),
    /// A zero-delay timer: report it fired (after the rest of its batch).
    Fire(TimerId),
    /// [`ClientService::disconnect`]: close this connection. The machine has already
    /// been told it is lost, so nothing is reported.
    Close(AttemptId),
}

/// A waiter's answer: the connection (its attempt id and handle), or why there is none.
type Answer<H, E> = Result<(AttemptId, H), Error<E>>;
type WaiterTx<H, E> = oneshot::Sender<Answer<H, E>>;

/// The senders of pending waiters or stop requests, by id, in id order (the order
/// the machine issues ids in). One fits inline, so an idle service with at most one
/// pending waiter keeps nothing on the heap; the heap block of a spilled list is
/// released once it is empty again.
pub(crate) struct Pending<K, V> {
    /// `None` only transiently, while an entry is being answered.
    entries: SmallVec<[(K, Option<V>); 1]>,
}

impl<K: Ord + Copy, V> Pending<K, V> {
    fn new() -> Self {
        Pending {
            entries: SmallVec::new(),
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn insert(&mut self, id: K, tx: V) {
        // Ids grow, so this is a push; stay sorted whatever happens.
        let at = match self.entries.last() {
            Some((last, _)) if *last > id => self
                .entries
                .binary_search_by(|(k, _)| k.cmp(&id))
                .unwrap_or_else(|at| at),
            _ => self.entries.len(),
        };
        self.entries.insert(at, (id, Some(tx)));
    }

    fn remove(&mut self, id: K) -> Option<V> {
        let at = self.entries.binary_search_by(|(k, _)| k.cmp(&id)).ok()?;
        let (_, tx) = self.entries.remove(at);
        self.release_if_empty();
        tx
    }

    /// Removes the entries of `ids` (in one pass when `ids` is sorted, as the
    /// machine's lists are) and hands each sender to `answer`, in id order.
    fn remove_all(&mut self, ids: &[K], mut answer: impl FnMut(V)) {
        if ids.len() > 1 && ids.is_sorted() {
            let mut next = ids.iter().peekable();
            self.entries.retain(|(k, tx)| {
                while next.next_if(|id| **id < *k).is_some() {}
                if next.next_if(|id| **id == *k).is_none() {
                    return true;
                }
                if let Some(tx) = tx.take() {
                    answer(tx);
                }
                false
            });
            self.release_if_empty();
        } else {
            for id in ids {
                if let Some(tx) = self.remove(*id) {
                    answer(tx);
                }
            }
        }
    }

    /// Removes every entry; hands each sender to `answer`, in id order.
    fn drain(&mut self, answer: impl FnMut(V)) {
        core::mem::take(&mut self.entries)
            .into_iter()
            .filter_map(|(_, tx)| tx)
            .for_each(answer);
    }

    fn release_if_empty(&mut self) {
        if self.entries.is_empty() && self.entries.spilled() {
            self.entries = SmallVec::new();
        }
    }
}

/// Everything the handles and the task share, behind one mutex.
pub(crate) struct Inner<H, E> {
    pub(crate) machine: Machine<E, DynPolicy>,
    waiters: Pending<WaiterId, WaiterTx<H, E>>,
    stops: Pending<StopId, oneshot::Sender<()>>,
    /// The handle of the connection the task holds, with its attempt id.
    pub(crate) handle: Option<(AttemptId, H)>,
    /// Work for the task, in machine order.
    pub(crate) queue: VecDeque<Work<E>>,
    /// The task is performing a queued action outside the lock.
    pub(crate) busy: bool,
    pub(crate) task: Option<Waker>,
    /// `H::clone`, so that nothing here needs an `H: Clone` bound (`Drop` cannot have one).
    clone_handle: fn(&H) -> H,
    /// The last handle was dropped: stop, then end the task.
    pub(crate) shutdown: bool,
    /// The task is gone (finished, or dropped with its runtime).
    pub(crate) ended: bool,
    published: State,
    /// Made by the first [`ClientService::watch`]: until then, publishing a state
    /// costs nothing and nothing for it is on the heap.
    watch: Option<Arc<WatchShared>>,
}

pub(crate) struct Shared<H, E> {
    pub(crate) inner: Mutex<Inner<H, E>>,
    handles: AtomicUsize,
}

/// State changes, for [`StateWatch`]; not generic so watchers need not name `H`, `E`.
pub(crate) struct WatchShared {
    event: Event,
    /// (version, state, task ended)
    cell: Mutex<(u64, State, bool)>,
}

impl<H, E> Shared<H, E> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner<H, E>> {
        // A panic while the lock was held cannot leave the machine half-updated
        // (its inputs are all-or-nothing), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<H, E> Inner<H, E> {
    /// Feeds one input to the machine and dispatches its actions. Bad input from the
    /// driver is a driver bug: logged (and a debug assertion), never a panic in release.
    pub(crate) fn feed(
        &mut self,
        input: impl FnOnce(&mut Machine<E, DynPolicy>) -> Result<Actions<E>, InputError>,
    ) {
        match input(&mut self.machine) {
            Ok(actions) => self.dispatch(actions),
            Err(_error) => {
                event!(error, error = %_error, "driver bug: the machine rejected an input");
                debug_assert!(false, "driver bug: the machine rejected an input: {_error}");
            }
        }
    }

    /// Performs the actions that need no I/O at once, while nothing is queued ahead
    /// of them; queues the rest for the task (in order), and wakes it.
    pub(crate) fn dispatch(&mut self, actions: Actions<E>) {
        let gave_up = actions.iter().find_map(|a| match a {
            Action::GaveUp { failed_attempts } => Some(*failed_attempts),
            _ => None,
        });
        for action in actions {
            let work = match action {
                Action::DeliverFailure { waiters, failure } => {
                    let last = Arc::new(failure);
                    let error = match gave_up {
                        Some(failed_attempts) => Error::GaveUp {
                            failed_attempts,
                            last,
                        },
                        None => Error::Failed(last),
                    };
                    Work::Fail(waiters, error)
                }
                Action::ScheduleTimer {
                    kind: TimerKind::Retry,
                    delay: _delay,
                    ..
                } => {
                    event!(
                        info,
                        failed_attempts = self.machine.failed_attempts(),
                        delay = ?_delay,
                        "retry scheduled"
                    );
                    Work::Act(action)
                }
                Action::GaveUp {
                    failed_attempts: _failed,
                } => {
                    event!(warn, failed_attempts = _failed, "retry policy gave up");
                    continue;
                }
                other => Work::Act(other),
            };
            let instant = matches!(
                work,
                Work::Fail(..)
                    | Work::Act(
                        Action::NotifyWaiters { .. }
                            | Action::CancelWaiters { .. }
                            | Action::FinishStopping { .. }
                    )
            );
            if instant && self.queue.is_empty() && !self.busy {
                self.perform_instant(work);
            } else {
                self.queue.push_back(work);
                if let Some(task) = &self.task {
                    task.wake_by_ref();
                }
            }
        }
        self.publish();
    }

    /// Answers waiters and stop requests. Returns the work back if it is not instant.
    pub(crate) fn perform_instant(&mut self, work: Work<E>) -> Option<Work<E>> {
        match work {
            Work::Act(Action::NotifyWaiters { attempt, waiters }) => {
                let handle = match &self.handle {
                    Some((a, handle)) if *a == attempt => Some(handle),
                    _ => None,
                };
                debug_assert!(handle.is_some(), "driver bug: no handle for {attempt}");
                let clone_handle = self.clone_handle;
                self.waiters.remove_all(&waiters, |tx| {
                    let answer = handle.map(|h| (attempt, clone_handle(h)));
                    let _ = tx.send(answer.ok_or(Error::Stopped));
                });
            }
            Work::Fail(waiters, error) => {
                self.waiters.remove_all(&waiters, |tx| {
                    let _ = tx.send(Err(error.clone()));
                });
            }
            Work::Act(Action::CancelWaiters { waiters }) => {
                self.waiters.remove_all(&waiters, |tx| {
                    let _ = tx.send(Err(Error::Stopped));
                });
            }
            Work::Act(Action::FinishStopping { stops }) => {
                self.stops.remove_all(&stops, |tx| {
                    let _ = tx.send(());
                });
            }
            other => return Some(other),
        }
        None
    }

    /// Tells state watchers about a state change.
    pub(crate) fn publish(&mut self) {
        let state = self.machine.state();
        if state != self.published || self.ended {
            self.published = state;
            let Some(watch) = &self.watch else {
                return; // nobody ever watched
            };
            let mut cell = watch.cell.lock().unwrap_or_else(|e| e.into_inner());
            *cell = (cell.0 + 1, state, self.ended);
            drop(cell);
            watch.event.notify(usize::MAX);
        }
    }

    /// The task is gone: answer everything still pending (as stopped).
    pub(crate) fn end(&mut self) {
        self.ended = true;
        self.task = None;
        self.queue = VecDeque::new();
        self.handle = None;
        self.waiters.drain(|tx| {
            let _ = tx.send(Err(Error::Stopped));
        });
        self.stops.drain(drop);
        self.publish();
    }
}

/// Builds a [`ClientService`]. Get one from [`ClientService::builder`] or an
/// adapter's `builder` function (e.g. [`redial::tokio::builder`](crate::tokio::builder)).
#[must_use = "a builder does nothing until `build` or `start`"]
pub struct Builder<R, H, E> {
    runtime: R,
    connect: ConnectFn<H, E>,
    prepare: Option<PrepareFn<H, E>>,
    policy: Option<DynPolicy>,
    config: Config,
}

impl<R, H, E> fmt::Debug for Builder<R, H, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("prepare", &self.prepare.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<R, H, E> Builder<R, H, E>
where
    R: Runtime,
    H: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// Sets the retry policy (default: [`Backoff::default`], Twisted's backoff with
    /// a random jitter seed). Any [`RetryPolicy`] works, e.g. `|_| Duration::ZERO`.
    pub fn policy<P: RetryPolicy + Send + 'static>(mut self, policy: P) -> Self {
        self.policy = Some(DynPolicy(Box::new(policy)));
        self
    }

    /// Runs `prepare` on each new connection (with a clone of its handle) before
    /// anyone is told it exists. An error closes the connection and counts as a
    /// failed attempt (it is retried).
    pub fn prepare<P, Fut>(mut self, mut prepare: P) -> Self
    where
        P: FnMut(H) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.prepare = Some(Box::new(move |handle| -> BoxFuture<Result<(), E>> {
            Box::pin(prepare(handle))
        }));
        self.config.prepare = true;
        self
    }

    /// Cancels an attempt that takes longer than `timeout` (a failed attempt,
    /// [`Failure::ConnectTimeout`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = Some(timeout);
        self
    }

    /// Closes a connection whose prepare hook takes longer than `timeout` (a failed
    /// attempt, [`Failure::PrepareTimeout`]). Needs a prepare hook.
    pub fn prepare_timeout(mut self, timeout: Duration) -> Self {
        self.config.prepare_timeout = Some(timeout);
        self
    }

    /// Resets the failure counter only once a connection has stayed up for `delay`,
    /// so a peer that accepts and drops at once cannot cause a tight loop.
    pub fn reset_backoff_after(mut self, delay: Duration) -> Self {
        self.config.reset_backoff_after = Some(delay);
        self
    }

    /// Builds the service and spawns its task, without starting it
    /// ([`State::Init`]). Fails if the configuration makes no sense (a zero timeout,
    /// a prepare timeout without a prepare hook), or if the runtime cannot spawn the
    /// task (outside a Tokio runtime, for Tokio).
    pub fn build(self) -> Result<ClientService<H, E>, BuildError> {
        let policy = self
            .policy
            .unwrap_or_else(|| DynPolicy(Box::new(Backoff::default())));
        let machine = Machine::with_config(policy, self.config)?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                machine,
                waiters: Pending::new(),
                stops: Pending::new(),
                handle: None,
                queue: VecDeque::new(),
                busy: false,
                task: None,
                clone_handle: H::clone,
                shutdown: false,
                ended: false,
                published: State::Init,
                watch: None,
            }),
            handles: AtomicUsize::new(1),
        });
        let task = Task::new(
            self.runtime.clone(),
            Arc::clone(&shared),
            self.connect,
            self.prepare,
        );
        self.runtime.spawn(task)?;
        Ok(ClientService { shared })
    }

    /// [`build`](Builder::build)s the service and [`start`](ClientService::start)s it.
    pub fn start(self) -> Result<ClientService<H, E>, BuildError> {
        let service = self.build()?;
        service.start();
        Ok(service)
    }
}

/// Keeps one outgoing client connection alive, on any async runtime.
///
/// A cheap, cloneable handle to a service whose one task, spawned on the runtime,
/// runs the [`Machine`]. Dropping the last handle stops the service: the connection
/// (or attempt) is closed and the task ends. See the [module docs](super).
pub struct ClientService<H, E> {
    shared: Arc<Shared<H, E>>,
}

impl<H, E> fmt::Debug for ClientService<H, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("ClientService")
            .field("state", &inner.machine.state())
            .field("counters", &inner.machine.counters())
            .field("waiters", &inner.waiters.len())
            .finish()
    }
}

impl<H, E> Clone for ClientService<H, E> {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        ClientService {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<H, E> Drop for ClientService<H, E> {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let mut inner = self.shared.lock();
        inner.shutdown = true;
        let (_stop, actions) = inner.machine.stop();
        inner.dispatch(actions);
        // Wake the task even if nothing was queued: it ends once all is closed.
        if let Some(task) = &inner.task {
            task.wake_by_ref();
        }
    }
}

impl<H, E> ClientService<H, E>
where
    H: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A builder for a service on `runtime` that opens connections with `connector`:
    /// an async closure returning a [`Connection`] (a `(handle, driver future)`
    /// pair, or a stream wrapped by `stream`) or an error.
    pub fn builder<R, F, Fut, C>(runtime: R, mut connector: F) -> Builder<R, H, E>
    where
        R: Runtime,
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<C, E>> + Send + 'static,
        C: Connection<Handle = H>,
    {
        Builder {
            runtime,
            connect: Box::new(move || {
                let attempt = connector();
                Box::pin(async move {
                    let (handle, driver) = attempt.await?.into_parts();
                    let driver: BoxFuture<()> = Box::pin(async move {
                        driver.await;
                    });
                    Ok((handle, driver))
                })
            }),
            prepare: None,
            policy: None,
            config: Config::default(),
        }
    }

    /// Starts the service (a no-op unless it is new, stopped or stopping; see SPEC §3).
    /// After a [`stop`](ClientService::stop) it connects again, with no delay.
    pub fn start(&self) {
        let mut inner = self.shared.lock();
        let actions = inner.machine.start();
        inner.dispatch(actions);
    }

    /// Stops the service. The stop request is made now; the returned future resolves
    /// once nothing is left open: no attempt in flight, no connection open, no timer
    /// armed (SPEC D7). Pending waiters fail with [`Error::Stopped`].
    pub fn stop(&self) -> Stopping {
        let mut inner = self.shared.lock();
        let (stop, actions) = inner.machine.stop();
        if inner.ended {
            return Stopping { rx: None };
        }
        let (tx, rx) = oneshot::channel();
        inner.stops.insert(stop, tx);
        inner.dispatch(actions);
        Stopping { rx: Some(rx) }
    }

    /// Waits for the connection: resolves with a clone of its handle once it is up
    /// (at once if it is up now), or with [`Error::Stopped`] / [`Error::GaveUp`].
    /// The waiter is registered now; dropping the future withdraws it. Use
    /// [`WhenConnected::with_id`] to also get the connection's [`AttemptId`].
    ///
    /// The service learns of a loss when the connection's driver future ends, so
    /// this can hand out a connection that has just died and whose driver has not
    /// noticed yet. On a half-open connection (a network partition: no reset ever
    /// arrives) that can last until the operating system gives up on it. When you
    /// detect a dead connection yourself (requests time out), call
    /// [`disconnect`](ClientService::disconnect) with its id to close it and
    /// reconnect.
    pub fn when_connected(&self) -> WhenConnected<H, E> {
        self.waiter(None)
    }

    /// As [`when_connected`](ClientService::when_connected), but fails with
    /// [`Error::Failed`] once `failures` attempts have failed since this call (the
    /// attempt in flight included). The service keeps retrying regardless.
    pub fn when_connected_fail_after(&self, failures: NonZeroU32) -> WhenConnected<H, E> {
        self.waiter(Some(failures))
    }

    /// Reports the connection `attempt` broken, e.g. because requests on it time out
    /// while its driver future has not ended (a half-open connection), and returns
    /// whether it was the current connection.
    ///
    /// If it is, the service closes it (drops its driver future, and its prepare
    /// future if it is still being prepared) and treats it as lost, as if its driver
    /// had ended: a connected service reconnects per its retry policy; a connection
    /// still being prepared counts as a failed attempt. From now on
    /// [`when_connected`](ClientService::when_connected) no longer hands it out.
    ///
    /// If it is not (an older connection, one already lost or being closed, no
    /// connection at all, or an id this service never issued), this does nothing and
    /// returns `false`, so a late call cannot close a newer, healthy connection.
    ///
    /// Get the id with [`WhenConnected::with_id`].
    pub fn disconnect(&self, attempt: AttemptId) -> bool {
        let mut inner = self.shared.lock();
        // Current, and reported made (the task records the handle when it reports a
        // connection made): `client_disconnected` is valid input (Connected, or
        // preparing, where the loss is a failed attempt: SPEC D3).
        let current = inner.machine.current_attempt() == Some(attempt)
            && matches!(&inner.handle, Some((a, _)) if *a == attempt);
        if !current {
            return false;
        }
        let actions = match inner.machine.client_disconnected(attempt) {
            Ok(actions) => actions,
            Err(_error) => {
                event!(error, error = %_error, "driver bug: disconnect rejected");
                return false;
            }
        };
        event!(warn, attempt = %attempt, "connection closed by disconnect");
        // Closed by the task, after the work queued before this call (waiters
        // answered before it still get the handle) and before anything the machine
        // asks for next.
        inner.queue.push_back(Work::Close(attempt));
        if let Some(task) = &inner.task {
            task.wake_by_ref();
        }
        inner.dispatch(actions);
        true
    }

    fn waiter(&self, fail_after: Option<NonZeroU32>) -> WhenConnected<H, E> {
        let mut inner = self.shared.lock();
        let (waiter, actions) = inner.machine.when_connected(fail_after);
        let (tx, rx) = oneshot::channel();
        inner.waiters.insert(waiter, tx);
        inner.dispatch(actions);
        WhenConnected {
            shared: Arc::clone(&self.shared),
            waiter,
            rx: Some(rx),
        }
    }

    /// The machine's current state.
    pub fn state(&self) -> State {
        self.shared.lock().machine.state()
    }

    /// Running totals: attempts, failures, connections, losses.
    pub fn counters(&self) -> Counters {
        self.shared.lock().machine.counters()
    }

    /// Consecutive failures so far (what the retry policy was last asked about).
    pub fn failed_attempts(&self) -> u32 {
        self.shared.lock().machine.failed_attempts()
    }

    /// How many waiters are pending (registered, not answered, not withdrawn).
    pub fn pending_waiters(&self) -> usize {
        self.shared.lock().waiters.len()
    }

    /// Watches state changes.
    pub fn watch(&self) -> StateWatch {
        let mut inner = self.shared.lock();
        let (state, ended) = (inner.published, inner.ended);
        let watch = Arc::clone(inner.watch.get_or_insert_with(|| {
            Arc::new(WatchShared {
                event: Event::new(),
                cell: Mutex::new((0, state, ended)),
            })
        }));
        drop(inner);
        let seen = watch.cell.lock().unwrap_or_else(|e| e.into_inner()).0;
        StateWatch { watch, seen }
    }
}

/// The future returned by [`ClientService::when_connected`]: the connection's
/// handle, or why there is none. Dropping it withdraws the waiter.
#[must_use = "dropping the future withdraws the waiter"]
pub struct WhenConnected<H, E> {
    shared: Arc<Shared<H, E>>,
    waiter: WaiterId,
    rx: Option<oneshot::Receiver<Answer<H, E>>>,
}

impl<H, E> fmt::Debug for WhenConnected<H, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhenConnected")
            .field("waiter", &self.waiter)
            .field("answered", &self.rx.is_none())
            .finish()
    }
}

impl<H, E> WhenConnected<H, E> {
    /// The machine's id for this waiter.
    pub fn id(&self) -> WaiterId {
        self.waiter
    }

    /// Resolves with the connection's [`AttemptId`] as well as its handle: the id
    /// to pass to [`ClientService::disconnect`] if the connection turns out dead.
    ///
    /// ```no_run
    /// # async fn run(service: redial::driver::ClientService<u8, std::io::Error>) {
    /// let (id, conn) = service.when_connected().with_id().await.unwrap();
    /// // ... requests on `conn` time out: the connection is half-open.
    /// service.disconnect(id);
    /// # }
    /// ```
    pub fn with_id(self) -> WhenConnectedWithId<H, E> {
        WhenConnectedWithId { inner: self }
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Answer<H, E>> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(Err(Error::Stopped));
        };
        let result = match Pin::new(rx).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(result)) => result,
            Poll::Ready(Err(oneshot::Canceled)) => Err(Error::Stopped),
        };
        self.rx = None;
        Poll::Ready(result)
    }
}

impl<H, E> Future for WhenConnected<H, E> {
    type Output = Result<H, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut()
            .poll_answer(cx)
            .map(|answer| answer.map(|(_, handle)| handle))
    }
}

/// The future returned by [`WhenConnected::with_id`]: the connection's
/// [`AttemptId`] and handle, or why there is none. Dropping it withdraws the waiter.
#[must_use = "dropping the future withdraws the waiter"]
pub struct WhenConnectedWithId<H, E> {
    inner: WhenConnected<H, E>,
}

impl<H, E> fmt::Debug for WhenConnectedWithId<H, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WhenConnectedWithId")
            .field(&self.inner)
            .finish()
    }
}

impl<H, E> WhenConnectedWithId<H, E> {
    /// The machine's id for this waiter.
    pub fn id(&self) -> WaiterId {
        self.inner.waiter
    }
}

impl<H, E> Future for WhenConnectedWithId<H, E> {
    type Output = Result<(AttemptId, H), Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().inner.poll_answer(cx)
    }
}

impl<H, E> Drop for WhenConnected<H, E> {
    fn drop(&mut self) {
        if self.rx.take().is_some() {
            let mut inner = self.shared.lock();
            if inner.waiters.remove(self.waiter).is_some() {
                // Withdrawing a waiter emits no action.
                if let Err(_error) = inner.machine.cancel_waiter(self.waiter) {
                    event!(error, error = %_error, "driver bug: cancel_waiter rejected");
                    debug_assert!(false, "driver bug: {_error}");
                }
            }
        }
    }
}

/// The future returned by [`ClientService::stop`]: resolves once the service is
/// stopped and nothing is left open. Dropping it does not withdraw the stop.
#[must_use = "the stop is requested either way; await this to know it is finished"]
#[derive(Debug)]
pub struct Stopping {
    rx: Option<oneshot::Receiver<()>>,
}

impl Future for Stopping {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.rx.as_mut() {
            // A dropped sender means the task is gone: nothing is left open either.
            Some(rx) => Pin::new(rx).poll(cx).map(|_| ()),
            None => Poll::Ready(()),
        }
    }
}

/// Watches a service's state; from [`ClientService::watch`].
///
/// Like a watch channel, it reports the latest state: changes in quick succession
/// may be seen as one.
#[derive(Clone)]
pub struct StateWatch {
    watch: Arc<WatchShared>,
    seen: u64,
}

impl fmt::Debug for StateWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateWatch")
            .field("state", &self.state())
            .finish()
    }
}

impl StateWatch {
    /// The current state.
    pub fn state(&self) -> State {
        self.watch.cell.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Waits for the state to change from the last one this watcher saw, and returns
    /// the new state; `None` once the service's task has ended.
    pub async fn changed(&mut self) -> Option<State> {
        loop {
            let check = |this: &mut Self| {
                let (version, state, ended) =
                    *this.watch.cell.lock().unwrap_or_else(|e| e.into_inner());
                if version != this.seen {
                    this.seen = version;
                    return Some(if ended { None } else { Some(state) });
                }
                if ended {
                    return Some(None);
                }
                None
            };
            if let Some(result) = check(self) {
                return result;
            }
            let listener = self.watch.event.listen();
            if let Some(result) = check(self) {
                return result;
            }
            listener.await;
        }
    }
}

/// Compile-time check: the public types are `Send`/`Sync` as documented.
#[allow(dead_code)]
fn _assert_send<H: Send + Sync + Clone + 'static, E: Send + Sync + 'static>() {
    fn is_send<T: Send>() {}
    fn is_sync<T: Sync>() {}
    is_send::<ClientService<H, E>>();
    is_sync::<ClientService<H, E>>();
    is_send::<WhenConnected<H, E>>();
    is_send::<WhenConnectedWithId<H, E>>();
    is_send::<Stopping>();
    is_send::<StateWatch>();
    is_send::<Failure<E>>();
}
