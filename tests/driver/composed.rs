//! Features together: one property test, on the deterministic harness
//! (`redial::testing::{ManualRuntime, Net}`), of 2 to 4 services on one runtime
//! that share one reconnect [`Budget`] (on the harness's clock), each with its own
//! `Net`, a connector that chooses between two [`Endpoints`], an optional liveness
//! probe, a `fatal_if` classification, and a script (up to 40 steps) of random user
//! operations (start; stop, its future kept; `reconnect_now`; `when_connected`,
//! with or without a threshold, its future kept; a kept future dropped; a handle
//! cloned, one of several dropped, or every one dropped), virtual time, and world
//! events (an attempt succeeds, fails, fails fatally or panics; the connector
//! panics; a connection is lost; the peer answers probes, refuses them, stays
//! silent, or the probe panics).
//!
//! After every step the runtime is run until idle, every future the test holds is
//! polled once, the events are read, and the invariants are checked
//! ([`World::check`], [`World::step_once`]); at the end virtual time runs 30 s,
//! every service is stopped and every future driven ([`World::finish`]).
//!
//! The invariants, as checked:
//!
//! * (a) **The budget** (`src/core/budget.rs`, "The rule" and "What it covers":
//!   with the driver every attempt that leaves the process counts). The attempts
//!   that left, across all services, are the calls of the user's connector, with
//!   the harness time of each call. With `T = 1 / rate` and `τ = (burst − 1)·T`,
//!   sorted by time, for every `i < j`: `t_j − t_i ≥ (j − i)·T − τ`, over every
//!   attempt except one made by a `start()`; over every attempt, with `τ + L`
//!   for `τ`, `L = max(T, 100 ms)`. The exception is the documented one: the rule
//!   binds the budget's slots, and an attempt started again after a stop may use
//!   the slot of the retry it waited for when stopped up to `L` after that slot
//!   ("an attempt that starts much later than its retry's slot (more than one
//!   interval and at least 100 ms [...]) does not use that old slot"). Every
//!   other attempt leaves at its slot on the harness (its timers fire on time).
//! * (b) **A stop cancels without counting**: in a step that is a service's own
//!   `stop()`, or the drop of its last handle (nothing else happens in that step),
//!   that service emits no `AttemptFailed`, no `RetryScheduled` and no `GaveUp`,
//!   its retry policy is not called, its `consecutive_failures()` does not change,
//!   and none of its waiters is answered `Failed` or `GaveUp`; the attempt that was
//!   in flight (its connector called, not resolved) is cancelled in the `Net` and
//!   never reported failed afterwards. Endpoint rotation: the first attempt goes
//!   to the primary; an attempt reported failed moves the next attempt to the next
//!   endpoint; a connection made in between, or a give-up, sends it to the
//!   primary (the rounds of `builder_with_endpoints`); an attempt cancelled by a
//!   stop moves nothing ([`ROTATION_COUNTS_CANCELLED`]). Checked for attempts in a
//!   row (ids n and n + 1) that both reached the connector. A waiter with a
//!   threshold `n` is answered `Failed` only once at least `n` `AttemptFailed`
//!   events of its service came after it was made.
//! * (c) **Every waiter is answered**: at the end each service is stopped; every
//!   `when_connected` and `stop` future still held then resolves when driven with
//!   virtual time.
//! * (d) **A finished stop leaves nothing open**: when a `stop()` future is seen
//!   resolved and no `start()` of that service was requested since the stop, the
//!   service's `Net` has no open connection and no pending attempt. Likewise after
//!   a service has ended (every handle dropped), and then none of its waiters is
//!   pending.
//! * (e) **Waiters are counted**: after every step, each service's
//!   `pending_waiters()` is the number of its `when_connected` futures the test
//!   holds, neither answered nor dropped.
//! * (f) **The mailbox stays bounded**: after every step the runtime goes idle
//!   (the task has taken every request and nothing wakes it again: no livelock)
//!   with no task runnable, and each live service's `queued_requests()` (the
//!   `testing` kit's view of its mailbox) is 0. Also: no panic escapes a service task, no event is missed (the
//!   event ring is large enough for a case), and once every handle is dropped no
//!   task and no timer is left.
//!
//! Cases: `REDIAL_COMPOSED_CASES`, else 2 000.

use std::fmt;
use std::fmt::Write as _;
use std::future::Future;
use std::num::NonZeroU32;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use redial::driver::{ClientService, ConnectContext, Endpoints, Error, Event, Events, Loss};
use redial::testing::{poll_once, ConnectOutcome, ManualRuntime, Net, NetError, NetHandle};
use redial::{AttemptId, Budget};

use crate::support::{panic_message, quiet_panics_containing};

type Service = ClientService<NetHandle, NetError>;
type Answer = Result<NetHandle, Error<NetError>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;
type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), NetError>> + Send>>;

