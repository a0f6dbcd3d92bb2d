//! The driver's errors: why a waiter got no connection, why a service could not be
//! built, why a service ended.

use core::fmt;
use core::time::Duration;
use std::borrow::Cow;
use std::string::String;
use std::sync::Arc;

use crate::actions::Failure;
use crate::error::ConfigError;

/// Why [`ClientService::when_connected`](super::ClientService::when_connected) did
/// not produce a connection.
///
/// `E` is your connector's (and prepare hook's) error type. The failure behind
/// the error is its [`source`](std::error::Error::source), and your error is the
/// failure's source, so the whole story is in the chain, intact for error
/// reporters that walk it.
///
/// # Printing
///
/// * `{}` prints the **whole chain on one line**, root cause included, each part
///   once, joined with `": "`: `the retry policy gave up after 3 failed
///   attempts: connection attempt failed: db error: FATAL: database "nope" does
///   not exist`. This is the form for logs and messages: nothing else to do to
///   see why. (A part whose text the part above it already ends with is not
///   repeated, for error types whose message includes their source; line breaks
///   inside a part become spaces.)
/// * `{:#}` prints **this error's own message only**: `the retry policy gave up
///   after 3 consecutive failures`. This is the form for reporters that walk
///   [`source`](std::error::Error::source) themselves and print every level, so
///   that no part is printed twice: print the top with `{:#}`, the sources as
///   they come.
///
/// Handing the error as a whole to such a reporter (anyhow's `{:#}`, eyre) prints
/// its chain twice, once in the top line and once from the walk: print it with
/// `{}`, or keep the reporter to the levels below
/// ([`failure`](Error::failure) and down).
///
/// `Display` needs `E: std::error::Error` (to walk your error's sources). For an
/// `E` that is only `Display` (`anyhow::Error`, `Box<dyn Error + Send + Sync>`,
/// `String`), print [`Error::display`], which goes as far as `Display` can: this
/// error, its failure, then your error's `{:#}` (anyhow prints its chain there).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E> {
    /// The service was stopped ([`ClientService::stop`](super::ClientService::stop),
    /// or its last handle was dropped) before this waiter got a connection.
    Stopped,
    /// The waiter's `fail_after_failures` limit was reached; this is the failure that
    /// reached it. The service keeps retrying.
    Failed(Arc<Failure<E>>),
    /// The service gave up: the retry policy did, or (`fatal`) failures that
    /// retrying will not fix did (see [`Builder::fatal_if`](super::Builder::fatal_if));
    /// this is the last failure. The service is stopped until started again.
    GaveUp {
        /// Consecutive failures when it gave up.
        consecutive_failures: u32,
        /// The last failure.
        last: Arc<Failure<E>>,
        /// It gave up on fatal failures, without asking the retry policy.
        fatal: bool,
    },
    /// The service's task has ended for good (see [`Ended`]): nothing is open and
    /// nothing will be. Every later request fails the same way at once.
    Ended(Ended),
    /// The waiter's time limit ([`WhenConnected::within`](super::WhenConnected::within))
    /// ran out before a connection was handed to it. The waiter was withdrawn: a
    /// connection made later is not handed to it. The service keeps retrying.
    TimedOut {
        /// The limit that ran out.
        after: Duration,
        /// The failure of the service's last failed attempt, if attempts had been
        /// failing when the time ran out (the likely reason there was no
        /// connection); `None` if the service had not failed since it last
        /// connected (e.g. an attempt was still in flight, or it was stopped).
        last: Option<Arc<Failure<E>>>,
    },
}

impl<E> Error<E> {
    /// This error's own message, without its causes (what `{:#}` prints).
    fn write_own(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Stopped => {
                f.write_str("the service was stopped before a connection was handed out")
            }
            Error::Ended(ended) => write!(f, "the service has ended: {ended}"),
            Error::Failed(_) => f.write_str("this waiter's limit of failed attempts was reached"),
            Error::GaveUp {
                consecutive_failures,
                fatal: false,
                ..
            } => write!(
                f,
                "the retry policy gave up after {consecutive_failures} consecutive failure{}",
                plural(*consecutive_failures)
            ),
            Error::GaveUp {
                consecutive_failures,
                fatal: true,
                ..
            } => write!(
                f,
                "gave up on a failure that retrying will not fix \
                 ({consecutive_failures} consecutive failure{})",
                plural(*consecutive_failures)
            ),
            Error::TimedOut { after, .. } => {
                write!(f, "no connection within {after:?}")
            }
        }
    }

    /// As `{}` for an `E` that is only `Display` (`anyhow::Error`,
    /// `Box<dyn Error + Send + Sync>`, `String`): this error's message, its
    /// failure's message, then your error printed with `{:#}`, on one line. (For
    /// an `E` that is a `std::error::Error`, `{}` goes further: down your error's
    /// own sources.)
    ///
    /// ```
    /// use std::sync::Arc;
    /// use redial::driver::Error;
    /// use redial::Failure;
    ///
    /// let error = Error::<String>::Failed(Arc::new(Failure::Connect("refused".into())));
    /// assert_eq!(
    ///     error.display().to_string(),
    ///     "this waiter's limit of failed attempts was reached: connection attempt failed: refused"
    /// );
    /// ```
    pub fn display(&self) -> impl fmt::Display + '_
    where
        E: fmt::Display,
    {
        DisplayOnly(self)
    }
}

/// [`Error::display`]'s output.
struct DisplayOnly<'a, E>(&'a Error<E>);

