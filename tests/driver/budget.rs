//! The shared reconnect budget through services (on the deterministic harness and on
//! Tokio): every attempt that leaves the process counts, and retries leave no faster
//! than the budget's rate. (The budget as a policy, on its own: `tests/machine/budget.rs`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redial::driver::ClientService;
use redial::testing::{ConnectOutcome, ManualRuntime, Net, NetError, NetHandle};
use redial::{Backoff, Budget, Jitter, State};

/// The most slots that fall in any window `[t, t + width)`.
fn busiest_window(mut slots: Vec<Duration>, width: Duration) -> usize {
    slots.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..slots.len() {
        while slots[end] - slots[start] >= width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// End to end on the deterministic harness: 200 services lose their connection at
/// the same instant; with a budget of 20 retries a second, the attempts reach the
/// "server" no faster, and everyone is back.
#[test]
fn services_sharing_a_budget_reconnect_no_faster_than_it() {
    let rt = ManualRuntime::new();
    let clock_rt = rt.clone();
    let budget = Budget::with_clock(20.0, 1, move || clock_rt.now()).unwrap();
    let services: Vec<(Net, ClientService<_, _>)> = (0..200)
        .map(|seed| {
            let net = Net::new();
            net.push_connects((0..4).map(|_| ConnectOutcome::Succeed));
            let service = ClientService::builder(rt.clone(), net.connector())
                .policy(budget.limit(Backoff::twisted(seed).with_jitter(Jitter::None)))
                .start()
                .unwrap();
            (net, service)
        })
        .collect();
    rt.run_until_idle();
    assert!(services.iter().all(|(_, s)| s.state() == State::Connected));
    // The server restarts: every connection is lost at once.
    let lost_at = rt.now();
    for (net, _) in &services {
        for conn in net.open() {
            net.lose(conn);
        }
    }
    rt.run_until_idle();
    // Attempts per virtual second, until everyone is back.
    let mut per_second = Vec::new();
    let attempts = |services: &[(Net, ClientService<_, _>)]| -> usize {
        services.iter().map(|(net, _)| net.attempts()).sum()
    };
    let mut seen = attempts(&services);
    while services.iter().any(|(_, s)| s.state() != State::Connected) {
        rt.advance(Duration::from_secs(1));
        let now = attempts(&services);
        per_second.push(now - seen);
        seen = now;
        assert!(
            per_second.len() < 60,
            "not everyone came back: {per_second:?}"
        );
    }
    println!(
        "budget 20/s, 200 services: attempts per second {per_second:?}, all back after {:?}",
        rt.now() - lost_at
    );
    assert!(per_second.iter().all(|n| *n <= 21), "{per_second:?}");
    // Twisted's first delay is 1.5 s; then ten seconds for 200 at 20 a second.
    assert!(rt.now() - lost_at <= Duration::from_secs(12));
    drop(services);
    rt.run_until_idle();
    assert_eq!(rt.tasks(), 0);
}

// ----- through services: every attempt that leaves counts ---------------------------

type Service = ClientService<NetHandle, NetError>;

/// A connector on `net` that notes the virtual instant of every call (the moment an
/// attempt leaves the process) in `log`.
fn logged(
    rt: &ManualRuntime,
    net: &Net,
    log: &Arc<Mutex<Vec<Duration>>>,
) -> impl FnMut() -> redial::testing::NetAttempt + Send + 'static {
    let (rt, log, mut connect) = (rt.clone(), Arc::clone(log), net.connector());
    move || {
        log.lock().unwrap().push(rt.now());
        connect()
    }
}

/// Attempts in `[from, from + width)`.
fn in_window(log: &Mutex<Vec<Duration>>, from: Duration, width: Duration) -> usize {
    let log = log.lock().unwrap();
    log.iter()
        .filter(|t| **t >= from && **t < from + width)
        .count()
}

/// The budget on the harness's clock.
fn budget_on(rt: &ManualRuntime, rate: f64, burst: u32) -> Budget {
    let clock = rt.clone();
    Budget::with_clock(rate, burst, move || clock.now()).unwrap()
}

/// How services are tied to the budget.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Wiring {
    /// `policy(budget.limit(..))`: retries only (as before `Builder::budget`).
    PolicyOnly,
    /// `budget(budget)`: every attempt.
    Builder,
}

