//! The state diagram of the behaviour contract (`docs/contract.md`), drawn from
//! an edge list.
//!
//! [`EDGES`] holds every transition between two different states, with the inputs
//! that cause it; [`NODES`] places the seven states by hand. [`svg`] draws them as
//! `docs/states.svg` (no graphviz, nothing but this file), and [`base64`] encodes
//! the picture for the `data:` URL the rustdoc pages use.
//!
//! `tests/machine/model/state_diagram.rs` explores the real machine and fails if the state
//! changes it finds differ from [`EDGES`], naming the edge to add or remove, and
//! if the committed `docs/states.svg` differs from what [`svg`] draws now
//! (`REDIAL_BLESS=1` rewrites it).
//!
//! # Adding a transition
//!
//! Add one [`Edge`] to [`EDGES`]: `from`, `to`, the inputs, a condition (or `""`),
//! a [`Route`] (start with `Route::Bend(0.0)`, a straight line) and where along the
//! curve its label sits (`0.5`, the middle). Then run
//! `REDIAL_BLESS=1 cargo test --test machine_model state_diagram`, look at `docs/states.svg`, and
//! bend the arrow or move its label until nothing overlaps. The test checks that
//! no two labels overlap and that no label covers a state.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use redial::{InputKind, State};

use InputKind::*;
use State::*;

/// The seven states, in the order the contract lists them.
pub const STATES: [State; 7] = [
    Init,
    Connecting,
    Waiting,
    Connected,
    Disconnecting,
    Restarting,
    Stopped,
];

/// A state's index in [`STATES`] (`State` has no order of its own).
pub fn index(state: State) -> usize {
    STATES
        .iter()
        .position(|s| *s == state)
        .expect("every state is in STATES")
}

/// Where a state is drawn, and the one line under its name.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    /// The state.
    pub state: State,
    /// The centre of its box.
    pub at: (f64, f64),
    /// A few words on what it means.
    pub caption: &'static str,
}

/// The states' boxes, placed by hand: the happy path across the middle, what
/// `stop` leads to along the top, the retry loop below.
pub const NODES: [Node; 7] = [
    Node {
        state: Init,
        at: (230.0, 450.0),
        caption: "never started",
    },
    Node {
        state: Connecting,
        at: (600.0, 450.0),
        caption: "attempt or prepare running",
    },
    Node {
        state: Connected,
        at: (970.0, 450.0),
        caption: "connection up",
    },
    Node {
        state: Waiting,
        at: (785.0, 660.0),
        caption: "retry timer armed",
    },
    Node {
        state: Stopped,
        at: (230.0, 250.0),
        caption: "stopped, or gave up",
    },
    Node {
        state: Restarting,
        at: (600.0, 250.0),
        caption: "stopping, then connect",
    },
    Node {
        state: Disconnecting,
        at: (970.0, 250.0),
        caption: "stopping: cleaning up",
    },
];

