//! [`Connections`]: where each attempt and connection stands, as the driver knows it.

use std::collections::BTreeMap;

use crate::actions::Action;
use crate::error::InputError;
use crate::ids::AttemptId;
use crate::input::Input;
use crate::machine::Step;

/// Where one attempt, or the connection it made, stands (see [`Connections`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnState {
    /// The attempt is in flight (`Connect` was asked, no outcome reported yet).
    Connecting,
    /// The machine asked to cancel the attempt (`CancelConnect`); it is not
    /// reported gone yet.
    Cancelling,
    /// The attempt ended without a connection: it failed, panicked or was
    /// cancelled.
    NeverConnected,
    /// The connection is open and its prepare step runs (`Prepare` was asked, no
    /// result reported yet).
    Preparing,
    /// The connection is open, and prepared if a prepare step is configured: the
    /// one state in which an application may use it.
    Open,
    /// The machine asked to close the connection (`Disconnect`); it is not
    /// reported closed yet. Nothing may be sent on it any more.
    Closing,
    /// Closed as the machine asked (`connection_closed` after `Disconnect`).
    Closed,
    /// Lost: reported closed (`connection_closed`) without the machine asking.
    Lost,
}

impl ConnState {
    /// Whether the attempt or connection is still outstanding for the driver: in
    /// flight, open, or asked to cancel or close and not reported gone.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            ConnState::Connecting
                | ConnState::Cancelling
                | ConnState::Preparing
                | ConnState::Open
                | ConnState::Closing
        )
    }
}

/// A ledger of every attempt a machine asked for and what became of it, built only
/// from the inputs fed and the actions returned, as a faithful driver knows it.
///
/// [`Sim`](super::Sim) and [`run_app`](super::run_app) keep one and hand it to
/// [`App::check`](super::App::check), so that an application's property can say
/// "only ever send on an [`Open`](ConnState::Open) connection" without tracking
/// connections by hand; [`Sim::connection`](super::Sim::connection) reads it too.
///
/// It follows each report and action: `Connect` makes an attempt
/// [`Connecting`](ConnState::Connecting), `connection_made` makes it
/// [`Open`](ConnState::Open) (`Prepare`, in the same actions, makes it
/// [`Preparing`](ConnState::Preparing) until the prepare result), `Disconnect`
/// makes it [`Closing`](ConnState::Closing), and `connection_closed` makes it
/// [`Closed`](ConnState::Closed) (or [`Lost`](ConnState::Lost) if nobody asked).
/// After each input its state is the state once the input's actions are
/// performed: a connection the machine asks to close in this input is already
/// `Closing`.
///
/// ```
/// use redial::testing::{ConnState, Connections};
/// use redial::{Input, Machine};
///
/// let mut machine: Machine<&str> = Machine::default();
/// let mut connections = Connections::new();
/// let mut feed = |input: Input<&'static str>| {
///     let result = machine.handle(input.clone());
///     connections.observe(&input, &result);
///     (machine.current_attempt(), connections.clone())
/// };
/// let (current, seen) = feed(Input::Start);
/// let attempt = current.unwrap();
/// assert_eq!(seen.get(attempt), Some(ConnState::Connecting));
/// let (_, seen) = feed(Input::ConnectionMade { attempt });
/// assert_eq!(seen.get(attempt), Some(ConnState::Open));
/// let (_, seen) = feed(Input::Stop);
/// assert_eq!(seen.get(attempt), Some(ConnState::Closing));
/// let owed: Vec<Input<&str>> = seen.owed().collect();
/// assert_eq!(owed, [Input::ConnectionClosed { attempt }]);
/// let (_, seen) = feed(Input::ConnectionClosed { attempt });
/// assert_eq!(seen.get(attempt), Some(ConnState::Closed));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connections {
    states: BTreeMap<AttemptId, ConnState>,
}

impl Connections {
    /// A ledger for a machine in `Init`: no attempt yet.
    pub fn new() -> Connections {
        Connections::default()
    }

    /// Where this attempt (or its connection) stands; `None` if the machine never
    /// asked for it.
    pub fn get(&self, attempt: AttemptId) -> Option<ConnState> {
        self.states.get(&attempt).copied()
    }

