//! The shared driver suite (`tests/driver/runtime_suite`) on smol.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use redial::driver::{SharedStream, StreamDriver};
use redial::smol::Smol;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

struct Rt;

impl crate::runtime_suite::TestRt for Rt {
    type Rt = Smol;
    type Stream = TcpStream;
    type Listener = TcpListener;
    type Server = TcpStream;

    fn runtime() -> Smol {
        Smol
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        smol::block_on(f)
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(f: F) {
        smol::spawn(f).detach();
    }

    async fn connect(
        addr: SocketAddr,
    ) -> io::Result<(SharedStream<TcpStream>, StreamDriver<TcpStream>)> {
        TcpStream::connect(addr).await.map(redial::smol::stream)
    }

    tcp_methods!();

    fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        Self::from_std(std::net::TcpListener::bind(addr)?)
    }

    fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener::from(smol::Async::new(listener)?))
    }
}

driver_suite!(Rt);
