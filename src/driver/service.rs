//! The user-facing side: the [`Builder`], the [`ClientService`] handle, and the
//! futures its methods return.
//!
//! A handle never runs the machine itself: each method pushes a request into the
//! shared mailbox and wakes the service's task, which performs requests in the
//! order they were made (see `task.rs`). Requests that repeat coalesce in the
//! mailbox (see `shared.rs`), so calling a method in a tight loop keeps its memory
//! flat. Reading methods (`state`, `counters`, …) read the status the task
//! published after its last step.

use core::fmt;
use core::future::Future;
use core::num::NonZeroU32;
use core::pin::Pin;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll};
use core::time::Duration;
use std::boxed::Box;
use std::string::String;
use std::sync::Arc;

use futures_channel::oneshot;

use super::connection::{ConnectContext, Connection};
use super::endpoints::{Endpoints, Rotation, RoundPolicy};
use super::error::{BuildError, Ended, Error};
use super::events::{DriverOutput, Events, Loss};
use super::runtime::Runtime;
use super::shared::{Answer, Command, Shared, SleepFn, StopRx};
use super::task::{
    BoxFuture, ConnectFn, DynPolicy, FatalFn, Hooks, PrepareFn, ProbeFn, Task, TaskFuture,
};
use super::watch::{StateWatch, Watch};
use crate::actions::Failure;
use crate::ids::AttemptId;
use crate::machine::{Config, Counters, Machine, State};
use crate::policy::{Backoff, RetryPolicy};

/// Builds a [`ClientService`]. Get one from [`ClientService::builder`] or an
/// adapter's `builder` function (e.g. [`redial::tokio::builder`][tokio-builder]).
///
#[cfg_attr(feature = "tokio", doc = "[tokio-builder]: crate::tokio::builder")]
#[cfg_attr(
    not(feature = "tokio"),
    doc = "[tokio-builder]: https://docs.rs/redial/latest/redial/tokio/fn.builder.html"
)]
#[must_use = "a builder does nothing until `build` or `start`"]
pub struct Builder<R, H, E> {
    runtime: R,
    connect: ConnectFn<H, E>,
    prepare: Option<PrepareFn<H, E>>,
    probe: Option<ProbeFn<H, E>>,
    fatal_if: Option<FatalFn<E>>,
    policy: Option<DynPolicy>,
    config: Config,
    name: Option<String>,
    events_capacity: usize,
    budget: Option<crate::budget::Budget>,
    /// The length of the endpoint list, for a service with endpoints.
    endpoints: Option<usize>,
}

/// Events kept for a subscriber that has not read them yet.
const EVENTS_CAPACITY: usize = 64;

/// How long a connection must stay up before the service resets its backoff, unless
/// [`Builder::reset_backoff_after`] says otherwise; see there for why.
pub const DEFAULT_RESET_BACKOFF_AFTER: Duration = Duration::from_secs(5);

/// The machine's options of a service built with the defaults, shared by all of them.
static DEFAULT_OPTIONS: crate::machine::Extra = crate::machine::Extra::new(
    Config::new().with_reset_backoff_after(Some(DEFAULT_RESET_BACKOFF_AFTER)),
);

