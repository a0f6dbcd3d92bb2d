//! The trace format: a machine's run as text, one input per line, its actions after it.
//!
//! A trace is what failing property tests print and what scenario files
//! (`tests/traces/*.trace`) contain, so a bug report is a paste-able trace:
//!
//! ```text
//! # Lines starting with `#` are comments. The header comes before the first input.
//! config prepare connect_timeout=5s
//! policy linear 1ms give_up_after=3
//!
//! start
//!   connect attempt#0
//!   schedule timer#0 connect_timeout 5s
//!   => Connecting
//! when_connected fail_after=1
//!   = waiter#0
//! connection_failed attempt#0 "refused"
//!   cancel_timer timer#0
//!   schedule timer#1 retry 1ms
//!   deliver_failure connect("refused") waiter#0
//!   => Waiting
//! connection_made attempt#9
//!   ! unknown_attempt attempt#9
//! ```
//!
//! * An **input line** starts in column 0: the input's method name and its
//!   arguments (see [`DisplayInput`]).
//! * Indented lines after it are its **outcome**: one line per action, in order
//!   (see [`DisplayAction`]); `= waiter#N` / `= stop#N` for the id a
//!   `when_connected` / `stop` returned; `! reason id` when the machine rejected the
//!   input (see [`DisplayRejection`]); and optionally `=> State`, the state after
//!   the input. An input line with no indented lines after it expects no actions.
//! * Durations are whole numbers with the largest exact unit: `5s`, `1500ms`,
//!   `250us`, `7ns`. Errors are strings in double quotes (`\"` and `\\` escaped).
//! * The header sets the [`Config`] (`config` followed by `prepare`,
//!   `connect_timeout=D`, `prepare_timeout=D`, `reset_backoff_after=D`) and the
//!   [`SimPolicy`] (`policy linear STEP [give_up_after=N]`).
//!
//! [`Trace`] parses (`str::parse`) and prints (`Display`) this format, and
//! [`Trace::replay`] runs it against a fresh [`Machine`] and reports the first
//! difference.

use core::fmt::{self, Write as _};
use core::num::NonZeroU32;
use core::str::FromStr;
use core::time::Duration;
use std::borrow::ToOwned;
use std::format;
use std::string::{String, ToString};
use std::vec::Vec;

use crate::actions::{Action, Failure, TimerKind};
use crate::error::Rejection;
use crate::ids::{AttemptId, StopId, TimerId, WaiterId};
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
    /// Give up (return `None`) once `failed_attempts` reaches this.
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

    /// The same policy, giving up once `failed_attempts` reaches `n`.
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
    fn next_delay(&mut self, failed_attempts: u32) -> Option<Duration> {
        match self.give_up_after {
            Some(limit) if failed_attempts >= limit => None,
            _ => Some(self.step.saturating_mul(failed_attempts)),
        }
    }
}

impl fmt::Display for SimPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy linear {}", DisplayDuration(self.step))?;
        if let Some(n) = self.give_up_after {
            write!(f, " give_up_after={n}")?;
        }
        Ok(())
    }
}

/// Prints a [`Duration`] in the trace format: a whole number with the largest exact
/// unit (`5s`, `1500ms`, `250us`, `7ns`).
#[derive(Debug, Clone, Copy)]
pub struct DisplayDuration(pub Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.as_nanos();
        if n == 0 {
            f.write_str("0s")
        } else if n.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", n / 1_000_000_000)
        } else if n.is_multiple_of(1_000_000) {
            write!(f, "{}ms", n / 1_000_000)
        } else if n.is_multiple_of(1_000) {
            write!(f, "{}us", n / 1_000)
        } else {
            write!(f, "{n}ns")
        }
    }
}

/// Prints an [`Input`] as a trace line, e.g. `connection_failed attempt#3 "refused"`.
#[derive(Debug, Clone, Copy)]
pub struct DisplayInput<'a, E>(pub &'a Input<E>);

