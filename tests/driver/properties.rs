//! A property test of the async driver (`redial::driver::ClientService`) on the
//! deterministic harness (`redial::testing::{ManualRuntime, Net}`): random user
//! operations against random world events, panics included, with the driver's
//! promises checked after every step.
//!
//! A case is a [`Setup`] (the service's configuration and retry policy, and how the
//! case ends) and a script of [`Step`]s. Each step is one user operation, one move of
//! virtual time, or one world event; world events act on "the attempt in flight",
//! "the prepare step in progress" or "the open connection", never on a raw number, so
//! a step keeps its meaning when proptest removes the steps before it (a step that
//! finds nothing to act on does nothing). After every step the runtime is run until
//! idle, every future the test holds is polled once, and the invariants are checked.
//! A failure shrinks to a short script and prints what happened at each step.
//!
//! The invariants (each made precise where it is checked):
//!
//! 1. Waiters ([`World::judge`], [`World::check`]): every `when_connected` future is
//!    answered at most once, and consistently with what happened: `Ok` only with the
//!    connection open and current (the only one open, prepared, the service
//!    `Connected`) when it was answered; `Failed` only past the waiter's threshold
//!    (counted in failed attempts since it was made) or from a handle clone that
//!    panicked; `GaveUp` only from a policy that gives up, once it has; `Stopped`
//!    only after a stop or last-handle drop, or for a waiter made while stopped;
//!    `Ended` only once the service has ended, for the reason it ended. The service's
//!    `pending_waiters()` is exactly the futures the test holds neither answered nor
//!    dropped, and a waiter with a threshold is pending only below it. At the end
//!    every future not dropped has been answered.
//! 2. Stops ([`World::judge_stop`]): a `stop` future resolves exactly when nothing
//!    that was open when it was requested (attempt in flight, open connection) is
//!    still open.
//! 3. State ([`World::check`]): the published state agrees with the world (`Init`:
//!    nothing ever tried; `Connecting`: one attempt in flight, or one connection
//!    being prepared, and exactly the timeout timer configured for it; `Waiting`: no
//!    attempt, no connection, one timer; `Connected`: one open connection, prepared,
//!    no waiter pending; `Stopped`: nothing open, no timer, no waiter), the counters
//!    count the world's attempts and connections, at most one attempt or connection
//!    is open at a time, every outcome the world decided has been seen, and no
//!    panic escaped the service. `disconnect` says yes exactly once for the open
//!    connection, which is then closed; a refused one changes nothing. A stop leaves
//!    the service stopped. A `StateWatch` reads the same state, and `changed()` is
//!    ready exactly when it changed (with `None` once the service has ended).
//! 4. The end ([`World::check`]): once the service has ended (last handle dropped,
//!    policy panicked, runtime shut down) its task is gone, nothing is open, no timer
//!    is left, every future has been answered, `state()` reads `Stopped` and
//!    `ended()` says why.
//! 5. Nothing hangs ([`World::finish`]): once virtual time has run out with no one
//!    acting, a waiter is pending only for a service that waits on the world or
//!    retries for ever; once the service is stopped (or its handles dropped), every
//!    future resolves when driven.
//!
//! Cases: `REDIAL_DRIVER_PROPTEST_CASES`, else `REDIAL_PROPTEST_CASES`, else 2 000.

use std::fmt;
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use redial::driver::{ClientService, Ended, Error, StateWatch, Stopping, WhenConnectedWithId};
use redial::testing::{
    poll_once, AttemptStatus, ConnStatus, ConnectOutcome, ManualRuntime, Net, NetError, NetHandle,
    PrepareOutcome, PrepareStatus,
};
use redial::{AttemptId, Failure, PanicSite, RetryPolicy, State};

use crate::support::{panic_message, quiet_panics_containing};

type Service = ClientService<NetHandle, NetError>;
type Waiter = WhenConnectedWithId<NetHandle, NetError>;
type Answer = Result<(AttemptId, NetHandle), Error<NetError>>;

/// The message of the scripted policy's panic.
const POLICY_PANIC: &str = "scripted policy panic";
/// How long virtual time runs at the end of a case, with no one acting, before the
/// service is stopped. Longer than any give-up can take when every attempt times out:
/// at most 4 failures, each within a 3 s timeout plus a 5 s delay.
const TIME_RUNS_OUT: Duration = Duration::from_secs(60);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ----- the script ----------------------------------------------------------------

/// One step of a case: a user operation, time passing, or a world event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    // --- the user, through a handle (each does nothing once every handle is gone) ---
    /// `start()`.
    Start,
    /// `stop()`; the returned future is kept and polled.
    Stop,
    /// `stop()` then `start()` at once, with nothing run in between.
    StopThenStart,
    /// `when_connected()`, or `when_connected_fail_after(n)`; the future is kept.
    WhenConnected { fail_after: Option<u8> },
    /// `when_connected()` whose future is dropped before the service has run.
    WhenConnectedDroppedAtOnce,
    /// `when_connected()` whose future is dropped unpolled after the service has run
    /// (answered or not).
    WhenConnectedDroppedAfterRun,
    /// `n` `when_connected()` at once (more than the task performs per poll).
    ManyWaiters(u8),
    /// `stop()` then `when_connected()` at once: the waiter is told `Stopped`.
    StopThenWhenConnected,
    /// `Disconnect(Current)` then `when_connected()` at once: the waiter never gets
    /// the connection just disconnected.
    DisconnectThenWhenConnected,
    /// Drops the `i`-th (modulo) `when_connected` future still pending: withdraws it.
    DropWaiter(usize),
    /// `stop()` whose future is dropped at once: the stop is made all the same.
    StopDroppedAtOnce,
    /// `disconnect(id)`, twice in a row.
    Disconnect(Target),
    /// Clones a handle.
    CloneHandle,
    /// Drops the `i`-th (modulo) handle; dropping the last ends the service.
    DropHandle(usize),
    // --- virtual time ---
    /// Moves virtual time on by this many milliseconds (firing due timers).
    Advance(u32),
    // --- the world ---
    /// The attempt in flight connects.
    ConnectSucceeds,
    /// The attempt in flight fails.
    ConnectFails,
    /// The attempt in flight panics.
    ConnectPanics,
    /// Scripts the next attempt (it resolves as soon as it is polled).
    NextConnect(Outcome),
    /// The connector closure panics when called for the next attempt.
    ConnectorPanics,
    /// The prepare step in progress accepts the connection.
    PrepareSucceeds,
    /// The prepare step in progress rejects the connection.
    PrepareFails,
    /// The prepare step in progress panics.
    PreparePanics,
    /// Scripts the next prepare step (it resolves as soon as it is polled).
    NextPrepare(Outcome),
    /// The prepare hook panics when called for the next connection.
    PrepareHookPanics,
    /// The open connection (connected or being prepared) is lost.
    Lose,
    /// The open connection's driver future panics.
    Crash,
    /// The handle of the current connection (open, else the attempt in flight, else
    /// the next attempt) panics when cloned (`true`), or stops panicking.
    CloneHandlePanics(bool),
    /// The runtime shuts down (drops every task).
    RuntimeShutdown,
    /// Two things at the same instant: the second happens before the service runs.
    /// (The service performs requests before it looks at the world again.)
    AtOnce(Event, Event),
}

