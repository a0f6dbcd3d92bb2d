//! The trace's data: [`Trace`], [`TraceStep`], [`Outcome`], [`SimPolicy`], and the
//! conversions of inputs and actions to their `String`-error form.

use core::any::Any;
use core::fmt;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use crate::actions::{Action, Failure, TimerKind};
use crate::error::Rejection;
use crate::ids::TimerId;
use crate::input::Input;
use crate::machine::{Config, Machine, Step};
use crate::policy::RetryPolicy;
use crate::state::State;

/// A deterministic retry policy that traces can name: `delay(n) = n · step`, giving
/// up once `n` reaches `give_up_after` (if set).
///
/// Printed and parsed as `policy linear 1ms` or `policy linear 1ms give_up_after=3`.
/// It is `Clone + PartialEq`, so a `Machine<_, SimPolicy>` can be cloned and
/// compared, which the property tests use to check that bad input changes nothing.
///
/// ```
/// use core::time::Duration;
/// use redial::policy::RetryPolicy;
/// use redial::testing::SimPolicy;
///
/// let mut p = SimPolicy::linear(Duration::from_millis(10)).give_up_after(3);
/// assert_eq!(p.next_delay(2), Some(Duration::from_millis(20)));
/// assert_eq!(p.next_delay(3), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimPolicy {
    /// The delay per failure: `delay(n) = n · step` (saturating).
    pub step: Duration,
    /// Give up (return `None`) once `consecutive_failures` reaches this.
    pub give_up_after: Option<u32>,
}

impl SimPolicy {
    /// `delay(n) = n · step`, never giving up.
    pub const fn linear(step: Duration) -> Self {
        SimPolicy {
            step,
            give_up_after: None,
        }
    }

    /// The same policy, giving up once `consecutive_failures` reaches `n`.
    #[must_use]
    pub const fn give_up_after(self, n: u32) -> Self {
        SimPolicy {
            give_up_after: Some(n),
            ..self
        }
    }
}

impl Default for SimPolicy {
    /// `policy linear 1ms`.
    fn default() -> Self {
        SimPolicy::linear(Duration::from_millis(1))
    }
}

impl RetryPolicy for SimPolicy {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        match self.give_up_after {
            Some(limit) if consecutive_failures >= limit => None,
            _ => Some(self.step.saturating_mul(consecutive_failures)),
        }
    }
}

/// What one input produced, as recorded in a [`TraceStep`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The machine accepted the input and returned these actions (maybe none).
    Accepted {
        /// The actions, in order.
        actions: Vec<Action<String>>,
        /// The id returned by `when_connected` (`= waiter#N`) or `stop` (`= stop#N`).
        issued: Option<Issued>,
    },
    /// The machine rejected the input (`! reason id`).
    Rejected(Rejection),
}

/// The id a `when_connected` or `stop` input returned (the machine's own type).
pub use crate::machine::Issued;

/// One input and what it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    /// The input.
    pub input: Input<String>,
    /// Its actions, or its rejection.
    pub outcome: Outcome,
    /// The state after the input (`=> State`), if recorded. Replaying checks it
    /// only when it is present.
    pub state: Option<State>,
}

impl TraceStep {
    /// Records what `result` says about `input`, with the state after it.
    pub fn record<E: fmt::Display>(
        input: &Input<E>,
        result: &Result<Step<E>, crate::InputError>,
        state: State,
    ) -> TraceStep {
        TraceStep {
            input: input_to_string(input),
            outcome: match result {
                Ok(step) => Outcome::Accepted {
                    actions: step.actions.iter().map(action_to_string).collect(),
                    issued: step
                        .waiter
                        .map(Issued::Waiter)
                        .or(step.stop.map(Issued::Stop)),
                },
                Err(e) => Outcome::Rejected(e.reason),
            },
            state: Some(state),
        }
    }
}

/// A comment in a [`Trace`] (`# text`), and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// How many steps come before it: `0` for the comments before the first input
    /// (printed after the header, even if they stood above it), `n` for those after
    /// the `n`-th step's outcome (printed right before the next input).
    pub before: usize,
    /// The text, without the `#` and the one space after it.
    pub text: String,
}

