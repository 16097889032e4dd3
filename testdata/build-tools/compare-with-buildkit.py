#!/usr/bin/env python3
"""Builds a testdata/build case with kiln and with BuildKit and compares the
results: the exit status of every build, and for builds that succeed with
both the image configuration, the history and every file of the final
filesystem (type, mode, owner, size, content, link target; not times).

usage: compare-with-buildkit.py [--docker CMD] KILN_BINARY CASE_DIR [BUILD ARGS...]

--docker CMD: the `docker` command of the engine to compare with (default
$KILN_COMPARE_DOCKER, else `docker`). With buildx (docker 23+: BuildKit 0.13
in docker 26 and buildx 0.13.1) builds run as `CMD buildx build
--network=host` (the engine may have no bridge network) and the base image
is given as the named context `busybox`; without buildx (docker 20.10,
BuildKit 0.8) as `DOCKER_BUILDKIT=1 CMD build --network=host`, the base tagged
`busybox:latest` in that engine.

Both builders get the same busybox base image, made as the test harness
makes it (crates/cli/tests/build.rs). A case without a `script` is built
once (with BUILD ARGS). A case with a `script` is compared build by build:
each `build ARGS` line is run by both (kiln's and BuildKit's own output
flags, `-o`/`--output`/`-t`/`--iidfile`/`--metadata-file`, are dropped:
each builder writes its image and filesystem where this tool reads them);
`run` lines are run in the shared context between builds (with `$OUT` a
scratch directory, `$CTX` and `$TOOLS`: they make repositories, start
servers, edit files) unless they use kiln ($KILN, $STATE, $BASE_TAR) or a
registry ($REGISTRY); `kiln`, `registry`, `machine`, `as-user`, `serve`,
`let` and `report` lines are skipped (said so). Prints the differences and
exits 1 if there are any.

Not part of the test suite (it needs a Docker engine); see
testdata/README.md for what was compared.
"""
import hashlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import uuid

