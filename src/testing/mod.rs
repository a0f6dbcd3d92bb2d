//! Property-testing the machine and the programs built on it (feature `testing`).
//!
//! redial's machine is pure, so the programs built on it — an event-loop
//! integration, a protocol client, a connection pool — can be tested against every
//! interleaving a real event loop could produce. This module gives them the tools
//! redial's own test suite uses:
//!
//! * [`strategy`]: proptest strategies for [`Config`](crate::Config)s, policies and
//!   sequences of abstract operations ([`Op`]) — **valid** ones (what a correct
//!   driver and user can do), **stale** ones (late results of cancelled attempts,
//!   losses of old connections, cancelled timers, already answered waiters) and
//!   **invalid** ones (ids never issued);
//! * [`World`]: turns those operations into concrete [`Input`](crate::Input)s naming real ids, by
//!   following the actions the machine returns as a faithful driver would;
//! * [`Invariants`]: the [invariants](crate::contract#invariants) of the behaviour
//!   contract, checked after every input from what the machine said and what it
//!   reports;
//! * [`run_ops`]: all of the above in one call, returning a readable [`Trace`] —
//!   or, on failure, a [`Violation`] whose `Display` is the trace up to the
//!   failing input, which proptest prints after shrinking;
//! * [`App`]: an application that owns (or wraps) its machine, run by the kit: it
//!   feeds every input to its machine itself and sees what comes back, queues the
//!   inputs it wants fed, and has a check of its own;
//! * [`run_app`]: [`run_ops`] for an application, with its own operations beside
//!   the kit's ([`AppOp`]; [`strategy::app_ops`] leaves the waiters to the
//!   application: `start`, `stop` and what happens in the world only);
//! * [`Connections`]: where each attempt and connection stands (in flight, open,
//!   being closed, closed, lost), for the application's check;
//! * [`Sim`]: a deterministic simulated driver (virtual clock, scripted connector
//!   and prepare outcomes, recorded actions and answers) to put your own
//!   integration, protocol or [`App`] under, one report at a time if you like
//!   ([`Sim::step`]);
//! * [`trace`]: the text format of traces (one input per line, its actions after
//!   it, the time it happened at and comments where known), with a printer, a
//!   parser and [`Trace::replay`];
//! * [`ManualRuntime`] and [`Net`]: a deterministic harness for the async driver
//!   itself — a [`Runtime`](crate::driver::Runtime) with its own single-threaded
//!   executor and a virtual clock that moves only when the test says so, and
//!   scripted in-memory connections — so that a real
//!   [`ClientService`](crate::driver::ClientService) runs with no sockets and no
//!   sleeps (see below).
//!
//! # Example: a property test of the machine's transitions
//!
//! Any sequence of valid, stale and invalid inputs, under any configuration,
//! keeps the invariants; and a waiter registered before `start` is answered
//! exactly once, unless it was withdrawn or is still pending at the end (a stop
//! can be waiting for a connection to close). A failure prints the shrunk run as a
//! trace:
//!
//! ```
//! use proptest::prelude::*;
//! use redial::testing::{run_ops, strategy, Op};
//! use redial::{Action, Input, Machine};
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(64))]
//!     fn any_run_keeps_the_invariants(
//!         config in strategy::config(),
//!         policy in strategy::sim_policy(),
//!         ops in strategy::ops(0..60),
//!     ) {
//!         let mut machine = Machine::with_config(policy, config).unwrap();
//!         // One waiter first, a stop at the end.
//!         let mut all = vec![Op::WhenConnected { fail_after_failures: None }];
//!         all.extend(ops);
//!         all.push(Op::Stop);
//!         // Each step is also handed to our own check (none here).
//!         let trace = run_ops(&mut machine, &all, |_, _, _| Ok(()))
//!             .map_err(|violation| TestCaseError::fail(violation.to_string()))?;
//!         // The first waiter got exactly one answer by the end.
//!         let answers = trace
//!             .steps
//!             .iter()
//!             .filter_map(|step| match &step.outcome {
//!                 redial::testing::Outcome::Accepted { actions, .. } => Some(actions),
//!                 _ => None,
//!             })
//!             .flatten()
//!             .filter(|action| match action {
//!                 Action::NotifyWaiters { waiters, .. }
//!                 | Action::DeliverFailure { waiters, .. }
//!                 | Action::CancelWaiters { waiters, .. } => {
//!                     waiters.iter().any(|w| w.raw() == 0)
//!                 }
//!                 _ => false,
//!             })
//!             .count();
//!         let still_pending = machine.pending_waiters().any(|w| w.raw() == 0);
//!         let withdrawn = trace.steps.iter().any(|step| {
//!             matches!(step.input, Input::CancelWaiter { waiter } if waiter.raw() == 0)
//!         });
//!         // Answered at most once; unanswered only if withdrawn or still pending.
//!         prop_assert!(answers <= 1, "{}", trace);
//!         prop_assert!(answers == 1 || still_pending || withdrawn, "{}", trace);
//!     }
//! }
//!
//! # fn main() {
//! any_run_keeps_the_invariants();
//! # }
//! ```
//!
//! # Example: an application that owns its machine
//!
//! An application built on the machine owns it: here, one that asks for the
//! connection when told to and says hello on every connection it is handed. It
//! implements [`App`], so the kit can run it: [`run_app`] plays the network from
//! generated operations and feeds every input through [`App::handle`]; the
//! application's own operation (`Ask`) runs beside the kit's `start`, `stop` and
//! world events. Its check says it only ever spoke on an open connection (the
//! kit's [`Connections`] know which are). `tests/machine/app_queue.rs` in the repository
//! is a complete example: a request queue, under [`run_app`] and under [`Sim`],
//! with a planted bug and the short trace proptest shrinks it to.
//!
//! ```
//! use proptest::prelude::*;
//! use redial::testing::{run_app, strategy, App, Connections, SimPolicy};
//! use redial::{Action, AttemptId, Config, Input, InputError, Machine, Step};
//!
//! struct Greeter {
//!     machine: Machine<String, SimPolicy>,
//!     asked: bool,
//!     commands: Vec<Input<String>>,
//!     hellos: Vec<AttemptId>, // where it said hello, since the last check
//! }
//!
//! impl App<String> for Greeter {
//!     type Policy = SimPolicy;
//!     fn machine(&self) -> &Machine<String, SimPolicy> {
//!         &self.machine
//!     }
//!     fn handle(&mut self, input: Input<String>) -> Result<Step<String>, InputError> {
//!         let step = self.machine.handle(input)?;
//!         for action in &step.actions {
//!             match action {
//!                 Action::NotifyWaiters { attempt, .. } => self.hellos.push(*attempt),
//!                 Action::CancelWaiters { .. } | Action::DeliverFailure { .. } => {}
//!                 _ => continue,
//!             }
//!             self.asked = false; // our one waiter was answered
//!         }
//!         Ok(step)
//!     }
//!     fn command(&mut self) -> Option<Input<String>> {
//!         self.commands.pop()
//!     }
//!     fn check(&mut self, connections: &Connections) -> Result<(), String> {
//!         match self.hellos.drain(..).find(|a| !connections.is_open(*a)) {
//!             Some(attempt) => Err(format!("hello on {attempt}, which is not open")),
//!             None => Ok(()),
//!         }
//!     }
//! }
//!
//! #[derive(Debug, Clone)]
//! struct Ask;
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(64))]
//!     fn greets_only_open_connections(ops in strategy::app_ops(Just(Ask), 0..60)) {
//!         let config = Config::new().with_prepare(true);
//!         let machine = Machine::with_config(SimPolicy::default(), config).unwrap();
//!         let mut app = Greeter { machine, asked: false, commands: vec![], hellos: vec![] };
//!         run_app(&mut app, &ops, |app, Ask| {
//!             if !app.asked {
//!                 app.asked = true;
//!                 app.commands.push(Input::WhenConnected { fail_after_failures: None });
//!             }
//!         })
//!         .map_err(|violation| TestCaseError::fail(violation.to_string()))?;
//!     }
//! }
//!
//! # fn main() {
//! greets_only_open_connections();
//! # }
//! ```
//!
//! # Example: your integration under the simulated driver
//!
//! [`Sim`] plays the network and the clock. Here the property is about a
//! program's use of the machine: however the connector behaves, a request that
//! waits for at most three failures is answered within the time the policy
//! allows, and a stop always finishes.
//!
//! ```
//! use core::time::Duration;
//! use std::num::NonZeroU32;
//! use proptest::prelude::*;
//! use redial::testing::{strategy, Answer, Sim, SimPolicy};
//! use redial::Machine;
//!
//! proptest! {
//!     #![proptest_config(ProptestConfig::with_cases(64))]
//!     fn requests_are_answered_in_time(
//!         script in proptest::collection::vec(strategy::connect_script(), 0..6),
//!     ) {
//!         let policy = SimPolicy::linear(Duration::from_millis(100));
//!         let config = redial::Config::new().with_connect_timeout(Some(Duration::from_secs(1)));
//!         let mut sim = Sim::new(Machine::<String, _>::with_config(policy, config).unwrap());
//!         sim.script_connects(script);
//!         sim.start();
//!         let request = sim.when_connected(NonZeroU32::new(3));
//!         // Three attempts of at most 1 s each, and 100 ms + 200 ms of backoff.
//!         sim.advance(Duration::from_millis(3300));
//!         prop_assert!(sim.answer(request).is_some(), "{}", sim.trace());
//!         let stop = sim.stop();
//!         sim.settle();
//!         prop_assert!(sim.is_finished(stop), "{}", sim.summary());
//!         if let Some(Answer::Notified(conn)) = sim.answer(request) {
//!             prop_assert!(conn.raw() < 3);
//!         }
//!     }
//! }
//!
//! # fn main() {
//! requests_are_answered_in_time();
//! # }
//! ```
//!
//! # Example: a real `ClientService` on the harness
//!
//! [`ManualRuntime`] runs the service's task and its timers in virtual time;
//! [`Net`] plays the network. Three refused attempts, then one that connects: with
//! Twisted's backoff without jitter the retries wait 1.5 s, 2.25 s and 3.375 s,
//! so the service is connected at exactly 7.125 s of virtual time.
//!
//! ```
//! use core::time::Duration;
//! use redial::driver::ClientService;
//! use redial::testing::{ConnectOutcome, ManualRuntime, Net};
//! use redial::{Backoff, Jitter, State};
//!
//! let rt = ManualRuntime::new();
//! let net = Net::new();
//! net.push_connects([
//!     ConnectOutcome::Fail("refused".into()),
//!     ConnectOutcome::Fail("refused".into()),
//!     ConnectOutcome::Fail("refused".into()),
//!     ConnectOutcome::Succeed,
//! ]);
//! let policy = Backoff::new(Duration::from_millis(1500), 1.5, Duration::from_secs(60))
//!     .unwrap()
//!     .with_jitter(Jitter::None);
//! let service = ClientService::builder(rt.clone(), net.connector())
//!     .policy(policy)
//!     .start()
//!     .unwrap();
//!
//! // `run` drives the future, jumping from timer to timer whenever all is idle.
//! let conn = rt.run(service.when_connected()).unwrap().unwrap();
//! assert_eq!(conn.conn(), 3); // made by the fourth attempt
//! assert_eq!(rt.now(), Duration::from_millis(7125));
//! assert_eq!(service.state(), State::Connected);
//!
//! // Stopping closes the connection: its driver future is dropped.
//! rt.run(service.stop()).unwrap();
//! assert_eq!(net.closed(), vec![3]);
//! // Dropping the last handle ends the service's task; no future was left hanging.
//! drop(service);
//! rt.run_until_idle();
//! assert_eq!(rt.tasks(), 0);
//! assert!(rt.panics().is_empty());
//! ```
//!
//! After each operation on a service, let its task run
//! ([`run_until_idle`](ManualRuntime::run_until_idle), or [`run`](ManualRuntime::run)
//! the operation's future) before looking at its state: the service acts in its
//! task. [`run`](ManualRuntime::run) returns `None` for a future that would never
//! complete (nothing runnable and no timer left), which is how a test proves that
//! no future stays pending once virtual time has run out.
#![cfg_attr(docsrs, doc(cfg(feature = "testing")))]