fn service(
    rt: &ManualRuntime,
    net: &Net,
    log: &Arc<Mutex<Vec<Duration>>>,
    budget: &Budget,
    wiring: Wiring,
    retry: Duration,
) -> Service {
    let builder = ClientService::builder(rt.clone(), logged(rt, net, log));
    let builder = match wiring {
        Wiring::PolicyOnly => builder.policy(budget.limit(move |_| retry)),
        Wiring::Builder => builder.policy(move |_| retry).budget(budget.clone()),
    };
    builder.start().unwrap()
}

/// Figure 1, through services: one service sits in a 60 s backoff, another retries
/// every 100 ms on the same budget; the second is not held behind the first.
#[test]
fn a_short_retry_is_not_held_behind_another_services_long_backoff() {
    let rt = ManualRuntime::new();
    let budget = budget_on(&rt, 10.0, 3);
    let (slow_net, fast_net) = (Net::new(), Net::new());
    slow_net.push_connects((0..10).map(|_| ConnectOutcome::Fail("down".into())));
    fast_net.push_connects((0..200).map(|_| ConnectOutcome::Fail("down".into())));
    let (slow_log, fast_log) = (Arc::default(), Arc::default());
    let slow = service(
        &rt,
        &slow_net,
        &slow_log,
        &budget,
        Wiring::Builder,
        Duration::from_secs(60),
    );
    rt.run_until_idle();
    assert_eq!(slow_net.attempts(), 1);
    let fast = service(
        &rt,
        &fast_net,
        &fast_log,
        &budget,
        Wiring::Builder,
        Duration::from_millis(100),
    );
    rt.advance(Duration::from_secs(10));
    let times = fast_log.lock().unwrap().clone();
    let longest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    println!(
        "figure 1, services (budget 10/s, burst 3): the longest wait between two attempts \
         of a 100 ms retry while another service sits in a 60 s backoff: {longest:?} \
         ({} attempts in 10 s; before: 59.9 s)",
        times.len()
    );
    assert_eq!(longest, Duration::from_millis(100));
    assert_eq!(times.len(), 101); // at 0, 100 ms, …, 10 s
    assert_eq!(slow_net.attempts(), 1);

    // The case: a 20 ms retry reconnects well within 2 s while another
    // service sits in a 30 s backoff.
    let rt = ManualRuntime::new();
    let budget = budget_on(&rt, 10.0, 3);
    let (slow_net, fast_net) = (Net::new(), Net::new());
    slow_net.push_connects((0..10).map(|_| ConnectOutcome::Fail("down".into())));
    fast_net.push_connects([
        ConnectOutcome::Fail("down".into()),
        ConnectOutcome::Fail("down".into()),
        ConnectOutcome::Succeed,
    ]);
    let (slow_log, fast_log) = (Arc::default(), Arc::default());
    let slow2 = service(
        &rt,
        &slow_net,
        &slow_log,
        &budget,
        Wiring::Builder,
        Duration::from_secs(30),
    );
    rt.run_until_idle();
    let started = rt.now();
    let fast2 = service(
        &rt,
        &fast_net,
        &fast_log,
        &budget,
        Wiring::Builder,
        Duration::from_millis(20),
    );
    rt.advance(Duration::from_secs(2));
    let connected_after = *fast_log.lock().unwrap().last().unwrap() - started;
    println!("  a 20 ms retry beside a 30 s backoff: {:?}, its connecting attempt {connected_after:?} after its start (before: not within 2 s)", fast2.state());
    assert_eq!(fast2.state(), State::Connected);
    // Its third attempt wants 40 ms, but three slots at 0 and 20 ms already spend
    // the budget (10/s, burst 3) until 100 ms: the budget's own pace, nothing more.
    assert_eq!(connected_after, Duration::from_millis(100));
    drop((slow, fast, slow2, fast2));
}

