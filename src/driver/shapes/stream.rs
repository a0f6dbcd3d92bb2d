//! A plain byte stream (a `TcpStream`, a TLS stream…) as a [`Connection`](super::Connection).
//!
//! [`stream`] splits a stream into a shareable [`SharedStream`] handle and a
//! [`StreamDriver`] future. The service runs the driver; users
//! [`lock`](SharedStream::lock) the handle to get a [`StreamGuard`], which reads and
//! writes the stream (it implements futures-io's `AsyncRead`/`AsyncWrite`, or
//! Tokio's for Tokio streams). One guard at a time.
//!
//! # Noticing a loss
//!
//! While nobody holds the stream, the driver reads ahead into a buffer, so that it
//! notices the peer closing the stream (EOF) or the stream failing even when the
//! peer said something first (a greeting, a "too many clients" line, a goodbye)
//! and nobody is reading. While someone holds it, the driver waits: a read through
//! the guard that sees EOF or an error, or a failed write, tells the driver.
//! Either way the driver future ends: the service learns of the loss without
//! anyone reporting it. A half-close (the peer's EOF) is a loss too.
//!
//! The read-ahead buffer is allocated only once bytes arrive while nobody holds the
//! stream (an idle connection allocates nothing but the shared state), holds at
//! most [`SharedStream::READ_AHEAD_LIMIT`] (16 KiB) bytes, and is freed once read.
//! When it is full the driver stops reading until someone reads: a peer that sends
//! more than that and then closes while nobody reads is noticed only once someone
//! reads. A read through a guard returns the buffered bytes first (as many as fit),
//! and reads the stream itself only once the buffer is empty, so no byte is lost or
//! reordered.
//!
//! # After a loss
//!
//! Once the stream is known to be lost, nothing more is read from it. The next
//! readers get the bytes read ahead, in order, then the EOF (`Ok(0)`) or the error
//! that ended the stream (its [`io::ErrorKind`] and message; the first reader gets
//! the original error), and again on every later read. This still holds after the
//! service has dropped the driver following the loss: [`lock`](SharedStream::lock)
//! keeps succeeding for that. Dropping the driver after a loss drops the stream
//! (closing the socket); from then on writes, flushes and shutdowns fail with
//! [`io::ErrorKind::NotConnected`].
//!
//! # Closed by the service
//!
//! The service closes a connection by dropping its driver before it ended (on
//! `stop()`, on `disconnect(id)`). That drops the stream at once, even while a
//! guard is out: the socket is closed and the peer sees EOF (or a reset). Any
//! read-ahead is discarded. Every read, write, flush and shutdown through an
//! outstanding guard then fails with [`io::ErrorKind::NotConnected`], including
//! one already pending (it is woken), and so does every later
//! [`lock`](SharedStream::lock).
//!
//! # Design
//!
//! The stream sits in a `std::sync::Mutex`, locked only for the duration of one
//! poll of the stream (never across an `await`), so that closing can take the
//! stream out from under a guard and drop it without waiting for the guard to be
//! released. Exclusive use between guards is a separate flag (an atomic), held by
//! the guard, and by the driver for one poll (a held stream is not watched); a
//! [`lock`](SharedStream::lock) that finds it held waits on an `event_listener`
//! event, notified on every release (a waiter dropped once notified passes the
//! notification on, so a cancelled `lock` loses nobody's turn). The driver's waker
//! and the current guard's pending read and write-side wakers (two, so that a
//! guard split into read and write halves polled from two tasks has both woken)
//! are kept under the std mutex, and closing wakes the guard's: they see the stream
//! gone. The stream is never dropped while the mutex is held, and a stream that
//! panicked in a poll (poisoning the mutex) does not cause a second panic: what the
//! mutex guards is still consistent.
//!
//! The driver reads ahead through a 4 KiB buffer on its stack and appends what it
//! got to a `VecDeque`, grown in powers of two up to the limit; the end of a lost
//! stream is kept as the `io::Error` itself (handed to the first reader, copied for
//! the next ones). Both are kept out of line, in a block made only once bytes
//! arrive or the stream ends, so an idle connection keeps a null pointer for them.

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{fence, AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use std::boxed::Box;
use std::collections::VecDeque;
use std::io::{self, Read as _};
use std::string::ToString as _;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard as StdMutexGuard, OnceLock, PoisonError};

use event_listener::{Event, EventListener};

use super::liveness::{self, Activity};

