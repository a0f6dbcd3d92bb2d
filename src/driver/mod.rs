//! The runtime-agnostic async driver: a [`ClientService`] you can `await`.
//!
//! The driver owns a [`Machine`](crate::Machine) and performs its actions with real
//! I/O: it runs your connector for `Connect`, drops the attempt on `CancelConnect`,
//! runs your prepare hook, closes connections on `Disconnect`, keeps the timers,
//! answers waiters and stop requests, and reports every outcome back to the machine
//! with the ids the machine gave. The machine decides everything; the driver only
//! does what it is told.
//!
//! Everything runtime-specific (spawning the service's one task, sleeping) sits
//! behind the tiny [`Runtime`] trait. Pick an adapter:
//!
//! | feature | module | runtime |
//! |---|---|---|
//! | `tokio` | [`redial::tokio`](crate::tokio) | Tokio |
//! | `smol` | [`redial::smol`](crate::smol) | smol (async-io / async-executor) |
//! | `async-std` | [`redial::async_std`](crate::async_std) | async-std (discontinued upstream; smol is its successor) |
//!
//! All three run this same driver, so they behave identically.
//!
//! # Connections
//!
//! Your connector is an async closure that returns a [`Connection`] or an error.
//! Two shapes are supported:
//!
//! * a **`(handle, driver future)` pair**, as returned by tokio-postgres, hyper or
//!   h2: the service runs the driver future inside its task, hands clones of the
//!   handle to waiters, and learns of the loss when the driver future ends. The
//!   handle must be `Clone` (wrap it in an `Arc` if it is not, e.g.
//!   `(Arc::new(client), connection)`).
//! * a **plain byte stream** such as a `TcpStream`: wrap it with `stream` (one per
//!   adapter, e.g. [`redial::tokio::stream`](crate::tokio::stream), or
//!   [`stream`] for `futures-io` streams), which gives a [`SharedStream`] handle and a
//!   driver future that notices when the peer closes or the stream fails.
//!
//! Either way the service learns of every loss the driver future notices without
//! you reporting it (for the ones it cannot notice, see
//! [`ClientService::disconnect`]), and closes the connection (drops the driver
//! future) when the machine asks.
//!
//! # Behaviour
//!
//! * One task per service; no threads, no per-service buffers. Connector futures,
//!   prepare futures and connection drivers are polled inside that task.
//! * A zero retry delay is not sent through the runtime's timer: the next attempt
//!   starts at once (the task yields to the executor every so often, so a tight
//!   retry loop never starves other tasks).
//! * [`ClientService::when_connected`] registers the waiter when it is called; the
//!   returned future answers it. Dropping the future withdraws the waiter.
//! * A connection whose driver future never ends can still be dead (a half-open
//!   connection: no reset ever arrives). Get its id with
//!   [`WhenConnected::with_id`] and pass it to [`ClientService::disconnect`] when
//!   you detect that: the service closes it and reconnects. A late call about an
//!   older connection does nothing.
//! * [`ClientService::stop`] registers the stop request when it is called; the
//!   returned future resolves once nothing is left open (SPEC D7). Dropping the
//!   future does not withdraw the stop.
//! * Dropping the last [`ClientService`] stops the service; its task closes what is
//!   open and ends.
//! * Failures are shared: one failure can be delivered to many waiters, so waiters
//!   receive it as an `Arc<Failure<E>>` inside [`Error`].
//!
//! With the `tracing` feature the driver emits `tracing` events (target `redial`):
//! retry scheduled (with the failure count and the delay), connected, lost,
//! attempt failed, gave up.

use core::future::Future;
use core::time::Duration;
use std::sync::Arc;

use crate::actions::Failure;

mod service;
mod stream;
mod task;

pub use service::{
    Builder, ClientService, StateWatch, Stopping, WhenConnected, WhenConnectedWithId,
};
#[allow(unused_imports)]
pub(crate) use stream::with_reader;
pub use stream::{stream, SharedStream, StreamDriver, StreamGuard, StreamLock};