/// A connect error whose message holds this is fatal (`Builder::fatal_if`).
const FATAL: &str = "fatal";
/// Whether an attempt cancelled by a stop moves the rotation on. It did with
/// `Endpoints::pick` (which saw only `ConnectContext::connections`; the shrunk case
/// is `an_attempt_cancelled_by_a_stop_stays_on_its_endpoint`); with
/// `builder_with_endpoints` it never does, and the rotation check covers the
/// attempt right after a cancelled one too.
const ROTATION_COUNTS_CANCELLED: bool = false;
/// How long after its retry's slot an attempt may still use it (`src/core/budget.rs`,
/// "What it covers": "an attempt that starts much later than its retry's slot (more
/// than one interval and at least 100 ms: the service was stopped and started
/// again) does not use that old slot"; so one started sooner does): the slack is
/// `max(T, LATE)`. On the harness timers fire on time, so only an attempt made by a
/// `start()` leaves after its slot.
const LATE: Duration = Duration::from_millis(100);
/// How far virtual time runs at the end, with no one acting, before the stops.
const TIME_RUNS_OUT: Duration = Duration::from_secs(30);

// ----- the endpoints: the one place the test uses their API --------------------------

/// Two endpoints, named 0 (the primary) and 1.
fn endpoints() -> Endpoints<usize> {
    Endpoints::new([0usize, 1]).expect("two endpoints")
}

// ----- the script ------------------------------------------------------------------

/// What the peer does when probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Answer = 0,
    Refuse = 1,
    Silent = 2,
    /// The probe future panics.
    Panics = 3,
}

/// One step. A `usize` names a service (modulo their number) or a held future or
/// handle (modulo their number); a step that finds nothing to act on does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Start(usize),
    /// `stop()`; the future is kept.
    Stop(usize),
    ReconnectNow(usize, bool),
    /// `when_connected()` or `when_connected_fail_after(n)`; the future is kept.
    WhenConnected(usize, Option<u8>),
    /// Drops the `i`-th `when_connected` future still held.
    DropWaiter(usize),
    /// Drops the `i`-th `stop` future still held.
    DropStop(usize),
    CloneHandle(usize),
    /// Drops one of the service's handles, if it has more than one.
    DropHandle(usize, usize),
    /// Drops every handle of the service: it ends.
    DropAllHandles(usize),
    /// Moves virtual time on by this many milliseconds.
    Advance(u32),
    /// The service's attempt in flight connects.
    Succeed(usize),
    /// ... fails (not fatally).
    Fail(usize),
    /// ... fails with a fatal error.
    FailFatally(usize),
    /// ... panics.
    Panic(usize),
    /// The service's connector panics when called for its next attempt.
    ConnectorPanics(usize),
    /// The service's open connection is lost.
    Lose(usize),
    /// What the service's peer does with probes from now on.
    Probe(usize, Probe),
}

#[derive(Clone)]
struct Script(Vec<Step>);

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, step) in self.0.iter().enumerate() {
            write!(f, "\n    {:>2}. {step:?}", i + 1)?;
        }
        f.write_str("\n]")
    }
}

/// One service's configuration.
#[derive(Debug, Clone)]
struct SvcSetup {
    /// `build()` only: the script must start it.
    build_only: bool,
    /// `(interval, timeout)` in ms.
    probe_ms: Option<(u64, u64)>,
    connect_timeout_ms: Option<u64>,
    /// The delay after `n` failures is `delays_ms[(n - 1) % len]`.
    delays_ms: Vec<u64>,
}

#[derive(Debug, Clone)]
struct Setup {
    rate: f64,
    burst: u32,
    services: Vec<SvcSetup>,
}

fn svc_setup() -> impl Strategy<Value = SvcSetup> {
    use proptest::option::weighted;
    use proptest::sample::select;
    (
        proptest::bool::weighted(0.3),
        weighted(0.5, (select(vec![200u64, 1000]), select(vec![100u64, 500]))),
        weighted(0.4, select(vec![100u64, 1000])),
        proptest::collection::vec(select(vec![0u64, 50, 300, 2000]), 1..3),
    )
        .prop_map(
            |(build_only, probe_ms, connect_timeout_ms, delays_ms)| SvcSetup {
                build_only,
                probe_ms,
                connect_timeout_ms,
                delays_ms,
            },
        )
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        proptest::sample::select(vec![2.0f64, 5.0, 20.0]),
        1u32..=3,
        proptest::collection::vec(svc_setup(), 2..=4),
    )
        .prop_map(|(rate, burst, services)| Setup {
            rate,
            burst,
            services,
        })
}

fn step() -> impl Strategy<Value = Step> {
    let s = 0usize..4;
    prop_oneof![
        12 => s.clone().prop_map(Step::Start),
        8 => s.clone().prop_map(Step::Stop),
        6 => (s.clone(), any::<bool>()).prop_map(|(s, r)| Step::ReconnectNow(s, r)),
        12 => (s.clone(), proptest::option::weighted(0.4, 1u8..=3))
            .prop_map(|(s, n)| Step::WhenConnected(s, n)),
        4 => (0usize..6).prop_map(Step::DropWaiter),
        2 => (0usize..4).prop_map(Step::DropStop),
        3 => s.clone().prop_map(Step::CloneHandle),
        3 => (s.clone(), 0usize..3).prop_map(|(s, i)| Step::DropHandle(s, i)),
        1 => s.clone().prop_map(Step::DropAllHandles),
        20 => prop_oneof![0u32..=20, 50u32..=600, 600u32..=4000].prop_map(Step::Advance),
        12 => s.clone().prop_map(Step::Succeed),
        10 => s.clone().prop_map(Step::Fail),
        4 => s.clone().prop_map(Step::FailFatally),
        2 => s.clone().prop_map(Step::Panic),
        1 => s.clone().prop_map(Step::ConnectorPanics),
        5 => s.clone().prop_map(Step::Lose),
        6 => (
            s,
            prop_oneof![
                Just(Probe::Answer),
                Just(Probe::Refuse),
                Just(Probe::Silent),
                Just(Probe::Panics)
            ]
        )
            .prop_map(|(s, p)| Step::Probe(s, p)),
    ]
}

