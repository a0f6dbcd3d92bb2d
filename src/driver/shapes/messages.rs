//! A message transport (a `Stream + Sink`: a WebSocket, a `Framed` codec…) as a
//! [`Connection`](super::Connection).
//!
//! [`messages`] splits a transport that is a `Stream<Item = Result<In, E>>` and a
//! `Sink<Out, Error = Es>` (tokio-tungstenite's `WebSocketStream`, tokio-util's
//! `Framed`, …) into a cloneable [`Messages`] handle and a [`MessagesDriver`]
//! future. The service runs the driver, which owns the transport: it feeds the
//! messages handed to [`Messages::send`] into the sink, and the messages the stream
//! yields into a bounded queue that [`Messages::recv`] takes from. The driver ends
//! when the stream ends or fails, or the sink fails: that is how the service learns
//! of a loss.
//!
//! The semantics are documented on [`Messages`] (this module is private).
//!
//! # Design
//!
//! The transport belongs to the driver alone, so no lock is ever held around it:
//! the only lock is a `std::sync::Mutex` over plain queues, held to push or pop an
//! entry, never while calling your code (the transport's methods, a message's
//! `Drop`, a waker). Messages are dropped, and wakers woken, after it is released.
//! Receivers wait on an [`event_listener::Event`], notified once per message (a
//! notified receiver that is dropped passes the notification on); senders leave
//! their wakers next to their messages and are woken when their message has been
//! flushed or the connection is gone. The driver does a bounded amount of work per
//! poll (at most 64 messages each way) and then yields.

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::boxed::Box;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::vec::Vec;

use event_listener::{Event, EventListener};
use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};

use super::liveness::{self, Activity};

/// The default bound of the incoming queue.
const DEFAULT_CAPACITY: usize = 32;
/// At most this many messages each way per poll of the driver, then it yields.
const BUDGET: usize = 64;

/// Why a [`Messages`] connection can no longer send or receive.
///
/// `E` is the transport's stream error, `Es` its sink error (often the same type).
/// The errors are shared (`Arc`): every `recv` and `send` that fails for the same
/// reason gets a clone.
///
/// ```
/// use redial::driver::Disconnected;
///
/// let gone: Disconnected<std::io::Error> = Disconnected::Ended;
/// assert_eq!(gone.to_string(), "the peer ended the connection");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Disconnected<E, Es = E> {
    /// The service closed the connection (it dropped the driver: `stop()`,
    /// `disconnect(id)`).
    #[error("the connection was closed")]
    Closed,
    /// The peer ended the stream: it yielded `None`.
    #[error("the peer ended the connection")]
    Ended,
    /// The stream yielded this error.
    #[error("receiving failed: {0}")]
    Receive(#[source] Arc<E>),
    /// The sink failed with this error (`poll_ready`, `start_send` or `poll_flush`).
    #[error("sending failed: {0}")]
    Send(#[source] Arc<Es>),
}

impl<E, Es> Clone for Disconnected<E, Es> {
    fn clone(&self) -> Self {
        match self {
            Disconnected::Closed => Disconnected::Closed,
            Disconnected::Ended => Disconnected::Ended,
            Disconnected::Receive(e) => Disconnected::Receive(Arc::clone(e)),
            Disconnected::Send(e) => Disconnected::Send(Arc::clone(e)),
        }
    }
}

/// Why [`Messages::send`] failed: the connection is gone.
///
/// ```
/// use redial::driver::{Disconnected, SendError};
///
/// let err: SendError<String, std::io::Error> = SendError {
///     message: Some("hello".to_owned()),
///     reason: Disconnected::Closed,
/// };
/// // Never handed to the transport: it can be sent again on the next connection.
/// assert_eq!(err.message.as_deref(), Some("hello"));
/// assert_eq!(err.to_string(), "message not sent: the connection was closed");
/// ```
pub struct SendError<Out, E, Es = E> {
    /// The message, if the transport never got it (it was still queued): send it
    /// again on the next connection if you like. `None` if it was handed to the
    /// sink but the sink was not flushed before the connection went: the peer may
    /// or may not get it.
    pub message: Option<Out>,
    /// Why the connection is gone.
    pub reason: Disconnected<E, Es>,
}

impl<Out, E: fmt::Debug, Es: fmt::Debug> fmt::Debug for SendError<Out, E, Es> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("message", &self.message.as_ref().map(|_| ..))
            .field("reason", &self.reason)
            .finish()
    }
}

impl<Out, E: fmt::Display, Es: fmt::Display> fmt::Display for SendError<Out, E, Es> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message {
            Some(_) => write!(f, "message not sent: {}", self.reason),
            None => write!(f, "message maybe not sent: {}", self.reason),
        }
    }
}

impl<Out, E, Es> std::error::Error for SendError<Out, E, Es>
where
    E: std::error::Error + 'static,
    Es: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.reason)
    }
}

