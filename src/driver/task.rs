//! The service's one task: it owns the [`Machine`], performs its actions, and
//! reports every outcome back to it.
//!
//! The loop, on every wake-up:
//!
//! 1. take the requests handles pushed ([`Command`]s) and turn each into an input,
//!    at most [`BATCH`] of them before step 2, so that no flood of requests keeps
//!    the task from noticing a connection made or lost;
//! 2. poll what the task holds (the attempt in flight, the connection's prepare and
//!    driver futures, the timer) and turn what finished into a report; then back
//!    to step 1 until nothing happens or the budget is spent;
//! 3. feed every input and report to the machine through one function, [`Task::feed`],
//!    and perform each action it returns in one exhaustive `match`,
//!    [`Task::perform`]; an action's own outcome (a cancelled attempt, a closed
//!    connection, a zero-delay timer) is queued as a report and fed in turn;
//! 4. publish the machine's status for the handles.
//!
//! Every piece of user code the task runs — the connector (closure and future),
//! the prepare step (closure and future), a connection's driver future, a handle's
//! `Clone` and `Drop` — runs with no lock held and inside `catch_unwind`: a panic
//! is reported to the machine as what it is (a failed attempt, a loss) and the
//! service carries on. The retry policy runs inside the machine; a panic there
//! leaves the machine as it was, and ends the service with
//! [`Ended::PolicyPanicked`].

use core::future::Future;
use core::num::NonZeroU32;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::boxed::Box;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::string::String;
use std::sync::Arc;

use futures_util::future::CatchUnwind;
use futures_util::FutureExt;

use super::connection::ConnectContext;
use super::endpoints::{Rotation, SharedRotation};
use super::error::{panic_message, Ended, Error};
use super::events::{Event, Loss};
use super::liveness::{self, Activity, Seen, Verdict};
use super::log::event;
use super::pending::Pending;
use super::runtime::Runtime;
use super::shared::{self, Answer, Command, Entry, Shared, Status, StopTx, WaiterTx};
use crate::actions::{Action, Actions, Failure, LossKind, Panic, PanicSite, TimerKind};
use crate::ids::{AttemptId, StopId, TimerId, WaiterId};
use crate::input::Input;
use crate::machine::{Issued, Machine, State};
use crate::policy::RetryPolicy;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// What an attempt yields: the connection, split into its handle and its boxed driver
/// (which ends with the reason for the loss).
pub(crate) type Made<H, E> = Result<(H, BoxFuture<Loss>), E>;
/// One attempt.
pub(crate) type Attempt<H, E> = BoxFuture<Made<H, E>>;
/// The connector, its concrete types erased.
pub(crate) type ConnectFn<H, E> = Box<dyn FnMut(ConnectContext) -> Attempt<H, E> + Send>;
/// The prepare hook, its concrete types erased.
pub(crate) type PrepareFn<H, E> = Box<dyn FnMut(H) -> BoxFuture<Result<(), E>> + Send>;
/// The liveness probe, its concrete types erased (the same shape as a prepare hook).
pub(crate) type ProbeFn<H, E> = PrepareFn<H, E>;
/// Says whether a failure is one retrying will not fix.
pub(crate) type FatalFn<E> = Box<dyn FnMut(&E) -> bool + Send>;

/// The hooks a service may have beyond its connector.
pub(crate) struct Hooks<H, E> {
    pub(crate) prepare: Option<PrepareFn<H, E>>,
    pub(crate) probe: Option<ProbeFn<H, E>>,
    pub(crate) fatal_if: Option<FatalFn<E>>,
    /// The service's position in its endpoint list (a service with endpoints).
    pub(crate) rotation: Option<SharedRotation>,
}

impl<H, E> Hooks<H, E> {
    fn any(&self) -> bool {
        self.prepare.is_some()
            || self.probe.is_some()
            || self.fatal_if.is_some()
            || self.rotation.is_some()
    }
}

/// The armed timer: its id, its kind (a probe timer reads the connection's
/// traffic first), and its sleep.
type Armed<S> = (TimerId, Pin<Box<S>>);

/// A user future, polled inside `catch_unwind`.
type Contained<T> = CatchUnwind<AssertUnwindSafe<BoxFuture<T>>>;

/// A boxed retry policy, so the service's type does not name the policy.
pub(crate) struct DynPolicy(pub(crate) Box<dyn RetryPolicy + Send>);

impl RetryPolicy for DynPolicy {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        self.0.next_delay(consecutive_failures)
    }
}

/// Inputs fed per poll before yielding to the executor, so that a tight retry loop
/// (zero delay, a connector failing at once) cannot starve other tasks.
const BUDGET: u32 = 64;

/// Requests performed in a row before the task polls what it holds again.
const BATCH: u32 = 16;

/// The connection the task holds.
struct Conn<H, E> {
    attempt: AttemptId,
    handle: H,
    /// `None` once it has panicked while the connection was being prepared: the
    /// machine then asks to close the rest (handle, prepare future) with `Disconnect`.
    driver: Option<Contained<Loss>>,
    /// What only a service with a prepare step or a probe needs: made by the
    /// first of them, so that a connection without hooks keeps a null pointer.
    hooked: Option<Box<Hooked<E>>>,
}

/// [`Conn::hooked`].
struct Hooked<E> {
    /// While the prepare step runs.
    prepare: Option<Contained<Result<(), E>>>,
    /// While a liveness probe runs.
    probe: Option<Contained<Result<(), E>>>,
    /// The traffic its adapter counts (`stream`, `messages`), once its driver
    /// offered it; `None` for a connection whose traffic the service cannot see.
    activity: Option<Arc<Activity>>,
    /// What the probe timers last read from `activity`.
    seen: Seen,
}

impl<H, E> Conn<H, E> {
    /// What the hooks keep, made if need be.
    fn hooked(&mut self) -> &mut Hooked<E> {
        self.hooked.get_or_insert_with(|| {
            Box::new(Hooked {
                prepare: None,
                probe: None,
                activity: None,
                seen: Seen::default(),
            })
        })
    }

