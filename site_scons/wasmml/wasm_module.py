"""Small edits of a linked WebAssembly module's binary; no SCons import."""

from wascc.leb128 import read_uleb, uleb

EXPORT_SECTION = 7
MEMORY_KIND = 2


def export_memory(module, name=b"memory"):
    """`module` (bytes) with its memory 0 also exported as `name`: a module
    linked with --import-memory (a shared memory, for threads) exports none,
    wasm-ld 14 has no --export-memory, and WASI runtimes read a command's
    arguments and files through its exported memory. Unchanged if it is
    exported already; a ValueError if the module has no export section."""
    if module[:4] != b"\0asm":
        raise ValueError("not a WebAssembly module")
    out, i = bytearray(module[:8]), 8
    found = False
    while i < len(module):
        section = module[i]
        size, start = read_uleb(module, i + 1)
        body = module[start:start + size]
        if section == EXPORT_SECTION:
            found = True
            count, j = read_uleb(body, 0)
            entries = body[j:]
            entry = uleb(len(name)) + name + bytes([MEMORY_KIND]) + uleb(0)
            if entry not in entries:  # a plain check: the entries of this module are few and short
                body = uleb(count + 1) + entries + entry
        out += bytes([section]) + uleb(len(body)) + body
        i = start + size
    if not found:
        raise ValueError("the module has no export section")
    return bytes(out)
