//! The fuzz targets' logic, shared with `tests/fuzz_corpus.rs` (which replays the
//! committed corpus under `cargo test`, so it never goes stale).

#[path = "../../tests/model/mod.rs"]
pub mod model;

pub mod check;
