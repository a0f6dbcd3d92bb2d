//! The machine's state, in a module of its own: the machine, its errors and the
//! drivers all name it, and it depends on nothing.

use core::fmt;

/// The machine's state: Twisted's seven states of `ClientService`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Never started.
    Init,
    /// An attempt, or the prepare step of its connection, is in flight.
    Connecting,
    /// The retry timer is armed.
    Waiting,
    /// The connection is up (and prepared).
    Connected,
    /// Stop requested; waiting for what is still open to go away.
    Disconnecting,
    /// As `Disconnecting`, but `start` was called meanwhile: connect once it is gone.
    Restarting,
    /// Stopped (by `stop`, or because the retry policy gave up).
    Stopped,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
