//! The runtime-agnostic async driver: a [`ClientService`] you can `await`.
//!
//! The driver runs a [`Machine`](crate::Machine) in one task and performs its actions
//! with real I/O: it runs your connector for `Connect`, drops the attempt on
//! `CancelConnect`, runs your prepare hook, closes connections on `Disconnect`,
//! keeps the timers, answers waiters and stop requests, and reports every outcome
//! back to the machine with the ids the machine gave. The machine decides
//! everything; the driver only does what it is told.
//!
//! Everything runtime-specific (spawning the service's one task, sleeping) sits
//! behind the tiny [`Runtime`] trait. Pick an adapter:
//!
//! | feature | module | runtime |
//! |---|---|---|
//! | `tokio` | [`redial::tokio`][mod-tokio] | Tokio |
//! | `smol` | [`redial::smol`][mod-smol] | smol (async-io / async-executor) |
//! | `async-std` | [`redial::async_std`][mod-async-std] | async-std (discontinued upstream; smol is its successor) |
//!
//! All three run this same driver, so they behave identically.
//!
//! # Connections
//!
//! Your connector is an async closure that returns a [`Connection`] or an error.
//! Three shapes are supported:
//!
//! * a **`(handle, driver future)` pair**, as tokio-postgres returns (proven by
//!   the repository's tests against a real server; hyper's and h2's handshakes
//!   have the same shape but are not tested): the service runs the driver future
//!   inside its task, hands clones of the
//!   handle to waiters, and learns of the loss when the driver future ends. The
//!   handle must be `Clone` (wrap it in an `Arc` if it is not, e.g.
//!   `(Arc::new(client), connection)`).
//! * a **plain byte stream** such as a `TcpStream`: wrap it with `stream` (one per
//!   adapter, e.g. [`redial::tokio::stream`][tokio-stream], or
//!   [`stream`] for `futures-io` streams), which gives a [`SharedStream`] handle and a
//!   driver future that notices when the peer closes or the stream fails.
//! * a **message transport**, a `Stream + Sink` such as tokio-tungstenite's
//!   `WebSocketStream` or tokio-util's `Framed`: wrap it with [`messages`], which
//!   gives a cloneable [`Messages`] handle (`send(out).await`, `recv().await`) and
//!   a driver future that pumps both ways and ends when the transport is lost (see
//!   [Message transports](#message-transports)).
//!
//! Either way the service learns of every loss the driver future notices without
//! you reporting it (for the ones it cannot notice, see
//! [`ClientService::disconnect`]), and closes the connection (drops the driver
//! future) when the machine asks.
//!
//! # Message transports
//!
//! Anything that is a `Stream<Item = Result<In, E>>` and a `Sink<Out, Error = Es>`
//! (the futures traits) becomes a connection with [`messages`], with no request
//! channel, reply queue or `select!` loop of your own:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tokio_tungstenite::tungstenite::{Error as WsError, Message};
//!
//! let service = redial::tokio::builder(|| async {
//!     let (ws, _) = tokio_tungstenite::connect_async("ws://127.0.0.1:9001").await?;
//!     Ok::<_, WsError>(redial::driver::messages(ws))
//! })
//! .start()?;
//!
//! let ws = service.when_connected().await?; // a `Messages<Message, Message, WsError>`
//! ws.send(Message::text("hello")).await?; // resolves once written and flushed
//! let reply = ws.recv().await?; // the next message, whoever sent the request
//! # drop(reply); Ok(()) }
//! ```
//!
//! * [`Messages::send`] resolves once the message is in the transport and the sink
//!   is flushed; it fails with a [`SendError`] (with the message back if it never
//!   reached the sink) once the connection is gone.
//! * [`Messages::recv`] takes the next received message. Each message goes to one
//!   receiver; with several, which one gets it is unspecified (fan out yourself if
//!   every receiver needs every message).
//! * The incoming queue is bounded ([`Messages::DEFAULT_CAPACITY`], or
//!   [`messages_with_capacity`]): when nobody receives, the driver stops reading
//!   the transport (the peer is slowed by its flow control); nothing grows without
//!   bound, and the end of the stream is noticed once someone receives again.
//! * On a loss (the stream ends or fails, the sink fails) the driver ends: the
//!   service reconnects. The messages received before it can still be received,
//!   then `recv` reports the [`Disconnected`] reason.
//! * When the service closes the connection (`stop()`, `disconnect(id)`), the
//!   transport is dropped at once and every pending and later `send` and `recv`
//!   fails with [`Disconnected::Closed`]: nothing waits for a connection that is
//!   gone.
//!
//! # The run model: what runs where
//!
//! * **One task per service**, spawned by [`Builder::build`] on the runtime. It
//!   owns the machine and everything the service opens. It runs all your code: the
//!   connector (closure and future), the prepare hook (closure and future), every
//!   connection's driver future, the retry policy, and your handle's `Clone` (one
//!   clone per waiter) and `Drop`. No thread is started, and nothing runs on the
//!   threads that call the service.
//! * **Handles only make requests.** [`ClientService`] methods push a request into
//!   a small mailbox and wake the task, which performs requests in the order they
//!   were made, each before anything that happens after it. Reading methods
//!   ([`state`](ClientService::state), [`counters`](ClientService::counters),
//!   [`pending_waiters`](ClientService::pending_waiters)) return what the task
//!   published after its last step, so right after `start()` the state may still
//!   read `Init` until the task has run; use [`ClientService::watch`] or await a
//!   waiter to wait for a state.
//! * **No user code runs under a lock a service method takes.** The mailbox lock
//!   is held only to push or read plain data. So your code may call back into the
//!   service from anywhere (a policy that reads `state()`, a handle whose `Drop`
//!   calls `when_connected()`, a prepare hook that calls `disconnect`) without
//!   deadlocking it. The task never blocks: it yields to the executor every few
//!   dozen steps, so a tight retry loop cannot starve other tasks.
//! * **Panics in your code are contained**, each as what it is:
//!
//!   | what panics | what the service does |
//!   |---|---|
//!   | the connector (closure or future) | a failed attempt, [`Failure::Panicked`](crate::Failure::Panicked); retried |
//!   | the prepare hook (closure or future) | a failed attempt; the connection is closed; retried |
//!   | a connection's driver future | while preparing: a failed attempt; once connected: a loss; reconnects |
//!   | the handle's `Clone` (when handing it to a waiter) | those waiters fail with the panic; the connection is closed as lost |
//!   | a `Drop` of a future, handle or connection | ignored (logged with `tracing`) |
//!   | the retry policy | the machine is left exactly as before the input; the service ends, [`Ended::PolicyPanicked`] |
//!
//!   Failures from panics reach the waiters whose threshold they meet, as any
//!   failure does.
//! * **The service ends** for good when its last handle is dropped (after closing
//!   what is open), when the runtime drops its task (the runtime shut down), or
//!   when the retry policy panics. Then every pending waiter and stop request is
//!   answered at once, every later `when_connected` fails with [`Error::Ended`],
//!   [`stop`](ClientService::stop) resolves at once, [`state`](ClientService::state)
//!   reads `Stopped`, [`ended`](ClientService::ended) says why, and
//!   [`StateWatch::changed`] returns `None`. Nothing ever waits for a task that is gone.
//!
//! # Behaviour
//!
//! * A zero retry delay is not sent through the runtime's timer: the next attempt
//!   starts at once.
//! * [`ClientService::when_connected`] makes a waiter; the returned future answers
//!   it. Dropping the future withdraws the waiter, at the same cost wherever it is
//!   in the queue (timed-out requests during an outage withdraw oldest-first).
//!   [`WhenConnected::within`] puts a time limit on it, on the service's runtime
//!   (no runtime-specific timeout needed): when it runs out the waiter is
//!   withdrawn and gets [`Error::TimedOut`], with the last failure if attempts
//!   were failing.
//! * An [`Error`] printed with `{}` says the whole story on one line, root cause
//!   included (`the retry policy gave up after 3 consecutive failures: connection
//!   attempt failed: db error: FATAL: database "nope" does not exist`); `{:#}` is
//!   its own message only, for reporters that walk `source()` (see [`Error`]).
//! * A connection whose driver future never ends can still be dead (a half-open
//!   connection: no reset ever arrives). Get its id with
//!   [`WhenConnected::with_id`] and pass it to [`ClientService::disconnect`] when
//!   you detect that: the service closes it and reconnects. A late call about an
//!   older connection does nothing.
//! * [`ClientService::stop`] resolves once nothing is left open: no attempt in
//!   flight, no connection (its driver future dropped: for a [`stream`], its
//!   socket closed, even if someone holds a [`StreamGuard`]), no timer armed.
//!   Dropping the future does not withdraw the stop.
//! * Failures are shared: one failure can be delivered to many waiters, so waiters
//!   receive it as an `Arc<Failure<E>>` inside [`Error`].
//!
//! # The one way to leak a service
//!
//! A service ends when its last [`ClientService`] handle is dropped. A handle kept
//! inside the service itself — captured by its own connector, prepare hook or
//! retry policy — is an `Arc` cycle: the service keeps itself alive and never
//! ends. If your prepare hook needs the service (say, to `disconnect`), capture a
//! weak reference instead: keep the service in an `Arc` and move an
//! `Arc::downgrade` of it into the closure, or hand the hook a channel.
//!
//! With the `tracing` feature the driver emits `tracing` events (target `redial`):
//! retry scheduled (with the failure count and the delay), connected, lost,
//! attempt failed, gave up, and every panic it contained.
//!
// The adapters' links: to the adapter itself when its feature is on, to docs.rs
// when it is off (so the docs of every feature set build with no broken link).
#![cfg_attr(feature = "tokio", doc = "[mod-tokio]: crate::tokio")]
#![cfg_attr(feature = "tokio", doc = "[tokio-stream]: crate::tokio::stream")]
#![cfg_attr(feature = "smol", doc = "[mod-smol]: crate::smol")]
#![cfg_attr(feature = "async-std", doc = "[mod-async-std]: crate::async_std")]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "[mod-tokio]: https://docs.rs/redial/latest/redial/tokio/index.html"
)]
#![cfg_attr(
    not(feature = "tokio"),
    doc = "[tokio-stream]: https://docs.rs/redial/latest/redial/tokio/fn.stream.html"
)]
#![cfg_attr(
    not(feature = "smol"),
    doc = "[mod-smol]: https://docs.rs/redial/latest/redial/smol/index.html"
)]
#![cfg_attr(
    not(feature = "async-std"),
    doc = "[mod-async-std]: https://docs.rs/redial/latest/redial/async_std/index.html"
)]

