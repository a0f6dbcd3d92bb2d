//! The reconnect-cycle workloads shared by the criterion bench (`benches/machine.rs`),
//! the allocation test (`tests/machine/alloc.rs`) and the callgrind workload
//! (`examples/callgrind_cycle.rs`).
//!
//! One **cycle** is what a service does when a peer accepts and then drops it, with
//! a zero retry delay:
//!
//! ```text
//! Waiting --when_connected--> Waiting            (a waiter asks for the connection)
//!         --timer_fired-----> Connecting [Connect]
//!         --connection_made-> Connected  [NotifyWaiters]
//!         --connection_closed-> Waiting [ScheduleTimer(retry, 0 s)]
//! ```
//!
//! Four inputs, four non-empty action lists. The driver side here is what every
//! real driver does: it matches each action and keeps the ids it needs.
//!
//! The **floor** is the smallest hand-written enum state machine that does the
//! same cycle: no ids, no retry policy, no waiter list (a count of pending
//! waiters), and one action per input.
use std::hint::black_box;
use std::time::Duration;

use redial::{Action, Actions, AttemptId, Input, Machine, RetryPolicy, TimerId};

/// The error type the machine carries: what a real socket driver reports.
pub type Error = std::io::Error;

/// A zero retry delay, as a named policy type.
pub type ZeroDelay = fn(u32) -> Duration;

/// The policy of the cycle: retry at once, never give up.
#[inline]
pub fn zero_delay(_failed_attempts: u32) -> Duration {
    Duration::ZERO
}

/// What the driver keeps from the actions it performed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// The last attempt a `Connect` started.
    pub attempt: Option<AttemptId>,
    /// The last timer a `ScheduleTimer` armed.
    pub timer: Option<TimerId>,
    /// Waiters notified so far.
    pub notified: usize,
    /// Other actions performed so far.
    pub other: usize,
}

/// Performs one action the way a driver does: one `match`, keeping the ids it needs.
#[inline]
fn perform_one<E>(action: Action<E>, seen: &mut Seen) {
    match action {
        Action::Connect { attempt } => seen.attempt = Some(attempt),
        Action::ScheduleTimer { timer, .. } => seen.timer = Some(timer),
        Action::NotifyWaiters { waiters, .. } => {
            for waiter in &waiters {
                black_box(waiter);
            }
            seen.notified += waiters.len();
        }
        _ => seen.other += 1,
    }
}

/// Performs `actions` the way a driver does: one `match` per action.
#[inline]
pub fn perform<E>(actions: Actions<E>, seen: &mut Seen) {
    for action in actions {
        perform_one(action, seen);
    }
}

/// Performs the actions in a driver-owned buffer, leaving it empty for the next
/// input: the driver side of [`Machine::handle_into`].
#[inline]
pub fn perform_into<E>(out: &mut Actions<E>, seen: &mut Seen) {
    for action in out.drain() {
        perform_one(action, seen);
    }
}

/// A redial machine parked in `Waiting` with its retry timer armed, and the driver
/// state that goes with it.
pub struct RedialCycle<P: RetryPolicy> {
    /// The machine.
    pub machine: Machine<Error, P>,
    /// What the driver kept from its actions.
    pub seen: Seen,
}

impl<P: RetryPolicy> RedialCycle<P> {
    /// Starts a machine and runs it to `Waiting` (connect, made, lost).
    pub fn new(policy: P) -> Self {
        let mut c = RedialCycle {
            machine: Machine::new(policy),
            seen: Seen::default(),
        };
        perform(c.machine.start(), &mut c.seen);
        let attempt = c.seen.attempt.expect("start connects");
        perform(c.machine.connection_made(attempt).unwrap(), &mut c.seen);
        perform(c.machine.connection_closed(attempt).unwrap(), &mut c.seen);
        assert_eq!(c.machine.state(), redial::State::Waiting);
        c
    }

    /// One full cycle with `waiters` waiters asking while `Waiting`.
    /// Returns how many waiters were notified.
    #[inline]
    pub fn cycle(&mut self, waiters: usize) -> usize {
        let before = self.seen.notified;
        for _ in 0..waiters {
            let (waiter, actions) = black_box(&mut self.machine).when_connected(None);
            black_box(waiter);
            perform(actions, &mut self.seen);
        }
        let timer = self.seen.timer.take().expect("retry timer armed");
        perform(
            black_box(&mut self.machine).timer_fired(timer).unwrap(),
            &mut self.seen,
        );
        let attempt = self.seen.attempt.expect("attempt started");
        perform(
            black_box(&mut self.machine)
                .connection_made(attempt)
                .unwrap(),
            &mut self.seen,
        );
        perform(
            black_box(&mut self.machine)
                .connection_closed(attempt)
                .unwrap(),
            &mut self.seen,
        );
        self.seen.notified - before
    }

