//! The [invariants](crate::contract#invariants) of the behaviour contract, checked
//! after every input from the outside.

use core::fmt;
use std::collections::BTreeSet;
use std::format;
use std::string::String;
use std::vec::Vec;

use crate::actions::{Action, TimerKind, INLINE_ACTIONS};
use crate::error::InputError;
use crate::ids::{AttemptId, StopId, TimerId, WaiterId};
use crate::input::Input;
use crate::machine::{Machine, Step};
use crate::policy::RetryPolicy;
use crate::state::State;

/// A ledger of everything a machine has said, checking the invariants of the
/// [behaviour contract](crate::contract#invariants) after every input.
///
/// It is built only from the inputs and the actions (not from the machine's
/// insides), and compares its ledger with what the machine reports through its
/// public reading methods:
///
/// 1. at most one attempt or connection is current, and `Connect` is never asked
///    while one is;
/// 2. every waiter is answered at most once, never after being withdrawn, and the
///    machine's pending waiters are exactly the unanswered ones;
/// 3. every stop is finished exactly once, all pending stops together, and only
///    when nothing is left (no attempt or connection outstanding; when `Stopped`,
///    nothing current and no timer);
/// 4. at most one timer is armed, a timer is only cancelled while armed, and the
///    machine's armed timer is the ledger's;
/// 5. ids are fresh: attempts, timers, waiters and stops are issued 0, 1, 2, …;
/// 6. waiter and stop lists come in registration / call order;
/// 7. every failed attempt leaves through one action: each input that counts a
///    failure (the machine's `counters().failures`) emits exactly one
///    `AttemptFailed`, naming the attempt that was current before it, and a
///    `DeliverFailure` comes right after an `AttemptFailed`;
/// 8. no input yields more than [`INLINE_ACTIONS`](crate::actions::INLINE_ACTIONS)
///    actions (so action lists never allocate), and `Counters::flaps` never
///    exceeds `losses` and stays 0 without `reset_backoff_after`;
/// 9. the machine gives up on fatal failures (`GaveUp { fatal: true }`) only on a
///    `attempt_failed_fatally` that brings the streak of fatal failures to
///    `Config::give_up_after_fatal`;
/// 10. probes: `Probe` is asked only for the connection while `Connected`, and
///     only with [`Config::probe`](crate::Config::probe); the probe timers are
///     armed only while `Connected`, and while `Connected` with probes one of
///     them always is (the one machine timer), never the healthy timer;
/// 11. facts are told, exactly and in step with the machine: one `Connected`
///     per connection made (naming the connection, its generation the count of
///     connections), one `Lost` per loss and one `flap` per flap (matching
///     `Counters`), `AttemptFailed` and `RetryScheduled` carry the machine's
///     consecutive failures, `RetryScheduled` ends an input that leaves the
///     machine `Waiting` and `GaveUp` one that leaves it `Stopped`, and a
///     `DeliverFailure` that says it gave up carries the figures of the `GaveUp`
///     that ends its list;
/// 12. activity is only liveness: an accepted `connection_active` asks for
///     nothing but, with a probe outstanding, `CancelTimer` of its timeout and
///     `ScheduleTimer` of the next interval, or, when the connection was quiet
///     for a whole interval, of the next probe's timeout after `Probe` (it never
///     closes, loses or answers anyone).
///
/// That bad input changes nothing is checked by comparing the machine with a clone
/// taken before the input; see [`check_unchanged`](Invariants::check_unchanged).
#[derive(Debug, Clone, Default)]
pub struct Invariants {
    current: Option<AttemptId>,
    attempts: u64,
    timers: u64,
    armed: Vec<TimerId>,
    waiters: u64,
    pending: Vec<WaiterId>,
    answered: BTreeSet<WaiterId>,
    withdrawn: BTreeSet<WaiterId>,
    stops: u64,
    stops_pending: Vec<StopId>,
    /// `AttemptFailed` actions seen.
    failures: u64,
    /// `Connected` facts seen.
    connections: u64,
    /// `Lost` facts seen, and those that were flaps.
    losses: u64,
    flaps: u64,
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

impl Invariants {
    /// A ledger for a machine in `Init`.
    pub fn new() -> Invariants {
        Invariants::default()
    }

    /// Checks that a rejected input changed nothing: `before` is a clone of the
    /// machine taken before the input, `after` the machine now.
    ///
    /// # Errors
    ///
    /// A description of the violation.
    pub fn check_unchanged<E: PartialEq, P: PartialEq>(
        before: &Machine<E, P>,
        after: &Machine<E, P>,
    ) -> Result<(), String> {
        ensure(before == after, || {
            String::from("invariant 5: an input that must change nothing changed the machine")
        })
    }