// ----- the world -------------------------------------------------------------------

/// One call of a connector: an attempt that left the process.
#[derive(Debug, Clone, Copy)]
struct Left {
    at: Duration,
    svc: usize,
    attempt: AttemptId,
    endpoint: usize,
    connections: u64,
    /// Made by a `start()` of a stopped service: it may use the slot of the retry
    /// it was waiting for when stopped, up to [`LATE`] after that slot.
    restart: bool,
}

struct Svc {
    net: Net,
    handles: Vec<Service>,
    events: Events<NetError>,
    probe: Arc<AtomicU8>,
    /// Calls of the service's retry policy.
    policy_calls: Arc<AtomicUsize>,
    /// `AttemptFailed` events seen.
    failed: u32,
    failed_ids: Vec<AttemptId>,
    /// Failed attempts the service gave up on (`GaveUp` right after them).
    gave_up_on: Vec<AttemptId>,
    /// Attempts in flight (connector called, unresolved) when a stop of this
    /// service cancelled them.
    cancelled: Vec<AttemptId>,
    /// `AttemptFailed`, `RetryScheduled` or `GaveUp` seen in the current step.
    failed_in_step: bool,
}

struct Waiter {
    svc: usize,
    future: Option<BoxFuture<Answer>>,
    fail_after: Option<u32>,
    /// The service's `AttemptFailed` count when it was made.
    failed_before: u32,
}

struct Stop {
    svc: usize,
    future: Option<BoxFuture<()>>,
    /// A `start()` of the service was requested since.
    started_since: bool,
}

struct World {
    rt: ManualRuntime,
    interval: Duration,
    burst: u32,
    svcs: Vec<Svc>,
    left: Arc<Mutex<Vec<Left>>>,
    waiters: Vec<Waiter>,
    stops: Vec<Stop>,
    /// Answers `Failed`/`GaveUp` in the current step, per service.
    bad_answers_in_step: Vec<usize>,
    /// Check the endpoint of the attempt after one cancelled by a stop.
    check_rotation_after_cancel: bool,
    log: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn probe_by(mode: &Arc<AtomicU8>) -> impl FnMut(NetHandle) -> ProbeFuture + Send + 'static {
    let mode = mode.clone();
    move |_conn: NetHandle| -> ProbeFuture {
        match mode.load(Ordering::SeqCst) {
            0 => Box::pin(async { Ok(()) }),
            1 => Box::pin(async { Err(NetError::new("no pong")) }),
            3 => Box::pin(async { panic!("the probe panics (scripted)") }),
            _ => Box::pin(std::future::pending()),
        }
    }
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

impl World {
    fn new(setup: &Setup) -> World {
        let rt = ManualRuntime::new();
        let clock = rt.clone();
        let budget = Budget::with_clock(setup.rate, setup.burst, move || clock.now())
            .expect("a valid budget");
        let left = Arc::new(Mutex::new(Vec::new()));
        let mut svcs = Vec::new();
        for (svc, cfg) in setup.services.iter().enumerate() {
            let net = Net::new();
            let mut connect = net.connector();
            let eps = endpoints();
            let clock = rt.clone();
            let log = left.clone();
            let delays: Vec<Duration> = cfg
                .delays_ms
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect();
            let probe = Arc::new(AtomicU8::new(Probe::Answer as u8));
            let policy_calls = Arc::new(AtomicUsize::new(0));
            let builder = ClientService::builder_with_endpoints(
                rt.clone(),
                eps,
                move |endpoint: usize, ctx: ConnectContext| {
                    lock(&log).push(Left {
                        at: clock.now(),
                        svc,
                        attempt: ctx.attempt,
                        endpoint,
                        connections: ctx.connections,
                        restart: false,
                    });
                    connect()
                },
            )
            .policy({
                let calls = policy_calls.clone();
                move |n: u32| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    delays[(n.max(1) as usize - 1) % delays.len()]
                }
            })
            .budget(budget.clone())
            .fatal_if(|e: &NetError| e.message().contains(FATAL))
            .connect_timeout(cfg.connect_timeout_ms.map(Duration::from_millis))
            .events_capacity(4096);
            let builder = match cfg.probe_ms {
                Some((interval, timeout)) => builder.probe(
                    Duration::from_millis(interval),
                    Duration::from_millis(timeout),
                    probe_by(&probe),
                ),
                None => builder,
            };
            let service = if cfg.build_only {
                builder.build()
            } else {
                builder.start()
            }
            .expect("a valid service");
            let events = service.events();
            svcs.push(Svc {
                net,
                handles: vec![service],
                events,
                probe,
                policy_calls,
                failed: 0,
                failed_ids: Vec::new(),
                gave_up_on: Vec::new(),
                cancelled: Vec::new(),
                failed_in_step: false,
            });
        }
        World {
            rt,
            interval: budget.interval(),
            burst: budget.burst(),
            bad_answers_in_step: Vec::new(),
            check_rotation_after_cancel: !ROTATION_COUNTS_CANCELLED,
            svcs,
            left,
            waiters: Vec::new(),
            stops: Vec::new(),
            log: String::new(),
        }
    }