mod app;
mod connections;
mod invariants;
mod net;
mod ops;
mod runtime;
mod sim;
pub mod strategy;
pub mod trace;

pub use app::{run_app, run_ops, App, AppOp, Violation};
pub use connections::{ConnState, Connections};
pub use invariants::Invariants;
pub use net::{
    AttemptStatus, ConnStatus, ConnectOutcome, Net, NetAttempt, NetDriver, NetError, NetHandle,
    NetPrepare, PrepareOutcome, PrepareStatus,
};
pub use ops::{Op, ReportKind, World};
pub use runtime::{poll_once, Livelock, ManualRuntime, ManualSleep};
pub use sim::{Answer, ConnectScript, PrepareScript, ProbeScript, Record, Sim};
pub use trace::{Comment, Issued, Outcome, SimPolicy, Trace, TraceStep};

/// Shrinks a failing sequence further than proptest's element-by-element
/// shrinking can: removes ever smaller chunks (halves, quarters, … single items)
/// while `fails` still holds, until no single item can be removed.
///
/// Operations resolve relative to what happened before them, so removing a pair
/// (a timer firing and the failure that followed it) often keeps a failure where
/// removing either alone would not. Call it on the sequence proptest reports to
/// print the shortest trace.
///
/// ```
/// use redial::testing::minimize;
///
/// // "Fails" while it still contains both a 3 and a 7.
/// let fails = |xs: &[u32]| xs.contains(&3) && xs.contains(&7);
/// let shortest = minimize(&[1, 2, 3, 4, 5, 6, 7, 8], fails);
/// assert_eq!(shortest, vec![3, 7]);
/// ```
pub fn minimize<T: Clone>(items: &[T], mut fails: impl FnMut(&[T]) -> bool) -> std::vec::Vec<T> {
    let mut current = items.to_vec();
    let mut chunk = current.len().div_ceil(2).max(1);
    loop {
        let mut removed_any = false;
        let mut start = 0;
        while start < current.len() {
            let end = (start + chunk).min(current.len());
            let mut candidate = current[..start].to_vec();
            candidate.extend_from_slice(&current[end..]);
            if fails(&candidate) {
                current = candidate;
                removed_any = true;
            } else {
                start += chunk;
            }
        }
        if chunk == 1 && !removed_any {
            return current;
        }
        if !removed_any {
            chunk = chunk.div_ceil(2);
        }
    }
}
