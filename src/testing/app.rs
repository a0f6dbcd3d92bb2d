//! Applications under test: the [`App`] trait, and [`run_app`], the op runner with
//! room for the application's own operations.

use core::fmt;
use std::boxed::Box;
use std::format;
use std::string::String;
use std::vec::Vec;

use super::connections::Connections;
use super::invariants::Invariants;
use super::ops::{Op, World};
use super::trace::SimPolicy;
use super::trace::{Trace, TraceStep};
use crate::error::InputError;
use crate::input::Input;
use crate::machine::{Machine, Step};
use crate::policy::RetryPolicy;

/// An application that owns (or wraps) a [`Machine`], run by the kit: by
/// [`Sim`](super::Sim) under a virtual clock and a scripted network, or by
/// [`run_app`] under generated operations.
///
/// The kit plays the driver's I/O: it performs `Connect`, `Prepare`,
/// `Disconnect` and the timers, and reports what happened. Every input, the
/// kit's reports and the user's calls alike, goes through [`handle`](App::handle),
/// where the application feeds its own machine and sees what it returns: the
/// waiters it is told about, the connections it gets and loses, the stops that
/// finish. What the application itself wants to feed (a `when_connected` for a
/// request, a `stop`) it queues, and the kit takes it with
/// [`command`](App::command) after each input, so that the kit sees every input
/// its machine gets.
///
/// A plain [`Machine`] is an `App` (it handles inputs and has no commands), and so
/// is `&mut A` for any `A: App`, to run an application the test keeps owning.
///
/// ```
/// use redial::testing::{App, ConnState, Connections};
/// use redial::{Action, AttemptId, Input, InputError, Machine, Step};
/// # use redial::testing::SimPolicy;
///
/// /// Counts the connections it is handed; checks each one is open.
/// struct Counter {
///     machine: Machine<String, SimPolicy>,
///     handed: Vec<AttemptId>,
///     unchecked: Vec<AttemptId>,
/// }
///
/// impl App<String> for Counter {
///     type Policy = SimPolicy;
///     fn machine(&self) -> &Machine<String, SimPolicy> {
///         &self.machine
///     }
///     fn handle(&mut self, input: Input<String>) -> Result<Step<String>, InputError> {
///         let step = self.machine.handle(input)?;
///         for action in &step.actions {
///             if let Action::NotifyWaiters { attempt, .. } = action {
///                 self.handed.push(*attempt);
///                 self.unchecked.push(*attempt);
///             }
///         }
///         Ok(step)
///     }
///     fn check(&mut self, connections: &Connections) -> Result<(), String> {
///         for attempt in self.unchecked.drain(..) {
///             if connections.get(attempt) != Some(ConnState::Open) {
///                 return Err(format!("handed {attempt}, which is not open"));
///             }
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait App<E> {
    /// The retry policy of the application's machine.
    type Policy: RetryPolicy;

    /// The application's machine, read-only: the kit checks the behaviour
    /// contract's invariants against it and takes its configuration and policy for
    /// traces.
    fn machine(&self) -> &Machine<E, Self::Policy>;

    /// Feeds `input` to the application's machine (with
    /// [`Machine::handle`], or [`Machine::handle_into`] and the application's own
    /// buffer), reacts to what it returns, and returns it unchanged: the kit
    /// performs the actions as the driver and checks them.
    ///
    /// # Errors
    ///
    /// The machine rejected the input.
    fn handle(&mut self, input: Input<E>) -> Result<Step<E>, InputError>;

    /// The next input the application wants fed (`when_connected`, `stop`, …), if
    /// any. The kit asks after every input it feeds (and after each of the
    /// application's own operations) and feeds them in order, each through
    /// [`handle`](App::handle). The default has none.
    fn command(&mut self) -> Option<Input<E>> {
        None
    }

    /// A comment for the trace, if any: what the application did ("request 3 sent
    /// on attempt#1"). The kit asks after every input and each of the
    /// application's own operations, and prints them as `# …` lines after it. The
    /// default has none.
    fn note(&mut self) -> Option<String> {
        None
    }

    /// The application's own check, run after every input (once its actions are
    /// performed, so `connections` is the world as it stands after it) and after
    /// each of the application's own operations: what it did since the last check
    /// was fine. `connections` says where every attempt and connection stands. The
    /// default checks nothing.
    ///
    /// # Errors
    ///
    /// What went wrong; the kit stops the run and reports it with the trace.
    fn check(&mut self, connections: &Connections) -> Result<(), String> {
        let _ = connections;
        Ok(())
    }
}

