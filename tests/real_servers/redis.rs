//! redial keeping a real Redis client (the `redis` crate's plain multiplexed
//! connection) connected to a real `redis-server` process that really goes away.
//!
//! Each test starts its own `redis-server` on 127.0.0.1 (see `support::redis`), kills
//! it with SIGKILL and restarts it on the same port, and looks at it from outside
//! through `CLIENT LIST` and `INFO stats` on a separate, plain redis connection.
//! The tests run one at a time (they count this process's file descriptors), and
//! each is bounded by a timeout.
//!
//! Needs `redis-server`: when it is not on the PATH the tests install Debian's
//! `redis-server` package themselves (as root or with passwordless sudo), and fail
//! naming the package otherwise (see `support::require`).
//! Run: `cargo test --all-features --test real_servers redis:: -- --nocapture` (prints
//! figures).

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redial::driver::{ClientService, Error};
use redial::policy::Backoff;
use redial::{Failure, State};
use redis::aio::MultiplexedConnection;
use redis::{RedisConnectionInfo, RedisError, RedisResult};

use crate::support::redis::{multiplexed, RedisServer, PASSWORD};
use crate::support::restarts::{Caller, Stage, Workers};
use crate::support::{eventually, one_at_a_time, open_fds, run};

type Redis = ClientService<MultiplexedConnection, RedisError>;

/// The database the prepare step selects (not 0, so that `SELECT` is seen to work).
const DB: i64 = 3;
/// The name the prepare step gives the connection.
const CLIENT_NAME: &str = "redial-test";

/// One test at a time: they count file descriptors and server connections.
fn serial() -> MutexGuard<'static, ()> {
    one_at_a_time()
}

/// What the connector and the prepare step saw, for the assertions.
#[derive(Default)]
struct Probe {
    /// When each connector call started.
    connects: Mutex<Vec<Instant>>,
    prepares: AtomicU64,
    prepare_failures: AtomicU64,
}

static CONNECTION_INFO: LazyLock<RedisConnectionInfo> =
    LazyLock::new(|| RedisConnectionInfo::default().set_skip_set_lib_name());

/// How long the redis client waits for a reply to a command it has sent.
///
/// Not for slow replies (they take well under a millisecond here): for a command
/// that races the loss of its connection. The redis crate queues a command in a
/// Tokio `mpsc` channel that the connection's driver future reads; when the
/// command's sender reserved its slot just before the service dropped that driver
/// (the connection was lost), Tokio keeps the command in the channel, unanswered,
/// for as long as any clone of the connection handle lives, and the caller holds
/// one while it waits (tokio-rs/tokio#7714). Without a response timeout that
/// command waits for ever. It was seen once in about 1,400 commands across 200
/// SIGKILL restarts, and fast churn without redis shows the same with any handle
/// built on a Tokio `mpsc::Sender` (redial's own `messages()` adapter has no such
/// race: `tests/shapes/messages.rs` churns it the same way). redial cannot reach into the
/// client's channel, so the test does what a user must: it sets a response
/// timeout, and checks that such a timeout only ever comes with a lost connection
/// (`errors_without_loss` below). Waiting for a connection has no timeout of its
/// own: a hang inside redial still shows up as a hang.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connector: TCP, then the redis crate's multiplexed connection, as a
/// `(handle, driver future)` pair, with [`RESPONSE_TIMEOUT`].
async fn connect(
    addr: SocketAddr,
) -> RedisResult<(
    MultiplexedConnection,
    impl Future<Output = ()> + Send + 'static,
)> {
    multiplexed(addr, &CONNECTION_INFO, Some(RESPONSE_TIMEOUT)).await
}

/// The prepare step: AUTH, SELECT, CLIENT SETNAME, PING.
async fn prepare(mut conn: MultiplexedConnection, password: String) -> RedisResult<()> {
    redis::cmd("AUTH")
        .arg(password)
        .exec_async(&mut conn)
        .await?;
    redis::cmd("SELECT").arg(DB).exec_async(&mut conn).await?;
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(CLIENT_NAME)
        .exec_async(&mut conn)
        .await?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
    assert_eq!(pong, "PONG");
    Ok(())
}

