//! The message adapter (`redial::driver::messages`) on its own, over an in-memory
//! transport the tests control (incoming messages, a sink that can block or fail,
//! a flag set when the transport is dropped), and once under a real service over
//! loopback TCP. Every wait is bounded.

#![cfg(feature = "tokio")]

use std::collections::BTreeSet;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use redial::driver::{messages, messages_with_capacity, Disconnected, Messages, MessagesDriver};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(5);

// ----- an in-memory transport ---------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct TestError(&'static str);

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TestError {}

/// What the transport did, and how the test wants it to behave.
#[derive(Default)]
struct Wire {
    /// Messages flushed, in order.
    sent: Vec<String>,
    /// Messages handed to the sink, not flushed yet.
    buffered: Vec<String>,
    /// Messages the stream yielded.
    yielded: usize,
    /// `poll_ready` stays pending while set.
    block_ready: bool,
    /// `poll_flush` stays pending while set.
    block_flush: bool,
    /// The next `poll_flush` fails with this.
    fail_flush: Option<&'static str>,
    /// The next `start_send` fails with this.
    fail_send: Option<&'static str>,
    dropped: bool,
    sink_waker: Option<Waker>,
}

#[derive(Clone, Default)]
struct WireHandle(Arc<Mutex<Wire>>);

impl WireHandle {
    fn with<R>(&self, f: impl FnOnce(&mut Wire) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }

    /// Changes the sink's behaviour and wakes the driver's pending sink poll.
    fn set(&self, f: impl FnOnce(&mut Wire)) {
        let waker = self.with(|w| {
            f(w);
            w.sink_waker.take()
        });
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn sent(&self) -> Vec<String> {
        self.with(|w| w.sent.clone())
    }
}

struct Transport {
    incoming: mpsc::UnboundedReceiver<Result<String, TestError>>,
    wire: WireHandle,
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.wire.with(|w| w.dropped = true);
    }
}

impl Stream for Transport {
    type Item = Result<String, TestError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.incoming.poll_next_unpin(cx);
        if let Poll::Ready(Some(_)) = item {
            self.wire.with(|w| w.yielded += 1);
        }
        item
    }
}

