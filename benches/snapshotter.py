#!/usr/bin/env python3
"""The native snapshotter against overlayfs, on this machine.

    sudo python3 benches/snapshotter.py [--reps N] [--runs N] [--dir DIR]

For each base (busybox, and Debian when benches/peers.py or the test suite
left its rootfs tar at /var/tmp/kiln-bench/debian.tar) builds a Dockerfile of
--runs RUN steps (each writes one small file) with `--no-cache`, once per
snapshotter, --reps times after a warm-up, alternating snapshotters, with the
release binary (target/release/kiln; `cargo build --release` first). Prints
medians and ranges as a Markdown table; with --out, writes it there too.
--dir puts the state directories there (default: the system's temporary
directory), to compare filesystems.
Benchmarks prove speed; nothing here is a test.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KILN = REPO / "target/release/kiln"
BASES = {
    "busybox": Path("/var/tmp/kiln-test-bases/amd64.tar"),
    "debian": Path("/var/tmp/kiln-bench/debian.tar"),
}


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stderr}")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out")
    ap.add_argument("--dir")
    a = ap.parse_args()
    if not KILN.exists():
        sys.exit(f"{KILN} is missing: cargo build --release -p kiln-cli")
    rows = []
    with tempfile.TemporaryDirectory(prefix="kiln-snapshotter-bench-", dir=a.dir) as tmp:
        tmp = Path(tmp)
        for base, tar in BASES.items():
            if not tar.exists():
                print(f"skipping {base}: {tar} is missing", file=sys.stderr)
                continue
            ctx = tmp / f"ctx-{base}"
            ctx.mkdir()
            lines = [f"FROM {base}:bench"]
            lines += [f"RUN echo {i} > /step{i}" for i in range(a.runs)]
            (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
            state = tmp / f"state-{base}"
            run([KILN, "--root", state, "import", tar, f"{base}:bench"])
            size = int(run(["du", "-sm", "--apparent-size", tar]).stdout.split()[0])
            times = {"overlayfs": [], "native": []}
            for rep in range(a.reps + 1):
                for snap in times:
                    t0 = time.monotonic()
                    run([KILN, "--root", state, "--snapshotter", snap, "build", "-q",
                         "--no-cache", ctx])
                    dt = time.monotonic() - t0
                    if rep > 0:  # the first round warms up
                        times[snap].append(dt)
            for snap, ts in times.items():
                rows.append((base, size, snap, statistics.median(ts), min(ts), max(ts)))
    fs = run(["df", "--output=fstype", a.dir or tempfile.gettempdir()]).stdout.split()[-1]
    out = [
        f"`{a.runs}` RUN steps, `build --no-cache`, median of {a.reps} "
        f"(after one warm-up), {os.cpu_count()} CPUs, state on {fs}",
        "",
        "| base | base size | snapshotter | median | range |",
        "|---|---|---|---|---|",
    ]
    for base, size, snap, med, lo, hi in rows:
        out.append(f"| {base} | {size} MB | {snap} | {med:.2f} s | {lo:.2f}–{hi:.2f} s |")
    text = "\n".join(out) + "\n"
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
