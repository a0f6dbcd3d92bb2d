//! The state diagram cannot drift from the machine.
//!
//! 1. `the_diagram_has_every_transition_of_the_machine`: explores the real machine
//!    breadth-first under 48 configurations (prepare step on and off, connect and
//!    prepare timeouts, the healthy timer, a policy that never gives up and two that
//!    do, giving up at the first or the second fatal failure, probes on and off),
//!    feeding it every input a faithful driver and a user could give (and stale
//!    reports), collects every change of state with the input that caused it, and
//!    compares that set with the diagram's edge list (`devkit/src/diagram.rs`):
//!    no edge missing, none extra. A failure names the edge to add or remove.
//! 2. `the_committed_diagram_is_up_to_date`: `docs/states.svg` (and its base64
//!    copy, `docs/states.svg.b64`, which the rustdoc pages embed) must be exactly
//!    what the edge list draws now. `REDIAL_BLESS=1` rewrites them.
//! 3. `the_diagram_is_readable`: no label overlaps another label or a state, no
//!    arrow runs through a state it does not connect, everything is on the canvas.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use redial::{
    Action, AttemptId, Config, Input, InputKind, Machine, Panic, PanicSite, ProbeConfig,
    RetryPolicy, TimerId, TimerKind,
};
use redial_devkit::diagram::{self, Edge, EDGES, STATES};

// ----- exploring the machine -----------------------------------------------------------

/// Retries after one second, or gives up at the `give_up_at`-th consecutive failure.
#[derive(Debug, Clone, PartialEq)]
struct Policy {
    give_up_at: u32,
}

impl RetryPolicy for Policy {
    fn next_delay(&mut self, consecutive_failures: u32) -> Option<Duration> {
        (consecutive_failures < self.give_up_at).then_some(Duration::from_secs(1))
    }
}

type M = Machine<String, Policy>;

/// What the driver holds: attempts in flight and open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Thing {
    Attempt {
        id: AttemptId,
        cancel_asked: bool,
    },
    Connection {
        id: AttemptId,
        preparing: bool,
        close_asked: bool,
        probing: bool,
    },
}

impl Thing {
    fn id(self) -> AttemptId {
        match self {
            Thing::Attempt { id, .. } | Thing::Connection { id, .. } => id,
        }
    }
}

#[derive(Debug, Clone)]
struct World {
    machine: M,
    things: Vec<Thing>,
    timer: Option<TimerId>,
    /// The last timer scheduled.
    newest_timer: Option<TimerId>,
    /// The inputs that led here, for failure messages.
    path: Vec<InputKind>,
}

/// Everything that decides which state changes are still possible, without the
/// ids (which only grow): two worlds with the same key change state alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    state: usize,
    consecutive_failures: u32,
    fatal_streak: u32,
    timer: Option<TimerKindKey>,
    things: Vec<(u8, bool, bool, bool, bool)>,
    old_attempt: bool,
    old_timer: bool,
    waiters: usize,
    stops: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TimerKindKey {
    Retry,
    ConnectTimeout,
    PrepareTimeout,
    Healthy,
    ProbeInterval,
    ProbeTimeout,
}

fn timer_key(kind: TimerKind) -> TimerKindKey {
    match kind {
        TimerKind::Retry => TimerKindKey::Retry,
        TimerKind::ConnectTimeout => TimerKindKey::ConnectTimeout,
        TimerKind::PrepareTimeout => TimerKindKey::PrepareTimeout,
        TimerKind::Healthy => TimerKindKey::Healthy,
        TimerKind::ProbeInterval => TimerKindKey::ProbeInterval,
        TimerKind::ProbeTimeout => TimerKindKey::ProbeTimeout,
    }
}

impl World {
    fn new(config: Config, give_up_at: u32) -> World {
        World {
            machine: Machine::with_config(Policy { give_up_at }, config).expect("a valid config"),
            things: Vec::new(),
            timer: None,
            newest_timer: None,
            path: Vec::new(),
        }
    }