impl Sink<String> for Transport {
    type Error = TestError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TestError>> {
        self.wire.with(|w| {
            if w.block_ready {
                w.sink_waker = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        })
    }

    fn start_send(self: Pin<&mut Self>, item: String) -> Result<(), TestError> {
        self.wire.with(|w| match w.fail_send.take() {
            Some(e) => Err(TestError(e)),
            None => {
                w.buffered.push(item);
                Ok(())
            }
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TestError>> {
        self.wire.with(|w| {
            if let Some(e) = w.fail_flush.take() {
                return Poll::Ready(Err(TestError(e)));
            }
            if w.block_flush {
                w.sink_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let buffered = std::mem::take(&mut w.buffered);
            w.sent.extend(buffered);
            Poll::Ready(Ok(()))
        })
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), TestError>> {
        self.poll_flush(cx)
    }
}

type Handle = Messages<String, String, TestError>;
type Driver = MessagesDriver<Transport, String, String, TestError, TestError>;
type Peer = mpsc::UnboundedSender<Result<String, TestError>>;

fn transport(capacity: Option<usize>) -> (Handle, Driver, Peer, WireHandle) {
    let (peer, incoming) = mpsc::unbounded();
    let wire = WireHandle::default();
    let t = Transport {
        incoming,
        wire: wire.clone(),
    };
    let (handle, driver) = match capacity {
        Some(c) => messages_with_capacity(t, c),
        None => messages(t),
    };
    (handle, driver, peer, wire)
}

/// Runs the driver in a task, as a service would. `close` drops it (the service
/// closing the connection); the task's result says whether it ended by itself.
struct Running {
    close: Option<oneshot::Sender<()>>,
    task: JoinHandle<bool>,
}

fn run(driver: Driver) -> Running {
    let (close, closed) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tokio::select! {
            () = driver => true,
            _ = closed => false,
        }
    });
    Running {
        close: Some(close),
        task,
    }
}

impl Running {
    /// Drops the driver (if it has not ended) and waits until it is dropped.
    async fn close(mut self) -> bool {
        let _ = self.close.take().unwrap().send(());
        timeout(LIMIT, self.task)
            .await
            .expect("close hung")
            .unwrap()
    }

    /// Waits for the driver to end by itself.
    async fn ended(self) {
        let ended = timeout(LIMIT, self.task)
            .await
            .expect("the driver did not end")
            .unwrap();
        assert!(ended);
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
}

async fn recv(h: &Handle) -> Result<String, Disconnected<TestError>> {
    timeout(LIMIT, h.recv()).await.expect("recv hung")
}

fn msg(s: &str) -> Result<String, TestError> {
    Ok(s.to_owned())
}

// ----- tests ----------------------------------------------------------------------

#[tokio::test]
async fn sends_are_flushed_in_order_and_received_messages_come_in_order() {
    let (h, driver, peer, wire) = transport(None);
    let running = run(driver);
    for i in 0..10 {
        timeout(LIMIT, h.send(format!("out {i}")))
            .await
            .expect("send hung")
            .unwrap();
        // Resolved: it is flushed.
        assert_eq!(wire.sent().last(), Some(&format!("out {i}")));
    }
    assert_eq!(
        wire.sent(),
        (0..10).map(|i| format!("out {i}")).collect::<Vec<_>>()
    );
    for i in 0..10 {
        peer.unbounded_send(msg(&format!("in {i}"))).unwrap();
    }
    for i in 0..10 {
        assert_eq!(recv(&h).await.unwrap(), format!("in {i}"));
    }
    assert!(matches!(h.try_recv(), Ok(None)));
    assert!(!h.is_closed());
    assert!(!running.close().await, "the driver ended by itself");
    assert!(wire.with(|w| w.dropped));
}

#[tokio::test]
async fn a_send_resolves_only_once_flushed() {
    let (h, driver, _peer, wire) = transport(None);
    let running = run(driver);
    wire.set(|w| w.block_flush = true);
    let sending = tokio::spawn({
        let h = h.clone();
        async move { h.send("slow".to_owned()).await }
    });
    settle().await;
    assert!(!sending.is_finished());
    assert_eq!(wire.with(|w| w.buffered.clone()), vec!["slow".to_owned()]);
    wire.set(|w| w.block_flush = false);
    timeout(LIMIT, sending).await.unwrap().unwrap().unwrap();
    assert_eq!(wire.sent(), vec!["slow".to_owned()]);
    running.close().await;
}

#[tokio::test]
async fn loss_by_stream_end_keeps_what_was_received_then_reports_the_end() {
    let (h, driver, peer, wire) = transport(None);
    let running = run(driver);
    peer.unbounded_send(msg("one")).unwrap();
    peer.unbounded_send(msg("two")).unwrap();
    drop(peer); // the stream ends
    running.ended().await; // the service would learn of the loss here
    assert!(
        wire.with(|w| w.dropped),
        "the transport outlived the driver"
    );
    assert!(h.is_closed());
    assert_eq!(recv(&h).await.unwrap(), "one");
    assert_eq!(recv(&h).await.unwrap(), "two");
    for _ in 0..3 {
        assert!(matches!(recv(&h).await, Err(Disconnected::Ended)));
    }
    let err = timeout(LIMIT, h.send("late".to_owned()))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.message.as_deref(), Some("late"));
    assert!(matches!(err.reason, Disconnected::Ended));
}

#[tokio::test]
async fn loss_by_stream_error_reports_the_error_to_every_receiver() {
    let (h, driver, peer, _wire) = transport(None);
    let running = run(driver);
    let waiting: Vec<_> = (0..3)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { recv(&h).await })
        })
        .collect();
    settle().await;
    peer.unbounded_send(Err(TestError("reset"))).unwrap();
    running.ended().await;
    for w in waiting {
        match w.await.unwrap() {
            Err(Disconnected::Receive(e)) => assert_eq!(*e, TestError("reset")),
            other => panic!("{other:?}"),
        }
    }
    let err = recv(&h).await.unwrap_err();
    assert_eq!(err.to_string(), "receiving failed: reset");
    drop(peer);
}