/// What can happen at the same instant as something else ([`Step::AtOnce`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Start,
    Stop,
    /// `when_connected()` (no threshold).
    WhenConnected,
    /// `Disconnect(Current)`.
    Disconnect,
    ConnectSucceeds,
    ConnectFails,
    PrepareSucceeds,
    PrepareFails,
    Lose,
    Crash,
}

impl Event {
    fn step(self) -> Step {
        match self {
            Event::Start => Step::Start,
            Event::Stop => Step::Stop,
            Event::WhenConnected => Step::WhenConnected { fail_after: None },
            Event::Disconnect => Step::Disconnect(Target::Current),
            Event::ConnectSucceeds => Step::ConnectSucceeds,
            Event::ConnectFails => Step::ConnectFails,
            Event::PrepareSucceeds => Step::PrepareSucceeds,
            Event::PrepareFails => Step::PrepareFails,
            Event::Lose => Step::Lose,
            Event::Crash => Step::Crash,
        }
    }
}

/// The steps of a case, shown one numbered step a line.
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

/// Which connection [`Step::Disconnect`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The open connection; if none, the attempt in flight (not a connection: refused).
    Current,
    /// The `i`-th (modulo) of: every earlier attempt not open nor in flight, and an id
    /// never issued. Always refused.
    Stale(usize),
}

/// A scripted outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeds,
    Fails,
    Panics,
}

/// How a case ends, once virtual time has run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finish {
    /// `stop()`, then every handle dropped.
    Stop,
    /// Every handle dropped (the service stops itself).
    DropHandles,
}

/// The service's configuration and retry policy.
#[derive(Debug, Clone)]
struct Setup {
    /// `Builder::build` only: the script must `Start` it (else `Builder::start`).
    build_only: bool,
    prepare: bool,
    connect_timeout_ms: Option<u64>,
    prepare_timeout_ms: Option<u64>,
    reset_backoff_after_ms: Option<u64>,
    /// The retry delay after `n` consecutive failures is `delays_ms[(n - 1) % len]`.
    delays_ms: Vec<u64>,
    /// Wrapped in `GiveUpAfter`.
    give_up_after: Option<u32>,
    /// The policy panics at its `n`-th call.
    policy_panics_at_call: Option<u32>,
    finish: Finish,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Succeeds),
        2 => Just(Outcome::Fails),
        1 => Just(Outcome::Panics),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        30 => Just(Step::Start),
        12 => Just(Step::Stop),
        6 => Just(Step::StopThenStart),
        60 => proptest::option::weighted(0.4, 1u8..=4)
            .prop_map(|fail_after| Step::WhenConnected { fail_after }),
        8 => Just(Step::WhenConnectedDroppedAtOnce),
        8 => Just(Step::WhenConnectedDroppedAfterRun),
        2 => (60u8..=80).prop_map(Step::ManyWaiters),
        4 => Just(Step::StopThenWhenConnected),
        6 => Just(Step::DisconnectThenWhenConnected),
        20 => (0usize..8).prop_map(Step::DropWaiter),
        6 => Just(Step::StopDroppedAtOnce),
        20 => Just(Step::Disconnect(Target::Current)),
        8 => (0usize..4).prop_map(|i| Step::Disconnect(Target::Stale(i))),
        10 => Just(Step::CloneHandle),
        5 => (0usize..4).prop_map(Step::DropHandle),
        50 => prop_oneof![0u32..=20, 50u32..=1500, 1500u32..=6000].prop_map(Step::Advance),
        40 => Just(Step::ConnectSucceeds),
        30 => Just(Step::ConnectFails),
        8 => Just(Step::ConnectPanics),
        15 => outcome().prop_map(Step::NextConnect),
        6 => Just(Step::ConnectorPanics),
        30 => Just(Step::PrepareSucceeds),
        10 => Just(Step::PrepareFails),
        6 => Just(Step::PreparePanics),
        8 => outcome().prop_map(Step::NextPrepare),
        5 => Just(Step::PrepareHookPanics),
        20 => Just(Step::Lose),
        8 => Just(Step::Crash),
        8 => any::<bool>().prop_map(Step::CloneHandlePanics),
        1 => Just(Step::RuntimeShutdown),
        20 => (event(), event()).prop_map(|(a, b)| Step::AtOnce(a, b)),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Start),
        Just(Event::Stop),
        Just(Event::WhenConnected),
        Just(Event::Disconnect),
        Just(Event::ConnectSucceeds),
        Just(Event::ConnectFails),
        Just(Event::PrepareSucceeds),
        Just(Event::PrepareFails),
        Just(Event::Lose),
        Just(Event::Crash),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    use proptest::option::{of, weighted};
    use proptest::sample::select;
    (
        proptest::bool::weighted(0.3),
        any::<bool>(),
        of(select(vec![100u64, 250, 1000, 3000])),
        of(select(vec![100u64, 250, 1000, 3000])),
        weighted(0.3, select(vec![500u64, 5000])),
        proptest::collection::vec(select(vec![0u64, 1, 100, 1000, 5000]), 1..4),
        weighted(0.3, 1u32..5),
        weighted(0.05, 1u32..6),
        prop_oneof![Just(Finish::Stop), Just(Finish::DropHandles)],
    )
        .prop_map(
            |(build_only, prepare, ct, pt, healthy, delays, give_up, panics, finish)| Setup {
                build_only,
                prepare,
                connect_timeout_ms: ct,
                prepare_timeout_ms: pt.filter(|_| prepare),
                reset_backoff_after_ms: healthy,
                delays_ms: delays,
                give_up_after: give_up,
                policy_panics_at_call: panics,
                finish,
            },
        )
}

// ----- the retry policy ------------------------------------------------------------

/// Cycles through fixed delays.
struct Delays(Vec<Duration>);

impl RetryPolicy for Delays {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        let n = consecutive_failures.max(1) as usize - 1;
        Some(self.0[n % self.0.len()])
    }
}

/// The policy the service runs: `Delays`, maybe in `GiveUpAfter`; counts its calls
/// and its give-ups, and panics at the scripted call.
struct ScriptedPolicy {
    inner: Box<dyn RetryPolicy + Send>,
    panic_at: Option<u32>,
    calls: Arc<AtomicU32>,
    give_ups: Arc<AtomicU32>,
}

impl RetryPolicy for ScriptedPolicy {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.panic_at == Some(call) {
            panic!("{POLICY_PANIC} (call {call})");
        }
        let delay = self.inner.next_delay(consecutive_failures);
        if delay.is_none() {
            self.give_ups.fetch_add(1, Ordering::SeqCst);
        }
        delay
    }
}

// ----- what the test keeps ---------------------------------------------------------

/// Why the service has ended, as far as the test knows: set by the step that makes
/// it end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    Dropped,
    RuntimeGone,
    PolicyPanicked,
}

impl Why {
    fn accepts(self, ended: &Ended) -> bool {
        match (self, ended) {
            (Why::Dropped, Ended::Dropped) | (Why::RuntimeGone, Ended::RuntimeGone) => true,
            (Why::PolicyPanicked, Ended::PolicyPanicked(message)) => message.contains(POLICY_PANIC),
            _ => false,
        }
    }
}

/// A `when_connected` future the test made, and what it knew when it made it.
struct TrackedWaiter {
    name: usize,
    /// `None` once answered or dropped.
    future: Option<Waiter>,
    answered: bool,
    fail_after: Option<u32>,
    /// `counters().failures` when the service took it.
    failures_at: u64,
    /// Stop requests (and last-handle drops) made before the step that made it (a
    /// stop earlier in the same step counts as after: the service performs both
    /// requests together, in order).
    stops_before: usize,
    /// The service read `Stopped` when it was made.
    made_while_stopped: bool,
    /// The step that made it, and the policy's give-ups before that step.
    step: usize,
    give_ups_before: u32,
}

