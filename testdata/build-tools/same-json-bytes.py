#!/usr/bin/env python3
"""Says whether two files hold the same bytes but for a trailing newline
(a manifest printed by a tool, and the same manifest as served)."""
import sys

a, b = (open(p, "rb").read().rstrip(b"\n") for p in sys.argv[1:3])
print("same bytes" if a == b else f"different: {len(a)} and {len(b)} bytes")