/// The shape of an arrow: a cubic Bézier curve from the centre of one box to the
/// centre of the other, cut where it leaves the first box and enters the second.
#[derive(Debug, Clone, Copy)]
pub enum Route {
    /// Bulge this far (pixels) to the left of the direction of travel; `0.0` is a
    /// straight line. Two arrows between the same states bend opposite ways.
    Bend(f64),
    /// A smooth curve through these points, for arrows that go around other
    /// boxes.
    Through(&'static [(f64, f64)]),
}

/// One transition between two different states.
#[derive(Debug, Clone, Copy)]
pub struct Edge {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Every input that takes the machine from `from` to `to`, in the order the
    /// label lists them.
    pub inputs: &'static [InputKind],
    /// When the inputs take this arrow rather than another (drawn in italics), or
    /// `""`.
    pub when: &'static str,
    /// The arrow's shape.
    pub route: Route,
    /// Where the label's centre sits on the curve (0: start, 1: end).
    pub label_at: f64,
}

/// The inputs that report something outstanding gone.
const GONE: &[InputKind] = &[
    ConnectCancelled,
    ConnectionFailed,
    AttemptFailedFatally,
    Panicked,
    ConnectionClosed,
];

/// The inputs that end an attempt without a usable connection.
const FAILED: &[InputKind] = &[
    ConnectionFailed,
    PrepareFailed,
    AttemptFailedFatally,
    ConnectionClosed,
    Panicked,
    TimerFired,
];

/// The inputs that end an established connection: its loss, a failed probe, the
/// probe timeout.
const LOST: &[InputKind] = &[ConnectionClosed, ProbeFailed, TimerFired];

/// Every transition between two different states. `tests/machine/model/state_diagram.rs`
/// checks this list against the machine.
pub const EDGES: &[Edge] = &[
    // from Init
    Edge {
        from: Init,
        to: Connecting,
        inputs: &[Start],
        when: "",
        route: Route::Bend(0.0),
        label_at: 0.5,
    },
    Edge {
        from: Init,
        to: Stopped,
        inputs: &[Stop],
        when: "",
        route: Route::Bend(0.0),
        label_at: 0.5,
    },
    // from Connecting
    Edge {
        from: Connecting,
        to: Connected,
        inputs: &[ConnectionMade, PrepareSucceeded],
        when: "",
        route: Route::Bend(0.0),
        label_at: 0.5,
    },
    Edge {
        from: Connecting,
        to: Waiting,
        inputs: FAILED,
        when: "the policy retries",
        route: Route::Bend(-70.0),
        label_at: 0.5,
    },
    Edge {
        from: Connecting,
        to: Stopped,
        inputs: FAILED,
        when: "it gives up",
        route: Route::Bend(50.0),
        label_at: 0.58,
    },
    Edge {
        from: Connecting,
        to: Disconnecting,
        inputs: &[Stop],
        when: "",
        route: Route::Bend(0.0),
        label_at: 0.5,
    },
    // from Waiting
    Edge {
        from: Waiting,
        to: Connecting,
        inputs: &[TimerFired],
        when: "",
        route: Route::Bend(-40.0),
        label_at: 0.45,
    },
    Edge {
        from: Waiting,
        to: Connecting,
        inputs: &[ReconnectNow],
        when: "",
        route: Route::Bend(-100.0),
        label_at: 0.6,
    },
    Edge {
        from: Waiting,
        to: Stopped,
        inputs: &[Stop],
        when: "nothing outstanding",
        route: Route::Through(&[(70.0, 620.0)]),
        label_at: 0.35,
    },
    Edge {
        from: Waiting,
        to: Disconnecting,
        inputs: &[Stop],
        when: "something outstanding",
        route: Route::Through(&[(1150.0, 630.0)]),
        label_at: 0.3,
    },
    // from Connected
    Edge {
        from: Connected,
        to: Waiting,
        inputs: LOST,
        when: "the policy retries",
        route: Route::Bend(0.0),
        label_at: 0.5,
    },
    Edge {
        from: Connected,
        to: Stopped,
        inputs: LOST,
        when: "the policy gives up",
        route: Route::Through(&[
            (1110.0, 400.0),
            (1120.0, 150.0),
            (900.0, 60.0),
            (400.0, 60.0),
        ]),
        label_at: 0.5,
    },
    Edge {
        from: Connected,
        to: Disconnecting,
        inputs: &[Stop],
        when: "",
        route: Route::Bend(0.0),
        label_at: 0.5,
    },
    // from Disconnecting
    Edge {
        from: Disconnecting,
        to: Restarting,
        inputs: &[Start],
        when: "",
        route: Route::Bend(20.0),
        label_at: 0.5,
    },
    Edge {
        from: Disconnecting,
        to: Stopped,
        inputs: GONE,
        when: "nothing else is outstanding",
        route: Route::Through(&[(800.0, 130.0), (400.0, 130.0)]),
        label_at: 0.5,
    },
    // from Restarting
    Edge {
        from: Restarting,
        to: Disconnecting,
        inputs: &[Stop],
        when: "",
        route: Route::Bend(20.0),
        label_at: 0.5,
    },
    Edge {
        from: Restarting,
        to: Connecting,
        inputs: GONE,
        when: "nothing else is outstanding",
        route: Route::Bend(0.0),
        label_at: 0.5,
    },
    // from Stopped
    Edge {
        from: Stopped,
        to: Connecting,
        inputs: &[Start],
        when: "",
        route: Route::Bend(50.0),
        label_at: 0.5,
    },
    Edge {
        from: Stopped,
        to: Disconnecting,
        inputs: &[Stop],
        when: "something outstanding",
        route: Route::Through(&[(400.0, 185.0), (800.0, 185.0)]),
        label_at: 0.25,
    },
];

/// Every `(from, to, input)` the diagram draws, states as [`index`]es.
pub fn transitions() -> BTreeSet<(usize, usize, &'static str)> {
    EDGES
        .iter()
        .flat_map(|e| {
            e.inputs
                .iter()
                .map(move |i| (index(e.from), index(e.to), i.name()))
        })
        .collect()
}

// ----- drawing ---------------------------------------------------------------------

/// Width of the picture.
pub const WIDTH: f64 = 1240.0;
/// Height of the picture.
pub const HEIGHT: f64 = 790.0;
/// Where the legend starts; arrows and labels stay above it.
pub const LEGEND_TOP: f64 = HEIGHT - 60.0;
/// Size of a state's box.
const BOX_W: f64 = 184.0;
const BOX_H: f64 = 52.0;
/// Labels: monospace, so their width is known.
const LABEL_FONT: f64 = 11.0;
const LABEL_CHAR_W: f64 = LABEL_FONT * 0.6;
const LABEL_LINE_H: f64 = 14.0;
/// Labels are wrapped at this many characters.
const LABEL_WRAP: usize = 24;

const COMMAND_COLOUR: &str = "#1f5fbf";
const REPORT_COLOUR: &str = "#444444";

type Point = (f64, f64);

/// A rectangle: left, top, right, bottom.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    /// Left.
    pub x0: f64,
    /// Top.
    pub y0: f64,
    /// Right.
    pub x1: f64,
    /// Bottom.
    pub y1: f64,
}

