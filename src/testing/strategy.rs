//! proptest strategies for configurations, policies and input sequences.
//!
//! The sequences are of abstract [`Op`]s; resolve them against a [`World`](super::World) (or let
//! [`run_ops`](super::run_ops) do it) to get inputs that name real ids.
//! [`valid_op`] makes only what a correct driver and user could do; [`stale_op`]
//! makes late and repeated reports naming ids issued earlier; [`invalid_op`] makes
//! reports naming ids never issued; [`op`] mixes all three, mostly valid.
//!
//! For an application that owns its waiters, [`lifecycle_op`] makes only `start`
//! and `stop`, [`world_op`] only what happens in the world, and [`app_ops`] mixes
//! them with the application's own operations ([`AppOp`], for
//! [`run_app`](super::run_app)).

use core::fmt;
use core::num::NonZeroU32;
use core::time::Duration;
use std::format;
use std::string::String;
use std::vec::Vec;

use proptest::prelude::*;
use proptest::sample::select;

use super::app::AppOp;
use super::ops::{Op, ReportKind};
use super::sim::{ConnectScript, PrepareScript};
use super::trace::SimPolicy;
use crate::machine::{Config, ProbeConfig};

/// A waiter's failure threshold: mostly none, else 1 to 4.
pub fn fail_after() -> impl Strategy<Value = Option<NonZeroU32>> {
    prop_oneof![
        2 => Just(None),
        3 => (1u32..=4).prop_map(NonZeroU32::new),
    ]
}

/// A user's call: `start`, `stop`, `when_connected`, withdrawing a pending waiter
/// or `reconnect_now`.
pub fn call_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Start),
        2 => Just(Op::Stop),
        3 => fail_after().prop_map(|fail_after_failures| Op::WhenConnected { fail_after_failures }),
        1 => any::<u16>().prop_map(|pick| Op::Withdraw { pick }),
        1 => any::<bool>().prop_map(|reset_backoff| Op::ReconnectNow { reset_backoff }),
    ]
}

/// Something that can really happen to a thing the machine asked for.
pub fn happen_op() -> impl Strategy<Value = Op> {
    (any::<u16>(), any::<u8>()).prop_map(|(pick, choice)| Op::Happen { pick, choice })
}

/// Only what a correct driver and user could do: calls and real happenings.
pub fn valid_op() -> impl Strategy<Value = Op> {
    prop_oneof![2 => call_op(), 5 => happen_op()]
}

/// A report of any kind naming an id issued earlier (stale, repeated, or by chance current).
pub fn stale_op() -> impl Strategy<Value = Op> {
    (select(&ReportKind::ALL[..]), any::<u16>()).prop_map(|(kind, pick)| Op::Stale { kind, pick })
}

/// A report of any kind naming an id never issued (0 to 3 past the last one).
pub fn invalid_op() -> impl Strategy<Value = Op> {
    (select(&ReportKind::ALL[..]), 0u16..4).prop_map(|(kind, offset)| Op::Unknown { kind, offset })
}

/// Any op: mostly valid, some stale, a few invalid.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![8 => valid_op(), 3 => stale_op(), 1 => invalid_op()]
}

/// A sequence of [`op`]s with a length in `len`.
pub fn ops(len: impl Into<proptest::collection::SizeRange>) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), len)
}

/// A valid [`Config`]: each opt-in on or off (timeouts of 1 to 10 s), giving up
/// after 1 to 3 fatal failures (half the time 1, the default), probes a third of
/// the time (every 1 to 10 s, 1 to 5 s to answer).
pub fn config() -> impl Strategy<Value = Config> {
    let timeout = || proptest::option::of((1u64..=10).prop_map(Duration::from_secs));
    let fatal = prop_oneof![Just(1u32), 2u32..=3].prop_map(NonZeroU32::new);
    let probe = proptest::option::weighted(
        0.33,
        (1u64..=10, 1u64..=5).prop_map(|(interval, timeout)| {
            ProbeConfig::new(Duration::from_secs(interval), Duration::from_secs(timeout))
        }),
    );
    (any::<bool>(), timeout(), timeout(), timeout(), fatal, probe).prop_map(
        |(prepare, connect_timeout, prepare_timeout, reset_backoff_after, fatal, probe)| {
            Config::new()
                .with_prepare(prepare)
                .with_connect_timeout(connect_timeout)
                .with_prepare_timeout(prepare_timeout.filter(|_| prepare))
                .with_reset_backoff_after(reset_backoff_after)
                .with_give_up_after_fatal(fatal.unwrap_or(NonZeroU32::MIN))
                .with_probe(probe)
        },
    )
}

