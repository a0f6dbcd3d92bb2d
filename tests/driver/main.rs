//! The async engine (`redial::driver::ClientService` and its task), tested on the
//! deterministic harness (`redial::testing::{ManualRuntime, Net}`: virtual time,
//! scripted connections) and on each runtime over local TCP: one binary, one module
//! per subject.
//!
//! Run: `cargo test --all-features --test driver` (a runtime's suite alone:
//! `cargo test --all-features --test driver on_smol`). The `reconnect_now` flood
//! measured with a counting allocator is `driver_mailbox_tokio`
//! (`tests/driver/mailbox_tokio.rs`), a process of its own for its allocator.

// The suite written once for every runtime (`driver_suite!`), first so that its
// macros are in scope in the `on_*` modules.
#[macro_use]
mod runtime_suite;

// The suite on each runtime, plus what is particular to that runtime.
#[cfg(feature = "async-std")]
mod on_async_std;
#[cfg(feature = "smol")]
mod on_smol;
#[cfg(feature = "tokio")]
mod on_tokio;

// What the modules share: one panic hook, a panic's message.
mod support;

// Reconnect now, fatal failures, liveness probes.
mod beyond;
// A reconnect budget shared by services.
mod budget;
// Features together, under random faults and time.
mod composed;
// The deterministic harness itself, and services on it.
mod harness;
// The mailbox between the handles and the task stays bounded.
mod mailbox;
// `Builder::prepare_err_into` over loopback TCP.
#[cfg(feature = "tokio")]
mod prepare_err_into;
#[cfg(feature = "tokio")]
mod probe_err_into;
// Random user operations against random world events: the driver's promises.
mod properties;
// A waiter's time limit, errors that print their cause, `reconnect_now`'s answer.
mod waiting;
// `WhenConnected::within` on a real Tokio runtime.
#[cfg(feature = "tokio")]
mod waiting_tokio;
