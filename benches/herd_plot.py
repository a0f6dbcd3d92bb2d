#!/usr/bin/env python3
"""Plot the herd benchmark: connected clients over time through the server restart.

    cargo bench --features tokio --bench herd        # writes target/herd/series.csv
    python3 benches/herd_plot.py                      # writes benches/herd.svg

One panel per scenario (the server back at full speed; the server back accepting a
few hundred connections a second), one line per configuration. Colour is the retry
policy, the line style the library: redial solid, stubborn-io dashed. In the slow
panel the thin dotted lines are the connections the server had accepted (the gap
between a solid line and its dotted line is clients that believe they are connected
while their connection still waits in the kernel's accept queue).

Standard library only: the SVG is written by hand.
"""

import argparse
import csv
import html
import math
import os
from collections import OrderedDict, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# colour by retry policy
COLOURS = {
    "twisted": "#1f77b4",
    "full": "#2ca02c",
    "native": "#9467bd",
    "budget": "#d62728",
}
FALLBACK = ["#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]

TITLES = {
    "restart": "Server killed, back after the downtime at full speed",
    "slow": "Server killed, back after the downtime accepting at most {rate}/s (backlog {backlog})",
}

W, PANEL_H = 900, 380
LEFT, RIGHT, TOP, BOTTOM = 70, 250, 40, 45


def colour_of(config, used):
    policy = config.split("-", 1)[-1]
    if policy in COLOURS:
        return COLOURS[policy]
    if config not in used:
        used[config] = FALLBACK[len(used) % len(FALLBACK)]
    return used[config]


def wrap(text, width):
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line] if line else lines


def nice_step(span, target=8):
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def fmt_num(v):
    if abs(v - round(v)) < 1e-9:
        return f"{int(round(v)):,}"
    return f"{v:g}"


def read_series(path):
    # scenario -> config -> kind -> [(t, value)]; labels per config
    series = OrderedDict()
    labels = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            sc = series.setdefault(row["scenario"], OrderedDict())
            cfg = sc.setdefault(row["config"], defaultdict(list))
            cfg[row["kind"]].append((float(row["t"]), float(row["value"])))
            labels[row["config"]] = row["label"].replace(";", ",")
    return series, labels


def read_results(path):
    out = {}
    if not os.path.exists(path):
        return out
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            # the series is round 1's; so are the figures shown beside it
            if row.get("round", "1") == "1":
                out[(row.get("scenario"), row.get("config"))] = row
    return out