/// Reads from `S` with whichever I/O traits it implements (futures-io or Tokio's).
pub(crate) type ReadFn<S> = fn(Pin<&mut S>, &mut Context<'_>, &mut [u8]) -> Poll<io::Result<usize>>;

/// The most bytes the driver reads ahead while nobody holds the stream.
const READ_AHEAD_LIMIT: usize = 16 * 1024;
/// The driver reads ahead in pieces of at most this size (on its stack).
const CHUNK: usize = 4 * 1024;

/// How the stream ended.
enum End {
    Eof,
    Failed(io::Error),
}

impl End {
    /// The read result that reports this end: the original error the first time,
    /// then copies (same kind and message).
    fn report(&mut self) -> io::Result<usize> {
        match self {
            End::Eof => Ok(0),
            End::Failed(error) => {
                let copy = copy_error(error);
                Err(core::mem::replace(error, copy))
            }
        }
    }
}

fn copy_error(error: &io::Error) -> io::Error {
    io::Error::new(error.kind(), error.to_string())
}

/// What only a stream that read ahead or ended keeps: [`Io::ahead`].
#[derive(Default)]
struct Ahead {
    /// Bytes the driver read ahead, not read by anyone yet (freed once read).
    bytes: VecDeque<u8>,
    /// How the stream ended, once known (a loss): reported to readers after `bytes`.
    end: Option<End>,
}

struct Io<S> {
    /// Taken (and dropped) when the driver is dropped.
    stream: Option<S>,
    /// The read-ahead and the end, out of line: `None` while there is neither.
    ahead: Option<Box<Ahead>>,
    /// The driver's waker: a released guard and a loss wake it.
    driver: Option<Waker>,
    /// The current guard's pending read.
    reader: Option<Waker>,
    /// The current guard's pending write, flush or shutdown.
    writer: Option<Waker>,
}

impl<S> Io<S> {
    /// How the stream ended, once known.
    fn end(&self) -> Option<&End> {
        self.ahead.as_ref()?.end.as_ref()
    }

    /// Bytes read ahead.
    fn buffered(&self) -> usize {
        self.ahead.as_ref().map_or(0, |a| a.bytes.len())
    }

    /// The out-of-line block, made if need be.
    fn ahead(&mut self) -> &mut Ahead {
        self.ahead.get_or_insert_with(Box::default)
    }

    /// Notes how the stream ended (the first end stays).
    fn set_end(&mut self, end: End) {
        let ahead = self.ahead();
        if ahead.end.is_none() {
            ahead.end = Some(end);
        }
    }

    /// How the stream ended, as the driver's output: `Ok` for EOF, a copy of the
    /// error otherwise (the original is kept for the next reader).
    fn outcome(&self) -> io::Result<()> {
        match self.end() {
            Some(End::Failed(error)) => Err(copy_error(error)),
            Some(End::Eof) | None => Ok(()),
        }
    }
}

/// Keeps `waker` in `slot` (a clone, unless it would wake the same task already).
fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(kept) if kept.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

struct StreamShared<S> {
    /// The stream, locked for one poll at a time (never across an await).
    io: StdMutex<Io<S>>,
    /// Notified when exclusive use is given back (`held` cleared).
    released: Event,
    read: ReadFn<S>,
    /// What the service's liveness probe reads: bytes received, bytes sent, who
    /// holds the stream.
    activity: OnceLock<Arc<Activity>>,
    /// Exclusive use: held by the guard, and by the driver for one poll.
    held: AtomicBool,
    /// The peer closed the stream, or it failed (its end is set).
    lost: AtomicBool,
    /// The service closed the connection: it dropped the driver before it ended.
    closed: AtomicBool,
}

impl<S> StreamShared<S> {
    /// Locks the stream for one poll. A stream that panicked in a poll poisoned the
    /// mutex; what it guards is still consistent (only the stream's own state may
    /// not be), so carry on.
    fn io(&self) -> StdMutexGuard<'_, Io<S>> {
        self.io.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes exclusive use if nobody holds it; given back when the result drops.
    fn try_hold(&self) -> Option<Hold<'_, S>> {
        self.held
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            // Made only on success: dropping a `Hold` gives exclusive use back.
            .then(|| Hold(self))
    }

    /// Marks the stream lost (under the stream's lock, so that the driver, which
    /// registers its waker under it, either sees the mark or is woken), then wakes
    /// the driver.
    fn mark_lost(&self, mut io: StdMutexGuard<'_, Io<S>>) {
        self.lost.store(true, Ordering::Release);
        let driver = io.driver.take();
        drop(io);
        if let Some(driver) = driver {
            driver.wake();
        }
    }

    /// Wakes the driver (a guard was released).
    fn wake_driver(&self) {
        let driver = self.io().driver.take();
        if let Some(driver) = driver {
            driver.wake();
        }
    }
}

