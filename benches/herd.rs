//! The thundering herd: N = 10,000 clients on one multi-thread Tokio runtime, all
//! connected to one local server, which is killed and comes back 1 s later.
//!
//! ```text
//! cargo bench --features tokio --bench herd                # full run, N = 10,000, ~5 min
//! cargo bench --features tokio --bench herd -- --quick     # smoke run, N = 500, ~30 s
//! cargo bench --features tokio --bench herd -- slow/ restart/redial-full
//!                                                  # only the runs herd/<scenario>/<config> matching one
//! python3 benches/herd_plot.py                              # target/herd/series.csv -> benches/herd.svg
//! ```
//!
//! Only a full, unfiltered run with no `REDIAL_HERD_*` knob writes `target/herd/`
//! (the plot's input); other runs write `target/herd-partial/`, `target/herd-quick/`
//! or `target/herd-smoke/`.
//!
//! Knobs: `REDIAL_HERD_N` (clients per run), `REDIAL_HERD_RATE` (the slow server's
//! accepts per second, default 300), `REDIAL_HERD_BACKLOG` (the slow server's listen
//! backlog, default 4096, at most `net.core.somaxconn`), `REDIAL_HERD_IDLE_MS` (how
//! long the connected herd idles before the kill: 5,500 ms, past the services' 5 s
//! healthy timer; 300 ms with `--quick`), `REDIAL_HERD_LINGER_S` (wait this much
//! longer after the server drained before counting the clients it never accepted),
//! `REDIAL_HERD_ROUNDS` (rounds of the `restart` scenario, default 3, 1 with
//! `--quick`), and one experiment, `REDIAL_HERD_KEEP_SOCKETS=1`: the bench keeps a
//! duplicate of every client socket, so that a client closing its dead socket only
//! releases a descriptor and sends no FIN (what closing 10,000 sockets in the burst
//! costs; N is lowered to fit four descriptors per client).
//!
//! # What one run is
//!
//! Every run (one configuration against one scenario) is a fresh child process (this
//! executable again, `REDIAL_HERD_ROLE=client`), so heap, file descriptors and CPU
//! time are its own. It
//!
//! 1. starts the **server**, another child (`REDIAL_HERD_ROLE=server`), so that the
//!    server's memory and CPU are not counted: a current-thread Tokio runtime that
//!    accepts connections and holds each one in a task reading until EOF. It records
//!    the time (`CLOCK_MONOTONIC`, comparable across the processes) and the peer port
//!    of every accepted connection, and answers `count` and `report` on its stdin;
//! 2. starts N clients on one multi-thread Tokio runtime (2 workers here) and waits
//!    until every one is connected and the server has accepted all N;
//! 3. lets the herd sit idle, measures the live heap (a counting global allocator),
//!    then **kills the server with SIGKILL**: the kernel closes its N sockets (a FIN
//!    each, over the 100–600 ms the process takes to die) and every client sees its
//!    connection end;
//! 4. 1 s after the kill (the downtime) a new server listens on the same port
//!    (`SO_REUSEADDR`; started, and bound, beforehand, so that it is not late by a
//!    process start);
//! 5. waits until every client is connected again, then for the new server to drain
//!    its accept queue, asks it for its accepts and reports.
//!
//! A client is **back** when its first successful `connect` to the new server
//! returns (recorded in the connector: redial's connector closure, and stubborn-io's
//! `UnderlyingIo::establish`; a redial service is `Connected` right after, with no
//! prepare step). A connect that returns before the killed server is reaped was
//! completed by the dying server's kernel (its listener still queues handshakes) and
//! is reset a moment later: it does not count, and is reported. The clients' streams
//! (a `TcpStream` wrapper, the same for both libraries) note when they end, so each
//! run also splits the time back into *kill → loss seen*, *loss → attempt start*
//! (the retry delay plus scheduling) and *connect*; the parent compares each redial
//! client with its stubborn-io twin (same seed, same delays). The drop to zero in the
//! plot is drawn at the kill. The run checks that every redial service is connected
//! again after its losses (`connections = losses + 1`) and that stubborn-io reported
//! at least N disconnects.
//!
//! # Scenarios
//!
//! * `restart`: the new server accepts as fast as it can (listen backlog 4096).
//! * `slow`: the new server **accepts** (calls `accept(2)`) at most R times a second
//!   (default 300), paced, with a listen backlog of B (default 4096). What "accepts"
//!   means matters here: the kernel completes a client's handshake on its own and
//!   queues the connection until the server calls `accept`, so a client can be
//!   connected (its `connect` returned) long before the server sees it; when the queue
//!   (B + 1 entries) is full, the kernel drops new SYNs and the client's TCP resends
//!   them after 1, 2, 4, 8, 16, 32 s (`net.ipv4.tcp_syn_retries`). The run reports
//!   how many clients believed they were connected while the server had not accepted
//!   them, at the moment the last client was back and after the server drained its
//!   queue (`half-open`), and the kernel's listen-queue counters (system-wide
//!   `TcpExt` deltas from `/proc/net/netstat`).
//!
//! # Configurations
//!
//! One entry each in [`herds`]: redial with Twisted's jittered backoff
//! (`Backoff::twisted(seed)`: 1 s × 1.5ⁿ, 60 s cap, + U[0, 1 s)), redial with full
//! jitter (`U[0, min(1 s × 1.5ⁿ, 60 s)]`), and stubborn-io `=0.3.5` fed exactly the same
//! delays through `with_retries_generator` (same seeds, so each stubborn-io client
//! draws the delays of its redial twin), plus stubborn-io with its own
//! `ExpBackoffStrategy` (1 s, × 1.5, ± 5 %, 60 s cap). Client `i` uses seed `i`.
//!
//! # Figures
//!
//! * **time back**, per client: from the kill to its first successful connect
//!   (median, p99, max = all back);
//! * **CPU**: the client process's user + system time (`getrusage`) from the kill to
//!   all back; per reconnect = divided by N;
//! * **peak accepts/s at the server**: the busiest 100 ms (× 10) and the busiest
//!   sliding 1 s of the new server. Attempts refused while no server listens are not
//!   seen by any server; they are in the next figure;
//! * **attempts per client**: `connect` calls started from the kill to all back
//!   (counted in the connectors; for redial also checked against
//!   `counters().attempts`), divided by N;
//! * **heap**: live heap bytes per client (the counting allocator) when idle and
//!   connected, the peak from the kill to the restart (the outage proper), the peak
//!   from the kill to all back, and after, each minus the process's heap before the
//!   clients existed.
//!
//! The `restart` scenario runs 3 interleaved rounds (every configuration once per
//! round) and the tables show the median of each figure; the `slow` one runs once.
//! The parent prints a table per scenario, redial/stubborn-io ratios from the same
//! run, and writes `target/herd/series.csv` (connected clients over time, and the
//! slow server's accepts) and `target/herd/results.csv`, which `benches/herd_plot.py`
//! turns into `benches/herd.svg`.
//!
//! Run as a test (`cargo test --all-targets --features tokio`, no `--bench`), it
//! runs a tiny version (N = 20, two configurations). Everything is bounded and stops
//! by itself.
#![allow(missing_docs)] // a bench binary, not API
#![allow(unsafe_code)] // the counting allocator and libc calls below; the library forbids unsafe

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use redial::policy::{Backoff, Jitter, RetryPolicy};
use stubborn_io::strategies::ExpBackoffStrategy;
use stubborn_io::tokio::{StubbornIo, UnderlyingIo};
use stubborn_io::ReconnectOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

// ----- a counting allocator: live heap bytes and their peak ------------------------

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