EPOCH = "1600000000"


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def make_base(tmp):
    rootfs = os.path.join(tmp, "rootfs")
    for d in ["bin", "etc", "root", "tmp"]:
        os.makedirs(os.path.join(rootfs, d))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin/busybox"))
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            os.symlink("busybox", os.path.join(rootfs, "bin", a))
    with open(os.path.join(rootfs, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    with open(os.path.join(rootfs, "etc/group"), "w") as f:
        f.write("root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n")
    os.chmod(os.path.join(rootfs, "tmp"), 0o1777)
    os.chmod(os.path.join(rootfs, "root"), 0o700)
    tar = os.path.join(tmp, "busybox.tar")
    sh(f"tar --sort=name --mtime=@{EPOCH} --owner=0 --group=0 --numeric-owner -C {rootfs} -cf {tar} .")
    return tar


def listing(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            m = st.st_mode
            kind = ("d" if stat.S_ISDIR(m) else "l" if stat.S_ISLNK(m) else "-" if stat.S_ISREG(m)
                    else "p" if stat.S_ISFIFO(m) else "s" if stat.S_ISSOCK(m) else "c" if stat.S_ISCHR(m)
                    else "b" if stat.S_ISBLK(m) else "?")
            desc = f"{kind} {st.st_mode & 0o7777:04o} {st.st_uid}:{st.st_gid}"
            if kind in "cb":
                desc += f" {os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
            if kind == "-":
                with open(p, "rb") as f:
                    desc += f" {st.st_size} {hashlib.sha256(f.read()).hexdigest()[:12]}"
            if kind == "l":
                desc += " -> " + os.readlink(p)
            out[rel] = desc
    return out


def apply_layer(fileobj, root):
    """Applies a layer tar (plain or gzip) to the directory root, with its
    whiteouts (`.wh.NAME` removes NAME, `.wh..wh..opq` empties the
    directory), as root: owners and modes as in the layer."""
    with tarfile.open(fileobj=fileobj, mode="r:*") as t:
        members = t.getmembers()
        for m in members:
            name = os.path.normpath(m.name[2:] if m.name.startswith("./") else m.name)
            d, base = os.path.split(name)
            if base == ".wh..wh..opq":
                target = os.path.join(root, d)
                for e in os.listdir(target) if os.path.isdir(target) else []:
                    p = os.path.join(target, e)
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
            elif base.startswith(".wh."):
                p = os.path.join(root, d, base[4:])
                if os.path.isdir(p) and not os.path.islink(p):
                    shutil.rmtree(p)
                elif os.path.lexists(p):
                    os.remove(p)
        for m in members:
            base = os.path.basename(m.name.rstrip("/"))
            if base.startswith(".wh."):
                continue
            p = os.path.join(root, os.path.normpath(m.name[2:] if m.name.startswith("./") else m.name))
            if os.path.lexists(p) and not (m.isdir() and os.path.isdir(p) and not os.path.islink(p)):
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
            t.extract(m, root, numeric_owner=True, set_attrs=True, filter="fully_trusted")


def config_summary(cfg):
    c = cfg.get("config") or {}
    keys = ["User", "Env", "Entrypoint", "Cmd", "WorkingDir", "Labels", "ExposedPorts", "Volumes",
            "StopSignal", "Healthcheck", "OnBuild", "Shell", "ArgsEscaped"]
    summary = {k: c.get(k) for k in keys if c.get(k) not in (None, [], {}, "", False)}
    summary["history"] = [(h.get("created_by", ""), bool(h.get("empty_layer"))) for h in cfg.get("history", [])]
    summary["layers"] = len(cfg["rootfs"]["diff_ids"])
    return summary


# Flags whose value is an output of the build: each builder's own outputs
# are written where this tool reads them.
OUTPUT_FLAGS = {"-o", "--output", "-t", "--tag", "--iidfile", "--metadata-file", "--progress"}


def build_args(words):
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w in OUTPUT_FLAGS:
            skip = True
            continue
        if any(w.startswith(f + "=") for f in OUTPUT_FLAGS if f.startswith("--")) or w in ("-q", "--quiet", "--load", "--push"):
            continue
        out.append(w)
    return out


class Engine:
    def __init__(self, docker, tmp, base_tar):
        self.docker = docker
        self.tmp = tmp
        self.buildx = subprocess.run(f"{docker} buildx version", shell=True, capture_output=True).returncode == 0
        if self.buildx:
            self.base = f"kiln-compare-busybox:{uuid.uuid4().hex[:12]}"
        else:
            self.base = "busybox:latest"
        sh(f"{docker} import {base_tar} {self.base} >/dev/null")
        self.tags = [self.base]

    def build(self, ctx, args, n):
        """Returns (exit code, stderr, config or None, filesystem dir or None)."""
        tag = f"kiln-compare:{uuid.uuid4().hex[:12]}"
        a = " ".join(shlex.quote(x) for x in args)
        env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, DOCKER_BUILDKIT="1")
        if self.buildx:
            pre = f"{self.docker} buildx build --network=host --build-context busybox=docker-image://{self.base}"
        else:
            pre = f"{self.docker} build --network=host"
        r = subprocess.run(f"{pre} --progress=plain -t {tag} {a} .", shell=True, cwd=ctx, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            return r.returncode, r.stderr, None, None
        self.tags.append(tag)
        # The image's filesystem from its layers (a local export through
        # the client loses file owners; `docker export` adds the
        # container's own files).
        fs = os.path.join(self.tmp, f"buildkit-fs-{n}")
        os.makedirs(fs)
        saved = os.path.join(self.tmp, f"saved-{n}.tar")
        sh(f"{self.docker} save {tag} -o {saved}")
        with tarfile.open(saved) as t:
            manifest = json.loads(t.extractfile("manifest.json").read())[0]
            cfg = json.loads(t.extractfile(manifest["Config"]).read())
            for layer in manifest["Layers"]:
                apply_layer(t.extractfile(layer), fs)
        return 0, r.stderr, cfg, fs

    def close(self):
        for t in self.tags:
            subprocess.run(f"{self.docker} rmi -f {t}", shell=True, capture_output=True)


class Kiln:
    def __init__(self, kiln, tmp, base_tar):
        self.kiln, self.tmp = kiln, tmp
        self.state = os.path.join(tmp, "state")
        env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH)
        sh(f"{kiln} --root {self.state} import {base_tar} busybox:latest >/dev/null", env=env)

    def build(self, ctx, args, n):
        fs = os.path.join(self.tmp, f"kiln-fs-{n}")
        oci = os.path.join(self.tmp, f"kiln-oci-{n}")
        a = " ".join(shlex.quote(x) for x in args)
        env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH)
        r = subprocess.run(f"{self.kiln} --root {self.state} build --progress=plain {a} -o type=local,dest={fs} "
                           f"-o type=oci,dest={oci},tar=false .", shell=True, cwd=ctx, env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            return r.returncode, r.stderr, None, None
        with open(f"{oci}/index.json") as f:
            man = json.load(f)["manifests"][0]["digest"].split(":")[1]
        with open(f"{oci}/blobs/sha256/{man}") as f:
            cfg_digest = json.load(f)["config"]["digest"].split(":")[1]
        with open(f"{oci}/blobs/sha256/{cfg_digest}") as f:
            cfg = json.load(f)
        return 0, r.stderr, cfg, fs


def last_error(stderr):
    lines = [l for l in stderr.splitlines() if l.startswith("error:") or l.startswith("ERROR:")]
    return lines[-1] if lines else (stderr.strip().splitlines() or [""])[-1]


def compare(kres, bres):
    kcode, kerr, kcfg, kfs = kres
    bcode, berr, bcfg, bfs = bres
    if kcode != 0 or bcode != 0:
        if (kcode == 0) != (bcode == 0):
            return [f"kiln exit {kcode}, buildkit exit {bcode}: "
                    f"kiln {last_error(kerr)!r} / buildkit {last_error(berr)!r}"], 0
        return [], 0
    diffs = []
    ks, bs = config_summary(kcfg), config_summary(bcfg)
    for k in sorted(set(ks) | set(bs)):
        if k == "history":
            kh = [h for h in ks[k]]
            bh = [h for h in bs[k]]
            if kh != bh:
                diffs.append(f"history differs:\n  kiln:     {kh}\n  buildkit: {bh}")
        elif ks.get(k) != bs.get(k):
            diffs.append(f"config {k}: kiln {ks.get(k)!r} buildkit {bs.get(k)!r}")
    kl, bl = listing(kfs), listing(bfs)
    for p in sorted(set(kl) | set(bl)):
        if kl.get(p) != bl.get(p):
            diffs.append(f"/{p}: kiln {kl.get(p)!r} buildkit {bl.get(p)!r}")
    return diffs, len(kl)


KILN_ONLY = ("$KILN", "$STATE", "$REGISTRY", "$BASE_TAR", "$HTTP")


def main():
    argv = sys.argv[1:]
    docker = os.environ.get("KILN_COMPARE_DOCKER", "docker")
    if argv and argv[0] == "--docker":
        docker, argv = argv[1], argv[2:]
    kiln, case = os.path.abspath(argv[0]), os.path.abspath(argv[1])
    extra = argv[2:]
    tmp = tempfile.mkdtemp()
    engine = None
    try:
        ctx = os.path.join(tmp, "ctx")
        if os.path.isdir(os.path.join(case, "context")):
            shutil.copytree(os.path.join(case, "context"), ctx, symlinks=True)
        else:
            os.makedirs(ctx)
        for name in os.listdir(case):
            if name.startswith("Dockerfile"):
                shutil.copy(os.path.join(case, name), ctx)
        tools = os.path.join(os.path.dirname(os.path.abspath(__file__)))
        scratch = os.path.join(tmp, "out")
        os.makedirs(scratch)
        env = dict(os.environ, TOOLS=tools, CTX=ctx, OUT=scratch, SOURCE_DATE_EPOCH=EPOCH)
        if os.path.exists(os.path.join(case, "setup")):
            sh(f"sh -e {os.path.join(case, 'setup')}", cwd=ctx, env=env)
        base = make_base(tmp)
        engine = Engine(docker, tmp, base)
        k = Kiln(kiln, tmp, base)
        script_path = os.path.join(case, "script")
        if os.path.exists(script_path):
            lines = [l.strip() for l in open(script_path) if l.strip() and not l.startswith("#")]
        else:
            lines = ["build " + " ".join(shlex.quote(x) for x in extra)]
        total, n, paths = 0, 0, 0
        for line in lines:
            word = line.split()[0]
            if word == "build":
                n += 1
                args = build_args(shlex.split(line)[1:])
                kres = k.build(ctx, args, n)
                bres = engine.build(ctx, args, n)
                diffs, compared = compare(kres, bres)
                paths += compared
                status = ("both failed" if kres[0] and bres[0] else
                          "same" if not diffs else f"{len(diffs)} difference(s)")
                print(f"build {n} ({' '.join(args) or 'no flags'}): {status}"
                      + (f", {compared} paths" if compared else ""))
                for d in diffs:
                    print("  " + d.replace("\n", "\n  "))
                total += len(diffs)
            elif word == "run" and not any(v in line for v in KILN_ONLY):
                r = subprocess.run(line[3:].strip(), shell=True, cwd=ctx, env=env, capture_output=True, text=True)
                print(f"run: {line[3:].strip()[:70]} (exit {r.returncode})")
            else:
                print(f"skipped: {line[:78]}")
        print(f"{os.path.basename(case)}: {total} difference(s), {n} build(s), {paths} paths compared")
        sys.exit(1 if total else 0)
    finally:
        if engine:
            engine.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
