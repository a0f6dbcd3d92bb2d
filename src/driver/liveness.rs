//! What a connection's adapter ([`stream`](super::stream),
//! [`messages`](super::messages)) tells the service about its traffic, for the
//! liveness probe: inbound activity counts as an answer.
//!
//! The adapter keeps an [`Activity`] in its shared state and stamps it on every
//! inbound read or message with the time (one atomic store, no wake-up). The service finds it
//! without any type of its own: while the service's task polls a connection's
//! driver future it listens on this thread ([`listen`]), and the adapter's driver
//! offers its activity when polled ([`offer`]). A connection whose driver offers
//! none (a `(handle, driver)` pair of another client) is probed as before.
//!
//! The task reads the activity only when a probe timer fires, and then tells the
//! machine first (`connection_active`, with how long ago the last of it came) if
//! the connection received something since it last looked: the machine then
//! arms the rest of an interval from that last inbound activity, so that a
//! probe runs `interval` after it, and a peer that froze is found `interval +
//! timeout` after the last thing it sent.

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What the stamps of inbound activity count from: the first time one is read
/// or made in this process.
static BASE: OnceLock<Instant> = OnceLock::new();

fn base() -> Instant {
    *BASE.get_or_init(Instant::now)
}

/// `at` as a stamp: nanoseconds since [`BASE`], at least 1 (0 is "never").
fn stamp(at: Instant) -> u64 {
    let nanos = at.saturating_duration_since(base()).as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
}

/// How long before `now` the stamp `stamp` was ([`Duration::MAX`] for never).
fn quiet_since(stamp: u64, now: Instant) -> Duration {
    if stamp == 0 {
        return Duration::MAX;
    }
    let at = base()
        .checked_add(Duration::from_nanos(stamp))
        .unwrap_or(now);
    now.saturating_duration_since(at)
}

/// The traffic of one connection, as its adapter sees it.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// When an inbound read last returned bytes, or a message was last received:
    /// a stamp (nanoseconds since [`BASE`]; 0: never).
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
        // The base first: a stamp never comes before it.
        let _ = base();
        self.received_at(Instant::now());
    }

    /// Something was received at `at`. The latest stamp stays if receptions
    /// race.
    fn received_at(&self, at: Instant) {
        self.received.fetch_max(stamp(at), Ordering::Relaxed);
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
    /// The stamp of the last inbound activity it saw.
    received: u64,
    probe_locks: u64,
    /// At the last probe timeout, the probe waited behind the application's own
    /// request, which was waiting for its answer.
    blocked_awaiting: bool,
}

