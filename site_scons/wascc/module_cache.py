"""The waSCC host's cache of compiled wasm modules (the wasmtime CLI has its own).

Compiling a large module (the ~19 MB actor) takes seconds; deserializing the
machine code wasmtime produced last time takes milliseconds.
"""
import hashlib
import importlib.metadata
import os
import tempfile

import wasmtime


def default_dir():
    """$WASCC_HOST_CACHE, else wascc-host in $XDG_CACHE_HOME or ~/.cache."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("WASCC_HOST_CACHE") or os.path.join(cache_home, "wascc-host")


def load_module(engine, wasm, cache_dir, flavor=""):
    """Compile `wasm`, reusing a serialized copy from `cache_dir` when valid.

    Deserializing trusts its input completely (a flipped bit in machine code is
    not detected by wasmtime), so each entry has a sidecar sha256 of its bytes
    and is only loaded when that matches; anything else is recompiled.

    `flavor` names the engine's code-generating settings (e.g. "epoch" for
    epoch interruption): code compiled under other settings does not load, and
    without it two users of one cache would overwrite each other's entries.
    """
    if cache_dir is None:
        return wasmtime.Module(engine, wasm)
    version = importlib.metadata.version("wasmtime")
    tag = b"\0wasmtime " + version.encode() + (b"\0" + flavor.encode() if flavor else b"")
    key = hashlib.sha256(wasm + tag).hexdigest()
    entry = os.path.join(cache_dir, key + ".cwasm")
    try:
        with open(entry, "rb") as f, open(entry + ".sha256") as s:
            if hashlib.sha256(f.read()).hexdigest() == s.read().strip():
                return wasmtime.Module.deserialize_file(engine, entry)
    except (OSError, wasmtime.WasmtimeError):
        pass  # missing or corrupt: fall through and overwrite it
    module = wasmtime.Module(engine, wasm)
    data = bytes(module.serialize())
    try:
        os.makedirs(cache_dir, exist_ok=True)
        _write_atomic(entry, data)
        _write_atomic(entry + ".sha256", hashlib.sha256(data).hexdigest().encode())
    except OSError:
        pass  # a read-only or full cache must not stop the run
    return module


def _write_atomic(path, data):
    # temp file + rename, so concurrent runs never see a half-written entry
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
