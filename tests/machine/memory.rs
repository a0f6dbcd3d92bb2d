//! Memory: a machine without options is small, and options, waiters and stops
//! cost only while they are used.
//!
//! `cargo test --test machine memory -- --nocapture` prints the sizes.

use std::mem::size_of;
use std::time::Duration;

use redial::{Backoff, Config, Machine, ProbeConfig};

#[test]
fn a_machine_without_options_is_at_most_128_bytes() {
    let size = size_of::<Machine<std::io::Error>>();
    println!("size_of::<Machine<std::io::Error>>() = {size} B");
    println!("size_of::<Backoff>() = {} B", size_of::<Backoff>());
    println!("size_of::<Config>() = {} B", size_of::<Config>());
    assert!(size <= 128, "Machine<std::io::Error> is {size} B");
    // With a boxed policy (what the async driver holds), smaller still.
    let boxed = size_of::<Machine<std::io::Error, Box<dyn FnMut(u32) -> Option<Duration>>>>();
    println!("size_of::<Machine<std::io::Error, Box<dyn RetryPolicy>>>() = {boxed} B");
    assert!(boxed <= 128 - size_of::<Backoff>() + 16, "{boxed} B");
    assert_eq!(size_of::<Backoff>(), 64);
}

#[test]
fn options_are_kept_as_given_and_read_back() {
    let config = Config::new()
        .with_prepare(true)
        .with_prepare_timeout(Some(Duration::from_secs(3)))
        .with_connect_timeout(Some(Duration::from_secs(2)))
        .with_reset_backoff_after(Some(Duration::from_secs(30)))
        .with_probe(Some(ProbeConfig::new(
            Duration::from_secs(10),
            Duration::from_secs(1),
        )));
    let m: Machine<&str> = Machine::with_config(Backoff::twisted(7), config).unwrap();
    assert_eq!(*m.config(), config);
    let plain: Machine<&str> = Machine::with_config(Backoff::twisted(7), Config::new()).unwrap();
    assert_eq!(*plain.config(), Config::new());
    assert_eq!(plain, Machine::new(Backoff::twisted(7)));
    assert_ne!(plain, m);
}

#[test]
fn shrinking_keeps_what_is_pending_and_frees_what_is_not() {
    let mut m: Machine<&str> = Machine::new(Backoff::twisted(1));
    let (waiter, _) = m.when_connected(None);
    let before = m.clone();
    m.shrink_to_fit();
    assert_eq!(m, before);
    assert_eq!(m.pending_waiters().collect::<Vec<_>>(), [waiter]);
    // Withdrawn: the list is empty, and a machine that kept it allocated equals
    // one that freed it.
    let _ = m.cancel_waiter(waiter).unwrap();
    assert_eq!(m.pending_waiters().len(), 0);
    let mut shrunk = m.clone();
    shrunk.shrink_to_fit();
    assert_eq!(shrunk, m);
    // And it carries on as before: the next waiter gets the next id.
    let (next, _) = shrunk.when_connected(None);
    assert_eq!(next.raw(), waiter.raw() + 1);
}

#[test]
fn machines_with_different_options_are_not_equal() {
    // Both hold options (out of line): equality compares what they hold.
    let healthy = |secs| Config::new().with_reset_backoff_after(Some(Duration::from_secs(secs)));
    let five: Machine<&str> = Machine::with_config(Backoff::twisted(7), healthy(5)).unwrap();
    let six: Machine<&str> = Machine::with_config(Backoff::twisted(7), healthy(6)).unwrap();
    assert_ne!(five, six);
    let again: Machine<&str> = Machine::with_config(Backoff::twisted(7), healthy(5)).unwrap();
    assert_eq!(five, again);
}