    /// Records one input and what the machine made of it, and checks the
    /// invariants against the machine after it.
    ///
    /// # Errors
    ///
    /// A description of the first violation.
    pub fn check<E: fmt::Debug, P: RetryPolicy>(
        &mut self,
        input: &Input<E>,
        result: &Result<Step<E>, InputError>,
        machine: &Machine<E, P>,
    ) -> Result<(), String> {
        let Ok(step) = result else {
            return Ok(());
        };
        if let Input::ConnectionActive { .. } = input {
            let only_rearms = match &step.actions[..] {
                [] => true,
                [Action::CancelTimer { .. }, Action::ScheduleTimer { kind, .. }] => {
                    *kind == crate::actions::TimerKind::ProbeInterval
                }
                [Action::CancelTimer { .. }, Action::Probe { attempt }, Action::ScheduleTimer { kind, .. }] => {
                    *kind == crate::actions::TimerKind::ProbeTimeout
                        && Some(*attempt) == self.current
                }
                _ => false,
            };
            ensure(only_rearms, || {
                format!(
                    "invariant 12: connection_active asked for {:?}",
                    step.actions
                )
            })?;
        }
        let was_current = self.current;
        // What the accepted input itself says.
        match input {
            Input::ConnectionFailed { attempt, .. }
            | Input::AttemptFailedFatally { attempt, .. }
            | Input::ConnectionClosed { attempt }
            | Input::Panicked { attempt, .. }
                if self.current == Some(*attempt) =>
            {
                self.current = None;
            }
            Input::TimerFired { timer } => self.armed.retain(|t| t != timer),
            Input::CancelWaiter { waiter } => {
                if let Some(i) = self.pending.iter().position(|w| w == waiter) {
                    self.pending.remove(i);
                    self.withdrawn.insert(*waiter);
                }
            }
            _ => {}
        }
        if let Some(waiter) = step.waiter {
            ensure(waiter.raw() == self.waiters, || {
                format!("invariant 5: new {waiter} is not fresh")
            })?;
            self.waiters += 1;
            self.pending.push(waiter);
        }
        if let Some(stop) = step.stop {
            ensure(stop.raw() == self.stops, || {
                format!("invariant 5: new {stop} is not fresh")
            })?;
            self.stops += 1;
            self.stops_pending.push(stop);
        }
        ensure(step.actions.len() <= INLINE_ACTIONS, || {
            format!(
                "invariant 8: {} actions for one input, more than INLINE_ACTIONS ({INLINE_ACTIONS})",
                step.actions.len()
            )
        })?;
        let mut finished = false;
        let mut previous: Option<&Action<E>> = None;
        let failures_before = self.failures;
        for action in &step.actions {
            match action {
                Action::AttemptFailed { attempt, .. } => {
                    ensure(self.failures == failures_before, || {
                        String::from("invariant 7: two attempt_failed for one input")
                    })?;
                    ensure(was_current == Some(*attempt), || {
                        format!("invariant 7: {attempt} failed, but {was_current:?} was current")
                    })?;
                    self.failures += 1;
                }
                Action::DeliverFailure { gave_up, .. } => {
                    ensure(
                        matches!(previous, Some(Action::AttemptFailed { .. })),
                        || {
                            String::from(
                                "invariant 7: deliver_failure not right after attempt_failed",
                            )
                        },
                    )?;
                    if let Some(gave_up) = gave_up {
                        let told = step.actions.last().and_then(|last| match last {
                            Action::GaveUp {
                                consecutive_failures,
                                fatal,
                            } => Some((*consecutive_failures, *fatal)),
                            _ => None,
                        });
                        ensure(
                            told == Some((gave_up.consecutive_failures, gave_up.fatal)),
                            || {
                                format!("invariant 11: deliver_failure says {gave_up:?}, the list ends with {:?}", step.actions.last())
                            },
                        )?;
                    }
                }
                Action::GaveUp { fatal: true, .. } => ensure(
                    matches!(input, Input::AttemptFailedFatally { .. })
                        && machine.fatal_streak() >= machine.config().give_up_after_fatal.get(),
                    || {
                        format!(
                            "invariant 9: gave up on fatal failures after {input:?} with a streak of {}",
                            machine.fatal_streak()
                        )
                    },
                )?,
                Action::Connected {
                    attempt,
                    generation,
                } => {
                    self.connections += 1;
                    ensure(
                        machine.connection() == Some(*attempt)
                            && *generation == self.connections
                            && *generation == machine.counters().connections,
                        || {
                            format!("invariant 11: connected {attempt} generation={generation}, the machine has {:?} and {:?}", machine.connection(), machine.counters())
                        },
                    )?;
                }
                Action::Lost { attempt, flap, .. } => {
                    self.losses += 1;
                    self.flaps += u64::from(*flap);
                    ensure(machine.current_attempt() != Some(*attempt), || {
                        format!("invariant 11: {attempt} lost but still current")
                    })?;
                }
                Action::RetryScheduled {
                    consecutive_failures,
                    ..
                } => ensure(
                    core::ptr::eq(action, &step.actions[step.actions.len() - 1])
                        && machine.state() == State::Waiting
                        && *consecutive_failures == machine.consecutive_failures(),
                    || {
                        format!("invariant 11: {action:?} (not last, or the machine is {:?} with {} failures)", machine.state(), machine.consecutive_failures())
                    },
                )?,
                _ => {}
            }
            match action {
                Action::AttemptFailed {
                    consecutive_failures,
                    ..
                }
                | Action::GaveUp {
                    consecutive_failures,
                    ..
                } => ensure(
                    *consecutive_failures == machine.consecutive_failures(),
                    || {
                        format!(
                            "invariant 11: {action:?}, the machine counts {} failures",
                            machine.consecutive_failures()
                        )
                    },
                )?,
                _ => {}
            }
            self.action(action, machine, &mut finished)?;
            previous = Some(action);
        }
        let counters = machine.counters();
        ensure(
            counters.connections == self.connections
                && counters.losses == self.losses
                && counters.flaps == self.flaps,
            || {
                format!(
                    "invariant 11: told {} connected, {} lost, {} flaps; the machine counts {counters:?}",
                    self.connections, self.losses, self.flaps
                )
            },
        )?;
        let counters = machine.counters();
        ensure(
            counters.flaps <= counters.losses
                && (counters.flaps == 0 || machine.config().reset_backoff_after.is_some()),
            || {
                format!(
                    "invariant 8: {counters:?} (flaps without reset_backoff_after, or above losses)"
                )
            },
        )?;
        ensure(machine.counters().failures == self.failures, || {
            format!(
                "invariant 7: the machine counts {} failures, {} attempt_failed were emitted",
                machine.counters().failures,
                self.failures
            )
        })?;
        self.after(machine, finished)
    }

