//! Endpoints against real local servers, with a 2 s retry: failing over to a live
//! secondary costs a connect (plus the prepare timeout for a frozen primary), not
//! a retry delay; after a loss the service goes back to the primary (the rule
//! documented on `Endpoints`).
//!
//! `cargo test --all-features --test shapes failover -- --nocapture` prints the times
//! (before rounds: 2.0 s refused, 4.0 s died under it, 3.1 s frozen).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redial::driver::{ClientService, ConnectContext, Endpoints, Event, Events, SharedStream};
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
        Echo::serve(addr, false).await
    }

    /// A frozen server: it accepts connections and never answers.
    async fn frozen() -> Echo {
        Echo::serve("127.0.0.1:0".parse().unwrap(), true).await
    }

    async fn serve(addr: SocketAddr, frozen: bool) -> Echo {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                conns.spawn(async move {
                    if frozen {
                        return std::future::pending::<()>().await;
                    }
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

const RETRY: Duration = Duration::from_secs(2);

/// A port nothing listens on (connections to it are refused).
async fn refusing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

type Service = ClientService<SharedStream<TcpStream>, io::Error>;

/// A service over `endpoints` with a 2 s retry and an echo as its prepare step;
/// the log records the endpoint of every attempt.
fn service(
    endpoints: Endpoints<SocketAddr>,
    log: &Arc<std::sync::Mutex<Vec<SocketAddr>>>,
) -> redial::driver::Builder<redial::tokio::Tokio, SharedStream<TcpStream>, io::Error> {
    let log = log.clone();
    redial::tokio::builder_with_endpoints(endpoints, move |addr, _: ConnectContext| {
        log.lock().unwrap().push(addr);
        async move { TcpStream::connect(addr).await.map(redial::tokio::stream) }
    })
    .policy(move |_| RETRY)
    .prepare(|conn: SharedStream<TcpStream>| async move { echo_once(&conn).await })
}

/// Waits for the `Connected` event of connection `generation`, and says when.
async fn connected(events: &mut Events<io::Error>, generation: u64) -> Instant {
    loop {
        let event = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(events),
        )
        .await
        .unwrap_or_else(|_| panic!("no connection {generation}"))
        .expect("events end");
        if let Event::Connected { generation: g, .. } = event {
            if g == generation {
                return Instant::now();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_primary_costs_a_connect() {
    let primary = refusing().await;
    let secondary = Echo::start("127.0.0.1:0".parse().unwrap()).await;
    let log = Arc::default();
    let started = Instant::now();
    let service: Service = service(Endpoints::new([primary, secondary.addr]).unwrap(), &log)
        .start()
        .unwrap();
    let mut events = service.events();
    let took = connected(&mut events, 1).await - started;
    assert_eq!(*log.lock().unwrap(), [primary, secondary.addr]);
    assert_eq!(secondary.accepted(), 1);
    println!(
        "refused primary: on the secondary after {:.1} ms (retry {RETRY:?}; before rounds: 2.0 s)",
        took.as_secs_f64() * 1e3
    );
    assert!(took < RETRY / 2, "{took:?}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_costs_the_prepare_timeout() {
    let primary = Echo::frozen().await;
    let secondary = Echo::start("127.0.0.1:0".parse().unwrap()).await;
    let log = Arc::default();
    let prepare_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let service: Service = service(
        Endpoints::new([primary.addr, secondary.addr]).unwrap(),
        &log,
    )
    .prepare_timeout(Some(prepare_timeout))
    .start()
    .unwrap();
    let mut events = service.events();
    let took = connected(&mut events, 1).await - started;
    assert_eq!(*log.lock().unwrap(), [primary.addr, secondary.addr]);
    println!(
        "frozen primary: on the secondary after {:.1} ms (prepare timeout {prepare_timeout:?}, retry {RETRY:?}; before rounds: 3.1 s)",
        took.as_secs_f64() * 1e3
    );
    assert!(took >= prepare_timeout, "{took:?}");
    assert!(took < prepare_timeout + RETRY / 2, "{took:?}");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_dies_the_secondary_takes_over_and_the_primary_comes_back() {
    let mut primary = Echo::start("127.0.0.1:0".parse().unwrap()).await;
    let mut secondary = Echo::start("127.0.0.1:0".parse().unwrap()).await;
    let log = Arc::default();
    let healthy_after = Duration::from_millis(100);
    let service: Service = service(
        Endpoints::new([primary.addr, secondary.addr]).unwrap(),
        &log,
    )
    .reset_backoff_after(Some(healthy_after))
    .start()
    .unwrap();
    let mut events = service.events();

    // On the primary, long enough to be healthy.
    connected(&mut events, 1).await;
    assert_eq!((primary.accepted(), secondary.accepted()), (1, 0));
    tokio::time::sleep(healthy_after * 3).await;

    // The primary dies: the service goes back to it at once, finds it refused,
    // and goes on to the secondary in the same round.
    let failures_before = service.counters().failures;
    let killed = Instant::now();
    primary.kill().await;
    let to_secondary = connected(&mut events, 2).await - killed;
    let conn = service.when_connected().await.unwrap();
    echo_once(&conn).await.unwrap();
    drop(conn);
    assert_eq!(secondary.accepted(), 1, "on the secondary");
    assert_eq!(
        service.counters().failures - failures_before,
        1,
        "one failed attempt (the primary, refused) before the secondary"
    );
    println!(
        "primary died under the service: on the secondary {:.1} ms after it was killed (retry {RETRY:?}; before rounds: 4.0 s)",
        to_secondary.as_secs_f64() * 1e3
    );
    assert!(to_secondary < RETRY / 2, "{to_secondary:?}");

    // The primary is back; the secondary dies: the next round starts at the
    // primary, and finds it.
    primary = Echo::start(primary.addr).await;
    tokio::time::sleep(healthy_after * 3).await;
    let lost = Instant::now();
    secondary.kill().await;
    let back = connected(&mut events, 3).await - lost;
    let conn = service.when_connected().await.unwrap();
    echo_once(&conn).await.unwrap();
    assert_eq!(primary.accepted(), 1, "back on the primary");
    println!(
        "failback: on the primary {:.1} ms after the secondary was lost",
        back.as_secs_f64() * 1e3
    );
    let picked = log.lock().unwrap().clone();
    let (p, s) = (primary.addr, secondary.addr);
    assert_eq!(picked, [p, p, s, p], "attempts went to: {picked:?}");
    service.stop().await;
}