/// A whole trace: a header (config and policy) and the steps, with the times they
/// happened at (where known) and comments.
///
/// `Display` prints the [format](super); `str::parse` reads it back, so that
/// printing, parsing and printing again gives the same text.
///
/// ```
/// use redial::testing::Trace;
///
/// let text = "\
/// policy linear 1ms
/// start
///   connect attempt#0
///   => Connecting
/// connection_failed attempt#0 \"refused\"
///   schedule timer#0 retry 1ms
///   attempt_failed attempt#0 connect(\"refused\") failures=1
///   retry_scheduled 1ms failures=1
///   => Waiting
/// timer_fired timer#7
///   ! unknown_timer timer#7
/// ";
/// let trace: Trace = text.parse().unwrap();
/// assert_eq!(trace.to_string(), text);
/// trace.replay().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// The machine's configuration (`config …`; default when absent).
    pub config: Config,
    /// The retry policy (`policy …`; `policy linear 1ms` when absent).
    pub policy: SimPolicy,
    /// The inputs and what they produced.
    pub steps: Vec<TraceStep>,
    /// `policy recorded`: the run's retry policy is not a [`SimPolicy`] (a jittered
    /// [`Backoff`](crate::Backoff), a closure), so [`replay`](Trace::replay)
    /// answers the machine's questions with what the trace recorded: its
    /// `schedule … retry D` and `gave_up` lines, in order. [`policy`](Trace::policy)
    /// is then ignored (and a parsed `policy recorded` trace has the default).
    pub policy_recorded: bool,
    /// When steps happened, where known (a [`Sim`](super::super::Sim)'s virtual
    /// time): `i → t` says that the `i`-th step (from 0) happened at `t`, and so did
    /// the steps after it up to the next entry. Printed as an `@t` prefix on that
    /// step's input line (`@1500ms timer_fired timer#1`). Times never go back.
    pub times: BTreeMap<usize, Duration>,
    /// Comments (`# …` lines), in order: notes of the application under test, or
    /// of whoever wrote the trace. Replay ignores them.
    pub comments: Vec<Comment>,
}

impl Trace {
    /// An empty trace for a machine with this configuration and policy.
    pub fn new(config: Config, policy: SimPolicy) -> Trace {
        Trace {
            config,
            policy,
            steps: Vec::new(),
            policy_recorded: false,
            times: BTreeMap::new(),
            comments: Vec::new(),
        }
    }

