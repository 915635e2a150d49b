"""Adds `(export "memory" (memory 0))` to a module that imports its memory
(wasm-ld 14 has no --export-memory)."""
import sys
def leb(b, i):
    r = s = 0
    while True:
        x = b[i]; i += 1; r |= (x & 0x7f) << s; s += 7
        if x < 0x80: return r, i
def enc(n):
    out = bytearray()
    while True:
        x = n & 0x7f; n >>= 7
        if n: out.append(x | 0x80)
        else: out.append(x); return bytes(out)
b = open(sys.argv[1], "rb").read(); out = bytearray(b[:8]); i = 8
while i < len(b):
    sid = b[i]; n, j = leb(b, i + 1); body = b[j:j + n]
    if sid == 7:
        cnt, k = leb(body, 0)
        body = enc(cnt + 1) + body[k:] + enc(6) + b"memory" + b"\x02" + enc(0)
    out += bytes([sid]) + enc(len(body)) + body; i = j + n
open(sys.argv[2], "wb").write(out)