    /// Its prepare step runs.
    fn preparing(&self) -> bool {
        self.hooked.as_ref().is_some_and(|h| h.prepare.is_some())
    }
}

/// An outcome for the machine, with the detail only the driver knows about it.
struct Report<E> {
    input: Input<E>,
    /// Why the connection was lost, for a report that may lose it (the machine
    /// tells how in its `Lost` fact; this is what is behind it: the driver's
    /// error, a panic, a `disconnect` call, the probe's error).
    loss: Option<Loss>,
}

impl<E> Report<E> {
    fn new(input: Input<E>) -> Self {
        Report { input, loss: None }
    }

    fn lost(input: Input<E>, loss: Loss) -> Self {
        Report {
            input,
            loss: Some(loss),
        }
    }
}

/// What one input's actions pass along to each other: the failure its
/// `AttemptFailed` told (for the `DeliverFailure` and `GaveUp` after it) and the
/// detail of a loss its report carried (for its `Lost`).
struct Performing<E> {
    failure: Option<Arc<Failure<E>>>,
    loss: Option<Loss>,
}

/// An answer channel to register once the machine has issued its id (before the
/// input's actions are performed, which may already answer it).
enum Register<H, E> {
    Waiter { ticket: u64, tx: WaiterTx<H, E> },
    Stop(StopTx),
}

/// What the task has yet to feed or perform, kept out of line.
struct Queues<H, E> {
    /// Outcomes not yet fed to the machine, in the order they happened.
    reports: VecDeque<Report<E>>,
    /// Commands taken from the mailbox, not yet performed.
    commands: VecDeque<Entry<H, E>>,
    /// Withdrawals taken from the mailbox, not yet performed (performed before
    /// `commands`: they are about waiters taken before them).
    withdrawn: std::vec::Vec<u64>,
}

/// What the task keeps out of line: what an idle connected service without hooks
/// has none of (no attempt in flight, no timer armed, nothing queued or pending),
/// so that it keeps a null pointer for all of it. Made by the first of them, and
/// let go of once the task is idle with none of them left.
struct Aside<R: Runtime, H, E> {
    /// The reports, commands and withdrawals the task is working through: `None`
    /// when they are all empty.
    queues: Option<Box<Queues<H, E>>>,
    /// `None` without hooks (no prepare step, probe, fatal classification or
    /// endpoints): nothing is kept for them.
    hooks: Option<Box<Hooks<H, E>>>,
    attempt: Option<(AttemptId, Contained<Made<H, E>>)>,
    timer: Option<Armed<R::Sleep>>,
    /// What the armed `timer` is for (left as it was once it is gone).
    timer_kind: TimerKind,
    waiters: Pending<WaiterTx<H, E>>,
    stops: Pending<StopTx>,
    /// The failure of the last `GaveUp` fact, for the waiters that come while
    /// the machine stays stopped after it (`CancelWaiters { gave_up: Some(_) }`).
    gave_up_on: Option<Arc<Failure<E>>>,
    /// The last handle is gone: end once the machine has stopped.
    shutdown: bool,
    /// The stop asked when the last handle went has finished (the machine's
    /// `FinishStopping`): nothing is left open.
    shutdown_finished: bool,
    /// Set once the task has ended (answered everything, published the end).
    ended: bool,
}

impl<R: Runtime, H, E> Aside<R, H, E> {
    fn new() -> Self {
        Aside {
            queues: None,
            hooks: None,
            attempt: None,
            timer: None,
            timer_kind: TimerKind::Retry,
            waiters: Pending::new(),
            stops: Pending::new(),
            gave_up_on: None,
            shutdown: false,
            shutdown_finished: false,
            ended: false,
        }
    }

    /// It holds nothing an idle service needs (the queues and answer channels
    /// already given back).
    fn holds_nothing(&self) -> bool {
        self.queues.is_none()
            && self.hooks.is_none()
            && self.attempt.is_none()
            && self.timer.is_none()
            && !self.waiters.holds_storage()
            && !self.stops.holds_storage()
            && self.gave_up_on.is_none()
            && !self.shutdown
            && !self.ended
    }
}

