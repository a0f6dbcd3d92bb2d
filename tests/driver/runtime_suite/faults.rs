//! Hostile user code, run on every runtime: panics in the connector, the prepare
//! step, a connection's driver, a handle's `Clone` and the retry policy, and user
//! code that calls back into the service from inside the service's task.

use std::io;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future;
use redial::driver::{ClientService, Ended, Error};
use redial::{Failure, PanicSite, State};

use super::{failure, stop_within, until, within, Conn, Server, TestRt};

/// The panic a waiter with a threshold of one received.
fn panic_of(error: Error<io::Error>) -> redial::Panic {
    match error {
        Error::Failed(f) => match &*f {
            Failure::Panicked(panic) => panic.clone(),
            other => panic!("expected a panic, got {other:?}"),
        },
        other => panic!("expected Error::Failed, got {other:?}"),
    }
}

/// A connector whose closure panics on the first call and whose future panics on
/// the second: two failed attempts that name the panic; the third connects.
pub async fn connector_panics_are_failed_attempts<T: TestRt>() {
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let addr = server.addr;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = ClientService::builder(T::runtime(), move || {
        let n = c.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            panic!("connector closure panicked on call {n}");
        }
        async move {
            if n == 1 {
                panic!("connector future panicked on call {n}");
            }
            T::connect(addr).await
        }
    })
    .policy(|_| Duration::from_millis(5))
    .build()
    .unwrap();
    let first = svc.when_connected_fail_after(NonZeroU32::MIN);
    let second = svc.when_connected_fail_after(NonZeroU32::new(2).unwrap());
    let patient = svc.when_connected();
    svc.start();
    let panic = panic_of(failure(first.await));
    assert_eq!(panic.site(), PanicSite::Connector);
    assert_eq!(panic.message(), "connector closure panicked on call 0");
    let panic = panic_of(failure(second.await));
    assert_eq!(panic.site(), PanicSite::Connector);
    assert_eq!(panic.message(), "connector future panicked on call 1");
    assert!(
        panic.to_string().contains("the connector panicked"),
        "{panic}"
    );
    let conn = within::<T, _>(Duration::from_secs(5), "connected", patient)
        .await
        .unwrap();
    assert_eq!(T::request(conn, b"ok").await.unwrap(), b"ok");
    let counters = svc.counters();
    assert_eq!((counters.failures, counters.connections), (2, 1));
    assert_eq!(svc.ended(), None);
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

/// A prepare hook whose closure panics on the first connection and whose future
/// panics on the second: both connections are closed, both attempts fail with
/// the panic, the third connection is handed out.
pub async fn prepare_panics_are_failed_attempts<T: TestRt>() {
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let addr = server.addr;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let svc = ClientService::builder(T::runtime(), move || T::connect(addr))
        .policy(|_| Duration::from_millis(5))
        .prepare(move |_conn: Conn<T>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                panic!("prepare closure panicked");
            }
            async move {
                if n == 1 {
                    panic!("prepare future panicked");
                }
                Ok(())
            }
        })
        .build()
        .unwrap();
    let first = svc.when_connected_fail_after(NonZeroU32::MIN);
    let second = svc.when_connected_fail_after(NonZeroU32::new(2).unwrap());
    let patient = svc.when_connected();
    svc.start();
    let panic = panic_of(failure(first.await));
    assert_eq!(
        (panic.site(), panic.message()),
        (PanicSite::Prepare, "prepare closure panicked")
    );
    let panic = panic_of(failure(second.await));
    assert_eq!(
        (panic.site(), panic.message()),
        (PanicSite::Prepare, "prepare future panicked")
    );
    let conn = within::<T, _>(Duration::from_secs(5), "prepared", patient)
        .await
        .unwrap();
    assert_eq!(T::request(conn, b"ok").await.unwrap(), b"ok");
    // The two rejected connections were closed.
    until::<T>("rejected connections closed", || server.eofs() == 2).await;
    assert_eq!(server.accepted(), 3);
    assert_eq!(svc.counters().failures, 2);
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

