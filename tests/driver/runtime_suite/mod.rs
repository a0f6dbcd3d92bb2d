//! The driver suite, written once: every test is generic over a [`TestRt`] and is
//! instantiated per runtime by `driver_suite!` in `tests/driver/on_{tokio,smol,async_std}.rs`.
//!
//! Real sockets on 127.0.0.1 (port 0 listeners), every test bounded by a timeout.

#![allow(dead_code)]

pub mod events;
pub mod faults;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use futures_util::future::{self, Either, FutureExt, Shared};
use redial::driver::{ClientService, Error, Runtime, SharedStream, StreamDriver};
use redial::{AttemptId, Failure, State};

/// A stream connection as `stream` makes it: the handle and the driver.
pub type Pair<S> = (SharedStream<S>, StreamDriver<S>);

/// What a runtime must provide for the suite: its [`Runtime`], `block_on`, and TCP.
pub trait TestRt: 'static {
    type Rt: Runtime;
    /// The client stream type (wrapped with the adapter's `stream`).
    type Stream: Send + Unpin + 'static;
    type Listener: Send + Sync + 'static;
    type Server: Send + 'static;

    fn runtime() -> Self::Rt;
    fn block_on<F: Future>(f: F) -> F::Output;
    fn spawn<F: Future<Output = ()> + Send + 'static>(f: F);
    fn connect(
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Pair<Self::Stream>>> + Send + 'static;
    /// Writes `msg`, reads back as many bytes.
    fn request(
        conn: SharedStream<Self::Stream>,
        msg: &'static [u8],
    ) -> impl Future<Output = io::Result<Vec<u8>>> + Send;
    fn bind(addr: SocketAddr) -> io::Result<Self::Listener>;
    fn from_std(listener: std::net::TcpListener) -> io::Result<Self::Listener>;
    fn local_addr(listener: &Self::Listener) -> SocketAddr;
    fn accept(listener: &Self::Listener) -> impl Future<Output = io::Result<Self::Server>> + Send;
    /// Echoes until EOF (returns Ok) or an error.
    fn echo(conn: Self::Server) -> impl Future<Output = io::Result<()>> + Send;
}

type Conn<T> = SharedStream<<T as TestRt>::Stream>;
type Service<T> = ClientService<Conn<T>, io::Error>;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The fd-leak test runs alone; the others share.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// Runs one test body on runtime `T`, bounded in time.
pub fn run<T: TestRt, F: Future<Output = ()>>(exclusive: bool, body: F) {
    let _shared;
    let _alone;
    if exclusive {
        _alone = EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner());
    } else {
        _shared = EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner());
    }
    T::block_on(async {
        let sleep = T::runtime().sleep(TEST_TIMEOUT);
        match future::select(pin!(body), pin!(sleep)).await {
            Either::Left(((), _)) => {}
            Either::Right(_) => panic!("test timed out after {TEST_TIMEOUT:?}"),
        }
    });
}

pub async fn sleep<T: TestRt>(d: Duration) {
    T::runtime().sleep(d).await;
}

/// `f` bounded by `d`; panics with `what` on timeout.
pub async fn within<T: TestRt, F: Future>(d: Duration, what: &str, f: F) -> F::Output {
    match future::select(pin!(f), pin!(T::runtime().sleep(d))).await {
        Either::Left((out, _)) => out,
        Either::Right(_) => panic!("timed out after {d:?}: {what}"),
    }
}

/// Waits until `cond` holds (polling every 2 ms), at most 20 s.
pub async fn until<T: TestRt>(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never happened: {what}"
        );
        sleep::<T>(Duration::from_millis(2)).await;
    }
}

fn constant(ms: u64) -> impl FnMut(u32) -> Duration + Send + 'static {
    move |_| Duration::from_millis(ms)
}

/// A service on `T` connecting to `addr` with a constant retry delay, not started.
fn service<T: TestRt>(
    addr: SocketAddr,
    retry_ms: u64,
) -> redial::driver::Builder<T::Rt, Conn<T>, io::Error> {
    ClientService::builder(T::runtime(), move || T::connect(addr)).policy(constant(retry_ms))
}

/// An address nothing listens on (connections are refused), which can be bound later.
fn free_addr<T: TestRt>() -> SocketAddr {
    let listener = T::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    T::local_addr(&listener)
}

/// A listener whose accept queue is full: connections to it hang (SYNs are dropped).
pub struct Hanging {
    pub addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<std::net::TcpStream>,
}

pub fn hanging() -> Hanging {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue (backlog 0 holds one); later SYNs are dropped.
    let fillers = (0..2)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .collect();
    Hanging {
        addr,
        _listener: socket,
        _fillers: fillers,
    }
}

