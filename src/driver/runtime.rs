//! The seam between the driver and an async runtime.

use core::future::Future;
use core::time::Duration;

use super::error::SpawnError;

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
    /// notices: it ends with [`Ended::RuntimeGone`](super::Ended::RuntimeGone), and
    /// every pending and later request fails at once.
    fn spawn<F>(&self, task: F) -> Result<(), SpawnError>
    where
        F: Future<Output = ()> + Send + 'static;

    /// A future that completes after `delay`. The driver never asks for a zero delay.
    ///
    /// Besides the service's task, the handles call it for a waiter's time limit
    /// ([`WhenConnected::within`](super::WhenConnected::within)), on whatever
    /// thread sets the limit, and the future is polled there: it must work outside
    /// the runtime's own threads. (Tokio's `sleep` does not; the driver enters the
    /// Tokio runtime the service was built in for it.)
    fn sleep(&self, delay: Duration) -> Self::Sleep;
}
