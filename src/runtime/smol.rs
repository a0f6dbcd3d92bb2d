//! The smol adapter: [`Smol`] runs the [async driver](crate::driver) on smol's global
//! executor and async-io timers. smol is the successor of async-std.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { smol::block_on(async {
//! use std::time::Duration;
//! use smol::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let service = redial::smol::builder(|| async {
//!     let tcp = smol::net::TcpStream::connect("127.0.0.1:7000").await?;
//!     Ok::<_, std::io::Error>(redial::smol::stream(tcp))
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
//! # Ok(()) }) }
//! ```

use core::time::Duration;
use std::future::Future;

pub use crate::driver::stream;
use crate::driver::{Builder, ClientService, ConnectContext, Connection, Runtime, SpawnError};

/// smol as a [`Runtime`]: spawns detached tasks with `smol::spawn` and sleeps with
/// `smol::Timer`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Smol;

impl Runtime for Smol {
    type Sleep = ::smol::Timer;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> Result<(), SpawnError> {
        // smol's global executor starts its own threads on first use: always works.
        ::smol::spawn(task).detach();
        Ok(())
    }

    fn sleep(&self, delay: Duration) -> Self::Sleep {
        ::smol::Timer::after(delay)
    }
}

/// A [`Builder`] for a service on smol; see [`ClientService::builder`].
pub fn builder<F, Fut, C, E>(connector: F) -> Builder<Smol, C::Handle, E>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<C, E>> + Send + 'static,
    C: Connection,
    E: core::fmt::Display + Send + Sync + 'static,
{
    ClientService::builder(Smol, connector)
}

/// A [`Builder`] whose connector is told about each attempt; see
/// [`ClientService::builder_with_context`].
pub fn builder_with_context<F, Fut, C, E>(connector: F) -> Builder<Smol, C::Handle, E>
where
    F: FnMut(ConnectContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<C, E>> + Send + 'static,
    C: Connection,
    E: core::fmt::Display + Send + Sync + 'static,
{
    ClientService::builder_with_context(Smol, connector)
}

/// A [`Builder`] whose connector is given each attempt's endpoint, tried in
/// rounds; see [`ClientService::builder_with_endpoints`].
pub fn builder_with_endpoints<A, F, Fut, C, E>(
    endpoints: crate::driver::Endpoints<A>,
    connector: F,
) -> Builder<Smol, C::Handle, E>
where
    A: Clone + Send + Sync + 'static,
    F: FnMut(A, ConnectContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<C, E>> + Send + 'static,
    C: Connection,
    E: core::fmt::Display + Send + Sync + 'static,
{
    ClientService::builder_with_endpoints(Smol, endpoints, connector)
}
