//! The printer: `Display` for traces, and the `Display*` wrappers for one input,
//! action, rejection or duration.

use core::fmt::{self, Write as _};
use core::time::Duration;
use std::string::ToString;

use super::types::{Comment, Issued, Outcome, SimPolicy, Trace, TraceStep};
use crate::actions::{Action, Failure, GiveUp, LossKind, TimerKind};
use crate::error::Rejection;
use crate::input::Input;
use crate::machine::Config;

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
            Input::ReconnectNow {
                reset_backoff: false,
            } => f.write_str(name),
            Input::ReconnectNow {
                reset_backoff: true,
            } => write!(f, "{name} reset_backoff"),
            Input::ConnectionMade { attempt }
            | Input::ConnectCancelled { attempt }
            | Input::PrepareSucceeded { attempt }
            | Input::ProbeSucceeded { attempt }
            | Input::ProbeFailed { attempt }
            | Input::ConnectionActive {
                attempt,
                quiet_for: Duration::ZERO,
            }
            | Input::ConnectionClosed { attempt } => write!(f, "{name} {attempt}"),
            Input::ConnectionActive { attempt, quiet_for } => {
                write!(
                    f,
                    "{name} {attempt} quiet_for={}",
                    DisplayDuration(*quiet_for)
                )
            }
            Input::ConnectionFailed { attempt, error }
            | Input::PrepareFailed { attempt, error }
            | Input::AttemptFailedFatally { attempt, error } => {
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
        crate::PanicSite::Handle => "handle",
        crate::PanicSite::Probe => "probe",
    }
}

/// Prints an [`Action`] as a trace line (without the indentation), e.g.
/// `schedule timer#1 retry 1500ms`, `attempt_failed attempt#3 connect("refused")
/// failures=2`, `deliver_failure waiter#0 waiter#1` or `lost attempt#4 closed flap`.
#[derive(Debug, Clone, Copy)]
pub struct DisplayAction<'a, E>(pub &'a Action<E>);

impl<E: fmt::Display> fmt::Display for DisplayAction<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Action::Connect { attempt } => write!(f, "connect {attempt}"),
            Action::CancelConnect { attempt } => write!(f, "cancel_connect {attempt}"),
            Action::Prepare { attempt } => write!(f, "prepare {attempt}"),
            Action::Disconnect { attempt } => write!(f, "disconnect {attempt}"),
            Action::Probe { attempt } => write!(f, "probe {attempt}"),
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
            Action::AttemptFailed {
                attempt,
                failure,
                consecutive_failures,
            } => {
                write!(f, "attempt_failed {attempt} ")?;
                match failure {
                    Failure::Connect(e) => {
                        f.write_str("connect(")?;
                        write_quoted(f, e)?;
                        f.write_char(')')
                    }
                    Failure::Prepare(e) => {
                        f.write_str("prepare(")?;
                        write_quoted(f, e)?;
                        f.write_char(')')
                    }
                    Failure::ConnectTimeout => f.write_str("connect_timeout"),
                    Failure::PrepareTimeout => f.write_str("prepare_timeout"),
                    Failure::LostWhilePreparing => f.write_str("lost_while_preparing"),
                    Failure::Panicked(panic) => {
                        write!(f, "panicked({} ", panic_site_name(panic.site()))?;
                        write_quoted(f, &panic.message())?;
                        f.write_char(')')
                    }
                }?;
                write!(f, " failures={consecutive_failures}")
            }
            Action::DeliverFailure { waiters, gave_up } => {
                f.write_str("deliver_failure")?;
                waiters.iter().try_for_each(|w| write!(f, " {w}"))?;
                write_gave_up(f, *gave_up)
            }
            Action::CancelWaiters { waiters, gave_up } => {
                f.write_str("cancel_waiters")?;
                waiters.iter().try_for_each(|w| write!(f, " {w}"))?;
                write_gave_up(f, *gave_up)
            }
            Action::FinishStopping { stops } => {
                f.write_str("finish_stopping")?;
                stops.iter().try_for_each(|s| write!(f, " {s}"))
            }
            Action::GaveUp {
                consecutive_failures,
                fatal: false,
            } => write!(f, "gave_up {consecutive_failures}"),
            Action::GaveUp {
                consecutive_failures,
                fatal: true,
            } => write!(f, "gave_up {consecutive_failures} fatal"),
            Action::Connected {
                attempt,
                generation,
            } => write!(f, "connected {attempt} generation={generation}"),
            Action::Lost {
                attempt,
                kind,
                flap,
            } => {
                let kind = match kind {
                    LossKind::Closed => "closed",
                    LossKind::ProbeFailed => "probe_failed",
                    LossKind::ProbeTimedOut => "probe_timed_out",
                };
                write!(f, "lost {attempt} {kind}")?;
                if *flap {
                    f.write_str(" flap")?;
                }
                Ok(())
            }
            Action::RetryScheduled {
                delay,
                consecutive_failures,
            } => write!(
                f,
                "retry_scheduled {} failures={consecutive_failures}",
                DisplayDuration(*delay)
            ),
        }
    }
}

/// ` gave_up=N` or ` gave_up=N fatal` after the waiters of an answer, if any.
fn write_gave_up(f: &mut fmt::Formatter<'_>, gave_up: Option<GiveUp>) -> fmt::Result {
    match gave_up {
        None => Ok(()),
        Some(GiveUp {
            consecutive_failures,
            fatal: false,
        }) => write!(f, " gave_up={consecutive_failures}"),
        Some(GiveUp {
            consecutive_failures,
            fatal: true,
        }) => write!(f, " gave_up={consecutive_failures} fatal"),
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
            Rejection::NotProbing(a) => write!(f, "not_probing {a}"),
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
        TimerKind::ProbeInterval => "probe_interval",
        TimerKind::ProbeTimeout => "probe_timeout",
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

/// Prints the comments that stand before step `i` (all the remaining ones when `i`
/// is the number of steps).
fn write_comments(f: &mut fmt::Formatter<'_>, trace: &Trace, i: usize) -> fmt::Result {
    let last = i == trace.steps.len();
    let here = |c: &&Comment| c.before == i || (last && c.before > i);
    for comment in trace.comments.iter().filter(here) {
        for line in comment.text.split('\n') {
            if line.is_empty() {
                writeln!(f, "#")?;
            } else {
                writeln!(f, "# {line}")?;
            }
        }
    }
    Ok(())
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.config != Config::default() {
            f.write_str("config")?;
            if self.config.prepare {
                f.write_str(" prepare")?;
            }
            if self.config.give_up_after_fatal.get() != 1 {
                write!(
                    f,
                    " give_up_after_fatal={}",
                    self.config.give_up_after_fatal
                )?;
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
            if let Some(probe) = self.config.probe {
                write!(
                    f,
                    " probe={}/{}",
                    DisplayDuration(probe.interval),
                    DisplayDuration(probe.timeout)
                )?;
            }
            writeln!(f)?;
        }
        if self.policy_recorded {
            writeln!(f, "policy recorded")?;
        } else {
            writeln!(f, "{}", self.policy)?;
        }
        for (i, step) in self.steps.iter().enumerate() {
            write_comments(f, self, i)?;
            if let Some(at) = self.times.get(&i) {
                write!(f, "@{} ", DisplayDuration(*at))?;
            }
            write!(f, "{step}")?;
        }
        write_comments(f, self, self.steps.len())
    }
}