/// A message waiting for the driver, and the waker of its `send`.
struct Outgoing<Out> {
    seq: u64,
    message: Out,
    waker: Option<Waker>,
}

/// A message handed to the sink, not flushed yet, and the waker of its `send`.
struct InFlight {
    seq: u64,
    waker: Option<Waker>,
}

struct State<Out, In, E, Es> {
    /// Received, not taken by any `recv` yet; at most `capacity`.
    inbox: VecDeque<In>,
    /// Waiting for the driver, in order of `seq`.
    outbox: VecDeque<Outgoing<Out>>,
    /// Handed to the sink, waiting for a flush, in order of `seq`.
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    /// Set once the connection is gone: lost (the driver ended), or closed (the
    /// driver was dropped before).
    end: Option<Disconnected<E, Es>>,
    /// Messages received, pongs included (what answers a [`Messages::ping`]).
    heard: u64,
}

impl<Out, In, E, Es> State<Out, In, E, Es> {
    /// Takes every pending `send`'s waker (to wake them once the lock is released).
    fn take_send_wakers(&mut self, into: &mut Vec<Waker>) {
        let outbox = self.outbox.iter_mut().filter_map(|o| o.waker.take());
        into.extend(outbox);
        let in_flight = self.in_flight.iter_mut().filter_map(|f| f.waker.take());
        into.extend(in_flight);
    }
}

struct Shared<Out, In, E, Es> {
    state: Mutex<State<Out, In, E, Es>>,
    capacity: usize,
    /// The driver: woken when a message is queued to send, and when a `recv` makes
    /// room in a full inbox.
    driver: AtomicWaker,
    /// `recv`s waiting for a message or for the end.
    readable: Event,
    /// What the service's liveness probe reads: messages received and sent.
    activity: OnceLock<Arc<Activity>>,
    /// The protocol's keep-alive, once set ([`Messages::keepalive`]).
    keepalive: OnceLock<Keepalive<Out, In>>,
    /// `ping`s waiting for anything received, or for the end.
    answered: Event,
}

/// A protocol's keep-alive: how to make a ping, how to tell a pong.
struct Keepalive<Out, In> {
    ping: Box<dyn Fn() -> Out + Send + Sync>,
    is_pong: Box<dyn Fn(&In) -> bool + Send + Sync>,
}

impl<Out, In, E, Es> Shared<Out, In, E, Es> {
    /// Nothing under this lock calls user code, so it cannot be poisoned by it; if
    /// it were, what it guards is still consistent.
    fn lock(&self) -> MutexGuard<'_, State<Out, In, E, Es>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next message, the reason the connection is gone, or nothing yet.
    fn try_recv(&self) -> Result<Option<In>, Disconnected<E, Es>> {
        let mut state = self.lock();
        if let Some(Disconnected::Closed) = state.end {
            return Err(Disconnected::Closed);
        }
        if let Some(message) = state.inbox.pop_front() {
            let was_full = state.inbox.len() + 1 >= self.capacity;
            drop(state);
            if was_full {
                self.driver.wake(); // room again: read on
            }
            return Ok(Some(message));
        }
        match &state.end {
            Some(end) => Err(end.clone()),
            None => Ok(None),
        }
    }
}

/// Splits a message transport (a `Stream<Item = Result<In, E>>` that is also a
/// `Sink<Out, Error = Es>`) into a cloneable handle and a driver future: a
/// [`Connection`](super::Connection) for a service. The incoming queue holds at
/// most [`Messages::DEFAULT_CAPACITY`] (32) messages; see
/// [`messages_with_capacity`].
///
/// The transport must be `Unpin` (wrap it in `Box::pin` if it is not). See
/// [`Messages`] for what `send` and `recv` do, what happens when nobody receives,
/// on a loss, and when the service closes the connection.
///
/// A WebSocket client with tokio-tungstenite:
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tokio_tungstenite::tungstenite::{Error as WsError, Message};
///
/// let service = redial::tokio::builder(|| async {
///     let (ws, _response) = tokio_tungstenite::connect_async("ws://127.0.0.1:9001").await?;
///     Ok::<_, WsError>(redial::driver::messages(ws))
/// })
/// .start()?;
///
/// let ws = service.when_connected().await?;
/// ws.send(Message::text("hello")).await?;
/// let echo = ws.recv().await?;
/// # drop(echo); Ok(()) }
/// ```
///
/// A `Framed` codec (here over an in-memory pipe, driven by hand):
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures_util::{SinkExt, StreamExt};
/// use tokio_util::codec::{Framed, LinesCodec};
///
/// let (ours, theirs) = tokio::io::duplex(1024);
/// let (lines, driver) = redial::driver::messages(Framed::new(ours, LinesCodec::new()));
/// tokio::spawn(driver); // a service would run it
///
/// let mut peer = Framed::new(theirs, LinesCodec::new());
/// lines.send("ping".to_owned()).await.unwrap();
/// assert_eq!(peer.next().await.unwrap().unwrap(), "ping");
/// peer.send("pong").await.unwrap();
/// assert_eq!(lines.recv().await.unwrap(), "pong");
///
/// drop(peer); // the peer goes away: the driver ends, recv reports it
/// assert!(lines.recv().await.is_err());
/// # }
/// ```
#[allow(clippy::type_complexity)] // the pair, as named as it gets
pub fn messages<T, Out, In, E, Es>(
    transport: T,
) -> (Messages<Out, In, E, Es>, MessagesDriver<T, Out, In, E, Es>)
where
    T: Stream<Item = Result<In, E>> + Sink<Out, Error = Es> + Unpin,
{
    messages_with_capacity(transport, DEFAULT_CAPACITY)
}

