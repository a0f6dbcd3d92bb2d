//! redial keeping a real WebSocket client (tokio-tungstenite) connected through
//! `redial::driver::messages` to a real WebSocket echo server that really goes away.
//!
//! The echo server runs in the test (tokio-tungstenite's `accept_async`) on a free
//! 127.0.0.1 port. It is restarted 50 times: the listener and every connection are
//! dropped (the client sees its TCP connection closed with no closing handshake),
//! then it binds the same port again. Meanwhile several callers send messages
//! through `when_connected` and receive echoes. Every wait is bounded by a timeout.
//!
//! Run: `cargo test --all-features --test real_servers websocket:: -- --nocapture`
//! (prints figures).

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use redial::driver::{ClientService, Messages};
use redial::policy::Backoff;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::restarts::{Caller, Stage, Workers};
use crate::support::{eventually, median_and_max, one_at_a_time, open_fds, run};

/// The connection's handle: send `Message`s, receive `Message`s.
type Ws = Messages<Message, Message, WsError>;
type WsService = ClientService<Ws, WsError>;

// ----- the echo server ------------------------------------------------------------

/// A WebSocket echo server on a fixed port that can go away (listener and every
/// connection dropped) and come back on the same port.
struct EchoServer {
    port: u16,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    /// Connections open now (accepted, not yet dropped).
    live: Arc<AtomicI64>,
    /// Connections accepted since the last (re)start.
    accepted: Arc<AtomicU64>,
    /// When the current listener was bound.
    up_since: Option<Instant>,
}

impl EchoServer {
    async fn start() -> EchoServer {
        for _ in 0..20 {
            let mut server = EchoServer {
                port: crate::support::free_port(),
                running: None,
                live: Arc::new(AtomicI64::new(0)),
                accepted: Arc::new(AtomicU64::new(0)),
                up_since: None,
            };
            if server.bind().await.is_ok() {
                return server;
            }
        }
        panic!("could not bind an echo server");
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }

    async fn bind(&mut self) -> io::Result<()> {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await?;
        self.accepted.store(0, Ordering::SeqCst);
        self.up_since = Some(Instant::now());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(
            listener,
            stopped,
            Arc::clone(&self.live),
            Arc::clone(&self.accepted),
        ));
        self.running = Some((stop, task));
        Ok(())
    }

    /// Goes away: drops the listener and every connection (and waits until they
    /// are dropped).
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            task.await.expect("the echo server panicked");
        }
        self.up_since = None;
        assert_eq!(self.live.load(Ordering::SeqCst), 0);
    }

    /// Comes back on the same port.
    async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.bind().await {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("echo server rebind on {} failed ({e}); retrying", self.port);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("could not rebind the echo server on {}: {e}", self.port),
            }
        }
    }
}