/// What a stop request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Thing {
    Attempt(usize),
    Conn(usize),
}

/// A `stop` future the test made, and what was open when it made it.
struct TrackedStop {
    name: usize,
    /// `None` once resolved or dropped.
    future: Option<Stopping>,
    waits_for: Vec<Thing>,
}

/// What a step promises, checked once the runtime is idle.
enum Promise {
    Nothing,
    /// `disconnect` closed this connection.
    Closed(usize),
    /// A refused `disconnect` changed nothing.
    Unchanged {
        open: Vec<usize>,
        attempts: usize,
    },
    /// A stop was made: once idle, the service is stopped (the driver cancels and
    /// closes at once, so a stop never waits for anything).
    StoppedNow,
    /// The step itself saw a promise broken.
    Broken(String),
}

struct World {
    setup: Setup,
    rt: ManualRuntime,
    net: Net,
    handles: Vec<Service>,
    waiters: Vec<TrackedWaiter>,
    stops: Vec<TrackedStop>,
    policy_calls: Arc<AtomicU32>,
    /// Times the policy gave up.
    give_ups: Arc<AtomicU32>,
    /// The step being performed (0: before the first).
    step: usize,
    /// How a connection handed out in this step may have ended in the same step
    /// (see `judge`).
    may_end_in_step: Vec<ConnStatus>,
    /// Ids passed to `disconnect` in this step.
    disconnected_in_step: Vec<usize>,
    /// This step ends with a `start` (after another request).
    restart_in_step: bool,
    /// `stop()` calls and last-handle drops so far.
    stop_requests: usize,
    /// `stop_requests` as of the last time the runtime was idle (before this step).
    stop_requests_at_idle: usize,
    /// Give-ups as of the last time the runtime was idle.
    give_ups_at_idle: u32,
    ended: Option<Why>,
    log: String,
    /// Answers seen and not yet written to the log: (waiter, answer).
    answers: Vec<(usize, String)>,
    /// A watch made with the service, and the last state it reported.
    watch: StateWatch,
    watched: State,
}

/// Checks a condition; on failure returns the message (the caller adds the log).
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

impl World {
    fn new(setup: Setup) -> World {
        let rt = ManualRuntime::new();
        let net = Net::new();
        let calls = Arc::new(AtomicU32::new(0));
        let give_ups = Arc::new(AtomicU32::new(0));
        let delays = Delays(setup.delays_ms.iter().map(|&d| ms(d)).collect());
        let inner: Box<dyn RetryPolicy + Send> = match setup.give_up_after {
            Some(max) => Box::new(delays.give_up_after(max)),
            None => Box::new(delays),
        };
        let policy = ScriptedPolicy {
            inner,
            panic_at: setup.policy_panics_at_call,
            calls: Arc::clone(&calls),
            give_ups: Arc::clone(&give_ups),
        };
        let mut builder = ClientService::builder(rt.clone(), net.connector()).policy(policy);
        if setup.prepare {
            builder = builder.prepare(net.prepare_hook());
        }
        if let Some(t) = setup.connect_timeout_ms {
            builder = builder.connect_timeout(Some(ms(t)));
        }
        if let Some(t) = setup.prepare_timeout_ms {
            builder = builder.prepare_timeout(Some(ms(t)));
        }
        // `None`: Twisted's reset on connect (the builder's default is 5 s up).
        builder = builder.reset_backoff_after(setup.reset_backoff_after_ms.map(ms));
        let service = if setup.build_only {
            builder.build()
        } else {
            builder.start()
        }
        .expect("a valid configuration on a live runtime");
        let watch = service.watch();
        World {
            setup,
            rt,
            net,
            handles: vec![service],
            waiters: Vec::new(),
            stops: Vec::new(),
            policy_calls: calls,
            give_ups,
            step: 0,
            may_end_in_step: Vec::new(),
            disconnected_in_step: Vec::new(),
            restart_in_step: false,
            stop_requests: 0,
            stop_requests_at_idle: 0,
            give_ups_at_idle: 0,
            ended: None,
            log: String::new(),
            answers: Vec::new(),
            watched: watch.state(),
            watch,
        }
    }

    fn note(&mut self, line: impl AsRef<str>) {
        self.flush_answers();
        self.log.push_str(line.as_ref());
        self.log.push('\n');
    }

    /// Writes the answers seen to the log, a line per run of equal answers.
    fn flush_answers(&mut self) {
        let answers = std::mem::take(&mut self.answers);
        for run in answers.chunk_by(|a, b| a.1 == b.1) {
            let names = match run {
                [(one, _)] => format!("waiter w{one}"),
                [(first, _), .., (last, _)] if last - first + 1 == run.len() => {
                    format!("waiters w{first}..=w{last}")
                }
                _ => {
                    let names: Vec<String> = run.iter().map(|(n, _)| format!("w{n}")).collect();
                    format!("waiters {}", names.join(", "))
                }
            };
            let _ = writeln!(self.log, "    {names} answered {}", run[0].1);
        }
    }

    fn handle(&self) -> Option<&Service> {
        self.handles.first()
    }

    /// What is open in the world: the attempt in flight, the open connection.
    fn open_things(&self) -> Vec<Thing> {
        let attempts = (0..self.net.attempts()).filter(|&a| {
            matches!(
                self.net.attempt(a),
                Some(AttemptStatus::Pending | AttemptStatus::Resolving)
            )
        });
        attempts
            .map(Thing::Attempt)
            .chain(self.net.open().into_iter().map(Thing::Conn))
            .collect()
    }

    fn is_open(&self, thing: Thing) -> bool {
        match thing {
            Thing::Attempt(a) => matches!(
                self.net.attempt(a),
                Some(AttemptStatus::Pending | AttemptStatus::Resolving)
            ),
            Thing::Conn(c) => self.net.connection(c) == Some(ConnStatus::Open),
        }
    }

    fn summary(&self) -> String {
        let state = match (self.ended, self.handle()) {
            (Some(why), _) => format!("ended ({why:?})"),
            (None, Some(h)) => format!("{:?}", h.state()),
            (None, None) => "no handle".to_owned(),
        };
        let waiters = self.waiters.iter().filter(|w| w.future.is_some()).count();
        let stops = self.stops.iter().filter(|s| s.future.is_some()).count();
        format!(
            "{state}; attempts {}, in flight {:?}, open {:?}, preparing {:?}; timers {}; \
             waiters pending {waiters}, stops pending {stops}; t = {:?}",
            self.net.attempts(),
            self.net.pending_attempts(),
            self.net.open(),
            self.net.pending_prepares(),
            self.rt.timers(),
            self.rt.now(),
        )
    }

    /// Runs the tasks until idle; notes a policy panic (the service then ends).
    fn settle(&mut self) -> Result<(), String> {
        self.rt
            .try_run_until_idle()
            .map_err(|livelock| format!("the runtime never became idle: {livelock}"))?;
        self.note_policy_panic();
        self.stop_requests_at_idle = self.stop_requests;
        self.give_ups_at_idle = self.give_ups.load(Ordering::SeqCst);
        Ok(())
    }