impl<E, P: RetryPolicy> App<E> for Machine<E, P> {
    type Policy = P;

    fn machine(&self) -> &Machine<E, P> {
        self
    }

    fn handle(&mut self, input: Input<E>) -> Result<Step<E>, InputError> {
        Machine::handle(self, input)
    }
}

impl<E, A: App<E> + ?Sized> App<E> for &mut A {
    type Policy = A::Policy;

    fn machine(&self) -> &Machine<E, A::Policy> {
        (**self).machine()
    }

    fn handle(&mut self, input: Input<E>) -> Result<Step<E>, InputError> {
        (**self).handle(input)
    }

    fn command(&mut self) -> Option<Input<E>> {
        (**self).command()
    }

    fn note(&mut self) -> Option<String> {
        (**self).note()
    }

    fn check(&mut self, connections: &Connections) -> Result<(), String> {
        (**self).check(connections)
    }
}

/// One operation of an application's property test: the kit's, the
/// application's own, or settling what the driver owes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AppOp<U> {
    /// An operation of the kit's: a user's call or something that happens in the
    /// world, resolved by a [`World`] (see [`strategy::lifecycle_op`] and
    /// [`strategy::world_op`] for ops that leave the waiters to the application).
    ///
    /// [`strategy::lifecycle_op`]: super::strategy::lifecycle_op
    /// [`strategy::world_op`]: super::strategy::world_op
    Kit(Op),
    /// An operation of the application's own (a request, a timeout, …), applied
    /// by [`run_app`]'s `apply`.
    App(U),
    /// The driver reports everything it owes: each attempt the machine asked to
    /// cancel is reported gone and each connection it asked to close is reported
    /// closed (again, until nothing is owed). After a `Kit(Op::Stop)`, this
    /// finishes the stop.
    Settle,
}

/// Runs an application under generated operations, as [`run_ops`](super::run_ops)
/// runs a machine: each [`AppOp::Kit`] op is resolved by a [`World`] and fed
/// through [`App::handle`]; each [`AppOp::App`] op is applied with `apply` (and
/// shown in the trace as a comment, `# app: {op:?}`, followed by the
/// application's [`note`](App::note)s); after each input and each application op,
/// the application's [`commands`](App::command) are fed.
///
/// After every input it checks the behaviour contract's [`Invariants`] (and that a
/// rejected input changed nothing), then [`App::check`] with the [`Connections`]
/// as they stand; after every application op, [`App::check`].
///
/// Returns the trace of the run (its policy line names the machine's policy; see
/// [`Trace::for_machine`]), or the first [`Violation`] with the trace up to it.
///
/// # Errors
///
/// The first violated invariant or failed [`App::check`], with the trace up to it.
pub fn run_app<A, U, F>(
    app: &mut A,
    ops: &[AppOp<U>],
    mut apply: F,
) -> Result<Trace, Box<Violation>>
where
    A: App<String>,
    A::Policy: Clone + PartialEq + 'static,
    U: fmt::Debug,
    F: FnMut(&mut A, &U),
{
    let trace = Trace::for_machine(app.machine());
    let mut run = Runner::new(app, trace);
    for op in ops {
        match op {
            AppOp::Kit(op) => {
                if let Some(input) = run.world.resolve(op) {
                    run.feed(input, &mut |_, _, _| Ok(()))?;
                }
            }
            AppOp::App(op) => {
                run.trace.comment(&format!("app: {op:?}"));
                apply(run.app, op);
                run.notes();
                run.check_app()?;
                run.commands(&mut |_, _, _| Ok(()))?;
            }
            AppOp::Settle => {
                let mut owed: Vec<Input<String>> = run.connections.owed().collect();
                while !owed.is_empty() {
                    for input in &owed {
                        run.feed(input.clone(), &mut |_, _, _| Ok(()))?;
                    }
                    let still: Vec<Input<String>> = run.connections.owed().collect();
                    if still == owed {
                        let message = format!("still owed after reporting it: {still:?}");
                        return Err(run.violation(message));
                    }
                    owed = still;
                }
            }
        }
    }
    Ok(run.trace)
}

/// A failed run: the trace up to and including the failing input, and what failed.
///
/// `Display` prints the trace, then `# violated: …`: paste it into a
/// `tests/machine/traces/*.trace` file (or a bug report) as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The run up to and including the failing input.
    pub trace: Trace,
    /// What failed.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n{}# violated: {}", self.trace, self.message)
    }
}