/// Exclusive use of the stream; given back (and a waiting `lock` notified) when
/// dropped, also on a panic.
struct Hold<'a, S>(&'a StreamShared<S>);

impl<S> Drop for Hold<'_, S> {
    fn drop(&mut self) {
        self.0.held.store(false, Ordering::Release);
        // Paired with the fence `listen` makes after registering a waiter: either
        // the waiter sees the flag clear, or it is counted here. (Notifying an
        // event nobody ever listened to would allocate its list.)
        fence(Ordering::SeqCst);
        if self.0.released.total_listeners() > 0 {
            self.0.released.notify(1);
        }
    }
}

/// Splits a [`futures-io`](futures_io) stream (smol's and async-std's `TcpStream`,
/// …) into a shareable handle and a driver future: a
/// [`Connection`](super::Connection) for a service. For Tokio streams use
/// [`redial::tokio::stream`][tokio-stream].
///
/// See [`SharedStream`] for what the driver watches, what a loss leaves for
/// readers, and what closing means.
///
#[cfg_attr(feature = "tokio", doc = "[tokio-stream]: crate::tokio::stream")]
#[cfg_attr(
    not(feature = "tokio"),
    doc = "[tokio-stream]: https://docs.rs/redial/latest/redial/tokio/fn.stream.html"
)]
pub fn stream<S>(stream: S) -> (SharedStream<S>, StreamDriver<S>)
where
    S: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin + Send + 'static,
{
    with_reader(stream, |s, cx, buf| {
        futures_io::AsyncRead::poll_read(s, cx, buf)
    })
}

pub(crate) fn with_reader<S>(stream: S, read: ReadFn<S>) -> (SharedStream<S>, StreamDriver<S>) {
    let shared = Arc::new(StreamShared {
        io: StdMutex::new(Io {
            stream: Some(stream),
            ahead: None,
            driver: None,
            reader: None,
            writer: None,
        }),
        released: Event::new(),
        read,
        activity: OnceLock::new(),
        held: AtomicBool::new(false),
        lost: AtomicBool::new(false),
        closed: AtomicBool::new(false),
    });
    (
        SharedStream {
            shared: Arc::clone(&shared),
        },
        StreamDriver { shared },
    )
}

/// The handle of a stream connection: clone it freely, [`lock`](SharedStream::lock)
/// it to read and write (one [`StreamGuard`] at a time).
///
/// # Noticing a loss
///
/// While nobody holds the stream, its [`StreamDriver`] reads ahead into a buffer,
/// so that it notices the peer closing the stream (EOF; a half-close counts) or
/// the stream failing even when the peer said something first and nobody reads.
/// The buffer is allocated only once bytes arrive, holds at most
/// [`READ_AHEAD_LIMIT`](Self::READ_AHEAD_LIMIT) (16 KiB) bytes, and is freed once
/// read; when it is full the driver stops reading until someone reads (so a peer
/// that sends more and then closes is noticed only once someone reads). While
/// someone holds the stream, a read that sees EOF or an error, or a failed write,
/// tells the driver. Either way the driver future ends, and the service learns of
/// the loss. Reads return the buffered bytes first, then read the stream itself.
///
/// # After a loss
///
/// Nothing more is read from the stream. The next readers get the bytes read
/// ahead, in order, then the EOF (`Ok(0)`) or the error that ended the stream (its
/// [`io::ErrorKind`] and message), on every later read too; `lock` keeps
/// succeeding for that, also after the service dropped the driver. Dropping the
/// driver after a loss drops the stream: writes then fail with
/// [`io::ErrorKind::NotConnected`].
///
/// # Closed by the service
///
/// When the service closes the connection (it drops the driver before it ended: on
/// `stop()`, on `disconnect(id)`), the stream is dropped at once, even while a
/// guard is out: the socket is closed and the peer sees EOF (or a reset). Any
/// read-ahead is discarded, and every read, write, flush and shutdown through an
/// outstanding guard fails with [`io::ErrorKind::NotConnected`] (one already
/// pending is woken), as does every later `lock`.
pub struct SharedStream<S> {
    shared: Arc<StreamShared<S>>,
}