    fn note(&mut self, line: impl AsRef<str>) {
        self.log.push_str(line.as_ref());
        self.log.push('\n');
    }

    fn summary(&self) -> String {
        let mut s = format!("t={:?}", self.rt.now());
        for (i, svc) in self.svcs.iter().enumerate() {
            let Some(h) = svc.handles.first() else {
                let _ = write!(
                    s,
                    " | s{i}: ended, pend={:?} open={:?}",
                    svc.net.pending_attempts(),
                    svc.net.open()
                );
                continue;
            };
            let _ = write!(
                s,
                " | s{i}: {:?} cf={} att={} pend={:?} open={:?} waiters={}",
                h.state(),
                h.consecutive_failures(),
                svc.net.attempts(),
                svc.net.pending_attempts(),
                svc.net.open(),
                h.pending_waiters()
            );
        }
        s
    }

    fn settle(&mut self) -> Result<(), String> {
        self.rt
            .try_run_until_idle()
            .map_err(|livelock| format!("the runtime never became idle: {livelock}"))?;
        ensure!(
            self.rt.runnable() == 0,
            "idle with {} tasks runnable",
            self.rt.runnable()
        );
        let panics = self.rt.panics();
        ensure!(panics.is_empty(), "a panic escaped a task: {panics:?}");
        Ok(())
    }

    /// Does one step; returns what it did.
    fn apply(&mut self, step: Step) -> String {
        let n = self.svcs.len();
        let user = match step {
            Step::Start(s)
            | Step::Stop(s)
            | Step::ReconnectNow(s, _)
            | Step::WhenConnected(s, _)
            | Step::CloneHandle(s)
            | Step::DropHandle(s, _)
            | Step::DropAllHandles(s) => Some(s % n),
            _ => None,
        };
        if let Some(s) = user {
            if self.svcs[s].handles.is_empty() {
                return format!("s{s} has ended: no handle");
            }
        }
        match step {
            Step::Start(s) => {
                let s = s % n;
                self.svcs[s].handles[0].start();
                for stop in &mut self.stops {
                    if stop.svc == s {
                        stop.started_since = true;
                    }
                }
                format!("s{s} start")
            }
            Step::Stop(s) => {
                let s = s % n;
                let pending = self.cancel_in_flight(s);
                let svc = &mut self.svcs[s];
                let future = svc.handles[0].stop();
                self.stops.push(Stop {
                    svc: s,
                    future: Some(Box::pin(future)),
                    started_since: false,
                });
                format!("s{s} stop (in flight: {pending:?})")
            }
            Step::ReconnectNow(s, reset) => {
                let s = s % n;
                let did = self.svcs[s].handles[0].reconnect_now(reset);
                if did {
                    count(&STATS.reconnects_now);
                }
                format!("s{s} reconnect_now({reset}) -> {did}")
            }
            Step::WhenConnected(s, fail_after) => {
                let s = s % n;
                let svc = &self.svcs[s];
                let h = &svc.handles[svc.handles.len() - 1];
                let future = match fail_after.and_then(|n| NonZeroU32::new(n.into())) {
                    Some(n) => h.when_connected_fail_after(n),
                    None => h.when_connected(),
                };
                self.waiters.push(Waiter {
                    svc: s,
                    future: Some(Box::pin(future)),
                    fail_after: fail_after.map(u32::from),
                    failed_before: svc.failed,
                });
                format!("s{s} when_connected -> w{}", self.waiters.len() - 1)
            }
            Step::DropWaiter(i) => {
                let held: Vec<usize> = (0..self.waiters.len())
                    .filter(|&w| self.waiters[w].future.is_some())
                    .collect();
                if held.is_empty() {
                    return "no waiter held".into();
                }
                let w = held[i % held.len()];
                self.waiters[w].future = None;
                format!("drop w{w}")
            }
            Step::DropStop(i) => {
                let held: Vec<usize> = (0..self.stops.len())
                    .filter(|&w| self.stops[w].future.is_some())
                    .collect();
                if held.is_empty() {
                    return "no stop held".into();
                }
                let w = held[i % held.len()];
                self.stops[w].future = None;
                format!("drop stop {w}")
            }
            Step::CloneHandle(s) => {
                let s = s % n;
                let h = self.svcs[s].handles[0].clone();
                self.svcs[s].handles.push(h);
                format!("s{s} clone handle")
            }
            Step::DropHandle(s, i) => {
                let s = s % n;
                let handles = &mut self.svcs[s].handles;
                if handles.len() < 2 {
                    return format!("s{s} has one handle");
                }
                let i = i % handles.len();
                drop(handles.remove(i));
                format!("s{s} drop handle {i}")
            }
            Step::DropAllHandles(s) => {
                let s = s % n;
                self.cancel_in_flight(s);
                self.svcs[s].handles.clear();
                format!("s{s}: every handle dropped (the service ends)")
            }
            Step::Advance(ms) => {
                self.rt.advance(Duration::from_millis(ms.into()));
                format!("advance {ms} ms")
            }
            Step::Succeed(s) | Step::Fail(s) | Step::FailFatally(s) | Step::Panic(s) => {
                let s = s % n;
                let net = &self.svcs[s].net;
                let Some(&a) = net.pending_attempts().first() else {
                    return format!("s{s}: no attempt in flight");
                };
                match step {
                    Step::Succeed(_) => net.succeed(a),
                    Step::Fail(_) => net.fail(a, "refused"),
                    Step::FailFatally(_) => net.fail(a, format!("{FATAL}: wrong password")),
                    _ => net.panic(a),
                };
                format!("s{s} attempt {a}: {step:?}")
            }
            Step::ConnectorPanics(s) => {
                let s = s % n;
                self.svcs[s]
                    .net
                    .push_connect(ConnectOutcome::PanicInConnector);
                format!("s{s}: the connector panics next")
            }
            Step::Lose(s) => {
                let s = s % n;
                let net = &self.svcs[s].net;
                match net.open().first() {
                    Some(&c) => {
                        net.lose(c);
                        format!("s{s} loses connection {c}")
                    }
                    None => format!("s{s}: nothing open"),
                }
            }
            Step::Probe(s, mode) => {
                let s = s % n;
                self.svcs[s].probe.store(mode as u8, Ordering::SeqCst);
                format!("s{s} probes: {mode:?}")
            }
        }
    }

