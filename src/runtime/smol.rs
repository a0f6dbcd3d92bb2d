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

crate::driver::adapter_builders!(Smol, "smol");
