//! The stream helper (`redial::tokio::stream`) on its own: no service, the test
//! drives the `StreamDriver` itself and drops it to play the service closing the
//! connection. Real loopback TCP, and `tokio::io::duplex` where polling by hand
//! makes a test deterministic. Every wait is bounded.
#![allow(unsafe_code)] // the counting allocator; the library itself forbids unsafe

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use redial::driver::{SharedStream, StreamDriver};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

#[path = "../support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

// ----- helpers -----------------------------------------------------------------

const WAIT: Duration = Duration::from_secs(5);
const LIMIT: usize = SharedStream::<TcpStream>::READ_AHEAD_LIMIT;

/// A connected loopback pair: (client, server).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

/// The driver, run in a task the way the service runs it.
struct Running(JoinHandle<io::Result<()>>);

fn run(driver: StreamDriver<TcpStream>) -> Running {
    Running(tokio::spawn(driver))
}

impl Running {
    /// The service closes the connection: drops the driver future unfinished.
    async fn close(self) {
        self.0.abort();
        let result = timeout(WAIT, self.0).await.expect("the driver task ends");
        assert!(
            result
                .expect_err("the driver ended by itself")
                .is_cancelled(),
            "the driver panicked"
        );
    }

    /// The driver future ends by itself (a loss), with how the stream ended.
    async fn ended(self) -> io::Result<()> {
        timeout(WAIT, self.0)
            .await
            .expect("the driver future never ended")
            .expect("the driver panicked")
    }

    /// The driver has not ended after `d`.
    async fn still_running_after(&mut self, d: Duration) {
        tokio::time::sleep(d).await;
        assert!(!self.0.is_finished(), "the driver ended");
    }
}

/// What the peer sees: every byte until EOF (`Ok`) or an error, within `WAIT`.
async fn peer_sees_close(server: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut seen = Vec::new();
    timeout(WAIT, server.read_to_end(&mut seen))
        .await
        .expect("the peer never saw the connection closed")
        .map(|_| seen)
}

fn assert_not_connected<T: std::fmt::Debug>(result: io::Result<T>, what: &str) {
    match result {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{what}: {e}"),
        Ok(v) => panic!("{what}: expected NotConnected, got Ok({v:?})"),
    }
}

/// Polls `f` once.
fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
    std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop()))
}

/// Reads everything through one guard until EOF or an error.
async fn read_all(shared: &SharedStream<TcpStream>) -> (Vec<u8>, io::Result<()>) {
    let mut io = shared.lock().await.expect("lock after a loss");
    let mut got = Vec::new();
    let mut buf = [0u8; 4];
    loop {
        match timeout(WAIT, io.read(&mut buf)).await.expect("read") {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Err(e)),
        }
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

// ----- the service closes the connection ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_a_guard_held_closes_the_socket_and_fails_the_guard() {
    let (client, mut server) = tcp_pair().await;
    let (shared, driver) = redial::tokio::stream(client);
    let driver = run(driver);
    let mut io = shared.lock().await.unwrap();
    io.write_all(b"hi").await.unwrap();
    let mut hi = [0; 2];
    server.read_exact(&mut hi).await.unwrap();
    assert_eq!(&hi, b"hi");

    driver.close().await;
    // At once, although the guard is still out.
    assert!(shared.is_closed());
    let _ = peer_sees_close(&mut server).await;
    assert_not_connected(io.write(b"more").await, "write");
    assert_not_connected(io.read(&mut [0; 8]).await, "read");
    assert_not_connected(io.flush().await, "flush");
    assert_not_connected(io.shutdown().await, "shutdown");
    drop(io);
    assert_not_connected(shared.lock().await, "lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_wakes_a_pending_read() {
    let (client, mut server) = tcp_pair().await;
    let (shared, driver) = redial::tokio::stream(client);
    let driver = run(driver);
    let (locked_tx, locked_rx) = tokio::sync::oneshot::channel();
    let handle = shared.clone();
    let reader = tokio::spawn(async move {
        let mut io = handle.lock().await.unwrap();
        locked_tx.send(()).unwrap();
        io.read(&mut [0; 16]).await // the peer never writes
    });
    locked_rx.await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!reader.is_finished());
    driver.close().await;
    let result = timeout(WAIT, reader)
        .await
        .expect("the pending read was never woken")
        .unwrap();
    assert_not_connected(result, "pending read");
    assert_eq!(peer_sees_close(&mut server).await.unwrap(), b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_wakes_a_writer_blocked_on_a_peer_that_never_reads() {
    let (client, mut server) = tcp_pair().await;
    let (shared, driver) = redial::tokio::stream(client);
    let driver = run(driver);
    let (blocked_tx, blocked_rx) = tokio::sync::oneshot::channel();
    let handle = shared.clone();
    let writer = tokio::spawn(async move {
        let mut io = handle.lock().await.unwrap();
        let chunk = vec![7u8; 64 * 1024];
        // Fill the socket buffers: write until the stream says Pending.
        let mut written = 0;
        loop {
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut io).poll_write(cx, &chunk))).await {
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => panic!("write failed early: {e}"),
                Poll::Pending => break,
            }
        }
        blocked_tx.send(written).unwrap();
        io.write_all(&chunk).await
    });
    let written = timeout(WAIT, blocked_rx).await.unwrap().unwrap();
    assert!(written > 0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !writer.is_finished(),
        "the peer never reads: the write blocks"
    );

    driver.close().await;
    let result = timeout(WAIT, writer)
        .await
        .expect("the blocked writer was never released")
        .unwrap();
    assert_not_connected(result, "blocked write");
    assert!(shared.is_closed());
    // The socket is closed: the peer reads what was sent, then EOF.
    let seen = peer_sees_close(&mut server).await.unwrap();
    assert!(seen.len() >= written, "{} < {written}", seen.len());
}