    /// Notes the attempt in flight of service `s` (its connector called, not
    /// resolved) as cancelled by what the caller is about to do; returns it.
    fn cancel_in_flight(&mut self, s: usize) -> Vec<usize> {
        let svc = &mut self.svcs[s];
        let pending = svc.net.pending_attempts();
        if let Some(&a) = pending.first() {
            let log = lock(&self.left);
            let id = log
                .iter()
                .filter(|l| l.svc == s)
                .nth(a)
                .map(|l| l.attempt)
                .expect("every attempt was logged");
            svc.cancelled.push(id);
        }
        pending
    }

    /// Reads the events, polls every held future once.
    fn observe(&mut self) -> Result<(), String> {
        for (s, svc) in self.svcs.iter_mut().enumerate() {
            loop {
                match poll_once(&mut svc.events.next()) {
                    Poll::Pending | Poll::Ready(None) => break,
                    Poll::Ready(Some(Event::Missed { events })) => {
                        return Err(format!("s{s} missed {events} events"));
                    }
                    Poll::Ready(Some(Event::AttemptFailed { attempt, .. })) => {
                        ensure!(
                            !svc.cancelled.contains(&attempt),
                            "s{s}: attempt {attempt:?}, cancelled by a stop, reported failed"
                        );
                        count(&STATS.failed);
                        svc.failed += 1;
                        svc.failed_ids.push(attempt);
                        svc.failed_in_step = true;
                    }
                    Poll::Ready(Some(Event::GaveUp { fatal, last, .. })) => {
                        if fatal {
                            count(&STATS.fatal_give_ups);
                        }
                        if let (Some(_), Some(attempt)) = (last, svc.failed_ids.last()) {
                            svc.gave_up_on.push(*attempt);
                        }
                        svc.failed_in_step = true;
                    }
                    Poll::Ready(Some(Event::RetryScheduled { .. })) => svc.failed_in_step = true,
                    Poll::Ready(Some(Event::Lost {
                        reason: Loss::ProbeFailed(_) | Loss::ProbeTimedOut,
                        ..
                    })) => count(&STATS.probe_losses),
                    Poll::Ready(Some(_)) => {}
                }
            }
        }
        for w in 0..self.waiters.len() {
            let Some(mut future) = self.waiters[w].future.take() else {
                continue;
            };
            let Poll::Ready(answer) = poll_once(&mut future) else {
                self.waiters[w].future = Some(future);
                continue;
            };
            self.judge(w, &answer)?;
        }
        for n in 0..self.stops.len() {
            let Some(mut future) = self.stops[n].future.take() else {
                continue;
            };
            if poll_once(&mut future).is_pending() {
                self.stops[n].future = Some(future);
                continue;
            }
            self.judge_stop(n)?;
        }
        Ok(())
    }

    /// A waiter's answer: `Failed` only past its threshold.
    fn judge(&mut self, w: usize, answer: &Answer) -> Result<(), String> {
        let waiter = &self.waiters[w];
        let svc = &self.svcs[waiter.svc];
        let since = svc.failed - waiter.failed_before;
        self.log.push_str(&format!(
            "    w{w} (s{}) answered {}\n",
            waiter.svc,
            match answer {
                Ok(_) => "Ok".to_owned(),
                Err(e) => format!("{e}"),
            }
        ));
        count(match answer {
            Ok(_) => &STATS.answered_ok,
            Err(Error::Failed(_)) => &STATS.answered_failed,
            Err(Error::Stopped) => &STATS.answered_stopped,
            Err(_) => &STATS.answered_other,
        });
        match answer {
            Err(Error::Failed(_)) => {
                ensure!(
                    waiter.fail_after.is_some_and(|n| since >= n),
                    "w{w} answered Failed after {since} failed attempts, threshold {:?}",
                    waiter.fail_after
                );
                self.bad_answers_in_step.push(waiter.svc);
            }
            Err(Error::GaveUp { .. }) => self.bad_answers_in_step.push(waiter.svc),
            _ => {}
        }
        Ok(())
    }