pub(crate) struct Task<R: Runtime, H, E> {
    runtime: R,
    shared: Arc<Shared<H, E>>,
    machine: Machine<E, DynPolicy>,
    connect: ConnectFn<H, E>,
    conn: Option<Conn<H, E>>,
    /// Everything else, out of line: `None` in an idle service without hooks.
    aside: Option<Box<Aside<R, H, E>>>,
    /// A span per service (named by `Builder::name`) around everything the task does.
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl<R, H, E> Task<R, H, E>
where
    R: Runtime,
    H: Clone + Send + Sync + 'static,
    E: core::fmt::Display + Send + Sync + 'static,
{
    pub(crate) fn new(
        runtime: R,
        shared: Arc<Shared<H, E>>,
        machine: Machine<E, DynPolicy>,
        connect: ConnectFn<H, E>,
        hooks: Hooks<H, E>,
    ) -> Self {
        #[cfg(feature = "tracing")]
        let span = tracing::info_span!(
            target: "redial",
            "redial",
            service = %shared.name().unwrap_or("")
        );
        Task {
            runtime,
            shared,
            machine,
            connect,
            conn: None,
            aside: hooks.any().then(|| {
                let mut aside = Aside::new();
                aside.hooks = Some(Box::new(hooks));
                Box::new(aside)
            }),
            #[cfg(feature = "tracing")]
            span,
        }
    }

    /// The queues, made if there are none.
    fn queues(&mut self) -> &mut Queues<H, E> {
        self.aside().queues.get_or_insert_with(|| {
            Box::new(Queues {
                reports: VecDeque::new(),
                commands: VecDeque::new(),
                withdrawn: std::vec::Vec::new(),
            })
        })
    }

    // ----- the one place inputs reach the machine ------------------------------------

    /// Feeds one input (and registers its answer channel, if it issues an id), then
    /// performs its actions; `loss` is the detail of a loss the input may report.
    /// Returns `false` if the service ended.
    fn feed(
        &mut self,
        input: Input<E>,
        loss: Option<Loss>,
        register: Option<Register<H, E>>,
    ) -> bool {
        // The machine writes the input's actions into a buffer on the stack
        // (`handle_into`: no allocation, and nothing kept in an idle service).
        let mut actions = Actions::new();
        let machine = &mut self.machine;
        let fed = catch_unwind(AssertUnwindSafe(|| {
            machine.handle_into(input, &mut actions)
        }));
        match fed {
            Ok(Ok(issued)) => {
                match (issued, register) {
                    (Some(Issued::Waiter(waiter)), Some(Register::Waiter { ticket, tx })) => {
                        self.aside().waiters.push(ticket, waiter.raw(), tx);
                    }
                    (Some(Issued::Stop(stop)), Some(Register::Stop(tx))) => {
                        self.aside().stops.push(stop.raw(), stop.raw(), tx);
                    }
                    _ => {}
                }
                // Published before any answer goes out, so that whoever an answer
                // wakes reads the state that answered it.
                self.publish();
                let mut performing = Performing {
                    failure: None,
                    loss,
                };
                for action in actions.drain() {
                    self.perform(action, &mut performing);
                }
                true
            }
            Ok(Err(_rejected)) => {
                // The task only reports what the machine asked about, naming the ids
                // it was given; a rejection would be a bug in this file. The machine
                // is unchanged: carry on.
                event!(error, error = %_rejected, "driver bug: the machine rejected an input");
                true
            }
            Err(payload) => {
                // Only the retry policy runs inside the machine. The machine asked it
                // before changing anything, so it is exactly as before this input.
                let message = panic_message(&*payload);
                event!(error, panic = %message, "the retry policy panicked: the service ends");
                self.end(Ended::PolicyPanicked(message));
                false
            }
        }
    }

    /// Feeds the queued reports, oldest first, until none is left (performing an
    /// action can queue another). Returns `false` if the service ended.
    /// Stops when the budget is spent; what is left is fed on the next wake-up,
    /// before anything newer.
    fn feed_reports(&mut self, budget: &mut u32) -> bool {
        while *budget > 0 {
            let Some(report) = self.queues_mut().and_then(|q| q.reports.pop_front()) else {
                break;
            };
            *budget -= 1;
            if !self.feed(report.input, report.loss, None) {
                return false;
            }
        }
        true
    }

    // ----- the one place actions are performed ---------------------------------------

    /// Moves the endpoint rotation (a service with endpoints) on a fact.
    fn rotate(&self, on: fn(&SharedRotation)) {
        if let Some(rotation) = self.hooks().and_then(|h| h.rotation.as_ref()) {
            on(rotation);
        }
    }

    /// Performs one action. An outcome the machine must hear about is queued in
    /// `reports`. An action about something the task knows is gone needs nothing:
    /// its report has been fed or is queued already.
    fn perform(&mut self, action: Action<E>, performing: &mut Performing<E>) {
        match action {
            Action::Connect { attempt } => {
                let endpoint = self
                    .hooks()
                    .and_then(|h| h.rotation.as_ref())
                    .map(Rotation::current);
                self.tell(Event::AttemptStarted { attempt, endpoint });
                let context = ConnectContext {
                    attempt,
                    consecutive_failures: self.machine.consecutive_failures(),
                    connections: self.machine.counters().connections,
                    endpoint,
                };
                let connect = &mut self.connect;
                match catch_unwind(AssertUnwindSafe(|| connect(context))) {
                    Ok(future) => {
                        self.aside().attempt =
                            Some((attempt, AssertUnwindSafe(future).catch_unwind()));
                    }
                    Err(payload) => {
                        let panic = Panic::new(PanicSite::Connector, panic_message(&*payload));
                        event!(error, attempt = %attempt, %panic, "connector panicked");
                        self.report(Input::Panicked { attempt, panic });
                    }
                }
            }
            Action::CancelConnect { attempt } => {
                if let Some((held, future)) = self.aside.as_mut().and_then(|a| a.attempt.take()) {
                    if held == attempt {
                        contain_drop(future);
                        self.report(Input::ConnectCancelled { attempt });
                    } else {
                        self.aside().attempt = Some((held, future));
                    }
                }
            }
            Action::Prepare { attempt } => {
                // The prepare step, or, without one, the probe as the connection's
                // first check (the service asks for it only with one of them).
                let Some(hooks) = self
                    .aside
                    .as_deref_mut()
                    .and_then(|a| a.hooks.as_deref_mut())
                else {
                    return;
                };
                let (hook, site) = match (&mut hooks.prepare, &mut hooks.probe) {
                    (Some(prepare), _) => (prepare, PanicSite::Prepare),
                    (None, Some(probe)) => (probe, PanicSite::Probe),
                    (None, None) => return,
                };
                let Some(conn) = &mut self.conn else {
                    return;
                };
                if conn.attempt != attempt {
                    return;
                }
                let handle = &conn.handle;
                let started = catch_unwind(AssertUnwindSafe(|| hook(handle.clone())));
                match started {
                    Ok(future) => {
                        conn.hooked().prepare = Some(AssertUnwindSafe(future).catch_unwind());
                    }
                    Err(payload) => {
                        let panic = Panic::new(site, panic_message(&*payload));
                        event!(error, attempt = %attempt, %panic, "prepare panicked");
                        self.report(Input::Panicked { attempt, panic });
                    }
                }
            }
            Action::Disconnect { attempt } => {
                if self.conn.as_ref().is_some_and(|c| c.attempt == attempt) {
                    contain_drop(self.conn.take());
                    self.report(Input::ConnectionClosed { attempt });
                }
            }
            Action::Probe { attempt } => {
                let Some(conn) = self.conn.as_mut().filter(|c| c.attempt == attempt) else {
                    return; // gone already: its loss report is queued or fed
                };
                if conn.hooked.as_ref().is_some_and(|h| h.probe.is_some()) {
                    // The last probe still runs (it waited for the stream, and
                    // traffic answered for it meanwhile): it answers this one too.
                    // A new one beside it could cut into its exchange.
                    return;
                }
                let Some(probe) = self
                    .aside
                    .as_deref_mut()
                    .and_then(|a| a.hooks.as_deref_mut())
                    .and_then(|h| h.probe.as_mut())
                else {
                    // The service sets `Config::probe` only with a probe hook.
                    self.report(Input::ProbeSucceeded { attempt });
                    return;
                };
                let handle = &conn.handle;
                match catch_unwind(AssertUnwindSafe(|| probe(handle.clone()))) {
                    Ok(future) => {
                        conn.hooked().probe = Some(AssertUnwindSafe(future).catch_unwind());
                    }
                    Err(payload) => {
                        let panic = Panic::new(PanicSite::Probe, panic_message(&*payload));
                        event!(error, attempt = %attempt, %panic, "probe panicked");
                        self.queues().reports.push_back(Report::lost(
                            Input::ProbeFailed { attempt },
                            Loss::Panicked(panic),
                        ));
                    }
                }
            }
            Action::ScheduleTimer { timer, kind, delay } => {
                event!(trace, timer = %timer, kind = ?kind, delay = ?delay, "timer armed");
                if delay.is_zero() {
                    // No trip through the runtime's timer (Tokio's rounds up to 1 ms):
                    // it fires once what is queued before it has been fed.
                    if let Some(aside) = self.aside.as_deref_mut() {
                        aside.timer = None;
                    }
                    self.report(Input::TimerFired { timer });
                } else {
                    let sleep = Box::pin(self.runtime.sleep(delay));
                    let aside = self.aside();
                    aside.timer = Some((timer, sleep));
                    aside.timer_kind = kind;
                }
            }
            Action::CancelTimer { timer } => {
                if let Some(aside) = self.aside.as_deref_mut() {
                    if aside.timer.as_ref().is_some_and(|(t, _)| *t == timer) {
                        aside.timer = None;
                    }
                }
            }
            Action::NotifyWaiters { attempt, waiters } => self.notify(attempt, &waiters),
            Action::DeliverFailure { waiters, gave_up } => {
                // The failure of the `AttemptFailed` just before, in this list.
                let Some(last) = performing.failure.clone() else {
                    // Never without one; dropping the senders would still answer them.
                    self.aside()
                        .waiters
                        .take_ids(waiters.iter().map(|w| w.raw()), drop);
                    return;
                };
                let error = match gave_up {
                    Some(gave_up) => Error::GaveUp {
                        consecutive_failures: gave_up.consecutive_failures,
                        last,
                        fatal: gave_up.fatal,
                    },
                    None => Error::Failed(last),
                };
                self.aside()
                    .waiters
                    .take_ids(waiters.iter().map(|w| w.raw()), |tx| {
                        answer(tx, Err(error.clone()));
                    });
            }
            Action::CancelWaiters { waiters, gave_up } => {
                // Stopped because it gave up: the waiter learns why, with the
                // failure it gave up on (none after a lost connection).
                let gave_up_on = self.aside.as_ref().and_then(|a| a.gave_up_on.clone());
                let error = match (gave_up, &gave_up_on) {
                    (Some(gave_up), Some(last)) => Error::GaveUp {
                        consecutive_failures: gave_up.consecutive_failures,
                        last: Arc::clone(last),
                        fatal: gave_up.fatal,
                    },
                    _ => Error::Stopped,
                };
                self.aside()
                    .waiters
                    .take_ids(waiters.iter().map(|w| w.raw()), |tx| {
                        answer(tx, Err(error.clone()));
                    });
            }
            Action::FinishStopping { stops } => {
                self.tell(Event::Stopped);
                let aside = self.aside();
                // After the last handle went, nothing can start the machine again:
                // this stop is the one asked then, and the task may end.
                aside.shutdown_finished = aside.shutdown;
                aside
                    .stops
                    .take_ids(stops.iter().map(|s: &StopId| s.raw()), |tx| {
                        let _ = tx.send(());
                    });
            }
            // ----- facts: told, never inferred -----
            Action::AttemptFailed {
                attempt,
                failure,
                consecutive_failures,
            } => {
                // Only a failed attempt moves the rotation (a cancelled one has no
                // `AttemptFailed`).
                self.rotate(Rotation::failed);
                let failure = Arc::new(failure);
                performing.failure = Some(Arc::clone(&failure));
                self.tell(Event::AttemptFailed {
                    attempt,
                    failure,
                    consecutive_failures,
                });
            }
            Action::Connected {
                attempt,
                generation,
            } => {
                self.rotate(Rotation::connected);
                self.tell(Event::Connected {
                    attempt,
                    generation,
                });
            }
            Action::Lost {
                attempt,
                kind,
                flap,
            } => {
                self.rotate(Rotation::lost);
                let reason = match kind {
                    LossKind::Closed => performing.loss.take().unwrap_or(Loss::Closed),
                    LossKind::ProbeFailed => performing.loss.take().unwrap_or_else(|| {
                        Loss::ProbeFailed("the probe reported a failure".into())
                    }),
                    LossKind::ProbeTimedOut => Loss::ProbeTimedOut,
                };
                self.tell(Event::Lost {
                    attempt,
                    reason,
                    flap,
                });
            }
            Action::RetryScheduled {
                delay,
                consecutive_failures,
            } => self.tell(Event::RetryScheduled {
                delay,
                consecutive_failures,
            }),
            Action::GaveUp {
                consecutive_failures,
                fatal,
            } => {
                self.rotate(Rotation::gave_up);
                let last = performing.failure.take();
                if last.is_some() || self.aside.is_some() {
                    self.aside().gave_up_on.clone_from(&last);
                }
                self.tell(Event::GaveUp {
                    consecutive_failures,
                    last,
                    fatal,
                });
            }
        }
    }

    /// Queues an outcome for the machine.
    fn report(&mut self, input: Input<E>) {
        self.queues().reports.push_back(Report::new(input));
    }

    /// A failed connect or prepare step: fatal if the user's classifier says so
    /// (run inside `catch_unwind`: a classifier that panics says "not fatal").
    fn failure_report(&mut self, attempt: AttemptId, error: E, prepare: bool) -> Input<E> {
        let fatal_if = self
            .aside
            .as_deref_mut()
            .and_then(|a| a.hooks.as_deref_mut())
            .and_then(|h| h.fatal_if.as_mut());
        let fatal = match fatal_if {
            Some(fatal_if) => match catch_unwind(AssertUnwindSafe(|| fatal_if(&error))) {
                Ok(fatal) => fatal,
                Err(_payload) => {
                    event!(
                        error,
                        attempt = %attempt,
                        panic = %panic_message(&*_payload),
                        "the fatal_if classifier panicked: the failure counts as not fatal"
                    );
                    false
                }
            },
            None => false,
        };
        match (fatal, prepare) {
            (true, _) => Input::AttemptFailedFatally { attempt, error },
            (false, false) => Input::ConnectionFailed { attempt, error },
            (false, true) => Input::PrepareFailed { attempt, error },
        }
    }

    /// Hands the connection to these waiters: a clone of its handle each.
    fn notify(&mut self, attempt: AttemptId, waiters: &[WaiterId]) {
        // The machine only names the connection the task holds. (Were it missing,
        // dropping the senders would answer the waiters rather than hang them.)
        let conn = self.conn.as_ref().filter(|c| c.attempt == attempt);
        let mut broken: Option<(Panic, Arc<Failure<E>>)> = None;
        let Some(aside) = self.aside.as_deref_mut() else {
            return; // no waiter is pending
        };
        aside
            .waiters
            .take_ids(waiters.iter().map(|w| w.raw()), |tx| {
                let Some(conn) = conn else { return };
                if let Some((_, failure)) = &broken {
                    return answer(tx, Err(Error::Failed(Arc::clone(failure))));
                }
                match catch_unwind(AssertUnwindSafe(|| conn.handle.clone())) {
                    Ok(handle) => answer(tx, Ok((attempt, handle))),
                    Err(payload) => {
                        // The handle cannot be cloned: the connection is unusable. This
                        // waiter and the rest fail with the panic; it is closed as lost.
                        let panic = Panic::new(PanicSite::Handle, panic_message(&*payload));
                        event!(error, attempt = %attempt, %panic, "handle clone panicked");
                        let failure = Arc::new(Failure::Panicked(panic.clone()));
                        answer(tx, Err(Error::Failed(Arc::clone(&failure))));
                        broken = Some((panic, failure));
                    }
                }
            });
        if let Some((panic, _)) = broken {
            contain_drop(self.conn.take());
            self.queues().reports.push_back(Report::lost(
                Input::ConnectionClosed { attempt },
                Loss::Panicked(panic),
            ));
        }
    }

    // ----- requests from the handles ---------------------------------------------------

    fn command(&mut self, command: Command<H, E>) -> bool {
        match command {
            Command::Start => self.feed(Input::Start, None, None),
            Command::Stop(tx) => self.feed(Input::Stop, None, Some(Register::Stop(tx))),
            Command::WhenConnected {
                ticket,
                fail_after,
                tx,
            } => self.when_connected(ticket, fail_after, tx),
            Command::Withdraw { ticket } => match self
                .aside
                .as_deref_mut()
                .and_then(|a| a.waiters.take_ticket(ticket))
            {
                Some((waiter, tx)) => {
                    drop(tx);
                    let waiter = WaiterId::from_raw(waiter);
                    self.feed(Input::CancelWaiter { waiter }, None, None)
                }
                None => true, // answered already
            },
            Command::Disconnect(attempt) => {
                // Only the current connection; a late call about an older one does
                // nothing, so it cannot knock out a newer connection.
                // (The connection the task holds is the machine's current one:
                // once it ends, its loss is fed before any request is taken.)
                let current = self.conn.as_ref().is_some_and(|c| c.attempt == attempt);
                if !current {
                    return true;
                }
                contain_drop(self.conn.take());
                let input = Input::ConnectionClosed { attempt };
                self.feed(input, Some(Loss::Disconnected), None)
            }
            Command::ReconnectNow { reset_backoff } => {
                self.feed(Input::ReconnectNow { reset_backoff }, None, None)
            }
            Command::Shutdown => {
                self.aside().shutdown = true;
                self.feed(Input::Stop, None, None)
            }
        }
    }

    fn when_connected(
        &mut self,
        ticket: u64,
        fail_after_failures: Option<NonZeroU32>,
        tx: WaiterTx<H, E>,
    ) -> bool {
        if tx.is_canceled() {
            // Dropped before we got to it (its withdrawal follows): skip it.
            return true;
        }
        let input = Input::WhenConnected {
            fail_after_failures,
        };
        self.feed(input, None, Some(Register::Waiter { ticket, tx }))
    }

    // ----- what the task holds -----------------------------------------------------------

    /// Polls what the task holds; queues the first outcome found as a report.
    /// Returns whether anything happened.
    fn poll_sources(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some((attempt, future)) = self.aside.as_deref_mut().and_then(|a| a.attempt.as_mut())
        {
            if let Poll::Ready(result) = Pin::new(future).poll(cx) {
                let attempt = *attempt;
                if let Some(aside) = self.aside.as_deref_mut() {
                    aside.attempt = None;
                }
                let report = match result {
                    Ok(Ok((handle, driver))) => {
                        self.conn = Some(Conn {
                            attempt,
                            handle,
                            driver: Some(AssertUnwindSafe(driver).catch_unwind()),
                            hooked: None,
                        });
                        Input::ConnectionMade { attempt }
                    }
                    Ok(Err(error)) => {
                        event!(debug, attempt = %attempt, "connection attempt failed");
                        self.failure_report(attempt, error, false)
                    }
                    Err(payload) => {
                        let panic = Panic::new(PanicSite::Connector, panic_message(&*payload));
                        event!(error, attempt = %attempt, %panic, "connector panicked");
                        Input::Panicked { attempt, panic }
                    }
                };
                self.report(report);
                return true;
            }
        }
        // Only a probing service looks at a connection's traffic.
        let probing = self.hooks().is_some_and(|h| h.probe.is_some());
        if let Some(conn) = &mut self.conn {
            let attempt = conn.attempt;
            if let Some(hooked) = conn.hooked.as_deref_mut() {
                let polled = match &mut hooked.prepare {
                    Some(prepare) => Pin::new(prepare).poll(cx),
                    None => Poll::Pending,
                };
                if let Poll::Ready(result) = polled {
                    hooked.prepare = None;
                    let report = match result {
                        Ok(Ok(())) => Input::PrepareSucceeded { attempt },
                        Ok(Err(error)) => {
                            event!(debug, attempt = %attempt, "prepare failed");
                            self.failure_report(attempt, error, true)
                        }
                        Err(payload) => {
                            let panic = Panic::new(PanicSite::Prepare, panic_message(&*payload));
                            event!(error, attempt = %attempt, %panic, "prepare panicked");
                            Input::Panicked { attempt, panic }
                        }
                    };
                    self.report(report);
                    return true;
                }
            }
            if let Some(hooked) = conn.hooked.as_deref_mut() {
                let polled = match &mut hooked.probe {
                    Some(probe) => liveness::as_probe(|| Pin::new(probe).poll(cx)),
                    None => Poll::Pending,
                };
                if let Poll::Ready(result) = polled {
                    hooked.probe = None;
                    // Traffic may have answered for it already: the machine then
                    // takes its success as stale news, and its failure as the
                    // connection's death all the same.
                    if let (Ok(Ok(())), Some(activity)) = (&result, &hooked.activity) {
                        hooked.seen.answered(activity);
                    }
                    let loss = match result {
                        Ok(Ok(())) => {
                            self.report(Input::ProbeSucceeded { attempt });
                            return true;
                        }
                        Ok(Err(error)) => {
                            let reason: Arc<str> = std::format!("{error:#}").into();
                            Loss::ProbeFailed(reason)
                        }
                        Err(payload) => {
                            let panic = Panic::new(PanicSite::Probe, panic_message(&*payload));
                            event!(error, attempt = %attempt, %panic, "probe panicked");
                            Loss::Panicked(panic)
                        }
                    };
                    self.queues()
                        .reports
                        .push_back(Report::lost(Input::ProbeFailed { attempt }, loss));
                    return true;
                }
            }
            let Some(driver) = &mut conn.driver else {
                return false;
            };
            let listening = probing && conn.hooked.as_ref().is_none_or(|h| h.activity.is_none());
            let polled = if listening {
                // Its adapter, if it is one of ours, offers its traffic counts.
                let (polled, offered) = liveness::listen(|| Pin::new(driver).poll(cx));
                if let Some(activity) = offered {
                    conn.hooked().activity = Some(activity);
                }
                polled
            } else {
                Pin::new(driver).poll(cx)
            };
            if let Poll::Ready(result) = polled {
                let report = match result {
                    Err(payload) if conn.preparing() => {
                        // Being prepared: a failed attempt that names the panic. The
                        // machine asks to close the rest (`Disconnect`).
                        conn.driver = None;
                        let panic = Panic::new(PanicSite::Connection, panic_message(&*payload));
                        event!(error, attempt = %attempt, %panic, "connection driver panicked");
                        Report::new(Input::Panicked { attempt, panic })
                    }
                    Err(payload) => {
                        contain_drop(self.conn.take());
                        let panic = Panic::new(PanicSite::Connection, panic_message(&*payload));
                        event!(error, attempt = %attempt, %panic, "connection driver panicked");
                        Report::lost(Input::ConnectionClosed { attempt }, Loss::Panicked(panic))
                    }
                    Ok(reason) => {
                        contain_drop(self.conn.take());
                        Report::lost(Input::ConnectionClosed { attempt }, reason)
                    }
                };
                self.queues().reports.push_back(report);
                return true;
            }
        }
        let mut fired = None;
        if let Some(aside) = self.aside.as_deref_mut() {
            if let Some((timer, sleep)) = &mut aside.timer {
                if sleep.as_mut().poll(cx).is_ready() {
                    fired = Some((*timer, aside.timer_kind));
                    aside.timer = None;
                }
            }
        }
        if let Some((timer, kind)) = fired {
            self.before_probe_timer(kind);
            self.report(Input::TimerFired { timer });
            return true;
        }
        false
    }

    /// A probe timer fired: if the connection's traffic says it is active (see
    /// [`Seen::judge`]), tell the machine first, with how long ago it last
    /// received something, so that the rest of an interval from then is armed
    /// instead of a probe, or the outstanding probe is answered.
    fn before_probe_timer(&mut self, kind: TimerKind) {
        let timeout = match kind {
            TimerKind::ProbeInterval => false,
            TimerKind::ProbeTimeout => true,
            _ => return,
        };
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let attempt = conn.attempt;
        let Some(Hooked {
            activity: Some(activity),
            seen,
            ..
        }) = conn.hooked.as_deref_mut()
        else {
            return;
        };
        if let Verdict::Active(quiet_for) = seen.judge(activity, timeout, std::time::Instant::now())
        {
            self.report(Input::ConnectionActive { attempt, quiet_for });
        }
    }

    /// Nothing to do until something happens: give back the queues' storage, so
    /// that an idle service keeps nothing it does not need (they are made again,
    /// small, by the next request).
    fn release_idle_storage(&mut self) {
        if let Some(aside) = self.aside.as_deref_mut() {
            if aside.queues.as_ref().is_some_and(|q| {
                q.reports.is_empty() && q.commands.is_empty() && q.withdrawn.is_empty()
            }) {
                aside.queues = None;
            }
            aside.waiters.release_if_empty();
            aside.stops.release_if_empty();
            if aside.holds_nothing() {
                self.aside = None;
            }
        }
        self.machine.shrink_to_fit();
        if let Some(events) = self.shared.events() {
            events.shrink();
        }
        let spare = {
            let mut mailbox = self.shared.lock();
            if mailbox.commands.is_empty() && mailbox.commands.holds_storage() {
                mailbox.commands.take()
            } else {
                Default::default()
            }
        };
        drop(spare); // it held nothing: no user value is dropped here
    }

    // ----- status, events and the end --------------------------------------------------

    /// Logs an event (with `tracing`, at a level that fits it) and hands it to the
    /// subscribers.
    fn tell(&mut self, event: Event<E>) {
        #[cfg(feature = "tracing")]
        match &event {
            Event::AttemptStarted { attempt, endpoint } => {
                tracing::debug!(target: "redial", %attempt, endpoint, "attempt started")
            }
            Event::AttemptFailed {
                attempt,
                failure,
                consecutive_failures,
            } => {
                // One failure is business as usual; several in a row deserve a look.
                let error = super::log::Chain(&**failure);
                if *consecutive_failures <= 1 {
                    tracing::info!(target: "redial", %attempt, %error, consecutive_failures, "attempt failed")
                } else {
                    tracing::warn!(target: "redial", %attempt, %error, consecutive_failures, "attempt failed")
                }
            }
            Event::RetryScheduled {
                delay,
                consecutive_failures,
            } => {
                tracing::debug!(target: "redial", ?delay, consecutive_failures, "retry scheduled")
            }
            Event::Connected {
                attempt,
                generation,
            } => tracing::info!(target: "redial", %attempt, generation, "connected"),
            Event::Lost {
                attempt,
                reason,
                flap,
            } => {
                let reason = super::log::Chain(reason);
                tracing::warn!(target: "redial", %attempt, %reason, flap, "connection lost")
            }
            Event::GaveUp {
                consecutive_failures,
                last,
                fatal,
            } => {
                let error = last
                    .as_deref()
                    .map(|f| std::string::ToString::to_string(&super::log::Chain(f)));
                if *fatal {
                    tracing::error!(target: "redial", consecutive_failures, error, "gave up: a failure retrying will not fix")
                } else {
                    tracing::error!(target: "redial", consecutive_failures, error, "the retry policy gave up")
                }
            }
            Event::Stopped => tracing::info!(target: "redial", "stopped"),
            Event::Ended(_) | Event::Missed { .. } => {}
        }
        self.emit(event);
    }

    /// Publishes the machine's status for the handles, if it changed.
    fn publish(&mut self) {
        let mut status = Status::new(
            self.machine.state(),
            self.machine.counters(),
            self.machine.consecutive_failures(),
            self.machine.pending_waiters().len(),
            self.conn
                .as_ref()
                .map(|c| c.attempt)
                .filter(|a| self.machine.current_attempt() == Some(*a)),
        );
        // Compared with what the handles read (the task is its only writer), so
        // that the task keeps no copy of its own.
        let watch = {
            let mut mailbox = self.shared.lock();
            // `disconnect` told the handles the connection is no longer current
            // when it queued its request: so it stays until the task has taken it.
            if let Some(attempt) = status.connection() {
                if mailbox.status.connection().is_none()
                    && (mailbox.commands.disconnects(attempt)
                        || self
                            .queues_ref()
                            .is_some_and(|q| shared::disconnects(&q.commands, attempt)))
                {
                    status.set_connection(None);
                }
            }
            if mailbox.status == status {
                return;
            }
            mailbox.status = status;
            mailbox.watch().cloned()
        };
        if let Some(watch) = watch {
            watch.publish(status.state, false);
        }
    }

    /// One wake-up of the task (see the module docs).
    fn run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut budget = BUDGET;
        loop {
            // Outcomes left over from the last wake-up come first.
            let mut progressed = self.queues_ref().is_some_and(|q| !q.reports.is_empty());
            if !self.feed_reports(&mut budget) {
                return Poll::Ready(());
            }
            if self
                .queues_ref()
                .is_none_or(|q| q.commands.is_empty() && q.withdrawn.is_empty())
            {
                let mut mailbox = self.shared.lock();
                match &mailbox.task {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => mailbox.task = Some(cx.waker().clone()),
                }
                let (withdrawn, commands) = mailbox.commands.take();
                drop(mailbox);
                if !withdrawn.is_empty() || !commands.is_empty() {
                    let queues = self.queues();
                    // What they held before (nothing: they were empty) is dropped here.
                    drop(core::mem::replace(&mut queues.withdrawn, withdrawn));
                    drop(core::mem::replace(&mut queues.commands, commands));
                }
            }
            let mut batch = BATCH;
            while budget > 0 && batch > 0 {
                let command = match self.queues_mut().and_then(|q| q.withdrawn.pop()) {
                    Some(ticket) => Command::Withdraw { ticket },
                    None => match self.queues_mut().and_then(|q| q.commands.pop_front()) {
                        Some(Entry {
                            command: Some(command),
                            ..
                        }) => command,
                        Some(Entry { command: None, .. }) => continue, // a hole
                        None => break,
                    },
                };
                progressed = true;
                budget -= 1;
                batch -= 1;
                if !self.command(command) || !self.feed_reports(&mut budget) {
                    return Poll::Ready(());
                }
            }
            // Then what the task holds, after every batch of requests, even with the
            // budget spent (what it finds is fed first in the next poll): a flood of
            // requests cannot delay a connection made, lost or timed out.
            if self.poll_sources(cx) {
                progressed = true;
                if !self.feed_reports(&mut budget) {
                    return Poll::Ready(());
                }
            }
            self.publish();
            if self
                .aside
                .as_ref()
                .is_some_and(|a| a.shutdown_finished && a.attempt.is_none())
                && self.conn.is_none()
            {
                self.end(Ended::Dropped);
                return Poll::Ready(());
            }
            if !progressed {
                self.release_idle_storage();
                return Poll::Pending;
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}

impl<R: Runtime, H, E> Task<R, H, E> {
    /// What is kept out of line, made if need be.
    fn aside(&mut self) -> &mut Aside<R, H, E> {
        self.aside.get_or_insert_with(|| Box::new(Aside::new()))
    }

    /// The hooks, if the service has any.
    fn hooks(&self) -> Option<&Hooks<H, E>> {
        self.aside.as_ref()?.hooks.as_deref()
    }

    /// The queues, if there are any.
    fn queues_ref(&self) -> Option<&Queues<H, E>> {
        self.aside.as_ref()?.queues.as_deref()
    }

    /// The queues, if there are any.
    fn queues_mut(&mut self) -> Option<&mut Queues<H, E>> {
        self.aside.as_mut()?.queues.as_deref_mut()
    }

    /// The task has ended.
    fn is_ended(&self) -> bool {
        self.aside.as_ref().is_some_and(|a| a.ended)
    }

    /// Hands an event to the subscribers (if anyone ever subscribed), and keeps the
    /// last failure and the last loss for the handles.
    fn emit(&mut self, event: Event<E>) {
        let replaced = match &event {
            Event::AttemptFailed { failure, .. } => {
                let mut mailbox = self.shared.lock();
                let old = mailbox.later().last_failure.replace(Arc::clone(failure));
                drop(mailbox);
                (old, None)
            }
            Event::Lost { reason, .. } => {
                let mut mailbox = self.shared.lock();
                let old = mailbox.later().last_loss.replace(reason.clone());
                drop(mailbox);
                (None, old)
            }
            _ => (None, None),
        };
        // What they held (your error, in a failure) is dropped outside the lock.
        contain_drop(replaced);
        if let Some(events) = self.shared.events() {
            events.publish(event);
        }
    }

    /// The task ends: close what is open, answer everything pending, and tell the
    /// handles, so that nothing waits for a task that is gone.
    fn end(&mut self, why: Ended) {
        if self.is_ended() {
            return;
        }
        self.aside().ended = true;
        #[cfg(feature = "tracing")]
        match &why {
            Ended::Dropped => tracing::debug!(target: "redial", "the service ended: dropped"),
            Ended::RuntimeGone => {
                tracing::warn!(target: "redial", "the service ended: {why}")
            }
            _ => tracing::error!(target: "redial", "the service ended: {why}"),
        }
        let (commands, watch) = {
            let mut mailbox = self.shared.lock();
            mailbox.later().ended = Some(why.clone());
            mailbox.task = None;
            mailbox.status.state = State::Stopped;
            mailbox.status.set_pending_waiters(0);
            mailbox.status.set_connection(None);
            (mailbox.commands.take().1, mailbox.watch().cloned())
        };
        contain_drop(self.aside().attempt.take());
        contain_drop(self.conn.take());
        self.aside().timer = None;
        let waiters = self.aside().waiters.drain().collect::<std::vec::Vec<_>>();
        for tx in waiters {
            answer(tx, Err(Error::Ended(why.clone())));
        }
        let stops = self.aside().stops.drain().collect::<std::vec::Vec<_>>();
        for tx in stops {
            let _ = tx.send(());
        }
        let held = match &mut self.aside().queues {
            Some(queues) => {
                queues.withdrawn = std::vec::Vec::new();
                core::mem::take(&mut queues.commands)
            }
            None => VecDeque::new(),
        };
        for command in held.into_iter().chain(commands).filter_map(|e| e.command) {
            match command {
                Command::WhenConnected { tx, .. } => answer(tx, Err(Error::Ended(why.clone()))),
                Command::Stop(tx) => {
                    let _ = tx.send(());
                }
                _ => {}
            }
        }
        if let Some(watch) = watch {
            watch.publish(State::Stopped, true);
        }
        self.emit(Event::Ended(why));
        if let Some(events) = self.shared.events() {
            events.close();
        }
    }
}

/// Sends a waiter its answer. If the waiter is gone, what was sent (a handle) is
/// dropped here, inside `catch_unwind`.
fn answer<H, E>(tx: WaiterTx<H, E>, value: Answer<H, E>) {
    if let Err(value) = tx.send(value) {
        contain_drop(value);
    }
}

/// Drops user values (futures, handles) inside `catch_unwind`: a panicking `Drop`
/// must not take the task down.
fn contain_drop<T>(value: T) {
    if let Err(_payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
        event!(error, panic = %panic_message(&*_payload), "a user value panicked when dropped");
    }
}

/// The task as the runtime runs it: a panic the task could not contain ends the
/// service rather than leaving it a zombie.
pub(crate) struct TaskFuture<R: Runtime, H, E>(pub(crate) Task<R, H, E>);

// Every future the task holds is boxed; nothing is pinned in place.
impl<R: Runtime, H, E> Unpin for TaskFuture<R, H, E> {}

impl<R, H, E> Future for TaskFuture<R, H, E>
where
    R: Runtime,
    H: Clone + Send + Sync + 'static,
    E: core::fmt::Display + Send + Sync + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = &mut self.get_mut().0;
        if task.is_ended() {
            return Poll::Ready(());
        }
        #[cfg(feature = "tracing")]
        let span = task.span.clone();
        #[cfg(feature = "tracing")]
        let _entered = span.enter();
        match catch_unwind(AssertUnwindSafe(|| task.run(cx))) {
            Ok(poll) => poll,
            Err(payload) => {
                let message: String = panic_message(&*payload);
                event!(error, panic = %message, "the service's task panicked: the service ends");
                task.end(Ended::Panicked(message));
                Poll::Ready(())
            }
        }
    }
}

impl<R: Runtime, H, E> Drop for Task<R, H, E> {
    fn drop(&mut self) {
        // Only if the runtime drops the task unfinished (it shut down): tell the
        // handles, close what is open, answer what is pending.
        self.end(Ended::RuntimeGone);
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use core::mem::size_of;

    use super::TaskFuture;
    use crate::driver::SharedStream;
    use crate::tokio::{Tokio, INLINE_TASK};

    /// The task of a Tokio stream service is spawned inline, in a 256-byte cell
    /// (a larger future would be boxed: 128 bytes of cell and the future).
    /// With `tracing`, its span (a service's own) makes it larger: boxed.
    #[test]
    fn a_stream_service_task_fits_tokio_s_inline_cell() {
        type Future = TaskFuture<Tokio, SharedStream<::tokio::net::TcpStream>, std::io::Error>;
        #[cfg(feature = "tracing")]
        let span = size_of::<tracing::Span>();
        #[cfg(not(feature = "tracing"))]
        let span = 0;
        let size = size_of::<Future>() - span;
        assert!(size <= INLINE_TASK, "{size} B");
    }
}
