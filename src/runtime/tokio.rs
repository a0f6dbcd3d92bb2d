//! The Tokio adapter: [`Tokio`] runs the [async driver](crate::driver) on Tokio.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let service = redial::tokio::builder(|| async {
//!     let tcp = tokio::net::TcpStream::connect("127.0.0.1:7000").await?;
//!     Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
//! })
//! .connect_timeout(Some(Duration::from_secs(5)))
//! .start()?;
//!
//! let conn = service.when_connected().await?;
//! let mut io = conn.lock().await?;
//! io.write_all(b"ping\n").await?;
//! let mut reply = [0; 5];
//! io.read_exact(&mut reply).await?;
//! drop(io);
//!
//! service.stop().await;
//! # Ok(()) }
//! ```
//!
//! A `(handle, driver future)` pair works as is, e.g. tokio-postgres:
//! `tokio_postgres::connect(..).await.map(|(client, conn)| (Arc::new(client), conn))`.
//! A message transport, a `Stream + Sink` such as tokio-tungstenite's
//! `WebSocketStream` or tokio-util's `Framed`, goes through
//! [`driver::messages`].

use core::pin::Pin;
use core::task::{ready, Context, Poll};
use core::time::Duration;
use std::future::Future;
use std::io;

use ::tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::driver::{
    self, Builder, ClientService, ConnectContext, Connection, Runtime, SharedStream, SpawnError,
    StreamDriver, StreamGuard,
};

/// Tokio as a [`Runtime`]: spawns on the Tokio runtime this thread is in (so build
/// the service inside a Tokio runtime: outside one, `build` returns
/// [`BuildError::Spawn`](crate::driver::BuildError::Spawn)) and sleeps with
/// `tokio::time::sleep`.
///
/// The service's task lives as long as that runtime: if the runtime shuts down
/// first, the service ends and every request fails at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

/// The largest future [`Tokio`] spawns inline: it fits a 256-byte task cell
/// (measured: `REDIAL_BENCH_HEAP_SIZES=1 cargo bench --features tokio --bench
/// adapters -- --quick adapters/idle_memory` lists the cell's size).
pub(crate) const INLINE_TASK: usize = 152;

impl Runtime for Tokio {
    type Sleep = ::tokio::time::Sleep;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> Result<(), SpawnError> {
        let runtime = ::tokio::runtime::Handle::try_current().map_err(|_| {
            SpawnError::new("not inside a Tokio runtime (build the service from within one)")
        })?;
        // Tokio keeps a task in a cell aligned to 128 bytes with 96 bytes of its
        // own, so a future kept inline costs its size rounded up past that (a
        // 300-byte future: a 512-byte cell); boxed, it costs the smallest cell
        // (128 bytes) and its own size. So a future that fits a 256-byte cell is
        // kept inline (a stream service's task is 152 bytes; 192 with `tracing`,
        // whose span makes it larger), a larger one boxed.
        if core::mem::size_of::<F>() <= INLINE_TASK {
            drop(runtime.spawn(task));
        } else {
            drop(runtime.spawn(std::boxed::Box::pin(task)));
        }
        Ok(())
    }

    fn sleep(&self, delay: Duration) -> Self::Sleep {
        ::tokio::time::sleep(delay)
    }
}

crate::driver::adapter_builders!(Tokio, "Tokio");

/// Splits a Tokio stream (e.g. `tokio::net::TcpStream`) into a shareable handle and
/// a driver future; see [`driver::stream`].
pub fn stream<S>(stream: S) -> (SharedStream<S>, StreamDriver<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    driver::with_reader(stream, |s, cx, buf| {
        let mut buf = ReadBuf::new(buf);
        ready!(s.poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    })
}

impl<S: AsyncRead + Unpin> AsyncRead for StreamGuard<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(self.get_mut().poll_read_with(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StreamGuard<'_, S> {
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

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(cx, |s, cx| s.poll_shutdown(cx))
    }
}
