#!/usr/bin/env python3
"""What a max-mode cache export costs beyond uploading its blobs ([cache] issue).

    sudo python3 benches/cache_export.py [--reps N]

Builds a generated 5-stage Dockerfile (each stage makes ~2,000 small files
and a 4 MiB file, copies the previous stage's output and runs a step; the
last stage copies from all of them) with kiln (target/release/kiln, built if
missing) in a fresh state directory, then measures, on the warm cache
(every step cached):

* `plain`: the build alone;
* `export-new`: the build with `--cache-to type=registry,mode=max` to an
  empty repository of a loopback docker-registry (blobs uploaded);
* `export-again`: the same export again (every blob already there: what is
  left is the export itself — records, config, manifest, HEAD requests);
* `export-local`: `--cache-to type=local,mode=max` into a fresh directory.

Prints a markdown table of medians and min–max and appends it, with the
machine, to benches/results/<date>-cache-export.md. Benchmarks prove speed;
nothing here is a test.
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (the registry and base-image helpers)

REPO = peers.REPO
KILN = peers.KILN


def generate(ctx: Path):
    ctx.mkdir(parents=True, exist_ok=True)
    lines = []
    for s in range(5):
        lines.append(f"FROM {peers.BASE} AS s{s}")
        lines.append(
            f"RUN mkdir -p /out/s{s} && cd /out/s{s} && "
            f"for i in $(seq 1 2000); do echo s{s}-$i > f$i; done && "
            f"head -c 4194304 /dev/zero | tr '\\0' '{s}' > big")
        if s > 0:
            lines.append(f"COPY --from=s{s - 1} /out /prev")
        lines.append(f"RUN ls -R /out | wc -l > /out/s{s}/count")
    lines.append(f"FROM {peers.BASE}")
    for s in range(5):
        lines.append(f"COPY --from=s{s} /out/s{s} /app/s{s}")
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")


def timed(cmd, env):
    t = time.monotonic()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    if not KILN.exists():
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "kiln-cli"],
                       cwd=REPO, check=True)
    work = Path(tempfile.mkdtemp(prefix="kiln-cache-export."))
    try:
        tar = peers.busybox_tar(work)
        ctx = work / "ctx"
        generate(ctx)
        state = work / "state"
        env = {**os.environ, "SOURCE_DATE_EPOCH": "1600000000",
               "KILN_GC_KEEP_STORAGE": "off"}
        base = [str(KILN), "--root", str(state)]
        subprocess.run(base + ["import", str(tar), peers.BASE], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        subprocess.run(base + ["build", "-q", "-o", f"type=local,dest={work}/fs", str(ctx)],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        results = {"plain": [], "export-new": [], "export-again": [], "export-local": []}
        with peers.Registry(work) as _reg:
            host = f"127.0.0.1:{peers.REGISTRY_PORT}"
            for rep in range(args.reps):
                out = ["-o", f"type=local,dest={work}/fs", str(ctx)]
                results["plain"].append(timed(base + ["build", "-q"] + out, env))
                ref = f"{host}/bench/cache{rep}:max"
                to = ["--cache-to", f"type=registry,ref={ref},mode=max"]
                results["export-new"].append(timed(base + ["build", "-q"] + to + out, env))
                results["export-again"].append(timed(base + ["build", "-q"] + to + out, env))
                local = work / f"local{rep}"
                to = ["--cache-to", f"type=local,dest={local},mode=max"]
                results["export-local"].append(timed(base + ["build", "-q"] + to + out, env))
        plain = statistics.median(results["plain"])
        rows = ["| run | median s | min–max s | beyond the plain build s |",
                "|---|---|---|---|"]
        for k, v in results.items():
            m = statistics.median(v)
            rows.append(f"| {k} | {m:.3f} | {min(v):.3f}–{max(v):.3f} | {m - plain:+.3f} |")
        table = "\n".join(rows)
        print(table)
        day = datetime.date.today().isoformat()
        dest = REPO / "benches" / "results" / f"{day}-cache-export.md"
        with dest.open("a") as f:
            f.write(f"# Cache export, max mode, 5 stages ({day})\n\n")
            f.write(f"Machine: {platform.node()}, {os.cpu_count()} CPUs, "
                    f"{platform.release()}. Command: `sudo python3 benches/cache_export.py "
                    f"--reps {args.reps}` (warm cache: every step cached; "
                    f"{args.reps} repetitions).\n\n{table}\n\n")
        print(f"appended to {dest}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
