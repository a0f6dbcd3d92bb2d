//! The sans-IO core (`redial::Machine`, its inputs, actions, retry policies and
//! budget), tested without any I/O: one binary, one module per subject.
//!
//! Run: `cargo test --test machine` (the tests against the devkit's reference model
//! are the `machine_model` binary, `tests/machine/model/`; the allocation counts
//! are `machine_alloc`, `tests/machine/alloc.rs`, a process of its own for its
//! counting allocator).

// An application property-tested with the testing kit: a request queue.
#[cfg(feature = "testing")]
mod app_queue;
// Bad input in every state: a typed error, the machine unchanged.
mod bad_input;
// The shared reconnect budget as a policy.
mod budget;
// The testing kit as an application uses it (`Sim`, `run_app`, strategies).
#[cfg(feature = "testing")]
mod kit;
mod liveness;
mod memory;
// The retry policies: backoff, jitter, give-up wrappers.
mod policy;
// One table per row of the behaviour contract's transition tables.
mod scenarios;
// The trace scenarios of `tests/machine/traces/*.trace`, replayed.
#[cfg(feature = "testing")]
mod traces;