    fn key(&self) -> Key {
        let m = &self.machine;
        let current = m.current_attempt();
        let mut things: Vec<_> = self
            .things
            .iter()
            .map(|t| match *t {
                Thing::Attempt { id, cancel_asked } => {
                    (0, cancel_asked, false, false, current == Some(id))
                }
                Thing::Connection {
                    id,
                    preparing,
                    close_asked,
                    probing,
                } => (1, preparing, close_asked, probing, current == Some(id)),
            })
            .collect();
        things.sort_unstable();
        Key {
            state: diagram::index(m.state()),
            consecutive_failures: m.consecutive_failures().min(3),
            fatal_streak: m.fatal_streak().min(2),
            timer: m.armed_timer().map(|(_, kind)| timer_key(kind)),
            things,
            old_attempt: self.old_attempt().is_some(),
            old_timer: self.old_timer().is_some(),
            waiters: m.pending_waiters().count().min(2),
            stops: m.pending_stops().len().min(2),
        }
    }

    /// The newest attempt id issued that the driver no longer holds.
    fn old_attempt(&self) -> Option<AttemptId> {
        let issued = self.machine.counters().attempts;
        (0..issued)
            .rev()
            .map(AttemptId::from_raw)
            .find(|a| self.things.iter().all(|t| t.id() != *a))
    }

    /// The newest timer id issued that is not armed (one of the last two issued:
    /// only one timer is ever armed).
    fn old_timer(&self) -> Option<TimerId> {
        let newest = self.newest_timer?;
        if self.timer == Some(newest) {
            newest.raw().checked_sub(1).map(TimerId::from_raw)
        } else {
            Some(newest)
        }
    }

    /// Every input worth trying here: the user's commands, everything that can
    /// really happen to what the driver holds, and stale reports. A new input
    /// belongs here too, or the state changes it causes go unnoticed.
    fn inputs(&self) -> Vec<Input<String>> {
        let mut inputs = vec![
            Input::Start,
            Input::Stop,
            Input::WhenConnected {
                fail_after_failures: None,
            },
            Input::WhenConnected {
                fail_after_failures: NonZeroU32::new(1),
            },
            Input::ReconnectNow {
                reset_backoff: false,
            },
            Input::ReconnectNow {
                reset_backoff: true,
            },
        ];
        if let Some(waiter) = self.machine.pending_waiters().next() {
            inputs.push(Input::CancelWaiter { waiter });
        }
        let panic = |site| Panic::new(site, "boom");
        for thing in &self.things {
            match *thing {
                Thing::Attempt { id, cancel_asked } => {
                    inputs.push(Input::ConnectionMade { attempt: id });
                    inputs.push(Input::ConnectionFailed {
                        attempt: id,
                        error: "refused".into(),
                    });
                    inputs.push(Input::Panicked {
                        attempt: id,
                        panic: panic(PanicSite::Connector),
                    });
                    inputs.push(Input::AttemptFailedFatally {
                        attempt: id,
                        error: "bad password".into(),
                    });
                    if cancel_asked {
                        inputs.push(Input::ConnectCancelled { attempt: id });
                    }
                }
                Thing::Connection {
                    id,
                    preparing,
                    probing,
                    ..
                } => {
                    inputs.push(Input::ConnectionClosed { attempt: id });
                    if probing {
                        inputs.push(Input::ProbeSucceeded { attempt: id });
                        inputs.push(Input::ProbeFailed { attempt: id });
                    }
                    if preparing {
                        inputs.push(Input::PrepareSucceeded { attempt: id });
                        inputs.push(Input::PrepareFailed {
                            attempt: id,
                            error: "rejected".into(),
                        });
                        inputs.push(Input::Panicked {
                            attempt: id,
                            panic: panic(PanicSite::Prepare),
                        });
                        inputs.push(Input::AttemptFailedFatally {
                            attempt: id,
                            error: "bad password".into(),
                        });
                    }
                }
            }
        }
        if let Some(timer) = self.timer {
            inputs.push(Input::TimerFired { timer });
        }
        // Stale reports: about an attempt the driver no longer holds, and a timer
        // that is not armed (they must change nothing but close orphans).
        if let Some(attempt) = self.old_attempt() {
            inputs.extend([
                Input::ConnectionMade { attempt },
                Input::ConnectionFailed {
                    attempt,
                    error: "late".into(),
                },
                Input::ConnectCancelled { attempt },
                Input::PrepareSucceeded { attempt },
                Input::PrepareFailed {
                    attempt,
                    error: "late".into(),
                },
                Input::Panicked {
                    attempt,
                    panic: panic(PanicSite::Connector),
                },
                Input::AttemptFailedFatally {
                    attempt,
                    error: "late".into(),
                },
                Input::ConnectionClosed { attempt },
                Input::ProbeSucceeded { attempt },
                Input::ProbeFailed { attempt },
            ]);
        }
        if let Some(timer) = self.old_timer() {
            inputs.push(Input::TimerFired { timer });
        }
        inputs
    }