impl Rect {
    fn around((x, y): Point, w: f64, h: f64) -> Rect {
        Rect {
            x0: x - w / 2.0,
            y0: y - h / 2.0,
            x1: x + w / 2.0,
            y1: y + h / 2.0,
        }
    }

    fn grown(self, by: f64) -> Rect {
        Rect {
            x0: self.x0 - by,
            y0: self.y0 - by,
            x1: self.x1 + by,
            y1: self.y1 + by,
        }
    }

    fn contains(self, (x, y): Point) -> bool {
        self.x0 <= x && x <= self.x1 && self.y0 <= y && y <= self.y1
    }

    /// Whether the two rectangles share any area.
    pub fn overlaps(self, other: Rect) -> bool {
        self.x0 < other.x1 && other.x0 < self.x1 && self.y0 < other.y1 && other.y0 < self.y1
    }
}

fn node(state: State) -> &'static Node {
    NODES
        .iter()
        .find(|n| n.state == state)
        .expect("every state has a node")
}

/// The box a state is drawn in.
pub fn state_box(state: State) -> Rect {
    Rect::around(node(state).at, BOX_W, BOX_H)
}

fn is_command(edge: &Edge) -> bool {
    edge.inputs
        .iter()
        .all(|i| matches!(i, Start | Stop | ReconnectNow))
}

/// The label's lines: the inputs, packed `LABEL_WRAP` characters to a line, then
/// the condition (in italics), if any.
fn label_lines(edge: &Edge) -> (Vec<String>, Option<String>) {
    let mut lines: Vec<String> = Vec::new();
    for input in edge.inputs {
        let name = input.name();
        match lines.last_mut() {
            Some(line) if line.len() + 3 + name.len() <= LABEL_WRAP => {
                line.push_str(" · ");
                line.push_str(name);
            }
            _ => lines.push(name.to_owned()),
        }
    }
    let when = (!edge.when.is_empty()).then(|| format!("if {}", edge.when));
    (lines, when)
}

