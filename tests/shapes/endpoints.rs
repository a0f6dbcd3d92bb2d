//! Endpoints tried in rounds, on the deterministic harness (virtual time, scripted
//! connections): failing over costs a connect, not a retry delay; only a failed
//! attempt moves the rotation; every service has its own; events name the
//! endpoint of each attempt.
//!
//! `cargo test --all-features --test shapes endpoints -- --nocapture` prints the times
//! to reach a live secondary with a 2 s retry (before rounds: 2.0 s, 4.0 s, 3.1 s).

use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use redial::driver::{Builder, ClientService, ConnectContext, Endpoints, Event, Events};
use redial::testing::{poll_once, ConnectOutcome, ManualRuntime, Net, NetError, NetHandle};
use redial::State;

const RETRY: Duration = Duration::from_secs(2);

fn refused() -> ConnectOutcome {
    ConnectOutcome::Fail("refused".into())
}

/// The endpoint of every attempt, as the connector was given it.
type Log = Arc<Mutex<Vec<&'static str>>>;

/// A service on `net` over a primary and a secondary, with a 2 s retry; the
/// outcomes are scripted on `net` in the order of the attempts, whatever endpoint
/// each goes to (the log says which).
fn service_on(
    rt: &ManualRuntime,
    net: &Net,
    endpoints: Endpoints<&'static str>,
    log: &Log,
) -> Builder<ManualRuntime, NetHandle, NetError> {
    let mut connect = net.connector();
    let log = Arc::clone(log);
    ClientService::builder_with_endpoints(
        rt.clone(),
        endpoints,
        move |endpoint: &'static str, _: ConnectContext| {
            log.lock().unwrap().push(endpoint);
            connect()
        },
    )
    .policy(|_| RETRY)
}

fn two() -> Endpoints<&'static str> {
    Endpoints::new(["primary", "secondary"]).unwrap()
}

fn attempts(log: &Log) -> Vec<&'static str> {
    log.lock().unwrap().clone()
}

/// The events told so far.
fn drain(events: &mut Events<NetError>) -> Vec<Event<NetError>> {
    let mut seen = Vec::new();
    while let Poll::Ready(Some(event)) = poll_once(&mut events.next()) {
        seen.push(event);
    }
    seen
}

#[test]
fn a_refused_primary_costs_a_connect_not_a_retry_delay() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let log = Log::default();
    net.push_connects([refused(), ConnectOutcome::Succeed]);
    let service = service_on(&rt, &net, two(), &log).start().unwrap();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    assert_eq!(attempts(&log), ["primary", "secondary"]);
    println!(
        "refused primary: on the secondary after {:?} (retry {RETRY:?}; before rounds: 2.0 s)",
        rt.now()
    );
    assert_eq!(rt.now(), Duration::ZERO, "no retry delay inside a round");
}

#[test]
fn a_primary_dying_under_the_service_costs_a_connect() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let log = Log::default();
    net.push_connects([ConnectOutcome::Succeed, refused(), ConnectOutcome::Succeed]);
    let service = service_on(&rt, &net, two(), &log).start().unwrap();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    // Up long enough to be healthy (the default reset_backoff_after is 5 s).
    rt.advance(Duration::from_secs(10));
    let died = rt.now();
    assert!(net.lose(0));
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    assert_eq!(
        attempts(&log),
        ["primary", "primary", "secondary"],
        "back to the primary after the loss, then on at once"
    );
    let took = rt.now() - died;
    println!(
        "primary died under the service: on the secondary after {took:?} (retry {RETRY:?}; before rounds: 4.0 s)"
    );
    assert_eq!(took, Duration::ZERO);
}

#[test]
fn a_frozen_primary_costs_the_prepare_timeout() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let log = Log::default();
    net.push_connects([ConnectOutcome::Succeed, ConnectOutcome::Succeed]);
    let prepare_timeout = Duration::from_secs(1);
    let service = service_on(&rt, &net, two(), &log)
        .prepare(net.prepare_hook())
        .prepare_timeout(Some(prepare_timeout))
        .start()
        .unwrap();
    // The primary accepts, and its prepare step never answers.
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connecting);
    assert_eq!(net.pending_prepares(), [0]);
    rt.advance(prepare_timeout);
    assert_eq!(attempts(&log), ["primary", "secondary"]);
    assert!(net.prepare_succeed(1));
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    println!(
        "frozen primary (prepare timeout {prepare_timeout:?}): on the secondary after {:?} (retry {RETRY:?}; before rounds: 3.1 s)",
        rt.now()
    );
    assert_eq!(rt.now(), prepare_timeout);
}