/// As [`messages`], with room for `capacity` received messages (at least 1) in
/// the incoming queue before the driver stops reading the stream.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tokio_util::codec::{Framed, LinesCodec};
///
/// let (ours, _theirs) = tokio::io::duplex(1024);
/// let (lines, driver) =
///     redial::driver::messages_with_capacity::<_, String, _, _, _>(Framed::new(ours, LinesCodec::new()), 1000);
/// assert_eq!(lines.capacity(), 1000);
/// # drop(driver); }
/// ```
#[allow(clippy::type_complexity)] // the pair, as named as it gets
pub fn messages_with_capacity<T, Out, In, E, Es>(
    transport: T,
    capacity: usize,
) -> (Messages<Out, In, E, Es>, MessagesDriver<T, Out, In, E, Es>)
where
    T: Stream<Item = Result<In, E>> + Sink<Out, Error = Es> + Unpin,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            inbox: VecDeque::new(),
            outbox: VecDeque::new(),
            in_flight: VecDeque::new(),
            next_seq: 0,
            end: None,
            heard: 0,
        }),
        capacity: capacity.max(1),
        driver: AtomicWaker::new(),
        readable: Event::new(),
        activity: OnceLock::new(),
        keepalive: OnceLock::new(),
        answered: Event::new(),
    });
    (
        Messages {
            shared: Arc::clone(&shared),
        },
        MessagesDriver {
            transport: Some(transport),
            shared,
            unflushed: false,
            wake: Vec::new(),
        },
    )
}