impl<R, H, E> fmt::Debug for Builder<R, H, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("prepare", &self.prepare.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<R, H, E> Builder<R, H, E>
where
    R: Runtime,
    H: Clone + Send + Sync + 'static,
    E: core::fmt::Display + Send + Sync + 'static,
{
    /// Names the service: its `tracing` events are emitted inside a span
    /// `redial{service = name}`, and its `Debug` shows the name. Useful when a
    /// program keeps several services (`"redis-primary"`, `"postgres"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How many events a subscriber of [`ClientService::events`] may fall behind
    /// before it loses the oldest (and is told so with [`Event::Missed`](super::Event::Missed)). Default
    /// 64. Until the service is first subscribed to, it keeps at most this many of
    /// its events (the oldest dropped) for the first subscriber; the broadcast ring
    /// is made by the first subscription.
    pub fn events_capacity(mut self, capacity: usize) -> Self {
        self.events_capacity = capacity.max(1);
        self
    }

    /// Sets the retry policy (default: [`Backoff::default`], Twisted's backoff with
    /// a random jitter seed). Any [`RetryPolicy`] works, a closure too, e.g.
    /// `|failures| Duration::from_millis(100) * failures.min(50)` (100 ms more per
    /// consecutive failure, at most 5 s). Prefer a policy whose delays grow: one
    /// that retries at once (`|_| Duration::ZERO`) hammers a peer that keeps failing.
    ///
    /// The policy runs in the service's task. If it panics, the service ends with
    /// [`Ended::PolicyPanicked`].
    pub fn policy<P: RetryPolicy + Send + 'static>(mut self, policy: P) -> Self {
        self.policy = Some(DynPolicy(Box::new(policy)));
        self
    }

    /// Counts every attempt of this service against `budget`, a
    /// [`Budget`](crate::Budget) shared with other services: the first after a
    /// start, every retry, one made by [`reconnect_now`](ClientService::reconnect_now),
    /// the first after a stop and a start. Together, the services sharing it never
    /// make attempts faster than its rate (after its burst).
    ///
    /// It wraps the retry policy (whichever is set, before or after this call) and
    /// the connector, one slot per attempt: a retry's delay (as armed and as
    /// [`Event::RetryScheduled`](super::Event::RetryScheduled) reports it) includes
    /// its wait for the budget; any other attempt waits for its slot after it
    /// starts, before the connector is called, and a
    /// [`connect_timeout`](Builder::connect_timeout) counts that wait. See
    /// [the budget's docs](crate::budget#what-it-covers). Do not also wrap the
    /// policy with [`Budget::limit`](crate::Budget::limit): retries would count twice.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// // At most 50 attempts a second (10 at once) for every service of the process.
    /// let budget = redial::Budget::new(50.0, 10)?;
    /// let services = (0..1000)
    ///     .map(|_| {
    ///         redial::tokio::builder(|| async {
    ///             let tcp = tokio::net::TcpStream::connect("127.0.0.1:6379").await?;
    ///             Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
    ///         })
    ///         .budget(budget.clone())
    ///         .start()
    ///     })
    ///     .collect::<Result<Vec<_>, _>>()?;
    /// # drop(services); Ok(()) }
    /// ```
    pub fn budget(mut self, budget: crate::budget::Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Runs `prepare` on each new connection (with a clone of its handle) before
    /// anyone is told it exists. An error (or a panic) closes the connection and
    /// counts as a failed attempt (it is retried).
    ///
    /// The hook's error type is the connector's `E`, so a hook ending in `Ok(())`
    /// needs no annotation. For a hook whose error is another type that converts
    /// into `E`, use [`prepare_err_into`](Builder::prepare_err_into).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use tokio::io::AsyncWriteExt;
    ///
    /// let service = redial::tokio::builder(|| async {
    ///     let tcp = tokio::net::TcpStream::connect("127.0.0.1:7000").await?;
    ///     Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
    /// })
    /// .prepare(|conn| async move {
    ///     conn.lock().await?.write_all(b"HELLO\n").await?;
    ///     Ok(())
    /// })
    /// .start()?;
    /// # drop(service); Ok(()) }
    /// ```
    pub fn prepare<P, Fut>(mut self, mut prepare: P) -> Self
    where
        P: FnMut(H) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.prepare = Some(Box::new(move |handle| -> BoxFuture<Result<(), E>> {
            Box::pin(prepare(handle))
        }));
        self.config.prepare = true;
        self
    }

    /// As [`prepare`](Builder::prepare), for a hook whose error type `PE` is not the
    /// connector's `E` but converts into it (`PE: Into<E>`): its error is converted
    /// with `Into` and reaches waiters as
    /// [`Failure::Prepare`](crate::Failure::Prepare).
    ///
    /// (`prepare` itself keeps the exact `E`: with a free error type, a hook whose
    /// body ends in a plain `Ok(())` could not have its error type inferred.)
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    ///
    /// /// What the prepare step reports: its own error type.
    /// #[derive(Debug)]
    /// struct WrongServer(String);
    ///
    /// impl From<WrongServer> for std::io::Error {
    ///     fn from(e: WrongServer) -> Self {
    ///         std::io::Error::other(format!("not the server we want: {}", e.0))
    ///     }
    /// }
    ///
    /// let service = redial::tokio::builder(|| async {
    ///     let tcp = tokio::net::TcpStream::connect("127.0.0.1:7000").await?;
    ///     Ok::<_, std::io::Error>((Arc::new(tcp.peer_addr()?), std::future::pending::<()>()))
    /// })
    /// .prepare_err_into(|peer: Arc<std::net::SocketAddr>| async move {
    ///     if peer.port() == 7000 {
    ///         Ok(())
    ///     } else {
    ///         Err(WrongServer(peer.to_string()))
    ///     }
    /// })
    /// .start()?;
    /// # drop(service); Ok(()) }
    /// ```
    pub fn prepare_err_into<P, Fut, PE>(mut self, mut prepare: P) -> Self
    where
        P: FnMut(H) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), PE>> + Send + 'static,
        PE: Into<E> + 'static,
    {
        self.prepare = Some(Box::new(move |handle| -> BoxFuture<Result<(), E>> {
            let prepared = prepare(handle);
            Box::pin(async move { prepared.await.map_err(Into::into) })
        }));
        self.config.prepare = true;
        self
    }

    /// Checks that the connection is alive every `interval` while it is up, with
    /// `probe` (a `PING`, a `SELECT 1`, a WebSocket ping: any request that the peer
    /// answers only if it is really there), giving each probe `timeout` to answer.
    /// A probe that fails, panics or does not answer in time closes the connection:
    /// a loss ([`Loss::ProbeFailed`], [`Loss::ProbeTimedOut`]), and the service
    /// reconnects. This finds the connections that look up but are not: a peer that
    /// vanished without a reset (a pulled cable, a frozen process, a NAT mapping
    /// dropped), which would otherwise stay "connected" until the operating system
    /// gives up on it, often many minutes later. A connection is declared dead at
    /// most `interval + timeout` after it stopped answering.
    ///
    /// # The first check
    ///
    /// Without a [`prepare`](Builder::prepare) step, the probe is also each new
    /// connection's first check: it runs once before anyone is told the connection
    /// exists, and a waiter gets the connection only once it answered. A connection
    /// the kernel completed while nobody serves it (a frozen server, a full accept
    /// queue) is never handed out: its first check times out, which is a failed
    /// attempt ([`Failure::PrepareTimeout`](crate::Failure::PrepareTimeout), or
    /// [`Failure::Prepare`](crate::Failure::Prepare) with the probe's error), and
    /// the service retries. The first check has the probe's `timeout` (unless
    /// [`prepare_timeout`](Builder::prepare_timeout) says otherwise). With a
    /// prepare step, the prepare step is the first check: make it one request
    /// that the peer answers only if it serves (it need not repeat the probe).
    ///
    /// # Inbound activity is liveness
    ///
    /// With [`stream`](super::stream) and [`messages`](super::messages) (and the
    /// runtimes' `stream`), anything received counts as an answer: a probe runs
    /// only after an `interval` in which the connection received nothing, and
    /// anything received while a probe is out answers it. So a busy connection is
    /// not probed at all, and a slow answer to your own request keeps it alive. A
    /// connection that stopped receiving is probed `interval` after the last thing
    /// it received, and found dead `timeout` later (the adapters stamp what they
    /// receive with the time; the service reads the stamp when a probe timer
    /// fires).
    ///
    /// With `stream`, the probe needs the stream: while your guard holds it, the
    /// probe waits, and **that wait does not count against its timeout**: a probe
    /// that only got the stream during its timeout, or still waits behind a guard
    /// that sent nothing unanswered (a reader waiting for the server's next push),
    /// is given another cycle. A request of yours that waits for its answer is
    /// what the probe would have been: when the probe has waited behind it for two
    /// timeouts in a row with nothing received, the peer is dead (found
    /// `interval + 2 × timeout` after the last thing received: one timeout more
    /// than an idle connection, so that a peer that answers your request in
    /// exactly `interval + timeout` is never taken for dead). A guard that
    /// holds the stream idle for ever keeps a frozen peer unfound: hold it only
    /// for an exchange, or let TCP keepalive or the protocol's own heartbeat cover
    /// it.
    ///
    /// A `(handle, driver)` pair of another client (the `redis` crate's
    /// multiplexed connection, tokio-postgres) shows the service none of its
    /// traffic: its probe must answer on its own, within `timeout`, even while a
    /// blocking command (`BLPOP`, a slow query) holds the connection, which a
    /// request sent behind it cannot. See
    /// *Probing next to blocking commands* below.
    ///
    /// # Probing next to blocking commands
    ///
    /// A command that blocks the connection (Redis `BLPOP`, a long PostgreSQL
    /// query) holds back every request sent after it on that connection, the
    /// probe's too: a `PING` behind a 20 s `BLPOP` answers after 20 s, and a 1 s
    /// probe timeout would drop a healthy connection. Probe the server on a
    /// connection of its own instead: open it in the connector with the main one,
    /// keep it in the handle, and run both drivers as the connection's one driver
    /// (the first to end ends both). The probe then answers within a round trip
    /// whatever the main connection waits for, and a frozen server is still found
    /// within `interval + timeout`, idle or with a command waiting: the loss
    /// closes both, and the waiting command fails at once.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use redis::aio::MultiplexedConnection;
    ///
    /// /// The connection the application uses, and the one the probe uses.
    /// #[derive(Clone)]
    /// struct Redis {
    ///     main: MultiplexedConnection,
    ///     probe: MultiplexedConnection,
    /// }
    ///
    /// async fn open(
    /// ) -> redis::RedisResult<(MultiplexedConnection, impl std::future::Future<Output = ()>)> {
    ///     let tcp = tokio::net::TcpStream::connect("127.0.0.1:6379").await?;
    ///     static INFO: std::sync::LazyLock<redis::RedisConnectionInfo> =
    ///         std::sync::LazyLock::new(Default::default);
    ///     MultiplexedConnection::new(&INFO, tcp).await
    /// }
    ///
    /// let service = redial::tokio::builder(|| async {
    ///     let (main, main_driver) = open().await?;
    ///     let (probe, probe_driver) = open().await?;
    ///     // One driver for both: the first to end ends the connection.
    ///     let driver = async move {
    ///         futures_util::future::select(Box::pin(main_driver), Box::pin(probe_driver)).await;
    ///     };
    ///     Ok::<_, redis::RedisError>((Redis { main, probe }, driver))
    /// })
    /// .probe(Duration::from_secs(1), Duration::from_secs(1), |redis: Redis| async move {
    ///     let mut probe = redis.probe;
    ///     redis::cmd("PING").exec_async(&mut probe).await
    /// })
    /// .start()?;
    ///
    /// let mut main = service.when_connected().await?.main;
    /// // Blocks this connection for up to 20 s; the probe is not held back.
    /// let _: Option<(String, String)> =
    ///     redis::cmd("BLPOP").arg("jobs").arg(20).query_async(&mut main).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// let service = redial::tokio::builder(|| async {
    ///     let tcp = tokio::net::TcpStream::connect("127.0.0.1:6379").await?;
    ///     Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
    /// })
    /// .probe(Duration::from_secs(10), Duration::from_secs(2), |conn| async move {
    ///     let mut io = conn.lock().await?;
    ///     io.write_all(b"PING\r\n").await?;
    ///     let mut pong = [0u8; 7];
    ///     io.read_exact(&mut pong).await?; // "+PONG\r\n"
    ///     Ok(())
    /// })
    /// .start()?;
    /// # drop(service); Ok(()) }
    /// ```
    pub fn probe<P, Fut>(mut self, interval: Duration, timeout: Duration, mut probe: P) -> Self
    where
        P: FnMut(H) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.probe = Some(Box::new(move |handle| -> BoxFuture<Result<(), E>> {
            Box::pin(probe(handle))
        }));
        self.config.probe = Some(crate::machine::ProbeConfig::new(interval, timeout));
        self
    }

    /// As [`probe`](Builder::probe), for a probe whose error type `PE` is not the
    /// connector's `E` but converts into it (`PE: Into<E>`), as
    /// [`prepare_err_into`](Builder::prepare_err_into) is for the prepare step: the
    /// error is converted with `Into`, and a failed probe's loss
    /// ([`Loss::ProbeFailed`]) names it.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    ///
    /// /// What the probe reports: its own error type.
    /// #[derive(Debug)]
    /// enum ProbeError {
    ///     Io(std::io::Error),
    ///     NotPong(String),
    /// }
    ///
    /// impl From<ProbeError> for std::io::Error {
    ///     fn from(e: ProbeError) -> Self {
    ///         match e {
    ///             ProbeError::Io(e) => e,
    ///             ProbeError::NotPong(line) => std::io::Error::other(format!("not a pong: {line}")),
    ///         }
    ///     }
    /// }
    ///
    /// let service = redial::tokio::builder(|| async {
    ///     let tcp = tokio::net::TcpStream::connect("127.0.0.1:7000").await?;
    ///     Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
    /// })
    /// .probe_err_into(Duration::from_secs(10), Duration::from_secs(2), |conn| async move {
    ///     let mut io = conn.lock().await.map_err(ProbeError::Io)?;
    ///     io.write_all(b"PING\n").await.map_err(ProbeError::Io)?;
    ///     let mut line = String::new();
    ///     BufReader::new(&mut io).read_line(&mut line).await.map_err(ProbeError::Io)?;
    ///     match line.trim_end() {
    ///         "PONG" => Ok(()),
    ///         other => Err(ProbeError::NotPong(other.to_owned())),
    ///     }
    /// })
    /// .start()?;
    /// # drop(service); Ok(()) }
    /// ```
    pub fn probe_err_into<P, Fut, PE>(
        mut self,
        interval: Duration,
        timeout: Duration,
        mut probe: P,
    ) -> Self
    where
        P: FnMut(H) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), PE>> + Send + 'static,
        PE: Into<E> + 'static,
    {
        self.probe = Some(Box::new(move |handle| -> BoxFuture<Result<(), E>> {
            let probed = probe(handle);
            Box::pin(async move { probed.await.map_err(Into::into) })
        }));
        self.config.probe = Some(crate::machine::ProbeConfig::new(interval, timeout));
        self
    }

    /// Says which failures retrying will not fix (a wrong password, a name that
    /// does not resolve, a certificate the client rejects): for a connect or
    /// prepare error for which `fatal` returns `true`, the service gives up at once
    /// (or after [`give_up_after_fatal`](Builder::give_up_after_fatal) such
    /// failures in a row) instead of burning its whole backoff schedule while
    /// callers wait: every waiter gets that failure
    /// ([`Error::GaveUp`] with `fatal: true`), the service is stopped until
    /// started again, and [`Event::GaveUp`](super::Event::GaveUp) says why.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io;
    /// let service = redial::tokio::builder(|| async {
    ///     let tcp = tokio::net::TcpStream::connect("db.example:5432").await?;
    ///     Ok::<_, io::Error>(redial::tokio::stream(tcp))
    /// })
    /// // A name that does not resolve will not resolve on the next try either.
    /// .fatal_if(|e: &io::Error| e.kind() == io::ErrorKind::NotFound)
    /// .start()?;
    /// # drop(service); Ok(()) }
    /// ```
    pub fn fatal_if<F>(mut self, fatal: F) -> Self
    where
        F: FnMut(&E) -> bool + Send + 'static,
    {
        self.fatal_if = Some(Box::new(fatal));
        self
    }

    /// With [`fatal_if`](Builder::fatal_if): give up only after `n` fatal failures
    /// in a row (default 1: at once). A failure that is not fatal, or a
    /// connection, starts the count again.
    pub fn give_up_after_fatal(mut self, n: NonZeroU32) -> Self {
        self.config.give_up_after_fatal = n;
        self
    }

    /// Cancels an attempt that takes longer than `timeout` (a failed attempt,
    /// [`Failure::ConnectTimeout`](crate::Failure::ConnectTimeout)); `None`, the
    /// default: no connect timeout. Like every timeout and delay setter here and on
    /// [`Config`](crate::Config), it takes an `Option`: `None` turns it off.
    pub fn connect_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Closes a connection whose prepare hook takes longer than `timeout` (a failed
    /// attempt, [`Failure::PrepareTimeout`](crate::Failure::PrepareTimeout)). Needs a
    /// prepare hook. `None`, the default: no prepare timeout.
    pub fn prepare_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.prepare_timeout = timeout;
        self
    }

    /// Resets the failure counter (and so the backoff) only once a connection has
    /// stayed up for `delay`; `None` resets it as soon as a connection is made, as
    /// Twisted does (and as the bare [`Machine`] does by default).
    ///
    /// The service's default is [`DEFAULT_RESET_BACKOFF_AFTER`] (5 s): a peer that
    /// accepts and then drops the connection at once (a crashing server behind a
    /// proxy, a full accept queue, a "too many clients" greeting) would otherwise
    /// reset the backoff on every connection and be hammered at the policy's first
    /// delay for ever; with it, such flaps keep counting as failures and the delays
    /// grow. A connection that stays up 5 s is very likely healthy, and 5 s is short
    /// next to a typical backoff cap, so a real recovery resets quickly.
    pub fn reset_backoff_after(mut self, delay: Option<Duration>) -> Self {
        self.config.reset_backoff_after = delay;
        self
    }

    /// Builds the service and spawns its task, without starting it
    /// ([`State::Init`]). Fails if the configuration makes no sense (a zero timeout,
    /// a prepare timeout without a prepare hook), or if the runtime cannot spawn the
    /// task (outside a Tokio runtime, for Tokio).
    pub fn build(self) -> Result<ClientService<H, E>, BuildError> {
        let policy = self
            .policy
            .unwrap_or_else(|| DynPolicy(Box::new(Backoff::default())));
        // Endpoints: one rotation per service, and rounds without retry delays.
        let rotation = self.endpoints.map(Rotation::shared);
        let policy = match &rotation {
            Some(rotation) => DynPolicy(Box::new(RoundPolicy {
                inner: policy,
                rotation: Arc::clone(rotation),
                at_once_after_loss: self.config.reset_backoff_after.is_some(),
            })),
            None => policy,
        };
        // One slot per attempt: the retry's, reserved by the policy, or an admission.
        let (policy, connect) = match self.budget {
            Some(budget) => {
                let gate = crate::budget::Gate::new(budget);
                let policy = DynPolicy(Box::new(gate.policy(policy)));
                (policy, gate.connector(self.runtime.clone(), self.connect))
            }
            None => (policy, self.connect),
        };
        // A probe and no prepare step: the probe is the new connection's first
        // check, so that no waiter gets a connection nobody serves.
        let mut config = self.config;
        if let (Some(probe), None) = (config.probe, &self.prepare) {
            config.prepare = true;
            config.prepare_timeout.get_or_insert(probe.timeout);
        }
        // The default options are one block for every service (nothing allocated
        // for them per service); other options are the machine's own.
        let machine = if config == DEFAULT_OPTIONS.config {
            Machine::with_shared_options(policy, &DEFAULT_OPTIONS)?
        } else {
            Machine::with_config(policy, config)?
        };
        let sleep = sleep_fn(self.runtime.clone());
        let shared = Arc::new(Shared::new(self.name, self.events_capacity, sleep));
        let task = Task::new(
            self.runtime.clone(),
            Arc::clone(&shared),
            machine,
            connect,
            Hooks {
                prepare: self.prepare,
                probe: self.probe,
                fatal_if: self.fatal_if,
                rotation,
            },
        );
        self.runtime.spawn(TaskFuture(task))?;
        Ok(ClientService { shared })
    }

    /// [`build`](Builder::build)s the service and [`start`](ClientService::start)s it.
    pub fn start(self) -> Result<ClientService<H, E>, BuildError> {
        let service = self.build()?;
        service.start();
        Ok(service)
    }
}