    /// (d): a finished stop leaves nothing open.
    fn judge_stop(&mut self, n: usize) -> Result<(), String> {
        let stop = &self.stops[n];
        let net = &self.svcs[stop.svc].net;
        self.log
            .push_str(&format!("    stop {n} (s{}) resolved\n", stop.svc));
        if !stop.started_since {
            ensure!(
                net.open().is_empty() && net.pending_attempts().is_empty(),
                "stop {n} of s{} resolved, but open {:?}, in flight {:?}",
                stop.svc,
                net.open(),
                net.pending_attempts()
            );
        }
        Ok(())
    }

    fn check(&self) -> Result<(), String> {
        let left = lock(&self.left).clone();
        // (a) the budget's rule, in time order: exactly over the attempts that left
        // at their slot, and with the documented slack over every attempt.
        let t = self.interval.as_nanos() as i128;
        let tau = t * (i128::from(self.burst) - 1);
        let late = t.max(LATE.as_nanos() as i128);
        let on_time: Vec<Left> = left.iter().copied().filter(|l| !l.restart).collect();
        keeps_the_rule(&on_time, t, tau).map_err(|e| format!("budget (exact): {e}"))?;
        keeps_the_rule(&left, t, tau + late).map_err(|e| format!("budget (with slack): {e}"))?;
        for (s, svc) in self.svcs.iter().enumerate() {
            // Rotation: the endpoint of each attempt from the one before it.
            let mine: Vec<&Left> = left.iter().filter(|l| l.svc == s).collect();
            // (The service's very first attempt; one that timed out while it waited
            // for the budget never reached the connector, and moved the rotation.)
            if let Some(first) = mine.first().filter(|f| f.attempt.raw() == 0) {
                ensure!(
                    first.endpoint == 0,
                    "s{s}: first attempt to endpoint {}",
                    first.endpoint
                );
            }
            for pair in mine.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                // Only for attempts in a row: one in between that never reached the
                // connector (cancelled, or timed out, while it waited for the budget)
                // moved the rotation or not, unseen here.
                let in_a_row = b.attempt.raw() == a.attempt.raw() + 1;
                let want = if !in_a_row {
                    None
                } else if b.connections != a.connections || svc.gave_up_on.contains(&a.attempt) {
                    // A connection in between, or a give-up after `a`: a new round
                    // at the primary.
                    Some(0)
                } else if svc.failed_ids.contains(&a.attempt) {
                    Some((a.endpoint + 1) % 2)
                } else if svc.cancelled.contains(&a.attempt) {
                    // Cancelled by a stop: it counts nowhere, the next one goes to
                    // the same endpoint (see `ROTATION_COUNTS_CANCELLED`).
                    self.check_rotation_after_cancel.then_some(a.endpoint)
                } else {
                    None
                };
                if let Some(want) = want {
                    ensure!(
                        b.endpoint == want,
                        "s{s}: attempt {:?} went to endpoint {}, want {want} (after {:?} to {})",
                        b.attempt,
                        b.endpoint,
                        a.attempt,
                        a.endpoint
                    );
                }
            }
            // (e) waiters counted.
            let held = self
                .waiters
                .iter()
                .filter(|w| w.svc == s && w.future.is_some())
                .count();
            let Some(h) = svc.handles.first() else {
                // Ended: nothing of it is open, every waiter was answered.
                ensure!(
                    svc.net.open().is_empty() && svc.net.pending_attempts().is_empty(),
                    "s{s} ended, but open {:?}, in flight {:?}",
                    svc.net.open(),
                    svc.net.pending_attempts()
                );
                ensure!(held == 0, "s{s} ended, but {held} waiters pending");
                continue;
            };
            let pending = h.pending_waiters();
            ensure!(
                pending == held,
                "s{s}: pending_waiters() is {pending}, the test holds {held}"
            );
            // (f) The mailbox stays bounded: checked with the runtime idle, when the
            // task has taken every request the step made.
            let queued = h.queued_requests();
            ensure!(
                queued == 0,
                "s{s}: {queued} requests still queued with the runtime idle"
            );
        }
        Ok(())
    }

    fn run(&mut self, steps: &[Step]) -> Result<(), String> {
        self.settle()?;
        self.observe()?;
        self.note(format!(" 0. built: {}", self.summary()));
        self.check()?;
        for (i, &step) in steps.iter().enumerate() {
            self.step_once(&format!("{:>2}.", i + 1), step)?;
        }
        self.finish()
    }

    /// One step, run until idle, observed and checked.
    fn step_once(&mut self, label: &str, step: Step) -> Result<(), String> {
        self.bad_answers_in_step.clear();
        for svc in &mut self.svcs {
            svc.failed_in_step = false;
        }
        let before: Vec<Option<u32>> = self
            .svcs
            .iter()
            .map(|s| s.handles.first().map(Service::consecutive_failures))
            .collect();
        let calls_before: Vec<usize> = self
            .svcs
            .iter()
            .map(|s| s.policy_calls.load(Ordering::SeqCst))
            .collect();
        let left_before = lock(&self.left).len();
        let cancelled_before: Vec<usize> = self.svcs.iter().map(|s| s.cancelled.len()).collect();
        let what = self.apply(step);
        self.note(format!("{label} {step:?}: {what}"));
        self.settle()?;
        if let Step::Start(s) = step {
            let s = s % self.svcs.len();
            for l in lock(&self.left).iter_mut().skip(left_before) {
                l.restart |= l.svc == s;
            }
        }
        self.observe()?;
        self.note(format!("    -> {}", self.summary()));
        // (b) a stop (or the service's end) counts nowhere.
        if let Step::Stop(s) | Step::DropAllHandles(s) = step {
            let s = s % self.svcs.len();
            let svc = &self.svcs[s];
            ensure!(
                !svc.failed_in_step,
                "s{s}: an attempt failed, a retry was scheduled or the service gave up \
                 in a stop step"
            );
            let calls = svc.policy_calls.load(Ordering::SeqCst);
            ensure!(
                calls == calls_before[s],
                "s{s}: the retry policy was asked {} times in a stop step",
                calls - calls_before[s]
            );
            let after = svc.handles.first().map(Service::consecutive_failures);
            ensure!(
                after.is_none() || after == before[s],
                "s{s}: consecutive_failures went from {:?} to {after:?} in a stop step",
                before[s]
            );
            ensure!(
                !self.bad_answers_in_step.contains(&s),
                "s{s}: a waiter was answered Failed or GaveUp in a stop step"
            );
            for &id in &svc.cancelled[cancelled_before[s]..] {
                STATS.cancelled.fetch_add(1, Ordering::Relaxed);
                let left = lock(&self.left);
                let a = left
                    .iter()
                    .filter(|l| l.svc == s)
                    .position(|l| l.attempt == id)
                    .expect("logged");
                ensure!(
                    svc.net.cancelled_attempts().contains(&a),
                    "s{s}: attempt {a} was in flight at the stop, but is {:?}",
                    svc.net.attempt(a)
                );
            }
        }
        self.check()
    }

    /// (c): once every service is stopped, every future resolves.
    fn finish(&mut self) -> Result<(), String> {
        self.note(format!("-- no one acts for {TIME_RUNS_OUT:?} --"));
        self.rt.advance(TIME_RUNS_OUT);
        self.settle()?;
        self.observe()?;
        self.check()?;
        for s in 0..self.svcs.len() {
            self.step_once("-- finish:", Step::Stop(s))?;
        }
        for w in 0..self.waiters.len() {
            if let Some(future) = self.waiters[w].future.take() {
                let Some(answer) = self.rt.run(future) else {
                    return Err(format!("waiter w{w} stays pending for ever"));
                };
                self.judge(w, &answer)?;
            }
        }
        for n in 0..self.stops.len() {
            if let Some(future) = self.stops[n].future.take() {
                ensure!(
                    self.rt.run(future).is_some(),
                    "stop {n} stays pending for ever"
                );
                self.judge_stop(n)?;
            }
        }
        self.settle()?;
        self.observe()?;
        self.check()?;
        for svc in &mut self.svcs {
            svc.handles.clear();
        }
        self.settle()?;
        ensure!(
            self.rt.tasks() == 0 && self.rt.timers() == 0,
            "every handle dropped, but {} tasks and {} timers left",
            self.rt.tasks(),
            self.rt.timers()
        );
        Ok(())
    }
}