    fn answer(&mut self, waiters: &[WaiterId], what: &str) -> Result<(), String> {
        ensure(waiters.windows(2).all(|w| w[0] < w[1]), || {
            format!("invariant 2: {what} waiters not in registration order: {waiters:?}")
        })?;
        ensure(!waiters.is_empty(), || format!("{what} with no waiters"))?;
        for w in waiters {
            ensure(!self.answered.contains(w), || {
                format!("invariant 2: {w} answered twice ({what})")
            })?;
            ensure(!self.withdrawn.contains(w), || {
                format!("invariant 2: {w} answered after it was withdrawn ({what})")
            })?;
            ensure(self.pending.contains(w), || {
                format!("invariant 2: {w} answered but never registered ({what})")
            })?;
            self.pending.retain(|p| p != w);
            self.answered.insert(*w);
        }
        Ok(())
    }

    fn action<E: fmt::Debug, P: RetryPolicy>(
        &mut self,
        action: &Action<E>,
        machine: &Machine<E, P>,
        finished: &mut bool,
    ) -> Result<(), String> {
        match action {
            Action::Connect { attempt } => {
                ensure(self.current.is_none(), || {
                    format!(
                        "invariant 1: connect {attempt} while {:?} is current",
                        self.current
                    )
                })?;
                ensure(attempt.raw() == self.attempts, || {
                    format!("invariant 5: {attempt} is not fresh")
                })?;
                self.attempts += 1;
                self.current = Some(*attempt);
            }
            Action::CancelConnect { attempt } | Action::Disconnect { attempt } => {
                if self.current == Some(*attempt) {
                    self.current = None;
                }
                ensure(attempt.raw() < self.attempts, || {
                    format!("{attempt} cancelled or closed but never issued")
                })?;
            }
            Action::Prepare { attempt } => ensure(self.current == Some(*attempt), || {
                format!("prepare {attempt}, which is not current")
            })?,
            Action::Probe { attempt } => ensure(
                machine.config().probe.is_some()
                    && machine.state() == State::Connected
                    && machine.connection() == Some(*attempt),
                || format!("invariant 10: probe {attempt}, which is not the connection"),
            )?,
            Action::ScheduleTimer { timer, .. } => {
                ensure(self.armed.is_empty(), || {
                    format!(
                        "invariant 4: {timer} scheduled while {:?} is armed",
                        self.armed
                    )
                })?;
                ensure(timer.raw() == self.timers, || {
                    format!("invariant 5: {timer} is not fresh")
                })?;
                self.timers += 1;
                self.armed.push(*timer);
            }
            Action::CancelTimer { timer } => {
                ensure(self.armed.contains(timer), || {
                    format!("invariant 4: cancel {timer}, which is not armed")
                })?;
                self.armed.retain(|t| t != timer);
            }
            Action::NotifyWaiters { attempt, waiters } => {
                self.answer(waiters, "notify")?;
                ensure(machine.connection() == Some(*attempt), || {
                    format!("waiters notified of {attempt}, which is not the connection")
                })?;
            }
            Action::AttemptFailed { .. } => {}
            Action::DeliverFailure { waiters, .. } => self.answer(waiters, "deliver_failure")?,
            Action::CancelWaiters { waiters, .. } => self.answer(waiters, "cancel_waiters")?,
            Action::FinishStopping { stops } => {
                ensure(stops[..] == self.stops_pending[..], || {
                    format!(
                        "invariant 3: finished {stops:?}, pending were {:?}",
                        self.stops_pending
                    )
                })?;
                self.stops_pending.clear();
                *finished = true;
            }
            Action::GaveUp { .. } => ensure(machine.state() == State::Stopped, || {
                String::from("gave up but not Stopped")
            })?,
            // Checked with the whole list, above.
            Action::Connected { .. } | Action::Lost { .. } | Action::RetryScheduled { .. } => {}
        }
        Ok(())
    }

