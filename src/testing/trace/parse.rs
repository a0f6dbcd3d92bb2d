//! The parser: `str::parse` for traces, and `parse_*` for one line.

use core::fmt;
use core::num::NonZeroU32;
use core::str::FromStr;
use core::time::Duration;
use std::borrow::ToOwned;
use std::format;
use std::string::String;
use std::vec::Vec;

use super::types::{Comment, Issued, Outcome, SimPolicy, Trace, TraceStep};
use crate::actions::{Action, Failure, GiveUp, LossKind, Panic, PanicSite, TimerKind};
use crate::error::Rejection;
use crate::ids::{AttemptId, StopId, TimerId, WaiterId};
use crate::input::Input;
use crate::machine::Config;
use crate::state::State;

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
            if content.is_empty() {
                continue;
            }
            if let Some(text) = content.strip_prefix('#') {
                trace.comments.push(Comment {
                    before: trace.steps.len(),
                    text: text.strip_prefix(' ').unwrap_or(text).to_owned(),
                });
                continue;
            }
            let indented = content.len() != line.len();
            // `@1500ms connection_made attempt#0`: the input happened at 1500 ms.
            let (at, content) = match content.strip_prefix('@') {
                Some(timed) if !indented => {
                    let (time, rest) = timed.split_once(' ').unwrap_or((timed, ""));
                    let at = parse_duration(time).map_err(at_line)?;
                    let last = trace.steps.len().checked_sub(1);
                    if last.and_then(|i| trace.time_of(i)).is_some_and(|t| t > at) {
                        return Err(at_line(ParseError {
                            line: 0,
                            message: format!("time goes back to {time}"),
                        }));
                    }
                    (Some(at), rest.trim_start())
                }
                _ => (None, content),
            };
            if !indented {
                let words: Vec<&str> = content.split_whitespace().collect();
                if at.is_some() && matches!(words.first(), None | Some(&"config" | &"policy")) {
                    return Err(at_line(ParseError {
                        line: 0,
                        message: "a time (`@…`) must be followed by an input".into(),
                    }));
                }
                if let Some(at) = at {
                    trace.times.insert(trace.steps.len(), at);
                }
                match words[0] {
                    "config" | "policy" if !trace.steps.is_empty() => {
                        return Err(at_line(ParseError {
                            line: 0,
                            message: "the header must come before the first input".into(),
                        }))
                    }
                    "config" => trace.config = parse_config(&words[1..]).map_err(at_line)?,
                    "policy" => match parse_policy(&words[1..]).map_err(at_line)? {
                        Some(policy) => {
                            trace.policy = policy;
                            trace.policy_recorded = false;
                        }
                        None => trace.policy_recorded = true,
                    },
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
            "give_up_after_fatal" => config.give_up_after_fatal = parse_number(value)?,
            "probe" => {
                let Some((interval, timeout)) = value.split_once('/') else {
                    return err(format!("expected probe=INTERVAL/TIMEOUT, got {value:?}"));
                };
                config.probe = Some(crate::machine::ProbeConfig::new(
                    parse_duration(interval)?,
                    parse_duration(timeout)?,
                ));
            }
            other => return err(format!("unknown config option {other:?}")),
        }
    }
    Ok(config)
}