/// A connection's driver future that panics: while it is being prepared, a failed
/// attempt that names the panic; once connected, a loss; the service reconnects.
pub async fn driver_panics_are_contained<T: TestRt>() {
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let addr = server.addr;
    // Which connection's driver panics, and when: the first one at once (it is
    // being prepared: the prepare hook waits), the one numbered in `crash` on demand.
    let crash = Arc::new(AtomicUsize::new(usize::MAX));
    let calls = Arc::new(AtomicUsize::new(0));
    let (c, crash2) = (calls.clone(), crash.clone());
    let svc = ClientService::builder(T::runtime(), move || {
        let n = c.fetch_add(1, Ordering::SeqCst);
        let crash = crash2.clone();
        async move {
            let (stream, driver) = T::connect(addr).await?;
            let driver = async move {
                let watch = async {
                    loop {
                        if n == 0 || crash.load(Ordering::SeqCst) == n {
                            break;
                        }
                        super::sleep::<T>(Duration::from_millis(2)).await;
                    }
                };
                if let future::Either::Right(_) =
                    future::select(std::pin::pin!(driver), std::pin::pin!(watch)).await
                {
                    panic!("driver of connection {n} panicked");
                }
            };
            Ok::<_, io::Error>((stream, driver))
        }
    })
    .policy(|_| Duration::from_millis(5))
    .prepare(|_conn: Conn<T>| async {
        super::sleep::<T>(Duration::from_millis(50)).await;
        Ok(())
    })
    .build()
    .unwrap();
    let first = svc.when_connected_fail_after(NonZeroU32::MIN);
    let patient = svc.when_connected();
    svc.start();
    let panic = panic_of(failure(first.await));
    assert_eq!(
        (panic.site(), panic.message()),
        (PanicSite::Connection, "driver of connection 0 panicked")
    );
    let conn = within::<T, _>(Duration::from_secs(5), "connected", patient)
        .await
        .unwrap();
    assert_eq!(T::request(conn, b"ok").await.unwrap(), b"ok");
    // Once connected, a panicking driver is a loss: the service reconnects.
    crash.store(1, Ordering::SeqCst);
    until::<T>("the loss", || svc.counters().losses == 1).await;
    until::<T>("reconnected", || svc.counters().connections == 2).await;
    let conn = svc.when_connected().await.unwrap();
    assert_eq!(T::request(conn, b"again").await.unwrap(), b"again");
    assert_eq!(svc.ended(), None);
    stop_within::<T, _>(&svc).await;
    until::<T>("every connection closed", || {
        server.eofs() == server.accepted()
    })
    .await;
    server.stop().await;
}

/// A handle whose `Clone` panics (while `broken` is set).
#[derive(Debug)]
pub struct Brittle<S> {
    pub inner: S,
    broken: Arc<AtomicBool>,
}

impl<S: Clone> Clone for Brittle<S> {
    fn clone(&self) -> Self {
        if self.broken.load(Ordering::SeqCst) {
            panic!("handle clone panicked");
        }
        Brittle {
            inner: self.inner.clone(),
            broken: self.broken.clone(),
        }
    }
}

/// A handle whose `Clone` panics: the waiters being served fail with the panic,
/// the connection is closed as lost, and the service reconnects.
pub async fn handle_clone_panic_fails_waiters_and_reconnects<T: TestRt>() {
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 0);
    let addr = server.addr;
    let broken = Arc::new(AtomicBool::new(true));
    let b = broken.clone();
    let svc = ClientService::builder(T::runtime(), move || {
        let broken = b.clone();
        async move {
            let (inner, driver) = T::connect(addr).await?;
            Ok::<_, io::Error>((Brittle { inner, broken }, driver))
        }
    })
    .policy(|_| Duration::from_millis(20))
    .build()
    .unwrap();
    let (one, two) = (svc.when_connected(), svc.when_connected());
    svc.start();
    for waiter in [one, two] {
        let panic = panic_of(failure(waiter.await));
        assert_eq!(
            (panic.site(), panic.message()),
            (PanicSite::Handle, "handle clone panicked")
        );
    }
    until::<T>("the broken connection closed", || server.eofs() == 1).await;
    until::<T>("counted as a loss", || svc.counters().losses == 1).await;
    broken.store(false, Ordering::SeqCst);
    let conn = within::<T, _>(Duration::from_secs(5), "reconnected", svc.when_connected())
        .await
        .unwrap();
    assert_eq!(T::request(conn.inner.clone(), b"ok").await.unwrap(), b"ok");
    drop(conn);
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}

