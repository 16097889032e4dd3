#!/usr/bin/env python3
"""kiln side by side with BuildKit and Buildah, on this machine, in one run.

    sudo python3 benches/peers.py [--reps N] [--workloads noop,runs40,...]
                                  [--builders kiln,kiln-host,buildkit,buildah]
                                  [--settle sync|none]

Installs what is missing from Debian (docker.io, buildah, busybox-static,
time, docker-registry) and matplotlib from PyPI, starts dockerd if it is not running, makes
the same busybox base image in each builder offline (`localhost/busybox`),
generates the workloads deterministically, then runs every workload for
every builder: one warm-up, then --reps measured runs, alternating builders
within each repetition. Writes benches/results/<date>.md (medians, min-max,
kiln/peer ratios, the machine) and a PNG of the ratios beside it.

Builders:
- `kiln`: kiln's defaults (each RUN step in a network namespace of its own);
- `kiln-host`: `--network=host --allow network.host`, like for like with the
  peers below, which use the host network;
- `kiln-before`: the kiln binary named by `KILN_BEFORE` (a release build
  of an earlier commit), counted as a peer: its ratios are what the commits
  since cost or saved;
- `buildkit`: BuildKit v0.13 (docker 26.1 with buildx 0.13, from Debian
  trixie, run as a second engine by `benches/buildkit-0.13.sh`), with
  `--network=host`: that engine has no bridge, so BuildKit's default network
  cannot run here;
- `buildkit-none`: the same with `--network=none` (a network namespace per
  step with loopback only: BuildKit's isolation cost without its bridge);
- `buildkit08`: the BuildKit embedded in Debian's docker.io 20.10 engine
  (`DOCKER_BUILDKIT=1 /usr/bin/docker build`), the column of the reports
  before 2026-12;
- `buildah`: Buildah 1.28 with `--isolation=chroot --layers`.

Two methodologies (`--settle`): `sync` (the default) runs `sync` and pauses
one second before every timed build, so that each builder pays for flushing
its own writes only; `none` alternates the builders with nothing in between,
so a builder that flushes the filesystem (kiln's layer commit) also pays for
the writeback of the previous builder's data. Either way, a workload that
starts from an empty builder state does not run within a minute of a reset's
deletions (`Trash`). Benchmarks prove speed; nothing here is a test.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KILN = REPO / "target/release/kiln"
BASE = "localhost/busybox:latest"
DEBIAN = "localhost/debian:bench"
# Base images besides busybox that the selected workloads need: (name, tar).
EXTRA_BASES = []
DOCKER = "/usr/bin/docker"
REGISTRY_BIN = "/usr/bin/docker-registry"
REGISTRY_PORT = 5055
BUILDKIT13_SH = REPO / "benches/buildkit-0.13.sh"
#: Before every timed build: "sync" (sync + 1 s pause) or "none".
SETTLE = "sync"


def sh(cmd, check=True, env=None, quiet=True, cwd=None):
    out = subprocess.run(
        cmd,
        shell=isinstance(cmd, str),
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.STDOUT if quiet else None,
        text=True,
    )
    if check and out.returncode != 0:
        raise BuildFailed(f"command failed ({out.returncode}): {cmd}\n{out.stdout or ''}")
    return out


class BuildFailed(RuntimeError):
    pass


#: Failed attempts that were retried, per builder (reported with the results).
FLAKES = {}


def setup(builders):
    need = []
    if not shutil.which("busybox") and not Path("/bin/busybox").exists():
        need.append("busybox-static")
    if not Path("/usr/bin/time").exists():
        need.append("time")
    if "buildkit08" in builders and not Path(DOCKER).exists():
        need.append("docker.io")
    if "buildah" in builders and not shutil.which("buildah"):
        need.append("buildah")
    if not Path(REGISTRY_BIN).exists():
        need.append("docker-registry")
    if not shutil.which("debootstrap"):
        need.append("debootstrap")
    if need:
        sh("apt-get update -qq")
        sh(["apt-get", "install", "-y", "-qq", *need],
           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sh([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=False)
    if "buildkit08" in builders and sh([DOCKER, "info"], check=False).returncode != 0:
        subprocess.Popen(["dockerd"], stdout=open("/tmp/kiln-bench-dockerd.log", "w"),
                         stderr=subprocess.STDOUT)
        for _ in range(60):
            if sh([DOCKER, "info"], check=False).returncode == 0:
                break
            time.sleep(1)
        else:
            sys.exit("dockerd did not start (see /tmp/kiln-bench-dockerd.log)")
    sh(["cargo", "build", "--release", "-q", "-p", "kiln-cli"], cwd=REPO)


def busybox_tar(work):
    root = work / "rootfs"
    if root.exists():
        shutil.rmtree(root)
    for d in ["bin", "etc", "tmp", "root"]:
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin/busybox")
    applets = sh(["/bin/busybox", "--list"]).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", root / "bin" / a)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    os.chmod(root / "tmp", 0o1777)
    tar = work / "busybox.tar"
    sh(["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner",
        "-C", str(root), "-cf", str(tar), "."])
    return tar


# --- workloads -------------------------------------------------------------

def w_noop(work):
    ctx = work / "noop"
    (ctx / "src").mkdir(parents=True, exist_ok=True)
    for i in range(20):
        (ctx / "src" / f"f{i}.txt").write_text(f"file {i}\n" * 50)
    (ctx / "Dockerfile").write_text(f"""FROM {BASE} AS build
