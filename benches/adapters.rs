//! redial on Tokio beside stubborn-io and a plain hand-written Tokio loop, on
//! loopback TCP, in one run.
//!
//! ```text
//! cargo bench --features tokio --bench adapters                # full run, about 40 s
//! cargo bench --features tokio --bench adapters -- --quick     # smoke run, a few seconds
//! REDIAL_BENCH_IDLE_N=20000 cargo bench --features tokio --bench adapters
//! REDIAL_BENCH_HEAP_SIZES=1 cargo bench --features tokio --bench adapters -- --quick adapters/idle_memory
//! REDIAL_BENCH_100K=1 cargo bench --features tokio --bench adapters -- adapters/idle_memory
//! ```
//!
//! Three measurements, each printed on lines starting with `adapters:`:
//!
//! 1. **Reconnect throughput.** A server (a plain blocking accept loop on its own
//!    thread) accepts and closes every connection at once; each client reconnects
//!    with a zero retry delay. Cycles per second = connections the server accepted
//!    in a window. Clients: the plain Tokio loop (`connect`, read to EOF, repeat:
//!    the floor), redial's Tokio adapter with `redial::tokio::stream` and the
//!    policy `|_| Duration::ZERO`, and stubborn-io with a retry generator of zero
//!    delays. Rounds are interleaved (floor, redial, stubborn-io, floor, …) and the
//!    medians compared.
//! 2. **Recovery.** The server is down (connects are refused at once); each client
//!    retries every 10 ms; the server comes back up (a listener is bound on the
//!    port). Time from the bind to the client holding the connection.
//! 3. **Memory per idle connected service**, at N = 10,000 (1,000 with `--quick`):
//!    each contender runs in a fresh child process (this executable again) against
//!    a holding server in another child, and reports the growth of its RSS
//!    (`/proc/self/statm`) and of its live heap (a counting global allocator) from
//!    before the N services to after all N are connected and idle, divided by N.
//!    Contenders: a bare Tokio task holding a `TcpStream` and waiting in a one-byte
//!    read (so it notices the peer closing, as the others do), stubborn-io's stream
//!    owned by such a task, and a redial `ClientService` (its one task holds the
//!    connection; `redial::tokio::stream` watches it). The server listens on
//!    8 ports, which the services use in turn (no destination runs out of
//!    ephemeral ports). Each line also gives the time from the first spawn to
//!    all N connected. `REDIAL_BENCH_HEAP_SIZES=1` also lists the live
//!    allocations per service by size. The open-file limit is raised in-process
//!    (the hard one too, as root) to fit N.
//! 4. **100,000 idle services** (opt-in: `REDIAL_BENCH_100K=1`, not with
//!    `--quick`): measurement 3 again at N = 100,000 for the bare task and redial.
//!    If the open-file limit cannot be raised that far (no `CAP_SYS_RESOURCE`),
//!    the services are split over several client processes, each with a holding
//!    server of its own, run at once: per-service figures are the sum of their
//!    growth over N, the time the slowest process took to connect its share.
//!
//! Run as a test (`cargo test --all-targets --features tokio`, no `--bench`), it
//! does a tiny smoke version of each. Everything is bounded and stops by itself.
#![allow(missing_docs)] // a bench binary, not API
#![allow(unsafe_code)] // the counting allocator below; the library itself forbids unsafe

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use stubborn_io::{ReconnectOptions, StubbornTcpStream};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

// ----- a counting allocator: live heap bytes ---------------------------------------

struct Counting;

static LIVE_HEAP: AtomicI64 = AtomicI64::new(0);

/// Live allocations by size (8-byte classes up to 2 KiB, then one class for the
/// rest), for `REDIAL_BENCH_HEAP_SIZES=1`: where an idle service's bytes are.
static LIVE_BY_SIZE: [AtomicI64; 257] = [const { AtomicI64::new(0) }; 257];