/// A test server: closes the first `close_first` connections at once, echoes on the others.
pub struct Server {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    /// Connections the client closed (the server saw EOF).
    pub eofs: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl Server {
    pub fn start<T: TestRt>(addr: SocketAddr, close_first: usize) -> Server {
        Self::with_listener::<T>(T::bind(addr).expect("bind"), close_first)
    }

    pub fn with_listener<T: TestRt>(listener: T::Listener, close_first: usize) -> Server {
        let addr = T::local_addr(&listener);
        let accepted = Arc::new(AtomicUsize::new(0));
        let eofs = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let stop_rx: Shared<oneshot::Receiver<()>> = stop_rx.shared();
        let (done_tx, done_rx) = oneshot::channel();
        let (acc, eof) = (accepted.clone(), eofs.clone());
        T::spawn(async move {
            loop {
                let conn = match future::select(pin!(T::accept(&listener)), stop_rx.clone()).await {
                    Either::Left((Ok(conn), _)) => conn,
                    Either::Left((Err(_), _)) => continue,
                    Either::Right(_) => break,
                };
                let n = acc.fetch_add(1, Ordering::SeqCst);
                if n < close_first {
                    drop(conn);
                    continue;
                }
                let (stop, eof) = (stop_rx.clone(), eof.clone());
                T::spawn(async move {
                    if let Either::Left((Ok(()), _)) =
                        future::select(pin!(T::echo(conn)), stop).await
                    {
                        eof.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            drop(listener);
            let _ = done_tx.send(());
        });
        Server {
            addr,
            accepted,
            eofs,
            stop: Some(stop_tx),
            done: Some(done_rx),
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn eofs(&self) -> usize {
        self.eofs.load(Ordering::SeqCst)
    }

    /// Closes the listener and every connection.
    pub async fn stop(mut self) {
        drop(self.stop.take());
        let _ = self.done.take().unwrap().await;
    }
}

/// A server that accepts and then goes silent: it keeps every connection open and
/// never replies, like a peer behind a network partition (no reset ever arrives).
/// It reads (and discards) what it is sent, to see when the client closes. Plain
/// threads on a std listener; stops itself when dropped.
pub struct Silent {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    eofs: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    pub fn start() -> Silent {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let eofs = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, eof, halt) = (accepted.clone(), eofs.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut readers = Vec::new();
            while !halt.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                acc.fetch_add(1, Ordering::SeqCst);
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_millis(10)))
                    .unwrap();
                let (eof, halt) = (eof.clone(), halt.clone());
                readers.push(std::thread::spawn(move || {
                    let mut buf = [0; 256];
                    while !halt.load(Ordering::SeqCst) {
                        match conn.read(&mut buf) {
                            Ok(0) => {
                                eof.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(_) => {} // never answered
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                }));
            }
            for reader in readers {
                let _ = reader.join();
            }
        });
        Silent {
            addr,
            accepted,
            eofs,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections the client closed (the server saw EOF).
    pub fn eofs(&self) -> usize {
        self.eofs.load(Ordering::SeqCst)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn failure<H: std::fmt::Debug>(r: Result<H, Error<io::Error>>) -> Error<io::Error> {
    r.expect_err("expected a failure")
}

async fn stop_within<T: TestRt, H: Clone + Send + Sync + 'static>(
    svc: &ClientService<H, io::Error>,
) {
    within::<T, _>(Duration::from_secs(5), "stop", svc.stop()).await;
    assert_eq!(svc.state(), State::Stopped);
}

// ----- the tests -----------------------------------------------------------------

pub async fn refused_then_server_appears<T: TestRt>() {
    let addr = free_addr::<T>();
    let svc = service::<T>(addr, 10).start().unwrap();
    let waiter = svc.when_connected();
    until::<T>("3 refused attempts", || svc.counters().failures >= 3).await;
    assert_ne!(svc.state(), State::Connected);
    let server = Server::start::<T>(addr, 0);
    let conn = within::<T, _>(Duration::from_secs(5), "connect", waiter)
        .await
        .unwrap();
    assert_eq!(T::request(conn, b"ping\n").await.unwrap(), b"ping\n");
    assert_eq!(svc.state(), State::Connected);
    stop_within::<T, _>(&svc).await;
    until::<T>("server saw EOF", || server.eofs() == 1).await;
    server.stop().await;
}

pub async fn accept_then_close_loops<T: TestRt>() {
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 20);
    let svc = service::<T>(server.addr, 0).start().unwrap();
    until::<T>("21 connections", || svc.counters().connections >= 21).await;
    let conn = svc.when_connected().await.unwrap();
    assert_eq!(T::request(conn, b"ping\n").await.unwrap(), b"ping\n");
    let counters = svc.counters();
    assert_eq!(counters.losses, 20, "{counters:?}");
    assert_eq!(server.accepted(), 21);
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

pub async fn server_restart_with_waiters_pending<T: TestRt>() {
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let addr = server.addr;
    let svc = service::<T>(addr, 10).start().unwrap();
    svc.when_connected().await.unwrap();
    server.stop().await;
    until::<T>("loss noticed, 2 refused attempts", || {
        let c = svc.counters();
        c.losses == 1 && c.failures >= 2
    })
    .await;
    let waiters: Vec<_> = (0..10).map(|_| svc.when_connected()).collect();
    until::<T>("10 waiters taken", || svc.pending_waiters() == 10).await;
    let server = Server::start::<T>(addr, 0);
    let conns = within::<T, _>(Duration::from_secs(5), "waiters", future::join_all(waiters)).await;
    for conn in conns {
        assert_eq!(T::request(conn.unwrap(), b"abc").await.unwrap(), b"abc");
    }
    assert_eq!(server.accepted(), 1);
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

pub async fn prepare_failing_closes_and_retries<T: TestRt>() {
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service::<T>(server.addr, 5)
        .prepare(move |conn: Conn<T>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 3 {
                    Err(io::Error::other(format!("rejected #{n}")))
                } else {
                    T::request(conn, b"hello").await.map(drop)
                }
            }
        })
        .build()
        .unwrap();
    let fail_fast = svc.when_connected_fail_after(NonZeroU32::MIN);
    let waiter = svc.when_connected();
    svc.start();
    match failure(fail_fast.await) {
        Error::Failed(f) => {
            assert!(matches!(&*f, Failure::Prepare(e) if e.to_string() == "rejected #0"))
        }
        other => panic!("{other:?}"),
    }
    let conn = within::<T, _>(Duration::from_secs(5), "prepared", waiter)
        .await
        .unwrap();
    assert_eq!(T::request(conn, b"ping\n").await.unwrap(), b"ping\n");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(server.accepted(), 4);
    // The three rejected connections were closed (D2).
    until::<T>("3 rejected connections closed", || server.eofs() == 3).await;
    assert_eq!(svc.counters().failures, 3);
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

pub async fn prepare_hanging_times_out<T: TestRt>() {
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let svc = service::<T>(server.addr, 5)
        .prepare(|_conn: Conn<T>| future::pending::<io::Result<()>>())
        .prepare_timeout(Some(Duration::from_millis(30)))
        .build()
        .unwrap();
    let waiter = svc.when_connected_fail_after(NonZeroU32::new(2).unwrap());
    svc.start();
    match failure(within::<T, _>(Duration::from_secs(5), "waiter", waiter).await) {
        Error::Failed(f) => assert!(matches!(*f, Failure::PrepareTimeout)),
        other => panic!("{other:?}"),
    }
    until::<T>("timed-out connections closed", || server.eofs() >= 2).await;
    stop_within::<T, _>(&svc).await;
    until::<T>("every connection closed", || {
        server.eofs() == server.accepted()
    })
    .await;
    server.stop().await;
}

pub async fn connect_hanging_times_out<T: TestRt>() {
    let hang = hanging();
    let svc = service::<T>(hang.addr, 5)
        .connect_timeout(Some(Duration::from_millis(30)))
        .build()
        .unwrap();
    let waiter = svc.when_connected_fail_after(NonZeroU32::new(2).unwrap());
    let patient = svc.when_connected();
    svc.start();
    match failure(within::<T, _>(Duration::from_secs(5), "waiter", waiter).await) {
        Error::Failed(f) => assert!(matches!(*f, Failure::ConnectTimeout)),
        other => panic!("{other:?}"),
    }
    assert!(svc.counters().failures >= 2);
    assert_eq!(svc.counters().connections, 0);
    stop_within::<T, _>(&svc).await;
    assert!(matches!(failure(patient.await), Error::Stopped));
}

pub async fn stop_in_every_state<T: TestRt>() {
    // Init: stop before start cancels the waiters (D5).
    let svc = service::<T>(free_addr::<T>(), 10).build().unwrap();
    let waiter = svc.when_connected();
    assert_eq!(svc.state(), State::Init);
    stop_within::<T, _>(&svc).await;
    assert!(matches!(failure(waiter.await), Error::Stopped));
    // Stopped: a stop finishes at once; a waiter is cancelled at once.
    stop_within::<T, _>(&svc).await;
    assert!(matches!(
        failure(svc.when_connected().await),
        Error::Stopped
    ));

    // Connecting (the attempt hangs).
    let hang = hanging();
    let svc = service::<T>(hang.addr, 10).start().unwrap();
    sleep::<T>(Duration::from_millis(20)).await;
    assert_eq!(svc.state(), State::Connecting);
    stop_within::<T, _>(&svc).await;

    // Waiting (refused, long retry delay).
    let svc = service::<T>(free_addr::<T>(), 60_000).start().unwrap();
    until::<T>("waiting", || svc.state() == State::Waiting).await;
    stop_within::<T, _>(&svc).await;

    // Connecting, while preparing (the prepare hook hangs): the connection is closed (D4).
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let svc = service::<T>(server.addr, 10)
        .prepare(|_conn: Conn<T>| future::pending::<io::Result<()>>())
        .start()
        .unwrap();
    until::<T>("preparing", || server.accepted() == 1).await;
    assert_eq!(svc.state(), State::Connecting);
    stop_within::<T, _>(&svc).await;
    until::<T>("prepared connection closed", || server.eofs() == 1).await;

    // Connected; two stops while Disconnecting; both finish.
    let svc = service::<T>(server.addr, 10).start().unwrap();
    let conn = svc.when_connected().await.unwrap();
    let (first, second) = (svc.stop(), svc.stop());
    within::<T, _>(
        Duration::from_secs(5),
        "two stops",
        future::join(first, second),
    )
    .await;
    assert_eq!(svc.state(), State::Stopped);
    assert!(conn.is_closed());
    assert_eq!(
        conn.lock().await.err().map(|e| e.kind()),
        Some(io::ErrorKind::NotConnected)
    );
    until::<T>("connection closed", || server.eofs() == 2).await;
    server.stop().await;
}

pub async fn start_after_stop<T: TestRt>() {
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let svc = service::<T>(server.addr, 10).start().unwrap();
    svc.when_connected().await.unwrap();
    stop_within::<T, _>(&svc).await;
    svc.start();
    let conn = within::<T, _>(Duration::from_secs(5), "reconnect", svc.when_connected())
        .await
        .unwrap();
    assert_eq!(T::request(conn, b"again").await.unwrap(), b"again");
    assert_eq!(server.accepted(), 2);
    // Restart while stopping (Restarting): connects again once the old one is closed.
    let stopping = svc.stop();
    svc.start();
    stopping.await;
    let conn = within::<T, _>(Duration::from_secs(5), "restart", svc.when_connected())
        .await
        .unwrap();
    assert_eq!(T::request(conn, b"third").await.unwrap(), b"third");
    assert_eq!(server.accepted(), 3);
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

pub async fn fail_after_failures_while_retrying<T: TestRt>() {
    let addr = free_addr::<T>();
    let svc = service::<T>(addr, 5).build().unwrap();
    let one = svc.when_connected_fail_after(NonZeroU32::MIN);
    let three = svc.when_connected_fail_after(NonZeroU32::new(3).unwrap());
    let patient = svc.when_connected();
    svc.start();
    let error = failure(one.await);
    assert!(matches!(&error, Error::Failed(f) if matches!(**f, Failure::Connect(_))));
    // The chain leads to the connector's own error: refused. A reporter that walks
    // it prints the top with `{:#}` (its own message; `{}` is the whole chain).
    let mut chain = vec![format!("{error:#}")];
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        chain.push(e.to_string());
        if let Some(io) = e.downcast_ref::<io::Error>() {
            assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused, "{chain:?}");
        }
        source = e.source();
    }
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert_eq!(
        chain[0],
        "this waiter's limit of failed attempts was reached"
    );
    assert_eq!(chain[1], "connection attempt failed");
    assert_eq!(
        format!("{error}"),
        format!("{}: {}: {}", chain[0], chain[1], chain[2])
    );
    assert!(svc.counters().failures >= 1);
    assert!(matches!(failure(three.await), Error::Failed(_)));
    assert!(svc.counters().failures >= 3);
    until::<T>("still retrying", || svc.counters().failures >= 6).await;
    assert_ne!(svc.state(), State::Stopped);
    let server = Server::start::<T>(addr, 0);
    let conn = within::<T, _>(Duration::from_secs(5), "patient waiter", patient)
        .await
        .unwrap();
    assert_eq!(T::request(conn, b"ok").await.unwrap(), b"ok");
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

pub async fn gives_up<T: TestRt>() {
    use redial::RetryPolicy;
    let addr = free_addr::<T>();
    let svc = ClientService::builder(T::runtime(), move || T::connect(addr))
        .policy(constant(1).give_up_after(3))
        .start()
        .unwrap();
    match failure(svc.when_connected().await) {
        Error::GaveUp {
            consecutive_failures,
            last,
            fatal,
        } => {
            assert!(!fatal, "the policy gave up");
            assert_eq!(consecutive_failures, 3);
            assert!(matches!(*last, Failure::Connect(_)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(svc.state(), State::Stopped);
    // A later waiter learns the give-up too, until the service is started again.
    assert!(matches!(
        failure(svc.when_connected().await),
        Error::GaveUp {
            consecutive_failures: 3,
            fatal: false,
            ..
        }
    ));
}

pub async fn thousand_waiters_one_connection<T: TestRt>() {
    let addr = free_addr::<T>();
    let svc = service::<T>(addr, 5).start().unwrap();
    let waiters: Vec<_> = (0..1000).map(|_| svc.when_connected()).collect();
    until::<T>("1000 waiters taken", || svc.pending_waiters() == 1000).await;
    let server = Server::start::<T>(addr, 0);
    let conns = within::<T, _>(
        Duration::from_secs(10),
        "1000 waiters",
        future::join_all(waiters),
    )
    .await;
    assert_eq!(conns.len(), 1000);
    assert!(conns.iter().all(|c| c.is_ok()));
    // The client's connect completes with the kernel's handshake, which can be
    // before the server's accept loop has counted the connection.
    until::<T>("the server accepted", || server.accepted() >= 1).await;
    assert_eq!(server.accepted(), 1);
    assert_eq!(svc.counters().connections, 1);
    assert_eq!(svc.pending_waiters(), 0);
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

pub async fn thousand_waiters_dropped<T: TestRt>() {
    let addr = free_addr::<T>();
    let svc = service::<T>(addr, 5).start().unwrap();
    let waiters: Vec<_> = (0..1000).map(|_| svc.when_connected()).collect();
    let limited: Vec<_> = (0..1000)
        .map(|_| svc.when_connected_fail_after(NonZeroU32::new(1000).unwrap()))
        .collect();
    until::<T>("2000 waiters taken", || svc.pending_waiters() == 2000).await;
    drop(waiters);
    drop(limited);
    until::<T>("2000 waiters withdrawn", || svc.pending_waiters() == 0).await;
    let server = Server::start::<T>(addr, 0);
    until::<T>("connected", || svc.state() == State::Connected).await;
    assert_eq!(svc.pending_waiters(), 0);
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

pub async fn dropping_the_service_closes_and_ends<T: TestRt>() {
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let addr = server.addr;
    let token = Arc::new(());
    let alive: Weak<()> = Arc::downgrade(&token);
    let svc: Service<T> = ClientService::builder(T::runtime(), move || {
        let _token = &token;
        T::connect(addr)
    })
    .start()
    .unwrap();
    let clone = svc.clone();
    let conn = svc.when_connected().await.unwrap();
    let mut watch = svc.watch();
    drop(svc);
    assert_eq!(clone.state(), State::Connected, "a clone keeps it running");
    drop(clone);
    until::<T>("server saw EOF", || server.eofs() == 1).await;
    until::<T>("task ended", || alive.upgrade().is_none()).await;
    assert!(conn.is_closed());
    // The watcher sees the end.
    while within::<T, _>(Duration::from_secs(5), "watch", watch.changed())
        .await
        .is_some()
    {}
    server.stop().await;
}

pub async fn pair_connection_loss_is_noticed<T: TestRt>() {
    // A (handle, driver future) pair with a plain handle: the service runs the
    // driver and learns of the loss when it ends.
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 1);
    let addr = server.addr;
    let n = Arc::new(AtomicUsize::new(0));
    let svc = ClientService::builder(T::runtime(), move || {
        let id = n.fetch_add(1, Ordering::SeqCst);
        async move {
            let (_stream, driver) = T::connect(addr).await?;
            Ok::<_, io::Error>((id, driver))
        }
    })
    .policy(constant(1))
    .start()
    .unwrap();
    until::<T>("second connection", || svc.counters().connections == 2).await;
    assert_eq!(svc.when_connected().await.unwrap(), 1);
    assert_eq!(svc.counters().losses, 1);
    let mut watch = svc.watch();
    let stopping = svc.stop();
    assert_eq!(watch.changed().await, Some(svc.state()));
    stopping.await;
    assert_eq!(svc.state(), State::Stopped);
    until::<T>("closed", || server.eofs() == 1).await;
    server.stop().await;
}

pub async fn disconnect_half_open_connection<T: TestRt>() {
    let server = Silent::start();
    // A retry delay long enough to see the dead connection closed before the next
    // attempt (the next connection would replace it anyway).
    let svc = service::<T>(server.addr, 300).build().unwrap();
    // Not started: no connection, and the id was never issued.
    assert!(!svc.disconnect(AttemptId::from_raw(0)));
    svc.start();
    let (first, conn) = within::<T, _>(
        Duration::from_secs(5),
        "connect",
        svc.when_connected().with_id(),
    )
    .await
    .unwrap();
    until::<T>("accepted", || server.accepted() == 1).await;
    // Half-open: the request is never answered and the driver never ends, so the
    // service keeps handing out the dead connection.
    let request = T::request(conn.clone(), b"ping\n");
    if let Either::Left(_) =
        future::select(pin!(request), pin!(sleep::<T>(Duration::from_millis(100)))).await
    {
        panic!("the silent server answered");
    }
    assert_eq!(svc.state(), State::Connected);
    assert!(!conn.is_closed());
    let (again, _) = svc.when_connected().with_id().await.unwrap();
    assert_eq!(again, first);
    // The caller reports it broken: the service treats it as lost.
    assert!(svc.disconnect(first));
    // A second report about it is late: it does nothing.
    assert!(!svc.disconnect(first));
    until::<T>("loss counted", || svc.counters().losses == 1).await;
    assert_ne!(svc.state(), State::Connected);
    // The dead connection is closed at once.
    until::<T>("first connection closed", || server.eofs() == 1).await;
    assert!(conn.is_closed());
    assert_eq!(server.accepted(), 1);
    let (second, conn2) = within::<T, _>(
        Duration::from_secs(5),
        "reconnect",
        svc.when_connected().with_id(),
    )
    .await
    .unwrap();
    assert_ne!(second, first);
    assert!(second > first);
    until::<T>("second accept", || server.accepted() == 2).await;
    assert_eq!(
        conn.lock().await.err().map(|e| e.kind()),
        Some(io::ErrorKind::NotConnected)
    );
    // A late disconnect of the old connection leaves the new one up.
    assert!(!svc.disconnect(first));
    assert_eq!(svc.state(), State::Connected);
    assert_eq!(svc.when_connected().with_id().await.unwrap().0, second);
    // Ids the service never issued are refused, not fed to the machine.
    assert!(!svc.disconnect(AttemptId::from_raw(u64::MAX)));
    sleep::<T>(Duration::from_millis(20)).await;
    assert!(!conn2.is_closed());
    assert_eq!(server.accepted(), 2);
    assert_eq!(server.eofs(), 1);
    let counters = svc.counters();
    assert_eq!(
        (counters.connections, counters.losses),
        (2, 1),
        "{counters:?}"
    );
    // Stopped: nothing to disconnect.
    stop_within::<T, _>(&svc).await;
    assert!(!svc.disconnect(second));
    until::<T>("second connection closed", || server.eofs() == 2).await;
    assert_eq!(svc.counters().losses, 1);
}

pub async fn disconnect_while_not_connected<T: TestRt>() {
    // Waiting (refused, long retry delay): attempt 0 failed, there is no connection.
    let svc = service::<T>(free_addr::<T>(), 60_000).start().unwrap();
    until::<T>("waiting", || svc.state() == State::Waiting).await;
    let before = svc.counters();
    assert!(!svc.disconnect(AttemptId::from_raw(0)));
    assert!(!svc.disconnect(AttemptId::from_raw(1)));
    assert_eq!(svc.state(), State::Waiting);
    assert_eq!(svc.counters(), before);
    stop_within::<T, _>(&svc).await;

    // Connecting (the attempt hangs): attempt 0 is current but made no connection.
    let hang = hanging();
    let svc = service::<T>(hang.addr, 10).start().unwrap();
    sleep::<T>(Duration::from_millis(20)).await;
    assert_eq!(svc.state(), State::Connecting);
    assert!(!svc.disconnect(AttemptId::from_raw(0)));
    assert_eq!(svc.state(), State::Connecting);
    assert_eq!(svc.counters().failures, 0);
    stop_within::<T, _>(&svc).await;

    // Preparing (the first prepare hangs): closing it is a failed attempt (D3).
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = service::<T>(server.addr, 300)
        .prepare(move |_conn: Conn<T>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    future::pending::<()>().await;
                }
                Ok(())
            }
        })
        .start()
        .unwrap();
    until::<T>("preparing", || calls.load(Ordering::SeqCst) == 1).await;
    assert_eq!(svc.state(), State::Connecting);
    assert!(svc.disconnect(AttemptId::from_raw(0)));
    until::<T>("a failed attempt", || svc.counters().failures == 1).await;
    until::<T>("prepared connection closed", || server.eofs() == 1).await;
    assert_eq!(server.accepted(), 1);
    let (id, conn) = within::<T, _>(
        Duration::from_secs(5),
        "connected",
        svc.when_connected().with_id(),
    )
    .await
    .unwrap();
    assert_ne!(id, AttemptId::from_raw(0));
    assert_eq!(T::request(conn, b"ok").await.unwrap(), b"ok");
    let counters = svc.counters();
    assert_eq!(
        (counters.losses, counters.connections),
        (0, 1),
        "{counters:?}"
    );
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

pub async fn reconnect_cycles_leave_nothing_behind<T: TestRt>() {
    // Warm up the runtime (reactor, timer and worker fds are created lazily).
    let warm = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let svc = service::<T>(warm.addr, 0).start().unwrap();
    svc.when_connected().await.unwrap();
    drop(svc);
    until::<T>("warm-up closed", || warm.eofs() == 1).await;
    warm.stop().await;
    sleep::<T>(Duration::from_millis(50)).await;
    let before = open_fds();

    const CYCLES: u64 = 2000;
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), usize::MAX);
    let addr = server.addr;
    let token = Arc::new(());
    let alive = Arc::downgrade(&token);
    let svc: Service<T> = ClientService::builder(T::runtime(), move || {
        let _token = &token;
        T::connect(addr)
    })
    .policy(|_| Duration::ZERO)
    .start()
    .unwrap();
    let started = Instant::now();
    until::<T>("2000 cycles", || {
        let c = svc.counters();
        if started.elapsed() > Duration::from_secs(19) {
            eprintln!("{c:?} {:?} accepted={}", svc.state(), server.accepted());
        }
        c.connections >= CYCLES
    })
    .await;
    let elapsed = started.elapsed();
    stop_within::<T, _>(&svc).await;
    let counters = svc.counters();
    assert!(counters.losses >= CYCLES - 1, "{counters:?}");
    drop(svc);
    until::<T>("task ended", || alive.upgrade().is_none()).await;
    server.stop().await;
    let start = Instant::now();
    while open_fds() > before && start.elapsed() < Duration::from_secs(5) {
        sleep::<T>(Duration::from_millis(10)).await;
    }
    assert_eq!(open_fds(), before, "file descriptors leaked");
    eprintln!("{CYCLES} reconnect cycles in {elapsed:?}");
}

// ----- closing a stream connection while it is in use -----------------------------

use redial::driver::StreamGuard;

/// I/O through a [`StreamGuard`] with each runtime's own I/O traits: implemented for
/// the suite's stream types.
pub trait GuardIo: Sized + Send + Unpin + 'static {
    fn read<'a>(
        io: &'a mut StreamGuard<'_, Self>,
        buf: &'a mut [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
    fn write_all<'a>(
        io: &'a mut StreamGuard<'_, Self>,
        buf: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;
}

#[cfg(feature = "tokio")]
impl GuardIo for tokio::net::TcpStream {
    async fn read(io: &mut StreamGuard<'_, Self>, buf: &mut [u8]) -> io::Result<usize> {
        tokio::io::AsyncReadExt::read(io, buf).await
    }
    async fn write_all(io: &mut StreamGuard<'_, Self>, buf: &[u8]) -> io::Result<()> {
        tokio::io::AsyncWriteExt::write_all(io, buf).await
    }
}

#[cfg(feature = "smol")]
impl GuardIo for smol::net::TcpStream {
    async fn read(io: &mut StreamGuard<'_, Self>, buf: &mut [u8]) -> io::Result<usize> {
        smol::io::AsyncReadExt::read(io, buf).await
    }
    async fn write_all(io: &mut StreamGuard<'_, Self>, buf: &[u8]) -> io::Result<()> {
        smol::io::AsyncWriteExt::write_all(io, buf).await
    }
}

#[cfg(feature = "async-std")]
impl GuardIo for async_std::net::TcpStream {
    async fn read(io: &mut StreamGuard<'_, Self>, buf: &mut [u8]) -> io::Result<usize> {
        async_std::io::ReadExt::read(io, buf).await
    }
    async fn write_all(io: &mut StreamGuard<'_, Self>, buf: &[u8]) -> io::Result<()> {
        async_std::io::WriteExt::write_all(io, buf).await
    }
}

/// More than the socket buffers of a loopback connection hold.
static BIG: [u8; 64 << 20] = [0; 64 << 20];

fn assert_not_connected<V: std::fmt::Debug>(result: io::Result<V>, what: &str) {
    match result {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotConnected, "{what}: {e}"),
        Ok(v) => panic!("{what}: expected NotConnected, got Ok({v:?})"),
    }
}

/// A plain-threads test server on a std listener; stops itself when dropped.
/// `deaf`: it never reads a connection until [`Threads::drain`] is called (then it
/// reads to the end). `last_words`: it writes them on the first connection and
/// closes it at once. Otherwise it reads and discards what it is sent.
pub struct Threads {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    eofs: Arc<AtomicUsize>,
    deaf: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Threads {
    pub fn start(deaf: bool, last_words: Option<&'static [u8]>) -> Threads {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let eofs = Arc::new(AtomicUsize::new(0));
        let deaf = Arc::new(AtomicBool::new(deaf));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, eof, muted, halt) = (accepted.clone(), eofs.clone(), deaf.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut readers = Vec::new();
            while !halt.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let n = acc.fetch_add(1, Ordering::SeqCst);
                conn.set_nonblocking(false).unwrap();
                if let (0, Some(words)) = (n, last_words) {
                    conn.write_all(words).unwrap();
                    continue; // dropped: closed
                }
                conn.set_read_timeout(Some(Duration::from_millis(10)))
                    .unwrap();
                let (eof, muted, halt) = (eof.clone(), muted.clone(), halt.clone());
                readers.push(std::thread::spawn(move || {
                    let mut buf = vec![0; 64 * 1024];
                    while !halt.load(Ordering::SeqCst) {
                        if muted.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(2));
                            continue;
                        }
                        match conn.read(&mut buf) {
                            Ok(0) => {
                                eof.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                }));
            }
            for reader in readers {
                let _ = reader.join();
            }
        });
        Threads {
            addr,
            accepted,
            eofs,
            deaf,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections the client closed (the server read to EOF).
    pub fn eofs(&self) -> usize {
        self.eofs.load(Ordering::SeqCst)
    }

    /// A deaf server starts reading.
    pub fn drain(&self) {
        self.deaf.store(false, Ordering::SeqCst);
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Spawns `f` on the connection `conn`, holding its guard: `locked` resolves once it
/// holds it; `done` gives `f`'s result.
fn with_guard<T: TestRt, R: Send + 'static>(
    conn: &Conn<T>,
    f: impl for<'g> FnOnce(
            &'g mut StreamGuard<'_, T::Stream>,
        ) -> std::pin::Pin<Box<dyn Future<Output = R> + Send + 'g>>
        + Send
        + 'static,
) -> (oneshot::Receiver<()>, oneshot::Receiver<R>) {
    let (locked_tx, locked) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    let conn = conn.clone();
    T::spawn(async move {
        let mut io = conn.lock().await.expect("lock");
        let _ = locked_tx.send(());
        let _ = done_tx.send(f(&mut io).await);
    });
    (locked, done)
}

pub async fn stop_with_a_guard_held_closes_the_socket<T: TestRt>()
where
    T::Stream: GuardIo,
{
    let server = Threads::start(false, None);
    let svc = service::<T>(server.addr, 10).start().unwrap();
    let conn = within::<T, _>(Duration::from_secs(5), "connect", svc.when_connected())
        .await
        .unwrap();
    let mut io = conn.lock().await.unwrap();
    T::Stream::write_all(&mut io, b"ping\n").await.unwrap();
    // The guard is out: stop closes the connection anyway, at once.
    stop_within::<T, _>(&svc).await;
    until::<T>("server saw the connection closed", || server.eofs() == 1).await;
    assert!(conn.is_closed());
    assert_not_connected(T::Stream::write_all(&mut io, b"more").await, "write");
    assert_not_connected(T::Stream::read(&mut io, &mut [0; 8]).await, "read");
    drop(io);
    assert_not_connected(conn.lock().await, "lock");
    assert_eq!(server.accepted(), 1);
}

pub async fn disconnect_with_a_guard_held_closes_the_old_socket<T: TestRt>()
where
    T::Stream: GuardIo,
{
    let server = Threads::start(false, None);
    let svc = service::<T>(server.addr, 10).start().unwrap();
    let (first, conn) = within::<T, _>(
        Duration::from_secs(5),
        "connect",
        svc.when_connected().with_id(),
    )
    .await
    .unwrap();
    // A reader waits for a reply that never comes, holding the guard.
    let (locked, done) = with_guard::<T, _>(&conn, |io| {
        Box::pin(async move {
            let read = T::Stream::read(io, &mut [0; 8]).await;
            let write = T::Stream::write_all(io, b"late").await;
            (read, write)
        })
    });
    within::<T, _>(Duration::from_secs(5), "locked", locked)
        .await
        .unwrap();
    assert!(svc.disconnect(first));
    let (read, write) = within::<T, _>(Duration::from_secs(5), "pending read woken", done)
        .await
        .unwrap();
    assert_not_connected(read, "pending read");
    assert_not_connected(write, "write");
    until::<T>("old socket closed", || server.eofs() == 1).await;
    until::<T>("reconnected", || server.accepted() == 2).await;
    let (second, conn2) = within::<T, _>(
        Duration::from_secs(5),
        "reconnect",
        svc.when_connected().with_id(),
    )
    .await
    .unwrap();
    assert_ne!(second, first);
    assert!(conn.is_closed());
    assert!(!conn2.is_closed());
    assert_not_connected(conn.lock().await, "lock the old connection");
    let mut io = conn2.lock().await.unwrap();
    T::Stream::write_all(&mut io, b"ok").await.unwrap();
    drop(io);
    stop_within::<T, _>(&svc).await;
    until::<T>("second socket closed", || server.eofs() == 2).await;
}

pub async fn stop_releases_a_blocked_writer<T: TestRt>()
where
    T::Stream: GuardIo,
{
    let server = Threads::start(true, None);
    let svc = service::<T>(server.addr, 10).start().unwrap();
    let conn = within::<T, _>(Duration::from_secs(5), "connect", svc.when_connected())
        .await
        .unwrap();
    // The server never reads: the write blocks once the socket buffers are full.
    let (locked, mut done) = with_guard::<T, _>(&conn, |io| {
        Box::pin(async move { T::Stream::write_all(io, &BIG).await })
    });
    within::<T, _>(Duration::from_secs(5), "locked", locked)
        .await
        .unwrap();
    sleep::<T>(Duration::from_millis(100)).await;
    assert!(matches!(done.try_recv(), Ok(None)), "the write is blocked");
    stop_within::<T, _>(&svc).await;
    let write = within::<T, _>(Duration::from_secs(5), "blocked writer released", done)
        .await
        .unwrap();
    assert_not_connected(write, "blocked write");
    assert!(conn.is_closed());
    // The socket was closed: the server reads what was sent, then EOF.
    server.drain();
    until::<T>("server saw the connection closed", || server.eofs() == 1).await;
}

pub async fn last_words_and_close_are_noticed_without_a_reader<T: TestRt>()
where
    T::Stream: GuardIo,
{
    // The first connection: the server says goodbye and closes it; nobody reads.
    let server = Threads::start(false, Some(b"bye\n"));
    let addr = server.addr;
    let made: Arc<std::sync::Mutex<Vec<Conn<T>>>> = Arc::default();
    let record = made.clone();
    let svc: Service<T> = ClientService::builder(T::runtime(), move || {
        let record = record.clone();
        async move {
            let (conn, driver) = T::connect(addr).await?;
            record.lock().unwrap().push(conn.clone());
            Ok::<_, io::Error>((conn, driver))
        }
    })
    .policy(constant(10))
    .start()
    .unwrap();
    // The service notices the loss and reconnects.
    until::<T>("a second connection", || server.accepted() == 2).await;
    until::<T>("connected again", || {
        svc.state() == State::Connected && svc.counters().connections == 2
    })
    .await;
    assert_eq!(svc.counters().losses, 1);
    let old = made.lock().unwrap()[0].clone();
    assert!(old.is_closed());
    // The old connection's next reader gets the goodbye, then EOF.
    let mut io = old.lock().await.expect("lock after a loss");
    let mut got = Vec::new();
    let mut buf = [0; 3];
    loop {
        let n = within::<T, _>(
            Duration::from_secs(5),
            "read",
            T::Stream::read(&mut io, &mut buf),
        )
        .await
        .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"bye\n");
    assert_not_connected(T::Stream::write_all(&mut io, b"x").await, "write");
    drop(io);
    stop_within::<T, _>(&svc).await;
    until::<T>("second connection closed", || server.eofs() == 1).await;
}

/// The parts of a [`TestRt`] impl that read the same on every runtime: a request
/// (write, then read the echo) over the shared stream, the listener's address,
/// accept, and the echo server's loop. Expanded inside each runtime's impl, where
/// that runtime's `AsyncReadExt`/`AsyncWriteExt` (or `ReadExt`/`WriteExt`) and
/// `TcpListener`/`TcpStream` are in scope.
#[macro_export]
macro_rules! tcp_methods {
    () => {
        async fn request(
            conn: redial::driver::SharedStream<TcpStream>,
            msg: &'static [u8],
        ) -> std::io::Result<Vec<u8>> {
            let mut io = conn.lock().await?;
            io.write_all(msg).await?;
            let mut reply = vec![0; msg.len()];
            io.read_exact(&mut reply).await?;
            Ok(reply)
        }

        fn local_addr(listener: &TcpListener) -> std::net::SocketAddr {
            listener.local_addr().unwrap()
        }

        async fn accept(listener: &TcpListener) -> std::io::Result<TcpStream> {
            listener.accept().await.map(|(s, _)| s)
        }

        async fn echo(mut conn: TcpStream) -> std::io::Result<()> {
            let mut buf = [0; 256];
            loop {
                let n = conn.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                conn.write_all(&buf[..n]).await?;
            }
        }
    };
}

/// Instantiates the suite for one runtime.
#[macro_export]
macro_rules! driver_suite {
    ($rt:ty) => {
        $crate::driver_suite!(@tests $rt, false;
            refused_then_server_appears, accept_then_close_loops,
            server_restart_with_waiters_pending, prepare_failing_closes_and_retries,
            prepare_hanging_times_out, connect_hanging_times_out, stop_in_every_state,
            start_after_stop, fail_after_failures_while_retrying, gives_up,
            thousand_waiters_one_connection, thousand_waiters_dropped,
            dropping_the_service_closes_and_ends, pair_connection_loss_is_noticed,
            disconnect_half_open_connection, disconnect_while_not_connected,
            stop_with_a_guard_held_closes_the_socket,
            disconnect_with_a_guard_held_closes_the_old_socket, stop_releases_a_blocked_writer,
            last_words_and_close_are_noticed_without_a_reader);
        $crate::driver_suite!(@faults $rt, false;
            connector_panics_are_failed_attempts, prepare_panics_are_failed_attempts,
            driver_panics_are_contained, handle_clone_panic_fails_waiters_and_reconnects,
            policy_panic_ends_the_service, callbacks_into_the_service_do_not_deadlock);
        $crate::driver_suite!(@events $rt, false;
            events_tell_the_whole_story, a_slow_subscriber_is_told_what_it_missed,
            reconnect_now_skips_a_long_backoff);
        $crate::driver_suite!(@tests $rt, true; reconnect_cycles_leave_nothing_behind);
    };
    (@events $rt:ty, $exclusive:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::runtime_suite::run::<$rt, _>($exclusive, $crate::runtime_suite::events::$name::<$rt>());
            }
        )*
    };
    (@faults $rt:ty, $exclusive:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::runtime_suite::run::<$rt, _>($exclusive, $crate::runtime_suite::faults::$name::<$rt>());
            }
        )*
    };
    (@tests $rt:ty, $exclusive:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::runtime_suite::run::<$rt, _>($exclusive, $crate::runtime_suite::$name::<$rt>());
            }
        )*
    };
}
