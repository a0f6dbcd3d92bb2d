//! A deterministic simulated driver: virtual clock, scripted connector, recorded actions.

use core::fmt;
use core::marker::PhantomData;
use core::num::NonZeroU32;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};
use std::format;
use std::string::String;
use std::vec::Vec;

use super::app::App;
use super::connections::{ConnState, Connections};
use super::invariants::Invariants;
use super::trace::{Comment, Trace, TraceStep};
use crate::actions::{Action, Actions, Failure, Panic, PanicSite};
use crate::error::InputError;
use crate::ids::{AttemptId, StopId, WaiterId};
use crate::input::Input;
use crate::machine::{Machine, Step};
use crate::policy::RetryPolicy;

/// What the simulated connector does with one attempt (scripted, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectScript<E> {
    /// The attempt connects after `after`; the connection is then lost after
    /// `lost_after` (or stays up, if `None`).
    Connect {
        /// How long the attempt takes.
        after: Duration,
        /// How long the connection stays up before it is lost.
        lost_after: Option<Duration>,
    },
    /// The attempt fails with `error` after `after`.
    Fail {
        /// How long the attempt takes.
        after: Duration,
        /// The error.
        error: E,
    },
    /// The attempt fails with `error` after `after`, and retrying will not fix it
    /// (reported with `attempt_failed_fatally`).
    FailFatally {
        /// How long the attempt takes.
        after: Duration,
        /// The error.
        error: E,
    },
    /// The connector panics after `after` (reported with `panicked`).
    Panic {
        /// How long until it panics.
        after: Duration,
        /// The panic message.
        message: String,
    },
    /// The attempt never finishes (until the machine cancels it).
    Hang,
}

/// What the simulated prepare step does with one connection (scripted, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareScript<E> {
    /// It accepts the connection after `after`.
    Succeed {
        /// How long it takes.
        after: Duration,
    },
    /// It rejects the connection with `error` after `after`.
    Fail {
        /// How long it takes.
        after: Duration,
        /// The error.
        error: E,
    },
    /// It rejects the connection with `error` after `after`, and retrying will
    /// not fix it (reported with `attempt_failed_fatally`); the machine then closes the
    /// connection.
    FailFatally {
        /// How long it takes.
        after: Duration,
        /// The error.
        error: E,
    },
    /// It panics after `after` (reported with `panicked`); the machine then
    /// closes the connection.
    Panic {
        /// How long until it panics.
        after: Duration,
        /// The panic message.
        message: String,
    },
    /// It never finishes (until the machine closes the connection).
    Hang,
}

/// What the simulated connection does with one probe (scripted, in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeScript {
    /// The peer answers after `after`.
    Succeed {
        /// How long it takes.
        after: Duration,
    },
    /// The probe fails after `after` (reported with `probe_failed`).
    Fail {
        /// How long it takes.
        after: Duration,
    },
    /// No answer ever comes (the peer vanished): the probe timeout decides.
    Hang,
}

/// How a waiter was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<E> {
    /// Handed this connection (`NotifyWaiters`).
    Notified(AttemptId),
    /// Failed with this failure (`DeliverFailure`).
    Failed(Failure<E>),
    /// Cancelled because the service stopped (`CancelWaiters`).
    Cancelled,
}

/// One input the simulated driver fed, when, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<E> {
    /// The virtual time of the input.
    pub at: Duration,
    /// The input.
    pub input: Input<E>,
    /// What it returned (its actions, and a new waiter's or stop's id), or why it
    /// was rejected.
    pub result: Result<Step<E>, InputError>,
}