/// How the handles sleep on the service's runtime, for a waiter's time limit
/// ([`WhenConnected::within`]): made once, when the service is built, and called on
/// whatever thread sets a limit.
fn sleep_fn<R: Runtime>(runtime: R) -> SleepFn {
    // Tokio's `sleep` works only inside a Tokio runtime (it panics on another
    // thread): if the service is built inside one (as the Tokio adapter requires),
    // enter it while making a sleep. (Harmless for other runtimes' sleeps.)
    #[cfg(feature = "tokio")]
    if let Ok(handle) = ::tokio::runtime::Handle::try_current() {
        return Box::new(move |delay| {
            let sleep = {
                let _inside = handle.enter();
                runtime.sleep(delay)
            };
            Box::pin(async move {
                sleep.await;
            })
        });
    }
    Box::new(move |delay| {
        let sleep = runtime.sleep(delay);
        Box::pin(async move {
            sleep.await;
        })
    })
}

/// Keeps one outgoing client connection alive, on any async runtime.
///
/// A cheap, cloneable handle to a service whose one task, spawned on the runtime,
/// runs the [`Machine`]. Each method is a request to that task, performed in the
/// order made; reading methods report the service as of the task's last step.
/// Dropping the last handle stops the service: the connection (or attempt) is
/// closed and the task ends. See the [module docs](super).
pub struct ClientService<H, E> {
    /// What the handles and the task share (it also counts the handles).
    shared: Arc<Shared<H, E>>,
}

