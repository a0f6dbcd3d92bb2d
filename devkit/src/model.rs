//! The reference model: the behaviour contract (`docs/contract.md`: its
//! transition tables, reports, counting and what goes beyond Twisted) as plainly
//! as it can be written.
//!
//! Written from the contract, not from `src/core/machine.rs`. It shares only the vocabulary with the crate
//! (ids, `Input`, `Action`, `State`, `Rejection`): every decision is made here,
//! with two tables:
//!
//! 1. `REPORTS`: what a report means, given what the id it names is to the machine;
//! 2. `Model::transition`: the contract's transition tables, one `match` arm per
//!    row, effects in the order the contract lists them.
//!
//! Waiter thresholds are counted per waiter (each pending waiter counts the
//! failures it has seen), which is the spec's wording, not the machine's
//! implementation.
//!
//! Used by tests/machine/model/proptest_machine.rs, tests/machine/model/fuzz_corpus.rs
//! and the fuzz targets.

use std::num::NonZeroU32;
use std::time::Duration;

use redial::testing::{run_ops, Invariants, Op, SimPolicy, Trace, Violation};
use redial::{
    Action, AttemptId, Config, Counters, Failure, GiveUp, Input, InputError, LossKind, Machine,
    Panic, Rejection, RetryPolicy, State, Step, StopId, TimerId, TimerKind, WaiterId,
};

/// How far along the current attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `Connect` was asked; no result yet.
    Attempting,
    /// Made, and its prepare step is running.
    Preparing,
    /// Established.
    Connected,
}

/// What an attempt id is to the machine right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// Never issued.
    Unknown,
    /// The current attempt, in this phase.
    Current(Phase),
    /// Asked to cancel (`CancelConnect`), not yet reported gone.
    Cancelled,
    /// Asked to close (`Disconnect`), not yet reported closed.
    Closing,
    /// Issued, but nothing the machine tracks any more.
    Old,
}

/// What a report means (the cells of `REPORTS`).
#[derive(Debug, Clone, Copy)]
pub enum Meaning {
    /// Bad input: rejected with this reason.
    Reject(fn(AttemptId) -> Rejection),
    /// Changes nothing (D1).
    Stale,
    /// A stale "connection made": close that orphan connection (D1, D7).
    Orphan,
    /// Something the machine waited to see gone is gone.
    Gone,
    /// The current attempt made its connection.
    Made,
    /// The current attempt failed (`connection_failed`).
    ConnectFailed,
    /// The current attempt failed with an error retrying will not fix
    /// (`attempt_failed_fatally` while attempting).
    FatalConnect,
    /// The prepare step rejected the current connection with an error retrying
    /// will not fix (`attempt_failed_fatally` while preparing): close it, as D2.
    FatalPrepare,
    /// A probe of the current, established connection answered.
    ProbeOk,
    /// A probe of the current, established connection failed: it is dead.
    ProbeDead,
    /// The current, established connection received something.
    Active,
    /// The current connection passed its prepare step.
    Prepared,
    /// The prepare step rejected the current connection (D2: close it).
    PrepareFailed,
    /// The current connection was lost while preparing (D3).
    LostWhilePreparing,
    /// The current, established connection was lost.
    Lost,
    /// User code run for the current attempt panicked: the attempt is gone, and
    /// it counts as a failed attempt.
    PanickedAttempting,
    /// User code panicked while the current connection was being prepared: a
    /// failed attempt, and the connection, still open, is closed (as D2).
    PanickedPreparing,
}

use Meaning::*;

const ALREADY_MADE: Meaning = Reject(Rejection::AlreadyMade);
const ALREADY_CONNECTED: Meaning = Reject(Rejection::AlreadyConnected);
const NOT_CANCELLED: Meaning = Reject(Rejection::NotCancelled);
const NOT_MADE: Meaning = Reject(Rejection::NotMade);
const NOT_PREPARING: Meaning = Reject(Rejection::NotPreparing);
const NOT_PROBING: Meaning = Reject(Rejection::NotProbing);
const ESTABLISHED: Meaning = Reject(Rejection::AlreadyConnected);

/// Reports about attempts and connections. Columns: the named attempt is current
/// and Attempting / Preparing / Connected, or it is Cancelled / Closing / Old.
/// (An Unknown id is always rejected.)
#[rustfmt::skip]
const REPORTS: [(&str, [Meaning; 6]); 11] = [
    //                      Attempting      Preparing           Connected          Cancelled  Closing  Old
    ("connection_made",     [Made,          ALREADY_MADE,       ALREADY_MADE,      Orphan,    Stale,   Orphan]),
    ("connection_failed",   [ConnectFailed, ALREADY_CONNECTED,  ALREADY_CONNECTED, Gone,      Stale,   Stale]),
    ("connect_cancelled",   [NOT_CANCELLED, NOT_CANCELLED,      NOT_CANCELLED,     Gone,      Stale,   Stale]),
    ("prepare_succeeded",   [NOT_MADE,      Prepared,           NOT_PREPARING,     Stale,     Stale,   Stale]),
    ("prepare_failed",      [NOT_MADE,      PrepareFailed,      NOT_PREPARING,     Stale,     Stale,   Stale]),
    ("connection_closed", [NOT_MADE,      LostWhilePreparing, Lost,              Stale,     Gone,    Stale]),
    ("panicked",            [PanickedAttempting, PanickedPreparing, ESTABLISHED,   Gone,      Stale,   Stale]),
    ("attempt_failed_fatally",      [FatalConnect,  FatalPrepare,       ALREADY_CONNECTED, Gone,      Stale,   Stale]),
    // Connected: NotProbing without probes; between probes a success is stale and
    // a failure is still dead (see `handle`).
    ("probe_succeeded",     [NOT_PROBING,   NOT_PROBING,        ProbeOk,           Stale,     Stale,   Stale]),
    ("probe_failed",        [NOT_PROBING,   NOT_PROBING,        ProbeDead,         Stale,     Stale,   Stale]),
    // Being prepared: its prepare step answers for it, activity is stale.
    ("connection_active",   [NOT_MADE,      Stale,              Active,            Stale,     Stale,   Stale]),
];

