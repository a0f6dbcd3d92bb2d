//! redial on Tokio, end to end: a local TCP server goes down and up on a schedule,
//! and a `ClientService` keeps a client connected through it, with visible backoff.
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! It finishes by itself in about 10 seconds.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redial::{Backoff, Jitter, RetryPolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

static START: OnceLock<Instant> = OnceLock::new();

macro_rules! say {
    ($who:literal, $($arg:tt)*) => {
        println!("[{:>5.2}s] {:<7} {}", START.get().unwrap().elapsed().as_secs_f64(), $who, format!($($arg)*))
    };
}

/// The server's schedule: (up?, how long).
const SCHEDULE: [(bool, u64); 4] = [(false, 1500), (true, 3000), (false, 2500), (true, 60_000)];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    START.get_or_init(Instant::now);
    // Pick a free port, then leave it closed: the server starts "down".
    let addr = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let server = tokio::spawn(server(addr));

    // Exponential backoff from 100 ms, doubling, capped at 1 s; no jitter so the
    // story is the same every run. The wrapper prints each decision.
    let mut backoff = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(1))?
        .with_jitter(Jitter::None);
    let policy = move |failures: u32| {
        let delay = backoff.next_delay(failures).unwrap_or(Duration::MAX);
        say!("client", "retry #{failures} in {} ms", delay.as_millis());
        delay
    };

    let service = redial::tokio::builder(move || async move {
        let tcp = TcpStream::connect(addr).await?;
        say!("client", "connected to {addr}");
        Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
    })
    .policy(policy)
    .connect_timeout(Some(Duration::from_secs(1)))
    .start()?;

    // Narrate state changes.
    let mut watch = service.watch();
    tokio::spawn(async move {
        let mut last = watch.state();
        while let Some(state) = watch.changed().await {
            match (last, state) {
                _ if last == state => {}
                (redial::State::Connected, redial::State::Waiting) => {
                    say!("state", "{last:?} -> {state:?}: connection lost")
                }
                _ => say!("state", "{last:?} -> {state:?}"),
            }
            last = state;
        }
    });

    // Issue a request every 500 ms, each through `when_connected`.
    let (mut served, mut failed) = (0, 0);
    for i in 1..=16 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let request = async {
            let conn = service.when_connected().await?;
            let mut io = conn.lock().await?;
            let msg = format!("request {i:02}\n");
            io.write_all(msg.as_bytes()).await?;
            let mut reply = vec![0; msg.len()];
            io.read_exact(&mut reply).await?;
            Ok::<_, Box<dyn std::error::Error>>(String::from_utf8(reply)?)
        };
        match tokio::time::timeout(Duration::from_millis(450), request).await {
            Ok(Ok(reply)) => {
                served += 1;
                say!("request", "#{i:02} answered: {:?}", reply.trim_end());
            }
            Ok(Err(e)) => {
                failed += 1;
                say!("request", "#{i:02} failed: {e}");
            }
            Err(_) => {
                failed += 1;
                say!(
                    "request",
                    "#{i:02} still waiting for a connection; gave up on it"
                );
            }
        }
    }

    say!("client", "stopping");
    service.stop().await;
    let c = service.counters();
    say!(
        "client",
        "stopped cleanly: nothing left open. {served} requests served, {failed} not; \
         {} attempts, {} failed, {} connections, {} lost",
        c.attempts,
        c.failures,
        c.connections,
        c.losses
    );
    drop(service);
    server.abort();
    Ok(())
}

/// Follows `SCHEDULE`: while up, echoes every line; going down closes everything.
async fn server(addr: SocketAddr) {
    for (up, millis) in SCHEDULE {
        let phase = tokio::time::sleep(Duration::from_millis(millis));
        if millis == 60_000 {
            say!("server", "up on {addr} until the end");
        }
        if !up {
            say!("server", "down for {:.1} s", millis as f64 / 1000.0);
            phase.await;
            continue;
        }
        let listener = TcpListener::bind(addr).await.expect("rebind the demo port");
        if millis < 60_000 {
            say!("server", "up on {addr} for {:.1} s", millis as f64 / 1000.0);
        }
        let mut connections = JoinSet::new();
        tokio::pin!(phase);
        loop {
            tokio::select! {
                _ = &mut phase => break,
                Ok((mut tcp, _)) = listener.accept() => {
                    connections.spawn(async move {
                        let mut buf = [0; 64];
                        while let Ok(n @ 1..) = tcp.read(&mut buf).await {
                            if tcp.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        }
        // Going down: the listener and every connection close.
        connections.shutdown().await;
    }
    std::future::pending::<()>().await;
}
