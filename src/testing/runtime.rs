//! [`ManualRuntime`]: a single-threaded executor with a virtual clock that moves only
//! when the test says so.

use core::fmt;
use core::future::Future;
use core::pin::{pin, Pin};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::any::Any;
use std::boxed::Box;
use std::collections::{BTreeMap, VecDeque};
use std::format;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::string::{String, ToString};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Wake;
use std::vec::Vec;

use crate::driver::{Runtime, SpawnError};

type BoxTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The default for [`ManualRuntime::set_poll_limit`].
const DEFAULT_POLL_LIMIT: usize = 100_000;
/// The default for [`ManualRuntime::set_step_limit`].
const DEFAULT_STEP_LIMIT: usize = 100_000;

/// A deterministic [`Runtime`] for tests: a single-threaded executor and a virtual
/// clock, both driven by the test.
///
/// * [`spawn`](Runtime::spawn) queues a task; tasks run only inside the calls that
///   say so ([`run_until_idle`](ManualRuntime::run_until_idle),
///   [`advance`](ManualRuntime::advance), [`run`](ManualRuntime::run), …), on the
///   calling thread, in the order they were woken.
/// * [`sleep`](Runtime::sleep) registers a timer at `now + delay` in virtual time.
///   Time moves only when the test advances it, and then timer by timer: each due
///   timer is woken (ties in creation order) and the tasks are run until idle
///   before time moves on. Dropping a sleep deregisters its timer.
/// * A task that panics is dropped, and its panic message recorded
///   ([`panics`](ManualRuntime::panics)); the test goes on.
/// * [`shutdown`](ManualRuntime::shutdown) drops every task unfinished, as a runtime
///   that shuts down does, and makes later spawns fail.
///
/// Clones share the same executor and clock. Tasks hold the runtime they were
/// spawned with (a service's task does), so a task that never finishes keeps the
/// runtime alive: call [`shutdown`](ManualRuntime::shutdown) at the end of a test
/// that leaves tasks behind if that matters.
///
/// Do not call the runtime's driving methods from inside one of its tasks (they
/// panic); spawning, sleeping, waking and the queries are fine anywhere.
///
/// ```
/// use core::time::Duration;
/// use redial::driver::Runtime;
/// use redial::testing::ManualRuntime;
///
/// let rt = ManualRuntime::new();
/// let sleep = rt.sleep(Duration::from_secs(2));
/// assert_eq!(rt.next_timer(), Some(Duration::from_secs(2)));
/// // `run` drives a future with virtual time: it jumps to the timer at once.
/// assert_eq!(rt.run(sleep), Some(()));
/// assert_eq!(rt.now(), Duration::from_secs(2));
/// ```
#[derive(Clone)]
pub struct ManualRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    now: Duration,
    next_task: u64,
    /// Live tasks, by id; a task being polled has its future taken out.
    tasks: BTreeMap<u64, Slot>,
    /// Ids of woken tasks, in wake order (ids of tasks gone since are skipped).
    ready: VecDeque<u64>,
    /// Registered timers, by (deadline, creation number).
    timers: BTreeMap<(Duration, u64), TimerEntry>,
    next_timer: u64,
    shut_down: bool,
    /// A driving call is polling a task right now (re-entrancy guard).
    polling: bool,
    panics: Vec<String>,
    poll_limit: usize,
    step_limit: usize,
}

struct Slot {
    future: Option<BoxTask>,
    cell: Arc<TaskCell>,
}

struct TimerEntry {
    waker: Option<Waker>,
    /// Time has reached the deadline and the sleep was woken.
    fired: bool,
}

/// A task's waker: a woken flag, so that a task is queued at most once.
struct TaskCell {
    id: u64,
    woken: AtomicBool,
    runtime: Weak<Shared>,
}

impl Wake for TaskCell {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::SeqCst) {
            if let Some(shared) = self.runtime.upgrade() {
                let mut state = shared.lock();
                if state.tasks.contains_key(&self.id) {
                    state.ready.push_back(self.id);
                }
            }
        }
    }
}