    fn note_policy_panic(&mut self) {
        if let Some(at) = self.setup.policy_panics_at_call {
            if self.ended.is_none() && self.policy_calls.load(Ordering::SeqCst) >= at {
                self.ended = Some(Why::PolicyPanicked);
                self.note("    the retry policy panicked: the service ends");
            }
        }
    }

    // ----- one step ----------------------------------------------------------------

    /// Makes a tracked `when_connected` future; returns its name (`None`: no handle).
    fn make_waiter(&mut self, fail_after: Option<NonZeroU32>) -> Option<usize> {
        let h = self.handle()?;
        let future = match fail_after {
            Some(n) => h.when_connected_fail_after(n),
            None => h.when_connected(),
        };
        let name = self.waiters.len();
        // The service reads as of the last idle: what it will be when it takes the
        // request, as nothing has run since (only requests made earlier in the same
        // step come first; see `stops_before`).
        let tracked = TrackedWaiter {
            name,
            future: Some(future.with_id()),
            answered: false,
            fail_after: fail_after.map(NonZeroU32::get),
            failures_at: h.counters().failures,
            stops_before: self.stop_requests_at_idle,
            made_while_stopped: h.state() == State::Stopped,
            step: self.step,
            give_ups_before: self.give_ups_at_idle,
        };
        self.waiters.push(tracked);
        Some(name)
    }

    /// Performs `step`; returns what it did and what it promises.
    fn apply(&mut self, step: Step) -> (String, Promise) {
        let nothing = |what: &str| (what.to_owned(), Promise::Nothing);
        let net = self.net.clone();
        let pending = net.pending_attempts().last().copied();
        let open = net.open().last().copied();
        let preparing = net.pending_prepares().last().copied();
        match step {
            Step::Start => match self.handle() {
                Some(h) => {
                    h.start();
                    nothing("started")
                }
                None => nothing("no handle: nothing"),
            },
            Step::Stop | Step::StopThenStart => {
                let Some(h) = self.handles.first().cloned() else {
                    return nothing("no handle: nothing");
                };
                let waits_for = self.open_things();
                let future = h.stop();
                if step == Step::StopThenStart {
                    h.start();
                }
                drop(h);
                self.stop_requests += 1;
                let name = self.stops.len();
                self.stops.push(TrackedStop {
                    name,
                    future: Some(future),
                    waits_for: waits_for.clone(),
                });
                let what = format!("stop s{name} (open: {waits_for:?})");
                match step {
                    Step::Stop => (what, Promise::StoppedNow),
                    _ => nothing(&what),
                }
            }
            Step::WhenConnected { fail_after } => {
                let fail_after = fail_after.and_then(|n| NonZeroU32::new(n.into()));
                match self.make_waiter(fail_after) {
                    Some(name) => nothing(&format!("waiter w{name}")),
                    None => nothing("no handle: nothing"),
                }
            }
            Step::ManyWaiters(n) => {
                let names: Vec<usize> = (0..n).filter_map(|_| self.make_waiter(None)).collect();
                match (names.first(), names.last()) {
                    (Some(a), Some(b)) => nothing(&format!("waiters w{a}..=w{b}")),
                    _ => nothing("no handle: nothing"),
                }
            }
            Step::StopThenWhenConnected => {
                let (what, promise) = self.apply(Step::Stop);
                match self.make_waiter(None) {
                    Some(name) => (format!("{what}, then waiter w{name}"), promise),
                    None => (what, promise),
                }
            }
            Step::DisconnectThenWhenConnected => {
                let (what, promise) = self.apply(Step::Disconnect(Target::Current));
                match self.make_waiter(None) {
                    Some(name) => (format!("{what}, then waiter w{name}"), promise),
                    None => (what, promise),
                }
            }
            Step::WhenConnectedDroppedAfterRun => match self.handle() {
                Some(h) => {
                    let future = h.when_connected();
                    // Answered or not, it is dropped unpolled.
                    let idle = self.rt.try_run_until_idle();
                    drop(future);
                    match idle {
                        Ok(_) => nothing("made a waiter, ran, dropped it unpolled"),
                        Err(livelock) => (
                            String::new(),
                            Promise::Broken(format!("the runtime never became idle: {livelock}")),
                        ),
                    }
                }
                None => nothing("no handle: nothing"),
            },
            Step::WhenConnectedDroppedAtOnce => match self.handle() {
                Some(h) => {
                    drop(h.when_connected());
                    nothing("made and dropped a waiter")
                }
                None => nothing("no handle: nothing"),
            },
            Step::DropWaiter(i) => {
                let live: Vec<usize> = (0..self.waiters.len())
                    .filter(|&n| self.waiters[n].future.is_some())
                    .collect();
                if live.is_empty() {
                    return nothing("no waiter pending: nothing");
                }
                let n = live[i % live.len()];
                self.waiters[n].future = None;
                nothing(&format!("dropped waiter w{n}"))
            }
            Step::StopDroppedAtOnce => match self.handle() {
                Some(h) => {
                    drop(h.stop());
                    self.stop_requests += 1;
                    ("made a stop and dropped it".to_owned(), Promise::StoppedNow)
                }
                None => nothing("no handle: nothing"),
            },
            Step::Disconnect(target) => {
                let Some(h) = self.handle() else {
                    return nothing("no handle: nothing");
                };
                let (id, current) = match target {
                    Target::Current => match (open, pending) {
                        (Some(c), _) => (c, true),
                        (None, Some(a)) => (a, false),
                        (None, None) => return nothing("nothing open: nothing"),
                    },
                    Target::Stale(i) => {
                        let mut ids: Vec<usize> = (0..net.attempts())
                            .filter(|&a| Some(a) != open && Some(a) != pending)
                            .collect();
                        ids.push(net.attempts() + 1000);
                        (ids[i % ids.len()], false)
                    }
                };
                let attempt = AttemptId::from_raw(id as u64);
                let first = h.disconnect(attempt);
                let second = h.disconnect(attempt);
                let what = format!("disconnect({attempt}) -> {first}, again -> {second}");
                // Invariant: `disconnect` says yes exactly for the open connection of a
                // live service (after idle, the published current connection is the
                // one open in the world), and only once.
                let already = self.disconnected_in_step.contains(&id);
                self.disconnected_in_step.push(id);
                let promise = if current && self.ended.is_none() && !already {
                    if !first || second {
                        Promise::Broken(format!("{what}: expected true, then false"))
                    } else {
                        Promise::Closed(id)
                    }
                } else if first || second {
                    Promise::Broken(format!("{what}: expected false"))
                } else {
                    Promise::Unchanged {
                        open: net.open(),
                        attempts: net.attempts(),
                    }
                };
                (what, promise)
            }
            Step::CloneHandle => match self.handle() {
                Some(h) => {
                    let clone = h.clone();
                    self.handles.push(clone);
                    nothing(&format!("{} handles", self.handles.len()))
                }
                None => nothing("no handle: nothing"),
            },
            Step::DropHandle(i) => {
                if self.handles.is_empty() {
                    return nothing("no handle: nothing");
                }
                let n = i % self.handles.len();
                drop(self.handles.remove(n));
                if self.handles.is_empty() {
                    self.stop_requests += 1;
                    if self.ended.is_none() {
                        self.ended = Some(Why::Dropped);
                    }
                    nothing("dropped the last handle")
                } else {
                    nothing(&format!("{} handles left", self.handles.len()))
                }
            }
            Step::Advance(d) => {
                self.rt.advance(ms(d.into()));
                nothing("")
            }
            Step::ConnectSucceeds | Step::ConnectFails | Step::ConnectPanics => {
                let Some(a) = pending else {
                    return nothing("no attempt in flight: nothing");
                };
                match step {
                    Step::ConnectSucceeds => net.succeed(a),
                    Step::ConnectFails => net.fail(a, "refused"),
                    _ => net.panic(a),
                };
                nothing(&format!("attempt {a}"))
            }
            Step::NextConnect(outcome) => {
                net.push_connect(match outcome {
                    Outcome::Succeeds => ConnectOutcome::Succeed,
                    Outcome::Fails => ConnectOutcome::Fail("refused (scripted)".into()),
                    Outcome::Panics => ConnectOutcome::Panic,
                });
                nothing("queued")
            }
            Step::ConnectorPanics => {
                net.push_connect(ConnectOutcome::PanicInConnector);
                nothing("queued")
            }
            Step::PrepareSucceeds | Step::PrepareFails | Step::PreparePanics => {
                let Some(c) = preparing else {
                    return nothing("no prepare step in progress: nothing");
                };
                match step {
                    Step::PrepareSucceeds => net.prepare_succeed(c),
                    Step::PrepareFails => net.prepare_fail(c, "bad hello"),
                    _ => net.prepare_panic(c),
                };
                nothing(&format!("connection {c}"))
            }
            Step::NextPrepare(outcome) => {
                net.push_prepare(match outcome {
                    Outcome::Succeeds => PrepareOutcome::Succeed,
                    Outcome::Fails => PrepareOutcome::Fail("bad hello (scripted)".into()),
                    Outcome::Panics => PrepareOutcome::Panic,
                });
                nothing("queued")
            }
            Step::PrepareHookPanics => {
                net.push_prepare(PrepareOutcome::PanicInHook);
                nothing("queued")
            }
            Step::Lose | Step::Crash => {
                let Some(c) = open else {
                    return nothing("no open connection: nothing");
                };
                if step == Step::Lose {
                    net.lose(c);
                } else {
                    net.crash(c);
                }
                nothing(&format!("connection {c}"))
            }
            Step::CloneHandlePanics(on) => {
                let c = open.or(pending).unwrap_or_else(|| net.attempts());
                net.set_panic_on_clone(c, on);
                nothing(&format!("connection {c}"))
            }
            Step::AtOnce(a, b) => {
                let (first, promise_a) = self.apply(a.step());
                let (second, promise_b) = self.apply(b.step());
                if [a, b]
                    .iter()
                    .any(|e| matches!(e, Event::Lose | Event::Crash))
                {
                    self.may_end_in_step
                        .extend([ConnStatus::Lost, ConnStatus::Crashed]);
                }
                if a == Event::WhenConnected && matches!(b, Event::Disconnect | Event::Stop) {
                    self.may_end_in_step.push(ConnStatus::Closed);
                }
                self.restart_in_step = b == Event::Start;
                // The other event may change the world: a refused disconnect promises
                // nothing here.
                let keep = |p: Promise| match p {
                    Promise::Unchanged { .. } | Promise::StoppedNow => Promise::Nothing,
                    p => p,
                };
                let promise = match (keep(promise_a), keep(promise_b)) {
                    (Promise::Nothing, p) | (p, Promise::Nothing) => p,
                    (p @ Promise::Broken(_), _) | (_, p @ Promise::Broken(_)) => p,
                    (p, _) => p,
                };
                (format!("{first} | {second}"), promise)
            }
            Step::RuntimeShutdown => {
                self.rt.shutdown();
                if self.ended.is_none() {
                    self.ended = Some(Why::RuntimeGone);
                }
                nothing("")
            }
        }
    }