    /// Feeds `input`; `None` if the machine rejected it (bad input changes nothing).
    fn step(&self, input: Input<String>) -> Option<World> {
        let mut next = self.clone();
        next.path.push(input.kind());
        let step = next.machine.handle(input.clone()).ok()?;
        // What the input says happened.
        match input {
            Input::ConnectionMade { attempt } => {
                for t in &mut next.things {
                    if let Thing::Attempt { id, .. } = *t {
                        if id == attempt {
                            *t = Thing::Connection {
                                id,
                                preparing: false,
                                close_asked: false,
                                probing: false,
                            };
                        }
                    }
                }
            }
            Input::ConnectionFailed { attempt, .. } | Input::ConnectCancelled { attempt } => next
                .things
                .retain(|t| !matches!(*t, Thing::Attempt { id, .. } if id == attempt)),
            Input::Panicked { attempt, .. } | Input::AttemptFailedFatally { attempt, .. } => {
                next.things
                    .retain(|t| !matches!(*t, Thing::Attempt { id, .. } if id == attempt));
                next.set_preparing(attempt, false);
            }
            Input::PrepareSucceeded { attempt } | Input::PrepareFailed { attempt, .. } => {
                next.set_preparing(attempt, false);
            }
            Input::ProbeSucceeded { attempt }
            | Input::ProbeFailed { attempt }
            | Input::ConnectionActive { attempt, .. } => {
                next.set_probing(attempt, false);
            }
            Input::ConnectionClosed { attempt } => next
                .things
                .retain(|t| !matches!(*t, Thing::Connection { id, .. } if id == attempt)),
            Input::TimerFired { timer } if next.timer == Some(timer) => next.timer = None,
            Input::TimerFired { .. } => {}
            Input::Start
            | Input::Stop
            | Input::WhenConnected { .. }
            | Input::CancelWaiter { .. }
            | Input::ReconnectNow { .. } => {}
        }
        // What the machine asked for.
        for action in &step.actions {
            match *action {
                Action::Connect { attempt } => next.things.push(Thing::Attempt {
                    id: attempt,
                    cancel_asked: false,
                }),
                Action::CancelConnect { attempt } => {
                    for t in &mut next.things {
                        if let Thing::Attempt { id, cancel_asked } = t {
                            if *id == attempt {
                                *cancel_asked = true;
                            }
                        }
                    }
                }
                Action::Prepare { attempt } => next.set_preparing(attempt, true),
                Action::Probe { attempt } => next.set_probing(attempt, true),
                Action::Disconnect { attempt } => {
                    let open = next.things.iter_mut().find_map(|t| match t {
                        Thing::Connection {
                            id, close_asked, ..
                        } if *id == attempt => Some(close_asked),
                        _ => None,
                    });
                    match open {
                        Some(close_asked) => *close_asked = true,
                        // An orphan: the driver holds it until it is closed.
                        None => next.things.push(Thing::Connection {
                            id: attempt,
                            preparing: false,
                            close_asked: true,
                            probing: false,
                        }),
                    }
                }
                Action::ScheduleTimer { timer, .. } => {
                    next.timer = Some(timer);
                    next.newest_timer = Some(timer);
                }
                Action::CancelTimer { timer } if next.timer == Some(timer) => next.timer = None,
                _ => {}
            }
        }
        Some(next)
    }

    fn set_probing(&mut self, attempt: AttemptId, value: bool) {
        for t in &mut self.things {
            if let Thing::Connection { id, probing, .. } = t {
                if *id == attempt {
                    *probing = value;
                }
            }
        }
    }

    fn set_preparing(&mut self, attempt: AttemptId, value: bool) {
        for t in &mut self.things {
            if let Thing::Connection { id, preparing, .. } = t {
                if *id == attempt {
                    *preparing = value;
                }
            }
        }
    }
}

/// How deep the search goes from `Init`, in inputs.
const MAX_DEPTH: usize = 12;
/// Worlds holding more than this many attempts and connections are not expanded.
const MAX_THINGS: usize = 3;