#[tokio::test]
async fn loss_by_sink_error_fails_the_send_in_flight_and_ends_the_driver() {
    let (h, driver, peer, wire) = transport(None);
    let running = run(driver);
    timeout(LIMIT, h.send("ok".to_owned()))
        .await
        .unwrap()
        .unwrap();
    peer.unbounded_send(msg("before")).unwrap();
    settle().await;
    wire.set(|w| w.fail_flush = Some("broken pipe"));
    let err = timeout(LIMIT, h.send("lost".to_owned()))
        .await
        .expect("send hung")
        .unwrap_err();
    // Handed to the sink, never flushed: no message back.
    assert!(err.message.is_none());
    match &err.reason {
        Disconnected::Send(e) => assert_eq!(**e, TestError("broken pipe")),
        other => panic!("{other:?}"),
    }
    running.ended().await;
    assert!(wire.with(|w| w.dropped));
    // What was received before the loss is still there, then the reason.
    assert_eq!(recv(&h).await.unwrap(), "before");
    assert!(matches!(recv(&h).await, Err(Disconnected::Send(_))));

    // A failing start_send ends it too.
    let (h, driver, _peer, wire) = transport(None);
    let running = run(driver);
    wire.set(|w| w.fail_send = Some("refused"));
    let err = timeout(LIMIT, h.send("x".to_owned()))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(&err.reason, Disconnected::Send(e) if **e == TestError("refused")));
    running.ended().await;
    drop(peer);
}

#[tokio::test]
async fn closing_drops_the_transport_and_fails_pending_send_and_recv_at_once() {
    let (h, driver, peer, wire) = transport(None);
    let running = run(driver);
    // One message in flight (the flush hangs), one still queued (the sink is not
    // ready), a recv waiting, and a message received but not taken.
    wire.set(|w| w.block_flush = true);
    let in_flight = tokio::spawn({
        let h = h.clone();
        async move { h.send("in flight".to_owned()).await }
    });
    settle().await;
    wire.with(|w| w.block_ready = true);
    peer.unbounded_send(msg("unread")).unwrap();
    settle().await;
    let queued = tokio::spawn({
        let h = h.clone();
        async move { h.send("queued".to_owned()).await }
    });
    settle().await;
    assert!(!in_flight.is_finished() && !queued.is_finished());
    let h2 = h.clone();
    assert_eq!(recv(&h2).await.unwrap(), "unread");
    let receiving = tokio::spawn(async move { h2.recv().await });
    settle().await;
    assert!(!receiving.is_finished());

    assert!(!running.close().await);
    assert!(wire.with(|w| w.dropped), "the transport is dropped at once");

    let in_flight = timeout(LIMIT, in_flight).await.expect("send hung").unwrap();
    let err = in_flight.unwrap_err();
    assert!(err.message.is_none());
    assert!(matches!(err.reason, Disconnected::Closed));
    let queued = timeout(LIMIT, queued).await.expect("send hung").unwrap();
    let err = queued.unwrap_err();
    assert_eq!(err.message.as_deref(), Some("queued"));
    assert!(matches!(err.reason, Disconnected::Closed));
    let received = timeout(LIMIT, receiving).await.expect("recv hung").unwrap();
    assert!(matches!(received, Err(Disconnected::Closed)));

    // Later ones fail at once.
    assert!(matches!(recv(&h).await, Err(Disconnected::Closed)));
    assert!(matches!(h.try_recv(), Err(Disconnected::Closed)));
    let err = h.send("later".to_owned()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "message not sent: the connection was closed"
    );
    assert!(h.is_closed());
    assert_eq!(wire.sent(), Vec::<String>::new());
}

#[tokio::test]
async fn closing_discards_unread_messages() {
    let (h, driver, peer, _wire) = transport(None);
    let running = run(driver);
    peer.unbounded_send(msg("unread")).unwrap();
    settle().await;
    running.close().await;
    assert!(matches!(recv(&h).await, Err(Disconnected::Closed)));
}