    /// Checks what a step promised.
    fn keep(&self, promise: &Promise) -> Result<(), String> {
        match promise {
            Promise::Nothing => Ok(()),
            Promise::Closed(c) => {
                let status = self.net.connection(*c);
                ensure!(
                    status == Some(ConnStatus::Closed),
                    "disconnect({c}) said yes, but the connection is {status:?}, not closed"
                );
                Ok(())
            }
            Promise::Broken(what) => Err(what.clone()),
            Promise::StoppedNow => {
                if let (None, Some(h)) = (self.ended, self.handle()) {
                    ensure!(
                        h.state() == State::Stopped,
                        "a stop was made, but the service reads {:?}",
                        h.state()
                    );
                }
                Ok(())
            }
            Promise::Unchanged { open, attempts } => {
                ensure!(
                    (&self.net.open(), self.net.attempts()) == (open, *attempts),
                    "a refused disconnect changed the world: open {:?} -> {:?}, attempts {} -> {}",
                    open,
                    self.net.open(),
                    attempts,
                    self.net.attempts()
                );
                Ok(())
            }
        }
    }

    // ----- futures -----------------------------------------------------------------

    /// Polls every future still pending once, judging each answer.
    fn observe(&mut self) -> Result<(), String> {
        self.observe_watch()?;
        for n in 0..self.waiters.len() {
            let Some(mut future) = self.waiters[n].future.take() else {
                continue;
            };
            match poll_once(&mut future) {
                Poll::Pending => self.waiters[n].future = Some(future),
                Poll::Ready(answer) => self.answered(n, answer)?,
            }
        }
        for n in 0..self.stops.len() {
            let Some(mut future) = self.stops[n].future.take() else {
                continue;
            };
            let resolved = poll_once(&mut future).is_ready();
            if !resolved {
                self.stops[n].future = Some(future);
            }
            self.judge_stop(n, resolved)?;
        }
        Ok(())
    }

    /// The watch reports the published state: `changed()` is ready exactly when
    /// the state differs from the one it last reported (or it changed and changed
    /// back), with the state now, and with `None` once the service has ended.
    fn observe_watch(&mut self) -> Result<(), String> {
        let now = match (self.ended, self.handle()) {
            (Some(_), _) => None,
            (None, Some(h)) => Some(h.state()),
            (None, None) => return Err("no handle left, but the service lives".into()),
        };
        ensure!(
            self.watch.is_ended() == now.is_none(),
            "the watch says ended: {}, the test: {}",
            self.watch.is_ended(),
            now.is_none()
        );
        ensure!(
            self.watch.state() == now.unwrap_or(State::Stopped),
            "the watch reads {:?}, the service {now:?}",
            self.watch.state()
        );
        let changed = poll_once(&mut Box::pin(self.watch.changed()));
        match (changed, now) {
            (Poll::Ready(None), None) => {}
            (Poll::Ready(Some(state)), Some(now)) if state == now => self.watched = now,
            (Poll::Pending, Some(now)) if now == self.watched => {}
            (changed, now) => {
                return Err(format!(
                    "the watch's changed() is {changed:?}; the state was {:?}, now {now:?}",
                    self.watched
                ))
            }
        }
        Ok(())
    }

    fn answered(&mut self, n: usize, answer: Answer) -> Result<(), String> {
        let verdict = self.judge(&self.waiters[n], &answer);
        let shown = match &answer {
            Ok((id, handle)) => format!("Ok({id}, conn {})", handle.conn()),
            Err(e) => format!("Err({e:?})"),
        };
        self.answers.push((n, shown));
        // Invariant 1: answered at most once (a second answer would panic in the
        // future's poll; the test never polls a resolved future, so it counts here).
        ensure!(!self.waiters[n].answered, "waiter w{n} answered twice");
        self.waiters[n].answered = true;
        verdict
    }

