//! Probing next to slow queries, against a real PostgreSQL server the
//! tests start themselves: the probe runs `SELECT 1` on a connection of its own
//! (opened by the connector with the main one, both drivers run as one), so a
//! `pg_sleep(5)` on the main connection never holds it back, and a server frozen
//! with SIGSTOP is still found, idle or with a query waiting.
//!
//! `cargo test --all-features --test real_servers liveness_postgres -- --nocapture` prints the
//! figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redial::driver::ClientService;
use tokio_postgres::{Client, NoTls};

use crate::support::postgres::PgServer;
use crate::support::{frozen_rounds, one_at_a_time, run};

/// The application's client, and the probe's.
#[derive(Clone)]
struct Pg {
    main: Arc<Client>,
    probe: Arc<Client>,
}

type Service = ClientService<Pg, tokio_postgres::Error>;

fn service(config: String, interval: Duration, timeout: Duration) -> Service {
    redial::tokio::builder(move || {
        let config = config.clone();
        async move {
            let (main, main_driver) = tokio_postgres::connect(&config, NoTls).await?;
            let (probe, probe_driver) = tokio_postgres::connect(&config, NoTls).await?;
            // One driver for both: the first to end ends the connection.
            let driver = async move {
                futures_util::future::select(main_driver, probe_driver).await;
            };
            let pg = Pg {
                main: Arc::new(main),
                probe: Arc::new(probe),
            };
            Ok::<_, tokio_postgres::Error>((pg, driver))
        }
    })
    .policy(|_| Duration::from_millis(50))
    .connect_timeout(Some(Duration::from_secs(2)))
    .reset_backoff_after(None)
    .probe(interval, timeout, |pg: Pg| async move {
        pg.probe.batch_execute("SELECT 1").await
    })
    .start()
    .unwrap()
}

/// `pg_sleep(5)` with a 1 s / 1 s probe: the probe is never held back by it.
#[test]
fn a_slow_query_next_to_the_probe_loses_nothing() {
    let _one = one_at_a_time();
    run(async {
        let server = PgServer::start();
        let pg = service(
            server.config(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let conn = pg.when_connected().await.unwrap();
        let started = Instant::now();
        let slept = conn.main.batch_execute("SELECT pg_sleep(5)").await;
        let took = started.elapsed();
        let losses = pg.counters().losses;
        println!(
            "pg_sleep(5) next to a 1 s / 1 s probe: {} after {took:.1?}, {losses} connections lost",
            if slept.is_ok() { "done" } else { "failed" }
        );
        assert!(slept.is_ok(), "{slept:?}");
        assert_eq!(losses, 0);
        pg.stop().await;
    });
}

/// SIGSTOP: found within interval + timeout, idle and with a query waiting (which
/// then fails at once, with the connection).
#[test]
fn a_frozen_server_is_found_idle_and_with_a_query_waiting() {
    let _one = one_at_a_time();
    run(async {
        const ROUNDS: usize = 10;
        let (interval, timeout) = (Duration::from_millis(300), Duration::from_millis(300));
        let mut server = PgServer::start();
        let pg = service(server.config(), interval, timeout);
        let found = frozen_rounds(&pg, &mut server, ROUNDS, |conn: &Pg| {
            let main = Arc::clone(&conn.main);
            async move { main.batch_execute("SELECT pg_sleep(60)").await }
        })
        .await;
        let (idle, waiting) = (found.idle, found.waiting);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "postgres frozen (SIGSTOP), probe {} ms / {} ms on its own connection: idle found \
             in {:.0} ms median, {:.0} ms worst; with a query waiting {:.0} ms median, {:.0} ms \
             worst (interval + timeout = {} ms)",
            interval.as_millis(),
            timeout.as_millis(),
            ms(idle[ROUNDS / 2]),
            ms(idle[ROUNDS - 1]),
            ms(waiting[ROUNDS / 2]),
            ms(waiting[ROUNDS - 1]),
            (interval + timeout).as_millis(),
        );
        let slack = Duration::from_millis(150);
        assert!(idle[ROUNDS - 1] <= interval + timeout + slack, "{idle:?}");
        assert!(
            waiting[ROUNDS - 1] <= interval + timeout + slack,
            "{waiting:?}"
        );
        pg.stop().await;
    });
}
