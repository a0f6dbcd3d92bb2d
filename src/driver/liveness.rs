//! What a connection's adapter ([`stream`](super::stream),
//! [`messages`](super::messages)) tells the service about its traffic, for the
//! liveness probe: inbound activity counts as an answer.
//!
//! The adapter keeps an [`Activity`] in its shared state and bumps it on every
//! inbound read or message (an atomic add, no wake-up). The service finds it
//! without any type of its own: while the service's task polls a connection's
//! driver future it listens on this thread ([`listen`]), and the adapter's driver
//! offers its activity when polled ([`offer`]). A connection whose driver offers
//! none (a `(handle, driver)` pair of another client) is probed as before.
//!
//! The task reads the activity only when a probe timer fires, and then tells the
//! machine first (`connection_active`) if the connection received something since
//! it last looked.

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// The traffic of one connection, as its adapter sees it.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Inbound reads that returned bytes, and messages received.
    received: AtomicU64,
    /// Something was sent (a write, a message) since the last thing received: a
    /// request waits for its answer.
    awaiting: AtomicBool,
    /// The stream is held by a guard that is not the probe's: a probe that needs
    /// it waits (that wait does not count against the probe).
    held: AtomicBool,
    /// Times the probe acquired the stream after waiting for another guard (its
    /// exchange starts then).
    probe_locks: AtomicU64,
}

impl Activity {
    /// Something was received.
    pub(crate) fn received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.awaiting.store(false, Ordering::Relaxed);
    }

    /// Something was sent.
    pub(crate) fn sent(&self) {
        self.awaiting.store(true, Ordering::Relaxed);
    }

    /// A guard was acquired (by the probe if `probe`, after waiting for another
    /// if `waited`).
    pub(crate) fn acquired(&self, probe: bool, waited: bool) {
        if probe {
            if waited {
                self.probe_locks.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.held.store(true, Ordering::Relaxed);
        }
    }

    /// The guard was released.
    pub(crate) fn released(&self) {
        self.held.store(false, Ordering::Relaxed);
    }
}

/// What the task last read from a connection's [`Activity`], and what it decided.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Seen {
    received: u64,
    probe_locks: u64,
    /// At the last probe timeout, the probe waited behind the application's own
    /// request, which was waiting for its answer.
    blocked_awaiting: bool,
}

/// What a probe timer that fired means, given the connection's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Tell the machine the connection is active before the timer.
    Active,
    /// Just the timer.
    Timer,
}

impl Seen {
    /// The probe was answered: what it received is its answer, not activity
    /// that would spare the next interval its probe.
    pub(crate) fn answered(&mut self, activity: &Activity) {
        self.received = activity.received.load(Ordering::Relaxed);
        self.blocked_awaiting = false;
    }

    /// Reads `activity` as a probe timer fires (`timeout`: the probe's timeout,
    /// else its interval).
    ///
    /// * Anything received since the last look: the connection is active (no
    ///   probe is due; an outstanding probe is answered).
    /// * At the probe's timeout, with nothing received: if the probe only now got
    ///   the stream, or still waits for it behind the application's guard, that
    ///   wait does not count: active. Except when the application's own request
    ///   has been waiting for its answer through a whole probe cycle with nothing
    ///   received: then the timeout stands (the peer is dead).
    pub(crate) fn judge(&mut self, activity: &Activity, timeout: bool) -> Verdict {
        let received = activity.received.load(Ordering::Relaxed);
        if received != self.received {
            self.received = received;
            self.blocked_awaiting = false;
            return Verdict::Active;
        }
        if !timeout {
            return Verdict::Timer;
        }
        let locks = activity.probe_locks.load(Ordering::Relaxed);
        if locks != self.probe_locks {
            self.probe_locks = locks;
            self.blocked_awaiting = false;
            return Verdict::Active;
        }
        if activity.held.load(Ordering::Relaxed) {
            let awaiting = activity.awaiting.load(Ordering::Relaxed);
            if awaiting && self.blocked_awaiting {
                return Verdict::Timer;
            }
            self.blocked_awaiting = awaiting;
            return Verdict::Active;
        }
        Verdict::Timer
    }
}

std::thread_local! {
    /// While the task polls a driver: the activity its adapter offered, if any.
    static OFFERED: Cell<Option<Arc<Activity>>> = const { Cell::new(None) };
    /// The task is polling a connection's driver future.
    static LISTENING: Cell<bool> = const { Cell::new(false) };
    /// The task is polling a probe.
    static PROBING: Cell<bool> = const { Cell::new(false) };
}

