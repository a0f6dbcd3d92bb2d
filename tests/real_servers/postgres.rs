//! redial keeping a real PostgreSQL client (tokio-postgres: its `(Client,
//! Connection)` pair, as is) connected to a real PostgreSQL server that really goes
//! away.
//!
//! The test creates its own throwaway cluster (`initdb` in a temp dir, trust auth)
//! and runs `postgres` on a free 127.0.0.1 port (see `support::postgres`; as the
//! `postgres` user when the tests run as root). It kills the server with SIGKILL
//! (postmaster and backends at once) and starts it again on the same port 50
//! times, while several callers run queries through `when_connected`, and looks at
//! the server from outside through `pg_stat_activity` on a separate, plain
//! tokio-postgres connection. Every wait is bounded by a timeout.
//!
//! Needs PostgreSQL's binaries: when they are missing the test installs Debian's
//! `postgresql` package itself (as root or with passwordless sudo) and fails naming
//! the package otherwise. Run:
//! `cargo test --all-features --test real_servers postgres:: -- --nocapture` (prints
//! figures).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redial::driver::ClientService;
use redial::policy::Backoff;
use tokio_postgres::{Client, NoTls};

use crate::support::postgres::PgServer;
use crate::support::restarts::{Caller, Stage, Workers};
use crate::support::{eventually, median_and_max, one_at_a_time, open_fds, run};

/// The service: its handle is the tokio-postgres client (in an `Arc`: the client is
/// not `Clone`), its error tokio-postgres's.
type Pg = ClientService<Arc<Client>, tokio_postgres::Error>;

/// The name the prepare step gives each session.
const APP: &str = "redial-test";

/// The connector: `tokio_postgres::connect` gives `(Client, Connection)`; the
/// connection is the driver future, which ends when the connection is lost.
async fn connect(
    config: String,
) -> Result<(Arc<Client>, impl Future<Output = ()> + Send + 'static), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(&config, NoTls).await?;
    Ok((Arc::new(client), async move {
        let _ = connection.await;
    }))
}

fn service(config: String) -> Pg {
    redial::tokio::builder(move || connect(config.clone()))
        .prepare(|client: Arc<Client>| async move {
            client
                .batch_execute("SET application_name = 'redial-test'")
                .await
        })
        .policy(Backoff::new(Duration::from_millis(5), 2.0, Duration::from_millis(100)).unwrap())
        .connect_timeout(Some(Duration::from_secs(5)))
        .prepare_timeout(Some(Duration::from_secs(5)))
        .start()
        .expect("valid configuration")
}

/// One query through the service: wait for the connection, then `SELECT n + 1`.
async fn query(pg: &Pg, n: i32) -> Result<i32, String> {
    let client = pg.when_connected().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one("SELECT $1::int4 + 1", &[&n])
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
            None => e.to_string(),
        })?;
    let got: i32 = row.get(0);
    if got != n + 1 {
        return Err(format!("SELECT {n} + 1 answered {got}"));
    }
    Ok(got)
}

