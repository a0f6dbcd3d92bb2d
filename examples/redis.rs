//! Keeping a Redis connection alive: a redial [`ClientService`] on Tokio around the
//! `redis` crate's plain multiplexed connection (not its own reconnecting manager).
//!
//! * the **connector** opens a TCP connection and wraps it in a
//!   `redis::aio::MultiplexedConnection`, which comes as a `(handle, driver future)`
//!   pair: the service runs the driver future and learns of the loss when it ends;
//! * the **prepare** step authenticates (`AUTH`), selects the database (`SELECT`),
//!   names the connection (`CLIENT SETNAME`) and checks it with `PING`; a failure
//!   there closes the connection and is retried with backoff, like a failed connect;
//! * commands are served through [`ClientService::when_connected`]: during an outage
//!   they wait for the next connection instead of failing.
//!
//! Run it against a local server (any Redis ≥ 6; the password is optional):
//!
//! ```text
//! redis-server --port 6379 --requirepass secret --save '' &
//! REDIS_PASSWORD=secret cargo run --features tokio --example redis -- 127.0.0.1:6379
//! ```
//!
//! Then kill and restart `redis-server` while it runs: the commands issued during the
//! outage wait, and go through once the server is back.
//!
//! Settings: the address is the first argument, else `REDIS_ADDR`, else
//! `127.0.0.1:6379`; `REDIS_PASSWORD` (unset: no `AUTH`), `REDIS_DB` (default 0),
//! `REDIS_COMMANDS` (how many commands to send, default 20, one every 250 ms).
//!
//! [`ClientService`]: redial::driver::ClientService
//! [`ClientService::when_connected`]: redial::driver::ClientService::when_connected

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redial::driver::{ClientService, Error};
use redial::policy::Backoff;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisConnectionInfo, RedisError, RedisResult};

/// The service: its handle is the redis connection, its error the redis error.
type Redis = ClientService<MultiplexedConnection, RedisError>;

/// What the redis crate itself sends on a new connection: nothing (no `AUTH`, no
/// `SELECT`, no `CLIENT SETINFO`); the prepare step does the setup, so that its
/// failure is reported and retried as a prepare failure. (`'static` because the
/// driver future's type borrows it.)
static CONNECTION_INFO: LazyLock<RedisConnectionInfo> =
    LazyLock::new(|| RedisConnectionInfo::default().set_skip_set_lib_name());

/// Opens one connection: TCP, then the redis crate's multiplexed connection over it.
/// Returns the `(handle, driver future)` pair; the service runs the driver future.
async fn connect(
    addr: SocketAddr,
) -> RedisResult<(
    MultiplexedConnection,
    impl Future<Output = ()> + Send + 'static,
)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let config = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(2)));
    MultiplexedConnection::new_with_config(&CONNECTION_INFO, tcp, config).await
}

/// Makes a new connection ready for use: authenticate, select the database, name it,
/// and check it answers.
async fn prepare(
    mut conn: MultiplexedConnection,
    password: Option<String>,
    db: i64,
) -> RedisResult<()> {
    if let Some(password) = password {
        redis::cmd("AUTH")
            .arg(password)
            .exec_async(&mut conn)
            .await?;
    }
    redis::cmd("SELECT").arg(db).exec_async(&mut conn).await?;
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("redial-example")
        .exec_async(&mut conn)
        .await?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
    if pong != "PONG" {
        return Err(RedisError::from(std::io::Error::other(format!(
            "PING answered {pong:?}"
        ))));
    }
    Ok(())
}

/// Builds and starts the service.
fn service(addr: SocketAddr, password: Option<String>, db: i64) -> Redis {
    redial::tokio::builder(move || connect(addr))
        .prepare(move |conn| prepare(conn, password.clone(), db))
        // 100 ms, 200 ms, 400 ms, ... up to 5 s between failed attempts.
        .policy(Backoff::new(Duration::from_millis(50), 2.0, Duration::from_secs(5)).unwrap())
        .connect_timeout(Some(Duration::from_secs(3)))
        .prepare_timeout(Some(Duration::from_secs(3)))
        .start()
        .expect("a valid configuration")
}