/// Figure 2: 1,000 services start at once on a budget of 100/s (burst 10); every
/// attempt fails and is retried after 100 ms. In the first second (and in any one
/// second), at most rate + burst attempts leave.
#[test]
fn a_thousand_services_starting_at_once_keep_to_the_budget() {
    let mut figures = Vec::new();
    for wiring in [Wiring::PolicyOnly, Wiring::Builder] {
        let rt = ManualRuntime::new();
        rt.set_poll_limit(10_000_000);
        rt.set_step_limit(10_000_000);
        let budget = budget_on(&rt, 100.0, 10);
        let net = Net::new();
        net.push_connects((0..20_000).map(|_| ConnectOutcome::Fail("down".into())));
        let log: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let services: Vec<Service> = (0..1000)
            .map(|_| service(&rt, &net, &log, &budget, wiring, Duration::from_millis(100)))
            .collect();
        rt.advance(Duration::from_secs(3));
        let first = in_window(&log, Duration::ZERO, Duration::from_secs(1));
        let busiest = busiest_window(log.lock().unwrap().clone(), Duration::from_secs(1));
        figures.push((wiring, first, busiest));
        if wiring == Wiring::Builder {
            // Slot by slot: 10 at 0, then one every 10 ms up to 3 s.
            assert_eq!(log.lock().unwrap().len(), 10 + 300);
        }
        drop(services);
        rt.run_until_idle();
        assert_eq!(rt.tasks(), 0);
    }
    for (wiring, first, busiest) in &figures {
        println!(
            "figure 2 (1,000 services, budget 100/s, burst 10, {wiring:?}): {first} attempts \
             in the first second, {busiest} in the busiest second (goal <= 110)"
        );
    }
    let (_, first, busiest) = figures[1];
    assert!(first <= 110, "{first}");
    assert!(busiest <= 110, "{busiest}");
}

/// Figure 3: 300 services wait out a 60 s backoff on a budget of 20/s (burst 5);
/// all are told `reconnect_now` at once. In the next 300 ms, at most
/// 20 × 0.3 + 5 attempts leave.
#[test]
fn reconnect_now_for_everyone_keeps_to_the_budget() {
    let mut figures = Vec::new();
    for wiring in [Wiring::PolicyOnly, Wiring::Builder] {
        let rt = ManualRuntime::new();
        rt.set_poll_limit(10_000_000);
        rt.set_step_limit(10_000_000);
        let budget = budget_on(&rt, 20.0, 5);
        let net = Net::new();
        net.push_connects((0..2_000).map(|_| ConnectOutcome::Fail("down".into())));
        let log: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let services: Vec<Service> = (0..300)
            .map(|_| service(&rt, &net, &log, &budget, wiring, Duration::from_secs(60)))
            .collect();
        // Everyone has made its first attempt (at 20/s: 15 s) and waits to retry.
        rt.advance(Duration::from_secs(20));
        assert_eq!(log.lock().unwrap().len(), 300);
        assert!(services.iter().all(|s| s.state() == State::Waiting));
        let now = rt.now();
        for service in &services {
            service.reconnect_now(false);
        }
        rt.run_until_idle();
        rt.advance(Duration::from_secs(1));
        let next = in_window(&log, now, Duration::from_millis(300));
        figures.push((wiring, next));
        if wiring == Wiring::Builder {
            // The retries' slots (60 s ahead) were given back: what is kept is the
            // admissions still waiting (300 - 25 let through in the first second)
            // and the new retries of those 25 (and of the one leaving right now),
            // not 300 more.
            let kept = budget.outstanding();
            println!("  slots kept 1 s after reconnect_now: {kept}");
            assert!(kept <= 275 + 26, "{kept}");
            // Everyone gets through: 15 s for 300 at 20/s.
            rt.advance(Duration::from_secs(15));
            assert_eq!(log.lock().unwrap().len(), 600);
        }
        drop(services);
        rt.run_until_idle();
        assert_eq!(rt.tasks(), 0);
    }
    for (wiring, next) in &figures {
        println!(
            "figure 3 (300 services, budget 20/s, burst 5, {wiring:?}): {next} attempts in the \
             300 ms after reconnect_now (goal <= 11)"
        );
    }
    let (_, next) = figures[1];
    assert!(next <= 11, "{next}");
}

