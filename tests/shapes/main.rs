//! The connection shapes, apart from the engine: the byte stream (`SharedStream`,
//! `StreamGuard`, `StreamDriver`), the message adapter (`messages`), and endpoints
//! tried in rounds (`Endpoints`): one binary, one module per subject.
//!
//! Run: `cargo test --all-features --test shapes`. The stream helper's own tests,
//! which count allocations, are `shapes_stream` (`tests/shapes/stream.rs`), a process
//! of its own for its counting allocator.

// Endpoints tried in rounds, on the deterministic harness.
#[cfg(feature = "testing")]
mod endpoints;
// Endpoints against real local servers.
mod failover;
#[cfg(feature = "tokio")]
mod first_check;
#[cfg(feature = "tokio")]
mod liveness_stream;
// The message adapter over an in-memory transport, and under a real service.
mod messages;
// A `StreamGuard` under a `BufReader`.
mod stream_guard_io;