def panel(svg, y0, scenario, configs, labels, results, used):
    n = max(v for cfg in configs.values() for (_, v) in cfg["connected"])
    t_max = max(t for cfg in configs.values() for pts in cfg.values() for (t, _) in pts)
    t_min = -0.25
    pw, ph = W - LEFT - RIGHT, PANEL_H - TOP - BOTTOM

    def x(t):
        return LEFT + (t - t_min) / (t_max - t_min) * pw

    def y(v):
        return y0 + TOP + ph - v / n * ph

    rows = [results.get((scenario, c), {}) for c in configs]
    rate = next((r.get("rate") for r in rows if r.get("rate")), "?")
    backlog = next((r.get("backlog") for r in rows if r.get("backlog")), "?")
    ups = [float(r["up"]) for r in rows if r.get("up")]
    title = TITLES.get(scenario, scenario).format(rate=rate, backlog=backlog)
    svg.append(
        f'<text x="{LEFT}" y="{y0 + 22}" font-size="15" font-weight="bold">'
        f"{html.escape(title)} (N = {fmt_num(n)})</text>"
    )
    # grid and axes
    step = nice_step(t_max - t_min)
    t = 0.0
    while t <= t_max + 1e-9:
        svg.append(
            f'<line x1="{x(t):.1f}" y1="{y(0):.1f}" x2="{x(t):.1f}" y2="{y(n):.1f}" stroke="#e5e5e5"/>'
        )
        svg.append(
            f'<text x="{x(t):.1f}" y="{y(0) + 16:.1f}" font-size="11" text-anchor="middle">{fmt_num(t)}</text>'
        )
        t += step
    vstep = nice_step(n, 5)
    v = 0.0
    while v <= n + 1e-9:
        svg.append(
            f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{LEFT + pw}" y2="{y(v):.1f}" stroke="#e5e5e5"/>'
        )
        svg.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{fmt_num(v)}</text>'
        )
        v += vstep
    svg.append(
        f'<rect x="{LEFT}" y="{y(n):.1f}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>'
    )
    svg.append(
        f'<text x="{LEFT + pw / 2:.1f}" y="{y(0) + 34:.1f}" font-size="12" text-anchor="middle">'
        "seconds since the server was killed</text>"
    )
    svg.append(
        f'<text x="18" y="{y(n / 2):.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 18 {y(n / 2):.1f})">clients connected</text>'
    )
    # the kill and the restart
    svg.append(
        f'<line x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(0):.1f}" y2="{y(n):.1f}" stroke="#444" stroke-dasharray="2 2"/>'
    )
    svg.append(f'<text x="{x(0) + 3:.1f}" y="{y(n) + 12:.1f}" font-size="10" fill="#444">kill</text>')
    if ups:
        up = sum(ups) / len(ups)
        svg.append(
            f'<line x1="{x(up):.1f}" y1="{y(0):.1f}" x2="{x(up):.1f}" y2="{y(n):.1f}" stroke="#444" stroke-dasharray="2 2"/>'
        )
        svg.append(
            f'<text x="{x(up) + 3:.1f}" y="{y(n) + 24:.1f}" font-size="10" fill="#444">server listening again</text>'
        )
    # lines
    legend_y = y(n) + 8
    for config, kinds in configs.items():
        colour = colour_of(config, used)
        dash = ' stroke-dasharray="7 4"' if config.startswith("stubborn") else ""
        for kind, pts in kinds.items():
            # in file order: the drop at the kill is two points at t = 0
            pts = [
                p
                for i, p in enumerate(pts)
                if i == 0 or i == len(pts) - 1 or p[1] != pts[i - 1][1] or p[1] != pts[i + 1][1]
            ]
            # A client that reconnects (a liveness probe's) is accepted more than
            # once: the accepted line is capped at N, where every client has been.
            path = " ".join(f"{x(t):.1f},{y(min(v, n)):.1f}" for (t, v) in pts)
            if kind == "connected":
                svg.append(
                    f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"{dash}>'
                    f"<title>{html.escape(labels[config])}</title></polyline>"
                )
            else:
                svg.append(
                    f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1" '
                    f'stroke-dasharray="1.5 2.5" opacity="0.9"><title>{html.escape(labels[config])}: '
                    "accepted by the server</title></polyline>"
                )
        # legend entry
        lx = LEFT + pw + 14
        svg.append(
            f'<line x1="{lx}" y1="{legend_y:.1f}" x2="{lx + 26}" y2="{legend_y:.1f}" stroke="{colour}" stroke-width="1.8"{dash}/>'
        )
        r = results.get((scenario, config), {})
        notes = []
        try:
            notes.append(f"all back {float(r['max']):.2f} s")
            if "accepted" in kinds:
                notes.append(f"never accepted {int(float(r['half_open'])):,}")
        except (KeyError, ValueError):
            pass
        lines = wrap(labels[config], 30)
        for i, line in enumerate(lines):
            svg.append(
                f'<text x="{lx + 32}" y="{legend_y + 4 + 13 * i:.1f}" font-size="11">{html.escape(line)}</text>'
            )
        if notes:
            svg.append(
                f'<text x="{lx + 32}" y="{legend_y + 4 + 13 * len(lines):.1f}" font-size="10" fill="#555">'
                f"({html.escape(', '.join(notes))})</text>"
            )
        legend_y += 13 * (len(lines) + 1) + 10
    if any("accepted" in k for k in configs.values()):
        lx = LEFT + pw + 14
        svg.append(
            f'<line x1="{lx}" y1="{legend_y:.1f}" x2="{lx + 26}" y2="{legend_y:.1f}" stroke="#444" '
            'stroke-width="1" stroke-dasharray="1.5 2.5"/>'
        )
        svg.append(
            f'<text x="{lx + 32}" y="{legend_y + 4:.1f}" font-size="11">dotted: accepted by the server</text>'
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", default=os.path.join(ROOT, "target", "herd", "series.csv"))
    ap.add_argument("--results", default=os.path.join(ROOT, "target", "herd", "results.csv"))
    ap.add_argument("--out", default=os.path.join(HERE, "herd.svg"))
    args = ap.parse_args()

    series, labels = read_series(args.series)
    results = read_results(args.results)
    used = {}
    height = PANEL_H * len(series) + 30
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
        f'viewBox="0 0 {W} {height}" font-family="sans-serif">',
        f'<rect width="{W}" height="{height}" fill="white"/>',
    ]
    for i, (scenario, configs) in enumerate(series.items()):
        panel(svg, i * PANEL_H, scenario, configs, labels, results, used)
    svg.append(
        f'<text x="{LEFT}" y="{height - 10}" font-size="10" fill="#666">'
        "redial solid, stubborn-io dashed; made by benches/herd_plot.py from "
        "cargo bench --features tokio --bench herd (see BENCHMARKS.md)</text>"
    )
    svg.append("</svg>")
    with open(args.out, "w") as f:
        f.write("\n".join(svg) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
