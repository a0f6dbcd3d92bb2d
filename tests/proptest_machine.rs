//! Model-based property tests: random sequences of valid, stale and invalid inputs
//! are fed to the `Machine` and to the reference model in tests/model/; the action
//! lists must be equal and the invariants of SPEC §8 must hold after every step.
//!
//! A failure shrinks to a short sequence and prints it as a trace (the format of
//! tests/traces/*.trace), ending with `# violated: …`.
//!
//! Cases: `REDIAL_PROPTEST_CASES` (default 10 000) for the main property, a tenth
//! of that for each of the others. Soak locally with e.g.
//! `REDIAL_PROPTEST_CASES=1000000 cargo test --release --test proptest_machine`.

mod model;

use std::time::Duration;

use model::run_with_model;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use redial::testing::{minimize, strategy, Op, SimPolicy};
use redial::Config;

fn cases() -> u32 {
    std::env::var("REDIAL_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 100_000,
        // Failure persistence files would land in the source tree; the seeds are
        // printed on failure instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `ops` through the machine and the model; on failure, the shortest trace
/// [`minimize`] finds.
fn check_run(config: Config, policy: SimPolicy, ops: &[Op]) -> Result<(), TestCaseError> {
    match run_with_model(config, policy, ops) {
        Ok(()) => Ok(()),
        Err(_) => {
            let shortest = minimize(ops, |ops| run_with_model(config, policy, ops).is_err());
            let violation = run_with_model(config, policy, &shortest).unwrap_err();
            Err(TestCaseError::fail(format!(
                "{violation}\n# ({} ops; the ops: {shortest:?})",
                shortest.len()
            )))
        }
    }
}

proptest! {
    #![proptest_config(proptest_config(cases()))]

    /// Any configuration, any deterministic policy (a third give up), any mix of
    /// valid, stale and invalid inputs.
    #[test]
    fn machine_matches_model(
        config in strategy::config(),
        policy in strategy::sim_policy(),
        ops in strategy::ops(0..200),
    ) {
        check_run(config, policy, &ops)?;
    }
}

proptest! {
    #![proptest_config(proptest_config(cases() / 10))]

    /// Twisted's defaults: no opt-ins, a policy that never gives up.
    #[test]
    fn default_config_matches_model(ops in strategy::ops(0..200)) {
        check_run(Config::default(), SimPolicy::linear(Duration::from_secs(1)), &ops)?;
    }

    /// A prepare step with a timeout, and a connect timeout.
    #[test]
    fn prepare_and_timeouts_match_model(ops in strategy::ops(0..200)) {
        let config = Config {
            prepare: true,
            connect_timeout: Some(Duration::from_secs(5)),
            prepare_timeout: Some(Duration::from_secs(2)),
            reset_backoff_after: None,
        };
        check_run(config, SimPolicy::linear(Duration::from_millis(1)), &ops)?;
    }

    /// Backoff reset only after the connection stayed up, with prepare.
    #[test]
    fn reset_backoff_after_matches_model(ops in strategy::ops(0..200)) {
        let config = Config {
            prepare: true,
            reset_backoff_after: Some(Duration::from_secs(10)),
            ..Config::default()
        };
        check_run(config, SimPolicy::linear(Duration::from_millis(1)), &ops)?;
    }

    /// A policy that gives up after three failures.
    #[test]
    fn give_up_matches_model(config in strategy::config(), ops in strategy::ops(0..200)) {
        check_run(config, SimPolicy::linear(Duration::from_millis(1)).give_up_after(3), &ops)?;
    }

    /// Only what a correct driver and user do: long, realistic runs.
    #[test]
    fn valid_runs_match_model(
        config in strategy::config(),
        policy in strategy::sim_policy(),
        ops in proptest::collection::vec(strategy::valid_op(), 0..400),
    ) {
        check_run(config, policy, &ops)?;
    }
}
