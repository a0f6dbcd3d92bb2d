//! A complete example of property-testing an application built on the machine
//! with `redial::testing`: a request queue that buffers requests while it has no
//! connection, sends them once the machine hands it one, and fails the buffered
//! ones when the service stops (or its retry policy gives up).
//!
//! The queue owns its machine, as a real application does; the kit plays the
//! network ([`run_app`] under generated operations, [`Sim`] under a virtual clock
//! and a scripted connector) and hands the queue every input through
//! [`App::handle`]. The properties:
//!
//! * a request is only ever sent on a connection that is open (the kit's
//!   [`Connections`] say which are), checked after every input and operation;
//! * by the end (a stop, settled), every request was sent exactly once or failed,
//!   never both.
//!
//! `a_planted_bug_shrinks_to_a_short_trace` runs the same property on the queue
//! with a bug planted (it keeps its connection when the machine asks to close it)
//! and checks that proptest, then [`minimize`], shrink the failure to a short
//! trace that shows it.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestError, TestRng, TestRunner};
use redial::testing::{
    minimize, run_app, strategy, App, AppOp, ConnectScript, Connections, Op, Sim, SimPolicy, Trace,
    Violation,
};
use redial::{
    Action, AttemptId, Backoff, Config, Input, InputError, Jitter, Machine, RetryPolicy, Step,
    WaiterId,
};

// ----- the application ----------------------------------------------------------------

/// A request queue on a machine. Requests are numbered from 0.
#[derive(Debug)]
struct Queue<P> {
    machine: Machine<String, P>,
    /// The connection requests go out on, once the machine handed it over.
    conn: Option<AttemptId>,
    /// Our `when_connected`, while it is pending (or asked and not fed yet).
    waiter: Option<WaiterId>,
    asked: bool,
    buffer: VecDeque<u32>,
    next: u32,
    /// The "network": every request sent, and on which connection.
    sent: Vec<(AttemptId, u32)>,
    failed: Vec<u32>,
    /// Inputs for the machine, and notes for the trace, not taken yet.
    commands: VecDeque<Input<String>>,
    notes: VecDeque<String>,
    /// Sends checked so far.
    checked: usize,
    /// The planted bug: keep the connection when the machine asks to close it.
    keeps_closed_connection: bool,
}

impl<P: RetryPolicy> Queue<P> {
    fn new(machine: Machine<String, P>) -> Self {
        Queue {
            machine,
            conn: None,
            waiter: None,
            asked: false,
            buffer: VecDeque::new(),
            next: 0,
            sent: Vec::new(),
            failed: Vec::new(),
            commands: VecDeque::new(),
            notes: VecDeque::new(),
            checked: 0,
            keeps_closed_connection: false,
        }
    }

    /// The application's one operation: a new request.
    fn submit(&mut self) {
        let id = self.next;
        self.next += 1;
        match self.conn {
            Some(conn) => self.send(conn, id),
            None => {
                self.buffer.push_back(id);
                self.notes.push_back(format!("request {id} buffered"));
                if self.waiter.is_none() && !self.asked {
                    self.asked = true;
                    self.commands.push_back(Input::WhenConnected {
                        fail_after_failures: None,
                    });
                }
            }
        }
    }

    fn send(&mut self, conn: AttemptId, id: u32) {
        self.sent.push((conn, id));
        self.notes.push_back(format!("request {id} sent on {conn}"));
    }

    fn ours(&self, waiters: &[WaiterId]) -> bool {
        self.waiter.is_some_and(|w| waiters.contains(&w))
    }
}

impl<P: RetryPolicy> App<String> for Queue<P> {
    type Policy = P;

    fn machine(&self) -> &Machine<String, P> {
        &self.machine
    }

    fn handle(&mut self, input: Input<String>) -> Result<Step<String>, InputError> {
        let lost = match input {
            Input::ConnectionClosed { attempt } => Some(attempt),
            _ => None,
        };
        let step = self.machine.handle(input)?;
        if let Some(waiter) = step.waiter {
            // Only we call when_connected.
            (self.waiter, self.asked) = (Some(waiter), false);
        }
        if lost.is_some() && lost == self.conn {
            self.conn = None;
        }
        for action in &step.actions {
            match action {
                Action::NotifyWaiters { attempt, waiters } if self.ours(waiters) => {
                    (self.waiter, self.conn) = (None, Some(*attempt));
                    while let Some(id) = self.buffer.pop_front() {
                        self.send(*attempt, id);
                    }
                }
                // The machine closes it: send nothing more on it (the planted bug
                // forgets to).
                Action::Disconnect { attempt }
                    if self.conn == Some(*attempt) && !self.keeps_closed_connection =>
                {
                    self.conn = None;
                }
                Action::DeliverFailure { waiters, .. } | Action::CancelWaiters { waiters, .. }
                    if self.ours(waiters) =>
                {
                    self.waiter = None;
                    for id in self.buffer.drain(..) {
                        self.notes.push_back(format!("request {id} failed"));
                        self.failed.push(id);
                    }
                }
                _ => {}
            }
        }
        Ok(step)
    }

