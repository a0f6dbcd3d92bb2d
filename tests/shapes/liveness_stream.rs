//! Inbound activity as liveness on a byte stream (`redial::tokio::stream`, issue
//! 18), against a line server the test runs itself on 127.0.0.1: a probe never
//! kills a connection that is busy with slow requests to a live peer, and a frozen
//! peer is still found, idle or with a request waiting.
//!
//! `cargo test --all-features --test shapes liveness_stream -- --nocapture` prints the
//! figures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redial::driver::{ClientService, Event, Loss, SharedStream};
use redial::State;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

type Lines = ClientService<SharedStream<TcpStream>, std::io::Error>;

/// The timing is what is measured: one test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A line server: answers each line with the same line after `delay` (a `PING`
/// at once: the probe is also the new connection's first check, which must answer
/// within the probe's timeout); while `frozen`, it reads nothing and answers
/// nothing (its sockets stay open).
async fn line_server(delay: Duration, frozen: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let frozen = Arc::clone(&frozen);
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut lines = BufReader::new(read).lines();
                loop {
                    while frozen.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let Ok(Some(line)) = lines.next_line().await else {
                        return;
                    };
                    if line != "PING" {
                        tokio::time::sleep(delay).await;
                    }
                    while frozen.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One request: lock, write a line, read the answer.
async fn request(conn: &SharedStream<TcpStream>, line: &str) -> std::io::Result<String> {
    let mut guard = conn.lock().await?;
    guard.write_all(format!("{line}\n").as_bytes()).await?;
    let mut reply = String::new();
    BufReader::new(&mut guard).read_line(&mut reply).await?;
    if reply.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(reply.trim_end().to_owned())
}

fn service(addr: SocketAddr, interval: Duration, timeout: Duration) -> Lines {
    redial::tokio::builder(move || async move {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
    })
    .policy(|_| Duration::from_millis(20))
    .probe(
        interval,
        timeout,
        |conn: SharedStream<TcpStream>| async move { request(&conn, "PING").await.map(drop) },
    )
    .start()
    .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The case: each answer takes 800 ms, requests back to back, a probe
/// every 300 ms with a 500 ms timeout. Before, 2 of 4 requests were lost to
/// `ProbeTimedOut`; now the answers count as liveness and the probe waits for the
/// stream without that wait counting.
#[test]
fn a_connection_busy_with_slow_requests_to_a_live_peer_is_never_dropped() {
    let _serial = serial();
    runtime().block_on(async {
        const REQUESTS: usize = 8;
        let addr = line_server(Duration::from_millis(800), Arc::default()).await;
        let lines = service(addr, Duration::from_millis(300), Duration::from_millis(500));
        let mut events = lines.events();
        let conn = lines.when_connected().await.unwrap();
        let started = Instant::now();
        let mut failed = 0;
        for i in 0..REQUESTS {
            match request(&conn, &format!("request {i}")).await {
                Ok(reply) => assert_eq!(reply, format!("request {i}")),
                Err(_) => failed += 1,
            }
        }
        let took = started.elapsed();
        let losses = lines.counters().losses;
        lines.stop().await;
        let mut lost = Vec::new();
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(10), events.next()).await
        {
            if let Event::Lost { reason, .. } = event {
                lost.push(reason);
            }
        }
        println!(
            "800 ms answers, back to back, probe 300 ms / 500 ms: {REQUESTS} requests in \
             {took:.1?}, {failed} failed, {losses} connections lost"
        );
        assert_eq!((failed, losses), (0, 0), "{lost:?}");
        assert!(lost.is_empty(), "{lost:?}");
    });
}

/// A frozen peer is found: idle (the probe is not answered) within the interval
/// plus the timeout after the last answer (the machine arms the rest of an
/// interval from it), and with the application's request waiting for its answer
/// (the probe waits behind it, and gets one more timeout) within the interval plus
/// twice the timeout; never sooner than the interval plus the timeout.
#[test]
fn a_frozen_peer_is_found_idle_and_with_a_request_waiting() {
    let _serial = serial();
    runtime().block_on(async {
        const ROUNDS: usize = 6;
        let interval = Duration::from_millis(200);
        let timeout = Duration::from_millis(200);
        let frozen = Arc::new(AtomicBool::new(false));
        let addr = line_server(Duration::from_millis(10), Arc::clone(&frozen)).await;
        let lines = service(addr, interval, timeout);
        let mut events = lines.events();
        let (mut idle, mut waiting) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            frozen.store(false, Ordering::Relaxed);
            let conn = lines.when_connected().await.unwrap();
            assert_eq!(request(&conn, "hello").await.unwrap(), "hello");
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(1), events.next()).await
            {}
            frozen.store(true, Ordering::Relaxed);
            let at = Instant::now();
            let with_request = round % 2 == 1;
            let pending = with_request.then(|| {
                let conn = conn.clone();
                tokio::spawn(async move { request(&conn, "never answered").await })
            });
            let reason = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    if let Some(Event::Lost { reason, .. }) = events.next().await {
                        return reason;
                    }
                }
            })
            .await
            .expect("the frozen peer was never found");
            let found = at.elapsed();
            assert!(matches!(reason, Loss::ProbeTimedOut), "{reason:?}");
            if let Some(pending) = pending {
                // The waiting request fails with the connection, not for ever.
                assert!(pending.await.unwrap().is_err());
                waiting.push(found);
            } else {
                idle.push(found);
            }
        }
        idle.sort();
        waiting.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "frozen peer, probe {} ms / {} ms: idle found in {:.0} ms median, {:.0} ms worst; \
             with a request waiting {:.0} ms median, {:.0} ms worst",
            interval.as_millis(),
            timeout.as_millis(),
            ms(idle[idle.len() / 2]),
            ms(idle[idle.len() - 1]),
            ms(waiting[waiting.len() / 2]),
            ms(waiting[waiting.len() - 1]),
        );
        let slack = Duration::from_millis(150);
        assert!(
            idle[idle.len() - 1] <= interval + timeout + slack,
            "{idle:?}"
        );
        assert!(
            waiting[waiting.len() - 1] <= interval + timeout * 2 + slack,
            "{waiting:?}"
        );
        // Never sooner than the bound a live peer can count on.
        assert!(
            idle[0] >= interval + timeout - Duration::from_millis(5),
            "{idle:?}"
        );
        assert!(
            waiting[0] >= interval + timeout * 2 - Duration::from_millis(5),
            "{waiting:?}"
        );
        lines.stop().await;
        assert_eq!(lines.state(), State::Stopped);
    });
}

