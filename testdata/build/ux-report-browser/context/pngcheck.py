# pngcheck.py FILE: the screenshot is a PNG of the asked size, and not one
# colour (the page was drawn).
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", data[16:24])
print("PNG %dx%d" % (w, h))
# Decompress the image data and count distinct bytes: a blank page has few.
idat, pos = b"", 8
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    if kind == b"IDAT":
        idat += data[pos + 8:pos + 8 + n]
    pos += 12 + n
print("drawn (many distinct byte values):", len(set(zlib.decompress(idat))) > 64)
