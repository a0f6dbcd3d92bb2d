#!/usr/bin/env python3
"""The reconnect cycle of devkit/src/cycle.rs, through Twisted's ClientService.

Same cycle, in memory, with a fake clock (twisted.internet.task.Clock) and a fake
endpoint whose connect() succeeds at once:

    Waiting --whenConnected()--> Waiting                 (a waiter asks)
            --clock.advance(0)--> Connecting -> Connected (retry fires, connect
                                                          succeeds, the waiter's
                                                          Deferred fires)
            --connectionLost---> Waiting                  (retry scheduled, 0 s)

Run (no CI needed):

    pip install twisted
    python3 benches/twisted_cycle.py                    # Twisted alone
    cargo build --release --example callgrind_cycle
    python3 benches/twisted_cycle.py --redial target/release/examples/callgrind_cycle

With --redial it interleaves rounds of Twisted and of redial's same cycle (the
callgrind workload, `redial <cycles> --time`) and prints the ratio of the medians:
both measured in the same run, on the same machine noise.
"""

import argparse
import platform
import statistics
import subprocess
import sys
import time

import twisted
from twisted.application.internet import ClientService
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure


class FakeEndpoint:
    """An IStreamClientEndpoint whose every connect() succeeds at once."""

    def __init__(self):
        self.protocol = None

    def connect(self, factory):
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.protocol = protocol
        return succeed(protocol)


class Cycle:
    def __init__(self):
        self.clock = Clock()
        self.endpoint = FakeEndpoint()
        self.notified = 0
        self.service = ClientService(
            self.endpoint,
            Factory.forProtocol(Protocol),
            retryPolicy=lambda failed_attempts: 0.0,
            clock=self.clock,
        )
        self.service.startService()  # connects at once
        self._lose()  # now Waiting, retry timer armed (0 s)

    def _notified(self, protocol):
        self.notified += 1

    def _lose(self):
        self.endpoint.protocol.connectionLost(Failure(ConnectionDone()))

    def cycle(self):
        self.service.whenConnected().addCallback(self._notified)
        self.clock.advance(0)  # the retry timer fires: connect, connected, notify
        self._lose()  # lost: retry scheduled


def time_twisted(cycles):
    c = Cycle()
    start = time.perf_counter()
    for _ in range(cycles):
        c.cycle()
    elapsed = time.perf_counter() - start
    assert c.notified == cycles, (c.notified, cycles)
    return elapsed / cycles * 1e9  # ns per cycle


def time_redial(binary, cycles, workload):
    out = subprocess.run(
        [binary, workload, str(cycles), "--time"], check=True, capture_output=True, text=True
    ).stdout
    (ns,) = [float(line.split()[1]) for line in out.splitlines() if line.startswith("ns_per_cycle")]
    return ns


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--cycles", type=int, default=20_000, help="Twisted cycles per round")
    p.add_argument("--redial", metavar="BINARY", help="target/release/examples/callgrind_cycle")
    p.add_argument("--redial-cycles", type=int, default=2_000_000)
    p.add_argument(
        "--workload",
        default="redial_into",
        help="callgrind_cycle workload: redial_into (handle_into, the driver's path) or redial",
    )
    args = p.parse_args()

    print(f"Twisted {twisted.__version__}, Python {platform.python_version()} ({sys.executable})")
    time_twisted(1_000)  # warm-up
    tw, rd = [], []
    for _ in range(args.rounds):
        tw.append(time_twisted(args.cycles))
        if args.redial:
            rd.append(time_redial(args.redial, args.redial_cycles, args.workload))
    t = statistics.median(tw)
    print(
        f"twisted ClientService cycle: {t / 1000:.2f} us "
        f"(median of {args.rounds} rounds of {args.cycles} cycles; min {min(tw) / 1000:.2f} us)"
    )
    if args.redial:
        r = statistics.median(rd)
        print(
            f"redial Machine cycle:        {r:.1f} ns "
            f"(median of {args.rounds} rounds of {args.redial_cycles} cycles)"
        )
        print(f"redial is {t / r:.0f}x faster than Twisted (target: >= 300x)")


if __name__ == "__main__":
    main()
