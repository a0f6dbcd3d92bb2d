//! No waiter gets a connection nobody serves: with a probe and no
//! prepare step, a new connection answers the probe once before it is handed out.
//! A herd of services against a listener that completes handshakes in the kernel
//! (its accept queue) but never accepts: none is handed a connection; once the
//! server accepts and answers, every one is, and each is served.
//!
//! The herd is 1,000 services: with the server accepting, that is 2,000
//! sockets in this process, so the test raises its soft open-file limit to the
//! hard one, and fails, saying so, if that is still too low.
//!
//! `cargo test --all-features --test shapes first_check -- --nocapture` prints
//! the figures.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redial::driver::{ClientService, Error, SharedStream};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

type Lines = ClientService<SharedStream<TcpStream>, std::io::Error>;

const HERD: usize = 1_000;

/// Open files the test needs: both ends of each service's connection, and room
/// for the rest of the process (the runtime, the other tests of the binary).
const FILES: u64 = 2 * HERD as u64 + 512;

/// Raises the soft open-file limit to the hard one; returns the soft limit now.
#[cfg(unix)]
#[allow(unsafe_code)] // getrlimit and setrlimit
#[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every platform
fn raise_open_files() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid rlimit, read above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim.rlim_cur = lim.rlim_max;
    }
    Ok(lim.rlim_cur as u64)
}

async fn ping(conn: &SharedStream<TcpStream>) -> std::io::Result<()> {
    let mut guard = conn.lock().await?;
    guard.write_all(b"PING\n").await?;
    let mut line = String::new();
    BufReader::new(&mut guard).read_line(&mut line).await?;
    match line.as_str() {
        "PONG\n" => Ok(()),
        _ => Err(std::io::ErrorKind::UnexpectedEof.into()),
    }
}

fn service(addr: SocketAddr) -> Lines {
    redial::tokio::builder(move || async move {
        let tcp = TcpStream::connect(addr).await?;
        Ok::<_, std::io::Error>(redial::tokio::stream(tcp))
    })
    .policy(|_| Duration::from_millis(200))
    .connect_timeout(Some(Duration::from_millis(500)))
    .probe(
        Duration::from_millis(500),
        Duration::from_millis(300),
        |conn: SharedStream<TcpStream>| async move { ping(&conn).await },
    )
    .start()
    .unwrap()
}

#[test]
fn a_herd_is_never_handed_a_connection_the_server_never_accepted() {
    #[cfg(unix)]
    {
        let files = raise_open_files().expect("reading or raising the open-file limit");
        assert!(
            files >= FILES,
            "a herd of {HERD} needs {FILES} open files, and the hard limit is {files}: \
             raise it (ulimit -Hn) to run this test"
        );
    }
    let began = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Listening, with a short accept queue, and not accepting.
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        let services: Vec<Lines> = (0..HERD).map(|_| service(addr)).collect();
        let waiters = services
            .iter()
            .map(|s| s.when_connected().within(Duration::from_millis(1500)));
        let answers = futures_util::future::join_all(waiters).await;
        let handed = answers.iter().filter(|a| a.is_ok()).count();
        let timed_out = answers
            .iter()
            .filter(|a| matches!(a, Err(Error::TimedOut { .. })))
            .count();
        println!(
            "{HERD} services, a server that never accepts (accept queue 16): {handed} handed a \
             connection, {timed_out} waiters timed out"
        );
        assert_eq!((handed, timed_out), (0, HERD));

        // The server accepts and answers now.
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let (read, mut write) = tcp.into_split();
                    let mut lines = BufReader::new(read).lines();
                    while let Ok(Some(_)) = lines.next_line().await {
                        if write.write_all(b"PONG\n").await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let started = Instant::now();
        let served = futures_util::future::join_all(services.iter().map(|s| async move {
            let conn = s.when_connected().within(Duration::from_secs(20)).await?;
            ping(&conn)
                .await
                .map_err(|e| Error::Failed(Arc::new(redial::Failure::Connect(e))))
        }))
        .await;
        let failed = served.iter().filter(|r| r.is_err()).count();
        println!(
            "then accepted: {} of {HERD} handed a connection that answered within {:.1?} \
             ({} connections accepted)",
            HERD - failed,
            started.elapsed(),
            accepted.load(Ordering::Relaxed)
        );
        assert_eq!(failed, 0);
        for s in &services {
            s.stop().await;
        }
    });
    println!("the herd of {HERD}: {:.1?} in all", began.elapsed());
}