#[tokio::test]
async fn close_without_a_guard_closes_the_socket() {
    let (client, mut server) = tcp_pair().await;
    let (shared, driver) = redial::tokio::stream(client);
    let mut driver = run(driver);
    driver.still_running_after(Duration::from_millis(20)).await;
    assert!(!shared.is_closed());
    driver.close().await;
    assert!(shared.is_closed());
    assert_eq!(peer_sees_close(&mut server).await.unwrap(), b"");
    assert_not_connected(shared.lock().await, "lock");
}

#[test]
fn close_discards_read_ahead() {
    let (client, mut peer) = tokio::io::duplex(64);
    let (shared, mut driver) = redial::tokio::stream(client);
    poll_ready(peer.write_all(b"unread")).unwrap();
    assert!(poll_once(&mut driver).is_pending()); // reads "unread" ahead
    drop(driver);
    assert!(shared.is_closed());
    assert_not_connected(poll_ready(shared.lock()), "lock");
    // The client end was dropped: the peer sees EOF.
    let mut buf = [0; 8];
    assert_eq!(poll_ready(peer.read(&mut buf)).unwrap(), 0);
}

// ----- the peer's last words ---------------------------------------------------

#[tokio::test]
async fn last_words_then_eof_end_the_driver_and_reach_the_next_reader() {
    let (client, mut server) = tcp_pair().await;
    let (shared, driver) = redial::tokio::stream(client);
    let driver = run(driver);
    server.write_all(b"hello\n").await.unwrap();
    drop(server);
    // Nobody reads, yet the driver notices the close; the runtime then drops it,
    // as the service does after a loss.
    driver.ended().await.expect("EOF: the driver ends with Ok");
    assert!(shared.is_closed());
    let (got, end) = read_all(&shared).await;
    assert_eq!(got, b"hello\n");
    end.unwrap();
    // EOF stays EOF, for this guard and the next; writing fails.
    let mut io = shared.lock().await.unwrap();
    assert_eq!(io.read(&mut [0; 8]).await.unwrap(), 0);
    assert_not_connected(io.write(b"x").await, "write after the loss");
}

