//! Arbitrary bytes -> a config, a policy and a sequence of valid, stale and invalid
//! inputs; the machine must match the reference model and keep the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| redial_devkit::check::machine(data));
