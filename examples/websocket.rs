//! Keeping a WebSocket connection alive: a redial [`ClientService`] on Tokio around
//! a tokio-tungstenite `WebSocketStream`, made a connection by
//! [`redial::driver::messages`] (no request channel, reply queue or `select!` loop
//! of your own).
//!
//! * the **connector** opens the WebSocket and hands it to `messages`, which gives
//!   a cloneable handle (`send(msg).await`, `recv().await`) and a driver future
//!   that the service runs; the driver ends when the WebSocket is lost, and the
//!   service reconnects with backoff;
//! * messages are sent through [`ClientService::when_connected`]: during an outage
//!   they wait for the next connection instead of failing.
//!
//! It also has a tiny echo server, so that you can watch it ride out restarts:
//!
//! ```text
//! cargo run --features tokio --example websocket -- serve 127.0.0.1:9001 &
//! cargo run --features tokio --example websocket -- ws://127.0.0.1:9001/
//! ```
//!
//! Then kill and restart the server while the client runs: the messages sent during
//! the outage wait, and are echoed once the server is back.
//!
//! Settings: the URL is the first argument, else `WS_URL`, else
//! `ws://127.0.0.1:9001/`; `WS_MESSAGES` (how many to send, default 20, one every
//! 250 ms).
//!
//! [`ClientService`]: redial::driver::ClientService
//! [`ClientService::when_connected`]: redial::driver::ClientService::when_connected

use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use redial::driver::{ClientService, Messages};
use redial::policy::Backoff;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The service: its handle sends and receives `Message`s.
type Ws = ClientService<Messages<Message, Message, WsError>, WsError>;

/// Builds and starts the service: this, and `echo` below, is all the code a
/// program needs to keep a WebSocket connected.
fn service(url: String) -> Ws {
    redial::tokio::builder(move || {
        let url = url.clone();
        async move {
            let (ws, _response) = tokio_tungstenite::connect_async(url).await?;
            Ok::<_, WsError>(redial::driver::messages(ws))
        }
    })
    // 50 ms, 100 ms, 200 ms, ... up to 5 s between failed attempts.
    .policy(Backoff::new(Duration::from_millis(50), 2.0, Duration::from_secs(5)).unwrap())
    .connect_timeout(Some(Duration::from_secs(3)))
    .start()
    .expect("a valid configuration")
}

/// Sends `text` on the current connection (waiting for one if there is none) and
/// returns the next text message received on it.
async fn echo(ws: &Ws, text: String) -> Result<String, Box<dyn std::error::Error>> {
    let conn = ws.when_connected().await?;
    conn.send(Message::text(text)).await?;
    loop {
        match conn.recv().await? {
            Message::Text(reply) => return Ok(reply.to_string()),
            Message::Close(_) => return Err("the server closed the connection".into()),
            _ => {} // ping, pong, binary
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let first = std::env::args().nth(1);
    if first.as_deref() == Some("serve") {
        let addr = std::env::args()
            .nth(2)
            .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
        return serve(&addr).await;
    }
    let url = first
        .or_else(|| std::env::var("WS_URL").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:9001/".to_owned());
    let messages: u32 = std::env::var("WS_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);

    let ws = service(url.clone());

    // The first connection: give up after 4 failed attempts, with advice. The
    // service itself would keep trying.
    if let Err(e) = ws
        .when_connected_fail_after(NonZeroU32::new(4).unwrap())
        .await
    {
        eprintln!("no WebSocket server at {url}: {e}");
        eprintln!();
        eprintln!("Start this example's echo server, e.g.:");
        eprintln!("    cargo run --features tokio --example websocket -- serve 127.0.0.1:9001");
        eprintln!("or point this example at yours (WS_URL=... or the first argument).");
        ws.stop().await;
        return ExitCode::FAILURE;
    }
    println!("connected to {url}");

    let mut echoed = 0;
    for i in 1..=messages {
        let started = Instant::now();
        match echo(&ws, format!("hello #{i}")).await {
            Ok(reply) => {
                echoed += 1;
                println!(
                    "#{i}: echoed {reply:?} ({} ms){}",
                    started.elapsed().as_millis(),
                    if started.elapsed() > Duration::from_millis(100) {
                        " (waited for the server)"
                    } else {
                        ""
                    }
                );
            }
            Err(e) => println!("#{i}: failed: {e} (the next one waits for the new connection)"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let c = ws.counters();
    println!(
        "{echoed}/{messages} echoed; attempts {}, failed {}, connections {}, losses {}",
        c.attempts, c.failures, c.connections, c.losses
    );

    // Closes the WebSocket; the server sees the client go.
    ws.stop().await;
    if echoed == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// A WebSocket echo server (for trying the client): echoes text and binary
/// messages, one task per connection.
async fn serve(addr: &str) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("echo server listening on ws://{addr}/");
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            println!("{peer}: connected");
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    break;
                }
            }
            println!("{peer}: gone");
        });
    }
}