    fn command(&mut self) -> Option<Input<String>> {
        self.commands.pop_front()
    }

    fn note(&mut self) -> Option<String> {
        self.notes.pop_front()
    }

    /// Every request sent since the last check went out on an open connection.
    fn check(&mut self, connections: &Connections) -> Result<(), String> {
        for &(conn, id) in &self.sent[self.checked..] {
            if !connections.is_open(conn) {
                let state = connections.get(conn);
                return Err(format!("request {id} sent on {conn}, which is {state:?}"));
            }
        }
        self.checked = self.sent.len();
        Ok(())
    }
}

/// At the end: every request sent exactly once or failed, never both.
fn all_answered<P>(queue: &Queue<P>) -> Result<(), String> {
    for id in 0..queue.next {
        let sent = queue.sent.iter().filter(|(_, r)| *r == id).count();
        let failed = queue.failed.iter().filter(|r| **r == id).count();
        if sent + failed != 1 {
            return Err(format!(
                "request {id}: sent {sent} times, failed {failed} times"
            ));
        }
    }
    Ok(())
}

// ----- the property, under generated operations -----------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Submit;

/// Runs the ops, then a stop that is settled, on a queue (with the bug or not).
fn run_queue(
    config: Config,
    policy: SimPolicy,
    ops: &[AppOp<Submit>],
    bug: bool,
) -> Result<Trace, Box<Violation>> {
    let mut queue = Queue::new(Machine::with_config(policy, config).unwrap());
    queue.keeps_closed_connection = bug;
    let mut all = ops.to_vec();
    all.extend([AppOp::Kit(Op::Stop), AppOp::Settle]);
    let trace = run_app(&mut queue, &all, |queue, Submit| queue.submit())?;
    match all_answered(&queue) {
        Ok(()) => Ok(trace),
        Err(message) => Err(Box::new(Violation { trace, message })),
    }
}

fn queue_cases() -> impl Strategy<Value = (Config, SimPolicy, Vec<AppOp<Submit>>)> {
    (
        strategy::config(),
        strategy::sim_policy(),
        strategy::app_ops(Just(Submit), 0..80),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Under any configuration and policy, whatever the network does.
    #[test]
    fn the_queue_never_sends_on_a_closed_connection((config, policy, ops) in queue_cases()) {
        run_queue(config, policy, &ops, false).map_err(|v| TestCaseError::fail(v.to_string()))?;
    }
}

// ----- the planted bug -------------------------------------------------------------

#[test]
fn a_planted_bug_shrinks_to_a_short_trace() {
    let config = ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let rng = TestRng::deterministic_rng(config.rng_algorithm);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&queue_cases(), |(config, policy, ops)| {
        run_queue(config, policy, &ops, true).map_err(|v| TestCaseError::fail(v.to_string()))?;
        Ok(())
    });
    let Err(TestError::Fail(_, (config, policy, ops))) = result else {
        panic!("the planted bug was not found: {result:?}");
    };
    // proptest shrinks element by element; `minimize` removes what it can further.
    let fails = |ops: &[AppOp<Submit>]| run_queue(config, policy, ops, true).is_err();
    let shortest = minimize(&ops, fails);
    let violation = run_queue(config, policy, &shortest, true).unwrap_err();
    println!("{violation}");
    let text = violation.to_string();
    assert!(violation.trace.steps.len() <= 8, "{text}");
    assert!(text.contains("\n  disconnect attempt#"), "{text}");
    assert!(text.contains("which is Some(Closing)"), "{text}");
    // The trace reads back as it prints, and replays.
    let reparsed: Trace = violation.trace.to_string().parse().unwrap();
    assert_eq!(reparsed, violation.trace);
    reparsed.replay().unwrap();
}

// ----- the same application under the simulated driver -----------------------------

/// What the test does at one moment of virtual time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Submit,
    Start,
    Stop,
}

fn calls() -> impl Strategy<Value = Vec<(u64, Call)>> {
    let call = prop_oneof![4 => Just(Call::Submit), 2 => Just(Call::Start), 1 => Just(Call::Stop)];
    proptest::collection::vec((0u64..2000, call), 0..30)
}

