//! A `StreamGuard` reads and writes like the stream it guards: wrapped in a
//! `BufReader` by `&mut` (Tokio's, and futures-io's through smol), read line by
//! line, written to, and still noticing the peer's EOF as a loss. Tokio's
//! in-memory `duplex` for Tokio; loopback TCP for futures-io. Every wait is bounded.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_tokio_bufreader_over_a_guard_reads_lines_and_the_guard_still_writes() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (shared, driver) = redial::tokio::stream(ours);
    let driver = tokio::spawn(driver);
    peer.write_all(b"+OK hello\r\n$5\r\nworld\r\n")
        .await
        .unwrap();

    let mut guard = timeout(LIMIT, shared.lock()).await.unwrap().unwrap();
    {
        // By `&mut`: the guard is still ours after the reader is gone.
        let mut reader = BufReader::new(&mut guard);
        let mut line = String::new();
        timeout(LIMIT, reader.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line, "+OK hello\r\n");
        line.clear();
        timeout(LIMIT, reader.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(line, "$5\r\n");
        let mut word = [0u8; 7];
        timeout(LIMIT, reader.read_exact(&mut word))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&word, b"world\r\n");
        assert!(
            reader.buffer().is_empty(),
            "nothing left behind in the reader"
        );
    }
    guard.write_all(b"PING\r\n").await.unwrap();
    guard.flush().await.unwrap();
    let mut ping = [0u8; 6];
    timeout(LIMIT, peer.read_exact(&mut ping))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&ping, b"PING\r\n");

    // The reader's EOF is the guard's: the connection is known lost.
    drop(peer);
    let mut lines = BufReader::new(&mut guard).lines();
    assert_eq!(
        timeout(LIMIT, lines.next_line()).await.unwrap().unwrap(),
        None
    );
    drop(lines);
    drop(guard);
    timeout(LIMIT, driver).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn a_bufreader_can_own_the_guard_and_a_closed_connection_fails_it() {
    let (ours, mut peer) = tokio::io::duplex(1024);
    let (shared, driver) = redial::tokio::stream(ours);
    peer.write_all(b"first\n").await.unwrap();
    let guard = timeout(LIMIT, shared.lock()).await.unwrap().unwrap();
    let mut reader = BufReader::new(guard);
    let mut line = String::new();
    timeout(LIMIT, reader.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line, "first\n");
    // The service closes the connection (drops the driver): reads fail, none hangs.
    drop(driver);
    line.clear();
    let error = timeout(LIMIT, reader.read_line(&mut line))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotConnected);
    // And writing through the reader's inner guard fails the same way.
    let error = reader.get_mut().write_all(b"x").await.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::NotConnected);
}

#[cfg(feature = "smol")]
#[test]
fn a_futures_bufreader_over_a_guard_reads_lines() {
    use smol::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    use smol::net::{TcpListener, TcpStream};

    smol::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, accepted) =
            futures_util::future::join(TcpStream::connect(addr), listener.accept()).await;
        let mut peer = accepted.unwrap().0;
        let (shared, driver) = redial::driver::stream(ours.unwrap());
        let driver = smol::spawn(driver);
        peer.write_all(b"one\ntwo\n").await.unwrap();

        let mut guard = shared.lock().await.unwrap();
        {
            let mut reader = BufReader::new(&mut guard);
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            assert_eq!(line, "one\n");
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            assert_eq!(line, "two\n");
        }
        guard.write_all(b"three\n").await.unwrap();
        let mut echo = BufReader::new(&mut peer);
        let mut line = String::new();
        echo.read_line(&mut line).await.unwrap();
        assert_eq!(line, "three\n");

        drop(echo);
        drop(peer);
        let mut line = String::new();
        assert_eq!(
            BufReader::new(&mut guard)
                .read_line(&mut line)
                .await
                .unwrap(),
            0
        );
        drop(guard);
        let ended = smol::future::or(async { Some(driver.await) }, async {
            smol::Timer::after(LIMIT).await;
            None
        })
        .await;
        assert!(ended.expect("the driver noticed the EOF").is_ok());
    });
}