impl<H, E> fmt::Debug for ClientService<H, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mailbox = self.shared.lock();
        f.debug_struct("ClientService")
            .field("name", &self.shared.name())
            .field("state", &mailbox.status.state)
            .field("counters", &mailbox.status.counters)
            .field("pending_waiters", &mailbox.status.pending_waiters())
            .field("ended", &mailbox.ended())
            .finish()
    }
}

impl<H, E> Clone for ClientService<H, E> {
    fn clone(&self) -> Self {
        self.shared.handles().fetch_add(1, Ordering::Relaxed);
        ClientService {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<H, E> Drop for ClientService<H, E> {
    fn drop(&mut self) {
        if self.shared.handles().fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle: stop, and end the task once everything is closed.
            // (If the task has ended already, there is nothing to do.)
            let _ = self
                .shared
                .send(|queue, key| (queue.push_shutdown(key), ()));
        }
    }
}

impl<H, E> ClientService<H, E>
where
    H: Clone + Send + Sync + 'static,
    E: core::fmt::Display + Send + Sync + 'static,
{
    /// A builder for a service on `runtime` that opens connections with `connector`:
    /// an async closure returning a [`Connection`] (a `(handle, driver future)`
    /// pair, or a stream wrapped by `stream`) or an error. The error type `E` must
    /// be `Display` (the service logs failures with `tracing`); `io::Error`, your
    /// client's error type, `Box<dyn Error + Send + Sync>` and `anyhow::Error` all are.
    pub fn builder<R, F, Fut, C>(runtime: R, mut connector: F) -> Builder<R, H, E>
    where
        R: Runtime,
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<C, E>> + Send + 'static,
        C: Connection<Handle = H>,
    {
        Self::builder_with_context(runtime, move |_: ConnectContext| connector())
    }

    /// As [`builder`](ClientService::builder), but the connector is told about
    /// each attempt it starts ([`ConnectContext`]: the attempt's id, the failures
    /// before it, the connections made so far), so it can rotate through
    /// endpoints, re-resolve names, or fail over. For a primary and its replicas,
    /// [`builder_with_endpoints`](ClientService::builder_with_endpoints) does the
    /// common case.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use redial::driver::ConnectContext;
    /// // Re-resolve the name on every attempt; log which attempt this is.
    /// let service = redial::tokio::builder_with_context(|ctx: ConnectContext| async move {
    ///     println!("{} after {} failures", ctx.attempt, ctx.consecutive_failures);
    ///     let tcp = tokio::net::TcpStream::connect("db.example:5432").await?;
    ///     Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
    /// })
    /// .start()?;
    /// # drop(service); Ok(()) }
    /// ```
    pub fn builder_with_context<R, F, Fut, C>(runtime: R, mut connector: F) -> Builder<R, H, E>
    where
        R: Runtime,
        F: FnMut(ConnectContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<C, E>> + Send + 'static,
        C: Connection<Handle = H>,
    {
        Builder {
            runtime,
            connect: Box::new(move |context| {
                let attempt = connector(context);
                Box::pin(async move {
                    let (handle, driver) = attempt.await?.into_parts();
                    // Mapped by a function, not wrapped in an `async` block: the
                    // block kept is the driver future's size.
                    let driver: BoxFuture<Loss> = Box::pin(futures_util::FutureExt::map(
                        driver,
                        DriverOutput::into_loss,
                    ));
                    Ok((handle, driver))
                })
            }),
            prepare: None,
            probe: None,
            fatal_if: None,
            policy: None,
            config: DEFAULT_OPTIONS.config,
            name: None,
            events_capacity: EVENTS_CAPACITY,
            budget: None,
            endpoints: None,
        }
    }

    /// A [`Builder`] whose connector is given, for each attempt, the endpoint of
    /// [`endpoints`](Endpoints) it goes to (and the [`ConnectContext`]).
    ///
    /// The service tries the list in rounds: the endpoints of a round in turn with
    /// no delay between them, the retry policy's delay between rounds, a failed
    /// attempt (never a cancelled one) moving on to the next endpoint, back to the
    /// primary at the start of every round and after a connection ends; every
    /// service has its own position, even when services share one list. See
    /// [`Endpoints`] for the rule; [`ConnectContext::endpoint`] and
    /// [`Event::AttemptStarted`](super::Event::AttemptStarted) name the endpoint of
    /// each attempt.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use redial::driver::{ClientService, ConnectContext, Endpoints};
    ///
    /// let endpoints = Endpoints::new(["10.0.0.1:5432", "10.0.0.2:5432"])?;
    /// let service = ClientService::builder_with_endpoints(
    ///     redial::tokio::Tokio,
    ///     endpoints,
    ///     |addr, _: ConnectContext| async move {
    ///         let tcp = tokio::net::TcpStream::connect(addr).await?;
    ///         Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
    ///     },
    /// )
    /// .policy(|_| std::time::Duration::from_secs(2))
    /// .start()?;
    /// # drop(service); Ok(()) }
    /// ```
    pub fn builder_with_endpoints<R, A, F, Fut, C>(
        runtime: R,
        endpoints: Endpoints<A>,
        mut connector: F,
    ) -> Builder<R, H, E>
    where
        R: Runtime,
        A: Clone + Send + Sync + 'static,
        F: FnMut(A, ConnectContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<C, E>> + Send + 'static,
        C: Connection<Handle = H>,
    {
        let len = endpoints.as_slice().len();
        let mut builder = Self::builder_with_context(runtime, move |context: ConnectContext| {
            // The task names an endpoint of this list (the primary, failing that).
            let index = context.endpoint.filter(|i| *i < len).unwrap_or(0);
            connector(endpoints.as_slice()[index].clone(), context)
        });
        builder.endpoints = Some(len);
        builder
    }
}

impl<H, E> ClientService<H, E> {
    /// Starts the service (a no-op unless it is new, stopped or stopping).
    /// After a [`stop`](ClientService::stop) it connects again, with no delay.
    pub fn start(&self) {
        let _ = self.shared.send(|queue, key| (queue.push_start(key), ()));
    }

    /// Stops the service. The stop request is made now; the returned future resolves
    /// once nothing is left open: no attempt in flight, no connection open (its
    /// driver future dropped; for a [`stream`](super::stream), its socket closed),
    /// no timer armed. Pending waiters fail with [`Error::Stopped`]. Dropping the
    /// future does not withdraw the stop.
    ///
    /// Stops requested before the service has taken the previous one are one
    /// request, and a `start` requested just before a stop is dropped (starting
    /// and stopping at once is stopping): their futures resolve together, once the
    /// service has stopped.
    pub fn stop(&self) -> Stopping {
        match self.shared.send(|queue, key| (queue.push_stop(key), ())) {
            Ok(rx) => Stopping { rx: Some(rx) },
            // The task has ended: nothing is open.
            Err(_) => Stopping { rx: None },
        }
    }

    /// Connect now instead of waiting out the retry delay: for a network-change
    /// event or an operator's command, so that a long backoff is not waited out
    /// when there is reason to believe the peer is back. With `reset_backoff`, the
    /// count of consecutive failures starts again too, so the next delays are the
    /// policy's first ones.
    ///
    /// What it does depends on what the service is doing when it takes the
    /// request:
    ///
    /// * waiting for a retry: the retry timer is cancelled and an attempt starts
    ///   at once;
    /// * connecting (an attempt or a prepare step in flight), or connected: only
    ///   the reset, if asked; the attempt or connection is left alone (to replace a
    ///   live connection, use [`disconnect`](ClientService::disconnect));
    /// * not started, stopping or stopped: nothing (it never starts a service:
    ///   [`start`](ClientService::start) does).
    ///
    /// It returns whether the request does something, judged from the service as
    /// of its last step and the start and stop requests made before this one
    /// (the same view as [`state`](ClientService::state), plus those requests):
    ///
    /// | the service | returns |
    /// |---|---|
    /// | waiting for a retry ([`State::Waiting`]) | `true`: an attempt starts now |
    /// | connecting or connected (or a `start()` of a new or stopped service was requested just before) | `reset_backoff`: only the reset is done |
    /// | new ([`State::Init`]), stopping ([`State::Disconnecting`], [`State::Restarting`], or a `stop()` requested just before), stopped ([`State::Stopped`], also after giving up), or ended | `false`: nothing is requested |
    ///
    /// When it returns `false`, nothing was sent to the service. When it returns
    /// `true`, the service checks again when it takes the request: if it has
    /// changed meanwhile (an attempt just failed and a retry is scheduled, or it
    /// gave up), it does what fits its state then, per the list above.
    ///
    /// ```no_run
    /// # async fn run(service: redial::driver::ClientService<u8, std::io::Error>,
    /// #     network_changes: impl futures_util::Stream<Item = ()>) {
    /// use futures_util::StreamExt;
    /// // The host's network came back (a new Wi-Fi, a VPN up): try now, from the
    /// // first delay, instead of waiting out a backoff that grew during the outage.
    /// let mut network_changes = std::pin::pin!(network_changes);
    /// while network_changes.next().await.is_some() {
    ///     if !service.reconnect_now(true) {
    ///         println!("not reconnecting: the service is {}", service.state());
    ///     }
    /// }
    /// # }
    /// ```
    pub fn reconnect_now(&self, reset_backoff: bool) -> bool {
        let shared = &self.shared;
        let mut mailbox = shared.lock();
        if mailbox.ended().is_some() {
            return false;
        }
        // The state the service will be in when it takes this request, as far as
        // the handles can tell.
        let state = mailbox.commands.predict(mailbox.status.state);
        let effective = match state {
            State::Waiting => true,
            State::Connecting | State::Connected => reset_backoff,
            State::Init | State::Disconnecting | State::Restarting | State::Stopped => false,
        };
        if !effective {
            return false;
        }
        let key = mailbox.next_ticket;
        mailbox.commands.get().push_reconnect(key, reset_backoff);
        let task = mailbox.task.clone();
        drop(mailbox);
        if let Some(task) = task {
            task.wake();
        }
        true
    }

    /// Waits for the connection: resolves with a clone of its handle once it is up
    /// (at once if it is up now), or with an [`Error`]. Dropping the future
    /// withdraws the waiter. Use [`WhenConnected::with_id`] to also get the
    /// connection's [`AttemptId`].
    ///
    /// The service learns of a loss when the connection's driver future ends, so
    /// this can hand out a connection that has just died and whose driver has not
    /// noticed yet. On a half-open connection (a network partition: no reset ever
    /// arrives) that can last until the operating system gives up on it. When you
    /// detect a dead connection yourself (requests time out), call
    /// [`disconnect`](ClientService::disconnect) with its id to close it and
    /// reconnect.
    pub fn when_connected(&self) -> WhenConnected<H, E> {
        self.waiter(None)
    }

    /// As [`when_connected`](ClientService::when_connected), but fails with
    /// [`Error::Failed`] once `failures` attempts have failed since the service
    /// took this request (the attempt in flight included). The service keeps
    /// retrying regardless.
    pub fn when_connected_fail_after(&self, failures: NonZeroU32) -> WhenConnected<H, E> {
        self.waiter(Some(failures))
    }

    fn waiter(&self, fail_after: Option<NonZeroU32>) -> WhenConnected<H, E> {
        let shared = &self.shared;
        let (tx, rx) = oneshot::channel();
        let mut mailbox = shared.lock();
        if let Some(ended) = mailbox.ended() {
            let ended = Ended::clone(ended);
            drop(mailbox);
            return WhenConnected {
                shared: Arc::clone(shared),
                ticket: 0,
                state: Waiting::Done(Some(Error::Ended(ended))),
                deadline: None,
            };
        }
        let ticket = mailbox.next_ticket;
        mailbox.next_ticket += 1;
        mailbox.commands.get().push_waiter(Command::WhenConnected {
            ticket,
            fail_after,
            tx,
        });
        let task = mailbox.task.clone();
        drop(mailbox);
        if let Some(task) = task {
            task.wake();
        }
        WhenConnected {
            shared: Arc::clone(shared),
            ticket,
            state: Waiting::Pending(rx),
            deadline: None,
        }
    }

    /// Reports the connection `attempt` broken, e.g. because requests on it time out
    /// while its driver future has not ended (a half-open connection), and returns
    /// whether it is the current connection.
    ///
    /// If it is, the service closes it (drops its driver future, and its prepare
    /// future if it is still being prepared) and treats it as lost, as if its driver
    /// had ended: a connected service reconnects per its retry policy; a connection
    /// still being prepared counts as a failed attempt. Once the service has taken
    /// the request, [`when_connected`](ClientService::when_connected) no longer
    /// hands it out.
    ///
    /// If it is not (an older connection, one already lost or being closed, no
    /// connection at all, or an id this service never issued), this does nothing and
    /// returns `false`, so a late call cannot close a newer, healthy connection.
    ///
    /// "Current" is as of the service's last step; the service checks again when it
    /// takes the request, and does nothing if the connection has gone meanwhile.
    /// Get the id with [`WhenConnected::with_id`].
    pub fn disconnect(&self, attempt: AttemptId) -> bool {
        let shared = &self.shared;
        let mut mailbox = shared.lock();
        if mailbox.ended().is_some() || mailbox.status.connection() != Some(attempt) {
            return false;
        }
        // It is no longer current for anyone asking after this (a second call
        // returns false); the task publishes the truth once it has closed it.
        mailbox.status.set_connection(None);
        let key = mailbox.next_ticket;
        mailbox.commands.get().push_disconnect(key, attempt);
        let task = mailbox.task.clone();
        drop(mailbox);
        if let Some(task) = task {
            task.wake();
        }
        true
    }

    /// The machine's state after the service's last step ([`State::Stopped`] once
    /// the service has [`ended`](ClientService::ended)).
    pub fn state(&self) -> State {
        self.shared.lock().status.state
    }

    /// Why the service's task has ended, if it has (the runtime shut down, the retry
    /// policy panicked, …). A service that has ended stays stopped: every request
    /// fails at once with [`Error::Ended`].
    pub fn ended(&self) -> Option<Ended> {
        self.shared.ended()
    }

    /// Running totals since the service was built: attempts, failures,
    /// connections, losses, flaps.
    ///
    /// How a flap counts: a connection lost before it stayed up
    /// [`reset_backoff_after`](Builder::reset_backoff_after) (5 s by default) is a
    /// flap. It counts in [`flaps`](Counters::flaps) and in
    /// [`losses`](Counters::losses), and toward the consecutive failures that drive
    /// the backoff ([`consecutive_failures`](ClientService::consecutive_failures), the
    /// `consecutive_failures` and `consecutive_failures` of the
    /// [events](ClientService::events)), but **not** in
    /// [`failures`](Counters::failures), which counts failed attempts only (connect
    /// or prepare failed or timed out, lost while preparing, a panic). So after a
    /// peer that accepts and drops every connection at once, `failures` can stay 0
    /// while `consecutive_failures()` grows: compare `failures + flaps` with it, not
    /// `failures`. A connection that stays up long enough resets the consecutive
    /// failures to 0; its loss later is a plain loss: it counts in `losses` (not
    /// in `flaps`) and makes the consecutive failures 1, so the first retry waits
    /// the policy's first delay.
    pub fn counters(&self) -> Counters {
        self.shared.lock().status.counters
    }

    /// Consecutive failures so far (what the retry policy was last asked about):
    /// failed attempts and lost connections since the count was last reset (a
    /// connection that stayed up [`reset_backoff_after`](Builder::reset_backoff_after),
    /// a restart after giving up, [`reconnect_now(true)`](ClientService::reconnect_now)).
    /// A flap (a connection lost before it stayed up that long) adds to it without
    /// the count having been reset in between. It is what the
    /// events' `consecutive_failures` shows. Flaps count here but not in
    /// [`counters().failures`](Counters::failures); see
    /// [`counters`](ClientService::counters).
    pub fn consecutive_failures(&self) -> u32 {
        self.shared.lock().status.consecutive_failures
    }

    /// How many requests are queued for the service's task (coalesced requests
    /// count once; holes left by withdrawn waiters count too): for tests that
    /// check the mailbox stays bounded.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn queued_requests(&self) -> usize {
        self.shared.lock().commands.len()
    }

    /// How many waiters are pending (taken by the service, not answered, not
    /// withdrawn).
    pub fn pending_waiters(&self) -> usize {
        self.shared.lock().status.pending_waiters()
    }

    /// Subscribes to what the service does, as a `Stream` of [`Event`](super::Event)s: attempts
    /// started and failed, retries scheduled, connections made (with a generation
    /// number) and lost (with the reason), giving up, stops, the end. A subscriber
    /// that keeps up sees every event in order; one that falls behind is told how
    /// many it missed ([`Event::Missed`](super::Event::Missed)) and never slows the service down. See
    /// [`events`](super::Events).
    ///
    /// The order of `start()` and `events()` does not matter: the first
    /// subscription also gets the events from before it (the service keeps them
    /// until it is first subscribed to, at most
    /// [`events_capacity`](Builder::events_capacity) of them, preceded by
    /// [`Event::Missed`](super::Event::Missed) if it had to drop some), so
    /// `builder.start()?` then `service.events()` sees the first
    /// [`AttemptStarted`](super::Event::AttemptStarted). Later subscriptions see the
    /// events after they subscribed.
    ///
    /// ```no_run
    /// # async fn run(service: redial::driver::ClientService<u8, std::io::Error>) {
    /// use futures_util::StreamExt;
    /// use redial::driver::Event;
    ///
    /// let mut events = service.events();
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         Event::Connected { generation, .. } => println!("connection #{generation} is up"),
    ///         Event::Lost { reason, .. } => println!("lost: {reason:#}"),
    ///         Event::AttemptFailed { failure, consecutive_failures, .. } => {
    ///             println!("attempt failed ({consecutive_failures} in a row): {failure:#}")
    ///         }
    ///         _ => {}
    ///     }
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> Events<E> {
        self.shared.subscribe()
    }

    /// The failure of the last failed attempt, if any attempt has failed.
    pub fn last_failure(&self) -> Option<Arc<Failure<E>>> {
        self.shared.lock().last_failure().cloned()
    }

    /// Why the last established connection was lost, if one was.
    pub fn last_loss(&self) -> Option<Loss> {
        self.shared.lock().last_loss().cloned()
    }

    /// Watches state changes.
    pub fn watch(&self) -> StateWatch {
        let mut mailbox = self.shared.lock();
        let (state, ended) = (mailbox.status.state, mailbox.ended().is_some());
        let watch = Arc::clone(
            mailbox
                .later()
                .watch
                .get_or_insert_with(|| Arc::new(Watch::new(state, ended))),
        );
        drop(mailbox);
        StateWatch::new(watch)
    }
}

/// Where a [`WhenConnected`] is.
enum Waiting<H, E> {
    /// Registered with the service; its answer comes through here.
    Pending(oneshot::Receiver<Answer<H, E>>),
    /// Answered at once (the service had ended), not yet polled.
    Done(Option<Error<E>>),
}

/// The future returned by [`ClientService::when_connected`]: the connection's
/// handle, or why there is none. Dropping it withdraws the waiter.
#[must_use = "dropping the future withdraws the waiter"]
pub struct WhenConnected<H, E> {
    shared: Arc<Shared<H, E>>,
    ticket: u64,
    state: Waiting<H, E>,
    /// The time limit, from [`within`](WhenConnected::within).
    deadline: Option<Deadline>,
}

/// A waiter's time limit: the limit, and the runtime's sleep for it (none for a
/// zero limit, which runs out at the first poll that finds no answer).
struct Deadline {
    after: Duration,
    sleep: Option<BoxFuture<()>>,
}

impl<H, E> fmt::Debug for WhenConnected<H, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WhenConnected")
            .field("ticket", &self.ticket)
            .field("answered", &matches!(self.state, Waiting::Done(None)))
            .field("within", &self.deadline.as_ref().map(|d| d.after))
            .finish()
    }
}

impl<H, E> WhenConnected<H, E> {
    /// Resolves with the connection's [`AttemptId`] as well as its handle: the id
    /// to pass to [`ClientService::disconnect`] if the connection turns out dead.
    ///
    /// ```no_run
    /// # async fn run(service: redial::driver::ClientService<u8, std::io::Error>) {
    /// let (id, conn) = service.when_connected().with_id().await.unwrap();
    /// // ... requests on `conn` time out: the connection is half-open.
    /// service.disconnect(id);
    /// # }
    /// ```
    pub fn with_id(self) -> WhenConnectedWithId<H, E> {
        WhenConnectedWithId { inner: self }
    }

