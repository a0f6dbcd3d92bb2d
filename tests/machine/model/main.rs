//! The machine against the reference model and the fuzz checks of the dev-only crate
//! `devkit/` (so in the repository only: the published package leaves this binary
//! out, as it leaves out devkit).
//!
//! Run: `cargo test --test machine_model`.

// Replays the committed fuzz corpus through the fuzz targets' checks.
mod fuzz_corpus;
// A retry policy that panics leaves the machine as it was.
mod panicking_policy;
// Model-based property tests: the machine and the reference model agree.
mod proptest_machine;
// The state diagram cannot drift from the machine.
mod state_diagram;
