"""Writes the hostile tars of the hostile-inputs build case into a directory:

- dotdot.tar: an entry climbing out (`../../../../../../tmp/kiln-escape-dotdot`);
- hardlink.tar: a hard link to `../../../../../../etc/hostname`;
- symlink-through.tar: a symlink to /etc, then a file through it;
- contained.tar: an absolute path, a device node, a setuid file, names with a
  newline and a non-UTF-8 byte, a 2,800-byte path (GNU long names).
"""
import io, tarfile, sys, os
d = sys.argv[1]
def add(t, name, data=b"x", **kw):
    ti = tarfile.TarInfo(name)
    for k, v in kw.items(): setattr(ti, k, v)
    if ti.type == tarfile.REGTYPE:
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    else:
        t.addfile(ti)
with tarfile.open(os.path.join(d, "dotdot.tar"), "w") as t:
    add(t, "ok.txt")
    add(t, "../../../../../../tmp/kiln-escape-dotdot")
with tarfile.open(os.path.join(d, "hardlink.tar"), "w") as t:
    add(t, "link", type=tarfile.LNKTYPE, linkname="../../../../../../etc/hostname")
with tarfile.open(os.path.join(d, "symlink-through.tar"), "w") as t:
    add(t, "etc-link", type=tarfile.SYMTYPE, linkname="/etc")
    add(t, "etc-link/kiln-escape-through")
with tarfile.open(os.path.join(d, "contained.tar"), "w", format=tarfile.GNU_FORMAT) as t:
    add(t, "/tmp/kiln-escape-absolute")
    add(t, "dev-null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666)
    add(t, "setuid", mode=0o4755)
    add(t, "new\nline")
    add(t, b"latin1-\xe9".decode("utf-8", "surrogateescape"))
    add(t, "long/" + "/".join(["d" * 200] * 14) + "/file")
print("tars written")