/// The handle of a message connection: clone it freely; [`send`](Messages::send)
/// and [`recv`](Messages::recv) from anywhere.
///
/// `Out` is what you send, `In` what you receive, `E` the transport's stream error
/// and `Es` its sink error (by default the same). For tokio-tungstenite:
/// `Messages<Message, Message, tungstenite::Error>`.
///
/// # Sending
///
/// [`Messages::send`] queues the message for the driver and resolves once the
/// driver has handed it to the sink *and flushed the sink*: `Ok(())` means the
/// transport took it (not that the peer has read it). Messages are sent in the
/// order their `send`s were first polled. Each pending `send` holds its own message,
/// so the outgoing queue is as long as the number of `send`s waiting: a caller
/// that awaits each `send` has at most one message queued. Dropping a `send` before
/// it resolves withdraws its message if the driver has not taken it yet; once
/// taken, it is sent anyway.
///
/// # Receiving
///
/// The driver reads the stream into a queue of at most
/// [`capacity`](Messages::capacity) messages
/// ([`Messages::DEFAULT_CAPACITY`], 32, unless made with [`messages_with_capacity`]).
/// [`Messages::recv`] takes the oldest. Each message is received once, by one
/// `recv`: with several receivers (clones of the handle, or several `recv`s of
/// one), each gets different messages, and which waiting receiver gets the next
/// one is not specified (the waiters are woken one per message, in the order they
/// started waiting, but a `recv` that starts just then may take it first). To give
/// every message to every receiver, receive in one place and fan out. Dropping a
/// `recv` loses nothing: a message leaves the queue only in the poll that returns
/// it.
///
/// **Backpressure:** when the queue is full (nobody receives, or not fast enough),
/// the driver stops reading the stream until a `recv` makes room, so the queue
/// never grows beyond its capacity and the transport's own flow control slows the
/// peer down (for TCP: its window fills). Sending is not affected. While the queue
/// is full the driver does not read the stream, so it cannot see the stream end
/// either: a peer that sends more than the capacity and then goes away is noticed
/// once someone receives (or a send fails).
///
/// # Noticing a loss
///
/// The driver future ends, and the service learns of the loss without anyone
/// reporting it, when the stream ends (`None`), when it yields an error, or when the
/// sink fails (`poll_ready`, `start_send` or `poll_flush`). The transport is
/// dropped then. (A transport whose stream never ends can still be dead: see
/// [`ClientService::disconnect`](super::ClientService::disconnect).)
///
/// # After a loss
///
/// Messages received before the loss stay in the queue: the next `recv`s return
/// them, in order, then fail with the [`Disconnected`] reason
/// ([`Ended`](Disconnected::Ended), [`Receive`](Disconnected::Receive) with the
/// stream's error, or [`Send`](Disconnected::Send) with the sink's error), and so
/// does every later `recv`. Every pending and later `send` fails at once with a
/// [`SendError`] carrying that reason, and its message back if the sink never got
/// it.
///
/// # Keep-alive
///
/// A protocol with a keep-alive (a WebSocket's ping and pong) is probed with
/// [`keepalive`](Messages::keepalive) (how to make a ping, how to tell a pong)
/// and [`ping`](Messages::ping) as the service's probe: the ping goes out, its
/// pong or any message received answers it, and pongs never reach `recv`. Any
/// message received also counts as liveness for the service's probe (see
/// [`Builder::probe`](super::Builder::probe)).
///
/// # Closed by the service
///
/// The service closes a connection by dropping its driver before it ended (on
/// `stop()`, on `disconnect(id)`). That drops the transport at once (for a
/// WebSocket: the socket is closed, with no closing handshake; send a close message
/// yourself first if the peer needs one). Queued incoming messages are discarded.
/// Every pending `send` and `recv` is woken and fails with
/// [`Disconnected::Closed`], and so does every later one.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures_util::{SinkExt, StreamExt};
/// use redial::driver::Messages;
/// use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
///
/// let (ours, theirs) = tokio::io::duplex(1024);
/// let (lines, driver) = redial::driver::messages(Framed::new(ours, LinesCodec::new()));
/// let lines: Messages<String, String, LinesCodecError> = lines;
/// tokio::spawn(driver);
///
/// // Two tasks share the connection: one sends, one receives.
/// let sender = lines.clone();
/// tokio::spawn(async move {
///     for i in 0..3 {
///         sender.send(format!("line {i}")).await.unwrap();
///     }
/// });
/// let mut peer = Framed::new(theirs, LinesCodec::new());
/// for i in 0..3 {
///     let line = peer.next().await.unwrap().unwrap();
///     peer.send(line.to_uppercase()).await.unwrap();
///     assert_eq!(lines.recv().await.unwrap(), format!("LINE {i}"));
/// }
/// # }
/// ```
pub struct Messages<Out, In, E, Es = E> {
    shared: Arc<Shared<Out, In, E, Es>>,
}

impl<Out, In, E, Es> Clone for Messages<Out, In, E, Es> {
    fn clone(&self) -> Self {
        Messages {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Out, In, E, Es> fmt::Debug for Messages<Out, In, E, Es> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        let (queued, received) = (
            state.outbox.len() + state.in_flight.len(),
            state.inbox.len(),
        );
        let gone = match state.end {
            None => "no",
            Some(Disconnected::Closed) => "closed",
            Some(_) => "lost",
        };
        drop(state);
        f.debug_struct("Messages")
            .field("gone", &gone)
            .field("sending", &queued)
            .field("received", &received)
            .field("capacity", &self.shared.capacity)
            .finish()
    }
}

impl<Out, In, E, Es> Messages<Out, In, E, Es> {
    /// How many received messages the incoming queue holds by default (made with
    /// [`messages`]): 32.
    ///
    /// ```
    /// use redial::driver::Messages;
    /// assert_eq!(Messages::<String, String, std::io::Error>::DEFAULT_CAPACITY, 32);
    /// ```
    pub const DEFAULT_CAPACITY: usize = DEFAULT_CAPACITY;

    /// Sends `message`: resolves once the driver has handed it to the transport's
    /// sink and flushed the sink, or fails with a [`SendError`] (with the message
    /// back if the sink never got it) once the connection is gone.
    ///
    /// The message is queued when the future is first polled; messages go out in
    /// that order. Dropping the future before it resolves withdraws the message if
    /// the driver has not taken it yet (otherwise it is sent anyway).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures_util::StreamExt;
    /// use tokio_util::codec::{Framed, LinesCodec};
    ///
    /// let (ours, theirs) = tokio::io::duplex(1024);
    /// let (lines, driver) = redial::driver::messages(Framed::new(ours, LinesCodec::new()));
    /// tokio::spawn(driver);
    /// lines.send("hello".to_owned()).await.unwrap(); // written and flushed
    ///
    /// let mut peer = Framed::new(theirs, LinesCodec::new());
    /// assert_eq!(peer.next().await.unwrap().unwrap(), "hello");
    /// # drop(lines.recv()); }
    /// ```
    pub fn send(&self, message: Out) -> SendMessage<'_, Out, In, E, Es> {
        SendMessage {
            shared: &self.shared,
            state: Sending::Unsent(Some(message)),
        }
    }

