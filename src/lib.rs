//! # redial: keep one outgoing client connection alive
//!
//! The heart of redial is [`Machine`], a pure, sans-IO state machine modelled on
//! Twisted's `ClientService`. You feed it inputs (start, stop, connection made,
//! connection failed, timer fired, client disconnected, when-connected requests) and
//! it returns the [`Actions`] to perform (connect, cancel, prepare, disconnect,
//! schedule or cancel a timer, notify waiters, report a failed attempt, deliver its
//! failure to waiters, finish a stop). It
//! does no I/O, reads no clock and draws no randomness of its own (the retry
//! policy's jitter is seeded), so it runs in any executor, in a hand-written event
//! loop, on `no_std` targets and in property tests. To put it under an event loop
//! of your own (`mio`, embassy, a game loop), read [**the driver guide**](guide).
//!
//! What it does, in every state and for every input, is written down in
//! [**the behaviour contract**](contract) (also `docs/contract.md` in the
//! repository): the [states](contract#states), the full
//! [transition tables](contract#transitions), how failures are
//! [counted](contract#counting), the [retry policy](contract#retry-policy), the
//! eight [differences from Twisted](contract#differences-from-twisted) and the
//! [invariants](contract#invariants) the property tests check. In one picture
//! (generated from an edge list that a test checks against the machine):
//!
//! ![The seven states of the machine and every transition between two different states, each arrow labelled with the inputs that cause it][state-diagram]
//!
#![doc = concat!(
    "[state-diagram]: data:image/svg+xml;base64,",
    include_str!("../docs/states.svg.b64")
)]
//!
//! ## The run loop you write
//!
//! A driver owns the machine, performs each action, and reports what happened,
//! naming the id it was given. Here the "network" is scripted, and time is a
//! number we step by hand:
//!
//! ```
//! use std::collections::VecDeque;
//! use std::time::Duration;
//! use redial::{Action, Backoff, Jitter, Machine, State};
//!
//! // Twisted's default backoff, without jitter so the delays are exact.
//! let policy = Backoff::twisted(7).with_jitter(Jitter::None);
//! let mut machine: Machine<&'static str> = Machine::new(policy);
//!
//! // The first two attempts are refused, the third one connects.
//! let mut outcomes = VecDeque::from([Err("refused"), Err("refused"), Ok(())]);
//! let mut now = Duration::ZERO;
//! let mut pending = machine.start().into_iter().collect::<VecDeque<_>>();
//! let (waiter, actions) = machine.when_connected(None);
//! pending.extend(actions);
//!
//! while let Some(action) = pending.pop_front() {
//!     let next = match action {
//!         Action::Connect { attempt } => match outcomes.pop_front().unwrap() {
//!             Ok(()) => machine.connection_made(attempt).unwrap(),
//!             Err(e) => machine.connection_failed(attempt, e).unwrap(),
//!         },
//!         Action::ScheduleTimer { timer, delay, .. } => {
//!             now += delay; // a real loop sleeps; we jump ahead
//!             machine.timer_fired(timer).unwrap()
//!         }
//!         Action::NotifyWaiters { attempt, waiters } => {
//!             assert_eq!(waiters.as_slice(), &[waiter]);
//!             println!("{attempt} is up; {} waiter(s) told", waiters.len());
//!             continue;
//!         }
//!         // Facts: what happened, told by the machine (never worked out from
//!         // its state). Every failed attempt, waited on or not: a
//!         // `DeliverFailure { waiters, .. }` right after it would fail those
//!         // waiters with this failure (none here: our waiter has no threshold).
//!         Action::AttemptFailed { attempt, failure, consecutive_failures } => {
//!             println!("{attempt} failed: {failure:#} ({consecutive_failures} in a row)");
//!             continue;
//!         }
//!         Action::RetryScheduled { delay, .. } => {
//!             println!("retrying in {delay:?}");
//!             continue;
//!         }
//!         Action::Connected { attempt, generation } => {
//!             println!("{attempt} is connection #{generation}");
//!             continue;
//!         }
//!         other => unreachable!("not in this script: {other:?}"),
//!     };
//!     pending.extend(next);
//! }
//! assert_eq!(machine.state(), State::Connected);
//! assert_eq!(now, Duration::from_millis(1500 + 2250)); // 1 s·1.5, then 1 s·1.5²
//!
//! // Stopping closes the connection; the stop finishes once its loss is reported.
//! let (stop, actions) = machine.stop();
//! let Action::Disconnect { attempt } = actions[0] else { unreachable!() };
//! let actions = machine.connection_closed(attempt).unwrap();
//! assert_eq!(actions.as_slice(), &[Action::FinishStopping { stops: [stop].into_iter().collect() }]);
//! assert_eq!(machine.state(), State::Stopped);
//! ```
//!
//! A real driver does the same with sockets and timers. [The driver guide](guide)
//! shows how: the [report queue](guide#the-report-queue) that performs actions
//! without calling the machine, what [every action](guide#every-action-one-match)
//! asks of the driver, the [one machine timer](guide#the-one-machine-timer), ids
//! as tokens. `examples/mio_loop.rs` is a complete driver on `mio`.
//!
//! ## Inputs
//!
//! Every input is a method ([`Machine::start`], [`Machine::connection_made`], …) and
//! also a variant of [`Input`], fed with [`Machine::handle`]: what property tests,
//! fuzzers and trace recorders generate. `start`, `stop`, `when_connected` and
//! [`reconnect_now`](Machine::reconnect_now) are accepted in every state; every report names the attempt, connection (the attempt
//! that made it) or timer it is about.
//!
//! On a hot path, [`Machine::handle_into`] appends the actions to a buffer the
//! driver owns and drains in place ([`Actions::drain`]): no action list is moved
//! per input, and nothing is allocated in steady state. The guide's
//! [report queue](guide#the-report-queue) shows how to perform them while the
//! buffer is borrowed.
//!
//! A report about something the machine no longer tracks is **stale** and changes
//! nothing (a stale "connection made" gets that orphan connection closed). A report
//! that names an id the machine never issued, or that contradicts what the machine
//! knows (the current attempt reported made twice, a prepare result for a
//! connection that is not being prepared), is **bad input**: the machine returns an
//! [`InputError`] naming the state, the input and the reason, and changes nothing.
//!
//! The driver's side of the contract: after `CancelConnect`, report the attempt
//! gone with `connect_cancelled` (or `connection_failed`, or `connection_made` if it
//! won the race); after `Disconnect`, report `connection_closed`. Until then the
//! machine counts it as still open, and no stop finishes
//! ([D7](contract#d7-a-finished-stop-means-nothing-is-left); see the driver's
//! [obligations](contract#obligations-of-the-driver)).
//!
//! ## Where redial differs from Twisted, and why
//!
//! Each of these is a verified Twisted bug, fixed on purpose; the
//! [contract](contract#differences-from-twisted) gives Twisted's behaviour, redial's
//! and the reason for each:
//!
//! * [**D1 Identity.**](contract#d1-identity) Every report names its attempt,
//!   connection or timer, so a late result of a cancelled attempt, the loss of an
//!   old connection or a cancelled timer firing is stale and harmless.
//! * [**D2**](contract#d2-a-connection-rejected-by-prepare-is-closed) A connection
//!   rejected by the prepare step is closed.
//! * [**D3**](contract#d3-a-connection-lost-while-preparing-is-a-failed-attempt) A
//!   connection lost while preparing is a failed attempt and is retried.
//! * [**D4**](contract#d4-stop-while-preparing-closes-the-connection) `stop` while
//!   preparing closes the connection and finishes when its loss is reported.
//! * [**D5**](contract#d5-stop-before-start-cancels-the-waiters) `stop` before
//!   `start` cancels pending waiters.
//! * [**D6**](contract#d6-restarting-waits-for-whatever-disconnecting-waited-for)
//!   Restarting waits for whatever Disconnecting waited for, a cancelled attempt as
//!   well as a connection.
//! * [**D7**](contract#d7-a-finished-stop-means-nothing-is-left) A finished stop
//!   means nothing is left: no attempt in flight, no connection open (rejected and
//!   orphan ones included), no timer armed.
//! * [**D8**](contract#d8-no-re-entrancy) No re-entrancy: inputs are plain calls
//!   that return actions; nothing runs inside a transition.
//!
//! The contract also settles what Twisted leaves open: a timer firing late is
//! [stale](contract#reports-and-identity), not an error; the retry policy is asked
//! before a transition changes anything, so a policy that panics leaves the machine
//! as it was; when the policy [gives up](contract#giving-up), every pending waiter
//! receives the last failure ([`Action::AttemptFailed`], then
//! [`Action::DeliverFailure`]), then [`Action::GaveUp`]; the first
//! [`start`](Machine::start) after giving up begins a
//! [fresh schedule](contract#giving-up), while a start after an ordinary stop
//! carries the failure count over, as Twisted does.
//!
//! ## Features
//!
//! * `std` (default): `std::error::Error` for [`Failure`], a randomly seeded
//!   `Backoff::default` (and so `Machine::default`). Without it the crate is
//!   `#![no_std]` with `alloc`, and depends on `thiserror` and `smallvec` only;
//!   it has no source of randomness, so there is no `Default` for either: seed
//!   the jitter per device, from a hardware RNG or a unique id (a serial number,
//!   a MAC address), with `Backoff::twisted(seed)` or `Backoff::with_seed`, so
//!   that a fleet of devices does not retry in lockstep.
//! * `driver`: the runtime-agnostic async driver, `redial::driver::ClientService`.
//! * `tokio`, `smol`, `async-std`: the driver on that runtime (`redial::tokio`,
//!   `redial::smol`, `redial::async_std`). async-std is discontinued upstream; its
//!   successor is smol.
//! * `tracing`: `tracing` events from the driver (retry scheduled, connected, lost,
//!   gave up).
//! * `testing`: `redial::testing`, the strategies, trace format and simulated
//!   driver for property-testing programs built on the machine, and a
//!   deterministic harness for the async driver (a manual-clock runtime and
//!   scripted in-memory connections). Enables `driver`.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

