//! A real `redis-server` process for the Redis tests, and a plain admin connection to
//! look at it from outside redial.
//!
//! The server is started by the test itself (never as a system service) on 127.0.0.1,
//! on a free port chosen *below* the kernel's ephemeral range, so that none of the
//! client's own outgoing connections can take the port while the server is down
//! (a connect to a port in the ephemeral range with nothing listening can, rarely,
//! connect the socket to itself and hold the port). It is killed with SIGKILL and
//! restarted on the same port as often as a test likes, and always killed on drop.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The password set on every test server (`--requirepass`).
pub const PASSWORD: &str = "redial-test-password";

/// The name the harness's own admin connection gives itself (`CLIENT SETNAME`).
const ADMIN_NAME: &str = "redial-harness-admin";

/// How long a server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `redis-server` program: found on the PATH, or installed from Debian's
/// `redis-server` package when it is missing (as root or with passwordless sudo; see
/// `support::require`). Panics with a clear message, naming the package, when
/// it can be neither found nor installed: never a silent skip.
pub fn require_redis_server() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        super::require("redis-server", "redis-server", &["redis-server"], || {
            let path = super::on_path("redis-server")?;
            let works = Command::new(&path)
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success());
            works.then_some(path)
        })
    })
}

/// A `redis-server` child process on a fixed port.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Times a server process was started on this port (1 after `start`).
    starts: u32,
    /// Connections the harness itself made to the current server process (readiness
    /// probes that connected, admin connections).
    own_connections: u64,
}

impl super::Freeze for RedisServer {
    fn freeze(&mut self) {
        RedisServer::freeze(self);
    }

    fn thaw(&mut self) {
        RedisServer::thaw(self);
    }
}

impl RedisServer {
    /// Starts a server on a free port; retries on another port if the one it picked
    /// was taken in the meantime.
    pub fn start() -> RedisServer {
        require_redis_server();
        let dir = unique_dir();
        let mut last_error = None;
        for _ in 0..20 {
            let port = free_port();
            let mut server = RedisServer {
                port,
                dir: dir.clone(),
                child: None,
                starts: 0,
                own_connections: 0,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) => last_error = Some(e),
            }
        }
        panic!("could not start redis-server: {last_error:?}");
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's URL for the plain redis client, with the password.
    pub fn url(&self) -> String {
        format!("redis://:{PASSWORD}@127.0.0.1:{}/", self.port)
    }

    /// Kills the server with SIGKILL (no shutdown, no goodbye to its clients beyond
    /// what the kernel does with the sockets) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): its sockets stay open and its kernel still
    /// completes handshakes, but it answers nothing, like a hung process or a peer
    /// behind a network partition.
    pub fn freeze(&mut self) {
        self.signal("STOP");
    }

    /// Resumes a frozen server (SIGCONT).
    pub fn thaw(&mut self) {
        self.signal("CONT");
    }

    /// Sends a signal with the shell's `kill` (no `unsafe` here).
    fn signal(&mut self, signal: &str) {
        let child = self.child.as_ref().expect("the server is running");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{signal} {}", child.id()))
            .status()
            .expect("run sh");
        assert!(status.success(), "kill -{signal} {}: {status}", child.id());
    }

    /// Starts the server again on the same port, retrying for a while if the port is
    /// still busy. Panics if it cannot.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the server is still running");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if Instant::now() < deadline => {
                    eprintln!(
                        "redis-server restart on port {} failed ({e}); retrying",
                        self.port
                    );
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("could not restart redis-server on port {}: {e}", self.port),
            }
        }
    }

    /// Connects a plain (non-redial) admin connection, authenticated.
    pub fn admin(&mut self) -> Admin {
        self.own_connections += 1;
        Admin::connect(self).unwrap_or_else(|e| panic!("admin connection: {e}"))
    }

    /// Connections the harness itself made to the current server process: readiness
    /// probes that got through, and admin connections. Subtract it from
    /// `total_connections_received` to get the connections made by the code under test.
    pub fn own_connections(&self) -> u64 {
        self.own_connections
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let log = self.dir.join(format!("redis-{}.log", self.port));
        let mut child = Command::new(require_redis_server())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--requirepass", PASSWORD])
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        self.own_connections = 0;
        loop {
            if let Some(status) = child.try_wait()? {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(3).collect();
                return Err(io::Error::other(format!(
                    "redis-server exited at start ({status}): {tail:?}"
                )));
            }
            let (connected, ready) = ping_raw(self.port);
            self.own_connections += u64::from(connected);
            if ready.is_ok() {
                self.child = Some(child);
                self.starts += 1;
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other("redis-server did not answer PING in time"));
            }
            thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A readiness check: one raw `AUTH` + `PING` over a std `TcpStream`. Returns whether
/// it connected (the server counts that connection) and whether the server answered.
fn ping_raw(port: u16) -> (bool, io::Result<()>) {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
        Ok(s) => (true, auth_ping(s)),
        Err(e) => (false, Err(e)),
    }
}

