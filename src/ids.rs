//! Identities: every attempt, timer, waiter and stop request gets its own id.
//!
//! Ids are opaque, `Copy`, unique for the life of one [`Machine`](crate::Machine)
//! and never reused ([D1](crate::contract#d1-identity)). A connection is named by
//! the id of the attempt that made it, so one [`AttemptId`] follows a connection
//! from `Connect` to its loss.

use core::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Builds an id from its raw number.
            ///
            /// Drivers never need this: they only hand back ids the machine gave
            /// them. It exists for tests, fuzzers and trace files, which must be able
            /// to name ids the machine never issued (the machine rejects those with
            /// a typed error).
            pub const fn from_raw(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw number (ids of one kind are issued 0, 1, 2, … by one machine).
            pub const fn raw(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "#{}"), self.0)
            }
        }
    };
}

id_type!(
    /// One try to open the connection, and the connection it yields.
    AttemptId,
    "attempt"
);
id_type!(
    /// One scheduled timer (retry, connect timeout, prepare timeout or healthy).
    TimerId,
    "timer"
);
id_type!(
    /// One `when_connected` request.
    WaiterId,
    "waiter"
);
id_type!(
    /// One `stop` request.
    StopId,
    "stop"
);

/// Hands out ids of one kind: 0, 1, 2, … and never the same twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counter(u64);

impl Counter {
    /// The next raw id; advances the counter.
    pub(crate) fn next(&mut self) -> u64 {
        let id = self.0;
        self.0 += 1;
        id
    }

    /// Whether `raw` has been handed out already.
    pub(crate) fn issued(&self, raw: u64) -> bool {
        raw < self.0
    }
}