    /// Whether this connection is [`Open`](ConnState::Open): made, prepared (if
    /// configured), and neither asked to close nor closed.
    pub fn is_open(&self, attempt: AttemptId) -> bool {
        self.get(attempt) == Some(ConnState::Open)
    }

    /// Every attempt the machine asked for, in order, with where it stands.
    pub fn iter(&self) -> impl Iterator<Item = (AttemptId, ConnState)> + '_ {
        self.states.iter().map(|(a, s)| (*a, *s))
    }

    /// The reports a driver still owes for what the machine asked to cancel or
    /// close: `connect_cancelled` for each attempt [`Cancelling`](ConnState::Cancelling),
    /// `connection_closed` for each connection [`Closing`](ConnState::Closing).
    /// Until they are fed, no stop finishes.
    pub fn owed<E>(&self) -> impl Iterator<Item = Input<E>> + '_ {
        self.states
            .iter()
            .filter_map(|(attempt, state)| match state {
                ConnState::Cancelling => Some(Input::ConnectCancelled { attempt: *attempt }),
                ConnState::Closing => Some(Input::ConnectionClosed { attempt: *attempt }),
                _ => None,
            })
    }

    /// Updates the ledger with one input and what the machine made of it: what the
    /// input says happened (if accepted), then each action.
    pub fn observe<E>(&mut self, input: &Input<E>, result: &Result<Step<E>, InputError>) {
        let Ok(step) = result else { return };
        self.report(input);
        for action in &step.actions {
            self.perform(action);
        }
    }

    /// What an accepted report says happened.
    fn report<E>(&mut self, input: &Input<E>) {
        use ConnState::*;
        let (attempt, next): (AttemptId, fn(ConnState) -> ConnState) = match input {
            Input::ConnectionMade { attempt } => (*attempt, |_| Open),
            Input::ConnectionFailed { attempt, .. } | Input::ConnectCancelled { attempt } => {
                (*attempt, |s| match s {
                    Connecting | Cancelling => NeverConnected,
                    other => other,
                })
            }
            // The connector panicked or failed fatally (the attempt is gone), or the
            // prepare step or the connection's driver did while preparing (the
            // machine asks to close).
            Input::Panicked { attempt, .. } | Input::AttemptFailedFatally { attempt, .. } => {
                (*attempt, |s| match s {
                    Connecting | Cancelling => NeverConnected,
                    Preparing => Open,
                    other => other,
                })
            }
            Input::PrepareSucceeded { attempt } | Input::PrepareFailed { attempt, .. } => {
                (*attempt, |s| match s {
                    Preparing => Open,
                    other => other,
                })
            }
            Input::ConnectionClosed { attempt } => (*attempt, |s| match s {
                Closing => Closed,
                Open | Preparing => Lost,
                other => other,
            }),
            // No connection changes by these alone (a failed probe's connection is
            // closed through the `Disconnect` the machine asks for).
            Input::Start
            | Input::Stop
            | Input::WhenConnected { .. }
            | Input::CancelWaiter { .. }
            | Input::TimerFired { .. }
            | Input::ReconnectNow { .. }
            | Input::ProbeSucceeded { .. }
            | Input::ProbeFailed { .. }
            | Input::ConnectionActive { .. } => return,
        };
        // A report about an attempt never asked for changes nothing: the machine
        // accepts it only as stale, and then it names an attempt it issued.
        if let Some(state) = self.states.get_mut(&attempt) {
            *state = next(*state);
        }
    }

    /// Updates the ledger with one action, as a driver performs it.
    pub fn perform<E>(&mut self, action: &Action<E>) {
        use ConnState::*;
        match action {
            Action::Connect { attempt } => {
                self.states.insert(*attempt, Connecting);
            }
            Action::CancelConnect { attempt } => {
                if let Some(state @ Connecting) = self.states.get_mut(attempt) {
                    *state = Cancelling;
                }
            }
            Action::Prepare { attempt } => {
                if let Some(state @ Open) = self.states.get_mut(attempt) {
                    *state = Preparing;
                }
            }
            // Also for an orphan: a connection made by an attempt given up on.
            Action::Disconnect { attempt } => {
                self.states.insert(*attempt, Closing);
            }
            _ => {}
        }
    }
}