    /// Receives the next message: the oldest in the incoming queue, waiting for
    /// one if it is empty; or the reason the connection is gone, once the messages
    /// received before a loss have been taken (at once if the service closed it).
    ///
    /// Each message goes to one `recv`. Dropping the future loses nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use futures_util::SinkExt;
    /// use redial::driver::Disconnected;
    /// use tokio_util::codec::{Framed, LinesCodec};
    ///
    /// let (ours, theirs) = tokio::io::duplex(1024);
    /// let (lines, driver) = redial::driver::messages(Framed::new(ours, LinesCodec::new()));
    /// let mut peer = Framed::new(theirs, LinesCodec::new());
    /// peer.send("last words").await.unwrap();
    /// drop(peer);
    /// driver.await; // ends: the peer went away
    ///
    /// // What arrived before the loss, then the loss.
    /// assert_eq!(lines.recv().await.unwrap(), "last words");
    /// assert!(matches!(lines.recv().await, Err(Disconnected::Ended)));
    /// # drop(lines.send(String::new())); }
    /// ```
    pub fn recv(&self) -> RecvMessage<'_, Out, In, E, Es> {
        RecvMessage {
            shared: &self.shared,
            listener: None,
        }
    }

    /// Takes the next received message if there is one (`Ok(None)` if not yet),
    /// without waiting; fails as [`recv`](Messages::recv) does once the connection
    /// is gone and the queue is empty.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use tokio_util::codec::{Framed, LinesCodec};
    ///
    /// let (ours, _theirs) = tokio::io::duplex(1024);
    /// let (lines, driver) = redial::driver::messages::<_, String, _, _, _>(Framed::new(ours, LinesCodec::new()));
    /// assert!(matches!(lines.try_recv(), Ok(None)));
    /// drop(driver); // the service closes the connection
    /// assert!(lines.try_recv().is_err());
    /// # }
    /// ```
    pub fn try_recv(&self) -> Result<Option<In>, Disconnected<E, Es>> {
        self.shared.try_recv()
    }

    /// Whether the connection is known to be gone (lost, or closed by the service).
    ///
    /// ```
    /// use tokio_util::codec::{Framed, LinesCodec};
    ///
    /// let (ours, _theirs) = tokio::io::duplex(1024);
    /// let (lines, driver) = redial::driver::messages::<_, String, _, _, _>(Framed::new(ours, LinesCodec::new()));
    /// assert!(!lines.is_closed());
    /// drop(driver);
    /// assert!(lines.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.lock().end.is_some()
    }

    /// How many received messages the incoming queue holds before the driver stops
    /// reading the stream.
    ///
    /// ```
    /// use tokio_util::codec::{Framed, LinesCodec};
    ///
    /// let (ours, _theirs) = tokio::io::duplex(1024);
    /// let (lines, _driver) = redial::driver::messages::<_, String, _, _, _>(Framed::new(ours, LinesCodec::new()));
    /// assert_eq!(lines.capacity(), 32);
    /// ```
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Gives the connection its protocol's keep-alive: `ping` makes a ping message
    /// (sent by [`ping`](Messages::ping)), and `is_pong` tells a pong from the
    /// other messages received. From then on the driver drops the pongs it
    /// receives (they never reach [`recv`](Messages::recv), so replies are not
    /// shifted by them), and counts them, with every other message, as the answer
    /// to a `ping`. Set it in the connector, before the service hands the handle
    /// out; a second call changes nothing (the first keep-alive stays).
    ///
    /// `ping` and `is_pong` are your code: `is_pong` runs in the driver for every
    /// message received (keep it cheap); a panic in it ends the connection as a
    /// loss.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tokio_tungstenite::tungstenite::{Error as WsError, Message};
    ///
    /// let service = redial::tokio::builder(|| async {
    ///     let (ws, _) = tokio_tungstenite::connect_async("ws://127.0.0.1:9001").await?;
    ///     let (ws, driver) = redial::driver::messages(ws);
    ///     let ws = ws.keepalive(|| Message::Ping(Default::default()), |m: &Message| m.is_pong());
    ///     Ok::<_, WsError>((ws, driver))
    /// })
    /// // The probe sends a ping; the pong, or any message received, answers it.
    /// .probe(Duration::from_secs(5), Duration::from_secs(2), |ws: redial::driver::Messages<Message, Message, WsError>| async move {
    ///     ws.ping().await.map_err(|gone| WsError::Io(std::io::Error::other(gone.to_string())))
    /// })
    /// .start()?;
    /// # drop(service); Ok(()) }
    /// ```
    pub fn keepalive(
        self,
        ping: impl Fn() -> Out + Send + Sync + 'static,
        is_pong: impl Fn(&In) -> bool + Send + Sync + 'static,
    ) -> Self {
        let _first = self.shared.keepalive.set(Keepalive {
            ping: Box::new(ping),
            is_pong: Box::new(is_pong),
        });
        self
    }

    /// Pings the peer: sends the [`keepalive`](Messages::keepalive)'s ping
    /// message and resolves once anything is received after that (its pong, or
    /// any other message: both show the peer is there), or fails with the
    /// [`Disconnected`] reason once the connection is gone. It never times out by
    /// itself: use it as the service's [probe](super::Builder::probe), which
    /// gives it a timeout. Without a keep-alive it sends nothing and resolves at
    /// once.
    pub async fn ping(&self) -> Result<(), Disconnected<E, Es>> {
        let Some(keepalive) = self.shared.keepalive.get() else {
            return Ok(());
        };
        let heard = self.shared.lock().heard;
        let message = (keepalive.ping)();
        self.send(message).await.map_err(|e| e.reason)?;
        loop {
            let listener = self.shared.answered.listen();
            {
                let state = self.shared.lock();
                if state.heard != heard {
                    return Ok(());
                }
                if let Some(end) = &state.end {
                    return Err(end.clone());
                }
            }
            listener.await;
        }
    }
}

