//! Abstract operations and the [`World`] that turns them into concrete inputs.
//!
//! A generator cannot know which ids a machine will issue, so it produces [`Op`]s
//! that *point* at things ("the 3rd thing the driver owes a report about", "some
//! timer id issued earlier", "an attempt id 2 past the last one issued"). A
//! [`World`] follows the actions the machine returns, as a faithful driver would,
//! and resolves each op to an [`Input`] naming real ids.

use core::num::NonZeroU32;
use core::time::Duration;
use std::format;
use std::string::String;
use std::vec::Vec;

use crate::actions::{Action, Panic, PanicSite};
use crate::error::InputError;
use crate::ids::{AttemptId, TimerId, WaiterId};
use crate::input::Input;
use crate::machine::Step;

/// One abstract operation of a driver or a user.
///
/// * `Start`, `Stop`, `WhenConnected`, `Withdraw`, `ReconnectNow` are calls a user
///   makes;
/// * `Happen` is a **valid** report: something that can really happen to a thing
///   the machine asked for and is still in the world (an attempt in flight, an
///   open connection, a running prepare step, an armed timer);
/// * `Stale` is a report naming **some id issued earlier**, whatever became of it:
///   a late result of a cancelled attempt, the loss of an old connection, a
///   cancelled timer, an answered waiter — or, by chance, a current one;
/// * `Unknown` is **invalid**: a report naming an id never issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `when_connected`.
    WhenConnected {
        /// The waiter's failure threshold.
        fail_after_failures: Option<NonZeroU32>,
    },
    /// Withdraw one of the waiters still pending (picked modulo their number).
    Withdraw {
        /// Which one.
        pick: u16,
    },
    /// `reconnect_now`.
    ReconnectNow {
        /// Also reset the failure count.
        reset_backoff: bool,
    },
    /// Something that can really happen to one thing in the world (picked modulo
    /// their number); `choice` picks among what can happen to it. One `choice` in
    /// eight is a panic where user code runs for it (an attempt's connector, a
    /// connection's prepare step or its driver while it is being prepared), and
    /// another one in eight a fatal failure where one can happen (`attempt_failed_fatally`
    /// for an attempt in flight or a connection being prepared).
    Happen {
        /// Which thing.
        pick: u16,
        /// What happens to it.
        choice: u8,
    },
    /// A report of this kind naming an id issued earlier (picked modulo their number).
    Stale {
        /// The report.
        kind: ReportKind,
        /// Which id.
        pick: u16,
    },
    /// A report of this kind naming an id `offset` past the last one issued.
    Unknown {
        /// The report.
        kind: ReportKind,
        /// How far past.
        offset: u16,
    },
}

/// The kinds of report an [`Op::Stale`] or [`Op::Unknown`] can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportKind {
    /// `connection_made`.
    ConnectionMade,
    /// `connection_failed`.
    ConnectionFailed,
    /// `connect_cancelled`.
    ConnectCancelled,
    /// `prepare_succeeded`.
    PrepareSucceeded,
    /// `prepare_failed`.
    PrepareFailed,
    /// `attempt_failed_fatally`.
    AttemptFailedFatally,
    /// `connection_closed`.
    ConnectionClosed,
    /// `probe_succeeded`.
    ProbeSucceeded,
    /// `probe_failed`.
    ProbeFailed,
    /// `connection_active`.
    ConnectionActive,
    /// `panicked` (the connector panicked).
    Panicked,
    /// `timer_fired`.
    TimerFired,
    /// `cancel_waiter`.
    CancelWaiter,
}

impl ReportKind {
    /// Every kind, for generators.
    pub const ALL: [ReportKind; 13] = [
        ReportKind::ConnectionMade,
        ReportKind::ConnectionFailed,
        ReportKind::ConnectCancelled,
        ReportKind::PrepareSucceeded,
        ReportKind::PrepareFailed,
        ReportKind::AttemptFailedFatally,
        ReportKind::ConnectionClosed,
        ReportKind::ProbeSucceeded,
        ReportKind::ProbeFailed,
        ReportKind::ConnectionActive,
        ReportKind::Panicked,
        ReportKind::TimerFired,
        ReportKind::CancelWaiter,
    ];
}