fn grew(by: i64) {
    let now = LIVE.fetch_add(by, Relaxed) + by;
    if now > PEAK.load(Relaxed) {
        PEAK.fetch_max(now, Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged;
// the bookkeeping is relaxed atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as i64);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as i64);
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as i64 - layout.size() as i64);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ----- the system: clock, CPU time, open-file limit, kernel counters ----------------

/// `CLOCK_MONOTONIC` in nanoseconds: the same clock in every process, so the server's
/// accept times and the client's kill time can be compared.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU seconds of this process (all threads).
fn cpu_seconds() -> f64 {
    // SAFETY: an all-zero `rusage` is a valid value, and getrusage writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now.
#[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every platform
fn raise_open_files() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: a valid rlimit, read above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    lim.rlim_cur as u64
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096)
}

/// The kernel's listen-queue counters we report (system-wide).
const NETSTAT: [&str; 5] = [
    "ListenOverflows",
    "ListenDrops",
    "SyncookiesSent",
    "SyncookiesRecv",
    "TCPReqQFullDrop",
];

fn netstat() -> [i64; 5] {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = [0; 5];
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Some(i) = NETSTAT.iter().position(|n| *n == name) {
                out[i] = value.parse().unwrap_or(0);
            }
        }
    }
    out
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ----- configurations -------------------------------------------------------------

const ROLE: &str = "REDIAL_HERD_ROLE";

type RedialBuilder =
    redial::driver::Builder<redial::tokio::Tokio, redial::driver::SharedStream<Probe>, io::Error>;

/// How the clients of one configuration are made. Adding a configuration is one
/// entry in [`herds`].
#[derive(Clone, Copy)]
enum Kind {
    /// A redial service per client: the bench makes the builder (connector, nothing
    /// else set); this sets the rest for client `seed`. State shared by the whole
    /// herd (e.g. a shared reconnect budget) can live in a `static`: each run is its
    /// own process.
    Redial(fn(RedialBuilder, u64) -> RedialBuilder),
    /// A stubborn-io stream per client, owned by a task reading from it; this makes
    /// its options for client `seed`.
    Stubborn(fn(u64) -> ReconnectOptions),
}

#[derive(Clone, Copy)]
struct Herd {
    /// Short name (the filter matches it; the CSV files use it).
    name: &'static str,
    /// What the tables and the plot call it.
    label: &'static str,
    kind: Kind,
    /// Also run it against the slow server.
    slow: bool,
    /// Its redial counterpart, for the ratio lines (stubborn-io entries only).
    twin: Option<&'static str>,
}

fn full_jitter(seed: u64) -> Backoff {
    Backoff::new(Duration::from_secs(1), 1.5, Duration::from_secs(60))
        .expect("valid backoff")
        .with_jitter(Jitter::Full)
        .with_seed(seed)
}

/// stubborn-io's delays from a redial policy: delay `k` (from 1) is what `policy`
/// answers after `k` consecutive failures, as redial asks it. Same seed, same delays.
fn stubborn_with(policy: Backoff) -> ReconnectOptions {
    stubborn_options().with_retries_generator(move || {
        let mut policy = policy.clone();
        (1u32..).map(move |n| policy.next_delay(n).expect("never gives up"))
    })
}

fn stubborn_options() -> ReconnectOptions {
    ReconnectOptions::new()
        .with_exit_if_first_connect_fails(false)
        .with_on_disconnect_callback(|| {
            STUBBORN_LOSSES.fetch_add(1, Relaxed);
        })
}

/// Every configuration, in the order they run.
fn herds() -> Vec<Herd> {
    vec![
        Herd {
            name: "redial-twisted",
            label: "redial, Twisted's jittered backoff",
            kind: Kind::Redial(|b, seed| b.policy(Backoff::twisted(seed))),
            slow: true,
            twin: None,
        },
        Herd {
            name: "redial-full",
            label: "redial, full jitter",
            kind: Kind::Redial(|b, seed| b.policy(full_jitter(seed))),
            slow: true,
            twin: None,
        },
        Herd {
            name: "redial-budget",
            label: "redial, Twisted's backoff + shared budget N/5 per s",
            kind: Kind::Redial(|b, seed| {
                let budget = BUDGET.get().expect("the budget is made before the clients");
                b.policy(budget.limit(Backoff::twisted(seed)))
            }),
            slow: true,
            twin: None,
        },
        Herd {
            name: "redial-probe",
            label: "redial, Twisted's backoff + liveness probe 5 s/20 s",
            kind: Kind::Redial(|b, seed| {
                // The timeout must outlast the slow server's accept queue (4,096 at
                // 300 a second: 14 s), or a probe gives up on a connection that was
                // about to be accepted.
                b.policy(Backoff::twisted(seed)).probe(
                    Duration::from_secs(5),
                    Duration::from_secs(20),
                    |conn: redial::driver::SharedStream<Probe>| async move {
                        // A one-byte ping the server echoes.
                        let mut io = conn.lock().await?;
                        io.write_all(b"?").await?;
                        let mut pong = [0u8; 1];
                        io.read_exact(&mut pong).await?;
                        Ok(())
                    },
                )
            }),
            slow: true,
            twin: None,
        },
        Herd {
            name: "stubborn-twisted",
            label: "stubborn-io, Twisted's delays",
            kind: Kind::Stubborn(|seed| stubborn_with(Backoff::twisted(seed))),
            slow: true,
            twin: Some("redial-twisted"),
        },
        Herd {
            name: "stubborn-full",
            label: "stubborn-io, full-jitter delays",
            kind: Kind::Stubborn(|seed| stubborn_with(full_jitter(seed))),
            slow: false,
            twin: Some("redial-full"),
        },
        Herd {
            name: "stubborn-native",
            label: "stubborn-io, its ExpBackoffStrategy (±5 %)",
            kind: Kind::Stubborn(|seed| {
                stubborn_options().with_retries_generator(move || {
                    ExpBackoffStrategy::new(Duration::from_secs(1), 1.5, 0.05)
                        .with_max(Duration::from_secs(60))
                        .with_seed(seed)
                })
            }),
            slow: false,
            twin: None,
        },
    ]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Scenario {
    /// The new server accepts as fast as it can.
    Restart,
    /// The new server accepts at most `rate` connections a second.
    Slow,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Restart => "restart",
            Scenario::Slow => "slow",
        }
    }
}

struct Scale {
    n: usize,
    downtime: Duration,
    /// The slow server's accepts per second and listen backlog.
    rate: u32,
    backlog: u32,
    /// How long to wait for everyone to be back, after the restart.
    deadline: Duration,
    /// How long the connected herd sits idle before the kill (and the heap is read).
    idle: Duration,
    /// Interleaved rounds of the `restart` scenario (the slow one runs once).
    rounds: usize,
    /// How long to wait, once everyone is back, for the server's accept queue and
    /// pending handshakes to empty.
    drain: Duration,
    /// Names of the configurations to run (`None`: all).
    only: Option<&'static [&'static str]>,
    slow: bool,
}