/// Runs the calls at their times against a scripted network; the check panics
/// (with the trace) on a send on a connection that is not open.
fn simulate<P: RetryPolicy + 'static>(
    policy: P,
    script: Vec<ConnectScript<String>>,
    calls: &[(u64, Call)],
) -> Sim<String, P, Queue<P>> {
    let config = Config::new().with_connect_timeout(Some(Duration::from_secs(1)));
    let mut sim = Sim::new(Queue::new(Machine::with_config(policy, config).unwrap()));
    sim.script_connects(script);
    for &(wait, call) in calls {
        sim.advance(Duration::from_millis(wait));
        sim.comment(&format!("test: {call:?}"));
        match call {
            Call::Submit => sim.app_op(Queue::submit),
            Call::Start => sim.start(),
            Call::Stop => drop(sim.stop()),
        }
    }
    let stop = sim.stop();
    sim.settle();
    assert!(sim.is_finished(stop), "{}", sim.summary());
    sim
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Under virtual time: the same properties, and the simulator's trace
    /// (times, notes, policy and all) replays exactly.
    #[test]
    fn the_queue_under_the_simulator(
        script in proptest::collection::vec(strategy::connect_script(), 0..8),
        calls in calls(),
    ) {
        let sim = simulate(SimPolicy::linear(Duration::from_millis(100)), script, &calls);
        let trace = sim.trace();
        prop_assert!(all_answered(sim.app()).is_ok(), "{}", trace);
        let text = trace.to_string();
        prop_assert!(text.starts_with("config connect_timeout=1s\npolicy linear 100ms\n"), "{}", text);
        let reparsed: Trace = text.parse().unwrap();
        prop_assert_eq!(&reparsed, &trace);
        prop_assert_eq!(&reparsed.to_string(), &text);
        prop_assert!(reparsed.replay().is_ok(), "{}", text);
    }
}

/// A jittered `Backoff` cannot be named in a trace: the trace says `policy
/// recorded`, and replays with the delays it recorded.
#[test]
fn a_jittered_policy_replays_as_recorded() {
    let policy = Backoff::new(Duration::from_millis(100), 2.0, Duration::from_secs(1))
        .unwrap()
        .with_jitter(Jitter::Full)
        .with_seed(7);
    let refused = |after| ConnectScript::Fail {
        after: Duration::from_millis(after),
        error: "refused".to_string(),
    };
    let script = vec![
        refused(10),
        refused(20),
        refused(5),
        ConnectScript::Connect {
            after: Duration::from_millis(10),
            lost_after: Some(Duration::from_millis(300)),
        },
    ];
    let calls = [
        (0, Call::Submit),
        (0, Call::Start),
        (1500, Call::Submit),
        (2000, Call::Submit),
    ];
    let sim = simulate(policy, script, &calls);
    all_answered(sim.app()).unwrap();
    let trace = sim.trace();
    let text = trace.to_string();
    println!("{text}");
    assert!(text.contains("\npolicy recorded\n"), "{text}");
    assert!(text.contains("\n# request 0 sent on attempt#3\n"), "{text}");
    assert!(text.contains("\n@"), "{text}");
    let reparsed: Trace = text.parse().unwrap();
    assert_eq!(reparsed.to_string(), text);
    reparsed.replay().unwrap();
    // The recorded delays are checked against the times: a longer first retry
    // delay makes its timer fire before it was due.
    let tampered = text.replacen(" retry ", " retry 1", 1);
    let report = tampered.parse::<Trace>().unwrap().replay().unwrap_err();
    assert!(report.contains("before it was due"), "{report}");
}

/// The generated runs do what the property needs: requests sent, requests
/// failed, and requests sent on a second connection after the first was lost or
/// closed.
#[test]
fn generated_runs_send_fail_and_reconnect() {
    let mut runner = TestRunner::deterministic();
    let (mut sent, mut failed, mut reconnected) = (0, 0, 0);
    for _ in 0..200 {
        let (config, policy, ops) = queue_cases().new_tree(&mut runner).unwrap().current();
        let mut queue = Queue::new(Machine::with_config(policy, config).unwrap());
        let mut all = ops.clone();
        all.extend([AppOp::Kit(Op::Stop), AppOp::Settle]);
        run_app(&mut queue, &all, |queue, Submit| queue.submit()).unwrap();
        sent += queue.sent.len();
        failed += queue.failed.len();
        let mut conns: Vec<AttemptId> = queue.sent.iter().map(|(c, _)| *c).collect();
        conns.dedup();
        reconnected += usize::from(conns.len() >= 2);
    }
    println!("{sent} sent, {failed} failed, {reconnected} runs on 2+ connections");
    assert!(
        sent > 200 && failed > 200 && reconnected > 10,
        "{sent} {failed} {reconnected}"
    );
}
