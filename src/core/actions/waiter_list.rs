//! [`WaiterList`]: the waiters one action is about, 16 bytes wide.
//!
//! Nearly every list the machine hands out holds one waiter or none, so one id is
//! kept inline and more go to the heap as a boxed slice. That keeps
//! [`Action`](super::Action) small (every action list the driver moves is made of
//! them) while a list of 0 or 1 waiter never allocates.

use alloc::boxed::Box;
use alloc::vec::{self, Vec};
use core::fmt;
use core::hash::{Hash, Hasher};
use core::iter::FusedIterator;
use core::ops::Deref;

use crate::ids::WaiterId;

/// Waiters a [`WaiterList`] holds without allocating: one. A longer list is one
/// heap allocation (a boxed slice of exactly its length).
pub const INLINE_WAITERS: usize = 1;

/// The waiters one action is about, in registration order.
///
/// It reads as a slice (`Deref<Target = [WaiterId]>`: `len`, `iter`, `contains`,
/// indexing, …), iterates by value or by reference, and collects from any
/// iterator of [`WaiterId`]s. It is 16 bytes wide: one waiter is kept inline (no
/// allocation for 0 or 1 waiter), more are one boxed slice.
///
/// ```
/// use redial::{WaiterId, WaiterList};
///
/// let w = |n| WaiterId::from_raw(n);
/// let list = WaiterList::from_slice(&[w(0), w(2)]);
/// assert_eq!(list.len(), 2);
/// assert_eq!(list.as_slice(), &[w(0), w(2)]);
/// assert!(list.contains(&w(2)));
/// let back: WaiterList = list.iter().copied().collect();
/// assert_eq!(back, list);
/// assert_eq!(list.into_iter().map(WaiterId::raw).sum::<u64>(), 2);
/// assert!(WaiterList::new().is_empty());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct WaiterList(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    /// Exactly one waiter.
    One(WaiterId),
    /// Any other number (an empty boxed slice does not allocate).
    Many(Box<[WaiterId]>),
}

// One id inline, or a boxed slice: the slice's pointer is the niche that tells them
// apart, so the list is as wide as the slice.
const _: () = assert!(core::mem::size_of::<WaiterList>() == 16);

impl WaiterList {
    /// An empty list (no allocation).
    pub fn new() -> WaiterList {
        WaiterList(Repr::Many(Box::default()))
    }

    /// A list of one waiter (no allocation).
    pub const fn one(waiter: WaiterId) -> WaiterList {
        WaiterList(Repr::One(waiter))
    }

    /// A list of these waiters, in this order (allocates for two or more).
    pub fn from_slice(waiters: &[WaiterId]) -> WaiterList {
        match waiters {
            [one] => WaiterList::one(*one),
            _ => WaiterList(Repr::Many(waiters.into())),
        }
    }

    /// The waiters as a slice.
    pub fn as_slice(&self) -> &[WaiterId] {
        match &self.0 {
            Repr::One(one) => core::slice::from_ref(one),
            Repr::Many(many) => many,
        }
    }

    /// Collects `n` waiters from `iter`, which yields exactly `n`: one allocation of
    /// exactly `n` ids for two or more, none otherwise.
    pub(crate) fn collect_exact(n: usize, mut iter: impl Iterator<Item = WaiterId>) -> WaiterList {
        match n {
            0 => WaiterList::new(),
            1 => iter.next().map_or_else(WaiterList::new, WaiterList::one),
            _ => {
                let mut many = Vec::with_capacity(n);
                many.extend(iter.take(n));
                WaiterList::from_vec(many)
            }
        }
    }

    fn from_vec(mut many: Vec<WaiterId>) -> WaiterList {
        if many.len() == 1 {
            WaiterList::one(many[0])
        } else {
            // Exact capacity is kept as is: `into_boxed_slice` only reallocates to
            // shrink a spare capacity away.
            many.shrink_to_fit();
            WaiterList(Repr::Many(many.into_boxed_slice()))
        }
    }
}

/// Builds a [`WaiterList`] one waiter at a time: the first is kept inline, the
/// second moves both to a vector of the capacity hinted.
pub(crate) struct Builder {
    first: Option<WaiterId>,
    more: Vec<WaiterId>,
    hint: usize,
}

impl Builder {
    /// A builder expecting at most about `hint` waiters (a capacity hint).
    pub(crate) fn with_hint(hint: usize) -> Builder {
        Builder {
            first: None,
            more: Vec::new(),
            hint,
        }
    }

    pub(crate) fn push(&mut self, waiter: WaiterId) {
        match self.first {
            None if self.more.is_empty() => self.first = Some(waiter),
            _ => {
                if let Some(first) = self.first.take() {
                    self.more.reserve_exact(self.hint.max(2));
                    self.more.push(first);
                }
                self.more.push(waiter);
            }
        }
    }