/// A deterministic driver for a [`Machine`], or for an [`App`] that owns one: a
/// virtual clock, a scripted connector and prepare step, and a record of every
/// input and action.
///
/// The simulator performs each action as a real driver would — it starts scripted
/// attempts, runs scripted prepare steps, arms timers on its virtual clock, reports
/// a cancelled attempt gone and a closed connection closed at once — and records
/// how every waiter and stop request was answered. Time moves only when you call
/// [`advance`](Sim::advance); events due at the same instant run in the order they
/// were scheduled, so every run is reproducible.
///
/// After every input it checks the behaviour contract's invariants
/// ([`Invariants`]) and **panics** with the trace so far if one is violated (or if
/// the machine rejects one of the simulator's own reports), which makes it a
/// ready-made oracle inside a property test. [`Sim::feed`] injects any input,
/// stale or invalid ones included, to test how a program built on the machine
/// reacts to them.
///
/// When the connect script runs out, attempts [`Hang`](ConnectScript::Hang);
/// when the prepare script runs out, prepare steps succeed at once.
///
/// # An application under the simulator
///
/// [`Sim::new`] takes any [`App`]: a plain [`Machine`], or an application that
/// owns its machine (or `&mut` one, to keep owning it). Every input, the
/// simulator's reports and the calls below alike, goes through
/// [`App::handle`], so the application sees each one and what its machine made
/// of it; the inputs it queues ([`App::command`]) are fed after each input;
/// [`App::check`] runs after each input with the [`Connections`] as they stand,
/// and a failed check panics with the trace, as a violated invariant does. The
/// application's own operations run with [`app_op`](Sim::app_op); [`step`](Sim::step)
/// feeds one report at a time. See `tests/machine/app_queue.rs` in the repository for a
/// complete example.
///
/// [`trace`](Sim::trace) returns the run in the trace format with the virtual time
/// of each input (`@1500ms …`) and the comments added with
/// [`comment`](Sim::comment); it replays exactly ([`Trace::replay`]): its policy
/// line is the machine's [`SimPolicy`](super::SimPolicy), or `policy recorded`
/// for any other policy.
///
/// ```
/// use core::time::Duration;
/// use redial::testing::{Answer, ConnectScript, Sim, SimPolicy};
/// use redial::Machine;
///
/// let policy = SimPolicy::linear(Duration::from_secs(1));
/// let mut sim = Sim::new(Machine::<&str, _>::new(policy));
/// sim.script_connects([
///     ConnectScript::Fail { after: Duration::from_millis(10), error: "refused" },
///     ConnectScript::Connect { after: Duration::from_millis(10), lost_after: None },
/// ]);
/// sim.start();
/// let waiter = sim.when_connected(None);
/// sim.advance(Duration::from_secs(5));
/// // 10 ms to fail, 1 s of backoff, 10 ms to connect.
/// assert!(matches!(sim.answer(waiter), Some(Answer::Notified(_))));
/// assert_eq!(sim.answered_at(waiter), Some(Duration::from_millis(1020)));
/// ```
#[derive(Debug)]
pub struct Sim<E, P, A = Machine<E, P>> {
    app: A,
    now: Duration,
    connects: VecDeque<ConnectScript<E>>,
    prepares: VecDeque<PrepareScript<E>>,
    probes: VecDeque<ProbeScript>,
    /// Reports due, keyed by (time, sequence number).
    queue: BTreeMap<(Duration, u64), Input<E>>,
    seq: u64,
    lose_after: BTreeMap<AttemptId, Duration>,
    answers: BTreeMap<WaiterId, (Duration, Answer<E>)>,
    finished: Vec<(Duration, StopId)>,
    failures: Vec<(Duration, AttemptId, Failure<E>)>,
    gave_up: usize,
    records: Vec<Record<E>>,
    invariants: Invariants,
    connections: Connections,
    comments: Vec<Comment>,
    _policy: PhantomData<fn() -> P>,
}