/// A plain tokio-postgres connection (not redial's) to look at the server from
/// outside.
struct Admin {
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Admin {
    async fn connect(server: &PgServer) -> Admin {
        let config = format!("{} application_name=redial-harness-admin", server.config());
        let (client, connection) = tokio_postgres::connect(&config, NoTls)
            .await
            .unwrap_or_else(|e| panic!("admin connection: {e}"));
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Admin { client, task }
    }

    /// Sessions named by our prepare step.
    async fn sessions(&self) -> i64 {
        self.client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&APP],
            )
            .await
            .expect("pg_stat_activity")
            .get(0)
    }

    /// Polls `sessions` until `ok` holds, or `limit` passes; returns the last count.
    async fn wait_sessions(&self, limit: Duration, ok: impl Fn(i64) -> bool) -> i64 {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.sessions().await;
            if ok(n) || Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The background callers of the restart loop: `SELECT n + 1`, each worker its own
/// numbers.
struct Queries(Pg);

impl Caller for Queries {
    async fn call(&self, worker: usize, n: u64, _: &Stage) -> Result<(), String> {
        query(&self.0, worker as i32 * 1_000_000 + n as i32)
            .await
            .map(drop)
    }
}

const RESTARTS: u32 = 50;
const WORKERS: usize = 4;
/// The bound on one query: past it, the query counts as hung.
const HANG: Duration = Duration::from_secs(20);

#[test]
fn fifty_restarts_queries_flow_none_hangs_one_session_each_time_none_after_stop() {
    let _one = one_at_a_time();
    let fds_outside = open_fds();
    let started = Instant::now();
    run(async {
        let fds_before = open_fds();
        let mut server = PgServer::start();
        let setup = started.elapsed();
        let pg = service(server.config());

        let limit = Duration::from_secs(600);
        tokio::time::timeout(limit, async {
            assert_eq!(query(&pg, 1).await, Ok(2));
            let admin = Admin::connect(&server).await;
            assert_eq!(admin.sessions().await, 1, "one session, named by prepare");
            drop(admin);

            // Callers issuing queries throughout, each bounded.
            let workers = Workers::spawn(
                Arc::new(Queries(pg.clone())),
                WORKERS,
                HANG,
                Duration::from_millis(2),
                "a query",
            );

            let mut sessions_after_restart = BTreeMap::<i64, u32>::new();
            let mut recoveries = Vec::new();
            let mut loss_seen = Vec::new();
            let mut longest_outage_survived = Duration::ZERO;
            for i in 0..RESTARTS {
                let c0 = pg.counters();
                // Down: SIGKILL, and wait for the service to see the loss.
                workers.down();
                let killed = Instant::now();
                server.kill();
                eventually("the loss", Duration::from_secs(10), || {
                    pg.counters().losses > c0.losses
                })
                .await;
                loss_seen.push(killed.elapsed());

                // A query issued during the outage: it must wait and succeed.
                let waiter = tokio::spawn({
                    let pg = pg.clone();
                    async move { query(&pg, -1).await }
                });
                let outage = if i % 10 == 9 {
                    Duration::from_millis(1000)
                } else {
                    Duration::from_millis(u64::from(i % 5) * 10)
                };
                tokio::time::sleep(outage).await;

                // Up again on the same port (returns once it accepts connections):
                // a query issued now must succeed; how long it takes is the recovery.
                server.restart();
                let up = server.ready_at().expect("accepting");
                let r = tokio::time::timeout(Duration::from_secs(10), query(&pg, i as i32))
                    .await
                    .expect("the first query after the restart hung");
                recoveries.push(up.elapsed());
                assert_eq!(
                    r,
                    Ok(i as i32 + 1),
                    "restart {i}: the first query after it failed"
                );
                let r = tokio::time::timeout(Duration::from_secs(10), waiter)
                    .await
                    .expect("the outage waiter hung")
                    .unwrap();
                assert_eq!(
                    r,
                    Ok(0),
                    "restart {i}: the query issued during the outage failed"
                );
                longest_outage_survived = longest_outage_survived.max(killed.elapsed());
                workers.up();

                // Queries issued now that the server is back all succeed.
                for k in 0..3 {
                    let r = tokio::time::timeout(Duration::from_secs(10), query(&pg, k))
                        .await
                        .expect("a query after the restart hung");
                    assert_eq!(
                        r,
                        Ok(k + 1),
                        "restart {i}: a query after the restart failed"
                    );
                }

                // The server's view: exactly one session, ours, prepared.
                let admin = Admin::connect(&server).await;
                let n = admin.sessions().await;
                *sessions_after_restart.entry(n).or_default() += 1;
                assert_eq!(n, 1, "restart {i}: {n} sessions named {APP}");
            }

            let t = workers.finish().await;
            let c = pg.counters();

            // stop(): once it resolves, the session goes away.
            let admin = Admin::connect(&server).await;
            let stopping = Instant::now();
            tokio::time::timeout(Duration::from_secs(10), pg.stop())
                .await
                .expect("stop hung");
            let stopped_in = stopping.elapsed();
            let left = admin
                .wait_sessions(Duration::from_secs(5), |n| n == 0)
                .await;
            let gone_in = stopping.elapsed();

            let (rec_median, rec_worst) = median_and_max(&recoveries);
            let (loss_median, loss_worst) = median_and_max(&loss_seen);
            println!(
                "postgres: {RESTARTS} restarts (SIGKILL, same port) in {:?} (cluster set up in \
                 {setup:?}); queries from {WORKERS} callers: issued {}, completed {}, failed \
                 {}, hung {}; issued and answered while up: {} ({} failed)",
                started.elapsed(),
                t.issued,
                t.answered,
                t.failed,
                t.hung,
                t.clean,
                t.clean_failed
            );
            println!("postgres: errors returned to callers: {:?}", t.errors);
            println!(
                "postgres: recovery (server accepting -> first query through the service \
                 answered): median {rec_median:?}, worst {rec_worst:?}; loss seen after the \
                 SIGKILL: median {loss_median:?}, worst {loss_worst:?}; longest outage a \
                 waiting query survived: {longest_outage_survived:?}"
            );
            println!(
                "postgres: sessions named {APP} after each restart (sessions: restarts): \
                 {sessions_after_restart:?}; after stop(): {left} (stop resolved in \
                 {stopped_in:?}, session gone within {gone_in:?}); counters {c:?}"
            );

            t.check("queries");
            assert_eq!(c.losses, u64::from(RESTARTS), "{c:?}");
            assert_eq!(c.connections, u64::from(RESTARTS) + 1, "{c:?}");
            assert_eq!(left, 0, "sessions left after stop()");
        })
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"));

        drop(pg);
        drop(server);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fds_after = open_fds();
        println!("postgres: fds in the runtime: {fds_before} before, {fds_after} after");
        assert_eq!(fds_after, fds_before, "file descriptors leaked");
    });
    let fds_end = open_fds();
    println!("postgres: fds outside the runtime: {fds_outside} before, {fds_end} after");
    assert_eq!(fds_end, fds_outside, "file descriptors leaked");
}

/// A database that does not exist: the error the waiter gets says so when printed
/// with `{}`, on one line, through the whole chain (the service's message, the
/// failure, tokio-postgres's "db error", the server's own message).
#[test]
fn a_database_that_does_not_exist_is_named_in_the_printed_error() {
    let _one = one_at_a_time();
    use redial::driver::Error;
    use redial::RetryPolicy as _;

    run(async {
        let server = PgServer::start();
        let config = server.config().replace("dbname=postgres", "dbname=nope");
        assert!(config.contains("dbname=nope"), "{config}");
        let pg: Pg = redial::tokio::builder(move || connect(config.clone()))
            .policy(
                Backoff::new(Duration::from_millis(10), 2.0, Duration::from_millis(100))
                    .unwrap()
                    .give_up_after(3),
            )
            .connect_timeout(Some(Duration::from_secs(5)))
            .start()
            .expect("valid configuration");
        let error = pg
            .when_connected()
            .within(Duration::from_secs(30))
            .await
            .expect_err("there is no such database");
        println!("printed with {{}}: {error}");
        println!("printed with {{:#}}: {error:#}");
        let printed = error.to_string();
        assert!(
            printed.contains("database \"nope\" does not exist"),
            "{printed}"
        );
        assert!(!printed.contains('\n'), "one line: {printed:?}");
        assert!(
            printed.starts_with("the retry policy gave up after 3 consecutive failures: "),
            "{printed}"
        );
        assert!(matches!(
            error,
            Error::GaveUp {
                consecutive_failures: 3,
                ..
            }
        ));
        // The chain is intact: the server's error is reachable with `source()`.
        let mut source = std::error::Error::source(&error);
        let mut db = None;
        while let Some(e) = source {
            if let Some(pg_error) = e.downcast_ref::<tokio_postgres::Error>() {
                db = pg_error.as_db_error().map(|db| db.code().clone());
            }
            source = e.source();
        }
        assert_eq!(
            db,
            Some(tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
        );
        pg.stop().await;
    });
}
