//! [`Endpoints`]: a list of addresses tried in turn, for a connector that fails over.

use core::fmt;
use core::time::Duration;
use std::sync::{Arc, Mutex, MutexGuard};
use std::vec::Vec;

use super::connection::ConnectContext;
use crate::policy::RetryPolicy;

/// A list of endpoints (addresses, URLs, anything) tried in turn: the first is
/// the primary, the others its replicas.
///
/// Give it to [`ClientService::builder_with_endpoints`](super::ClientService::builder_with_endpoints)
/// (or an adapter's `builder_with_endpoints`, e.g.
/// [`redial::tokio::builder_with_endpoints`][tokio-builder-with-endpoints]):
/// the service then tries the list the way libpq tries a multi-host connection
/// string, in **rounds**:
///
/// * a round tries the endpoints in turn, primary first, **at once**: an attempt
///   that fails moves on to the next endpoint with no retry delay, so failing
///   over to a live replica costs a connect (plus the prepare timeout, for a
///   primary that accepts and then hangs), not a retry delay;
/// * the retry policy's delay applies **between rounds**: when the last endpoint
///   of a round fails, the policy is asked for its delay with the number of
///   failed rounds in a row (where a plain service passes the number of failed
///   attempts), and gives up, or not, exactly as it would;
/// * the service goes back to the **primary** at the start of every round and
///   after a connection ends (lost, or closed by a stop). A loss with no failure
///   counted before it (the connection had become healthy, see
///   [`Builder::reset_backoff_after`](super::Builder::reset_backoff_after), or
///   it was made at the first attempt) starts a new round at once; any other
///   loss (a flap in a run of failures) counts as a failed round, so the
///   policy's delay applies, and so does every loss with
///   `reset_backoff_after(None)` (every connection is healthy at once there: a
///   peer that accepts and drops must not be retried with no delay). After the
///   service gave up, its next [`start`](super::ClientService::start) begins at
///   the primary;
/// * only a **failed** attempt moves the rotation: an attempt cancelled by
///   [`stop`](super::ClientService::stop) does not, so the next `start` tries the
///   same endpoint again.
///
/// Every service keeps its own position: services built with clones of one list
/// each start on the primary and rotate on their own failures. Every attempt
/// names its endpoint, by its index in this list: in
/// [`ConnectContext::endpoint`](super::ConnectContext::endpoint) and in
/// [`Event::AttemptStarted`](super::Event::AttemptStarted) (get the endpoint
/// with [`Endpoints::get`]).
///
/// It is cheap to clone and `Send + Sync`.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use redial::driver::{ConnectContext, Endpoints};
///
/// let endpoints = Endpoints::new(["10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"])?;
/// let service = redial::tokio::builder_with_endpoints(endpoints, |addr, _: ConnectContext| async move {
///     let tcp = tokio::net::TcpStream::connect(addr).await?;
///     Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
/// })
/// .start()?;
/// # drop(service); Ok(()) }
/// ```
///
#[cfg_attr(
    feature = "tokio",
    doc = "[tokio-builder-with-endpoints]: crate::tokio::builder_with_endpoints"
)]
#[cfg_attr(
    not(feature = "tokio"),
    doc = "[tokio-builder-with-endpoints]: https://docs.rs/redial/latest/redial/tokio/fn.builder_with_endpoints.html"
)]
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

    fn lock(&self) -> MutexGuard<'_, Position> {
        // Plain data: a poisoned lock is still consistent.
        self.position.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint for the attempt `context` describes, for a connector made with
    /// [`ClientService::builder_with_context`](super::ClientService::builder_with_context).
    /// Call it once per attempt, from the connector.
    ///
    /// Its rule is the old one: the first attempt, and the first attempt after a
    /// connection was made, go to the primary; any other attempt moves on to the
    /// next endpoint. It can only guess from `context`, so it is wrong in ways
    /// [`ClientService::builder_with_endpoints`](super::ClientService::builder_with_endpoints)
    /// is not: an attempt cancelled by `stop` moves it on as if it failed, clones
    /// share one position (a second service's first attempt may go to a
    /// replica), and every attempt still waits out the retry delay.
    #[deprecated(
        since = "0.1.0",
        note = "use `ClientService::builder_with_endpoints`: per-service rotation, rounds without retry delays, cancelled attempts not counted"
    )]
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

    /// The endpoint at `index` (as named by [`ConnectContext::endpoint`] and
    /// [`Event::AttemptStarted`](super::Event::AttemptStarted)), if there is one.
    pub fn get(&self, index: usize) -> Option<&A> {
        self.list.get(index)
    }
}