/// The waker of the future given to [`ManualRuntime::run`]: a flag.
struct MainWaker {
    woken: AtomicBool,
}

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held, but a poisoned lock stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`ManualRuntime::try_run_until_idle`] polled tasks this many times and they were
/// still runnable: a livelock (e.g. a task that wakes itself for ever, or a retry
/// loop with a zero delay, which never lets virtual time pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Livelock {
    /// Polls made in that call.
    pub polls: usize,
    /// Tasks still runnable when it gave up.
    pub runnable: usize,
}

impl fmt::Display for Livelock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "livelock: {} task polls without becoming idle ({} task(s) still runnable)",
            self.polls, self.runnable
        )
    }
}

impl std::error::Error for Livelock {}

/// The future returned by [`ManualRuntime`]'s [`sleep`](Runtime::sleep): completes
/// once virtual time reaches its deadline. Dropping it deregisters its timer.
#[must_use = "a sleep does nothing unless polled"]
pub struct ManualSleep {
    runtime: Weak<Shared>,
    key: (Duration, u64),
    done: bool,
}

impl fmt::Debug for ManualSleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualSleep")
            .field("deadline", &self.key.0)
            .field("done", &self.done)
            .finish()
    }
}

impl ManualSleep {
    /// The virtual instant it completes at.
    pub fn deadline(&self) -> Duration {
        self.key.0
    }
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(());
        }
        let Some(shared) = this.runtime.upgrade() else {
            // The runtime is gone: time never moves again.
            return Poll::Pending;
        };
        let mut state = shared.lock();
        if state.now >= this.key.0 {
            let entry = state.timers.remove(&this.key);
            this.done = true;
            drop(state);
            drop(entry);
            return Poll::Ready(());
        }
        let entry = state.timers.entry(this.key).or_insert(TimerEntry {
            waker: None,
            fired: false,
        });
        let old = match &entry.waker {
            Some(w) if w.will_wake(cx.waker()) => None,
            _ => entry.waker.replace(cx.waker().clone()),
        };
        drop(state);
        drop(old);
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(shared) = self.runtime.upgrade() {
            let entry = shared.lock().timers.remove(&self.key);
            drop(entry);
        }
    }
}

impl Default for ManualRuntime {
    fn default() -> Self {
        ManualRuntime::new()
    }
}

impl fmt::Debug for ManualRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("ManualRuntime")
            .field("now", &state.now)
            .field("tasks", &state.tasks.len())
            .field("runnable", &state.ready.len())
            .field("timers", &state.timers.len())
            .field("shut_down", &state.shut_down)
            .field("panics", &state.panics.len())
            .finish()
    }
}

impl Runtime for ManualRuntime {
    type Sleep = ManualSleep;

    /// Queues `task` (runnable at once); it runs when the test drives the runtime.
    /// Fails after [`shutdown`](ManualRuntime::shutdown).
    fn spawn<F>(&self, task: F) -> Result<(), SpawnError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut state = self.shared.lock();
        if state.shut_down {
            return Err(SpawnError::new("the manual runtime was shut down"));
        }
        let id = state.next_task;
        state.next_task += 1;
        let cell = Arc::new(TaskCell {
            id,
            woken: AtomicBool::new(true),
            runtime: Arc::downgrade(&self.shared),
        });
        state.tasks.insert(
            id,
            Slot {
                future: Some(Box::pin(task)),
                cell,
            },
        );
        state.ready.push_back(id);
        Ok(())
    }

    /// A timer at `now + delay` in virtual time (registered now).
    fn sleep(&self, delay: Duration) -> ManualSleep {
        let mut state = self.shared.lock();
        let key = (state.now.saturating_add(delay), state.next_timer);
        state.next_timer += 1;
        state.timers.insert(
            key,
            TimerEntry {
                waker: None,
                fired: false,
            },
        );
        ManualSleep {
            runtime: Arc::downgrade(&self.shared),
            key,
            done: false,
        }
    }
}