fn label_size(edge: &Edge) -> (f64, f64) {
    let (lines, when) = label_lines(edge);
    let chars = lines
        .iter()
        .chain(when.iter())
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let n = lines.len() + usize::from(when.is_some());
    (
        chars as f64 * LABEL_CHAR_W + 8.0,
        n as f64 * LABEL_LINE_H + 4.0,
    )
}

/// A curve made of cubic Bézier segments, each one `[start, control, control, end]`.
type Path = Vec<[Point; 4]>;

/// The edge's curve, centre to centre.
fn curve(edge: &Edge) -> Path {
    let p0 = node(edge.from).at;
    let p3 = node(edge.to).at;
    match edge.route {
        Route::Through(points) => {
            // A Catmull-Rom spline through the centres and the waypoints.
            let mut all = vec![p0];
            all.extend_from_slice(points);
            all.push(p3);
            let at = |i: usize| all[i.min(all.len() - 1)];
            (0..all.len() - 1)
                .map(|i| {
                    let (a, b, c, d) = (at(i.saturating_sub(1)), at(i), at(i + 1), at(i + 2));
                    [
                        b,
                        (b.0 + (c.0 - a.0) / 6.0, b.1 + (c.1 - a.1) / 6.0),
                        (c.0 - (d.0 - b.0) / 6.0, c.1 - (d.1 - b.1) / 6.0),
                        c,
                    ]
                })
                .collect()
        }
        Route::Bend(k) => {
            let (dx, dy) = (p3.0 - p0.0, p3.1 - p0.1);
            let len = (dx * dx + dy * dy).sqrt();
            // Left of travel, with y growing downwards.
            let (nx, ny) = (dy / len, -dx / len);
            let at = |t: f64| {
                (
                    p0.0 + dx * t + nx * k * 4.0 / 3.0,
                    p0.1 + dy * t + ny * k * 4.0 / 3.0,
                )
            };
            vec![[p0, at(1.0 / 3.0), at(2.0 / 3.0), p3]]
        }
    }
}

/// The point at `t` (0 to 1) along a path, each segment taking an equal share.
fn path_point(path: &[[Point; 4]], t: f64) -> Point {
    let n = path.len() as f64;
    let i = ((t * n) as usize).min(path.len() - 1);
    point(path[i], t * n - i as f64)
}

fn point([p0, p1, p2, p3]: [Point; 4], t: f64) -> Point {
    let u = 1.0 - t;
    let (a, b, c, d) = (u * u * u, 3.0 * u * u * t, 3.0 * u * t * t, t * t * t);
    (
        a * p0.0 + b * p1.0 + c * p2.0 + d * p3.0,
        a * p0.1 + b * p1.1 + c * p2.1 + d * p3.1,
    )
}