    /// Invariant 1 (consistency): a waiter's answer agrees with what happened.
    fn judge(&self, w: &TrackedWaiter, answer: &Answer) -> Result<(), String> {
        let name = w.name;
        match answer {
            // Ok only with the connection that is open and current: the only one open
            // in the world, prepared if there is a prepare step, the service Connected.
            // (Nothing closes a connection in the step that hands it out, so "open
            // now" is "open when answered".)
            Ok((id, handle)) => {
                let c = handle.conn();
                ensure!(
                    id.raw() == c as u64,
                    "w{name}: id {id} with the handle of connection {c}"
                );
                if self.setup.prepare {
                    ensure!(
                        self.net.prepare_status(c) == Some(PrepareStatus::Succeeded),
                        "w{name} got connection {c}, whose prepare step is {:?}",
                        self.net.prepare_status(c)
                    );
                }
                // The exceptions, in an `AtOnce` step: the world ended the connection
                // at the instant it was handed out, and the driver saw the loss only
                // after answering (documented: a connection can be handed out before
                // its driver notices it died); or a `disconnect` or `stop` made after
                // the waiter closed it. Never one closed by a request made before it.
                if let Some(status) = self.net.connection(c) {
                    if self.may_end_in_step.contains(&status) {
                        return Ok(());
                    }
                }
                ensure!(
                    self.net.open() == [c],
                    "w{name} got connection {c}, but the open connections are {:?}",
                    self.net.open()
                );
                ensure!(
                    self.ended.is_none(),
                    "w{name} got a connection from a service that ended"
                );
                if let Some(h) = self.handle() {
                    ensure!(
                        h.state() == State::Connected,
                        "w{name} got a connection while the service reads {:?}",
                        h.state()
                    );
                }
                Ok(())
            }
            // Failed: the handle's clone panicked (any waiter), or the waiter had a
            // threshold and at least that many attempts failed since it was made.
            Err(Error::Failed(failure)) => {
                if let Failure::Panicked(panic) = &**failure {
                    if panic.site() == PanicSite::Handle {
                        return Ok(());
                    }
                }
                let Some(n) = w.fail_after else {
                    return Err(format!(
                        "w{name} has no threshold but failed with {failure:?}"
                    ));
                };
                if let Some(h) = self.handle() {
                    let failures = h.counters().failures;
                    ensure!(
                        failures >= w.failures_at + u64::from(n),
                        "w{name} (fail after {n}) failed after {} failures",
                        failures - w.failures_at
                    );
                }
                Ok(())
            }
            // GaveUp: only with a policy that gives up, once it has; the service stops.
            Err(Error::GaveUp {
                consecutive_failures,
                ..
            }) => {
                let Some(max) = self.setup.give_up_after else {
                    return Err(format!("w{name}: GaveUp from a policy that never gives up"));
                };
                ensure!(
                    *consecutive_failures >= max.max(1),
                    "w{name}: GaveUp after {consecutive_failures} failures (gives up at {max})"
                );
                // (Unless a start made after the request that failed restarted it.)
                if let (false, Some(h)) = (self.restart_in_step, self.handle()) {
                    ensure!(
                        self.ended.is_some() || h.state() == State::Stopped,
                        "w{name}: GaveUp, but the service reads {:?}",
                        h.state()
                    );
                }
                Ok(())
            }
            // Stopped: only after a stop (or a last-handle drop) made after the waiter,
            // or for a waiter made while the service was stopped, or taken once the
            // policy gave up on a request made before it in the same step (at once).
            Err(Error::Stopped) => {
                let gave_up_first =
                    w.step == self.step && self.give_ups.load(Ordering::SeqCst) > w.give_ups_before;
                ensure!(
                    self.stop_requests > w.stops_before || w.made_while_stopped || gave_up_first,
                    "w{name}: Stopped, with no stop since it was made ({} before, {} now) \
                     and not made while stopped",
                    w.stops_before,
                    self.stop_requests
                );
                Ok(())
            }
            // Ended: only once the service has ended, for the reason it ended.
            Err(Error::Ended(ended)) => match self.ended {
                Some(why) if why.accepts(ended) => Ok(()),
                other => Err(format!(
                    "w{name}: Ended({ended:?}), but the service ended: {other:?}"
                )),
            },
            Err(other) => Err(format!("w{name}: an unknown error {other:?}")),
        }
    }

    /// Invariant 2: a stop resolves exactly when nothing that was open when it was
    /// requested is still open (after idle): resolved ⇒ every such attempt is over
    /// and every such connection closed; still pending ⇒ one of them is still open.
    /// (A stop followed by a start resolves once the old things are gone, even though
    /// the restart opens a new attempt: that one is not in `waits_for`.)
    fn judge_stop(&mut self, n: usize, resolved: bool) -> Result<(), String> {
        let stop = &self.stops[n];
        let still_open: Vec<Thing> = stop
            .waits_for
            .iter()
            .copied()
            .filter(|&t| self.is_open(t))
            .collect();
        let name = stop.name;
        if resolved {
            self.note(format!("    stop s{name} resolved"));
            ensure!(
                still_open.is_empty(),
                "stop s{name} resolved while {still_open:?} is still open"
            );
        } else {
            ensure!(
                !still_open.is_empty(),
                "stop s{name} is still pending, but nothing it waits for ({:?}) is open",
                stop.waits_for
            );
        }
        Ok(())
    }

    // ----- the invariants ------------------------------------------------------------

