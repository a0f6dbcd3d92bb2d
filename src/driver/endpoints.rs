//! [`Endpoints`]: a list of addresses tried in turn, for a connector that fails over.

use core::fmt;
use std::sync::{Arc, Mutex};
use std::vec::Vec;

use super::connection::ConnectContext;

/// A list of endpoints (addresses, URLs, anything) tried in turn: the first is
/// the primary, the others its replicas.
///
/// The rule, for each attempt the service starts (see [`Endpoints::pick`]):
///
/// * the first attempt, and the first attempt after a connection was made (and
///   lost), go to the **primary**;
/// * each failed attempt moves on to the **next** endpoint, wrapping around after
///   the last.
///
/// So when the primary dies, the service is on a replica after one failed retry
/// (the retry that finds the primary gone), stays there while that connection
/// lives, and comes back to the primary at its next reconnection, falling over
/// again if the primary is still down. Every attempt still waits out the retry
/// policy's delay: endpoints do not make the service retry faster.
///
/// It is cheap to clone (clones share their position) and `Send + Sync`, so it
/// can be moved into a connector made with
/// [`ClientService::builder_with_context`](super::ClientService::builder_with_context):
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use redial::driver::{ConnectContext, Endpoints};
///
/// let endpoints = Endpoints::new(["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"])?;
/// let service = redial::tokio::builder_with_context(move |ctx: ConnectContext| {
///     let addr = endpoints.pick(&ctx);
///     async move {
///         let tcp = tokio::net::TcpStream::connect(addr).await?;
///         Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
///     }
/// })
/// .start()?;
/// # drop(service); Ok(()) }
/// ```
pub struct Endpoints<A> {
    list: Arc<[A]>,
    position: Arc<Mutex<Position>>,
}

#[derive(Debug, Default)]
struct Position {
    /// The endpoint the last attempt went to.
    index: usize,
    /// The service's connection count at the last attempt; `None` before the first.
    connections: Option<u64>,
}

/// [`Endpoints::new`] was given no endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an endpoint list needs at least one endpoint")]
pub struct NoEndpoints;

impl<A> Clone for Endpoints<A> {
    fn clone(&self) -> Self {
        Endpoints {
            list: Arc::clone(&self.list),
            position: Arc::clone(&self.position),
        }
    }
}

impl<A: fmt::Debug> fmt::Debug for Endpoints<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("list", &self.list)
            .field("current", &self.lock().index)
            .finish()
    }
}

impl<A> Endpoints<A> {
    /// The endpoints, primary first. Fails if there is none.
    pub fn new(endpoints: impl IntoIterator<Item = A>) -> Result<Endpoints<A>, NoEndpoints> {
        let list: Vec<A> = endpoints.into_iter().collect();
        if list.is_empty() {
            return Err(NoEndpoints);
        }
        Ok(Endpoints {
            list: list.into(),
            position: Arc::new(Mutex::new(Position::default())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Position> {
        // Plain data: a poisoned lock is still consistent.
        self.position.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint for the attempt `context` describes, by the rule above. Call it
    /// once per attempt, from the connector.
    pub fn pick(&self, context: &ConnectContext) -> A
    where
        A: Clone,
    {
        let mut position = self.lock();
        position.index = match position.connections {
            // The first attempt, or the first since a connection was made: the primary.
            None => 0,
            Some(seen) if seen != context.connections => 0,
            // Still failing: the next one.
            Some(_) => (position.index + 1) % self.list.len(),
        };
        position.connections = Some(context.connections);
        self.list[position.index].clone()
    }

    /// The endpoints, primary first.
    pub fn as_slice(&self) -> &[A] {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AttemptId;
    use std::string::ToString;

    fn ctx(attempt: u64, consecutive_failures: u32, connections: u64) -> ConnectContext {
        ConnectContext {
            attempt: AttemptId::from_raw(attempt),
            consecutive_failures,
            connections,
        }
    }

    #[test]
    fn failures_move_on_and_a_connection_returns_to_the_primary() {
        let endpoints = Endpoints::new(["a", "b", "c"]).unwrap();
        assert_eq!(endpoints.pick(&ctx(0, 0, 0)), "a");
        assert_eq!(endpoints.pick(&ctx(1, 1, 0)), "b");
        assert_eq!(endpoints.pick(&ctx(2, 2, 0)), "c");
        assert_eq!(endpoints.pick(&ctx(3, 3, 0)), "a", "wraps around");
        assert_eq!(endpoints.pick(&ctx(4, 4, 0)), "b");
        // Attempt 4 connected (to b), then was lost: the next attempt is the primary.
        assert_eq!(endpoints.pick(&ctx(5, 1, 1)), "a");
        assert_eq!(endpoints.pick(&ctx(6, 2, 1)), "b");
        // Clones share the position.
        assert_eq!(endpoints.clone().pick(&ctx(7, 3, 1)), "c");
    }

    #[test]
    fn an_empty_list_is_refused() {
        assert_eq!(Endpoints::<&str>::new([]).unwrap_err(), NoEndpoints);
        assert_eq!(
            NoEndpoints.to_string(),
            "an endpoint list needs at least one endpoint"
        );
    }
}