fn auth_ping(mut s: std::net::TcpStream) -> io::Result<()> {
    use std::io::{Read, Write};
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let auth = format!(
        "*2\r\n$4\r\nAUTH\r\n${}\r\n{PASSWORD}\r\n*1\r\n$4\r\nPING\r\n",
        PASSWORD.len()
    );
    s.write_all(auth.as_bytes())?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"+OK\r\n+PONG\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "closed after {:?}",
                String::from_utf8_lossy(&got)
            )));
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > 1024 || got.starts_with(b"-") {
            return Err(io::Error::other(String::from_utf8_lossy(&got).into_owned()));
        }
    }
    Ok(())
}

/// A plain, synchronous redis connection (the redis crate's own, not redial's) used
/// to look at the server from outside: `CLIENT LIST`, `INFO stats`.
pub struct Admin {
    conn: redis::Connection,
    id: i64,
}

/// One line of `CLIENT LIST`, the fields the tests look at (all of them shown in
/// failure messages).
#[derive(Debug, Clone)]
#[allow(dead_code)] // `addr` and `cmd` are only printed
pub struct ClientInfo {
    pub id: i64,
    pub addr: String,
    pub name: String,
    pub db: i64,
    pub cmd: String,
}

impl Admin {
    fn connect(server: &RedisServer) -> redis::RedisResult<Admin> {
        let client = redis::Client::open(server.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(ADMIN_NAME)
            .exec(&mut conn)?;
        let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut conn)?;
        Ok(Admin { conn, id })
    }

    /// Every client connected to the server except this admin connection.
    pub fn clients(&mut self) -> Vec<ClientInfo> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut self.conn)
            .expect("CLIENT LIST");
        list.lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_client)
            .filter(|c| c.id != self.id)
            .collect()
    }

    /// `total_connections_received` from `INFO stats`: every connection this server
    /// process ever accepted, the harness's own included.
    pub fn total_connections_received(&mut self) -> u64 {
        self.info_field("stats", "total_connections_received")
    }

    /// Polls `CLIENT LIST` until `ok` holds for the other clients, or `timeout`
    /// passes; returns the last list either way.
    pub fn wait_clients(
        &mut self,
        timeout: Duration,
        ok: impl Fn(&[ClientInfo]) -> bool,
    ) -> Vec<ClientInfo> {
        let deadline = Instant::now() + timeout;
        loop {
            let clients = self.clients();
            if ok(&clients) || Instant::now() > deadline {
                return clients;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn info_field(&mut self, section: &str, field: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.conn)
            .expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
    }
}

fn parse_client(line: &str) -> ClientInfo {
    let field = |k: &str| {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .unwrap_or("")
            .to_owned()
    };
    ClientInfo {
        id: field("id").parse().unwrap_or(-1),
        addr: field("addr"),
        name: field("name"),
        db: field("db").parse().unwrap_or(-1),
        cmd: field("cmd"),
    }
}

use super::free_port;

fn unique_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("redial-redis-{:x}", seed()));
    std::fs::create_dir_all(&dir).expect("temp dir for redis-server");
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

/// The redis crate's multiplexed connection to `addr`, as the `(handle, driver
/// future)` pair a service holds: TCP without Nagle's delay, then the crate's
/// handshake with `info`, and `response_timeout` as the crate's own (`None`: a
/// long blocking command is normal, or the probe is what notices a silent server).
pub async fn multiplexed(
    addr: SocketAddr,
    info: &'static redis::RedisConnectionInfo,
    response_timeout: Option<Duration>,
) -> redis::RedisResult<(
    redis::aio::MultiplexedConnection,
    impl std::future::Future<Output = ()> + Send + 'static,
)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(response_timeout);
    redis::aio::MultiplexedConnection::new_with_config(info, tcp, config).await
}
