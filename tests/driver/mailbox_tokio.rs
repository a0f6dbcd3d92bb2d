//! A `reconnect_now` flood on a real Tokio runtime against a local TCP listener:
//! one thread calls `reconnect_now(true)` in a tight loop for 2 s while the service
//! connects (its connector takes 200 ms). Measures the heap growth (the counting
//! allocator of `tests/support/counting_alloc.rs`: live bytes, peak over the flood)
//! and the time to connect, and checks both stay small.
//!
//! `cargo test --test driver_mailbox_tokio -- --nocapture` prints the figures.
#![allow(unsafe_code)] // the counting allocator; the library itself forbids unsafe

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redial::driver::ClientService;
use redial::tokio::Tokio;
use tokio::net::{TcpListener, TcpStream};

#[path = "../support/counting_alloc.rs"]
mod counting_alloc;

const MIB: f64 = 1024.0 * 1024.0;

/// The heap is counted for the whole process: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
const CONNECT: Duration = Duration::from_millis(200);

#[test]
fn a_reconnect_now_flood_neither_grows_the_heap_nor_delays_the_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = rt.spawn(async move {
        let mut accepted = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            accepted.push(socket); // kept open
        }
    });
    let _guard = rt.enter();
    // A connection that takes 200 ms to make, as to a distant server.
    let service = ClientService::builder(Tokio, move || async move {
        tokio::time::sleep(CONNECT).await;
        TcpStream::connect(addr).await.map(redial::tokio::stream)
    })
    .policy(|_| Duration::from_millis(10))
    .build()
    .unwrap();

    // Started, then flooded while it connects (connecting: every call is a request).
    let started = Instant::now();
    service.start();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let baseline = counting_alloc::reset_peak();
    let flood = {
        let (service, stop, calls) = (service.clone(), Arc::clone(&stop), Arc::clone(&calls));
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut max_queued = 0;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(2) && !stop.load(Ordering::Relaxed) {
                for _ in 0..1000 {
                    service.reconnect_now(true);
                }
                n += 1000;
                max_queued = max_queued.max(service.queued_requests());
            }
            calls.store(n, Ordering::Relaxed);
            max_queued
        })
    };
    let connected = rt.block_on(service.when_connected());
    let to_connect = started.elapsed();
    assert!(connected.is_ok(), "{:?}", connected.err());
    let max_queued = flood.join().unwrap();
    let peak = counting_alloc::peak() - baseline;
    let calls = calls.load(Ordering::Relaxed);
    println!(
        "reconnect_now flood (1 thread, 2 s, {calls} calls): heap peak +{:.3} MiB, \
         connected in {:.3} ms (the connector takes 200 ms), at most {max_queued} request(s) queued",
        peak as f64 / MIB,
        to_connect.as_secs_f64() * 1000.0,
    );
    // The flood's one `ReconnectNow`, and around the `start()` made during it:
    // `ReconnectNow`, `Start`, `ReconnectNow`.
    assert!(max_queued <= 3, "{max_queued}");
    assert!(peak < 4 * 1024 * 1024, "the heap grew by {peak} bytes");
    assert!(
        to_connect < CONNECT + Duration::from_millis(250),
        "connecting took {to_connect:?}"
    );
    stop.store(true, Ordering::Relaxed);
    rt.block_on(service.stop());
}

/// The flood outruns the task: a million `reconnect_now(true)` calls while the
/// service's runtime (one thread) is busy elsewhere, then the time to connect once
/// it runs. Every call is queued (a `start()` is queued first), so before the
/// mailbox was bounded this held a million commands, and the task worked through
/// them, 64 per poll, before it polled its attempt.
#[test]
fn a_flood_the_task_cannot_keep_up_with_is_one_request() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = rt.spawn(async move {
        let mut accepted = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            accepted.push(socket); // kept open
        }
    });
    let _guard = rt.enter();
    let service = ClientService::builder(Tokio, move || async move {
        TcpStream::connect(addr).await.map(redial::tokio::stream)
    })
    .policy(|_| Duration::from_millis(10))
    .build()
    .unwrap();
    service.start();
    let baseline = counting_alloc::reset_peak();
    let calls = 1_000_000;
    for _ in 0..calls {
        assert!(service.reconnect_now(true));
    }
    let peak = counting_alloc::peak() - baseline;
    let started = Instant::now();
    let connected = rt.block_on(service.when_connected());
    let to_connect = started.elapsed();
    assert!(connected.is_ok(), "{:?}", connected.err());
    println!(
        "reconnect_now flood the task cannot keep up with ({calls} calls, runtime idle): \
         heap peak +{:.3} MiB, then connected in {:.3} ms",
        peak as f64 / MIB,
        to_connect.as_secs_f64() * 1000.0,
    );
    assert!(peak < 64 * 1024, "the heap grew by {peak} bytes");
    assert!(
        to_connect < Duration::from_millis(250),
        "connecting took {to_connect:?}"
    );
    rt.block_on(service.stop());
}