impl<S> Clone for SharedStream<S> {
    fn clone(&self) -> Self {
        SharedStream {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for SharedStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedStream")
            .field("lost", &self.shared.lost.load(Ordering::Relaxed))
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl<S> SharedStream<S> {
    /// The most bytes the driver reads ahead (and keeps for the next reader) while
    /// nobody holds the stream: 16 KiB. When that much is buffered it stops reading
    /// until someone reads.
    pub const READ_AHEAD_LIMIT: usize = READ_AHEAD_LIMIT;

    /// Waits for exclusive use of the stream. The guard implements the stream's I/O
    /// traits (futures-io's `AsyncRead`/`AsyncWrite`, or Tokio's for Tokio streams).
    ///
    /// Fails with [`io::ErrorKind::NotConnected`] once the service closed the
    /// connection. After a loss it succeeds, so that readers get what the peer sent
    /// before the end (see [After a loss](SharedStream#after-a-loss)).
    pub fn lock(&self) -> StreamLock<'_, S> {
        StreamLock {
            shared: &self.shared,
            listener: None,
            waited: false,
        }
    }

    /// Whether the connection is known to be gone (lost, or closed by the service).
    pub fn is_closed(&self) -> bool {
        self.shared.lost.load(Ordering::Acquire) || self.shared.closed.load(Ordering::SeqCst)
    }
}

/// The future returned by [`SharedStream::lock`].
#[must_use = "futures do nothing unless polled"]
pub struct StreamLock<'a, S> {
    shared: &'a StreamShared<S>,
    /// Waits for the guard that holds the stream to be released.
    listener: Option<EventListener>,
    /// It had to wait for another guard (for the liveness probe: a probe's wait
    /// does not count against it).
    waited: bool,
}

impl<S> fmt::Debug for StreamLock<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamLock").finish_non_exhaustive()
    }
}

impl<'a, S> Future for StreamLock<'a, S> {
    type Output = io::Result<StreamGuard<'a, S>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let hold = loop {
            if let Some(hold) = self.shared.try_hold() {
                // Done waiting: a notification it had is not needed any more.
                self.listener = None;
                break hold;
            }
            match &mut self.listener {
                // Listen, then look again: a release in between is not missed.
                None => self.listener = Some(self.shared.released.listen()),
                Some(listener) => match Pin::new(listener).poll(cx) {
                    Poll::Ready(()) => self.listener = None,
                    Poll::Pending => {
                        self.waited = true;
                        return Poll::Pending;
                    }
                },
            }
        };
        if self.shared.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(not_connected()));
        }
        let (probe, waited) = (liveness::polling_probe(), self.waited);
        liveness::note(&self.shared.activity, |a| a.acquired(probe, waited));
        Poll::Ready(Ok(StreamGuard {
            hold: Some(hold),
            shared: self.shared,
        }))
    }
}

fn not_connected() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection was closed")
}

/// Exclusive use of a [`SharedStream`]; reads and writes like the stream.
///
/// It implements the stream's I/O traits: futures-io's `AsyncRead` and
/// `AsyncWrite` for a stream made with [`stream`], Tokio's for one made with
/// [`redial::tokio::stream`][tokio-stream]. So everything built on those
/// traits works on it, by value or by `&mut` (the traits are implemented for
/// `&mut` of a reader): the `read_*`/`write_*` extension methods, and a
/// `BufReader` for line-based protocols:
///
/// ```no_run
/// # async fn run(conn: redial::driver::SharedStream<tokio::net::TcpStream>) -> std::io::Result<()> {
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
///
/// let mut guard = conn.lock().await?;
/// guard.write_all(b"PING\r\n").await?;
/// let mut reply = String::new();
/// BufReader::new(&mut guard).read_line(&mut reply).await?; // "+PONG\r\n"
/// guard.write_all(b"QUIT\r\n").await?; // still ours
/// # Ok(()) }
/// ```
///
/// A `BufReader` may read more than it hands out: bytes left in its buffer when
/// it is dropped are gone (keep the reader for the whole exchange, or read
/// exactly what the protocol says).
///
/// It does not `Deref` to the stream: the service can close the connection (drop
/// the stream) while a guard is out, so no reference to the stream itself is
/// handed out beyond one call of [`with_stream`](StreamGuard::with_stream); and
/// going around the guard would hide a loss from the driver. For the same reason
/// there is no `AsyncBufRead` of its own: wrap it in a `BufReader`.
///
/// Once the service closes the connection, every operation fails with
/// [`io::ErrorKind::NotConnected`] (see
/// [Closed by the service](SharedStream#closed-by-the-service)).
///
#[cfg_attr(feature = "tokio", doc = "[tokio-stream]: crate::tokio::stream")]
#[cfg_attr(
    not(feature = "tokio"),
    doc = "[tokio-stream]: https://docs.rs/redial/latest/redial/tokio/fn.stream.html"
)]
pub struct StreamGuard<'a, S> {
    hold: Option<Hold<'a, S>>,
    shared: &'a StreamShared<S>,
}

