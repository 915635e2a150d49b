"""Run a WASI command module under Node's `node:wasi`, as `wasmtime run` runs it.

Node is the second, independent WASI runtime the tests check the modules
with; the project's runner is the wasmtime command-line program. Node has no
command that runs a WASI module, so this is one, with wasmtime run's options:

    python tools/node_wasi.py [--dir HOST_DIR[::GUEST_DIR]]... [--env NAME[=VALUE]]...
                              MODULE.wasm [ARGS...]

The guest sees argv = [basename(MODULE), *ARGS] and inherits stdin, stdout and
stderr, so its output streams as it is written.

Exit status, as `wasmtime run`: the guest's exit code; 134 (128 + SIGABRT) if
it traps; 1 if the module cannot be read, compiled or instantiated. Unlike
wasmtime, which refuses proc_exit(>= 126) and exits 1, Node passes such a
status through. Each error is one line on stderr.
"""
import argparse
import json
import os
import subprocess
import sys

# Node runner; argv[1] is a JSON config. A RuntimeError (also from a start
# section) is a trap (exit 134, 128 + SIGABRT, as wasmtime's), as is anything
# else the running guest throws (a stack overflow is a RangeError) except Node
# API errors (ERR_*, e.g. no `_start` or `memory` export). Failures to read,
# compile or link are load errors (exit 1, as wasmtime's).
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
  const msg = e?.code === 'ENOENT' ? 'file not found' : String(e?.message ?? e).split('\n')[0];
  process.stderr.write(`error: ${c.module}${trap ? ' trapped' : ''}: ${msg}\n`);
  process.exitCode = trap ? 134 : 1;
}
"""


def parse_args(argv):
    p = argparse.ArgumentParser(prog="node_wasi", description=__doc__.split("\n")[0])
    p.add_argument("--dir", action="append", default=[], metavar="HOST[::GUEST]")
    p.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                   help="NAME alone copies the host's value")
    p.add_argument("module", metavar="MODULE.wasm")
    # REMAINDER so that options after the module go to the guest, not to us.
    p.add_argument("args", nargs=argparse.REMAINDER)
    ns = p.parse_args(argv)
    ns.dirs = [tuple(d.split("::", 1)) if "::" in d else (d, d) for d in ns.dir]
    ns.env = [tuple(e.split("=", 1)) if "=" in e else (e, os.environ.get(e, ""))
              for e in ns.env]
    return ns


def main(argv=None):
    ns = parse_args(sys.argv[1:] if argv is None else argv)
    config = {"module": ns.module, "env": dict(ns.env),
              "args": [os.path.basename(ns.module)] + ns.args,
              "preopens": {guest: host for host, guest in ns.dirs}}
    try:
        proc = subprocess.run(["node", "--no-warnings", "-e", NODE_RUNNER, json.dumps(config)])
    except FileNotFoundError:
        print("error: node: not found on PATH (tools/setup.sh installs Node.js)", file=sys.stderr)
        return 1
    # a signal death is negative here; report it the way a shell would
    return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode


if __name__ == "__main__":
    sys.exit(main())
