//! The machine's pending waiters: a queue in registration order from which any
//! waiter can be withdrawn in O(log n) amortised, wherever it stands.
//!
//! A withdrawn waiter becomes a tombstone in place (found by binary search, since
//! ids are issued in registration order): nothing shifts. Tombstones at either end
//! are popped at once, so withdrawing the oldest or the newest waiter is O(1) and
//! the queue never starts or ends with one. Tombstones left in the middle are
//! compacted away in one pass once they outnumber the pending waiters (and a small
//! floor), which costs O(1) amortised per withdrawal. Every reader skips them.
//!
//! Nothing here allocates except growing the queue when more waiters are pending
//! than ever before.

use alloc::collections::vec_deque::{self, VecDeque};
use core::iter::FusedIterator;

use crate::actions::{WaiterList, WaiterListBuilder};
use crate::ids::WaiterId;

/// Tombstones are compacted away only once there are more of them than this (and
/// more than pending waiters): a few withdrawals never cost a pass over the queue.
const COMPACT_FLOOR: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Waiting to be answered; failed when the failure count reaches `fail_at`.
    Pending { fail_at: Option<u64> },
    /// Withdrawn: a tombstone, never answered.
    Withdrawn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: WaiterId,
    slot: Slot,
}

// A tombstone costs no space of its own: `Slot` fits in `Option<u64>`'s niche.
const _: () = assert!(core::mem::size_of::<Entry>() == 24);

impl Entry {
    #[inline]
    fn pending(&self) -> Option<WaiterId> {
        match self.slot {
            Slot::Pending { .. } => Some(self.id),
            Slot::Withdrawn => None,
        }
    }
}

/// Pending waiters in registration order, with tombstones for withdrawn ones.
///
/// Two queues with the same pending waiters but different tombstones compare
/// unequal (and print differently): equality is about the representation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Waiters {
    /// Pending waiters and tombstones, sorted by id; never a tombstone at either end.
    entries: VecDeque<Entry>,
    /// How many entries are tombstones (the others are pending). Counted this way
    /// round so that registering, the hot path, touches no counter but the
    /// threshold one.
    tombstones: usize,
    /// How many pending entries have a failure threshold.
    with_threshold: usize,
}