impl<E: fmt::Display> fmt::Display for DisplayInput<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.0.kind().name();
        match self.0 {
            Input::Start | Input::Stop => f.write_str(name),
            Input::WhenConnected {
                fail_after_failures: None,
            } => f.write_str(name),
            Input::WhenConnected {
                fail_after_failures: Some(n),
            } => write!(f, "{name} fail_after={n}"),
            Input::CancelWaiter { waiter } => write!(f, "{name} {waiter}"),
            Input::ConnectionMade { attempt }
            | Input::ConnectCancelled { attempt }
            | Input::PrepareSucceeded { attempt }
            | Input::ClientDisconnected { attempt } => write!(f, "{name} {attempt}"),
            Input::ConnectionFailed { attempt, error }
            | Input::PrepareFailed { attempt, error } => {
                write!(f, "{name} {attempt} ")?;
                write_quoted(f, error)
            }
            Input::Panicked { attempt, panic } => {
                write!(f, "{name} {attempt} {} ", panic_site_name(panic.site()))?;
                write_quoted(f, &panic.message())
            }
            Input::TimerFired { timer } => write!(f, "{name} {timer}"),
        }
    }
}

/// The trace name of a [`PanicSite`](crate::PanicSite).
fn panic_site_name(site: crate::PanicSite) -> &'static str {
    match site {
        crate::PanicSite::Connector => "connector",
        crate::PanicSite::Prepare => "prepare",
        crate::PanicSite::Connection => "connection",
    }
}

/// Prints an [`Action`] as a trace line (without the indentation), e.g.
/// `schedule timer#1 retry 1500ms` or `deliver_failure connect("refused") waiter#0`.
#[derive(Debug, Clone, Copy)]
pub struct DisplayAction<'a, E>(pub &'a Action<E>);

impl<E: fmt::Display> fmt::Display for DisplayAction<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Action::Connect { attempt } => write!(f, "connect {attempt}"),
            Action::CancelConnect { attempt } => write!(f, "cancel_connect {attempt}"),
            Action::Prepare { attempt } => write!(f, "prepare {attempt}"),
            Action::Disconnect { attempt } => write!(f, "disconnect {attempt}"),
            Action::ScheduleTimer { timer, kind, delay } => write!(
                f,
                "schedule {timer} {} {}",
                timer_kind_name(*kind),
                DisplayDuration(*delay)
            ),
            Action::CancelTimer { timer } => write!(f, "cancel_timer {timer}"),
            Action::NotifyWaiters { attempt, waiters } => {
                write!(f, "notify {attempt}")?;
                waiters.iter().try_for_each(|w| write!(f, " {w}"))
            }
            Action::DeliverFailure { waiters, failure } => {
                f.write_str("deliver_failure ")?;
                match failure {
                    Failure::Connect(e) => {
                        f.write_str("connect(")?;
                        write_quoted(f, e)?;
                        f.write_char(')')?;
                    }
                    Failure::Prepare(e) => {
                        f.write_str("prepare(")?;
                        write_quoted(f, e)?;
                        f.write_char(')')?;
                    }
                    Failure::ConnectTimeout => f.write_str("connect_timeout")?,
                    Failure::PrepareTimeout => f.write_str("prepare_timeout")?,
                    Failure::LostWhilePreparing => f.write_str("lost_while_preparing")?,
                    Failure::Panicked(panic) => {
                        write!(f, "panicked({} ", panic_site_name(panic.site()))?;
                        write_quoted(f, &panic.message())?;
                        f.write_char(')')?;
                    }
                }
                waiters.iter().try_for_each(|w| write!(f, " {w}"))
            }
            Action::CancelWaiters { waiters } => {
                f.write_str("cancel_waiters")?;
                waiters.iter().try_for_each(|w| write!(f, " {w}"))
            }
            Action::FinishStopping { stops } => {
                f.write_str("finish_stopping")?;
                stops.iter().try_for_each(|s| write!(f, " {s}"))
            }
            Action::GaveUp { failed_attempts } => write!(f, "gave_up {failed_attempts}"),
        }
    }
}

/// Prints a [`Rejection`] as it appears after `! ` in a trace, e.g.
/// `unknown_attempt attempt#9`.
#[derive(Debug, Clone, Copy)]
pub struct DisplayRejection(pub Rejection);

