//! The shared driver suite (`tests/driver/runtime_suite`) on async-std (discontinued
//! upstream; kept for existing users).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use async_std::io::{ReadExt, WriteExt};
use async_std::net::{TcpListener, TcpStream};
use redial::async_std::AsyncStd;
use redial::driver::{SharedStream, StreamDriver};

struct Rt;

impl crate::runtime_suite::TestRt for Rt {
    type Rt = AsyncStd;
    type Stream = TcpStream;
    type Listener = TcpListener;
    type Server = TcpStream;

    fn runtime() -> AsyncStd {
        AsyncStd
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        async_std::task::block_on(f)
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(f: F) {
        async_std::task::spawn(f);
    }

    async fn connect(
        addr: SocketAddr,
    ) -> io::Result<(SharedStream<TcpStream>, StreamDriver<TcpStream>)> {
        TcpStream::connect(addr)
            .await
            .map(redial::async_std::stream)
    }

    tcp_methods!();

    fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        Self::from_std(std::net::TcpListener::bind(addr)?)
    }

    fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener::from(listener))
    }
}

driver_suite!(Rt);