    pub(crate) fn finish(self) -> WaiterList {
        match self.first {
            Some(one) => WaiterList::one(one),
            None if self.more.is_empty() => WaiterList::new(),
            None => WaiterList::from_vec(self.more),
        }
    }
}

impl Default for WaiterList {
    fn default() -> Self {
        WaiterList::new()
    }
}

impl Deref for WaiterList {
    type Target = [WaiterId];
    fn deref(&self) -> &[WaiterId] {
        self.as_slice()
    }
}

impl AsRef<[WaiterId]> for WaiterList {
    fn as_ref(&self) -> &[WaiterId] {
        self.as_slice()
    }
}

/// Prints as the list of ids, like a slice.
impl fmt::Debug for WaiterList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// Hashes as the slice of ids.
impl Hash for WaiterList {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl From<WaiterId> for WaiterList {
    fn from(waiter: WaiterId) -> Self {
        WaiterList::one(waiter)
    }
}

impl From<&[WaiterId]> for WaiterList {
    fn from(waiters: &[WaiterId]) -> Self {
        WaiterList::from_slice(waiters)
    }
}

impl From<Vec<WaiterId>> for WaiterList {
    fn from(waiters: Vec<WaiterId>) -> Self {
        WaiterList::from_vec(waiters)
    }
}

impl FromIterator<WaiterId> for WaiterList {
    fn from_iter<I: IntoIterator<Item = WaiterId>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut list = Builder::with_hint(iter.size_hint().0);
        iter.for_each(|w| list.push(w));
        list.finish()
    }
}

impl<'a> IntoIterator for &'a WaiterList {
    type Item = &'a WaiterId;
    type IntoIter = core::slice::Iter<'a, WaiterId>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl IntoIterator for WaiterList {
    type Item = WaiterId;
    type IntoIter = WaiterListIntoIter;
    fn into_iter(self) -> WaiterListIntoIter {
        WaiterListIntoIter(match self.0 {
            Repr::One(one) => IterRepr::One(Some(one)),
            Repr::Many(many) => IterRepr::Many(many.into_vec().into_iter()),
        })
    }
}

/// The waiters of a [`WaiterList`], by value, in order.
#[derive(Debug, Clone)]
pub struct WaiterListIntoIter(IterRepr);

#[derive(Debug, Clone)]
enum IterRepr {
    One(Option<WaiterId>),
    Many(vec::IntoIter<WaiterId>),
}

impl Iterator for WaiterListIntoIter {
    type Item = WaiterId;

    fn next(&mut self) -> Option<WaiterId> {
        match &mut self.0 {
            IterRepr::One(one) => one.take(),
            IterRepr::Many(many) => many.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            IterRepr::One(one) => usize::from(one.is_some()),
            IterRepr::Many(many) => many.len(),
        };
        (n, Some(n))
    }
}

impl DoubleEndedIterator for WaiterListIntoIter {
    fn next_back(&mut self) -> Option<WaiterId> {
        match &mut self.0 {
            IterRepr::One(one) => one.take(),
            IterRepr::Many(many) => many.next_back(),
        }
    }
}

impl ExactSizeIterator for WaiterListIntoIter {}

impl FusedIterator for WaiterListIntoIter {}

#[cfg(test)]
mod tests {
    use alloc::format;

    use super::*;

    fn w(n: u64) -> WaiterId {
        WaiterId::from_raw(n)
    }

    #[test]
    fn every_way_of_building_gives_the_same_list() {
        for n in 0..5u64 {
            let ids: Vec<WaiterId> = (0..n).map(w).collect();
            let collected: WaiterList = ids.iter().copied().collect();
            let filtered: WaiterList = ids.iter().copied().filter(|_| true).collect();
            let exact = WaiterList::collect_exact(ids.len(), ids.iter().copied());
            let mut built = Builder::with_hint(0);
            ids.iter().for_each(|id| built.push(*id));
            for list in [
                collected,
                filtered,
                exact,
                built.finish(),
                WaiterList::from_slice(&ids),
                WaiterList::from(ids.clone()),
            ] {
                assert_eq!(list.as_slice(), &ids[..]);
                assert_eq!(list.len(), ids.len());
                assert_eq!(list.is_empty(), n == 0);
                assert_eq!(list, WaiterList::from_slice(&ids));
                assert_eq!(format!("{list:?}"), format!("{ids:?}"));
                let by_value: Vec<WaiterId> = list.clone().into_iter().collect();
                assert_eq!(by_value, ids);
                let backwards: Vec<WaiterId> = list.clone().into_iter().rev().collect();
                assert!(backwards.iter().rev().eq(ids.iter()));
                assert_eq!(list.into_iter().len(), ids.len());
            }
        }
        assert_eq!(WaiterList::from(w(3)).as_slice(), &[w(3)]);
        assert_eq!(WaiterList::default(), WaiterList::new());
    }
}