impl fmt::Display for DisplayRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Rejection::UnknownAttempt(a) => write!(f, "unknown_attempt {a}"),
            Rejection::UnknownTimer(t) => write!(f, "unknown_timer {t}"),
            Rejection::UnknownWaiter(w) => write!(f, "unknown_waiter {w}"),
            Rejection::AlreadyMade(a) => write!(f, "already_made {a}"),
            Rejection::NotMade(a) => write!(f, "not_made {a}"),
            Rejection::AlreadyConnected(a) => write!(f, "already_connected {a}"),
            Rejection::NotPreparing(a) => write!(f, "not_preparing {a}"),
            Rejection::NotCancelled(a) => write!(f, "not_cancelled {a}"),
            // `Rejection` is non-exhaustive; a future reason prints as its message.
            #[allow(unreachable_patterns)]
            other => write!(f, "other {other}"),
        }
    }
}

fn timer_kind_name(kind: TimerKind) -> &'static str {
    match kind {
        TimerKind::Retry => "retry",
        TimerKind::ConnectTimeout => "connect_timeout",
        TimerKind::PrepareTimeout => "prepare_timeout",
        TimerKind::Healthy => "healthy",
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, e: &impl fmt::Display) -> fmt::Result {
    let text = e.to_string();
    f.write_char('"')?;
    for c in text.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
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

impl fmt::Display for TraceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", DisplayInput(&self.input))?;
        match &self.outcome {
            Outcome::Accepted { actions, issued } => {
                match issued {
                    Some(Issued::Waiter(w)) => writeln!(f, "  = {w}")?,
                    Some(Issued::Stop(s)) => writeln!(f, "  = {s}")?,
                    None => {}
                }
                for action in actions {
                    writeln!(f, "  {}", DisplayAction(action))?;
                }
            }
            Outcome::Rejected(r) => writeln!(f, "  ! {}", DisplayRejection(*r))?,
        }
        if let Some(state) = self.state {
            writeln!(f, "  => {state}")?;
        }
        Ok(())
    }
}

/// A whole trace: a header (config and policy) and the steps.
///
/// `Display` prints the [format](self); `str::parse` reads it back.
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
}

impl Trace {
    /// An empty trace for a machine with this configuration and policy.
    pub fn new(config: Config, policy: SimPolicy) -> Trace {
        Trace {
            config,
            policy,
            steps: Vec::new(),
        }
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
    pub fn replay(&self) -> Result<(), String> {
        let mut machine = self.machine().map_err(|e| format!("bad config: {e}"))?;
        let mut seen = Trace::new(self.config, self.policy);
        for (i, expected) in self.steps.iter().enumerate() {
            let result = machine.handle(expected.input.clone());
            let mut actual = TraceStep::record(&expected.input, &result, machine.state());
            if expected.state.is_none() {
                actual.state = None;
            }
            if actual != *expected {
                return Err(format!(
                    "{seen}# step {} differs\n# expected:\n{expected}# actual:\n{actual}",
                    i + 1
                ));
            }
            seen.steps.push(actual);
        }
        Ok(())
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.config != Config::default() {
            f.write_str("config")?;
            if self.config.prepare {
                f.write_str(" prepare")?;
            }
            let timeouts = [
                ("connect_timeout", self.config.connect_timeout),
                ("prepare_timeout", self.config.prepare_timeout),
                ("reset_backoff_after", self.config.reset_backoff_after),
            ];
            for (name, value) in timeouts {
                if let Some(d) = value {
                    write!(f, " {name}={}", DisplayDuration(d))?;
                }
            }
            writeln!(f)?;
        }
        writeln!(f, "{}", self.policy)?;
        self.steps.iter().try_for_each(|s| write!(f, "{s}"))
    }
}

/// Why a trace could not be parsed: the line number (from 1) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line, counting from 1 (0 for a lone input or action line).
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line: 0,
        message: message.into(),
    })
}