/// What the driver needs from an async runtime: spawn the service's task, and sleep.
///
/// Implemented by [`Tokio`](crate::tokio::Tokio), [`Smol`](crate::smol::Smol) and
/// [`AsyncStd`](crate::async_std::AsyncStd). Implement it yourself to run the driver
/// on another executor.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The future returned by [`Runtime::sleep`]; its output is ignored.
    type Sleep: Future + Send + 'static;

    /// Spawns a detached task that runs `task` to completion, or says why it cannot
    /// (e.g. no Tokio runtime is running on this thread).
    ///
    /// If the runtime later drops the task unfinished (it shuts down), the service
    /// notices: every pending and later request fails at once with a typed error.
    fn spawn<F>(&self, task: F) -> Result<(), SpawnError>
    where
        F: Future<Output = ()> + Send + 'static;

    /// A future that completes after `delay`. The driver never asks for a zero delay.
    fn sleep(&self, delay: Duration) -> Self::Sleep;
}

/// A connection as a connector returns it: a shareable handle, and a driver future
/// that runs the connection and ends when it is lost.
///
/// Implemented for every `(handle, driver future)` pair, which covers
/// tokio-postgres, hyper and h2 connections and the pairs made by [`stream`].
pub trait Connection: Send + 'static {
    /// What waiters receive: a clone per waiter.
    type Handle: Clone + Send + Sync + 'static;
    /// Runs the connection; it ends when the connection is lost. Its output is ignored.
    /// The service drops it to close the connection.
    type Driver: Future + Send + 'static;

    /// Splits the connection into its handle and its driver.
    fn into_parts(self) -> (Self::Handle, Self::Driver);
}

impl<H, D> Connection for (H, D)
where
    H: Clone + Send + Sync + 'static,
    D: Future + Send + 'static,
{
    type Handle = H;
    type Driver = D;

    fn into_parts(self) -> (H, D) {
        self
    }
}

/// The runtime could not spawn the service's task; from [`Runtime::spawn`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot spawn the service's task: {reason}")]
pub struct SpawnError {
    reason: std::borrow::Cow<'static, str>,
}

impl SpawnError {
    /// A spawn error with this reason (for [`Runtime`] implementations).
    pub fn new(reason: impl Into<std::borrow::Cow<'static, str>>) -> SpawnError {
        SpawnError {
            reason: reason.into(),
        }
    }

    /// Why the task could not be spawned.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Why [`Builder::build`] (or [`Builder::start`]) made no service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The configuration makes no sense (a zero timeout, a prepare timeout without a
    /// prepare hook).
    #[error(transparent)]
    Config(#[from] crate::error::ConfigError),
    /// The runtime could not spawn the service's task (e.g. `build` was called
    /// outside a Tokio runtime).
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Why [`ClientService::when_connected`] did not produce a connection.
///
/// `E` is your connector's (and prepare hook's) error type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The service stopped (or was dropped) before a connection was made.
    #[error("the service stopped before it was connected")]
    Stopped,
    /// The waiter's `fail_after_failures` limit was reached; this is the failure that
    /// reached it. The service keeps retrying.
    #[error("{0}")]
    Failed(Arc<Failure<E>>),
    /// The retry policy gave up; this is the last failure. The service is stopped
    /// until started again.
    #[error("gave up after {failed_attempts} failed attempts: {last}")]
    GaveUp {
        /// Consecutive failures when the policy gave up.
        failed_attempts: u32,
        /// The last failure.
        last: Arc<Failure<E>>,
    },
}

impl<E> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Error::Stopped => Error::Stopped,
            Error::Failed(f) => Error::Failed(Arc::clone(f)),
            Error::GaveUp {
                failed_attempts,
                last,
            } => Error::GaveUp {
                failed_attempts: *failed_attempts,
                last: Arc::clone(last),
            },
        }
    }
}

impl<E> Error<E> {
    /// The failure behind this error, if any (none for [`Error::Stopped`]).
    pub fn failure(&self) -> Option<&Failure<E>> {
        match self {
            Error::Stopped => None,
            Error::Failed(f) | Error::GaveUp { last: f, .. } => Some(f),
        }
    }
}

/// Logs a driver event when the `tracing` feature is on; compiles to nothing otherwise.
macro_rules! event {
    ($level:ident, $($arg:tt)*) => {{
        #[cfg(feature = "tracing")]
        tracing::$level!(target: "redial", $($arg)*);
    }};
}
pub(crate) use event;
