//! Endpoint rotation against two real local servers: the primary is killed, the
//! service is on the secondary after one failed retry, and comes back to the
//! primary at its next reconnection (the rule documented on `Endpoints`).
//!
//! `cargo test --features tokio --test failover -- --nocapture` prints the times.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redial::driver::{ConnectContext, Endpoints, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An echo server that can be killed (listener and every connection dropped) and
/// started again on the same port.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: Option<JoinHandle<()>>,
}

impl Echo {
    async fn start(addr: SocketAddr) -> Echo {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                conns.spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Echo {
            addr,
            accepted,
            task: Some(task),
        }
    }

    /// Kills it: the listener and every connection are dropped (the clients see
    /// the close, new connections are refused).
    async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn echo_once(conn: &redial::driver::SharedStream<TcpStream>) -> io::Result<()> {
    let mut io = conn.lock().await?;
    io.write_all(b"ping").await?;
    let mut reply = [0u8; 4];
    io.read_exact(&mut reply).await?;
    assert_eq!(&reply, b"ping");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_dies_the_secondary_takes_over_and_the_primary_comes_back() {
    let mut primary = Echo::start("127.0.0.1:0".parse().unwrap()).await;
    let mut secondary = Echo::start("127.0.0.1:0".parse().unwrap()).await;
    let endpoints = Endpoints::new([primary.addr, secondary.addr]).unwrap();
    let picked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = picked.clone();
    let retry = Duration::from_millis(50);
    let service = redial::tokio::builder_with_context(move |ctx: ConnectContext| {
        let addr = endpoints.pick(&ctx);
        log.lock().unwrap().push(addr);
        async move { TcpStream::connect(addr).await.map(redial::tokio::stream) }
    })
    .policy(move |_| retry)
    .start()
    .unwrap();
    let mut events = service.events();
    let within = |what: &'static str| {
        move |r: Result<_, tokio::time::error::Elapsed>| r.unwrap_or_else(|_| panic!("{what}"))
    };

    // On the primary.
    let conn = service.when_connected().await.unwrap();
    echo_once(&conn).await.unwrap();
    assert_eq!((primary.accepted(), secondary.accepted()), (1, 0));
    drop(conn);

    // The primary dies: one retry finds it gone, the next goes to the secondary.
    let failures_before = service.counters().failures;
    let killed = Instant::now();
    primary.kill().await;
    let to_secondary = loop {
        let event = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut events),
        )
        .await
        .map(|e| e.expect("events end"));
        if let Event::Connected { generation: 2, .. } = within("no second connection")(event) {
            break killed.elapsed();
        }
    };
    // An echo proves the server has accepted the connection (the client can be
    // connected while it still waits in the listener's backlog).
    let conn = service.when_connected().await.unwrap();
    echo_once(&conn).await.unwrap();
    assert_eq!(secondary.accepted(), 1, "on the secondary");
    assert_eq!(
        service.counters().failures - failures_before,
        1,
        "one failed retry (the primary, refused) before the secondary"
    );
    println!(
        "failover: on the secondary {} ms after the primary was killed (retry delay {} ms, one refused retry)",
        to_secondary.as_millis(),
        retry.as_millis()
    );

    // The primary is back; the secondary dies: the next reconnection goes to the
    // primary first, as the rule says, and finds it.
    primary = Echo::start(primary.addr).await;
    let lost = Instant::now();
    secondary.kill().await;
    let back = loop {
        let event = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut events),
        )
        .await
        .map(|e| e.expect("events end"));
        if let Event::Connected { generation: 3, .. } = within("no third connection")(event) {
            break lost.elapsed();
        }
    };
    let conn = service.when_connected().await.unwrap();
    echo_once(&conn).await.unwrap();
    assert_eq!(primary.accepted(), 1, "back on the primary");
    println!(
        "failback: on the primary {} ms after the secondary was lost",
        back.as_millis()
    );
    let picked = picked.lock().unwrap().clone();
    let (p, s) = (primary.addr, secondary.addr);
    assert_eq!(picked, [p, p, s, p], "attempts went to: {picked:?}");
    service.stop().await;
}