/// The three builder functions every runtime adapter has (`builder`,
/// `builder_with_context`, `builder_with_endpoints`), written once: `$rt` is the
/// adapter's runtime value (a unit struct), `$name` how its docs name it.
#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
macro_rules! adapter_builders {
    ($rt:ident, $name:literal) => {
        #[doc = concat!("A [`Builder`] for a service on ", $name, "; see [`ClientService::builder`].")]
        pub fn builder<F, Fut, C, E>(connector: F) -> Builder<$rt, C::Handle, E>
        where
            F: FnMut() -> Fut + Send + 'static,
            Fut: Future<Output = Result<C, E>> + Send + 'static,
            C: Connection,
            E: core::fmt::Display + Send + Sync + 'static,
        {
            ClientService::builder($rt, connector)
        }

        #[doc = concat!(
                    "A [`Builder`] for a service on ", $name,
                    " whose connector is told about each attempt; see ",
                    "[`ClientService::builder_with_context`]."
                )]
        pub fn builder_with_context<F, Fut, C, E>(connector: F) -> Builder<$rt, C::Handle, E>
        where
            F: FnMut(ConnectContext) -> Fut + Send + 'static,
            Fut: Future<Output = Result<C, E>> + Send + 'static,
            C: Connection,
            E: core::fmt::Display + Send + Sync + 'static,
        {
            ClientService::builder_with_context($rt, connector)
        }

        #[doc = concat!(
                    "A [`Builder`] for a service on ", $name,
                    " whose connector is given each attempt's endpoint, tried in rounds; see ",
                    "[`ClientService::builder_with_endpoints`]."
                )]
        pub fn builder_with_endpoints<A, F, Fut, C, E>(
            endpoints: crate::driver::Endpoints<A>,
            connector: F,
        ) -> Builder<$rt, C::Handle, E>
        where
            A: Clone + Send + Sync + 'static,
            F: FnMut(A, ConnectContext) -> Fut + Send + 'static,
            Fut: Future<Output = Result<C, E>> + Send + 'static,
            C: Connection,
            E: core::fmt::Display + Send + Sync + 'static,
        {
            ClientService::builder_with_endpoints($rt, endpoints, connector)
        }
    };
}
#[cfg(any(feature = "tokio", feature = "smol", feature = "async-std"))]
pub(crate) use adapter_builders;

mod connection;
mod endpoints;
mod error;
mod events;
mod liveness;
mod log;
#[path = "shapes/messages.rs"]
mod messages;
mod pending;
mod runtime;
mod service;
mod shared;
// The connection shapes (src/driver/shapes/): a byte stream, messages, endpoints.
// They build on the service's public API, not on the engine.
#[path = "shapes/stream.rs"]
mod stream;
mod task;
mod watch;

pub use connection::{ConnectContext, Connection};
pub use endpoints::{Endpoints, NoEndpoints};
pub use error::{BuildError, Ended, Error, SpawnError};
pub use events::{DriverOutput, Event, Events, Loss};
pub use messages::{
    messages, messages_with_capacity, Disconnected, Messages, MessagesDriver, RecvMessage,
    SendError, SendMessage,
};
pub use runtime::Runtime;
pub use service::{
    Builder, ClientService, Stopping, WhenConnected, WhenConnectedWithId,
    DEFAULT_RESET_BACKOFF_AFTER,
};
#[allow(unused_imports)]
pub(crate) use stream::with_reader;
pub use stream::{stream, SharedStream, StreamDriver, StreamGuard, StreamLock};
pub use watch::StateWatch;
