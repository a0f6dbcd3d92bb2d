//! The trace format: a machine's run as text, one input per line, its actions after it.
//!
//! A trace is what failing property tests print and what scenario files
//! (`tests/machine/traces/*.trace`) contain, so a bug report is a paste-able trace:
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
//! # the attempt fails after 20 ms
//! @20ms connection_failed attempt#0 "refused"
//!   cancel_timer timer#0
//!   schedule timer#1 retry 1ms
//!   attempt_failed attempt#0 connect("refused")
//!   deliver_failure waiter#0
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
//! * A panic names where user code panicked (`connector`, `prepare` or
//!   `connection`) and its message: the input `panicked attempt#3 connector "boom"`,
//!   reported as `attempt_failed attempt#3 panicked(connector "boom")`.
//! * A failed attempt is reported as `attempt_failed attempt#N FAILURE`, where
//!   FAILURE is `connect("…")`, `prepare("…")`, `connect_timeout`,
//!   `prepare_timeout`, `lost_while_preparing` or `panicked(SITE "…")`; the
//!   `deliver_failure waiter#0 waiter#1` that may follow it fails those waiters
//!   with that failure.
//! * The header sets the [`Config`](crate::Config) (`config` followed by `prepare`,
//!   `give_up_after_fatal=N`, `connect_timeout=D`, `prepare_timeout=D`,
//!   `reset_backoff_after=D`, `probe=INTERVAL/TIMEOUT`) and the [`SimPolicy`]
//!   (`policy linear STEP [give_up_after=N]`), or `policy recorded`
//!   for a run under a policy a trace cannot name (a jittered
//!   [`Backoff`](crate::Backoff), a closure): the replay then answers the
//!   machine's questions with the trace's own `schedule … retry D` and `gave_up`
//!   lines, in order ([`Trace::policy_recorded`]).
//! * `reconnect_now` takes an optional `reset_backoff`; `attempt_failed_fatally attempt#N
//!   "…"` reports a fatal failure, and a give-up on fatal failures reads
//!   `gave_up N fatal`; probes read `probe attempt#N`, `probe_succeeded attempt#N`,
//!   `probe_failed attempt#N`, with the timer kinds `probe_interval` and
//!   `probe_timeout`; inbound activity on a connection reads
//!   `connection_active attempt#N quiet_for=D` (the last of it `D` ago), or
//!   `connection_active attempt#N` when it was just now (`quiet_for` zero).
//! * An input line may start with the time it happened at, `@1500ms
//!   timer_fired timer#1` (optional; a [`Sim`](super::Sim)'s traces have them,
//!   printed where the time changes). A line without one happened at the time of
//!   the line before. Times never go back, and a replay checks that no timer
//!   fired before it was due ([`Trace::times`]).
//! * Comments (`# …`) are kept ([`Trace::comments`]) and printed back where they
//!   stood: between inputs (a comment among an input's outcome lines is printed
//!   after them), those before the first input right after the header. An
//!   application's notes and the operations of its own appear as comments
//!   (`# app: Submit`).
//!
//! Printing a parsed trace gives its canonical text: printing, parsing and
//! printing again gives the same text, and parsing it gives the same [`Trace`].
//!
//! [`Trace`] parses (`str::parse`) and prints (`Display`) this format, and
//! [`Trace::replay`] runs it against a fresh [`Machine`](crate::Machine) and reports the first
//! difference.

mod parse;
mod print;
mod types;

pub use parse::{parse_action, parse_duration, parse_input, parse_rejection, ParseError};
pub use print::{DisplayAction, DisplayDuration, DisplayInput, DisplayRejection};
pub use types::{
    action_to_string, input_to_string, Comment, Issued, Outcome, SimPolicy, Trace, TraceStep,
};