impl FromStr for Trace {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Trace, ParseError> {
        let mut trace = Trace::default();
        for (index, raw) in text.lines().enumerate() {
            let at_line = |mut e: ParseError| {
                e.line = index + 1;
                e
            };
            let line = raw.trim_end();
            let content = line.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let indented = content.len() != line.len();
            if !indented {
                let words: Vec<&str> = content.split_whitespace().collect();
                match words[0] {
                    "config" | "policy" if !trace.steps.is_empty() => {
                        return Err(at_line(ParseError {
                            line: 0,
                            message: "the header must come before the first input".into(),
                        }))
                    }
                    "config" => trace.config = parse_config(&words[1..]).map_err(at_line)?,
                    "policy" => trace.policy = parse_policy(&words[1..]).map_err(at_line)?,
                    _ => trace.steps.push(TraceStep {
                        input: parse_input(content).map_err(at_line)?,
                        outcome: Outcome::Accepted {
                            actions: Vec::new(),
                            issued: None,
                        },
                        state: None,
                    }),
                }
                continue;
            }
            let Some(step) = trace.steps.last_mut() else {
                return Err(at_line(ParseError {
                    line: 0,
                    message: "an indented line before the first input".into(),
                }));
            };
            parse_outcome_line(step, content).map_err(at_line)?;
        }
        Ok(trace)
    }
}

fn parse_outcome_line(step: &mut TraceStep, content: &str) -> Result<(), ParseError> {
    if let Some(state) = content.strip_prefix("=>") {
        step.state = Some(parse_state(state.trim())?);
    } else if let Some(rest) = content.strip_prefix('!') {
        match &step.outcome {
            Outcome::Accepted { actions, issued } if actions.is_empty() && issued.is_none() => {
                step.outcome = Outcome::Rejected(parse_rejection(rest.trim())?);
            }
            _ => return err("a rejection after actions"),
        }
    } else if let Some(rest) = content.strip_prefix('=') {
        let rest = rest.trim();
        let Outcome::Accepted { issued, .. } = &mut step.outcome else {
            return err("an issued id after a rejection");
        };
        *issued = Some(if rest.starts_with("waiter#") {
            Issued::Waiter(WaiterId::from_raw(parse_id(rest, "waiter")?))
        } else {
            Issued::Stop(StopId::from_raw(parse_id(rest, "stop")?))
        });
    } else {
        let action = parse_action(content)?;
        let Outcome::Accepted { actions, .. } = &mut step.outcome else {
            return err("an action after a rejection");
        };
        actions.push(action);
    }
    Ok(())
}

fn parse_state(s: &str) -> Result<State, ParseError> {
    Ok(match s {
        "Init" => State::Init,
        "Connecting" => State::Connecting,
        "Waiting" => State::Waiting,
        "Connected" => State::Connected,
        "Disconnecting" => State::Disconnecting,
        "Restarting" => State::Restarting,
        "Stopped" => State::Stopped,
        other => return err(format!("unknown state {other:?}")),
    })
}

fn parse_config(words: &[&str]) -> Result<Config, ParseError> {
    let mut config = Config::default();
    for word in words {
        let (key, value) = word.split_once('=').unwrap_or((word, ""));
        match key {
            "prepare" => config.prepare = true,
            "connect_timeout" => config.connect_timeout = Some(parse_duration(value)?),
            "prepare_timeout" => config.prepare_timeout = Some(parse_duration(value)?),
            "reset_backoff_after" => config.reset_backoff_after = Some(parse_duration(value)?),
            other => return err(format!("unknown config option {other:?}")),
        }
    }
    Ok(config)
}

fn parse_policy(words: &[&str]) -> Result<SimPolicy, ParseError> {
    match words {
        ["linear", step, rest @ ..] => {
            let mut policy = SimPolicy::linear(parse_duration(step)?);
            for word in rest {
                match word.strip_prefix("give_up_after=") {
                    Some(n) => policy.give_up_after = Some(parse_number(n)?),
                    None => return err(format!("unknown policy option {word:?}")),
                }
            }
            Ok(policy)
        }
        _ => err("expected `policy linear STEP [give_up_after=N]`"),
    }
}

fn parse_number<T: FromStr>(s: &str) -> Result<T, ParseError> {
    s.parse()
        .or_else(|_| err(format!("expected a number, got {s:?}")))
}

/// Parses a duration in the trace format (`5s`, `1500ms`, `250us`, `7ns`).
///
/// # Errors
///
/// Not a whole number followed by one of those units.
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = parse_number(digits)?;
    Ok(match unit {
        "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n),
        "ns" => Duration::from_nanos(n),
        _ => return err(format!("expected a duration like 5s or 1500ms, got {s:?}")),
    })
}