    /// An empty trace for a fresh copy of `machine`: its configuration, and its
    /// policy if it is a [`SimPolicy`], else [`policy recorded`](Trace::policy_recorded)
    /// so that the trace still replays exactly.
    pub fn for_machine<E, P: RetryPolicy + 'static>(machine: &Machine<E, P>) -> Trace {
        let any: &dyn Any = machine.policy();
        match any.downcast_ref::<SimPolicy>() {
            Some(policy) => Trace::new(*machine.config(), *policy),
            None => Trace {
                policy_recorded: true,
                ..Trace::new(*machine.config(), SimPolicy::default())
            },
        }
    }

    /// Appends a comment after the last step (one [`Comment`] per line of `text`,
    /// without trailing spaces, as it reads back).
    pub fn comment(&mut self, text: &str) {
        let before = self.steps.len();
        self.comments.extend(text.lines().map(|line| Comment {
            before,
            text: line.trim_end().to_string(),
        }));
    }

    /// Appends a step that happened at `at`, recording the time if it differs
    /// from the time of the step before (or if it is the first step).
    pub fn push_at(&mut self, step: TraceStep, at: Duration) {
        let i = self.steps.len();
        if i == 0 || self.time_of(i - 1) != Some(at) {
            self.times.insert(i, at);
        }
        self.steps.push(step);
    }

    /// When the `i`-th step (from 0) happened, if the trace says.
    pub fn time_of(&self, i: usize) -> Option<Duration> {
        self.times.range(..=i).next_back().map(|(_, t)| *t)
    }

    /// A fresh machine as this trace's header describes.
    ///
    /// # Errors
    ///
    /// The header's [`Config`] is invalid.
    pub fn machine(&self) -> Result<Machine<String, SimPolicy>, crate::ConfigError> {
        Machine::with_config(self.policy, self.config)
    }

    /// Runs the trace's inputs through a fresh machine and checks that each produces
    /// exactly the recorded outcome (and state, where recorded).
    ///
    /// # Errors
    ///
    /// A human-readable report of the first difference: the trace up to that step,
    /// then what was expected and what the machine did.
    ///
    /// A [`policy recorded`](Trace::policy_recorded) trace is replayed with a
    /// policy that gives the recorded answers in order. Where the trace has
    /// [times](Trace::times), they must not go back, and no timer may fire before it
    /// is due (the time it was scheduled plus its delay).
    pub fn replay(&self) -> Result<(), String> {
        self.check_times()?;
        let machine = self.machine().map_err(|e| format!("bad config: {e}"))?;
        if self.policy_recorded {
            let answers = RecordedAnswers(self.recorded_answers().collect());
            let machine = Machine::with_config(answers, *machine.config())
                .map_err(|e| format!("bad config: {e}"))?;
            return self.replay_on(machine);
        }
        self.replay_on(machine)
    }

    /// Times do not go back, and no timer fires before it is due.
    fn check_times(&self) -> Result<(), String> {
        let mut due: BTreeMap<TimerId, Duration> = BTreeMap::new();
        let mut last = Duration::ZERO;
        for (i, step) in self.steps.iter().enumerate() {
            let Some(now) = self.time_of(i) else {
                continue;
            };
            if now < last {
                return Err(format!("step {}: the time goes back", i + 1));
            }
            last = now;
            let Outcome::Accepted { actions, .. } = &step.outcome else {
                continue;
            };
            if let Input::TimerFired { timer } = step.input {
                if let Some(at) = due.get(&timer).filter(|at| now < **at) {
                    return Err(format!(
                        "step {}: {timer} fired at {now:?}, before it was due at {at:?}",
                        i + 1,
                    ));
                }
            }
            for action in actions {
                if let Action::ScheduleTimer { timer, delay, .. } = action {
                    due.insert(*timer, now.saturating_add(*delay));
                }
            }
        }
        Ok(())
    }

    /// What the retry policy answered during the recorded run, in order: the delay
    /// of each `schedule … retry D`, `None` for each `gave_up`.
    fn recorded_answers(&self) -> impl Iterator<Item = Option<Duration>> + '_ {
        self.steps
            .iter()
            .filter_map(|step| match &step.outcome {
                Outcome::Accepted { actions, .. } => Some(actions),
                Outcome::Rejected(_) => None,
            })
            .flatten()
            .filter_map(|action| match action {
                Action::ScheduleTimer {
                    kind: TimerKind::Retry,
                    delay,
                    ..
                } => Some(Some(*delay)),
                // A give-up on fatal failures is the machine's own call: the
                // policy was not asked.
                Action::GaveUp { fatal: false, .. } => Some(None),
                _ => None,
            })
    }

    fn replay_on<P: RetryPolicy>(&self, mut machine: Machine<String, P>) -> Result<(), String> {
        for (i, expected) in self.steps.iter().enumerate() {
            let result = machine.handle(expected.input.clone());
            let mut actual = TraceStep::record(&expected.input, &result, machine.state());
            if expected.state.is_none() {
                actual.state = None;
            }
            if actual != *expected {
                // The trace up to this step, its comments and times included.
                let mut seen = self.clone();
                seen.steps.truncate(i);
                seen.times.retain(|step, _| *step < i);
                seen.comments.retain(|c| c.before <= i);
                return Err(format!(
                    "{seen}# step {} differs\n# expected:\n{expected}# actual:\n{actual}",
                    i + 1
                ));
            }
        }
        Ok(())
    }
}

/// The retry policy of a `policy recorded` trace: the recorded answers, in order
/// (then `None`: a machine that asks more than the run did gives up, and the
/// replay reports where).
#[derive(Debug)]
struct RecordedAnswers(VecDeque<Option<Duration>>);

impl RetryPolicy for RecordedAnswers {
    fn next_delay(&mut self, _failed_attempts: u32) -> Option<Duration> {
        self.0.pop_front().flatten()
    }
}