#[test]
fn the_policy_delay_applies_between_rounds_asked_with_the_round_count() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let log = Log::default();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let policy_log = Arc::clone(&asked);
    let three = Endpoints::new(["primary", "secondary", "tertiary"]).unwrap();
    net.push_connects(std::iter::repeat_with(refused).take(6));
    net.push_connect(ConnectOutcome::Succeed);
    let service = service_on(&rt, &net, three, &log)
        .policy(move |rounds: u32| {
            policy_log.lock().unwrap().push(rounds);
            Duration::from_secs(u64::from(rounds))
        })
        .start()
        .unwrap();
    rt.run_until_idle();
    assert_eq!(attempts(&log), ["primary", "secondary", "tertiary"]);
    assert_eq!(rt.next_timer(), Some(Duration::from_secs(1)));
    rt.advance(Duration::from_secs(1));
    assert_eq!(attempts(&log).len(), 6);
    assert_eq!(
        rt.next_timer(),
        Some(Duration::from_secs(3)),
        "2 s after the second round"
    );
    rt.advance(Duration::from_secs(2));
    assert_eq!(service.state(), State::Connected);
    assert_eq!(
        attempts(&log),
        [
            "primary",
            "secondary",
            "tertiary",
            "primary",
            "secondary",
            "tertiary",
            "primary"
        ],
        "every round starts at the primary"
    );
    assert_eq!(
        *asked.lock().unwrap(),
        [1, 2],
        "asked once a round, with the round count"
    );
    assert_eq!(rt.now(), Duration::from_secs(3));
}

#[test]
fn a_stop_during_a_connect_does_not_move_the_rotation() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let log = Log::default();
    // The primary is slow: its attempt hangs until the stop cancels it.
    net.push_connects([ConnectOutcome::Hang, ConnectOutcome::Succeed]);
    let service = service_on(&rt, &net, two(), &log).start().unwrap();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connecting);
    assert_eq!(rt.run(service.stop()), Some(()));
    assert_eq!(net.cancelled_attempts(), [0]);
    service.start();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    assert_eq!(
        attempts(&log),
        ["primary", "primary"],
        "the cancelled attempt did not fail: the primary again"
    );
}

#[test]
fn services_sharing_one_list_each_start_on_the_primary() {
    let rt = ManualRuntime::new();
    let endpoints = two();
    let (net_a, net_b) = (Net::new(), Net::new());
    let (log_a, log_b) = (Log::default(), Log::default());
    // A fails on the primary and moves on; B, started after, still starts on the
    // primary.
    net_a.push_connects([refused(), ConnectOutcome::Succeed]);
    net_b.push_connects([ConnectOutcome::Succeed]);
    let a = service_on(&rt, &net_a, endpoints.clone(), &log_a)
        .start()
        .unwrap();
    rt.run_until_idle();
    let b = service_on(&rt, &net_b, endpoints, &log_b).start().unwrap();
    rt.run_until_idle();
    assert_eq!((a.state(), b.state()), (State::Connected, State::Connected));
    assert_eq!(attempts(&log_a), ["primary", "secondary"]);
    assert_eq!(attempts(&log_b), ["primary"]);
}

#[test]
fn events_and_the_context_name_the_endpoint() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let endpoints = two();
    let contexts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&contexts);
    let mut connect = net.connector();
    net.push_connects([refused(), ConnectOutcome::Succeed]);
    let service = ClientService::builder_with_endpoints(
        rt.clone(),
        endpoints.clone(),
        move |_: &'static str, ctx: ConnectContext| {
            seen.lock().unwrap().push(ctx.endpoint);
            connect()
        },
    )
    .policy(|_| RETRY)
    .build()
    .unwrap();
    let mut events = service.events();
    service.start();
    rt.run_until_idle();
    let started: Vec<Option<usize>> = drain(&mut events)
        .into_iter()
        .filter_map(|event| match event {
            Event::AttemptStarted { endpoint, .. } => Some(endpoint),
            _ => None,
        })
        .collect();
    assert_eq!(started, [Some(0), Some(1)]);
    assert_eq!(*contexts.lock().unwrap(), [Some(0), Some(1)]);
    assert_eq!(endpoints.get(1), Some(&"secondary"));
    assert_eq!(endpoints.get(2), None);
}

