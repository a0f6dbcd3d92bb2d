#!/usr/bin/env bash
# Exact instruction counts per reconnect cycle (and per input), with callgrind.
#
#   bash benches/callgrind.sh            # needs valgrind (callgrind_annotate comes with it)
#
# For each workload of examples/callgrind_cycle.rs it runs 10,000 and 20,000 cycles
# and prints (Ir(20,000) - Ir(10,000)) / 10,000: setup cancels out, so the figure
# is exact and repeatable on any machine with the same compiler and target.
# Per input: the inclusive count of each `input_*` wrapper, also differenced.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example callgrind_cycle >&2
bin=${CARGO_TARGET_DIR:-target}/release/examples/callgrind_cycle
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Ir collected inside run_* for <workload> <cycles>; also writes the profile.
collect() {
    valgrind --tool=callgrind --callgrind-out-file="$out/$1.$2" \
        --toggle-collect='callgrind_cycle::run_*' "$bin" "$1" "$2" 2>&1 >/dev/null |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

# inclusive Ir of functions matching <pattern> in a profile, as "name Ir" lines
inclusive() {
    callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
        grep -E "$2" | sed -E 's/^ *([0-9,]+) .*::([a-z_]+) \[.*/\2 \1/' | tr -d ,
}

printf '%-16s %12s\n' workload 'Ir/cycle'
for w in redial redial_into redial_backoff floor; do
    a=$(collect "$w" 10000)
    b=$(collect "$w" 20000)
    printf '%-16s %12.1f\n' "$w" "$(echo "($b - $a) / 10000" | bc -l)"
    if [ "$w" = redial ]; then
        redial_ir=$(echo "($b - $a) / 10000" | bc -l)
        join <(inclusive "$out/$w.10000" 'callgrind_cycle::input_' | sort) \
            <(inclusive "$out/$w.20000" 'callgrind_cycle::input_' | sort) |
            while read -r name x y; do
                printf '  %-26s %8.1f Ir/input\n' "$name" "$(echo "($y - $x) / 10000" | bc -l)"
            done
    fi
    if [ "$w" = floor ]; then
        floor_ir=$(echo "($b - $a) / 10000" | bc -l)
    fi
done
printf 'redial / floor = %.2fx (instructions)\n' "$(echo "$redial_ir / $floor_ir" | bc -l)"