impl<S> fmt::Debug for StreamGuard<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamGuard").finish_non_exhaustive()
    }
}

impl<S> StreamGuard<'_, S> {
    /// Runs `f` on the underlying stream, e.g. for its `peer_addr` or to
    /// `set_nodelay`. Fails with [`io::ErrorKind::NotConnected`] once the stream was
    /// dropped (the service closed the connection, or dropped it after a loss).
    ///
    /// `f` runs with the stream's internal lock held: keep it short, and do not
    /// use this connection from inside it.
    pub fn with_stream<R>(&mut self, f: impl FnOnce(&mut S) -> R) -> io::Result<R> {
        let mut io = self.shared.io();
        match io.stream.as_mut() {
            Some(stream) => Ok(f(stream)),
            None => Err(not_connected()),
        }
    }
}

impl<S: Unpin> StreamGuard<'_, S> {
    /// Reads: the read-ahead first, then the end of a lost stream, then the stream
    /// itself. EOF or an error marks the stream lost.
    pub(crate) fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let shared = self.shared;
        let mut io = shared.io();
        // Registered under the lock the close takes: a close after this wakes us.
        register(&mut io.reader, cx.waker());
        if shared.closed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(not_connected()));
        }
        if let Some(ahead) = io.ahead.as_deref_mut() {
            if !ahead.bytes.is_empty() {
                // Reading a VecDeque cannot fail.
                let n = ahead.bytes.read(buf).unwrap_or(0);
                // Free the buffer once read: read-ahead is the exception (and the
                // block too, unless it keeps the end).
                let mut emptied = None;
                if ahead.bytes.is_empty() {
                    emptied = Some(core::mem::take(&mut ahead.bytes));
                }
                let block = if ahead.bytes.is_empty() && ahead.end.is_none() {
                    io.ahead.take()
                } else {
                    None
                };
                drop(io);
                drop((emptied, block));
                return Poll::Ready(Ok(n));
            }
            if let Some(end) = ahead.end.as_mut() {
                return Poll::Ready(end.report());
            }
        }
        let Some(stream) = io.stream.as_mut() else {
            return Poll::Ready(Err(not_connected()));
        };
        if buf.is_empty() {
            return Poll::Ready(Ok(0)); // not an EOF
        }
        let result = (shared.read)(Pin::new(stream), cx, buf);
        let end = match &result {
            Poll::Ready(Ok(0)) => End::Eof,
            Poll::Ready(Ok(_)) => {
                liveness::note(&shared.activity, Activity::received);
                return result;
            }
            Poll::Ready(Err(error)) if error.kind() != io::ErrorKind::Interrupted => {
                End::Failed(copy_error(error))
            }
            _ => return result,
        };
        io.set_end(end);
        shared.mark_lost(io);
        result
    }

    /// Writes (a write-side operation that notes what it sent, for the probe).
    pub(crate) fn poll_write_with(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let result = self.poll_io(cx, op);
        if let Poll::Ready(Ok(n)) = result {
            if n > 0 {
                liveness::note(&self.shared.activity, Activity::sent);
            }
        }
        result
    }

    /// Runs a write-side operation; an error marks the stream lost.
    pub(crate) fn poll_io<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let shared = self.shared;
        let mut io = shared.io();
        // Registered under the lock the close takes: a close after this wakes us.
        register(&mut io.writer, cx.waker());
        let Some(stream) = io.stream.as_mut() else {
            return Poll::Ready(Err(not_connected()));
        };
        let result = op(Pin::new(stream), cx);
        if let Poll::Ready(Err(error)) = &result {
            if error.kind() != io::ErrorKind::Interrupted {
                io.set_end(End::Failed(copy_error(error)));
                shared.mark_lost(io);
            }
        }
        result
    }
}