fn column(relation: Relation) -> usize {
    match relation {
        Relation::Current(Phase::Attempting) => 0,
        Relation::Current(Phase::Preparing) => 1,
        Relation::Current(Phase::Connected) => 2,
        Relation::Cancelled => 3,
        Relation::Closing => 4,
        Relation::Old => 5,
        Relation::Unknown => unreachable!("unknown ids are rejected first"),
    }
}

/// A pending waiter, as the model keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelWaiter {
    /// Its raw id.
    pub id: u64,
    /// `fail_after_failures`.
    pub limit: Option<u32>,
    /// Failures while Connecting since registration.
    pub seen: u32,
}

/// What the model says an input does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prediction {
    /// Bad input, rejected with this reason.
    Rejected(Rejection),
    /// Accepted.
    Accepted {
        /// The actions, in order.
        actions: Vec<Action<String>>,
        /// The waiter id a `when_connected` issues.
        waiter: Option<WaiterId>,
        /// The stop id a `stop` issues.
        stop: Option<StopId>,
        /// The input changes nothing at all (stale, D1).
        stale: bool,
    },
}

/// The reference model: what the machine must do, kept with plain vectors.
#[derive(Debug, Clone)]
pub struct Model {
    /// The opt-ins.
    pub config: Config,
    /// The retry policy (its delays are computed here, not asked of it).
    pub policy: SimPolicy,
    /// The state.
    pub state: State,
    /// The current attempt (raw id) and how far along it is.
    pub current: Option<(u64, Phase)>,
    /// Attempts asked to cancel, not yet reported gone.
    pub cancelled: Vec<u64>,
    /// Connections asked to close, not yet reported closed.
    pub closing: Vec<u64>,
    /// The armed timer (raw id) and what it is for.
    pub timer: Option<(u64, TimerKind)>,
    /// Pending waiters, in registration order.
    pub waiters: Vec<ModelWaiter>,
    /// Pending stops (raw ids), in call order.
    pub stops: Vec<u64>,
    /// Consecutive failures.
    pub consecutive_failures: u32,
    /// Consecutive failures that were fatal.
    pub fatal_in_a_row: u32,
    /// A probe was asked of the connection and is not answered yet.
    pub probing: bool,
    /// With probes and none outstanding: the connection received something
    /// since the probe interval was armed, the last of it this long before the
    /// latest report (when the interval fires, the rest of an interval from
    /// that activity is armed instead of a probe, if any is left).
    pub active: Option<Duration>,
    /// What the armed probe interval was armed for (the interval, or the rest
    /// of one after inbound activity).
    pub armed_interval: Duration,
    /// Probe-interval time completed since the connection was made (each
    /// interval that fired, for what it was armed for).
    pub interval_time: Duration,
    /// The connection has stayed up long enough (with probes: counted in
    /// intervals) for the failure count to be reset.
    pub healthy: bool,
    /// The policy gave up and the service was not started since.
    pub stopped_by_give_up: Option<GiveUp>,
    /// Running totals.
    pub counters: Counters,
    next_attempt: u64,
    next_timer: u64,
    next_waiter: u64,
    next_stop: u64,
}

/// What a report carries besides its attempt id.
enum Detail {
    None,
    /// `connection_active`'s `quiet_for`.
    Quiet(Duration),
    Error(String),
    Panic(Panic),
}

/// Internal events: a report resolved against the model, or a call.
enum Event {
    Start,
    Stop,
    WhenConnected(Option<NonZeroU32>),
    Withdraw(u64),
    /// `reconnect_now`, resetting the failure count if `true`.
    ReconnectNow(bool),
    Report(Meaning, u64, Detail),
    Timer(TimerKind),
}

impl Model {
    /// A model in `Init`.
    pub fn new(config: Config, policy: SimPolicy) -> Model {
        Model {
            config,
            policy,
            state: State::Init,
            current: None,
            cancelled: Vec::new(),
            closing: Vec::new(),
            timer: None,
            waiters: Vec::new(),
            stops: Vec::new(),
            consecutive_failures: 0,
            fatal_in_a_row: 0,
            probing: false,
            active: None,
            armed_interval: Duration::ZERO,
            interval_time: Duration::ZERO,
            healthy: false,
            stopped_by_give_up: None,
            counters: Counters::default(),
            next_attempt: 0,
            next_timer: 0,
            next_waiter: 0,
            next_stop: 0,
        }
    }