fn parse_id(s: &str, prefix: &str) -> Result<u64, ParseError> {
    match s.strip_prefix(prefix).and_then(|r| r.strip_prefix('#')) {
        Some(n) => parse_number(n),
        None => err(format!("expected {prefix}#N, got {s:?}")),
    }
}

/// Splits a line into words; a word may be (or contain) a quoted string with `\"`,
/// `\\` and `\n` escapes, which is unescaped.
fn words(line: &str) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut word = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
            if c != '"' {
                word.push(c);
                continue;
            }
            // A quoted part: keep the quotes as markers, unescape inside.
            word.push('"');
            loop {
                match chars.next() {
                    None => return err("an unterminated string"),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => word.push('\n'),
                        Some(c @ ('"' | '\\')) => word.push(c),
                        _ => return err("a bad escape in a string"),
                    },
                    Some(c) => word.push(c),
                }
            }
            word.push('"');
        }
        out.push(word);
    }
}

fn unquote(word: &str) -> Result<String, ParseError> {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) if word.len() >= 2 => Ok(inner.to_owned()),
        _ => err(format!("expected a quoted error, got {word}")),
    }
}

/// Parses one input line (`connection_made attempt#0`, `when_connected fail_after=2`, …).
///
/// # Errors
///
/// The line is not an input in the trace format.
pub fn parse_input(line: &str) -> Result<Input<String>, ParseError> {
    let words = words(line)?;
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let attempt = |s: &str| parse_id(s, "attempt").map(AttemptId::from_raw);
    Ok(match w.as_slice() {
        ["start"] => Input::Start,
        ["stop"] => Input::Stop,
        ["when_connected"] => Input::WhenConnected {
            fail_after_failures: None,
        },
        ["when_connected", n] => match n.strip_prefix("fail_after=") {
            Some(n) => Input::WhenConnected {
                fail_after_failures: Some(parse_number::<NonZeroU32>(n)?),
            },
            None => return err(format!("expected fail_after=N, got {n:?}")),
        },
        ["cancel_waiter", w] => Input::CancelWaiter {
            waiter: WaiterId::from_raw(parse_id(w, "waiter")?),
        },
        ["connection_made", a] => Input::ConnectionMade {
            attempt: attempt(a)?,
        },
        ["connection_failed", a, e] => Input::ConnectionFailed {
            attempt: attempt(a)?,
            error: unquote(e)?,
        },
        ["connect_cancelled", a] => Input::ConnectCancelled {
            attempt: attempt(a)?,
        },
        ["prepare_succeeded", a] => Input::PrepareSucceeded {
            attempt: attempt(a)?,
        },
        ["prepare_failed", a, e] => Input::PrepareFailed {
            attempt: attempt(a)?,
            error: unquote(e)?,
        },
        ["client_disconnected", a] => Input::ClientDisconnected {
            attempt: attempt(a)?,
        },
        ["timer_fired", t] => Input::TimerFired {
            timer: TimerId::from_raw(parse_id(t, "timer")?),
        },
        _ => return err(format!("not an input: {line:?}")),
    })
}

/// Parses one action (`connect attempt#0`, `schedule timer#1 retry 1500ms`, …),
/// without its indentation.
///
/// # Errors
///
/// The line is not an action in the trace format.
pub fn parse_action(line: &str) -> Result<Action<String>, ParseError> {
    let words = words(line)?;
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let attempt = |s: &str| parse_id(s, "attempt").map(AttemptId::from_raw);
    let waiters = |ws: &[&str]| {
        ws.iter()
            .map(|s| parse_id(s, "waiter").map(WaiterId::from_raw))
            .collect::<Result<_, _>>()
    };
    Ok(match w.as_slice() {
        ["connect", a] => Action::Connect {
            attempt: attempt(a)?,
        },
        ["cancel_connect", a] => Action::CancelConnect {
            attempt: attempt(a)?,
        },
        ["prepare", a] => Action::Prepare {
            attempt: attempt(a)?,
        },
        ["disconnect", a] => Action::Disconnect {
            attempt: attempt(a)?,
        },
        ["schedule", t, kind, d] => Action::ScheduleTimer {
            timer: TimerId::from_raw(parse_id(t, "timer")?),
            kind: match *kind {
                "retry" => TimerKind::Retry,
                "connect_timeout" => TimerKind::ConnectTimeout,
                "prepare_timeout" => TimerKind::PrepareTimeout,
                "healthy" => TimerKind::Healthy,
                other => return err(format!("unknown timer kind {other:?}")),
            },
            delay: parse_duration(d)?,
        },
        ["cancel_timer", t] => Action::CancelTimer {
            timer: TimerId::from_raw(parse_id(t, "timer")?),
        },
        ["notify", a, ws @ ..] => Action::NotifyWaiters {
            attempt: attempt(a)?,
            waiters: waiters(ws)?,
        },
        ["deliver_failure", failure, ws @ ..] => Action::DeliverFailure {
            failure: parse_failure(failure)?,
            waiters: waiters(ws)?,
        },
        ["cancel_waiters", ws @ ..] => Action::CancelWaiters {
            waiters: waiters(ws)?,
        },
        ["finish_stopping", ss @ ..] => Action::FinishStopping {
            stops: ss
                .iter()
                .map(|s| parse_id(s, "stop").map(StopId::from_raw))
                .collect::<Result<_, _>>()?,
        },
        ["gave_up", n] => Action::GaveUp {
            failed_attempts: parse_number(n)?,
        },
        _ => return err(format!("not an action: {line:?}")),
    })
}