    fn after<E, P: RetryPolicy>(
        &self,
        machine: &Machine<E, P>,
        finished: bool,
    ) -> Result<(), String> {
        let state = machine.state();
        ensure(machine.current_attempt() == self.current, || {
            format!(
                "invariant 1: machine's current attempt {:?}, ledger says {:?}",
                machine.current_attempt(),
                self.current
            )
        })?;
        ensure(
            matches!(state, State::Connecting | State::Connected) == self.current.is_some(),
            || {
                format!(
                    "invariant 1: {state} with current attempt {:?}",
                    self.current
                )
            },
        )?;
        let armed = machine.armed_timer();
        ensure(armed.map(|(t, _)| t) == self.armed.first().copied(), || {
            format!(
                "invariant 4: machine's armed timer {armed:?}, ledger says {:?}",
                self.armed
            )
        })?;
        ensure(
            (state == State::Waiting) == matches!(armed, Some((_, TimerKind::Retry))),
            || format!("invariant 4: {state} with timer {armed:?}"),
        )?;
        let probe_timer = matches!(
            armed,
            Some((_, TimerKind::ProbeInterval | TimerKind::ProbeTimeout))
        );
        ensure(!probe_timer || state == State::Connected, || {
            format!("invariant 10: {state} with timer {armed:?}")
        })?;
        if machine.config().probe.is_some() && state == State::Connected {
            ensure(probe_timer, || {
                format!("invariant 10: connected with probes, but the timer is {armed:?}")
            })?;
        }
        let pending: Vec<WaiterId> = machine.pending_waiters().collect();
        ensure(pending == self.pending, || {
            format!(
                "invariant 2: machine's pending waiters {pending:?}, ledger says {:?}",
                self.pending
            )
        })?;
        ensure(machine.pending_stops() == &self.stops_pending[..], || {
            format!(
                "invariant 3: machine's pending stops {:?}, ledger says {:?}",
                machine.pending_stops(),
                self.stops_pending
            )
        })?;
        ensure(
            self.stops_pending.is_empty()
                || matches!(state, State::Disconnecting | State::Restarting),
            || format!("invariant 3: stops pending in {state}"),
        )?;
        ensure(
            self.pending.is_empty() || !matches!(state, State::Connected | State::Stopped),
            || format!("invariant 2: waiters pending in {state}"),
        )?;
        if finished {
            ensure(machine.outstanding().next().is_none(), || {
                String::from(
                    "invariant 3 (D7): a stop finished with an attempt or connection outstanding",
                )
            })?;
            ensure(
                state != State::Stopped || (self.current.is_none() && self.armed.is_empty()),
                || String::from("invariant 3 (D7): stopped with something current or armed"),
            )?;
        }
        Ok(())
    }
}
