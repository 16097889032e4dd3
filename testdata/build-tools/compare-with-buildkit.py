#!/usr/bin/env python3
"""Builds a testdata/build case with kiln and with BuildKit (the builder in
Debian's docker.io engine) and compares the results: the image
configuration, the history, and every file of the final filesystem (type,
mode, owner, size, content, link target; not times).

usage: compare-with-buildkit.py KILN_BINARY CASE_DIR [BUILD ARGS...]

Needs root, a running dockerd (`apt-get install docker.io; dockerd &`) and
/bin/busybox. Both builders get the same busybox base image, made the same
way as the test harness makes it (crates/cli/tests/build.rs). Prints the
differences and exits 1 if there are any. Not part of the test suite (it
needs a Docker engine); see testdata/README.md for what was compared.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

DOCKER = "/usr/bin/docker"
IGNORED = {".dockerenv", "dev", "proc", "sys", "etc/hosts", "etc/resolv.conf", "etc/hostname", "etc/mtab"}


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
    sh(f"tar --sort=name --mtime=@1600000000 --owner=0 --group=0 --numeric-owner -C {rootfs} -cf {tar} .")
    return tar


def listing(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if rel in IGNORED or rel.split("/")[0] in {"dev", "proc", "sys"}:
                continue
            st = os.lstat(p)
            kind = "d" if os.path.isdir(p) and not os.path.islink(p) else "l" if os.path.islink(p) else "-"
            desc = f"{kind} {st.st_mode & 0o7777:04o} {st.st_uid}:{st.st_gid}"
            if kind == "-":
                with open(p, "rb") as f:
                    desc += f" {st.st_size} {hashlib.sha256(f.read()).hexdigest()[:12]}"
            if kind == "l":
                desc += " -> " + os.readlink(p)
            out[rel] = desc
    return out


def config_summary(cfg):
    c = cfg.get("config") or {}
    keys = ["User", "Env", "Entrypoint", "Cmd", "WorkingDir", "Labels", "ExposedPorts", "Volumes",
            "StopSignal", "Healthcheck", "OnBuild", "Shell", "ArgsEscaped"]
    summary = {k: c.get(k) for k in keys if c.get(k) not in (None, [], {}, "", False)}
    summary["history"] = [(h.get("created_by", ""), bool(h.get("empty_layer"))) for h in cfg.get("history", [])]
    summary["layers"] = len(cfg["rootfs"]["diff_ids"])
    return summary


def main():
    kiln, case = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    tmp = tempfile.mkdtemp()
    try:
        ctx = os.path.join(tmp, "ctx")
        if os.path.isdir(os.path.join(case, "context")):
            shutil.copytree(os.path.join(case, "context"), ctx, symlinks=True)
        else:
            os.makedirs(ctx)
        for name in os.listdir(case):
            if name.startswith("Dockerfile"):
                shutil.copy(os.path.join(case, name), ctx)
        if os.path.exists(os.path.join(case, "setup")):
            sh(f"sh -e {os.path.join(os.path.abspath(case), 'setup')}", cwd=ctx)
        base = make_base(tmp)
        env = dict(os.environ, SOURCE_DATE_EPOCH="1600000000", DOCKER_BUILDKIT="1")
        sh(f"{DOCKER} import {base} busybox:latest >/dev/null")
        a = " ".join(args)
        sh(f"{DOCKER} build -q -t kiln-compare {a} {ctx} >/dev/null", env=env)
        cid = subprocess.run(f"{DOCKER} create kiln-compare true", shell=True, check=True,
                             capture_output=True, text=True).stdout.strip()
        bk_fs = os.path.join(tmp, "buildkit-fs")
        os.makedirs(bk_fs)
        sh(f"{DOCKER} export {cid} | tar --numeric-owner -xpf - -C {bk_fs}")
        sh(f"{DOCKER} rm {cid} >/dev/null")
        bk_cfg = json.loads(subprocess.run(f"{DOCKER} image inspect kiln-compare", shell=True, check=True,
                                           capture_output=True, text=True).stdout)[0]
        state = os.path.join(tmp, "state")
        sh(f"{kiln} --root {state} import {base} busybox:latest >/dev/null", env=env)
        kiln_fs = os.path.join(tmp, "kiln-fs")
        sh(f"{kiln} --root {state} build -q {a} -o type=local,dest={kiln_fs} "
           f"-o type=oci,dest={tmp}/oci,tar=false {ctx} >/dev/null", env=env)
        with open(f"{tmp}/oci/index.json") as f:
            man = json.load(f)["manifests"][0]["digest"].split(":")[1]
        with open(f"{tmp}/oci/blobs/sha256/{man}") as f:
            cfg_digest = json.load(f)["config"]["digest"].split(":")[1]
        with open(f"{tmp}/oci/blobs/sha256/{cfg_digest}") as f:
            kiln_cfg = json.load(f)

        diffs = []
        bk = {"config": bk_cfg["Config"], "history": [], "rootfs": {"diff_ids": bk_cfg["RootFS"]["Layers"]}}
        hist = json.loads(subprocess.run(f"{DOCKER} history --no-trunc --format '{{{{json .}}}}' kiln-compare",
                                         shell=True, check=True, capture_output=True, text=True).stdout
                          .replace("}\n{", "},{").join(["[", "]"]))
        bk["history"] = [{"created_by": h["CreatedBy"], "empty_layer": h["Size"] == "0B" and
                          h["CreatedBy"].split(" ")[0] not in ("RUN", "COPY", "ADD", "WORKDIR")}
                         for h in reversed(hist)]
        ks, bs = config_summary(kiln_cfg), config_summary(bk)
        for k in sorted(set(ks) | set(bs)):
            if k == "history":
                kh = [h[0] for h in ks[k]]
                bh = [h[0] for h in bs[k]]
                if kh != bh:
                    diffs.append(f"history differs:\n  kiln:     {kh}\n  buildkit: {bh}")
            elif ks.get(k) != bs.get(k):
                diffs.append(f"config {k}: kiln {ks.get(k)!r} buildkit {bs.get(k)!r}")
        kl, bl = listing(kiln_fs), listing(bk_fs)
        for p in sorted(set(kl) | set(bl)):
            if kl.get(p) != bl.get(p):
                diffs.append(f"/{p}: kiln {kl.get(p)!r} buildkit {bl.get(p)!r}")
        for d in diffs:
            print(d)
        print(f"{case}: {len(diffs)} difference(s), {len(kl)} paths compared")
        sys.exit(1 if diffs else 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