/// The other case: a reader holds the stream while it waits for the
/// server's pushes (one a second), a probe every 300 ms with a 300 ms timeout. The
/// probe waits behind the reader without that wait counting: no loss.
#[test]
fn a_reader_waiting_for_pushes_keeps_its_connection() {
    let _serial = serial();
    runtime().block_on(async {
        const PUSHES: usize = 4;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, write) = tcp.into_split();
                    let write = Arc::new(tokio::sync::Mutex::new(write));
                    let pusher = Arc::clone(&write);
                    // Pushes, one a second.
                    let pushing = tokio::spawn(async move {
                        for i in 0.. {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let line = format!("push {i}\n");
                            if pusher
                                .lock()
                                .await
                                .write_all(line.as_bytes())
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    });
                    // And answers PING (the probe) at once.
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let answer = format!("{line}\n");
                        if write
                            .lock()
                            .await
                            .write_all(answer.as_bytes())
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    pushing.abort();
                });
            }
        });
        let lines = service(addr, Duration::from_millis(300), Duration::from_millis(300));
        let conn = lines.when_connected().await.unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        {
            let mut guard = conn.lock().await.unwrap();
            let mut reader = BufReader::new(&mut guard);
            while got.len() < PUSHES {
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                if line.starts_with("push") {
                    got.push(line);
                }
            }
        }
        let losses = lines.counters().losses;
        println!(
            "a reader holding the stream for {PUSHES} pushes a second apart ({:.1?}), probe \
             300 ms / 300 ms: {losses} connections lost",
            started.elapsed()
        );
        assert_eq!(losses, 0);
        lines.stop().await;
    });
}
