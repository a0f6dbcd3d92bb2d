//! The shared driver suite (`tests/common_driver`) on async-std (discontinued
//! upstream; kept for existing users).

mod common_driver;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use async_std::io::{ReadExt, WriteExt};
use async_std::net::{TcpListener, TcpStream};
use redial::async_std::AsyncStd;
use redial::driver::{SharedStream, StreamDriver};

struct Rt;

impl common_driver::TestRt for Rt {
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

    async fn request(conn: SharedStream<TcpStream>, msg: &'static [u8]) -> io::Result<Vec<u8>> {
        let mut io = conn.lock().await?;
        io.write_all(msg).await?;
        let mut reply = vec![0; msg.len()];
        io.read_exact(&mut reply).await?;
        Ok(reply)
    }

    fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        Self::from_std(std::net::TcpListener::bind(addr)?)
    }

    fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        Ok(TcpListener::from(listener))
    }

    fn local_addr(listener: &TcpListener) -> SocketAddr {
        listener.local_addr().unwrap()
    }

    async fn accept(listener: &TcpListener) -> io::Result<TcpStream> {
        listener.accept().await.map(|(s, _)| s)
    }

    async fn echo(mut conn: TcpStream) -> io::Result<()> {
        let mut buf = [0; 256];
        loop {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n]).await?;
        }
    }
}

driver_suite!(Rt);