/// How long a generated `connection_active` says the connection was quiet,
/// from `choice`: just now, or a spread of durations around the generated
/// probe intervals (shorter than, as long as, and longer than most).
fn quiet_for(choice: u8) -> Duration {
    match choice / 32 {
        0 | 1 => Duration::ZERO,
        2 => Duration::from_millis(1),
        3 => Duration::from_millis(250),
        4 => Duration::from_secs(1),
        5 => Duration::from_secs(3),
        6 => Duration::from_secs(10),
        _ => Duration::from_secs(60),
    }
}

/// `Op::Happen`'s `choice` from which user code panics (one in eight).
const PANIC_CHOICES: u8 = 224;
/// `Op::Happen`'s `choice` from which, below [`PANIC_CHOICES`], a failure is fatal
/// (`attempt_failed_fatally`; one in eight).
const FATAL_CHOICES: u8 = 192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    attempt: AttemptId,
    cancel_asked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    attempt: AttemptId,
    preparing: bool,
    close_asked: bool,
    /// A probe was asked (`Probe`) and not yet answered.
    probing: bool,
}

/// What a faithful driver knows, built only from the machine's actions and the
/// inputs it accepted: attempts in flight, open connections (and their prepare
/// steps), armed timers, pending waiters, and how many ids of each kind were issued.
///
/// Errors (and panic messages) in generated reports are `"e1"`, `"e2"`, … so every
/// failure is distinct.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct World {
    in_flight: Vec<InFlight>,
    open: Vec<Open>,
    timers: Vec<TimerId>,
    waiters: Vec<WaiterId>,
    attempts_issued: u64,
    timers_issued: u64,
    waiters_issued: u64,
    errors: u64,
}

impl World {
    /// A world where nothing has happened yet (for a machine in `Init`).
    pub fn new() -> World {
        World::default()
    }

    /// How many things the world holds that a [`Op::Happen`] can pick.
    pub fn things(&self) -> usize {
        self.in_flight.len() + self.open.len() + self.timers.len()
    }

    /// Waiters the driver has not seen answered or withdrawn, in registration order.
    pub fn pending_waiters(&self) -> &[WaiterId] {
        &self.waiters
    }

    fn next_error(&mut self) -> String {
        self.errors += 1;
        format!("e{}", self.errors)
    }

