//! Arbitrary bytes -> retry-policy parameters and attempt numbers; building and
//! asking must never panic, and delays stay within the documented bounds.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| redial_devkit::check::policy(data));
