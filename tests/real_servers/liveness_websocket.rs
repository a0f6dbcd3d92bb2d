//! `messages()` speaks ping/pong, against a WebSocket echo server the
//! test runs itself (tokio-tungstenite's `accept_async`) on 127.0.0.1: with
//! `Messages::keepalive` and `Messages::ping` as the probe, pongs never reach
//! `recv()` (no echo comes back shifted), and a frozen server is found.
//!
//! `cargo test --all-features --test real_servers liveness_websocket -- --nocapture` prints the
//! figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use redial::driver::{ClientService, Loss, Messages};
use tokio::net::TcpListener;

use crate::support::{one_at_a_time, run, time_to_loss};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Ws = Messages<Message, Message, WsError>;

/// An echo server; while `frozen` it reads nothing (so it answers no ping either).
/// Counts the pings it received.
async fn echo_server(frozen: Arc<AtomicBool>, pings: Arc<AtomicU64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (frozen, pings) = (Arc::clone(&frozen), Arc::clone(&pings));
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                loop {
                    while frozen.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let next = ws.next().await;
                    if frozen.load(Ordering::Relaxed) {
                        // Frozen while it waited: what it read is never answered
                        // (a ping's pong stays queued, unsent).
                        continue;
                    }
                    match next {
                        Some(Ok(message @ Message::Text(_))) => {
                            if ws.send(message).await.is_err() {
                                return;
                            }
                        }
                        Some(Ok(Message::Ping(_))) => {
                            // tungstenite queued the pong; send it now.
                            pings.fetch_add(1, Ordering::Relaxed);
                            if ws.flush().await.is_err() {
                                return;
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    }
                }
            });
        }
    });
    format!("ws://{addr}/")
}

fn service(url: String, interval: Duration, timeout: Duration) -> ClientService<Ws, WsError> {
    redial::tokio::builder(move || {
        let url = url.clone();
        async move {
            let (ws, _) = tokio_tungstenite::connect_async(url).await?;
            let (ws, driver) = redial::driver::messages(ws);
            let ws = ws.keepalive(|| Message::Ping(Default::default()), Message::is_pong);
            Ok::<_, WsError>((ws, driver))
        }
    })
    .policy(|_| Duration::from_millis(20))
    .probe(interval, timeout, |ws: Ws| async move {
        ws.ping()
            .await
            .map_err(|gone| WsError::Io(std::io::Error::other(gone.to_string())))
    })
    .start()
    .unwrap()
}

/// 1,000 echoes with a probe every 5 ms of quiet: the pongs that come back between
/// them never reach `recv()`, so no echo is shifted (before: 423 of 531 were).
#[test]
fn pongs_never_reach_the_application() {
    let _one = one_at_a_time();
    run(async {
        const ECHOES: usize = 1000;
        let pings = Arc::new(AtomicU64::new(0));
        let url = echo_server(Arc::default(), Arc::clone(&pings)).await;
        let ws = service(url, Duration::from_millis(5), Duration::from_secs(2));
        let conn = ws.when_connected().await.unwrap();
        let mut shifted = 0;
        for i in 0..ECHOES {
            let text = format!("echo {i}");
            conn.send(Message::text(text.clone())).await.unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(5), conn.recv())
                .await
                .expect("an echo within 5 s")
                .unwrap();
            if reply != Message::text(text) {
                shifted += 1;
            }
            if i % 10 == 9 {
                // Quiet for a while: the probe pings.
                tokio::time::sleep(Duration::from_millis(12)).await;
            }
        }
        let pinged = pings.load(Ordering::Relaxed);
        println!(
            "{ECHOES} echoes with a 5 ms probe: {shifted} shifted; {pinged} pings answered \
             meanwhile, {} connections lost",
            ws.counters().losses
        );
        assert_eq!(shifted, 0);
        assert!(pinged > 0, "the probe never pinged");
        assert_eq!(ws.counters().losses, 0);
        ws.stop().await;
    });
}

/// A frozen server (it reads nothing, so no pong comes) is found by the ping,
/// within interval + timeout of the last thing it sent: frozen just after an echo
/// (the probe is due an interval after that echo, not an interval after the
/// interval in which it came), or while quiet (the last pong).
#[test]
fn a_frozen_websocket_server_is_found() {
    let _one = one_at_a_time();
    run(async {
        const ROUNDS: usize = 10;
        let (interval, timeout) = (Duration::from_millis(200), Duration::from_millis(200));
        let frozen = Arc::new(AtomicBool::new(false));
        let url = echo_server(Arc::clone(&frozen), Arc::default()).await;
        let ws = service(url, interval, timeout);
        let mut events = ws.events();
        let (mut after_echo, mut after_quiet) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            frozen.store(false, Ordering::Relaxed);
            let conn = ws.when_connected().await.unwrap();
            conn.send(Message::text("hello")).await.unwrap();
            assert_eq!(conn.recv().await.unwrap(), Message::text("hello"));
            let quiet = round % 2 == 1;
            if quiet {
                // Nothing but the probe's pings for a while before the freeze.
                tokio::time::sleep(interval * 3).await;
            }
            let (at_elapsed, reason) =
                time_to_loss(&mut events, || frozen.store(true, Ordering::Relaxed)).await;
            if quiet {
                after_quiet.push(at_elapsed);
            } else {
                after_echo.push(at_elapsed);
            }
            assert!(matches!(reason, Loss::ProbeTimedOut), "{reason:?}");
        }
        after_echo.sort();
        after_quiet.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let half = ROUNDS / 2;
        println!(
            "frozen websocket server, probe {} ms / {} ms (interval + timeout = {} ms): frozen \
             while quiet, found in {:.0} ms median, {:.0} ms worst; frozen just after an echo \
             (at most interval + timeout after it) {:.0} ms median, {:.0} ms worst",
            interval.as_millis(),
            timeout.as_millis(),
            (interval + timeout).as_millis(),
            ms(after_quiet[half / 2]),
            ms(after_quiet[half - 1]),
            ms(after_echo[half / 2]),
            ms(after_echo[half - 1]),
        );
        let slack = Duration::from_millis(150);
        assert!(
            after_quiet[half - 1] <= interval + timeout + slack,
            "{after_quiet:?}"
        );
        assert!(
            after_echo[half - 1] <= interval + timeout + slack,
            "{after_echo:?}"
        );
        // Not sooner either: the echo was a sign of life.
        assert!(
            after_echo[0] >= interval + timeout - Duration::from_millis(20),
            "{after_echo:?}"
        );
        ws.stop().await;
    });
}