#[tokio::test]
async fn last_words_then_reset_end_the_driver_and_reach_the_next_reader() {
    let (client, server) = tcp_pair().await;
    let (shared, driver) = redial::tokio::stream(client);
    let driver = run(driver);
    let mut server = server;
    server.write_all(b"hello\n").await.unwrap();
    // SO_LINGER 0: closing sends a reset.
    socket2::SockRef::from(&server)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(server);
    // The driver's output is the reason for the loss: the reset.
    let outcome = driver
        .ended()
        .await
        .expect_err("the driver ends with the reset");
    assert_eq!(outcome.kind(), io::ErrorKind::ConnectionReset, "{outcome}");
    let (got, end) = read_all(&shared).await;
    assert_eq!(got, b"hello\n");
    let error = end.expect_err("the reset");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    // Later reads report the same error.
    let mut io = shared.lock().await.unwrap();
    let again = io.read(&mut [0; 8]).await.expect_err("the reset again");
    assert_eq!(again.kind(), error.kind());
    assert_eq!(again.to_string(), error.to_string());
}

#[tokio::test]
async fn bytes_arriving_in_chunks_while_idle_are_delivered_in_order() {
    let (client, mut server) = tcp_pair().await;
    let (shared, driver) = redial::tokio::stream(client);
    let driver = run(driver);
    let data = pattern(LIMIT / 2);
    for chunk in data.chunks(997) {
        server.write_all(chunk).await.unwrap();
        tokio::task::yield_now().await;
    }
    drop(server);
    driver.ended().await.expect("EOF: the driver ends with Ok");
    let (got, end) = read_all(&shared).await;
    end.unwrap();
    assert_eq!(got, data);
}

#[test]
fn a_reader_gets_the_buffered_bytes_before_reading_the_socket() {
    let (client, mut peer) = tokio::io::duplex(64);
    let (shared, mut driver) = redial::tokio::stream(client);
    poll_ready(peer.write_all(b"abc")).unwrap();
    assert!(poll_once(&mut driver).is_pending()); // "abc" read ahead
    poll_ready(peer.write_all(b"def")).unwrap();
    let mut io = poll_ready(shared.lock()).unwrap();
    let mut buf = [0; 16];
    assert_eq!(poll_ready(io.read(&mut buf)).unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
    assert_eq!(poll_ready(io.read(&mut buf)).unwrap(), 3);
    assert_eq!(&buf[..3], b"def");
    // One byte at a time out of the read-ahead.
    drop(io);
    poll_ready(peer.write_all(b"xyz")).unwrap();
    assert!(poll_once(&mut driver).is_pending());
    let mut io = poll_ready(shared.lock()).unwrap();
    for expected in b"xyz" {
        let mut one = [0; 1];
        assert_eq!(poll_ready(io.read(&mut one)).unwrap(), 1);
        assert_eq!(one[0], *expected);
    }
    assert!(poll_once(io.read(&mut buf)).is_pending());
}

#[test]
fn read_ahead_stops_at_the_limit_and_resumes_once_drained() {
    let (client, mut peer) = tokio::io::duplex(4 * LIMIT);
    let (shared, mut driver) = redial::tokio::stream(client);
    let data = pattern(LIMIT + 10);
    poll_ready(peer.write_all(&data)).unwrap();
    drop(peer); // EOF after the data
                // The driver fills its buffer to the limit and stops: it does not see the EOF.
    for _ in 0..3 {
        assert!(poll_once(&mut driver).is_pending());
    }
    assert!(!shared.is_closed());
    // A reader takes 10 bytes: the driver reads the last 10, and is full again.
    let mut io = poll_ready(shared.lock()).unwrap();
    let mut got = vec![0; 10];
    poll_ready(io.read_exact(&mut got)).unwrap();
    drop(io);
    assert!(poll_once(&mut driver).is_pending());
    assert!(!shared.is_closed());
    // One more byte read: room for the EOF, which ends the driver.
    let mut io = poll_ready(shared.lock()).unwrap();
    let mut one = [0; 1];
    poll_ready(io.read_exact(&mut one)).unwrap();
    got.extend_from_slice(&one);
    drop(io);
    assert!(poll_once(&mut driver).is_ready());
    assert!(shared.is_closed());
    drop(driver); // as the service does after a loss
    let mut io = poll_ready(shared.lock()).unwrap();
    poll_ready(io.read_to_end(&mut got)).unwrap();
    assert_eq!(got, data);
}

#[test]
fn a_loss_seen_by_a_guard_ends_the_driver() {
    let (client, peer) = tokio::io::duplex(64);
    let (shared, mut driver) = redial::tokio::stream(client);
    let mut io = poll_ready(shared.lock()).unwrap();
    assert!(poll_once(&mut driver).is_pending()); // held: the driver waits
    drop(peer);
    assert_eq!(poll_ready(io.read(&mut [0; 8])).unwrap(), 0);
    assert!(poll_once(&mut driver).is_ready());
    drop(driver);
    assert_eq!(poll_ready(io.read(&mut [0; 8])).unwrap(), 0);
    assert_not_connected(poll_ready(io.write(b"x")), "write after the loss");
}

// ----- memory --------------------------------------------------------------------

#[test]
fn an_idle_connection_allocates_nothing_but_its_shared_state() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, mut server) = tcp_pair().await;
        let before = allocations();
        let (shared, mut driver) = redial::tokio::stream(client);
        assert_eq!(allocations() - before, 1, "one Arc");
        // Count only what polling the driver allocates (not the runtime).
        let polled = Cell::new(0);
        let poll = |driver: &mut StreamDriver<TcpStream>| {
            let before = allocations();
            assert!(poll_once(driver).is_pending());
            polled.set(polled.get() + allocations() - before);
        };
        for _ in 0..100 {
            poll(&mut driver);
            tokio::task::yield_now().await;
        }
        assert_eq!(polled.get(), 0, "an idle driver allocates");
        // Bytes arrive: now (and only now) the read-ahead is allocated: the block
        // kept out of line (the buffer's header, the end) and the buffer.
        server.write_all(b"x").await.unwrap();
        let mut waited = Duration::ZERO;
        while polled.get() == 0 {
            assert!(waited < WAIT, "the driver never read the byte");
            tokio::time::sleep(Duration::from_millis(1)).await;
            waited += Duration::from_millis(1);
            poll(&mut driver);
        }
        assert_eq!(polled.get(), 2, "two allocations for the read-ahead");
        let mut io = shared.lock().await.unwrap();
        let mut x = [0; 1];
        io.read_exact(&mut x).await.unwrap();
        assert_eq!(&x, b"x");
    });
}

