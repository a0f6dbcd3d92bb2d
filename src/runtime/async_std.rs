//! The async-std adapter: [`AsyncStd`] runs the [async driver](crate::driver) on async-std.
//!
//! **async-std is discontinued upstream**; its authors point to smol as its successor
//! (see [`redial::smol`][mod-smol]). This adapter is kept for existing users.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> { async_std::task::block_on(async {
//! use std::time::Duration;
//! use async_std::io::{ReadExt, WriteExt};
//!
//! let service = redial::async_std::builder(|| async {
//!     let tcp = async_std::net::TcpStream::connect("127.0.0.1:7000").await?;
//!     Ok::<_, std::io::Error>(redial::async_std::stream(tcp))
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
//!
// smol's link: to the adapter when its feature is on, to docs.rs when it is off.
#![cfg_attr(feature = "smol", doc = "[mod-smol]: crate::smol")]
#![cfg_attr(
    not(feature = "smol"),
    doc = "[mod-smol]: https://docs.rs/redial/latest/redial/smol/index.html"
)]

use core::pin::Pin;
use core::time::Duration;
use std::boxed::Box;
use std::future::Future;

pub use crate::driver::stream;
use crate::driver::{Builder, ClientService, ConnectContext, Connection, Runtime, SpawnError};

/// async-std as a [`Runtime`]: spawns with `async_std::task::spawn` and sleeps with
/// `async_std::task::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) -> Result<(), SpawnError> {
        // async-std's global executor starts its own threads on first use: always works.
        drop(::async_std::task::spawn(task));
        Ok(())
    }

    fn sleep(&self, delay: Duration) -> Self::Sleep {
        Box::pin(::async_std::task::sleep(delay))
    }
}

crate::driver::adapter_builders!(AsyncStd, "async-std");
