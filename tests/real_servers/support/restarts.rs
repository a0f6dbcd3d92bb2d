//! The callers of a restart loop, written once for the real-server tests (Redis,
//! PostgreSQL, WebSocket): worker tasks that call through the service until told to
//! stop, each call bounded, counting what became of every call, and whether it was
//! issued and answered while the server was up (a *clean* call, which must succeed).
//!
//! The test's own loop takes the server down and up again, telling the workers with
//! [`Workers::down`] (before it takes the server down) and [`Workers::up`] (once the
//! service has reconnected); [`Workers::finish`] stops the workers and hands back the
//! [`Totals`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// What a worker calls: one call through the service.
pub trait Caller: Send + Sync + 'static {
    /// One call, the `n`th (from 1) of worker `worker`: `Err` carries the error the
    /// caller got, printed. `stage` notes where the call stands (printed if it hangs).
    fn call(
        &self,
        worker: usize,
        n: u64,
        stage: &Stage,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Noted just before each call, and handed to [`Caller::failed`] if it fails
    /// (e.g. the service's loss count).
    fn mark(&self) -> u64 {
        0
    }

    /// After a failed call was counted: e.g. check that it came with a lost
    /// connection.
    fn failed(&self, _mark: u64, _error: &str) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// What the service was doing, printed when a call hangs.
    fn describe(&self) -> String {
        String::new()
    }
}

/// Where a call stands, as the call notes it (empty: waiting for the connection).
#[derive(Clone, Default)]
pub struct Stage(Arc<Mutex<Option<String>>>);

impl Stage {
    /// Notes where the call stands now.
    pub fn set(&self, note: impl Into<String>) {
        *self.0.lock().unwrap() = Some(note.into());
    }

    fn take(&self) -> String {
        self.0
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| "waiting for the connection".to_owned())
    }
}

/// What became of the workers' calls.
#[derive(Debug, Default)]
pub struct Totals {
    pub issued: u64,
    /// Answered with success.
    pub answered: u64,
    /// Answered with an error.
    pub failed: u64,
    /// Not answered within the bound.
    pub hung: u64,
    /// Issued and answered while the server was up (and had been reconnected to).
    pub clean: u64,
    /// Clean calls that did not succeed.
    pub clean_failed: u64,
    /// The errors, by message.
    pub errors: BTreeMap<String, u64>,
    /// The longest a successful call took.
    pub longest_answer: Duration,
}

impl Totals {
    /// The promises every restart loop checks: no call hung, none was dropped
    /// silently, every clean call succeeded, and there were clean calls.
    /// `calls` names them in messages ("commands", "queries", "echoes").
    pub fn check(&self, calls: &str) {
        assert_eq!(self.hung, 0, "{calls} hung");
        assert_eq!(
            self.issued,
            self.answered + self.failed,
            "{calls} silently dropped"
        );
        assert_eq!(self.clean_failed, 0, "{calls} issued while up failed");
        assert!(self.clean > 0, "no {calls} issued and answered while up");
    }
}

#[derive(Default)]
struct Tally {
    issued: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    hung: AtomicU64,
    clean: AtomicU64,
    clean_failed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    longest_answer_us: AtomicU64,
}

/// The worker tasks, and the phase of the restart loop they read: even = up and
/// reconnected, odd = going down or down.
pub struct Workers {
    phase: Arc<AtomicU64>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Spawns `count` workers (on the current Tokio runtime), each calling `caller`
    /// until [`Workers::finish`], a call counting as hung past `hang`, with `pause`
    /// between calls. `call` names one call in messages ("a command").
    pub fn spawn<C: Caller>(
        caller: Arc<C>,
        count: usize,
        hang: Duration,
        pause: Duration,
        call: &'static str,
    ) -> Workers {
        let phase = Arc::new(AtomicU64::new(0));
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..count)
            .map(|worker| {
                let (caller, phase, tally, stop) = (
                    Arc::clone(&caller),
                    Arc::clone(&phase),
                    Arc::clone(&tally),
                    Arc::clone(&stop),
                );
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let before = phase.load(Ordering::SeqCst);
                        let mark = caller.mark();
                        let stage = Stage::default();
                        let t0 = Instant::now();
                        tally.issued.fetch_add(1, Ordering::SeqCst);
                        let result =
                            tokio::time::timeout(hang, caller.call(worker, n, &stage)).await;
                        let clean =
                            before.is_multiple_of(2) && phase.load(Ordering::SeqCst) == before;
                        match &result {
                            Ok(Ok(())) => {
                                tally.answered.fetch_add(1, Ordering::SeqCst);
                                let us = t0.elapsed().as_micros() as u64;
                                tally.longest_answer_us.fetch_max(us, Ordering::SeqCst);
                            }
                            Ok(Err(e)) => {
                                tally.failed.fetch_add(1, Ordering::SeqCst);
                                *tally.errors.lock().unwrap().entry(e.clone()).or_default() += 1;
                                caller.failed(mark, e).await;
                                if clean {
                                    eprintln!("{call} issued and answered while up failed: {e}");
                                }
                            }
                            Err(_) => {
                                tally.hung.fetch_add(1, Ordering::SeqCst);
                                eprintln!(
                                    "{call} hung {}; the service: {}",
                                    stage.take(),
                                    caller.describe()
                                );
                            }
                        }
                        if clean {
                            tally.clean.fetch_add(1, Ordering::SeqCst);
                            if !matches!(result, Ok(Ok(()))) {
                                tally.clean_failed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Workers {
            phase,
            tally,
            stop,
            tasks,
        }
    }

    /// The server is about to go down: calls from now on are not clean.
    pub fn down(&self) {
        self.phase.fetch_add(1, Ordering::SeqCst);
    }

    /// The server is up again and the service reconnected to it.
    pub fn up(&self) {
        self.phase.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops the workers, waits for them (each within 30 s), and counts.
    pub async fn finish(self) -> Totals {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("a worker hung")
                .unwrap();
        }
        let t = &self.tally;
        Totals {
            issued: t.issued.load(Ordering::SeqCst),
            answered: t.answered.load(Ordering::SeqCst),
            failed: t.failed.load(Ordering::SeqCst),
            hung: t.hung.load(Ordering::SeqCst),
            clean: t.clean.load(Ordering::SeqCst),
            clean_failed: t.clean_failed.load(Ordering::SeqCst),
            errors: std::mem::take(&mut *t.errors.lock().unwrap()),
            longest_answer: Duration::from_micros(t.longest_answer_us.load(Ordering::SeqCst)),
        }
    }
}