impl Waiters {
    /// No waiters, for a machine that keeps none.
    pub(crate) const NONE: &'static Waiters = &Waiters {
        entries: VecDeque::new(),
        tombstones: 0,
        with_threshold: 0,
    };

    /// Registers a waiter, newer than every one registered before.
    #[inline]
    pub(crate) fn push(&mut self, id: WaiterId, fail_at: Option<u64>) {
        debug_assert!(self.entries.back().is_none_or(|last| last.id < id));
        self.entries.push_back(Entry {
            id,
            slot: Slot::Pending { fail_at },
        });
        self.with_threshold += usize::from(fail_at.is_some());
    }

    /// How many waiters are pending.
    fn pending(&self) -> usize {
        self.entries.len() - self.tombstones
    }

    /// Whether no waiter is pending.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        // No tombstone at either end: an entry means a pending waiter.
        self.entries.is_empty()
    }

    /// Where this waiter is, if it is pending (not answered, withdrawn or unknown).
    pub(crate) fn find(&self, id: WaiterId) -> Option<usize> {
        let index = self.entries.binary_search_by_key(&id, |e| e.id).ok()?;
        self.entries[index].pending().map(|_| index)
    }

    /// Withdraws the pending waiter at `index` (from [`Waiters::find`]).
    pub(crate) fn withdraw(&mut self, index: usize) {
        let entry = &mut self.entries[index];
        let Slot::Pending { fail_at } = entry.slot else {
            return;
        };
        entry.slot = Slot::Withdrawn;
        self.tombstones += 1;
        self.forget_thresholds(usize::from(fail_at.is_some()));
        while self
            .entries
            .front()
            .is_some_and(|e| e.slot == Slot::Withdrawn)
        {
            self.entries.pop_front();
            self.tombstones -= 1;
        }
        while self
            .entries
            .back()
            .is_some_and(|e| e.slot == Slot::Withdrawn)
        {
            self.entries.pop_back();
            self.tombstones -= 1;
        }
        if self.tombstones > self.pending() && self.tombstones > COMPACT_FLOOR {
            self.entries.retain(|e| e.slot != Slot::Withdrawn);
            self.tombstones = 0;
        }
    }

    /// Takes every pending waiter out, in order, leaving the queue empty.
    // Always inlined: on the hot path (every connection made) a call costs more
    // than the body around the collect.
    #[inline(always)]
    pub(crate) fn take_all(&mut self) -> WaiterList {
        let pending = self.pending();
        let all = if self.tombstones == 0 {
            WaiterList::collect_exact(pending, self.entries.drain(..).map(|e| e.id))
        } else {
            let pending_ids = self.entries.drain(..).filter_map(|e| e.pending());
            WaiterList::collect_exact(pending, pending_ids)
        };
        self.tombstones = 0;
        self.with_threshold = 0;
        all
    }

    /// Takes out, in order, the pending waiters whose threshold `failures` reaches.
    pub(crate) fn take_due(&mut self, failures: u64) -> WaiterList {
        if self.with_threshold == 0 {
            return WaiterList::new();
        }
        // At most the waiters with a threshold are due.
        let mut due = WaiterListBuilder::with_hint(self.with_threshold);
        // One pass: the due waiters leave, and so do the tombstones.
        self.entries.retain(|e| match e.slot {
            Slot::Pending {
                fail_at: Some(at), ..
            } if at <= failures => {
                due.push(e.id);
                false
            }
            Slot::Pending { .. } => true,
            Slot::Withdrawn => false,
        });
        self.tombstones = 0;
        let due = due.finish();
        self.forget_thresholds(due.len());
        due
    }

    /// `n` pending waiters with a threshold left.
    fn forget_thresholds(&mut self, n: usize) {
        self.with_threshold -= n;
    }

    /// The pending waiters, in registration order.
    #[inline]
    pub(crate) fn iter(&self) -> Iter<'_> {
        Iter {
            entries: self.entries.iter(),
            left: self.pending(),
        }
    }
}

/// The pending waiters of a [`Waiters`], in registration order (tombstones skipped).
#[derive(Debug, Clone)]
pub(crate) struct Iter<'a> {
    entries: vec_deque::Iter<'a, Entry>,
    /// Pending waiters not yet yielded.
    left: usize,
}