fn scale(benching: bool, quick: bool) -> Scale {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name}: {v}")))
    };
    let max_backlog = somaxconn();
    let s = if !benching {
        Scale {
            n: 20,
            downtime: Duration::from_millis(200),
            rate: 300,
            backlog: 16,
            deadline: Duration::from_secs(60),
            idle: Duration::from_millis(300),
            drain: Duration::from_secs(5),
            rounds: 1,
            only: Some(&["redial-twisted", "stubborn-twisted"]),
            slow: false,
        }
    } else if quick {
        Scale {
            n: 500,
            downtime: Duration::from_millis(500),
            rate: 300,
            backlog: 128,
            deadline: Duration::from_secs(90),
            idle: Duration::from_millis(300),
            drain: Duration::from_secs(10),
            rounds: 1,
            only: None,
            slow: true,
        }
    } else {
        Scale {
            n: 10_000,
            downtime: Duration::from_secs(1),
            rate: 300,
            backlog: 4096,
            deadline: Duration::from_secs(150),
            // past the services' 5 s healthy timer (the builder's reset_backoff_after):
            // the heap of a service at rest, and every failure counter reset
            idle: Duration::from_millis(5_500),
            // the kernel gives a handshake 5 SYN-ACK retries (about 63 s)
            drain: Duration::from_secs(90),
            rounds: 3,
            only: None,
            slow: true,
        }
    };
    Scale {
        n: env("REDIAL_HERD_N").map_or(s.n, |n| n as usize),
        rate: env("REDIAL_HERD_RATE").map_or(s.rate, |r| r as u32),
        idle: env("REDIAL_HERD_IDLE_MS").map_or(s.idle, Duration::from_millis),
        rounds: env("REDIAL_HERD_ROUNDS").map_or(s.rounds, |r| r.max(1) as usize),
        backlog: env("REDIAL_HERD_BACKLOG")
            .map_or(s.backlog, |b| b as u32)
            .min(max_backlog),
        ..s
    }
}

// ----- the server (a child process) ----------------------------------------------

/// Child role: listen on `REDIAL_HERD_PORT` (0: any) with `REDIAL_HERD_BACKLOG`,
/// accept at most `REDIAL_HERD_RATE` a second (0: no limit), hold every connection
/// until EOF. With `REDIAL_HERD_WAIT=1` it binds, prints `bound` and waits for a
/// line `listen` first (so a restart is not late by a process start). Prints
/// `up <port> <listening since, ns>`; answers `count` with `count <accepted>` and
/// `report` with `report <n>` and n lines `<ns> <peer port>`; exits when stdin
/// closes.
fn server_role() {
    let port: u16 = env_parse("REDIAL_HERD_PORT");
    let backlog: i32 = env_parse("REDIAL_HERD_BACKLOG");
    let rate: u32 = env_parse("REDIAL_HERD_RATE");
    let wait = std::env::var("REDIAL_HERD_WAIT").is_ok_and(|w| w == "1");
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(900));
        std::process::exit(3);
    });
    let accepts: Arc<Mutex<Vec<(u64, u16)>>> = Arc::new(Mutex::new(Vec::with_capacity(20_000)));

    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // The previous server's port may take a moment to be free.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = socket.bind(&addr.into()) {
        assert!(Instant::now() < deadline, "bind {addr}: {e}");
        std::thread::sleep(Duration::from_millis(2));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    if wait {
        println!("bound");
        io::stdout().flush().unwrap();
        let mut line = String::new();
        io::stdin().read_line(&mut line).expect("a command");
        if line.trim() != "listen" {
            std::process::exit(0); // the client is gone, or changed its mind
        }
    }
    socket.listen(backlog).expect("listen");
    let up = mono_ns();
    socket.set_nonblocking(true).expect("nonblocking");
    let std_listener: std::net::TcpListener = socket.into();
    let port = std_listener.local_addr().unwrap().port();
    let listener = {
        let _guard = rt.enter();
        TcpListener::from_std(std_listener).expect("a Tokio listener")
    };
    {
        let accepts = Arc::clone(&accepts);
        std::thread::spawn(move || serve_commands(accepts));
    }
    println!("up {port} {up}");
    io::stdout().flush().unwrap();

    rt.block_on(async move {
        let interval = if rate == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / rate
        };
        // Pacing: accept k+1 no earlier than max(slot k + interval, accept k +
        // interval / 2), so at most `rate` a second (Tokio's timer rounds sleeps up to
        // the millisecond; absolute slots keep the average exact), and no burst after
        // an idle spell.
        let mut slot = tokio::time::Instant::now();
        loop {
            if rate > 0 {
                tokio::time::sleep_until(slot).await;
            }
            let Ok((mut conn, peer)) = listener.accept().await else {
                continue;
            };
            let at = mono_ns();
            accepts.lock().unwrap().push((at, peer.port()));
            tokio::spawn(async move {
                // Echoes what it is sent (a liveness probe's ping); clients that do
                // not probe send nothing.
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = conn.read(&mut buf).await {
                    if conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            if rate > 0 {
                let now = tokio::time::Instant::now();
                slot = (slot + interval).max(now + interval / 2);
            }
        }
    });
}

fn serve_commands(accepts: Arc<Mutex<Vec<(u64, u16)>>>) {
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let mut out = String::new();
        match line.trim() {
            "count" => writeln!(out, "count {}", accepts.lock().unwrap().len()).unwrap(),
            "report" => {
                let accepts = accepts.lock().unwrap().clone();
                writeln!(out, "report {}", accepts.len()).unwrap();
                for (at, port) in accepts {
                    writeln!(out, "{at} {port}").unwrap();
                }
            }
            other => panic!("server: unknown command {other:?}"),
        }
        let mut stdout = io::stdout().lock();
        stdout.write_all(out.as_bytes()).unwrap();
        stdout.flush().unwrap();
    }
    std::process::exit(0);
}

fn env_parse<T: std::str::FromStr>(name: &str) -> T {
    let v = std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    v.parse()
        .unwrap_or_else(|_| panic!("{name}: cannot parse {v:?}"))
}

/// The client's handle on a server child.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
    /// When it was listening (`mono_ns`).
    up: u64,
}

impl Server {
    /// A server listening now.
    fn start(port: u16, backlog: u32, rate: u32) -> Server {
        let mut server = Server::spawn(port, backlog, rate, false);
        server.read_up();
        server
    }

    /// A server bound to `port` that listens once told to ([`Server::listen`]).
    fn bound(port: u16, backlog: u32, rate: u32) -> Server {
        let mut server = Server::spawn(port, backlog, rate, true);
        let mut line = String::new();
        server
            .stdout
            .read_line(&mut line)
            .expect("the server's first line");
        assert_eq!(line.trim(), "bound", "server said {line:?}");
        server
    }

    fn listen(&mut self) {
        writeln!(self.stdin, "listen").expect("write to the server");
        self.stdin.flush().unwrap();
        self.read_up();
    }

