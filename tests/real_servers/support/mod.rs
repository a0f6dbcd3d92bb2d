//! What the real-server tests (Redis, PostgreSQL, WebSocket) share: getting the
//! server programs, free ports, temporary directories, file descriptor counts, one
//! test at a time, and the callers of a restart loop ([`restarts`]). The servers
//! themselves: [`redis`] and [`postgres`].
//!
//! A test that needs a server program never skips silently. [`require`] finds the
//! program; when it is missing it installs Debian's package itself
//! (`apt-get install -y --no-install-recommends PACKAGE`) if this process runs as
//! root or has passwordless sudo, with a file lock so that parallel tests and test
//! binaries do not run apt at the same time, and stops the system service the
//! package may have started (the tests start their own servers). Otherwise it
//! fails, naming the package to install.

pub mod postgres;
pub mod redis;
pub mod restarts;

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// One real-server test at a time, across the whole binary: they count this
/// process's file descriptors and the servers' connections.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Returns what `find` finds; if it finds nothing, installs Debian's `package`
/// (then stops the system `services` it may have started) and looks again.
/// Panics, naming the package, if the program cannot be had.
///
/// `what` names the program in messages (e.g. "redis-server").
pub fn require<T>(what: &str, package: &str, services: &[&str], find: impl Fn() -> Option<T>) -> T {
    if let Some(found) = find() {
        return found;
    }
    let how = match Privilege::get() {
        Some(how) => how,
        None => panic!(
            "{what} is not installed, and this test cannot install it (it runs neither \
             as root nor with passwordless sudo). These tests start a real {what}: install \
             Debian's `{package}` package first, e.g. \
             `sudo apt-get install -y --no-install-recommends {package}` (.ci/run does)."
        ),
    };
    // One installer at a time, across threads and processes; whoever waited finds
    // the program installed by the one before.
    let _lock = install_lock();
    if let Some(found) = find() {
        return found;
    }
    eprintln!("{what} is not installed: installing Debian's `{package}` package ...");
    if let Err(e) = apt_install(how, package) {
        panic!(
            "{what} is not installed, and installing Debian's `{package}` package failed: \
             {e}. Install it yourself: \
             `sudo apt-get install -y --no-install-recommends {package}`."
        );
    }
    for service in services {
        // The package may start a system server (Debian does, where it can); the
        // tests start their own on other ports, so stop it.
        let _ = how.command("service").args([*service, "stop"]).output();
    }
    find().unwrap_or_else(|| {
        panic!(
            "installed Debian's `{package}` package, but still cannot find {what}; \
             install it yourself (`sudo apt-get install -y --no-install-recommends {package}`)"
        )
    })
}

/// Looks for `program` on the PATH.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

/// Is `path` an executable file?
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How this process may run apt-get.
#[derive(Clone, Copy)]
enum Privilege {
    Root,
    Sudo,
}

impl Privilege {
    fn get() -> Option<Privilege> {
        if is_root() {
            return Some(Privilege::Root);
        }
        let sudo = Command::new("sudo")
            .args(["-n", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        matches!(sudo, Ok(s) if s.success()).then_some(Privilege::Sudo)
    }

    fn command(self, program: &str) -> Command {
        let mut cmd = match self {
            Privilege::Root => Command::new(program),
            Privilege::Sudo => {
                let mut c = Command::new("sudo");
                c.args(["-n", "env", "DEBIAN_FRONTEND=noninteractive", program]);
                c
            }
        };
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        cmd
    }
}

fn apt_install(how: Privilege, package: &str) -> Result<(), String> {
    let install = || {
        how.command("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", package])
            .output()
    };
    let first = install().map_err(|e| format!("cannot run apt-get: {e}"))?;
    if first.status.success() {
        return Ok(());
    }
    // Perhaps the package lists are missing or stale (a fresh machine): update them
    // once and try again.
    let update = how
        .command("apt-get")
        .args(["update", "-q"])
        .output()
        .map_err(|e| format!("cannot run apt-get update: {e}"))?;
    if !update.status.success() {
        return Err(format!("apt-get update failed: {}", tail(&update)));
    }
    let second = install().map_err(|e| format!("cannot run apt-get: {e}"))?;
    if second.status.success() {
        Ok(())
    } else {
        Err(format!("apt-get install failed: {}", tail(&second)))
    }
}

fn tail(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// A lock over installing packages, held until dropped.
fn install_lock() -> File {
    let path = std::env::temp_dir().join("redial-tests-apt.lock");
    // Read-only is enough to lock (and works on a lock file another user made).
    let file = File::open(&path)
        .or_else(|_| {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        })
        .unwrap_or_else(|e| panic!("cannot open the lock file {}: {e}", path.display()));
    // `File::lock` is Rust 1.89: fine here, the MSRV (1.88) is the library's; the
    // tests build with stable.
    #[allow(clippy::incompatible_msrv)]
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    file
}

/// Does this process run as root (effective uid 0)?
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let uids = s.lines().find_map(|l| l.strip_prefix("Uid:"))?.to_owned();
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// The uid and gid of the local user `name`, from /etc/passwd.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A free TCP port on 127.0.0.1 *below* the kernel's ephemeral range, so that none
/// of the client's own outgoing connections can take it while the server is down.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12000 {
        (10000u32, u32::from(low))
    } else {
        (u32::from(low) / 2, u32::from(low))
    };
    let mut seed = seed();
    for _ in 0..1000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let port = (from + ((seed >> 33) as u32) % (to - from)) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {from}..{to}");
}