    /// The policy, computed here: `n · step`, or give up at `give_up_after`.
    fn delay(&self, n: u32) -> Option<Duration> {
        if let Some(limit) = self.policy.give_up_after {
            if n >= limit {
                return None;
            }
        }
        Some(self.policy.step.saturating_mul(n))
    }

    fn relation(&self, a: u64) -> Relation {
        if a >= self.next_attempt {
            Relation::Unknown
        } else if let Some((c, phase)) = self.current.filter(|(c, _)| *c == a) {
            let _ = c;
            Relation::Current(phase)
        } else if self.cancelled.contains(&a) {
            Relation::Cancelled
        } else if self.closing.contains(&a) {
            Relation::Closing
        } else {
            Relation::Old
        }
    }

    /// Feeds one input; the predicted outcome.
    pub fn handle(&mut self, input: &Input<String>) -> Prediction {
        let event = match input {
            Input::Start => Event::Start,
            Input::Stop => Event::Stop,
            Input::WhenConnected {
                fail_after_failures,
            } => Event::WhenConnected(*fail_after_failures),
            Input::ReconnectNow { reset_backoff } => Event::ReconnectNow(*reset_backoff),
            Input::CancelWaiter { waiter } => {
                let w = waiter.raw();
                if w >= self.next_waiter {
                    return Prediction::Rejected(Rejection::UnknownWaiter(*waiter));
                }
                if !self.waiters.iter().any(|x| x.id == w) {
                    return stale();
                }
                Event::Withdraw(w)
            }
            Input::TimerFired { timer } => {
                let t = timer.raw();
                if t >= self.next_timer {
                    return Prediction::Rejected(Rejection::UnknownTimer(*timer));
                }
                match self.timer {
                    Some((armed, kind)) if armed == t => Event::Timer(kind),
                    // Decision: a timer the machine no longer has armed is stale.
                    _ => return stale(),
                }
            }
            report => {
                let (row, attempt, detail) = match report {
                    Input::ConnectionMade { attempt } => (0, attempt, Detail::None),
                    Input::ConnectionFailed { attempt, error } => {
                        (1, attempt, Detail::Error(error.clone()))
                    }
                    Input::ConnectCancelled { attempt } => (2, attempt, Detail::None),
                    Input::PrepareSucceeded { attempt } => (3, attempt, Detail::None),
                    Input::PrepareFailed { attempt, error } => {
                        (4, attempt, Detail::Error(error.clone()))
                    }
                    Input::ConnectionClosed { attempt } => (5, attempt, Detail::None),
                    Input::Panicked { attempt, panic } => {
                        (6, attempt, Detail::Panic(panic.clone()))
                    }
                    Input::AttemptFailedFatally { attempt, error } => {
                        (7, attempt, Detail::Error(error.clone()))
                    }
                    Input::ProbeSucceeded { attempt } => (8, attempt, Detail::None),
                    Input::ProbeFailed { attempt } => (9, attempt, Detail::None),
                    Input::ConnectionActive { attempt, quiet_for } => {
                        (10, attempt, Detail::Quiet(*quiet_for))
                    }
                    _ => unreachable!(),
                };
                debug_assert_eq!(REPORTS[row].0, input.kind().name());
                let relation = self.relation(attempt.raw());
                if relation == Relation::Unknown {
                    return Prediction::Rejected(Rejection::UnknownAttempt(*attempt));
                }
                match REPORTS[row].1[column(relation)] {
                    Reject(reason) => return Prediction::Rejected(reason(*attempt)),
                    ProbeOk | ProbeDead if self.config.probe.is_none() => {
                        return Prediction::Rejected(Rejection::NotProbing(*attempt))
                    }
                    // Between probes (traffic answered the last one): a probe's
                    // success is stale, its failure still kills the connection.
                    ProbeOk if !self.probing => return stale(),
                    Stale => return stale(),
                    meaning => Event::Report(meaning, attempt.raw(), detail),
                }
            }
        };
        let mut out = Out::default();
        self.transition(event, &mut out);
        Prediction::Accepted {
            actions: out.actions,
            waiter: out.waiter,
            stop: out.stop,
            stale: false,
        }
    }

    // ----- docs/contract.md, Transitions, row by row ---------------------------------