// The layout shows the architecture:
//
// * `src/core/`: the sans-IO core (the machine, its inputs and actions, ids,
//   errors, retry policies, waiters, the shared budget): no I/O, no clock, no
//   runtime, `no_std` + `alloc`;
// * `src/driver/`: the async engine (one task per service that performs the
//   machine's actions) and, in `src/driver/shapes/`, the connection shapes that
//   do not use it (a byte stream, messages, endpoints);
// * `src/runtime/`: the runtime adapters, alike and tiny;
// * `src/testing/`: the testing kit (feature `testing`).
// Module paths stay flat (`redial::machine`, `redial::tokio`, ...).
#[path = "core/actions.rs"]
pub mod actions;
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
#[path = "core/budget.rs"]
pub mod budget;
#[path = "core/error.rs"]
pub mod error;
#[path = "core/ids.rs"]
pub mod ids;
#[path = "core/input.rs"]
pub mod input;
#[path = "core/machine.rs"]
pub mod machine;
#[path = "core/policy.rs"]
pub mod policy;
#[path = "core/state.rs"]
mod state;
#[path = "core/waiters.rs"]
mod waiters;

#[cfg(feature = "driver")]
#[cfg_attr(docsrs, doc(cfg(feature = "driver")))]
pub mod driver;

#[cfg(feature = "async-std")]
#[cfg_attr(docsrs, doc(cfg(feature = "async-std")))]
#[path = "runtime/async_std.rs"]
pub mod async_std;
#[cfg(feature = "smol")]
#[cfg_attr(docsrs, doc(cfg(feature = "smol")))]
#[path = "runtime/smol.rs"]
pub mod smol;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
#[path = "runtime/tokio.rs"]
pub mod tokio;