/// A new, empty directory under the system's temp dir, named `prefix-<random>`.
pub fn unique_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{:x}", seed()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

fn seed() -> u64 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The median and the largest of `samples` (zero if empty).
pub fn median_and_max(
    samples: &[std::time::Duration],
) -> (std::time::Duration, std::time::Duration) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let max = sorted.last().copied().unwrap_or_default();
    (median, max)
}

/// Drains what `events` already holds, then freezes the server (`freeze`), and
/// returns how long the service took to tell a loss, with its reason. Panics if
/// none comes within 10 s ("the frozen server was never found").
pub async fn time_to_loss<E>(
    events: &mut redial::driver::Events<E>,
    freeze: impl FnOnce(),
) -> (std::time::Duration, redial::driver::Loss) {
    use futures_util::StreamExt;
    use std::time::{Duration, Instant};
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), events.next()).await {}
    freeze();
    let at = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(redial::driver::Event::Lost { reason, .. }) = events.next().await {
                return reason;
            }
        }
    })
    .await
    .expect("the frozen server was never found");
    (at.elapsed(), reason)
}

/// Runs a test body on its own multi-threaded Tokio runtime (2 workers), gone when
/// this returns (so that file descriptors can be counted around it).
pub fn run<F: std::future::Future<Output = ()>>(body: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(body);
}

/// Polls `cond` until it holds; panics after `limit`.
pub async fn eventually(what: &str, limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// A server a liveness test can freeze (SIGSTOP: its sockets stay open, nothing
/// is answered) and thaw.
pub trait Freeze {
    /// Freezes the server.
    fn freeze(&mut self);
    /// Resumes it.
    fn thaw(&mut self);
}

/// How long a service took to find its frozen server, idle and with a request
/// waiting (each sorted).
pub struct Found {
    /// Rounds with nothing waiting.
    pub idle: Vec<std::time::Duration>,
    /// Rounds with the application's request waiting for its answer.
    pub waiting: Vec<std::time::Duration>,
}

/// `rounds` rounds idle and `rounds` with a request waiting, alternately: each
/// waits for the service's connection, sends `request` on it (every other round,
/// then gives it 50 ms to reach the server), freezes `server`, times the loss,
/// which must be `ProbeTimedOut`, checks that the waiting request then fails
/// within 5 s, with the connection, and thaws the server.
pub async fn frozen_rounds<H, E, S, F, T, X>(
    service: &redial::driver::ClientService<H, E>,
    server: &mut S,
    rounds: usize,
    request: impl Fn(&H) -> F,
) -> Found
where
    H: Clone + Send + Sync + 'static,
    E: core::fmt::Display + core::fmt::Debug + Send + Sync + 'static,
    S: Freeze,
    F: std::future::Future<Output = Result<T, X>> + Send + 'static,
    T: core::fmt::Debug + Send + 'static,
    X: core::fmt::Debug + Send + 'static,
{
    use std::time::Duration;
    let mut events = service.events();
    let (mut idle, mut waiting) = (Vec::new(), Vec::new());
    for round in 0..rounds * 2 {
        let conn = tokio::time::timeout(Duration::from_secs(20), service.when_connected())
            .await
            .expect("connected again")
            .unwrap();
        let pending = (round % 2 == 1).then(|| tokio::spawn(request(&conn)));
        tokio::time::sleep(Duration::from_millis(50)).await; // the request is in
        let (found, reason) = time_to_loss(&mut events, || server.freeze()).await;
        assert!(
            matches!(reason, redial::driver::Loss::ProbeTimedOut),
            "{reason:?}"
        );
        if let Some(pending) = pending {
            let failed = tokio::time::timeout(Duration::from_secs(5), pending)
                .await
                .expect("the waiting request fails with its connection")
                .unwrap();
            assert!(failed.is_err(), "{failed:?}");
            waiting.push(found);
        } else {
            idle.push(found);
        }
        server.thaw();
    }
    idle.sort();
    waiting.sort();
    Found { idle, waiting }
}