    /// Gives up waiting after `limit`: if no connection has been handed to this
    /// waiter by then, it resolves with [`Error::TimedOut`] (with the service's
    /// last failure, if attempts were failing) and the waiter is withdrawn, as if
    /// the future had been dropped: a connection made later is not handed to it,
    /// and [`pending_waiters`](ClientService::pending_waiters) no longer counts it
    /// once the service has taken the withdrawal. The service keeps retrying.
    ///
    /// The time counts from this call, on the service's runtime (its
    /// [`Runtime::sleep`]: no runtime-specific timeout needed). An answer that
    /// arrives first wins, and so does an answer already there when the time runs
    /// out. A zero `limit` times out at the first poll unless the answer is there.
    /// It combines with
    /// [`when_connected_fail_after`](ClientService::when_connected_fail_after)
    /// (whichever comes first) and with [`with_id`](WhenConnected::with_id);
    /// calling it again replaces the limit.
    ///
    /// ```no_run
    /// # async fn run(service: redial::driver::ClientService<u8, std::io::Error>) {
    /// use std::time::Duration;
    /// use redial::driver::Error;
    ///
    /// match service.when_connected().within(Duration::from_secs(2)).await {
    ///     Ok(conn) => { /* use it */ }
    ///     // e.g. "no connection within 2s: connection attempt failed: Connection refused (os error 111)"
    ///     Err(e @ Error::TimedOut { .. }) => eprintln!("{e}"),
    ///     Err(e) => eprintln!("{e}"),
    /// }
    /// # }
    /// ```
    pub fn within(mut self, limit: Duration) -> Self {
        if !matches!(self.state, Waiting::Pending(_)) {
            // Answered already (the service had ended): nothing to time.
            return self;
        }
        let sleep = (!limit.is_zero()).then(|| self.shared.sleep(limit));
        self.deadline = Some(Deadline {
            after: limit,
            sleep,
        });
        self
    }

    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Answer<H, E>> {
        let answer = match &mut self.state {
            Waiting::Done(error) => match error.take() {
                Some(error) => Err(error),
                None => panic!("`WhenConnected` polled after it resolved"),
            },
            Waiting::Pending(rx) => match Pin::new(&mut *rx).poll(cx) {
                Poll::Pending => {
                    let Some(deadline) = self.deadline.as_mut() else {
                        return Poll::Pending;
                    };
                    if let Some(sleep) = deadline.sleep.as_mut() {
                        if sleep.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                    }
                    let after = deadline.after;
                    self.deadline = None;
                    match rx.try_recv() {
                        // Answered meanwhile: the answer wins.
                        Ok(Some(answer)) => answer,
                        Ok(None) => self.time_out(after),
                        Err(oneshot::Canceled) => Err(Error::Ended(
                            self.shared.ended().unwrap_or(Ended::RuntimeGone),
                        )),
                    }
                }
                Poll::Ready(Ok(answer)) => answer,
                // The task dropped the sender without answering: it has ended.
                Poll::Ready(Err(oneshot::Canceled)) => Err(Error::Ended(
                    self.shared.ended().unwrap_or(Ended::RuntimeGone),
                )),
            },
        };
        self.state = Waiting::Done(None);
        self.deadline = None;
        Poll::Ready(answer)
    }