/// The curve split at `t` (de Casteljau): the part before and the part after.
fn split([p0, p1, p2, p3]: [Point; 4], t: f64) -> ([Point; 4], [Point; 4]) {
    let lerp = |a: Point, b: Point| (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
    let (q0, q1, q2) = (lerp(p0, p1), lerp(p1, p2), lerp(p2, p3));
    let (r0, r1) = (lerp(q0, q1), lerp(q1, q2));
    let s = lerp(r0, r1);
    ([p0, q0, r0, s], [s, r1, q2, p3])
}

/// The last `t` (searching from `from` towards `to`) at which the curve is still
/// inside `rect`, to a small fraction of a pixel.
fn exit(c: [Point; 4], rect: Rect, from: f64, to: f64) -> f64 {
    const STEPS: u32 = 512;
    let mut inside = from;
    let mut outside = to;
    for i in 1..=STEPS {
        let t = from + (to - from) * f64::from(i) / f64::from(STEPS);
        if !rect.contains(point(c, t)) {
            outside = t;
            break;
        }
        inside = t;
    }
    for _ in 0..40 {
        let mid = (inside + outside) / 2.0;
        if rect.contains(point(c, mid)) {
            inside = mid;
        } else {
            outside = mid;
        }
    }
    outside
}

/// The visible part of an edge's curve: from where it leaves its first box to
/// where it reaches the second (the first segment must leave the one, the last
/// enter the other).
fn visible(edge: &Edge) -> Path {
    let mut path = curve(edge);
    let first = path[0];
    let t0 = exit(first, state_box(edge.from).grown(2.0), 0.0, 1.0);
    path[0] = split(first, t0).1;
    let last = path.len() - 1;
    let t1 = exit(path[last], state_box(edge.to).grown(3.0), 1.0, 0.0);
    path[last] = split(path[last], t1).0;
    path
}

/// Where an edge's label is drawn: centred on the visible curve at `label_at`.
pub fn label_box(edge: &Edge) -> Rect {
    let (w, h) = label_size(edge);
    Rect::around(path_point(&visible(edge), edge.label_at), w, h)
}

/// Every point of the visible part of `edge`, 200 steps apart.
pub fn samples(edge: &Edge) -> Vec<(f64, f64)> {
    let path = visible(edge);
    (0..=200)
        .map(|i| path_point(&path, f64::from(i) / 200.0))
        .collect()
}

/// Whether the visible part of `edge` passes through `rect` or within `margin`
/// of it.
pub fn crosses(edge: &Edge, rect: Rect, margin: f64) -> bool {
    samples(edge)
        .into_iter()
        .any(|p| rect.grown(margin).contains(p))
}

/// Every label box, with the edge it belongs to.
pub fn label_boxes() -> Vec<(&'static Edge, Rect)> {
    EDGES.iter().map(|e| (e, label_box(e))).collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A number as the picture writes it: one decimal, no `-0.0`.
fn n(x: f64) -> String {
    let s = format!("{x:.1}");
    if s == "-0.0" {
        "0.0".to_owned()
    } else {
        s
    }
}

/// The state diagram as an SVG document (the bytes of `docs/states.svg`).
pub fn svg() -> String {
    let mut out = String::new();
    let w = |out: &mut String, s: &str| out.push_str(s);
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" \
         role=\"img\" aria-labelledby=\"title\">",
        WIDTH, HEIGHT, WIDTH, HEIGHT
    );
    w(
        &mut out,
        "<title id=\"title\">redial: the seven states of the machine and the inputs that move it \
         between them</title>\n",
    );
    w(
        &mut out,
        "<!-- Generated from the edge list in devkit/src/diagram.rs: do not edit. \
         Run tests/machine/model/state_diagram.rs with REDIAL_BLESS=1 to redraw it. -->\n",
    );
    let _ = writeln!(
        out,
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>"
    );
    // Arrows first, then labels over them, then the states over everything.
    for edge in EDGES {
        let colour = if is_command(edge) {
            COMMAND_COLOUR
        } else {
            REPORT_COLOUR
        };
        let path = visible(edge);
        let [.., p2, p3] = path[path.len() - 1];
        // The arrowhead: a triangle along the curve's last tangent.
        let (mut dx, mut dy) = (p3.0 - p2.0, p3.1 - p2.1);
        if dx == 0.0 && dy == 0.0 {
            let p0 = path[path.len() - 1][0];
            (dx, dy) = (p3.0 - p0.0, p3.1 - p0.1);
        }
        let len = (dx * dx + dy * dy).sqrt();
        let (ux, uy) = (dx / len, dy / len);
        let (hl, hw) = (10.0, 4.5);
        let base = (p3.0 - ux * hl, p3.1 - uy * hl);
        // The line stops inside the arrowhead, so its end does not poke out.
        let end = (p3.0 - ux * hl * 0.6, p3.1 - uy * hl * 0.6);
        let mut d = format!("M {} {}", n(path[0][0].0), n(path[0][0].1));
        for (i, [_, c1, c2, p]) in path.iter().enumerate() {
            let p = if i == path.len() - 1 { end } else { *p };
            let _ = write!(
                d,
                " C {} {} {} {} {} {}",
                n(c1.0),
                n(c1.1),
                n(c2.0),
                n(c2.1),
                n(p.0),
                n(p.1)
            );
        }
        let _ = writeln!(
            out,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.6\"/>"
        );
        let _ = writeln!(
            out,
            "<polygon points=\"{},{} {},{} {},{}\" fill=\"{colour}\"/>",
            n(p3.0),
            n(p3.1),
            n(base.0 - uy * hw),
            n(base.1 + ux * hw),
            n(base.0 + uy * hw),
            n(base.1 - ux * hw)
        );
    }
    for edge in EDGES {
        let colour = if is_command(edge) {
            COMMAND_COLOUR
        } else {
            REPORT_COLOUR
        };
        let r = label_box(edge);
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"4\" fill=\"#ffffff\" fill-opacity=\"0.92\"/>",
            n(r.x0),
            n(r.y0),
            n(r.x1 - r.x0),
            n(r.y1 - r.y0)
        );
        let (lines, when) = label_lines(edge);
        let cx = (r.x0 + r.x1) / 2.0;
        let mut y = r.y0 + 2.0 + LABEL_LINE_H - 3.5;
        for line in &lines {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"DejaVu Sans Mono, Menlo, Consolas, monospace\" \
                 font-size=\"{LABEL_FONT}\" fill=\"{colour}\">{}</text>",
                n(cx),
                n(y),
                escape(line)
            );
            y += LABEL_LINE_H;
        }
        if let Some(when) = when {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" \
                 font-size=\"{LABEL_FONT}\" font-style=\"italic\" fill=\"#666666\">{}</text>",
                n(cx),
                n(y),
                escape(&when)
            );
        }
    }
    for node in &NODES {
        let r = state_box(node.state);
        let fill = match node.state {
            Init | Stopped => "#eeeeee",
            Connecting | Connected | Waiting => "#e3eefc",
            Disconnecting | Restarting => "#fdf0dc",
        };
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"10\" fill=\"{fill}\" stroke=\"#333333\" stroke-width=\"1.4\"/>",
            n(r.x0),
            n(r.y0)
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" \
             font-size=\"15\" font-weight=\"bold\" fill=\"#111111\">{}</text>",
            n(node.at.0),
            n(node.at.1 - 3.0),
            node.state
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" \
             font-size=\"10.5\" fill=\"#555555\">{}</text>",
            n(node.at.0),
            n(node.at.1 + 14.0),
            escape(node.caption)
        );
    }
    // The legend.
    let legend_y = LEGEND_TOP + 20.0;
    let items: [(&str, &str); 2] = [
        (COMMAND_COLOUR, "a command: start, stop, reconnect_now"),
        (REPORT_COLOUR, "a report from the driver"),
    ];
    let mut x = 30.0;
    for (colour, text) in items {
        let _ = writeln!(
            out,
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{colour}\" stroke-width=\"1.6\"/>",
            n(x),
            n(legend_y),
            n(x + 30.0),
            n(legend_y)
        );
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"11\" fill=\"#333333\">{}</text>",
            n(x + 38.0),
            n(legend_y + 4.0),
            escape(text)
        );
        x += 300.0;
    }
    let _ = writeln!(
        out,
        "<text x=\"30\" y=\"{}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"11\" fill=\"#333333\">\
         Inputs that leave the state unchanged are not drawn. \"Outstanding\": an attempt being cancelled or a connection \
         being closed, not yet reported gone.</text>",
        n(legend_y + 22.0)
    );
    w(&mut out, "</svg>\n");
    out
}

/// Standard base64 (RFC 4648, with padding), for the `data:` URL of the picture.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((v >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
