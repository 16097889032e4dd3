#!/usr/bin/env python3
"""Times two commands alternately (A B A B …) and prints each one's median
wall time and the median of the per-pair ratios A/B: a comparison that holds
when the machine's speed drifts during the run. Benchmarks prove speed;
nothing here is a test.

usage: python3 benches/pair.py [-n PAIRS] [--warmup N] [--settle] 'COMMAND A' 'COMMAND B'

`--settle` runs `sync` and pauses one second before every run, as
`benches/peers.py --settle sync` does before every timed build.

Each command is split as a shell splits words and run without a shell, its
output thrown away; a command that fails stops the run. Example (issue 20,
the cost of RUN confinement: this kiln against a release build of the
commit before it, 40 `RUN true` steps of `benches/peers.py`'s runs40):

    python3 benches/pair.py -n 15 \\
      'target/release/kiln --root /var/tmp/kiln-bench/kiln-state build -q --no-cache -t bench:1 /var/tmp/kiln-bench/runs40' \\
      '/var/tmp/kiln-before --root /var/tmp/kiln-bench/kiln-before-state build -q --no-cache -t bench:1 /var/tmp/kiln-bench/runs40'
"""
import argparse
import os
import shlex
import statistics
import subprocess
import sys
import time


def run(cmd, settle=False):
    if settle:
        os.sync()
        time.sleep(1)
    t = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit(f"{shlex.join(cmd)}: exit {p.returncode}\n{p.stderr.decode(errors='replace')}")
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10, help="pairs (default 10)")
    ap.add_argument("--warmup", type=int, default=1, help="pairs not counted, first (default 1)")
    ap.add_argument("--settle", action="store_true",
                    help="sync and pause 1 s before every run")
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    a, b = shlex.split(args.a), shlex.split(args.b)
    for _ in range(args.warmup):
        run(a, args.settle)
        run(b, args.settle)
    ta, tb = [], []
    for _ in range(args.n):
        ta.append(run(a, args.settle))
        tb.append(run(b, args.settle))
    ratios = [x / y for x, y in zip(ta, tb)]
    q = lambda xs: f"median {statistics.median(xs):.3f} (min {min(xs):.3f}, max {max(xs):.3f})"
    print(f"A wall s: {q(ta)}")
    print(f"B wall s: {q(tb)}")
    print(f"A/B per pair: {q(ratios)}, {args.n} pairs")


if __name__ == "__main__":
    main()