#[test]
fn other_services_name_no_endpoint() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    net.push_connect(ConnectOutcome::Succeed);
    let service = ClientService::builder(rt.clone(), net.connector())
        .build()
        .unwrap();
    let mut events = service.events();
    service.start();
    rt.run_until_idle();
    let first = drain(&mut events).into_iter().next().unwrap();
    assert!(
        matches!(first, Event::AttemptStarted { endpoint: None, .. }),
        "{first:?}"
    );
}

#[test]
fn a_flap_ends_the_round_and_a_healthy_loss_does_not() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let log = Log::default();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let policy_log = Arc::clone(&asked);
    net.push_connects(std::iter::repeat_with(|| ConnectOutcome::Succeed).take(3));
    let service = service_on(&rt, &net, two(), &log)
        .policy(move |rounds: u32| {
            policy_log.lock().unwrap().push(rounds);
            RETRY
        })
        .start()
        .unwrap();
    rt.run_until_idle();
    // Lost before it was healthy, with no failure before: back to the primary at once.
    assert!(net.lose(0));
    rt.run_until_idle();
    assert_eq!((attempts(&log).len(), rt.now()), (2, Duration::ZERO));
    // A flap in a run of failures: a failed round, the policy's delay.
    assert!(net.lose(1));
    rt.run_until_idle();
    assert_eq!(attempts(&log).len(), 2);
    assert_eq!(rt.next_timer(), Some(RETRY));
    rt.advance(RETRY);
    assert_eq!(service.state(), State::Connected);
    assert_eq!(attempts(&log), ["primary", "primary", "primary"]);
    assert_eq!(*asked.lock().unwrap(), [1]);
}

#[test]
fn after_giving_up_a_start_begins_at_the_primary() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let log = Log::default();
    net.push_connects([refused(), refused(), ConnectOutcome::Succeed]);
    let service = service_on(&rt, &net, two(), &log)
        .policy(redial::from_fn(|_| None))
        .start()
        .unwrap();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Stopped);
    assert_eq!(
        attempts(&log),
        ["primary", "secondary"],
        "one round, then gave up"
    );
    service.start();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    assert_eq!(attempts(&log), ["primary", "secondary", "primary"]);
}

#[test]
fn a_start_after_a_stop_while_connected_begins_at_the_primary() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let log = Log::default();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let policy_log = Arc::clone(&asked);
    net.push_connects([
        refused(),
        ConnectOutcome::Succeed,
        refused(),
        ConnectOutcome::Succeed,
    ]);
    let service = service_on(&rt, &net, two(), &log)
        .policy(move |rounds: u32| {
            policy_log.lock().unwrap().push(rounds);
            RETRY
        })
        .start()
        .unwrap();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    // On the secondary; stopped, then started: a new round, at the primary, and a
    // failure there is a failed attempt (not taken for the loss of the old
    // connection): on to the secondary at once.
    assert_eq!(rt.run(service.stop()), Some(()));
    service.start();
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connected);
    assert_eq!(
        attempts(&log),
        ["primary", "secondary", "primary", "secondary"]
    );
    assert_eq!(rt.now(), Duration::ZERO);
    assert!(asked.lock().unwrap().is_empty(), "no round failed");
}

#[test]
fn without_reset_backoff_after_a_loss_waits_out_the_policy() {
    let rt = ManualRuntime::new();
    let net = Net::new();
    let log = Log::default();
    net.push_connects(std::iter::repeat_with(|| ConnectOutcome::Succeed).take(2));
    // Every connection counts as healthy at once: a peer that accepts and drops
    // must not be hammered with no delay.
    let service = service_on(&rt, &net, two(), &log)
        .reset_backoff_after(None)
        .start()
        .unwrap();
    rt.run_until_idle();
    assert!(net.lose(0));
    rt.run_until_idle();
    assert_eq!(attempts(&log).len(), 1);
    assert_eq!(rt.next_timer(), Some(RETRY));
    rt.advance(RETRY);
    assert_eq!(service.state(), State::Connected);
    assert_eq!(attempts(&log), ["primary", "primary"]);
}