/// For the attempts sorted by time: `t_j − t_i ≥ (j − i)·T − tau` for every `i < j`.
fn keeps_the_rule(left: &[Left], t: i128, tau: i128) -> Result<(), String> {
    for i in 0..left.len() {
        for j in i + 1..left.len() {
            let gap = left[j].at.as_nanos() as i128 - left[i].at.as_nanos() as i128;
            let want = (j - i) as i128 * t - tau;
            ensure!(
                gap >= 0 && gap >= want,
                "attempts {i} ({:?}, s{}) and {j} ({:?}, s{}) are {gap} ns apart, \
                 the rule wants at least {want} ns; every attempt: {:?}",
                left[i].at,
                left[i].svc,
                left[j].at,
                left[j].svc,
                left.iter().map(|l| (l.at, l.svc)).collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}

/// Runs one case (`strict`: also the rotation check the known bug fails).
fn run_case(setup: &Setup, steps: &[Step], strict: bool) -> Result<(), String> {
    let mut world = World::new(setup);
    world.check_rotation_after_cancel |= strict;
    let result = catch_unwind(AssertUnwindSafe(|| world.run(steps)));
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(violation)) => Some(violation),
        Err(payload) => Some(format!("panicked: {}", panic_message(&*payload))),
    };
    world.rt.shutdown();
    for l in lock(&world.left).iter() {
        count(&STATS.attempts);
        if l.restart {
            count(&STATS.restarts);
        }
    }
    match error {
        None => Ok(()),
        Some(error) => Err(format!(
            "VIOLATION: {error}\n--- what happened ---\n{}",
            world.log
        )),
    }
}

/// Scripted panics are expected: keep them off stderr.
fn quiet_scripted_panics() {
    quiet_panics_containing("(scripted)");
}

fn cases() -> u32 {
    std::env::var("REDIAL_COMPOSED_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// What the cases did, summed (printed, to show the features were exercised).
struct Stats {
    runs: AtomicUsize,
    attempts: AtomicUsize,
    restarts: AtomicUsize,
    cancelled: AtomicUsize,
    failed: AtomicUsize,
    fatal_give_ups: AtomicUsize,
    probe_losses: AtomicUsize,
    reconnects_now: AtomicUsize,
    answered_ok: AtomicUsize,
    answered_failed: AtomicUsize,
    answered_stopped: AtomicUsize,
    answered_other: AtomicUsize,
}

static STATS: Stats = Stats {
    runs: AtomicUsize::new(0),
    attempts: AtomicUsize::new(0),
    restarts: AtomicUsize::new(0),
    cancelled: AtomicUsize::new(0),
    failed: AtomicUsize::new(0),
    fatal_give_ups: AtomicUsize::new(0),
    probe_losses: AtomicUsize::new(0),
    reconnects_now: AtomicUsize::new(0),
    answered_ok: AtomicUsize::new(0),
    answered_failed: AtomicUsize::new(0),
    answered_stopped: AtomicUsize::new(0),
    answered_other: AtomicUsize::new(0),
};

fn count(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn features_together_keep_their_promises() {
    quiet_scripted_panics();
    let config = ProptestConfig {
        cases: cases(),
        max_shrink_iters: 20_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let began = Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (
        setup(),
        proptest::collection::vec(step(), 0..=40).prop_map(Script),
    );
    let result = runner.run(&strategy, |(setup, script)| {
        count(&STATS.runs);
        run_case(&setup, &script.0, false).map_err(TestCaseError::fail)
    });
    let n = |c: &AtomicUsize| c.load(Ordering::Relaxed);
    println!(
        "composed: {} cases ({} runs) in {:.1?}: {} attempts left ({} made by a start), \
         {} cancelled by a stop or an end, {} failed, {} fatal give-ups, {} probe losses, \
         {} reconnect_now taken; waiters answered: {} Ok, {} Failed, {} Stopped, {} other",
        cases(),
        n(&STATS.runs),
        began.elapsed(),
        n(&STATS.attempts),
        n(&STATS.restarts),
        n(&STATS.cancelled),
        n(&STATS.failed),
        n(&STATS.fatal_give_ups),
        n(&STATS.probe_losses),
        n(&STATS.reconnects_now),
        n(&STATS.answered_ok),
        n(&STATS.answered_failed),
        n(&STATS.answered_stopped),
        n(&STATS.answered_other),
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The case the property test shrank with `Endpoints::pick`: an attempt
/// to the primary cancelled by a stop; after the start, the next attempt went to
/// the replica, as if the cancelled one had failed. It stays on the primary now.
#[test]
fn an_attempt_cancelled_by_a_stop_stays_on_its_endpoint() {
    quiet_scripted_panics();
    let svc = SvcSetup {
        build_only: false,
        probe_ms: None,
        connect_timeout_ms: None,
        delays_ms: vec![0],
    };
    let setup = Setup {
        rate: 2.0,
        burst: 1,
        services: vec![svc.clone(), svc],
    };
    let steps = [Step::Advance(600), Step::Stop(1), Step::Start(1)];
    if let Err(report) = run_case(&setup, &steps, true) {
        panic!("{report}");
    }
}

/// A readable script with every kind of step, on the checks the property test uses.
#[test]
fn a_hand_written_script_passes() {
    quiet_scripted_panics();
    let svc = |probe_ms, connect_timeout_ms| SvcSetup {
        build_only: false,
        probe_ms,
        connect_timeout_ms,
        delays_ms: vec![50, 300],
    };
    let setup = Setup {
        rate: 5.0,
        burst: 2,
        services: vec![
            svc(Some((200, 100)), None),
            svc(None, Some(1000)),
            svc(None, None),
        ],
    };
    let steps = [
        Step::WhenConnected(0, None),
        Step::WhenConnected(1, Some(2)),
        Step::Fail(0),
        Step::Advance(50),
        Step::Succeed(0),
        Step::Probe(0, Probe::Silent),
        Step::Advance(400),
        Step::FailFatally(1),
        Step::Start(1),
        Step::CloneHandle(2),
        Step::Stop(2),
        Step::DropHandle(2, 0),
        Step::Start(2),
        Step::ReconnectNow(0, true),
        Step::Fail(2),
        Step::ReconnectNow(2, false),
        Step::Panic(2),
        Step::ConnectorPanics(1),
        Step::Advance(1000),
        Step::Probe(0, Probe::Panics),
        Step::Lose(0),
        Step::WhenConnected(2, None),
        Step::DropWaiter(0),
        Step::WhenConnected(1, None),
        Step::DropAllHandles(1),
        Step::Stop(0),
        Step::DropStop(0),
        Step::Advance(2000),
    ];
    if let Err(report) = run_case(&setup, &steps, false) {
        panic!("{report}");
    }
}
