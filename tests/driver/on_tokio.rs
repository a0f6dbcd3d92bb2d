//! The shared driver suite (`tests/driver/runtime_suite`) on Tokio (multi-threaded, 2 workers).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use redial::driver::{SharedStream, StreamDriver};
use redial::tokio::Tokio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Rt;

impl crate::runtime_suite::TestRt for Rt {
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

    tcp_methods!();

    fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        Self::from_std(std::net::TcpListener::bind(addr)?)
    }

    fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        TcpListener::from_std(listener)
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

/// A current-thread runtime that a test drops on purpose.
fn doomed_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Checks a service whose runtime was dropped: it says it ended, and nothing hangs.
fn assert_ended<H: Clone + Send + Sync + std::fmt::Debug + 'static>(
    svc: &redial::driver::ClientService<H, io::Error>,
    pending: redial::driver::WhenConnected<H, io::Error>,
    mut watch: redial::driver::StateWatch,
) {
    use redial::driver::{Ended, Error};
    use std::time::Duration;
    assert_eq!(svc.ended(), Some(Ended::RuntimeGone));
    assert_eq!(svc.state(), redial::State::Stopped);
    let other = doomed_runtime();
    other.block_on(async {
        let within = |f| tokio::time::timeout(Duration::from_secs(5), f);
        // The waiter made before the runtime went is answered.
        let answer = within(pending).await.expect("the pending waiter hangs");
        assert!(
            matches!(answer, Err(Error::Ended(Ended::RuntimeGone))),
            "{answer:?}"
        );
        // So is every later one, at once.
        let later = within(svc.when_connected())
            .await
            .expect("a later waiter hangs");
        assert!(
            matches!(later, Err(Error::Ended(Ended::RuntimeGone))),
            "{later:?}"
        );
        tokio::time::timeout(Duration::from_secs(1), svc.stop())
            .await
            .expect("stop hangs");
        let changed = tokio::time::timeout(Duration::from_secs(1), async {
            while watch.changed().await.is_some() {}
        });
        changed.await.expect("the watch never saw the end");
        assert!(watch.is_ended());
    });
}

/// Item 1 of the driver issue: the runtime is dropped while the service connects.
#[test]
fn runtime_dropped_while_connecting_ends_the_service() {
    let hang = crate::runtime_suite::hanging();
    let rt = doomed_runtime();
    let addr = hang.addr;
    let (svc, pending, watch) = rt.block_on(async move {
        let svc = redial::tokio::builder(move || async move {
            TcpStream::connect(addr).await.map(redial::tokio::stream)
        })
        .start()
        .unwrap();
        let watch = svc.watch();
        let pending = svc.when_connected();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(svc.state(), redial::State::Connecting);
        (svc, pending, watch)
    });
    drop(rt);
    assert_ended(&svc, pending, watch);
}

/// Item 1 of the driver issue: the runtime is dropped while the service is
/// connected: the connection is closed (the peer sees it) and the service ends.
#[test]
fn runtime_dropped_while_connected_closes_and_ends() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        use std::io::Read;
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0; 16];
        // EOF (or a reset) once the client's socket is closed.
        matches!(conn.read(&mut buf), Ok(0) | Err(_))
    });
    let rt = doomed_runtime();
    let (svc, conn, pending, watch) = rt.block_on(async move {
        let svc = redial::tokio::builder(move || async move {
            TcpStream::connect(addr).await.map(redial::tokio::stream)
        })
        .start()
        .unwrap();
        let conn = svc.when_connected().await.unwrap();
        let watch = svc.watch();
        // Made, but the task never runs again to answer it.
        let pending = svc.when_connected();
        (svc, conn, pending, watch)
    });
    drop(rt);
    assert!(
        peer.join().unwrap(),
        "the peer never saw the connection close"
    );
    assert!(conn.is_closed());
    assert_ended(&svc, pending, watch);
}
