//! The seam between the driver and an async runtime.

use core::future::Future;
use core::time::Duration;

use super::error::SpawnError;

/// What the driver needs from an async runtime: spawn the service's task, and sleep.
///
/// Implemented by [`Tokio`][tokio-rt], [`Smol`][smol-rt] and [`AsyncStd`][async-std-rt]
/// (each with its feature). Implement it yourself to run the driver on another
/// executor.
///
// An adapter's link goes to the adapter when its feature is on, to docs.rs when not.
#[cfg_attr(feature = "tokio", doc = "[tokio-rt]: crate::tokio::Tokio")]
#[cfg_attr(feature = "smol", doc = "[smol-rt]: crate::smol::Smol")]
#[cfg_attr(
    feature = "async-std",
    doc = "[async-std-rt]: crate::async_std::AsyncStd"
)]
#[cfg_attr(
    not(feature = "tokio"),
    doc = "[tokio-rt]: https://docs.rs/redial/latest/redial/tokio/struct.Tokio.html"
)]
#[cfg_attr(
    not(feature = "smol"),
    doc = "[smol-rt]: https://docs.rs/redial/latest/redial/smol/struct.Smol.html"
)]
#[cfg_attr(
    not(feature = "async-std"),
    doc = "[async-std-rt]: https://docs.rs/redial/latest/redial/async_std/struct.AsyncStd.html"
)]
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