    /// The invariants that hold whenever the runtime is idle.
    fn check(&self) -> Result<(), String> {
        let net = &self.net;
        let pending = net.pending_attempts();
        let open = net.open();
        let preparing = net.pending_prepares();
        let timers = self.rt.timers();
        let live_waiters = self.waiters.iter().filter(|w| w.future.is_some()).count();
        let live_stops = self.stops.iter().filter(|s| s.future.is_some()).count();

        ensure!(
            self.rt.panics().is_empty(),
            "a panic escaped the service: {:?}",
            self.rt.panics()
        );
        // Every outcome the world decided has been seen by the service (an idle task
        // has polled what woke it).
        for a in 0..net.attempts() {
            ensure!(
                net.attempt(a) != Some(AttemptStatus::Resolving),
                "attempt {a} was decided but never polled"
            );
            ensure!(
                net.prepare_status(a) != Some(PrepareStatus::Resolving),
                "the prepare step of {a} was decided but never polled"
            );
        }
        // Invariant 3: at most one attempt in flight or connection open, never both; a
        // prepare step runs only on the open connection; at most one timer.
        ensure!(
            pending.len() + open.len() <= 1,
            "in flight {pending:?} and open {open:?} at once"
        );
        ensure!(
            preparing.iter().all(|c| open.contains(c)),
            "preparing {preparing:?}, open {open:?}"
        );
        ensure!(timers <= 1, "{timers} timers armed");

        let Some(why) = self.ended else {
            // A live service has a handle (dropping the last one ends it).
            let Some(h) = self.handle() else {
                return Err("no handle left, but the test thinks the service lives".into());
            };
            ensure!(
                h.ended().is_none(),
                "the service ended unexpectedly: {:?}",
                h.ended()
            );
            ensure!(self.rt.tasks() == 1, "{} tasks", self.rt.tasks());
            let counters = h.counters();
            ensure!(
                counters.attempts == net.attempts() as u64,
                "counters say {} attempts, the world saw {}",
                counters.attempts,
                net.attempts()
            );
            let connected = if self.setup.prepare {
                (0..net.attempts())
                    .filter(|&c| net.prepare_status(c) == Some(PrepareStatus::Succeeded))
                    .count()
            } else {
                net.connections()
            };
            ensure!(
                counters.connections == connected as u64,
                "counters say {} connections, the world saw {connected}",
                counters.connections
            );
            // Invariant 1 (accounting): the service's pending waiters are exactly the
            // test's futures neither answered nor dropped.
            ensure!(
                h.pending_waiters() == live_waiters,
                "the service has {} pending waiters, the test {live_waiters}",
                h.pending_waiters()
            );
            // A waiter with a threshold is pending only while fewer attempts have
            // failed since it was made.
            for w in self.waiters.iter().filter(|w| w.future.is_some()) {
                if let Some(n) = w.fail_after {
                    ensure!(
                        counters.failures < w.failures_at + u64::from(n),
                        "w{} (fail after {n}) still pending after {} failures",
                        w.name,
                        counters.failures - w.failures_at
                    );
                }
            }
            // Invariant 3: the published state is the world's.
            let state = h.state();
            match state {
                State::Init => ensure!(
                    net.attempts() == 0 && timers == 0,
                    "Init with {} attempts and {timers} timers",
                    net.attempts()
                ),
                State::Connecting => {
                    let attempting = pending.len() == 1;
                    let preparing_now = self.setup.prepare && open.len() == 1 && preparing == open;
                    ensure!(
                        attempting || preparing_now,
                        "Connecting with nothing in flight nor being prepared"
                    );
                    let timeout = if attempting {
                        self.setup.connect_timeout_ms
                    } else {
                        self.setup.prepare_timeout_ms
                    };
                    ensure!(
                        timers == usize::from(timeout.is_some()),
                        "Connecting with {timers} timers (timeout {timeout:?})"
                    );
                }
                State::Waiting => ensure!(
                    pending.is_empty() && open.is_empty() && timers == 1,
                    "Waiting, but in flight {pending:?}, open {open:?}, {timers} timers"
                ),
                State::Connected => {
                    ensure!(open.len() == 1, "Connected, but open {open:?}");
                    ensure!(
                        preparing.is_empty(),
                        "Connected while preparing {preparing:?}"
                    );
                    if self.setup.prepare {
                        ensure!(
                            net.prepare_status(open[0]) == Some(PrepareStatus::Succeeded),
                            "Connected to {}, whose prepare step is {:?}",
                            open[0],
                            net.prepare_status(open[0])
                        );
                    }
                    if self.setup.reset_backoff_after_ms.is_none() {
                        ensure!(timers == 0, "Connected with {timers} timers");
                    }
                    ensure!(live_waiters == 0, "Connected with waiters pending");
                }
                State::Stopped => ensure!(
                    pending.is_empty() && open.is_empty() && timers == 0 && live_waiters == 0,
                    "Stopped, but in flight {pending:?}, open {open:?}, {timers} timers, \
                     {live_waiters} waiters pending"
                ),
                // The driver cancels and closes synchronously, so a stop is over
                // before the task goes idle: these states never last.
                State::Disconnecting | State::Restarting => {
                    return Err(format!("the service rests in {state:?}"));
                }
            }
            return Ok(());
        };

        // Ended (invariant 3 and 4): the task is gone, nothing is open, no timer is
        // left, everything was answered; the service reads Stopped and says why.
        ensure!(
            self.rt.tasks() == 0,
            "ended ({why:?}), but {} tasks",
            self.rt.tasks()
        );
        ensure!(
            pending.is_empty() && open.is_empty() && timers == 0,
            "ended ({why:?}), but in flight {pending:?}, open {open:?}, {timers} timers"
        );
        ensure!(
            live_waiters == 0 && live_stops == 0,
            "ended ({why:?}), but {live_waiters} waiters and {live_stops} stops pending"
        );
        if let Some(h) = self.handle() {
            ensure!(
                h.state() == State::Stopped,
                "ended, but reads {:?}",
                h.state()
            );
            ensure!(
                h.ended().is_some_and(|e| why.accepts(&e)),
                "ended ({why:?}), but ended() is {:?}",
                h.ended()
            );
            ensure!(h.pending_waiters() == 0, "ended with waiters pending");
        }
        Ok(())
    }

    // ----- a whole case ----------------------------------------------------------------

    fn run(&mut self, steps: &[Step]) -> Result<(), String> {
        self.settle()?;
        self.note(format!(" 0. built: {}", self.summary()));
        self.check()?;
        for (i, &step) in steps.iter().enumerate() {
            self.step = i + 1;
            self.may_end_in_step.clear();
            self.disconnected_in_step.clear();
            self.restart_in_step = false;
            let (what, promise) = self.apply(step);
            self.note(format!("{:>2}. {step:?}: {what}", i + 1));
            self.settle()?;
            self.observe()?;
            self.note(format!("    -> {}", self.summary()));
            self.keep(&promise)?;
            self.check()?;
        }
        self.finish()
    }

    /// Invariant 5: no future stays pending once virtual time has run out.
    fn finish(&mut self) -> Result<(), String> {
        // First nobody acts while virtual time runs out: a waiter still pending then
        // is waiting for the world (an attempt or prepare step that only the test can
        // decide and nothing times out), or for a service that was never started or
        // retries for ever.
        self.step = usize::MAX;
        self.may_end_in_step.clear();
        self.note(format!("-- no one acts for {TIME_RUNS_OUT:?} --"));
        self.rt.advance(TIME_RUNS_OUT);
        self.settle()?;
        self.observe()?;
        self.note(format!("    -> {}", self.summary()));
        self.check()?;
        if self.waiters.iter().any(|w| w.future.is_some()) {
            // `check` made sure a live service is behind them.
            let state = self.handle().map(Service::state);
            let net = &self.net;
            let stuck_attempt =
                !net.pending_attempts().is_empty() && self.setup.connect_timeout_ms.is_none();
            let stuck_prepare =
                !net.pending_prepares().is_empty() && self.setup.prepare_timeout_ms.is_none();
            let forever = self.setup.give_up_after.is_none();
            let explained = match state {
                Some(State::Init) => true,
                Some(State::Connecting) => stuck_attempt || stuck_prepare || forever,
                Some(State::Waiting) => forever,
                _ => false,
            };
            ensure!(
                explained,
                "waiters still pending after virtual time ran out, the service reads {state:?}"
            );
        }

        // Then make progress possible: stop the service, or drop every handle.
        let mut promise = Promise::Nothing;
        match self.setup.finish {
            Finish::Stop => {
                if self.handle().is_some() {
                    let (what, stopped) = self.apply(Step::Stop);
                    self.note(format!("-- finish: Stop: {what}"));
                    promise = stopped;
                }
            }
            Finish::DropHandles => {
                self.note("-- finish: drop every handle --");
                while !self.handles.is_empty() {
                    self.apply(Step::DropHandle(0));
                }
            }
        }
        // Every future still held resolves when driven with virtual time.
        for n in 0..self.waiters.len() {
            if let Some(future) = self.waiters[n].future.take() {
                let Some(answer) = self.rt.run(future) else {
                    return Err(format!("waiter w{n} stays pending for ever"));
                };
                self.note_policy_panic();
                self.answered(n, answer)?;
            }
        }
        for n in 0..self.stops.len() {
            if let Some(future) = self.stops[n].future.take() {
                ensure!(
                    self.rt.run(future).is_some(),
                    "stop s{n} stays pending for ever"
                );
                self.note_policy_panic();
                self.judge_stop(n, true)?;
            }
        }
        self.settle()?;
        self.keep(&promise)?;
        self.check()?;
        // A stopped or ended service answers at once.
        if let Some(h) = self.handles.first().cloned() {
            let answer = self.rt.run(h.when_connected());
            let want_ended = self.ended.is_some();
            ensure!(
                match &answer {
                    Some(Err(Error::Stopped)) => !want_ended,
                    // Stopped because it gave up: the waiter learns it (only with a
                    // policy that gives up, once it has).
                    Some(Err(Error::GaveUp {
                        consecutive_failures,
                        ..
                    })) => {
                        !want_ended
                            && self.give_ups.load(Ordering::SeqCst) > 0
                            && self
                                .setup
                                .give_up_after
                                .is_some_and(|max| *consecutive_failures >= max.max(1))
                    }
                    Some(Err(Error::Ended(e))) => self.ended.is_some_and(|why| why.accepts(e)),
                    _ => false,
                },
                "a new waiter on a stopped service {}",
                match &answer {
                    None => "stays pending".to_owned(),
                    Some(answer) => format!("got {answer:?}"),
                }
            );
            ensure!(
                self.rt.run(h.stop()).is_some(),
                "a stopped service's stop stays pending"
            );
        }

        // Invariant 4: once the last handle is gone, the task ends, nothing is open
        // and no timer is left.
        while !self.handles.is_empty() {
            self.apply(Step::DropHandle(0));
        }
        self.settle()?;
        self.note(format!("-- every handle gone: {}", self.summary()));
        self.check()?;
        for a in 0..self.net.attempts() {
            let status = self.net.attempt(a);
            ensure!(
                !matches!(
                    status,
                    Some(AttemptStatus::Pending | AttemptStatus::Resolving)
                ),
                "attempt {a} is left {status:?}"
            );
        }
        ensure!(
            self.rt.tasks() == 0 && self.rt.timers() == 0,
            "left behind: {} tasks, {} timers",
            self.rt.tasks(),
            self.rt.timers()
        );
        Ok(())
    }
}

