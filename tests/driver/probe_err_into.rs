//! `Builder::probe_err_into`: a probe whose error type is not the
//! connector's, converted with `Into`; its failure is a loss that names the
//! converted error. Loopback TCP, every wait bounded.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redial::driver::{Event, Loss, SharedStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// The probe's own error type: not the connector's `io::Error`.
#[derive(Debug)]
struct NoPong(usize);

impl From<NoPong> for io::Error {
    fn from(e: NoPong) -> io::Error {
        io::Error::other(format!("no pong #{}", e.0))
    }
}

#[tokio::test]
async fn a_probe_error_of_another_type_is_converted_and_loses_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept and keep the connections open, silent.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let service = redial::tokio::builder(move || async move {
        let tcp = TcpStream::connect(addr).await?;
        Ok::<_, io::Error>(redial::tokio::stream(tcp))
    })
    .policy(|_| Duration::from_millis(5))
    .probe_err_into(
        Duration::from_millis(20),
        Duration::from_secs(5),
        move |_conn: SharedStream<TcpStream>| {
            let n = c.fetch_add(1, Ordering::Relaxed);
            async move {
                // The first check of each connection passes; the next fails.
                if n.is_multiple_of(2) {
                    Ok(())
                } else {
                    Err(NoPong(n))
                }
            }
        },
    )
    .start()
    .unwrap();
    let mut events = service.events();
    let reason = timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Event::Lost { reason, .. }) = events.next().await {
                return reason;
            }
        }
    })
    .await
    .expect("the failed probe loses the connection");
    let Loss::ProbeFailed(message) = &reason else {
        panic!("expected a failed probe, got {reason:?}");
    };
    assert!(message.starts_with("no pong #"), "{message}");
    // And the service reconnects.
    timeout(Duration::from_secs(10), service.when_connected())
        .await
        .expect("connected again")
        .unwrap();
    assert!(service.counters().connections >= 2);
    service.stop().await;
}
