//! The driver's errors: why a waiter got no connection, why a service could not be
//! built, why a service ended.

use core::fmt;
use std::borrow::Cow;
use std::string::String;
use std::sync::Arc;

use crate::actions::Failure;
use crate::error::ConfigError;

/// Why [`ClientService::when_connected`](super::ClientService::when_connected) did
/// not produce a connection.
///
/// `E` is your connector's (and prepare hook's) error type. `Display` says what
/// happened; the failure behind it is the [`source`](std::error::Error::source),
/// and your error is the failure's source, so the whole story is in the chain:
/// `{:#}` prints it on one line, e.g. `this waiter's limit of failed attempts was
/// reached: connection attempt failed: Connection refused (os error 111)`.
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
        failed_attempts: u32,
        /// The last failure.
        last: Arc<Failure<E>>,
        /// It gave up on fatal failures, without asking the retry policy.
        fatal: bool,
    },
    /// The service's task has ended for good (see [`Ended`]): nothing is open and
    /// nothing will be. Every later request fails the same way at once.
    Ended(Ended),
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = match self {
            Error::Stopped => {
                return f.write_str("the service was stopped before a connection was handed out")
            }
            Error::Ended(ended) => return write!(f, "the service has ended: {ended}"),
            Error::Failed(failure) => {
                f.write_str("this waiter's limit of failed attempts was reached")?;
                failure
            }
            Error::GaveUp {
                failed_attempts,
                last,
                fatal: false,
            } => {
                write!(
                    f,
                    "the retry policy gave up after {failed_attempts} failed attempt{}",
                    plural(*failed_attempts)
                )?;
                last
            }
            Error::GaveUp {
                failed_attempts,
                last,
                fatal: true,
            } => {
                write!(
                    f,
                    "gave up on a failure that retrying will not fix \
                     ({failed_attempts} failed attempt{})",
                    plural(*failed_attempts)
                )?;
                last
            }
        };
        if f.alternate() {
            write!(f, ": {cause:#}")?;
        }
        Ok(())
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Failed(failure) | Error::GaveUp { last: failure, .. } => Some(&**failure),
            Error::Stopped | Error::Ended(_) => None,
        }
    }
}

impl<E> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Error::Stopped => Error::Stopped,
            Error::Failed(f) => Error::Failed(Arc::clone(f)),
            Error::GaveUp {
                failed_attempts,
                last,
                fatal,
            } => Error::GaveUp {
                failed_attempts: *failed_attempts,
                last: Arc::clone(last),
                fatal: *fatal,
            },
            Error::Ended(ended) => Error::Ended(ended.clone()),
        }
    }
}

impl<E> Error<E> {
    /// The failure behind this error, if any (none for [`Error::Stopped`] and
    /// [`Error::Ended`]).
    pub fn failure(&self) -> Option<&Failure<E>> {
        match self {
            Error::Stopped | Error::Ended(_) => None,
            Error::Failed(f) | Error::GaveUp { last: f, .. } => Some(f),
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