/// Runs one command on the current connection, waiting for one if there is none.
///
/// If the connection breaks under the command, the command is tried once more on the
/// next connection: fine for idempotent commands (`GET`, `SET`); for the others
/// (`INCR`) a retry may apply it twice, so return the error to the caller instead.
async fn query<T: FromRedisValue>(
    redis: &Redis,
    cmd: &redis::Cmd,
    idempotent: bool,
) -> Result<T, Box<dyn std::error::Error>> {
    let mut tries = if idempotent { 2 } else { 1 };
    loop {
        let mut conn = redis.when_connected().await?;
        match cmd.query_async(&mut conn).await {
            Err(e) if tries > 1 && is_connection_error(&e) => tries -= 1,
            result => return Ok(result?),
        }
    }
}

/// An error that means the connection is gone (as opposed to a command error).
fn is_connection_error(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error()
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr_text = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("REDIS_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:6379".to_owned());
    let Ok(addr) = addr_text.parse::<SocketAddr>() else {
        eprintln!("not an address: {addr_text:?} (expected HOST:PORT, e.g. 127.0.0.1:6379)");
        return ExitCode::from(2);
    };
    let password = std::env::var("REDIS_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let db: i64 = std::env::var("REDIS_DB")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    let commands: u32 = std::env::var("REDIS_COMMANDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);

    let redis = service(addr, password, db);

    // The first connection: give up after 4 failed attempts (about a second), with
    // advice. The service itself would keep trying.
    match redis
        .when_connected_fail_after(NonZeroU32::new(4).unwrap())
        .await
    {
        Ok(_) => println!("connected to Redis at {addr} (db {db})"),
        Err(e) => {
            eprintln!("no usable Redis server at {addr}: {e}");
            eprintln!();
            if let Some(redial::Failure::Prepare(_)) = e.failure() {
                eprintln!("A server answered, but AUTH/SELECT/PING failed on it:");
                eprintln!("check REDIS_PASSWORD (its requirepass) and REDIS_DB.");
            } else {
                eprintln!("Start one, e.g.:");
                eprintln!("    redis-server --port {} --save '' &", addr.port());
                eprintln!("or point this example at yours:");
                eprintln!("    cargo run --features tokio --example redis -- HOST:PORT");
                eprintln!("    (or REDIS_ADDR=HOST:PORT; REDIS_PASSWORD, REDIS_DB if needed)");
            }
            redis.stop().await;
            return ExitCode::FAILURE;
        }
    }

    let key = "redial:example:counter";
    for i in 1..=commands {
        let started = Instant::now();
        // INCR is not idempotent: no retry on a broken connection, the error is shown.
        match query::<i64>(&redis, redis::cmd("INCR").arg(key), false).await {
            Ok(n) => println!(
                "#{i}: INCR {key} = {n} ({} ms){}",
                started.elapsed().as_millis(),
                if started.elapsed() > Duration::from_millis(100) {
                    " (waited for the server)"
                } else {
                    ""
                }
            ),
            Err(e) => {
                println!("#{i}: INCR failed: {e} (the next command waits for the new connection)")
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let last: Option<i64> = match query(&redis, redis::cmd("GET").arg(key), true).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("GET failed: {e}");
            None
        }
    };
    let c = redis.counters();
    println!(
        "{key} = {last:?}; attempts {}, failed {}, connections {}, losses {}",
        c.attempts, c.failures, c.connections, c.losses
    );

    // Closes the connection; the server sees the client go.
    redis.stop().await;
    match redis.when_connected().await {
        Err(Error::Stopped) => {}
        other => eprintln!("unexpected after stop: {:?}", other.map(|_| ())),
    }
    ExitCode::SUCCESS
}
