//! The answer channels of pending waiters and stop requests, kept by the task.
//!
//! Entries are kept in the order the machine issued their ids, which is also the
//! order of their tickets (the numbers handles give them), so either can be found by
//! binary search. A withdrawn or answered entry becomes a hole; holes at either end
//! are dropped at once and the rest are compacted away once they outnumber the live
//! entries, so taking one entry costs O(log n) amortised wherever it is, and the
//! memory held stays proportional to what is pending.

use std::boxed::Box;
use std::collections::VecDeque;

/// Holes tolerated before compacting, whatever the live count.
const SLACK: usize = 32;

struct Entry<V> {
    ticket: u64,
    id: u64,
    value: Option<V>,
}

/// The entries, out of line: a service with nothing pending keeps only a null
/// pointer (8 bytes in its task, nothing on the heap).
pub(crate) struct Pending<V> {
    inner: Option<Box<Inner<V>>>,
}

impl<V> Pending<V> {
    pub(crate) fn new() -> Self {
        Pending { inner: None }
    }

    /// Adds an entry; tickets and ids must grow with each call.
    pub(crate) fn push(&mut self, ticket: u64, id: u64, value: V) {
        self.inner
            .get_or_insert_with(|| Box::new(Inner::new()))
            .push(ticket, id, value);
    }

    /// Takes the entry with this ticket, if it is still pending; returns its id too.
    pub(crate) fn take_ticket(&mut self, ticket: u64) -> Option<(u64, V)> {
        self.inner.as_mut()?.take_ticket(ticket)
    }

    /// Takes the entries with these ids (in the order given, which must be
    /// increasing, as the machine's lists are) and hands each value to `answer`.
    pub(crate) fn take_ids(
        &mut self,
        ids: impl ExactSizeIterator<Item = u64>,
        answer: impl FnMut(V),
    ) {
        if let Some(inner) = &mut self.inner {
            inner.take_ids(ids, answer);
        }
    }

    /// Takes every entry, in order.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = V> {
        self.inner
            .take()
            .into_iter()
            .flat_map(|inner| inner.entries.into_iter().filter_map(|e| e.value))
    }

    /// Whether it holds storage (something pending, or not yet given back).
    pub(crate) fn holds_storage(&self) -> bool {
        self.inner.is_some()
    }

    /// Gives back the storage if nothing is pending.
    pub(crate) fn release_if_empty(&mut self) {
        if self
            .inner
            .as_ref()
            .is_some_and(|inner| inner.entries.is_empty())
        {
            self.inner = None;
        }
    }
}

struct Inner<V> {
    entries: VecDeque<Entry<V>>,
    live: usize,
}

impl<V> Inner<V> {
    fn new() -> Self {
        Inner {
            entries: VecDeque::new(),
            live: 0,
        }
    }

    /// Adds an entry; tickets and ids must grow with each call.
    pub(crate) fn push(&mut self, ticket: u64, id: u64, value: V) {
        self.entries.push_back(Entry {
            ticket,
            id,
            value: Some(value),
        });
        self.live += 1;
    }

    /// Takes the entry with this ticket, if it is still pending; returns its id too.
    pub(crate) fn take_ticket(&mut self, ticket: u64) -> Option<(u64, V)> {
        let at = self
            .entries
            .binary_search_by_key(&ticket, |e| e.ticket)
            .ok()?;
        let entry = &mut self.entries[at];
        let value = entry.value.take()?;
        let id = entry.id;
        self.taken(1);
        Some((id, value))
    }

    /// Takes the entries with these ids (in the order given, which must be
    /// increasing, as the machine's lists are) and hands each value to `answer`.
    pub(crate) fn take_ids(
        &mut self,
        ids: impl ExactSizeIterator<Item = u64>,
        mut answer: impl FnMut(V),
    ) {
        let mut taken = 0;
        if ids.len().saturating_mul(4) >= self.live {
            // Many of them (typically all): one pass over the entries.
            let mut ids = ids.peekable();
            for entry in self.entries.iter_mut() {
                while ids.next_if(|id| *id < entry.id).is_some() {}
                if ids.next_if(|id| *id == entry.id).is_some() {
                    if let Some(value) = entry.value.take() {
                        taken += 1;
                        answer(value);
                    }
                }
                if ids.peek().is_none() {
                    break;
                }
            }
        } else {
            for id in ids {
                let Ok(at) = self.entries.binary_search_by_key(&id, |e| e.id) else {
                    continue;
                };
                if let Some(value) = self.entries[at].value.take() {
                    taken += 1;
                    answer(value);
                }
            }
        }
        self.taken(taken);
    }

    #[cfg(test)]
    fn drain(&mut self) -> impl Iterator<Item = V> {
        self.live = 0;
        std::mem::take(&mut self.entries)
            .into_iter()
            .filter_map(|e| e.value)
    }

    fn taken(&mut self, n: usize) {
        self.live -= n;
        while self.entries.front().is_some_and(|e| e.value.is_none()) {
            self.entries.pop_front();
        }
        while self.entries.back().is_some_and(|e| e.value.is_none()) {
            self.entries.pop_back();
        }
        let holes = self.entries.len() - self.live;
        if holes > SLACK && holes > self.live {
            self.entries.retain(|e| e.value.is_some());
        }
        if self.entries.is_empty() && self.entries.capacity() > SLACK {
            // Do not keep a large block for an idle service.
            self.entries = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn take_by_ticket_and_by_id_in_any_order() {
        let mut p = Inner::new();
        for i in 0..100u64 {
            p.push(i, i + 1000, i);
        }
        assert_eq!(p.take_ticket(0), Some((1000, 0)));
        assert_eq!(p.take_ticket(0), None);
        assert_eq!(p.take_ticket(50), Some((1050, 50)));
        let mut got = Vec::new();
        p.take_ids([1001, 1050, 1051, 2000].into_iter(), |v| got.push(v));
        assert_eq!(got, [1, 51]);
        assert_eq!(p.live, 96);
        let mut all = Vec::new();
        p.take_ids((1000..1100).collect::<Vec<_>>().into_iter(), |v| {
            all.push(v)
        });
        assert_eq!(all.len(), 96);
        assert_eq!(p.live, 0);
        assert!(p.entries.is_empty());
    }

    #[test]
    fn holes_are_compacted() {
        let mut p = Inner::new();
        for i in 0..10_000u64 {
            p.push(i, i, ());
        }
        // Withdraw every other one from the middle: holes never exceed the live
        // count by more than the slack.
        for i in (1..10_000u64).step_by(2) {
            assert!(p.take_ticket(i).is_some());
            assert!(p.entries.len() - p.live <= p.live.max(SLACK) + 1);
        }
        assert_eq!(p.drain().count(), 5_000);
    }
}