    fn spawn(port: u16, backlog: u32, rate: u32, wait: bool) -> Server {
        let exe = std::env::current_exe().expect("this executable");
        let mut child = Command::new(exe)
            .env(ROLE, "server")
            .env("REDIAL_HERD_PORT", port.to_string())
            .env("REDIAL_HERD_BACKLOG", backlog.to_string())
            .env("REDIAL_HERD_RATE", rate.to_string())
            .env("REDIAL_HERD_WAIT", if wait { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Server {
            child,
            stdin,
            stdout,
            port,
            up: 0,
        }
    }

    fn read_up(&mut self) {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the server's `up` line");
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("up"), "server said {line:?}");
        self.port = words.next().unwrap().parse().unwrap();
        self.up = words.next().unwrap().parse().unwrap();
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("write to the server");
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the server's answer");
        line
    }

    fn count(&mut self) -> usize {
        let line = self.ask("count");
        line.trim()
            .strip_prefix("count ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("server said {line:?}"))
    }

    /// Every accept so far: (`mono_ns`, peer port).
    fn report(&mut self) -> Vec<(u64, u16)> {
        let line = self.ask("report");
        let n: usize = line
            .trim()
            .strip_prefix("report ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("server said {line:?}"));
        (0..n)
            .map(|_| {
                let mut l = String::new();
                self.stdout.read_line(&mut l).unwrap();
                let mut w = l.split_whitespace();
                (
                    w.next().unwrap().parse().unwrap(),
                    w.next().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// SIGKILL: the kernel closes every connection it held.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- the clients (a child process per run) -------------------------------------

/// What the bench records per client.
#[derive(Default)]
struct Slot {
    /// `connect` calls started.
    attempts: AtomicU32,
    /// When the first connect after the kill returned (`mono_ns`; 0: not yet).
    back: AtomicU64,
    /// The local port of the latest connection.
    port: AtomicU32,
    /// Successful connects.
    connects: AtomicU32,
    /// When its stream first ended after the kill (EOF or error; `mono_ns`).
    lost: AtomicU64,
    /// When the attempt that brought it back started (`mono_ns`).
    started: AtomicU64,
}

static SLOTS: OnceLock<Vec<Slot>> = OnceLock::new();
/// The reconnect budget every client of the `redial-budget` configuration shares.
static BUDGET: OnceLock<redial::Budget> = OnceLock::new();

/// The shared budget's rate for a herd of `n`: everyone back within about 5 s
/// (plus the policy's own first delay), and a burst of a twentieth of a second's
/// worth, so that no second sees more than the rate + 5 %.
fn budget_for(n: usize) -> (f64, u32) {
    let rate = (n as f64 / 5.0).max(1.0);
    (rate, ((rate / 20.0) as u32).max(1))
}
static ADDR: OnceLock<SocketAddr> = OnceLock::new();
/// When the killed server was gone, reaped with every socket closed (`mono_ns`; 0:
/// not yet). A connect that returns before that may have been completed by the dying
/// server's kernel queue (it is reset a moment later): it does not count as back.
static GONE: AtomicU64 = AtomicU64::new(0);
/// When the server was killed (`mono_ns`; 0: not yet).
static KILLED: AtomicU64 = AtomicU64::new(0);
/// Clients connected at least once / back after the kill.
static FIRST: AtomicUsize = AtomicUsize::new(0);
static BACK: AtomicUsize = AtomicUsize::new(0);
static STUBBORN_LOSSES: AtomicUsize = AtomicUsize::new(0);
/// `REDIAL_HERD_KEEP_SOCKETS=1` (an experiment, not a configuration): a duplicate of
/// every client socket is kept here, so that a client closing its socket does not
/// close the connection (no FIN, no TCP teardown), only releases its descriptor.
static KEEP_SOCKETS: OnceLock<Mutex<Vec<std::os::fd::OwnedFd>>> = OnceLock::new();

/// Every client's `connect`: a Tokio `TcpStream`, and the bookkeeping.
async fn herd_connect(client: u32) -> io::Result<TcpStream> {
    let slot = &SLOTS.get().unwrap()[client as usize];
    slot.attempts.fetch_add(1, Relaxed);
    let start = mono_ns();
    let tcp = TcpStream::connect(*ADDR.get().unwrap()).await?;
    let now = mono_ns();
    if KEEP_SOCKETS.get().is_some() {
        use std::os::fd::AsFd;
        let dup = tcp.as_fd().try_clone_to_owned()?;
        KEEP_SOCKETS.get().unwrap().lock().unwrap().push(dup);
    }
    if let Ok(local) = tcp.local_addr() {
        slot.port.store(u32::from(local.port()), Relaxed);
    }
    if slot.connects.fetch_add(1, Relaxed) == 0 {
        FIRST.fetch_add(1, Relaxed);
    }
    let gone = GONE.load(Relaxed);
    if gone != 0 && now > gone && slot.back.compare_exchange(0, now, Relaxed, Relaxed).is_ok() {
        slot.started.store(start, Relaxed);
        BACK.fetch_add(1, Relaxed);
    }
    Ok(tcp)
}

/// Every client's stream: a `TcpStream` made by [`herd_connect`] that notes when it
/// ends (EOF or an error) after the kill. redial gets it through
/// `redial::tokio::stream`, stubborn-io as its `UnderlyingIo`.
struct Probe(TcpStream, u32);

impl Probe {
    fn ended(&self) {
        let killed = KILLED.load(Relaxed);
        if killed != 0 {
            let slot = &SLOTS.get().unwrap()[self.1 as usize];
            let _ = slot.lost.compare_exchange(0, mono_ns(), Relaxed, Relaxed);
        }
    }
}

impl UnderlyingIo<u32> for Probe {
    fn establish(
        client: u32,
    ) -> Pin<Box<dyn std::future::Future<Output = io::Result<Self>> + Send>> {
        Box::pin(async move { herd_connect(client).await.map(|tcp| Probe(tcp, client)) })
    }
}

impl AsyncRead for Probe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.0).poll_read(cx, buf);
        match &poll {
            Poll::Ready(Ok(())) if buf.filled().len() == before && buf.remaining() > 0 => {
                self.ended()
            }
            Poll::Ready(Err(_)) => self.ended(),
            _ => {}
        }
        poll
    }
}

impl AsyncWrite for Probe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

type Service = redial::driver::ClientService<redial::driver::SharedStream<Probe>, io::Error>;

fn spawn_client(kind: Kind, client: u32, services: &mut Vec<Service>) {
    match kind {
        Kind::Redial(configure) => {
            let builder = redial::tokio::builder(move || async move {
                herd_connect(client)
                    .await
                    .map(|tcp| redial::tokio::stream(Probe(tcp, client)))
            });
            let service = configure(builder, u64::from(client))
                .start()
                .expect("a valid configuration");
            services.push(service);
        }
        Kind::Stubborn(options) => {
            let options = options(u64::from(client));
            drop(tokio::spawn(async move {
                let mut conn = StubbornIo::<Probe, u32>::connect_with_options(client, options)
                    .await
                    .expect("stubborn-io connects");
                let mut buf = [0u8; 1];
                // stubborn-io reconnects inside `read` (an EOF is a disconnect to it);
                // it only returns once it gives up, which these delays never do
                while conn.read(&mut buf).await.is_ok() {}
            }));
        }
    }
}

fn ns_to_s(ns: u64) -> f64 {
    ns as f64 * 1e-9
}

/// Child role: one run. Prints `result key=value …` and writes the per-client times.
fn client_role() {
    let herd_name: String = env_parse("REDIAL_HERD_CONFIG");
    let scenario = match std::env::var("REDIAL_HERD_SCENARIO").as_deref() {
        Ok("slow") => Scenario::Slow,
        _ => Scenario::Restart,
    };
    let n: usize = env_parse("REDIAL_HERD_N");
    let downtime = Duration::from_millis(env_parse("REDIAL_HERD_DOWNTIME_MS"));
    let rate: u32 = env_parse("REDIAL_HERD_RATE");
    let backlog: u32 = env_parse("REDIAL_HERD_BACKLOG");
    let deadline = Duration::from_secs(env_parse("REDIAL_HERD_DEADLINE_S"));
    let drain_cap = Duration::from_secs(env_parse("REDIAL_HERD_DRAIN_S"));
    let idle = Duration::from_millis(env_parse("REDIAL_HERD_IDLE_MS"));
    let out_dir: String = env_parse("REDIAL_HERD_OUT");
    let herd = herds()
        .into_iter()
        .find(|h| h.name == herd_name)
        .unwrap_or_else(|| panic!("no configuration {herd_name}"));
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(600));
        eprintln!("herd client: still running after 10 minutes; giving up");
        std::process::exit(3);
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    SLOTS.set((0..n).map(|_| Slot::default()).collect()).ok();
    let (budget_rate, budget_burst) = budget_for(n);
    BUDGET
        .set(redial::Budget::new(budget_rate, budget_burst).expect("a valid budget"))
        .ok();
    if std::env::var("REDIAL_HERD_KEEP_SOCKETS").is_ok_and(|v| v == "1") {
        KEEP_SOCKETS.set(Mutex::new(Vec::with_capacity(3 * n))).ok();
    }
    let mut server = Server::start(0, somaxconn().min(4096), 0);
    let port = server.port;
    ADDR.set(SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
    let mut services: Vec<Service> = Vec::with_capacity(n);

    // 1. everyone connected, the server holding all N
    let heap0 = rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        LIVE.load(Relaxed)
    });
    rt.block_on(async {
        for client in 0..n as u32 {
            spawn_client(herd.kind, client, &mut services);
            if client % 128 == 127 {
                tokio::time::sleep(Duration::from_millis(1)).await; // let the backlog drain
            }
        }
    });
    let setup_deadline = Instant::now() + Duration::from_secs(120);
    while FIRST.load(Relaxed) < n || server.count() < n {
        assert!(
            Instant::now() < setup_deadline,
            "{herd_name}: only {} of {n} clients connected ({} accepted) after 120 s",
            FIRST.load(Relaxed),
            server.count()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A service whose first connect failed counts failures until it has been up 5 s
    // (the builder's reset_backoff_after): wait for those, so every service starts
    // the outage with no failures behind it.
    if !services.is_empty() {
        let until = Instant::now() + Duration::from_secs(10);
        while services.iter().any(|s| s.consecutive_failures() > 0) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(idle);
    let heap_idle = LIVE.load(Relaxed) - heap0;

    // 2. the kill
    let attempts0: u64 = slots_sum(|s| s.attempts.load(Relaxed));
    let redial_attempts0: u64 = services.iter().map(|s| s.counters().attempts).sum();
    PEAK.store(LIVE.load(Relaxed), Relaxed);
    let cpu0 = cpu_seconds();
    let killed = mono_ns();
    KILLED.store(killed, Relaxed);
    let restart_at = Instant::now() + downtime;
    server.kill();
    GONE.store(mono_ns(), Relaxed);
    let (backlog, rate) = match scenario {
        Scenario::Restart => (somaxconn().min(4096), 0),
        Scenario::Slow => (backlog, rate),
    };
    let mut server = Server::bound(port, backlog, rate);
    std::thread::sleep(restart_at.saturating_duration_since(Instant::now()));
    let peak_down = PEAK.load(Relaxed) - heap0;
    let net0 = netstat();
    server.listen();
    let up = server.up;

    // 3. everyone back
    let until = Instant::now() + deadline;
    while BACK.load(Relaxed) < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    let all_back_seen = mono_ns();
    let cpu = cpu_seconds() - cpu0;
    let peak_back = PEAK.load(Relaxed) - heap0;
    let attempts: u64 = slots_sum(|s| s.attempts.load(Relaxed)) - attempts0;
    let back_n = BACK.load(Relaxed);
    let accepted_at_all_back = server.count();

    // 4. let the server drain its accept queue (the slow one takes backlog / rate)
    // and the kernel finish or drop every pending handshake (a SYN_RECV whose ACK
    // found the queue full is retried with SYN-ACKs for about a minute): then a
    // client whose connection the server never accepted never will be.
    let drain_until = Instant::now() + drain_cap;
    let drained = loop {
        let (queued, syn_recv) = listen_queue(port);
        if queued == 0 && syn_recv == 0 {
            break true;
        }
        if Instant::now() > drain_until {
            eprintln!(
                "herd {herd_name}: {queued} connections still queued and {syn_recv} handshakes pending after {drain_cap:?}"
            );
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // `REDIAL_HERD_LINGER_S`: wait longer still, to check that "never" holds
    if let Some(linger) = std::env::var("REDIAL_HERD_LINGER_S")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        std::thread::sleep(Duration::from_secs(linger));
    }
    let heap_after = LIVE.load(Relaxed) - heap0;
    let net1 = netstat();
    let accepts = server.report();
    let accepted_ports: HashSet<u16> = accepts.iter().map(|&(_, p)| p).collect();
    let slots = SLOTS.get().unwrap();
    let count_half_open = |accepted_ports: &HashSet<u16>| {
        slots
            .iter()
            .filter(|s| s.back.load(Relaxed) != 0)
            .filter(|s| !accepted_ports.contains(&(s.port.load(Relaxed) as u16)))
            .count()
    };
    let half_open = count_half_open(&accepted_ports);
    // With a liveness probe, a client whose connection the server never accepted
    // finds out (its probe is never answered) and connects again: wait until every
    // client's connection has been accepted, and say when, from the kill.
    let mut cleared_s = f64::NAN;
    if herd_name == "redial-probe" && scenario == Scenario::Slow {
        let give_up = Instant::now() + Duration::from_secs(120);
        let mut left = half_open;
        while left > 0 && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(500));
            let ports: HashSet<u16> = server.report().iter().map(|&(_, p)| p).collect();
            left = count_half_open(&ports);
        }
        if left == 0 {
            cleared_s = (mono_ns() - killed) as f64 / 1e9;
        }
    }

    // 5. checks
    let mut problems = vec![];
    if !services.is_empty() {
        let redial_attempts: u64 =
            services.iter().map(|s| s.counters().attempts).sum::<u64>() - redial_attempts0;
        if redial_attempts < attempts {
            problems.push(format!(
                "redial counted {redial_attempts} attempts, the connectors {attempts}"
            ));
        }
        let odd = services
            .iter()
            .filter(|s| {
                let c = s.counters();
                c.losses < 1 || c.connections != c.losses + 1
            })
            .count();
        if odd > 0 {
            problems.push(format!(
                "{odd} services are not connected again after their losses"
            ));
        }
    } else if STUBBORN_LOSSES.load(Relaxed) < n {
        problems.push(format!(
            "stubborn-io reported {} disconnects for {n} clients",
            STUBBORN_LOSSES.load(Relaxed)
        ));
    }
    // Losses beyond the one each client had at the kill: connections the dying
    // server's kernel completed (then reset), or later losses.
    let extra_losses = if services.is_empty() {
        STUBBORN_LOSSES.load(Relaxed).saturating_sub(n) as u64
    } else {
        services
            .iter()
            .map(|s| s.counters().losses.saturating_sub(1))
            .sum()
    };
    for p in &problems {
        eprintln!("herd {herd_name}: {p}");
    }

    // 6. results
    let mut back: Vec<u64> = slots
        .iter()
        .map(|s| s.back.load(Relaxed))
        .filter(|&b| b != 0)
        .map(|b| b - killed)
        .collect();
    back.sort_unstable();
    let mut file = String::new();
    for b in &back {
        writeln!(file, "back {b}").unwrap();
    }
    for (at, _) in &accepts {
        writeln!(file, "accept {}", at.saturating_sub(killed)).unwrap();
    }
    // Per client (ns since the kill, 0: never): its stream ended, the attempt that
    // brought it back started, it was back. Where the time back goes: noticing the
    // loss, the retry delay plus scheduling, the connect itself.
    let since = |t: u64| t.saturating_sub(killed);
    let (mut detect, mut react, mut connect) = (vec![], vec![], vec![]);
    for (i, s) in slots.iter().enumerate() {
        let (lost, started, b) = (
            s.lost.load(Relaxed),
            s.started.load(Relaxed),
            s.back.load(Relaxed),
        );
        writeln!(
            file,
            "client {i} {} {} {}",
            since(lost),
            since(started),
            since(b)
        )
        .unwrap();
        if lost != 0 && started != 0 && b != 0 {
            detect.push(lost - killed);
            react.push(started.saturating_sub(lost));
            connect.push(b - started);
        }
    }
    let quantile = |v: &mut Vec<u64>, q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_unstable();
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        ns_to_s(v[i])
    };
    let (detect_med, detect_max) = (quantile(&mut detect, 0.5), quantile(&mut detect, 1.0));
    let (react_med, react_p99) = (quantile(&mut react, 0.5), quantile(&mut react, 0.99));
    let (connect_med, connect_p99) = (quantile(&mut connect, 0.5), quantile(&mut connect, 0.99));
    let round: usize = env_parse("REDIAL_HERD_ROUND");
    let path = format!("{out_dir}/{}-{herd_name}-{round}.times", scenario.name());
    std::fs::write(&path, file).expect("write the times");

    let pick = |q: f64| -> f64 {
        if back.len() < n || back.is_empty() {
            return f64::NAN;
        }
        let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
        ns_to_s(back[i])
    };
    let (peak100, peak1s) = peak_rates(&accepts);
    let net: Vec<String> = NETSTAT
        .iter()
        .zip(net1.iter().zip(net0))
        .map(|(name, (b, a))| format!("{name}={}", b - a))
        .collect();
    let scenario_name = scenario.name();
    let gone = ns_to_s(GONE.load(Relaxed) - killed);
    let up = ns_to_s(up.saturating_sub(killed));
    let (median, p99, max) = (pick(0.5), pick(0.99), pick(1.0));
    let seen_all_back = ns_to_s(all_back_seen - killed);
    let accepted = accepts.len();
    let problems = problems.len();
    let net = net.join(" ");
    println!(
        "result config={herd_name} scenario={scenario_name} n={n} back={back_n} gone={gone:.4} \
         up={up:.4} median={median:.4} p99={p99:.4} max={max:.4} seen_all_back={seen_all_back:.4} \
         cpu={cpu:.4} attempts={attempts} accepted={accepted} \
         accepted_at_all_back={accepted_at_all_back} half_open={half_open} drained={drained} \
         cleared_s={cleared_s} \
         extra_losses={extra_losses} peak100={peak100} peak1s={peak1s} heap_idle={heap_idle} \
         heap_down={peak_down} heap_back={peak_back} heap_after={heap_after} backlog={backlog} \
         rate={rate} problems={problems} detect_med={detect_med:.4} detect_max={detect_max:.4} \
         react_med={react_med:.4} react_p99={react_p99:.4} connect_med={connect_med:.5} \
         connect_p99={connect_p99:.5} {net}",
    );
    io::stdout().flush().unwrap();
    server.kill(); // first, so the TIME_WAITs are the server's, not the client ports'
    std::process::exit(0); // skip tearing down N clients
}

/// The listener on `port` in `/proc/net/tcp`: connections waiting in its accept
/// queue, and handshakes in SYN_RECV.
fn listen_queue(port: u16) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let (mut queued, mut syn_recv) = (0, 0);
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let local_port = f[1]
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if local_port != Some(port) {
            continue;
        }
        match f[3] {
            // LISTEN: rx_queue is the accept queue's length
            "0A" => {
                queued += f[4]
                    .split_once(':')
                    .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
                    .unwrap_or(0)
            }
            "03" => syn_recv += 1,
            _ => {}
        }
    }
    (queued, syn_recv)
}

fn slots_sum(f: impl Fn(&Slot) -> u32) -> u64 {
    SLOTS.get().unwrap().iter().map(|s| u64::from(f(s))).sum()
}

/// The busiest 100 ms (× 10) and the busiest sliding 1 s, in accepts per second.
fn peak_rates(accepts: &[(u64, u16)]) -> (u64, u64) {
    let mut at: Vec<u64> = accepts.iter().map(|&(t, _)| t).collect();
    at.sort_unstable();
    let busiest = |window: u64| {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..at.len() {
            while at[hi] - at[lo] >= window {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best as u64
    };
    (busiest(100_000_000) * 10, busiest(1_000_000_000))
}

// ----- the parent: run everything, print the tables, write the series --------------

/// One run's figures, as the client printed them.
struct Run {
    herd: Herd,
    scenario: Scenario,
    round: usize,
    f: BTreeMap<String, String>,
    /// Seconds since the kill: each client back, each accept by the new server.
    back: Vec<f64>,
    accepts: Vec<f64>,
    /// Per client, seconds since the kill (0: never): stream ended, the attempt that
    /// brought it back started, back.
    clients: Vec<[f64; 3]>,
}

impl Run {
    fn num(&self, key: &str) -> f64 {
        self.f
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    }
}

/// The runs of one configuration in one scenario (one per round).
struct Group<'a> {
    herd: Herd,
    runs: Vec<&'a Run>,
}

impl Group<'_> {
    /// The median over the rounds (the lower middle one for an even count).
    fn num(&self, key: &str) -> f64 {
        let mut v: Vec<f64> = self.runs.iter().map(|r| r.num(key)).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(f64::NAN)
    }
}

fn groups<'a>(runs: &[&'a Run]) -> Vec<Group<'a>> {
    let mut out: Vec<Group<'a>> = vec![];
    for r in runs {
        match out.iter_mut().find(|g| g.herd.name == r.herd.name) {
            Some(g) => g.runs.push(r),
            None => out.push(Group {
                herd: r.herd,
                runs: vec![r],
            }),
        }
    }
    out
}