    /// The input this op stands for now, or `None` when it points at nothing (for
    /// example `Happen` in an empty world, or `Stale` before any id was issued).
    pub fn resolve(&mut self, op: &Op) -> Option<Input<String>> {
        Some(match *op {
            Op::Start => Input::Start,
            Op::Stop => Input::Stop,
            Op::WhenConnected {
                fail_after_failures,
            } => Input::WhenConnected {
                fail_after_failures,
            },
            Op::ReconnectNow { reset_backoff } => Input::ReconnectNow { reset_backoff },
            Op::Withdraw { pick } => {
                if self.waiters.is_empty() {
                    return None;
                }
                Input::CancelWaiter {
                    waiter: self.waiters[usize::from(pick) % self.waiters.len()],
                }
            }
            Op::Happen { pick, choice } => {
                let things = self.things();
                if things == 0 {
                    return None;
                }
                let mut i = usize::from(pick) % things;
                // `choice` 224..=255: user code run for the thing panics, if any runs.
                let panics = choice >= PANIC_CHOICES;
                // `choice` 192..=223: it fails fatally, if it can fail.
                let fatal = (FATAL_CHOICES..PANIC_CHOICES).contains(&choice);
                if i < self.in_flight.len() {
                    let InFlight {
                        attempt,
                        cancel_asked,
                    } = self.in_flight[i];
                    let options = if cancel_asked { 3 } else { 2 };
                    if panics {
                        // The connector (its closure or future) panicked: the
                        // attempt is gone, cancelled or not.
                        return Some(self.panicked(attempt, PanicSite::Connector));
                    }
                    if fatal {
                        return Some(Input::AttemptFailedFatally {
                            attempt,
                            error: self.next_error(),
                        });
                    }
                    match choice % options {
                        0 => Input::ConnectionMade { attempt },
                        1 => Input::ConnectionFailed {
                            attempt,
                            error: self.next_error(),
                        },
                        _ => Input::ConnectCancelled { attempt },
                    }
                } else {
                    i -= self.in_flight.len();
                    if i < self.open.len() {
                        let Open {
                            attempt,
                            preparing,
                            close_asked,
                            probing,
                        } = self.open[i];
                        if probing && !close_asked {
                            // Lost, or the probe answered (by its answer or by
                            // anything received) or failed.
                            return Some(match choice % 4 {
                                0 => Input::ConnectionClosed { attempt },
                                1 => Input::ProbeSucceeded { attempt },
                                2 => Input::ConnectionActive {
                                    attempt,
                                    quiet_for: quiet_for(choice),
                                },
                                _ => Input::ProbeFailed { attempt },
                            });
                        }
                        // Being prepared: lost, prepared or rejected; established:
                        // lost, or it received something.
                        let options = match (preparing, close_asked) {
                            (true, false) => 3,
                            (false, false) => 2,
                            (_, true) => 1,
                        };
                        if panics && preparing {
                            // The prepare step, or the connection's driver while it
                            // runs, panicked (even after the machine asked to close).
                            let site = if choice % 2 == 0 {
                                PanicSite::Prepare
                            } else {
                                PanicSite::Connection
                            };
                            return Some(self.panicked(attempt, site));
                        }
                        if fatal && preparing && !close_asked {
                            return Some(Input::AttemptFailedFatally {
                                attempt,
                                error: self.next_error(),
                            });
                        }
                        match choice % options {
                            0 => Input::ConnectionClosed { attempt },
                            1 if !preparing => Input::ConnectionActive {
                                attempt,
                                quiet_for: quiet_for(choice),
                            },
                            1 => Input::PrepareSucceeded { attempt },
                            _ => Input::PrepareFailed {
                                attempt,
                                error: self.next_error(),
                            },
                        }
                    } else {
                        Input::TimerFired {
                            timer: self.timers[i - self.open.len()],
                        }
                    }
                }
            }
            Op::Stale { kind, pick } => {
                let issued = match kind {
                    ReportKind::TimerFired => self.timers_issued,
                    ReportKind::CancelWaiter => self.waiters_issued,
                    _ => self.attempts_issued,
                };
                if issued == 0 {
                    return None;
                }
                self.report(kind, u64::from(pick) % issued)
            }
            Op::Unknown { kind, offset } => {
                let issued = match kind {
                    ReportKind::TimerFired => self.timers_issued,
                    ReportKind::CancelWaiter => self.waiters_issued,
                    _ => self.attempts_issued,
                };
                self.report(kind, issued + u64::from(offset))
            }
        })
    }

    fn report(&mut self, kind: ReportKind, raw: u64) -> Input<String> {
        let attempt = AttemptId::from_raw(raw);
        match kind {
            ReportKind::ConnectionMade => Input::ConnectionMade { attempt },
            ReportKind::ConnectionFailed => Input::ConnectionFailed {
                attempt,
                error: self.next_error(),
            },
            ReportKind::ConnectCancelled => Input::ConnectCancelled { attempt },
            ReportKind::PrepareSucceeded => Input::PrepareSucceeded { attempt },
            ReportKind::PrepareFailed => Input::PrepareFailed {
                attempt,
                error: self.next_error(),
            },
            ReportKind::AttemptFailedFatally => Input::AttemptFailedFatally {
                attempt,
                error: self.next_error(),
            },
            ReportKind::ConnectionClosed => Input::ConnectionClosed { attempt },
            ReportKind::ProbeSucceeded => Input::ProbeSucceeded { attempt },
            ReportKind::ProbeFailed => Input::ProbeFailed { attempt },
            ReportKind::ConnectionActive => Input::ConnectionActive {
                attempt,
                quiet_for: quiet_for(raw as u8),
            },
            ReportKind::Panicked => self.panicked(attempt, PanicSite::Connector),
            ReportKind::TimerFired => Input::TimerFired {
                timer: TimerId::from_raw(raw),
            },
            ReportKind::CancelWaiter => Input::CancelWaiter {
                waiter: WaiterId::from_raw(raw),
            },
        }
    }

    fn panicked(&mut self, attempt: AttemptId, site: PanicSite) -> Input<String> {
        Input::Panicked {
            attempt,
            panic: Panic::new(site, self.next_error()),
        }
    }