/// One service's position in its endpoint list, shared by its task (which moves
/// it on the facts it performs) and its [`RoundPolicy`] (which reads it when the
/// machine asks for a delay, before the facts of that input are performed).
#[derive(Debug)]
pub(crate) struct Rotation {
    len: usize,
    /// The endpoint of the current attempt, or of the next one.
    index: usize,
    /// Failed rounds in a row (what the wrapped policy is asked with).
    rounds: u32,
    /// Between a `Connected` fact and its `Lost` fact: a delay asked for then is
    /// for the loss of that connection.
    connected: bool,
}

pub(crate) type SharedRotation = Arc<Mutex<Rotation>>;

fn lock(rotation: &SharedRotation) -> MutexGuard<'_, Rotation> {
    // Plain data: a poisoned lock is still consistent.
    rotation.lock().unwrap_or_else(|e| e.into_inner())
}

impl Rotation {
    pub(crate) fn shared(len: usize) -> SharedRotation {
        Arc::new(Mutex::new(Rotation {
            len: len.max(1),
            index: 0,
            rounds: 0,
            connected: false,
        }))
    }

    /// The endpoint for the attempt starting now. After a connection (lost, or
    /// closed by a stop), a new round: the primary.
    pub(crate) fn current(rotation: &SharedRotation) -> usize {
        let mut r = lock(rotation);
        if r.connected {
            r.connected = false;
            r.index = 0;
        }
        r.index
    }

    /// The attempt failed (never called for a cancelled one): the next endpoint.
    pub(crate) fn failed(rotation: &SharedRotation) {
        let mut r = lock(rotation);
        r.index = (r.index + 1) % r.len;
    }

    /// A connection was made.
    pub(crate) fn connected(rotation: &SharedRotation) {
        lock(rotation).connected = true;
    }

    /// The connection was lost: back to the primary.
    pub(crate) fn lost(rotation: &SharedRotation) {
        let mut r = lock(rotation);
        r.connected = false;
        r.index = 0;
    }

    /// The service gave up: its next start begins at the primary.
    pub(crate) fn gave_up(rotation: &SharedRotation) {
        let mut r = lock(rotation);
        r.index = 0;
        r.rounds = 0;
    }
}

/// The retry policy of a service with endpoints: no delay between the attempts of
/// a round, the wrapped policy's delay (asked with the count of failed rounds in a
/// row) at the end of a round. See [`Endpoints`].
pub(crate) struct RoundPolicy<P> {
    pub(crate) inner: P,
    pub(crate) rotation: SharedRotation,
    /// Whether the loss of a healthy connection starts a new round at once: only
    /// if health means something (`reset_backoff_after` is set). Without it every
    /// connection counts as healthy, and a peer that accepts and drops would be
    /// hammered with no delay at all.
    pub(crate) at_once_after_loss: bool,
}

impl<P: RetryPolicy> RetryPolicy for RoundPolicy<P> {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        let rounds = {
            let mut r = lock(&self.rotation);
            if consecutive_failures <= 1 {
                // A new run of failures.
                r.rounds = 0;
            }
            let round_over = if r.connected {
                // A loss: a healthy connection's (the count was reset) starts a
                // new round at once; a flap's ends the round.
                consecutive_failures > 1 || !self.at_once_after_loss
            } else {
                // A failed attempt: the round is over after the last endpoint.
                r.index + 1 >= r.len
            };
            if !round_over {
                return Some(Duration::ZERO);
            }
            r.rounds = r.rounds.saturating_add(1);
            r.rounds
        };
        // Asked with no lock held: a panicking policy poisons nothing.
        self.inner.next_delay(rounds)
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
            endpoint: None,
        }
    }

    #[test]
    #[allow(deprecated)]
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
