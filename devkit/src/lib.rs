//! redial's shared test code, in one place instead of `#[path]` includes.
//!
//! * [`model`]: the reference model the machine is checked against, step for step
//!   (tests/machine/model/proptest_machine.rs, tests/machine/model/fuzz_corpus.rs,
//!   the `machine` fuzz target);
//! * [`cycle`]: the reconnect-cycle workload and its hand-written floor
//!   (benches/machine.rs, examples/callgrind_cycle.rs, tests/machine/alloc.rs);
//! * [`check`]: what the fuzz targets check, as plain functions of the input bytes
//!   (fuzz/fuzz_targets/, tests/machine/model/fuzz_corpus.rs);
//! * [`diagram`]: the state diagram of docs/contract.md, its edge list and the SVG
//!   drawn from it (tests/machine/model/state_diagram.rs).
//!
//! It is a dev-dependency of redial and a dependency of the fuzz crate; it is
//! never published.

pub mod check;
pub mod cycle;
pub mod diagram;
pub mod model;
