//! The shared driver suite (`tests/common_driver`) on Tokio (multi-threaded, 2 workers).

mod common_driver;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use redial::driver::{SharedStream, StreamDriver};
use redial::tokio::Tokio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Rt;

impl common_driver::TestRt for Rt {
    type Rt = Tokio;
    type Stream = TcpStream;
    type Listener = TcpListener;
    type Server = TcpStream;

    fn runtime() -> Tokio {
        Tokio
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(f: F) {
        tokio::spawn(f);
    }

    async fn connect(
        addr: SocketAddr,
    ) -> io::Result<(SharedStream<TcpStream>, StreamDriver<TcpStream>)> {
        TcpStream::connect(addr).await.map(redial::tokio::stream)
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
        TcpListener::from_std(listener)
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

/// Item 7 of the driver issue: outside a Tokio runtime, `build` and `start` return a
/// typed error instead of panicking.
#[test]
fn build_outside_a_runtime_is_an_error() {
    let builder = || {
        redial::tokio::builder(|| async {
            TcpStream::connect("127.0.0.1:1")
                .await
                .map(redial::tokio::stream)
        })
    };
    for result in [builder().build(), builder().start()] {
        match result {
            Err(redial::driver::BuildError::Spawn(error)) => {
                assert!(error.to_string().contains("Tokio runtime"), "{error}");
            }
            other => panic!("expected BuildError::Spawn, got {other:?}"),
        }
    }
}