impl ManualRuntime {
    /// A runtime at virtual time zero, with no task and no timer.
    pub fn new() -> ManualRuntime {
        ManualRuntime {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    now: Duration::ZERO,
                    next_task: 0,
                    tasks: BTreeMap::new(),
                    ready: VecDeque::new(),
                    timers: BTreeMap::new(),
                    next_timer: 0,
                    shut_down: false,
                    polling: false,
                    panics: Vec::new(),
                    poll_limit: DEFAULT_POLL_LIMIT,
                    step_limit: DEFAULT_STEP_LIMIT,
                }),
            }),
        }
    }

    /// Sets how many task polls one [`run_until_idle`](ManualRuntime::run_until_idle)
    /// (and [`run`](ManualRuntime::run) between two timers) may make before it
    /// reports a [`Livelock`] (default 100 000).
    pub fn set_poll_limit(&self, polls: usize) {
        self.shared.lock().poll_limit = polls.max(1);
    }

    /// Sets how many timers one [`advance`](ManualRuntime::advance),
    /// [`run`](ManualRuntime::run) or [`run_for`](ManualRuntime::run_for) may fire
    /// before it panics, reporting a run that never ends (default 100 000).
    pub fn set_step_limit(&self, steps: usize) {
        self.shared.lock().step_limit = steps.max(1);
    }

    /// Virtual time since the runtime was made.
    pub fn now(&self) -> Duration {
        self.shared.lock().now
    }

    /// The deadline (in virtual time) of the next timer that has not fired yet.
    pub fn next_timer(&self) -> Option<Duration> {
        let state = self.shared.lock();
        state
            .timers
            .iter()
            .find(|(_, entry)| !entry.fired)
            .map(|(key, _)| key.0)
    }

    /// Registered timers: sleeps alive and not completed (fired or not).
    pub fn timers(&self) -> usize {
        self.shared.lock().timers.len()
    }

    /// Live tasks: spawned, not finished, not dropped.
    pub fn tasks(&self) -> usize {
        self.shared.lock().tasks.len()
    }

    /// Tasks woken and waiting to be polled.
    pub fn runnable(&self) -> usize {
        let state = self.shared.lock();
        state
            .ready
            .iter()
            .filter(|id| state.tasks.contains_key(id))
            .count()
    }

    /// The panic messages of the tasks that panicked (and were dropped), in order.
    pub fn panics(&self) -> Vec<String> {
        self.shared.lock().panics.clone()
    }

    /// Whether [`shutdown`](ManualRuntime::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.shared.lock().shut_down
    }

    /// Drops every task unfinished (in spawn order), as a runtime that shuts down
    /// does, and makes every later [`spawn`](Runtime::spawn) fail. Timers and the
    /// clock keep working (for futures the test holds). A panic while dropping a
    /// task is recorded like a panic while polling one.
    pub fn shutdown(&self) {
        let tasks = {
            let mut state = self.shared.lock();
            state.shut_down = true;
            state.ready.clear();
            core::mem::take(&mut state.tasks)
        };
        for (_, slot) in tasks {
            // A task being polled (shutdown from inside a task) is dropped when its
            // poll returns.
            if let Some(future) = slot.future {
                self.drop_task(future);
            }
        }
    }

    /// Polls runnable tasks until none is runnable; returns how many polls it made.
    /// Virtual time does not move.
    ///
    /// # Panics
    ///
    /// On a [`Livelock`] (see [`set_poll_limit`](ManualRuntime::set_poll_limit)),
    /// and if called from inside one of the runtime's tasks.
    pub fn run_until_idle(&self) -> usize {
        self.try_run_until_idle()
            .unwrap_or_else(|livelock| panic!("ManualRuntime: {livelock}"))
    }

    /// [`run_until_idle`](ManualRuntime::run_until_idle), but a livelock is returned
    /// instead of a panic (the tasks stay runnable).
    ///
    /// # Errors
    ///
    /// The tasks were still runnable after the poll limit.
    ///
    /// # Panics
    ///
    /// If called from inside one of the runtime's tasks.
    pub fn try_run_until_idle(&self) -> Result<usize, Livelock> {
        let mut polls = 0;
        loop {
            let (id, mut future, cell) = {
                let mut state = self.shared.lock();
                assert!(
                    !state.polling,
                    "ManualRuntime: driven from inside one of its own tasks"
                );
                let next = loop {
                    let Some(id) = state.ready.pop_front() else {
                        break None;
                    };
                    if let Some(slot) = state.tasks.get_mut(&id) {
                        if let Some(future) = slot.future.take() {
                            break Some((id, future, Arc::clone(&slot.cell)));
                        }
                    }
                };
                let Some(next) = next else {
                    return Ok(polls);
                };
                if polls >= state.poll_limit {
                    // Put it back: still runnable.
                    let (id, future, _) = next;
                    if let Some(slot) = state.tasks.get_mut(&id) {
                        slot.future = Some(future);
                    }
                    state.ready.push_front(id);
                    let runnable = state.ready.len();
                    return Err(Livelock { polls, runnable });
                }
                state.polling = true;
                next
            };
            polls += 1;
            // Wakes from here on queue the task again.
            cell.woken.store(false, Ordering::SeqCst);
            let waker = Waker::from(Arc::clone(&cell));
            let mut cx = Context::from_waker(&waker);
            let result = catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
            let mut state = self.shared.lock();
            state.polling = false;
            match result {
                Ok(Poll::Pending) => {
                    if let Some(slot) = state.tasks.get_mut(&id) {
                        slot.future = Some(future);
                    } else {
                        // Shut down while it was being polled.
                        drop(state);
                        self.drop_task(future);
                    }
                }
                Ok(Poll::Ready(())) => {
                    state.tasks.remove(&id);
                    drop(state);
                    self.drop_task(future);
                }
                Err(payload) => {
                    state.tasks.remove(&id);
                    state
                        .panics
                        .push(format!("task {id} panicked: {}", panic_message(&*payload)));
                    drop(state);
                    drop_payload(payload);
                    self.drop_task(future);
                }
            }
        }
    }

    /// Drops a task's future outside the lock, recording a panic in its `Drop`.
    fn drop_task(&self, future: BoxTask) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(future))) {
            let message = format!(
                "a task panicked while dropped: {}",
                panic_message(&*payload)
            );
            self.shared.lock().panics.push(message);
            drop_payload(payload);
        }
    }

    /// Wakes the next unfired timer whose deadline is at most `limit`, after moving
    /// virtual time to it. Returns whether there was one.
    fn fire_next(&self, limit: Option<Duration>) -> bool {
        let waker = {
            let mut state = self.shared.lock();
            let Some((key, entry)) = state.timers.iter_mut().find(|(_, entry)| !entry.fired) else {
                return false;
            };
            let deadline = key.0;
            if limit.is_some_and(|limit| deadline > limit) {
                return false;
            }
            entry.fired = true;
            let waker = entry.waker.take();
            if deadline > state.now {
                state.now = deadline;
            }
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    fn step_limit(&self) -> usize {
        self.shared.lock().step_limit
    }

    /// Moves virtual time forward by `by`: to each timer due by then, in order,
    /// waking it and running the tasks until idle at each step (timers armed on the
    /// way fire too, if due), then to `now + by`. Runs the tasks until idle first.
    ///
    /// # Panics
    ///
    /// On a livelock, or if more timers than the step limit fire.
    pub fn advance(&self, by: Duration) {
        let target = self.now().saturating_add(by);
        self.run_until_idle();
        let limit = self.step_limit();
        let mut steps = 0;
        while self.fire_next(Some(target)) {
            steps += 1;
            assert!(
                steps <= limit,
                "ManualRuntime: advance fired more than {limit} timers (timers re-armed for ever?)"
            );
            self.run_until_idle();
        }
        {
            let mut state = self.shared.lock();
            if target > state.now {
                state.now = target;
            }
        }
        self.run_until_idle();
    }

    /// Runs the tasks until idle, then moves virtual time to the next timer, wakes
    /// it and runs the tasks until idle again. Returns the new virtual time, or
    /// `None` (time unchanged) if no timer is waiting.
    ///
    /// # Panics
    ///
    /// On a livelock.
    pub fn advance_to_next_timer(&self) -> Option<Duration> {
        self.run_until_idle();
        if !self.fire_next(None) {
            return None;
        }
        let now = self.now();
        self.run_until_idle();
        Some(now)
    }

    /// Drives `future` (on this thread; it need not be `Send`) together with the
    /// tasks, moving virtual time to the next timer whenever everything is idle,
    /// until it completes (`Some`) or nothing is left to do: no runnable task and no
    /// timer, so it would stay pending for ever (`None`).
    ///
    /// # Panics
    ///
    /// On a livelock, if more timers than the step limit fire (a service that
    /// retries for ever while `future` waits for something else), and if `future`
    /// panics.
    pub fn run<F: Future>(&self, future: F) -> Option<F::Output> {
        self.drive(future, None)
    }

    /// As [`run`](ManualRuntime::run), but virtual time does not pass `now + limit`:
    /// `None` if `future` has not completed by then (virtual time is then
    /// `now + limit`).
    ///
    /// # Panics
    ///
    /// As [`run`](ManualRuntime::run).
    pub fn run_for<F: Future>(&self, limit: Duration, future: F) -> Option<F::Output> {
        let deadline = self.now().saturating_add(limit);
        self.drive(future, Some(deadline))
    }

    fn drive<F: Future>(&self, future: F, deadline: Option<Duration>) -> Option<F::Output> {
        let mut future = pin!(future);
        let main = Arc::new(MainWaker {
            woken: AtomicBool::new(true),
        });
        let waker = Waker::from(Arc::clone(&main));
        let mut cx = Context::from_waker(&waker);
        let (poll_limit, step_limit) = {
            let state = self.shared.lock();
            (state.poll_limit, state.step_limit)
        };
        let mut steps = 0;
        let mut polls_since_step = 0;
        loop {
            if main.woken.swap(false, Ordering::SeqCst) {
                polls_since_step += 1;
                assert!(
                    polls_since_step <= poll_limit,
                    "ManualRuntime: livelock: the future given to `run` was polled {poll_limit} \
                     times without virtual time moving"
                );
                if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                    return Some(output);
                }
            }
            self.run_until_idle();
            if main.woken.load(Ordering::SeqCst) {
                continue;
            }
            // Everything is idle: move time on.
            if !self.fire_next(deadline) {
                if let Some(deadline) = deadline {
                    let mut state = self.shared.lock();
                    if deadline > state.now {
                        state.now = deadline;
                    }
                }
                // A last chance for a future that does not register its waker.
                return match future.as_mut().poll(&mut cx) {
                    Poll::Ready(output) => Some(output),
                    Poll::Pending => None,
                };
            }
            steps += 1;
            polls_since_step = 0;
            assert!(
                steps <= step_limit,
                "ManualRuntime: `run` fired {step_limit} timers and the future is still \
                 pending (something retries for ever?)"
            );
        }
    }
}

/// Polls `future` once with a waker that does nothing, and returns the result: for
/// checking whether a future has resolved, without running tasks or moving time.
///
/// ```
/// use core::task::Poll;
/// use redial::testing::poll_once;
///
/// assert_eq!(poll_once(&mut core::future::ready(7)), Poll::Ready(7));
/// assert_eq!(poll_once(&mut core::future::pending::<()>()), Poll::Pending);
/// ```
pub fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(future).poll(&mut cx)
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(a panic payload that is not a string)")
    }
}

/// Drops a panic payload, containing a panic in its own `Drop`.
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(inner) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        core::mem::forget(inner);
    }
}
