//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz
//! targets' checks under plain `cargo test`, so the corpus never goes stale, and
//! runs a few thousand pseudo-random byte strings through them as a cheap fuzz
//! smoke test.

use redial_devkit::check;
use std::fs;
use std::path::Path;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .map(|entry| entry.expect("readable").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&path).expect("readable"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn machine_corpus_replays() {
    let files = corpus("machine");
    assert!(files.len() >= 8, "the machine corpus is missing");
    for (name, data) in files {
        eprintln!("fuzz/corpus/machine/{name}");
        check::machine(&data);
    }
}

#[test]
fn policy_corpus_replays() {
    let files = corpus("policy");
    assert!(files.len() >= 8, "the policy corpus is missing");
    for (name, data) in files {
        eprintln!("fuzz/corpus/policy/{name}");
        check::policy(&data);
    }
}

/// SplitMix64 bytes: deterministic, so a failure here reproduces.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = redial::SplitMix64::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

#[test]
fn random_bytes_smoke() {
    for seed in 0..2_000 {
        let data = random_bytes(seed, (seed as usize * 7) % 600);
        check::machine(&data);
        check::policy(&data);
    }
}

#[test]
fn corpus_inputs_decode_to_real_runs() {
    // The seeds must exercise the machine, not just fail to decode.
    let decoded = corpus("machine")
        .iter()
        .filter_map(|(_, data)| check::decode_machine(data).ok())
        .filter(|(_, _, ops)| ops.len() >= 10)
        .count();
    assert!(
        decoded >= 4,
        "only {decoded} corpus inputs decode to 10+ ops"
    );
}

#[test]
fn the_corpus_exercises_panics() {
    use redial::testing::run_ops;
    use redial::{Action, Input, Machine};
    // Accepted `panicked` reports that made a failed attempt: (while attempting,
    // while preparing).
    let (mut attempting, mut preparing) = (0, 0);
    for (_, data) in corpus("machine") {
        let Ok((config, policy, ops)) = check::decode_machine(&data) else {
            continue;
        };
        let mut machine = Machine::with_config(policy, config).unwrap();
        run_ops(&mut machine, &ops, |input, result, _| {
            if let (Input::Panicked { attempt, .. }, Ok(step)) = (input, result) {
                let fails = |a: &Action<String>| {
                    matches!(a, Action::AttemptFailed { attempt: failed, .. } if failed == attempt)
                };
                if step.actions.iter().any(fails) {
                    let closes = step
                        .actions
                        .contains(&Action::Disconnect { attempt: *attempt });
                    *(if closes {
                        &mut preparing
                    } else {
                        &mut attempting
                    }) += 1;
                }
            }
            Ok(())
        })
        .unwrap();
    }
    assert!(attempting > 0 && preparing > 0, "{attempting} {preparing}");
}