    fn transition(&mut self, event: Event, out: &mut Out) {
        use State::*;
        match (self.state, event) {
            // start
            // Decision: the first start after the policy gave up begins a fresh
            // schedule; after an ordinary stop the count carries over (Twisted).
            (Init, Event::Start) => self.go_connect(out),
            (Stopped, Event::Start) => {
                self.restart_schedule_if_given_up();
                self.go_connect(out);
            }
            (Disconnecting, Event::Start) => {
                self.restart_schedule_if_given_up();
                self.state = Restarting;
            }
            (Connecting | Waiting | Connected | Restarting, Event::Start) => {}

            // stop
            (Init | Stopped, Event::Stop) => {
                self.new_stop(out);
                if self.nothing_outstanding() {
                    self.state = Stopped;
                    self.cancel_all_waiters(out); // D5
                    self.finish_stops(out);
                } else {
                    // Decision (D7): a rejected or orphan connection still closing.
                    self.state = Disconnecting;
                }
            }
            (Connecting, Event::Stop) => {
                self.new_stop(out);
                let (a, phase) = self
                    .current
                    .take()
                    .expect("Connecting has a current attempt");
                if phase == Phase::Attempting {
                    self.cancel_attempt(a, out);
                } else {
                    self.close(a, out); // D4
                }
                self.cancel_timer(out);
                self.state = Disconnecting;
            }
            (Connected, Event::Stop) => {
                self.new_stop(out);
                self.probing = false; // an outstanding probe's answer is stale now
                let (a, _) = self.current.take().expect("Connected has a connection");
                self.close(a, out);
                self.cancel_timer(out);
                self.state = Disconnecting;
            }
            (Waiting, Event::Stop) => {
                self.new_stop(out);
                if self.nothing_outstanding() {
                    self.state = Stopped;
                    self.cancel_all_waiters(out);
                    self.cancel_timer(out);
                    self.finish_stops(out);
                } else {
                    self.cancel_timer(out);
                    self.state = Disconnecting;
                }
            }
            (Disconnecting, Event::Stop) => self.new_stop(out),
            (Restarting, Event::Stop) => {
                self.new_stop(out);
                self.state = Disconnecting;
            }

            // when_connected
            (Connected, Event::WhenConnected(_)) => {
                let w = self.new_waiter_id(out);
                let (a, _) = self.current.expect("Connected has a connection");
                out.push(Action::NotifyWaiters {
                    attempt: AttemptId::from_raw(a),
                    waiters: [WaiterId::from_raw(w)].into_iter().collect(),
                });
            }
            (Stopped, Event::WhenConnected(_)) => {
                let w = self.new_waiter_id(out);
                // Stopped because it gave up: the waiter learns it.
                out.push(Action::CancelWaiters {
                    waiters: [WaiterId::from_raw(w)].into_iter().collect(),
                    gave_up: self.stopped_by_give_up,
                });
            }
            (Init | Connecting | Waiting | Disconnecting | Restarting, Event::WhenConnected(n)) => {
                let id = self.new_waiter_id(out);
                self.waiters.push(ModelWaiter {
                    id,
                    limit: n.map(NonZeroU32::get),
                    seen: 0,
                });
            }

            // reconnect_now (contract: Beyond Twisted, Reconnecting now)
            (Waiting, Event::ReconnectNow(reset)) => {
                // The retry timer goes, the attempt starts now.
                self.cancel_timer(out);
                if reset {
                    self.consecutive_failures = 0;
                }
                self.go_connect(out);
            }
            // An attempt, a prepare step or a connection is running: it goes on.
            // Decision: in Connected the healthy timer stays armed (the reset
            // changes the count, not the connection's health).
            (Connecting | Connected, Event::ReconnectNow(reset)) => {
                if reset {
                    self.consecutive_failures = 0;
                }
            }
            // Never starts a service, never cuts a stop short; not even the reset.
            (Init | Disconnecting | Restarting | Stopped, Event::ReconnectNow(_)) => {}

            // withdraw a waiter (contract: Beyond Twisted): forgotten, never answered
            (_, Event::Withdraw(w)) => self.waiters.retain(|x| x.id != w),

            // orphan connection (D1): close it; a stop waits for it (D7)
            (_, Event::Report(Orphan, a, _)) => {
                self.cancelled.retain(|x| *x != a);
                self.close(a, out);
            }

            // the awaited attempt / connection is gone
            (_, Event::Report(Gone, a, _)) => {
                self.cancelled.retain(|x| *x != a);
                self.closing.retain(|x| *x != a);
                if self.nothing_outstanding() {
                    match self.state {
                        Disconnecting => {
                            self.state = Stopped;
                            self.cancel_all_waiters(out);
                            self.finish_stops(out);
                        }
                        Restarting => {
                            self.go_connect(out);
                            self.finish_stops(out);
                        }
                        _ => {}
                    }
                }
            }

            // Connecting: connection made
            (Connecting, Event::Report(Made, a, _)) => {
                self.cancel_timer(out); // the connect timeout
                if self.config.prepare {
                    self.current = Some((a, Phase::Preparing));
                    out.push(Action::Prepare {
                        attempt: AttemptId::from_raw(a),
                    });
                    if let Some(d) = self.config.prepare_timeout {
                        self.schedule(TimerKind::PrepareTimeout, d, out);
                    }
                } else {
                    self.become_connected(a, out);
                }
            }
            // Connecting: prepare succeeded
            (Connecting, Event::Report(Prepared, a, _)) => {
                self.cancel_timer(out); // the prepare timeout
                self.become_connected(a, out);
            }
            // Connecting: connection failed / prepare failed / lost while preparing (D3)
            (Connecting, Event::Report(ConnectFailed, a, Detail::Error(e))) => {
                self.cancel_timer(out);
                self.current = None;
                self.attempt_failed(a, Failure::Connect(e), out);
            }
            (Connecting, Event::Report(PrepareFailed, a, Detail::Error(e))) => {
                self.cancel_timer(out);
                self.current = None;
                self.close(a, out); // D2
                self.attempt_failed(a, Failure::Prepare(e), out);
            }
            // Connecting: failed fatally (contract: Beyond Twisted, Fatal failures):
            // as connection_failed / prepare_failed, but counted in a row.
            (Connecting, Event::Report(FatalConnect, a, Detail::Error(e))) => {
                self.cancel_timer(out);
                self.current = None;
                self.fatal_attempt_failed(a, Failure::Connect(e), out);
            }
            (Connecting, Event::Report(FatalPrepare, a, Detail::Error(e))) => {
                self.cancel_timer(out);
                self.current = None;
                self.close(a, out);
                self.fatal_attempt_failed(a, Failure::Prepare(e), out);
            }
            (Connecting, Event::Report(LostWhilePreparing, a, _)) => {
                self.cancel_timer(out);
                self.current = None;
                self.attempt_failed(a, Failure::LostWhilePreparing, out);
            }
            // Connecting: user code panicked. Whatever ran is gone; a connection
            // being prepared is still open, so it is closed as a rejected one (D2).
            (Connecting, Event::Report(PanickedAttempting, a, Detail::Panic(p))) => {
                self.cancel_timer(out); // the connect timeout
                self.current = None;
                self.attempt_failed(a, Failure::Panicked(p), out);
            }
            (Connecting, Event::Report(PanickedPreparing, a, Detail::Panic(p))) => {
                self.cancel_timer(out); // the prepare timeout
                self.current = None;
                self.close(a, out);
                self.attempt_failed(a, Failure::Panicked(p), out);
            }
            // Connecting: timeouts (contract: Beyond Twisted)
            (Connecting, Event::Timer(TimerKind::ConnectTimeout)) => {
                self.timer = None;
                let (a, _) = self.current.take().expect("an attempt to time out");
                self.cancel_attempt(a, out);
                self.attempt_failed(a, Failure::ConnectTimeout, out);
            }
            (Connecting, Event::Timer(TimerKind::PrepareTimeout)) => {
                self.timer = None;
                let (a, _) = self.current.take().expect("a connection to time out");
                self.close(a, out);
                self.attempt_failed(a, Failure::PrepareTimeout, out);
            }

            // Connected: client disconnected. Never retried instantly; does not
            // count for waiters (there are none pending while Connected anyway).
            (Connected, Event::Report(Lost, _, _)) => {
                // contract, Beyond Twisted: a connection lost before it stayed up `reset_backoff_after`
                // (its healthy timer still armed) flapped. Without that opt-in no
                // healthy timer is ever armed, so there are no flaps.
                let flapped = match self.config.probe {
                    // With probes, health is counted in probe intervals.
                    Some(_) => !self.healthy,
                    None => matches!(self.timer, Some((_, TimerKind::Healthy))),
                };
                if flapped {
                    self.counters.flaps += 1;
                }
                self.probing = false;
                self.cancel_timer(out); // the healthy timer
                let (a, _) = self.current.take().expect("Connected has a connection");
                self.counters.losses += 1;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                // A loss is no failed attempt: nothing to deliver.
                let retry = self.delay(self.consecutive_failures);
                if let Some(d) = retry {
                    self.state = Waiting;
                    self.schedule(TimerKind::Retry, d, out);
                }
                out.push(Action::Lost {
                    attempt: AttemptId::from_raw(a),
                    kind: LossKind::Closed,
                    flap: flapped,
                });
                self.retry_or_give_up(retry, false, out);
            }
            // Connected, probing (contract: Beyond Twisted, Liveness probes)
            (Connected, Event::Timer(TimerKind::ProbeInterval)) => {
                self.timer = None;
                self.interval_time = self.interval_time.saturating_add(self.armed_interval);
                if let Some(d) = self.config.reset_backoff_after {
                    // Healthy once the completed intervals add up to the delay.
                    if !self.healthy && self.interval_time >= d {
                        self.healthy = true;
                        self.consecutive_failures = 0;
                    }
                }
                match self.active.take() {
                    // Something was received during the interval: the next probe
                    // is due an interval after the last of it.
                    Some(quiet_for) => self.probe_after(quiet_for, out),
                    None => self.probe_now(out),
                }
            }
            // Anything received answers an outstanding probe (the next one is due
            // an interval after it); otherwise, with probes, it is noted for the
            // interval (the latest report counts).
            (Connected, Event::Report(Active, _, detail)) => {
                let Detail::Quiet(quiet_for) = detail else {
                    unreachable!("connection_active carries its quiet time")
                };
                if self.probing {
                    self.cancel_timer(out); // the probe timeout
                    self.probing = false;
                    self.probe_after(quiet_for, out);
                } else if self.config.probe.is_some() {
                    self.active = Some(quiet_for);
                }
            }
            (Connected, Event::Report(ProbeOk, _, _)) => {
                self.cancel_timer(out); // the probe timeout
                self.probing = false;
                self.probe_after(Duration::ZERO, out);
            }
            (Connected, Event::Report(ProbeDead, a, _)) => {
                self.cancel_timer(out); // the probe timeout, or the interval
                self.connection_dead(a, LossKind::ProbeFailed, out);
            }
            (Connected, Event::Timer(TimerKind::ProbeTimeout)) => {
                self.timer = None;
                let (a, _) = self.current.expect("Connected has a connection");
                self.connection_dead(a, LossKind::ProbeTimedOut, out);
            }

            // Connected: the connection stayed up long enough (contract: Beyond Twisted)
            (Connected, Event::Timer(TimerKind::Healthy)) => {
                self.timer = None;
                self.healthy = true;
                self.consecutive_failures = 0;
            }

            // Waiting: retry timer fired (`reconnect`)
            (Waiting, Event::Timer(TimerKind::Retry)) => {
                self.timer = None;
                self.go_connect(out);
            }

            (state, Event::Report(meaning, a, _)) => {
                panic!("model: report {meaning:?} about attempt#{a} cannot happen in {state}")
            }
            (state, Event::Timer(kind)) => {
                panic!("model: armed timer {kind:?} cannot fire in {state}")
            }
        }
    }