/// Runs one case; on failure, the violation and what happened, step by step.
fn run_case(setup: &Setup, steps: &[Step]) -> Result<(), String> {
    let mut world = World::new(setup.clone());
    let result = catch_unwind(AssertUnwindSafe(|| world.run(steps)));
    world.flush_answers();
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(violation)) => Some(violation),
        Err(payload) => Some(format!("panicked: {}", panic_message(&*payload))),
    };
    // Free whatever a failed case left behind (a service task keeps the runtime).
    world.rt.shutdown();
    match error {
        None => Ok(()),
        Some(error) => {
            let mut report = format!("VIOLATION: {error}\n--- what happened ---\n");
            let _ = write!(report, "{}", world.log);
            Err(report)
        }
    }
}

/// Scripted panics are expected by the thousand: keep them off stderr (any other
/// panic is reported as usual).
fn quiet_scripted_panics() {
    quiet_panics_containing("(scripted)");
    quiet_panics_containing(POLICY_PANIC);
}

fn cases() -> u32 {
    ["REDIAL_DRIVER_PROPTEST_CASES", "REDIAL_PROPTEST_CASES"]
        .iter()
        .find_map(|var| std::env::var(var).ok()?.parse().ok())
        .unwrap_or(2_000)
}

fn proptest_config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        max_shrink_iters: 100_000,
        // Failure persistence files would land in the source tree; the seeds are
        // printed on failure instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config())]

    /// Any configuration and policy, any script of user operations and world events:
    /// the driver keeps its promises after every step and at the end.
    #[test]
    fn the_driver_keeps_its_promises(
        setup in setup(),
        script in proptest::collection::vec(step(), 0..48).prop_map(Script),
    ) {
        quiet_scripted_panics();
        run_case(&setup, &script.0).map_err(TestCaseError::fail)?;
    }
}

/// Twisted's-like setup for the hand-written scripts below.
fn plain_setup() -> Setup {
    Setup {
        build_only: false,
        prepare: false,
        connect_timeout_ms: None,
        prepare_timeout_ms: None,
        reset_backoff_after_ms: None,
        delays_ms: vec![0],
        give_up_after: None,
        policy_panics_at_call: None,
        finish: Finish::Stop,
    }
}

fn assert_passes(setup: Setup, steps: &[Step]) {
    quiet_scripted_panics();
    if let Err(report) = run_case(&setup, steps) {
        panic!("{report}");
    }
}

/// A readable example of a script, also checking the runner itself on a case with
/// many kinds of step.
#[test]
fn a_hand_written_script_passes() {
    let setup = Setup {
        build_only: true,
        prepare: true,
        connect_timeout_ms: Some(1000),
        delays_ms: vec![0, 100],
        ..plain_setup()
    };
    assert_passes(
        setup,
        &[
            Step::WhenConnected { fail_after: None },
            Step::WhenConnected {
                fail_after: Some(2),
            },
            Step::Start,
            Step::ConnectFails,
            Step::ConnectSucceeds,
            Step::PrepareFails,
            Step::Advance(100),
            Step::ConnectSucceeds,
            Step::PrepareSucceeds,
            Step::Disconnect(Target::Stale(0)),
            Step::Disconnect(Target::Current),
            Step::CloneHandle,
            Step::DropHandle(0),
            Step::Advance(1000),
            Step::StopThenStart,
            Step::WhenConnected { fail_after: None },
            Step::DropWaiter(0),
            Step::AtOnce(Event::ConnectSucceeds, Event::Stop),
            Step::Start,
            Step::CloneHandlePanics(true),
            Step::ConnectSucceeds,
            Step::PrepareSucceeds,
            Step::ManyWaiters(70),
            Step::StopDroppedAtOnce,
        ],
    );
}

/// Requests made at the same instant are performed in order: a waiter made before
/// a `disconnect` gets the connection; one made after it never does.
#[test]
fn a_waiter_gets_the_connection_only_if_made_before_the_disconnect() {
    assert_passes(
        plain_setup(),
        &[
            Step::ConnectSucceeds,
            Step::AtOnce(Event::WhenConnected, Event::Disconnect),
            Step::NextConnect(Outcome::Succeeds),
            Step::AtOnce(Event::Disconnect, Event::WhenConnected),
        ],
    );
}

/// A policy that gives up on a connection disconnected while being prepared,
/// answering the waiter `GaveUp`, and a start made at the same instant restarts it.
#[test]
fn a_give_up_then_a_start_at_the_same_instant() {
    let setup = Setup {
        prepare: true,
        give_up_after: Some(1),
        ..plain_setup()
    };
    assert_passes(
        setup,
        &[
            Step::WhenConnected { fail_after: None },
            Step::ConnectSucceeds,
            Step::AtOnce(Event::Disconnect, Event::Start),
        ],
    );
}

/// The policy panics: the service ends with `Ended::PolicyPanicked` and answers
/// everything with `Error::Ended`.
#[test]
fn a_panicking_policy_ends_the_service() {
    let setup = Setup {
        policy_panics_at_call: Some(1),
        ..plain_setup()
    };
    assert_passes(
        setup,
        &[
            Step::WhenConnected { fail_after: None },
            Step::Stop,
            Step::Start,
            Step::ConnectFails,
            Step::WhenConnected { fail_after: None },
            Step::StopThenWhenConnected,
        ],
    );
}
