//! Real clients kept alive by redial against real servers that really go away: a
//! `redis-server` and a PostgreSQL cluster the tests start themselves, and a
//! WebSocket echo server in the test. One binary, one test at a time (the tests
//! count this process's file descriptors and the servers' connections); what the
//! tests share (getting the servers, the restart loop's callers) is in `support`.
//!
//! Run: `cargo test --all-features --test real_servers -- --nocapture` (prints
//! figures; one server's tests: `... --test real_servers postgres::`).

#![cfg(feature = "tokio")]

mod support;

mod liveness_postgres;
mod liveness_redis;
mod liveness_websocket;
// PostgreSQL (tokio-postgres), through 50 SIGKILL restarts.
mod postgres;
// Redis (the redis crate), through 200 SIGKILL restarts, and more.
mod redis;
// Beyond every peer: a liveness probe and a fatal wrong password, against Redis.
mod redis_beyond;
// WebSocket (tokio-tungstenite through `messages`), through 50 restarts.
mod websocket;