    // ----- the effects -----------------------------------------------------------

    fn go_connect(&mut self, out: &mut Out) {
        self.state = State::Connecting;
        let a = self.next_attempt;
        self.next_attempt += 1;
        self.current = Some((a, Phase::Attempting));
        self.counters.attempts += 1;
        out.push(Action::Connect {
            attempt: AttemptId::from_raw(a),
        });
        if let Some(d) = self.config.connect_timeout {
            self.schedule(TimerKind::ConnectTimeout, d, out);
        }
    }

    /// The connection last received something `quiet_for` ago: the next probe
    /// is due an interval after that. Arms the rest of that interval, or probes
    /// now if none is left.
    fn probe_after(&mut self, quiet_for: Duration, out: &mut Out) {
        let probe = self.config.probe.expect("probes only with probes");
        let rest = probe.interval.saturating_sub(quiet_for);
        if rest.is_zero() {
            self.probe_now(out);
        } else {
            self.armed_interval = rest;
            self.schedule(TimerKind::ProbeInterval, rest, out);
        }
    }

    /// Asks for a probe of the connection, and arms its timeout.
    fn probe_now(&mut self, out: &mut Out) {
        let probe = self.config.probe.expect("probes only with probes");
        let (a, _) = self.current.expect("Connected has a connection");
        out.push(Action::Probe {
            attempt: AttemptId::from_raw(a),
        });
        self.probing = true;
        self.schedule(TimerKind::ProbeTimeout, probe.timeout, out);
    }