COPY src/ /src/
RUN cat /src/*.txt | wc -l > /count
FROM {BASE} AS tools
RUN echo tools > /tools
FROM {BASE}
COPY --from=build /count /count
COPY --from=tools /tools /tools
""")
    return ctx


def w_runs40(work):
    ctx = work / "runs40"
    ctx.mkdir(parents=True, exist_ok=True)
    lines = [f"FROM {BASE}"] + [f"RUN echo step {i} > /step{i}" for i in range(40)]
    (ctx / "Dockerfile").write_text("\n".join(lines) + "\n")
    return ctx


def w_bigctx(work):
    """30,000 files, ~340 MiB: many small files and ten of 20 MiB."""
    ctx = work / "bigctx"
    marker = ctx / ".generated"
    if not marker.exists():
        if ctx.exists():
            shutil.rmtree(ctx)
        ctx.mkdir(parents=True)
        seed = 12345
        for d in range(300):
            dd = ctx / "src" / f"d{d:03}"
            dd.mkdir(parents=True)
            for f in range(100):
                if d == 0 and f < 10:
                    continue
                seed = (seed * 6364136223846793005 + 1442695040888963407) % 2**64
                size = 2000 + seed % 8000
                (dd / f"f{f:03}.txt").write_bytes(
                    (f"{d}/{f} {seed:x}\n".encode() * (size // 20 + 1))[:size])
        for i in range(10):
            (ctx / "src" / "d000" / f"big{i}.bin").write_bytes(os.urandom(20 << 20))
        marker.write_text("")
    # Two forms of the edit loop: a copy into a fresh directory, and the
    # common `WORKDIR /app` + `COPY . .` (a copy into a directory that exists).
    (ctx / "Dockerfile").write_text(f"FROM {BASE}\nCOPY . /app\nRUN find /app | wc -l\n")
    (ctx / "Dockerfile.workdir").write_text(
        f"FROM {BASE}\nWORKDIR /app\nCOPY . .\nRUN find . | wc -l\n")
    (ctx / ".dockerignore").write_text("Dockerfile*\n.generated\n")
    return ctx


def w_image1g(work):
    """A 1 GiB image: eight 128 MiB files of base64 text (compresses about
    as well as binaries and packages do, ~1.3:1 with gzip)."""
    ctx = work / "image1g"
    marker = ctx / ".generated"
    if not marker.exists():
        if ctx.exists():
            shutil.rmtree(ctx)
        (ctx / "data").mkdir(parents=True)
        import base64
        import random
        rng = random.Random(1234)
        for i in range(8):
            raw = rng.randbytes(96 << 20)
            (ctx / "data" / f"part{i}.b64").write_bytes(base64.b64encode(raw))
        (ctx / "Dockerfile").write_text(f"FROM {BASE}\nCOPY data /data\n")
        (ctx / ".dockerignore").write_text("Dockerfile\n.generated\n")
        marker.write_text("")
    return ctx


HELLO_C = """#include <stdio.h>
int main(void) { puts("hello from a static binary"); return 0; }
"""


def debian_tar(work):
    """A debootstrapped Debian (minbase, bookworm) as a root filesystem tar:
    made once from Debian's mirror (a package registry this machine reaches)
    and kept in the work directory."""
    tar = work / "debian.tar"
    if not tar.exists():
        root = work / "debian-root"
        if root.exists():
            shutil.rmtree(root)
        sh(["debootstrap", "--variant=minbase", "bookworm", str(root),
            "http://deb.debian.org/debian"])
        sh(["tar", "--sort=name", "--numeric-owner", "-C", str(root), "-cf", str(tar), "."])
        shutil.rmtree(root)
    return tar


def w_realistic(work):
    """The realistic Debian case: apt-get install gcc in a Debian stage,
    compile a static binary, copy it into busybox. Cold: empty caches (the
    packages come from Debian's mirror each time). Warm: the C source
    changed, apt's layer cached: compile and copy again."""
    tar = debian_tar(work)
    if (DEBIAN, tar) not in EXTRA_BASES:
        EXTRA_BASES.append((DEBIAN, tar))
    ctx = work / "realistic"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "hello.c").write_text(HELLO_C)
    (ctx / "Dockerfile").write_text(f"""FROM {DEBIAN} AS build
RUN apt-get update \\
 && apt-get install -y --no-install-recommends gcc libc6-dev \\
 && rm -rf /var/lib/apt/lists/*
COPY hello.c /src/
RUN gcc -static -O2 -o /hello /src/hello.c
FROM {BASE}
COPY --from=build /hello /usr/local/bin/hello
CMD ["hello"]
""")
    return ctx


def network(ctx):
    """Builds that download (the realistic case) use the host's network in
    every builder, kiln's default: the peers' bridge networks would add NAT
    and their own setup to what is measured."""
    return ["--network=host"] if ctx.name == "realistic" else []


class NotApplicable(Exception):
    """The builder has no equivalent of the operation."""


class Registry:
    """Debian's docker-registry on a loopback port, with empty storage."""

    def __init__(self, work):
        self.dir = work / "registry"
        self.proc = None

    def __enter__(self):
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "data").mkdir(parents=True)
        cfg = self.dir / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.dir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{REGISTRY_PORT}\n")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(cfg)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", REGISTRY_PORT), timeout=0.1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise BuildFailed("docker-registry did not start")

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


WORKLOADS = {
    # name: (generator, kind[, Dockerfile name in the context])
    "noop": (w_noop, "noop"),
    "runs40": (w_runs40, "cold"),
    "bigctx-cold": (w_bigctx, "cold"),
    "bigctx-noop": (w_bigctx, "noop"),
    "bigctx-edit": (w_bigctx, "edit"),
    "bigctx-edit-workdir": (w_bigctx, "edit", "Dockerfile.workdir"),
    "bigctx-nocache-workdir": (w_bigctx, "nocache", "Dockerfile.workdir"),
    "push1g": (w_image1g, "push"),
    "export1g-gzip": (w_image1g, "export-gzip"),
    "export1g-zstd": (w_image1g, "export-zstd"),
    "realistic-cold": (w_realistic, "cold"),
    "realistic-warm": (w_realistic, "edit"),
}
PUSH_REF = f"127.0.0.1:{REGISTRY_PORT}/bench/app:1"


# --- builders --------------------------------------------------------------

def dockerfile_args(ctx, dockerfile):
    return ["-f", str(ctx / dockerfile)] if dockerfile else []


class Kiln:
    name = "kiln"
    #: Flags of every build (the `kiln-host` variant adds the host network).
    flags = []

    def __init__(self, work, tar):
        self.bin = KILN
        self.work = work
        self.tar = tar
        self.root = work / f"{self.name}-state"
        self.rss = []

    def reset(self):
        if self.root.exists():
            # Moved aside, deleted between workloads (`Trash`), so that the
            # timed build does not create its files beside thousands just
            # deleted.
            TRASH.take(self.root)
        sh([str(self.bin), "--root", str(self.root), "import", str(self.tar), BASE])
        for name, tar in EXTRA_BASES:
            sh([str(self.bin), "--root", str(self.root), "import", str(tar), name])
            # `docker import` and `buildah add` unpack a base when it is
            # imported; kiln unpacks on first use. Unpacked here, so that
            # "cold" means the same for every builder: bases present and
            # unpacked, build cache empty.
            warm = self.work / "warm-base"
            warm.mkdir(exist_ok=True)
            (warm / "Dockerfile").write_text(f"FROM {name}\nRUN true\n")
            sh([str(self.bin), "--root", str(self.root), "build", "-q", "-t", "warm-base:1",
                str(warm)])

    def ensure(self):
        if not self.root.exists():
            self.reset()

    def tidy(self):
        """After a timed build, untimed: nothing (kiln's store drops what
        a rebuild replaced itself)."""

    def build(self, ctx, dockerfile=None, no_cache=False):
        out = sh(["/usr/bin/time", "-f", "MAXRSS %M", str(self.bin), "--root", str(self.root),
                  "build", "-q", *self.flags, *(["--no-cache"] if no_cache else []),
                  *dockerfile_args(ctx, dockerfile), "-t", "bench:1", str(ctx)])
        for line in out.stdout.splitlines():
            if line.startswith("MAXRSS "):
                self.rss.append((str(ctx.name), int(line.split()[1])))

    def push(self, ref):
        k = [str(self.bin), "--root", str(self.root)]
        sh(k + ["tag", "bench:1", ref])
        sh(k + ["push", "-q", ref])

    def export(self, ctx, dest, compression):
        # The build is cached: this is the export, its compression included.
        sh([str(self.bin), "--root", str(self.root), "build", "-q", *self.flags,
            "-o", f"type=oci,dest={dest},compression={compression}", str(ctx)])


class KilnHost(Kiln):
    """kiln with the host network for RUN, as the peers run here."""
    name = "kiln-host"
    flags = ["--network=host", "--allow", "network.host"]


class KilnBefore(Kiln):
    """An earlier kiln, to measure what a change costs (issue 20: RUN
    confinement): the binary named by `KILN_BEFORE` (a release build of the
    earlier commit), with kiln's defaults of that commit."""
    name = "kiln-before"

    def __init__(self, work, tar):
        super().__init__(work, tar)
        before = os.environ.get("KILN_BEFORE")
        if not before:
            raise SystemExit("the kiln-before builder needs KILN_BEFORE=PATH "
                             "(a release build of the earlier commit)")
        self.bin = Path(before)


class BuildKit:
    """BuildKit v0.13 (docker 26.1 + buildx 0.13, a second engine on its own
    socket: `benches/buildkit-0.13.sh`)."""
    name = "buildkit"
    network_flags = ["--network=host"]
    _docker = None

    def __init__(self, work, tar):
        self.tar = tar

    @classmethod
    def docker(cls):
        if cls._docker is None:
            import shlex
            out = sh(["bash", str(BUILDKIT13_SH)])
            cls._docker = shlex.split(out.stdout.strip().splitlines()[-1])
        return cls._docker

    def reset(self):
        sh([*self.docker(), "builder", "prune", "-af"], check=False)
        sh([*self.docker(), "rmi", "-f", "bench:1"], check=False)
        self.ensure()
        settle_deleted()

    def ensure(self):
        for name, tar in [(BASE, self.tar)] + EXTRA_BASES:
            if sh([*self.docker(), "image", "inspect", name], check=False).returncode != 0:
                sh([*self.docker(), "import", str(tar), name])

    def tidy(self):
        """After a timed build, untimed: the images a rebuild untagged stay
        in docker's store (391 MB per bigctx build), and so does the build
        cache of `--no-cache` builds; five repetitions of the edit and
        `--no-cache` workloads filled this disk. When space runs low, both
        are pruned (the cache to its newest 2 GB: every timed build here
        follows an untimed one that warms what it needs), then the
        deletions are waited out (`Trash`): pruning after every build made
        BuildKit's next `--no-cache` build 9.4–12.3 s instead of ~7 s."""
        docker_tidy(self.docker())

    def build(self, ctx, dockerfile=None, no_cache=False):
        sh([*self.docker(), "build", "-q", *self.network_flags,
            *(["--no-cache"] if no_cache else []), *dockerfile_args(ctx, dockerfile),
            "-t", "bench:1", str(ctx)])

    def push(self, ref):
        sh([*self.docker(), "tag", "bench:1", ref])
        sh([*self.docker(), "push", "-q", ref])
        sh([*self.docker(), "rmi", ref], check=False)

    def export(self, ctx, dest, compression):
        # The docker driver writes no OCI archives (that needs a
        # docker-container builder, whose image is not reachable offline).
        raise NotApplicable()


class BuildKitNone(BuildKit):
    """BuildKit v0.13 with `--network=none`: a namespace per step, no bridge."""
    name = "buildkit-none"
    network_flags = ["--network=none"]

    def build(self, ctx, dockerfile=None, no_cache=False):
        if ctx.name == "realistic":
            raise NotApplicable()  # it downloads packages
        super().build(ctx, dockerfile, no_cache)


class BuildKit08:
    """The BuildKit embedded in Debian's docker.io 20.10 engine."""
    name = "buildkit08"

    def __init__(self, work, tar):
        self.tar = tar

    def reset(self):
        sh([DOCKER, "builder", "prune", "-af"], check=False)
        sh(f"{DOCKER} rmi -f bench:1 >/dev/null 2>&1", check=False)
        self.ensure()
        settle_deleted()

    def ensure(self):
        for name, tar in [(BASE, self.tar)] + EXTRA_BASES:
            if sh([DOCKER, "image", "inspect", name], check=False).returncode != 0:
                sh(f"{DOCKER} import {tar} {name}")

    def tidy(self):
        """As `BuildKit.tidy`."""
        docker_tidy([DOCKER])

    def build(self, ctx, dockerfile=None, no_cache=False):
        sh([DOCKER, "build", "-q", *network(ctx), *(["--no-cache"] if no_cache else []),
            *dockerfile_args(ctx, dockerfile), "-t", "bench:1", str(ctx)],
           env={**os.environ, "DOCKER_BUILDKIT": "1"})

    def push(self, ref):
        sh([DOCKER, "tag", "bench:1", ref])
        sh([DOCKER, "push", "-q", ref])
        sh([DOCKER, "rmi", ref], check=False)

    def export(self, ctx, dest, compression):
        # The engine's BuildKit (docker driver) writes no OCI archives; that
        # needs buildx with a docker-container builder, not in Debian here.
        raise NotApplicable()


class Buildah:
    name = "buildah"

    def __init__(self, work, tar):
        self.tar = tar

    def reset(self):
        sh("buildah rm -a >/dev/null 2>&1", check=False)
        sh("buildah rmi -a -f >/dev/null 2>&1", check=False)
        self.ensure()
        settle_deleted()

    def ensure(self):
        for name, tar in [(BASE, self.tar)] + EXTRA_BASES:
            if sh(["buildah", "inspect", "--type", "image", name], check=False).returncode != 0:
                c = sh(["buildah", "from", "scratch"]).stdout.strip()
                sh(["buildah", "add", c, str(tar), "/"])
                sh(["buildah", "commit", "-q", c, name])
                sh(["buildah", "rm", c])

    def tidy(self):
        """As `BuildKit.tidy`: the images a rebuild untagged."""
        prune_when_low(["buildah", "rmi", "--prune"])

    def build(self, ctx, dockerfile=None, no_cache=False):
        sh(["buildah", "bud", "-q", "--isolation=chroot", "--layers", "--pull-never",
            *network(ctx), *(["--no-cache"] if no_cache else []),
            *dockerfile_args(ctx, dockerfile), "-t", "bench:1", str(ctx)])

    def push(self, ref):
        sh(["buildah", "push", "-q", "--tls-verify=false", "bench:1", f"docker://{ref}"])

    def export(self, ctx, dest, compression):
        sh(["buildah", "push", "-q", "--compression-format", compression,
            "bench:1", f"oci-archive:{dest}"])


BUILDERS = {"kiln": Kiln, "kiln-host": KilnHost, "kiln-before": KilnBefore, "buildkit": BuildKit,
            "buildkit-none": BuildKitNone, "buildkit08": BuildKit08, "buildah": Buildah}


def measure(builder, kind, ctx, dockerfile=None):
    """One measured run of a workload; returns seconds. A failed build (the
    peers fail now and then on this machine) is retried up to twice from
    the same starting state, and counted."""
    for attempt in range(3):
        try:
            return measure_once(builder, kind, ctx, dockerfile)
        except BuildFailed as e:
            FLAKES[builder.name] = FLAKES.get(builder.name, 0) + 1
            print(f"{builder.name}: attempt {attempt + 1} failed, retrying: {str(e)[-300:]}",
                  file=sys.stderr, flush=True)
    return measure_once(builder, kind, ctx, dockerfile)


def measure_once(builder, kind, ctx, dockerfile=None):
    edit = ctx / "hello.c" if ctx.name == "realistic" else ctx / "src" / "d001" / "f001.txt"
    if kind == "push":
        # A fresh builder state and an empty registry: the image's layers
        # are compressed and uploaded for the first time.
        builder.reset()
        builder.build(ctx)
        with Registry(builder_work(ctx)):
            settle()
            t = time.perf_counter()
            builder.push(PUSH_REF)
            return time.perf_counter() - t
    if kind.startswith("export-"):
        builder.reset()
        builder.build(ctx)
        dest = builder_work(ctx) / "export.tar"
        if dest.exists():
            dest.unlink()
        try:
            settle()
            t = time.perf_counter()
            builder.export(ctx, dest, kind.split("-", 1)[1])
            return time.perf_counter() - t
        finally:
            if dest.exists():
                dest.unlink()
    if kind == "cold":
        builder.reset()
    else:
        builder.ensure()
        builder.build(ctx, dockerfile)  # make sure the cache is warm
        if kind == "edit":
            with open(edit, "a") as f:
                f.write(f"/* edit {time.time_ns()} */\n" if edit.suffix == ".c"
                        else f"edit {time.time_ns()}\n")
    settle()
    t = time.perf_counter()
    builder.build(ctx, dockerfile, no_cache=kind == "nocache")
    elapsed = time.perf_counter() - t
    builder.tidy()
    return elapsed