impl<S> Drop for StreamGuard<'_, S> {
    fn drop(&mut self) {
        // Forget this guard's wakers, unlock, then let the driver watch the stream
        // again.
        let wakers = {
            let mut io = self.shared.io();
            (io.reader.take(), io.writer.take())
        };
        drop(wakers);
        liveness::note(&self.shared.activity, Activity::released);
        drop(self.hold.take());
        self.shared.wake_driver();
    }
}

impl<S: futures_io::AsyncRead + Unpin> futures_io::AsyncRead for StreamGuard<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_with(cx, buf)
    }
}

impl<S: futures_io::AsyncWrite + Unpin> futures_io::AsyncWrite for StreamGuard<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(cx, |s, cx| s.poll_close(cx))
    }
}

/// The driver future of a stream connection: ends when the stream is lost, with
/// `Ok(())` when the peer closed it (EOF) or the error that ended it (a reset);
/// the service keeps that as the reason for the loss. The service runs it.
///
/// Dropping it before it ended closes the connection: the stream is dropped at
/// once, even while a guard is out, and every use of the handle fails with
/// [`io::ErrorKind::NotConnected`]. Dropping it after it ended drops the stream but
/// keeps what the peer sent for the next readers (see [`SharedStream`]).
#[must_use = "the service runs this future; dropping it closes the stream"]
pub struct StreamDriver<S> {
    shared: Arc<StreamShared<S>>,
}

impl<S> fmt::Debug for StreamDriver<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamDriver").finish_non_exhaustive()
    }
}

impl<S: Unpin> Future for StreamDriver<S> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = &*self.shared;
        liveness::offer(&shared.activity);
        let mut io = shared.io();
        // Registered first, under the lock a loss is marked and a guard's waker
        // taken under: a guard released or a loss after this wakes us.
        register(&mut io.driver, cx.waker());
        if shared.lost.load(Ordering::Acquire) {
            return Poll::Ready(io.outcome());
        }
        let Some(hold) = shared.try_hold() else {
            return Poll::Pending; // in use: its guard wakes us when released
        };
        let mut chunk = [0u8; CHUNK];
        while io.end().is_none() {
            let buffered = io.buffered();
            let room = READ_AHEAD_LIMIT - buffered;
            if room == 0 {
                return Poll::Pending; // full: the next reader's guard wakes us
            }
            let Some(stream) = io.stream.as_mut() else {
                return Poll::Pending; // unreachable: only dropping the driver takes it
            };
            let piece = &mut chunk[..room.min(CHUNK)];
            match (shared.read)(Pin::new(stream), cx, piece) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => io.set_end(End::Eof),
                Poll::Ready(Ok(n)) => {
                    liveness::note(&shared.activity, Activity::received);
                    // Grow to a power of two, never beyond the limit.
                    let want = (buffered + n)
                        .next_power_of_two()
                        .clamp(64, READ_AHEAD_LIMIT);
                    let bytes = &mut io.ahead().bytes;
                    bytes.reserve_exact(want - buffered);
                    bytes.extend(&piece[..n]);
                }
                Poll::Ready(Err(error)) if error.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(error)) => io.set_end(End::Failed(error)),
            }
        }
        let outcome = io.outcome();
        drop(io);
        drop(hold);
        shared.lost.store(true, Ordering::Release);
        Poll::Ready(outcome)
    }
}

impl<S> Drop for StreamDriver<S> {
    fn drop(&mut self) {
        let shared = &*self.shared;
        let (stream, discarded, wakers) = {
            let mut io = shared.io();
            let discarded = if io.end().is_none() {
                // Dropped before it ended: the service closed the connection.
                shared.closed.store(true, Ordering::SeqCst);
                io.ahead.take()
            } else {
                // Lost: keep what the peer sent, and how it ended, for the readers.
                None
            };
            let wakers = [io.reader.take(), io.writer.take(), io.driver.take()];
            (io.stream.take(), discarded, wakers)
        };
        // Close the stream now, outside our lock, even if a guard is out; then
        // wake the guard's pending operations: they fail with NotConnected.
        drop(stream);
        drop(discarded);
        let [reader, writer, _driver] = wakers;
        for waker in [reader, writer].into_iter().flatten() {
            waker.wake();
        }
    }
}