    /// The time ran out unanswered: withdraw the waiter, and say why.
    fn time_out(&mut self, after: Duration) -> Answer<H, E> {
        let last = {
            let mailbox = self.shared.lock();
            if mailbox.status.consecutive_failures > 0 {
                mailbox.last_failure().cloned()
            } else {
                None
            }
        };
        // If the task has ended, it answers (or answered) everything itself.
        let ticket = self.ticket;
        let _ = self.shared.send(|queue, _| ((), queue.withdraw(ticket)));
        Err(Error::TimedOut { after, last })
    }
}

impl<H, E> Future for WhenConnected<H, E> {
    type Output = Result<H, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut()
            .poll_answer(cx)
            .map(|answer| answer.map(|(_, handle)| handle))
    }
}

impl<H, E> Drop for WhenConnected<H, E> {
    fn drop(&mut self) {
        let Waiting::Pending(rx) = &mut self.state else {
            return;
        };
        match rx.try_recv() {
            // Not answered yet: withdraw it (if the task has ended, it is answered).
            Ok(None) => {
                let ticket = self.ticket;
                let _ = self.shared.send(|queue, _| ((), queue.withdraw(ticket)));
            }
            // Answered, never polled: the handle in the answer is dropped here.
            Ok(Some(_answer)) => {}
            Err(oneshot::Canceled) => {}
        }
    }
}

