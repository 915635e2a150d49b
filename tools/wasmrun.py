"""Run a WASI command module, like `wasmtime run`, on the wasmtime Python package.

No wasmtime CLI can be installed here, so this stands in for it:

    python tools/wasmrun.py [--dir HOST_DIR[::GUEST_DIR]]... [--env NAME[=VALUE]]...
                            [--max-memory-size SIZE] [--cache DIR | --no-cache] [--node]
                            MODULE.wasm [ARGS...]

The guest sees argv = [basename(MODULE), *ARGS] and inherits stdin, stdout and
stderr, so its output streams as it is written. `--max-memory-size` caps the
guest's linear memory, as `wasmtime run -W max-memory-size=` does: a
`memory.grow` past it fails, as it would at the 4 GiB of wasm32. `--node` runs
the same module under Node's `node:wasi` instead, as an independent check that
it is standard.

Exit status, as `wasmtime run`: the guest's exit code; 134 (128 + SIGABRT) if
it traps; 1 for another runtime error (wasmtime refuses proc_exit(>= 126),
Node passes it through); 2 (ours) if the module cannot be read, compiled or
instantiated. Each error is one line on stderr. Compiled modules are cached.
"""
import argparse
import json
import os
import re
import subprocess
import sys

import wasmtime

# the compiled-module cache is shared with the waSCC host, in site_scons/wasmml
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "site_scons"))
from wasmml.wasmcache import default_dir, load_module  # noqa: E402

TRAP_EXIT = 134  # 128 + SIGABRT, what the wasmtime CLI exits with on a trap
LOAD_EXIT = 2

# Node runner; argv[1] is a JSON config. A RuntimeError (also from a start
# section) is a trap, as is anything else the running guest throws (a stack
# overflow is a RangeError) except Node API errors (ERR_*, e.g. no `_start` or
# `memory` export). Failures to compile or link are load errors.
NODE_RUNNER = r"""
const { WASI } = require('node:wasi');
const c = JSON.parse(process.argv[1]);
let running = false;
try {
  const wasi = new WASI({ version: 'preview1', args: c.args, env: c.env,
                          preopens: c.preopens, returnOnExit: true });
  const module = new WebAssembly.Module(require('node:fs').readFileSync(c.module));
  const instance = new WebAssembly.Instance(module, wasi.getImportObject());
  running = true;
  process.exitCode = wasi.start(instance);
} catch (e) {
  const trap = e instanceof WebAssembly.RuntimeError
    || (running && !String(e?.code).startsWith('ERR_'));
  const msg = String(e?.message ?? e).split('\n')[0];
  process.stderr.write(`error: ${c.name}${trap ? ' trapped' : ''}: ${msg}\n`);
  process.exitCode = trap ? 134 : 2;
}
"""


_UNITS = {"": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20,
          "G": 1 << 30, "GIB": 1 << 30}


def _size(text):
    """Bytes, as wasmtime's -W max-memory-size= takes them, or with a K/KiB,
    M/MiB or G/GiB suffix: "536870912", "512MiB"."""
    match = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", text.strip())
    unit = match and _UNITS.get(match.group(2).upper())
    if not unit:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size (bytes, or e.g. 512MiB)")
    return int(match.group(1)) * unit