/// The input with its error rendered as a `String` (through `Display`).
pub fn input_to_string<E: fmt::Display>(input: &Input<E>) -> Input<String> {
    match input {
        Input::Start => Input::Start,
        Input::Stop => Input::Stop,
        Input::WhenConnected {
            fail_after_failures,
        } => Input::WhenConnected {
            fail_after_failures: *fail_after_failures,
        },
        Input::CancelWaiter { waiter } => Input::CancelWaiter { waiter: *waiter },
        Input::ReconnectNow { reset_backoff } => Input::ReconnectNow {
            reset_backoff: *reset_backoff,
        },
        Input::ConnectionMade { attempt } => Input::ConnectionMade { attempt: *attempt },
        Input::ConnectionFailed { attempt, error } => Input::ConnectionFailed {
            attempt: *attempt,
            error: error.to_string(),
        },
        Input::ConnectCancelled { attempt } => Input::ConnectCancelled { attempt: *attempt },
        Input::PrepareSucceeded { attempt } => Input::PrepareSucceeded { attempt: *attempt },
        Input::PrepareFailed { attempt, error } => Input::PrepareFailed {
            attempt: *attempt,
            error: error.to_string(),
        },
        Input::AttemptFailedFatally { attempt, error } => Input::AttemptFailedFatally {
            attempt: *attempt,
            error: error.to_string(),
        },
        Input::ProbeSucceeded { attempt } => Input::ProbeSucceeded { attempt: *attempt },
        Input::ProbeFailed { attempt } => Input::ProbeFailed { attempt: *attempt },
        Input::ConnectionActive { attempt, quiet_for } => Input::ConnectionActive {
            attempt: *attempt,
            quiet_for: *quiet_for,
        },
        Input::ConnectionClosed { attempt } => Input::ConnectionClosed { attempt: *attempt },
        Input::Panicked { attempt, panic } => Input::Panicked {
            attempt: *attempt,
            panic: panic.clone(),
        },
        Input::TimerFired { timer } => Input::TimerFired { timer: *timer },
    }
}

/// The action with its failure's error rendered as a `String` (through `Display`).
pub fn action_to_string<E: fmt::Display>(action: &Action<E>) -> Action<String> {
    match action {
        Action::Connect { attempt } => Action::Connect { attempt: *attempt },
        Action::CancelConnect { attempt } => Action::CancelConnect { attempt: *attempt },
        Action::Prepare { attempt } => Action::Prepare { attempt: *attempt },
        Action::Disconnect { attempt } => Action::Disconnect { attempt: *attempt },
        Action::Probe { attempt } => Action::Probe { attempt: *attempt },
        Action::ScheduleTimer { timer, kind, delay } => Action::ScheduleTimer {
            timer: *timer,
            kind: *kind,
            delay: *delay,
        },
        Action::CancelTimer { timer } => Action::CancelTimer { timer: *timer },
        Action::NotifyWaiters { attempt, waiters } => Action::NotifyWaiters {
            attempt: *attempt,
            waiters: waiters.clone(),
        },
        Action::AttemptFailed {
            attempt,
            failure,
            consecutive_failures,
        } => Action::AttemptFailed {
            attempt: *attempt,
            consecutive_failures: *consecutive_failures,
            failure: match failure {
                Failure::Connect(e) => Failure::Connect(e.to_string()),
                Failure::Prepare(e) => Failure::Prepare(e.to_string()),
                Failure::ConnectTimeout => Failure::ConnectTimeout,
                Failure::PrepareTimeout => Failure::PrepareTimeout,
                Failure::LostWhilePreparing => Failure::LostWhilePreparing,
                Failure::Panicked(panic) => Failure::Panicked(panic.clone()),
            },
        },
        Action::DeliverFailure { waiters, gave_up } => Action::DeliverFailure {
            waiters: waiters.clone(),
            gave_up: *gave_up,
        },
        Action::CancelWaiters { waiters, gave_up } => Action::CancelWaiters {
            waiters: waiters.clone(),
            gave_up: *gave_up,
        },
        Action::FinishStopping { stops } => Action::FinishStopping {
            stops: stops.clone(),
        },
        Action::GaveUp {
            consecutive_failures,
            fatal,
        } => Action::GaveUp {
            consecutive_failures: *consecutive_failures,
            fatal: *fatal,
        },
        Action::Connected {
            attempt,
            generation,
        } => Action::Connected {
            attempt: *attempt,
            generation: *generation,
        },
        Action::Lost {
            attempt,
            kind,
            flap,
        } => Action::Lost {
            attempt: *attempt,
            kind: *kind,
            flap: *flap,
        },
        Action::RetryScheduled {
            delay,
            consecutive_failures,
        } => Action::RetryScheduled {
            delay: *delay,
            consecutive_failures: *consecutive_failures,
        },
    }
}
