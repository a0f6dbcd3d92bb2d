//! A throwaway PostgreSQL cluster for the PostgreSQL tests: `initdb` in a temp dir
//! (trust authentication), a `postgres` server process on a free 127.0.0.1 port,
//! killed with SIGKILL (the postmaster and every backend at once) and started again
//! on the same port as often as a test likes, and removed on drop.
//!
//! The binaries are looked up under `/usr/lib/postgresql/*/bin` (Debian's layout,
//! newest version first), then on the PATH; when there are none, Debian's
//! `postgresql` package is installed (see `support::require`). PostgreSQL
//! refuses to run as root: when the tests run as root (as CI does), `initdb` and
//! the server run as the `postgres` user (which the package creates), with the temp
//! dir handed to that user.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The database superuser `initdb` creates (trust authentication: no password).
pub const USER: &str = "postgres";

/// How long a server may take to accept connections after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The directory holding `initdb` and `postgres`, installing Debian's `postgresql`
/// package if there is none.
pub fn require_postgres() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        super::require(
            "PostgreSQL (initdb, postgres)",
            "postgresql",
            &["postgresql"],
            find_bin,
        )
    })
}

fn find_bin() -> Option<PathBuf> {
    let has_both = |dir: &Path| {
        super::is_executable(&dir.join("initdb")) && super::is_executable(&dir.join("postgres"))
    };
    // Debian: /usr/lib/postgresql/<major>/bin, not on the PATH.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.into_iter().rev().find(|(_, dir)| has_both(dir)) {
        return Some(dir);
    }
    let initdb = super::on_path("initdb")?;
    let dir = std::fs::canonicalize(initdb).ok()?.parent()?.to_owned();
    has_both(&dir).then_some(dir)
}

/// Who runs the server: this process's user, or `postgres` when we are root.
#[derive(Clone, Copy, Debug)]
struct RunAs(Option<(u32, u32)>);

impl RunAs {
    fn get() -> RunAs {
        if !super::is_root() {
            return RunAs(None);
        }
        match super::user_ids("postgres") {
            Some(ids) => RunAs(Some(ids)),
            None => panic!(
                "these tests run as root, and PostgreSQL refuses to run as root, but there is \
                 no `postgres` user to run it as: install Debian's `postgresql` package \
                 (which creates it), or run the tests as another user"
            ),
        }
    }

    fn command(self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        if let Some((uid, gid)) = self.0 {
            cmd.uid(uid).gid(gid);
        }
        // PostgreSQL's tools want a readable working directory.
        cmd.current_dir("/");
        cmd
    }

    fn hand_over(self, path: &Path) {
        if let Some((uid, gid)) = self.0 {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
        }
    }
}

/// A PostgreSQL server on a fixed port.
pub struct PgServer {
    port: u16,
    bin: PathBuf,
    /// The temp dir: the cluster (`data/`) and the server's log.
    dir: PathBuf,
    run_as: RunAs,
    child: Option<Child>,
    /// Server processes started on this port so far.
    starts: u32,
    /// When the server last started accepting connections (the readiness probe's
    /// first complete startup).
    ready_at: Option<Instant>,
}

impl super::Freeze for PgServer {
    fn freeze(&mut self) {
        PgServer::freeze(self);
    }

    fn thaw(&mut self) {
        PgServer::thaw(self);
    }
}