/// Decrements the live-connection count when a connection task ends or is aborted.
struct Live(Arc<AtomicI64>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(
    listener: TcpListener,
    mut stop: oneshot::Receiver<()>,
    live: Arc<AtomicI64>,
    accepted: Arc<AtomicU64>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            conn = listener.accept() => {
                if let Ok((tcp, _)) = conn {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    live.fetch_add(1, Ordering::SeqCst);
                    let guard = Live(Arc::clone(&live));
                    connections.spawn(async move {
                        let _guard = guard;
                        echo_connection(tcp).await;
                    });
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await; // abort every connection and wait until dropped
}

async fn echo_connection(tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if message.is_close() {
            return;
        }
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

// ----- the client -----------------------------------------------------------------

/// The service: the connector opens a WebSocket and hands it to `messages`.
fn service(url: String) -> WsService {
    redial::tokio::builder(move || {
        let url = url.clone();
        async move {
            let (ws, _response) =
                tokio_tungstenite::connect_async_with_config(url, None, true).await?;
            Ok::<_, WsError>(redial::driver::messages(ws))
        }
    })
    .policy(Backoff::new(Duration::from_millis(5), 2.0, Duration::from_millis(100)).unwrap())
    .connect_timeout(Some(Duration::from_secs(5)))
    .start()
    .expect("valid configuration")
}

/// One echo through the service: wait for the connection, send `text`, receive the
/// next text message. (Callers share the connection, so the echo received may be
/// another caller's: each message is received once, by one of them.)
async fn echo(ws: &WsService, text: String) -> Result<String, String> {
    let conn = ws.when_connected().await.map_err(|e| e.to_string())?;
    conn.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match conn.recv().await.map_err(|e| e.to_string())? {
            Message::Text(t) => return Ok(t.to_string()),
            Message::Close(_) => return Err("the server closed the connection".to_owned()),
            _ => {} // ping, pong, binary
        }
    }
}

/// What was sent and echoed, to check that each echo is a message sent, once.
#[derive(Default)]
struct Ledger {
    sent: Mutex<HashSet<String>>,
    echoed: Mutex<HashSet<String>>,
}

impl Ledger {
    async fn echo(&self, ws: &WsService, text: String) -> Result<String, String> {
        self.sent.lock().unwrap().insert(text.clone());
        let echoed = echo(ws, text).await?;
        assert!(
            self.sent.lock().unwrap().contains(&echoed),
            "an echo of a message never sent: {echoed:?}"
        );
        assert!(
            self.echoed.lock().unwrap().insert(echoed.clone()),
            "a message echoed twice: {echoed:?}"
        );
        Ok(echoed)
    }
}

/// The background callers of the restart loop: each message its own text.
struct Echoes {
    ws: WsService,
    ledger: Arc<Ledger>,
}

impl Caller for Echoes {
    async fn call(&self, worker: usize, n: u64, _: &Stage) -> Result<(), String> {
        self.ledger
            .echo(&self.ws, format!("w{worker}-{n}"))
            .await
            .map(drop)
    }
}

const RESTARTS: u32 = 50;
const WORKERS: usize = 4;
/// The bound on one echo: past it, it counts as hung.
const HANG: Duration = Duration::from_secs(20);

#[test]
fn fifty_restarts_every_echo_answered_none_hangs() {
    let _one = one_at_a_time();
    let fds_outside = open_fds();
    let started = Instant::now();
    run(async {
        let fds_before = open_fds();
        let mut server = EchoServer::start().await;
        let ws = service(server.url());
        let ledger = Arc::new(Ledger::default());

        let limit = Duration::from_secs(300);
        tokio::time::timeout(limit, async {
            ledger.echo(&ws, "warm-up".to_owned()).await.unwrap();

            let workers = Workers::spawn(
                Arc::new(Echoes {
                    ws: ws.clone(),
                    ledger: Arc::clone(&ledger),
                }),
                WORKERS,
                HANG,
                Duration::from_millis(1),
                "an echo",
            );

            let mut recoveries = Vec::new();
            let mut loss_seen = Vec::new();
            let mut accepted_per_restart = BTreeMap::<u64, u32>::new();
            let mut longest_outage_survived = Duration::ZERO;
            for i in 0..RESTARTS {
                let c0 = ws.counters();
                // Down: listener and connections dropped; the service sees the loss.
                workers.down();
                let killed = Instant::now();
                server.stop().await;
                eventually("the loss", Duration::from_secs(10), || {
                    ws.counters().losses > c0.losses
                })
                .await;
                loss_seen.push(killed.elapsed());

                // A message sent during the outage waits for the next connection.
                let waiter = tokio::spawn({
                    let (ws, ledger) = (ws.clone(), Arc::clone(&ledger));
                    async move { ledger.echo(&ws, format!("outage-{i}")).await }
                });
                let outage = if i % 10 == 9 {
                    Duration::from_millis(1000)
                } else {
                    Duration::from_millis(u64::from(i % 5) * 10)
                };
                tokio::time::sleep(outage).await;

                // Back on the same port: an echo sent now must come back; how long
                // that takes is the recovery.
                server.restart().await;
                let up = server.up_since.expect("bound");
                let r = tokio::time::timeout(
                    Duration::from_secs(10),
                    ledger.echo(&ws, format!("first-{i}")),
                )
                .await
                .expect("the first echo after the restart hung");
                recoveries.push(up.elapsed());
                assert!(
                    r.is_ok(),
                    "restart {i}: the first echo after it failed: {r:?}"
                );
                let r = tokio::time::timeout(Duration::from_secs(10), waiter)
                    .await
                    .expect("the outage waiter hung")
                    .unwrap();
                assert!(
                    r.is_ok(),
                    "restart {i}: the echo sent during the outage failed: {r:?}"
                );
                longest_outage_survived = longest_outage_survived.max(killed.elapsed());
                workers.up();

                for k in 0..3 {
                    let r = tokio::time::timeout(
                        Duration::from_secs(10),
                        ledger.echo(&ws, format!("after-{i}-{k}")),
                    )
                    .await
                    .expect("an echo after the restart hung");
                    assert!(
                        r.is_ok(),
                        "restart {i}: an echo after the restart failed: {r:?}"
                    );
                }
                // The server's view: one connection, accepted once.
                assert_eq!(server.live.load(Ordering::SeqCst), 1, "restart {i}");
                *accepted_per_restart
                    .entry(server.accepted.load(Ordering::SeqCst))
                    .or_default() += 1;
                // Up for a while: the callers' messages flow.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }

            let t = workers.finish().await;
            let c = ws.counters();
            let stopping = Instant::now();
            tokio::time::timeout(Duration::from_secs(10), ws.stop())
                .await
                .expect("stop hung");
            eventually(
                "the server to see the client go",
                Duration::from_secs(5),
                || server.live.load(Ordering::SeqCst) == 0,
            )
            .await;
            let gone_in = stopping.elapsed();

            let (rec_median, rec_worst) = median_and_max(&recoveries);
            let (loss_median, loss_worst) = median_and_max(&loss_seen);
            println!(
                "websocket: {RESTARTS} restarts (listener and connections dropped, same port) in \
                 {:?}; messages from {WORKERS} callers: sent {}, echoed {}, failed {}, hung {}; \
                 sent and answered while up: {} ({} failed); echoes in all (main loop \
                 included): {}",
                started.elapsed(),
                t.issued,
                t.answered,
                t.failed,
                t.hung,
                t.clean,
                t.clean_failed,
                ledger.echoed.lock().unwrap().len()
            );
            println!("websocket: errors returned to callers: {:?}", t.errors);
            println!(
                "websocket: recovery (server listening -> first echo through the service): \
                 median {rec_median:?}, worst {rec_worst:?}; loss seen after the server went: \
                 median {loss_median:?}, worst {loss_worst:?}; longest outage a waiting message \
                 survived: {longest_outage_survived:?}"
            );
            println!(
                "websocket: connections the server accepted per restart (count: restarts): \
                 {accepted_per_restart:?}; open after stop(): 0 within {gone_in:?}; counters {c:?}"
            );

            t.check("echoes");
            assert_eq!(c.losses, u64::from(RESTARTS), "{c:?}");
            assert_eq!(c.connections, u64::from(RESTARTS) + 1, "{c:?}");
            assert_eq!(
                accepted_per_restart.keys().copied().collect::<Vec<_>>(),
                vec![1],
                "the client connected more than once per restart"
            );
        })
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"));

        drop(ws);
        server.stop().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fds_after = open_fds();
        println!("websocket: fds in the runtime: {fds_before} before, {fds_after} after");
        assert_eq!(fds_after, fds_before, "file descriptors leaked");
    });
    let fds_end = open_fds();
    println!("websocket: fds outside the runtime: {fds_outside} before, {fds_end} after");
    assert_eq!(fds_end, fds_outside, "file descriptors leaked");
}