#[tokio::test]
async fn the_incoming_queue_is_bounded_and_the_driver_stops_reading_when_it_is_full() {
    let (h, driver, peer, wire) = transport(Some(4));
    assert_eq!(h.capacity(), 4);
    let running = run(driver);
    for i in 0..100 {
        peer.unbounded_send(msg(&format!("{i}"))).unwrap();
    }
    settle().await;
    // Nobody receives: exactly the capacity was read.
    assert_eq!(wire.with(|w| w.yielded), 4);
    // Sending still works meanwhile.
    timeout(LIMIT, h.send("out".to_owned()))
        .await
        .unwrap()
        .unwrap();
    // One recv makes room for one more.
    assert_eq!(recv(&h).await.unwrap(), "0");
    settle().await;
    assert_eq!(wire.with(|w| w.yielded), 5);
    // The end of the stream is noticed only once the queue has room again.
    drop(peer);
    settle().await;
    assert!(!running.task.is_finished());
    let mut got = Vec::new();
    loop {
        match recv(&h).await {
            Ok(m) => got.push(m.parse::<u32>().unwrap()),
            Err(Disconnected::Ended) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(got, (1..100).collect::<Vec<_>>());
    running.ended().await;
    assert_eq!(wire.with(|w| w.yielded), 100);
}

#[tokio::test]
async fn dropping_a_recv_loses_nothing_and_dropping_a_send_withdraws_its_message() {
    let (h, driver, peer, wire) = transport(None);
    let running = run(driver);
    // A recv that times out: the message sent after it is still received.
    assert!(timeout(Duration::from_millis(20), h.recv()).await.is_err());
    peer.unbounded_send(msg("kept")).unwrap();
    assert_eq!(recv(&h).await.unwrap(), "kept");
    // A send dropped while queued: never sent.
    wire.set(|w| w.block_ready = true);
    assert!(
        timeout(Duration::from_millis(20), h.send("withdrawn".to_owned()))
            .await
            .is_err()
    );
    wire.set(|w| w.block_ready = false);
    timeout(LIMIT, h.send("sent".to_owned()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wire.sent(), vec!["sent".to_owned()]);
    running.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_handles_each_message_goes_to_exactly_one_receiver() {
    const N: usize = 2000;
    let (h, driver, peer, wire) = transport(Some(8));
    let running = run(driver);
    // Four receivers, four senders, all on clones of one handle.
    let receivers: Vec<_> = (0..4)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    match timeout(LIMIT, h.recv()).await.expect("recv hung") {
                        Ok(m) => got.push(m),
                        Err(Disconnected::Ended) => return got,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        })
        .collect();
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let h = h.clone();
            tokio::spawn(async move {
                for i in 0..N / 4 {
                    timeout(LIMIT, h.send(format!("{s}:{i}")))
                        .await
                        .expect("send hung")
                        .unwrap();
                }
            })
        })
        .collect();
    for i in 0..N {
        peer.unbounded_send(msg(&format!("{i}"))).unwrap();
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for s in senders {
        s.await.unwrap();
    }
    drop(peer);
    let mut all = Vec::new();
    for r in receivers {
        all.extend(r.await.unwrap());
    }
    running.ended().await;
    // Received: each exactly once.
    let unique: BTreeSet<u32> = all.iter().map(|m| m.parse().unwrap()).collect();
    assert_eq!(all.len(), N, "a message was received twice or lost");
    assert_eq!(unique.len(), N);
    // Sent: each exactly once, each sender's in its order.
    let sent = wire.sent();
    assert_eq!(sent.len(), N);
    for s in 0..4 {
        let mine: Vec<usize> = sent
            .iter()
            .filter_map(|m| m.strip_prefix(&format!("{s}:"))?.parse().ok())
            .collect();
        assert_eq!(mine, (0..N / 4).collect::<Vec<_>>());
    }
}

// ----- under a real service ---------------------------------------------------------

/// A line server on loopback that echoes each line in upper case and can drop every
/// connection it holds.
#[tokio::test]
async fn under_a_service_a_lost_transport_is_reconnected_and_stop_fails_pending_recvs() {
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (kill_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let kill = kill_tx.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let mut killed = kill.subscribe();
            tokio::spawn(async move {
                let mut lines = Framed::new(tcp, LinesCodec::new());
                loop {
                    tokio::select! {
                        _ = killed.recv() => return,
                        line = lines.next() => match line {
                            Some(Ok(l)) => {
                                if lines.send(l.to_uppercase()).await.is_err() {
                                    return;
                                }
                            }
                            _ => return,
                        },
                    }
                }
            });
        }
    });

    let service = redial::tokio::builder(move || async move {
        let tcp = TcpStream::connect(addr).await?;
        Ok::<_, LinesCodecError>(messages(Framed::new(tcp, LinesCodec::new())))
    })
    .policy(|_| Duration::from_millis(5))
    .start()
    .unwrap();

    let ask = |line: &'static str| {
        let service = service.clone();
        async move {
            let conn: Messages<String, String, LinesCodecError> =
                service.when_connected().await.map_err(|e| e.to_string())?;
            conn.send(line.to_owned())
                .await
                .map_err(|e| e.to_string())?;
            conn.recv().await.map_err(|e| e.to_string())
        }
    };
    assert_eq!(
        timeout(LIMIT, ask("hello")).await.unwrap().unwrap(),
        "HELLO"
    );

    // The server drops the connection: the driver ends, the service reconnects.
    let old = service.when_connected().await.unwrap();
    kill_tx.send(()).unwrap();
    assert!(matches!(
        timeout(LIMIT, old.recv()).await.expect("recv hung"),
        Err(Disconnected::Ended | Disconnected::Receive(_))
    ));
    let deadline = tokio::time::Instant::now() + LIMIT;
    while service.counters().connections < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no reconnection");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        timeout(LIMIT, ask("again")).await.unwrap().unwrap(),
        "AGAIN"
    );

    // stop() while a recv waits: it fails at once with Closed.
    let conn = service.when_connected().await.unwrap();
    let waiting = tokio::spawn({
        let conn = conn.clone();
        async move { conn.recv().await }
    });
    settle().await;
    timeout(LIMIT, service.stop()).await.expect("stop hung");
    let r = timeout(LIMIT, waiting).await.expect("recv hung").unwrap();
    assert!(matches!(r, Err(Disconnected::Closed)), "{r:?}");
    assert!(conn.is_closed());
}