/// Where a [`SendMessage`] is.
enum Sending<Out> {
    /// Not polled yet: the message is still here.
    Unsent(Option<Out>),
    /// Queued with this sequence number: with the driver, or in the sink.
    Queued(u64),
    /// Resolved.
    Done,
}

/// The future returned by [`Messages::send`]: resolves once the message is
/// flushed, or fails once the connection is gone. Dropping it withdraws the
/// message if the driver has not taken it yet.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tokio_util::codec::{Framed, LinesCodec};
///
/// let (ours, _theirs) = tokio::io::duplex(1024);
/// let (lines, driver) = redial::driver::messages(Framed::new(ours, LinesCodec::new()));
/// let sending = lines.send("never sent".to_owned());
/// drop(driver); // the service closed the connection
/// let err = sending.await.unwrap_err();
/// assert_eq!(err.message.as_deref(), Some("never sent"));
/// # drop(lines.recv()); }
/// ```
#[must_use = "futures do nothing unless polled: the message is queued when first polled"]
pub struct SendMessage<'a, Out, In, E, Es> {
    shared: &'a Shared<Out, In, E, Es>,
    state: Sending<Out>,
}

// The message is never pinned: moving the future moves it, which is fine.
impl<Out, In, E, Es> Unpin for SendMessage<'_, Out, In, E, Es> {}

impl<Out, In, E, Es> fmt::Debug for SendMessage<'_, Out, In, E, Es> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            Sending::Unsent(_) => "unsent",
            Sending::Queued(_) => "queued",
            Sending::Done => "done",
        };
        f.debug_struct("SendMessage")
            .field("state", &state)
            .finish()
    }
}

impl<Out, In, E, Es> Future for SendMessage<'_, Out, In, E, Es> {
    type Output = Result<(), SendError<Out, E, Es>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let shared = this.shared;
        match &mut this.state {
            Sending::Unsent(message) => {
                let message = message.take().expect("a message not yet sent");
                let mut state = shared.lock();
                if let Some(end) = &state.end {
                    let reason = end.clone();
                    drop(state);
                    this.state = Sending::Done;
                    return Poll::Ready(Err(SendError {
                        message: Some(message),
                        reason,
                    }));
                }
                let seq = state.next_seq;
                state.next_seq += 1;
                state.outbox.push_back(Outgoing {
                    seq,
                    message,
                    waker: Some(cx.waker().clone()),
                });
                drop(state);
                this.state = Sending::Queued(seq);
                shared.driver.wake();
                Poll::Pending
            }
            Sending::Queued(seq) => {
                let seq = *seq;
                let mut state = shared.lock();
                let (waker, result) =
                    if let Ok(i) = state.outbox.binary_search_by_key(&seq, |o| o.seq) {
                        match &state.end {
                            // Never handed to the sink: give it back.
                            Some(end) => {
                                let reason = end.clone();
                                let gone = state.outbox.remove(i).expect("found at i");
                                (
                                    gone.waker,
                                    Poll::Ready(Err(SendError {
                                        message: Some(gone.message),
                                        reason,
                                    })),
                                )
                            }
                            None => (replace_waker(&mut state.outbox[i].waker, cx), Poll::Pending),
                        }
                    } else if let Ok(i) = state.in_flight.binary_search_by_key(&seq, |f| f.seq) {
                        match &state.end {
                            // In the sink, not flushed: it may or may not have gone out.
                            Some(end) => {
                                let reason = end.clone();
                                let gone = state.in_flight.remove(i).expect("found at i");
                                (
                                    gone.waker,
                                    Poll::Ready(Err(SendError {
                                        message: None,
                                        reason,
                                    })),
                                )
                            }
                            None => (
                                replace_waker(&mut state.in_flight[i].waker, cx),
                                Poll::Pending,
                            ),
                        }
                    } else {
                        // Neither queued nor in flight: flushed.
                        (None, Poll::Ready(Ok(())))
                    };
                drop(state);
                drop(waker);
                if result.is_ready() {
                    this.state = Sending::Done;
                }
                result
            }
            Sending::Done => panic!("`SendMessage` polled after it resolved"),
        }
    }
}