/// The future returned by [`WhenConnected::with_id`]: the connection's
/// [`AttemptId`] and handle, or why there is none. Dropping it withdraws the waiter.
#[must_use = "dropping the future withdraws the waiter"]
pub struct WhenConnectedWithId<H, E> {
    inner: WhenConnected<H, E>,
}

impl<H, E> fmt::Debug for WhenConnectedWithId<H, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WhenConnectedWithId")
            .field(&self.inner)
            .finish()
    }
}

impl<H, E> Future for WhenConnectedWithId<H, E> {
    type Output = Result<(AttemptId, H), Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().inner.poll_answer(cx)
    }
}

/// The future returned by [`ClientService::stop`]: resolves once the service is
/// stopped and nothing is left open. Dropping it does not withdraw the stop.
#[must_use = "the stop is requested either way; await this to know it is finished"]
#[derive(Debug)]
pub struct Stopping {
    /// Shared by the stops coalesced into one request.
    rx: Option<StopRx>,
}

impl Future for Stopping {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.rx.as_mut() {
            // A dropped sender means the task has ended: nothing is left open either.
            Some(rx) => Pin::new(rx).poll(cx).map(|_| ()),
            None => Poll::Ready(()),
        }
    }
}

/// Compile-time check: the public types are `Send`/`Sync` as documented.
#[allow(dead_code)]
fn _assert_send<H: Send + Sync + Clone + 'static, E: Send + Sync + 'static>() {
    fn is_send<T: Send>() {}
    fn is_sync<T: Sync>() {}
    is_send::<ClientService<H, E>>();
    is_sync::<ClientService<H, E>>();
    is_send::<WhenConnected<H, E>>();
    is_send::<WhenConnectedWithId<H, E>>();
    is_send::<Stopping>();
    is_send::<StateWatch>();
    is_send::<crate::actions::Failure<E>>();
}