    fn become_connected(&mut self, a: u64, out: &mut Out) {
        self.state = State::Connected;
        self.current = Some((a, Phase::Connected));
        self.counters.connections += 1;
        // A connection ends any run of fatal failures.
        self.fatal_in_a_row = 0;
        self.probing = false;
        self.interval_time = Duration::ZERO;
        self.active = None;
        self.healthy = self.config.reset_backoff_after.is_none();
        if self.healthy {
            self.consecutive_failures = 0;
        }
        match (self.config.probe, self.config.reset_backoff_after) {
            // contract, Liveness probes: the one timer is the probe interval
            (Some(probe), _) => {
                self.armed_interval = probe.interval;
                self.schedule(TimerKind::ProbeInterval, probe.interval, out);
            }
            // contract, Beyond Twisted: reset only once the connection stayed up this long
            (None, Some(d)) => self.schedule(TimerKind::Healthy, d, out),
            (None, None) => {}
        }
        out.push(Action::Connected {
            attempt: AttemptId::from_raw(a),
            generation: self.counters.connections,
        });
        if !self.waiters.is_empty() {
            let waiters = self.waiters.drain(..).map(|w| WaiterId::from_raw(w.id));
            out.push(Action::NotifyWaiters {
                attempt: AttemptId::from_raw(a),
                waiters: waiters.collect(),
            });
        }
    }

    /// Attempt `a` failed (its cleanup is done), in this order:
    ///
    /// 1. count it; schedule the retry (Waiting), or give up (Stopped);
    /// 2. report it: `AttemptFailed`, every time a failure is counted;
    /// 3. the waiters it fails, if any: those whose threshold it reaches, or on
    ///    giving up every pending one (`DeliverFailure`, which carries no
    ///    failure: it is the one just reported);
    /// 4. `RetryScheduled`, or on giving up `GaveUp`.
    fn attempt_failed(&mut self, a: u64, failure: Failure<String>, out: &mut Out) {
        // Not fatal: the run of fatal failures is over.
        self.fatal_in_a_row = 0;
        let retry = self.delay(self.consecutive_failures.saturating_add(1));
        self.count_failure(a, failure, retry, false, out);
    }

    /// A fatal failure: the give_up_after_fatal-th in a row gives up at once (the
    /// policy is not consulted); before that, an ordinary failed attempt.
    fn fatal_attempt_failed(&mut self, a: u64, failure: Failure<String>, out: &mut Out) {
        self.fatal_in_a_row = self.fatal_in_a_row.saturating_add(1);
        let fatal_give_up = self.fatal_in_a_row >= self.config.give_up_after_fatal.get();
        let retry = if fatal_give_up {
            None
        } else {
            self.delay(self.consecutive_failures.saturating_add(1))
        };
        self.count_failure(a, failure, retry, fatal_give_up, out);
    }