/// Resets the thread's flags even if the poll panics.
struct Reset(&'static std::thread::LocalKey<Cell<bool>>);

impl Drop for Reset {
    fn drop(&mut self) {
        self.0.with(|flag| flag.set(false));
    }
}

/// Runs `poll` (a poll of a connection's driver future) and returns what it
/// offered.
pub(crate) fn listen<T>(poll: impl FnOnce() -> T) -> (T, Option<Arc<Activity>>) {
    LISTENING.with(|flag| flag.set(true));
    let reset = Reset(&LISTENING);
    let out = poll();
    drop(reset);
    (out, OFFERED.with(Cell::take))
}

/// An adapter's driver offers its activity, made on the first offer the task
/// listens to (a connection no probing service runs allocates none).
pub(crate) fn offer(activity: &OnceLock<Arc<Activity>>) {
    if LISTENING.with(Cell::get) {
        let activity = Arc::clone(activity.get_or_init(Arc::default));
        OFFERED.with(|slot| slot.set(Some(activity)));
    }
}

/// Runs `note` on an adapter's activity, if a service made it.
pub(crate) fn note(activity: &OnceLock<Arc<Activity>>, note: impl FnOnce(&Activity)) {
    if let Some(activity) = activity.get() {
        note(activity);
    }
}

/// Runs `poll` (a poll of the probe) marked as the probe's.
pub(crate) fn as_probe<T>(poll: impl FnOnce() -> T) -> T {
    PROBING.with(|flag| flag.set(true));
    let reset = Reset(&PROBING);
    let out = poll();
    drop(reset);
    out
}

/// Whether the current poll is the probe's.
pub(crate) fn polling_probe() -> bool {
    PROBING.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_received_is_activity_once() {
        let (activity, mut seen) = (Activity::default(), Seen::default());
        assert_eq!(seen.judge(&activity, false), Verdict::Timer);
        activity.received();
        assert_eq!(seen.judge(&activity, false), Verdict::Active);
        assert_eq!(seen.judge(&activity, false), Verdict::Timer);
        activity.received();
        assert_eq!(seen.judge(&activity, true), Verdict::Active);
        assert_eq!(seen.judge(&activity, true), Verdict::Timer);
    }

    #[test]
    fn the_probes_own_answer_is_not_activity() {
        let (activity, mut seen) = (Activity::default(), Seen::default());
        activity.received(); // the pong
        seen.answered(&activity);
        assert_eq!(seen.judge(&activity, false), Verdict::Timer);
    }

    #[test]
    fn waiting_behind_a_guard_does_not_count_unless_a_request_waits_two_timeouts() {
        let (activity, mut seen) = (Activity::default(), Seen::default());
        // A reader holds the stream and sent nothing: the probe's wait never counts.
        activity.acquired(false, false);
        for _ in 0..5 {
            assert_eq!(seen.judge(&activity, true), Verdict::Active);
        }
        // Its request waits: one timeout more, then the timeout stands.
        activity.sent();
        assert_eq!(seen.judge(&activity, true), Verdict::Active);
        assert_eq!(seen.judge(&activity, false), Verdict::Timer);
        assert_eq!(seen.judge(&activity, true), Verdict::Timer);
        // Its answer comes: it starts over.
        activity.received();
        activity.sent();
        assert_eq!(seen.judge(&activity, true), Verdict::Active);
        assert_eq!(seen.judge(&activity, true), Verdict::Active);
        assert_eq!(seen.judge(&activity, true), Verdict::Timer);
        // Released: a probe that does not get an answer times out.
        activity.released();
        activity.received();
        assert_eq!(seen.judge(&activity, false), Verdict::Active);
        assert_eq!(seen.judge(&activity, true), Verdict::Timer);
    }

    #[test]
    fn a_probe_that_only_now_got_the_stream_gets_another_cycle() {
        let (activity, mut seen) = (Activity::default(), Seen::default());
        activity.acquired(true, true); // after waiting
        activity.sent();
        assert_eq!(seen.judge(&activity, true), Verdict::Active);
        assert_eq!(seen.judge(&activity, true), Verdict::Timer);
        // At once, without waiting: no second chance.
        activity.acquired(true, false);
        assert_eq!(seen.judge(&activity, true), Verdict::Timer);
    }

    #[test]
    fn offers_are_taken_only_while_listening() {
        let cell = OnceLock::new();
        offer(&cell);
        assert!(cell.get().is_none(), "nobody listened: nothing made");
        let ((), offered) = listen(|| offer(&cell));
        assert!(offered.is_some());
        assert!(Arc::ptr_eq(offered.as_ref().unwrap(), cell.get().unwrap()));
        let ((), offered) = listen(|| {});
        assert!(offered.is_none());
        assert!(!polling_probe());
        assert!(as_probe(polling_probe));
        assert!(!polling_probe());
    }
}
