//! The testing kit as an application uses it: `Sim` over an `App` (single steps,
//! commands, notes, checks, the liveness of connections), `run_app` (its own ops,
//! settling), the strategies that leave waiters to the application, and traces
//! from `Sim` that replay exactly.

use std::collections::VecDeque;
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use redial::testing::{
    run_app, strategy, App, AppOp, ConnState, ConnectScript, Connections, Op, PrepareScript, Sim,
    SimPolicy, Trace,
};
use redial::{Action, AttemptId, Backoff, Config, Input, InputError, Jitter, Machine, State, Step};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An application that asks for the connection at once and again after every
/// loss, notes what it sees, and checks that it was only ever handed open
/// connections.
#[derive(Debug)]
struct Watcher {
    machine: Machine<String, SimPolicy>,
    commands: VecDeque<Input<String>>,
    notes: VecDeque<String>,
    handed: Vec<AttemptId>,
    unchecked: Vec<AttemptId>,
    inputs: usize,
    /// Fail the check on the first connection handed over (to see a failed check).
    refuse: bool,
}

impl Watcher {
    fn new(config: Config) -> Watcher {
        Watcher {
            machine: Machine::with_config(SimPolicy::linear(ms(100)), config).unwrap(),
            commands: VecDeque::new(),
            notes: VecDeque::new(),
            handed: Vec::new(),
            unchecked: Vec::new(),
            inputs: 0,
            refuse: false,
        }
    }

    fn ask(&mut self) {
        self.commands.push_back(Input::WhenConnected {
            fail_after_failures: None,
        });
    }
}

impl App<String> for Watcher {
    type Policy = SimPolicy;

    fn machine(&self) -> &Machine<String, SimPolicy> {
        &self.machine
    }

    fn handle(&mut self, input: Input<String>) -> Result<Step<String>, InputError> {
        self.inputs += 1;
        let lost = matches!(input, Input::ConnectionClosed { .. });
        let step = self.machine.handle(input)?;
        for action in &step.actions {
            if let Action::NotifyWaiters { attempt, .. } = action {
                self.handed.push(*attempt);
                self.unchecked.push(*attempt);
                self.notes.push_back(format!("handed {attempt}"));
            }
        }
        if lost && self.machine.state() == State::Waiting {
            self.ask();
        }
        Ok(step)
    }

    fn command(&mut self) -> Option<Input<String>> {
        self.commands.pop_front()
    }

    fn note(&mut self) -> Option<String> {
        self.notes.pop_front()
    }

    fn check(&mut self, connections: &Connections) -> Result<(), String> {
        for attempt in self.unchecked.drain(..) {
            if self.refuse || !connections.is_open(attempt) {
                return Err(format!("handed {attempt}: {:?}", connections.get(attempt)));
            }
        }
        Ok(())
    }
}

/// The complaint: a trace from `Sim` printed `policy linear 1ms` whatever
/// the policy, so it did not replay. Now it names the `SimPolicy`, carries times,
/// and replays.
#[test]
fn a_sim_trace_names_its_policy_and_replays() {
    let policy = SimPolicy::linear(ms(250)).give_up_after(4);
    let mut sim = Sim::new(Machine::<String, _>::new(policy));
    sim.script_connects([
        ConnectScript::Fail {
            after: ms(10),
            error: "refused".into(),
        },
        ConnectScript::Connect {
            after: ms(30),
            lost_after: None,
        },
    ]);
    sim.start();
    sim.when_connected(None);
    sim.advance(Duration::from_secs(1));
    let trace = sim.trace();
    let text = trace.to_string();
    assert!(
        text.starts_with("policy linear 250ms give_up_after=4\n@0s start\n"),
        "{text}"
    );
    assert!(text.contains("\n@10ms connection_failed attempt#0 \"refused\"\n"));
    assert!(text.contains("\n@260ms timer_fired timer#0\n"), "{text}");
    assert!(
        text.contains("\n@290ms connection_made attempt#1\n"),
        "{text}"
    );
    trace.replay().unwrap();
    let parsed: Trace = text.parse().unwrap();
    assert_eq!(parsed, trace);
    assert_eq!(parsed.to_string(), text);
}

/// With a `Backoff` (not a `SimPolicy`) the trace says `policy recorded`, and
/// replays with the delays the run had.
#[test]
fn a_sim_trace_under_another_policy_is_recorded() {
    let policy = Backoff::new(ms(100), 3.0, Duration::from_secs(10))
        .unwrap()
        .with_jitter(Jitter::Equal)
        .with_seed(3);
    let mut sim = Sim::new(Machine::<&str, _>::new(policy));
    let refused = ConnectScript::Fail {
        after: ms(1),
        error: "refused",
    };
    sim.script_connects([refused.clone(), refused.clone(), refused]);
    sim.start();
    sim.advance(Duration::from_secs(5));
    let trace = sim.trace();
    assert!(trace.policy_recorded);
    let text = trace.to_string();
    assert!(text.starts_with("policy recorded\n"), "{text}");
    text.parse::<Trace>().unwrap().replay().unwrap();
}