/// Sends and receives racing the loss of their connection, thousands of times on
/// a multi-threaded runtime: each resolves (sent, or the reason the connection is
/// gone) and none waits for ever. (A handle built on a Tokio `mpsc::Sender` does
/// not pass this: a send that reserved its slot just before the driver was dropped
/// stays in the channel, unanswered, while any clone of the handle lives;
/// tokio-rs/tokio#7714. `tests/real_servers/redis.rs` meets it with the redis crate.)
#[test]
fn under_churn_every_send_and_recv_racing_a_loss_resolves() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::time::Instant;

    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            // The peer end of the current connection: dropping it ends the
            // transport's stream, which ends the driver (a loss).
            let current: Arc<Mutex<Option<Peer>>> = Arc::default();
            let slot = Arc::clone(&current);
            let service = redial::tokio::builder(move || {
                let slot = Arc::clone(&slot);
                async move {
                    let (handle, driver, peer, _wire) = transport(None);
                    *slot.lock().unwrap() = Some(peer);
                    Ok::<_, TestError>((handle, driver))
                }
            })
            .policy(|_| Duration::ZERO)
            .reset_backoff_after(None)
            .start()
            .unwrap();

            let until = Instant::now() + Duration::from_secs(3);
            let (sent, send_failed, recv_failed) = (
                Arc::new(AtomicU64::new(0)),
                Arc::new(AtomicU64::new(0)),
                Arc::new(AtomicU64::new(0)),
            );
            let workers: Vec<_> = (0..16)
                .map(|w| {
                    let service = service.clone();
                    let (sent, send_failed, recv_failed) = (
                        Arc::clone(&sent),
                        Arc::clone(&send_failed),
                        Arc::clone(&recv_failed),
                    );
                    tokio::spawn(async move {
                        while Instant::now() < until {
                            let conn = timeout(LIMIT, service.when_connected())
                                .await
                                .expect("when_connected hung")
                                .unwrap();
                            let r = timeout(LIMIT, conn.send(format!("from {w}")))
                                .await
                                .expect("a send racing a loss hung");
                            if r.is_ok() {
                                sent.fetch_add(1, Relaxed);
                            } else {
                                send_failed.fetch_add(1, Relaxed);
                            }
                            // Nothing comes in: this recv ends with the loss.
                            let r = timeout(LIMIT, conn.recv())
                                .await
                                .expect("a recv racing a loss hung");
                            assert!(r.is_err(), "{r:?}");
                            recv_failed.fetch_add(1, Relaxed);
                        }
                    })
                })
                .collect();
            let killer = tokio::spawn(async move {
                let mut i = 0u32;
                while Instant::now() < until + Duration::from_millis(50) {
                    i = i.wrapping_add(1);
                    if i.is_multiple_of(3) {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                    drop(current.lock().unwrap().take());
                }
            });
            for w in workers {
                timeout(Duration::from_secs(30), w)
                    .await
                    .expect("a worker hung")
                    .unwrap();
            }
            killer.await.unwrap();
            let losses = service.counters().losses;
            println!(
                "{losses} losses: {} sends flushed, {} failed with the loss; {} recvs ended by it",
                sent.load(Relaxed),
                send_failed.load(Relaxed),
                recv_failed.load(Relaxed)
            );
            assert!(
                losses > 1_000,
                "too little churn to mean anything: {losses} losses"
            );
            assert!(send_failed.load(Relaxed) > 0, "no send ever raced a loss");
            timeout(LIMIT, service.stop()).await.expect("stop hung");
        });
}