fn service(addr: SocketAddr, password: &str, policy: Backoff) -> (Redis, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let (p1, p2) = (Arc::clone(&probe), Arc::clone(&probe));
    let password = password.to_owned();
    let redis = redial::tokio::builder(move || {
        p1.connects.lock().unwrap().push(Instant::now());
        connect(addr)
    })
    .prepare(move |conn| {
        let probe = Arc::clone(&p2);
        let prepared = prepare(conn, password.clone());
        async move {
            probe.prepares.fetch_add(1, Ordering::Relaxed);
            let result = prepared.await;
            if result.is_err() {
                probe.prepare_failures.fetch_add(1, Ordering::Relaxed);
            }
            result
        }
    })
    .policy(policy)
    .connect_timeout(Some(Duration::from_secs(5)))
    .prepare_timeout(Some(Duration::from_secs(5)))
    .start()
    .expect("valid configuration");
    (redis, probe)
}

fn fast_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(5), 2.0, Duration::from_millis(100)).unwrap()
}

/// One command through the service: wait for the connection, then `INCR key`.
async fn incr(redis: &Redis, key: &str) -> Result<i64, String> {
    incr_noting(redis, key, &Stage::default()).await
}

/// As [`incr`], noting in `sent_on` the connection the command was sent on (still
/// `None` while it waits for one), for a watchdog that gives up on it.
async fn incr_noting(redis: &Redis, key: &str, stage: &Stage) -> Result<i64, String> {
    let (attempt, mut conn) = redis
        .when_connected()
        .with_id()
        .await
        .map_err(|e| e.to_string())?;
    stage.set(format!("sent on {attempt}"));
    redis::cmd("INCR")
        .arg(key)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// Runs a test body with an overall time limit.
async fn bounded<F: Future<Output = ()>>(limit: Duration, body: F) {
    tokio::time::timeout(limit, body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"));
}

#[test]
fn commands_during_an_outage_wait_and_succeed_once_the_server_is_back() {
    let _serial = serial();
    run(async {
        let mut server = RedisServer::start();
        let mut admin = server.admin();
        let (redis, _probe) = service(server.addr(), PASSWORD, fast_backoff());
        bounded(Duration::from_secs(60), async {
            // Commands succeed; the server sees one client, prepared (named, db 3).
            assert_eq!(incr(&redis, "k").await, Ok(1));
            let mut conn = redis.when_connected().await.unwrap();
            let () = redis::cmd("SET")
                .arg("greeting")
                .arg("hello")
                .query_async(&mut conn)
                .await
                .unwrap();
            let got: String = redis::cmd("GET")
                .arg("greeting")
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(got, "hello");
            let clients = admin.clients();
            assert_eq!(clients.len(), 1, "{clients:?}");
            assert_eq!((clients[0].name.as_str(), clients[0].db), (CLIENT_NAME, DB));

            // The server goes away (SIGKILL) for 2 s.
            server.kill();
            let killed = Instant::now();
            eventually(
                "the service to see the loss",
                Duration::from_secs(5),
                || redis.counters().losses == 1,
            )
            .await;
            let detected = killed.elapsed();
            let waiters: Vec<_> = (0..5)
                .map(|i| {
                    let redis = redis.clone();
                    tokio::spawn(async move {
                        let r = incr(&redis, &format!("outage-{i}")).await;
                        (r, killed.elapsed())
                    })
                })
                .collect();
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert!(
                waiters.iter().all(|w| !w.is_finished()),
                "a waiter gave up during the outage"
            );
            assert_eq!(redis.pending_waiters(), 5);
            assert_ne!(redis.state(), State::Connected);
            let down = killed.elapsed();

            // Back on the same port: every waiting command goes through.
            server.restart();
            let mut longest = Duration::ZERO;
            for w in waiters {
                let (r, at) = w.await.unwrap();
                assert_eq!(r, Ok(1), "a command issued during the outage failed");
                longest = longest.max(at);
            }
            let c = redis.counters();
            assert_eq!((c.connections, c.losses), (2, 1), "{c:?}");
            println!(
                "outage: loss seen {detected:?} after SIGKILL; server down {down:?}; \
             the 5 waiters succeeded {longest:?} after the kill; counters {c:?}"
            );

            redis.stop().await;
        })
        .await;
    });
}

#[test]
fn a_wrong_password_fails_prepare_closes_the_connection_and_retries_with_backoff() {
    let _serial = serial();
    run(async {
        let mut server = RedisServer::start();
        let mut admin = server.admin();
        let policy =
            Backoff::new(Duration::from_millis(20), 2.0, Duration::from_millis(200)).unwrap();
        let (redis, probe) = service(server.addr(), "not-the-password", policy.clone());
        bounded(Duration::from_secs(60), async {
            // A waiter that allows 3 failures gets the prepare error.
            let err = redis
                .when_connected_fail_after(NonZeroU32::new(3).unwrap())
                .await
                .map(|_| ())
                .unwrap_err();
            let Error::Failed(failure) = &err else {
                panic!("expected Error::Failed, got {err:?}");
            };
            let Failure::Prepare(e) = &**failure else {
                panic!("expected a prepare failure, got {failure:?}");
            };
            assert_eq!(e.code(), Some("WRONGPASS"), "{e:?}");
            println!("fail_after(3) waiter got: {err}");

            // Meanwhile the connection is closed each time: the server's client list
            // never holds more than the one attempt in flight, and is empty between them.
            let mut max_seen = 0;
            let mut empty_seen = 0;
            for _ in 0..100 {
                let n = admin.clients().len();
                max_seen = max_seen.max(n);
                empty_seen += usize::from(n == 0);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(max_seen <= 1, "CLIENT LIST grew to {max_seen}");
            assert!(
                empty_seen > 50,
                "the rejected connections stay open ({empty_seen}/100 empty)"
            );

            // Every attempt is counted as a failure, retried; the service is still trying.
            let c = redis.counters();
            assert_eq!(c.connections, 0);
            assert!(c.attempts >= 6, "{c:?}");
            assert!(c.failures + 1 >= c.attempts, "{c:?}");
            assert!(
                matches!(redis.state(), State::Connecting | State::Waiting),
                "{:?}",
                redis.state()
            );

            redis.stop().await;
            let c = redis.counters();
            assert_eq!(
                c.failures,
                probe.prepare_failures.load(Ordering::Relaxed),
                "{c:?}"
            );
            let clients = admin.wait_clients(Duration::from_secs(2), |c| c.is_empty());
            assert!(clients.is_empty(), "clients left after stop: {clients:?}");
            // Each attempt was one connection to the server, closed after the failure
            // (an attempt that stop() cancelled may not have reached the server).
            let received = admin.total_connections_received() - server.own_connections();
            assert!(
                received == c.attempts || received + 1 == c.attempts,
                "{received}: {c:?}"
            );

            // With backoff: the gap before attempt n+1 is at least the policy's delay
            // after n failures (20 ms, 40 ms, ... capped at 200 ms).
            let connects = probe.connects.lock().unwrap().clone();
            let gaps: Vec<Duration> = connects.windows(2).map(|w| w[1] - w[0]).collect();
            for (i, gap) in gaps.iter().enumerate() {
                let base = policy.base_delay(i as u32 + 1);
                assert!(
                    *gap >= base,
                    "gap {i} was {gap:?}, the delay is {base:?}: {gaps:?}"
                );
            }
            println!(
                "wrong password: {} attempts, {} prepare failures, server saw {received} \
             connections, max {max_seen} at once; gaps {:?}",
                c.attempts,
                c.failures,
                gaps.iter().map(|g| g.as_millis()).collect::<Vec<_>>()
            );
        })
        .await;
    });
}

#[test]
fn fail_after_failures_waiters_fail_while_the_server_is_down_and_the_service_keeps_trying() {
    let _serial = serial();
    run(async {
        let mut server = RedisServer::start();
        let (redis, _probe) = service(server.addr(), PASSWORD, fast_backoff());
        bounded(Duration::from_secs(60), async {
            assert_eq!(incr(&redis, "k").await, Ok(1));
            server.kill(); // for good (until the end of the test)
                           // Until the service sees the loss, `when_connected` still answers with the
                           // (dead) connection at once: the loss is news to it only once its driver
                           // future ends. That takes a few milliseconds on loopback.
            eventually("the loss", Duration::from_secs(5), || {
                redis.counters().losses == 1
            })
            .await;

            let plain = tokio::spawn({
                let redis = redis.clone();
                async move { incr(&redis, "k").await }
            });
            for failures in [1, 3, 10] {
                let started = Instant::now();
                let err = redis
                    .when_connected_fail_after(NonZeroU32::new(failures).unwrap())
                    .await
                    .map(|_| ())
                    .unwrap_err();
                let Error::Failed(failure) = &err else {
                    panic!("expected Error::Failed, got {err:?}");
                };
                match &**failure {
                    Failure::Connect(e) => assert!(e.is_connection_refusal(), "{e:?}"),
                    // The first failure after the loss may come from the prepare of a
                    // connection that could not be made (the server's last breath).
                    other => panic!("expected a connection error, got {other:?}"),
                }
                println!(
                    "fail_after({failures}) failed after {:?}: {err}",
                    started.elapsed()
                );
            }

            // The service keeps retrying, and the plain waiter keeps waiting.
            let before = redis.counters().attempts;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = redis.counters().attempts;
            assert!(
                after > before,
                "no attempts after the waiters failed ({before} -> {after})"
            );
            assert!(!plain.is_finished());
            assert_ne!(redis.state(), State::Stopped);

            server.restart();
            assert_eq!(
                plain.await.unwrap(),
                Ok(1),
                "the plain waiter after the restart"
            );
            redis.stop().await;
        })
        .await;
    });
}

#[test]
fn stop_leaves_no_client_connected_on_the_server() {
    let _serial = serial();
    run(async {
        let mut server = RedisServer::start();
        let mut admin = server.admin();
        let (redis, _probe) = service(server.addr(), PASSWORD, fast_backoff());
        bounded(Duration::from_secs(60), async {
            assert_eq!(incr(&redis, "k").await, Ok(1));
            assert_eq!(admin.clients().len(), 1);

            // stop() while connected: once it resolves the server has no client but us.
            redis.stop().await;
            assert_eq!(redis.state(), State::Stopped);
            let clients = admin.wait_clients(Duration::from_secs(2), |c| c.is_empty());
            assert!(
                clients.is_empty(),
                "still connected after stop: {clients:?}"
            );
            assert!(matches!(redis.when_connected().await, Err(Error::Stopped)));

            // start() again: one client; stop() while a command waits: it fails, none left.
            redis.start();
            assert_eq!(incr(&redis, "k").await, Ok(2));
            assert_eq!(admin.clients().len(), 1);

            // stop() during an outage: no attempt survives it.
            server.kill();
            eventually("the loss", Duration::from_secs(5), || {
                redis.counters().losses == 1
            })
            .await;
            let waiting = tokio::spawn({
                let redis = redis.clone();
                async move { incr(&redis, "k").await }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            redis.stop().await;
            let r = waiting.await.unwrap();
            assert!(r.as_ref().is_err_and(|e| e.contains("stopped")), "{r:?}");
            server.restart();
            let mut admin = server.admin();
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(admin.clients().is_empty(), "{:?}", admin.clients());
            assert_eq!(admin.total_connections_received(), server.own_connections());

            // Dropping the last handle stops too.
            redis.start();
            assert_eq!(incr(&redis, "k").await, Ok(1));
            assert_eq!(admin.clients().len(), 1);
            drop(redis);
            let clients = admin.wait_clients(Duration::from_secs(2), |c| c.is_empty());
            assert!(
                clients.is_empty(),
                "still connected after drop: {clients:?}"
            );
        })
        .await;
    });
}

/// The background callers of the restart loop: `INCR worker-<n>`.
struct Commands {
    redis: Redis,
    /// Errors of commands during which the service saw no connection loss.
    errors_without_loss: AtomicU64,
}

impl Caller for Commands {
    async fn call(&self, worker: usize, _: u64, stage: &Stage) -> Result<(), String> {
        incr_noting(&self.redis, &format!("worker-{worker}"), stage)
            .await
            .map(drop)
    }

    fn mark(&self) -> u64 {
        self.redis.counters().losses
    }

    /// The error reaches the caller from inside the connection's driver future, a
    /// moment before the service reports the loss: give it a second.
    async fn failed(&self, losses: u64, _: &str) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.redis.counters().losses == losses && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if self.redis.counters().losses == losses {
            self.errors_without_loss.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:?}, {} waiters pending, counters {:?}",
            self.redis.state(),
            self.redis.pending_waiters(),
            self.redis.counters()
        )
    }
}

const RESTARTS: u32 = 200;
const WORKERS: usize = 4;

#[test]
fn two_hundred_restarts_every_command_answered_none_hangs_no_fd_leak() {
    let _serial = serial();
    let fds_outside = open_fds();
    run(async {
        let fds_before = open_fds();
        let mut server = RedisServer::start();
        let (redis, probe) = service(server.addr(), PASSWORD, fast_backoff());
        let commands = Arc::new(Commands {
            redis: redis.clone(),
            errors_without_loss: AtomicU64::new(0),
        });
        let started = Instant::now();

        bounded(Duration::from_secs(600), async {
            assert_eq!(incr(&redis, "warm-up").await, Ok(1));

            // Clients issuing commands throughout, each bounded by a watchdog.
            let workers = Workers::spawn(
                Arc::clone(&commands),
                WORKERS,
                Duration::from_secs(20),
                Duration::from_millis(2),
                "a command",
            );

            let mut per_restart_connections = std::collections::BTreeMap::<u64, u32>::new();
            let mut longest_outage_survived = Duration::ZERO;
            let mut longest_loss_detection = Duration::ZERO;
            let mut longest_reconnect = Duration::ZERO;
            let mut fds_min = usize::MAX;
            let mut fds_max = 0;
            for i in 0..RESTARTS {
                let c0 = redis.counters();
                // Down: SIGKILL, and wait for the service to see the loss.
                workers.down();
                server.kill();
                let killed = Instant::now();
                eventually("the loss", Duration::from_secs(10), || {
                    redis.counters().losses > c0.losses
                })
                .await;
                longest_loss_detection = longest_loss_detection.max(killed.elapsed());

                // A command issued during the outage: it must wait and succeed.
                let waiter = tokio::spawn({
                    let redis = redis.clone();
                    async move { incr(&redis, "outage").await }
                });
                // Mostly short outages, every 25th a long one.
                let outage = if i % 25 == 24 {
                    Duration::from_millis(1500)
                } else {
                    Duration::from_millis(u64::from(i % 5) * 10)
                };
                tokio::time::sleep(outage).await;

                // Up again on the same port; wait for the service to reconnect.
                server.restart();
                let restarted = Instant::now();
                eventually("the reconnection", Duration::from_secs(10), || {
                    redis.counters().connections > c0.connections
                })
                .await;
                longest_reconnect = longest_reconnect.max(restarted.elapsed());
                let r = tokio::time::timeout(Duration::from_secs(10), waiter)
                    .await
                    .expect("the outage waiter hung")
                    .unwrap();
                assert_eq!(
                    r,
                    Ok(1),
                    "restart {i}: the command issued during the outage failed"
                );
                longest_outage_survived = longest_outage_survived.max(killed.elapsed());
                workers.up();

                // Commands issued now that the server is back all succeed.
                for _ in 0..3 {
                    let r = tokio::time::timeout(Duration::from_secs(10), incr(&redis, "after"))
                        .await
                        .expect("a command after the restart hung");
                    assert!(
                        r.is_ok(),
                        "restart {i}: a command after the restart failed: {r:?}"
                    );
                }

                // The server's view: one client (ours, prepared), and how many connections
                // it accepted from us since it started.
                let mut admin = server.admin();
                let clients = admin.clients();
                assert_eq!(clients.len(), 1, "restart {i}: {clients:?}");
                assert_eq!((clients[0].name.as_str(), clients[0].db), (CLIENT_NAME, DB));
                let ours = admin.total_connections_received() - server.own_connections();
                *per_restart_connections.entry(ours).or_default() += 1;
                drop(admin);

                let fds = open_fds();
                fds_min = fds_min.min(fds);
                fds_max = fds_max.max(fds);
            }

            let t = workers.finish().await;
            redis.stop().await;
            let c = redis.counters();

            println!(
            "{RESTARTS} restarts in {:?}: commands issued {}, completed {}, errored {}, hung {}; \
             issued and answered while up: {} ({} failed)",
            started.elapsed(),
            t.issued,
            t.answered,
            t.failed,
            t.hung,
            t.clean,
            t.clean_failed
        );
            println!("errors returned to callers: {:?}", t.errors);
            println!(
                "longest outage a waiter survived: {longest_outage_survived:?}; longest wait of a \
             background command: {} ms; loss seen after SIGKILL within {longest_loss_detection:?}; \
             reconnected within {longest_reconnect:?} of the restart",
                t.longest_answer.as_millis()
            );
            println!(
                "connections the server saw from the client per restart (count: restarts): \
             {per_restart_connections:?}; counters {c:?}; connector calls {}; fds {fds_before} \
             before, {fds_min}..={fds_max} during",
                probe.connects.lock().unwrap().len()
            );

            t.check("commands");
            // An error only ever comes from a connection lost under the command (sent on
            // it, or handed it in the moment between the SIGKILL and the service seeing
            // the loss).
            assert_eq!(
                commands.errors_without_loss.load(Ordering::SeqCst),
                0,
                "errors with no loss"
            );
            assert_eq!(c.losses, u64::from(RESTARTS));
            assert_eq!(c.connections, u64::from(RESTARTS) + 1);
            assert_eq!(
                per_restart_connections.keys().copied().collect::<Vec<_>>(),
                vec![1],
                "the client connected more than once per restart"
            );
            assert!(
                fds_max - fds_min <= 2,
                "fds grew during the loop: {fds_min}..={fds_max}"
            );
        })
        .await;

        drop(redis);
        drop(server);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fds_after = open_fds();
        println!("fds in the runtime: {fds_before} before, {fds_after} after");
        assert_eq!(fds_after, fds_before, "file descriptors leaked");
    });
    // And with the runtime gone too: exactly as many as before the test.
    let fds_end = open_fds();
    println!("fds outside the runtime: {fds_outside} before, {fds_end} after");
    assert_eq!(fds_end, fds_outside, "file descriptors leaked");
}