/// A start, a stop while the attempt waits for its slot, a start again: the
/// waiting attempt gives its slot back, and the attempt after the restart counts.
#[test]
fn attempts_outside_the_policy_count_and_unused_slots_are_given_back() {
    let rt = ManualRuntime::new();
    let budget = budget_on(&rt, 1.0, 1);
    let net = Net::new();
    net.push_connects((0..10).map(|_| ConnectOutcome::Hang));
    let log: Arc<Mutex<Vec<Duration>>> = Arc::default();
    // Someone else takes the slot at 0: our first attempt must wait 1 s.
    assert_eq!(budget.admit(), Duration::ZERO);
    let service = service(
        &rt,
        &net,
        &log,
        &budget,
        Wiring::Builder,
        Duration::from_secs(5),
    );
    rt.run_until_idle();
    assert_eq!(service.state(), State::Connecting);
    assert_eq!(net.attempts(), 0, "the first attempt waits for its slot");
    // Kept: the other's slot (now) and ours (1 s).
    assert_eq!(budget.outstanding(), 2);
    // Stopped while it waits: its slot is given back.
    let mut stopping = Box::pin(service.stop());
    rt.run_until_idle();
    assert!(redial::testing::poll_once(&mut stopping).is_ready());
    assert_eq!(budget.outstanding(), 1);
    assert_eq!(net.attempts(), 0);
    // A start after the stop takes the slot at 1 s again.
    service.start();
    rt.run_until_idle();
    assert_eq!(budget.outstanding(), 2);
    rt.advance(Duration::from_millis(999));
    assert_eq!(net.attempts(), 0);
    rt.advance(Duration::from_millis(1));
    assert_eq!(net.attempts(), 1);
    assert_eq!(*log.lock().unwrap(), [Duration::from_secs(1)]);
    // It fails at 1.5 s: the retry's slot is 5 s later (6.5 s).
    rt.advance(Duration::from_millis(500));
    net.fail(0, "down");
    rt.run_until_idle();
    assert_eq!(service.state(), State::Waiting);
    assert_eq!(budget.outstanding(), 1, "the retry's slot, 5 s ahead");
    // reconnect_now from the retry wait: the retry's slot is given back and the
    // attempt takes the next free one (2 s: one a second).
    service.reconnect_now(false);
    rt.run_until_idle();
    assert_eq!(budget.outstanding(), 1, "the retry's slot was given back");
    assert_eq!(net.attempts(), 1);
    rt.advance(Duration::from_millis(500));
    assert_eq!(net.attempts(), 2);
    assert_eq!(log.lock().unwrap()[1], Duration::from_secs(2));
    drop(service);
    rt.run_until_idle();
    assert_eq!(rt.tasks(), 0);
}

/// A connect timeout counts the wait for admission (documented): an attempt whose
/// slot is further than its timeout fails with a timeout, gives its slot back, and
/// its retry is budgeted as any.
#[test]
fn a_connect_timeout_counts_the_wait_for_admission() {
    let rt = ManualRuntime::new();
    let budget = budget_on(&rt, 1.0, 1);
    let net = Net::new();
    net.push_connects((0..10).map(|_| ConnectOutcome::Succeed));
    for _ in 0..3 {
        budget.admit(); // slots at 0, 1 s and 2 s are taken by others
    }
    let service = ClientService::builder(rt.clone(), net.connector())
        .policy(|_| Duration::from_millis(500))
        .connect_timeout(Some(Duration::from_millis(1500)))
        .budget(budget.clone())
        .start()
        .unwrap();
    rt.advance(Duration::from_millis(1500));
    assert!(matches!(
        service.last_failure().as_deref(),
        Some(redial::Failure::ConnectTimeout)
    ));
    assert_eq!(net.attempts(), 0);
    // Its slot at 3 s was given back, then taken again by its retry (wanted at
    // 2 s, which another holds): kept, the slots at 2 s and 3 s.
    assert_eq!(budget.outstanding(), 2);
    rt.advance(Duration::from_millis(1500));
    assert_eq!(net.attempts(), 1);
    assert_eq!(service.state(), State::Connected);
    drop(service);
    rt.run_until_idle();
    assert_eq!(rt.tasks(), 0);
}