impl<E, P, A> Sim<E, P, A>
where
    E: Clone + fmt::Debug + fmt::Display,
    P: RetryPolicy + 'static,
    A: App<E, Policy = P>,
{
    /// A simulator driving `app`, a [`Machine`] or an application that owns one
    /// (usually fresh, in `Init`), at virtual time zero.
    pub fn new(app: A) -> Self {
        Sim {
            app,
            now: Duration::ZERO,
            connects: VecDeque::new(),
            prepares: VecDeque::new(),
            probes: VecDeque::new(),
            queue: BTreeMap::new(),
            seq: 0,
            lose_after: BTreeMap::new(),
            answers: BTreeMap::new(),
            finished: Vec::new(),
            failures: Vec::new(),
            gave_up: 0,
            records: Vec::new(),
            invariants: Invariants::new(),
            connections: Connections::new(),
            comments: Vec::new(),
            _policy: PhantomData,
        }
    }

    /// Appends outcomes for the next attempts, in order.
    pub fn script_connects(&mut self, outcomes: impl IntoIterator<Item = ConnectScript<E>>) {
        self.connects.extend(outcomes);
    }

    /// Appends outcomes for the next prepare steps, in order.
    pub fn script_prepares(&mut self, outcomes: impl IntoIterator<Item = PrepareScript<E>>) {
        self.prepares.extend(outcomes);
    }

    /// Appends outcomes for the next probes ([`Config::probe`](crate::Config::probe)),
    /// in order. When the script runs out, probes succeed at once.
    pub fn script_probes(&mut self, outcomes: impl IntoIterator<Item = ProbeScript>) {
        self.probes.extend(outcomes);
    }

    /// Calls `start`.
    pub fn start(&mut self) {
        self.feed_step(Input::Start);
    }

    /// Calls `stop`; the stop request's id.
    pub fn stop(&mut self) -> StopId {
        self.feed_step(Input::Stop)
            .stop
            .unwrap_or_else(|| panic!("stop issued no id"))
    }

    /// Calls `when_connected`; the waiter's id.
    pub fn when_connected(&mut self, fail_after_failures: Option<NonZeroU32>) -> WaiterId {
        self.feed_step(Input::WhenConnected {
            fail_after_failures,
        })
        .waiter
        .unwrap_or_else(|| panic!("when_connected issued no id"))
    }

    /// Calls `reconnect_now`.
    pub fn reconnect_now(&mut self, reset_backoff: bool) {
        self.feed_step(Input::ReconnectNow { reset_backoff });
    }

    /// Withdraws a waiter (`cancel_waiter`).
    ///
    /// # Errors
    ///
    /// The machine rejected it (a waiter id it never issued).
    pub fn withdraw(&mut self, waiter: WaiterId) -> Result<(), InputError> {
        self.feed(Input::CancelWaiter { waiter }).map(drop)
    }

    fn feed_step(&mut self, input: Input<E>) -> Step<E> {
        self.commands();
        let result = self.app.handle(input.clone());
        self.after(input, result)
            .unwrap_or_else(|e| panic!("rejected: {e}"))
    }

    /// Feeds any input now — including stale or invalid reports — and performs the
    /// actions it returns.
    ///
    /// # Errors
    ///
    /// The machine rejected the input (nothing changed).
    pub fn feed(&mut self, input: Input<E>) -> Result<Actions<E>, InputError> {
        self.commands();
        let result = self.app.handle(input.clone());
        self.after(input, result).map(|step| step.actions)
    }

    fn after(
        &mut self,
        input: Input<E>,
        result: Result<Step<E>, InputError>,
    ) -> Result<Step<E>, InputError> {
        if let Err(violation) = self.invariants.check(&input, &result, self.app.machine()) {
            let mut trace = self.trace();
            trace.steps.push(TraceStep::record(
                &input,
                &result,
                self.app.machine().state(),
            ));
            panic!("{trace}# invariant violated: {violation}");
        }
        self.records.push(Record {
            at: self.now,
            input: input.clone(),
            result: result.clone(),
        });
        self.notes();
        self.connections.observe(&input, &result);
        if let Err(failed) = self.app.check(&self.connections) {
            panic!("{}# the application's check failed: {failed}", self.trace());
        }
        if let (Input::ConnectionMade { attempt }, Ok(_)) = (&input, &result) {
            if self.app.machine().current_attempt() == Some(*attempt) {
                if let Some(after) = self.lose_after.remove(attempt) {
                    self.schedule(after, Input::ConnectionClosed { attempt: *attempt });
                }
            }
        }
        let step = match result {
            Ok(step) => step,
            Err(e) => {
                self.commands();
                return Err(e);
            }
        };
        for action in step.actions.iter() {
            self.perform(action);
        }
        self.commands();
        Ok(step)
    }

    /// Moves the application's notes ([`App::note`]) into the trace's comments.
    fn notes(&mut self) {
        while let Some(note) = self.app.note() {
            self.comment(&note);
        }
    }

    /// Feeds the inputs the application queued ([`App::command`]), in order.
    fn commands(&mut self) {
        while let Some(input) = self.app.command() {
            let result = self.app.handle(input.clone());
            // A rejection is the application's to see (its `handle` got it) and
            // to check; the trace shows it.
            let _ = self.after(input, result);
        }
    }

    fn schedule(&mut self, after: Duration, input: Input<E>) {
        self.seq += 1;
        self.queue
            .insert((self.now.saturating_add(after), self.seq), input);
    }

    /// Drops every queued report about `attempt` (it was cancelled or closed).
    fn forget(&mut self, attempt: AttemptId) {
        self.queue.retain(|_, input| {
            !matches!(input,
                Input::ConnectionMade { attempt: a }
                | Input::ConnectionFailed { attempt: a, .. }
                | Input::PrepareSucceeded { attempt: a }
                | Input::PrepareFailed { attempt: a, .. }
                | Input::AttemptFailedFatally { attempt: a, .. }
                | Input::ProbeSucceeded { attempt: a }
                | Input::ProbeFailed { attempt: a }
                | Input::ConnectionActive { attempt: a, .. }
                | Input::Panicked { attempt: a, .. }
                | Input::ConnectionClosed { attempt: a } if *a == attempt)
        });
        self.lose_after.remove(&attempt);
    }

    fn perform(&mut self, action: &Action<E>) {
        match action {
            Action::Connect { attempt } => {
                let attempt = *attempt;
                match self.connects.pop_front().unwrap_or(ConnectScript::Hang) {
                    ConnectScript::Connect { after, lost_after } => {
                        if let Some(lost) = lost_after {
                            self.lose_after.insert(attempt, lost);
                        }
                        self.schedule(after, Input::ConnectionMade { attempt });
                    }
                    ConnectScript::Fail { after, error } => {
                        self.schedule(after, Input::ConnectionFailed { attempt, error });
                    }
                    ConnectScript::FailFatally { after, error } => {
                        self.schedule(after, Input::AttemptFailedFatally { attempt, error });
                    }
                    ConnectScript::Panic { after, message } => {
                        let panic = Panic::new(PanicSite::Connector, message);
                        self.schedule(after, Input::Panicked { attempt, panic });
                    }
                    ConnectScript::Hang => {}
                }
            }
            Action::CancelConnect { attempt } => {
                self.forget(*attempt);
                self.schedule(
                    Duration::ZERO,
                    Input::ConnectCancelled { attempt: *attempt },
                );
            }
            Action::Prepare { attempt } => {
                let attempt = *attempt;
                let script = self.prepares.pop_front().unwrap_or(PrepareScript::Succeed {
                    after: Duration::ZERO,
                });
                match script {
                    PrepareScript::Succeed { after } => {
                        self.schedule(after, Input::PrepareSucceeded { attempt });
                    }
                    PrepareScript::Fail { after, error } => {
                        self.schedule(after, Input::PrepareFailed { attempt, error });
                    }
                    PrepareScript::FailFatally { after, error } => {
                        self.schedule(after, Input::AttemptFailedFatally { attempt, error });
                    }
                    PrepareScript::Panic { after, message } => {
                        let panic = Panic::new(PanicSite::Prepare, message);
                        self.schedule(after, Input::Panicked { attempt, panic });
                    }
                    PrepareScript::Hang => {}
                }
            }
            Action::Disconnect { attempt } => {
                self.forget(*attempt);
                self.schedule(
                    Duration::ZERO,
                    Input::ConnectionClosed { attempt: *attempt },
                );
            }
            Action::Probe { attempt } => {
                let attempt = *attempt;
                let script = self.probes.pop_front().unwrap_or(ProbeScript::Succeed {
                    after: Duration::ZERO,
                });
                match script {
                    ProbeScript::Succeed { after } => {
                        self.schedule(after, Input::ProbeSucceeded { attempt });
                    }
                    ProbeScript::Fail { after } => {
                        self.schedule(after, Input::ProbeFailed { attempt });
                    }
                    ProbeScript::Hang => {}
                }
            }
            Action::ScheduleTimer { timer, delay, .. } => {
                self.schedule(*delay, Input::TimerFired { timer: *timer });
            }
            Action::CancelTimer { timer } => {
                self.queue.retain(
                    |_, input| !matches!(input, Input::TimerFired { timer: t } if t == timer),
                );
            }
            Action::NotifyWaiters { attempt, waiters } => {
                for w in waiters {
                    self.answers
                        .insert(*w, (self.now, Answer::Notified(*attempt)));
                }
            }
            Action::AttemptFailed {
                attempt, failure, ..
            } => {
                self.failures.push((self.now, *attempt, failure.clone()));
            }
            Action::DeliverFailure { waiters, .. } => {
                // The failure of the `AttemptFailed` just before, in the same list.
                let Some((_, _, failure)) = self.failures.last() else {
                    panic!(
                        "{}# deliver_failure with no failure before it",
                        self.trace()
                    );
                };
                let failure = failure.clone();
                for w in waiters {
                    self.answers
                        .insert(*w, (self.now, Answer::Failed(failure.clone())));
                }
            }
            Action::CancelWaiters { waiters, .. } => {
                for w in waiters {
                    self.answers.insert(*w, (self.now, Answer::Cancelled));
                }
            }
            Action::FinishStopping { stops } => {
                self.finished.extend(stops.iter().map(|s| (self.now, *s)));
            }
            Action::GaveUp { .. } => self.gave_up += 1,
            // Facts the simulation does not need: the machine's counters say it.
            Action::Connected { .. } | Action::Lost { .. } | Action::RetryScheduled { .. } => {}
        }
    }

    /// Moves the virtual clock forward by `by`, feeding every report that falls due
    /// on the way, in time order. Returns how many inputs were fed.
    ///
    /// # Panics
    ///
    /// If an invariant is violated, or the machine rejects one of the simulator's
    /// own reports (a bug in the machine), with the trace so far.
    pub fn advance(&mut self, by: Duration) -> usize {
        self.commands();
        let deadline = self.now.saturating_add(by);
        let mut fed = 0;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > deadline {
                break;
            }
            let (at, _) = *entry.key();
            let input = entry.remove();
            self.now = at;
            fed += 1;
            if let Err(e) = self.feed(input) {
                panic!(
                    "{}# the machine rejected the simulator's own report: {e}",
                    self.trace()
                );
            }
        }
        self.now = deadline;
        fed
    }

    /// Feeds the reports due now without moving the clock (`advance(0)`).
    pub fn settle(&mut self) -> usize {
        self.advance(Duration::ZERO)
    }

    /// When the next queued report falls due, if any.
    pub fn next_due(&self) -> Option<Duration> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// The virtual time now.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The machine under simulation (the application's).
    pub fn machine(&self) -> &Machine<E, P> {
        self.app.machine()
    }

    /// The application under simulation (the machine itself, for [`Sim::new`] of a
    /// [`Machine`]).
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The application under simulation, to call it directly. The inputs it
    /// queues are fed before the next input the simulator feeds; prefer
    /// [`app_op`](Sim::app_op), which feeds them at once and checks.
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }

    /// Runs one of the application's own operations now (a request, a call the
    /// test makes), then [`App::check`]s it and feeds the inputs it queued.
    ///
    /// # Panics
    ///
    /// If the application's check fails, or an invariant is violated, with the
    /// trace so far.
    pub fn app_op<R>(&mut self, op: impl FnOnce(&mut A) -> R) -> R {
        let out = op(&mut self.app);
        self.notes();
        if let Err(failed) = self.app.check(&self.connections) {
            panic!("{}# the application's check failed: {failed}", self.trace());
        }
        self.commands();
        out
    }

    /// Feeds the next queued report, whenever it is due: the clock jumps to its
    /// time (if later than now). Returns its record (the inputs the application
    /// queued in answer follow it in [`records`](Sim::records)), or `None` when
    /// nothing is queued.
    ///
    /// # Panics
    ///
    /// As [`advance`](Sim::advance).
    pub fn step(&mut self) -> Option<&Record<E>> {
        self.commands();
        let ((at, _), input) = self.queue.pop_first()?;
        self.now = self.now.max(at);
        let index = self.records.len();
        if let Err(e) = self.feed(input) {
            panic!(
                "{}# the machine rejected the simulator's own report: {e}",
                self.trace()
            );
        }
        self.records.get(index)
    }

    /// Where this attempt, or the connection it made, stands; `None` if the
    /// machine never asked for it.
    pub fn connection(&self, attempt: AttemptId) -> Option<ConnState> {
        self.connections.get(attempt)
    }

    /// Every attempt and connection, and where it stands.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Adds a comment to the trace, after the inputs fed so far (one per line of
    /// `text`).
    pub fn comment(&mut self, text: &str) {
        let before = self.records.len();
        self.comments.extend(text.lines().map(|line| Comment {
            before,
            text: line.trim_end().into(),
        }));
    }

    /// How this waiter was answered, if it was.
    pub fn answer(&self, waiter: WaiterId) -> Option<&Answer<E>> {
        self.answers.get(&waiter).map(|(_, a)| a)
    }

    /// When this waiter was answered, if it was.
    pub fn answered_at(&self, waiter: WaiterId) -> Option<Duration> {
        self.answers.get(&waiter).map(|(at, _)| *at)
    }

    /// Whether this stop request has finished.
    pub fn is_finished(&self, stop: StopId) -> bool {
        self.finished.iter().any(|(_, s)| *s == stop)
    }

    /// Every failed attempt so far (`AttemptFailed`), in order: when, which attempt,
    /// and why.
    pub fn failures(&self) -> &[(Duration, AttemptId, Failure<E>)] {
        &self.failures
    }

    /// How many times the retry policy gave up.
    pub fn gave_up(&self) -> usize {
        self.gave_up
    }

    /// Every input fed so far, in order, with its time and result.
    pub fn records(&self) -> &[Record<E>] {
        &self.records
    }

    /// Every action returned so far, in order, with its time.
    pub fn actions(&self) -> impl Iterator<Item = (Duration, &Action<E>)> + '_ {
        self.records.iter().flat_map(|r| {
            r.result
                .iter()
                .flat_map(move |step| step.actions.iter().map(move |a| (r.at, a)))
        })
    }

    /// The run so far in the [trace format](super::trace): the header shows the
    /// machine's config and its policy ([`Trace::for_machine`]: the
    /// [`SimPolicy`](super::SimPolicy), or `policy recorded`), each input its
    /// virtual time (`@1500ms`, printed when it changes), with the comments added
    /// with [`comment`](Sim::comment). It [replays](Trace::replay) exactly.
    pub fn trace(&self) -> Trace {
        let mut trace = Trace::for_machine(self.app.machine());
        for record in &self.records {
            let mut step =
                TraceStep::record(&record.input, &record.result, self.app.machine().state());
            step.state = None;
            trace.push_at(step, record.at);
        }
        trace.comments.clone_from(&self.comments);
        trace
    }

    /// A one-line summary for assertion messages: time, state, pending counts.
    pub fn summary(&self) -> String {
        format!(
            "at {:?}: {} with {} pending waiter(s), {} pending stop(s)",
            self.now,
            self.app.machine().state(),
            self.app.machine().pending_waiters().len(),
            self.app.machine().pending_stops().len()
        )
    }
}