fn run_one(
    herd: Herd,
    scenario: Scenario,
    round: usize,
    s: &Scale,
    n: usize,
    out_dir: &str,
) -> Run {
    let exe = std::env::current_exe().expect("this executable");
    let started = Instant::now();
    let out = Command::new(exe)
        .env(ROLE, "client")
        .env("REDIAL_HERD_CONFIG", herd.name)
        .env("REDIAL_HERD_SCENARIO", scenario.name())
        .env("REDIAL_HERD_N", n.to_string())
        .env(
            "REDIAL_HERD_DOWNTIME_MS",
            s.downtime.as_millis().to_string(),
        )
        .env("REDIAL_HERD_RATE", s.rate.to_string())
        .env("REDIAL_HERD_BACKLOG", s.backlog.to_string())
        .env("REDIAL_HERD_DEADLINE_S", s.deadline.as_secs().to_string())
        .env("REDIAL_HERD_IDLE_MS", s.idle.as_millis().to_string())
        .env("REDIAL_HERD_DRAIN_S", s.drain.as_secs().to_string())
        .env("REDIAL_HERD_OUT", out_dir)
        .env("REDIAL_HERD_ROUND", round.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run a herd");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("result "))
        .unwrap_or_else(|| panic!("{}: no result ({:?}): {text}", herd.name, out.status));
    let f: BTreeMap<String, String> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let times = std::fs::read_to_string(format!(
        "{out_dir}/{}-{}-{round}.times",
        scenario.name(),
        herd.name
    ))
    .expect("the run's times");
    let (mut back, mut accepts, mut clients) = (vec![], vec![], vec![[0.0; 3]; n]);
    for l in times.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let t = |i: usize| ns_to_s(w[i].parse().unwrap());
        match w[0] {
            "back" => back.push(t(1)),
            "accept" => accepts.push(t(1)),
            _ => clients[w[1].parse::<usize>().unwrap()] = [t(2), t(3), t(4)],
        }
    }
    accepts.sort_by(f64::total_cmp);
    eprintln!(
        "herd: {} / {} (round {}) done in {:.1} s",
        scenario.name(),
        herd.name,
        round + 1,
        started.elapsed().as_secs_f64()
    );
    Run {
        herd,
        scenario,
        round,
        f,
        back,
        accepts,
        clients,
    }
}