/// `Some(policy)`, or `None` for `policy recorded`.
fn parse_policy(words: &[&str]) -> Result<Option<SimPolicy>, ParseError> {
    match words {
        ["recorded"] => Ok(None),
        ["linear", step, rest @ ..] => {
            let mut policy = SimPolicy::linear(parse_duration(step)?);
            for word in rest {
                match word.strip_prefix("give_up_after=") {
                    Some(n) => policy.give_up_after = Some(parse_number(n)?),
                    None => return err(format!("unknown policy option {word:?}")),
                }
            }
            Ok(Some(policy))
        }
        _ => err("expected `policy linear STEP [give_up_after=N]` or `policy recorded`"),
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
        ["reconnect_now"] => Input::ReconnectNow {
            reset_backoff: false,
        },
        ["reconnect_now", "reset_backoff"] => Input::ReconnectNow {
            reset_backoff: true,
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
        ["panicked", a, site, message] => Input::Panicked {
            attempt: attempt(a)?,
            panic: Panic::new(parse_panic_site(site)?, unquote(message)?),
        },
        ["prepare_failed", a, e] => Input::PrepareFailed {
            attempt: attempt(a)?,
            error: unquote(e)?,
        },
        ["attempt_failed_fatally", a, e] => Input::AttemptFailedFatally {
            attempt: attempt(a)?,
            error: unquote(e)?,
        },
        ["probe_succeeded", a] => Input::ProbeSucceeded {
            attempt: attempt(a)?,
        },
        ["probe_failed", a] => Input::ProbeFailed {
            attempt: attempt(a)?,
        },
        ["connection_active", a] => Input::ConnectionActive {
            attempt: attempt(a)?,
            quiet_for: Duration::ZERO,
        },
        ["connection_active", a, quiet] => Input::ConnectionActive {
            attempt: attempt(a)?,
            quiet_for: match quiet.strip_prefix("quiet_for=") {
                Some(quiet) => parse_duration(quiet)?,
                None => return err(format!("expected quiet_for=DURATION, got {quiet:?}")),
            },
        },
        ["connection_closed", a] => Input::ConnectionClosed {
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
        ["probe", a] => Action::Probe {
            attempt: attempt(a)?,
        },
        ["schedule", t, kind, d] => Action::ScheduleTimer {
            timer: TimerId::from_raw(parse_id(t, "timer")?),
            kind: match *kind {
                "retry" => TimerKind::Retry,
                "connect_timeout" => TimerKind::ConnectTimeout,
                "prepare_timeout" => TimerKind::PrepareTimeout,
                "healthy" => TimerKind::Healthy,
                "probe_interval" => TimerKind::ProbeInterval,
                "probe_timeout" => TimerKind::ProbeTimeout,
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
        // `panicked(SITE "message")` is two words: the quoted message starts the second.
        ["attempt_failed", a, failure, message, n] if failure.starts_with("panicked(") => {
            Action::AttemptFailed {
                attempt: attempt(a)?,
                failure: parse_panicked_failure(failure, message)?,
                consecutive_failures: parse_named_number(n, "failures")?,
            }
        }
        ["attempt_failed", a, failure, n] => Action::AttemptFailed {
            attempt: attempt(a)?,
            failure: parse_failure(failure)?,
            consecutive_failures: parse_named_number(n, "failures")?,
        },
        ["deliver_failure", rest @ ..] => {
            let (ws, gave_up) = waiters_and_gave_up(rest, line)?;
            Action::DeliverFailure {
                waiters: waiters(ws)?,
                gave_up,
            }
        }
        ["cancel_waiters", rest @ ..] => {
            let (ws, gave_up) = waiters_and_gave_up(rest, line)?;
            Action::CancelWaiters {
                waiters: waiters(ws)?,
                gave_up,
            }
        }
        ["connected", a, n] => Action::Connected {
            attempt: attempt(a)?,
            generation: parse_named_number(n, "generation")?,
        },
        ["lost", a, kind, flap @ ..] => Action::Lost {
            attempt: attempt(a)?,
            kind: match *kind {
                "closed" => LossKind::Closed,
                "probe_failed" => LossKind::ProbeFailed,
                "probe_timed_out" => LossKind::ProbeTimedOut,
                other => return err(format!("unknown loss kind {other:?}")),
            },
            flap: match flap {
                [] => false,
                ["flap"] => true,
                _ => return err(format!("not an action: {line:?}")),
            },
        },
        ["retry_scheduled", d, n] => Action::RetryScheduled {
            delay: parse_duration(d)?,
            consecutive_failures: parse_named_number(n, "failures")?,
        },
        ["finish_stopping", ss @ ..] => Action::FinishStopping {
            stops: ss
                .iter()
                .map(|s| parse_id(s, "stop").map(StopId::from_raw))
                .collect::<Result<_, _>>()?,
        },
        ["gave_up", n] => Action::GaveUp {
            consecutive_failures: parse_number(n)?,
            fatal: false,
        },
        ["gave_up", n, "fatal"] => Action::GaveUp {
            consecutive_failures: parse_number(n)?,
            fatal: true,
        },
        _ => return err(format!("not an action: {line:?}")),
    })
}

/// The waiters of an answer, and its `gave_up=N [fatal]`, if any.
fn waiters_and_gave_up<'a>(
    words: &'a [&'a str],
    line: &str,
) -> Result<(&'a [&'a str], Option<GiveUp>), ParseError> {
    let split = words
        .iter()
        .position(|w| w.starts_with("gave_up="))
        .unwrap_or(words.len());
    let (waiters, gave_up) = words.split_at(split);
    let gave_up = match gave_up {
        [] => None,
        [n] => Some(GiveUp {
            consecutive_failures: parse_named_number(n, "gave_up")?,
            fatal: false,
        }),
        [n, "fatal"] => Some(GiveUp {
            consecutive_failures: parse_named_number(n, "gave_up")?,
            fatal: true,
        }),
        _ => return err(format!("not an action: {line:?}")),
    };
    Ok((waiters, gave_up))
}

/// `NAME=N`, e.g. `failures=3`.
fn parse_named_number<T: FromStr>(word: &str, name: &str) -> Result<T, ParseError> {
    match word
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('='))
    {
        Some(n) => parse_number(n),
        None => err(format!("expected {name}=N, got {word:?}")),
    }
}

/// `connector`, `prepare` or `connection`: where user code panicked.
fn parse_panic_site(word: &str) -> Result<PanicSite, ParseError> {
    Ok(match word {
        "connector" => PanicSite::Connector,
        "prepare" => PanicSite::Prepare,
        "connection" => PanicSite::Connection,
        "handle" => PanicSite::Handle,
        "probe" => PanicSite::Probe,
        other => return err(format!("unknown panic site {other:?}")),
    })
}

/// `panicked(SITE` and `"message")`, the two words of a panic failure.
fn parse_panicked_failure(site: &str, message: &str) -> Result<Failure<String>, ParseError> {
    let (Some(site), Some(message)) = (
        site.strip_prefix("panicked("),
        message.strip_suffix(')').filter(|m| m.starts_with('"')),
    ) else {
        return err(format!(
            "expected panicked(SITE \"message\"), got {site} {message}"
        ));
    };
    Ok(Failure::Panicked(Panic::new(
        parse_panic_site(site)?,
        unquote(message)?,
    )))
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
        ["not_probing", a] => Rejection::NotProbing(attempt(a)?),
        _ => return err(format!("unknown rejection {s:?}")),
    })
}
