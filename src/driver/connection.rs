//! What a connector returns.

use core::future::Future;

use super::events::DriverOutput;
use crate::ids::AttemptId;

/// What a connector is told about the attempt it starts; see
/// [`ClientService::builder_with_context`](super::ClientService::builder_with_context).
///
/// With it a connector can re-resolve a name on every attempt, or pick its own
/// address. For a primary and its replicas, prefer
/// [`ClientService::builder_with_endpoints`](super::ClientService::builder_with_endpoints),
/// which tries them in rounds and names each attempt's endpoint in
/// [`endpoint`](ConnectContext::endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ConnectContext {
    /// This attempt (it names the connection, if it makes one).
    pub attempt: AttemptId,
    /// Consecutive failures before this attempt (what the retry policy was last
    /// asked about): 0 for a first attempt; after a loss it counts the loss too.
    pub consecutive_failures: u32,
    /// Connections the service has made so far. It grows between two attempts
    /// exactly when a connection was made (and then lost) in between.
    pub connections: u64,
    /// For a service built with
    /// [`builder_with_endpoints`](super::ClientService::builder_with_endpoints):
    /// the index of the endpoint this attempt goes to (see
    /// [`Endpoints::get`](super::Endpoints::get)); `None` for other services.
    pub endpoint: Option<usize>,
}

/// A connection as a connector returns it: a shareable handle, and a driver future
/// that runs the connection and ends when it is lost.
///
/// Implemented for every `(handle, driver future)` pair, which covers
/// tokio-postgres's `(Client, Connection)` (proven against a real server in the
/// repository's tests) and the pairs made by [`stream`](super::stream). Other
/// clients of that shape (hyper's and h2's handshakes) are expected to fit, but
/// are not tested here.
pub trait Connection: Send + 'static {
    /// What waiters receive: a clone per waiter.
    type Handle: Clone + Send + Sync + 'static;
    /// Runs the connection; it ends when the connection is lost, with `()` or a
    /// `Result` whose error is kept as the reason for the loss
    /// ([`Loss`](super::Loss)). The service drops it to close the connection.
    type Driver: Future<Output: DriverOutput> + Send + 'static;

    /// Splits the connection into its handle and its driver.
    fn into_parts(self) -> (Self::Handle, Self::Driver);
}

impl<H, D> Connection for (H, D)
where
    H: Clone + Send + Sync + 'static,
    D: Future<Output: DriverOutput> + Send + 'static,
{
    type Handle = H;
    type Driver = D;

    fn into_parts(self) -> (H, D) {
        self
    }
}