/// What a probe timer that fired means, given the connection's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Tell the machine the connection is active before the timer, quiet for
    /// this long (`connection_active`'s `quiet_for`).
    Active(Duration),
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

    /// Reads `activity` as a probe timer fires at `now` (`timeout`: the probe's
    /// timeout, else its interval).
    ///
    /// * Anything received since the last look: the connection is active, quiet
    ///   since the last of it (no probe is due before an interval after it; an
    ///   outstanding probe is answered).
    /// * At the probe's timeout, with nothing received: if the probe only now got
    ///   the stream, or still waits for it behind the application's guard, that
    ///   wait does not count: active, just now (a whole interval before the next
    ///   probe). Except when the application's own request waits for its answer:
    ///   then the probe gets one more timeout, from now (active, quiet since the
    ///   last thing received: a whole interval or more, so the machine probes
    ///   again at once), and if the request still waits with nothing received
    ///   at that timeout, it stands (the peer is dead). A request that waits
    ///   with nothing received is so found between `interval + timeout` and
    ///   `interval + 2 x timeout` after the last thing received.
    pub(crate) fn judge(&mut self, activity: &Activity, timeout: bool, now: Instant) -> Verdict {
        let received = activity.received.load(Ordering::Relaxed);
        if received != self.received {
            self.received = received;
            self.blocked_awaiting = false;
            return Verdict::Active(quiet_since(received, now));
        }
        if !timeout {
            return Verdict::Timer;
        }
        let locks = activity.probe_locks.load(Ordering::Relaxed);
        if locks != self.probe_locks {
            self.probe_locks = locks;
            self.blocked_awaiting = false;
            return Verdict::Active(Duration::ZERO);
        }
        if activity.held.load(Ordering::Relaxed) {
            if !activity.awaiting.load(Ordering::Relaxed) {
                self.blocked_awaiting = false;
                return Verdict::Active(Duration::ZERO);
            }
            if self.blocked_awaiting {
                return Verdict::Timer;
            }
            self.blocked_awaiting = true;
            return Verdict::Active(quiet_since(received, now));
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

    const MS: Duration = Duration::from_millis(1);

    /// `judge` at `now`, the verdict's quiet time rounded to whole milliseconds.
    fn judge(seen: &mut Seen, activity: &Activity, timeout: bool, now: Instant) -> Verdict {
        match seen.judge(activity, timeout, now) {
            Verdict::Active(quiet) => Verdict::Active(MS * (quiet.as_millis() as u32)),
            Verdict::Timer => Verdict::Timer,
        }
    }

    #[test]
    fn anything_received_is_activity_once_with_how_long_ago() {
        let (activity, mut seen) = (Activity::default(), Seen::default());
        let t0 = base() + Duration::from_secs(1);
        assert_eq!(judge(&mut seen, &activity, false, t0), Verdict::Timer);
        activity.received_at(t0);
        assert_eq!(
            judge(&mut seen, &activity, false, t0 + 30 * MS),
            Verdict::Active(30 * MS)
        );
        assert_eq!(
            judge(&mut seen, &activity, false, t0 + 40 * MS),
            Verdict::Timer
        );
        activity.received_at(t0 + 50 * MS);
        assert_eq!(
            judge(&mut seen, &activity, true, t0 + 50 * MS),
            Verdict::Active(Duration::ZERO)
        );
        assert_eq!(
            judge(&mut seen, &activity, true, t0 + 60 * MS),
            Verdict::Timer
        );
        // Receptions that race keep the latest.
        activity.received_at(t0 + 90 * MS);
        activity.received_at(t0 + 70 * MS);
        assert_eq!(
            judge(&mut seen, &activity, false, t0 + 100 * MS),
            Verdict::Active(10 * MS)
        );
    }

    #[test]
    fn never_received_is_quiet_forever() {
        assert_eq!(quiet_since(0, Instant::now()), Duration::MAX);
        let now = Instant::now();
        assert_eq!(quiet_since(stamp(now), now), Duration::ZERO);
        assert!(stamp(base()) >= 1, "0 is kept for never");
    }

    #[test]
    fn the_probes_own_answer_is_not_activity() {
        let (activity, mut seen) = (Activity::default(), Seen::default());
        activity.received(); // the pong
        seen.answered(&activity);
        assert_eq!(seen.judge(&activity, false, Instant::now()), Verdict::Timer);
    }

    #[test]
    fn waiting_behind_a_guard_does_not_count_unless_a_request_waits_two_timeouts() {
        let (activity, mut seen) = (Activity::default(), Seen::default());
        let t0 = base() + Duration::from_secs(1);
        activity.received_at(t0);
        seen.answered(&activity);
        let now = t0 + 400 * MS;
        // A reader holds the stream and sent nothing: the probe's wait never counts.
        activity.acquired(false, false);
        for _ in 0..5 {
            assert_eq!(
                judge(&mut seen, &activity, true, now),
                Verdict::Active(Duration::ZERO)
            );
        }
        // Its request waits: one timeout more (quiet since the last thing
        // received: the machine probes again at once), then the timeout stands.
        activity.sent();
        assert_eq!(
            judge(&mut seen, &activity, true, now),
            Verdict::Active(400 * MS)
        );
        assert_eq!(judge(&mut seen, &activity, false, now), Verdict::Timer);
        assert_eq!(
            judge(&mut seen, &activity, true, now + 200 * MS),
            Verdict::Timer
        );
        // Its answer comes: it starts over.
        activity.received_at(now + 250 * MS);
        activity.sent();
        let later = now + 250 * MS + 400 * MS;
        assert_eq!(
            judge(&mut seen, &activity, true, later),
            Verdict::Active(400 * MS)
        );
        assert_eq!(
            judge(&mut seen, &activity, true, later),
            Verdict::Active(400 * MS)
        );
        assert_eq!(judge(&mut seen, &activity, true, later), Verdict::Timer);
        // Released: a probe that does not get an answer times out.
        activity.released();
        activity.received_at(later);
        assert_eq!(
            judge(&mut seen, &activity, false, later),
            Verdict::Active(Duration::ZERO)
        );
        assert_eq!(judge(&mut seen, &activity, true, later), Verdict::Timer);
    }

    #[test]
    fn a_probe_that_only_now_got_the_stream_gets_another_cycle() {
        let (activity, mut seen) = (Activity::default(), Seen::default());
        let now = Instant::now();
        activity.acquired(true, true); // after waiting
        activity.sent();
        assert_eq!(
            judge(&mut seen, &activity, true, now),
            Verdict::Active(Duration::ZERO)
        );
        assert_eq!(judge(&mut seen, &activity, true, now), Verdict::Timer);
        // At once, without waiting: no second chance.
        activity.acquired(true, false);
        assert_eq!(judge(&mut seen, &activity, true, now), Verdict::Timer);
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