fn parse_failure(word: &str) -> Result<Failure<String>, ParseError> {
    let inner = |prefix: &str| {
        word.strip_prefix(prefix)
            .and_then(|w| w.strip_suffix(')'))
            .map(unquote)
    };
    Ok(match word {
        "connect_timeout" => Failure::ConnectTimeout,
        "prepare_timeout" => Failure::PrepareTimeout,
        "lost_while_preparing" => Failure::LostWhilePreparing,
        _ => {
            if let Some(e) = inner("connect(") {
                Failure::Connect(e?)
            } else if let Some(e) = inner("prepare(") {
                Failure::Prepare(e?)
            } else {
                return err(format!("unknown failure {word:?}"));
            }
        }
    })
}

/// Parses what follows `! ` in a trace (`unknown_attempt attempt#9`, …).
///
/// # Errors
///
/// Not a rejection in the trace format.
pub fn parse_rejection(s: &str) -> Result<Rejection, ParseError> {
    let w: Vec<&str> = s.split_whitespace().collect();
    let attempt = |s: &str| parse_id(s, "attempt").map(AttemptId::from_raw);
    Ok(match w.as_slice() {
        ["unknown_attempt", a] => Rejection::UnknownAttempt(attempt(a)?),
        ["unknown_timer", t] => Rejection::UnknownTimer(TimerId::from_raw(parse_id(t, "timer")?)),
        ["unknown_waiter", x] => {
            Rejection::UnknownWaiter(WaiterId::from_raw(parse_id(x, "waiter")?))
        }
        ["already_made", a] => Rejection::AlreadyMade(attempt(a)?),
        ["not_made", a] => Rejection::NotMade(attempt(a)?),
        ["already_connected", a] => Rejection::AlreadyConnected(attempt(a)?),
        ["not_preparing", a] => Rejection::NotPreparing(attempt(a)?),
        ["not_cancelled", a] => Rejection::NotCancelled(attempt(a)?),
        _ => return err(format!("unknown rejection {s:?}")),
    })
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
        Input::ClientDisconnected { attempt } => Input::ClientDisconnected { attempt: *attempt },
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
        Action::DeliverFailure { waiters, failure } => Action::DeliverFailure {
            waiters: waiters.clone(),
            failure: match failure {
                Failure::Connect(e) => Failure::Connect(e.to_string()),
                Failure::Prepare(e) => Failure::Prepare(e.to_string()),
                Failure::ConnectTimeout => Failure::ConnectTimeout,
                Failure::PrepareTimeout => Failure::PrepareTimeout,
                Failure::LostWhilePreparing => Failure::LostWhilePreparing,
                Failure::Panicked(panic) => Failure::Panicked(panic.clone()),
            },
        },
        Action::CancelWaiters { waiters } => Action::CancelWaiters {
            waiters: waiters.clone(),
        },
        Action::FinishStopping { stops } => Action::FinishStopping {
            stops: stops.clone(),
        },
        Action::GaveUp { failed_attempts } => Action::GaveUp {
            failed_attempts: *failed_attempts,
        },
    }
}