impl<E: fmt::Display> fmt::Display for DisplayOnly<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = OneLine::new(f);
        line.part(format_args!("{}", Own(self.0)))?;
        if let Some(failure) = self.0.failure() {
            line.part(format_args!("{failure}"))?;
            if let Failure::Connect(e) | Failure::Prepare(e) = failure {
                line.part(format_args!("{e:#}"))?;
            }
        }
        Ok(())
    }
}

/// An error's own message (`{:#}`), as a `Display`.
struct Own<'a, E>(&'a Error<E>);

impl<E> fmt::Display for Own<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_own(f)
    }
}

/// Writes parts joined with `": "` on one line: a part that the part before it
/// already ends with is left out, line breaks become spaces.
struct OneLine<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    last: String,
    first: bool,
}

impl<'a, 'b> OneLine<'a, 'b> {
    fn new(f: &'a mut fmt::Formatter<'b>) -> Self {
        OneLine {
            f,
            last: String::new(),
            first: true,
        }
    }

    fn part(&mut self, part: fmt::Arguments<'_>) -> fmt::Result {
        use std::fmt::Write as _;
        let mut text = String::new();
        let _ = text.write_fmt(part);
        let text = text.trim();
        if text.is_empty() || (!self.first && self.last.ends_with(text)) {
            return Ok(());
        }
        if !self.first {
            self.f.write_str(": ")?;
        }
        self.first = false;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if let Some(line) = lines.next() {
            self.f.write_str(line)?;
        }
        for line in lines {
            self.f.write_str(" ")?;
            self.f.write_str(line)?;
        }
        self.last = String::from(text);
        Ok(())
    }
}

impl<E: std::error::Error + 'static> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return self.write_own(f);
        }
        let mut line = OneLine::new(f);
        line.part(format_args!("{}", Own(self)))?;
        let mut source = std::error::Error::source(self);
        // A chain that loops (a buggy `source`) is cut off.
        let mut depth = 0;
        while let Some(error) = source {
            if depth == 64 {
                break;
            }
            depth += 1;
            line.part(format_args!("{error}"))?;
            source = error.source();
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Failed(failure) | Error::GaveUp { last: failure, .. } => Some(&**failure),
            Error::TimedOut {
                last: Some(failure),
                ..
            } => Some(&**failure),
            Error::Stopped | Error::Ended(_) | Error::TimedOut { last: None, .. } => None,
        }
    }
}

impl<E> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Error::Stopped => Error::Stopped,
            Error::Failed(f) => Error::Failed(Arc::clone(f)),
            Error::GaveUp {
                consecutive_failures,
                last,
                fatal,
            } => Error::GaveUp {
                consecutive_failures: *consecutive_failures,
                last: Arc::clone(last),
                fatal: *fatal,
            },
            Error::Ended(ended) => Error::Ended(ended.clone()),
            Error::TimedOut { after, last } => Error::TimedOut {
                after: *after,
                last: last.clone(),
            },
        }
    }
}

impl<E> Error<E> {
    /// The failure behind this error, if any: none for [`Error::Stopped`] and
    /// [`Error::Ended`], the last failure (if attempts were failing) for
    /// [`Error::TimedOut`].
    pub fn failure(&self) -> Option<&Failure<E>> {
        match self {
            Error::Stopped | Error::Ended(_) | Error::TimedOut { last: None, .. } => None,
            Error::Failed(f)
            | Error::GaveUp { last: f, .. }
            | Error::TimedOut { last: Some(f), .. } => Some(f),
        }
    }
}

/// Why a service's task ended: from [`ClientService::ended`](super::ClientService::ended)
/// and in [`Error::Ended`].
///
/// A service whose task ended is stopped for good: its state reads
/// [`State::Stopped`](crate::State::Stopped), nothing it opened is left open, every
/// pending waiter and stop request has been answered, and every later
/// `when_connected` fails at once with this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ended {
    /// The last [`ClientService`](super::ClientService) handle was dropped; the
    /// service stopped and its task finished.
    #[error("the service was dropped")]
    Dropped,
    /// The runtime dropped the service's task before it finished (the runtime shut
    /// down, or was dropped, while the service was alive).
    #[error("the runtime dropped the service's task (it shut down)")]
    RuntimeGone,
    /// The retry policy panicked. The machine was left exactly as before the input
    /// that asked the policy, and the service ended.
    #[error("the retry policy panicked: {0}")]
    PolicyPanicked(String),
    /// The service's task panicked outside any user code it contains (a bug).
    #[error("the service's task panicked: {0}")]
    Panicked(String),
}

/// The runtime could not spawn the service's task; from
/// [`Runtime::spawn`](super::Runtime::spawn).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot spawn the service's task: {reason}")]
pub struct SpawnError {
    reason: Cow<'static, str>,
}

impl SpawnError {
    /// A spawn error with this reason (for [`Runtime`](super::Runtime) implementations).
    pub fn new(reason: impl Into<Cow<'static, str>>) -> SpawnError {
        SpawnError {
            reason: reason.into(),
        }
    }

    /// Why the task could not be spawned.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Why [`Builder::build`](super::Builder::build) (or
/// [`Builder::start`](super::Builder::start)) made no service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration makes no sense (a zero timeout, a prepare timeout without a
    /// prepare hook).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime could not spawn the service's task (e.g. `build` was called
    /// outside a Tokio runtime).
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The message of a caught panic: its payload when that is a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        String::from(*s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(a panic payload that is not a string)")
    }
}