/// Where the time back goes: noticing the loss, the delay and scheduling, the connect.
fn print_phases(runs: &[Group<'_>]) {
    for g in runs {
        println!(
            "herd: {:<44} kill -> loss seen {:>5.1} ms median, {:>5.1} ms max; loss -> attempt \
             {:>7.1} ms median, {:>7.1} ms p99; connect {:>6.2} ms median, {:>6.2} ms p99",
            g.herd.label,
            g.num("detect_med") * 1e3,
            g.num("detect_max") * 1e3,
            g.num("react_med") * 1e3,
            g.num("react_p99") * 1e3,
            g.num("connect_med") * 1e3,
            g.num("connect_p99") * 1e3,
        );
    }
}

fn print_table(runs: &[Group<'_>], n: usize) {
    println!(
        "herd: {:<44} {:>7} {:>7} {:>7} {:>6} {:>8} {:>10} {:>9} {:>7} {:>9} {:>8} {:>8}",
        "configuration",
        "median",
        "p99",
        "max",
        "CPU s",
        "CPU/rec",
        "peak acc/s",
        "acc/s 1s",
        "att/cl",
        "heap idle",
        "outage",
        "to back",
    );
    for r in runs {
        let cpu = r.num("cpu");
        println!(
            "herd: {:<44} {:>6.3}s {:>6.3}s {:>6.3}s {:>6.3} {:>6.1}us {:>10} {:>9} {:>7.2} {:>8.0}B {:>7.0}B {:>7.0}B",
            r.herd.label,
            r.num("median"),
            r.num("p99"),
            r.num("max"),
            cpu,
            cpu / n as f64 * 1e6,
            r.num("peak100"),
            r.num("peak1s"),
            r.num("attempts") / n as f64,
            r.num("heap_idle") / n as f64,
            r.num("heap_down") / n as f64,
            r.num("heap_back") / n as f64,
        );
    }
}

/// The budget's goal: the server never sees more than the budget's rate (+10 %) in
/// any second, and everyone is back within N / rate seconds plus the retry delay
/// (Twisted's first delay is at most 2.5 s with its jitter).
fn print_budget_goal(groups: &[Group<'_>], n: usize) {
    let Some(budget) = groups.iter().find(|g| g.herd.name == "redial-budget") else {
        return;
    };
    let (rate, burst) = budget_for(n);
    let peak = budget.num("peak1s");
    let max = budget.num("max");
    let back_by = n as f64 / rate + 2.5;
    println!(
        "herd: budget {rate:.0}/s (burst {burst}): peak {peak:.0} accepts in one second \
         ({:.2}x the rate; goal <= 1.10x: {}), everyone back after {max:.3}s (goal <= \
         N/rate + 2.5 s = {back_by:.1}s: {})",
        peak / rate,
        if peak <= rate * 1.10 {
            "met"
        } else {
            "NOT met"
        },
        if max <= back_by { "met" } else { "NOT met" },
    );
}

/// redial against its stubborn-io twin, figure by figure (lower is better for all):
/// ratios of the medians over the rounds, and the CPU ratio of each round.
fn print_ratios(groups: &[Group<'_>]) {
    // the goal's figures; heap is reported beside them, not judged here
    const FIGURES: [(&str, &str); 5] = [
        ("median", "median time back"),
        ("p99", "p99 time back"),
        ("max", "max time back"),
        ("attempts", "attempts per client"),
        ("cpu", "CPU per reconnect"),
    ];
    for stubborn in groups {
        let Some(twin) = stubborn.herd.twin else {
            continue;
        };
        let Some(redial) = groups.iter().find(|g| g.herd.name == twin) else {
            continue;
        };
        let mut parts = vec![];
        let mut all = true;
        for (key, what) in FIGURES {
            let (a, b) = (redial.num(key), stubborn.num(key));
            let ok = a <= b * 1.02 || (key != "cpu" && a - b < 0.005);
            all &= ok;
            parts.push(format!(
                "{what} {:.2}x{}",
                a / b,
                if ok { "" } else { " (worse)" }
            ));
        }
        let per_round: Vec<String> = redial
            .runs
            .iter()
            .zip(&stubborn.runs)
            .map(|(a, b)| format!("{:.2}", a.num("cpu") / b.num("cpu")))
            .collect();
        // The same client index draws the same delays in both: compare client by
        // client, for the clients back after exactly one attempt in both.
        let (mut react, mut back) = (vec![], vec![]);
        for (a, b) in redial.runs.iter().zip(&stubborn.runs) {
            let single = |r: &Run, i: usize| {
                r.clients[i].iter().all(|&t| t > 0.0) && r.clients[i][1] < r.clients[i][2]
            };
            for i in 0..a.clients.len().min(b.clients.len()) {
                if single(a, i) && single(b, i) {
                    let (x, y) = (a.clients[i], b.clients[i]);
                    react.push((x[1] - x[0]) - (y[1] - y[0]));
                    back.push(x[2] - y[2]);
                }
            }
        }
        if !react.is_empty() {
            let q = |v: &mut Vec<f64>, q: f64| {
                v.sort_by(f64::total_cmp);
                v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1] * 1e3
            };
            println!(
                "herd: {} - {}, client by client (same delays): loss -> attempt start {:+.1} ms median \
                 ({:+.1} .. {:+.1} ms, 1st..99th percentile); time back {:+.1} ms median",
                redial.herd.name,
                stubborn.herd.name,
                q(&mut react, 0.5),
                q(&mut react, 0.01),
                q(&mut react, 0.99),
                q(&mut back, 0.5),
            );
        }
        println!(
            "herd: {} / {}: {}; {} (CPU ratio per round: {})",
            redial.herd.name,
            stubborn.herd.name,
            parts.join(", "),
            if all {
                "redial at least as good on every figure (times within 2 % or 5 ms, the rest within 2 %)"
            } else {
                "redial NOT at least as good on every figure"
            },
            per_round.join(", "),
        );
    }
}

fn target_dir() -> std::path::PathBuf {
    // …/target/<profile>/deps/herd-<hash>
    let exe = std::env::current_exe().expect("this executable");
    exe.ancestors()
        .nth(3)
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| std::path::PathBuf::from("target"))
}

/// `target/herd/series.csv`: per scenario and configuration, the number of clients
/// connected at each step (all N before the kill, 0 right after it), and for the
/// slow server its accepts since the restart.
fn write_series(runs: &[Run], n: usize, path: &std::path::Path) {
    let mut csv = String::from("scenario,config,label,kind,t,value\n");
    for scenario in [Scenario::Restart, Scenario::Slow] {
        let mine: Vec<&Run> = runs
            .iter()
            .filter(|r| r.scenario == scenario && r.round == 0)
            .collect();
        let end = mine
            .iter()
            .flat_map(|r| r.back.iter().chain(&r.accepts))
            .copied()
            .fold(0.0, f64::max);
        let end = end + 0.25;
        let step = if end > 12.0 { 0.05 } else { 0.01 };
        for r in &mine {
            let mut kinds = vec![("connected", &r.back)];
            if scenario == Scenario::Slow {
                kinds.push(("accepted", &r.accepts));
            }
            for (kind, times) in kinds {
                let label = r.herd.label.replace(',', ";");
                let before = if kind == "connected" { n } else { 0 };
                writeln!(
                    csv,
                    "{},{},{label},{kind},-0.25,{before}",
                    scenario.name(),
                    r.herd.name
                )
                .unwrap();
                writeln!(
                    csv,
                    "{},{},{label},{kind},0,{before}",
                    scenario.name(),
                    r.herd.name
                )
                .unwrap();
                let mut i = 0;
                let mut k = 0;
                while k as f64 * step <= end {
                    let t = k as f64 * step;
                    while i < times.len() && times[i] <= t {
                        i += 1;
                    }
                    writeln!(
                        csv,
                        "{},{},{label},{kind},{t:.3},{i}",
                        scenario.name(),
                        r.herd.name
                    )
                    .unwrap();
                    k += 1;
                }
            }
        }
    }
    std::fs::write(path, csv).expect("write series.csv");
}

fn write_results(runs: &[Run], path: &std::path::Path) {
    let keys: Vec<String> = runs
        .first()
        .map(|r| r.f.keys().cloned().collect())
        .unwrap_or_default();
    let mut csv = format!("label,round,{}\n", keys.join(","));
    for r in runs {
        let values: Vec<&str> = keys
            .iter()
            .map(|k| r.f.get(k).map_or("", String::as_str))
            .collect();
        let label = r.herd.label.replace(',', ";");
        writeln!(csv, "{label},{},{}", r.round + 1, values.join(",")).unwrap();
    }
    std::fs::write(path, csv).expect("write results.csv");
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("server") => return server_role(),
        Ok("client") => return client_role(),
        _ => {}
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let benching = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    // `cargo bench -- <filter>…`: only the runs whose `herd/<scenario>/<config>` name
    // contains one of them
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let s = scale(benching, quick);
    let started = Instant::now();

    let limit = raise_open_files();
    let mut n = s.n;
    // Sockets per client: one; stubborn-io holds the old one until its new connect
    // returns, so two while that connect waits (against the slow server, about 1.6
    // per client at the peak: still under 20,000 for N = 10,000; running out would
    // show as failed connects, attempts per client above 1). With
    // REDIAL_HERD_KEEP_SOCKETS, a kept duplicate of each as well: four at worst.
    let per_client = if std::env::var("REDIAL_HERD_KEEP_SOCKETS").is_ok_and(|v| v == "1") {
        4
    } else {
        1
    };
    if (n * per_client) as u64 + 256 > limit {
        n = (limit.saturating_sub(256) / per_client as u64) as usize;
        println!("herd: the open-file limit is {limit} (hard limit); N lowered to {n}");
    }
    // the full run's files are the plot's; any other run writes beside them
    let partial =
        !filters.is_empty() || std::env::vars().any(|(k, _)| k.starts_with("REDIAL_HERD_"));
    let out_dir = target_dir().join(match (benching, quick) {
        (true, false) if !partial => "herd",
        (true, false) => "herd-partial",
        (true, true) => "herd-quick",
        (false, _) => "herd-smoke",
    });
    std::fs::create_dir_all(&out_dir).expect("create target/herd");
    let out = out_dir.to_str().expect("a UTF-8 path").to_string();

    println!(
        "herd: N = {n}, down {:?}, slow server: {} accepts/s, backlog {} (somaxconn {}); load average before: {}",
        s.downtime,
        s.rate,
        s.backlog,
        somaxconn(),
        load_average()
    );
    let mut runs = vec![];
    for scenario in [Scenario::Restart, Scenario::Slow] {
        if scenario == Scenario::Slow && !s.slow {
            continue;
        }
        let rounds = match scenario {
            Scenario::Restart => s.rounds,
            Scenario::Slow => 1,
        };
        for round in 0..rounds {
            for herd in herds() {
                if scenario == Scenario::Slow && !herd.slow {
                    continue;
                }
                if s.only.is_some_and(|only| !only.contains(&herd.name)) {
                    continue;
                }
                let full_name = format!("herd/{}/{}", scenario.name(), herd.name);
                if !filters.is_empty() && !filters.iter().any(|f| full_name.contains(f.as_str())) {
                    continue;
                }
                runs.push(run_one(herd, scenario, round, &s, n, &out));
            }
        }
    }

    let mut failed = vec![];
    for scenario in [Scenario::Restart, Scenario::Slow] {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.scenario == scenario).collect();
        if mine.is_empty() {
            continue;
        }
        println!();
        match scenario {
            Scenario::Restart => println!(
                "herd: server killed, back after {:?} (listening again at {:.3} s after the kill), N = {n}:",
                s.downtime,
                mine.iter().map(|r| r.num("up")).fold(0.0, f64::max),
            ),
            Scenario::Slow => println!(
                "herd: server killed, back after {:?} accepting at most {}/s, backlog {}, N = {n}:",
                s.downtime, s.rate, s.backlog
            ),
        }
        let grouped = groups(&mine);
        if grouped.iter().any(|g| g.runs.len() > 1) {
            println!(
                "herd: medians of {} interleaved rounds (the plot shows round 1)",
                grouped[0].runs.len()
            );
        }
        print_table(&grouped, n);
        println!(
            "herd: (time back: from the kill to a client's first connect to the new server; max = all back. \
             CPU: the client process, kill to all back; CPU/rec = / N. peak acc/s: the new server's busiest \
             100 ms x 10; acc/s 1s: its busiest second. att/cl: connects started, kill to all back, / N. \
             heap per client, above the process before the clients: idle and connected; peak from the kill \
             to the restart (outage); peak from the kill to all back)"
        );
        for r in &mine {
            let back = r.num("back");
            let name = format!("{} (round {})", r.herd.name, r.round + 1);
            if back < n as f64 {
                println!(
                    "herd: {name}: only {back} of {n} back within {:?} of the restart",
                    s.deadline
                );
            }
            if r.num("extra_losses") > 0.0 {
                println!(
                    "herd: {name}: {} connections completed by the dying server's kernel in the {:.0} ms \
                     it took to die (reset a moment later, not counted as back)",
                    r.num("extra_losses"),
                    r.num("gone") * 1e3,
                );
            }
            if scenario == Scenario::Slow {
                println!(
                    "herd: {}: when the last client was back the server had accepted {} of {n}; \
                     after its queue drained and every pending handshake ended{}, {} clients still \
                     believed they were connected to a server that never accepted them",
                    r.herd.name,
                    r.num("accepted_at_all_back"),
                    if r.f.get("drained").is_some_and(|d| d == "true") {
                        ""
                    } else {
                        " (NOT: the wait timed out)"
                    },
                    r.num("half_open"),
                );
                if r.num("cleared_s").is_finite() {
                    println!(
                        "herd: {}: with the liveness probe, every client's connection had been \
                         accepted {:.1} s after the kill: none left believing in a connection the \
                         server never accepted",
                        r.herd.name,
                        r.num("cleared_s"),
                    );
                }
                let net: Vec<String> = NETSTAT
                    .iter()
                    .map(|k| format!("{k} {}", r.f.get(*k).map_or("?", String::as_str)))
                    .collect();
                println!(
                    "herd: {}: kernel (system-wide, restart to drained): {}; server accepted {} in all",
                    r.herd.name,
                    net.join(", "),
                    r.num("accepted")
                );
            }
            let sane = back == n as f64
                && ["median", "p99", "max", "cpu"]
                    .iter()
                    .all(|k| r.num(k).is_finite())
                && r.num("problems") == 0.0;
            if !sane {
                failed.push(format!("{}/{}", scenario.name(), r.herd.name));
            }
        }
        print_phases(&grouped);
        print_ratios(&grouped);
        if scenario == Scenario::Restart {
            // (Against the slow server, the server's own rate bounds everyone.)
            print_budget_goal(&grouped, n);
        }
    }
    write_series(&runs, n, &out_dir.join("series.csv"));
    write_results(&runs, &out_dir.join("results.csv"));
    println!(
        "\nherd: series in {}; plot: python3 benches/herd_plot.py [--series <that file>]",
        out_dir.join("series.csv").display()
    );
    println!(
        "herd: done in {:.1} s; load average after: {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    assert!(failed.is_empty(), "herd: runs that failed: {failed:?}");
}