/// Every configuration explored: prepare step on and off, timeouts off and on,
/// healthy timer off and on, probes off and on, a policy that never gives up, and policies that give
/// up at the first and at the second consecutive failure; giving up at the first
/// fatal failure (the default) or at the second.
fn configurations() -> Vec<(Config, u32)> {
    let mut all = Vec::new();
    for prepare in [false, true] {
        for timeouts in [false, true] {
            for healthy in [false, true] {
                for (give_up_at, fatal, probe) in [
                    (u32::MAX, 1, false),
                    (1, 1, false),
                    (2, 1, false),
                    (u32::MAX, 2, false),
                    (u32::MAX, 1, true),
                    (1, 1, true),
                ] {
                    let config = Config::new()
                        .with_probe(probe.then(|| {
                            ProbeConfig::new(Duration::from_secs(10), Duration::from_secs(5))
                        }))
                        .with_give_up_after_fatal(NonZeroU32::new(fatal).expect("not zero"))
                        .with_prepare(prepare)
                        .with_connect_timeout(timeouts.then_some(Duration::from_secs(5)))
                        .with_prepare_timeout(
                            (timeouts && prepare).then_some(Duration::from_secs(5)),
                        )
                        .with_reset_backoff_after(healthy.then_some(Duration::from_secs(30)));
                    all.push((config, give_up_at));
                }
            }
        }
    }
    all
}

/// A state change seen: `(from, to, input)`, states as indexes into `STATES`.
type Transition = (usize, usize, &'static str);

/// Every state change found, with the shortest run that shows it.
fn explore() -> BTreeMap<Transition, (InputKind, String)> {
    let mut found: BTreeMap<Transition, (InputKind, String)> = BTreeMap::new();
    for (config, give_up_at) in configurations() {
        let start = World::new(config, give_up_at);
        let mut seen: HashSet<Key> = HashSet::from([start.key()]);
        let mut queue = VecDeque::from([start]);
        while let Some(world) = queue.pop_front() {
            if world.path.len() >= MAX_DEPTH || world.things.len() > MAX_THINGS {
                continue;
            }
            let before = world.machine.state();
            for input in world.inputs() {
                let kind = input.kind();
                let Some(next) = world.step(input) else {
                    continue;
                };
                let after = next.machine.state();
                if after != before {
                    found
                        .entry((diagram::index(before), diagram::index(after), kind.name()))
                        .or_insert_with(|| {
                            let run: Vec<_> = next.path.iter().map(|k| k.name()).collect();
                            (
                                kind,
                                format!(
                                    "{} (with {config:?}, {})",
                                    run.join(" → "),
                                    if give_up_at == u32::MAX {
                                        "a policy that never gives up".to_owned()
                                    } else {
                                        format!("a policy that gives up at failure {give_up_at}")
                                    }
                                ),
                            )
                        });
                }
                if seen.insert(next.key()) {
                    queue.push_back(next);
                }
            }
        }
    }
    found
}

fn state_name(i: usize) -> String {
    format!("{:?}", STATES[i])
}

#[test]
fn the_diagram_has_every_transition_of_the_machine() {
    let found = explore();
    let drawn = diagram::transitions();
    let found_set: BTreeSet<Transition> = found.keys().copied().collect();

    let mut message = String::new();
    // Missing: group by (from, to), so a whole new arrow is one suggestion.
    let mut missing: BTreeMap<(usize, usize), Vec<&(InputKind, String)>> = BTreeMap::new();
    for t in found_set.difference(&drawn) {
        missing.entry((t.0, t.1)).or_default().push(&found[t]);
    }
    for ((from, to), inputs) in &missing {
        let kinds: Vec<String> = inputs.iter().map(|(k, _)| format!("{k:?}")).collect();
        let existing = EDGES
            .iter()
            .any(|e| diagram::index(e.from) == *from && diagram::index(e.to) == *to);
        if existing {
            let _ = writeln!(
                message,
                "MISSING: the machine goes from {} to {} on {}; add {} to the `inputs` of that \
                 edge in EDGES (devkit/src/diagram.rs).",
                state_name(*from),
                state_name(*to),
                kinds.join(", "),
                kinds.join(", "),
            );
        } else {
            let _ = writeln!(
                message,
                "MISSING: the machine goes from {from_s} to {to_s} on {k}; add this edge to EDGES \
                 (devkit/src/diagram.rs), then bless the picture:\n    \
                 Edge {{ from: {from_s}, to: {to_s}, inputs: &[{k}], when: \"\", route: Route::Bend(0.0), label_at: 0.5 }},",
                from_s = state_name(*from),
                to_s = state_name(*to),
                k = kinds.join(", "),
            );
        }
        for (kind, run) in inputs {
            let _ = writeln!(message, "    {kind:?}, e.g. after: {run}");
        }
    }
    for (from, to, input) in drawn.difference(&found_set) {
        let _ = writeln!(
            message,
            "EXTRA: the diagram draws {} → {} on {input}, which the machine never does here; \
             remove it from EDGES (devkit/src/diagram.rs), or teach this test the input or the \
             configuration that shows it (`World::inputs`, `configurations`).",
            state_name(*from),
            state_name(*to),
        );
    }
    assert!(
        message.is_empty(),
        "the state diagram and the machine disagree:\n{message}\nThen run \
         `REDIAL_BLESS=1 cargo test --test machine_model state_diagram` to redraw docs/states.svg, and update \
         the transition tables of docs/contract.md."
    );
}

fn docs_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name)
}