/// A [`SimPolicy`]: a step of 1 ms to 1 s, giving up after 1 to 5 failures a third
/// of the time.
pub fn sim_policy() -> impl Strategy<Value = SimPolicy> {
    (
        (1u64..=1000).prop_map(Duration::from_millis),
        proptest::option::weighted(0.33, 1u32..=5),
    )
        .prop_map(|(step, give_up_after)| SimPolicy {
            step,
            give_up_after,
        })
}

/// A scripted outcome for one attempt of a [`Sim`](super::Sim): connect after up to
/// 1 s (then maybe be lost after up to 5 s), fail after up to 1 s with an error
/// `"e0"`…`"e9"` (rarely fatally), panic after up to 1 s (rarely), or hang.
pub fn connect_script() -> impl Strategy<Value = ConnectScript<String>> {
    let ms = |below: u64| (0..below).prop_map(Duration::from_millis);
    prop_oneof![
        3 => (ms(1000), proptest::option::of(ms(5000)))
            .prop_map(|(after, lost_after)| ConnectScript::Connect { after, lost_after }),
        3 => (ms(1000), 0u8..10)
            .prop_map(|(after, e)| ConnectScript::Fail { after, error: format!("e{e}") }),
        1 => (ms(1000), 0u8..10)
            .prop_map(|(after, e)| ConnectScript::FailFatally { after, error: format!("f{e}") }),
        1 => (ms(1000), 0u8..10)
            .prop_map(|(after, p)| ConnectScript::Panic { after, message: format!("p{p}") }),
        1 => Just(ConnectScript::Hang),
    ]
}

/// A scripted outcome for one prepare step of a [`Sim`](super::Sim): succeed or
/// fail after up to 1 s (rarely fatally), panic after up to 1 s (rarely), or hang.
pub fn prepare_script() -> impl Strategy<Value = PrepareScript<String>> {
    let ms = |below: u64| (0..below).prop_map(Duration::from_millis);
    prop_oneof![
        3 => ms(1000).prop_map(|after| PrepareScript::Succeed { after }),
        2 => (ms(1000), 0u8..10)
            .prop_map(|(after, e)| PrepareScript::Fail { after, error: format!("e{e}") }),
        1 => (ms(1000), 0u8..10)
            .prop_map(|(after, e)| PrepareScript::FailFatally { after, error: format!("f{e}") }),
        1 => (ms(1000), 0u8..10)
            .prop_map(|(after, p)| PrepareScript::Panic { after, message: format!("p{p}") }),
        1 => Just(PrepareScript::Hang),
    ]
}

// ----- for applications: ops that leave the waiters to the application ------------

/// `start` or `stop` only: the user's calls that do not touch waiters, for an
/// application that registers and withdraws its own.
pub fn lifecycle_op() -> impl Strategy<Value = Op> {
    prop_oneof![3 => Just(Op::Start), 2 => Just(Op::Stop)]
}

/// What happens in the world only: something real happening to an attempt in
/// flight, an open connection, a prepare step or an armed timer ([`happen_op`]).
/// No user calls, no stale or invalid reports.
pub fn world_op() -> impl Strategy<Value = Op> {
    happen_op()
}

/// An [`AppOp`] for an application's property test: mostly the world
/// ([`world_op`], weight 4), some `start` and `stop` ([`lifecycle_op`], 1), and
/// the application's own operations from `app` (3). The kit registers and
/// withdraws no waiters: that is the application's business.
pub fn app_op<U: fmt::Debug>(app: impl Strategy<Value = U>) -> impl Strategy<Value = AppOp<U>> {
    prop_oneof![
        4 => world_op().prop_map(AppOp::Kit),
        1 => lifecycle_op().prop_map(AppOp::Kit),
        3 => app.prop_map(AppOp::App),
    ]
}

/// A sequence of [`app_op`]s with a length in `len`.
pub fn app_ops<U: fmt::Debug>(
    app: impl Strategy<Value = U>,
    len: impl Into<proptest::collection::SizeRange>,
) -> impl Strategy<Value = Vec<AppOp<U>>> {
    proptest::collection::vec(app_op(app), len)
}