    /// Updates the world with an input and what the machine made of it: what the
    /// input says happened (if accepted), then each action, as a driver performs it.
    pub fn observe<E>(&mut self, input: &Input<E>, result: &Result<Step<E>, InputError>) {
        let Ok(step) = result else { return };
        match input {
            Input::ConnectionMade { attempt } => {
                if let Some(i) = self.in_flight.iter().position(|f| f.attempt == *attempt) {
                    self.in_flight.remove(i);
                    self.open.push(Open {
                        attempt: *attempt,
                        preparing: false,
                        close_asked: false,
                        probing: false,
                    });
                }
            }
            Input::ConnectionFailed { attempt, .. } | Input::ConnectCancelled { attempt } => {
                self.in_flight.retain(|f| f.attempt != *attempt);
            }
            Input::Panicked { attempt, .. } | Input::AttemptFailedFatally { attempt, .. } => {
                // An attempt's connector, or a connection's prepare step, panicked
                // or failed fatally.
                self.in_flight.retain(|f| f.attempt != *attempt);
                for o in self.open.iter_mut().filter(|o| o.attempt == *attempt) {
                    o.preparing = false;
                }
            }
            Input::PrepareSucceeded { attempt } | Input::PrepareFailed { attempt, .. } => {
                for o in self.open.iter_mut().filter(|o| o.attempt == *attempt) {
                    o.preparing = false;
                }
            }
            // Anything received answers an outstanding probe, as its answer does.
            Input::ProbeSucceeded { attempt }
            | Input::ProbeFailed { attempt }
            | Input::ConnectionActive { attempt, .. } => {
                for o in self.open.iter_mut().filter(|o| o.attempt == *attempt) {
                    o.probing = false;
                }
            }
            Input::ConnectionClosed { attempt } => self.open.retain(|o| o.attempt != *attempt),
            Input::TimerFired { timer } => self.timers.retain(|t| t != timer),
            Input::CancelWaiter { waiter } => self.waiters.retain(|w| w != waiter),
            Input::Start
            | Input::Stop
            | Input::WhenConnected { .. }
            | Input::ReconnectNow { .. } => {}
        }
        if let Some(waiter) = step.waiter {
            self.waiters.push(waiter);
            self.waiters_issued = self.waiters_issued.max(waiter.raw() + 1);
        }
        for action in &step.actions {
            self.perform(action);
        }
    }

    /// Updates the world with one action, as a driver performs it.
    pub fn perform<E>(&mut self, action: &Action<E>) {
        match action {
            Action::Connect { attempt } => {
                self.attempts_issued = self.attempts_issued.max(attempt.raw() + 1);
                self.in_flight.push(InFlight {
                    attempt: *attempt,
                    cancel_asked: false,
                });
            }
            Action::CancelConnect { attempt } => {
                for f in self.in_flight.iter_mut().filter(|f| f.attempt == *attempt) {
                    f.cancel_asked = true;
                }
            }
            Action::Prepare { attempt } => {
                for o in self.open.iter_mut().filter(|o| o.attempt == *attempt) {
                    o.preparing = true;
                }
            }
            Action::Disconnect { attempt } => {
                match self.open.iter_mut().find(|o| o.attempt == *attempt) {
                    Some(o) => o.close_asked = true,
                    // A connection the driver reported made for an attempt it had
                    // already given up on (an orphan): it is open until closed.
                    None => self.open.push(Open {
                        attempt: *attempt,
                        preparing: false,
                        close_asked: true,
                        probing: false,
                    }),
                }
            }
            Action::Probe { attempt } => {
                for o in self.open.iter_mut().filter(|o| o.attempt == *attempt) {
                    o.probing = true;
                }
            }
            Action::ScheduleTimer { timer, .. } => {
                self.timers_issued = self.timers_issued.max(timer.raw() + 1);
                self.timers.push(*timer);
            }
            Action::CancelTimer { timer } => self.timers.retain(|t| t != timer),
            Action::NotifyWaiters { waiters, .. }
            | Action::DeliverFailure { waiters, .. }
            | Action::CancelWaiters { waiters, .. } => {
                self.waiters.retain(|w| !waiters.contains(w));
            }
            Action::AttemptFailed { .. }
            | Action::FinishStopping { .. }
            | Action::GaveUp { .. }
            | Action::Connected { .. }
            | Action::Lost { .. }
            | Action::RetryScheduled { .. } => {}
        }
    }
}