#[test]
fn the_committed_diagram_is_up_to_date() {
    let svg = diagram::svg();
    let b64 = diagram::base64(svg.as_bytes()) + "\n";
    let files = [("states.svg", svg), ("states.svg.b64", b64)];
    if std::env::var_os("REDIAL_BLESS").is_some_and(|v| v == "1") {
        for (name, contents) in &files {
            fs::write(docs_path(name), contents).expect("docs/ is writable");
        }
        return;
    }
    for (name, contents) in &files {
        let committed = fs::read_to_string(docs_path(name)).unwrap_or_default();
        assert!(
            committed == *contents,
            "docs/{name} is not what devkit/src/diagram.rs draws now. Run \
             `REDIAL_BLESS=1 cargo test --test machine_model state_diagram` to rewrite docs/states.svg and \
             docs/states.svg.b64, look at the picture, and commit both."
        );
    }
}

#[test]
fn the_diagram_is_readable() {
    let labels = diagram::label_boxes();
    let describe = |e: &Edge| format!("the label of {:?} → {:?}", e.from, e.to);
    let canvas = diagram::Rect {
        x0: 0.0,
        y0: 0.0,
        x1: diagram::WIDTH,
        y1: diagram::LEGEND_TOP,
    };
    let mut problems = Vec::new();
    for (i, (a, ra)) in labels.iter().enumerate() {
        if !(canvas.x0 <= ra.x0 && ra.x1 <= canvas.x1 && canvas.y0 <= ra.y0 && ra.y1 <= canvas.y1) {
            problems.push(format!("{} is off the canvas: {ra:?}", describe(a)));
        }
        for (b, rb) in &labels[i + 1..] {
            if ra.overlaps(*rb) {
                problems.push(format!("{} overlaps {}", describe(a), describe(b)));
            }
        }
        for s in STATES {
            if ra.overlaps(diagram::state_box(s)) {
                problems.push(format!("{} covers the box of {s:?}", describe(a)));
            }
        }
    }
    for (i, a) in STATES.iter().enumerate() {
        for b in &STATES[i + 1..] {
            if diagram::state_box(*a).overlaps(diagram::state_box(*b)) {
                problems.push(format!("the boxes of {a:?} and {b:?} overlap"));
            }
        }
    }
    for edge in EDGES {
        if let Some(p) = diagram::samples(edge)
            .into_iter()
            .find(|&(x, y)| !(x >= 0.0 && x <= canvas.x1 && y >= 0.0 && y <= canvas.y1))
        {
            problems.push(format!(
                "the arrow {:?} → {:?} leaves the canvas at {p:?}",
                edge.from, edge.to
            ));
        }
        for s in STATES {
            if s == edge.from || s == edge.to {
                continue;
            }
            if diagram::crosses(edge, diagram::state_box(s), 6.0) {
                problems.push(format!(
                    "the arrow {:?} → {:?} runs through the box of {s:?}",
                    edge.from, edge.to
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the diagram needs tidying (move or bend arrows in devkit/src/diagram.rs):\n{}",
        problems.join("\n")
    );
}
