//! The repository checks itself: the module graph of `src/` has no cycle, and every
//! reference to the behaviour contract resolves.
//!
//! Run: `cargo test --test meta`.

// Every `contract#…` link resolves; nothing cites a specification the repo lacks.
mod contract;
// No two modules of `src/` import each other, directly or through others.
mod layout;
