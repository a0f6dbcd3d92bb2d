//! `Builder::prepare_err_into`: a prepare step whose error type is not the
//! connector's, converted with `Into`. Loopback TCP, every wait bounded.

#![cfg(feature = "tokio")]

use std::error::Error as StdError;
use std::io;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redial::driver::{Error, SharedStream};
use redial::Failure;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// The prepare step's own error type: not the connector's `io::Error`.
#[derive(Debug)]
struct Rejected(usize);

impl From<Rejected> for io::Error {
    fn from(e: Rejected) -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("rejected #{}", e.0),
        )
    }
}

/// A server that echoes each connection's bytes back.
async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_prepare_error_of_another_type_is_converted_and_retried() {
    let addr = echo_server().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let service = redial::tokio::builder(move || async move {
        let tcp = TcpStream::connect(addr).await?;
        Ok::<_, io::Error>(redial::tokio::stream(tcp))
    })
    .policy(|_| Duration::from_millis(5))
    // The hook's error type is `Rejected`; the service's is `io::Error`.
    .prepare_err_into(move |conn: SharedStream<TcpStream>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                return Err(Rejected(n));
            }
            let mut io = conn.lock().await.map_err(|_| Rejected(n))?;
            io.write_all(b"hi").await.map_err(|_| Rejected(n))?;
            let mut got = [0u8; 2];
            io.read_exact(&mut got).await.map_err(|_| Rejected(n))?;
            Ok(())
        }
    })
    .build()
    .unwrap();
    let fail_fast = service.when_connected_fail_after(NonZeroU32::MIN);
    let patient = service.when_connected();
    service.start();

    let err = timeout(Duration::from_secs(5), fail_fast)
        .await
        .expect("the fail-fast waiter hung")
        .map(drop)
        .unwrap_err();
    let Error::Failed(failure) = &err else {
        panic!("expected Error::Failed, got {err:?}");
    };
    let Failure::Prepare(e) = &**failure else {
        panic!("expected a prepare failure, got {failure:?}");
    };
    // Converted by `From<Rejected> for io::Error`.
    assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(e.to_string(), "rejected #0");

    let conn = timeout(Duration::from_secs(5), patient)
        .await
        .expect("the patient waiter hung")
        .unwrap();
    assert!(!conn.is_closed());
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let c = service.counters();
    assert_eq!((c.failures, c.connections), (2, 1), "{c:?}");
    timeout(Duration::from_secs(5), service.stop())
        .await
        .expect("stop hung");
}

/// The other common case: the connector's error is a boxed error, the hook's is
/// whatever its last call returns (`io::Error` here), inferred without annotations.
#[tokio::test]
async fn a_boxed_service_error_takes_an_io_error_from_the_prepare_step() {
    type BoxError = Box<dyn StdError + Send + Sync>;
    let addr = echo_server().await;
    let service = redial::tokio::builder(move || async move {
        let tcp = TcpStream::connect(addr).await?;
        Ok::<_, BoxError>(redial::tokio::stream(tcp))
    })
    .policy(|_| Duration::from_millis(5))
    .prepare_err_into(|conn: SharedStream<TcpStream>| async move {
        conn.lock().await?.write_all(b"unexpected greeting").await?;
        // The peer echoes it back: refuse the connection, with an io::Error.
        Err(io::Error::other("the server echoed our greeting"))
    })
    .start()
    .unwrap();
    let err = timeout(
        Duration::from_secs(5),
        service.when_connected_fail_after(NonZeroU32::new(2).unwrap()),
    )
    .await
    .expect("the waiter hung")
    .map(drop)
    .unwrap_err();
    let Some(Failure::Prepare(e)) = err.failure() else {
        panic!("expected a prepare failure, got {err:?}");
    };
    let io = e.downcast_ref::<io::Error>().expect("an io::Error inside");
    assert_eq!(io.to_string(), "the server echoed our greeting");
    timeout(Duration::from_secs(5), service.stop())
        .await
        .expect("stop hung");
}
