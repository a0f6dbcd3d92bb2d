//! `WhenConnected::within` on a real runtime: Tokio's sleep works only inside the
//! runtime, and a limit may be set (and polled) on any thread. No sockets: the
//! connector hangs, or hands out a plain value with a driver that never ends.

use std::future::{pending, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::thread::Thread;
use std::time::{Duration, Instant};

use redial::driver::{ClientService, Error};

/// Polls `future` to completion on this thread (not a Tokio thread), parking in
/// between; gives up after 10 s.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let started = Instant::now();
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "hung");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

type Service = ClientService<u32, std::io::Error>;

fn hanging(rt: &tokio::runtime::Runtime) -> Service {
    let _inside = rt.enter();
    redial::tokio::builder(pending::<Result<(u32, std::future::Pending<()>), std::io::Error>>)
        .start()
        .unwrap()
}

#[test]
fn a_limit_set_and_polled_outside_the_tokio_runtime_runs_out() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let service = hanging(&rt);
    // This thread is not in the runtime: `tokio::time::sleep` would panic here.
    assert!(tokio::runtime::Handle::try_current().is_err());
    let started = Instant::now();
    let answer = block_on(service.when_connected().within(Duration::from_millis(200)));
    let waited = started.elapsed();
    assert!(
        matches!(answer, Err(Error::TimedOut { after, last: None }) if after == Duration::from_millis(200)),
        "{answer:?}"
    );
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while service.pending_waiters() != 0 {
        assert!(Instant::now() < deadline, "the waiter was not withdrawn");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(service);
}

#[tokio::test]
async fn a_limit_inside_the_runtime_answers_in_time_or_runs_out() {
    let up: ClientService<u32, std::io::Error> =
        redial::tokio::builder(|| async { Ok::<_, std::io::Error>((7u32, pending::<()>())) })
            .start()
            .unwrap();
    let started = Instant::now();
    assert_eq!(
        up.when_connected()
            .within(Duration::from_secs(5))
            .await
            .unwrap(),
        7
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let down: ClientService<u32, std::io::Error> = redial::tokio::builder(|| async {
        Err::<(u32, std::future::Pending<()>), _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ))
    })
    .start()
    .unwrap();
    let error = down
        .when_connected()
        .within(Duration::from_millis(300))
        .await
        .unwrap_err();
    println!("{error}");
    assert_eq!(
        error.to_string(),
        "no connection within 300ms: connection attempt failed: refused"
    );
}

#[cfg(feature = "smol")]
#[test]
fn a_limit_on_smol_runs_out() {
    let service: ClientService<u32, std::io::Error> = redial::smol::builder(|| {
        pending::<Result<(u32, std::future::Pending<()>), std::io::Error>>()
    })
    .start()
    .unwrap();
    let answer = smol::block_on(service.when_connected().within(Duration::from_millis(100)));
    assert!(matches!(answer, Err(Error::TimedOut { .. })), "{answer:?}");
}
