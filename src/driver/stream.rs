//! A plain byte stream (a `TcpStream`, a TLS stream…) as a [`Connection`](super::Connection).
//!
//! [`stream`] splits a stream into a shareable [`SharedStream`] handle and a
//! [`StreamDriver`] future. While nobody holds the stream, the driver watches it
//! for the peer closing it (EOF) or an error, with a one-byte read-ahead that is
//! handed to the next reader, so no data is lost. While someone holds it, a read
//! that sees EOF or an error, or a failed write, tells the driver. Either way the
//! driver future ends, and the service learns of the loss without anyone
//! reporting it. When the service closes the connection, it drops the driver,
//! which drops the stream (closing the socket) as soon as nobody holds it.

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll};
use std::io;
use std::sync::Arc;

use futures_util::lock::{Mutex, MutexGuard, MutexLockFuture};
use futures_util::task::AtomicWaker;

/// Reads from `S` with whichever I/O traits it implements (futures-io or Tokio's).
pub(crate) type ReadFn<S> = fn(Pin<&mut S>, &mut Context<'_>, &mut [u8]) -> Poll<io::Result<usize>>;

struct Io<S> {
    stream: Option<S>,
    ahead: Option<u8>,
}

struct StreamShared<S> {
    io: Mutex<Io<S>>,
    /// The peer closed the stream, or it failed.
    lost: AtomicBool,
    /// The service closed the connection (dropped the driver).
    closed: AtomicBool,
    driver: AtomicWaker,
    read: ReadFn<S>,
}

impl<S> StreamShared<S> {
    fn mark_lost(&self) {
        self.lost.store(true, Ordering::Release);
        self.driver.wake();
    }
}

/// Splits a [`futures-io`](futures_io) stream (smol's and async-std's `TcpStream`,
/// …) into a shareable handle and a driver future: a
/// [`Connection`](super::Connection) for a service. For Tokio streams use
/// [`redial::tokio::stream`](crate::tokio::stream).
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
        io: Mutex::new(Io {
            stream: Some(stream),
            ahead: None,
        }),
        lost: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        driver: AtomicWaker::new(),
        read,
    });
    (
        SharedStream {
            shared: Arc::clone(&shared),
        },
        StreamDriver { shared },
    )
}

/// The handle of a stream connection: clone it freely, [`lock`](SharedStream::lock)
/// it to read and write.
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
    /// Waits for exclusive use of the stream. The guard implements the stream's I/O
    /// traits (futures-io's `AsyncRead`/`AsyncWrite`, or Tokio's for Tokio streams).
    /// Fails with [`io::ErrorKind::NotConnected`] once the service closed the connection.
    pub fn lock(&self) -> StreamLock<'_, S> {
        StreamLock {
            shared: &self.shared,
            lock: self.shared.io.lock(),
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
    lock: MutexLockFuture<'a, Io<S>>,
}

impl<S> fmt::Debug for StreamLock<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamLock").finish_non_exhaustive()
    }
}

impl<'a, S> Future for StreamLock<'a, S> {
    type Output = io::Result<StreamGuard<'a, S>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let guard = match Pin::new(&mut self.lock).poll(cx) {
            Poll::Ready(guard) => guard,
            Poll::Pending => return Poll::Pending,
        };
        let mut guard = guard;
        if self.shared.closed.load(Ordering::SeqCst) {
            guard.stream = None;
        }
        if guard.stream.is_none() {
            return Poll::Ready(Err(not_connected()));
        }
        Poll::Ready(Ok(StreamGuard {
            guard: Some(guard),
            shared: self.shared,
        }))
    }
}

fn not_connected() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection was closed")
}

/// Exclusive use of a [`SharedStream`]; implements the stream's I/O traits.
pub struct StreamGuard<'a, S> {
    guard: Option<MutexGuard<'a, Io<S>>>,
    shared: &'a StreamShared<S>,
}

impl<S> fmt::Debug for StreamGuard<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamGuard").finish_non_exhaustive()
    }
}

impl<S: Unpin> StreamGuard<'_, S> {
    fn io(&mut self) -> &mut Io<S> {
        self.guard
            .as_mut()
            .expect("the guard is only taken on drop")
    }

    /// Reads, handing out the read-ahead byte first; EOF or an error marks the stream lost.
    pub(crate) fn poll_read_with(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let read = self.shared.read;
        let io = self.io();
        let Some(stream) = io.stream.as_mut() else {
            return Poll::Ready(Err(not_connected()));
        };
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let (offset, rest) = match io.ahead.take() {
            Some(byte) => {
                buf[0] = byte;
                (1, &mut buf[1..])
            }
            None => (0, buf),
        };
        if offset == 1 && rest.is_empty() {
            return Poll::Ready(Ok(1));
        }
        match read(Pin::new(stream), cx, rest) {
            Poll::Pending if offset == 1 => Poll::Ready(Ok(1)),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(n)) => {
                if n == 0 {
                    self.shared.mark_lost();
                }
                Poll::Ready(Ok(offset + n))
            }
            Poll::Ready(Err(error)) => {
                self.shared.mark_lost();
                if offset == 1 {
                    Poll::Ready(Ok(1))
                } else {
                    Poll::Ready(Err(error))
                }
            }
        }
    }

    /// Runs a write-side operation; an error marks the stream lost.
    pub(crate) fn poll_io<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        let Some(stream) = self.io().stream.as_mut() else {
            return Poll::Ready(Err(not_connected()));
        };
        let result = op(Pin::new(stream), cx);
        if let Poll::Ready(Err(_)) = &result {
            self.shared.mark_lost();
        }
        result
    }
}

impl<S> Drop for StreamGuard<'_, S> {
    fn drop(&mut self) {
        // Unlock first, then let the driver watch the stream again (or, if the
        // service closed the connection meanwhile, close the stream).
        drop(self.guard.take());
        if self.shared.closed.load(Ordering::SeqCst) {
            if let Some(mut io) = self.shared.io.try_lock() {
                io.stream = None;
            }
        }
        self.shared.driver.wake();
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
        self.get_mut().poll_io(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(cx, |s, cx| s.poll_close(cx))
    }
}

/// The driver future of a stream connection: ends when the stream is lost. The
/// service runs it; dropping it closes the stream (once nobody holds it).
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
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shared = &*self.shared;
        // Register first: a guard dropped after this wakes us.
        shared.driver.register(cx.waker());
        if shared.lost.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let Some(mut io) = shared.io.try_lock() else {
            return Poll::Pending; // in use: its guard wakes us when dropped
        };
        if io.ahead.is_some() {
            return Poll::Pending; // unread data: the next reader's guard wakes us
        }
        let Some(stream) = io.stream.as_mut() else {
            return Poll::Ready(());
        };
        let mut byte = [0u8];
        match (shared.read)(Pin::new(stream), cx, &mut byte) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                shared.lost.store(true, Ordering::Release);
                Poll::Ready(())
            }
            Poll::Ready(Ok(_)) => {
                io.ahead = Some(byte[0]);
                Poll::Pending
            }
        }
    }
}

impl<S> Drop for StreamDriver<S> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        if let Some(mut io) = self.shared.io.try_lock() {
            io.stream = None;
        }
        // Otherwise the current guard drops the stream when it is released.
    }
}
