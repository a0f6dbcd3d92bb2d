//! Keeping a PostgreSQL connection alive: a redial [`ClientService`] on Tokio around
//! tokio-postgres's plain `(Client, Connection)` pair.
//!
//! * the **connector** calls `tokio_postgres::connect`, which returns the client
//!   and the connection future: `(Arc::new(client), connection)` is a
//!   `(handle, driver future)` pair as is; the service runs the connection and
//!   learns of the loss when it ends;
//! * the **prepare** step names the session (`SET application_name`) and could set
//!   anything else a session needs (`search_path`, `statement_timeout`, …); its
//!   failure closes the connection and is retried with backoff, like a failed
//!   connect;
//! * queries are served through [`ClientService::when_connected`]: during an
//!   outage they wait for the next connection instead of failing.
//!
//! Run it against a local server:
//!
//! ```text
//! cargo run --features tokio --example postgres -- "host=127.0.0.1 port=5432 user=postgres"
//! ```
//!
//! Then restart PostgreSQL while it runs (`pg_ctl restart -m immediate`, or kill
//! it): the queries issued during the outage wait, and go through once the server
//! is back, on a new session (see the backend pid change).
//!
//! Settings: the connection string (libpq style, or a `postgres://` URL) is the
//! first argument, else `PG_CONFIG`, else `DATABASE_URL`, else
//! `host=127.0.0.1 port=5432 user=postgres dbname=postgres`; `PG_QUERIES` (how many
//! queries to run, default 20, one every 250 ms).
//!
//! [`ClientService`]: redial::driver::ClientService
//! [`ClientService::when_connected`]: redial::driver::ClientService::when_connected

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redial::driver::{ClientService, Error};
use redial::policy::{Backoff, Jitter};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// The service: its handle is the client (in an `Arc`: it is not `Clone`), its
/// error tokio-postgres's.
type Pg = ClientService<Arc<Client>, tokio_postgres::Error>;

/// Builds and starts the service.
fn service(config: String) -> Pg {
    redial::tokio::builder(move || {
        let config = config.clone();
        async move {
            let (client, connection) = tokio_postgres::connect(&config, NoTls).await?;
            // (handle, driver future): the service runs the connection.
            Ok::<_, tokio_postgres::Error>((Arc::new(client), connection))
        }
    })
    .prepare(|client: Arc<Client>| async move {
        client
            .batch_execute("SET application_name = 'redial-example'")
            .await
    })
    // A policy for a database. It comes back in seconds (a restart, a failover):
    // retry soon (100 ms), doubling up to a cap of 10 s, so a blip costs a fraction
    // of a second and a long outage a try every few seconds, not a minute (the
    // default is Twisted's 1.5 s × 1.5 up to 60 s). Equal jitter (each delay between
    // half and all of that) with a seed of this process's own keeps the app servers
    // that lost the same database from all reconnecting at the same instant.
    .policy(
        Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(10))
            .expect("a valid backoff")
            .with_jitter(Jitter::Equal)
            .with_seed(RandomState::new().hash_one(std::process::id())),
    )
    // Retrying will not create a missing database or fix a password: give up at
    // once, and say why, instead of retrying for ever while callers wait.
    .fatal_if(|e: &tokio_postgres::Error| {
        e.code().is_some_and(|code| {
            [
                SqlState::INVALID_CATALOG_NAME,
                SqlState::INVALID_PASSWORD,
                SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            ]
            .contains(code)
        })
    })
    .connect_timeout(Some(Duration::from_secs(3)))
    .prepare_timeout(Some(Duration::from_secs(3)))
    .start()
    .expect("a valid configuration")
}

/// One query on the current session, waiting for one if there is none: the server's
/// time and the backend's pid (a new pid after each reconnection).
async fn now(pg: &Pg) -> Result<(String, i32), Box<dyn std::error::Error>> {
    let client = pg.when_connected().await?;
    let row = client
        .query_one("SELECT now()::text, pg_backend_pid()", &[])
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PG_CONFIG").ok())
        .or_else(|| std::env::var("DATABASE_URL").ok())
        .unwrap_or_else(|| "host=127.0.0.1 port=5432 user=postgres dbname=postgres".to_owned());
    if let Err(e) = config.parse::<tokio_postgres::Config>() {
        eprintln!("not a connection string: {config:?}: {e}");
        return ExitCode::from(2);
    }
    let queries: u32 = std::env::var("PG_QUERIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);

    let pg = service(config.clone());

    // The first connection: give up waiting after 4 failed attempts or 5 s,
    // whichever comes first, with advice. The service itself would keep trying
    // (unless the failure is fatal: then it has given up too). `{}` prints the
    // whole story on one line, e.g. `the retry policy gave up ...` or `gave up on a
    // failure that retrying will not fix (1 consecutive failure): connection attempt
    // failed: db error: FATAL: database "nope" does not exist`.
    match pg
        .when_connected_fail_after(NonZeroU32::new(4).unwrap())
        .within(Duration::from_secs(5))
        .await
    {
        Ok(_) => println!("connected to PostgreSQL ({config})"),
        Err(e) => {
            eprintln!("no usable PostgreSQL server ({config}): {e}");
            eprintln!();
            if let Error::GaveUp { fatal: true, .. } = e {
                eprintln!("A server answered, but refused this database or user.");
            } else if let Some(redial::Failure::Prepare(_)) = e.failure() {
                eprintln!("A server answered, but the session setup failed on it.");
            } else {
                eprintln!("Start one, or point this example at yours:");
                eprintln!("    cargo run --features tokio --example postgres -- \"host=... port=... user=...\"");
                eprintln!("    (or PG_CONFIG=... / DATABASE_URL=...)");
            }
            pg.stop().await;
            return ExitCode::FAILURE;
        }
    }

    let mut answered = 0;
    for i in 1..=queries {
        let started = Instant::now();
        match now(&pg).await {
            Ok((time, pid)) => {
                answered += 1;
                println!(
                    "#{i}: now() = {time} (backend pid {pid}, {} ms){}",
                    started.elapsed().as_millis(),
                    if started.elapsed() > Duration::from_millis(100) {
                        " (waited for the server)"
                    } else {
                        ""
                    }
                );
            }
            // A query on the wire when the server died: the next one waits.
            Err(e) => println!("#{i}: failed: {e} (the next query waits for the new session)"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let c = pg.counters();
    println!(
        "{answered}/{queries} answered; attempts {}, failed {}, connections {}, losses {} \
         (of which flaps, lost within 5 s of connecting: {})",
        c.attempts, c.failures, c.connections, c.losses, c.flaps
    );

    // Closes the session; the server sees the client go.
    pg.stop().await;
    match pg.when_connected().await {
        Err(Error::Stopped) => {}
        other => eprintln!("unexpected after stop: {:?}", other.map(|_| ())),
    }
    if answered == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
