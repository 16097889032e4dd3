"""Kills kiln at random points and checks what it leaves (issue [hardening]).

usage: crash.py --kiln KILN --root STATE --ctx CONTEXT --registry HOST:PORT
                [--rounds N] [--seed S] [--times FILE]

The context holds a Dockerfile whose build pulls nothing (its base is in the
store), runs RUN steps and has a second stage. Workloads, taken in turn:

  run     kiln build --no-cache (RUN steps, snapshots, layer commits)
  export  kiln build --no-cache -o type=oci (layer tars, compression, blobs)
  push    kiln build --no-cache --push (uploads to the registry)
  cache   kiln build --no-cache --cache-to type=local,mode=max (cache export)
  pull    kiln rmi + kiln pull of an image in the registry (download, unpack)

Each workload is first run to completion once, to learn how long it takes.
Then each round starts one, kills kiln with SIGKILL at a uniformly random
moment of that duration (a real crash: the kiln process alone, not its
process group), and checks:

  - no process of the killed kiln's session is left (RUN steps die with it);
  - no mount under the state directory is left in this mount namespace;
  - `kiln check` is clean, or `kiln check --repair` makes it so;
  - the same workload then runs to completion, and `kiln check` is clean.

Then as many rounds with SIGINT (Ctrl-C): kiln must exit, non-zero, leaving
nothing behind; the time from the signal to its exit goes to --times.

Prints one summary line per property with counts; exits 1 if any round
broke one. Long runs: --rounds 60 (the test in CI uses a few).
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import time


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--kiln", required=True)
    p.add_argument("--root", required=True)
    p.add_argument("--ctx", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--times", default=None)
    return p.parse_args()


A = parse_args()
OUT = os.path.join(A.root, "..", "crash-out")
os.makedirs(OUT, exist_ok=True)
KILN = [A.kiln, "--root", A.root]
QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def workload(name, n):
    """The command line of workload `name`, round n."""
    build = KILN + ["build", "-q", "--no-cache", "--progress=plain"]
    if name == "run":
        return build + [A.ctx]
    if name == "export":
        return build + ["-o", f"type=oci,dest={OUT}/img{n}.tar", A.ctx]
    if name == "push":
        return build + ["--push", "-t", f"{A.registry}/crash/app:{n}", A.ctx]
    if name == "cache":
        return build + ["--cache-to", f"type=local,dest={OUT}/cache{n},mode=max", A.ctx]
    if name == "pull":
        return KILN + ["pull", "-q", f"{A.registry}/crash/app:base"]
    raise ValueError(name)


def before(name):
    """What a workload needs beforehand (an image to pull, not yet local)."""
    if name == "pull":
        subprocess.run(KILN + ["rmi", "-f", f"{A.registry}/crash/app:base"], **QUIET)
        # Blobs and unpacked layers of the image go too, so the pull works.
        subprocess.run(KILN + ["prune", "-f"], **QUIET)


def session_processes(sid):
    """Processes of session `sid` still alive (excluding zombies)."""
    left = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            left.append(int(pid))
    return left


def mounts_left():
    root = os.path.realpath(A.root)
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(root)]


CHECKS = []


def check():
    """`kiln check`: (clean, repaired_ok)."""
    r = subprocess.run(KILN + ["check"], capture_output=True, text=True)
    if r.returncode == 0:
        return True, True
    CHECKS.append(r.stdout)
    rep = subprocess.run(KILN + ["check", "--repair"], capture_output=True, text=True)
    if rep.returncode != 0:
        sys.stderr.write(f"kiln check --repair failed:\n{rep.stdout}{rep.stderr}")
    return False, rep.returncode == 0


def wait_gone(pids, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if not any(os.path.exists(f"/proc/{p}") and not is_zombie(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


def is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rfind(")") + 2] == "Z"
    except OSError:
        return False


def main():
    rng = random.Random(A.seed)
    names = ["run", "export", "push", "cache", "pull"]
    # Setup: an image in the registry for the pull workload.
    subprocess.run(
        KILN + ["build", "-q", "--push", "-t", f"{A.registry}/crash/app:base", A.ctx],
        check=True,
        **QUIET,
    )
    durations = {}
    for name in names:
        before(name)
        t = time.time()
        subprocess.run(workload(name, 0), check=True, **QUIET)
        durations[name] = time.time() - t

    counts = {
        "killed": 0,
        "finished before the kill": 0,
        "processes left": 0,
        "mounts left": 0,
        "check clean after the kill": 0,
        "check repaired": 0,
        "repair failed": 0,
        "next run ok": 0,
        "check clean after the next run": 0,
    }
    problems = 0
    for n in range(1, A.rounds + 1):
        name = names[n % len(names)]
        before(name)
        delay = rng.uniform(0, durations[name])
        p = subprocess.Popen(workload(name, n), start_new_session=True, **QUIET)
        time.sleep(delay)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            counts["killed"] += 1
        else:
            counts["finished before the kill"] += 1
        p.wait()
        sid = p.pid  # a new session's id is its leader's pid
        left = session_processes(sid)
        if left and not wait_gone(left, timeout=2):
            counts["processes left"] += 1
            problems += 1
            for q in session_processes(sid):
                try:
                    os.kill(q, signal.SIGKILL)
                except OSError:
                    pass
        if mounts_left():
            counts["mounts left"] += 1
            problems += 1
        clean, repaired = check()
        counts["check clean after the kill"] += clean
        counts["check repaired"] += (not clean) and repaired
        if not repaired:
            counts["repair failed"] += 1
            problems += 1
        before(name)
        r = subprocess.run(workload(name, n), capture_output=True, text=True)
        if r.returncode == 0:
            counts["next run ok"] += 1
        else:
            problems += 1
            sys.stderr.write(f"round {n} ({name}): the next run failed:\n{r.stderr[-2000:]}\n")
        if subprocess.run(KILN + ["check"], **QUIET).returncode == 0:
            counts["check clean after the next run"] += 1
        else:
            problems += 1

    # Ctrl-C.
    stops, slow = [], 0
    interrupted = {
        "stopped": 0,
        "finished before the signal": 0,
        "exit non-zero": 0,
        "completed despite the signal": 0,
        "processes left": 0,
        "mounts left": 0,
    }
    for n in range(1, A.rounds + 1):
        name = names[n % len(names)]
        before(name)
        p = subprocess.Popen(workload(name, 1000 + n), start_new_session=True, **QUIET)
        time.sleep(rng.uniform(0, durations[name]))
        if p.poll() is not None:
            interrupted["stopped"] += 1
            interrupted["finished before the signal"] += 1
            continue
        t = time.time()
        p.send_signal(signal.SIGINT)
        try:
            code = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait()
            slow += 1
        stops.append(time.time() - t)
        interrupted["stopped"] += 1
        interrupted["exit non-zero"] += code != 0
        # The signal came after the last point where kiln looks (the result
        # was being written): the build completed.
        interrupted["completed despite the signal"] += code == 0
        left = session_processes(p.pid)
        if left and not wait_gone(left, timeout=2):
            interrupted["processes left"] += 1
        if mounts_left():
            interrupted["mounts left"] += 1
        check()
    if slow:
        problems += slow
    if A.times:
        with open(A.times, "w") as f:
            for s in stops:
                f.write(f"{s:.3f}\n")

    r = A.rounds
    print(f"SIGKILL, {r} rounds over {len(names)} workloads ({', '.join(names)}):")
    print(f"  processes left: {counts['processes left']}, mounts left: {counts['mounts left']}")
    print(f"  kiln check clean or repaired: {r - counts['repair failed']}/{r}")
    print(f"  next run succeeded: {counts['next run ok']}/{r}")
    print(f"  kiln check clean after it: {counts['check clean after the next run']}/{r}")
    print(f"SIGINT, {r} rounds:")
    print(
        f"  stopped: {interrupted['stopped']}/{r}, processes left: "
        f"{interrupted['processes left']}, mounts left: {interrupted['mounts left']}"
    )
    # Details that vary with timing go to stderr's log, not the transcript.
    with open(os.path.join(OUT, "details.txt"), "w") as f:
        f.write(f"{counts}\n{interrupted}\nstop times: {sorted(stops)}\n")
        f.write("what kiln check found after kills:\n" + "".join(CHECKS))
    sys.exit(1 if problems or interrupted["processes left"] or interrupted["mounts left"] else 0)


main()