#[test]
fn step_feeds_one_report_at_a_time() {
    let mut sim = Sim::new(Machine::<&str, _>::new(SimPolicy::linear(ms(100))));
    sim.script_connects([
        ConnectScript::Fail {
            after: ms(5),
            error: "refused",
        },
        ConnectScript::Connect {
            after: ms(7),
            lost_after: Some(ms(50)),
        },
    ]);
    sim.start();
    assert_eq!(sim.next_due(), Some(ms(5)));
    let record = sim.step().unwrap();
    assert_eq!(record.at, ms(5));
    assert!(matches!(record.input, Input::ConnectionFailed { .. }));
    assert_eq!(sim.now(), ms(5));
    let record = sim.step().unwrap();
    assert_eq!(
        (record.at, &record.input),
        (
            ms(105),
            &Input::TimerFired {
                timer: redial::TimerId::from_raw(0)
            }
        )
    );
    let record = sim.step().unwrap();
    assert!(matches!(record.input, Input::ConnectionMade { .. }));
    assert_eq!(sim.now(), ms(112));
    let record = sim.step().unwrap();
    assert!(matches!(record.input, Input::ConnectionClosed { .. }));
    assert_eq!(sim.now(), ms(162));
    // Lost: a retry is due 100 ms later; then the connect script runs out (Hang).
    assert_eq!(sim.step().unwrap().at, ms(262));
    assert!(sim.step().is_none());
    assert_eq!(sim.now(), ms(262));
}

#[test]
fn the_liveness_of_each_connection_is_readable() {
    let config = Config::new().with_prepare(true);
    let mut sim =
        Sim::new(Machine::<&str, _>::with_config(SimPolicy::linear(ms(10)), config).unwrap());
    let a = |n| AttemptId::from_raw(n);
    sim.script_connects([
        ConnectScript::Connect {
            after: ms(5),
            lost_after: Some(ms(20)),
        },
        ConnectScript::Connect {
            after: ms(5),
            lost_after: None,
        },
        ConnectScript::Hang,
    ]);
    sim.script_prepares([PrepareScript::Succeed { after: ms(3) }, PrepareScript::Hang]);
    assert_eq!(sim.connection(a(0)), None);
    sim.start();
    assert_eq!(sim.connection(a(0)), Some(ConnState::Connecting));
    sim.advance(ms(5));
    assert_eq!(sim.connection(a(0)), Some(ConnState::Preparing));
    sim.advance(ms(3));
    assert_eq!(sim.connection(a(0)), Some(ConnState::Open));
    sim.advance(ms(20));
    assert_eq!(sim.connection(a(0)), Some(ConnState::Lost));
    sim.advance(ms(15)); // retry after 10 ms, connected 5 ms later, prepare hangs
    assert_eq!(sim.connection(a(1)), Some(ConnState::Preparing));
    let stop = sim.stop();
    // Closing until its close is reported (the simulator reports it at once).
    assert_eq!(sim.connection(a(1)), Some(ConnState::Closing));
    sim.settle();
    assert_eq!(sim.connection(a(1)), Some(ConnState::Closed));
    assert!(sim.is_finished(stop));
    sim.start();
    assert_eq!(sim.connection(a(2)), Some(ConnState::Connecting));
    sim.stop();
    assert_eq!(sim.connection(a(2)), Some(ConnState::Cancelling));
    sim.settle();
    assert_eq!(sim.connection(a(2)), Some(ConnState::NeverConnected));
    let states: Vec<ConnState> = sim.connections().iter().map(|(_, s)| s).collect();
    assert_eq!(
        states,
        [
            ConnState::Lost,
            ConnState::Closed,
            ConnState::NeverConnected
        ]
    );
    assert!(states.iter().all(|s| !s.is_live()));
}

/// An application the test keeps owning (`&mut`) runs under the simulator: it
/// sees every input, its commands are fed, its notes land in the trace.
#[test]
fn an_app_owned_by_the_test_runs_under_the_simulator() {
    let mut app = Watcher::new(Config::new());
    app.ask();
    let trace = {
        let mut sim = Sim::new(&mut app);
        sim.script_connects([
            ConnectScript::Connect {
                after: ms(5),
                lost_after: Some(ms(100)),
            },
            ConnectScript::Connect {
                after: ms(5),
                lost_after: None,
            },
        ]);
        sim.app_op(|_| ()); // feeds the queued when_connected
        sim.comment("the test starts the service");
        sim.start();
        sim.advance(Duration::from_secs(1));
        assert_eq!(sim.machine().state(), State::Connected);
        sim.trace()
    };
    assert_eq!(app.handed, [AttemptId::from_raw(0), AttemptId::from_raw(1)]);
    assert_eq!(app.inputs, trace.steps.len());
    let text = trace.to_string();
    assert!(text.starts_with("policy linear 100ms\n@0s when_connected\n  = waiter#0\n# the test starts the service\nstart\n"), "{text}");
    assert!(
        text.contains("  notify attempt#0 waiter#0\n# handed attempt#0\n"),
        "{text}"
    );
    // The loss made the application ask again: its when_connected follows the loss.
    assert!(text.contains("@105ms connection_closed attempt#0\n  schedule timer#0 retry 100ms\n  lost attempt#0 closed\n  retry_scheduled 100ms failures=1\nwhen_connected\n  = waiter#1\n"), "{text}");
    trace.replay().unwrap();
}