/// The retry delay a service reports is the real wait: its budget's share
/// included, and nothing added after it (one slot per retry, not two).
#[test]
fn the_reported_retry_delay_is_the_real_wait() {
    use futures_util::StreamExt;
    use redial::driver::Event;

    let rt = ManualRuntime::new();
    let budget = budget_on(&rt, 2.0, 1);
    let net = Net::new();
    net.push_connects((0..10).map(|_| ConnectOutcome::Fail("down".into())));
    let log: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let service = ClientService::builder(rt.clone(), logged(&rt, &net, &log))
        .policy(|_| Duration::from_millis(100))
        .budget(budget.clone())
        .build()
        .unwrap();
    let mut events = service.events();
    service.start();
    rt.advance(Duration::from_millis(2_100));
    let mut delays = Vec::new();
    while let Some(Some(event)) = rt.run_for(Duration::ZERO, events.next()) {
        if let Event::RetryScheduled { delay, .. } = event {
            delays.push(delay);
        }
    }
    let times = log.lock().unwrap().clone();
    println!("attempts at {times:?}, retry delays reported {delays:?}");
    // 2 a second: the policy's 100 ms becomes 500 ms, and the attempts leave then.
    assert_eq!(times, [0, 500, 1000, 1500, 2000].map(Duration::from_millis));
    assert_eq!(delays[..4], [Duration::from_millis(500); 4]);
    drop(service);
    rt.run_until_idle();
    assert_eq!(rt.tasks(), 0);
}

/// On Tokio with the real clock (`Budget::new`): 60 services start at once on a
/// budget of 100/s (burst 5), every attempt failing and retried after 50 ms. The
/// runtime's timers fire a little late; the attempts still keep to the budget
/// (a little slack for that lateness), and each retry uses its own slot.
#[cfg(feature = "tokio")]
#[test]
fn on_tokio_with_the_real_clock() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let log: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let start = std::time::Instant::now();
    rt.block_on(async {
        let budget = Budget::new(100.0, 5).unwrap();
        let services: Vec<_> = (0..60)
            .map(|_| {
                let log = Arc::clone(&log);
                redial::tokio::builder(move || {
                    log.lock().unwrap().push(start.elapsed());
                    async {
                        Err::<(Arc<()>, std::future::Pending<()>), _>(std::io::Error::other("down"))
                    }
                })
                .policy(|_| Duration::from_millis(50))
                .budget(budget.clone())
                .start()
                .unwrap()
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        drop(services);
    });
    let times = log.lock().unwrap().clone();
    let busiest = busiest_window(times.clone(), Duration::from_millis(200));
    println!(
        "tokio, real clock, 60 services on 100/s (burst 5): {} attempts in 1 s, at most {busiest} \
         in any 200 ms (budget: 5 + 20)",
        times.len()
    );
    // Slack for a loaded machine: a timer firing 100 ms late bunches 10 slots.
    assert!(busiest <= 5 + 20 + 10, "{busiest}");
    // At most 5 + 100 slots in [0, 1 s]; without the budget, 60 at once and
    // about 1,200 a second after.
    assert!(times.len() <= 106, "{}", times.len());
    assert!(times.len() >= 60, "{}", times.len());
}

/// A service dropped while it waits to retry gives its retry's slot back.
#[test]
fn a_service_that_ends_gives_its_retry_slot_back() {
    let rt = ManualRuntime::new();
    let budget = budget_on(&rt, 1.0, 1);
    let net = Net::new();
    net.push_connect(ConnectOutcome::Fail("down".into()));
    let log = Arc::default();
    let service = service(
        &rt,
        &net,
        &log,
        &budget,
        Wiring::Builder,
        Duration::from_secs(60),
    );
    rt.run_until_idle();
    assert_eq!(service.state(), State::Waiting);
    rt.advance(Duration::from_millis(1));
    assert_eq!(budget.outstanding(), 1, "the retry's slot, 60 s ahead");
    drop(service);
    rt.run_until_idle();
    assert_eq!(rt.tasks(), 0);
    assert_eq!(budget.outstanding(), 0);
    // The next slot is 1 s after the attempt at 0, not 1 s after the retry's.
    assert_eq!(budget.admit(), Duration::from_millis(999));
}