// ----- a panicking stream --------------------------------------------------------

/// Panics on its first read; otherwise a sink that never has data.
struct Panicky {
    panicked: bool,
}

impl AsyncRead for Panicky {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.panicked {
            self.panicked = true;
            panic!("the stream panics");
        }
        Poll::Pending
    }
}

impl AsyncWrite for Panicky {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn a_panicking_stream_does_not_poison_the_handle() {
    let (shared, mut driver) = redial::tokio::stream(Panicky { panicked: false });
    let mut io = poll_ready(shared.lock()).unwrap();
    let panic = catch_unwind(AssertUnwindSafe(|| poll_once(io.read(&mut [0; 4]))));
    assert!(panic.is_err());
    // No second panic: the handle still works.
    assert_eq!(poll_ready(io.write(b"ok")).unwrap(), 2);
    assert!(poll_once(io.read(&mut [0; 4])).is_pending());
    drop(io);
    assert!(poll_once(&mut driver).is_pending());
    drop(driver);
    assert_not_connected(poll_ready(shared.lock()), "lock after close");
}

#[test]
fn debug_impls() {
    let (client, _peer) = tokio::io::duplex(64);
    let (shared, driver) = redial::tokio::stream(client);
    assert!(format!("{shared:?}").starts_with("SharedStream"));
    assert!(format!("{driver:?}").starts_with("StreamDriver"));
    let lock = shared.lock();
    assert!(format!("{lock:?}").starts_with("StreamLock"));
    let io = poll_ready(lock).unwrap();
    assert!(format!("{io:?}").starts_with("StreamGuard"));
}

/// Polls a future that must be ready at once.
fn poll_ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("not ready"),
    }
}
