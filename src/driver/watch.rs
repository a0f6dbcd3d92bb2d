//! [`StateWatch`]: the latest state of a service, and a way to wait for it to change.

use core::fmt;
use std::sync::{Arc, Mutex};

use event_listener::Event;

use crate::machine::State;

/// What watchers see; not generic, so watchers need not name the service's types.
pub(crate) struct Watch {
    event: Event,
    cell: Mutex<Seen>,
}

#[derive(Clone, Copy)]
struct Seen {
    version: u64,
    state: State,
    ended: bool,
}

impl Watch {
    pub(crate) fn new(state: State, ended: bool) -> Watch {
        Watch {
            event: Event::new(),
            cell: Mutex::new(Seen {
                version: 0,
                state,
                ended,
            }),
        }
    }

    fn read(&self) -> Seen {
        *self.cell.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new state (or the end) and wakes every watcher.
    pub(crate) fn publish(&self, state: State, ended: bool) {
        {
            let mut cell = self.cell.lock().unwrap_or_else(|e| e.into_inner());
            if cell.state == state && cell.ended == ended {
                return;
            }
            *cell = Seen {
                version: cell.version + 1,
                state,
                ended,
            };
        }
        self.event.notify(usize::MAX);
    }
}

/// Watches a service's state; from [`ClientService::watch`](super::ClientService::watch).
///
/// Like a watch channel, it reports the latest state: changes in quick succession
/// may be seen as one.
#[derive(Clone)]
pub struct StateWatch {
    watch: Arc<Watch>,
    seen: u64,
}

impl fmt::Debug for StateWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seen = self.watch.read();
        f.debug_struct("StateWatch")
            .field("state", &seen.state)
            .field("ended", &seen.ended)
            .finish()
    }
}

impl StateWatch {
    pub(crate) fn new(watch: Arc<Watch>) -> StateWatch {
        let seen = watch.read().version;
        StateWatch { watch, seen }
    }

    /// The current state ([`State::Stopped`] once the service's task has ended).
    pub fn state(&self) -> State {
        self.watch.read().state
    }

    /// Whether the service's task has ended (see
    /// [`ClientService::ended`](super::ClientService::ended)).
    pub fn is_ended(&self) -> bool {
        self.watch.read().ended
    }

    /// Waits for the state to change from the last one this watcher saw, and returns
    /// the new state; `None` once the service's task has ended.
    pub async fn changed(&mut self) -> Option<State> {
        loop {
            let check = |this: &mut Self| {
                let seen = this.watch.read();
                if seen.version != this.seen {
                    this.seen = seen.version;
                    return Some((!seen.ended).then_some(seen.state));
                }
                seen.ended.then_some(None)
            };
            if let Some(result) = check(self) {
                return result;
            }
            let listener = self.watch.event.listen();
            if let Some(result) = check(self) {
                return result;
            }
            listener.await;
        }
    }
}