def parse_args(argv):
    p = argparse.ArgumentParser(prog="wasmrun", description=__doc__.split("\n")[0])
    p.add_argument("--dir", action="append", default=[], metavar="HOST[::GUEST]")
    p.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="NAME alone copies the host's value")
    p.add_argument("--max-memory-size", type=_size, metavar="SIZE",
                   help="the most the guest's memory may grow to (wasmtime only)")
    p.add_argument("--cache", metavar="DIR", help="default: $WASMRUN_CACHE or ~/.cache/wasmrun",
                   default=default_dir())
    p.add_argument("--no-cache", dest="cache", action="store_const", const=None)
    p.add_argument("--node", action="store_true", help="run under Node's node:wasi")
    p.add_argument("module", metavar="MODULE.wasm")
    # REMAINDER so that options after the module go to the guest, not to us.
    p.add_argument("args", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    if ns.node and ns.max_memory_size is not None:
        p.error("--max-memory-size is for wasmtime: node:wasi has no memory limit")
    ns.dirs = [tuple(d.split("::", 1)) if "::" in d else (d, d) for d in ns.dir]
    ns.env = [tuple(e.split("=", 1)) if "=" in e else (e, os.environ.get(e, ""))
              for e in ns.env]
    return ns


def run_wasmtime(ns, name, wasm):
    engine = wasmtime.Engine()
    try:
        module = load_module(engine, wasm, ns.cache)
        wasi = wasmtime.WasiConfig()
        wasi.argv = [os.path.basename(ns.module)] + ns.args
        wasi.env = ns.env
        for host, guest in ns.dirs:
            wasi.preopen_dir(host, guest)
        # inherit, not capture: guest output must stream as it is written
        wasi.inherit_stdin()
        wasi.inherit_stdout()
        wasi.inherit_stderr()
        store = wasmtime.Store(engine)
        if ns.max_memory_size is not None:
            store.set_limits(memory_size=ns.max_memory_size)
        store.set_wasi(wasi)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
    except wasmtime.WasmtimeError as e:
        return _error(f"{name}: {_one_line(e)}", LOAD_EXIT)
    running = False  # instantiation errors (missing imports) are load errors
    try:
        # a trap in a start section counts as a trap, as in `wasmtime run`
        instance = linker.instantiate(store, module)
        start = instance.exports(store).get("_start")
        if start is None:
            return 0  # like `wasmtime run`: nothing to call is a no-op
        if not isinstance(start, wasmtime.Func):
            return _error(f"{name}: export `_start` is not a function", LOAD_EXIT)
        running = True
        start(store)
    except wasmtime.ExitTrap as e:
        return e.code
    except wasmtime.Trap as e:
        return _error(f"{name} trapped: {_one_line(e)}", TRAP_EXIT)
    except wasmtime.WasmtimeError as e:
        # once running, a host error that is not a wasm trap (e.g. proc_exit
        # with a status >= 126, which wasmtime rejects) exits 1, as `wasmtime run`
        return _error(f"{name}: {_one_line(e)}", 1 if running else LOAD_EXIT)
    return 0


def run_node(ns, name):
    config = {"name": name, "module": ns.module, "env": dict(ns.env),
              "args": [os.path.basename(ns.module)] + ns.args,
              "preopens": {guest: host for host, guest in ns.dirs}}
    try:
        proc = subprocess.run(["node", "--no-warnings", "-e", NODE_RUNNER,
                               json.dumps(config)])
    except FileNotFoundError:
        return _error("node: not found on PATH", LOAD_EXIT)
    # a signal death is negative here; report it the way a shell would
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


# Lines of a wasmtime error that are not the reason: the backtrace and notes.
_NOISE = re.compile(r"Caused by:|.*backtrace:|\d+:\s+(0x[0-9a-f]+ - )?\S*!.*|at .*|note: .*")


def _one_line(exc):
    """Flatten a wasmtime error (an anyhow chain) to "context: cause: ...".

    A trap's first line is just "error while executing at wasm backtrace:";
    the reason ("wasm trap: ...") only comes after "Caused by:", past the frames.
    """
    lines = (line.strip() for line in str(exc).splitlines())
    return ": ".join(re.sub(r"^\d+: ", "", line) for line in lines
                     if line and not _NOISE.fullmatch(line))


def _error(message, code):
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv=None):
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with open(ns.module, "rb") as f:
            wasm = f.read()
    except OSError as e:
        reason = "file not found" if isinstance(e, FileNotFoundError) else e.strerror
        return _error(f"{ns.module}: {reason}", LOAD_EXIT)
    if ns.node:
        return run_node(ns, ns.module)
    return run_wasmtime(ns, ns.module, wasm)


if __name__ == "__main__":
    sys.exit(main())