#[test]
#[should_panic(expected = "# the application's check failed: handed attempt#0")]
fn a_failed_check_panics_with_the_trace() {
    let mut app = Watcher::new(Config::new());
    app.refuse = true;
    app.ask();
    let mut sim = Sim::new(app);
    sim.script_connects([ConnectScript::Connect {
        after: ms(1),
        lost_after: None,
    }]);
    sim.start();
    sim.advance(ms(1));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ask;

/// `run_app`: the application's ops in the trace as comments with its notes;
/// `Settle` reports what the driver owes, so a stop finishes.
#[test]
fn run_app_runs_app_ops_beside_the_kits_and_settles() {
    let mut app = Watcher::new(Config::new());
    let ops = [
        AppOp::Kit(Op::Start),
        AppOp::App(Ask),
        AppOp::Kit(Op::Happen { pick: 0, choice: 0 }), // connection_made attempt#0
        AppOp::Kit(Op::Stop),
        AppOp::Settle,
    ];
    let trace = run_app(&mut app, &ops, |app, Ask| app.ask()).unwrap();
    let text = trace.to_string();
    assert_eq!(
        text,
        "\
policy linear 100ms
start
  connect attempt#0
  => Connecting
# app: Ask
when_connected
  = waiter#0
  => Connecting
connection_made attempt#0
  connected attempt#0 generation=1
  notify attempt#0 waiter#0
  => Connected
# handed attempt#0
stop
  = stop#0
  disconnect attempt#0
  => Disconnecting
connection_closed attempt#0
  finish_stopping stop#0
  => Stopped
"
    );
    trace.replay().unwrap();
    // A failed check is a violation with the trace up to it.
    let mut app = Watcher::new(Config::new());
    app.refuse = true;
    let violation = run_app(&mut app, &ops, |app, Ask| app.ask()).unwrap_err();
    assert_eq!(violation.trace.steps.len(), 3);
    assert!(
        violation
            .to_string()
            .ends_with("# handed attempt#0\n# violated: handed attempt#0: Some(Open)"),
        "{violation}"
    );
}

/// The strategies for applications never register or withdraw a waiter.
#[test]
fn app_strategies_leave_the_waiters_to_the_app() {
    let mut runner = TestRunner::deterministic();
    let (mut starts, mut stops, mut happens, mut asks) = (0, 0, 0, 0);
    for _ in 0..200 {
        let ops = strategy::app_ops(Just(Ask), 0..30)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        for op in ops {
            match op {
                AppOp::Kit(Op::Start) => starts += 1,
                AppOp::Kit(Op::Stop) => stops += 1,
                AppOp::Kit(Op::Happen { .. }) => happens += 1,
                AppOp::App(Ask) => asks += 1,
                other => panic!("{other:?}"),
            }
        }
        let op = strategy::lifecycle_op()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        assert!(matches!(op, Op::Start | Op::Stop), "{op:?}");
        let op = strategy::world_op()
            .new_tree(&mut runner)
            .unwrap()
            .current();
        assert!(matches!(op, Op::Happen { .. }), "{op:?}");
    }
    assert!(
        starts > 0 && stops > 0 && happens > asks && asks > starts,
        "{starts} {stops} {happens} {asks}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// The `Connections` ledger agrees with the machine: the current connection
    /// (if Connected) is open, and `outstanding` is exactly what is owed.
    #[test]
    fn the_ledger_agrees_with_the_machine(
        config in strategy::config(),
        policy in strategy::sim_policy(),
        ops in proptest::collection::vec(strategy::valid_op(), 0..150),
    ) {
        let mut machine = Machine::with_config(policy, config).unwrap();
        let mut connections = Connections::new();
        let mut world = redial::testing::World::new();
        for op in &ops {
            let Some(input) = world.resolve(op) else { continue };
            let result = machine.handle(input.clone());
            connections.observe(&input, &result);
            world.observe(&input, &result);
            if let Some(conn) = machine.connection() {
                prop_assert_eq!(connections.get(conn), Some(ConnState::Open));
            }
            if let Some(current) = machine.current_attempt() {
                prop_assert!(connections.get(current).is_some_and(ConnState::is_live));
            }
            let mut outstanding: Vec<Input<String>> = machine
                .outstanding()
                .map(|attempt| match connections.get(attempt) {
                    Some(ConnState::Cancelling) => Input::ConnectCancelled { attempt },
                    _ => Input::ConnectionClosed { attempt },
                })
                .collect();
            outstanding.sort_by_key(|i| format!("{i:?}"));
            let mut owed: Vec<Input<String>> = connections.owed().collect();
            owed.sort_by_key(|i| format!("{i:?}"));
            prop_assert_eq!(owed, outstanding);
        }
    }
}
