//! Probing next to blocking commands, against a real `redis-server` the
//! tests start themselves: the probe `PING`s on a connection of its own (opened by
//! the connector with the main one, both drivers run as one), so a 20 s `BLPOP` on
//! the main connection never holds it back, and a server frozen with SIGSTOP is
//! still found within interval + timeout, idle or with a `BLPOP` waiting.
//!
//! `cargo test --all-features --test real_servers liveness_redis -- --nocapture` prints the
//! figures.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redial::driver::ClientService;
use redis::aio::MultiplexedConnection;
use redis::{RedisConnectionInfo, RedisError, RedisResult};

use crate::support::redis::{multiplexed, RedisServer, PASSWORD};
use crate::support::{frozen_rounds, one_at_a_time, run};

/// The application's connection, and the probe's.
#[derive(Clone)]
struct Redis {
    main: MultiplexedConnection,
    probe: MultiplexedConnection,
}

type Service = ClientService<Redis, RedisError>;

static INFO: LazyLock<RedisConnectionInfo> = LazyLock::new(|| {
    RedisConnectionInfo::default()
        .set_skip_set_lib_name()
        .set_password(PASSWORD)
});

/// No response timeout: a 20 s BLPOP is a normal command here.
async fn open(
    addr: SocketAddr,
) -> RedisResult<(
    MultiplexedConnection,
    impl Future<Output = ()> + Send + 'static,
)> {
    multiplexed(addr, &INFO, None).await
}

fn service(addr: SocketAddr, interval: Duration, timeout: Duration) -> Service {
    redial::tokio::builder(move || async move {
        let (main, main_driver) = open(addr).await?;
        let (probe, probe_driver) = open(addr).await?;
        // One driver for both: the first to end ends the connection.
        let driver = async move {
            futures_util::future::select(Box::pin(main_driver), Box::pin(probe_driver)).await;
        };
        Ok::<_, RedisError>((Redis { main, probe }, driver))
    })
    .policy(|_| Duration::from_millis(50))
    .connect_timeout(Some(Duration::from_secs(2)))
    .reset_backoff_after(None)
    .probe(interval, timeout, |redis: Redis| async move {
        let mut probe = redis.probe;
        redis::cmd("PING").exec_async(&mut probe).await
    })
    .start()
    .unwrap()
}

async fn blpop(
    mut main: MultiplexedConnection,
    seconds: u64,
) -> RedisResult<Option<(String, String)>> {
    redis::cmd("BLPOP")
        .arg("redial:liveness:jobs")
        .arg(seconds)
        .query_async(&mut main)
        .await
}

/// A 20 s `BLPOP` with a 1 s / 1 s probe: the probe is never held back by it.
#[test]
fn a_blocking_command_next_to_the_probe_loses_nothing() {
    let _one = one_at_a_time();
    run(async {
        let server = RedisServer::start();
        let redis = service(
            server.addr(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let conn = redis.when_connected().await.unwrap();
        let started = Instant::now();
        let popped = blpop(conn.main.clone(), 20).await;
        let took = started.elapsed();
        let losses = redis.counters().losses;
        println!(
            "BLPOP 20 s next to a 1 s / 1 s probe: {popped:?} after {took:.1?}, {losses} \
             connections lost"
        );
        assert!(matches!(popped, Ok(None)), "{popped:?}"); // timed out, as asked
        assert!(took >= Duration::from_secs(19));
        assert_eq!(losses, 0);
        redis.stop().await;
    });
}

/// SIGSTOP: found within interval + timeout, 20 times idle and 20 times with a
/// `BLPOP` waiting (which then fails at once, with the connection).
#[test]
fn a_frozen_server_is_found_idle_and_with_a_blocking_command_waiting() {
    let _one = one_at_a_time();
    run(async {
        const ROUNDS: usize = 20;
        let (interval, timeout) = (Duration::from_millis(300), Duration::from_millis(300));
        let mut server = RedisServer::start();
        let redis = service(server.addr(), interval, timeout);
        let found = frozen_rounds(&redis, &mut server, ROUNDS, |conn: &Redis| {
            blpop(conn.main.clone(), 0)
        })
        .await;
        let (idle, waiting) = (found.idle, found.waiting);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "redis frozen (SIGSTOP), probe {} ms / {} ms on its own connection: idle found in \
             {:.0} ms median, {:.0} ms worst; with a BLPOP waiting {:.0} ms median, {:.0} ms \
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
        redis.stop().await;
    });
}