def prune_when_low(*commands):
    """When space runs low: runs each pruning command (untimed, failures
    ignored), then waits the deletions out (`settle_deleted`)."""
    if not low_on_space():
        return
    for c in commands:
        sh(c, check=False)
    settle_deleted()


def docker_tidy(docker):
    """A docker engine's `tidy` (`docker` is its command line): the images
    rebuilds untagged, and its build cache beyond the newest 2 GB."""
    prune_when_low([*docker, "image", "prune", "-f"],
                   [*docker, "builder", "prune", "-f", "--keep-storage", "2gb"])


class Trash:
    """Builder states set aside by a reset, deleted between workloads.

    On an ext4 file system without a journal (this machine's), the inode
    allocator passes over every inode of a block group deleted in the last
    60 s (360 s while its inode table block is dirty): `recently_deleted()`
    in `find_inode_bit()` of the kernel's `fs/ext4/ialloc.c`. A cold build
    right after an `rm -rf` of the previous state in the same directory paid
    for that scan on every file it created: 40 `RUN true` steps took 0.9 to
    1.7 s, growing with each repetition, where the same build 0.5 s in a
    directory with nothing deleted near it (`perf record -a`:
    `recently_deleted`, `find_inode_bit` and `find_get_block_common` were a
    quarter of all samples). So kiln's reset moves its state aside, and
    `purge` deletes what was moved, flushes, and waits that window out before
    the next workload's first timed run. The peers' resets delete inside
    their own data roots (`docker builder prune`, `buildah rmi`), which
    cannot be moved aside: they are followed by `settle_deleted`, the same
    wait."""

    WINDOW = 61

    def __init__(self):
        self.dir = None
        self.n = 0

    def take(self, path):
        self.dir.mkdir(exist_ok=True)
        self.n += 1
        path.rename(self.dir / f"{self.n}-{path.name}")

    def purge(self, wait=True):
        if self.dir is None or not self.dir.exists():
            return
        sh(["rm", "-rf", str(self.dir)])
        if wait:
            settle_deleted()