/// Stores `cx`'s waker in `slot` unless it is already there; returns the one it
/// replaced, to be dropped outside the lock.
fn replace_waker(slot: &mut Option<Waker>, cx: &Context<'_>) -> Option<Waker> {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => None,
        _ => slot.replace(cx.waker().clone()),
    }
}

impl<Out, In, E, Es> Drop for SendMessage<'_, Out, In, E, Es> {
    fn drop(&mut self) {
        let Sending::Queued(seq) = self.state else {
            return;
        };
        let mut state = self.shared.lock();
        // Withdraw the message if the driver has not taken it; forget the waker.
        let withdrawn = match state.outbox.binary_search_by_key(&seq, |o| o.seq) {
            Ok(i) => state.outbox.remove(i),
            Err(_) => None,
        };
        let waker = match state.in_flight.binary_search_by_key(&seq, |f| f.seq) {
            Ok(i) => state.in_flight[i].waker.take(),
            Err(_) => None,
        };
        drop(state);
        drop(withdrawn);
        drop(waker);
    }
}

/// The future returned by [`Messages::recv`]: the next received message, or why
/// there will be none. Dropping it loses nothing.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use tokio_util::codec::{Framed, LinesCodec};
///
/// let (ours, _theirs) = tokio::io::duplex(1024);
/// let (lines, driver) = redial::driver::messages::<_, String, _, _, _>(Framed::new(ours, LinesCodec::new()));
/// tokio::spawn(driver);
/// // Nothing arrives: give up after a while (the message, if any, stays queued).
/// assert!(tokio::time::timeout(Duration::from_millis(10), lines.recv()).await.is_err());
/// # }
/// ```
#[must_use = "futures do nothing unless polled"]
pub struct RecvMessage<'a, Out, In, E, Es> {
    shared: &'a Shared<Out, In, E, Es>,
    listener: Option<EventListener>,
}

impl<Out, In, E, Es> fmt::Debug for RecvMessage<'_, Out, In, E, Es> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvMessage")
            .field("waiting", &self.listener.is_some())
            .finish()
    }
}

impl<Out, In, E, Es> Future for RecvMessage<'_, Out, In, E, Es> {
    type Output = Result<In, Disconnected<E, Es>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match this.shared.try_recv() {
                Ok(Some(message)) => return Poll::Ready(Ok(message)),
                Err(gone) => return Poll::Ready(Err(gone)),
                Ok(None) => {}
            }
            match &mut this.listener {
                // Listen, then look again: a message pushed in between is seen.
                None => this.listener = Some(this.shared.readable.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => this.listener = None,
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

/// The driver future of a message connection: it owns the transport, pumps the
/// messages both ways, and ends when the transport is lost (the stream ends or
/// fails, or the sink fails). The service runs it.
///
/// Dropping it before it ended closes the connection: the transport is dropped at
/// once, queued incoming messages are discarded, and every pending and later
/// `send` and `recv` fails with [`Disconnected::Closed`]. Dropping it after it
/// ended keeps the messages received before the loss for the next `recv`s.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tokio_util::codec::{Framed, LinesCodec};
///
/// let (ours, theirs) = tokio::io::duplex(1024);
/// let (lines, driver) = redial::driver::messages::<_, String, _, _, _>(Framed::new(ours, LinesCodec::new()));
/// let running = tokio::spawn(driver);
/// drop(theirs); // the peer goes away
/// running.await.unwrap(); // the driver ends: the service would reconnect
/// assert!(lines.is_closed());
/// # }
/// ```
#[must_use = "the service runs this future; dropping it closes the connection"]
pub struct MessagesDriver<T, Out, In, E, Es> {
    /// Dropped when the driver ends or is dropped.
    transport: Option<T>,
    shared: Arc<Shared<Out, In, E, Es>>,
    /// Messages were handed to the sink since its last flush.
    unflushed: bool,
    /// Wakers to wake once the lock is released (kept to reuse the allocation).
    wake: Vec<Waker>,
}

impl<T, Out, In, E, Es> fmt::Debug for MessagesDriver<T, Out, In, E, Es> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessagesDriver")
            .field("ended", &self.transport.is_none())
            .finish_non_exhaustive()
    }
}