    fn count_failure(
        &mut self,
        a: u64,
        failure: Failure<String>,
        retry: Option<Duration>,
        fatal_give_up: bool,
        out: &mut Out,
    ) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.counters.failures += 1;
        for w in &mut self.waiters {
            w.seen = w.seen.saturating_add(1);
        }
        match retry {
            Some(d) => {
                self.state = State::Waiting;
                self.schedule(TimerKind::Retry, d, out);
            }
            None => self.state = State::Stopped,
        }
        out.push(Action::AttemptFailed {
            attempt: AttemptId::from_raw(a),
            failure,
            consecutive_failures: self.consecutive_failures,
        });
        let (due, kept): (Vec<ModelWaiter>, Vec<ModelWaiter>) =
            self.waiters.drain(..).partition(|w| {
                // contract, Giving up: every waiter fails with the last failure.
                retry.is_none() || w.limit.is_some_and(|n| w.seen >= n)
            });
        self.waiters = kept;
        if !due.is_empty() {
            out.push(Action::DeliverFailure {
                waiters: due.iter().map(|w| WaiterId::from_raw(w.id)).collect(),
                gave_up: retry.is_none().then_some(GiveUp {
                    consecutive_failures: self.consecutive_failures,
                    fatal: fatal_give_up,
                }),
            });
        }
        self.retry_or_give_up(retry, fatal_give_up, out);
    }

    /// The last fact of a failure or a loss: the retry, or the give-up.
    fn retry_or_give_up(&mut self, retry: Option<Duration>, fatal: bool, out: &mut Out) {
        match retry {
            Some(delay) => out.push(Action::RetryScheduled {
                delay,
                consecutive_failures: self.consecutive_failures,
            }),
            None => self.give_up(fatal, out),
        }
    }

    /// The established connection `a` is dead (a probe failed or timed out; its
    /// timer is done): close it, and count a loss as `connection_closed` would.
    fn connection_dead(&mut self, a: u64, kind: LossKind, out: &mut Out) {
        self.probing = false;
        self.current = None;
        self.close(a, out);
        self.counters.losses += 1;
        if !self.healthy {
            self.counters.flaps += 1;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let retry = self.delay(self.consecutive_failures);
        if let Some(d) = retry {
            self.state = State::Waiting;
            self.schedule(TimerKind::Retry, d, out);
        }
        out.push(Action::Lost {
            attempt: AttemptId::from_raw(a),
            kind,
            flap: !self.healthy,
        });
        self.retry_or_give_up(retry, false, out);
    }

    fn give_up(&mut self, fatal: bool, out: &mut Out) {
        self.state = State::Stopped;
        self.stopped_by_give_up = Some(GiveUp {
            consecutive_failures: self.consecutive_failures,
            fatal,
        });
        out.push(Action::GaveUp {
            consecutive_failures: self.consecutive_failures,
            fatal,
        });
    }

    fn restart_schedule_if_given_up(&mut self) {
        if self.stopped_by_give_up.take().is_some() {
            self.consecutive_failures = 0;
            self.fatal_in_a_row = 0;
        }
    }

    fn cancel_attempt(&mut self, a: u64, out: &mut Out) {
        self.cancelled.push(a);
        out.push(Action::CancelConnect {
            attempt: AttemptId::from_raw(a),
        });
    }

    fn close(&mut self, a: u64, out: &mut Out) {
        self.closing.push(a);
        out.push(Action::Disconnect {
            attempt: AttemptId::from_raw(a),
        });
    }

    fn schedule(&mut self, kind: TimerKind, delay: Duration, out: &mut Out) {
        assert!(self.timer.is_none(), "model: two timers armed");
        let t = self.next_timer;
        self.next_timer += 1;
        self.timer = Some((t, kind));
        out.push(Action::ScheduleTimer {
            timer: TimerId::from_raw(t),
            kind,
            delay,
        });
    }

    fn cancel_timer(&mut self, out: &mut Out) {
        if let Some((t, _)) = self.timer.take() {
            out.push(Action::CancelTimer {
                timer: TimerId::from_raw(t),
            });
        }
    }

    fn cancel_all_waiters(&mut self, out: &mut Out) {
        if !self.waiters.is_empty() {
            let waiters = self.waiters.drain(..).map(|w| WaiterId::from_raw(w.id));
            out.push(Action::CancelWaiters {
                waiters: waiters.collect(),
                gave_up: self.stopped_by_give_up,
            });
        }
    }

    fn finish_stops(&mut self, out: &mut Out) {
        if !self.stops.is_empty() {
            let stops = self.stops.drain(..).map(StopId::from_raw);
            out.push(Action::FinishStopping {
                stops: stops.collect(),
            });
        }
    }

    fn new_stop(&mut self, out: &mut Out) {
        let s = self.next_stop;
        self.next_stop += 1;
        self.stops.push(s);
        out.stop = Some(StopId::from_raw(s));
    }

    fn new_waiter_id(&mut self, out: &mut Out) -> u64 {
        let w = self.next_waiter;
        self.next_waiter += 1;
        out.waiter = Some(WaiterId::from_raw(w));
        w
    }

    fn nothing_outstanding(&self) -> bool {
        self.cancelled.is_empty() && self.closing.is_empty()
    }
}

fn stale() -> Prediction {
    Prediction::Accepted {
        actions: Vec::new(),
        waiter: None,
        stop: None,
        stale: true,
    }
}

#[derive(Default)]
struct Out {
    actions: Vec<Action<String>>,
    waiter: Option<WaiterId>,
    stop: Option<StopId>,
}

impl Out {
    fn push(&mut self, action: Action<String>) {
        self.actions.push(action);
    }
}