/// A retry policy that panics (an overflowing `Duration * n`): the service ends
/// with a typed error; nothing hangs; every later request fails at once.
pub async fn policy_panic_ends_the_service<T: TestRt>() {
    let addr = super::free_addr::<T>();
    let svc = ClientService::builder(T::runtime(), move || T::connect(addr))
        .policy(|failures: u32| Duration::MAX * (failures + 1))
        .build()
        .unwrap();
    let mut watch = svc.watch();
    let waiter = svc.when_connected();
    svc.start();
    let limited = svc.when_connected_fail_after(NonZeroU32::new(5).unwrap());
    let error = within::<T, _>(Duration::from_secs(5), "the waiter", waiter)
        .await
        .expect_err("no connection");
    let Error::Ended(Ended::PolicyPanicked(message)) = &error else {
        panic!("expected Ended::PolicyPanicked, got {error:?}");
    };
    assert!(message.contains("overflow"), "{message}");
    assert!(matches!(
        failure(limited.await),
        Error::Ended(Ended::PolicyPanicked(_))
    ));
    assert_eq!(svc.state(), State::Stopped);
    assert!(matches!(svc.ended(), Some(Ended::PolicyPanicked(_))));
    // Every later request is answered at once.
    assert!(matches!(
        failure(svc.when_connected().await),
        Error::Ended(Ended::PolicyPanicked(_))
    ));
    within::<T, _>(Duration::from_secs(1), "stop", svc.stop()).await;
    svc.start();
    assert!(!svc.disconnect(redial::AttemptId::from_raw(0)));
    while within::<T, _>(Duration::from_secs(5), "watch", watch.changed())
        .await
        .is_some()
    {}
    assert!(watch.is_ended());
    assert_eq!(watch.state(), State::Stopped);
}

/// Where a [`Meddler`] finds its service (filled in once it is built).
type Slot<S> = Arc<Mutex<Option<ClientService<Meddler<S>, io::Error>>>>;

/// A handle that calls back into the service when it is cloned and dropped.
pub struct Meddler<S> {
    pub inner: S,
    service: Slot<S>,
}

impl<S: Clone + Send + Sync + 'static> Clone for Meddler<S> {
    fn clone(&self) -> Self {
        if let Some(svc) = self.service.lock().unwrap().clone() {
            let _ = (svc.state(), svc.pending_waiters(), svc.counters());
        }
        Meddler {
            inner: self.inner.clone(),
            service: self.service.clone(),
        }
    }
}

impl<S> Drop for Meddler<S> {
    fn drop(&mut self) {
        let svc = self
            .service
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(svc) = svc {
            let _ = svc.state();
            // A waiter made and withdrawn (from inside the service's task, when the
            // task drops a handle).
            drop(svc.when_connected());
        }
    }
}

/// User code that calls back into the service from inside its task (a policy, a
/// handle's `Clone` and `Drop`) neither deadlocks the task nor the runtime.
pub async fn callbacks_into_the_service_do_not_deadlock<T: TestRt>() {
    // Closes the first three connections at once: three losses, three retries.
    let server = Server::start::<T>("127.0.0.1:0".parse().unwrap(), 3);
    let addr = server.addr;
    let slot: Slot<Conn<T>> = Arc::new(Mutex::new(None));
    let (for_connector, for_policy) = (slot.clone(), slot.clone());
    let asked = Arc::new(AtomicUsize::new(0));
    let a = asked.clone();
    let svc = ClientService::builder(T::runtime(), move || {
        let service = for_connector.clone();
        async move {
            let (inner, driver) = T::connect(addr).await?;
            Ok::<_, io::Error>((Meddler { inner, service }, driver))
        }
    })
    .policy(move |_| {
        // Reads the service from inside the machine's transition.
        if let Some(svc) = for_policy.lock().unwrap().clone() {
            let _ = (svc.state(), svc.consecutive_failures(), svc.counters());
            a.fetch_add(1, Ordering::SeqCst);
        }
        Duration::from_millis(2)
    })
    .build()
    .unwrap();
    *slot.lock().unwrap() = Some(svc.clone());
    svc.start();
    for _ in 0..5 {
        let conn = within::<T, _>(Duration::from_secs(10), "connected", svc.when_connected())
            .await
            .unwrap();
        drop(conn.clone());
        drop(conn);
    }
    until::<T>("three losses", || svc.counters().losses == 3).await;
    assert!(asked.load(Ordering::SeqCst) >= 3);
    assert_eq!(svc.ended(), None);
    stop_within::<T, _>(&svc).await;
    // Break the cycle (the handles hold the service).
    slot.lock().unwrap().take();
    server.stop().await;
}