impl<T, Out, In, E, Es> MessagesDriver<T, Out, In, E, Es> {
    /// The connection is lost: record why, drop the transport, wake everyone.
    fn lose(&mut self, reason: Disconnected<E, Es>) -> Poll<()> {
        let mut state = self.shared.lock();
        // (If it were set already, the new reason, and the error in it, is dropped
        // outside the lock.)
        let unused = match state.end {
            None => {
                state.end = Some(reason);
                None
            }
            Some(_) => Some(reason),
        };
        state.take_send_wakers(&mut self.wake);
        drop(state);
        drop(unused);
        drop(self.transport.take());
        self.wake_all();
        Poll::Ready(())
    }

    fn wake_all(&mut self) {
        for waker in self.wake.drain(..) {
            waker.wake();
        }
        self.shared.readable.notify(usize::MAX);
        self.shared.answered.notify(usize::MAX);
    }
}

impl<T, Out, In, E, Es> Future for MessagesDriver<T, Out, In, E, Es>
where
    T: Stream<Item = Result<In, E>> + Sink<Out, Error = Es> + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let shared = Arc::clone(&this.shared);
        liveness::offer(&shared.activity);
        // Register first: a `send` or a `recv` after this wakes us.
        shared.driver.register(cx.waker());
        let Some(transport) = this.transport.as_mut() else {
            return Poll::Ready(()); // ended already
        };
        let mut transport = Pin::new(transport);

        // In: read while there is room.
        let mut budget = BUDGET;
        // When full, a `recv` wakes us once it has made room.
        let mut room = shared.lock().inbox.len() < shared.capacity;
        while budget > 0 && room {
            match transport.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    liveness::note(&shared.activity, Activity::received);
                    // Your code, outside our lock.
                    let pong = shared
                        .keepalive
                        .get()
                        .is_some_and(|k| (k.is_pong)(&message));
                    let mut state = shared.lock();
                    state.heard = state.heard.wrapping_add(1);
                    if pong {
                        // A pong answers a ping and goes no further.
                        drop(state);
                        drop(message);
                    } else {
                        state.inbox.push_back(message);
                        room = state.inbox.len() < shared.capacity;
                        drop(state);
                        shared.readable.notify_additional(1);
                    }
                    shared.answered.notify(usize::MAX);
                    budget -= 1;
                }
                Poll::Ready(Some(Err(error))) => {
                    return this.lose(Disconnected::Receive(Arc::new(error)))
                }
                Poll::Ready(None) => return this.lose(Disconnected::Ended),
                Poll::Pending => break,
            }
        }
        let more_in = budget == 0;

        // Out: hand the queued messages to the sink, in order, then flush.
        let mut budget = BUDGET;
        while budget > 0 && !shared.lock().outbox.is_empty() {
            match transport.as_mut().poll_ready(cx) {
                Poll::Pending => break,
                Poll::Ready(Err(error)) => return this.lose(Disconnected::Send(Arc::new(error))),
                Poll::Ready(Ok(())) => {}
            }
            let mut state = shared.lock();
            // (Its `send` may have been dropped meanwhile, withdrawing it.)
            let Some(next) = state.outbox.pop_front() else {
                break;
            };
            state.in_flight.push_back(InFlight {
                seq: next.seq,
                waker: next.waker,
            });
            drop(state);
            if let Err(error) = transport.as_mut().start_send(next.message) {
                return this.lose(Disconnected::Send(Arc::new(error)));
            }
            liveness::note(&shared.activity, Activity::sent);
            this.unflushed = true;
            budget -= 1;
        }
        let more_out = budget == 0;
        if this.unflushed {
            match transport.as_mut().poll_flush(cx) {
                Poll::Pending => {}
                Poll::Ready(Err(error)) => return this.lose(Disconnected::Send(Arc::new(error))),
                Poll::Ready(Ok(())) => {
                    this.unflushed = false;
                    let mut state = shared.lock();
                    let flushed = state.in_flight.drain(..).filter_map(|f| f.waker);
                    this.wake.extend(flushed);
                    drop(state);
                    for waker in this.wake.drain(..) {
                        waker.wake();
                    }
                }
            }
        }
        if more_in || more_out {
            cx.waker().wake_by_ref(); // more to do: yield, and come back
        }
        Poll::Pending
    }
}

impl<T, Out, In, E, Es> Drop for MessagesDriver<T, Out, In, E, Es> {
    fn drop(&mut self) {
        // Close the transport first, outside our lock.
        drop(self.transport.take());
        let mut state = self.shared.lock();
        if state.end.is_some() {
            return; // lost: the messages received before stay for the receivers
        }
        // Dropped before it ended: the service closed the connection.
        state.end = Some(Disconnected::Closed);
        let discarded = core::mem::take(&mut state.inbox);
        state.take_send_wakers(&mut self.wake);
        drop(state);
        drop(discarded);
        self.wake_all();
    }
}
