//! The typed event stream, the last failure and the last loss, on every runtime.

use std::io;
use std::time::Duration;

use futures_util::StreamExt;
use redial::driver::{ClientService, Ended, Event, Loss};
use redial::{Failure, State};

use super::{free_addr, stop_within, until, within, Conn, Server, TestRt};

/// Events, compressed to a readable line each, until the stream ends.
async fn drain<T: TestRt>(events: &mut redial::driver::Events<io::Error>) -> Vec<String> {
    let mut seen = Vec::new();
    while let Some(event) =
        within::<T, _>(Duration::from_secs(5), "the next event", events.next()).await
    {
        seen.push(match event {
            Event::AttemptStarted { attempt, .. } => format!("started {attempt}"),
            Event::AttemptFailed {
                attempt,
                failure,
                consecutive_failures,
            } => {
                let kind = match &*failure {
                    Failure::Connect(e) => format!("connect {:?}", e.kind()),
                    other => format!("{other}"),
                };
                format!("failed {attempt} ({kind}) #{consecutive_failures}")
            }
            Event::RetryScheduled { .. } => "retry".to_string(),
            Event::Connected {
                attempt,
                generation,
            } => format!("connected {attempt} gen {generation}"),
            Event::Lost {
                attempt, reason, ..
            } => format!("lost {attempt}: {reason}"),
            Event::GaveUp {
                consecutive_failures,
                ..
            } => format!("gave up after {consecutive_failures}"),
            Event::Stopped => "stopped".to_string(),
            Event::Ended(ended) => format!("ended: {ended}"),
            Event::Missed { events } => format!("missed {events}"),
            other => format!("{other:?}"),
        });
    }
    seen
}

/// Refused twice, then connected; the server drops the first connection at once:
/// every step is an event, in order, and the stream ends with the service.
pub async fn events_tell_the_whole_story<T: TestRt>() {
    let addr = free_addr::<T>();
    let svc: ClientService<Conn<T>, io::Error> =
        ClientService::builder(T::runtime(), move || T::connect(addr))
            .policy(|_| Duration::from_millis(20))
            .reset_backoff_after(None)
            .build()
            .unwrap();
    let mut events = svc.events();
    assert!(svc.last_failure().is_none() && svc.last_loss().is_none());
    svc.start();
    until::<T>("two refused attempts", || svc.counters().failures >= 2).await;
    let failure = svc.last_failure().expect("a last failure");
    assert!(
        matches!(&*failure, Failure::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused)
    );
    // Closes the first connection at once, echoes on the next.
    let server = Server::start::<T>(addr, 1);
    until::<T>("the second connection", || svc.counters().connections == 2).await;
    assert!(matches!(svc.last_loss(), Some(Loss::Closed)));
    stop_within::<T, _>(&svc).await;
    drop(svc);
    let seen = drain::<T>(&mut events).await;
    let text = seen.join("\n");
    // The beginning and the end are exact; in between, however many refusals the
    // server's start took, each is "started", "failed", "retry", in that order.
    assert_eq!(seen[0], "started attempt#0", "{text}");
    assert_eq!(
        seen[1], "failed attempt#0 (connect ConnectionRefused) #1",
        "{text}"
    );
    assert_eq!(seen[2], "retry", "{text}");
    assert_eq!(seen[3], "started attempt#1", "{text}");
    assert_eq!(
        seen[4], "failed attempt#1 (connect ConnectionRefused) #2",
        "{text}"
    );
    let first = seen
        .iter()
        .position(|e| e.starts_with("connected"))
        .expect(&text);
    // The attempt that connected: "connected attempt#N gen 1".
    let n: u64 = seen[first]
        .strip_prefix("connected attempt#")
        .and_then(|rest| rest.strip_suffix(" gen 1"))
        .and_then(|n| n.parse().ok())
        .expect(&text);
    assert_eq!(
        &seen[first + 1..],
        [
            format!("lost attempt#{n}: the connection was closed by the peer"),
            "retry".to_string(),
            format!("started attempt#{}", n + 1),
            format!("connected attempt#{} gen 2", n + 1),
            // `stop()`, then the last handle dropped (a stop of its own).
            "stopped".to_string(),
            "stopped".to_string(),
            "ended: the service was dropped".to_string(),
        ],
        "{text}"
    );
    server.stop().await;
}

/// A subscriber that falls behind is told how many events it missed, then sees the
/// newest ones; the service never waits for it.
pub async fn a_slow_subscriber_is_told_what_it_missed<T: TestRt>() {
    let addr = free_addr::<T>();
    let svc: ClientService<Conn<T>, io::Error> =
        ClientService::builder(T::runtime(), move || T::connect(addr))
            .policy(|_| Duration::from_millis(1))
            .events_capacity(4)
            .build()
            .unwrap();
    let mut slow = svc.events();
    svc.start();
    // Each refused attempt is three events: far more than 4 without reading.
    until::<T>("ten refused attempts", || svc.counters().failures >= 10).await;
    match within::<T, _>(Duration::from_secs(5), "an event", slow.next()).await {
        Some(Event::Missed { events }) => assert!(events >= 10, "missed only {events}"),
        other => panic!("expected Missed first, got {other:?}"),
    }
    stop_within::<T, _>(&svc).await;
    assert_eq!(svc.state(), State::Stopped);
    drop(svc);
    // What is left ends with the end.
    let rest = drain::<T>(&mut slow).await;
    assert_eq!(
        rest.last().map(String::as_str),
        Some("ended: the service was dropped")
    );
    // A subscription made after the end ends at once.
    let _ = Ended::Dropped;
}

/// `reconnect_now`: a service waiting out a long backoff connects at once when
/// told the peer is back.
pub async fn reconnect_now_skips_a_long_backoff<T: TestRt>() {
    let addr = free_addr::<T>();
    let svc: ClientService<Conn<T>, io::Error> =
        ClientService::builder(T::runtime(), move || T::connect(addr))
            .policy(|_| Duration::from_secs(3600))
            .start()
            .unwrap();
    until::<T>("waiting an hour", || svc.state() == State::Waiting).await;
    let server = Server::start::<T>(addr, 0);
    svc.reconnect_now(true);
    let conn = within::<T, _>(
        Duration::from_secs(5),
        "connected at once",
        svc.when_connected(),
    )
    .await
    .unwrap();
    assert_eq!(T::request(conn, b"now").await.unwrap(), b"now");
    assert_eq!(svc.counters().attempts, 2);
    stop_within::<T, _>(&svc).await;
    server.stop().await;
}