impl PgServer {
    /// Creates a cluster in a temp dir and starts a server for it on a free port.
    pub fn start() -> PgServer {
        let bin = require_postgres().to_owned();
        let run_as = RunAs::get();
        let dir = super::unique_dir("redial-pg");
        run_as.hand_over(&dir);
        let data = dir.join("data");
        let out = run_as
            .command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut last_error = None;
        for _ in 0..20 {
            let mut server = PgServer {
                port: super::free_port(),
                bin: bin.clone(),
                dir: dir.clone(),
                run_as,
                child: None,
                starts: 0,
                ready_at: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = Some(e);
                    // Don't let its drop remove the cluster.
                    server.dir = PathBuf::new();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("could not start postgres: {last_error:?}");
    }

    /// A libpq-style connection string for the superuser, trust auth.
    pub fn config(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname=postgres connect_timeout=5",
            self.port
        )
    }

    /// When the current server process started accepting connections.
    pub fn ready_at(&self) -> Option<Instant> {
        self.ready_at
    }

    /// Kills the server with SIGKILL: the postmaster and all its processes at once, no
    /// shutdown. The next start recovers from the crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.kill();
            let _ = child.wait();
            self.ready_at = None;
        }
    }

    /// Freezes the server (SIGSTOP to the postmaster and its backends): its
    /// sockets stay open and its kernel still completes handshakes, but nothing
    /// is answered, like a hung host.
    pub fn freeze(&mut self) {
        self.signal_all("STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&mut self) {
        self.signal_all("CONT");
    }

    fn signal_all(&mut self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let mut pids = vec![child.id()];
        pids.extend(children_of(child.id()));
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{signal} {}", list.join(" ")))
            .status()
            .expect("run sh");
        assert!(status.success(), "kill -{signal}: {status}");
    }

    /// Starts the server again on the same port, retrying while the port or the old
    /// processes' shared memory are still busy. Returns once it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the server is still running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!(
                        "postgres restart on port {} failed ({e}); retrying",
                        self.port
                    );
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("could not restart postgres on port {}: {e}", self.port),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut child = self
            .run_as
            .command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-h", "127.0.0.1"])
            .args(["-k", ""]) // no Unix socket: TCP only
            .args(["-c", "fsync=off"])
            .args(["-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off"])
            .args(["-c", "max_connections=40"])
            .args(["-c", "shared_buffers=16MB"])
            .args(["-c", "logging_collector=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(3).collect();
                return Err(io::Error::other(format!(
                    "postgres exited at start ({status}): {tail:?}"
                )));
            }
            if probe(self.port).is_ok() {
                self.ready_at = Some(Instant::now());
                self.child = Some(child);
                self.starts += 1;
                return Ok(());
            }
            if Instant::now() > deadline {
                kill_group(&child);
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(
                    "postgres did not accept connections in time",
                ));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

/// SIGKILL to the postmaster and every process it started, at once (one `kill`
/// call: the shell's builtin, so no `unsafe` and no procps needed), then waits (a
/// little) until they are gone. The backends are found through `/proc`: each one
/// makes itself a process group leader, so a signal to the postmaster's group would
/// miss them. (A backend forked in the instant between the two exits by itself:
/// the kernel signals it when its postmaster dies.)
fn kill_group(child: &Child) {
    let postmaster = child.id();
    let mut pids = vec![postmaster];
    pids.extend(children_of(postmaster));
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -9 {}", list.join(" ")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids[1..].iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
}

/// The processes whose parent is `parent`, from `/proc/<pid>/stat`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// A process's state and parent, from `/proc/<pid>/stat` (the fields after the
/// command name, which may itself hold spaces and parentheses).
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Is `pid` still running (a zombie has released everything)?
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A readiness check over the wire protocol (std `TcpStream`, no runtime): a startup
/// message for the superuser, read until the server is ready for a query
/// (`ReadyForQuery`), then `Terminate`. Fails while the server refuses connections
/// or is still starting up / recovering (it answers with an `ErrorResponse`).
fn probe(port: u16) -> io::Result<()> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes()); // protocol 3.0
    for (k, v) in [
        ("user", USER),
        ("database", "postgres"),
        ("application_name", "redial-harness-probe"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    s.write_all(&startup)?;
    loop {
        let mut header = [0u8; 5];
        s.read_exact(&mut header)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut payload = vec![0u8; len.saturating_sub(4)];
        s.read_exact(&mut payload)?;
        match header[0] {
            b'Z' => {
                let _ = s.write_all(&[b'X', 0, 0, 0, 4]); // Terminate
                return Ok(());
            }
            b'E' => {
                return Err(io::Error::other(
                    String::from_utf8_lossy(&payload).replace('\0', " "),
                ))
            }
            _ => {} // authentication ok, parameter status, backend key data
        }
    }
}