// ----- the machine against the model ------------------------------------------------

/// Compares one step of the machine with the model's prediction.
///
/// The machine's policy can be any policy that answers as the model's
/// [`SimPolicy`] does (the model computes the delays itself).
pub fn compare<P: RetryPolicy>(
    model: &mut Model,
    input: &Input<String>,
    result: &Result<Step<String>, InputError>,
    machine: &Machine<String, P>,
    state_before: State,
) -> Result<bool, String> {
    let prediction = model.handle(input);
    let stale = match (&prediction, result) {
        (Prediction::Rejected(reason), Err(e)) => {
            if e.reason != *reason || e.state != state_before || e.input != input.kind() {
                return Err(format!("model rejects with {reason:?}, machine with {e:?}"));
            }
            false
        }
        (
            Prediction::Accepted {
                actions,
                waiter,
                stop,
                stale,
            },
            Ok(step),
        ) => {
            if step.actions.as_slice() != actions.as_slice() {
                let mut expected = Trace::default();
                expected.steps.push(redial::testing::TraceStep {
                    input: input.clone(),
                    outcome: redial::testing::Outcome::Accepted {
                        actions: actions.clone(),
                        issued: None,
                    },
                    state: Some(model.state),
                });
                let model_says = expected.to_string();
                let model_says = model_says.lines().skip(1).collect::<Vec<_>>().join("\n");
                return Err(format!("the model predicts:\n{model_says}"));
            }
            if step.waiter != *waiter || step.stop != *stop {
                return Err(format!(
                    "model issues {waiter:?} {stop:?}, machine {:?} {:?}",
                    step.waiter, step.stop
                ));
            }
            *stale
        }
        (p, r) => return Err(format!("model predicts {p:?}, machine returned {r:?}")),
    };
    if machine.state() != model.state {
        return Err(format!(
            "model is in {}, machine in {}",
            model.state,
            machine.state()
        ));
    }
    if machine.fatal_streak() != model.fatal_in_a_row {
        return Err(format!(
            "model counts {} fatal failures in a row, machine {}",
            model.fatal_in_a_row,
            machine.fatal_streak()
        ));
    }
    if machine.consecutive_failures() != model.consecutive_failures {
        return Err(format!(
            "model counts {} failed attempts, machine {}",
            model.consecutive_failures,
            machine.consecutive_failures()
        ));
    }
    // Everything the machine lets a user read agrees with the model.
    let current = model.current.map(|(a, _)| AttemptId::from_raw(a));
    let connection = model
        .current
        .filter(|(_, phase)| *phase == Phase::Connected)
        .map(|(a, _)| AttemptId::from_raw(a));
    let timer = model.timer.map(|(t, kind)| (TimerId::from_raw(t), kind));
    let mut outstanding: Vec<u64> = model
        .cancelled
        .iter()
        .chain(&model.closing)
        .copied()
        .collect();
    outstanding.sort_unstable();
    let mut machine_outstanding: Vec<u64> = machine.outstanding().map(AttemptId::raw).collect();
    machine_outstanding.sort_unstable();
    let waiters: Vec<WaiterId> = model
        .waiters
        .iter()
        .map(|w| WaiterId::from_raw(w.id))
        .collect();
    let stops: Vec<StopId> = model.stops.iter().copied().map(StopId::from_raw).collect();
    let machine_waiters: Vec<WaiterId> = machine.pending_waiters().collect();
    let checks = [
        ("current_attempt", machine.current_attempt() == current),
        ("connection", machine.connection() == connection),
        ("armed_timer", machine.armed_timer() == timer),
        ("outstanding", machine_outstanding == outstanding),
        ("pending_waiters", machine_waiters == waiters),
        ("pending_stops", machine.pending_stops() == &stops[..]),
    ];
    if let Some((what, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Err(format!(
            "{what} differs: machine {:?}, model {:?}",
            (
                machine.current_attempt(),
                machine.connection(),
                machine.armed_timer(),
                &machine_outstanding,
                &machine_waiters,
                machine.pending_stops()
            ),
            (current, connection, timer, &outstanding, &waiters, &stops)
        ));
    }
    if machine.pending_waiters().len() != waiters.len() {
        return Err("pending_waiters: wrong length".into());
    }
    if machine.counters() != model.counters {
        return Err(format!(
            "model counters {:?}, machine {:?}",
            model.counters,
            machine.counters()
        ));
    }
    Ok(stale)
}

/// Runs `ops` through the machine and the model.
pub fn run_with_model(config: Config, policy: SimPolicy, ops: &[Op]) -> Result<(), Box<Violation>> {
    let mut machine = Machine::with_config(policy, config).expect("strategies make valid configs");
    let mut model = Model::new(config, policy);
    // The machine as it was before the current input.
    let mut before = machine.clone();
    // run_ops checks the invariants and that rejected input changes nothing; this
    // closure compares with the model and checks that stale input changes nothing.
    let result = run_ops(&mut machine, ops, |input, result, machine| {
        let stale = compare(&mut model, input, result, machine, before.state())?;
        if stale {
            Invariants::check_unchanged(&before, machine)?;
        }
        before = machine.clone();
        Ok(())
    });
    result.map(drop).map_err(|mut violation| {
        violation.trace.policy = policy;
        violation
    })
}
