//! Identities: every attempt, timer, waiter and stop request gets its own id.
//!
//! Ids are `Copy`, unique for the life of one [`Machine`](crate::Machine) and never
//! reused ([D1](crate::contract#d1-identity)): ids of each kind are issued 0, 1, 2, …
//! by one machine. A connection is named by the id of the attempt that made it, so
//! one [`AttemptId`] follows a connection from `Connect` to its loss.
//!
//! Because an id is a number that is never reused, a driver can key its own
//! tables with it: a socket's `mio::Token(attempt.raw() as usize)`, a slot in an
//! embassy pool, a handle in a game loop. [`AttemptId::from_raw`] turns the key
//! back into the id to report. The [driver guide](crate::guide#ids-and-tokens)
//! shows the mapping.

use core::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Builds an id from its raw number: the inverse of
            #[doc = concat!("[`", stringify!($name), "::raw`].")]
            ///
            /// For drivers that key their own tables by `raw()` and must get the id
            /// back from the key: a readiness loop maps a socket's
            /// `mio::Token(attempt.raw() as usize)` back to
            /// `AttemptId::from_raw(token.0 as u64)` to report what happened to it
            /// (see the [driver guide](crate::guide#ids-and-tokens)). Tests, fuzzers
            /// and trace files use it too, to name any id at all.
            ///
            /// Building an id does not make the machine know it. Reporting an
            /// attempt, timer or waiter this machine never issued is
            /// [bad input](crate::contract#bad-input): it is rejected with a typed
            /// error ([`Rejection::UnknownAttempt`](crate::Rejection::UnknownAttempt),
            /// [`UnknownTimer`](crate::Rejection::UnknownTimer),
            /// [`UnknownWaiter`](crate::Rejection::UnknownWaiter)) and changes
            /// nothing. One it issued but no longer tracks is
            /// [stale](crate::contract#reports-and-identity) and changes nothing
            /// either. (No input names a stop request: the machine hands a `StopId`
            /// out from `stop` and back in
            /// [`Action::FinishStopping`](crate::Action::FinishStopping).)
            pub const fn from_raw(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw number: ids of one kind are issued 0, 1, 2, … by one machine and
            /// never reused, so it can key a driver's own tables (see
            #[doc = concat!("[`", stringify!($name), "::from_raw`]).")]
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