impl Iterator for Iter<'_> {
    type Item = WaiterId;

    fn next(&mut self) -> Option<WaiterId> {
        if self.left == 0 {
            return None;
        }
        let id = self.entries.find_map(Entry::pending)?;
        self.left -= 1;
        Some(id)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl FusedIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    fn w(n: u64) -> WaiterId {
        WaiterId::from_raw(n)
    }

    fn queue(n: u64) -> Waiters {
        let mut q = Waiters::default();
        for i in 0..n {
            q.push(w(i), (i % 3 == 0).then_some(i));
        }
        q
    }

    fn withdraw(q: &mut Waiters, id: u64) {
        let index = q.find(w(id)).expect("pending");
        q.withdraw(index);
    }

    fn ids(q: &Waiters) -> Vec<u64> {
        q.iter().map(WaiterId::raw).collect()
    }

    #[test]
    fn withdrawing_at_either_end_leaves_no_tombstone() {
        let mut q = queue(10);
        withdraw(&mut q, 0);
        withdraw(&mut q, 9);
        assert_eq!(q.entries.len(), 8);
        assert_eq!(ids(&q), [1, 2, 3, 4, 5, 6, 7, 8]);
        // A tombstone in the middle stays until the ends reach it.
        withdraw(&mut q, 2);
        assert_eq!(q.entries.len(), 8);
        withdraw(&mut q, 1);
        assert_eq!(q.entries.len(), 6, "both tombstones left with the front");
        assert_eq!(ids(&q), [3, 4, 5, 6, 7, 8]);
        assert_eq!(q.iter().len(), 6);
    }

    /// Withdraws waiters 1..=k of `queue(n)` (the ends stay pending, so every one
    /// leaves a tombstone, until a compaction).
    fn withdraw_middle(n: u64, k: u64) -> Waiters {
        let mut q = queue(n);
        for i in 1..=k {
            withdraw(&mut q, i);
        }
        q
    }

    #[test]
    fn tombstones_are_compacted_once_they_outnumber_pending_waiters() {
        let floor = COMPACT_FLOOR as u64;
        // As many tombstones as pending waiters (more than the floor): kept.
        let n = 2 * (floor + 2);
        let mut q = withdraw_middle(n, floor + 2);
        assert_eq!(q.tombstones, q.pending());
        assert_eq!(q.entries.len() as u64, n);
        // One more: compacted, in one pass.
        withdraw(&mut q, floor + 3);
        assert_eq!((q.entries.len(), q.tombstones), (q.pending(), 0));
        assert_eq!(q.pending() as u64, n - floor - 3);
        assert!(q.iter().eq(q.entries.iter().map(|e| e.id)));
        assert_eq!(q.iter().next(), Some(w(0)));
    }

    #[test]
    fn tombstones_are_compacted_only_above_the_floor() {
        let floor = COMPACT_FLOOR as u64;
        // `floor` tombstones, far more than the 3 pending waiters: kept.
        let n = floor + 3;
        let mut q = withdraw_middle(n, floor);
        assert_eq!(q.entries.len() as u64, n);
        assert_eq!(ids(&q), [0, floor + 1, floor + 2]);
        // One more: compacted.
        withdraw(&mut q, floor + 1);
        assert_eq!(q.entries.len(), 2);
        assert_eq!(ids(&q), [0, floor + 2]);
    }

    #[test]
    fn few_tombstones_are_never_compacted() {
        let mut q = queue(3);
        withdraw(&mut q, 1);
        assert_eq!(q.entries.len(), 3);
        withdraw(&mut q, 0);
        // 1 was a tombstone right behind 0: it went with it.
        assert_eq!(q.entries.len(), 1);
        assert_eq!(ids(&q), [2]);
        let mut q = queue(5);
        withdraw(&mut q, 1);
        withdraw(&mut q, 2);
        withdraw(&mut q, 3);
        // Three tombstones, more than the two pending waiters, but under the floor.
        assert_eq!(q.entries.len(), 5);
        assert_eq!(ids(&q), [0, 4]);
    }

    #[test]
    fn find_only_finds_pending_waiters() {
        let mut q = queue(5);
        withdraw(&mut q, 2);
        assert_eq!(q.find(w(2)), None);
        assert_eq!(q.find(w(3)), Some(3));
        assert_eq!(q.find(w(7)), None);
    }

    #[test]
    fn taking_skips_tombstones_and_keeps_the_counts() {
        let mut q = queue(9); // thresholds at 0, 3, 6
        withdraw(&mut q, 3);
        withdraw(&mut q, 4);
        assert_eq!(q.with_threshold, 2);
        let due = q.take_due(5);
        assert_eq!(due.as_slice(), &[w(0)]);
        assert_eq!(ids(&q), [1, 2, 5, 6, 7, 8]);
        assert_eq!(q.entries.len(), 6, "the pass dropped the tombstones");
        assert_eq!((q.pending(), q.tombstones, q.with_threshold), (6, 0, 1));
        withdraw(&mut q, 5);
        let all = q.take_all();
        assert_eq!(
            all.iter().map(|w| w.raw()).collect::<Vec<_>>(),
            [1, 2, 6, 7, 8]
        );
        assert!(q.is_empty());
        assert_eq!((q.pending(), q.tombstones, q.with_threshold), (0, 0, 0));
        assert_eq!(q.take_due(100).len(), 0);
    }

    #[test]
    fn the_iterator_counts_exactly() {
        let mut q = queue(6);
        withdraw(&mut q, 1);
        withdraw(&mut q, 4);
        let mut it = q.iter();
        assert_eq!(it.len(), 4);
        assert_eq!(it.next(), Some(w(0)));
        assert_eq!(it.next(), Some(w(2)));
        assert_eq!(it.len(), 2);
        assert_eq!(it.by_ref().count(), 2);
        assert_eq!(it.next(), None);
        assert_eq!(it.len(), 0);
    }
}
