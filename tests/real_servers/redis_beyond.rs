//! Beyond every peer, against a real `redis-server` the tests start themselves:
//! a liveness probe finds a server frozen with SIGSTOP (its sockets open, its kernel
//! still accepting, nothing answered), and a wrong password classified as fatal
//! gives up at once.
//!
//! `cargo test --all-features --test real_servers redis_beyond -- --nocapture` prints the figures.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{LazyLock, MutexGuard};
use std::time::{Duration, Instant};

use redial::driver::{ClientService, Error, Loss};
use redial::policy::Backoff;
use redial::{Failure, Jitter, State};
use redis::aio::MultiplexedConnection;
use redis::{RedisConnectionInfo, RedisError, RedisResult};

use crate::support::redis::{multiplexed, RedisServer, PASSWORD};
use crate::support::{one_at_a_time, run, time_to_loss};

type Redis = ClientService<MultiplexedConnection, RedisError>;

/// The redis crate sends nothing on its own: the prepare step does.
static INFO: LazyLock<RedisConnectionInfo> =
    LazyLock::new(|| RedisConnectionInfo::default().set_skip_set_lib_name());

/// One test at a time: the probe's timing is what is measured.
fn serial() -> MutexGuard<'static, ()> {
    one_at_a_time()
}

/// No response timeout of its own: the probe is what notices a silent server.
async fn connect(
    addr: SocketAddr,
) -> RedisResult<(
    MultiplexedConnection,
    impl Future<Output = ()> + Send + 'static,
)> {
    multiplexed(addr, &INFO, None).await
}

fn builder(
    addr: SocketAddr,
    password: &'static str,
) -> redial::driver::Builder<redial::tokio::Tokio, MultiplexedConnection, RedisError> {
    redial::tokio::builder(move || connect(addr))
        .prepare(move |mut conn: MultiplexedConnection| async move {
            redis::cmd("AUTH")
                .arg(password)
                .exec_async(&mut conn)
                .await?;
            redis::cmd("PING").exec_async(&mut conn).await
        })
        .policy(
            Backoff::new(Duration::from_millis(50), 2.0, Duration::from_millis(400))
                .unwrap()
                .with_jitter(Jitter::None),
        )
        .connect_timeout(Some(Duration::from_secs(2)))
        .prepare_timeout(Some(Duration::from_millis(500)))
        .reset_backoff_after(None)
}

async fn incr(redis: &Redis) -> RedisResult<i64> {
    let mut conn = redis
        .when_connected()
        .await
        .map_err(|e| RedisError::from(std::io::Error::other(e.to_string())))?;
    redis::cmd("INCR")
        .arg("redial:beyond")
        .query_async(&mut conn)
        .await
}

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(300);
const FREEZES: usize = 20;

#[test]
fn a_frozen_server_is_found_by_the_probe_within_interval_plus_timeout() {
    let _serial = serial();
    run(async {
        let mut server = RedisServer::start();
        let redis: Redis = builder(server.addr(), PASSWORD)
            .probe(
                INTERVAL,
                TIMEOUT,
                |mut conn: MultiplexedConnection| async move {
                    redis::cmd("PING").exec_async(&mut conn).await
                },
            )
            .start()
            .unwrap();
        let mut events = redis.events();
        let mut found = Vec::new();
        let mut back = Vec::new();
        for i in 0..FREEZES {
            // Up, and answering.
            tokio::time::timeout(Duration::from_secs(20), incr(&redis))
                .await
                .expect("connected again")
                .expect("a command succeeds");
            let (frozen_elapsed, reason) = time_to_loss(&mut events, || server.freeze()).await;
            found.push(frozen_elapsed);
            assert!(matches!(reason, Loss::ProbeTimedOut), "{reason:?}");
            // The server comes back: resumed half of the time, restarted the other half.
            let returned = Instant::now();
            if i % 2 == 0 {
                server.thaw();
            } else {
                server.kill();
                server.restart();
            }
            tokio::time::timeout(Duration::from_secs(20), incr(&redis))
                .await
                .expect("back after the server returned")
                .expect("a command succeeds");
            back.push(returned.elapsed());
        }
        found.sort();
        back.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "probe every {} ms, timeout {} ms: {FREEZES} freezes found in {:.0} ms median, \
             {:.0} ms worst (interval + timeout = {} ms); back {:.0} ms median, {:.0} ms worst \
             after the server was resumed or restarted",
            INTERVAL.as_millis(),
            TIMEOUT.as_millis(),
            ms(found[FREEZES / 2]),
            ms(found[FREEZES - 1]),
            (INTERVAL + TIMEOUT).as_millis(),
            ms(back[FREEZES / 2]),
            ms(back[FREEZES - 1]),
        );
        // Found no later than interval + timeout, plus scheduling slack.
        assert!(
            found[FREEZES - 1] <= INTERVAL + TIMEOUT + Duration::from_millis(300),
            "worst {:?}",
            found[FREEZES - 1]
        );
        assert_eq!(redis.counters().losses, FREEZES as u64);
        redis.stop().await;
        assert_eq!(redis.state(), State::Stopped);
    });
}

#[test]
fn a_wrong_password_classified_as_fatal_gives_up_after_one_attempt() {
    let _serial = serial();
    run(async {
        let mut server = RedisServer::start();
        let mut admin = server.admin();
        let redis: Redis = builder(server.addr(), "not-the-password")
            .fatal_if(|e: &RedisError| e.code() == Some("WRONGPASS"))
            .build()
            .unwrap();
        let waiter = redis.when_connected();
        let started = Instant::now();
        redis.start();
        let error = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the waiter is answered")
            .map(|_| ())
            .unwrap_err();
        let Error::GaveUp {
            consecutive_failures,
            last,
            fatal,
        } = &error
        else {
            panic!("expected a give-up, got {error:?}");
        };
        assert!(*fatal);
        assert_eq!(*consecutive_failures, 1);
        assert!(matches!(&**last, Failure::Prepare(e) if e.code() == Some("WRONGPASS")));
        let counters = redis.counters();
        assert_eq!((counters.attempts, counters.failures), (1, 1));
        assert_eq!(redis.state(), State::Stopped);
        // The server saw exactly one connection from the service, and it is closed.
        let received = admin.total_connections_received() - server.own_connections();
        assert_eq!(received, 1);
        let clients = admin.wait_clients(Duration::from_secs(2), |c| c.is_empty());
        assert!(clients.is_empty(), "{clients:?}");
        println!(
            "wrong password, classified fatal: gave up after {} attempt in {:?}: {error}",
            counters.attempts,
            started.elapsed()
        );
    });
}