fn size_class(size: usize) -> usize {
    (size.div_ceil(8)).min(256)
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged;
// the bookkeeping is one relaxed atomic add.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size() as i64, Ordering::Relaxed);
        LIVE_BY_SIZE[size_class(layout.size())].fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size() as i64, Ordering::Relaxed);
        LIVE_BY_SIZE[size_class(layout.size())].fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_HEAP.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        LIVE_BY_SIZE[size_class(layout.size())].fetch_sub(1, Ordering::Relaxed);
        LIVE_BY_SIZE[size_class(new_size)].fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_HEAP.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_BY_SIZE[size_class(layout.size())].fetch_sub(1, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: i64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

// ----- settings --------------------------------------------------------------------

struct Scale {
    rounds: usize,
    window: Duration,
    recovery_trials: usize,
    idle_n: usize,
}

fn scale(benching: bool, quick: bool) -> Scale {
    let idle_env = std::env::var("REDIAL_BENCH_IDLE_N")
        .ok()
        .map(|n| n.parse().expect("REDIAL_BENCH_IDLE_N"));
    let s = if !benching {
        Scale {
            rounds: 1,
            window: Duration::from_millis(50),
            recovery_trials: 2,
            idle_n: 100,
        }
    } else if quick {
        Scale {
            rounds: 1,
            window: Duration::from_millis(300),
            recovery_trials: 5,
            idle_n: 1_000,
        }
    } else {
        Scale {
            rounds: 5,
            window: Duration::from_secs(1),
            recovery_trials: 30,
            idle_n: 10_000,
        }
    };
    Scale {
        idle_n: idle_env.unwrap_or(s.idle_n),
        ..s
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

type Stream = (
    redial::driver::SharedStream<TcpStream>,
    redial::driver::StreamDriver<TcpStream>,
);

/// redial's connector: a Tokio `TcpStream`, watched by `redial::tokio::stream`.
async fn redial_connect(addr: SocketAddr) -> std::io::Result<Stream> {
    Ok(redial::tokio::stream(TcpStream::connect(addr).await?))
}

type Service =
    redial::driver::ClientService<redial::driver::SharedStream<TcpStream>, std::io::Error>;

fn redial_service(addr: SocketAddr, retry: Duration) -> Service {
    redial::tokio::builder(move || redial_connect(addr))
        .policy(move |_| retry)
        .start()
        .expect("a valid configuration")
}

fn stubborn_options(retry: Duration) -> ReconnectOptions {
    ReconnectOptions::new()
        .with_exit_if_first_connect_fails(false)
        .with_retries_generator(move || std::iter::repeat(retry))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    Floor,
    Redial,
    Stubborn,
}

impl Client {
    const ALL: [Client; 3] = [Client::Floor, Client::Redial, Client::Stubborn];

    /// `REDIAL_BENCH_ONLY=floor|redial|stubborn` runs one client alone (for
    /// `strace -c -f` or `perf`); the others report nothing.
    fn selected(self) -> bool {
        match std::env::var("REDIAL_BENCH_ONLY").as_deref() {
            Ok("floor") => self == Client::Floor,
            Ok("redial") => self == Client::Redial,
            Ok("stubborn") => self == Client::Stubborn,
            _ => true,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Client::Floor => "plain tokio loop",
            Client::Redial => "redial (tokio)",
            Client::Stubborn => "stubborn-io",
        }
    }
}

// ----- 1. reconnect throughput -----------------------------------------------------

/// A server on its own thread that accepts and closes every connection at once.
struct ClosingServer {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClosingServer {
    fn start() -> ClosingServer {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (Arc::clone(&accepted), Arc::clone(&stop));
            std::thread::spawn(move || {
                while let Ok((conn, _)) = listener.accept() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    accepted.fetch_add(1, Ordering::Relaxed);
                    drop(conn);
                }
            })
        };
        ClosingServer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ClosingServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = StdStream::connect(self.addr); // wakes the accept
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `client` against the server for `window`; returns cycles per second.
async fn throughput(client: Client, server: &ClosingServer, window: Duration) -> f64 {
    let addr = server.addr;
    let (task, service) = match client {
        Client::Floor => (
            Some(tokio::spawn(async move {
                let mut buf = [0u8; 1];
                loop {
                    if let Ok(mut conn) = TcpStream::connect(addr).await {
                        let _ = conn.read(&mut buf).await; // EOF: the server closed
                    }
                }
            })),
            None,
        ),
        Client::Redial => (None, Some(redial_service(addr, Duration::ZERO))),
        Client::Stubborn => (
            Some(tokio::spawn(async move {
                let opts = stubborn_options(Duration::ZERO);
                let mut conn = StubbornTcpStream::connect_with_options(addr, opts)
                    .await
                    .expect("stubborn-io connects");
                let mut buf = [0u8; 1];
                loop {
                    let _ = conn.read(&mut buf).await; // reconnects inside on EOF
                }
            })),
            None,
        ),
    };
    tokio::time::sleep(Duration::from_millis(50)).await; // warm-up
    let (start, before) = (Instant::now(), server.accepted.load(Ordering::Relaxed));
    tokio::time::sleep(window).await;
    let (elapsed, after) = (start.elapsed(), server.accepted.load(Ordering::Relaxed));
    if let Some(task) = task {
        task.abort();
        let _ = task.await;
    }
    if let Some(service) = service {
        service.stop().await;
    }
    // Nothing may keep connecting once a client is stopped: check before the next one.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let quiet = server.accepted.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let leftover = server.accepted.load(Ordering::Relaxed) - quiet;
    assert_eq!(
        leftover, 0,
        "{client:?} kept connecting after it was stopped"
    );
    (after - before) as f64 / elapsed.as_secs_f64()
}

fn bench_throughput(s: &Scale) {
    let server = ClosingServer::start();
    let rt = runtime();
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut ratios = vec![];
    rt.block_on(async {
        for _ in 0..s.rounds {
            let mut round = [0.0; 3];
            for (i, client) in Client::ALL.into_iter().enumerate() {
                round[i] = if client.selected() {
                    throughput(client, &server, s.window).await
                } else {
                    f64::NAN
                };
                rates[i].push(round[i]);
            }
            ratios.push(round[1] / round[0]);
        }
    });
    let floor = median(&mut rates[0]);
    for (i, client) in Client::ALL.into_iter().enumerate() {
        let r = median(&mut rates[i]);
        println!(
            "adapters: reconnect throughput: {:<17} {:>8.0} cycles/s ({:>7.1} us/cycle) = {:>5.1}% of the plain loop",
            client.name(),
            r,
            1e6 / r,
            100.0 * r / floor,
        );
    }
    let per_round: Vec<String> = ratios
        .iter()
        .map(|r| format!("{:.0}%", 100.0 * r))
        .collect();
    println!(
        "adapters: reconnect throughput: redial / plain loop per round: {}",
        per_round.join(", ")
    );
    println!(
        "adapters: reconnect throughput: redial / plain loop = {:.1}% (median of {} interleaved rounds of {:?}; target >= 70%)",
        100.0 * median(&mut ratios),
        s.rounds,
        s.window,
    );
}

// ----- 2. recovery: server back up -> connected ------------------------------------

/// One trial: the client retries every 10 ms against a closed port; after
/// `down_for` a listener is bound there. Returns bind → connected.
async fn recovery(client: Client, down_for: Duration) -> Duration {
    const RETRY: Duration = Duration::from_millis(10);
    let addr = {
        let probe = StdListener::bind("127.0.0.1:0").expect("bind");
        probe.local_addr().unwrap()
    }; // closed again: connects are refused
    let done = Arc::new(OnceLock::<Instant>::new());
    let tx = Arc::clone(&done);
    let (task, service) = match client {
        Client::Floor => (
            Some(tokio::spawn(async move {
                loop {
                    if let Ok(conn) = TcpStream::connect(addr).await {
                        let _ = tx.set(Instant::now());
                        std::future::pending::<()>().await;
                        drop(conn);
                    }
                    tokio::time::sleep(RETRY).await;
                }
            })),
            None,
        ),
        Client::Redial => {
            let service = redial_service(addr, RETRY);
            let waiter = service.when_connected();
            let task = tokio::spawn(async move {
                let conn = waiter.await;
                let _ = tx.set(Instant::now());
                drop(conn);
            });
            (Some(task), Some(service))
        }
        Client::Stubborn => (
            Some(tokio::spawn(async move {
                let conn = StubbornTcpStream::connect_with_options(addr, stubborn_options(RETRY))
                    .await
                    .expect("stubborn-io connects");
                let _ = tx.set(Instant::now());
                std::future::pending::<()>().await;
                drop(conn);
            })),
            None,
        ),
    };
    tokio::time::sleep(down_for).await;
    let listener = TcpListener::bind(addr).await.expect("rebind the port");
    let up = Instant::now();
    let deadline = up + Duration::from_secs(2);
    let connected = loop {
        if let Some(t) = done.get() {
            break *t;
        }
        assert!(
            Instant::now() < deadline,
            "{client:?} did not connect within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    if let Some(task) = task {
        task.abort();
        let _ = task.await;
    }
    if let Some(service) = service {
        service.stop().await;
    }
    drop(listener);
    connected.saturating_duration_since(up)
}

fn bench_recovery(s: &Scale) {
    let rt = runtime();
    let mut times: [Vec<f64>; 3] = Default::default();
    rt.block_on(async {
        for trial in 0..s.recovery_trials {
            // vary the phase of the bind against the 10 ms retry period
            let down_for = Duration::from_micros(25_000 + (trial as u64 * 3_700) % 10_000);
            for (i, client) in Client::ALL.into_iter().enumerate() {
                let t = recovery(client, down_for).await;
                times[i].push(t.as_secs_f64() * 1e3);
            }
        }
    });
    for (i, client) in Client::ALL.into_iter().enumerate() {
        let v = &mut times[i];
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let max = v.iter().copied().fold(0.0, f64::max);
        println!(
            "adapters: server back up -> connected (10 ms retry): {:<17} median {:>5.2} ms, mean {:>5.2} ms, max {:>5.2} ms ({} trials)",
            client.name(),
            median(v),
            mean,
            max,
            s.recovery_trials,
        );
    }
}

// ----- 3. memory per idle connected service ----------------------------------------

const ROLE: &str = "REDIAL_BENCH_ROLE";

/// Child role: accept and hold connections (each in a task that reads until EOF),
/// print the port, exit when stdin closes (or after 10 minutes).
fn hold_server() {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(600));
        std::process::exit(1);
    });
    runtime().block_on(async {
        // Several ports, so that many clients on one host do not run out of
        // ephemeral ports (32768–60999 per destination).
        let mut ports = vec![];
        for _ in 0..PORTS {
            let listener = tokio::net::TcpSocket::new_v4().expect("a socket");
            listener.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
            let listener = listener.listen(4096).expect("listen");
            ports.push(listener.local_addr().unwrap().port().to_string());
            tokio::spawn(async move {
                loop {
                    let Ok((mut conn, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let mut buf = [0u8; 64];
                        while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                    });
                }
            });
        }
        println!("port {}", ports.join(" "));
        std::io::stdout().flush().unwrap();
        std::future::pending::<()>().await;
    });
}

/// Listening ports of the holding server: services go to them in turn.
const PORTS: usize = 8;

/// Child role: N idle connected services of one kind; prints the growth per service
/// and the time from the first spawn to all N connected.
fn idle_client(kind: &str, n: usize, addrs: &[SocketAddr]) {
    let rt = runtime();
    let mut next = 0;
    let mut addr = move || {
        next += 1;
        addrs[next % addrs.len()]
    };
    rt.block_on(async {
        let connected = Arc::new(AtomicUsize::new(0));
        let mut services: Vec<Service> = Vec::with_capacity(n + 1);
        let mut spawn_one = |services: &mut Vec<Service>| match kind {
            "bare" => {
                let addr = addr();
                let connected = Arc::clone(&connected);
                drop(tokio::spawn(async move {
                    let mut conn = TcpStream::connect(addr).await.expect("connect");
                    connected.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 1];
                    let _ = conn.read(&mut buf).await;
                }));
            }
            "stubborn" => {
                let addr = addr();
                let connected = Arc::clone(&connected);
                drop(tokio::spawn(async move {
                    let opts = stubborn_options(Duration::from_millis(100));
                    let mut conn = StubbornTcpStream::connect_with_options(addr, opts)
                        .await
                        .expect("connect");
                    connected.fetch_add(1, Ordering::Relaxed);
                    let mut buf = [0u8; 1];
                    loop {
                        let _ = conn.read(&mut buf).await;
                    }
                }));
            }
            "redial" => services.push(redial_service(addr(), Duration::from_millis(100))),
            other => panic!("unknown kind {other}"),
        };
        let wait_all = |services: &[Service], target: usize| {
            let connected = Arc::clone(&connected);
            let pending: Vec<_> = services.iter().map(Service::when_connected).collect();
            async move {
                for w in pending {
                    drop(w.await.expect("connected"));
                }
                let deadline = Instant::now() + Duration::from_secs(60);
                while kind != "redial" && connected.load(Ordering::Relaxed) < target {
                    assert!(
                        Instant::now() < deadline,
                        "services did not connect in 60 s"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        // Warm-up: one service, so the runtime's lazily built parts exist.
        spawn_one(&mut services);
        wait_all(&services, 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;

        let (rss0, heap0) = (rss_bytes(), LIVE_HEAP.load(Ordering::Relaxed));
        let sizes0: Vec<i64> = LIVE_BY_SIZE
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let started = Instant::now();
        for _ in 0..n {
            spawn_one(&mut services);
            if services.len().is_multiple_of(256)
                || connected.load(Ordering::Relaxed).is_multiple_of(256)
            {
                tokio::task::yield_now().await; // let connects proceed, the backlog drain
            }
        }
        let waiting: Vec<Service> = services.iter().skip(1).cloned().collect();
        wait_all(&waiting, n + 1).await;
        drop(waiting);
        let start_secs = started.elapsed().as_secs_f64();
        // Idle: past the service's healthy delay (its backoff is reset and no timer
        // is left armed), which is what a connected service is most of its life.
        tokio::time::sleep(
            redial::driver::DEFAULT_RESET_BACKOFF_AFTER + Duration::from_millis(300),
        )
        .await;
        let (rss1, heap1) = (rss_bytes(), LIVE_HEAP.load(Ordering::Relaxed));
        if std::env::var_os("REDIAL_BENCH_HEAP_SIZES").is_some() {
            for (class, (c0, c1)) in sizes0.iter().zip(&LIVE_BY_SIZE).enumerate() {
                let per_service = (c1.load(Ordering::Relaxed) - c0) as f64 / n as f64;
                if per_service.abs() >= 0.5 {
                    eprintln!(
                        "{kind}: {per_service:.2} live allocation(s) of {}..={} B per service",
                        class * 8 - 7,
                        if class == 256 { usize::MAX } else { class * 8 },
                    );
                }
            }
        }
        println!(
            "idle {} {} {} {}",
            n,
            (rss1 - rss0) as f64 / n as f64,
            (heap1 - heap0) as f64 / n as f64,
            start_secs,
        );
        std::io::stdout().flush().unwrap();
        std::process::exit(0); // skip tearing down n services
    });
}

fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Raises the open-file limit (soft and, as root, hard) to at least `want`, for
/// this process and the children it spawns (they inherit it). Best effort: the
/// caller reads the limit back.
#[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every platform
fn raise_open_files(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if (lim.rlim_cur as u64) >= want {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: want as libc::rlim_t,
        rlim_max: (lim.rlim_max as u64).max(want) as libc::rlim_t,
    };
    // SAFETY: a valid rlimit. Raising the hard limit needs root (or
    // CAP_SYS_RESOURCE); without it, fall back to the hard limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let soft = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &soft) };
    }
}

/// Measurement 3 (and 4). With `shard`, N larger than the open-file limit allows
/// in one process is split over several client processes, each against a holding
/// server of its own, all run at once (raising the hard limit needs
/// `CAP_SYS_RESOURCE`, which a container's root may lack): the figures are then
/// the growth of all of them divided by N, and the time the slowest one took.
fn bench_idle_memory(s: &Scale, kinds: &[(&str, &str)], shard: bool) {
    let exe = std::env::current_exe().expect("this executable");
    let mut n = s.idle_n;
    let mut shards = 1;
    // Each child holds N sockets (and the server N more).
    raise_open_files(n as u64 + 1024);
    if let Some(limit) = open_files_limit() {
        let per_process = limit.saturating_sub(1024).max(1);
        if shard && n > per_process {
            shards = n.div_ceil(per_process);
            println!(
                "adapters: idle memory: `ulimit -n` is {limit}: N = {n} split over {shards} client processes (and as many servers), run at once"
            );
        } else if n + 64 > limit {
            n = limit.saturating_sub(64);
            println!("adapters: idle memory: `ulimit -n` is {limit}; N lowered to {n}");
        }
    }
    let mut servers = vec![];
    for _ in 0..shards {
        let mut server = Command::new(&exe)
            .env(ROLE, "hold")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the holding server");
        let mut line = String::new();
        BufReader::new(server.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("the server's port");
        let ports = line
            .trim()
            .strip_prefix("port ")
            .expect("port N …")
            .to_string();
        servers.push((server, ports));
    }

    let mut results = vec![];
    for &(kind, name) in kinds {
        let clients: Vec<_> = servers
            .iter()
            .enumerate()
            .map(|(i, (_, ports))| {
                // n split as evenly as it goes
                let share = n / shards + usize::from(i < n % shards);
                let child = Command::new(&exe)
                    .env(ROLE, "idle")
                    .env("REDIAL_BENCH_KIND", kind)
                    .env("REDIAL_BENCH_N", share.to_string())
                    .env("REDIAL_BENCH_PORT", ports)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("run an idle client");
                (share, child)
            })
            .collect();
        let (mut rss, mut heap, mut start) = (0.0, 0.0, 0.0f64);
        for (share, child) in clients {
            let out = child.wait_with_output().expect("an idle client's result");
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find(|l| l.starts_with("idle "))
                .unwrap_or_else(|| panic!("{kind}: no result ({:?})", out.status));
            let f: Vec<f64> = line
                .split_whitespace()
                .skip(2)
                .map(|x| x.parse().unwrap())
                .collect();
            rss += f[0] * share as f64;
            heap += f[1] * share as f64;
            start = start.max(f[2]);
        }
        results.push((name, rss / n as f64, heap / n as f64, start));
        // let the servers drop the closed connections before the next contender
        std::thread::sleep(Duration::from_millis(300 * shards as u64));
    }
    for (mut server, _) in servers {
        drop(server.stdin.take()); // the server exits
        let _ = server.wait();
    }

    let bare_heap = results[0].2;
    for (name, rss, heap, start) in &results {
        println!(
            "adapters: idle connected service at N = {n}: {name:<22} RSS {rss:>7.0} B/service, heap {heap:>7.0} B/service ({:+.0} B heap vs the bare task); all {n} connected in {start:.2} s ({:.1} us/service)",
            heap - bare_heap,
            start * 1e6 / n as f64,
        );
    }
    if let Some((_, _, redial_heap, _)) = results.iter().find(|r| r.0 == "redial (tokio)") {
        println!(
            "adapters: idle memory: redial holds {redial_heap:.0} B of heap per idle service (target <= 1000 B), {:.0} B beyond a bare task holding the socket",
            redial_heap - bare_heap
        );
    }
}

/// The idle-memory contenders: role name, printed name.
const IDLE_KINDS: [(&str, &str); 3] = [
    ("bare", "bare task + TcpStream"),
    ("stubborn", "stubborn-io"),
    ("redial", "redial (tokio)"),
];

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("hold") => return hold_server(),
        Ok("idle") => {
            let kind = std::env::var("REDIAL_BENCH_KIND").unwrap();
            let n = std::env::var("REDIAL_BENCH_N").unwrap().parse().unwrap();
            let addrs: Vec<SocketAddr> = std::env::var("REDIAL_BENCH_PORT")
                .unwrap()
                .split_whitespace()
                .map(|p| SocketAddr::from(([127, 0, 0, 1], p.parse().unwrap())))
                .collect();
            return idle_client(&kind, n, &addrs);
        }
        _ => {}
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo bench -- <filter>`: run only the parts whose name contains it
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let wants = |part: &str| {
        filter.as_deref().is_none() || filter.as_deref().is_some_and(|f| part.contains(f))
    };
    let s = scale(benching, quick);
    let start = Instant::now();
    if wants("adapters/throughput") {
        bench_throughput(&s);
    }
    if wants("adapters/recovery") {
        bench_recovery(&s);
    }
    if wants("adapters/idle_memory") {
        bench_idle_memory(&s, &IDLE_KINDS, false);
    }
    // Opt-in, never in `--quick`: 100,000 idle services (the bare task beside them).
    if benching && !quick && std::env::var_os("REDIAL_BENCH_100K").is_some() {
        let s = Scale {
            idle_n: 100_000,
            ..s
        };
        bench_idle_memory(&s, &[IDLE_KINDS[0], IDLE_KINDS[2]], true);
    }
    println!("adapters: done in {:.1} s", start.elapsed().as_secs_f64());
}