#[cfg(feature = "testing")]
pub mod testing;

/// The behaviour contract: every state, every input and what the machine does
/// with it, the differences from Twisted (D1–D8) and the invariants (the same text
/// as `docs/contract.md` in the repository).
pub mod contract {
    // The picture's `data:` URL comes first: of two definitions of one link
    // label, the first one counts, so on GitHub the file's own `states.svg` is
    // shown instead. (The blank line ends the summary's paragraph, which a link
    // definition cannot interrupt.)
    #![doc = ""]
    #![doc = concat!(
        "[state-diagram]: data:image/svg+xml;base64,",
        include_str!("../docs/states.svg.b64")
    )]
    #![doc = ""]
    #![doc = include_str!("../docs/contract.md")]
}
/// The driver guide: putting the machine under an event loop of your own (`mio`,
/// embassy, a game loop): the report queue, every action and what it asks of the
/// driver, the one machine timer, ids as tokens, stopping (the same text as
/// `docs/driver-guide.md` in the repository).
pub mod guide {
    #![doc = include_str!("../docs/driver-guide.md")]
}
/// Recipes for the async service (feature `tokio`): a request timeout that closes
/// a dead connection, where a handshake belongs, not replaying requests on a
/// newer connection, keeping framing state across locks.
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod recipes {
    #![doc = include_str!("../docs/recipes.md")]
}

pub use actions::{
    Action, Actions, Failure, GiveUp, LossKind, Panic, PanicSite, StopList, TimerKind, WaiterList,
};
#[cfg(feature = "std")]
pub use budget::{Budget, Budgeted};
pub use error::{ConfigError, InputError, PolicyError, Rejection};
pub use ids::{AttemptId, StopId, TimerId, WaiterId};
pub use input::{Input, InputKind};
pub use machine::{Config, Counters, Issued, Machine, ProbeConfig, Step};
pub use policy::{from_fn, Backoff, FromFn, GiveUpAfter, Jitter, RetryPolicy, SplitMix64};
pub use state::State;

/// The README's Rust examples, compiled and run as doctests (they use every adapter).
#[cfg(all(doctest, feature = "tokio", feature = "smol", feature = "async-std"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