def low_on_space():
    """Whether the file system of `/var/lib` has less than 8 GiB free."""
    return shutil.disk_usage("/var/lib").free < 8 << 30


def settle_deleted():
    """Waits out the window in which deleted inodes slow the creation of
    new ones (`Trash`)."""
    os.sync()
    time.sleep(Trash.WINDOW)


TRASH = Trash()


def settle():
    """With `--settle sync`, lets the previous builder's background work
    (dockerd, the writeback of what it wrote) finish before a timed run, the
    same for every builder: a Buildah no-op rebuild leaves ~400 MB of dirty
    pages that otherwise slow whichever builder runs next. With `--settle
    none`, nothing: the plain alternating methodology."""
    if SETTLE == "sync":
        os.sync()
        time.sleep(1)


def builder_work(ctx):
    return ctx.parent


def machine():
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) // 1024
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = {
        "kiln": sh([str(KILN), "--version"]).stdout.strip(),
        **({"kiln-before": sh([os.environ["KILN_BEFORE"], "--version"]).stdout.strip()}
           if os.environ.get("KILN_BEFORE") else {}),
        "docker (buildkit08)": sh([DOCKER, "version", "--format", "{{.Server.Version}}"],
                                  check=False).stdout.strip() if Path(DOCKER).exists() else "n/a",
        "docker (buildkit)": sh([*BuildKit.docker(), "version", "--format",
                                 "{{.Server.Version}}"], check=False).stdout.strip(),
        "buildah": (sh(["buildah", "--version"], check=False).stdout.strip()
                    if shutil.which("buildah") else "n/a"),
    }
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem} MiB RAM, Linux {platform.release()}; "
            + "; ".join(f"{k}: {v}" for k, v in versions.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--builders", default="kiln,kiln-host,buildkit,buildah")
    ap.add_argument("--settle", choices=["sync", "none"], default="sync",
                    help="before every timed build: sync and pause 1 s (default), or nothing")
    ap.add_argument("--work", default="/var/tmp/kiln-bench")
    ap.add_argument("--out", default=str(REPO / "benches/results"))
    ap.add_argument("--append", action="store_true",
                    help="keep the other workloads of today's report and replace these")
    ap.add_argument("--date", default=datetime.date.today().isoformat(),
                    help="the report (benches/results/DATE.*) to write or append to; default: today"
                    " (DATE-plain.* with --settle none)")
    args = ap.parse_args()
    global SETTLE
    SETTLE = args.settle
    if os.geteuid() != 0:
        sys.exit("run as root: the builders need namespaces and overlayfs")
    names = args.builders.split(",")
    workloads = args.workloads.split(",")
    for w in workloads:
        if w not in WORKLOADS:
            sys.exit(f"unknown workload {w}; known: {', '.join(WORKLOADS)}")
    setup(names)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    TRASH.dir = work / "trash"
    TRASH.purge()  # left by an interrupted run
    tar = busybox_tar(work)
    builders = [BUILDERS[n](work, tar) for n in names]
    for b in builders:
        b.reset()
    results = {}
    for w in workloads:
        gen, kind, *dockerfile = WORKLOADS[w]
        dockerfile = dockerfile[0] if dockerfile else None
        ctx = gen(work)
        TRASH.purge()
        runs = []
        load = [os.getloadavg()[0]]
        for b in builders:  # warm-up
            try:
                measure(b, kind, ctx, dockerfile)
                runs.append(b)
            except NotApplicable:
                print(f"{w:12} {b.name:9} n/a", flush=True)
            except BuildFailed as e:
                # Reported as n/a, with the failure count; the run goes on.
                print(f"{w:12} {b.name:9} failed: {str(e)[-300:]}", flush=True)
        for rep in range(args.reps):
            order = runs if rep % 2 == 0 else list(reversed(runs))
            for b in list(order):
                try:
                    s = measure(b, kind, ctx, dockerfile)
                except BuildFailed as e:
                    print(f"{w:12} {b.name:9} failed: {str(e)[-300:]}", flush=True)
                    runs.remove(b)
                    continue
                results.setdefault(w, {}).setdefault(b.name, []).append(s)
                print(f"{w:12} {b.name:9} {s:8.3f}s", flush=True)
        load.append(os.getloadavg()[0])
        results.setdefault(w, {})["load"] = load
        # The report so far, in case a later workload cannot finish.
        write_report(results, names, builders, [x for x in workloads if x in results], args)
    write_report(results, names, builders, workloads, args)
    TRASH.purge(wait=False)


def write_report(results, names, builders, workloads, args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = args.date + ("" if args.settle == "sync" else "-plain")
    commands = [f"sudo python3 benches/peers.py --reps {args.reps} --workloads {args.workloads} "
                f"--builders {args.builders} --settle {args.settle}"
                + (" --append" if args.append else "")]
    old = out / f"{stamp}.json"
    if args.append and old.exists():
        prev = json.loads(old.read_text())
        if "results" in prev:
            prior = prev.get("commands", [])
            # write_report runs after every workload: the command once.
            commands = prior + [c for c in commands if not prior or prior[-1] != c]
            prev = prev["results"]
        for w, r in prev.items():
            results.setdefault(w, r)
        workloads = [w for w in WORKLOADS if w in results]
    # An earlier kiln is a peer: the ratios are then what a change cost.
    kilns = [n for n in names if n.startswith("kiln") and n != "kiln-before"]
    peers = [n for n in names if n not in kilns]
    pairs = [(k, p) for k in kilns for p in peers]
    lines = [f"# kiln vs peers, {stamp}", "",
             f"Machine: {machine()}", "",
             "Commands (a later `--append` run replaces the workloads it names):",
             *[f"- `{c}`" for c in commands],
             "", "(one warm-up, then N runs per builder, alternating; "
             + ("every timed run starts after a `sync` and a one-second pause"
                if args.settle == "sync" else
                "no `sync` or pause between runs: plain alternating")
             + "; seconds, median and min–max; `load`: the 1-minute load average at"
             " the start and end of the workload)", ""]
    header = ("| workload | " + " | ".join(names + [f"{k}/{p}" for k, p in pairs])
              + " | load |")
    lines += [header, "|" + "---|" * (2 + len(names) + len(pairs))]
    ratios = {}
    for w in workloads:
        row = [w]
        med = {}
        for n in names:
            v = results[w].get(n)
            if not v:
                row.append("n/a")
                continue
            med[n] = statistics.median(v)
            row.append(f"{med[n]:.3f} ({min(v):.3f}–{max(v):.3f})")
        for k, p in pairs:
            r = med[k] / med[p] if med.get(p) and k in med else float("nan")
            ratios.setdefault((k, p), {})[w] = r
            row.append("n/a" if r != r else f"{r:.3f}")
        load = results[w].get("load")
        row.append("–".join(f"{x:.1f}" for x in load) if load else "")
        lines.append("| " + " | ".join(row) + " |")
    rss = [(c, r) for b in builders if b.name.startswith("kiln") for c, r in b.rss]
    if rss:
        lines += ["", "Peak RSS of kiln (MiB, /usr/bin/time) per workload context: " + ", ".join(
            f"{ctx} {max(r for c, r in rss if c == ctx) / 1024:.0f}"
            for ctx in sorted({c for c, _ in rss}))]
    if FLAKES:
        lines += ["", "Failed attempts retried (not timed): " + ", ".join(
            f"{k} {v}" for k, v in sorted(FLAKES.items()))]
    md = out / f"{stamp}.md"
    md.write_text("\n".join(lines) + "\n")
    (out / f"{stamp}.json").write_text(
        json.dumps({"commands": commands, "results": results}, indent=1) + "\n")
    print(md.read_text())
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / max(1, len(pairs))
        for i, (k, p) in enumerate(pairs):
            xs = [j + i * width for j in range(len(workloads))]
            ax.bar(xs, [ratios[(k, p)].get(w, float("nan")) for w in workloads], width,
                   label=f"{k} / {p}")
        ax.set_xticks([j + width * (len(pairs) - 1) / 2 for j in range(len(workloads))])
        ax.set_xticklabels(workloads, rotation=20)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_ylabel("time ratio (lower is better for kiln)")
        if pairs:
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{stamp}.png", dpi=100)
    except ImportError:
        print("matplotlib unavailable: no chart", file=sys.stderr)


if __name__ == "__main__":
    main()