impl std::error::Error for Violation {}

/// Runs `ops` against `machine`: resolves each op with a [`World`], feeds the
/// input, checks the [`Invariants`] (and, for a rejected input, that the machine
/// is unchanged), then calls `check` with the input, its result and the machine.
///
/// Returns the trace of the run, or the first [`Violation`] (boxed: an invariant, or an
/// error returned by `check`). Ops that point at nothing are skipped. The trace's
/// policy line is `policy linear 1ms` unless you set [`Trace::policy`].
///
/// # Errors
///
/// The first violated invariant or failed `check`, with the trace up to it.
pub fn run_ops<P, F>(
    machine: &mut Machine<String, P>,
    ops: &[Op],
    mut check: F,
) -> Result<Trace, Box<Violation>>
where
    P: RetryPolicy + Clone + PartialEq,
    F: FnMut(
        &Input<String>,
        &Result<Step<String>, InputError>,
        &Machine<String, P>,
    ) -> Result<(), String>,
{
    let trace = Trace::new(*machine.config(), SimPolicy::default());
    let mut run = Runner::new(machine, trace);
    for op in ops {
        let Some(input) = run.world.resolve(op) else {
            continue;
        };
        run.feed(input, &mut check)?;
    }
    Ok(run.trace)
}

/// A check of each step beside the invariants (`run_ops`'s `check`).
pub(crate) type StepCheck<'a, P> = dyn FnMut(
        &Input<String>,
        &Result<Step<String>, InputError>,
        &Machine<String, P>,
    ) -> Result<(), String>
    + 'a;

/// The stepping of [`run_app`] and [`run_ops`](super::run_ops): resolve, feed,
/// check, observe.
pub(crate) struct Runner<'a, A: App<String>> {
    pub(crate) app: &'a mut A,
    pub(crate) world: World,
    pub(crate) invariants: Invariants,
    pub(crate) connections: Connections,
    pub(crate) trace: Trace,
}

impl<'a, A> Runner<'a, A>
where
    A: App<String>,
    A::Policy: Clone + PartialEq,
{
    pub(crate) fn new(app: &'a mut A, trace: Trace) -> Self {
        Runner {
            app,
            world: World::new(),
            invariants: Invariants::new(),
            connections: Connections::new(),
            trace,
        }
    }

    fn violation(&self, message: String) -> Box<Violation> {
        Box::new(Violation {
            trace: self.trace.clone(),
            message,
        })
    }

    /// Feeds one input, then the application's commands.
    pub(crate) fn feed(
        &mut self,
        input: Input<String>,
        check: &mut StepCheck<'_, A::Policy>,
    ) -> Result<(), Box<Violation>> {
        self.step(input, check)?;
        self.commands(check)
    }

    /// Feeds the application's commands, and the commands they lead to.
    pub(crate) fn commands(
        &mut self,
        check: &mut StepCheck<'_, A::Policy>,
    ) -> Result<(), Box<Violation>> {
        while let Some(input) = self.app.command() {
            self.step(input, check)?;
        }
        Ok(())
    }

    /// Moves the application's notes into the trace.
    pub(crate) fn notes(&mut self) {
        while let Some(note) = self.app.note() {
            self.trace.comment(&note);
        }
    }

    pub(crate) fn check_app(&mut self) -> Result<(), Box<Violation>> {
        match self.app.check(&self.connections) {
            Ok(()) => Ok(()),
            Err(message) => Err(self.violation(message)),
        }
    }

    /// Feeds one input and checks it.
    fn step(
        &mut self,
        input: Input<String>,
        check: &mut StepCheck<'_, A::Policy>,
    ) -> Result<(), Box<Violation>> {
        let before = self.app.machine().clone();
        let result = self.app.handle(input.clone());
        let machine = self.app.machine();
        self.trace
            .steps
            .push(TraceStep::record(&input, &result, machine.state()));
        self.notes();
        let machine = self.app.machine();
        let verdict = self
            .invariants
            .check(&input, &result, machine)
            .and_then(|()| match &result {
                Err(_) => Invariants::check_unchanged(&before, machine),
                Ok(_) => Ok(()),
            })
            .and_then(|()| check(&input, &result, machine));
        if let Err(message) = verdict {
            return Err(self.violation(message));
        }
        self.connections.observe(&input, &result);
        self.check_app()?;
        self.world.observe(&input, &result);
        Ok(())
    }
}