    /// The same cycle through [`Machine::handle_into`] and one reused buffer.
    #[inline]
    pub fn cycle_into(&mut self, waiters: usize, out: &mut Actions<Error>) -> usize {
        let before = self.seen.notified;
        let m = black_box(&mut self.machine);
        for _ in 0..waiters {
            let fail_after_failures = None;
            let issued = m.handle_into(
                Input::WhenConnected {
                    fail_after_failures,
                },
                out,
            );
            black_box(issued.unwrap());
            perform_into(out, &mut self.seen);
        }
        let timer = self.seen.timer.take().expect("retry timer armed");
        m.handle_into(Input::TimerFired { timer }, out).unwrap();
        perform_into(out, &mut self.seen);
        let attempt = self.seen.attempt.expect("attempt started");
        m.handle_into(Input::ConnectionMade { attempt }, out)
            .unwrap();
        perform_into(out, &mut self.seen);
        m.handle_into(Input::ConnectionClosed { attempt }, out)
            .unwrap();
        perform_into(out, &mut self.seen);
        self.seen.notified - before
    }
}

// ----- the floor: a minimal hand-written reconnect state machine ------------------

/// The floor's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorState {
    /// An attempt is in flight.
    Connecting,
    /// The retry timer is armed.
    Waiting,
    /// The connection is up.
    Connected,
}

/// The floor's actions: one per input, no ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorAction {
    /// Nothing to do.
    Nothing,
    /// Start an attempt.
    Connect,
    /// Hand the connection to this many waiters.
    Notify {
        /// How many.
        waiters: u32,
    },
    /// Arm the retry timer.
    ScheduleRetry {
        /// After this long.
        delay: Duration,
    },
}

/// A hand-written reconnect state machine: the least a reconnect loop can do.
#[derive(Debug)]
pub struct Floor {
    state: FloorState,
    pending: u32,
}

// `#[inline]` throughout: the floor is called from other crates (the bench, the
// callgrind example), and must be inlined there as it was when it was included.
impl Floor {
    /// A floor parked in `Waiting`.
    #[inline]
    pub fn new() -> Self {
        Floor {
            state: FloorState::Waiting,
            pending: 0,
        }
    }

    /// A waiter asks for the connection.
    #[inline]
    pub fn when_connected(&mut self) -> FloorAction {
        match self.state {
            FloorState::Connected => FloorAction::Notify { waiters: 1 },
            _ => {
                self.pending += 1;
                FloorAction::Nothing
            }
        }
    }

    /// The retry timer fired.
    #[inline]
    pub fn timer_fired(&mut self) -> FloorAction {
        match self.state {
            FloorState::Waiting => {
                self.state = FloorState::Connecting;
                FloorAction::Connect
            }
            _ => FloorAction::Nothing,
        }
    }

    /// The attempt connected.
    #[inline]
    pub fn connection_made(&mut self) -> FloorAction {
        match self.state {
            FloorState::Connecting => {
                self.state = FloorState::Connected;
                let waiters = core::mem::take(&mut self.pending);
                FloorAction::Notify { waiters }
            }
            _ => FloorAction::Nothing,
        }
    }

    /// The connection was lost.
    #[inline]
    pub fn lost(&mut self) -> FloorAction {
        match self.state {
            FloorState::Connected => {
                self.state = FloorState::Waiting;
                FloorAction::ScheduleRetry {
                    delay: Duration::ZERO,
                }
            }
            _ => FloorAction::Nothing,
        }
    }
}

impl Default for Floor {
    #[inline]
    fn default() -> Self {
        Self::new()
    }
}

/// The floor and its driver state.
#[derive(Debug, Default)]
pub struct FloorCycle {
    /// The floor.
    pub floor: Floor,
    /// `Connect` actions performed.
    pub connects: usize,
    /// Waiters notified.
    pub notified: usize,
    /// Retries scheduled.
    pub retries: usize,
}

impl FloorCycle {
    #[inline]
    fn perform(&mut self, action: FloorAction) {
        match action {
            FloorAction::Nothing => {}
            FloorAction::Connect => self.connects += 1,
            FloorAction::Notify { waiters } => self.notified += waiters as usize,
            FloorAction::ScheduleRetry { delay } => {
                black_box(delay);
                self.retries += 1;
            }
        }
    }

    /// The same cycle as [`RedialCycle::cycle`].
    #[inline]
    pub fn cycle(&mut self, waiters: usize) -> usize {
        let before = self.notified;
        for _ in 0..waiters {
            let a = black_box(&mut self.floor).when_connected();
            self.perform(a);
        }
        let a = black_box(&mut self.floor).timer_fired();
        self.perform(a);
        let a = black_box(&mut self.floor).connection_made();
        self.perform(a);
        let a = black_box(&mut self.floor).lost();
        self.perform(a);
        self.notified - before
    }
}
